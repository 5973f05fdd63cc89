/*
 * layers.h - build lower and upper trees by hand for the change-set and patch
 * tests, in the upper's on-disk format (fs/layout.h), and compare trees.
 *
 * Every helper fails the running Check test on error.  Paths are relative to a
 * root directory given first.
 */
#ifndef AGENTFS_TEST_LAYERS_H
#define AGENTFS_TEST_LAYERS_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/layout.h"

static inline char *lay_join(const char *root, const char *rel)
{
	char *p;
	ck_assert_int_ge(asprintf(&p, "%s/%s", root, rel), 0);
	return p;
}

/* mkdir -p of @rel's parent directories below @root. */
static inline void lay_parents(const char *root, const char *rel)
{
	char *p = lay_join(root, rel);
	for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')); s++) {
		*s = 0;
		if (mkdir(p, 0755) < 0)
			ck_assert_int_eq(errno, EEXIST);
		*s = '/';
	}
	free(p);
}

static inline void lay_dir(const char *root, const char *rel)
{
	lay_parents(root, rel);
	char *p = lay_join(root, rel);
	if (mkdir(p, 0755) < 0)
		ck_assert_int_eq(errno, EEXIST);
	free(p);
}

static inline void lay_bytes(const char *root, const char *rel, const void *buf, size_t len,
			     mode_t mode)
{
	lay_parents(root, rel);
	char *p = lay_join(root, rel);
	struct stat st;
	if (lstat(p, &st) == 0 && !S_ISREG(st.st_mode))
		unlink(p); /* a regular file is rewritten in place: it keeps its xattrs */
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode);
	ck_assert_msg(fd >= 0, "open %s: %s", p, strerror(errno));
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	ck_assert_int_eq(fchmod(fd, mode), 0);
	close(fd);
	free(p);
}

static inline void lay_file(const char *root, const char *rel, const char *text)
{
	lay_bytes(root, rel, text, strlen(text), 0644);
}

static inline void lay_exec(const char *root, const char *rel, const char *text)
{
	lay_bytes(root, rel, text, strlen(text), 0755);
}

static inline void lay_link(const char *root, const char *rel, const char *target)
{
	lay_parents(root, rel);
	char *p = lay_join(root, rel);
	unlink(p);
	ck_assert_int_eq(symlink(target, p), 0);
	free(p);
}

static inline void lay_rm(const char *root, const char *rel)
{
	char *p = lay_join(root, rel);
	ck_assert_int_eq(unlink(p), 0);
	free(p);
}

static inline void lay_chmod(const char *root, const char *rel, mode_t mode)
{
	char *p = lay_join(root, rel);
	ck_assert_int_eq(chmod(p, mode), 0);
	free(p);
}

static inline void lay_rmdir(const char *root, const char *rel)
{
	char *p = lay_join(root, rel);
	ck_assert_int_eq(rmdir(p), 0);
	free(p);
}

/* Does @rel exist below @root (lstat)? */
static inline bool lay_exists(const char *root, const char *rel)
{
	char *p = lay_join(root, rel);
	struct stat st;
	bool e = lstat(p, &st) == 0;
	free(p);
	return e;
}

static inline int lay_open(const char *root, const char *rel, int flags)
{
	char *p = lay_join(root, rel);
	int fd = open(p, flags);
	ck_assert_msg(fd >= 0, "open %s: %s", p, strerror(errno));
	free(p);
	return fd;
}

/* Wait until the clock that stamps files in directory @dir has moved on: what
 * is built next bears a later time than what was built before, as the agent's
 * changes come after the lower files they change (the change set takes a lower
 * entry stamped at or after the agent's deletion, or the agent's file made in
 * its place, for the person's later work: a conflict). */
static inline void lay_tick(const char *dir)
{
	char *p = lay_join(dir, ".lay-tick");
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_msg(fd >= 0, "open %s: %s", p, strerror(errno));
	struct stat a, b;
	ck_assert_int_eq(fstat(fd, &a), 0);
	do {
		usleep(500);
		ck_assert_int_eq(write(fd, "x", 1), 1);
		ck_assert_int_eq(fstat(fd, &b), 0);
	} while (b.st_ctim.tv_sec == a.st_ctim.tv_sec && b.st_ctim.tv_nsec == a.st_ctim.tv_nsec);
	close(fd);
	ck_assert_int_eq(unlink(p), 0);
	free(p);
}

/* Whiteout for @name in upper directory @dir ("" for the root). */
static inline void lay_whiteout(const char *upper, const char *dir, const char *name)
{
	lay_dir(upper, *dir ? dir : ".");
	int fd = lay_open(upper, *dir ? dir : ".", O_RDONLY | O_DIRECTORY);
	ck_assert_int_eq(layout_make_whiteout(fd, name), 0);
	close(fd);
}

static inline void lay_opaque(const char *upper, const char *dir)
{
	lay_dir(upper, dir);
	int fd = lay_open(upper, dir, O_RDONLY | O_DIRECTORY);
	ck_assert_int_eq(layout_set_opaque(fd), 0);
	close(fd);
}

static inline void lay_redirect(const char *upper, const char *dir, const char *lower_path)
{
	lay_dir(upper, dir);
	int fd = lay_open(upper, dir, O_RDONLY | O_DIRECTORY);
	ck_assert_int_eq(layout_set_redirect(fd, lower_path), 0);
	close(fd);
}

/* Copy-up as fs/ does it: copy lower @lpath to upper @upath (bytes and mode) and
 * record the origin (inode, hash, path) of the lower file. */
static inline void lay_copyup(const char *lower, const char *lpath, const char *upper,
			      const char *upath)
{
	int lfd = lay_open(lower, lpath, O_RDONLY);
	struct stat st;
	ck_assert_int_eq(fstat(lfd, &st), 0);
	char *buf = malloc((size_t)st.st_size + 1);
	ck_assert_int_eq(pread(lfd, buf, (size_t)st.st_size, 0), st.st_size);
	struct layout_origin o = {.ino = st.st_ino};
	ck_assert_int_eq(layout_hash_fd(lfd, &o.hash), 0);
	snprintf(o.path, sizeof(o.path), "%s", lpath);
	close(lfd);
	lay_bytes(upper, upath, buf, (size_t)st.st_size, st.st_mode & 07777);
	free(buf);
	int ufd = lay_open(upper, upath, O_RDONLY);
	ck_assert_int_eq(layout_set_origin(ufd, &o), 0);
	close(ufd);
}

/* Run a shell command (formatted); fail the test on a non-zero exit. */
static inline void lay_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void lay_sh(const char *fmt, ...)
{
	char *cmd;
	va_list ap;
	va_start(ap, fmt);
	ck_assert_int_ge(vasprintf(&cmd, fmt, ap), 0);
	va_end(ap);
	int r = system(cmd);
	ck_assert_msg(r == 0, "command failed (%d): %s", r, cmd);
	free(cmd);
}

/* ---- tree comparison: files and symlinks (git tracks no directories) ---- */

struct lay_item {
	char *path;
	char kind; /* 'f' file, 'x' executable, 'l' symlink */
	char *data;
	size_t len;
};

struct lay_tree {
	struct lay_item *v;
	size_t n, cap;
};

static inline void lay_scan(const char *root, const char *rel, struct lay_tree *t)
{
	char *dir = *rel ? lay_join(root, rel) : strdup(root);
	DIR *d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s", dir);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!*rel && !strcmp(de->d_name, ".git"))
			continue;
		char *r2;
		ck_assert_int_ge(asprintf(&r2, "%s%s%s", rel, *rel ? "/" : "", de->d_name), 0);
		char *full = lay_join(root, r2);
		struct stat st;
		ck_assert_int_eq(lstat(full, &st), 0);
		if (S_ISDIR(st.st_mode)) {
			lay_scan(root, r2, t);
			free(r2);
			free(full);
			continue;
		}
		if (t->n == t->cap) {
			t->cap = t->cap ? t->cap * 2 : 32;
			t->v = realloc(t->v, t->cap * sizeof(*t->v));
		}
		struct lay_item *it = &t->v[t->n++];
		it->path = r2;
		it->data = malloc((size_t)st.st_size + 1);
		if (S_ISLNK(st.st_mode)) {
			it->kind = 'l';
			ssize_t k = readlink(full, it->data, (size_t)st.st_size + 1);
			ck_assert_int_eq(k, st.st_size);
			it->len = (size_t)k;
		} else {
			it->kind = st.st_mode & S_IXUSR ? 'x' : 'f';
			int fd = open(full, O_RDONLY);
			ck_assert_int_ge(fd, 0);
			ck_assert_int_eq(read(fd, it->data, (size_t)st.st_size), st.st_size);
			it->len = (size_t)st.st_size;
			close(fd);
		}
		free(full);
	}
	closedir(d);
	free(dir);
}

static inline int lay_cmp_item(const void *a, const void *b)
{
	return strcmp(((const struct lay_item *)a)->path, ((const struct lay_item *)b)->path);
}

static inline void lay_tree_free(struct lay_tree *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].path);
		free(t->v[i].data);
	}
	free(t->v);
}

/* Assert that trees @a and @b (".git" at their tops left aside) hold the same
 * files and symlinks: paths, kinds, executable bits, bytes, targets. */
static inline void lay_assert_same(const char *a, const char *b)
{
	struct lay_tree ta = {0}, tb = {0};
	lay_scan(a, "", &ta);
	lay_scan(b, "", &tb);
	qsort(ta.v, ta.n, sizeof(*ta.v), lay_cmp_item);
	qsort(tb.v, tb.n, sizeof(*tb.v), lay_cmp_item);
	size_t i = 0, j = 0;
	while (i < ta.n || j < tb.n) {
		int c = i == ta.n ? 1 : j == tb.n ? -1 : strcmp(ta.v[i].path, tb.v[j].path);
		ck_assert_msg(c >= 0, "%s: only in %s", ta.v[i].path, a);
		ck_assert_msg(c <= 0, "%s: only in %s", tb.v[j].path, b);
		ck_assert_msg(ta.v[i].kind == tb.v[j].kind, "%s: kind %c vs %c", ta.v[i].path,
			      ta.v[i].kind, tb.v[j].kind);
		ck_assert_msg(ta.v[i].len == tb.v[j].len &&
				  memcmp(ta.v[i].data, tb.v[j].data, ta.v[i].len) == 0,
			      "%s: contents differ", ta.v[i].path);
		i++, j++;
	}
	lay_tree_free(&ta);
	lay_tree_free(&tb);
}

#endif
