/*
 * upper.c - walking the upper's regular files and symlinks, for crash recovery
 * and verify.
 *
 * Only *at() calls with O_NOFOLLOW: the upper is written by the agent, and a
 * symlink in it must not lead the walk elsewhere.  A symlink is checked as
 * itself: its content is its target (readlinkat), as the journal records it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/layout.h"
#include "journal/internal.h"

int journal_hash_at(int dirfd, const char *name, const struct stat *st, XXH128_hash_t *out)
{
	if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
		if (n < 0)
			return -errno;
		if ((size_t)n == sizeof(target))
			return -ENAMETOOLONG;
		*out = XXH3_128bits(target, (size_t)n);
		return 0;
	}
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	int r = layout_hash_fd(fd, out);
	close(fd);
	return r;
}

static int walk(int dirfd, char *path, size_t plen, journal_upper_fn fn, void *arg)
{
	DIR *d = fdopendir(dirfd);
	if (!d) {
		int e = -errno;
		close(dirfd);
		return e;
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || layout_is_reserved(name))
			continue;
		size_t nl = strlen(name);
		if (plen + nl + 2 > PATH_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		size_t np = plen;
		if (plen)
			path[np++] = '/';
		memcpy(path + np, name, nl + 1);
		struct stat st;
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				r = -errno;
		} else if (S_ISDIR(st.st_mode)) {
			int sub =
			    openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				r = walk(sub, path, np + nl, fn, arg);
			else if (errno == EACCES)
				r = fn(arg, path, dirfd, name, &st); /* a mode the agent set */
			else if (errno != ENOENT)
				r = -errno;
		} else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
			r = fn(arg, path, dirfd, name, &st);
		}
		path[plen] = 0;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	return r;
}

int journal_walk_upper(int upper_fd, journal_upper_fn fn, void *arg)
{
	int fd = openat(upper_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char *path = malloc(PATH_MAX);
	if (!path) {
		close(fd);
		return -ENOMEM;
	}
	path[0] = 0;
	int r = walk(fd, path, 0, fn, arg);
	free(path);
	return r;
}
