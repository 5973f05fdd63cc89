/*
 * ops_xattr.c - extended attributes of the merged view.
 *
 * user.agentfs.* belongs to the upper's own bookkeeping (fs/layout.h): it is
 * never listed, reads as absent and cannot be set, so the agent can neither
 * see nor forge an origin, redirect or opaque marker.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/internal.h"
#include "fs/layout.h"

/* The view carries user.* attributes only (user_xattr in xattr(7)); other
 * namespaces are privileged, or ACLs and labels the kernel does not enforce
 * on a FUSE mount with default_permissions anyway. */
static bool private_name(const char *name)
{
	return strncmp(name, "user.", 5) != 0 ||
	       strncmp(name, LAYOUT_XATTR_PREFIX, LAYOUT_XATTR_PREFIX_LEN) == 0;
}

/*
 * The error a read of private @name gets: ENODATA for user.agentfs.* (a user
 * attribute that is simply not there), ENOTSUP for every other namespace,
 * which the view does not support at all (getxattr(2), xattr(7)).  ENOTSUP
 * also lets tools stop asking: coreutils' ls -l caches "unsupported" per
 * st_dev for security.selinux and system.posix_acl_access, which it would
 * otherwise request for every file, two FUSE round trips each that the kernel
 * does not cache (no FUSE_POSIX_ACL).
 */
static int private_read_error(const char *name)
{
	return strncmp(name, "user.", 5) == 0 ? ENODATA : ENOTSUP;
}

/*
 * A path naming @n that the l*xattr calls can use: "/proc/self/fd/<dirfd>/<leaf>"
 * (the directory fd was opened without following symlinks; the l* calls do not
 * follow the leaf).  @dfd receives the fd to close.  Caller holds ns_lock.
 */
static int xattr_path(struct agentfs *fs, struct node *n, bool upper, char *out, size_t len,
		      int *dfd)
{
	char path[FS_PATH_MAX];
	int r;
	if (upper) {
		if ((r = node_path(n, path, sizeof(path))) < 0)
			return r;
	} else {
		if (!node_lower(n))
			return -ENOENT;
		snprintf(path, sizeof(path), "%s", node_lower(n));
	}
	const char *leaf = ".";
	int fd;
	if (!path[0] || (upper && n->parent && is_git_root(fs, n->parent, n->name))) {
		fd = dup(!upper ? fs->lower_fd : path[0] ? fs->git_fd : fs->upper_fd);
		if (fd < 0)
			return -errno;
	} else {
		fd = upper ? upper_open_parent(fs, path, &leaf)
			   : layer_open_parent(fs, fs->lower_fd, path, &leaf);
		if (fd < 0)
			return fd;
	}
	*dfd = fd;
	if ((size_t)snprintf(out, len, "/proc/self/fd/%d/%s", fd, leaf) >= len) {
		close(fd);
		return -ENAMETOOLONG;
	}
	return 0;
}

/*
 * For @n without a name in the view (unlinked, or renamed over, while open):
 * "/proc/self/fd/<fd>" of its own file, where a path from its name would
 * reach whatever holds the name now.  The fd duplicates an open handle's
 * (an upper one only, if @upper_only: a lower file cannot be copied up once
 * its name is gone) or the descriptor a rename kept (node.gone_fd, the
 * upper's, O_PATH); the non-l calls follow the magic link to the file
 * (proc(5)).  @dfd receives the fd to close.  -ENOENT without either, as
 * setattr answers then.  Caller holds ns_lock.
 */
static int unnamed_xattr_path(struct agentfs *fs, struct node *n, bool upper_only, char *out,
			      size_t len, int *dfd)
{
	int fd = handle_node_fd(fs, n, upper_only);
	if (fd == -ENOENT && n->gone_fd >= 0 && (fd = dup(n->gone_fd)) < 0)
		fd = -errno;
	if (fd < 0)
		return fd;
	*dfd = fd;
	snprintf(out, len, "/proc/self/fd/%d", fd);
	return 0;
}

/* Has @n no name in the view any more (unnamed_xattr_path)? */
static bool unnamed(const struct agentfs *fs, const struct node *n)
{
	return node_unnamed(fs, n);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	if (private_name(name)) {
		fuse_reply_err(req, private_read_error(name));
		return;
	}
	char p[FS_PATH_MAX + 64];
	int dfd = -1;
	struct stat st;
	pthread_rwlock_rdlock(&fs->ns_lock);
	bool gone = unnamed(fs, n);
	int r =
	    gone ? unnamed_xattr_path(fs, n, false, p, sizeof(p), &dfd) : view_getattr(fs, n, &st);
	if (r == 0 && !gone)
		r = xattr_path(fs, n, n->upper, p, sizeof(p), &dfd);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	char *buf = size ? malloc(size) : NULL;
	ssize_t len = gone ? getxattr(p, name, buf, size) : lgetxattr(p, name, buf, size);
	int err = errno;
	close(dfd);
	if (len < 0)
		fuse_reply_err(req, err);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else
		fuse_reply_buf(req, buf, (size_t)len);
	free(buf);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	char p[FS_PATH_MAX + 64];
	int dfd = -1;
	struct stat st;
	pthread_rwlock_rdlock(&fs->ns_lock);
	bool gone = unnamed(fs, n);
	int r =
	    gone ? unnamed_xattr_path(fs, n, false, p, sizeof(p), &dfd) : view_getattr(fs, n, &st);
	if (r == 0 && !gone)
		r = xattr_path(fs, n, n->upper, p, sizeof(p), &dfd);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	ssize_t (*list)(const char *, char *, size_t) = gone ? listxattr : llistxattr;
	ssize_t len = list(p, NULL, 0);
	char *all = len > 0 ? malloc((size_t)len) : NULL;
	bool nomem = len > 0 && !all;
	if (len > 0)
		len = all ? list(p, all, (size_t)len) : -1;
	int err = nomem ? ENOMEM : errno;
	close(dfd);
	if (len < 0) {
		free(all);
		fuse_reply_err(req, err);
		return;
	}
	/* Drop our private names, keep the rest in order. */
	size_t out = 0;
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(all + i) + 1) {
		size_t l = strlen(all + i) + 1;
		if (private_name(all + i))
			continue;
		memmove(all + out, all + i, l);
		out += l;
	}
	if (size == 0)
		fuse_reply_xattr(req, out);
	else if (out > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, all, out);
	free(all);
}

static void change_xattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags, bool remove)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	if (private_name(name)) {
		fuse_reply_err(req, remove			? private_read_error(name)
				    : strncmp(name, "user.", 5) ? ENOTSUP
								: EPERM);
		return;
	}
	char p[FS_PATH_MAX + 64], path[FS_PATH_MAX];
	int dfd = -1;
	struct stat st;
	/* A large lower file is copied before the lock (as op_open does). */
	struct copyup_prep prep = {0};
	if (__atomic_load_n(&n->size_seen, __ATOMIC_RELAXED) > FS_INLINE_IO)
		copyup_prepare(fs, n, false, &prep);
	ns_wrlock(fs);
	/* Unlinked while open: only an upper handle reaches the file, and
	 * the records name no path for it (as setattr's, op_setattr). */
	bool gone = unnamed(fs, n);
	int r = gone ? 0 : view_getattr(fs, n, &st);
	if (r == 0 && gone)
		snprintf(path, sizeof(path), "(unlinked)");
	else if (r == 0)
		r = node_path(n, path, sizeof(path));
	if (r == 0 && n->readonly) {
		struct journal_event ev = {
		    .op = JOP_DENY, .result = -EROFS, .path = path, .detail = name};
		fs_record_ev(fs, req, &ev);
		r = -EROFS;
	}
	if (r == 0 && !gone)
		r = copyup_with(fs, n, req, NULL, &prep);
	if (r == 0)
		r = gone ? unnamed_xattr_path(fs, n, true, p, sizeof(p), &dfd)
			 : xattr_path(fs, n, true, p, sizeof(p), &dfd);
	if (r == 0) {
		int e =
		    gone
			? (remove ? removexattr(p, name) : setxattr(p, name, value, size, flags))
			: (remove ? lremovexattr(p, name) : lsetxattr(p, name, value, size, flags));
		if (e < 0)
			r = -errno;
		close(dfd);
		struct journal_event ev = {.op = remove ? JOP_REMOVEXATTR : JOP_SETXATTR,
					   .result = r,
					   .path = path,
					   .detail = name,
					   .flags = gone ? JOURNAL_F_UNLINKED : 0,
					   .bytes = size};
		fs_record_ev(fs, req, &ev);
	}
	pthread_rwlock_unlock(&fs->ns_lock);
	copyup_prep_drop(fs, &prep);
	fuse_reply_err(req, -r);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		 int flags)
{
	change_xattr(req, ino, name, value, size, flags, false);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	change_xattr(req, ino, name, NULL, 0, 0, true);
}
