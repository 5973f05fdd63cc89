/*
 * checkpoint.c - the replay's state at a point of the journal, kept beside it
 * ("<journal>.state") so that opening the journal parses only the records
 * appended since.
 *
 * journal_open() replays the whole journal (scan.c): the chain's end, whether
 * the last session ended, and the two path maps crash recovery compares the
 * upper with.  That costs ~5 us a record, so a workspace's mount grew with
 * the length of its history.  A checkpoint holds that state after the
 * journal's first SIZE bytes, together with xxh3-128 of those bytes.  It is
 * used only while the journal still begins with exactly those bytes (hashed
 * again at each open, at the speed of reading the file), so a scan resumed
 * from it ends in the state a scan from the first byte would: the same
 * damage found, the same records, the same maps.  Otherwise it is ignored
 * and the whole journal is scanned.
 *
 * It is a cache, not evidence: verify never reads it; deleting it costs one
 * full scan; it is written only from a scan that found every line intact,
 * never fsync'd (a torn one fails its own hash and is ignored).  Whoever can
 * write it can write the journal beside it, which says the same.
 *
 * Layout, host byte order (the file never leaves the machine that wrote it):
 *   "agentfs-journal-state\n", u32 version (1), u32 0x01020304 (byte order),
 *   u64 size, lines, records, last_seq, recovered, i64 last_time_ns,
 *   u32 last_op, u32 flags (1 session_open, 2 crash_noted),
 *   xxh3-128 last_hash and prefix (low64, high64 each),
 *   the content map, the touched map (journal_pathmap_save()),
 *   xxh3-128 of every byte before it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/internal.h"

static const char magic[] = "agentfs-journal-state\n";
#define STATE_VERSION	1u
#define BYTE_ORDER_MARK 0x01020304u
#define F_SESSION_OPEN	1u
#define F_CRASH_NOTED	2u
/* A state file larger than this, or than STATE_RATIO times its journal and
 * this slack (the header, the maps' counts), is ignored unread. */
#define STATE_MAX   ((off_t)1 << 30)
#define STATE_RATIO 4
#define STATE_SLACK 65536

char *journal_state_path(const char *journal_path)
{
	size_t n = strlen(journal_path);
	char *p = malloc(n + sizeof(".state"));
	if (p) {
		memcpy(p, journal_path, n);
		memcpy(p + n, ".state", sizeof(".state"));
	}
	return p;
}

static void put_hash(struct jbuf *b, XXH128_hash_t h)
{
	jbuf_put(b, &h.low64, sizeof(h.low64));
	jbuf_put(b, &h.high64, sizeof(h.high64));
}

static XXH128_hash_t get_hash(struct jcursor *c)
{
	XXH128_hash_t h;
	jcur_get(c, &h.low64, sizeof(h.low64));
	jcur_get(c, &h.high64, sizeof(h.high64));
	return h;
}

/* The whole of @path, at most @max bytes: 0 and *out malloc'd, or a
 * negative errno (-ENOENT: no checkpoint). */
static int slurp(const char *path, off_t max, unsigned char **out, size_t *len)
{
	/* O_NONBLOCK: a FIFO in its place must not hold the mount up. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = 0;
	unsigned char *p = NULL;
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (!S_ISREG(st.st_mode) || st.st_size > max)
		r = -EBADMSG;
	else if (!(p = malloc((size_t)st.st_size + 1)))
		r = -ENOMEM;
	size_t got = 0;
	while (r == 0 && got < (size_t)st.st_size) {
		ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			r = n < 0 ? -errno : -EBADMSG;
		else
			got += (size_t)n;
	}
	close(fd);
	if (r < 0) {
		free(p);
		return r;
	}
	*out = p;
	*len = got;
	return 0;
}

/* Feed the first @size bytes of @fd to @prefix: 0, -EBADMSG when the file
 * is shorter, or a negative errno. */
static int hash_prefix(int fd, off_t size, XXH3_state_t *prefix)
{
	enum { CHUNK = 1 << 20 };
	char *buf = malloc(CHUNK);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	for (off_t off = 0; off < size && r == 0;) {
		size_t want = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		ssize_t n = pread(fd, buf, want, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EBADMSG;
			break;
		}
		XXH3_128bits_update(prefix, buf, (size_t)n);
		off += n;
	}
	free(buf);
	return r;
}

int journal_checkpoint_load(const char *state_path, int fd, struct journal_scan *s,
			    XXH3_state_t *prefix)
{
	/* Each name in a map comes from a record that holds it with ~250 bytes
	 * more, so a state is smaller than its journal but for long names and
	 * renames under long names: a file more than STATE_RATIO times the
	 * journal is not read (a full replay instead). */
	struct stat jst;
	if (fstat(fd, &jst) < 0)
		return 0;
	off_t max = jst.st_size < STATE_MAX / STATE_RATIO ? jst.st_size * STATE_RATIO + STATE_SLACK
							  : STATE_MAX;
	unsigned char *data = NULL;
	size_t len = 0;
	if (slurp(state_path, max, &data, &len) < 0)
		return 0;
	int r = 0;
	struct journal_pathmap *map = NULL, *touched = NULL;
	XXH128_hash_t sum;
	if (len < sizeof(sum))
		goto ignore;
	memcpy(&sum.low64, data + len - sizeof(sum), sizeof(uint64_t));
	memcpy(&sum.high64, data + len - sizeof(uint64_t), sizeof(uint64_t));
	if (!XXH128_isEqual(sum, XXH3_128bits(data, len - sizeof(sum))))
		goto ignore;
	struct jcursor c = {data, data + len - sizeof(sum), false};
	char m[sizeof(magic) - 1];
	uint32_t version = 0, order = 0, op = 0, flags = 0;
	uint64_t size = 0, lines = 0, records = 0, last_seq = 0, recovered = 0;
	int64_t last_time_ns = 0;
	jcur_get(&c, m, sizeof(m));
	jcur_get(&c, &version, sizeof(version));
	jcur_get(&c, &order, sizeof(order));
	jcur_get(&c, &size, sizeof(size));
	jcur_get(&c, &lines, sizeof(lines));
	jcur_get(&c, &records, sizeof(records));
	jcur_get(&c, &last_seq, sizeof(last_seq));
	jcur_get(&c, &recovered, sizeof(recovered));
	jcur_get(&c, &last_time_ns, sizeof(last_time_ns));
	jcur_get(&c, &op, sizeof(op));
	jcur_get(&c, &flags, sizeof(flags));
	XXH128_hash_t last_hash = get_hash(&c);
	XXH128_hash_t want = get_hash(&c);
	if (c.bad || memcmp(m, magic, sizeof(m)) != 0 || version != STATE_VERSION ||
	    order != BYTE_ORDER_MARK || op > JOP__COUNT || size == 0 || size > INT64_MAX ||
	    records == 0 || last_seq != records || lines != records)
		goto ignore;
	/* The head's record, when the caller checks one, must be this state's
	 * last or a later one: an earlier one's hash is not kept. */
	if (s->check_seq && s->check_seq < last_seq)
		goto ignore;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)size)
		goto ignore;
	XXH3_128bits_reset(prefix);
	if ((r = hash_prefix(fd, (off_t)size, prefix)) < 0 ||
	    !XXH128_isEqual(XXH3_128bits_digest(prefix), want))
		goto ignore;
	if ((r = journal_pathmap_new(&map)) < 0 || (r = journal_pathmap_new(&touched)) < 0 ||
	    (r = journal_pathmap_load(map, &c)) < 0 ||
	    (r = journal_pathmap_load(touched, &c)) < 0 || c.p != c.end)
		goto ignore;
	if (s->map)
		journal_pathmap_swap(s->map, map);
	if (s->touched)
		journal_pathmap_swap(s->touched, touched);
	journal_pathmap_free(map);
	journal_pathmap_free(touched);
	free(data);
	s->resume = true;
	s->intact_end = (off_t)size;
	s->lines = lines;
	s->records = records;
	s->last_seq = s->file_last_seq = last_seq;
	s->last_hash = s->file_last_hash = last_hash;
	s->recovered = recovered;
	s->last_time_ns = last_time_ns;
	s->last_op = (enum journal_op)op;
	s->session_open = flags & F_SESSION_OPEN;
	s->crash_noted = flags & F_CRASH_NOTED;
	if (s->check_seq == last_seq) {
		s->check_found = true;
		s->check_hash = last_hash;
	}
	return 1;
ignore:
	/* Whatever went wrong, a failure to allocate included, the whole
	 * journal is replayed instead. */
	journal_pathmap_free(map);
	journal_pathmap_free(touched);
	free(data);
	XXH3_128bits_reset(prefix);
	return 0;
}

int journal_checkpoint_save(const char *state_path, const struct journal_scan *s,
			    const XXH3_state_t *prefix)
{
	if (!s->map || !s->touched || s->bad_line || s->records == 0 ||
	    s->intact_end != s->file_size || s->lines != s->records)
		return -EINVAL;
	struct jbuf b = {0};
	uint32_t version = STATE_VERSION, order = BYTE_ORDER_MARK, op = (uint32_t)s->last_op;
	uint32_t flags =
	    (s->session_open ? F_SESSION_OPEN : 0) | (s->crash_noted ? F_CRASH_NOTED : 0);
	uint64_t size = (uint64_t)s->intact_end;
	jbuf_put(&b, magic, sizeof(magic) - 1);
	jbuf_put(&b, &version, sizeof(version));
	jbuf_put(&b, &order, sizeof(order));
	jbuf_put(&b, &size, sizeof(size));
	jbuf_put(&b, &s->lines, sizeof(s->lines));
	jbuf_put(&b, &s->records, sizeof(s->records));
	jbuf_put(&b, &s->last_seq, sizeof(s->last_seq));
	jbuf_put(&b, &s->recovered, sizeof(s->recovered));
	jbuf_put(&b, &s->last_time_ns, sizeof(s->last_time_ns));
	jbuf_put(&b, &op, sizeof(op));
	jbuf_put(&b, &flags, sizeof(flags));
	put_hash(&b, s->last_hash);
	put_hash(&b, XXH3_128bits_digest(prefix));
	journal_pathmap_save(s->map, &b);
	journal_pathmap_save(s->touched, &b);
	if (!b.oom)
		put_hash(&b, XXH3_128bits(b.p, b.len));
	if (b.oom) {
		jbuf_free(&b);
		return -ENOMEM;
	}
	/* Written aside and renamed over: a reader finds the old state or the
	 * new one, never half of one. */
	size_t pl = strlen(state_path);
	char *tmp = malloc(pl + sizeof(".tmp"));
	int r = 0;
	if (!tmp) {
		jbuf_free(&b);
		return -ENOMEM;
	}
	memcpy(tmp, state_path, pl);
	memcpy(tmp + pl, ".tmp", sizeof(".tmp"));
	int fd =
	    open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	if (fd < 0)
		r = -errno;
	for (size_t done = 0; r == 0 && done < b.len;) {
		ssize_t n = write(fd, b.p + done, b.len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = -errno;
		else
			done += (size_t)n;
	}
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, state_path) < 0)
		r = -errno;
	if (r < 0 && fd >= 0)
		unlink(tmp);
	free(tmp);
	jbuf_free(&b);
	return r;
}
