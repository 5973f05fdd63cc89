/* test_statcache.c - the private .git's stat cache (statcache.h): what one
 * build records the next finds, for the same stat data, mode and id only; a
 * racy entry is neither written nor used; records are found in index order
 * and passed over otherwise; a torn, damaged or foreign file reads as empty
 * from the damage on; an uncommitted file leaves the old one in place. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cli/statcache.h"

/* The file's sizes (statcache.h): a header, and a record of a 2-byte path. */
#define HEADER 24
#define REC    (2 + 2 + 80 + 8)

static char dir[] = "/tmp/agentfs-statcache.XXXXXX";
static char path[256];

static const unsigned char id_a[STATCACHE_ID_LEN] = {1, 2, 3};
static const unsigned char id_b[STATCACHE_ID_LEN] = {9, 8, 7};

/* Stat data of a file last changed @age seconds before now. */
static struct stat old_stat(long age, ino_t ino, off_t size)
{
	struct stat st;
	memset(&st, 0, sizeof(st));
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	st.st_mtim.tv_sec = now.tv_sec - age;
	st.st_mtim.tv_nsec = 123456789;
	st.st_ctim = st.st_mtim;
	st.st_ino = ino;
	st.st_size = size;
	st.st_uid = 1000;
	st.st_gid = 1000;
	return st;
}

/* One build: records @n paths "p0".."p<n-1>" with stat data st[i] and id_a. */
static void build(int n, const struct stat *st)
{
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	for (int i = 0; i < n; i++) {
		char p[16];
		snprintf(p, sizeof(p), "p%d", i);
		statcache_add(c, p, &st[i], 0100644, id_a, 0);
	}
	ck_assert_int_eq(statcache_commit(c), 0);
	statcache_free(c);
}

/* The next build finds p0 with st[0] and neither p1 nor p2. */
static void first_only(const struct stat *st)
{
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	ck_assert(!statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	ck_assert(!statcache_has(c, "p2", &st[2], 0100644, id_a, 0));
	statcache_free(c);
}

static long file_size(void)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fclose(f);
	return n;
}

/* A stopped build's end (statcache_keep_rest, then commit): the file then
 * holds @n records. */
static void keep_rest_commit(struct statcache *c, int n)
{
	statcache_keep_rest(c);
	ck_assert_int_eq(statcache_commit(c), 0);
	statcache_free(c);
	ck_assert_int_eq(file_size(), HEADER + n * REC);
}

static int entries_in_dir(void)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static unsigned char *le(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	return p + n;
}

/* An old file as statcache.h lays it out, with threshold @thr_s (seconds)
 * and records "p0" and "p1" of @a and @b, mode 0100644, id_a. */
static void write_old(int64_t thr_s, const struct stat *a, const struct stat *b)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	unsigned char h[HEADER], *p = h;
	memcpy(p, "AFSTATC2", 8);
	p = le(p + 8, (uint64_t)thr_s, 8);
	le(le(p, 0, 4), 0, 4);
	ck_assert_int_eq(fwrite(h, 1, HEADER, f), HEADER);
	const struct stat *st[2] = {a, b};
	for (int i = 0; i < 2; i++) {
		unsigned char r[REC];
		p = le(r, 2, 2);
		*p++ = 'p';
		*p++ = (unsigned char)('0' + i);
		p = le(p, 0100644, 4);
		p = le(p, (uint64_t)st[i]->st_mtim.tv_sec, 8);
		p = le(p, (uint64_t)st[i]->st_mtim.tv_nsec, 4);
		p = le(p, (uint64_t)st[i]->st_ctim.tv_sec, 8);
		p = le(p, (uint64_t)st[i]->st_ctim.tv_nsec, 4);
		p = le(p, st[i]->st_ino, 8);
		p = le(p, (uint64_t)st[i]->st_size, 8);
		p = le(p, st[i]->st_uid, 4);
		p = le(p, st[i]->st_gid, 4);
		p = le(p, 0, 8);
		memcpy(p, id_a, STATCACHE_ID_LEN);
		p += STATCACHE_ID_LEN;
		le(p, XXH3_64bits(r, (size_t)(p - r)), 8);
		ck_assert_int_eq(fwrite(r, 1, REC, f), REC);
	}
	ck_assert_int_eq(fclose(f), 0);
}

START_TEST(found_for_the_same_stat_data_only)
{
	unlink(path);
	struct stat st[3] = {old_stat(100, 11, 5), old_stat(100, 12, 6), old_stat(100, 13, 7)};
	build(3, st);
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	struct stat other = st[1];
	other.st_ctim.tv_nsec++; /* a change since, in the same second */
	ck_assert(!statcache_has(c, "p1", &other, 0100644, id_a, 0));
	ck_assert(!statcache_has(c, "p2", &st[2], 0100755, id_a, 0)); /* the mode */
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_b, 0)); /* the index's id */
	struct stat moved = st[1];
	moved.st_ino = 99;
	ck_assert(!statcache_has(c, "p1", &moved, 0100644, id_a, 0));
	struct stat grown = st[2];
	grown.st_size++;
	ck_assert(!statcache_has(c, "p2", &grown, 0100644, id_a, 0));
	statcache_free(c);
	/* Not committed: the old file stays, the new one is gone. */
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	statcache_free(c);
	ck_assert_int_eq(entries_in_dir(), 1);
}
END_TEST

/* A second reader of the old file, for another thread: it finds what the
 * build's own would, on its own cursor, even once a newer file took the
 * path; and a record under either of two filters digests. */
START_TEST(second_reader_of_the_same_file)
{
	unlink(path);
	struct statcache *c, *r;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert_int_eq(statcache_reader(c, &r), 0);
	struct stat st[2] = {old_stat(100, 11, 5), old_stat(100, 12, 6)};
	ck_assert(!statcache_has(r, "p0", &st[0], 0100644, id_a, 0)); /* no old file */
	statcache_free(r);
	statcache_free(c);
	build(2, st);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert_int_eq(statcache_reader(c, &r), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	build(0, NULL); /* another build's file takes the path meanwhile */
	ck_assert(statcache_has(r, "p0", &st[0], 0100644, id_a, 0)); /* from its start */
	ck_assert(!statcache_has(r, "p1", &st[1], 0100644, id_b, 0));
	statcache_free(r);
	statcache_free(c);
	/* Either digest: 0 (no filter) or the one given. */
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	statcache_add(c, "p0", &st[0], 0100644, id_a, 0);
	statcache_add(c, "p1", &st[1], 0100644, id_a, 77);
	ck_assert_int_eq(statcache_commit(c), 0);
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has_either(c, "p0", &st[0], 0100644, id_a, 0, 77));
	ck_assert(statcache_has_either(c, "p1", &st[1], 0100644, id_a, 0, 77));
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has_either(c, "p0", &st[0], 0100644, id_a, 5, 77));
	ck_assert(!statcache_has_either(c, "p1", &st[1], 0100644, id_a, 0, 78));
	statcache_free(c);
}
END_TEST

/* A filtered file's record serves only under the same filters digest: not
 * with another config or .gitattributes, nor where no filter applies now. */
START_TEST(found_under_the_same_filters_only)
{
	unlink(path);
	struct stat st[2] = {old_stat(100, 11, 5), old_stat(100, 12, 6)};
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	statcache_add(c, "p0", &st[0], 0100644, id_a, 0x1234);
	statcache_add(c, "p1", &st[1], 0100644, id_a, 0);
	ck_assert_int_eq(statcache_commit(c), 0);
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_a, 0x1235));
	ck_assert(!statcache_has(c, "p1", &st[1], 0100644, id_a, 0x1234));
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0x1234));
	statcache_free(c);
}
END_TEST

START_TEST(racy_entries_are_left_out)
{
	unlink(path);
	/* Changed in this second: within the 2 s before the build started,
	 * however long the machine takes between here and there. */
	struct stat st[3] = {old_stat(100, 11, 5), old_stat(0, 12, 6), old_stat(100, 13, 7)};
	st[2].st_ctim.tv_sec += 100; /* its mtime old, its ctime new */
	build(3, st);
	first_only(st);
	struct statcache *c;
	/* The header and one record: the racy ones were not written. */
	ck_assert_int_eq(file_size(), HEADER + REC);
	/* A record not before its file's threshold is not used either: the
	 * threshold (bytes 8-15, little-endian seconds) moved to 200 s ago. */
	FILE *f = fopen(path, "r+b");
	ck_assert_ptr_nonnull(f);
	int64_t thr = (int64_t)time(NULL) - 200;
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)((uint64_t)thr >> (8 * i));
	fseek(f, 8, SEEK_SET);
	ck_assert_uint_eq(fwrite(le, 1, 8, f), 8);
	fclose(f);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	statcache_free(c);
}
END_TEST

START_TEST(index_order)
{
	unlink(path);
	struct stat st[4] = {old_stat(100, 1, 1), old_stat(100, 2, 1), old_stat(100, 3, 1),
			     old_stat(100, 4, 1)};
	build(4, st);
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	/* Asked for some paths only, and one the cache lacks: the others wait. */
	ck_assert(!statcache_has(c, "p", &st[0], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p3", &st[3], 0100644, id_a, 0));
	/* Passed over: not found out of order. */
	ck_assert(!statcache_has(c, "p2", &st[2], 0100644, id_a, 0));
	statcache_free(c);
}
END_TEST

START_TEST(order_ignoring_case)
{
	/* core.ignorecase: the index, and so the records, in strcasecmp order. */
	unlink(path);
	const char *names[] = {"a.txt", "B.txt", "c.txt"};
	struct stat st = old_stat(100, 5, 5);
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, true, &c), 0);
	for (int i = 0; i < 3; i++)
		statcache_add(c, names[i], &st, 0100644, id_a, 0);
	ck_assert_int_eq(statcache_commit(c), 0);
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, true, &c), 0);
	ck_assert(statcache_has(c, "B.txt", &st, 0100644, id_a, 0));
	ck_assert(!statcache_has(c, "C.txt", &st, 0100644, id_a, 0)); /* another case */
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, true, &c), 0);
	ck_assert(statcache_has(c, "a.txt", &st, 0100644, id_a, 0));
	ck_assert(statcache_has(c, "B.txt", &st, 0100644, id_a, 0));
	ck_assert(statcache_has(c, "c.txt", &st, 0100644, id_a, 0));
	statcache_free(c);
}
END_TEST

START_TEST(leftovers_are_removed)
{
	/* A build killed an hour ago, a repository gone for 31 days, and what
	 * is recent: only the first two go. */
	char tmp_old[300], tmp_new[300], gone[300], other[300];
	snprintf(tmp_old, sizeof(tmp_old), "%s/statcache-0123456789abcdef.Ab12Cd", dir);
	snprintf(tmp_new, sizeof(tmp_new), "%s/statcache-0123456789abcdef.Xy34Zw", dir);
	snprintf(gone, sizeof(gone), "%s/statcache-fedcba9876543210", dir);
	snprintf(other, sizeof(other), "%s/notes", dir);
	const char *all[] = {tmp_old, tmp_new, gone, other};
	for (int i = 0; i < 4; i++) {
		FILE *f = fopen(all[i], "w");
		ck_assert_ptr_nonnull(f);
		fclose(f);
	}
	struct timespec t[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = time(NULL) - 3700}};
	ck_assert_int_eq(utimensat(AT_FDCWD, tmp_old, t, 0), 0);
	t[1].tv_sec = time(NULL) - 31 * 86400;
	ck_assert_int_eq(utimensat(AT_FDCWD, gone, t, 0), 0);
	ck_assert_int_eq(utimensat(AT_FDCWD, other, t, 0), 0);
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	statcache_free(c);
	ck_assert_int_eq(access(tmp_old, F_OK), -1);
	ck_assert_int_eq(access(gone, F_OK), -1);
	ck_assert_int_eq(access(tmp_new, F_OK), 0);
	ck_assert_int_eq(access(other, F_OK), 0);
	unlink(tmp_new);
	unlink(other);
}
END_TEST

START_TEST(damage_ends_its_use)
{
	unlink(path);
	struct stat st[3] = {old_stat(100, 11, 5), old_stat(100, 12, 6), old_stat(100, 13, 7)};
	build(3, st);
	long size = file_size();
	FILE *f = fopen(path, "r+b");
	ck_assert_ptr_nonnull(f);
	/* One bit of the second record's id (its last 28 bytes: id, checksum). */
	fseek(f, HEADER + 2 * REC - 28, SEEK_SET);
	int ch = fgetc(f);
	fseek(f, -1, SEEK_CUR);
	fputc(ch ^ 1, f);
	fclose(f);
	first_only(st);
	struct statcache *c;
	/* Torn in the middle of the last record. */
	build(3, st);
	ck_assert_int_eq(truncate(path, size - 10), 0);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	ck_assert(!statcache_has(c, "p2", &st[2], 0100644, id_a, 0));
	statcache_free(c);
	/* Another file's bytes: nothing. */
	f = fopen(path, "wb");
	fputs("version: 1\nname: x\n", f);
	fclose(f);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	statcache_add(c, "p0", &st[0], 0100644, id_a, 0);
	ck_assert_int_eq(statcache_commit(c), 0);
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	statcache_free(c);
}
END_TEST

/* A build that stops part way (an unmount) keeps its own records and the old
 * ones of the paths it did not reach, one of them read but not yet matched;
 * not one that is racy by the new file's threshold (a clock set back), nor
 * one at or before the last path written, nor any of a file in the other
 * order. */
START_TEST(stopped_build_keeps_the_rest)
{
	unlink(path);
	struct stat st[5] = {old_stat(100, 11, 5), old_stat(100, 12, 6), old_stat(100, 13, 7),
			     old_stat(100, 14, 8), old_stat(100, 15, 9)};
	build(5, st);
	struct statcache *c;
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	struct stat p0 = st[0];
	p0.st_ino = 21; /* hashed again: a new record */
	ck_assert(!statcache_has(c, "p0", &p0, 0100644, id_a, 0));
	statcache_add(c, "p0", &p0, 0100644, id_a, 0);
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	statcache_add(c, "p1", &st[1], 0100644, id_a, 0);
	/* "p10" sorts before "p2": p2's record is read and waits for its path. */
	ck_assert(!statcache_has(c, "p10", &st[1], 0100644, id_a, 0));
	keep_rest_commit(c, 5);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p2", &st[2], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p3", &st[3], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p4", &st[4], 0100644, id_a, 0));
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &p0, 0100644, id_a, 0));
	statcache_free(c);

	/* The old file's threshold lies ahead of the new one's (a clock set
	 * back): its p1, changed a second ago, is racy for the new file. */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct stat recent = old_stat(1, 12, 6);
	write_old(now.tv_sec + 3600, &st[0], &recent);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p1", &recent, 0100644, id_a, 0)); /* by the old threshold */
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	keep_rest_commit(c, 1); /* stopped before its first path */
	ck_assert_int_eq(entries_in_dir(), 1);

	/* A path added that the old file's next records do not pass first:
	 * those records at or before it are not copied after it. */
	unlink(path);
	build(5, st);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	statcache_add(c, "p0", &st[0], 0100644, id_a, 0);
	statcache_add(c, "p2", &st[2], 0100644, id_b, 0);
	keep_rest_commit(c, 4);
	ck_assert_int_eq(statcache_begin(path, false, &c), 0);
	ck_assert(!statcache_has(c, "p1", &st[1], 0100644, id_a, 0));
	ck_assert(statcache_has(c, "p2", &st[2], 0100644, id_b, 0));
	ck_assert(statcache_has(c, "p3", &st[3], 0100644, id_a, 0));
	statcache_free(c);

	/* Written in one order, read in the other (core.ignorecase changed
	 * since): nothing found, and nothing of it copied. */
	ck_assert_int_eq(statcache_begin(path, true, &c), 0);
	ck_assert(!statcache_has(c, "p0", &st[0], 0100644, id_a, 0));
	statcache_free(c);
	ck_assert_int_eq(statcache_begin(path, true, &c), 0);
	keep_rest_commit(c, 0);
	ck_assert_int_eq(entries_in_dir(), 1);
}
END_TEST

START_TEST(path_is_per_repository)
{
	char *a = NULL, *b = NULL, *a2 = NULL;
	ck_assert_int_eq(statcache_path("/s", "/r/one/.git/", &a), 0);
	ck_assert_int_eq(statcache_path("/s", "/r/two/.git/", &b), 0);
	ck_assert_int_eq(statcache_path("/s", "/r/one/.git/", &a2), 0);
	ck_assert_str_eq(a, a2);
	ck_assert_str_ne(a, b);
	ck_assert_int_eq(strncmp(a, "/s/cache/statcache-", 19), 0);
	ck_assert_uint_eq(strlen(a), 19 + 16);
	free(a);
	free(b);
	free(a2);
}
END_TEST

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}
	snprintf(path, sizeof(path), "%s/statcache-test", dir);
	Suite *s = suite_create("statcache");
	TCase *tc = tcase_create("statcache");
	tcase_add_test(tc, found_for_the_same_stat_data_only);
	tcase_add_test(tc, found_under_the_same_filters_only);
	tcase_add_test(tc, racy_entries_are_left_out);
	tcase_add_test(tc, index_order);
	tcase_add_test(tc, order_ignoring_case);
	tcase_add_test(tc, leftovers_are_removed);
	tcase_add_test(tc, damage_ends_its_use);
	tcase_add_test(tc, stopped_build_keeps_the_rest);
	tcase_add_test(tc, path_is_per_repository);
	tcase_add_test(tc, second_reader_of_the_same_file);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	/* Whatever a failed case left too. */
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
