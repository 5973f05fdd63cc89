/*
 * ops_entry.c - namespace operations: lookup, forget, attributes, and every
 * operation that creates, removes or moves a name.
 *
 * Every change lands in the upper; the lower is only ever opened read-only.
 * A name the policy hides is answered exactly as a missing one (ENOENT), and
 * a change to a read-only path is refused with EROFS and journaled.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs/internal.h"
#include "fs/layout.h"
#include "policy/symlink.h"

void fs_record_ev(struct agentfs *fs, fuse_req_t req, struct journal_event *ev)
{
	if (!fs->journal)
		return;
	if (req) {
		const struct fuse_ctx *ctx = fuse_req_ctx(req);
		if (!ev->pid_start) /* else ev->pid is the process it was captured for */
			ev->pid = ctx->pid;
		ev->uid = ctx->uid;
	}
	journal_record(fs->journal, ev);
}

void fs_record(struct agentfs *fs, fuse_req_t req, enum journal_op op, int result, const char *path,
	       const char *path2)
{
	struct journal_event ev = {.op = op, .result = result, .path = path, .path2 = path2};
	fs_record_ev(fs, req, &ev);
}

bool fs_kill_suidgid(struct agentfs *fs, fuse_req_t req, int fd, const char *leaf, const char *path)
{
	struct stat st;
	if ((leaf ? fstatat(fd, leaf, &st, AT_SYMLINK_NOFOLLOW) : fstat(fd, &st)) < 0 ||
	    !S_ISREG(st.st_mode))
		return false;
	mode_t was = st.st_mode & 07777, mode = was & ~(mode_t)S_ISUID;
	if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		mode &= ~(mode_t)S_ISGID;
	if (mode == was || (leaf ? fchmodat(fd, leaf, mode, 0) : fchmod(fd, mode)) < 0)
		return false;
	struct journal_event ev = {.op = JOP_SETATTR,
				   .path = path,
				   .flags = FUSE_SET_ATTR_MODE,
				   .mode = (st.st_mode & S_IFMT) | mode,
				   .detail = "set-ID bits cleared"};
	fs_record_ev(fs, req, &ev);
	return true;
}

double attr_timeout(struct agentfs *fs, const struct node *n, const struct stat *st)
{
	/* Hard links of the upper are separate nodes here: do not let the
	 * kernel cache one name's attributes while another name changes them. */
	if (!S_ISDIR(st->st_mode) && st->st_nlink > 1)
		return 0;
	return n->parent ? entry_timeout(fs, n->parent) : fs->timeout;
}

/* @uncached: neither the entry nor its attributes may be cached (the
 * private .git's root during its build). */
static void reply_entry_as(fuse_req_t req, struct agentfs *fs, struct node *n,
			   const struct stat *st, bool uncached)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = n->id;
	e.attr = *st;
	if (!uncached) {
		e.attr_timeout = attr_timeout(fs, n, st);
		e.entry_timeout = n->parent ? entry_timeout(fs, n->parent) : fs->timeout;
	}
	fuse_reply_entry(req, &e);
}

static void reply_entry(fuse_req_t req, struct agentfs *fs, struct node *n, const struct stat *st)
{
	reply_entry_as(req, fs, n, st, false);
}

/* A refusal by policy: journaled, then EROFS. */
static void deny(fuse_req_t req, struct agentfs *fs, const char *path, const char *what)
{
	struct journal_event ev = {.op = JOP_DENY, .result = -EROFS, .path = path, .detail = what};
	fs_record_ev(fs, req, &ev);
	fuse_reply_err(req, EROFS);
}

/* Is there a visible lower entry @name under directory node @dir?  Whether a
 * removal must leave a whiteout. */
static bool lower_visible(struct agentfs *fs, struct node *dir, const char *name)
{
	if (!node_lower(dir) || dir->opaque)
		return false;
	char lpath[FS_PATH_MAX];
	struct stat st;
	if (path_join(lpath, sizeof(lpath), node_lower(dir), name) < 0 ||
	    lower_stat_in(fs, dir, name, &st) < 0)
		return false;
	return view_decide_lower(fs, lpath, &st) != POLICY_HIDDEN;
}

/* Does the lower hold anything at all (hidden or not) under @dir at @name?
 * A directory the agent puts there must be opaque so nothing merges in. */
static bool lower_any(struct agentfs *fs, struct node *dir, const char *name)
{
	if (!node_lower(dir) || dir->opaque)
		return false;
	struct stat st;
	return lower_stat_in(fs, dir, name, &st) == 0;
}

/* The upper directory of @dir, for dircache_put(). */
static int open_upper_dir(struct agentfs *fs, struct node *dir)
{
	char path[FS_PATH_MAX];
	int r = node_path(dir, path, sizeof(path));
	if (r < 0)
		return r;
	/* O_PATH: it serves *at() calls, also in a directory without read
	 * permission (mode 300), as the same calls on a plain one do. */
	return dircache_get(fs, path);
}

/* Refresh a node from disk (the kernel may hold it while the view changed). */
static int refresh(struct agentfs *fs, struct node *n, struct stat *st)
{
	struct stat tmp;
	return view_getattr(fs, n, st ? st : &tmp);
}

/* Is this the first attempt of process @pid on hidden @path lately?  A
 * direct-mapped memory of recent (pid, path) pairs keeps a probing loop from
 * flooding the journal; a collision only costs one more record. */
static bool conceal_first(struct agentfs *fs, pid_t pid, const char *path)
{
	uint64_t key = XXH3_64bits_withSeed(path, strlen(path), (uint64_t)pid) | 1;
	size_t slot = (size_t)(key >> 32) % FS_CONCEAL_SLOTS;
	pthread_mutex_lock(&fs->table_lock);
	bool first = fs->concealed[slot] != key;
	fs->concealed[slot] = key;
	pthread_mutex_unlock(&fs->table_lock);
	return first;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct agentfs *fs = fs_of(req);
	if (strlen(name) > NAME_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	struct node *dir = node_get(fs, parent);
	/* The worker waited already (loop.c): no node inside it half-built. */
	if (git_building_root(fs, dir))
		git_wait(fs);
	/* Before the attributes are read: those of a build that ends meanwhile
	 * must not be cached. */
	bool git_building =
	    is_git_root(fs, dir, name) && !__atomic_load_n(&fs->git_ready, __ATOMIC_ACQUIRE);
	pthread_rwlock_rdlock(&fs->ns_lock);
	watch_dir_lazy(fs, dir);
	struct entry e;
	bool concealed = false;
	uint64_t lower_gen = __atomic_load_n(&fs->lower_gen, __ATOMIC_ACQUIRE);
	int r = view_resolve(fs, dir, name, &e, &concealed);
	if (r < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		fuse_reply_err(req, -r);
		return;
	}
	bool faulted = false;
	if (!e.exists && fs->cfg->git_fault && fs->git_fd >= 0 && !concealed) {
		/* An object of the private .git made on demand (fs.h, git_fault),
		 * without ns_lock: the fault may wait for the base blobs being
		 * written (cli/gitpriv.h), and a create or rename anywhere
		 * would wait for the lock that long.  It writes only into
		 * git_dir, so the name is resolved again after it made
		 * something there; the kernel keeps the agent from changing
		 * the name meanwhile (it holds the directory's lock). */
		char dpath[FS_PATH_MAX], path[FS_PATH_MAX];
		if (node_path(dir, dpath, sizeof(dpath)) == 0 && strncmp(dpath, ".git/", 5) == 0 &&
		    path_join(path, sizeof(path), dpath, name) == 0) {
			pthread_rwlock_unlock(&fs->ns_lock);
			int fr = fs->cfg->git_fault(fs->cfg->git_prepare_arg, path + 5);
			pthread_rwlock_rdlock(&fs->ns_lock);
			faulted = fr != -ENOENT;
			if (fr == 0)
				r = view_resolve(fs, dir, name, &e, &concealed);
		}
		if (r < 0) {
			pthread_rwlock_unlock(&fs->ns_lock);
			fuse_reply_err(req, -r);
			return;
		}
	}
	if (!e.exists) {
		neg_remember(fs, dir, name, e.whiteout, lower_gen);
		if (concealed) {
			char path[FS_PATH_MAX], dpath[FS_PATH_MAX];
			if (node_path(dir, dpath, sizeof(dpath)) == 0 &&
			    path_join(path, sizeof(path), dpath, name) == 0 &&
			    conceal_first(fs, fuse_req_ctx(req)->pid, path))
				fs_record(fs, req, JOP_CONCEAL, -ENOENT, path, NULL);
		}
		pthread_rwlock_unlock(&fs->ns_lock);
		/* A negative entry, cached exactly like an absent name's: a
		 * hidden name answered afresh each time would show by its
		 * timing.  So the journal sees the first attempt per name until
		 * the kernel forgets it (and per process among those). */
		struct fuse_entry_param ne;
		memset(&ne, 0, sizeof(ne));
		ne.entry_timeout = entry_timeout(fs, dir);
		if (ne.entry_timeout > FS_NEG_TIMEOUT)
			ne.entry_timeout = FS_NEG_TIMEOUT;
		/* Not for a name of the private .git that git_fault did not
		 * refuse (-ENOENT) yet left absent: a base blob a pack holds
		 * (once the agent's git prunes that pack, the next lookup
		 * copies it in), or one it failed to copy (a full disk). */
		if (faulted)
			ne.entry_timeout = 0;
		fuse_reply_entry(req, &ne);
		return;
	}
	struct node *n = node_find(fs, dir, name);
	if (n && view_replaced(n, &e))
		node_unhash(fs, n); /* replaced behind the kernel's back: new inode */
	n = node_child(fs, dir, name, true);
	if (!n || view_apply(fs, n, &e) < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		if (n)
			node_forget(fs, n, 1);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_rwlock_unlock(&fs->ns_lock);
	/* The private .git while it is being built: its id before the reply,
	 * which the kernel's next request on it may follow at once (fs/internal.h). */
	if (git_building)
		__atomic_store_n(&fs->git_root_id, (uint64_t)n->id, __ATOMIC_RELEASE);
	reply_entry_as(req, fs, n, &e.st, git_building);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct agentfs *fs = fs_of(req);
	node_forget(fs, node_get(fs, ino), nlookup);
	fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct agentfs *fs = fs_of(req);
	for (size_t i = 0; i < count; i++)
		node_forget(fs, node_get(fs, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

struct handle; /* ops_file.c */
int handle_fstat(struct agentfs *fs, struct fuse_file_info *fi, struct node *n, struct stat *st);
int handle_upper_fd(struct fuse_file_info *fi);

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct stat st;
	int r;
	/* Before the attributes are read: those of a build that ends meanwhile
	 * must not be cached. */
	bool building = git_building_root(fs, n);
	if (fi && fi->fh) {
		r = handle_fstat(fs, fi, n, &st);
		fs_publish(fs); /* done with the handle: see op_write_buf */
	} else {
		pthread_rwlock_rdlock(&fs->ns_lock);
		r = view_getattr(fs, n, &st);
		if (r == -ESTALE)
			r = gone_fstat(fs, n, &st); /* renamed over (op_rename) */
		pthread_rwlock_unlock(&fs->ns_lock);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, building ? 0 : attr_timeout(fs, n, &st));
}

/* access(2) and chdir(2), which the kernel asks only of a mount without
 * default_permissions: a root daemon's, used by root alone (fs.c).  Root
 * passes every check but execute, which a file other than a directory
 * passes only with some execute bit (capabilities(7), CAP_DAC_OVERRIDE). */
void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct stat st;
	int r = 0;
	pthread_rwlock_rdlock(&fs->ns_lock);
	/* The kernel found the name: only an execute check of a file (git's
	 * hooks, a shell's PATH) needs its mode. */
	if ((mask & X_OK) && !S_ISDIR(n->type) && (r = view_getattr(fs, n, &st)) == 0 &&
	    !S_ISDIR(st.st_mode) && !(st.st_mode & 0111))
		r = -EACCES;
	pthread_rwlock_unlock(&fs->ns_lock);
	fuse_reply_err(req, -r);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	char path[FS_PATH_MAX];
	struct stat st;
	/* A large lower file is copied before the lock, beside the kernel's
	 * other requests (as op_open does); one truncated to 0 gets none of
	 * its bytes. */
	struct copyup_prep prep = {.empty = (to_set & FUSE_SET_ATTR_SIZE) && attr->st_size == 0};
	if (__atomic_load_n(&n->size_seen, __ATOMIC_RELAXED) > FS_INLINE_IO)
		copyup_prepare(fs, n, prep.empty, &prep);
	ns_wrlock_settled(fs, n, NULL); /* its writes' records before a truncate's */
	int r = 0;
	int hfd = fi && fi->fh ? handle_upper_fd(fi) : -1;
	int own_fd = -1;
	uint32_t unlinked = 0; /* the records say nothing of the upper at a path */
	if (node_unnamed(fs, n)) {
		/* Unlinked while open (fchmod(2) after unlink(2)): only an
		 * upper handle still reaches the file.  Its name is gone, so
		 * nothing is copied up or looked up by path. */
		if (hfd < 0)
			hfd = own_fd = handle_node_fd(fs, n, true);
		if (hfd < 0) {
			r = -ENOENT;
			goto fail;
		}
		snprintf(path, sizeof(path), "(unlinked)");
		unlinked = JOURNAL_F_UNLINKED;
	} else {
		r = refresh(fs, n, NULL);
		if (r == 0)
			r = node_path(n, path, sizeof(path));
		if (r < 0)
			goto fail;
		if (n->readonly) {
			pthread_rwlock_unlock(&fs->ns_lock);
			copyup_prep_drop(fs, &prep);
			deny(req, fs, path, "setattr");
			return;
		}
		r = copyup_with(fs, n, req, NULL, &prep);
		if (r < 0)
			goto fail;
		hfd = fi && fi->fh ? handle_upper_fd(fi) : -1;
	}
	int pfd = -1;
	const char *leaf = ".";
	if (hfd < 0) {
		if (n == &fs->root) {
			pfd = dup(fs->upper_fd);
			if (pfd < 0)
				pfd = -errno;
		} else {
			pfd = upper_open_parent(fs, path, &leaf);
		}
		if (pfd < 0) {
			r = pfd;
			goto fail;
		}
	}
	if (to_set & FUSE_SET_ATTR_MODE) {
		if ((hfd >= 0 ? fchmod(hfd, attr->st_mode & 07777)
			      : fchmodat(pfd, leaf, attr->st_mode & 07777, 0)) < 0) {
			r = -errno;
			goto out;
		}
	}
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t u = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t g = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if ((hfd >= 0 ? fchown(hfd, u, g)
			      : fchownat(pfd, leaf, u, g, AT_SYMLINK_NOFOLLOW)) < 0) {
			r = -errno;
			goto out;
		}
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		int fd = hfd;
		if (fd < 0)
			fd = openat(pfd, leaf, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || ftruncate(fd, attr->st_size) < 0)
			r = -errno;
		if (fd >= 0 && fd != hfd)
			close(fd);
		if (r < 0)
			goto out;
		struct journal_event ev = {.op = JOP_TRUNCATE,
					   .path = path,
					   .bytes = (uint64_t)attr->st_size,
					   .flags = unlinked};
		fs_record_ev(fs, req, &ev);
		handles_truncated(fs, n);
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = attr->st_mtim;
		if ((hfd >= 0 ? futimens(hfd, ts) : utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW)) <
		    0) {
			r = -errno;
			goto out;
		}
	}
	/* Since INIT said FUSE_HANDLE_KILLPRIV_V2 (passthrough.c), the kernel
	 * leaves clearing the set-ID bits to the daemon (fuse_setattr, fs/fuse/
	 * dir.c): a truncate or a chown by a caller without CAP_FSETID says so
	 * with FATTR_KILL_SUIDGID (FUSE_SET_ATTR_KILL_SUID here); a write by one
	 * (file_remove_privs, fs/inode.c, on the FUSE file before every write,
	 * the ones passthrough serves included) with a SETATTR that has
	 * nothing else left to set.  The only other such SETATTR is
	 * chown(2) to -1, -1, which clears them too (chown_common, fs/open.c);
	 * utimensat(2) with both times UTIME_OMIT returns before it. */
	const int sets = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
			 FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
			 FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME;
	if ((to_set & FUSE_SET_ATTR_KILL_SUID) || !(to_set & sets))
		fs_kill_suidgid(fs, req, hfd >= 0 ? hfd : pfd, hfd >= 0 ? NULL : leaf, path);
	if (to_set & sets & ~FUSE_SET_ATTR_SIZE) {
		struct journal_event ev = {.op = JOP_SETATTR,
					   .path = path,
					   .flags = (uint32_t)to_set | unlinked,
					   .mode =
					       (to_set & FUSE_SET_ATTR_MODE) ? attr->st_mode : 0};
		fs_record_ev(fs, req, &ev);
	}
out:
	if (pfd >= 0)
		close(pfd);
	if (r < 0)
		goto fail;
	if (own_fd >= 0) {
		r = fstat(own_fd, &st) < 0 ? -errno : 0;
		if (r == 0) {
			view_fix_attr(fs, &st, n->ino, true);
			st.st_nlink = 0;
		}
		close(own_fd);
		own_fd = -1;
		pthread_rwlock_unlock(&fs->ns_lock);
	} else if (hfd >= 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		r = handle_fstat(fs, fi, n, &st);
	} else {
		r = view_getattr(fs, n, &st);
		pthread_rwlock_unlock(&fs->ns_lock);
	}
	copyup_prep_drop(fs, &prep);
	if (r == 0 && S_ISREG(st.st_mode))
		node_saw_size(n, st.st_size, false);
	fs_publish(fs); /* done with the handle, if any: see op_write_buf */
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, attr_timeout(fs, n, &st));
	return;
fail:
	if (own_fd >= 0)
		close(own_fd);
	pthread_rwlock_unlock(&fs->ns_lock);
	copyup_prep_drop(fs, &prep);
	fs_publish(fs);
	fuse_reply_err(req, -r);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	char path[FS_PATH_MAX], target[FS_PATH_MAX];
	pthread_rwlock_rdlock(&fs->ns_lock);
	int r = refresh(fs, n, NULL);
	if (r == 0 && !S_ISLNK(n->type))
		r = -EINVAL;
	if (r == 0)
		r = n->upper ? node_path(n, path, sizeof(path))
			     : snprintf(path, sizeof(path), "%s", node_lower(n)) < 0;
	ssize_t len = -1;
	if (r == 0) {
		const char *leaf;
		int pfd = n->upper ? upper_open_parent(fs, path, &leaf)
				   : layer_open_parent(fs, fs->lower_fd, path, &leaf);
		if (pfd < 0) {
			r = pfd;
		} else {
			len = readlinkat(pfd, leaf, target, sizeof(target) - 1);
			if (len < 0)
				r = -errno;
			close(pfd);
		}
	}
	if (r == 0) {
		target[len] = 0;
		/* The person may have retargeted a lower link since it was
		 * looked up: decide again on the very bytes handed out, or the
		 * kernel would follow them out of the repository. */
		if (!n->upper && policy_symlinks_mode(fs->policy) == POLICY_SYMLINKS_HIDE &&
		    policy_symlink_target_unsafe(fs->policy, fs->lower_fd, path, target))
			r = -ENOENT;
	}
	pthread_rwlock_unlock(&fs->ns_lock);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_readlink(req, target);
}

/*
 * Common start of every operation that makes a new name @name in @dir:
 * checks the name, the policy and that the name is free, and makes the
 * directory exist in the upper.  Returns an fd of the upper directory and
 * fills @path with the new view path; or -errno (with -EROFS already
 * journaled and answered: the caller then only unlocks).  Caller holds
 * ns_lock exclusive.
 */
static int new_name(fuse_req_t req, struct agentfs *fs, struct node *dir, const char *name,
		    bool is_dir, char *path, size_t plen, bool *replied)
{
	*replied = false;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (layout_is_reserved(name))
		return -EINVAL;
	if (node_unnamed(fs, dir))
		return -ENOENT;
	char dpath[FS_PATH_MAX];
	int r = node_path(dir, dpath, sizeof(dpath));
	if (r < 0 || (r = path_join(path, plen, dpath, name)) < 0)
		return r;
	if (view_name_is_git(name)) {
		deny(req, fs, path, "create a .git");
		*replied = true;
		return -EROFS;
	}
	if (view_path_readonly(fs, path, is_dir) || dir->readonly) {
		deny(req, fs, path, "create");
		*replied = true;
		return -EROFS;
	}
	if (!neg_recall(fs, dir, name)) {
		struct entry e;
		if ((r = view_resolve(fs, dir, name, &e, NULL)) < 0)
			return r;
		if (e.exists)
			return -EEXIST;
	}
	if ((r = copyup_dir(fs, dir)) < 0)
		return r;
	return open_upper_dir(fs, dir);
}

gid_t new_entry_gid(int dfd, gid_t got, gid_t caller)
{
	if (got == caller)
		return caller;
	/* Not the daemon's own group: the upper's file system took the
	 * directory's. */
	if (got != getegid())
		return got;
	struct stat dst;
	return fstat(dfd, &dst) == 0 && (dst.st_mode & S_ISGID) ? got : caller;
}

mode_t new_entry_setid(fuse_req_t req, mode_t mode, gid_t gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (S_ISDIR(mode) || !(mode & S_ISGID) || !(mode & S_IXGRP) || gid == ctx->gid ||
	    ctx->uid == 0)
		return mode;
	gid_t groups[256];
	int n = fuse_req_getgroups(req, 256, groups);
	for (int i = 0; i < n && i < 256; i++)
		if (groups[i] == gid)
			return mode;
	return mode & ~(mode_t)S_ISGID;
}

/* The caller's ownership for a new entry when the daemon runs as root on
 * behalf of others (allow_other); a daemon running as the person needs none.
 * Not for a hard link: link(2) leaves its file's owner as it is. */
static void own_new(struct agentfs *fs, int dfd, const char *name, fuse_req_t req)
{
	if (!fs->is_root)
		return;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	gid_t gid = new_entry_gid(dfd, st.st_gid, ctx->gid);
	if (st.st_uid == ctx->uid && st.st_gid == gid)
		return;
	(void)!fchownat(dfd, name, ctx->uid, gid, AT_SYMLINK_NOFOLLOW);
	/* chown(2) clears set-user-ID and set-group-ID: put them back. */
	if (!S_ISLNK(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)))
		(void)!fchmodat(dfd, name, new_entry_setid(req, st.st_mode, gid) & 07777, 0);
}

/* After creating @name in upper dir @dfd: drop a stale whiteout, look the
 * new entry up and answer with it. */
static void finish_new(fuse_req_t req, struct agentfs *fs, struct node *dir, int dfd,
		       const char *name, const char *path, enum journal_op op, const char *path2,
		       mode_t mode, fuse_ino_t inval)
{
	if (op != JOP_LINK)
		own_new(fs, dfd, name, req);
	layout_remove_whiteout(dfd, name);
	dircache_put(fs, dfd);
	dir->upper = true;
	struct entry e;
	int r = view_resolve(fs, dir, name, &e, NULL);
	if (r == 0 && !e.exists)
		r = -EIO;
	struct node *n = NULL;
	if (r == 0) {
		n = node_child(fs, dir, name, true);
		if (!n)
			r = -ENOMEM;
		else
			r = view_apply(fs, n, &e);
	}
	struct journal_event ev = {
	    .op = op, .result = r, .path = path, .path2 = path2, .mode = mode};
	fs_record_ev(fs, req, &ev);
	pthread_rwlock_unlock(&fs->ns_lock);
	/* After ns_lock is released: the invalidation waits for the inode's
	 * locked pages, whose READs other workers must be free to answer
	 * (fs/loop.c). */
	if (inval)
		fuse_lowlevel_notify_inval_inode(fs->se, inval, 0, 0);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, fs, n, &e.st);
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct agentfs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent);
	char path[FS_PATH_MAX];
	bool replied;
	ns_wrlock(fs);
	int dfd = new_name(req, fs, dir, name, false, path, sizeof(path), &replied);
	if (dfd >= 0 && view_path_in_git(fs, path) && !S_ISREG(mode)) {
		/* A FIFO where git, libgit2 in the daemon or the person's
		 * promote expects a file (HEAD, a ref) blocks its open forever. */
		dircache_put(fs, dfd);
		pthread_rwlock_unlock(&fs->ns_lock);
		deny(req, fs, path, "special file in .git");
		return;
	}
	if (dfd >= 0 && mknodat(dfd, name, mode, rdev) < 0) {
		int e = -errno;
		dircache_put(fs, dfd);
		dfd = e;
	}
	if (dfd >= 0)
		fix_mode(fs, dfd, name, -1, mode);
	if (dfd < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		if (!replied)
			fuse_reply_err(req, -dfd);
		return;
	}
	finish_new(req, fs, dir, dfd, name, path, JOP_MKNOD, NULL, mode, 0);
}

/* layout_set_opaque() on the upper directory @fd, whose mode the agent may
 * have set without write permission for its owner (mkdir -m 555, chmod 555
 * before a rename): a user.* xattr needs it (xattr(7)), so the daemon lifts
 * the mode for the flag as it does for the redirect (upper_dir_grant). */
static int set_opaque_granted(int fd)
{
	int r = layout_set_opaque(fd);
	int granted = r == -EACCES ? upper_dir_grant(fd) : -1;
	if (granted >= 0)
		r = layout_set_opaque(fd);
	upper_dir_restore(fd, granted);
	return r;
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct agentfs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent);
	char path[FS_PATH_MAX];
	bool replied;
	ns_wrlock(fs);
	int dfd = new_name(req, fs, dir, name, true, path, sizeof(path), &replied);
	if (dfd >= 0 && mkdirat(dfd, name, mode) < 0) {
		int e = -errno;
		dircache_put(fs, dfd);
		dfd = e;
	}
	if (dfd >= 0)
		fix_mode(fs, dfd, name, -1, mode);
	if (dfd >= 0 && lower_any(fs, dir, name)) {
		/* A deleted or hidden lower directory of that name must not
		 * merge into the new one. */
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int r = fd < 0 ? -errno : set_opaque_granted(fd);
		if (fd >= 0)
			close(fd);
		if (r < 0) {
			unlinkat(dfd, name, AT_REMOVEDIR);
			dircache_put(fs, dfd);
			dfd = r;
		}
	}
	if (dfd < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		if (!replied)
			fuse_reply_err(req, -dfd);
		return;
	}
	finish_new(req, fs, dir, dfd, name, path, JOP_MKDIR, NULL, mode, 0);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct agentfs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent);
	char path[FS_PATH_MAX];
	bool replied;
	ns_wrlock(fs);
	int dfd = new_name(req, fs, dir, name, false, path, sizeof(path), &replied);
	if (dfd >= 0 && view_path_in_git(fs, path)) {
		dircache_put(fs, dfd);
		pthread_rwlock_unlock(&fs->ns_lock);
		deny(req, fs, path, "symlink in .git");
		return;
	}
	if (dfd >= 0 && symlinkat(link, dfd, name) < 0) {
		int e = -errno;
		dircache_put(fs, dfd);
		dfd = e;
	}
	if (dfd < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		if (!replied)
			fuse_reply_err(req, -dfd);
		return;
	}
	finish_new(req, fs, dir, dfd, name, path, JOP_SYMLINK, link, 0, 0);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct node *dir = node_get(fs, newparent);
	char path[FS_PATH_MAX], spath[FS_PATH_MAX];
	bool replied;
	ns_wrlock_settled(fs, n, NULL); /* its writes' records come first */
	int r = refresh(fs, n, NULL);
	if (r == 0 && S_ISDIR(n->type))
		r = -EPERM;
	if (r == 0)
		r = node_path(n, spath, sizeof(spath));
	if (r == 0 && n->readonly) {
		pthread_rwlock_unlock(&fs->ns_lock);
		deny(req, fs, spath, "link");
		return;
	}
	if (r < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		fuse_reply_err(req, -r);
		return;
	}
	int dfd = new_name(req, fs, dir, newname, false, path, sizeof(path), &replied);
	if (dfd >= 0 && view_path_in_git(fs, path) &&
	    (!view_path_in_git(fs, spath) || S_ISLNK(n->type))) {
		dircache_put(fs, dfd);
		pthread_rwlock_unlock(&fs->ns_lock);
		deny(req, fs, path, "link into .git");
		return;
	}
	if (dfd >= 0 && (r = copyup(fs, n, req, NULL)) < 0) {
		dircache_put(fs, dfd);
		dfd = r;
	}
	if (dfd >= 0) {
		const char *leaf;
		int sfd = upper_open_parent(fs, spath, &leaf);
		if (sfd < 0 || linkat(sfd, leaf, dfd, newname, 0) < 0) {
			r = sfd < 0 ? sfd : -errno;
			dircache_put(fs, dfd);
			dfd = r;
		}
		if (sfd >= 0)
			close(sfd);
	}
	if (dfd < 0) {
		pthread_rwlock_unlock(&fs->ns_lock);
		if (!replied)
			fuse_reply_err(req, -dfd);
		return;
	}
	/* The source's cached link count and pages are stale now.  Told
	 * before the reply (finish_new), so a stat(2) right after link(2)
	 * cannot see the old count; invalidating an inode takes no lock the
	 * kernel holds for link (fs/fuse/inode.c, fuse_reverse_inval_inode),
	 * but it waits for the file's locked pages, so never under ns_lock.
	 * attr_timeout 0 for nlink > 1 does the rest.  The record names the
	 * file linked to in path and the new name in path2 (journal/SCHEMA.md),
	 * as verify and the activity summary read it. */
	finish_new(req, fs, dir, dfd, newname, spath, JOP_LINK, path, 0, n->id);
}

/* Start of unlink and rmdir: resolve the victim, check policy. */
static int victim(fuse_req_t req, struct agentfs *fs, struct node *dir, const char *name,
		  struct entry *e, char *path, size_t plen, bool *replied, int *ufd)
{
	*replied = false;
	*ufd = -1;
	char dpath[FS_PATH_MAX];
	int r = node_path(dir, dpath, sizeof(dpath));
	if (r < 0 || (r = path_join(path, plen, dpath, name)) < 0)
		return r;
	if (is_git_root(fs, dir, name))
		return -EBUSY; /* the private .git stays where it is */
	/* The upper directory is opened once, for the lookup and the change. */
	if (dir->upper && (*ufd = dircache_get(fs, dpath)) < 0) {
		r = *ufd;
		*ufd = -1;
		if (r != -ENOENT)
			return r;
	}
	if ((r = view_resolve_at(fs, dir, name, e, NULL, *ufd, -1)) < 0)
		return r;
	if (!e->exists)
		return -ENOENT;
	if (e->readonly || dir->readonly) {
		deny(req, fs, path, "remove");
		*replied = true;
		return -EROFS;
	}
	return 0;
}

/*
 * Is directory @e, found at @name in @dir, empty as the view shows it?  1 yes,
 * 0 no, or a negative errno.  Markers the daemon could not read (a directory
 * the agent made unreadable: e->markers_unknown) say nothing of its lower
 * directory; the node the kernel holds for it does (view_apply keeps what it
 * knew), and without one the answer is -EACCES, never "empty", which would
 * let rmdir(2) or a rename over it drop the lower's entries from the view.
 */
static int dir_entry_empty(struct agentfs *fs, struct node *dir, const char *name,
			   const struct entry *e)
{
	/* A stand-in node to list the directory as the view has it. */
	struct node tmp = {.gone_fd = -1,
			   .parent = dir,
			   .name = (char *)name,
			   .type = S_IFDIR,
			   .upper = e->in_upper,
			   .opaque = e->opaque,
			   .lower = e->in_lower ? (char *)e->lower : NULL};
	if (e->markers_unknown) {
		struct node *known = node_find(fs, dir, name);
		if (!known || !known->upper || !S_ISDIR(known->type))
			return -EACCES;
		tmp.opaque = known->opaque;
		tmp.lower = (char *)node_lower(known);
	}
	return view_dir_empty(fs, &tmp);
}

/*
 * unlink(2) and rmdir(2): take @name out of @dir's view.  The upper entry goes
 * (a directory with the whiteouts it held); a visible lower entry gets a
 * whiteout, made first, so a crash in between leaves the entry, never the
 * lower version resurfacing in place of the agent's.  A directory must be
 * empty as the view shows it: one whose only entries are hidden is.
 */
static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, bool is_rmdir)
{
	struct agentfs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent);
	char path[FS_PATH_MAX];
	struct entry e;
	bool replied;
	/* Its write records come before the unlink's. */
	ns_wrlock_settled_names(fs, dir, name, NULL, NULL);
	int dfd;
	int r = victim(req, fs, dir, name, &e, path, sizeof(path), &replied, &dfd);
	if (r == 0 && is_rmdir != S_ISDIR(e.type))
		r = is_rmdir ? -ENOTDIR : -EISDIR;
	if (r == 0 && is_rmdir) {
		int empty = dir_entry_empty(fs, dir, name, &e);
		r = empty < 0 ? empty : empty ? 0 : -ENOTEMPTY;
	}
	bool wh = r == 0 && (e.in_upper ? lower_visible(fs, dir, name) : true);
	if (r == 0 && dfd < 0 && (r = copyup_dir(fs, dir)) == 0)
		dfd = open_upper_dir(fs, dir);
	if (r < 0 || dfd < 0) {
		dircache_put(fs, dfd);
		r = r < 0 ? r : dfd;
		pthread_rwlock_unlock(&fs->ns_lock);
		if (!replied)
			fuse_reply_err(req, -r);
		return;
	}
	if (wh) {
		/* A file the agent changed leaves its origin with the whiteout,
		 * for a file made at the name later (op_create, op_rename).  A
		 * file that lives on (open, or under another name) keeps its
		 * inode number: the whiteout passes on its base alone, and for
		 * a lower file it then says so (op_create would take the
		 * lower's number). */
		struct layout_origin o;
		bool lives = S_ISREG(e.type) && file_lives_on(fs, node_find(fs, dir, name), &e.st);
		bool got = false;
		if (e.in_upper && S_ISREG(e.type))
			got = origin_of_upper(dfd, name, &o) == 1;
		else if (lives && e.in_lower)
			got = origin_of_lower(fs, e.lower, false, &o) == 0;
		if (got && lives)
			o.ino = 0;
		r = got ? layout_make_whiteout_origin(dfd, name, &o)
			: layout_make_whiteout(dfd, name);
	}
	if (r == 0 && e.in_upper)
		r = is_rmdir ? upper_rmdir(fs, dfd, name) : unlinkat(dfd, name, 0) < 0 ? -errno : 0;
	dircache_put(fs, dfd);
	if (r == 0) {
		struct node *n = node_find(fs, dir, name);
		if (n)
			node_remove_dir(fs, n, &e.st, is_rmdir);
	}
	fs_record(fs, req, is_rmdir ? JOP_RMDIR : JOP_UNLINK, r, path, NULL);
	pthread_rwlock_unlock(&fs->ns_lock);
	/* A pack of the private .git gone (git gc, or by hand): the objects it
	 * held may now be the fault's to give, loose (fs.h). */
	if (r == 0 && !is_rmdir && fs->cfg->git_packs_removed && fs->git_fd >= 0 &&
	    strncmp(path, ".git/objects/pack/", 18) == 0)
		fs->cfg->git_packs_removed(fs->cfg->git_prepare_arg);
	fuse_reply_err(req, -r);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, false);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, true);
}

/* Make a node about to move exist in the upper, and pin a lower directory's
 * contents to where they came from (redirect), so they follow the move.
 * @prep: a copy of its file made ahead (copyup_prepare), or NULL. */
static int materialize(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_prep *prep)
{
	int r;
	if (!S_ISDIR(n->type))
		return copyup_with(fs, n, req, NULL, prep);
	if ((r = copyup_dir(fs, n)) < 0)
		return r;
	if (!node_lower(n))
		return 0;
	char path[FS_PATH_MAX];
	if ((r = node_path(n, path, sizeof(path))) < 0)
		return r;
	/* The mark is on the directory itself: a directory the agent made
	 * 555 moves within its parent, so the daemon lifts its mode for it. */
	int pfd = upper_open(fs, path, O_PATH | O_DIRECTORY, 0);
	if (pfd < 0)
		return pfd;
	int granted = -1;
	int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = fd < 0 ? -errno : layout_set_redirect(fd, node_lower(n));
	if (r == -EACCES && (granted = upper_dir_grant(pfd)) >= 0) {
		if (fd < 0)
			fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = fd < 0 ? -errno : layout_set_redirect(fd, node_lower(n));
	}
	upper_dir_restore(pfd, granted);
	if (fd >= 0)
		close(fd);
	close(pfd);
	return r;
}

/* An upper-only directory that lands where the lower has an entry must not
 * merge with it. */
static int settle_dir(struct agentfs *fs, struct node *n, struct node *dir, const char *name,
		      int dfd)
{
	if (!S_ISDIR(n->type) || node_lower(n) || !lower_any(fs, dir, name))
		return 0;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = set_opaque_granted(fd);
	close(fd);
	n->opaque = true;
	return r;
}

/* Whether node @n (or NULL) is a regular file only in the lower, larger than
 * FS_INLINE_IO when last seen: its copy-up is worth making before the lock.
 * Caller holds ns_lock. */
static bool large_in_lower(const struct node *n)
{
	return n && S_ISREG(n->type) && !n->upper &&
	       __atomic_load_n(&n->size_seen, __ATOMIC_RELAXED) > FS_INLINE_IO;
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags)
{
	struct agentfs *fs = fs_of(req);
	struct node *sdir = node_get(fs, parent), *ddir = node_get(fs, newparent);
	char spath[FS_PATH_MAX] = "", dpath[FS_PATH_MAX] = "";
	struct entry se, de;
	bool replied = false;
	struct node *n = NULL, *dn = NULL, *over = NULL;
	int sfd = -1, dfd = -1;
	int r = 0;
	bool noop = false;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL); /* RENAME_WHITEOUT is ours alone */
		return;
	}
	if (strlen(newname) > NAME_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	if (layout_is_reserved(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* A large lower file moves by a copy-up: its bytes are copied before
	 * the lock, beside the kernel's other requests (the reader answers a
	 * rename itself: fs/loop.c), and so are an exchange's destination's.
	 * The nodes the table names are held meanwhile (the kernel holds the
	 * inodes of its dentries, but the table may name others by then). */
	struct copyup_prep prep = {0}, dprep = {0};
	pthread_rwlock_rdlock(&fs->ns_lock);
	struct node *src = node_find(fs, sdir, name);
	struct node *dst = (flags & RENAME_EXCHANGE) ? node_find(fs, ddir, newname) : NULL;
	bool large = large_in_lower(src), dlarge = large_in_lower(dst);
	if (large)
		node_ref(fs, src);
	if (dlarge)
		node_ref(fs, dst);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (large) {
		copyup_prepare(fs, src, false, &prep);
		node_unref(fs, src);
	}
	if (dlarge) {
		copyup_prepare(fs, dst, false, &dprep);
		node_unref(fs, dst);
	}
	/* The write records of either file come before the rename's. */
	ns_wrlock_settled_names(fs, sdir, name, ddir, newname);
	r = victim(req, fs, sdir, name, &se, spath, sizeof(spath), &replied, &sfd);
	if (sfd >= 0) {
		dircache_put(fs, sfd); /* materialize() below may create it; reopened then */
		sfd = -1;
	}
	if (r < 0)
		goto out;
	char ddpath[FS_PATH_MAX];
	if ((r = refresh(fs, ddir, NULL)) < 0 ||
	    (r = node_path(ddir, ddpath, sizeof(ddpath))) < 0 ||
	    (r = path_join(dpath, sizeof(dpath), ddpath, newname)) < 0)
		goto out;
	if (is_git_root(fs, ddir, newname)) {
		r = -EBUSY;
		goto out;
	}
	if (view_name_is_git(newname) || ((flags & RENAME_EXCHANGE) && view_name_is_git(name))) {
		deny(req, fs, dpath, "rename to .git");
		replied = true;
		r = -EROFS;
		goto out;
	}
	if ((r = view_resolve(fs, ddir, newname, &de, NULL)) < 0)
		goto out;
	if (view_path_in_git(fs, dpath) != view_path_in_git(fs, spath) &&
	    (view_path_in_git(fs, dpath) || (flags & RENAME_EXCHANGE))) {
		deny(req, fs, dpath, "rename into .git");
		replied = true;
		r = -EROFS;
		goto out;
	}
	if (view_path_holds_readonly(fs, spath) ||
	    ((flags & RENAME_EXCHANGE) && view_path_holds_readonly(fs, dpath))) {
		deny(req, fs, spath, "rename");
		replied = true;
		r = -EROFS;
		goto out;
	}
	if (ddir->readonly || de.readonly || view_path_readonly(fs, dpath, S_ISDIR(se.type))) {
		deny(req, fs, dpath, "rename");
		replied = true;
		r = -EROFS;
		goto out;
	}
	if ((flags & RENAME_NOREPLACE) && de.exists) {
		r = -EEXIST;
		goto out;
	}
	if ((flags & RENAME_EXCHANGE) && !de.exists) {
		r = -ENOENT;
		goto out;
	}
	if (de.exists && !(flags & RENAME_EXCHANGE)) {
		if (S_ISDIR(se.type) && !S_ISDIR(de.type)) {
			r = -ENOTDIR;
			goto out;
		}
		if (!S_ISDIR(se.type) && S_ISDIR(de.type)) {
			r = -EISDIR;
			goto out;
		}
		if (S_ISDIR(de.type)) {
			int empty = dir_entry_empty(fs, ddir, newname, &de);
			if (empty <= 0) {
				r = empty < 0 ? empty : -ENOTEMPTY;
				goto out;
			}
		}
	}
	if (sdir == ddir && strcmp(name, newname) == 0)
		goto out; /* rename(2) of a name onto itself does nothing */

	n = node_child(fs, sdir, name, false);
	if (!n || (r = view_apply(fs, n, &se)) < 0) {
		r = r < 0 ? r : -ENOMEM;
		goto out;
	}
	node_ref(fs, n);
	if ((r = materialize(fs, n, req, &prep)) < 0)
		goto out;
	if (flags & RENAME_EXCHANGE) {
		dn = node_child(fs, ddir, newname, false);
		if (!dn || (r = view_apply(fs, dn, &de)) < 0) {
			r = r < 0 ? r : -ENOMEM;
			goto out;
		}
		node_ref(fs, dn);
		if ((r = materialize(fs, dn, req, &dprep)) < 0)
			goto out;
	}
	if ((r = copyup_dir(fs, ddir)) < 0)
		goto out;
	if ((sfd = open_upper_dir(fs, sdir)) < 0 || (dfd = open_upper_dir(fs, ddir)) < 0) {
		r = sfd < 0 ? sfd : dfd;
		goto out;
	}
	/* Two names of one file of the upper (hard links): rename(2) does
	 * nothing and both names stay, so neither the view nor the journal
	 * changes. */
	if (!(flags & RENAME_EXCHANGE) && de.exists && de.in_upper && S_ISREG(de.type) &&
	    S_ISREG(se.type) && de.st.st_nlink > 1) {
		struct stat a, b;
		if (fstatat(sfd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
		    fstatat(dfd, newname, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino) {
			noop = true;
			goto out;
		}
	}
	bool src_wh = !(flags & RENAME_EXCHANGE) && lower_visible(fs, sdir, name);
	/* An empty directory being replaced may still hold whiteouts. */
	if (de.exists && de.in_upper && S_ISDIR(de.type) && !(flags & RENAME_EXCHANGE) &&
	    (r = upper_rmdir(fs, dfd, newname)) < 0)
		goto out;
	if (!(flags & RENAME_EXCHANGE) && S_ISREG(se.type) &&
	    (de.exists ? S_ISREG(de.type) : de.whiteout)) {
		/* Write temp + rename over a file (an editor's save): the base
		 * of the file it replaces is the base of the new one.  That is
		 * the origin of a file the agent changed before, or the one its
		 * deletion left with the whiteout, else the lower version.  A
		 * file with an origin of its own (mv a b) keeps it. */
		struct layout_origin o, own;
		int got;
		if (!de.exists)
			got = layout_whiteout_origin(dfd, newname, &o) == 1;
		else if (!de.in_upper)
			got = 0;
		else if (!de.markers_unknown)
			got = de.has_origin; /* read by its lookup above */
		else
			got = origin_of_upper(dfd, newname, &o) == 1;
		const struct layout_origin *base =
		    de.exists && !de.markers_unknown ? &de.origin : &o;
		/* The source's own: known from its lookup unless materialize()
		 * just copied it up (with an origin). */
		bool own_none = se.in_upper && !se.markers_unknown
				    ? !se.has_origin
				    : layout_get_origin_at(sfd, name, &own) == 0;
		/* The file replaced lives on (open, or under another name):
		 * its base only, its inode number stays its own. */
		bool lives = de.exists && file_lives_on(fs, node_find(fs, ddir, newname), &de.st);
		if (got && own_none) {
			struct layout_origin b = *base;
			if (lives)
				b.ino = 0;
			layout_set_origin_at(sfd, name, &b);
		} else if (!got && de.exists && de.in_lower) {
			int fd = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (fd >= 0) {
				origin_from_lower(fs, fd, de.lower, !lives);
				close(fd);
			}
		}
	}
	if (src_wh) {
		/* The source's name keeps its origin for a file made there
		 * later (vim: rename to the backup name, write a new file). */
		struct layout_origin o;
		const struct layout_origin *own = NULL;
		if (S_ISREG(se.type) && se.in_upper && !se.markers_unknown)
			own = se.has_origin ? &se.origin : NULL;
		else if (S_ISREG(se.type) && origin_of_upper(sfd, name, &o) == 1)
			own = &o;
		/* Its base only, not its inode number: the renamed file keeps
		 * that, and two live files must not share one (cp, tar and
		 * find -samefile would take them for one file). */
		struct layout_origin base;
		if (own) {
			base = *own;
			base.ino = 0;
		}
		r = own ? layout_make_whiteout_origin(sfd, name, &base)
			: layout_make_whiteout(sfd, name);
		if (r < 0)
			goto out;
	}
	/* The file renamed over stays reachable for an open the kernel sends
	 * for it after the rename (a lookup of the name just before it). */
	int over_fd = -1;
	if (!(flags & RENAME_EXCHANGE) && de.exists && de.in_upper && S_ISREG(de.type) &&
	    (over = node_find(fs, ddir, newname)) && over != n && over->gone_fd < 0) {
		node_ref(fs, over); /* until the end: released after ns_lock */
		over_fd = openat(dfd, newname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	} else {
		over = NULL;
	}
	if (renameat2(sfd, name, dfd, newname, flags) < 0) {
		r = -errno;
		if (over_fd >= 0)
			close(over_fd);
		if (src_wh)
			layout_remove_whiteout(sfd, name);
		goto out;
	}
	if (over)
		over->gone_fd = over_fd;
	if (S_ISDIR(se.type) || ((flags & RENAME_EXCHANGE) && S_ISDIR(de.type)))
		dircache_forget(fs); /* descriptors below the moved directory */
	/* A whiteout at the new name goes (its lookup above saw one: an
	 * entry of the upper and its whiteout never coexist). */
	if (!(flags & RENAME_EXCHANGE) && de.whiteout)
		layout_remove_whiteout(dfd, newname);
	if ((r = settle_dir(fs, n, ddir, newname, dfd)) < 0)
		goto out;
	if (dn && (r = settle_dir(fs, dn, sdir, name, sfd)) < 0)
		goto out;
	struct node *old = node_find(fs, ddir, newname);
	if (old && old != n && old != dn)
		node_remove_dir(fs, old, de.exists ? &de.st : NULL, false);
	if (dn)
		node_unhash(fs, dn);
	if ((r = node_move(fs, n, ddir, newname)) == 0 && dn)
		r = node_move(fs, dn, sdir, name);
out:
	dircache_put(fs, sfd);
	dircache_put(fs, dfd);
	if (!replied && !noop) {
		struct journal_event ev = {
		    .op = JOP_RENAME, .result = r, .path = spath, .path2 = dpath, .flags = flags};
		if (r != -ENOENT || spath[0])
			fs_record_ev(fs, req, &ev);
	}
	pthread_rwlock_unlock(&fs->ns_lock);
	copyup_prep_drop(fs, &prep);
	copyup_prep_drop(fs, &dprep);
	if (n)
		node_unref(fs, n);
	if (dn)
		node_unref(fs, dn);
	if (over)
		node_unref(fs, over);
	if (!replied)
		fuse_reply_err(req, -r);
}

void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct agentfs *fs = fs_of(req);
	struct statvfs sv;
	if (fstatvfs(fs->upper_fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}
