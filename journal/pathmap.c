/*
 * pathmap.c - view path -> the content its last record left in the upper.
 *
 * Built by replaying intact records (journal_pathmap_apply()); used by verify
 * to check the upper and by crash recovery to find files changed without a
 * record.  Open addressing with tombstones; a rename of a directory moves every
 * path under it, which is a scan of the table (renames are rare next to reads).
 *
 * A hard link gives one upper file two names, and a write through either
 * changes what both hold, while its record names only one.  So names point to
 * a shared struct journal_content, as directory entries point to an inode: a
 * link makes the new name share the old one's, a write, truncate or recovery
 * changes the shared one, and a copy-up or create starts a new one.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/layout.h"
#include "journal/internal.h"

struct journal_pathmap {
	struct journal_pathent *slot;
	size_t cap;  /* power of two */
	size_t live; /* live entries */
	size_t used; /* live + tombstones */
	/* Every proper prefix ("a", "a/b" of "a/b/c") of a path ever put in
	 * the map, as entries without content; never shrinks.  A rename or a
	 * removal of a path that is none (a file: most renames are an
	 * editor's save) touches that one entry instead of scanning the
	 * table.  NULL in the prefix map itself. */
	struct journal_pathmap *dirs;
};

static int map_new(struct journal_pathmap **out, bool with_dirs)
{
	struct journal_pathmap *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->cap = 64;
	m->slot = calloc(m->cap, sizeof(*m->slot));
	if (!m->slot || (with_dirs && map_new(&m->dirs, false) < 0)) {
		free(m->slot);
		free(m);
		return -ENOMEM;
	}
	*out = m;
	return 0;
}

int journal_pathmap_new(struct journal_pathmap **out)
{
	return map_new(out, true);
}

static void content_put(struct journal_content *c)
{
	if (c && --c->refs == 0)
		free(c);
}

static struct journal_content *content_new(bool has_hash, XXH128_hash_t h, uint64_t seq)
{
	struct journal_content *c = malloc(sizeof(*c));
	if (c)
		*c = (struct journal_content){
		    .has_hash = has_hash, .hash = h, .seq = seq, .refs = 1};
	return c;
}

void journal_pathmap_free(struct journal_pathmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++) {
		free(m->slot[i].path);
		content_put(m->slot[i].c);
	}
	free(m->slot);
	journal_pathmap_free(m->dirs);
	free(m);
}

size_t journal_pathmap_count(const struct journal_pathmap *m)
{
	return m->live;
}

static size_t hash_path(const char *p)
{
	return (size_t)XXH3_64bits(p, strlen(p));
}

/* Slot holding @path, or NULL. */
static struct journal_pathent *lookup(struct journal_pathmap *m, const char *path)
{
	size_t mask = m->cap - 1;
	for (size_t i = hash_path(path) & mask;; i = (i + 1) & mask) {
		struct journal_pathent *e = &m->slot[i];
		if (!e->path)
			return NULL;
		if (e->live && strcmp(e->path, path) == 0)
			return e;
	}
}

struct journal_pathent *journal_pathmap_get(struct journal_pathmap *m, const char *path)
{
	return lookup(m, path);
}

bool journal_pathmap_has_parent(struct journal_pathmap *m, const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, path, n + 1);
	for (char *slash = strrchr(buf, '/'); slash; slash = strrchr(buf, '/')) {
		*slash = 0;
		if (lookup(m, buf))
			return true;
	}
	return false;
}

static int grow(struct journal_pathmap *m)
{
	size_t ncap = m->live * 4 > m->cap ? m->cap * 2 : m->cap;
	struct journal_pathent *ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		struct journal_pathent *e = &m->slot[i];
		if (!e->path)
			continue;
		if (!e->live) {
			free(e->path);
			continue;
		}
		size_t j = hash_path(e->path) & (ncap - 1);
		while (ns[j].path)
			j = (j + 1) & (ncap - 1);
		ns[j] = *e;
	}
	free(m->slot);
	m->slot = ns;
	m->cap = ncap;
	m->used = m->live;
	return 0;
}

static int put(struct journal_pathmap *m, const char *path, struct journal_content *c,
	       uint64_t seq);

static void kill_ent(struct journal_pathmap *m, struct journal_pathent *e)
{
	e->live = false; /* the path stays as a tombstone until the next grow */
	content_put(e->c);
	e->c = NULL;
	m->live--;
}

/* Put every proper prefix of @path into @dirs, the longest first: one found
 * there already has its own prefixes. */
static int add_prefixes(struct journal_pathmap *dirs, const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *slash = strrchr(buf, '/'); slash; slash = strrchr(buf, '/')) {
		*slash = 0;
		if (lookup(dirs, buf))
			return 0;
		int r = put(dirs, buf, NULL, 0);
		if (r < 0)
			return r;
	}
	return 0;
}

/* May the map hold entries under "@path/"?  Without the prefix index, yes. */
static bool may_have_children(struct journal_pathmap *m, const char *path)
{
	return !m->dirs || !*path || lookup(m->dirs, path);
}

/* Give @path the content @c (taking over the caller's reference), replacing
 * what it named before.  On failure the reference is dropped. */
static int put(struct journal_pathmap *m, const char *path, struct journal_content *c, uint64_t seq)
{
	struct journal_pathent *e = lookup(m, path);
	if (!e) {
		if ((m->used + 1) * 4 > m->cap * 3) {
			int r = grow(m);
			if (r < 0) {
				content_put(c);
				return r;
			}
		}
		size_t mask = m->cap - 1;
		size_t i = hash_path(path) & mask;
		while (m->slot[i].path)
			i = (i + 1) & mask;
		char *p = strdup(path);
		if (!p) {
			content_put(c);
			return -ENOMEM;
		}
		e = &m->slot[i];
		memset(e, 0, sizeof(*e));
		e->path = p;
		e->live = true;
		m->live++;
		m->used++;
		int r = m->dirs ? add_prefixes(m->dirs, path) : 0;
		if (r < 0) {
			kill_ent(m, e);
			content_put(c);
			return r;
		}
	}
	content_put(e->c);
	e->c = c;
	e->seq = seq;
	return 0;
}

int journal_pathmap_set(struct journal_pathmap *m, const char *path, bool has_hash, XXH128_hash_t h,
			uint64_t seq)
{
	struct journal_content *c = content_new(has_hash, h, seq);
	if (!c)
		return -ENOMEM;
	return put(m, path, c, seq);
}

int journal_pathmap_update(struct journal_pathmap *m, const char *path, bool has_hash,
			   XXH128_hash_t h, uint64_t seq)
{
	struct journal_pathent *e = lookup(m, path);
	if (!e)
		return journal_pathmap_set(m, path, has_hash, h, seq);
	e->c->has_hash = has_hash;
	e->c->hash = h;
	e->c->seq = seq;
	return 0;
}

int journal_pathmap_link(struct journal_pathmap *m, const char *from, const char *to, uint64_t seq)
{
	struct journal_pathent *src = lookup(m, from);
	if (!src || strcmp(from, to) == 0)
		return 0;
	struct journal_content *c = src->c;
	c->refs++;
	return put(m, to, c, seq);
}

void journal_pathmap_del(struct journal_pathmap *m, const char *path)
{
	struct journal_pathent *e = lookup(m, path);
	if (e)
		kill_ent(m, e);
}

static bool under(const char *p, const char *dir, size_t dl)
{
	return strncmp(p, dir, dl) == 0 && (p[dl] == 0 || p[dl] == '/');
}

void journal_pathmap_del_tree(struct journal_pathmap *m, const char *path)
{
	if (!may_have_children(m, path)) {
		journal_pathmap_del(m, path);
		return;
	}
	size_t dl = strlen(path);
	for (size_t i = 0; i < m->cap; i++) {
		struct journal_pathent *e = &m->slot[i];
		if (e->path && e->live && (dl == 0 || under(e->path, path, dl)))
			kill_ent(m, e);
	}
}

struct moved {
	char *path; /* new path */
	struct journal_content *c;
};

/* Take every entry under @from out of the table, renamed to be under @to. */
static int take_tree(struct journal_pathmap *m, const char *from, const char *to,
		     struct moved **out, size_t *n)
{
	size_t fl = strlen(from), tl = strlen(to), cap = 0;
	*out = NULL;
	*n = 0;
	bool scan = may_have_children(m, from);
	struct journal_pathent *only = scan ? NULL : lookup(m, from);
	for (size_t i = 0; scan ? i < m->cap : i < 1; i++) {
		struct journal_pathent *e = scan ? &m->slot[i] : only;
		if (!e || !e->path || !e->live || !under(e->path, from, fl))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			struct moved *nm = realloc(*out, cap * sizeof(**out));
			if (!nm)
				return -ENOMEM;
			*out = nm;
		}
		size_t rest = strlen(e->path + fl);
		char *np = malloc(tl + rest + 1);
		if (!np)
			return -ENOMEM;
		memcpy(np, to, tl);
		memcpy(np + tl, e->path + fl, rest + 1);
		(*out)[(*n)++] = (struct moved){np, e->c};
		e->c = NULL; /* the reference moves with the name */
		kill_ent(m, e);
	}
	return 0;
}

static int put_tree(struct journal_pathmap *m, struct moved *mv, size_t n, uint64_t seq)
{
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		if (r == 0)
			r = put(m, mv[i].path, mv[i].c, seq);
		else
			content_put(mv[i].c);
		free(mv[i].path);
	}
	free(mv);
	return r;
}

int journal_pathmap_rename(struct journal_pathmap *m, const char *from, const char *to,
			   bool exchange, uint64_t seq)
{
	if (strcmp(from, to) == 0)
		return 0;
	struct moved *a = NULL, *b = NULL;
	size_t na = 0, nb = 0;
	int r = take_tree(m, from, to, &a, &na);
	if (r == 0 && exchange)
		r = take_tree(m, to, from, &b, &nb);
	else if (r == 0)
		journal_pathmap_del_tree(m, to); /* what the rename replaced */
	int r2 = put_tree(m, a, na, seq);
	int r3 = put_tree(m, b, nb, seq);
	return r ? r : r2 ? r2 : r3;
}

static XXH128_hash_t empty_hash(void)
{
	return XXH3_128bits("", 0);
}

#define RENAME_EXCHANGE_FLAG 2 /* RENAME_EXCHANGE, <linux/fs.h> */

int journal_pathmap_apply(struct journal_pathmap *m, const struct journal_entry *e)
{
	if (!e->path)
		return 0;
	if (e->op == JOP_RECOVER && e->result == -ENOENT) {
		journal_pathmap_del(m, e->path); /* recorded file found missing */
		return 0;
	}
	if (e->result != 0)
		return 0;
	XXH128_hash_t zero = {0, 0};
	switch (e->op) {
	case JOP_WRITE:
	case JOP_COPYUP:
		if (e->op == JOP_WRITE && (e->flags & JOURNAL_F_UNLINKED))
			return 0;
		if (e->op == JOP_WRITE)
			return journal_pathmap_update(m, e->path, e->has_hash_after,
						      e->has_hash_after ? e->hash_after : zero,
						      e->seq);
		/* A copy-up makes a new upper file, linked to no other name. */
		if (e->has_hash_after)
			return journal_pathmap_set(m, e->path, true, e->hash_after, e->seq);
		if (e->has_hash_before)
			return journal_pathmap_set(m, e->path, true, e->hash_before, e->seq);
		return journal_pathmap_set(m, e->path, false, zero, e->seq);
	case JOP_CREATE:
		return journal_pathmap_set(
		    m, e->path, true, e->has_hash_after ? e->hash_after : empty_hash(), e->seq);
	case JOP_SYMLINK:
		/* A symlink's content is its target (journal/SCHEMA.md). */
		if (!e->path2)
			return journal_pathmap_set(m, e->path, false, zero, e->seq);
		return journal_pathmap_set(m, e->path, true,
					   XXH3_128bits(e->path2, strlen(e->path2)), e->seq);
	case JOP_MKNOD:
		if (e->mode && !S_ISREG(e->mode))
			return 0;
		return journal_pathmap_set(m, e->path, true, empty_hash(), e->seq);
	case JOP_TRUNCATE:
		if (e->flags & JOURNAL_F_UNLINKED)
			return 0; /* a file without a name: nothing at a path */
		if (e->has_hash_after)
			return journal_pathmap_update(m, e->path, true, e->hash_after, e->seq);
		if (e->bytes == 0)
			return journal_pathmap_update(m, e->path, true, empty_hash(), e->seq);
		return journal_pathmap_update(m, e->path, false, zero, e->seq);
	case JOP_RECOVER:
		if (e->flags & JOURNAL_F_MARKER)
			return 0; /* a whiteout or the like: no file's content */
		/* What the upper file at the path holds, under all its names. */
		return journal_pathmap_update(m, e->path, e->has_hash_after,
					      e->has_hash_after ? e->hash_after : zero, e->seq);
	case JOP_UNLINK:
		journal_pathmap_del(m, e->path);
		return 0;
	case JOP_RMDIR:
		journal_pathmap_del_tree(m, e->path);
		return 0;
	case JOP_DISCARD:
		/* The path, and all below it ("" the whole view), went back to
		 * the base: nothing of it is left in the upper. */
		journal_pathmap_del(m, e->path);
		journal_pathmap_del_tree(m, e->path);
		return 0;
	case JOP_RENAME:
		if (!e->path2)
			return 0;
		return journal_pathmap_rename(m, e->path, e->path2,
					      (e->flags & RENAME_EXCHANGE_FLAG) != 0, e->seq);
	case JOP_LINK:
		/* path2, the new name, names the file at path from now on. */
		if (!e->path2)
			return 0;
		return journal_pathmap_link(m, e->path, e->path2, e->seq);
	default:
		return 0;
	}
}

void journal_pathmap_each(struct journal_pathmap *m,
			  void (*fn)(void *arg, struct journal_pathent *e), void *arg)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slot[i].path && m->slot[i].live)
			fn(arg, &m->slot[i]);
}

/* A directory whose entries `agentfs discard` may have given markers of its
 * own (changes.c, reopen_ancestors: the whiteouts of the other lower
 * entries of an opaque directory on the way to the discarded path). */
#define TOUCHED_CHILDREN 1u

/* @path touched, keeping a mark it has (TOUCHED_CHILDREN). */
static int touch(struct journal_pathmap *m, const char *path, uint64_t seq)
{
	if (journal_pathmap_get(m, path))
		return 0;
	return journal_pathmap_set(m, path, false, (XXH128_hash_t){0, 0}, seq);
}

int journal_touched_apply(struct journal_pathmap *m, const struct journal_entry *e)
{
	if (!e->path || e->result != 0)
		return 0;
	int r = 0;
	switch (e->op) {
	case JOP_RENAME: {
		if (!e->path2)
			return 0;
		/* The upper directory moved with what it holds, marks included;
		 * the source is a whiteout now (or, exchanged, the other). */
		bool exchange = (e->flags & RENAME_EXCHANGE_FLAG) != 0;
		r = journal_pathmap_rename(m, e->path, e->path2, exchange, e->seq);
		if (r == 0)
			r = touch(m, e->path2, e->seq);
		if (r == 0 && !exchange)
			journal_pathmap_del(m, e->path);
		return r ? r : touch(m, e->path, e->seq);
	}
	case JOP_LINK:
		return e->path2 ? touch(m, e->path2, e->seq) : 0;
	case JOP_RECOVER:
		if (!(e->flags & JOURNAL_F_MARKER))
			return 0; /* a file's content, no marker */
		return touch(m, e->path, e->seq);
	case JOP_RMDIR:
	case JOP_MKDIR:
		/* A directory gone, or a new one: nothing of what was below. */
		journal_pathmap_del_tree(m, e->path);
		return touch(m, e->path, e->seq);
	case JOP_DISCARD: {
		/* Back to the base: no marker is left at or below the path.  The
		 * directories on the way to it may have new ones, made by discard
		 * (changes.c, reopen_ancestors): an opaque directory, or one in
		 * place of a deleted or renamed one, keeps hiding its other
		 * entries.  Those are the directories at or below the first one
		 * on the way that a record touched. */
		journal_pathmap_del_tree(m, e->path);
		char buf[PATH_MAX];
		snprintf(buf, sizeof(buf), "%s", e->path);
		bool above = false;
		for (char *p = strchr(buf, '/'); p && r == 0; p = strchr(p + 1, '/')) {
			*p = 0;
			above = above || journal_pathmap_get(m, buf);
			r = above ? touch(m, buf, e->seq) : 0;
			struct journal_pathent *a =
			    above && r == 0 ? journal_pathmap_get(m, buf) : NULL;
			if (a)
				a->c->hash.low64 |= TOUCHED_CHILDREN;
			*p = '/';
		}
		return r;
	}
	case JOP_UNLINK:
	case JOP_CREATE:
	case JOP_MKNOD:
	case JOP_SYMLINK:
	case JOP_COPYUP: /* of a FIFO, a socket: mknod in the upper */
		return touch(m, e->path, e->seq);
	default:
		return 0;
	}
}

/* Is @name's whiteout the hashed one ".wh..h.@hashed"? */
static bool hashes_to(const char *name, const char *hashed)
{
	char wh[NAME_MAX + 1];
	size_t hl = strlen(LAYOUT_WH_HASHED);
	return layout_whiteout_name(name, wh, sizeof(wh)) == 0 &&
	       strncmp(wh + LAYOUT_WH_PREFIX_LEN, LAYOUT_WH_HASHED, hl) == 0 &&
	       strcmp(wh + LAYOUT_WH_PREFIX_LEN + hl, hashed) == 0;
}

bool journal_touched_explains(struct journal_pathmap *m, const char *path, const char *hashed)
{
	if (journal_pathmap_get(m, path))
		return true;
	const char *slash = strrchr(path, '/');
	size_t dl = slash ? (size_t)(slash - path) : 0;
	char dir[PATH_MAX];
	if (dl >= sizeof(dir))
		return false;
	memcpy(dir, path, dl);
	dir[dl] = 0;
	struct journal_pathent *d = slash ? journal_pathmap_get(m, dir) : NULL;
	if (d && (d->c->hash.low64 & TOUCHED_CHILDREN))
		return true;
	if (!hashed)
		return false;
	/* ".wh..h.HEX": the whiteout of a name too long for the prefix; some
	 * name recorded in that directory hashes to HEX. */
	size_t pl = slash ? dl + 1 : 0;
	for (size_t i = 0; i < m->cap; i++) {
		const struct journal_pathent *e = &m->slot[i];
		if (e->path && e->live && strncmp(e->path, path, pl) == 0 &&
		    !strchr(e->path + pl, '/') && hashes_to(e->path + pl, hashed))
			return true;
	}
	return false;
}

/* ---- the checkpoint's layout (checkpoint.c) -------------------------------- */

void journal_pathmap_save(struct journal_pathmap *m, struct jbuf *b)
{
	/* Number the contents in the order their first name comes, so that
	 * names sharing one (hard links) share its number. */
	uint64_t n = 0;
	for (size_t i = 0; i < m->cap; i++) {
		struct journal_pathent *e = &m->slot[i];
		if (e->path && e->live && e->c->id == 0)
			e->c->id = ++n;
	}
	jbuf_put(b, &n, sizeof(n));
	uint64_t next = 1;
	for (size_t i = 0; i < m->cap && next <= n; i++) {
		struct journal_pathent *e = &m->slot[i];
		if (!e->path || !e->live || e->c->id != next)
			continue;
		uint8_t has = e->c->has_hash;
		jbuf_put(b, &has, sizeof(has));
		jbuf_put(b, &e->c->hash.low64, sizeof(uint64_t));
		jbuf_put(b, &e->c->hash.high64, sizeof(uint64_t));
		jbuf_put(b, &e->c->seq, sizeof(uint64_t));
		next++;
	}
	uint64_t live = m->live;
	jbuf_put(b, &live, sizeof(live));
	for (size_t i = 0; i < m->cap; i++) {
		struct journal_pathent *e = &m->slot[i];
		if (!e->path || !e->live)
			continue;
		uint32_t len = (uint32_t)strlen(e->path);
		jbuf_put(b, &e->c->id, sizeof(uint64_t));
		jbuf_put(b, &e->seq, sizeof(uint64_t));
		jbuf_put(b, &len, sizeof(len));
		jbuf_put(b, e->path, len);
	}
	for (size_t i = 0; i < m->cap; i++)
		if (m->slot[i].path && m->slot[i].live)
			m->slot[i].c->id = 0;
}

/* Bytes of one saved content and of the smallest saved name. */
#define SAVED_CONTENT (1 + 3 * sizeof(uint64_t))
#define SAVED_NAME    (2 * sizeof(uint64_t) + sizeof(uint32_t))

int journal_pathmap_load(struct journal_pathmap *m, struct jcursor *c)
{
	uint64_t n = 0;
	jcur_get(c, &n, sizeof(n));
	if (c->bad || n > (uint64_t)(c->end - c->p) / SAVED_CONTENT)
		return -EBADMSG;
	struct journal_content **cs = n ? calloc(n, sizeof(*cs)) : NULL;
	if (n && !cs)
		return -ENOMEM;
	int r = 0;
	for (uint64_t i = 0; i < n && r == 0; i++) {
		uint8_t has = 0;
		XXH128_hash_t h;
		uint64_t seq = 0;
		jcur_get(c, &has, sizeof(has));
		jcur_get(c, &h.low64, sizeof(uint64_t));
		jcur_get(c, &h.high64, sizeof(uint64_t));
		jcur_get(c, &seq, sizeof(seq));
		cs[i] = content_new(has != 0, h, seq);
		r = c->bad || has > 1 ? -EBADMSG : cs[i] ? 0 : -ENOMEM;
	}
	uint64_t names = 0;
	if (r == 0)
		jcur_get(c, &names, sizeof(names));
	if (r == 0 && (c->bad || names > (uint64_t)(c->end - c->p) / SAVED_NAME))
		r = -EBADMSG;
	char path[PATH_MAX];
	for (uint64_t i = 0; i < names && r == 0; i++) {
		uint64_t id = 0, seq = 0;
		uint32_t len = 0;
		jcur_get(c, &id, sizeof(id));
		jcur_get(c, &seq, sizeof(seq));
		jcur_get(c, &len, sizeof(len));
		if (c->bad || id == 0 || id > n || len >= sizeof(path) || !jcur_get(c, path, len) ||
		    memchr(path, 0, len)) {
			r = -EBADMSG;
			break;
		}
		path[len] = 0;
		cs[id - 1]->refs++;
		r = put(m, path, cs[id - 1], seq);
	}
	for (uint64_t i = 0; i < n; i++)
		content_put(cs[i]); /* the table's reference; the names hold theirs */
	free(cs);
	return r;
}

void journal_pathmap_swap(struct journal_pathmap *a, struct journal_pathmap *b)
{
	struct journal_pathmap t = *a;
	*a = *b;
	*b = t;
}
