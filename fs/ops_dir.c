/*
 * ops_dir.c - directory listings of the merged view.
 *
 * Offsets are cookies derived from each name's hash, and listings are served
 * in cookie order (like ext4's hashed directories): a listing continued at an
 * offset after the directory changed resumes after the same name, so no entry
 * is returned twice or skipped because others came or went (POSIX leaves only
 * the added and removed names unspecified).
 *
 * opendir takes a snapshot of the merged listing (upper entries, then lower
 * entries not shadowed, whited out or hidden); readdir pages through it by
 * index, so offsets stay valid while the directory changes (POSIX leaves
 * entries added or removed after opendir unspecified).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/internal.h"

struct dirent_snap {
	char *name;
	mode_t type;
	ino_t ino;
	off_t cookie; /* the entry's offset: see listing_order() */
};

struct dirhandle {
	struct dirent_snap *v;
	size_t n, cap;
};

static int snap_add(void *ctx, const char *name, mode_t type, ino_t ino)
{
	struct dirhandle *d = ctx;
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 32;
		struct dirent_snap *nv = realloc(d->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		d->v = nv;
		d->cap = nc;
	}
	if (!(d->v[d->n].name = strdup(name)))
		return -ENOMEM;
	d->v[d->n].type = type;
	d->v[d->n].ino = ino;
	d->n++;
	return 0;
}

static int cmp_cookie(const void *a, const void *b)
{
	off_t x = ((const struct dirent_snap *)a)->cookie,
	      y = ((const struct dirent_snap *)b)->cookie;
	return x < y ? -1 : x > y;
}

/* "." and ".." are 1 and 2; names hash to 63-bit cookies above them. */
static void listing_order(struct dirhandle *d)
{
	for (size_t i = 0; i < d->n; i++) {
		const char *nm = d->v[i].name;
		if (strcmp(nm, ".") == 0) {
			d->v[i].cookie = 1;
		} else if (strcmp(nm, "..") == 0) {
			d->v[i].cookie = 2;
		} else {
			uint64_t h = XXH3_64bits(nm, strlen(nm)) >> 1;
			d->v[i].cookie = (off_t)(h < 3 ? h + 3 : h);
		}
	}
	qsort(d->v, d->n, sizeof(d->v[0]), cmp_cookie);
}

/* Index of the first entry after cookie @off. */
static size_t listing_from(const struct dirhandle *d, off_t off)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (d->v[mid].cookie <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void dirhandle_free(struct dirhandle *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	free(d);
}

/* Take a snapshot of the merged listing of @n; records the listing. */
static int snapshot(fuse_req_t req, struct agentfs *fs, struct node *n, struct dirhandle **out,
		    bool record)
{
	struct dirhandle *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	char path[FS_PATH_MAX];
	struct stat st;
	if (fs->cfg->git_fault && fs->git_fd >= 0 && n != &fs->root) {
		/* Entries of the private .git made on demand must show in a
		 * listing too (fs.h, git_fault). */
		char gp[FS_PATH_MAX + 1];
		pthread_rwlock_rdlock(&fs->ns_lock);
		int pr = node_path(n, gp, sizeof(gp) - 1);
		pthread_rwlock_unlock(&fs->ns_lock);
		if (pr == 0 && strncmp(gp, ".git/", 5) == 0) {
			strcat(gp, "/");
			fs->cfg->git_fault(fs->cfg->git_prepare_arg, gp + 5);
		}
	}
	pthread_rwlock_rdlock(&fs->ns_lock);
	/* A removed directory lists nothing of what its name holds now; the
	 * kernel itself answers ENOENT for one it removed (S_DEAD). */
	int r = node_unnamed(fs, n) ? -ENOENT : view_getattr(fs, n, &st);
	if (r == 0 && !S_ISDIR(n->type))
		r = -ENOTDIR;
	if (r == 0)
		watch_dir_lazy(fs, n);
	if (r == 0)
		r = snap_add(d, ".", S_IFDIR, (ino_t)n->ino);
	if (r == 0)
		r = snap_add(d, "..", S_IFDIR, (ino_t)(n->parent ? n->parent->ino : n->ino));
	if (r == 0)
		r = view_list(fs, n, snap_add, d);
	if (r == 0 && record && node_path(n, path, sizeof(path)) == 0)
		fs_record(fs, req, JOP_READDIR, 0, path, NULL);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (r < 0) {
		dirhandle_free(d);
		return r;
	}
	listing_order(d);
	*out = d;
	return 0;
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	if (fs->no_opendir) {
		/* FUSE_CAP_NO_OPENDIR_SUPPORT: the kernel stops sending opendir
		 * and releasedir, and caches listings (FOPEN_KEEP_CACHE |
		 * FOPEN_CACHE_DIR are its defaults then, fs/fuse/file.c). */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	struct dirhandle *d;
	int r = snapshot(req, fs, node_get(fs, ino), &d, true);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	/* The kernel keeps the listing until the directory changes: through
	 * the mount it drops it itself, for the lower watch.c and discard
	 * invalidate the directory's inode. */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		dirhandle_free(d);
}

/* The listing to serve: the opendir snapshot, or (no opendir) a fresh one;
 * *tmp tells the caller to free it.  Offsets are indexes into the listing,
 * so a listing taken again continues where the last one stopped. */
static struct dirhandle *listing(fuse_req_t req, struct agentfs *fs, fuse_ino_t ino,
				 struct fuse_file_info *fi, off_t off, bool *tmp, int *err)
{
	*tmp = false;
	if (fi->fh)
		return (struct dirhandle *)(uintptr_t)fi->fh;
	struct dirhandle *d;
	*err = snapshot(req, fs, node_get(fs, ino), &d, off == 0);
	if (*err < 0)
		return NULL;
	*tmp = true;
	return d;
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	bool tmp;
	int err = 0;
	struct dirhandle *d = listing(req, fs, ino, fi, off, &tmp, &err);
	char *buf = d ? malloc(size) : NULL;
	if (!buf) {
		if (tmp)
			dirhandle_free(d);
		fuse_reply_err(req, d ? ENOMEM : -err);
		return;
	}
	size_t used = 0;
	for (size_t i = listing_from(d, off); i < d->n; i++) {
		struct stat st;
		memset(&st, 0, sizeof(st));
		st.st_ino = d->v[i].ino;
		st.st_mode = d->v[i].type;
		size_t need = fuse_add_direntry(req, buf + used, size - used, d->v[i].name, &st,
						d->v[i].cookie);
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
	if (tmp)
		dirhandle_free(d);
}

/*
 * readdirplus: each entry comes with its attributes and counts as a lookup
 * (fuse_lowlevel.h), so `ls -l`, `find` and `git status` need no lookup round
 * trip per entry.  "." and ".." carry no node (nodeid 0: the kernel skips
 * them).
 */
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	struct node *dir = node_get(fs, ino);
	bool tmp;
	int err = 0;
	struct dirhandle *d = listing(req, fs, ino, fi, off, &tmp, &err);
	char *buf = d ? malloc(size) : NULL;
	if (!buf) {
		if (tmp)
			dirhandle_free(d);
		fuse_reply_err(req, d ? ENOMEM : -err);
		return;
	}
	size_t used = 0;
	pthread_rwlock_rdlock(&fs->ns_lock);
	char dpath[FS_PATH_MAX];
	int ufd = -1, lfd = -1;
	if (node_path(dir, dpath, sizeof(dpath)) == 0) {
		if (dir->upper)
			ufd = upper_open(fs, dpath, O_RDONLY | O_DIRECTORY, 0);
		if (node_lower(dir) && !dir->opaque)
			lfd =
			    layer_open(fs, fs->lower_fd, node_lower(dir), O_PATH | O_DIRECTORY, 0);
	}
	for (size_t i = listing_from(d, off); i < d->n; i++) {
		const char *name = d->v[i].name;
		struct fuse_entry_param ep;
		memset(&ep, 0, sizeof(ep));
		ep.attr.st_ino = d->v[i].ino;
		ep.attr.st_mode = d->v[i].type;
		size_t need = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
		if (need > size - used)
			break;
		struct entry e;
		struct node *c = NULL;
		/* The private .git is listed at once, but its node is handed out
		 * only by a lookup, whose node the kernel may not cache while it
		 * is being built (and anything on that node waits for the build:
		 * loop.c, waits_for_git): a listing right after the mount must
		 * neither wait for the build (mount time stays flat) nor let git
		 * in before it is done. */
		bool git_pending = is_git_root(fs, dir, name) && !git_is_ready(fs);
		if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && !git_pending &&
		    view_resolve_at(fs, dir, name, &e, NULL, ufd, lfd) == 0 && e.exists) {
			struct node *old = node_find(fs, dir, name);
			if (old && view_replaced(old, &e))
				node_unhash(fs, old);
			c = node_child(fs, dir, name, true);
			if (c && view_apply(fs, c, &e) < 0) {
				node_forget(fs, c, 1);
				c = NULL;
			}
		}
		if (c) {
			ep.ino = c->id;
			ep.attr = e.st;
			ep.attr_timeout = attr_timeout(fs, c, &e.st);
			ep.entry_timeout = entry_timeout(fs, dir);
		}
		used +=
		    fuse_add_direntry_plus(req, buf + used, size - used, name, &ep, d->v[i].cookie);
	}
	pthread_rwlock_unlock(&fs->ns_lock);
	if (ufd >= 0)
		close(ufd);
	if (lfd >= 0)
		close(lfd);
	fuse_reply_buf(req, buf, used);
	free(buf);
	if (tmp)
		dirhandle_free(d);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	if (fi->fh)
		dirhandle_free((struct dirhandle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	struct agentfs *fs = fs_of(req);
	fuse_reply_err(req, syncfs(fs->upper_fd) < 0 ? errno : 0);
}
