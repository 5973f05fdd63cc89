/*
 * test_policy_symlink.c - the `symlinks: hide` rule (policy/symlink.h) on a real
 * directory tree: targets that leave the repository, land on hidden paths
 * directly or through other symlinks, loop, or stay inside; and `agentfs policy
 * explain` and `test`, which must hide the same symlinks the mount hides.
 */
#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "policy/policy.h"
#include "policy/symlink.h"

static char repo[64];
static int repo_fd = -1;

static void put(const char *rel, const char *text)
{
	int fd = openat(repo_fd, rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void link_at(const char *target, const char *rel)
{
	ck_assert_int_eq(symlinkat(target, repo_fd, rel), 0);
}

static void setup(void)
{
	snprintf(repo, sizeof(repo), "/tmp/agentfs-symlink.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(repo));
	repo_fd = open(repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(repo_fd, 0);
	/* No person's policy file: the built-in default alone. */
	setenv("XDG_CONFIG_HOME", repo, 1);
	ck_assert_int_eq(mkdirat(repo_fd, "src", 0755), 0);
	ck_assert_int_eq(mkdirat(repo_fd, "config", 0755), 0);
	put("README.md", "readme\n");
	put("src/main.c", "int main;\n");
	put(".env", "SECRET=1\n");
	put("config/id_rsa", "key\n");
	link_at("/etc/hostname", "outside");	   /* absolute */
	link_at("../escape", "up");		   /* above the top */
	link_at("../../x", "src/up2");		   /* above the top from below */
	link_at(".env", "to-env");		   /* a hidden file */
	link_at("../config/id_rsa", "src/to-key"); /* a hidden file, from below */
	link_at("src", "srcdir");		   /* a directory link, fine */
	link_at("srcdir/../.env", "via-dir");	   /* lexical ".." after a link */
	link_at("to-env", "chain");		   /* a link to an unsafe link */
	link_at("loop-b", "loop-a");		   /* a loop */
	link_at("loop-a", "loop-b");
	link_at("README.md", "readme-link");	    /* fine */
	link_at("../README.md", "src/readme-link"); /* fine, from below */
	link_at("srcdir/main.c", "main-link");	    /* fine, through a link */
	link_at("missing/file", "dangling");	    /* inside, missing: fine */
}

static void teardown(void)
{
	close(repo_fd);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", repo);
	ck_assert_int_eq(system(cmd), 0);
}

static struct policy *default_policy(void)
{
	struct policy *p = NULL;
	ck_assert_int_eq(policy_new_default(&p), 0);
	return p;
}

START_TEST(test_unsafe)
{
	struct policy *p = default_policy();
	static const char *const unsafe[] = {"outside",	   "up",       "src/up2", "to-env",
					     "src/to-key", "via-dir",  "chain",	  "loop-a",
					     "loop-b",	   "README.md" /* not a symlink: unsure */};
	for (size_t i = 0; i < sizeof(unsafe) / sizeof(*unsafe); i++)
		ck_assert_msg(policy_symlink_unsafe(p, repo_fd, unsafe[i]), "%s must be unsafe",
			      unsafe[i]);
	policy_free(p);
}
END_TEST

START_TEST(test_safe)
{
	struct policy *p = default_policy();
	static const char *const safe[] = {"srcdir", "readme-link", "src/readme-link", "main-link",
					   "dangling"};
	for (size_t i = 0; i < sizeof(safe) / sizeof(*safe); i++)
		ck_assert_msg(!policy_symlink_unsafe(p, repo_fd, safe[i]), "%s must be safe",
			      safe[i]);
	policy_free(p);
}
END_TEST

/* Run `agentfs policy ARGS...` and return its stdout (malloc'd). */
static char *run_policy(int argc, char **argv, int *status)
{
	char out[96];
	snprintf(out, sizeof(out), "%s.out", repo);
	fflush(stdout);
	int saved = dup(1);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	dup2(fd, 1);
	close(fd);
	*status = cmd_policy(argc, argv);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	FILE *f = fopen(out, "re");
	ck_assert_ptr_nonnull(f);
	char *buf = calloc(1, 65536);
	ck_assert_ptr_nonnull(buf);
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = 0;
	fclose(f);
	unlink(out);
	return buf;
}

START_TEST(test_explain_hides_unsafe_symlinks)
{
	char *argv[] = {"policy",  "explain",	  repo,		"outside", "to-env",
			"via-dir", "readme-link", "src/main.c", NULL};
	int status;
	char *out = run_policy(8, argv, &status);
	ck_assert_int_eq(status, 0);
	ck_assert_msg(strstr(out, "outside: hidden (symlinks: hide"), "%s", out);
	ck_assert_msg(strstr(out, "to-env: hidden (symlinks: hide"), "%s", out);
	ck_assert_msg(strstr(out, "via-dir: hidden (symlinks: hide"), "%s", out);
	ck_assert_msg(strstr(out, "readme-link: visible"), "%s", out);
	ck_assert_msg(strstr(out, "src/main.c: visible"), "%s", out);
	free(out);
}
END_TEST

START_TEST(test_explain_symlinks_allow)
{
	char file[96];
	snprintf(file, sizeof(file), "%s.yml", repo);
	FILE *f = fopen(file, "we");
	ck_assert_ptr_nonnull(f);
	fputs("symlinks: allow\n", f);
	fclose(f);
	char *argv[] = {"policy", "explain", "--policy", file, repo, "outside", NULL};
	int status;
	char *out = run_policy(6, argv, &status);
	unlink(file);
	ck_assert_int_eq(status, 0);
	ck_assert_msg(strstr(out, "outside: visible"), "%s", out);
	free(out);
}
END_TEST

START_TEST(test_test_lists_unsafe_symlinks)
{
	char *argv[] = {"policy", "test", repo, NULL};
	int status;
	char *out = run_policy(3, argv, &status);
	ck_assert_int_eq(status, 0);
	ck_assert_msg(strstr(out, "hidden     outside  (symlinks: hide"), "%s", out);
	ck_assert_msg(strstr(out, "hidden     src/to-key  (symlinks: hide"), "%s", out);
	ck_assert_msg(!strstr(out, "readme-link"), "%s", out);
	free(out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("policy-symlink");
	TCase *tc = tcase_create("symlink");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_unsafe);
	tcase_add_test(tc, test_safe);
	tcase_add_test(tc, test_explain_hides_unsafe_symlinks);
	tcase_add_test(tc, test_explain_symlinks_allow);
	tcase_add_test(tc, test_test_lists_unsafe_symlinks);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
