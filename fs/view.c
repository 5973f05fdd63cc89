/*
 * view.c - what the merged view holds: upper over lower, minus whiteouts,
 * opaque directories and whatever the policy hides.
 *
 * The policy decides a lower entry by its original lower path (a renamed
 * directory keeps its redirect, so what was hidden inside stays hidden).
 * Entries the agent created live only in the upper and are its own: they are
 * visible even at names the policy hides (DESIGN.md invariant 3).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/internal.h"
#include "fs/layout.h"
#include "policy/symlink.h"

/* Bit 63 marks inode numbers of upper-only entries when the layers live on
 * different devices, so they never collide with lower inode numbers. */
#define UPPER_INO_TAG (1ULL << 63)

void view_fix_attr(struct agentfs *fs, struct stat *st, uint64_t ino, bool upper)
{
	(void)fs;
	st->st_ino = ino;
	if (S_ISDIR(st->st_mode)) {
		/* A lower directory's link count and size count hidden entries;
		 * report constants instead (nlink 1 tells find(1) and fts(3) not
		 * to rely on link counts, as on btrfs). */
		st->st_nlink = 1;
		st->st_size = 4096;
		st->st_blocks = 8;
	} else if (!upper) {
		/* Other links to a lower file may sit at hidden names. */
		st->st_nlink = 1;
	}
}

uint64_t view_upper_ino(struct agentfs *fs, const struct stat *st)
{
	return fs->tag_upper_ino ? ((uint64_t)st->st_ino | UPPER_INO_TAG) : (uint64_t)st->st_ino;
}

/* In the private .git, what would let the agent run code in a person's git
 * (core.fsmonitor, hooks, includes) or change what git ignores is read-only. */
static bool git_readonly(const char *rel)
{
	static const char *const ro[] = {"config", "hooks", "info", "commondir", "objects/info"};
	for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++) {
		size_t l = strlen(ro[i]);
		if (strncmp(rel, ro[i], l) == 0 && (rel[l] == 0 || rel[l] == '/'))
			return true;
	}
	return false;
}

bool view_path_in_git(const struct agentfs *fs, const char *path)
{
	return fs->git_fd >= 0 && strncmp(path, ".git/", 5) == 0;
}

bool view_path_is_loose_object(const struct agentfs *fs, const char *path)
{
	static const char objects[] = ".git/objects/";
	const size_t n = sizeof(objects) - 1;
	return view_path_in_git(fs, path) && strncmp(path, objects, n) == 0 &&
	       isxdigit((unsigned char)path[n]) && isxdigit((unsigned char)path[n + 1]) &&
	       path[n + 2] == '/' && path[n + 3];
}

bool view_path_holds_readonly(struct agentfs *fs, const char *path)
{
	/* objects/ holds objects/info/ (git_readonly): renamed, it would take
	 * that path's protection with it, and a new objects/info could be
	 * made under the old name. */
	return fs->git_fd >= 0 && strcmp(path, ".git/objects") == 0;
}

bool view_name_is_git(const char *name)
{
	return strcmp(name, ".git") == 0;
}

/*
 * Is @path (outside the private .git) an entry by which the agent could make
 * a directory that git takes for a repository of its own?  git's discovery
 * (setup.c, is_git_directory()) takes any directory holding a valid HEAD,
 * objects/ and refs/ (or a commondir file naming where those are) for a bare
 * repository, and then runs what its config says (core.fsmonitor,
 * core.pager, aliases) for whoever runs git there: the person, whose shell
 * prompt may run `git status` at each cd.  So no file named HEAD is the
 * agent's to make or change outside .git, as no .git is, and in a directory
 * whose repository side holds a HEAD (a bare fixture the repository tracks)
 * neither are config, config.worktree nor commondir.
 */
static bool gitdir_entry(struct agentfs *fs, const char *path, bool is_dir)
{
	if (is_dir)
		return false;
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (strcmp(base, "HEAD") == 0)
		return true;
	if (strcmp(base, "config") != 0 && strcmp(base, "config.worktree") != 0 &&
	    strcmp(base, "commondir") != 0)
		return false;
	char head[FS_PATH_MAX];
	int n = snprintf(head, sizeof(head), "%.*sHEAD", (int)(base - path), path);
	if (n < 0 || (size_t)n >= sizeof(head))
		return true; /* unsure is yes */
	/* A HEAD the view hides is no HEAD to git run in the view. */
	struct stat st;
	return layer_stat(fs, fs->lower_fd, head, &st) == 0 &&
	       view_decide_lower(fs, head, &st) != POLICY_HIDDEN;
}

bool view_path_readonly(struct agentfs *fs, const char *path, bool is_dir)
{
	if (view_path_in_git(fs, path))
		return git_readonly(path + 5);
	return gitdir_entry(fs, path, is_dir) ||
	       policy_decide_path(fs->policy, path, is_dir, 0) == POLICY_READONLY;
}

enum policy_decision view_decide_lower(struct agentfs *fs, const char *lpath, const struct stat *st)
{
	/* The repository's own .git is never the agent's, whatever the rules
	 * say: git: private and readonly serve another directory there
	 * (fs_config.git_dir), git: hidden shows nothing. */
	if (strcmp(lpath, ".git") == 0)
		return POLICY_HIDDEN;
	bool is_dir = S_ISDIR(st->st_mode);
	enum policy_decision d = policy_decide(fs->policy, lpath, strlen(lpath), is_dir,
					       policy_size(st->st_mode, (uint64_t)st->st_size));
	if (d == POLICY_HIDDEN)
		return d;
	if (S_ISLNK(st->st_mode) && policy_symlinks_mode(fs->policy) == POLICY_SYMLINKS_HIDE &&
	    policy_symlink_unsafe(fs->policy, fs->lower_fd, lpath))
		return POLICY_HIDDEN;
	if (gitdir_entry(fs, lpath, is_dir))
		return POLICY_READONLY;
	return d;
}

/* Resolve the lower entry @name of @dir's lower directory. */
static int resolve_lower(struct agentfs *fs, const struct node *dir, const char *name,
			 struct entry *e, bool *concealed, int lfd)
{
	char lpath[FS_PATH_MAX];
	int r = path_join(lpath, sizeof(lpath), node_lower(dir), name);
	if (r < 0)
		return r;
	struct stat st;
	if (lfd >= 0)
		r = fstatat(lfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	else
		r = lower_stat_in(fs, dir, name, &st);
	if (r == -ENOENT || r == -ENOTDIR || r == -ELOOP)
		return 0;
	if (r < 0)
		return r;
	enum policy_decision d = view_decide_lower(fs, lpath, &st);
	if (d == POLICY_HIDDEN) {
		if (concealed)
			*concealed = true;
		return 0;
	}
	e->exists = true;
	e->in_lower = true;
	e->readonly = d == POLICY_READONLY;
	e->type = st.st_mode & S_IFMT;
	e->st = st;
	if (S_ISDIR(st.st_mode))
		e->lower_dir_ino = (uint64_t)st.st_ino;
	memcpy(e->lower, lpath, strlen(lpath) + 1);
	view_fix_attr(fs, &e->st, (uint64_t)st.st_ino, false);
	return 0;
}

/*
 * lstat(2) of the lower path @lpath, an origin's.  When it is @name in @dir's
 * lower directory (a file copied up where it lies, the usual case), through
 * that directory: @dir_lfd, or the one kept open (dircache.c); else walked
 * from the lower's root (layer_stat()).  0 or a negative errno.
 */
static int origin_stat(struct agentfs *fs, struct node *dir, const char *name, int dir_lfd,
		       const char *lpath, struct stat *st)
{
	const char *dl = node_lower(dir);
	char here[FS_PATH_MAX];
	if (!dl || path_join(here, sizeof(here), dl, name) < 0 || strcmp(here, lpath) != 0)
		return layer_stat(fs, fs->lower_fd, lpath, st);
	if (dir_lfd >= 0)
		return fstatat(dir_lfd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	return lower_stat_in(fs, dir, name, st);
}

/*
 * The markers of upper entry @name in upper directory @ufd (fs/layout.h), read
 * by path through the directory fd with one lgetxattr each: a directory's
 * opaque flag and redirect (which give its lower directory), a file's origin
 * (which gives its stable inode number).  Returns the inode number to report.
 */
static uint64_t upper_markers(struct agentfs *fs, struct node *dir, int ufd, const char *name,
			      int dir_lfd, struct entry *e, uint64_t ino)
{
	char xp[64 + NAME_MAX];
	snprintf(xp, sizeof(xp), "/proc/self/fd/%d/%s", ufd, name);
	if (S_ISREG(e->st.st_mode)) {
		char ob[PATH_MAX + 128];
		ssize_t ol = lgetxattr(xp, LAYOUT_XATTR_ORIGIN, ob, sizeof(ob) - 1);
		if (ol > 0 && layout_parse_origin(ob, (size_t)ol, &e->origin) > 0) {
			e->has_origin = true;
			/* 0: a base without an inode number (op_rename).  The
			 * lower file's number only while that file is still at
			 * its path with no other name: once the person moved or
			 * deleted it, the number may be another visible file's
			 * (the file moved, or a new one ext4 gave the freed
			 * number), and two files of the view must not share
			 * one (cp, tar, find -samefile). */
			struct stat lst;
			if (e->origin.ino &&
			    origin_stat(fs, dir, name, dir_lfd, e->origin.path, &lst) == 0 &&
			    (uint64_t)lst.st_ino == e->origin.ino && lst.st_nlink == 1)
				return e->origin.ino;
			return ino;
		}
		e->markers_unknown = ol < 0 && errno == EACCES;
		return ino;
	}
	if (!S_ISDIR(e->st.st_mode))
		return ino;
	char red[FS_PATH_MAX], ov[2];
	ssize_t rl = lgetxattr(xp, LAYOUT_XATTR_REDIRECT, red, sizeof(red) - 1);
	if (rl < 0 && errno == EACCES) {
		e->markers_unknown = true;
		return ino;
	}
	e->opaque = lgetxattr(xp, LAYOUT_XATTR_OPAQUE, ov, sizeof(ov)) > 0 && ov[0] == 'y';
	if (rl > 0) {
		/* Renamed from the lower: its entries come from there. */
		red[rl] = 0;
		struct stat lst;
		if (layer_stat(fs, fs->lower_fd, red, &lst) == 0 && S_ISDIR(lst.st_mode)) {
			e->in_lower = true;
			e->lower_dir_ino = (uint64_t)lst.st_ino;
			memcpy(e->lower, red, (size_t)rl + 1);
			return (uint64_t)lst.st_ino;
		}
		return ino;
	}
	if (e->opaque || !node_lower(dir))
		return ino;
	/* Merged with the visible lower directory of the same name. */
	struct entry le;
	memset(&le, 0, sizeof(le));
	if (resolve_lower(fs, dir, name, &le, NULL, dir_lfd) == 0 && le.exists &&
	    le.type == S_IFDIR) {
		e->in_lower = true;
		e->lower_dir_ino = le.lower_dir_ino;
		memcpy(e->lower, le.lower, strlen(le.lower) + 1);
		return (uint64_t)le.st.st_ino;
	}
	return ino;
}

int view_resolve(struct agentfs *fs, struct node *dir, const char *name, struct entry *e,
		 bool *concealed)
{
	return view_resolve_at(fs, dir, name, e, concealed, -1, -1);
}

int view_resolve_at(struct agentfs *fs, struct node *dir, const char *name, struct entry *e,
		    bool *concealed, int dir_ufd, int dir_lfd)
{
	memset(e, 0, offsetof(struct entry, lower));
	e->lower[0] = 0;
	/* Before anything is looked at: a move reported later makes this
	 * entry's view of the lower's directories old (view_apply). */
	e->moves = __atomic_load_n(&fs->dir_moves, __ATOMIC_ACQUIRE);
	if (concealed)
		*concealed = false;
	/* The kernel resolves "." and ".." itself; answering them here would
	 * stat the layer's parent (fail closed). */
	if (layout_is_reserved(name) || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
	    strchr(name, '/'))
		return 0;
	if (is_git_root(fs, dir, name)) {
		/* The private .git replaces whatever the layers hold there. */
		if (fstat(fs->git_fd, &e->st) < 0)
			return -errno;
		e->exists = true;
		e->in_upper = true;
		e->type = S_IFDIR;
		view_fix_attr(fs, &e->st, view_upper_ino(fs, &e->st), true);
		return 0;
	}
	char dpath[FS_PATH_MAX];
	int r = node_path(dir, dpath, sizeof(dpath));
	if (r < 0)
		return r;
	if (dir->upper) {
		int ufd = dir_ufd >= 0 ? dir_ufd : dircache_get(fs, dpath);
		if (ufd < 0 && ufd != -ENOENT)
			return ufd;
		if (ufd >= 0) {
			struct stat st;
			if (fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
				e->exists = true;
				e->in_upper = true;
				e->type = st.st_mode & S_IFMT;
				e->st = st;
				uint64_t ino = view_upper_ino(fs, &st);
				ino = upper_markers(fs, dir, ufd, name, dir_lfd, e, ino);
				if (ufd != dir_ufd)
					dircache_put(fs, ufd);
				char vpath[FS_PATH_MAX];
				if (path_join(vpath, sizeof(vpath), dpath, name) == 0)
					e->readonly =
					    dir->readonly ||
					    view_path_readonly(fs, vpath, S_ISDIR(st.st_mode));
				view_fix_attr(fs, &e->st, ino, true);
				return 0;
			}
			int wh = layout_has_whiteout(ufd, name);
			if (ufd != dir_ufd)
				dircache_put(fs, ufd);
			e->whiteout = wh > 0;
			if (wh != 0)
				return wh < 0 ? wh : 0;
		}
	}
	if (!node_lower(dir) || dir->opaque)
		return 0;
	r = resolve_lower(fs, dir, name, e, concealed, dir_lfd);
	/* Read-only covers everything below a read-only directory. */
	if (r == 0 && e->exists && dir->readonly)
		e->readonly = true;
	return r;
}

int view_apply(struct agentfs *fs, struct node *n, struct entry *e)
{
	if (e->markers_unknown && n->upper && e->in_upper && n->type == e->type) {
		/* Unreadable markers say nothing new: the node keeps what it
		 * knew, and the entry reports it, so `chmod 000` of a copied-up
		 * file keeps its inode number and of a directory its lower. */
		e->st.st_ino = (ino_t)n->ino;
		e->opaque = n->opaque;
		const char *lower = node_lower(n);
		e->in_lower = lower != NULL;
		snprintf(e->lower, sizeof(e->lower), "%s", lower ? lower : "");
	}
	/* Most refreshes find the same lower path: keep the string. */
	bool same =
	    e->in_lower ? node_lower(n) && strcmp(node_lower(n), e->lower) == 0 : !node_lower(n);
	if (!same) {
		char *lower = NULL;
		if (e->in_lower && !(lower = strdup(e->lower)))
			return -ENOMEM;
		pthread_mutex_lock(&fs->table_lock);
		char *old = n->lower;
		__atomic_store_n(&n->lower, lower, __ATOMIC_RELEASE);
		if (old) {
			/* A reader under ns_lock (shared) may be using it. */
			if (fs->ngrave == fs->capgrave) {
				size_t nc = fs->capgrave ? fs->capgrave * 2 : 16;
				char **ng = realloc(fs->graveyard, nc * sizeof(*ng));
				if (ng) {
					fs->graveyard = ng;
					fs->capgrave = nc;
				}
			}
			if (fs->ngrave < fs->capgrave)
				fs->graveyard[fs->ngrave++] = old;
			/* else: leaked rather than freed under a reader */
		}
		pthread_mutex_unlock(&fs->table_lock);
	}
	/* Refreshes run under the shared lock, concurrently with readers of
	 * these fields: store only what changed (after a discard or a change
	 * in the lower), so a refresh that finds the same state writes nothing. */
	if (n->type != e->type || n->upper != e->in_upper || n->opaque != e->opaque ||
	    n->readonly != e->readonly || n->ino != (uint64_t)e->st.st_ino) {
		pthread_mutex_lock(&fs->table_lock);
		n->type = e->type;
		n->upper = e->in_upper;
		n->opaque = e->opaque;
		n->readonly = e->readonly;
		n->ino = e->st.st_ino;
		pthread_mutex_unlock(&fs->table_lock);
	}
	if (S_ISREG(e->type) &&
	    __atomic_load_n(&n->size_seen, __ATOMIC_RELAXED) != (uint64_t)e->st.st_size)
		node_saw_size(n, e->st.st_size, false);
	/* The watch of a directory's lower directory stays on the inode it was
	 * added to.  Still the one at the path: it watches what the path holds
	 * since this lookup began (the directories kept, dircache.c).  Another
	 * one (the person moved the directory away and made a new one): the
	 * watch goes, to be added to the new one at the next lookup in it
	 * (watch_dir_lazy), which the kernel's cached entries need as much. */
	if (S_ISDIR(e->type) && e->lower_dir_ino && __atomic_load_n(&n->wd, __ATOMIC_RELAXED) > 0) {
		if (__atomic_load_n(&n->wd_ino, __ATOMIC_RELAXED) != e->lower_dir_ino) {
			pthread_mutex_lock(&fs->table_lock);
			if (n->wd > 0 && n->wd_ino != e->lower_dir_ino)
				watch_forget(fs, n);
			pthread_mutex_unlock(&fs->table_lock);
		} else if (__atomic_load_n(&n->wd_epoch, __ATOMIC_RELAXED) != e->moves) {
			__atomic_store_n(&n->wd_epoch, e->moves, __ATOMIC_RELAXED);
		}
	}
	return 0;
}

bool view_replaced(const struct node *n, const struct entry *e)
{
	if (!n->type)
		return false; /* new: nothing to compare */
	if (n->type != e->type)
		return true;
	return !S_ISDIR(e->type) && !n->upper && !e->in_upper && n->ino != (uint64_t)e->st.st_ino;
}

int view_getattr(struct agentfs *fs, struct node *n, struct stat *st)
{
	if (n == &fs->root) {
		struct stat lst;
		if (fstat(fs->upper_fd, st) < 0 || fstat(fs->lower_fd, &lst) < 0)
			return -errno;
		view_fix_attr(fs, st, (uint64_t)lst.st_ino, true);
		return 0;
	}
	if (!n->hashed && n->dead) {
		*st = *n->dead; /* removed while someone's working directory */
		return 0;
	}
	if (node_unnamed(fs, n))
		return handle_node_fstat(fs, n, st); /* unlinked, maybe still open */
	if (S_ISDIR(n->type) && n->upper && !is_git_root(fs, n->parent, n->name)) {
		/* A directory of the upper has the upper directory's attributes
		 * whatever the lower holds, and only the daemon changes the upper
		 * (discard drops it and invalidates): one stat of it instead of
		 * resolving the name again from its parent, markers and lower
		 * included.  The kernel asks this after every create, unlink or
		 * rename in the directory where default_permissions needs its
		 * mode (fs.c). */
		char path[FS_PATH_MAX];
		int fd = node_path(n, path, sizeof(path)) == 0 ? dircache_get(fs, path) : -1;
		if (fd >= 0) {
			int r = fstat(fd, st) < 0 ? -errno : 0;
			dircache_put(fs, fd);
			if (r == 0) {
				view_fix_attr(fs, st, n->ino, true);
				return 0;
			}
		}
		/* Gone from the upper (a discard): resolve it afresh. */
	}
	struct entry e;
	int r = view_resolve(fs, n->parent, n->name, &e, NULL);
	if (r < 0)
		return r;
	if (!e.exists || e.type != n->type)
		return -ENOENT;
	/* The person replaced the lower file (an editor's save): a file still
	 * open through this node is the old one, as on any file system.  The
	 * next lookup of the name gives the kernel a new inode (op_lookup). */
	if (view_replaced(n, &e) && handle_node_fstat(fs, n, st) == 0)
		return 0;
	r = view_apply(fs, n, &e);
	if (r < 0)
		return r;
	*st = e.st;
	return 0;
}

/* --- merged directory listings ------------------------------------------ */

struct nameset {
	char **v;
	size_t n, cap;
};

static int nameset_add(struct nameset *s, const char *name)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 64;
		char **nv = realloc(s->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = nc;
	}
	if (!(s->v[s->n] = strdup(name)))
		return -ENOMEM;
	s->n++;
	return 0;
}

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool nameset_has(const struct nameset *s, const char *name)
{
	return s->n && bsearch(&name, s->v, s->n, sizeof(char *), cmpstr) != NULL;
}

static void nameset_free(struct nameset *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

static mode_t dtype_mode(unsigned char t)
{
	switch (t) {
	case DT_DIR:
		return S_IFDIR;
	case DT_REG:
		return S_IFREG;
	case DT_LNK:
		return S_IFLNK;
	case DT_FIFO:
		return S_IFIFO;
	case DT_SOCK:
		return S_IFSOCK;
	case DT_CHR:
		return S_IFCHR;
	case DT_BLK:
		return S_IFBLK;
	default:
		return 0;
	}
}

/* The upper directory @dpath opened for reading.  With @lift, a directory
 * whose mode keeps the daemon out (an empty one the agent made 000 or 300,
 * about to be removed) is opened with the owner's rwx lifted for the open
 * alone (upper_dir_grant): an open descriptor reads on whatever the mode. */
static int open_upper_list(struct agentfs *fs, const char *dpath, bool lift)
{
	int ufd = upper_open(fs, dpath, O_RDONLY | O_DIRECTORY, 0);
	if (ufd != -EACCES || !lift)
		return ufd;
	int pfd = upper_open(fs, dpath, O_PATH | O_DIRECTORY, 0);
	if (pfd < 0)
		return ufd;
	int granted = upper_dir_grant(pfd);
	if (granted >= 0) {
		ufd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		ufd = ufd < 0 ? -errno : ufd;
		upper_dir_restore(pfd, granted);
	}
	close(pfd);
	return ufd;
}

static int list_at(struct agentfs *fs, struct node *dir, view_list_cb cb, void *ctx, bool lift)
{
	char dpath[FS_PATH_MAX];
	int r = node_path(dir, dpath, sizeof(dpath));
	if (r < 0)
		return r;
	struct nameset seen = {0}, wh = {0};
	if (fs->git_fd >= 0 && dir == &fs->root) {
		struct stat gst;
		if (fstat(fs->git_fd, &gst) == 0 && (r = cb(ctx, ".git", S_IFDIR, gst.st_ino)) != 0)
			goto out;
		if ((r = nameset_add(&seen, ".git")) < 0)
			goto out;
	}
	if (dir->upper) {
		int ufd = open_upper_list(fs, dpath, lift);
		if (ufd < 0 && ufd != -ENOENT) {
			r = ufd;
			goto out;
		}
		DIR *d = ufd >= 0 ? fdopendir(ufd) : NULL;
		if (ufd >= 0 && !d) {
			r = -errno;
			close(ufd);
			goto out;
		}
		struct dirent *de;
		while (d && (de = readdir(d))) {
			const char *nm = de->d_name;
			if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
				continue;
			if (layout_is_reserved(nm) || is_git_root(fs, dir, nm)) {
				if (layout_is_reserved(nm) && nm[LAYOUT_WH_PREFIX_LEN] &&
				    (r = nameset_add(&wh, nm + LAYOUT_WH_PREFIX_LEN)) < 0)
					break;
				continue;
			}
			if ((r = nameset_add(&seen, nm)) < 0)
				break;
			mode_t t = dtype_mode(de->d_type);
			if (!t) {
				struct stat st;
				if (fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) < 0)
					continue;
				t = st.st_mode & S_IFMT;
			}
			if ((r = cb(ctx, nm, t, de->d_ino)) != 0)
				break;
		}
		if (d)
			closedir(d);
		if (r != 0)
			goto out;
	}
	if (node_lower(dir) && !dir->opaque) {
		if (seen.n)
			qsort(seen.v, seen.n, sizeof(char *), cmpstr);
		if (wh.n)
			qsort(wh.v, wh.n, sizeof(char *), cmpstr);
		int lfd = layer_open(fs, fs->lower_fd, node_lower(dir), O_RDONLY | O_DIRECTORY, 0);
		if (lfd < 0) {
			r = lfd == -ENOENT || lfd == -ENOTDIR ? 0 : lfd;
			goto out;
		}
		DIR *d = fdopendir(lfd);
		if (!d) {
			r = -errno;
			close(lfd);
			goto out;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			const char *nm = de->d_name;
			if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
				continue;
			char whn[NAME_MAX + 1];
			if (layout_is_reserved(nm) || nameset_has(&seen, nm) ||
			    (layout_whiteout_name(nm, whn, sizeof(whn)) == 0 &&
			     nameset_has(&wh, whn + LAYOUT_WH_PREFIX_LEN)))
				continue;
			char lpath[FS_PATH_MAX];
			if (path_join(lpath, sizeof(lpath), node_lower(dir), nm) < 0)
				continue;
			struct stat st;
			mode_t t = dtype_mode(de->d_type);
			/* Only regular files need a size (max_file_size) and only
			 * symlinks a target check; the rest is decided by type. */
			bool need_stat = !t || t == S_IFLNK ||
					 (t == S_IFREG && policy_max_file_size(fs->policy) > 0);
			if (need_stat) {
				if (fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) < 0)
					continue;
			} else {
				memset(&st, 0, sizeof(st));
				st.st_mode = t;
			}
			if (view_decide_lower(fs, lpath, &st) == POLICY_HIDDEN)
				continue;
			if ((r = cb(ctx, nm, st.st_mode & S_IFMT, de->d_ino)) != 0)
				break;
		}
		closedir(d);
	}
out:
	nameset_free(&seen);
	nameset_free(&wh);
	return r < 0 ? r : 0;
}

static int count_one(void *ctx, const char *name, mode_t type, ino_t ino)
{
	(void)name, (void)type, (void)ino;
	*(int *)ctx = 1;
	return 1; /* stop at the first entry */
}

int view_list(struct agentfs *fs, struct node *dir, view_list_cb cb, void *ctx)
{
	return list_at(fs, dir, cb, ctx, false);
}

int view_dir_empty(struct agentfs *fs, struct node *dir)
{
	int any = 0;
	int r = list_at(fs, dir, count_one, &any, true);
	if (r < 0)
		return r;
	return any ? 0 : 1;
}
