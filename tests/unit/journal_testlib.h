/* journal_testlib.h - helpers shared by the journal's unit tests. */
#ifndef AGENTFS_TEST_JOURNAL_TESTLIB_H
#define AGENTFS_TEST_JOURNAL_TESTLIB_H

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/journal.h"

struct jt {
	char dir[64];
	char journal[PATH_MAX];
	char head[PATH_MAX];
	char upper[PATH_MAX];
};

static inline void jt_setup(struct jt *jt)
{
	snprintf(jt->dir, sizeof(jt->dir), "/tmp/jtest.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(jt->dir));
	snprintf(jt->journal, sizeof(jt->journal), "%s/journal.jsonl", jt->dir);
	snprintf(jt->head, sizeof(jt->head), "%s/journal.jsonl.head", jt->dir);
	snprintf(jt->upper, sizeof(jt->upper), "%s/upper", jt->dir);
	ck_assert_int_eq(mkdir(jt->upper, 0700), 0);
}

static inline void jt_teardown(struct jt *jt)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", jt->dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* A journal of @n varied events followed by an unmount record. */
static inline void jt_write_records(struct jt *jt, int n, enum journal_sync sync)
{
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt->journal, sync), 0);
	for (int i = 0; i < n; i++) {
		char path[64];
		snprintf(path, sizeof(path), "dir/file-%d.txt", i);
		struct journal_event ev = {
		    .op = (enum journal_op)(JOP_READ + i % (JOP__COUNT - JOP_READ)),
		    .result = i % 5 == 4 ? -EROFS : 0,
		    .pid = getpid(),
		    .uid = getuid(),
		    .path = path,
		    .path2 = i % 3 ? NULL : "dir/other",
		    .bytes = (uint64_t)i * 100,
		    .has_hash_after = i % 2,
		    .hash_after = XXH3_128bits(path, strlen(path)),
		};
		journal_record(j, &ev);
	}
	struct journal_event un = {.op = JOP_UNMOUNT, .pid = getpid()};
	journal_record(j, &un);
	journal_close(j);
}

static inline char **jt_lines(struct jt *jt, size_t *n)
{
	FILE *f = fopen(jt->journal, "r");
	ck_assert_ptr_nonnull(f);
	char **v = NULL, *line = NULL;
	size_t cap = 0, cnt = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) > 0) {
		ck_assert(line[len - 1] == '\n');
		line[len - 1] = 0;
		v = realloc(v, (cnt + 1) * sizeof(*v));
		v[cnt++] = strdup(line);
	}
	free(line);
	fclose(f);
	*n = cnt;
	return v;
}

static inline char **jt_copy_lines(char **lines, size_t n)
{
	char **c = calloc(n + 1, sizeof(*c));
	for (size_t i = 0; i < n; i++)
		c[i] = strdup(lines[i]);
	return c;
}

static inline void jt_free_lines(char **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

static inline void jt_put_lines(struct jt *jt, char **lines, size_t n)
{
	FILE *f = fopen(jt->journal, "w");
	ck_assert_ptr_nonnull(f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n", lines[i]);
	ck_assert_int_eq(fclose(f), 0);
}

static inline off_t jt_size(struct jt *jt)
{
	struct stat st;
	ck_assert_int_eq(stat(jt->journal, &st), 0);
	return st.st_size;
}

static inline void jt_put_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	ck_assert_int_eq(fclose(f), 0);
}

#endif
