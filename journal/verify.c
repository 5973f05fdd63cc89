/*
 * verify.c - journal_verify_file(): the chain, the head, and the upper.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/layout.h"
#include "journal/internal.h"

static void note(struct journal_verify *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(struct journal_verify *v, const char *fmt, ...)
{
	if (!v->note)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	v->note(v->arg, msg);
}

/* Paths in messages: as they are when printable, else quoted with escapes. */
static void show_path(const char *p, char *out, size_t len)
{
	size_t o = 0;
	for (const unsigned char *s = (const unsigned char *)p; *s && o + 5 < len; s++) {
		if (*s < 0x20 || *s == 0x7f || *s == '\\')
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", *s);
		else
			out[o++] = (char)*s;
	}
	out[o] = 0;
}

/* A finding about the upper, named to v->note: a file that differs from
 * its record (upper_bad), or an entry that cannot be read (@unread), which
 * says nothing of its content but leaves the upper unverified. */
static void upper_problem(struct journal_verify *v, bool unread, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void upper_problem(struct journal_verify *v, bool unread, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (unread) {
		v->upper_unread++;
	} else {
		if (!v->upper_bad)
			snprintf(v->upper_first, sizeof(v->upper_first), "%s", msg);
		v->upper_bad++;
	}
	note(v, "%s", msg);
}
#define upper_bad(v, ...)    upper_problem(v, false, __VA_ARGS__)
#define upper_unread(v, ...) upper_problem(v, true, __VA_ARGS__)

static void on_entry(void *arg, const struct journal_entry *e)
{
	struct journal_verify *v = arg;
	if (e->op == JOP_MOUNT || e->op == JOP_UNMOUNT)
		v->session_open = e->op == JOP_MOUNT;
	if (e->op != JOP_RECOVER)
		return;
	char p[512];
	if (e->path && (e->flags & JOURNAL_F_MARKER)) {
		/* detail {"reason":...,"found":"whiteout without a record"} */
		json_t *d = e->detail_is_object ? json_loads(e->detail, 0, NULL) : NULL;
		const char *found = json_string_value(json_object_get(d, "found"));
		show_path(*e->path ? e->path : ".", p, sizeof(p));
		note(v, "record %" PRIu64 ": recovered: %s: %s", e->seq, p,
		     found ? found : "a marker without a record");
		json_decref(d);
	} else if (e->path) {
		show_path(e->path, p, sizeof(p));
		note(v, "record %" PRIu64 ": recovered: %s: %s", e->seq, p,
		     e->result == -ENOENT ? "missing from the upper" : "changed without a record");
	} else {
		note(v, "record %" PRIu64 ": crash recovery: %s", e->seq,
		     e->detail ? e->detail : "");
	}
}

struct upper_ctx {
	struct journal_verify *v;
	struct journal_pathmap *map, *seen, *touched;
	int err;
};

static int visit(void *arg, const char *path, int dirfd, const char *name, const struct stat *st)
{
	struct upper_ctx *c = arg;
	if (c->v->skip_git && journal_under_git(path))
		return 0;
	if (!S_ISDIR(st->st_mode))
		c->v->upper_files++;
	int r = journal_pathmap_set(c->seen, path, false, (XXH128_hash_t){0, 0}, 0);
	if (r < 0)
		return r;
	char p[512];
	show_path(path, p, sizeof(p));
	if (S_ISDIR(st->st_mode)) {
		/* Seen as unchecked, not as missing: its files stay unknown. */
		upper_unread(
		    c->v,
		    "upper: %s: cannot read this directory (mode %03o): its files are not checked",
		    p, (unsigned)(st->st_mode & 07777));
		return 0;
	}
	struct journal_pathent *e = journal_pathmap_get(c->map, path);
	if (!e) {
		upper_bad(c->v, "upper: %s: no record of this file (changed behind agentfs's back)",
			  p);
		return 0;
	}
	if (!e->c->has_hash)
		return 0; /* its last record carried no hash: nothing to compare */
	XXH128_hash_t h;
	r = journal_hash_at(dirfd, name, st, &h);
	if (r == -EACCES) {
		c->v->upper_files--; /* not checked after all */
		upper_unread(c->v, "upper: %s: cannot read: %s: not checked", p, strerror(-r));
		return 0;
	}
	if (r < 0) {
		upper_bad(c->v, "upper: %s: cannot read: %s", p, strerror(-r));
		return 0;
	}
	if (!XXH128_isEqual(h, e->c->hash)) {
		char a[33], b[33];
		layout_hash_hex(h, a);
		layout_hash_hex(e->c->hash, b);
		upper_bad(c->v,
			  "upper: %s: content %s differs from record %" PRIu64
			  " (%s): changed behind agentfs's back",
			  p, a, e->c->seq, b);
	}
	return 0;
}

/* What a marker is, as verify names it. */
static const char *marker_what(enum journal_marker kind)
{
	switch (kind) {
	case JOURNAL_MARK_WHITEOUT:
		return "a whiteout (a deletion)";
	case JOURNAL_MARK_OPAQUE:
		return "an opaque directory (the repository's directory hidden)";
	case JOURNAL_MARK_REDIRECT:
		return "a redirected directory (a directory renamed)";
	default:
		return "a special file";
	}
}

/* A marker (journal_marker_fn) no namespace record explains was planted in
 * the upper behind agentfs's back: it deletes or hides repository files in
 * the view, and in what export and promote take, without a trace. */
static int visit_marker(void *arg, const char *path, const char *hashed, enum journal_marker kind)
{
	struct upper_ctx *c = arg;
	if (c->v->skip_git && journal_under_git(path))
		return 0;
	c->v->upper_markers++;
	/* A FIFO copied up from the working tree has a content record (its
	 * copy-up's) and is no file the walk compares: it is there. */
	int r = kind == JOURNAL_MARK_SPECIAL
		    ? journal_pathmap_set(c->seen, path, false, (XXH128_hash_t){0, 0}, 0)
		    : 0;
	if (r < 0 || journal_touched_explains(c->touched, path, hashed))
		return r;
	char p[512];
	show_path(*path ? path : ".", p, sizeof(p));
	upper_bad(c->v, "upper: %s: %s with no record (changed behind agentfs's back)", p,
		  marker_what(kind));
	return 0;
}

static void missing(void *arg, struct journal_pathent *e)
{
	struct upper_ctx *c = arg;
	if (journal_pathmap_get(c->seen, e->path) || journal_pathmap_has_parent(c->seen, e->path) ||
	    (c->v->skip_git && journal_under_git(e->path)))
		return;
	char p[512];
	show_path(e->path, p, sizeof(p));
	upper_bad(c->v, "upper: %s: recorded by record %" PRIu64 " but missing from the upper", p,
		  e->seq);
}

int journal_verify_file(const char *path, int upper_fd, struct journal_verify *v)
{
	void (*keep_note)(void *, const char *) = v->note;
	void *keep_arg = v->arg;
	bool keep_skip_git = v->skip_git;
	memset(v, 0, sizeof(*v));
	v->note = keep_note;
	v->arg = keep_arg;
	v->skip_git = keep_skip_git;

	/* O_NONBLOCK: a FIFO in the journal's place must not hang verify. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat jst;
	if (fstat(fd, &jst) < 0 || !S_ISREG(jst.st_mode)) {
		close(fd);
		return -EINVAL; /* not a journal file */
	}
	char *hp = journal_head_path(path);
	if (!hp) {
		close(fd);
		return -ENOMEM;
	}
	struct journal_head head;
	int hr = journal_head_read(hp, &head);
	free(hp);

	struct journal_pathmap *map = NULL;
	int r = journal_pathmap_new(&map);
	if (r < 0) {
		close(fd);
		return r;
	}
	struct journal_pathmap *touched = NULL;
	r = journal_pathmap_new(&touched);
	if (r < 0) {
		journal_pathmap_free(map);
		close(fd);
		return r;
	}
	struct journal_scan s = {.map = map, .touched = touched, .on_entry = on_entry, .arg = v};
	if (hr == 1) {
		s.head = &head;
		s.check_seq = head.seq;
	}
	r = journal_scan_fd(fd, &s);
	close(fd);
	if (r < 0) {
		journal_pathmap_free(map);
		journal_pathmap_free(touched);
		return r;
	}
	v->records = s.records;
	v->recovered = s.recovered;
	if (s.bad_line) {
		v->bad_line = s.bad_line;
		v->bad_seq = s.bad_seq;
		snprintf(v->why, sizeof(v->why), "%s", s.why);
	} else if (hr < 0) {
		v->bad_line = s.records + 1;
		v->bad_seq = s.last_seq + 1;
		snprintf(v->why, sizeof(v->why), "the head file is malformed");
	} else if (hr == 0) {
		/* An empty journal too: the first write makes the head file, so
		 * a journal emptied and its head file deleted is no new one. */
		v->bad_line = s.records + 1;
		v->bad_seq = s.last_seq + 1;
		snprintf(v->why, sizeof(v->why),
			 "the head file is missing: cannot tell whether records were removed "
			 "from the end");
	} else if (hr == 1 && head.seq > s.last_seq) {
		v->bad_line = s.records + 1;
		v->bad_seq = s.last_seq + 1;
		snprintf(v->why, sizeof(v->why),
			 "the journal ends at record %" PRIu64 " but its head file records %" PRIu64
			 ": records %" PRIu64 "..%" PRIu64 " were removed (truncated)",
			 s.last_seq, head.seq, s.last_seq + 1, head.seq);
	} else if (hr == 1 && head.seq > 0 &&
		   !(s.check_found && XXH128_isEqual(s.check_hash, head.hash))) {
		v->bad_line = head.seq;
		v->bad_seq = head.seq;
		snprintf(v->why, sizeof(v->why),
			 "record %" PRIu64
			 " was edited: it does not match the hash in the head file",
			 head.seq);
	}

	/* A journal that is not intact says nothing reliable of the upper:
	 * its files are compared only with a whole chain. */
	if (upper_fd >= 0 && !v->bad_line) {
		struct upper_ctx c = {.v = v, .map = map, .touched = touched};
		r = journal_pathmap_new(&c.seen);
		if (r == 0)
			r = journal_walk_upper_all(upper_fd, visit, visit_marker, &c);
		if (r == 0)
			journal_pathmap_each(map, missing, &c);
		journal_pathmap_free(c.seen);
	}
	journal_pathmap_free(map);
	journal_pathmap_free(touched);
	return r;
}
