/* test_journal.c - the journal's format, chain and verifier. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/internal.h"
#include "fs/layout.h"
#include "journal/internal.h"
#include "journal/journal.h"
#include "tests/unit/journal_testlib.h"

/* ---- format / parse ------------------------------------------------------ */

static void roundtrip(const char *path, const char *path2, const char *detail)
{
	struct journal_event ev = {
	    .op = JOP_RENAME,
	    .result = -ENOENT,
	    .pid = 42,
	    .uid = 1000,
	    .path = path,
	    .path2 = path2,
	    .flags = 1,
	    .has_hash_after = true,
	    .hash_after = XXH3_128bits("x", 1),
	    .detail = detail,
	};
	struct journal_who who = {"c\"o\nmm", "/usr/bin/\xff"};
	struct jbuf b = {0};
	XXH128_hash_t prev = {7, 9};
	journal_format(&b, 5, prev, 1234567890123456789LL, &ev, &who, NULL);
	ck_assert(!b.oom);
	ck_assert_ptr_null(memchr(b.p, '\n', b.len));
	struct journal_entry e = {0};
	char err[256] = "";
	ck_assert_msg(journal_entry_parse(b.p, b.len, &e, err, sizeof(err)) == 0, "%s: %s", err,
		      b.p);
	ck_assert_uint_eq(e.seq, 5);
	ck_assert(e.prev.low64 == 7 && e.prev.high64 == 9);
	ck_assert_int_eq(e.time_ns, 1234567890123456789LL);
	ck_assert_int_eq(e.op, JOP_RENAME);
	ck_assert_int_eq(e.result, -ENOENT);
	ck_assert_int_eq(e.pid, 42);
	ck_assert_int_eq(e.uid, 1000);
	ck_assert_str_eq(e.path, path);
	ck_assert_str_eq(e.path2, path2);
	ck_assert_str_eq(e.comm, who.comm);
	ck_assert_str_eq(e.exe, who.exe);
	ck_assert_uint_eq(e.flags, 1);
	ck_assert(e.has_hash_after && !e.has_hash_before);
	ck_assert(e.hash_after.low64 == ev.hash_after.low64);
	ck_assert_str_eq(e.detail, detail);
	journal_entry_clear(&e);
	jbuf_free(&b);
}

START_TEST(format_paths_any_bytes)
{
	roundtrip("src/a.c", "src/b.c", "plain");
	roundtrip("new\nline\"quote\\back\tslash", "ctl\x01\x1f\x7f", "key=value \"q\"");
	roundtrip("caf\xc3\xa9/\xe2\x82\xac", "\xf0\x9f\x98\x80", "{not json");
	/* invalid UTF-8: lone continuation, overlong '/', surrogate, truncated */
	roundtrip("bad\x80", "over\xc0\xaf", "sur\xed\xa0\x80");
	roundtrip("trunc\xe2\x82", "\xff\xfe", "\xc3");
}
END_TEST

START_TEST(format_hex_alternate_documented)
{
	struct journal_event ev = {.op = JOP_READ, .path = "a\xff"};
	struct jbuf b = {0};
	journal_format(&b, 1, journal_chain_genesis, 1, &ev, NULL, NULL);
	ck_assert_ptr_nonnull(strstr(b.p, "\"path_hex\":\"61ff\""));
	ck_assert_ptr_null(strstr(b.p, "\"path\":"));
	jbuf_free(&b);
}
END_TEST

START_TEST(format_detail_object)
{
	struct journal_event ev = {.op = JOP_MOUNT,
				   .detail = "{\"version\":\"0.1.0\", \"repo\":\"/r\\n\"}"};
	char *dj = NULL;
	struct jbuf b = {0};
	/* the writer embeds an object; emulate it through a real journal below */
	journal_format(&b, 1, journal_chain_genesis, 1, &ev, NULL, dj);
	struct journal_entry e = {0};
	ck_assert_int_eq(journal_entry_parse(b.p, b.len, &e, NULL, 0), 0);
	ck_assert(!e.detail_is_object);
	ck_assert_str_eq(e.detail, ev.detail);
	journal_entry_clear(&e);
	jbuf_free(&b);
}
END_TEST

START_TEST(errno_names_roundtrip)
{
	int errs[] = {-ENOENT, -EROFS, -EACCES, -EXDEV, -ENOTEMPTY, -4000};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		char name[32];
		int back = 0;
		journal_errno_name(errs[i], name, sizeof(name));
		ck_assert_int_eq(journal_errno_parse(name, &back), 0);
		ck_assert_int_eq(back, errs[i]);
	}
	char name[32];
	journal_errno_name(-ENOENT, name, sizeof(name));
	ck_assert_str_eq(name, "ENOENT");
}
END_TEST

/* journal_entry_parse() of the string @line into *@e, its reason in @err. */
static int parse_line(const char *line, struct journal_entry *e, char err[256])
{
	*e = (struct journal_entry){0};
	err[0] = 0;
	return journal_entry_parse(line, strlen(line), e, err, 256);
}

/* Every key of the schema is known to the parser, in both of its forms. */
START_TEST(parse_accepts_every_key)
{
	const char *good[] = {
	    "{\"v\":1,\"seq\":7,\"prev\":\"000102030405060708090a0b0c0d0e0f\",\"time_ns\":5,"
	    "\"op\":\"rename\",\"result\":\"ENOENT\",\"pid\":2,\"uid\":3,\"comm\":\"c\","
	    "\"exe\":\"/e\",\"path\":\"p\",\"path2\":\"q\",\"bytes\":9,\"flags\":4,\"mode\":420,"
	    "\"hash_before\":\"00000000000000000000000000000001\","
	    "\"hash\":\"00000000000000000000000000000002\",\"detail\":{\"k\":1}}",
	    "{\"v\":1,\"seq\":7,\"prev\":\"000102030405060708090a0b0c0d0e0f\",\"time_ns\":5,"
	    "\"op\":\"rename\",\"result\":0,\"pid\":2,\"uid\":3,\"comm_hex\":\"63\","
	    "\"exe_hex\":\"2f65\",\"path_hex\":\"70\",\"path2_hex\":\"71\",\"detail_hex\":\"64\"}",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct journal_entry e;
		char err[256];
		ck_assert_msg(parse_line(good[i], &e, err) == 0, "refused (%s): %s", err, good[i]);
		ck_assert_uint_eq(e.seq, 7);
		ck_assert_str_eq(e.comm, "c");
		ck_assert_str_eq(e.exe, "/e");
		ck_assert_str_eq(e.path, "p");
		ck_assert_str_eq(e.path2, "q");
		ck_assert_int_eq(e.pid, 2);
		ck_assert_uint_eq(e.uid, 3);
		if (i == 0) {
			ck_assert_int_eq(e.result, -ENOENT);
			ck_assert_uint_eq(e.bytes, 9);
			ck_assert_uint_eq(e.flags, 4);
			ck_assert_uint_eq(e.mode, 420);
			ck_assert(e.has_hash_before && e.has_hash_after);
			ck_assert_uint_eq(e.hash_after.low64, 2);
			ck_assert_str_eq(e.detail, "{\"k\":1}");
		} else {
			ck_assert_str_eq(e.detail, "d");
		}
		journal_entry_clear(&e);
	}
}
END_TEST

START_TEST(parse_rejects_bad_records)
{
	const char *bad[] = {
	    "",
	    "[]",
	    "{\"v\":2,\"seq\":1}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"nope\",\"result\":0,\"pid\":1,\"uid\":0}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0,\"extra\":1}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"0000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":\"ENOTANERRNO\",\"pid\":1,\"uid\":0}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0,\"path_hex\":\"6100\"}",
	    "{\"v\":1,\"v\":1}",
	    /* A key before and after every schema key, and each of a pair twice. */
	    "{\"a\":1,\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\","
	    "\"time_ns\":1,\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0,\"zz\":1}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0,\"path\":\"a\",\"path_hex\":\"61\"}",
	    "{\"v\":1,\"seq\":1,\"prev\":\"00000000000000000000000000000000\",\"time_ns\":1,"
	    "\"op\":\"read\",\"result\":0,\"pid\":1,\"uid\":0,\"detail\":{\"a\":1},"
	    "\"detail_hex\":\"61\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct journal_entry e;
		char err[256];
		ck_assert_msg(parse_line(bad[i], &e, err) == -EBADMSG, "accepted: %s", bad[i]);
		ck_assert_msg(err[0], "no reason for: %s", bad[i]);
	}
}
END_TEST

/* layout_hash_hex() must print what Debian's `xxhsum -H2` prints. */
START_TEST(hash_hex_matches_xxhsum)
{
	char dir[] = "/tmp/jtest.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	const char *contents[] = {"", "hello\n", "a longer content with \0 a NUL byte"};
	size_t lens[] = {0, 6, 35};
	for (int i = 0; i < 3; i++) {
		char p[256], cmd[512], out[128] = "";
		snprintf(p, sizeof(p), "%s/f%d", dir, i);
		int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, contents[i], lens[i]), (ssize_t)lens[i]);
		XXH128_hash_t h;
		ck_assert_int_eq(layout_hash_fd(fd, &h), 0);
		close(fd);
		char hex[33];
		layout_hash_hex(h, hex);
		snprintf(cmd, sizeof(cmd), "xxhsum -H2 '%s' 2>/dev/null", p);
		FILE *f = popen(cmd, "r");
		ck_assert_ptr_nonnull(f);
		ck_assert_ptr_nonnull(fgets(out, sizeof(out), f));
		pclose(f);
		/* "XXH128 hex" tag formats exist too; the first word is the digest here */
		out[32] = 0;
		ck_assert_str_eq(hex, out);
		XXH128_hash_t back;
		ck_assert_int_eq(layout_hash_parse(out, &back), 0);
		ck_assert(back.low64 == h.low64 && back.high64 == h.high64);
		unlink(p);
	}
	rmdir(dir);
}
END_TEST

/* Origins are written in version 2 (25 bytes and the path: fs/layout.h) and
 * read back whole; version 1 values, of workspaces made before, still read;
 * a damaged value does not. */
START_TEST(origin_values_roundtrip)
{
	char dir[] = "/tmp/jtest.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char p[256];
	snprintf(p, sizeof(p), "%s/f", dir);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	struct layout_origin o = {
	    .ino = 0x0102030405060708ull,
	    .hash = {.low64 = 0x1122334455667788ull, .high64 = 0x99aabbccddeeff00ull}};
	snprintf(o.path, sizeof(o.path), "drivers/net/e1000e/netdev.c");
	ck_assert_int_eq(layout_set_origin(fd, &o), 0);
	ck_assert_int_eq(fgetxattr(fd, LAYOUT_XATTR_ORIGIN, NULL, 0),
			 (ssize_t)(LAYOUT_ORIGIN_V2_HEAD + strlen(o.path)));
	struct layout_origin back;
	ck_assert_int_eq(layout_get_origin(fd, &back), 1);
	ck_assert(back.ino == o.ino && back.hash.low64 == o.hash.low64 &&
		  back.hash.high64 == o.hash.high64);
	ck_assert_str_eq(back.path, o.path);
	char v1[] = "v1 1394617 eb9ca5684a2251fc8e47bd54ee2d3a75 block/Kconfig";
	ck_assert_int_eq(fsetxattr(fd, LAYOUT_XATTR_ORIGIN, v1, strlen(v1), 0), 0);
	ck_assert_int_eq(layout_get_origin(fd, &back), 1);
	ck_assert(back.ino == 1394617 && back.hash.high64 == 0xeb9ca5684a2251fcull &&
		  back.hash.low64 == 0x8e47bd54ee2d3a75ull);
	ck_assert_str_eq(back.path, "block/Kconfig");
	char v1sp[] = "v1 7 eb9ca5684a2251fc8e47bd54ee2d3a75  lead.txt";
	ck_assert_int_eq(fsetxattr(fd, LAYOUT_XATTR_ORIGIN, v1sp, strlen(v1sp), 0), 0);
	ck_assert_int_eq(layout_get_origin(fd, &back), 1);
	ck_assert_str_eq(back.path, " lead.txt"); /* a name that begins with a space */
	char bad[LAYOUT_ORIGIN_V2_HEAD + 4] = {LAYOUT_ORIGIN_V2};
	ck_assert_int_eq(layout_parse_origin(bad, 10, &back), -EINVAL); /* short */
	memcpy(bad + LAYOUT_ORIGIN_V2_HEAD, "a\0b", 3);
	ck_assert_int_eq(layout_parse_origin(bad, LAYOUT_ORIGIN_V2_HEAD + 3, &back), -EINVAL);
	close(fd);
	unlink(p);
	rmdir(dir);
}
END_TEST

/* layout_hash_fd() skips holes (SEEK_DATA/SEEK_HOLE) but must hash what a
 * reader sees: holes at the start, between data and at the end read as zeros. */
START_TEST(hash_fd_of_sparse_files)
{
	char dir[] = "/tmp/jtest.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	/* {offset of a data run, its length}, then the file's final size */
	const struct {
		off_t at[3];
		size_t len[3];
		off_t size;
	} cases[] = {
	    {{0, 3 << 20, 0}, {10, 70000, 0}, 5 << 20},		/* data, hole, data, hole */
	    {{0, 0, 0}, {0, 0, 0}, 2 << 20},			/* only a hole */
	    {{(1 << 20) + 7, 0, 0}, {5, 0, 0}, (1 << 20) + 12}, /* hole, then data to the end */
	    {{4096, 1 << 19, 0}, {1 << 19, 1 << 18, 0}, 1 << 20},
	    {{0, 0, 0}, {10, 0, 0}, 10},	   /* smaller than one read */
	    {{0, 0, 0}, {65536, 0, 0}, 65536},	   /* exactly one read */
	    {{0, 65536, 0}, {65536, 1, 0}, 65537}, /* one read and a byte */
	    {{0, 0, 0}, {0, 0, 0}, 0},		   /* empty */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char p[256];
		snprintf(p, sizeof(p), "%s/s%zu", dir, i);
		int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
		ck_assert_int_ge(fd, 0);
		char *want = calloc(1, (size_t)cases[i].size + 1);
		ck_assert_ptr_nonnull(want);
		for (int k = 0; k < 3 && cases[i].len[k]; k++) {
			char *d = malloc(cases[i].len[k]);
			ck_assert_ptr_nonnull(d);
			for (size_t b = 0; b < cases[i].len[k]; b++)
				d[b] = (char)(1 + (b * 7 + (size_t)k) % 251);
			ck_assert_int_eq(pwrite(fd, d, cases[i].len[k], cases[i].at[k]),
					 (ssize_t)cases[i].len[k]);
			memcpy(want + cases[i].at[k], d, cases[i].len[k]);
			free(d);
		}
		ck_assert_int_eq(ftruncate(fd, cases[i].size), 0);
		XXH128_hash_t h, w = XXH3_128bits(want, (size_t)cases[i].size);
		ck_assert_int_eq(layout_hash_fd(fd, &h), 0);
		ck_assert_msg(h.low64 == w.low64 && h.high64 == w.high64, "case %zu", i);
		free(want);
		close(fd);
		unlink(p);
	}
	rmdir(dir);
}
END_TEST

/* ---- pathmap --------------------------------------------------------------- */

/* The time one second after @st's ctime: a read that late sees a version
 * no later change can share stamps with. */
static struct timespec after_ctime(const struct stat *st)
{
	struct timespec t = st->st_ctim;
	t.tv_sec += 1;
	return t;
}

/* A hash cache and an unlinked temporary file holding "version two\n" (@fd,
 * its stat @st), with the hashes of it (@two) and of "version one\n" (@one),
 * planted as if it were the entry of a version before. */
struct two_versions {
	int fd;
	struct stat st;
	XXH128_hash_t one, two;
	struct hashcache *hc;
};

static void two_versions_open(struct two_versions *v)
{
	char p[] = "/tmp/hctest.XXXXXX";
	v->fd = mkstemp(p);
	ck_assert_int_ge(v->fd, 0);
	unlink(p);
	ck_assert_int_eq(pwrite(v->fd, "version two\n", 12, 0), 12);
	ck_assert_int_eq(fstat(v->fd, &v->st), 0);
	v->one = XXH3_128bits("version one\n", 12);
	v->two = XXH3_128bits("version two\n", 12);
	v->hc = hashcache_new();
	ck_assert_ptr_nonnull(v->hc);
}

static void two_versions_close(struct two_versions *v)
{
	hashcache_free(v->hc);
	close(v->fd);
}

/* A new version whose stamps equal the cached one's (two same-size writes in
 * one tick of the coarse clock, before Linux 6.13): hashcache_get trusts the
 * entry, hashcache_refresh, used after writes, hashes again and replaces it.
 * The stale entry is planted with hashcache_put, as the version before. */
START_TEST(hashcache_refresh_replaces_a_stale_entry)
{
	struct two_versions v;
	two_versions_open(&v);
	XXH128_hash_t h;
	struct timespec late = after_ctime(&v.st);
	hashcache_put(v.hc, &v.st, v.one, &late);
	ck_assert_int_eq(hashcache_get(v.hc, v.fd, &h), 0);
	ck_assert(XXH128_isEqual(h, v.one)); /* trusted */
	ck_assert_int_eq(hashcache_refresh(v.hc, v.fd, &h), 0);
	ck_assert(XXH128_isEqual(h, v.two));
	ck_assert_int_eq(hashcache_get(v.hc, v.fd, &h), 0);
	ck_assert(XXH128_isEqual(h, v.two)); /* replaced */
	two_versions_close(&v);
}
END_TEST

/* git's racily clean rule: a hash whose content was read no later than the
 * version's ctime may describe a version written after it in the same tick
 * (same size, same stamps), so hashcache_put keeps it only when the read
 * started after the ctime, and drops an entry the key had. */
START_TEST(hashcache_racily_clean_is_not_trusted)
{
	struct two_versions v;
	two_versions_open(&v);
	XXH128_hash_t h;
	/* Read in the version's own tick: not kept. */
	struct timespec same = v.st.st_ctim;
	hashcache_put(v.hc, &v.st, v.one, &same);
	ck_assert_int_eq(hashcache_get(v.hc, v.fd, &h), 0);
	ck_assert(XXH128_isEqual(h, v.two));
	/* Read a tick later: kept (the cache still serves). */
	struct timespec late = after_ctime(&v.st);
	hashcache_put(v.hc, &v.st, v.one, &late);
	ck_assert_int_eq(hashcache_get(v.hc, v.fd, &h), 0);
	ck_assert(XXH128_isEqual(h, v.one));
	/* A racy put under the same key drops that entry. */
	hashcache_put(v.hc, &v.st, v.one, &same);
	ck_assert_int_eq(hashcache_get(v.hc, v.fd, &h), 0);
	ck_assert(XXH128_isEqual(h, v.two));
	two_versions_close(&v);
}
END_TEST

/* How many of @n versions (inodes 1..@n of one device, old stamps) put into
 * a fresh table are found again afterwards, in the same order: a tool
 * reading a tree again. */
static int versions_kept(int n)
{
	struct hashcache *hc = hashcache_new();
	ck_assert_ptr_nonnull(hc);
	struct timespec read_at = {1700000000, 0};
	struct stat st;
	memset(&st, 0, sizeof(st));
	st.st_dev = 0x10303;
	st.st_mtim = st.st_ctim = (struct timespec){1600000000, 123456789};
	for (int i = 1; i <= n; i++) {
		st.st_ino = (ino_t)i;
		st.st_size = 100 + i % 5000;
		hashcache_put(hc, &st, XXH3_128bits(&i, sizeof(i)), &read_at);
	}
	int kept = 0;
	for (int i = 1; i <= n; i++) {
		XXH128_hash_t h;
		st.st_ino = (ino_t)i;
		st.st_size = 100 + i % 5000;
		if (hashcache_lookup(hc, &st, &h)) {
			ck_assert(XXH128_isEqual(h, XXH3_128bits(&i, sizeof(i))));
			kept++;
		}
	}
	hashcache_free(hc);
	return kept;
}

/* Hashes are computed once per version: a tree the size of the benchmark's
 * small one (11k files) and twice that keeps every hash, and the full
 * kernel tree (78,635 files) nearly all (77,005 with 16,384 sets of 8).
 * The direct-mapped table of 65,536 slots before kept 17,322 of 20,000. */
START_TEST(hashcache_keeps_a_whole_tree)
{
	ck_assert_int_eq(versions_kept(20000), 20000);
	int full = versions_kept(78635);
	ck_assert_msg(full >= 78635 * 97 / 100, "kept %d of 78635", full);
}
END_TEST

/* Pages of @hc's mapping the process has in memory (mincore(2)). */
static size_t resident_pages(struct hashcache *hc, size_t *pages)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len = hashcache_size();
	*pages = (len + page - 1) / page;
	unsigned char *vec = malloc(*pages);
	ck_assert_ptr_nonnull(vec);
	ck_assert_int_eq(mincore(hc, len, vec), 0);
	size_t n = 0;
	for (size_t i = 0; i < *pages; i++)
		n += vec[i] & 1;
	free(vec);
	return n;
}

/* hashcache_prefault brings the whole table into memory from a thread of
 * its own, without changing what the table holds while it serves, and
 * hashcache_free stops and joins that thread, also right after its start;
 * hashcache_prefault_on_use starts it at the table's first use only.
 * Skipped where the kernel has no MADV_POPULATE_WRITE (before 5.14). */
START_TEST(hashcache_prefault_fills_the_table_while_it_serves)
{
#ifdef MADV_POPULATE_WRITE
	void *probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(probe, MAP_FAILED);
	int supported = madvise(probe, 4096, MADV_POPULATE_WRITE) == 0;
	munmap(probe, 4096);
	if (!supported)
		return;
	struct hashcache *hc = hashcache_new();
	ck_assert_ptr_nonnull(hc);
	size_t pages, before = resident_pages(hc, &pages);
	ck_assert_msg(before < pages / 2, "%zu of %zu pages in before the prefault", before, pages);
	struct timespec read_at = {1700000000, 0};
	struct stat st;
	memset(&st, 0, sizeof(st));
	st.st_dev = 0x10303;
	st.st_mtim = st.st_ctim = (struct timespec){1600000000, 0};
	for (int i = 1; i <= 2000; i++) {
		st.st_ino = (ino_t)i;
		hashcache_put(hc, &st, XXH3_128bits(&i, sizeof(i)), &read_at);
	}
	hashcache_prefault(hc);
	size_t now = 0;
	for (int tries = 0; tries < 3000 && (now = resident_pages(hc, &pages)) < pages; tries++) {
		XXH128_hash_t h;
		st.st_ino = (ino_t)(1 + tries % 2000);
		ck_assert(hashcache_lookup(hc, &st, &h));
		struct timespec ms = {0, 10000000L};
		nanosleep(&ms, NULL);
	}
	ck_assert_msg(now == pages, "%zu of %zu pages in after the prefault", now, pages);
	for (int i = 1; i <= 2000; i++) {
		XXH128_hash_t h;
		st.st_ino = (ino_t)i;
		ck_assert(hashcache_lookup(hc, &st, &h));
		ck_assert(XXH128_isEqual(h, XXH3_128bits(&i, sizeof(i))));
	}
	hashcache_free(hc);
	hc = hashcache_new();
	ck_assert_ptr_nonnull(hc);
	hashcache_prefault(hc);
	hashcache_free(hc);

	/* Armed for its first use: nothing comes in until a lookup. */
	hc = hashcache_new();
	ck_assert_ptr_nonnull(hc);
	hashcache_prefault_on_use(hc);
	struct timespec wait = {0, 100000000L};
	nanosleep(&wait, NULL);
	before = resident_pages(hc, &pages);
	ck_assert_msg(before < pages / 2, "%zu of %zu pages in before the first use", before,
		      pages);
	XXH128_hash_t h;
	ck_assert(!hashcache_lookup(hc, &st, &h));
	for (int tries = 0; tries < 3000 && (now = resident_pages(hc, &pages)) < pages; tries++) {
		struct timespec ms = {0, 10000000L};
		nanosleep(&ms, NULL);
	}
	ck_assert_msg(now == pages, "%zu of %zu pages in after the first use", now, pages);
	hashcache_free(hc);
	hc = hashcache_new(); /* armed, never used: nothing to join */
	ck_assert_ptr_nonnull(hc);
	hashcache_prefault_on_use(hc);
	hashcache_free(hc);
#endif
}
END_TEST

/* The rule itself, on stamps no test file system here would give: a ctime of
 * whole seconds may stand for any time in a 2 s interval. */
START_TEST(hashcache_racy_rule)
{
	struct stat st;
	memset(&st, 0, sizeof(st));
	st.st_ctim = (struct timespec){1000, 500};
	struct timespec r = {1000, 500};
	ck_assert(hashcache_racy(&st, &r)); /* read in the same instant */
	r.tv_nsec = 501;
	ck_assert(!hashcache_racy(&st, &r)); /* read after it */
	r = (struct timespec){999, 999999999};
	ck_assert(hashcache_racy(&st, &r));	 /* read before it */
	st.st_ctim = (struct timespec){1000, 0}; /* whole seconds */
	r = (struct timespec){1001, 900000000};
	ck_assert(hashcache_racy(&st, &r));
	r = (struct timespec){1002, 0};
	ck_assert(!hashcache_racy(&st, &r));
}
END_TEST

START_TEST(pathmap_rename_moves_trees)
{
	struct journal_pathmap *m;
	ck_assert_int_eq(journal_pathmap_new(&m), 0);
	XXH128_hash_t h1 = {1, 1}, h2 = {2, 2}, h3 = {3, 3};
	journal_pathmap_set(m, "d/a", true, h1, 1);
	journal_pathmap_set(m, "d/sub/b", true, h2, 2);
	journal_pathmap_set(m, "dx", true, h3, 3);
	journal_pathmap_set(m, "e/old", true, h3, 4);
	ck_assert_int_eq(journal_pathmap_rename(m, "d", "e", false, 5), 0);
	ck_assert_ptr_null(journal_pathmap_get(m, "d/a"));
	ck_assert_ptr_null(journal_pathmap_get(m, "e/old")); /* replaced */
	ck_assert_ptr_nonnull(journal_pathmap_get(m, "dx")); /* not under d/ */
	ck_assert(journal_pathmap_get(m, "e/a")->c->hash.low64 == 1);
	ck_assert(journal_pathmap_get(m, "e/sub/b")->c->hash.low64 == 2);
	ck_assert_int_eq(journal_pathmap_rename(m, "e/a", "dx", true, 6), 0);
	ck_assert(journal_pathmap_get(m, "e/a")->c->hash.low64 == 3);
	ck_assert(journal_pathmap_get(m, "dx")->c->hash.low64 == 1);
	journal_pathmap_del_tree(m, "e");
	ck_assert_uint_eq(journal_pathmap_count(m), 1);
	for (int i = 0; i < 5000; i++) {
		char p[32];
		snprintf(p, sizeof(p), "many/%d", i);
		ck_assert_int_eq(journal_pathmap_set(m, p, true, h1, 7), 0);
		if (i % 2)
			journal_pathmap_del(m, p);
	}
	ck_assert_uint_eq(journal_pathmap_count(m), 2501);
	ck_assert_ptr_nonnull(journal_pathmap_get(m, "many/4998"));
	ck_assert_ptr_null(journal_pathmap_get(m, "many/4999"));
	journal_pathmap_free(m);
}
END_TEST

/* Replay one record (op, path, path2, hash) into @m. */
static void replay(struct journal_pathmap *m, uint64_t seq, enum journal_op op, const char *path,
		   const char *path2, const XXH128_hash_t *h)
{
	struct journal_entry e = {.seq = seq,
				  .op = op,
				  .path = (char *)path,
				  .path2 = (char *)path2,
				  .has_hash_after = h != NULL,
				  .hash_after = h ? *h : (XXH128_hash_t){0, 0}};
	ck_assert_int_eq(journal_pathmap_apply(m, &e), 0);
}

START_TEST(pathmap_hard_links_share_content)
{
	struct journal_pathmap *m;
	ck_assert_int_eq(journal_pathmap_new(&m), 0);
	XXH128_hash_t h1 = {1, 1}, h2 = {2, 2}, h3 = {3, 3}, h4 = {4, 4};
	replay(m, 1, JOP_CREATE, "a", NULL, &h1);
	replay(m, 2, JOP_LINK, "a", "b", NULL); /* b is another name of a */
	ck_assert(journal_pathmap_get(m, "b")->c->hash.low64 == 1);
	replay(m, 3, JOP_WRITE, "b", NULL, &h2); /* written through b: a holds it too */
	ck_assert(journal_pathmap_get(m, "a")->c->hash.low64 == 2);
	ck_assert_uint_eq(journal_pathmap_get(m, "a")->c->seq, 3);
	replay(m, 4, JOP_RENAME, "a", "c", NULL); /* a name moves, the file stays */
	replay(m, 5, JOP_WRITE, "c", NULL, &h3);
	ck_assert(journal_pathmap_get(m, "b")->c->hash.low64 == 3);
	replay(m, 6, JOP_UNLINK, "c", NULL, NULL);
	replay(m, 7, JOP_WRITE, "b", NULL, &h4); /* the last name left */
	ck_assert(journal_pathmap_get(m, "b")->c->hash.low64 == 4);
	replay(m, 8, JOP_LINK, "b", "d", NULL);
	replay(m, 9, JOP_CREATE, "d", NULL, &h1); /* a new file at d: no longer b's */
	replay(m, 10, JOP_WRITE, "d", NULL, &h2);
	ck_assert(journal_pathmap_get(m, "b")->c->hash.low64 == 4);
	ck_assert(journal_pathmap_get(m, "d")->c->hash.low64 == 2);
	ck_assert_uint_eq(journal_pathmap_count(m), 2);
	journal_pathmap_free(m);
}
END_TEST

/* ---- chain and verify ------------------------------------------------------ */

START_TEST(chain_intact_and_head)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 20, JOURNAL_SYNC_INTERVAL);
	struct journal_verify v = {0};
	ck_assert_int_eq(journal_verify_file(jt.journal, -1, &v), 0);
	ck_assert_msg(v.bad_line == 0, "%s", v.why);
	ck_assert_uint_eq(v.records, 21); /* + unmount */
	size_t n;
	char **lines = jt_lines(&jt, &n);
	ck_assert_uint_eq(n, 21);
	/* record 1's prev is the genesis value, each next prev the hash of the line */
	ck_assert_ptr_nonnull(strstr(lines[0], "\"prev\":\"00000000000000000000000000000000\""));
	for (size_t i = 1; i < n; i++) {
		char hex[33], want[64];
		layout_hash_hex(journal_chain_hash(lines[i - 1], strlen(lines[i - 1])), hex);
		snprintf(want, sizeof(want), "\"prev\":\"%s\"", hex);
		ck_assert_ptr_nonnull(strstr(lines[i], want));
	}
	jt_free_lines(lines, n);
	jt_teardown(&jt);
}
END_TEST

static void expect_bad(struct jt *jt, uint64_t line, const char *why_part)
{
	struct journal_verify v = {0};
	ck_assert_int_eq(journal_verify_file(jt->journal, -1, &v), 0);
	ck_assert_msg(v.bad_line == line, "bad_line %llu, want %llu: %s",
		      (unsigned long long)v.bad_line, (unsigned long long)line, v.why);
	if (why_part)
		ck_assert_msg(strstr(v.why, why_part), "why: %s", v.why);
}

/* Editing any byte of any record makes verify fail at that record. */
START_TEST(tamper_every_byte_of_a_record)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 6, JOURNAL_SYNC_NEVER);
	size_t n;
	char **lines = jt_lines(&jt, &n);
	ck_assert_uint_eq(n, 7);
	for (size_t rec = 0; rec < n; rec++) {
		size_t len = strlen(lines[rec]);
		for (size_t off = 0; off < len; off++) {
			char **copy = jt_copy_lines(lines, n);
			copy[rec][off] ^= (copy[rec][off] == '9' ? 0x01 : 0x03);
			jt_put_lines(&jt, copy, n);
			expect_bad(&jt, rec + 1, NULL);
			jt_free_lines(copy, n);
		}
	}
	jt_free_lines(lines, n);
	jt_teardown(&jt);
}
END_TEST

START_TEST(tamper_delete_reorder_truncate)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 9, JOURNAL_SYNC_INTERVAL);
	size_t n;
	char **lines = jt_lines(&jt, &n);
	ck_assert_uint_eq(n, 10);

	/* delete line 4 */
	char **c = jt_copy_lines(lines, n);
	free(c[3]);
	memmove(c + 3, c + 4, (n - 4) * sizeof(*c));
	jt_put_lines(&jt, c, n - 1);
	expect_bad(&jt, 4, "record 4 is missing");
	jt_free_lines(c, n - 1);

	/* delete the first line */
	c = jt_copy_lines(lines, n);
	jt_put_lines(&jt, c + 1, n - 1);
	expect_bad(&jt, 1, "record 1 is missing");
	jt_free_lines(c, n);

	/* swap lines 5 and 6 */
	c = jt_copy_lines(lines, n);
	char *t = c[4];
	c[4] = c[5];
	c[5] = t;
	jt_put_lines(&jt, c, n);
	expect_bad(&jt, 5, "record 5 is missing");
	jt_free_lines(c, n);

	/* drop the last two records: caught by the head file */
	c = jt_copy_lines(lines, n);
	jt_put_lines(&jt, c, n - 2);
	expect_bad(&jt, n - 1, "truncated");
	jt_free_lines(c, n);

	/* truncate in the middle of the last line */
	c = jt_copy_lines(lines, n);
	jt_put_lines(&jt, c, n);
	ck_assert_int_eq(truncate(jt.journal, jt_size(&jt) - 10), 0);
	expect_bad(&jt, n, "torn");
	jt_free_lines(c, n);

	/* truncate everything but keep the head */
	ck_assert_int_eq(truncate(jt.journal, 0), 0);
	expect_bad(&jt, 1, "truncated");

	/* and the untouched journal passes */
	jt_put_lines(&jt, lines, n);
	expect_bad(&jt, 0, NULL);
	jt_free_lines(lines, n);
	jt_teardown(&jt);
}
END_TEST

Suite *journal_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("format");
	tcase_add_test(tc, format_paths_any_bytes);
	tcase_add_test(tc, origin_values_roundtrip);
	tcase_add_test(tc, format_hex_alternate_documented);
	tcase_add_test(tc, parse_accepts_every_key);
	tcase_add_test(tc, format_detail_object);
	tcase_add_test(tc, errno_names_roundtrip);
	tcase_add_test(tc, parse_rejects_bad_records);
	tcase_add_test(tc, hash_hex_matches_xxhsum);
	tcase_add_test(tc, hash_fd_of_sparse_files);
	tcase_add_test(tc, hashcache_refresh_replaces_a_stale_entry);
	tcase_add_test(tc, hashcache_racily_clean_is_not_trusted);
	tcase_add_test(tc, hashcache_racy_rule);
	tcase_add_test(tc, hashcache_keeps_a_whole_tree);
	tcase_add_test(tc, pathmap_rename_moves_trees);
	tcase_add_test(tc, pathmap_hard_links_share_content);
	suite_add_tcase(s, tc);
	/* The prefault thread pauses between its pieces: on a machine busy
	 * with other tests it may take seconds. */
	tc = tcase_create("prefault");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, hashcache_prefault_fills_the_table_while_it_serves);
	suite_add_tcase(s, tc);
	tc = tcase_create("chain");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, chain_intact_and_head);
	tcase_add_test(tc, tamper_every_byte_of_a_record);
	tcase_add_test(tc, tamper_delete_reorder_truncate);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(journal_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
