/*
 * resolve.c - reaching paths of the lower and the upper without ever
 * following a symlink out of them.
 *
 * Every path the daemon opens is relative to a layer's directory fd.  With
 * openat2(2) (Linux 5.6) RESOLVE_BENEATH refuses ".." escapes and absolute
 * paths, RESOLVE_NO_SYMLINKS refuses any symlink component (the final one
 * too, unless O_PATH|O_NOFOLLOW), RESOLVE_NO_MAGICLINKS refuses /proc-style
 * links.  Where openat2 is missing (older kernels, valgrind) the same rules
 * hold by walking component by component with O_NOFOLLOW|O_DIRECTORY and
 * refusing "", "." and ".." components.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs/internal.h"

static int walk_open(int rootfd, const char *rel, int flags, mode_t mode)
{
	char buf[FS_PATH_MAX];
	size_t len = strlen(rel);
	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, rel, len + 1);
	int dirfd = rootfd;
	char *p = buf;
	for (;;) {
		char *slash = strchr(p, '/');
		if (slash)
			*slash = 0;
		if (!*p || strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
			if (dirfd != rootfd)
				close(dirfd);
			return -EINVAL;
		}
		int fd;
		if (slash)
			fd = openat(dirfd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		else
			fd = openat(dirfd, p, flags | O_NOFOLLOW | O_CLOEXEC, mode);
		int err = errno;
		if (dirfd != rootfd)
			close(dirfd);
		if (fd < 0)
			return -err;
		if (!slash)
			return fd;
		dirfd = fd;
		p = slash + 1;
	}
}

int layer_open(struct agentfs *fs, int rootfd, const char *rel, int flags, mode_t mode)
{
	if (!rel[0]) {
		int fd = openat(rootfd, ".", (flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	if (fs->use_openat2) {
		struct open_how how = {
		    .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
		    .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
		    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
		};
		long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != ENOSYS)
			return errno == ELOOP && !(flags & O_PATH) ? -ELOOP : -errno;
		fs->use_openat2 = false;
	}
	return walk_open(rootfd, rel, flags, mode);
}

int layer_open_parent(struct agentfs *fs, int rootfd, const char *path, const char **leaf)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		*leaf = path;
		int fd = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	char dir[FS_PATH_MAX];
	size_t n = (size_t)(slash - path);
	if (n >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, n);
	dir[n] = 0;
	*leaf = slash + 1;
	/* O_PATH: the parent serves *at() calls only, and a directory the
	 * agent made 300 (search and write, no read) must still serve them. */
	return layer_open(fs, rootfd, dir, O_PATH | O_DIRECTORY, 0);
}

int layer_stat(struct agentfs *fs, int rootfd, const char *rel, struct stat *st)
{
	if (!rel[0])
		return fstat(rootfd, st) < 0 ? -errno : 0;
	const char *leaf;
	int dfd = layer_open_parent(fs, rootfd, rel, &leaf);
	if (dfd < 0)
		return dfd;
	int r = fstatat(dfd, leaf, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	close(dfd);
	return r;
}

/* ".git" or ".git/..." while a private .git is served: *rel gets the rest. */
static bool git_path(struct agentfs *fs, const char *path, const char **rel)
{
	if (fs->git_fd < 0 || strncmp(path, ".git", 4) != 0 || (path[4] && path[4] != '/'))
		return false;
	*rel = path[4] ? path + 5 : "";
	return true;
}

bool is_git_root(struct agentfs *fs, const struct node *dir, const char *name)
{
	return fs->git_fd >= 0 && dir == &fs->root && strcmp(name, ".git") == 0;
}

bool git_building_root(struct agentfs *fs, const struct node *n)
{
	if (__atomic_load_n(&fs->git_ready, __ATOMIC_ACQUIRE))
		return false;
	uint64_t id = __atomic_load_n(&fs->git_root_id, __ATOMIC_ACQUIRE);
	return id != 0 && n && (uint64_t)n->id == id;
}

int upper_open(struct agentfs *fs, const char *path, int flags, mode_t mode)
{
	const char *rel;
	if (git_path(fs, path, &rel))
		return layer_open(fs, fs->git_fd, rel, flags, mode);
	return layer_open(fs, fs->upper_fd, path, flags, mode);
}

int upper_open_parent(struct agentfs *fs, const char *path, const char **leaf)
{
	const char *rel;
	if (git_path(fs, path, &rel)) {
		if (!rel[0])
			return -EBUSY;
		return layer_open_parent(fs, fs->git_fd, rel, leaf);
	}
	return layer_open_parent(fs, fs->upper_fd, path, leaf);
}

bool git_is_ready(struct agentfs *fs)
{
	pthread_mutex_lock(&fs->git_lock);
	bool ready = fs->git_ready;
	pthread_mutex_unlock(&fs->git_lock);
	return ready;
}

void git_wait(struct agentfs *fs)
{
	if (fs->git_fd < 0)
		return;
	pthread_mutex_lock(&fs->git_lock);
	while (!fs->git_ready)
		pthread_cond_wait(&fs->git_cond, &fs->git_lock);
	pthread_mutex_unlock(&fs->git_lock);
}
