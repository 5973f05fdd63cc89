/* changes.c - the change set: the upper and the lower walked side by side. */
#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cli/changes.h"
#include "cli/workspace.h"
#include "fs/layout.h"
#include "policy/policy.h"
#include "policy/symlink.h"

/* ---- paths below a layer, never through a symlink ---- */

/* Open @rel ("" for the root) below @root: every component with O_NOFOLLOW, so a
 * symlink in a layer never leads out of it.  @flags apply to the last component. */
int changes_open_below(int root, const char *rel, int flags)
{
	int fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	const char *p = rel;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		char name[NAME_MAX + 1];
		if (n == 0 || n > NAME_MAX) {
			close(fd);
			return n ? -ENAMETOOLONG : -EINVAL;
		}
		memcpy(name, p, n);
		name[n] = 0;
		int f = slash ? O_RDONLY | O_DIRECTORY : flags;
		int next = openat(fd, name, f | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(fd);
		if (next < 0)
			return -e;
		fd = next;
		p = slash ? slash + 1 : p + n;
	}
	return fd;
}

/* Open the directory holding @rel's last component; *name points into @rel. */
static int open_parent(int root, const char *rel, const char **name)
{
	const char *slash = strrchr(rel, '/');
	if (!slash) {
		*name = rel;
		return changes_open_below(root, "", O_RDONLY | O_DIRECTORY);
	}
	char *dir = strndup(rel, (size_t)(slash - rel));
	if (!dir)
		return -ENOMEM;
	int fd = changes_open_below(root, dir, O_RDONLY | O_DIRECTORY);
	free(dir);
	*name = slash + 1;
	return fd;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *s = malloc(a + b + 2);
	if (!s)
		return NULL;
	if (a) {
		memcpy(s, dir, a);
		s[a++] = '/';
	}
	memcpy(s + a, name, b + 1);
	return s;
}

static uint32_t git_mode(mode_t m)
{
	if (S_ISLNK(m))
		return CHANGE_MODE_LINK;
	return m & S_IXUSR ? CHANGE_MODE_EXEC : CHANGE_MODE_FILE;
}

/* ---- directory listings ---- */

struct names {
	char **v;
	size_t n, cap;
};

static int names_add(struct names *ns, const char *name)
{
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 16;
		char **v = realloc(ns->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ns->v = v;
		ns->cap = cap;
	}
	if (!(ns->v[ns->n] = strdup(name)))
		return -ENOMEM;
	ns->n++;
	return 0;
}

static void names_clear(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Add the names of the entries of directory @fd (not consumed), markers included. */
static int names_read(struct names *ns, int fd)
{
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	int r = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if ((r = names_add(ns, de->d_name)) < 0)
			break;
		errno = 0;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	return r;
}

static void names_sort_unique(struct names *ns)
{
	if (!ns->n)
		return;
	qsort(ns->v, ns->n, sizeof(*ns->v), cmp_names);
	size_t j = 0;
	for (size_t i = 0; i < ns->n; i++) {
		if (j && strcmp(ns->v[j - 1], ns->v[i]) == 0) {
			free(ns->v[i]);
			continue;
		}
		ns->v[j++] = ns->v[i];
	}
	ns->n = j;
}

/* ---- the walk ---- */

struct walk {
	int lower_fd, upper_fd;
	const struct policy *pol;
	struct change *v;
	size_t n, cap;
	char *where; /* the view path the walk failed at (NULL: not asked) */
	size_t where_len;
	/* Below a directory the view no longer shows as the base's (the agent
	 * deleted, replaced or moved it): when it stopped showing it. */
	struct timespec cover;
	bool covered;
};

/* One side of one name while walking. */
struct entry {
	bool present;
	enum change_layer layer;
	char *path; /* borrowed while walking */
	struct stat st;
};

static bool lower_visible_p(const struct policy *pol, const char *lpath, const struct stat *st)
{
	bool dir = S_ISDIR(st->st_mode);
	return policy_decide_path(pol, lpath, dir,
				  policy_size(st->st_mode, (uint64_t)st->st_size)) != POLICY_HIDDEN;
}

bool changes_lower_shown(const struct policy *pol, int lower_fd, const char *lpath,
			 const struct stat *st)
{
	if (!lower_visible_p(pol, lpath, st))
		return false;
	/* The view's rule for lower symlinks (policy/symlink.h), as fs/ applies it. */
	return !S_ISLNK(st->st_mode) || policy_symlinks_mode(pol) != POLICY_SYMLINKS_HIDE ||
	       !policy_symlink_unsafe(pol, lower_fd, lpath);
}

static bool lower_visible(const struct walk *w, const char *lpath, const struct stat *st)
{
	return changes_lower_shown(w->pol, w->lower_fd, lpath, st);
}

/*
 * Does the lower directory @dfd at lower path @lpath hold, at any depth, an
 * entry the view hides?  1 yes, 0 no, or a negative errno.  Asked only for a
 * directory the agent replaced by a file, so it costs nothing otherwise.
 */
static int lower_has_hidden(const struct walk *w, const char *lpath, int dfd)
{
	struct names ns = {0};
	int r = names_read(&ns, dfd);
	for (size_t i = 0; r == 0 && i < ns.n; i++) {
		struct stat st;
		if (fstatat(dfd, ns.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = errno == ENOENT ? 0 : -errno; /* gone since the listing */
			continue;
		}
		char *p = join(lpath, ns.v[i]);
		if (!p) {
			r = -ENOMEM;
			break;
		}
		if (!lower_visible(w, p, &st)) {
			r = 1;
		} else if (S_ISDIR(st.st_mode)) {
			int cfd =
			    openat(dfd, ns.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			r = cfd < 0 ? -errno : lower_has_hidden(w, p, cfd);
			if (cfd >= 0)
				close(cfd);
		}
		free(p);
	}
	names_clear(&ns);
	return r;
}

static int side_set(struct change_side *s, const struct entry *e)
{
	s->present = true;
	s->layer = e->layer;
	s->mode = git_mode(e->st.st_mode);
	s->size = (uint64_t)e->st.st_size;
	s->path = strdup(e->path);
	return s->path ? 0 : -ENOMEM;
}

static void change_clear(struct change *c)
{
	free(c->path);
	free(c->base.path);
	free(c->view.path);
	free(c->origin);
}

static int hash_at(int root, const char *rel, XXH128_hash_t *h, struct stat *st)
{
	int fd = changes_open_below(root, rel, O_RDONLY);
	if (fd < 0)
		return fd;
	int r = 0;
	if (fstat(fd, st) < 0)
		r = -errno;
	else if (!S_ISREG(st->st_mode))
		r = -EINVAL;
	else
		r = layout_hash_fd(fd, h);
	close(fd);
	return r;
}

/*
 * A copied-up view file: compare the lower file it came from with the hash taken
 * at copy-up.  Returns 1 when the change is a conflict (*origin set), 2 when it
 * is no change at all (the agent's copy equals what it copied and stayed at its
 * path; the lower moved on without the agent), 0 otherwise (*none set when the
 * file has no origin: the agent made it).
 */
static int check_origin(const struct walk *w, const char *path, const struct entry *view,
			char **origin, bool *none)
{
	int fd = changes_open_below(w->upper_fd, view->path, O_RDONLY);
	if (fd < 0)
		return fd;
	struct layout_origin o;
	int r = layout_get_origin(fd, &o);
	if (r <= 0) {
		close(fd);
		*none = r == 0;
		return r == -EINVAL ? 0 : r; /* a malformed origin says nothing */
	}
	XXH128_hash_t lower_h;
	struct stat lst;
	int lr = hash_at(w->lower_fd, o.path, &lower_h, &lst);
	bool lower_same =
	    lr == 0 && XXH128_isEqual(lower_h, o.hash) && lower_visible(w, o.path, &lst);
	if (lr < 0 && lr != -ENOENT && lr != -ENOTDIR && lr != -EINVAL && lr != -ELOOP) {
		close(fd);
		return lr;
	}
	if (lower_same) {
		close(fd);
		return 0;
	}
	XXH128_hash_t up_h;
	r = layout_hash_fd(fd, &up_h);
	close(fd);
	if (r < 0)
		return r;
	bool agent_same = XXH128_isEqual(up_h, o.hash) && strcmp(o.path, path) == 0 && lr == 0 &&
			  git_mode(lst.st_mode) == git_mode(view->st.st_mode);
	if (agent_same)
		return 2;
	return (*origin = strdup(o.path)) ? 1 : -ENOMEM;
}

/*
 * When the upper entry @name of @dfd came to be: its birth time (a whiteout's
 * is the moment of the deletion it records), else its ctime, which is later
 * and so errs towards no conflict.  False when it cannot be read.
 */
static bool upper_born(int dfd, const char *name, struct timespec *ts)
{
	struct statx sx;
	if (statx(dfd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BTIME | STATX_CTIME,
		  &sx) < 0)
		return false;
	const struct statx_timestamp *t = sx.stx_mask & STATX_BTIME ? &sx.stx_btime : &sx.stx_ctime;
	ts->tv_sec = t->tv_sec;
	ts->tv_nsec = (long)t->tv_nsec;
	return true;
}

static bool whiteout_born(int dfd, const char *name, struct timespec *ts)
{
	char wh[NAME_MAX + 1];
	return layout_whiteout_name(name, wh, sizeof(wh)) == 0 && upper_born(dfd, wh, ts);
}

/* Did the lower entry @st change (or come) at or after @t?  Files are stamped
 * from the coarse clock (a jiffy) unless a finer time was handed out since:
 * an equal time is a change in the same tick, before or after the agent's,
 * which counts (better a conflict than a patch undoing the person's work). */
static bool changed_since_ts(const struct timespec *a, const struct timespec *t)
{
	return a->tv_sec > t->tv_sec || (a->tv_sec == t->tv_sec && a->tv_nsec >= t->tv_nsec);
}

static bool changed_since(const struct stat *st, const struct timespec *t)
{
	return changed_since_ts(&st->st_ctim, t);
}

/* Hash of one side's bytes (a symlink's target for a symlink). */
static int side_hash(const struct walk *w, const struct entry *e, XXH128_hash_t *h)
{
	int root = e->layer == CHANGE_UPPER ? w->upper_fd : w->lower_fd;
	const char *name;
	int dfd = open_parent(root, e->path, &name);
	if (dfd < 0)
		return dfd;
	int r = 0;
	if (S_ISLNK(e->st.st_mode)) {
		char t[PATH_MAX];
		ssize_t n = readlinkat(dfd, name, t, sizeof(t));
		if (n < 0)
			r = -errno;
		else
			*h = XXH3_128bits(t, (size_t)n);
	} else {
		int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			r = -errno;
		else
			r = layout_hash_fd(fd, h);
		if (fd >= 0)
			close(fd);
	}
	close(dfd);
	return r;
}

/* Do both sides hold the same kind, mode and bytes?  1 yes, 0 no. */
static int same_bytes(const struct walk *w, const struct entry *a, const struct entry *b)
{
	if (git_mode(a->st.st_mode) != git_mode(b->st.st_mode) || a->st.st_size != b->st.st_size)
		return 0;
	XXH128_hash_t ha, hb;
	int r = side_hash(w, a, &ha);
	if (r == 0)
		r = side_hash(w, b, &hb);
	if (r < 0)
		return r;
	return XXH128_isEqual(ha, hb);
}

/*
 * The deletion @c of a file whose whiteout @name in @ufd keeps the origin of
 * the agent's copy (the agent changed the file, then deleted it): a conflict
 * when the lower file at its path no longer holds what the copy was taken from.
 */
static int check_deleted(const struct walk *w, int ufd, const char *name, struct change *c)
{
	struct layout_origin o;
	if (layout_whiteout_origin(ufd, name, &o) != 1 || strcmp(o.path, c->path) != 0)
		return 0;
	XXH128_hash_t h;
	struct stat st;
	int r = hash_at(w->lower_fd, c->path, &h, &st);
	if (r == 0 && XXH128_isEqual(h, o.hash))
		return 0;
	if (r < 0 && r != -ENOENT && r != -ENOTDIR && r != -EINVAL && r != -ELOOP)
		return r;
	if (!(c->origin = strdup(c->path)))
		return -ENOMEM;
	c->flags |= CHANGE_CONFLICT;
	return 0;
}

/*
 * Emit the change at @path from @base to @view.  @since, when known, is the
 * moment the view stopped showing the base's entry there without copying it
 * (the agent deleted it, or made a file of its own in its place): a base
 * entry changed or made at or after it is the person's work, which the change
 * would undo (delete, or replace by the agent's file), a conflict.
 */
static int emit(struct walk *w, const char *path, const struct entry *base,
		const struct entry *view, const struct timespec *since)
{
	unsigned flags = 0;
	char *origin = NULL;
	bool later = base->present && since && changed_since(&base->st, since);
	if (later && !view->present)
		flags |= CHANGE_CONFLICT | CHANGE_CONFLICT_LATER;
	if (view->present) {
		if (!S_ISREG(view->st.st_mode) && !S_ISLNK(view->st.st_mode))
			flags |= CHANGE_UNSUPPORTED;
		else if (policy_decide_path(
			     w->pol, path, false,
			     policy_size(view->st.st_mode, (uint64_t)view->st.st_size)) ==
			 POLICY_HIDDEN)
			flags |= CHANGE_HIDDEN_NAME;
		bool none = view->layer == CHANGE_UPPER && S_ISLNK(view->st.st_mode);
		if (view->layer == CHANGE_UPPER && S_ISREG(view->st.st_mode)) {
			int r = check_origin(w, path, view, &origin, &none);
			if (r == -ENOENT)
				return 0; /* gone since the listing: the agent is at work */
			if (r < 0)
				return r;
			if (r == 2)
				return 0;
			if (r == 1)
				flags |= CHANGE_CONFLICT;
		}
		/* A file or symlink the agent made, not copied: the base's
		 * entry at its path came or changed after it did. */
		if (none && later)
			flags |= CHANGE_CONFLICT | CHANGE_CONFLICT_LATER;
	}
	if ((flags & CHANGE_CONFLICT_LATER) && !origin && !(origin = strdup(path)))
		return -ENOMEM;
	/* A copy-up the agent did not change, a file saved again unchanged; a
	 * file both made alike. */
	if ((!flags || flags == (CHANGE_CONFLICT | CHANGE_CONFLICT_LATER)) && base->present &&
	    view->present) {
		int r = same_bytes(w, base, view);
		if (r != 0) {
			free(origin);
			return r < 0 && r != -ENOENT ? r : 0;
		}
	}
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		struct change *v = realloc(w->v, cap * sizeof(*v));
		if (!v) {
			free(origin);
			return -ENOMEM;
		}
		w->v = v;
		w->cap = cap;
	}
	struct change *c = &w->v[w->n];
	memset(c, 0, sizeof(*c));
	c->flags = flags;
	c->origin = origin;
	int r = (c->path = strdup(path)) ? 0 : -ENOMEM;
	if (r == 0 && base->present)
		r = side_set(&c->base, base);
	if (r == 0 && view->present)
		r = side_set(&c->view, view);
	if (r < 0) {
		change_clear(c);
		return r;
	}
	w->n++;
	return 0;
}

static int emit_hidden_dir(struct walk *w, const char *path)
{
	struct entry none = {0};
	size_t n = w->n;
	int r = emit(w, path, &none, &none, NULL);
	if (r < 0)
		return r;
	struct change *c = &w->v[n];
	char *p = malloc(strlen(path) + 2);
	if (!p)
		return -ENOMEM;
	sprintf(p, "%s/", path);
	free(c->path);
	c->path = p;
	c->flags = CHANGE_HIDDEN_NAME;
	return 0;
}

/*
 * Walk path @p (a directory on at least one side):
 *   @ufd  the upper directory at @p, or -1
 *   @lv   the lower path the view's lower entries at @p come from, or NULL (fd @lvfd)
 *   @lbfd the lower directory at @p when the base has one, or -1
 * A region where the view shows the lower at the same path is the same on both
 * sides and is not entered.
 */
static int walk_dir(struct walk *w, const char *p, int ufd, const char *lv, int lvfd, int lbfd)
{
	struct names ns = {0};
	int r = 0;
	if (ufd >= 0)
		r = names_read(&ns, ufd);
	if (r == 0 && lvfd >= 0)
		r = names_read(&ns, lvfd);
	if (r == 0 && lbfd >= 0 && lbfd != lvfd)
		r = names_read(&ns, lbfd);
	if (r < 0)
		goto out;
	names_sort_unique(&ns);

	for (size_t i = 0; i < ns.n && r == 0; i++) {
		const char *n = ns.v[i];
		if (layout_is_reserved(n))
			continue;
		char *path = join(p, n);
		char *lvpath = lv ? join(lv, n) : NULL;
		if (!path || (lv && !lvpath)) {
			free(path);
			free(lvpath);
			r = -ENOMEM;
			break;
		}
		struct entry view = {0}, base = {0};
		bool wh = false;
		char *child_lv = NULL; /* lower source of the view's directory at path */

		if (ufd >= 0 && fstatat(ufd, n, &view.st, AT_SYMLINK_NOFOLLOW) == 0) {
			view.present = true;
			view.layer = CHANGE_UPPER;
			view.path = path;
		}
		if (ufd >= 0) {
			int h = layout_has_whiteout(ufd, n);
			if (h < 0) {
				r = h;
				goto next;
			}
			wh = h;
		}
		struct stat lvst;
		bool lv_dir = false; /* the view's lower source has a visible directory */
		if (lvfd >= 0 && !wh && fstatat(lvfd, n, &lvst, AT_SYMLINK_NOFOLLOW) == 0 &&
		    lower_visible(w, lvpath, &lvst)) {
			if (!view.present) {
				view.present = true;
				view.layer = CHANGE_LOWER;
				view.path = lvpath;
				view.st = lvst;
			}
			lv_dir = S_ISDIR(lvst.st_mode);
		}
		bool base_hidden = false; /* the base holds an entry the view hides */
		if (lbfd >= 0 && fstatat(lbfd, n, &base.st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (lower_visible(w, path, &base.st)) {
				base.present = true;
				base.layer = CHANGE_LOWER;
				base.path = path;
			} else {
				base_hidden = true;
			}
		}

		/* The view shows the lower entry at its own path: nothing changed here. */
		if (view.present && view.layer == CHANGE_LOWER && strcmp(lvpath, path) == 0)
			goto next;

		int cufd = -1, clvfd = -1, clbfd = -1;
		bool view_dir = view.present && S_ISDIR(view.st.st_mode);
		bool base_dir = base.present && S_ISDIR(base.st.st_mode);
		if (view_dir && view.layer == CHANGE_UPPER) {
			cufd = openat(ufd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cufd < 0) {
				r = -errno;
				goto next;
			}
			char red[PATH_MAX];
			int rl = layout_get_redirect(cufd, red, sizeof(red));
			int op = rl > 0 ? 0 : layout_is_opaque(cufd);
			if (rl < 0 || op < 0) {
				r = rl < 0 ? rl : op;
				close(cufd);
				goto next;
			}
			if (rl > 0) {
				struct stat rst;
				int fd =
				    changes_open_below(w->lower_fd, red, O_RDONLY | O_DIRECTORY);
				if (fd >= 0 && fstat(fd, &rst) == 0 &&
				    lower_visible(w, red, &rst)) {
					clvfd = fd;
					child_lv = strdup(red);
				} else if (fd >= 0) {
					close(fd);
				}
			} else if (!op && lv_dir) {
				clvfd = openat(lvfd, n,
					       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (clvfd >= 0)
					child_lv = strdup(lvpath);
			}
		} else if (view_dir) {
			clvfd = openat(lvfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (clvfd >= 0)
				child_lv = strdup(lvpath);
		}
		if (clvfd >= 0 && !child_lv)
			r = -ENOMEM;
		if (r == 0 && base_dir) {
			clbfd = openat(lbfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (clbfd < 0)
				r = -errno;
		}

		/* Files and symlinks (and what git cannot hold) are changes; a directory
		 * on either side is entered. */
		struct entry vf = view, bf = base;
		if (view_dir)
			vf.present = false;
		if (base_dir)
			bf.present = false;
		/* When the view stopped showing the base's entry here: the
		 * agent's deletion (its whiteout), the agent's own entry made in
		 * its place, or that of a directory above. */
		struct timespec since = w->cover, born;
		bool has_since = w->covered;
		bool merged = view_dir && child_lv && strcmp(child_lv, path) == 0;
		if (base.present && wh) {
			has_since = whiteout_born(ufd, n, &since);
		} else if (base.present && view.present && view.layer == CHANGE_UPPER && !merged &&
			   upper_born(ufd, n, &born)) {
			if (!has_since || !changed_since_ts(&born, &since))
				since = born;
			has_since = true;
		}
		size_t emitted = w->n;
		if (r == 0 && (vf.present || bf.present))
			r = emit(w, path, &bf, &vf, has_since ? &since : NULL);
		/* A deletion of a file the agent had changed: its whiteout
		 * keeps the copy's base, which the lower must still hold. */
		if (r == 0 && w->n > emitted && bf.present && !vf.present && wh &&
		    !(w->v[emitted].flags & CHANGE_CONFLICT))
			r = check_deleted(w, ufd, n, &w->v[emitted]);
		/* A file where the base has a directory: git must delete that whole
		 * directory to put it there, hidden entries included (the agent's
		 * rm -rf could not reach them). */
		if (r == 0 && w->n > emitted && vf.present && base_dir &&
		    !(w->v[emitted].flags & (CHANGE_HIDDEN_NAME | CHANGE_UNSUPPORTED))) {
			int h = lower_has_hidden(w, path, clbfd);
			if (h < 0)
				r = h;
			else if (h)
				w->v[emitted].flags |= CHANGE_OVER_HIDDEN;
		}
		/* A file or symlink where the base holds an entry the view hides
		 * (a symlink out of the repository under `symlinks: hide`, a file
		 * over a size rule): the patch would replace what the agent never
		 * saw, and `git apply` finds the path taken. */
		if (r == 0 && w->n > emitted && vf.present && base_hidden &&
		    !(w->v[emitted].flags & (CHANGE_HIDDEN_NAME | CHANGE_UNSUPPORTED)))
			w->v[emitted].flags |= CHANGE_OVER_HIDDEN | CHANGE_OVER_HIDDEN_ENTRY;
		/* A directory the agent made at a hidden name (a `git init`'s .git) is
		 * one change "NAME/", not one per file: all of it is left out. */
		bool hidden_dir = view_dir && !base_dir && view.layer == CHANGE_UPPER &&
				  policy_decide_path(w->pol, path, true, 0) == POLICY_HIDDEN;
		if (r == 0 && hidden_dir)
			r = emit_hidden_dir(w, path);
		else if (r == 0 && (cufd >= 0 || clvfd >= 0 || clbfd >= 0)) {
			struct timespec cover = w->cover;
			bool covered = w->covered;
			w->cover = since;
			w->covered = has_since;
			r = walk_dir(w, path, cufd, child_lv, clvfd, clbfd);
			w->cover = cover;
			w->covered = covered;
		}
		if (cufd >= 0)
			close(cufd);
		if (clvfd >= 0)
			close(clvfd);
		if (clbfd >= 0)
			close(clbfd);
	next:
		/* The deepest path first: the entry the walk could not read
		 * (the agent's chmod 000 of a file or a directory). */
		if (r < 0 && w->where && !w->where[0])
			snprintf(w->where, w->where_len, "%s", path);
		free(child_lv);
		free(path);
		free(lvpath);
	}
out:
	names_clear(&ns);
	return r;
}

static int cmp_change(const void *a, const void *b)
{
	return strcmp(((const struct change *)a)->path, ((const struct change *)b)->path);
}

static struct change *find_change(struct changes *cs, const char *path)
{
	struct change key = {.path = (char *)path};
	if (!cs->count)
		return NULL;
	return bsearch(&key, cs->items, cs->count, sizeof(key), cmp_change);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Clear CHANGE_CONFLICT_LATER from the deletions of lower files the view
 * shows at another path (below a directory the agent moved). */
static int moved_along(struct changes *cs)
{
	size_t nd = 0, ns = 0;
	for (size_t i = 0; i < cs->count; i++) {
		const struct change *c = &cs->items[i];
		if ((c->flags & CHANGE_CONFLICT_LATER) && !c->view.present)
			nd++;
		if (c->view.present && c->view.layer == CHANGE_LOWER)
			ns++;
	}
	if (!nd || !ns)
		return 0;
	char **shown = malloc(ns * sizeof(*shown));
	if (!shown)
		return -ENOMEM;
	ns = 0;
	for (size_t i = 0; i < cs->count; i++)
		if (cs->items[i].view.present && cs->items[i].view.layer == CHANGE_LOWER)
			shown[ns++] = cs->items[i].view.path;
	qsort(shown, ns, sizeof(*shown), cmp_str);
	for (size_t i = 0; i < cs->count; i++) {
		struct change *c = &cs->items[i];
		if (!(c->flags & CHANGE_CONFLICT_LATER) || c->view.present ||
		    !bsearch(&c->path, shown, ns, sizeof(*shown), cmp_str))
			continue;
		c->flags &= ~(unsigned)(CHANGE_CONFLICT | CHANGE_CONFLICT_LATER);
		free(c->origin);
		c->origin = NULL;
	}
	free(shown);
	return 0;
}

void changes_free(struct changes *cs)
{
	if (!cs)
		return;
	for (size_t i = 0; i < cs->count; i++)
		change_clear(&cs->items[i]);
	free(cs->items);
	if (cs->lower_fd >= 0)
		close(cs->lower_fd);
	if (cs->upper_fd >= 0)
		close(cs->upper_fd);
	free(cs);
}

int changes_compute(int lower_fd, int upper_fd, const struct policy *policy, struct changes **out)
{
	return changes_compute_at(lower_fd, upper_fd, policy, out, NULL, 0);
}

int changes_compute_at(int lower_fd, int upper_fd, const struct policy *policy,
		       struct changes **out, char *where, size_t where_len)
{
	if (where && where_len)
		where[0] = 0;
	struct changes *cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->lower_fd = fcntl(lower_fd, F_DUPFD_CLOEXEC, 3);
	cs->upper_fd = fcntl(upper_fd, F_DUPFD_CLOEXEC, 3);
	if (cs->lower_fd < 0 || cs->upper_fd < 0) {
		int e = -errno;
		changes_free(cs);
		return e;
	}
	struct walk w = {.lower_fd = cs->lower_fd,
			 .upper_fd = cs->upper_fd,
			 .pol = policy,
			 .where = where_len ? where : NULL,
			 .where_len = where_len};

	/* The root merges with the lower root unless it is opaque. */
	int op = layout_is_opaque(cs->upper_fd);
	int r = op < 0 ? op : 0;
	if (r == 0)
		r = walk_dir(&w, "", cs->upper_fd, op ? NULL : "", op ? -1 : cs->lower_fd,
			     cs->lower_fd);
	cs->items = w.v;
	cs->count = w.n;
	if (r < 0) {
		changes_free(cs);
		return r;
	}
	if (cs->count)
		qsort(cs->items, cs->count, sizeof(*cs->items), cmp_change);

	/* A lower file the person changed after the agent moved its directory
	 * (a redirect) shows at the new path: the deletion of the old one is
	 * the move's, which takes the person's version along, no conflict. */
	int r2 = moved_along(cs);
	if (r2 < 0) {
		changes_free(cs);
		return r2;
	}
	/* A conflicting copy the agent moved: deleting its old path would drop the
	 * person's newer version too, so that path is part of the conflict. */
	for (size_t i = 0; i < cs->count; i++) {
		struct change *c = &cs->items[i];
		if (!(c->flags & CHANGE_CONFLICT) || strcmp(c->origin, c->path) == 0)
			continue;
		struct change *src = find_change(cs, c->origin);
		if (src && src->base.present && !src->view.present &&
		    (!src->origin || (src->flags & CHANGE_CONFLICT_LATER))) {
			src->flags =
			    (src->flags | CHANGE_CONFLICT) & ~(unsigned)CHANGE_CONFLICT_LATER;
			free(src->origin);
			if (!(src->origin = strdup(c->origin))) {
				changes_free(cs);
				return -ENOMEM;
			}
		}
	}
	*out = cs;
	return 0;
}

/* ---- ignore rules of the real repository ---- */

static int path_tracked(git_index *index, git_tree *head, const char *path)
{
	if (index && git_index_get_bypath(index, path, 0))
		return 1;
	if (head) {
		git_tree_entry *te = NULL;
		if (git_tree_entry_bypath(&te, head, path) == 0) {
			git_tree_entry_free(te);
			return 1;
		}
	}
	return 0;
}

/* Is a directory above @path a gitlink (a submodule) in @index or @head? */
static int path_in_submodule(git_index *index, git_tree *head, const char *path)
{
	char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	int in = 0;
	for (char *slash = strchr(p, '/'); slash && !in; slash = strchr(slash + 1, '/')) {
		*slash = 0;
		const git_index_entry *ie = index ? git_index_get_bypath(index, p, 0) : NULL;
		if (ie && ie->mode == GIT_FILEMODE_COMMIT)
			in = 1;
		git_tree_entry *te = NULL;
		if (!in && head && git_tree_entry_bypath(&te, head, p) == 0) {
			in = git_tree_entry_filemode(te) == GIT_FILEMODE_COMMIT;
			git_tree_entry_free(te);
		}
		*slash = '/';
	}
	free(p);
	return in;
}

static bool is_named(const char *path, const char *name)
{
	const char *slash = strrchr(path, '/');
	return strcmp(slash ? slash + 1 : path, name) == 0;
}

static int unlink_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return (type == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

/* Write @dir/@name below @top (made for the purpose, ours alone): the view's
 * where the agent's exported change set has one there, else the repository's
 * (the lower's), which the patch leaves as it is: the file the working tree
 * will have once the change is taken.  Empty when neither has one, so that
 * libgit2 does not look for it in the index instead (attributes are read
 * from the working tree, then the index). */
static int put_file(const struct changes *cs, int top, const char *dir, const char *name)
{
	char rel[PATH_MAX];
	if (snprintf(rel, sizeof(rel), "%s%s%s", dir, *dir ? "/" : "", name) >= (int)sizeof(rel))
		return -ENAMETOOLONG;
	const struct change *g = find_change((struct changes *)cs, rel);
	struct change_side lower = {
	    .present = true, .layer = CHANGE_LOWER, .path = rel, .mode = CHANGE_MODE_FILE};
	const struct change_side *side = g && change_exported(g) ? &g->view : &lower;
	char *buf = NULL;
	size_t len = 0;
	int r = side->present && side->mode != CHANGE_MODE_LINK ? changes_read(cs, side, &buf, &len)
								: -ENOENT;
	if (r == -ENOENT || r == -ENOTDIR || r == -EIO)
		r = 0; /* none, or not a regular file: empty */
	/* The directories on the way, then the file. */
	for (char *p = rel; r == 0 && (p = strchr(p, '/')); p++) {
		*p = 0;
		if (mkdirat(top, rel, 0700) < 0 && errno != EEXIST)
			r = -errno;
		*p = '/';
	}
	int fd = r < 0
		     ? -1
		     : openat(top, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (r == 0 && fd < 0)
		r = errno == EEXIST ? 0 : -errno;
	for (size_t off = 0; fd >= 0 && r == 0 && off < len;) {
		ssize_t n = write(fd, buf + off, len - off);
		if (n < 0 && errno != EINTR)
			r = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

void changes_standin_free(char *dir)
{
	if (!dir)
		return;
	nftw(dir, unlink_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

int changes_standin(const struct changes *cs, const char *name, char **tmp)
{
	*tmp = NULL;
	bool any = false;
	for (size_t i = 0; i < cs->count && !any; i++)
		any = change_exported(&cs->items[i]) && is_named(cs->items[i].path, name);
	if (!any)
		return 0;
	const char *base = getenv("TMPDIR");
	char *dir = NULL;
	if (asprintf(&dir, "%s/agentfs-standin.XXXXXX", base && *base ? base : "/tmp") < 0)
		return -ENOMEM;
	if (!mkdtemp(dir)) {
		int e = -errno;
		free(dir);
		return e;
	}
	int top = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = top < 0 ? -errno : put_file(cs, top, "", name);
	char last[PATH_MAX] = "";
	for (size_t i = 0; i < cs->count && r == 0; i++) {
		/* Each ancestor of the path, once: changes are sorted by path,
		 * so a directory's changes follow one another. */
		char d[PATH_MAX];
		snprintf(d, sizeof(d), "%s", cs->items[i].path);
		for (char *p = d; r == 0 && (p = strchr(p, '/')); p++) {
			*p = 0;
			size_t n = strlen(d);
			if (strncmp(last, d, n) != 0 || (last[n] != 0 && last[n] != '/'))
				r = put_file(cs, top, d, name);
			*p = '/';
		}
		char *slash = strrchr(d, '/');
		if (slash) {
			*slash = 0;
			snprintf(last, sizeof(last), "%s", d);
		} else {
			last[0] = 0;
		}
	}
	if (top >= 0)
		close(top);
	if (r < 0) {
		changes_standin_free(dir);
		return r;
	}
	*tmp = dir;
	return 0;
}

static int mark_ignored(struct changes *cs, git_repository *repo);

int changes_mark_ignored(struct changes *cs, git_repository *repo)
{
	if (!repo)
		return 0;
	/* The ignore rules the working tree will have once the change is
	 * taken, as the agent's git in the mount reads them: when the change
	 * set changes a .gitignore, libgit2 reads them from a stand-in
	 * (changes_standin; info/exclude and core.excludesFile stay the
	 * repository's). */
	char *tmp = NULL, *workdir = NULL;
	int tr = changes_standin(cs, ".gitignore", &tmp);
	if (tr < 0)
		return tr;
	if (tmp) {
		workdir =
		    git_repository_workdir(repo) ? strdup(git_repository_workdir(repo)) : NULL;
		if (!workdir || git_repository_set_workdir(repo, tmp, 0) < 0) {
			changes_standin_free(tmp);
			free(workdir);
			return workdir ? -EIO : -ENOMEM;
		}
	}
	int r = mark_ignored(cs, repo);
	if (tmp) {
		if (git_repository_set_workdir(repo, workdir, 0) < 0 && r == 0)
			r = -EIO;
		changes_standin_free(tmp);
		free(workdir);
	}
	return r;
}

static int mark_ignored(struct changes *cs, git_repository *repo)
{
	git_index *index = NULL;
	git_tree *head = NULL;
	git_object *obj = NULL;
	if (git_repository_index(&index, repo) < 0)
		return -EIO;
	if (git_revparse_single(&obj, repo, "HEAD^{tree}") == 0)
		head = (git_tree *)obj; /* an unborn HEAD has no tree: index only */
	int r = 0;
	for (size_t i = 0; i < cs->count; i++) {
		struct change *c = &cs->items[i];
		/* First, whatever else is wrong: even a conflict taken with
		 * --conflicts=take must not replace a submodule by a directory. */
		int sub = path_in_submodule(index, head, c->path);
		if (sub < 0) {
			r = sub;
			break;
		}
		if (sub) {
			c->flags = CHANGE_SUBMODULE;
			continue;
		}
		if (c->flags)
			continue;
		if (path_tracked(index, head, c->path))
			continue;
		int ignored = 0;
		if (git_ignore_path_is_ignored(&ignored, repo, c->path) < 0) {
			r = -EIO;
			break;
		}
		if (ignored)
			c->flags |= CHANGE_IGNORED;
	}
	git_tree_free(head);
	git_index_free(index);
	return r;
}

const char *change_conflict_verb(const struct change *c)
{
	if (!(c->flags & CHANGE_CONFLICT_LATER))
		return "copied";
	return c->view.present ? "made" : "deleted";
}

const char *change_flag_reason(unsigned flags)
{
	if (flags & CHANGE_SUBMODULE)
		return "inside a submodule (another repository)";
	if (flags & CHANGE_CONFLICT_LATER)
		return "conflict: changed in the repository since the agent deleted or made it";
	if (flags & CHANGE_CONFLICT)
		return "conflict: changed in the repository since the agent copied it";
	if (flags & CHANGE_HIDDEN_NAME)
		return "hidden name (policy)";
	if (flags & CHANGE_IGNORED)
		return "ignored and untracked";
	if (flags & CHANGE_UNSUPPORTED)
		return "not a regular file or symlink";
	if (flags & CHANGE_OVER_HIDDEN)
		return flags & CHANGE_OVER_HIDDEN_ENTRY
			   ? "put where the repository keeps a file or symlink the agent cannot "
			     "see"
			   : "replaced a directory holding files the agent cannot see";
	return "exported";
}

const char *change_over_hidden_reason(const struct change *c)
{
	if (c->flags & CHANGE_OVER_HIDDEN_ENTRY)
		return c->view.present && c->view.mode == CHANGE_MODE_LINK
			   ? "a symlink put where the repository keeps a file or symlink the "
			     "agent cannot see"
			   : "a file put where the repository keeps a file or symlink the agent "
			     "cannot see";
	return c->view.present && c->view.mode == CHANGE_MODE_LINK
		   ? "replaced by a symlink, but the repository keeps files there the agent "
		     "cannot see"
		   : "replaced by a file, but the repository keeps files there the agent "
		     "cannot see";
}

char change_code(const struct change *c)
{
	if (c->flags & CHANGE_SUBMODULE)
		return 'S';
	if (change_conflicts(c))
		return 'C';
	if (c->flags & CHANGE_HIDDEN_NAME)
		return 'H';
	if (c->flags & CHANGE_IGNORED)
		return '!';
	if (c->flags & CHANGE_UNSUPPORTED)
		return 'X';
	if (!c->base.present)
		return 'A';
	if (!c->view.present)
		return 'D';
	if ((c->base.mode == CHANGE_MODE_LINK) != (c->view.mode == CHANGE_MODE_LINK))
		return 'T';
	return 'M';
}

char *changes_quote(const char *path)
{
	bool plain = true;
	for (const unsigned char *s = (const unsigned char *)path; *s && plain; s++)
		plain = *s >= 0x20 && *s < 0x7f && *s != '"' && *s != '\\';
	if (plain)
		return strdup(path);
	char *q = malloc(strlen(path) * 4 + 3), *o = q;
	if (!q)
		return NULL;
	*o++ = '"';
	for (const unsigned char *s = (const unsigned char *)path; *s; s++) {
		static const char esc[] = "\a\b\t\n\v\f\r";
		const char *e = *s >= '\a' && *s <= '\r' ? strchr(esc, *s) : NULL;
		if (*s == '"' || *s == '\\') {
			*o++ = '\\';
			*o++ = (char)*s;
		} else if (e) {
			*o++ = '\\';
			*o++ = "abtnvfr"[e - esc];
		} else if (*s < 0x20 || *s >= 0x7f) {
			o += sprintf(o, "\\%03o", *s);
		} else {
			*o++ = (char)*s;
		}
	}
	*o++ = '"';
	*o = 0;
	return q;
}

int changes_read(const struct changes *cs, const struct change_side *side, char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int root = side->layer == CHANGE_UPPER ? cs->upper_fd : cs->lower_fd;
	const char *name;
	int dfd = open_parent(root, side->path, &name);
	if (dfd < 0)
		return dfd;
	struct stat st;
	int r = 0;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
	} else if (S_ISLNK(st.st_mode)) {
		if (side->mode != CHANGE_MODE_LINK) {
			r = -EIO;
		} else {
			char *t = malloc((size_t)st.st_size + 2);
			ssize_t n = t ? readlinkat(dfd, name, t, (size_t)st.st_size + 1) : -1;
			if (!t)
				r = -ENOMEM;
			else if (n < 0)
				r = -errno;
			else if ((size_t)n > (size_t)st.st_size)
				r = -EIO; /* grew under us */
			if (r == 0) {
				*buf = t;
				*len = (size_t)n;
			} else {
				free(t);
			}
		}
	} else if (!S_ISREG(st.st_mode) || side->mode == CHANGE_MODE_LINK) {
		r = -EIO;
	} else {
		int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
		} else {
			size_t cap = (size_t)st.st_size + 1, n = 0;
			char *b = malloc(cap);
			if (!b)
				r = -ENOMEM;
			while (r == 0) {
				if (n == cap) {
					char *nb = realloc(b, cap * 2);
					if (!nb) {
						r = -ENOMEM;
						break;
					}
					b = nb;
					cap *= 2;
				}
				ssize_t k = read(fd, b + n, cap - n);
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0)
					r = -errno;
				else if (k == 0)
					break;
				else
					n += (size_t)k;
			}
			close(fd);
			if (r == 0) {
				*buf = b;
				*len = n;
			} else {
				free(b);
			}
		}
	}
	close(dfd);
	return r;
}

/* ---- discard ---- */

static bool path_at_or_below(const char *path, const char *top)
{
	size_t n = strlen(top);
	if (n == 0)
		return true;
	return strncmp(path, top, n) == 0 && (path[n] == 0 || path[n] == '/');
}

static size_t count_below(const struct changes *cs, const char *top)
{
	size_t k = 0;
	for (size_t i = 0; i < cs->count; i++)
		if (path_at_or_below(cs->items[i].path, top))
			k++;
	return k;
}

/* Lower paths an upper subtree took its entries from (redirects of directories,
 * origins of copied-up files), so removing it can bring them back. */
static int collect_sources(int dirfd, const char *name, struct names *src)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) /* nothing there, a symlink or a special file: no source */
		return errno == ENOENT || errno == ELOOP || errno == ENXIO || errno == EACCES
			   ? 0
			   : -errno;
	struct stat st;
	int r = 0;
	if (fstat(fd, &st) < 0) {
		r = -errno;
	} else if (S_ISREG(st.st_mode)) {
		struct layout_origin o;
		if (layout_get_origin(fd, &o) == 1)
			r = names_add(src, o.path);
	} else if (S_ISDIR(st.st_mode)) {
		char red[PATH_MAX];
		if (layout_get_redirect(fd, red, sizeof(red)) > 0)
			r = names_add(src, red);
		struct names ns = {0};
		if (r == 0)
			r = names_read(&ns, fd);
		for (size_t i = 0; r == 0 && i < ns.n; i++)
			if (!layout_is_reserved(ns.v[i]))
				r = collect_sources(fd, ns.v[i], src);
		names_clear(&ns);
	}
	close(fd);
	return r;
}

/* Where discard says what it removed: the callback, or NULL. */
struct removed_cb {
	changes_removed_fn fn;
	void *arg;
};

/* rm -r of @name in @dirfd, whose view path is @vpath, never following a
 * symlink; each entry removed is reported to @cb, but none with a reserved
 * name (a whiteout, or under one): the upper check knows no such path. */
static int remove_tree(int dirfd, const char *name, const char *vpath, const struct removed_cb *cb)
{
	if (cb && layout_is_reserved(name))
		cb = NULL;
	if (unlinkat(dirfd, name, 0) == 0) {
		if (cb)
			cb->fn(cb->arg, vpath);
		return 0;
	}
	if (errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct names ns = {0};
	int r = names_read(&ns, fd);
	for (size_t i = 0; r == 0 && i < ns.n; i++) {
		char *cp = join(vpath, ns.v[i]);
		r = cp ? remove_tree(fd, ns.v[i], cp, cb) : -ENOMEM;
		free(cp);
	}
	names_clear(&ns);
	close(fd);
	if (r == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = -errno;
	else if (r == 0 && cb)
		cb->fn(cb->arg, vpath);
	return r;
}

static int is_plain_dir(int fd)
{
	char red[PATH_MAX];
	int r = layout_get_redirect(fd, red, sizeof(red));
	if (r != 0)
		return r < 0 ? r : 0;
	r = layout_is_opaque(fd);
	return r < 0 ? r : !r;
}

int changes_upper_dir_source(int lower_fd, int upper_fd, const struct policy *pol,
			     const char *upath, char **lv)
{
	*lv = NULL;
	int op = layout_is_opaque(upper_fd);
	if (op < 0)
		return op;
	char *cur = op ? NULL : strdup("");
	if (!op && !cur)
		return -ENOMEM;
	int dfd = fcntl(upper_fd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0) {
		free(cur);
		return -errno;
	}
	int r = 0;
	const char *p = upath;
	while (*p && r == 0) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		char name[NAME_MAX + 1];
		if (n > NAME_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		memcpy(name, p, n);
		name[n] = 0;
		int wh = layout_has_whiteout(dfd, name);
		int next = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0) {
			r = -errno;
			break;
		}
		close(dfd);
		dfd = next;
		char red[PATH_MAX];
		int rl = layout_get_redirect(dfd, red, sizeof(red));
		int o = rl > 0 ? 0 : layout_is_opaque(dfd);
		char *nx = NULL;
		if (rl > 0)
			nx = strdup(red);
		else if (!o && wh <= 0 && cur)
			nx = join(cur, name);
		free(cur);
		cur = nx;
		if (cur) {
			struct stat st;
			int lfd = changes_open_below(lower_fd, cur, O_RDONLY | O_DIRECTORY);
			bool ok = lfd >= 0 && fstat(lfd, &st) == 0 &&
				  policy_decide_path(pol, cur, true, 0) != POLICY_HIDDEN;
			if (lfd >= 0)
				close(lfd);
			if (!ok) {
				free(cur);
				cur = NULL;
			}
		}
		p = slash ? slash + 1 : p + n;
	}
	close(dfd);
	if (r < 0) {
		free(cur);
		return r;
	}
	*lv = cur;
	return 0;
}

/* Find the upper directory (by view path) whose lower source is @lower_dir, the
 * shallowest first; *upath malloc'd or NULL. */
static int find_upper_for_lower(int lower_fd, int upper_fd, const struct policy *pol,
				const char *upath, int dfd, const char *lower_dir, char **found)
{
	char *lv = NULL;
	int r = changes_upper_dir_source(lower_fd, upper_fd, pol, upath, &lv);
	if (r < 0)
		return r;
	bool hit = lv && strcmp(lv, lower_dir) == 0;
	free(lv);
	if (hit)
		return (*found = strdup(upath)) ? 1 : -ENOMEM;
	struct names ns = {0};
	r = names_read(&ns, dfd);
	names_sort_unique(&ns);
	for (size_t i = 0; r == 0 && i < ns.n; i++) {
		if (layout_is_reserved(ns.v[i]))
			continue;
		int cfd = openat(dfd, ns.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			continue;
		char *cp = join(upath, ns.v[i]);
		r = cp ? find_upper_for_lower(lower_fd, upper_fd, pol, cp, cfd, lower_dir, found)
		       : -ENOMEM;
		free(cp);
		close(cfd);
	}
	names_clear(&ns);
	return r;
}

/* Bring lower path @src back into the view where it was: remove its whiteout in
 * the upper directory that shows its lower directory, unless an upper entry
 * took its place. */
static int restore_source(int lower_fd, int upper_fd, const struct policy *pol, const char *src)
{
	const char *slash = strrchr(src, '/');
	char *ldir = slash ? strndup(src, (size_t)(slash - src)) : strdup("");
	const char *name = slash ? slash + 1 : src;
	if (!ldir)
		return -ENOMEM;
	char *upath = NULL;
	int rootfd = fcntl(upper_fd, F_DUPFD_CLOEXEC, 3);
	int r = rootfd < 0
		    ? -errno
		    : find_upper_for_lower(lower_fd, upper_fd, pol, "", rootfd, ldir, &upath);
	if (rootfd >= 0)
		close(rootfd);
	free(ldir);
	if (r <= 0)
		return r;
	int dfd = changes_open_below(upper_fd, upath, O_RDONLY | O_DIRECTORY);
	free(upath);
	if (dfd < 0)
		return dfd;
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = layout_remove_whiteout(dfd, name);
	close(dfd);
	return r;
}

/* Turn opaque or whiteout-replaced upper directories on @path's way into plain
 * ones that hide every lower entry except the one leading to @path, so that
 * entry shows again.  Stops at the first component the upper does not hold. */
static int reopen_ancestors(int lower_fd, int upper_fd, const struct policy *pol, const char *path)
{
	int dfd = fcntl(upper_fd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0)
		return -errno;
	int r = 0;
	size_t len = strlen(path);
	for (size_t end = 0; r == 0 && end < len;) {
		const char *slash = strchr(path + end, '/');
		size_t stop = slash ? (size_t)(slash - path) : len;
		char *dir = strndup(path, end ? end - 1 : 0); /* this upper dir's view path */
		char *next = strndup(path + end, stop - end);
		if (!dir || !next) {
			free(dir);
			free(next);
			r = -ENOMEM;
			break;
		}
		int op = layout_is_opaque(dfd);
		if (op < 0)
			r = op;
		if (op > 0) {
			/* An opaque directory shows no lower entry; the base has the lower
			 * directory at its own path (if visible).  Keep hiding all but @next. */
			int lfd = changes_open_below(lower_fd, dir, O_RDONLY | O_DIRECTORY);
			if (lfd >= 0 && policy_decide_path(pol, dir, true, 0) != POLICY_HIDDEN) {
				struct names ns = {0};
				r = names_read(&ns, lfd);
				for (size_t i = 0; r == 0 && i < ns.n; i++) {
					struct stat st;
					if (strcmp(ns.v[i], next) == 0 ||
					    layout_is_reserved(ns.v[i]) ||
					    fstatat(dfd, ns.v[i], &st, AT_SYMLINK_NOFOLLOW) == 0)
						continue;
					char *lp = join(dir, ns.v[i]);
					if (!lp) {
						r = -ENOMEM;
						break;
					}
					bool hidden =
					    fstatat(lfd, ns.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0 ||
					    !lower_visible_p(pol, lp, &st);
					free(lp);
					if (!hidden)
						r = layout_make_whiteout(dfd, ns.v[i]);
				}
				names_clear(&ns);
				if (r == 0 && fremovexattr(dfd, LAYOUT_XATTR_OPAQUE) < 0)
					r = -errno;
			}
			if (lfd >= 0)
				close(lfd);
		}
		/* A lower directory on the way that the view shows whole (the opaque
		 * flag above just went) or not at all (a whiteout): give it an opaque
		 * upper directory, which the next step opens to the way to @path only. */
		struct stat st;
		int wh = layout_has_whiteout(dfd, next);
		char *lnext = join(dir, next);
		int lnfd = -1;
		if (!lnext && r == 0)
			r = -ENOMEM;
		if (r == 0 && slash && (op > 0 || wh > 0) &&
		    fstatat(dfd, next, &st, AT_SYMLINK_NOFOLLOW) < 0 &&
		    policy_decide_path(pol, lnext, true, 0) != POLICY_HIDDEN &&
		    (lnfd = changes_open_below(lower_fd, lnext, O_RDONLY | O_DIRECTORY)) >= 0 &&
		    fstat(lnfd, &st) == 0) {
			r = layout_remove_whiteout(dfd, next);
			if (r == 0 && mkdirat(dfd, next, st.st_mode & 07777) < 0)
				r = -errno;
			int cfd = r == 0 ? openat(dfd, next,
						  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
					 : -1;
			if (r == 0 && cfd < 0)
				r = -errno;
			if (r == 0)
				r = layout_set_opaque(cfd);
			if (cfd >= 0)
				close(cfd);
		}
		if (lnfd >= 0)
			close(lnfd);
		free(lnext);
		int nfd = r == 0
			      ? openat(dfd, next, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
			      : -1;
		free(dir);
		free(next);
		close(dfd);
		dfd = nfd;
		if (dfd < 0)
			break;
		end = stop + 1;
	}
	if (dfd >= 0)
		close(dfd);
	return r;
}

/* Remove empty plain upper directories from @path's parent up to the root. */
static int prune_empty(int upper_fd, const char *path)
{
	char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	int r = 0;
	for (char *slash; r == 0 && (slash = strrchr(p, '/'));) {
		*slash = 0;
		const char *name;
		int pfd = open_parent(upper_fd, p, &name);
		if (pfd < 0)
			break;
		int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			struct names ns = {0};
			r = names_read(&ns, fd);
			int plain = r == 0 && ns.n == 0 ? is_plain_dir(fd) : 0;
			names_clear(&ns);
			close(fd);
			if (plain > 0 && unlinkat(pfd, name, AT_REMOVEDIR) < 0 &&
			    errno != ENOTEMPTY)
				r = -errno;
			if (plain <= 0) {
				close(pfd);
				break;
			}
		}
		close(pfd);
	}
	free(p);
	return r;
}

int changes_upper_holds(int upper_fd, const char *path)
{
	if (!*path)
		return 0;
	const char *name;
	int dfd = open_parent(upper_fd, path, &name);
	if (dfd < 0)
		return dfd == -ENOENT || dfd == -ENOTDIR ? 0 : dfd;
	struct stat st;
	int r =
	    fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 1 : layout_has_whiteout(dfd, name);
	close(dfd);
	return r;
}

int changes_discard(int lower_fd, int upper_fd, const struct policy *policy, const char *path,
		    changes_removed_fn removed, void *arg)
{
	struct removed_cb cbs = {removed, arg};
	const struct removed_cb *cb = removed ? &cbs : NULL;
	struct changes *cs = NULL;
	int r = changes_compute(lower_fd, upper_fd, policy, &cs);
	if (r < 0)
		return r;
	size_t before = count_below(cs, path);
	changes_free(cs);
	/* No visible change, but perhaps an upper entry that changes nothing
	 * visible (the whiteout of a directory of hidden files): drop it too. */
	if (before == 0 && (r = changes_upper_holds(upper_fd, path)) <= 0)
		return r < 0 ? r : -ENOENT;

	if (!*path) {
		struct names ns = {0};
		r = names_read(&ns, upper_fd);
		for (size_t i = 0; r == 0 && i < ns.n; i++)
			r = remove_tree(upper_fd, ns.v[i], ns.v[i], cb);
		names_clear(&ns);
		if (r == 0 && fremovexattr(upper_fd, LAYOUT_XATTR_OPAQUE) < 0 && errno != ENODATA)
			r = -errno;
		return r;
	}

	const char *name;
	int dfd = open_parent(upper_fd, path, &name);
	struct names sources = {0};
	if (dfd >= 0) {
		r = collect_sources(dfd, name, &sources);
		if (r == 0)
			r = remove_tree(dfd, name, path, cb);
		if (r == 0)
			r = layout_remove_whiteout(dfd, name);
		close(dfd);
	} else if (dfd != -ENOENT && dfd != -ENOTDIR) {
		r = dfd;
	}
	for (size_t i = 0; r == 0 && i < sources.n; i++)
		r = restore_source(lower_fd, upper_fd, policy, sources.v[i]);
	names_clear(&sources);
	if (r == 0)
		r = reopen_ancestors(lower_fd, upper_fd, policy, path);
	if (r == 0)
		r = prune_empty(upper_fd, path);
	if (r < 0)
		return r;

	r = changes_compute(lower_fd, upper_fd, policy, &cs);
	if (r < 0)
		return r;
	size_t after = count_below(cs, path);
	changes_free(cs);
	return after ? -EBUSY : 0;
}

/* ---- a workspace's change set ---- */

int changes_workspace_policy(const struct workspace *ws, struct policy **out, char *err,
			     size_t errlen)
{
	char *file = workspace_path(ws, "policy.yml");
	if (!file) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	struct policy_error pe = {0};
	int r = policy_load_snapshot(file, out, &pe);
	if (r < 0) {
		if (pe.line)
			snprintf(err, errlen, "%s:%u:%u: %s", pe.file, pe.line, pe.column,
				 pe.message);
		else if (pe.message[0])
			snprintf(err, errlen, "%s: %s", file, pe.message);
		else
			snprintf(err, errlen, "%s: %s", file, strerror(-r));
	}
	free(file);
	return r;
}

/* Whether the upper (@ufd) holds view path @path, or a directory on the way
 * to it, that this process may not read or search: what a change-set walk
 * found EACCES at, when the agent made it so (chmod 000 in the mount). */
static bool upper_denies(int ufd, const char *path)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", path);
	for (;;) {
		struct stat st;
		if (fstatat(ufd, p, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return faccessat(ufd, p, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK,
					 AT_EACCESS) != 0;
		if (errno != EACCES)
			return false;
		/* A directory on the way keeps us out: that one. */
		char *slash = strrchr(p, '/');
		if (!slash)
			return false;
		*slash = 0;
	}
}

int changes_open_workspace(const struct workspace *ws, struct changes **out, char *err,
			   size_t errlen)
{
	struct policy *pol = NULL;
	int r = changes_workspace_policy(ws, &pol, err, errlen);
	if (r < 0)
		return r;
	char *upper = workspace_path(ws, "upper");
	int lfd = open(ws->repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int lerr = errno;
	int ufd = upper ? open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	int uerr = errno;
	if (lfd < 0) {
		snprintf(err, errlen, "%s: %s", ws->repo, strerror(lerr));
		r = -lerr;
	} else if (ufd < 0) {
		snprintf(err, errlen, "%s: %s", upper ? upper : "upper", strerror(uerr));
		r = -uerr;
	}
	if (r == 0) {
		char where[PATH_MAX];
		r = changes_compute_at(lfd, ufd, pol, out, where, sizeof(where));
		if (r == -EACCES && where[0] && upper_denies(ufd, where))
			snprintf(err, errlen,
				 "%s: %s in the workspace (the agent took its permissions away: "
				 "chmod u+rwX it in the mount, then try again)",
				 where, strerror(-r));
		else if (r < 0 && where[0])
			snprintf(err, errlen, "reading the upper and the repository: %s: %s", where,
				 strerror(-r));
		else if (r < 0)
			snprintf(err, errlen, "reading the upper and the repository: %s",
				 strerror(-r));
	}
	if (r == 0) {
		git_repository *repo = NULL;
		git_libgit2_init();
		if (git_repository_open_ext(&repo, ws->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) ==
		    0) {
			r = changes_mark_ignored(*out, repo);
			if (r < 0) {
				const git_error *ge = git_error_last();
				snprintf(err, errlen, "%s: reading ignore rules: %s", ws->repo,
					 ge ? ge->message : strerror(-r));
				changes_free(*out);
				*out = NULL;
			}
			git_repository_free(repo);
		}
		git_libgit2_shutdown();
	}
	if (lfd >= 0)
		close(lfd);
	if (ufd >= 0)
		close(ufd);
	free(upper);
	policy_free(pol);
	return r;
}
