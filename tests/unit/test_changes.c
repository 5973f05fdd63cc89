/*
 * test_changes.c - the change set of hand-built upper/lower trees (whiteouts,
 * opaque directories, redirects, origins, policy) and discarding changes.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/changes.h"
#include "policy/policy.h"
#include "tests/unit/layers.h"

static const char POLICY[] = "extends: none\n"
			     "hide: ['.git', '.env', 'secret*']\n";

static char tmp[PATH_MAX], lower[PATH_MAX + 8], upper[PATH_MAX + 8];
static struct policy *pol;

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "%s/agentfs-changes-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(lower, sizeof(lower), "%s/lower", tmp);
	snprintf(upper, sizeof(upper), "%s/upper", tmp);
	ck_assert_int_eq(mkdir(lower, 0755), 0);
	ck_assert_int_eq(mkdir(upper, 0755), 0);
	struct policy_error pe;
	ck_assert_int_eq(policy_load_string("test", POLICY, strlen(POLICY), &pol, &pe), 0);
}

static void teardown(void)
{
	policy_free(pol);
	lay_sh("rm -rf '%s'", tmp);
}

static struct changes *compute(void)
{
	int lfd = lay_open(lower, ".", O_RDONLY | O_DIRECTORY);
	int ufd = lay_open(upper, ".", O_RDONLY | O_DIRECTORY);
	struct changes *cs = NULL;
	ck_assert_int_eq(changes_compute(lfd, ufd, pol, &cs), 0);
	close(lfd);
	close(ufd);
	return cs;
}

static int discard(const char *path)
{
	int lfd = lay_open(lower, ".", O_RDONLY | O_DIRECTORY);
	int ufd = lay_open(upper, ".", O_RDONLY | O_DIRECTORY);
	int r = changes_discard(lfd, ufd, pol, path, NULL, NULL);
	close(lfd);
	close(ufd);
	return r;
}

/* "CODE PATH" lines of the change set, sorted by path, in one string. */
static char *summary(void)
{
	struct changes *cs = compute();
	size_t cap = 64;
	for (size_t i = 0; i < cs->count; i++)
		cap += strlen(cs->items[i].path) + 4;
	char *s = malloc(cap), *o = s;
	*o = 0;
	for (size_t i = 0; i < cs->count; i++)
		o += sprintf(o, "%c %s\n", change_code(&cs->items[i]), cs->items[i].path);
	changes_free(cs);
	return s;
}

#define ck_summary(want)                                                                           \
	do {                                                                                       \
		char *got_ = summary();                                                            \
		ck_assert_str_eq(got_, want);                                                      \
		free(got_);                                                                        \
	} while (0)

/* The sides of each kind of change: layer, path and mode. */
START_TEST(test_sides)
{
	lay_file(lower, "m.txt", "m\n");
	lay_file(lower, "d.txt", "d\n");
	lay_file(lower, "dir/x", "x\n");
	lay_link(lower, "l", "m.txt");
	lay_copyup(lower, "m.txt", upper, "m.txt");
	lay_file(upper, "m.txt", "m2\n");
	lay_whiteout(upper, "", "d.txt");
	lay_link(upper, "l", "d.txt");
	lay_redirect(upper, "moved", "dir");
	lay_whiteout(upper, "", "dir");

	struct changes *cs = compute();
	ck_assert_uint_eq(cs->count, 5);
	const struct change *c = &cs->items[0];
	ck_assert_str_eq(c->path, "d.txt");
	ck_assert(c->base.present && !c->view.present);
	ck_assert_int_eq(c->base.layer, CHANGE_LOWER);
	ck_assert_str_eq(c->base.path, "d.txt");
	c = &cs->items[1];
	ck_assert_str_eq(c->path, "dir/x");
	ck_assert(c->base.present && !c->view.present);
	c = &cs->items[2];
	ck_assert_str_eq(c->path, "l");
	ck_assert_uint_eq(c->base.mode, CHANGE_MODE_LINK);
	ck_assert_uint_eq(c->view.mode, CHANGE_MODE_LINK);
	ck_assert_int_eq(c->view.layer, CHANGE_UPPER);
	c = &cs->items[3];
	ck_assert_str_eq(c->path, "m.txt");
	ck_assert_int_eq(c->view.layer, CHANGE_UPPER);
	ck_assert_uint_eq(c->view.mode, CHANGE_MODE_FILE);
	ck_assert_uint_eq(c->view.size, 3);
	c = &cs->items[4];
	ck_assert_str_eq(c->path, "moved/x");
	ck_assert(!c->base.present && c->view.present);
	ck_assert_int_eq(c->view.layer, CHANGE_LOWER); /* never copied up */
	ck_assert_str_eq(c->view.path, "dir/x");
	char *buf;
	size_t len;
	ck_assert_int_eq(changes_read(cs, &c->view, &buf, &len), 0);
	ck_assert_uint_eq(len, 2);
	ck_assert(memcmp(buf, "x\n", 2) == 0);
	free(buf);
	ck_assert_int_eq(changes_read(cs, &cs->items[2].view, &buf, &len), 0);
	ck_assert_uint_eq(len, 5);
	ck_assert(memcmp(buf, "d.txt", 5) == 0);
	free(buf);
	changes_free(cs);
}
END_TEST

START_TEST(test_whiteout_opaque_redirect)
{
	lay_file(lower, "a/1", "1\n");
	lay_file(lower, "a/2", "2\n");
	lay_file(lower, "a/.env", "S\n");
	lay_file(lower, "b/3", "3\n");
	lay_file(lower, "c/4", "4\n");
	lay_file(lower, "c/secret.txt", "S\n");
	lay_file(lower, "same", "same\n");
	lay_tick(tmp); /* the agent's changes come after */
	/* a: emptied and refilled (opaque); b: one entry deleted; c: renamed to e */
	lay_opaque(upper, "a");
	lay_file(upper, "a/9", "9\n");
	lay_whiteout(upper, "b", "3");
	lay_redirect(upper, "e", "c");
	lay_whiteout(upper, "", "c");
	/* an unchanged copy-up is no change */
	lay_copyup(lower, "same", upper, "same");
	ck_summary("D a/1\nD a/2\nA a/9\nD b/3\nD c/4\nA e/4\n");
}
END_TEST

/* A hidden lower entry is neither base nor view, wherever its directory went;
 * an upper entry at a hidden name is a change flagged as such. */
START_TEST(test_hidden)
{
	lay_file(lower, "d/secret.key", "k\n");
	lay_file(lower, "d/ok", "ok\n");
	lay_file(lower, ".env", "S\n");
	lay_redirect(upper, "e", "d");
	lay_whiteout(upper, "", "d");
	lay_file(upper, ".env", "agent\n");
	lay_file(upper, "x/secret.new", "agent\n");
	lay_file(upper, "x/secret.dir/a", "agent\n");
	lay_file(upper, "x/secret.dir/sub/b", "agent\n");
	lay_whiteout(upper, "", "secret.gone"); /* nothing there: no change */
	ck_summary("H .env\nD d/ok\nA e/ok\nH x/secret.dir/\nH x/secret.new\n");
	/* the redirect of a hidden directory shows nothing of it */
	lay_file(lower, "secret.d/f", "f\n");
	lay_redirect(upper, "shown", "secret.d");
	ck_summary("H .env\nD d/ok\nA e/ok\nH x/secret.dir/\nH x/secret.new\n");
}
END_TEST

/* Lower symlinks out of the repository or onto hidden paths are hidden, so a
 * renamed directory does not carry them. */
START_TEST(test_hidden_symlinks)
{
	lay_file(lower, ".env", "S\n");
	lay_file(lower, "d/f", "f\n");
	lay_link(lower, "d/ok", "f");
	lay_link(lower, "d/up", "../d/f");
	lay_link(lower, "d/esc", "../../etc/passwd");
	lay_link(lower, "d/abs", "/etc/passwd");
	lay_link(lower, "d/toenv", "../.env");
	lay_link(lower, "d/chain", "toenv");
	lay_redirect(upper, "e", "d");
	lay_whiteout(upper, "", "d");
	ck_summary("D d/f\nD d/ok\nD d/up\nA e/f\nA e/ok\nA e/up\n");
}
END_TEST

START_TEST(test_conflict_and_stale)
{
	lay_file(lower, "edited", "v1\n");
	lay_file(lower, "untouched", "v1\n");
	lay_copyup(lower, "edited", upper, "edited");
	lay_file(upper, "edited", "agent\n");
	lay_copyup(lower, "untouched", upper, "untouched");
	ck_summary("M edited\n");
	lay_file(lower, "edited", "person\n");
	lay_file(lower, "untouched", "person\n");
	ck_summary("C edited\n");
	/* the agent's chmod on a file the person edited is a conflict too */
	lay_exec(upper, "untouched", "v1\n");
	lay_copyup(lower, "untouched", upper, "u2");
	ck_summary("C edited\nA u2\nC untouched\n");
}
END_TEST

START_TEST(test_types)
{
	lay_file(lower, "f2l", "x\n");
	lay_file(lower, "f2d", "x\n");
	lay_file(lower, "d2f/x", "x\n");
	lay_tick(tmp); /* the agent's changes come after */
	lay_link(upper, "f2l", "elsewhere");
	lay_file(upper, "f2d/in", "in\n");
	lay_file(upper, "d2f", "now file\n");
	char *fifo = lay_join(upper, "fifo");
	ck_assert_int_eq(mkfifo(fifo, 0644), 0);
	free(fifo);
	ck_summary("A d2f\nD d2f/x\nD f2d\nA f2d/in\nT f2l\nX fifo\n");
}
END_TEST

START_TEST(test_symlink_in_layers_not_followed)
{
	/* an upper symlink to a directory is an entry, never a way into it */
	lay_file(lower, "dir/a", "a\n");
	lay_link(upper, "lnk", "/etc");
	lay_redirect(upper, "r", "dir");
	lay_whiteout(upper, "", "dir");
	ck_summary("D dir/a\nA lnk\nA r/a\n");
	/* a redirect through a lower symlink resolves to nothing */
	lay_link(lower, "ldir", "dir");
	lay_redirect(upper, "s", "ldir");
	ck_summary("D dir/a\nA lnk\nA r/a\n");
}
END_TEST

START_TEST(test_discard_file_and_all)
{
	lay_file(lower, "a", "a\n");
	lay_file(lower, "b", "b\n");
	lay_copyup(lower, "a", upper, "a");
	lay_file(upper, "a", "a2\n");
	lay_whiteout(upper, "", "b");
	lay_file(upper, "new/deep/c", "c\n");
	ck_summary("M a\nD b\nA new/deep/c\n");
	ck_assert_int_eq(discard("a"), 0);
	ck_summary("D b\nA new/deep/c\n");
	ck_assert_int_eq(discard("a"), -ENOENT);
	ck_assert_int_eq(discard("b"), 0);
	ck_summary("A new/deep/c\n");
	ck_assert_int_eq(discard("new/deep/c"), 0);
	ck_summary("");
	/* emptied agent directories went too */
	ck_assert(!lay_exists(upper, "new"));
	lay_file(upper, "x", "x\n");
	lay_whiteout(upper, "", "a");
	lay_opaque(upper, "");
	ck_assert_int_eq(discard(""), 0);
	ck_summary("");
	ck_assert_int_eq(rmdir(upper), 0); /* nothing left in it */
}
END_TEST

START_TEST(test_discard_renamed)
{
	lay_file(lower, "dir/a", "a\n");
	lay_file(lower, "dir/b", "b\n");
	lay_file(lower, "f", "f\n");
	lay_tick(tmp); /* the agent's changes come after */
	lay_redirect(upper, "moved", "dir");
	lay_whiteout(upper, "", "dir");
	lay_copyup(lower, "dir/a", upper, "moved/a");
	lay_file(upper, "moved/a", "a2\n");
	lay_copyup(lower, "f", upper, "g");
	lay_whiteout(upper, "", "f");
	ck_summary("D dir/a\nD dir/b\nD f\nA g\nA moved/a\nA moved/b\n");
	/* a path inside the renamed directory cannot go alone */
	ck_assert_int_eq(discard("moved/b"), -EBUSY);
	ck_assert_int_eq(discard("moved"), 0);
	ck_summary("D f\nA g\n");
	/* discarding a renamed file's new path restores its old one */
	ck_assert_int_eq(discard("g"), 0);
	ck_summary("");
}
END_TEST

START_TEST(test_discard_in_opaque_dir)
{
	lay_file(lower, "d/x", "x\n");
	lay_file(lower, "d/y", "y\n");
	lay_file(lower, "d/sub/z", "z\n");
	lay_file(lower, "d/sub/w", "w\n");
	lay_file(lower, "d/secret.k", "k\n");
	lay_tick(tmp); /* the agent's changes come after */
	lay_opaque(upper, "d");
	lay_file(upper, "d/new", "n\n");
	ck_summary("A d/new\nD d/sub/w\nD d/sub/z\nD d/x\nD d/y\n");
	ck_assert_int_eq(discard("d/x"), 0);
	ck_summary("A d/new\nD d/sub/w\nD d/sub/z\nD d/y\n");
	ck_assert_int_eq(discard("d/sub/z"), 0);
	ck_summary("A d/new\nD d/sub/w\nD d/y\n");
	ck_assert_int_eq(discard("d"), 0);
	ck_summary("");
}
END_TEST

static Suite *changes_suite(void)
{
	Suite *s = suite_create("changes");
	TCase *tc = tcase_create("compute");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_sides);
	tcase_add_test(tc, test_whiteout_opaque_redirect);
	tcase_add_test(tc, test_hidden);
	tcase_add_test(tc, test_hidden_symlinks);
	tcase_add_test(tc, test_conflict_and_stale);
	tcase_add_test(tc, test_types);
	tcase_add_test(tc, test_symlink_in_layers_not_followed);
	suite_add_tcase(s, tc);
	TCase *td = tcase_create("discard");
	tcase_add_checked_fixture(td, setup, teardown);
	tcase_add_test(td, test_discard_file_and_all);
	tcase_add_test(td, test_discard_renamed);
	tcase_add_test(td, test_discard_in_opaque_dir);
	suite_add_tcase(s, td);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(changes_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
