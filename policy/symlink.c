/* symlink.c - the `symlinks: hide` rule: where a lower symlink leads (symlink.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "policy/policy.h"
#include "policy/symlink.h"

/* Open the directory @dir ("" for the top) below @root without following a
 * symlink: openat2 where the kernel has it, else component by component. */
static int open_dir_below(int root, const char *dir)
{
	if (!*dir)
		return openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct open_how how = {
	    .flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, root, dir, &how, sizeof(how));
	if (fd >= 0 || errno != ENOSYS)
		return (int)fd;
	int dfd = openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (const char *p = dir; dfd >= 0 && *p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		char name[NAME_MAX + 1];
		if (n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.')) {
			close(dfd);
			return -1;
		}
		memcpy(name, p, n);
		name[n] = 0;
		int next = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dfd);
		dfd = next;
		p = slash ? slash + 1 : p + n;
	}
	return dfd;
}

/* The directory holding @rel's last component, opened; *leaf points into @rel. */
static int open_parent(int root, const char *rel, const char **leaf)
{
	const char *slash = strrchr(rel, '/');
	char dir[PATH_MAX];
	size_t n = slash ? (size_t)(slash - rel) : 0;
	if (n >= sizeof(dir))
		return -1;
	memcpy(dir, rel, n);
	dir[n] = 0;
	*leaf = slash ? slash + 1 : rel;
	return open_dir_below(root, dir);
}

/* readlink of @rel below @root into @buf (NUL-terminated); false if it is no
 * readable symlink, or its target is empty or does not fit. */
static bool read_link(int root, const char *rel, char *buf, size_t len)
{
	const char *leaf;
	int dfd = open_parent(root, rel, &leaf);
	if (dfd < 0)
		return false;
	ssize_t n = readlinkat(dfd, leaf, buf, len - 1);
	close(dfd);
	if (n <= 0 || (size_t)n >= len - 1)
		return false;
	buf[n] = 0;
	return true;
}

bool policy_symlink_unsafe(const struct policy *p, int lower_fd, const char *lpath)
{
	char target[PATH_MAX];
	if (!read_link(lower_fd, lpath, target, sizeof(target)))
		return true;
	return policy_symlink_target_unsafe(p, lower_fd, lpath, target);
}

bool policy_symlink_target_unsafe(const struct policy *p, int lower_fd, const char *lpath,
				  const char *target)
{
	char cur[PATH_MAX];	    /* the resolved prefix, a lower path */
	char pending[2 * PATH_MAX]; /* components still to resolve */
	if (!target[0] || target[0] == '/' || strlen(target) >= PATH_MAX)
		return true;
	/* Start in the link's own directory. */
	const char *slash = strrchr(lpath, '/');
	size_t dl = slash ? (size_t)(slash - lpath) : 0;
	if (dl >= sizeof(cur))
		return true;
	memcpy(cur, lpath, dl);
	cur[dl] = 0;
	memcpy(pending, target, strlen(target) + 1);
	int hops = 0;
	char *q = pending;
	while (*q) {
		char *s = strchr(q, '/');
		if (s)
			*s = 0;
		char *comp = q;
		q = s ? s + 1 : q + strlen(q);
		if (!*comp || strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			if (!cur[0])
				return true; /* above the top: out of the repository */
			char *up = strrchr(cur, '/');
			if (up)
				*up = 0;
			else
				cur[0] = 0;
			continue;
		}
		char next[PATH_MAX];
		if ((size_t)snprintf(next, sizeof(next), "%s%s%s", cur, *cur ? "/" : "", comp) >=
		    sizeof(next))
			return true;
		const char *leaf;
		struct stat st;
		int d = open_parent(lower_fd, next, &leaf);
		bool exists = d >= 0 && fstatat(d, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0;
		if (d >= 0)
			close(d);
		/* A missing component is a directory when more follow. */
		bool is_dir = exists ? S_ISDIR(st.st_mode) : *q != 0;
		if (policy_decide_path(p, next, is_dir,
				       exists ? policy_size(st.st_mode, (uint64_t)st.st_size)
					      : 0) == POLICY_HIDDEN)
			return true;
		if (exists && S_ISLNK(st.st_mode)) {
			char t2[PATH_MAX];
			if (++hops > 40 || !read_link(lower_fd, next, t2, sizeof(t2)) ||
			    t2[0] == '/')
				return true;
			/* Resolve the link's target, then what remained after it. */
			char rest[2 * PATH_MAX];
			if ((size_t)snprintf(rest, sizeof(rest), "%s/%s", t2, q) >= sizeof(rest))
				return true;
			memcpy(pending, rest, strlen(rest) + 1);
			q = pending;
			continue;
		}
		memcpy(cur, next, strlen(next) + 1);
	}
	return false;
}
