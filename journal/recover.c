/*
 * recover.c - crash recovery of the upper: files changed without a record.
 *
 * After kill -9 the journal holds a prefix of what happened; the upper holds
 * everything acknowledged.  The difference is recorded as JOP_RECOVER, so the
 * journal accounts for the upper again and verify passes while naming what
 * was recovered.  The ctime test is cheap (a stat); hashing every file is
 * done only when the previous session did not end with an UNMOUNT record.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/internal.h"
#include "journal/writer.h"

struct recover_ctx {
	struct journal *j;
	struct journal_pathmap *seen;
	bool skip_git;
	int count;
	const char **gone; /* vanished(): paths of j->map, borrowed */
	size_t ngone, capgone;
	bool oom;
};

static void record_recover(struct journal *j, const char *path, int result, uint32_t flags,
			   uint64_t bytes, const XXH128_hash_t *h, const char *why)
{
	char detail[160];
	snprintf(detail, sizeof(detail),
		 "{\"reason\":\"changed without a record\",\"found\":\"%s\"}", why);
	struct journal_event ev = {
	    .op = JOP_RECOVER,
	    .result = result,
	    .flags = flags,
	    .pid = getpid(),
	    .uid = getuid(),
	    .path = path,
	    .bytes = bytes,
	    .has_hash_after = h != NULL,
	    .hash_after = h ? *h : (XXH128_hash_t){0, 0},
	    .detail = detail,
	};
	journal_record(j, &ev);
}

static int visit(void *arg, const char *path, int dirfd, const char *name, const struct stat *st)
{
	struct recover_ctx *c = arg;
	struct journal *j = c->j;
	if (S_ISDIR(st->st_mode))
		goto seen; /* unreadable (chmod 000): what it holds stays unknown */
	struct journal_pathent *e = journal_pathmap_get(j->map, path);
	int64_t ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
	const char *why = NULL;
	if (!e)
		why = "no record of this file";
	else if (ctime_ns > j->last_time_ns)
		why = "changed after the last record";
	else if (!j->crashed)
		goto seen; /* clean shutdown and untouched since: trust the record */
	XXH128_hash_t h;
	int r = journal_hash_at(dirfd, name, st, &h);
	if (r == -ENOENT)
		return 0;
	if (r == -EACCES)
		goto seen; /* a mode the agent set: verify names it, the walk goes on */
	if (r < 0)
		return r;
	if (!why && e->c->has_hash && !XXH128_isEqual(e->c->hash, h))
		why = "content differs from the last record";
	if (!why && !e->c->has_hash)
		why = "last record carried no hash";
	if (why) {
		record_recover(j, path, 0, 0, (uint64_t)st->st_size, &h, why);
		journal_pathmap_update(j->map, path, true, h, 0);
		c->count++;
	}
seen:
	return journal_pathmap_set(c->seen, path, false, (XXH128_hash_t){0, 0}, 0);
}

/* A marker no namespace record explains (journal_touched_explains): its
 * record was lost in the crash, or it was planted between sessions. */
static int visit_marker(void *arg, const char *path, const char *hashed, enum journal_marker kind)
{
	struct recover_ctx *c = arg;
	if (c->skip_git && journal_under_git(path))
		return 0;
	int r = kind == JOURNAL_MARK_SPECIAL /* there: not vanished() */
		    ? journal_pathmap_set(c->seen, path, false, (XXH128_hash_t){0, 0}, 0)
		    : 0;
	if (r < 0 || journal_touched_explains(c->j->touched, path, hashed))
		return r;
	static const char *const what[] = {
	    [JOURNAL_MARK_WHITEOUT] = "whiteout without a record",
	    [JOURNAL_MARK_OPAQUE] = "opaque directory without a record",
	    [JOURNAL_MARK_REDIRECT] = "redirected directory without a record",
	    [JOURNAL_MARK_SPECIAL] = "special file without a record",
	};
	record_recover(c->j, path, 0, JOURNAL_F_MARKER, 0, NULL, what[kind]);
	c->count++;
	/* Explained from now on (at this path only, as any marker). */
	return journal_pathmap_set(c->j->touched, path, false, (XXH128_hash_t){0, 0}, 0);
}

/* A recorded file the walk did not see: collected, then recorded in the
 * order of their paths (the map's own order depends on its history, which
 * a map loaded from the saved state does not share with one replayed). */
static void vanished(void *arg, struct journal_pathent *e)
{
	struct recover_ctx *c = arg;
	if (journal_pathmap_get(c->seen, e->path) || journal_pathmap_has_parent(c->seen, e->path) ||
	    (c->skip_git && journal_under_git(e->path)))
		return;
	if (c->ngone == c->capgone) {
		size_t cap = c->capgone ? c->capgone * 2 : 16;
		const char **v = realloc(c->gone, cap * sizeof(*v));
		if (!v) {
			c->oom = true;
			return;
		}
		c->gone = v;
		c->capgone = cap;
	}
	c->gone[c->ngone++] = e->path;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int journal_recover_upper(struct journal *j, int upper_fd, bool skip_git)
{
	if (!j)
		return 0;
	struct recover_ctx c = {.j = j, .skip_git = skip_git};
	int r = journal_pathmap_new(&c.seen);
	if (r < 0)
		return r;
	r = journal_walk_upper_all(upper_fd, visit, j->touched ? visit_marker : NULL, &c);
	if (r == 0)
		journal_pathmap_each(j->map, vanished, &c);
	if (r == 0 && c.oom)
		r = -ENOMEM;
	if (r == 0 && c.ngone)
		qsort(c.gone, c.ngone, sizeof(*c.gone), by_path);
	for (size_t i = 0; r == 0 && i < c.ngone; i++) {
		record_recover(j, c.gone[i], -ENOENT, 0, 0, NULL,
			       "recorded file missing from the upper");
		c.count++;
	}
	free(c.gone);
	journal_pathmap_free(c.seen);
	journal_pathmap_free(j->touched); /* needed no more */
	j->touched = NULL;
	return r < 0 ? r : c.count;
}
