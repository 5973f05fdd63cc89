/*
 * hidden_copies.c - the agent's copies of repository files that a policy
 * newly hides (hidden_copies.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/hidden_copies.h"
#include "fs/layout.h"
#include "policy/policy.h"

/* Deeper than any path that fits PATH_MAX can go. */
#define MAX_DEPTH 2048

struct walk {
	int lower_fd;
	const struct policy *before, *now;
	struct strvec *out;
	char *where;
	size_t where_len;
};

/* Whether @now hides @path (a file of @size bytes) and @before did not. */
static bool newly_hidden(const struct walk *w, const char *path, uint64_t size)
{
	if (policy_decide_path(w->now, path, false, size) != POLICY_HIDDEN)
		return false;
	return !w->before || policy_decide_path(w->before, path, false, size) != POLICY_HIDDEN;
}

/* "@dir/@name" (or @name at the top) into @buf; -ENAMETOOLONG. */
static int join(char *buf, size_t len, const char *dir, const char *name)
{
	int n = *dir ? snprintf(buf, len, "%s/%s", dir, name) : snprintf(buf, len, "%s", name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* @name, a directory of @dfd, opened for reading; one the agent made
 * unreadable gets its owner's rwx for the open and its mode back (*@mode, or
 * -1 when unchanged, for restore_dir). */
static int open_dir(int dfd, const char *name, int *mode)
{
	*mode = -1;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 || errno != EACCES)
		return fd < 0 ? -errno : fd;
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
	    fchmodat(dfd, name, (st.st_mode & 07777) | S_IRWXU, 0) < 0)
		return -EACCES;
	*mode = (int)(st.st_mode & 07777);
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static void restore_dir(int dfd, const char *name, int mode)
{
	if (mode >= 0)
		(void)fchmodat(dfd, name, (mode_t)mode, 0);
}

/* Walk upper directory @dfd at view path @vpath, whose lower entries come
 * from the lower path @lpath (NULL: none, an opaque directory). */
static int walk_dir(struct walk *w, int dfd, const char *vpath, const char *lpath, int depth)
{
	if (depth > MAX_DEPTH)
		return -ELOOP;
	int dup_fd = dup(dfd);
	if (dup_fd < 0)
		return -errno;
	DIR *d = fdopendir(dup_fd);
	if (!d) {
		int r = -errno;
		close(dup_fd);
		return r;
	}
	int r = 0;
	struct dirent *de;
	char vp[PATH_MAX], lp[PATH_MAX];
	while (r == 0 && (errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || layout_is_reserved(name))
			continue;
		struct stat st;
		if ((r = join(vp, sizeof(vp), vpath, name)) < 0)
			break;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = errno == ENOENT ? 0 : -errno;
			continue;
		}
		bool has_lower = lpath && join(lp, sizeof(lp), lpath, name) == 0;
		if (S_ISDIR(st.st_mode)) {
			int mode;
			int fd = open_dir(dfd, name, &mode);
			if (fd < 0) {
				r = fd;
				break;
			}
			/* Where its lower entries come from (fs/layout.h). */
			char redirect[PATH_MAX];
			int rl = layout_get_redirect(fd, redirect, sizeof(redirect));
			const char *sub = rl > 0		      ? redirect
					  : layout_is_opaque(fd) == 1 ? NULL
					  : has_lower		      ? lp
								      : NULL;
			r = walk_dir(w, fd, vp, sub, depth + 1);
			close(fd);
			restore_dir(dfd, name, mode);
			continue;
		}
		if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
			continue;
		/* A copy of the lower file its origin names, or a file written
		 * over a lower file now hidden at its own place (sed -i, an
		 * editor's save by rename: no origin, the person's bytes
		 * changed). */
		struct layout_origin o;
		bool hit = S_ISREG(st.st_mode) && layout_get_origin_at(dfd, name, &o) == 1 &&
			   newly_hidden(w, o.path, (uint64_t)st.st_size);
		struct stat lst;
		if (!hit && has_lower && newly_hidden(w, lp, (uint64_t)st.st_size) &&
		    fstatat(w->lower_fd, lp, &lst, AT_SYMLINK_NOFOLLOW) == 0)
			hit = true;
		if (hit && strvec_push(w->out, vp) < 0)
			r = -ENOMEM;
	}
	if (r == 0 && errno != 0)
		r = -errno;
	if (r < 0 && w->where && !*w->where)
		snprintf(w->where, w->where_len, "%s", *vpath ? vpath : ".");
	closedir(d);
	return r;
}

int hidden_copies_find(int upper_fd, int lower_fd, const struct policy *before,
		       const struct policy *now, struct strvec *out, char *where, size_t where_len)
{
	if (where && where_len)
		*where = 0;
	struct walk w = {.lower_fd = lower_fd,
			 .before = before,
			 .now = now,
			 .out = out,
			 .where = where_len ? where : NULL,
			 .where_len = where_len};
	return walk_dir(&w, upper_fd, "", "", 0);
}
