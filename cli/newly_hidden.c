/*
 * newly_hidden.c - what a new policy would hide that a workspace's agent could
 * already see (newly_hidden.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/newly_hidden.h"
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
	int error; /* the git walk's */
};

/* Whether @now hides @path (a file of @size bytes, or a directory) and
 * @before did not. */
static bool newly(const struct walk *w, const char *path, bool is_dir, uint64_t size)
{
	if (policy_decide_path(w->now, path, is_dir, size) != POLICY_HIDDEN)
		return false;
	return !w->before || policy_decide_path(w->before, path, is_dir, size) != POLICY_HIDDEN;
}

/* Whether @before hid @path already: the agent never saw it, or below it. */
static bool hidden_before(const struct walk *w, const char *path, bool is_dir, uint64_t size)
{
	return w->before && policy_decide_path(w->before, path, is_dir, size) == POLICY_HIDDEN;
}

static int report(struct walk *w, const char *path, bool is_dir)
{
	return (is_dir ? strvec_pushf(w->out, "%s/", path) : strvec_push(w->out, path)) < 0
		   ? -ENOMEM
		   : 0;
}

static void fail_at(struct walk *w, const char *what)
{
	if (w->where && !*w->where)
		snprintf(w->where, w->where_len, "%s", *what ? what : ".");
}

/* "@dir/@name" (or @name at the top) into @buf; -ENAMETOOLONG. */
static int join(char *buf, size_t len, const char *dir, const char *name)
{
	int n = *dir ? snprintf(buf, len, "%s/%s", dir, name) : snprintf(buf, len, "%s", name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* A DIR of @fd's directory, @fd itself kept. */
static DIR *dir_of(int fd)
{
	int d = dup(fd);
	if (d < 0)
		return NULL;
	DIR *dir = fdopendir(d);
	if (!dir)
		close(d);
	return dir;
}

/* ---- the lower ---------------------------------------------------------- */

static int walk_lower(struct walk *w, int dfd, const char *path, int depth)
{
	if (depth > MAX_DEPTH)
		return -ELOOP;
	DIR *d = dir_of(dfd);
	if (!d)
		return -errno;
	int r = 0;
	struct dirent *de;
	char p[PATH_MAX];
	while (r == 0 && (errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
		    (!*path && strcmp(name, ".git") == 0))
			continue;
		struct stat st;
		if ((r = join(p, sizeof(p), path, name)) < 0)
			break;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		bool is_dir = S_ISDIR(st.st_mode);
		uint64_t size = is_dir ? 0 : (uint64_t)st.st_size;
		if (hidden_before(w, p, is_dir, size))
			continue;
		if (newly(w, p, is_dir, size)) {
			r = report(w, p, is_dir);
			continue;
		}
		if (!is_dir)
			continue;
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue; /* unreadable: the view cannot list it either */
		r = walk_lower(w, fd, p, depth + 1);
		close(fd);
	}
	if (r == 0 && errno != 0)
		r = -errno;
	if (r < 0)
		fail_at(w, path);
	closedir(d);
	return r;
}

/* ---- the upper ---------------------------------------------------------- */

/* Lift the owner's @bits of @name in @dfd, which the agent may have taken
 * away (chmod 000): its old mode, for put_back(), or -1 when unchanged. */
static int lift(int dfd, const char *name, mode_t bits)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(st.st_mode) ||
	    (st.st_mode & bits) == bits || fchmodat(dfd, name, (st.st_mode & 07777) | bits, 0) < 0)
		return -1;
	return (int)(st.st_mode & 07777);
}

static void put_back(int dfd, const char *name, int mode)
{
	if (mode >= 0)
		(void)fchmodat(dfd, name, (mode_t)mode, 0);
}

/* Whether the upper file @name of @dfd (fstat @st) is a copy of a lower file
 * @now hides and @before did not, decided by the lower file's size where it
 * is still there, else the copy's: 1 or 0, or a negative errno. */
static int copy_newly_hidden(struct walk *w, int dfd, const char *name, const struct stat *st,
			     struct layout_origin *out)
{
	struct layout_origin o;
	int r = layout_get_origin_at(dfd, name, &o);
	if (r == -EACCES) {
		int mode = lift(dfd, name, S_IRUSR);
		r = layout_get_origin_at(dfd, name, &o);
		put_back(dfd, name, mode);
	}
	if (r == -EINVAL)
		return 0; /* not an origin agentfs wrote: no path to decide */
	if (r <= 0)
		return r;
	struct stat lst;
	uint64_t size = fstatat(w->lower_fd, o.path, &lst, AT_SYMLINK_NOFOLLOW) == 0
			    ? (uint64_t)lst.st_size
			    : (uint64_t)st->st_size;
	if (out)
		*out = o;
	return newly(w, o.path, false, size);
}

/* Walk upper directory @dfd at view path @vpath for copies (the lower walk
 * finds what the lower still holds: this finds what it no longer does). */
static int walk_upper(struct walk *w, int dfd, const char *vpath, int depth)
{
	if (depth > MAX_DEPTH)
		return -ELOOP;
	DIR *d = dir_of(dfd);
	if (!d)
		return -errno;
	int r = 0;
	struct dirent *de;
	char vp[PATH_MAX];
	while (r == 0 && (errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		struct stat st;
		if ((r = join(vp, sizeof(vp), vpath, name)) < 0)
			break;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = errno == ENOENT ? 0 : -errno;
			continue;
		}
		if (layout_is_reserved(name)) {
			/* The whiteout of a file the agent had changed keeps its
			 * origin (fs/layout.h): the copy's bytes may live on in the
			 * agent's commits.  Named by the lower path then. */
			struct layout_origin o;
			int hit = strncmp(name, LAYOUT_WH_PREFIX, LAYOUT_WH_PREFIX_LEN) == 0 &&
					  S_ISREG(st.st_mode)
				      ? copy_newly_hidden(w, dfd, name, &st, &o)
				      : 0;
			if (hit < 0)
				r = hit;
			else if (hit)
				r = report(w, o.path, false);
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			int mode = -1;
			int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0 && errno == EACCES) {
				mode = lift(dfd, name, S_IRWXU);
				fd = openat(dfd, name,
					    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			}
			if (fd < 0)
				r = -errno;
			else
				r = walk_upper(w, fd, vp, depth + 1);
			if (fd >= 0)
				close(fd);
			put_back(dfd, name, mode);
			continue;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		int hit = copy_newly_hidden(w, dfd, name, &st, NULL);
		if (hit < 0)
			r = hit;
		else if (hit)
			r = report(w, vp, false);
	}
	if (r == 0 && errno != 0)
		r = -errno;
	if (r < 0)
		fail_at(w, vpath);
	closedir(d);
	return r;
}

/* ---- the private repository's base tree ----------------------------------- */

static int tree_entry(const char *root, const git_tree_entry *e, void *arg)
{
	struct walk *w = arg;
	char p[PATH_MAX];
	int n = snprintf(p, sizeof(p), "%s%s", root, git_tree_entry_name(e));
	if (n < 0 || (size_t)n >= sizeof(p)) {
		w->error = -ENAMETOOLONG;
		return -1;
	}
	bool is_dir = git_tree_entry_type(e) == GIT_OBJECT_TREE;
	if (hidden_before(w, p, is_dir, 0))
		return 1; /* not below it either */
	if (newly(w, p, is_dir, 0)) {
		if ((w->error = report(w, p, is_dir)) < 0)
			return -1;
		return 1;
	}
	return 0;
}

static int walk_tree(struct walk *w, const char *git_dir, const char *tree_hex)
{
	git_repository *repo = NULL;
	git_tree *tree = NULL;
	git_oid id;
	int r = 0;
	if (git_oid_fromstrn(&id, tree_hex, strlen(tree_hex)) < 0 ||
	    git_repository_open_bare(&repo, git_dir) < 0 || git_tree_lookup(&tree, repo, &id) < 0)
		r = -EIO;
	else if (git_tree_walk(tree, GIT_TREEWALK_PRE, tree_entry, w) < 0)
		r = w->error ? w->error : -EIO;
	if (r < 0)
		fail_at(w, "the private .git's base tree");
	git_tree_free(tree);
	git_repository_free(repo);
	return r;
}

/* ---- all of them -------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int newly_hidden_find(int lower_fd, int upper_fd, const char *git_dir, const char *tree,
		      const struct policy *before, const struct policy *now, struct strvec *out,
		      char *where, size_t where_len)
{
	if (where && where_len)
		*where = 0;
	struct walk w = {.lower_fd = lower_fd,
			 .before = before,
			 .now = now,
			 .out = out,
			 .where = where_len ? where : NULL,
			 .where_len = where_len};
	size_t first = out->n;
	int r = walk_lower(&w, lower_fd, "", 0);
	if (r == 0)
		r = walk_upper(&w, upper_fd, "", 0);
	if (r == 0 && git_dir)
		r = walk_tree(&w, git_dir, tree);
	/* Sorted, each once (the lower and the base tree name most alike). */
	if (out->n > first) {
		qsort(out->v + first, out->n - first, sizeof(*out->v), cmp_str);
		size_t k = first;
		for (size_t i = first; i < out->n; i++) {
			if (k > first && strcmp(out->v[k - 1], out->v[i]) == 0)
				free(out->v[i]);
			else
				out->v[k++] = out->v[i];
		}
		for (size_t i = k; i < out->n; i++)
			out->v[i] = NULL;
		out->n = k;
	}
	return r;
}
