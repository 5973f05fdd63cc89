/* test_nofilter.c - where no git filter can apply (nofilter.h): a directory
 * is clean until an attribute file that applies to it names a filter (its
 * own or a parent's, the working tree's or the index's), or the config
 * turns one on; paths as deep as PATH_MAX allows and thousands of
 * directories are answered (no recursion, a table that grows). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/nofilter.h"

static char dir[] = "/tmp/agentfs-nofilter.XXXXXX";
static char home[600]; /* every libgit2 search path, HOME and XDG_CONFIG_HOME */

/* @text into dir/@rel. */
static void write_now(const char *rel, const char *text)
{
	char p[1200];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/* The same, then past the clock tick it was written in: a source changed in
 * the tick it is read in gives no digest (nofilter.c, file_clean). */
static void put(const char *rel, const char *text)
{
	write_now(rel, text);
	struct timespec tick = {0, 30000000L};
	nanosleep(&tick, NULL);
}

/* A fresh repository in dir/NAME with @attrs as sub/.gitattributes (NULL: none). */
static git_repository *fresh(const char *name, const char *attrs)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	git_repository *r = NULL;
	ck_assert_int_eq(git_repository_init(&r, p, false), 0);
	snprintf(p, sizeof(p), "%s/%s/sub", dir, name);
	ck_assert(mkdir(p, 0755) == 0 || errno == EEXIST); /* again: s4 */
	if (attrs) {
		snprintf(p, sizeof(p), "%s/sub/.gitattributes", name);
		put(p, attrs);
	}
	return r;
}

static struct nofilter *open_nf(git_repository *r, git_index **idx, int *fd)
{
	ck_assert_int_eq(git_repository_index(idx, r), 0);
	*fd = open(git_repository_workdir(r), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(*fd, 0);
	struct nofilter *nf = NULL;
	ck_assert_int_eq(nofilter_new(r, *idx, *fd, &nf), 0);
	return nf;
}

START_TEST(attributes_that_name_a_filter)
{
	git_repository *r = fresh("a", "*.c diff=cpp\n*.txt text eol=crlf\n");
	git_index *idx;
	int fd;
	struct nofilter *nf = open_nf(r, &idx, &fd);
	ck_assert(nofilter_path(nf, "top.c"));
	ck_assert(nofilter_path(nf, "other/x.c"));
	ck_assert(!nofilter_path(nf, "sub/x.c")); /* per directory: any file */
	ck_assert(!nofilter_path(nf, "sub/deeper/y.md"));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);

	/* diff= alone names no filter; core.autocrlf turns one on everywhere. */
	r = fresh("b", "*.c diff=cpp\n");
	nf = open_nf(r, &idx, &fd);
	ck_assert(nofilter_path(nf, "sub/x.c"));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_config *cfg;
	ck_assert_int_eq(git_repository_config(&cfg, r), 0);
	ck_assert_int_eq(git_config_set_string(cfg, "core.autocrlf", "input"), 0);
	git_config_free(cfg);
	nf = open_nf(r, &idx, &fd);
	ck_assert(!nofilter_path(nf, "x.c"));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);
}
END_TEST

/* @text at @file (absolute) makes every path of a fresh repository maybe
 * filtered; gone again, none. */
static void outside_file(const char *name, const char *file, const char *text)
{
	git_repository *r = fresh(name, NULL);
	FILE *f = fopen(file, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	git_index *idx;
	int fd;
	struct nofilter *nf = open_nf(r, &idx, &fd);
	ck_assert_msg(!nofilter_path(nf, "x.c"), "%s ignored", file);
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	unlink(file);
	nf = open_nf(r, &idx, &fd);
	ck_assert(nofilter_path(nf, "x.c"));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);
}

START_TEST(every_source)
{
	/* The system file, the XDG one, info/attributes. */
	char p[800];
	snprintf(p, sizeof(p), "%s/gitattributes", home);
	outside_file("s1", p, "*.c text\n");
	snprintf(p, sizeof(p), "%s/attributes", home);
	outside_file("s2", p, "*.c ident\n");
	snprintf(p, sizeof(p), "%s/s3/.git/info/attributes", dir);
	outside_file("s3", p, "[attr]mine text\n*.c mine\n");
	/* core.attributesFile, ~/ expanded. */
	snprintf(p, sizeof(p), "%s/mine.attr", home);
	git_repository *r = fresh("s4", NULL);
	git_config *cfg;
	ck_assert_int_eq(git_repository_config(&cfg, r), 0);
	ck_assert_int_eq(git_config_set_string(cfg, "core.attributesFile", "~/mine.attr"), 0);
	git_config_free(cfg);
	git_repository_free(r);
	outside_file("s4", p, "*.c filter=lfs\n");

	/* core.eol, and a .gitattributes in the index alone. */
	r = fresh("s5", NULL);
	ck_assert_int_eq(git_repository_config(&cfg, r), 0);
	ck_assert_int_eq(git_config_set_string(cfg, "core.eol", "crlf"), 0);
	git_config_free(cfg);
	git_index *idx;
	int fd;
	struct nofilter *nf = open_nf(r, &idx, &fd);
	ck_assert(!nofilter_path(nf, "x.c"));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);
	r = fresh("s6", NULL);
	ck_assert_int_eq(git_repository_index(&idx, r), 0);
	git_index_entry e;
	memset(&e, 0, sizeof(e));
	e.path = "sub/.gitattributes";
	e.mode = GIT_FILEMODE_BLOB;
	const char *text = "*.c eol=lf\n";
	ck_assert_int_eq(git_index_add_from_buffer(idx, &e, text, strlen(text)), 0);
	git_index_free(idx);
	nf = open_nf(r, &idx, &fd);
	ck_assert(nofilter_path(nf, "x.c"));
	ck_assert(!nofilter_path(nf, "sub/x.c"));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);
}
END_TEST

/* nofilter_digest of @path in repository @r, through a fresh nofilter; false
 * when a source cannot be read. */
static bool digest_of(git_repository *r, const char *path, uint64_t *d)
{
	git_index *idx;
	int fd;
	struct nofilter *nf = open_nf(r, &idx, &fd);
	bool ok = nofilter_digest(nf, path, d);
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	return ok;
}

/* The digest follows every source that applies, and only those. */
START_TEST(digests)
{
	git_repository *r = fresh("d", "*.txt text\n");
	uint64_t top, sub, other, again;
	ck_assert(digest_of(r, "x.txt", &top));
	ck_assert(digest_of(r, "sub/x.txt", &sub));
	ck_assert(digest_of(r, "other/x.txt", &other));
	ck_assert(top != sub);
	ck_assert(top != other); /* another directory, the same sources: */
	ck_assert(digest_of(r, "other/y.txt", &again));
	ck_assert(again == other);
	ck_assert(digest_of(r, "sub/x.txt", &again));
	ck_assert(again == sub); /* the same sources read again */

	put("d/sub/.gitattributes", "*.txt text eol=crlf\n");
	ck_assert(digest_of(r, "sub/x.txt", &again));
	ck_assert(again != sub);
	sub = again;
	ck_assert(digest_of(r, "x.txt", &again));
	ck_assert(again == top); /* not above it */

	/* Each of the config's settings, info/attributes, the index's blob. */
	static const char *const keys[] = {"core.autocrlf", "core.eol", "core.safecrlf"};
	for (int i = 0; i < 3; i++) {
		git_config *cfg;
		ck_assert_int_eq(git_repository_config(&cfg, r), 0);
		ck_assert_int_eq(git_config_set_string(cfg, keys[i], i == 1 ? "crlf" : "true"), 0);
		git_config_free(cfg);
		ck_assert(digest_of(r, "sub/x.txt", &again));
		ck_assert_msg(again != sub, "%s", keys[i]);
		sub = again;
	}
	put("d/.git/info/attributes", "*.md text\n");
	ck_assert(digest_of(r, "sub/x.txt", &again));
	ck_assert(again != sub);
	sub = again;
	git_index *idx;
	ck_assert_int_eq(git_repository_index(&idx, r), 0);
	git_index_entry e;
	memset(&e, 0, sizeof(e));
	e.path = ".gitattributes";
	e.mode = GIT_FILEMODE_BLOB;
	ck_assert_int_eq(git_index_add_from_buffer(idx, &e, "*.c text\n", 9), 0);
	ck_assert_int_eq(git_index_write(idx), 0);
	ck_assert(digest_of(r, "sub/x.txt", &again));
	ck_assert(again != sub);
	sub = again;
	ck_assert_int_eq(git_index_add_from_buffer(idx, &e, "*.h text\n", 9), 0);
	ck_assert_int_eq(git_index_write(idx), 0);
	git_index_free(idx);
	ck_assert(digest_of(r, "sub/x.txt", &again));
	ck_assert(again != sub); /* another blob there */

	/* A source that cannot be read: no digest. */
	char p[1200];
	snprintf(p, sizeof(p), "%s/d/sub/.gitattributes", dir);
	ck_assert_int_eq(unlink(p), 0);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	ck_assert(!digest_of(r, "sub/x.txt", &again));
	ck_assert(digest_of(r, "x.txt", &again));
	git_repository_free(r);
}
END_TEST

/* A setting without a value (true) is not one with an empty value (false);
 * a source written in the clock tick it is read in gives no digest; and
 * nofilter_unchanged sees a source changed, appeared or gone since its
 * digest. */
START_TEST(digest_edges)
{
	git_repository *r = fresh("e", "*.txt text\n");
	static const char cfg[] = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n";
	char text[256];
	snprintf(text, sizeof(text), "%s\tautocrlf\n", cfg);
	put("e/.git/config", text);
	uint64_t bare, empty;
	ck_assert(digest_of(r, "sub/x.txt", &bare));
	git_repository_free(r);
	snprintf(text, sizeof(text), "%s\tautocrlf =\n", cfg);
	put("e/.git/config", text);
	char rp[1200];
	snprintf(rp, sizeof(rp), "%s/e", dir);
	ck_assert_int_eq(git_repository_open(&r, rp), 0);
	ck_assert(digest_of(r, "sub/x.txt", &empty));
	ck_assert(bare != empty);

	/* Written and read at once: no digest there, one elsewhere.  "At once"
	 * is within one tick of the file system's clock, which a slow run (a
	 * sanitizer's) may miss: tried until one write and read share a tick,
	 * as they do at once on any machine. */
	uint64_t d;
	bool racy_refused = false;
	for (int i = 0; i < 50 && !racy_refused; i++) {
		write_now("e/sub/.gitattributes", "*.txt text eol=lf\n");
		racy_refused = !digest_of(r, "sub/x.txt", &d);
	}
	ck_assert(racy_refused);
	ck_assert(digest_of(r, "x.txt", &d));

	git_index *idx;
	int fd;
	struct nofilter *nf = open_nf(r, &idx, &fd);
	(void)nofilter_digest(nf, "sub/x.txt", &d); /* reads its sources (racy or not) */
	ck_assert(nofilter_unchanged(nf));
	put("e/sub/.gitattributes", "*.txt text eol=crlf\n");
	ck_assert(!nofilter_unchanged(nf));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	char p[1200];
	snprintf(p, sizeof(p), "%s/e/sub/deeper", dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	nf = open_nf(r, &idx, &fd);
	ck_assert(nofilter_digest(nf, "sub/deeper/x.txt", &d));
	ck_assert(nofilter_unchanged(nf));
	put("e/sub/deeper/.gitattributes", "*.txt -text\n"); /* absent until now */
	ck_assert(!nofilter_unchanged(nf));
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);
}
END_TEST

START_TEST(deep_and_many)
{
	git_repository *r = fresh("c", NULL);
	git_index *idx;
	int fd;
	struct nofilter *nf = open_nf(r, &idx, &fd);
	/* 2,000 directories side by side, then chains 300 and 2,040 deep
	 * (the longest near PATH_MAX, as the build's directory cache takes). */
	for (int i = 0; i < 2000; i++) {
		char p[64];
		snprintf(p, sizeof(p), "d%04d/f.c", i);
		ck_assert(nofilter_path(nf, p));
	}
	char *deep = malloc(4200);
	size_t n = 0;
	for (int i = 0; i < 300; i++)
		n += (size_t)sprintf(deep + n, "a/");
	strcpy(deep + n, "f.c");
	ck_assert(nofilter_path(nf, deep));
	n = 0;
	for (int i = 0; i < 2040; i++)
		n += (size_t)sprintf(deep + n, "b/");
	strcpy(deep + n, "f");
	ck_assert(nofilter_path(nf, deep));
	free(deep);
	nofilter_free(nf);
	git_index_free(idx);
	close(fd);
	git_repository_free(r);
}
END_TEST

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}
	/* No system or global attribute file of this machine's. */
	snprintf(home, sizeof(home), "%s/home", dir);
	mkdir(home, 0700);
	setenv("HOME", home, 1);
	setenv("XDG_CONFIG_HOME", home, 1);
	git_libgit2_init();
	git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_SYSTEM, home);
	git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_XDG, home);
	git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_GLOBAL, home);
	Suite *s = suite_create("nofilter");
	TCase *tc = tcase_create("nofilter");
	tcase_add_test(tc, attributes_that_name_a_filter);
	tcase_add_test(tc, every_source);
	tcase_add_test(tc, digests);
	tcase_add_test(tc, digest_edges);
	tcase_add_test(tc, deep_and_many);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	git_libgit2_shutdown();
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
