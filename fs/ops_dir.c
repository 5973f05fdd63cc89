/*
 * ops_dir.c - directory listings of the merged view.
 *
 * opendir takes a snapshot of the merged listing (upper entries, then lower
 * entries not shadowed, whited out or hidden); readdir pages through it by
 * index, so offsets stay valid while the directory changes (POSIX leaves
 * entries added or removed after opendir unspecified).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/internal.h"

struct dirent_snap {
	char *name;
	mode_t type;
	ino_t ino;
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

static void dirhandle_free(struct dirhandle *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	free(d);
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct dirhandle *d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	char path[FS_PATH_MAX];
	struct stat st;
	pthread_rwlock_rdlock(&fs->ns_lock);
	int r = view_getattr(fs, n, &st);
	if (r == 0 && !S_ISDIR(n->type))
		r = -ENOTDIR;
	if (r == 0)
		r = snap_add(d, ".", S_IFDIR, (ino_t)n->ino);
	if (r == 0)
		r = snap_add(d, "..", S_IFDIR, (ino_t)(n->parent ? n->parent->ino : n->ino));
	if (r == 0)
		r = view_list(fs, n, snap_add, d);
	if (r == 0 && node_path(n, path, sizeof(path)) == 0)
		fs_record(fs, req, JOP_READDIR, 0, path, NULL);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (r < 0) {
		dirhandle_free(d);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) == -ENOENT)
		dirhandle_free(d);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	struct dirhandle *d = (struct dirhandle *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (size_t i = (size_t)off; i < d->n; i++) {
		struct stat st;
		memset(&st, 0, sizeof(st));
		st.st_ino = d->v[i].ino;
		st.st_mode = d->v[i].type;
		size_t need = fuse_add_direntry(req, buf + used, size - used, d->v[i].name, &st,
						(off_t)(i + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	dirhandle_free((struct dirhandle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	struct agentfs *fs = fs_of(req);
	fuse_reply_err(req, syncfs(fs->upper_fd) < 0 ? errno : 0);
}
