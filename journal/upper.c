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

struct walker {
	journal_upper_fn fn;
	journal_marker_fn mfn; /* or NULL */
	void *arg;
};

/* The markers directory @dirfd at view path @path carries itself: the opaque
 * flag, a redirect (layout.h). */
static int dir_markers(const struct walker *w, int dirfd, const char *path)
{
	/* Whatever it holds: one too long to read (ERANGE) is a redirect too. */
	char red[PATH_MAX];
	int r = layout_get_redirect(dirfd, red, sizeof(red));
	if (r > 0 || r == -ERANGE)
		r = w->mfn(w->arg, path, NULL, JOURNAL_MARK_REDIRECT);
	else if (r == -EACCES)
		r = 0;
	if (r < 0)
		return r;
	int op = layout_is_opaque(dirfd);
	if (op > 0)
		return w->mfn(w->arg, path, NULL, JOURNAL_MARK_OPAQUE);
	return op == -EACCES || op == -ERANGE ? 0 : op;
}

/* A whiteout ".wh.NAME" (or ".wh..h.HEX") in directory @path: reported with
 * the view path it hides, @path/NAME, and for the hashed form HEX too. */
static int whiteout_marker(const struct walker *w, char *path, size_t plen, const char *name)
{
	const char *leaf = name + LAYOUT_WH_PREFIX_LEN;
	size_t nl = strlen(leaf);
	if (plen + nl + 2 > PATH_MAX)
		return -ENAMETOOLONG;
	size_t np = plen;
	if (plen)
		path[np++] = '/';
	memcpy(path + np, leaf, nl + 1);
	size_t hl = strlen(LAYOUT_WH_HASHED);
	const char *hashed = strncmp(leaf, LAYOUT_WH_HASHED, hl) == 0 ? leaf + hl : NULL;
	int r = w->mfn(w->arg, path, hashed, JOURNAL_MARK_WHITEOUT);
	path[plen] = 0;
	return r;
}

static int walk(const struct walker *w, int dirfd, char *path, size_t plen)
{
	if (w->mfn) {
		int r = dir_markers(w, dirfd, path);
		if (r < 0) {
			close(dirfd);
			return r;
		}
	}
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
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (layout_is_reserved(name)) {
			if (w->mfn)
				r = whiteout_marker(w, path, plen, name);
			continue;
		}
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
				r = walk(w, sub, path, np + nl);
			else if (errno == EACCES)
				r = w->fn(w->arg, path, dirfd, name,
					  &st); /* a mode the agent set */
			else if (errno != ENOENT)
				r = -errno;
		} else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
			r = w->fn(w->arg, path, dirfd, name, &st);
		} else if (w->mfn) {
			r = w->mfn(w->arg, path, NULL, JOURNAL_MARK_SPECIAL);
		}
		path[plen] = 0;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	return r;
}

int journal_walk_upper_all(int upper_fd, journal_upper_fn fn, journal_marker_fn mfn, void *arg)
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
	struct walker w = {.fn = fn, .mfn = mfn, .arg = arg};
	int r = walk(&w, fd, path, 0);
	free(path);
	return r;
}

int journal_walk_upper(int upper_fd, journal_upper_fn fn, void *arg)
{
	return journal_walk_upper_all(upper_fd, fn, NULL, arg);
}
