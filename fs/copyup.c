/*
 * copyup.c - copying lower entries into the upper before their first change.
 *
 * A file is assembled in work/ (same filesystem as the upper) with its data,
 * holes, mode, owner, times, user.* xattrs and an origin record (lower path,
 * inode number, xxh3-128 of the bytes copied), and only then renamed into
 * place: a crash never leaves a half-copied file in the view.  A file about
 * to be truncated to 0 (open(2) with O_TRUNC, truncate(2)) gets all of that
 * but its bytes.
 */
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

#define CHUNK (1 << 20)

/* Copy @size bytes from @src to @dst keeping holes, hashing every byte.
 * @sparse: @src has fewer blocks than its size needs, so it has holes, which
 * lseek(2)'s SEEK_DATA and SEEK_HOLE find; else it is read as one extent.
 * A file with holes and as many blocks anyway (blocks allocated past its
 * end, an xattr block) is then copied with its holes written as zeros: the
 * same bytes, more room. */
static int copy_data(int src, int dst, off_t size, bool sparse, XXH128_hash_t *hash)
{
	XXH3_state_t *hs = XXH3_createState();
	/* A small file gets a small buffer: a CHUNK-sized one is an mmap and
	 * munmap of its own for every copy-up (malloc's mmap threshold). */
	size_t cap = size <= 0 ? 1 : size < CHUNK ? (size_t)size : CHUNK;
	char *buf = malloc(cap);
	int r = 0;
	if (!hs || !buf) {
		r = -ENOMEM;
		goto out;
	}
	XXH3_128bits_reset(hs);
	off_t off = 0, end = 0; /* end: where the bytes written so far end */
	while (off < size) {
		off_t data = sparse ? lseek(src, off, SEEK_DATA) : off;
		if (data < 0)
			data = size; /* ENXIO: only a hole remains */
		if (data > off) {
			layout_hash_zeros(hs, data - off);
			off = data;
		}
		if (off >= size)
			break;
		off_t hole = sparse ? lseek(src, off, SEEK_HOLE) : size;
		if (hole < 0 || hole > size)
			hole = size;
		while (off < hole) {
			size_t want = (size_t)(hole - off) > cap ? cap : (size_t)(hole - off);
			ssize_t n = pread(src, buf, want, off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				r = -errno;
				goto out;
			}
			if (n == 0) {
				size = off; /* the file shrank under us */
				break;
			}
			XXH3_128bits_update(hs, buf, (size_t)n);
			for (ssize_t w = 0; w < n;) {
				ssize_t m = pwrite(dst, buf + w, (size_t)(n - w), off + w);
				if (m < 0) {
					if (errno == EINTR)
						continue;
					r = -errno;
					goto out;
				}
				w += m;
			}
			off += n;
			end = off;
		}
	}
	/* A hole at the end is a length, not bytes written. */
	if (end != size && ftruncate(dst, size) < 0) {
		r = -errno;
		goto out;
	}
	*hash = XXH3_128bits_digest(hs);
out:
	free(buf);
	XXH3_freeState(hs);
	return r;
}

/* user.* xattrs travel with a copy-up; ours (user.agentfs.*) never come from
 * the lower, and other namespaces need privileges people do not have. */
static void copy_xattrs(int src, int dst)
{
	char names[8192];
	ssize_t n = flistxattr(src, names, sizeof(names));
	for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(names + i) + 1) {
		const char *nm = names + i;
		if (strncmp(nm, "user.", 5) != 0 ||
		    strncmp(nm, LAYOUT_XATTR_PREFIX, LAYOUT_XATTR_PREFIX_LEN) == 0)
			continue;
		char val[65536];
		ssize_t vl = fgetxattr(src, nm, val, sizeof(val));
		if (vl >= 0)
			fsetxattr(dst, nm, val, (size_t)vl, 0);
	}
}

int copyup_dir(struct agentfs *fs, struct node *n)
{
	if (n->upper || n == &fs->root)
		return 0;
	int r = copyup_dir(fs, n->parent);
	if (r < 0)
		return r;
	char path[FS_PATH_MAX];
	if ((r = node_path(n, path, sizeof(path))) < 0)
		return r;
	/* Only what the lower still holds there: a directory the person moved
	 * or removed since the kernel looked it up (an agent's cwd in it) must
	 * not come back in the upper, over whatever the path holds now. */
	struct stat lst;
	if (!node_lower(n))
		return -ENOENT;
	r = layer_stat(fs, fs->lower_fd, node_lower(n), &lst);
	if (r == -ENOTDIR || r == -ELOOP || (r == 0 && !S_ISDIR(lst.st_mode)))
		r = -ENOENT;
	if (r < 0)
		return r;
	const char *leaf;
	int pfd = upper_open_parent(fs, path, &leaf);
	if (pfd < 0)
		return pfd;
	mode_t mode = lst.st_mode & 07777;
	int granted = -1;
	r = mkdirat(pfd, leaf, mode | S_IRWXU) < 0 ? -errno : 0;
	if (r == -EACCES && (granted = upper_dir_grant(pfd)) >= 0)
		r = mkdirat(pfd, leaf, mode | S_IRWXU) < 0 ? -errno : 0;
	upper_dir_restore(pfd, granted);
	if (r < 0 && r != -EEXIST) {
		close(pfd);
		return r;
	}
	int dfd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	close(pfd);
	if (dfd < 0)
		return -errno;
	if (fchown(dfd, lst.st_uid, lst.st_gid) < 0 && errno != EPERM) {
		/* Not being able to give away ownership is expected unprivileged. */
	}
	fchmod(dfd, lst.st_mode & 07777);
	struct timespec ts[2] = {lst.st_atim, lst.st_mtim};
	futimens(dfd, ts);
	close(dfd);
	n->upper = true;
	return 0;
}

/*
 * A copy of the regular lower file open as @src (whose fstat is @st, at the
 * lower path @lower) as @tmp in work/: its bytes (their hash in *@hash,
 * which *@lower_same says is the version @st describes, read from
 * *@read_at), user.* xattrs, an origin record, owner, mode and times.
 * @empty: no bytes, for a caller that truncates the file to 0 at once; *@hash
 * is still the lower version's (the origin's, from the hash cache or one
 * read), and *@lower_same false (the cache has it).  Closes @src.  0, or
 * -errno with nothing left in work/.
 */
static int copy_file(struct agentfs *fs, int src, const struct stat *st, const char *lower,
		     const char *tmp, bool empty, XXH128_hash_t *hash, bool *lower_same,
		     struct timespec *read_at)
{
	/* Made with the file's permission bits where the umask leaves them
	 * (and read and write for its owner, for the xattrs set below): then
	 * it needs no fchmod(2), unless a default ACL of work/ decides the
	 * mode instead (agentfs.work_acl). */
	mode_t made = ((st->st_mode & 0777) | S_IRUSR | S_IWUSR) & ~fs->umask;
	int dst = openat(fs->work_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, made);
	if (dst < 0) {
		int r = -errno;
		close(src);
		return r;
	}
	*read_at = hashcache_clock();
	*lower_same = false;
	int r;
	if (empty) {
		r = hashcache_get(fs->hashes, src, hash);
	} else {
		r = copy_data(src, dst, st->st_size, (off_t)st->st_blocks * 512 < st->st_size,
			      hash);
		/* The hash is the lower version's if that did not change
		 * meanwhile. */
		struct stat sst;
		*lower_same = r == 0 && fstat(src, &sst) == 0 && sst.st_ino == st->st_ino &&
			      sst.st_size == st->st_size &&
			      sst.st_ctim.tv_sec == st->st_ctim.tv_sec &&
			      sst.st_ctim.tv_nsec == st->st_ctim.tv_nsec;
	}
	if (r == 0) {
		copy_xattrs(src, dst);
		struct layout_origin o = {.ino = st->st_ino, .hash = *hash};
		snprintf(o.path, sizeof(o.path), "%s", lower);
		r = layout_set_origin(dst, &o);
	}
	if (r == 0) {
		/* A new file of work/ is the daemon's (agentfs.work_uid). */
		bool chowned = false;
		if (st->st_uid != fs->work_uid || st->st_gid != fs->work_gid)
			chowned = fchown(dst, st->st_uid, st->st_gid) == 0;
		/* chown(2) clears the set-ID bits: set them again. */
		if ((chowned || fs->work_acl || (st->st_mode & 07777) != made) &&
		    fchmod(dst, st->st_mode & 07777) < 0)
			r = -errno;
		struct timespec ts[2] = {st->st_atim, st->st_mtim};
		futimens(dst, ts);
	}
	close(src);
	close(dst);
	if (r < 0)
		unlinkat(fs->work_fd, tmp, 0);
	return r;
}

/* A new name in work/ for a copy being made, into @tmp (64 bytes). */
static void tmp_name(struct agentfs *fs, char *tmp)
{
	pthread_mutex_lock(&fs->copyup_lock);
	snprintf(tmp, 64, "copyup.%d.%llu", (int)getpid(), (unsigned long long)++fs->tmp_seq);
	pthread_mutex_unlock(&fs->copyup_lock);
}

/* The regular lower file at @lower opened, its fstat in @st: the descriptor,
 * or -1 when it is not there or no longer a regular file.  O_NONBLOCK,
 * should it have become a FIFO. */
static int open_regular(struct agentfs *fs, const char *lower, struct stat *st)
{
	int src = layer_open(fs, fs->lower_fd, lower, O_RDONLY | O_NONBLOCK, 0);
	if (src >= 0 && (fstat(src, st) < 0 || !S_ISREG(st->st_mode))) {
		close(src);
		src = -1;
	}
	return src;
}

void copyup_prepare(struct agentfs *fs, struct node *n, bool empty, struct copyup_prep *p)
{
	*p = (struct copyup_prep){.empty = empty};
	pthread_rwlock_rdlock(&fs->ns_lock);
	/* Not for a file the open will refuse (policy read-only). */
	bool want =
	    !n->upper && !n->readonly && S_ISREG(n->type) && node_lower(n) && !node_unnamed(fs, n);
	char *lower = want ? strdup(node_lower(n)) : NULL;
	pthread_rwlock_unlock(&fs->ns_lock);
	if (!lower)
		return;
	/* A copy is a long request: answered beside the others. */
	fs_loop_step_aside();
	int src = open_regular(fs, lower, &p->st);
	if (src < 0) {
		free(lower);
		return;
	}
	tmp_name(fs, p->tmp);
	if (copy_file(fs, src, &p->st, lower, p->tmp, empty, &p->hash, &p->lower_same,
		      &p->read_at) < 0) {
		p->tmp[0] = 0;
		free(lower);
		return;
	}
	if (fs->copyup_delay_ms && p->st.st_size >= (1 << 20))
		usleep(fs->copyup_delay_ms * 1000u);
	p->lower = lower;
}

void copyup_prep_drop(struct agentfs *fs, struct copyup_prep *p)
{
	if (p->tmp[0])
		unlinkat(fs->work_fd, p->tmp, 0);
	p->tmp[0] = 0;
	free(p->lower);
	p->lower = NULL; /* @p->empty stays the caller's */
}

/* Whether @p is a copy of what the lower holds at @lower now, described by
 * @st: the same file, unchanged since (a change of its content, mode or
 * owner moves its ctime). */
static bool prep_fits(const struct copyup_prep *p, const char *lower, const struct stat *st)
{
	return p && p->tmp[0] && strcmp(p->lower, lower) == 0 && p->st.st_dev == st->st_dev &&
	       p->st.st_ino == st->st_ino && p->st.st_size == st->st_size &&
	       p->st.st_mtim.tv_sec == st->st_mtim.tv_sec &&
	       p->st.st_mtim.tv_nsec == st->st_mtim.tv_nsec &&
	       p->st.st_ctim.tv_sec == st->st_ctim.tv_sec &&
	       p->st.st_ctim.tv_nsec == st->st_ctim.tv_nsec;
}

static int copyup_impl(struct agentfs *fs, struct node *n, fuse_req_t req,
		       struct copyup_result *res, struct copyup_prep *prep, int *fdp);

int copyup(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_result *res)
{
	return copyup_impl(fs, n, req, res, NULL, NULL);
}

int copyup_with(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_result *res,
		struct copyup_prep *prep)
{
	return copyup_impl(fs, n, req, res, prep, NULL);
}

int copyup_open(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_result *res,
		struct copyup_prep *prep, int *fdp)
{
	*fdp = -1;
	return copyup_impl(fs, n, req, res, prep, fdp);
}

static int copyup_impl(struct agentfs *fs, struct node *n, fuse_req_t req,
		       struct copyup_result *res, struct copyup_prep *prep, int *fdp)
{
	if (res)
		res->copied = false;
	if (n->upper)
		return 0;
	if (S_ISDIR(n->type))
		return copyup_dir(fs, n);
	if (!node_lower(n))
		return -ENOENT;
	int r = copyup_dir(fs, n->parent);
	if (r < 0)
		return r;
	char path[FS_PATH_MAX];
	if ((r = node_path(n, path, sizeof(path))) < 0)
		return r;
	/* What the lower holds now.  A file the lookup found regular is opened
	 * at once and its fstat(2) tells (one system call where a stat of the
	 * path takes three). */
	struct stat st;
	int src = S_ISREG(n->type) ? open_regular(fs, node_lower(n), &st) : -1;
	if (src < 0 && (r = layer_stat(fs, fs->lower_fd, node_lower(n), &st)) < 0)
		return r;
	const char *leaf;
	int pfd = upper_open_parent(fs, path, &leaf);
	if (pfd < 0) {
		if (src >= 0)
			close(src);
		return pfd;
	}
	XXH128_hash_t hash = {0, 0};
	bool hashed = false, link_hashed = false, lower_same = false;
	bool empty = prep && prep->empty;
	if (S_ISREG(st.st_mode)) {
		char tmp[64];
		struct timespec read_at;
		if (src >= 0 && prep_fits(prep, node_lower(n), &st)) {
			/* Copied before the lock (copyup_prepare). */
			close(src);
			memcpy(tmp, prep->tmp, sizeof(tmp));
			prep->tmp[0] = 0;
			hash = prep->hash;
			lower_same = prep->lower_same;
			read_at = prep->read_at;
		} else {
			/* A copy made ahead that no longer fits takes no room
			 * beside the new one. */
			if (prep)
				copyup_prep_drop(fs, prep);
			tmp_name(fs, tmp);
			if (src < 0 &&
			    (src = layer_open(fs, fs->lower_fd, node_lower(n), O_RDONLY, 0)) < 0) {
				close(pfd);
				return src;
			}
			r = copy_file(fs, src, &st, node_lower(n), tmp, empty, &hash, &lower_same,
				      &read_at);
			if (r < 0) {
				close(pfd);
				goto failed;
			}
		}
		hashed = true;
		/* The caller's descriptor of the copy, before it shows: an
		 * open that cannot be made leaves the view as it was. */
		if (fdp && (*fdp = openat(fs->work_fd, tmp, O_RDWR | O_NOFOLLOW | O_CLOEXEC)) < 0) {
			r = -errno;
			unlinkat(fs->work_fd, tmp, 0);
			close(pfd);
			goto failed;
		}
		if (renameat(fs->work_fd, tmp, pfd, leaf) < 0) {
			int granted = -1;
			r = -errno;
			if (r == -EACCES && (granted = upper_dir_grant(pfd)) >= 0)
				r = renameat(fs->work_fd, tmp, pfd, leaf) < 0 ? -errno : 0;
			upper_dir_restore(pfd, granted);
		}
		if (r < 0) {
			unlinkat(fs->work_fd, tmp, 0);
			if (fdp && *fdp >= 0) {
				close(*fdp);
				*fdp = -1;
			}
		}
		if (r == 0) {
			/* Later opens of the lower version find its hash without
			 * reading it again.  Not the upper copy's: its stamps are
			 * this moment's, so it is racily clean (hashcache_put) until
			 * the next tick; the caller that copies to write gets the
			 * hash through @res. */
			if (lower_same)
				hashcache_put(fs->hashes, &st, hash, &read_at);
			if (fs->cfg->git_copied_up)
				fs->cfg->git_copied_up(fs->cfg->git_prepare_arg, node_lower(n));
		}
	} else if (S_ISLNK(st.st_mode)) {
		char target[FS_PATH_MAX];
		int lfd;
		const char *lleaf;
		lfd = layer_open_parent(fs, fs->lower_fd, node_lower(n), &lleaf);
		ssize_t len = lfd >= 0 ? readlinkat(lfd, lleaf, target, sizeof(target) - 1) : -1;
		if (lfd >= 0)
			close(lfd);
		if (len < 0) {
			close(pfd);
			return lfd < 0 ? lfd : -errno;
		}
		target[len] = 0;
		/* Decided again on the bytes copied: the person may have
		 * retargeted the link since the agent looked it up. */
		if (policy_symlinks_mode(fs->policy) == POLICY_SYMLINKS_HIDE &&
		    policy_symlink_target_unsafe(fs->policy, fs->lower_fd, node_lower(n), target)) {
			close(pfd);
			return -ENOENT;
		}
		int granted = -1;
		r = symlinkat(target, pfd, leaf) < 0 ? -errno : 0;
		if (r == -EACCES && (granted = upper_dir_grant(pfd)) >= 0)
			r = symlinkat(target, pfd, leaf) < 0 ? -errno : 0;
		upper_dir_restore(pfd, granted);
		if (r == 0) {
			/* A symlink's content, for the journal, is its target. */
			hash = XXH3_128bits(target, (size_t)len);
			link_hashed = true;
			(void)!fchownat(pfd, leaf, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
			struct timespec ts[2] = {st.st_atim, st.st_mtim};
			utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW);
		}
	} else {
		int granted = -1;
		r = mknodat(pfd, leaf, st.st_mode, st.st_rdev) < 0 ? -errno : 0;
		if (r == -EACCES && (granted = upper_dir_grant(pfd)) >= 0)
			r = mknodat(pfd, leaf, st.st_mode, st.st_rdev) < 0 ? -errno : 0;
		upper_dir_restore(pfd, granted);
	}
	close(pfd);
failed:
	if (r < 0) {
		/* A copy-up that failed (ENOSPC, EDQUOT) is evidence too. */
		struct journal_event ev = {
		    .op = JOP_COPYUP, .result = r, .path = path, .path2 = node_lower(n)};
		fs_record_ev(fs, req, &ev);
		return r;
	}
	n->upper = true;
	if (S_ISREG(st.st_mode))
		handles_follow_copyup(fs, n, path);
	if (res) {
		res->copied = hashed;
		res->hash = hash;
	}
	/* An empty copy's content is the empty file's (journal/SCHEMA.md). */
	bool copied_empty = hashed && empty;
	struct journal_event ev = {
	    .op = JOP_COPYUP,
	    .path = path,
	    .path2 = node_lower(n),
	    .bytes = copied_empty ? 0 : (uint64_t)st.st_size,
	    .has_hash_before = hashed || link_hashed,
	    .hash_before = hash,
	    .has_hash_after = copied_empty,
	    .hash_after = copied_empty ? XXH3_128bits("", 0) : hash,
	};
	fs_record_ev(fs, req, &ev);
	return 0;
}

int origin_of_lower(struct agentfs *fs, const char *lpath, bool with_ino, struct layout_origin *o)
{
	int lfd = layer_open(fs, fs->lower_fd, lpath, O_RDONLY, 0);
	if (lfd < 0)
		return lfd;
	struct stat st;
	int r = fstat(lfd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
	if (r == 0)
		r = hashcache_get(fs->hashes, lfd, &o->hash);
	close(lfd);
	if (r < 0)
		return r;
	o->ino = with_ino ? st.st_ino : 0;
	snprintf(o->path, sizeof(o->path), "%s", lpath);
	return 0;
}

int origin_from_lower(struct agentfs *fs, int fd, const char *lpath, bool with_ino)
{
	struct layout_origin o;
	if (layout_get_origin(fd, &o) != 0)
		return 0; /* it has one already (or cannot say): keep it */
	int r = origin_of_lower(fs, lpath, with_ino, &o);
	if (r < 0)
		return r == -EINVAL ? 0 : r;
	r = layout_set_origin(fd, &o);
	if (r == 0 && fs->cfg->git_copied_up)
		fs->cfg->git_copied_up(fs->cfg->git_prepare_arg, lpath);
	return r;
}

bool file_lives_on(struct agentfs *fs, struct node *n, const struct stat *st)
{
	if (st->st_nlink > 1)
		return true;
	if (!n)
		return false;
	pthread_mutex_lock(&fs->table_lock);
	bool open = n->handles != NULL;
	pthread_mutex_unlock(&fs->table_lock);
	return open;
}

int origin_of_upper(int dirfd, const char *name, struct layout_origin *o)
{
	return layout_get_origin_at(dirfd, name, o) == 1 ? 1 : 0;
}

int upper_dir_grant(int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if ((st.st_mode & S_IRWXU) == S_IRWXU)
		return -EACCES; /* not the mode, then: nothing to lift */
	mode_t mode = st.st_mode & 07777;
	if (fchmod(fd, mode | S_IRWXU) < 0) {
		/* An O_PATH descriptor takes no fchmod(2); its /proc link does. */
		char p[64];
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		if (errno != EBADF || chmod(p, mode | S_IRWXU) < 0)
			return -errno;
	}
	return (int)mode;
}

void upper_dir_restore(int fd, int mode)
{
	if (mode < 0)
		return;
	if (fchmod(fd, (mode_t)mode) < 0 && errno == EBADF) {
		char p[64];
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		(void)!chmod(p, (mode_t)mode);
	}
}

/* upper_rmdir() with @dfd the directory (read, search and write allowed). */
static int rmdir_markers(int parentfd, const char *name, int dfd)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		int r = -errno;
		close(dfd);
		return r;
	}
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!layout_is_reserved(de->d_name)) {
			r = -ENOTEMPTY;
			break;
		}
		if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
			r = -errno;
			break;
		}
	}
	closedir(d);
	if (r == 0 && unlinkat(parentfd, name, AT_REMOVEDIR) < 0)
		r = -errno;
	return r;
}

int upper_rmdir(struct agentfs *fs, int parentfd, const char *name)
{
	/* The directory's own mode does not matter to rmdir(2), but reading
	 * it and removing its whiteouts does: a directory the agent made
	 * 000, 300 or 500 is opened with the owner's rwx lifted for the
	 * removal (upper_dir_grant), and gets its mode back if it stays. */
	int pfd = openat(parentfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	int granted = -1;
	struct stat st;
	if (fstat(pfd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU &&
	    faccessat(pfd, ".", R_OK | W_OK | X_OK, AT_EACCESS) < 0 && errno == EACCES)
		granted = upper_dir_grant(pfd);
	int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = dfd < 0 ? -errno : rmdir_markers(parentfd, name, dfd);
	if (r < 0)
		upper_dir_restore(pfd, granted);
	else
		dircache_forget(fs); /* it, and any directory below it */
	close(pfd);
	return r;
}
