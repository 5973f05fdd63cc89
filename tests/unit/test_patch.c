/*
 * test_patch.c - change sets turned into patches, applied with `git apply` and
 * `git apply --index` to the repository the lower is, and compared byte for byte
 * (content, executable bit, symlink targets) with the view expected by hand.
 */
#include <check.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/changes.h"
#include "cli/patch.h"
#include "policy/policy.h"
#include "tests/unit/layers.h"

/* Hide .git, .env and secret* anywhere, whatever the built-in default says. */
static const char POLICY[] = "extends: none\n"
			     "hide: ['.git', '.env', 'secret*']\n";

static char tmp[PATH_MAX], lower[PATH_MAX + 8], upper[PATH_MAX + 8], expect[PATH_MAX + 8];
static struct policy *pol;

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "%s/agentfs-patch-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(lower, sizeof(lower), "%s/lower", tmp);
	snprintf(upper, sizeof(upper), "%s/upper", tmp);
	snprintf(expect, sizeof(expect), "%s/expect", tmp);
	ck_assert_int_eq(mkdir(lower, 0755), 0);
	ck_assert_int_eq(mkdir(upper, 0755), 0);
	ck_assert_int_eq(mkdir(expect, 0755), 0);
	struct policy_error pe;
	ck_assert_int_eq(policy_load_string("test", POLICY, strlen(POLICY), &pol, &pe), 0);
	git_libgit2_init();
}

static void teardown(void)
{
	policy_free(pol);
	git_libgit2_shutdown();
	lay_sh("rm -rf '%s'", tmp);
}

/* The base: in the lower and in the expected result alike. */
static void both_file(const char *rel, const char *text)
{
	lay_file(lower, rel, text);
	lay_file(expect, rel, text);
}

static void both_bytes(const char *rel, const void *b, size_t n, mode_t mode)
{
	lay_bytes(lower, rel, b, n, mode);
	lay_bytes(expect, rel, b, n, mode);
}

static void both_link(const char *rel, const char *target)
{
	lay_link(lower, rel, target);
	lay_link(expect, rel, target);
}

static void commit_lower(void)
{
	lay_sh("cd '%s' && git init -q . && git add -A && "
	       "git -c user.name=t -c user.email=t@example.com commit -qm base",
	       lower);
	lay_tick(tmp); /* the agent's changes come after */
}

/* The person commits what changed in the lower since. */
static void commit_lower_again(void)
{
	lay_sh("cd '%s' && git add -A && "
	       "git -c user.name=t -c user.email=t@example.com commit -qm person",
	       lower);
}

static struct changes *compute(void)
{
	int lfd = lay_open(lower, ".", O_RDONLY | O_DIRECTORY);
	int ufd = lay_open(upper, ".", O_RDONLY | O_DIRECTORY);
	struct changes *cs = NULL;
	ck_assert_int_eq(changes_compute(lfd, ufd, pol, &cs), 0);
	close(lfd);
	close(ufd);
	git_repository *repo = NULL;
	ck_assert_int_eq(git_repository_open(&repo, lower), 0);
	ck_assert_int_eq(changes_mark_ignored(cs, repo), 0);
	git_repository_free(repo);
	return cs;
}

static char *make_patch(struct changes *cs, size_t *len)
{
	struct patch *p = NULL;
	char *text = NULL;
	ck_assert_int_eq(patch_new(cs, 0, NULL, NULL, &p), 0);
	ck_assert_int_eq(patch_format(p, &text, len), 0);
	patch_free(p);
	return text;
}

static const struct change *find(const struct changes *cs, const char *path)
{
	for (size_t i = 0; i < cs->count; i++)
		if (strcmp(cs->items[i].path, path) == 0)
			return &cs->items[i];
	return NULL;
}

/* Apply @text to fresh copies of the lower with `git apply` and with
 * `git apply --index`, and compare each with the expected tree. */
static void apply_and_compare(const char *text, size_t len)
{
	char *pf = lay_join(tmp, "p.patch");
	FILE *f = fopen(pf, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
	const char *modes[] = {"", "--index"};
	for (int m = 0; m < 2; m++) {
		lay_sh("rm -rf '%s/apply' && cp -a '%s' '%s/apply'", tmp, lower, tmp);
		/* the copy's files have new inodes: let git see they are unchanged */
		lay_sh("cd '%s/apply' && git update-index -q --refresh && git apply %s '%s'", tmp,
		       modes[m], pf);
		char *ap = lay_join(tmp, "apply");
		lay_assert_same(ap, expect);
		if (m == 1) /* the index now holds exactly the working tree */
			lay_sh("cd '%s/apply' && git diff --quiet", tmp);
		free(ap);
	}
	free(pf);
}

START_TEST(test_full_scenario)
{
	char mainc[512] = "";
	for (int i = 1; i <= 20; i++)
		snprintf(mainc + strlen(mainc), sizeof(mainc) - strlen(mainc), "line %d\n", i);
	unsigned char img[600];
	for (size_t i = 0; i < sizeof(img); i++)
		img[i] = (unsigned char)(i * 7 % 256);
	img[10] = 0;

	both_file("README.md", "hello\nworld\n");
	both_file("src/main.c", mainc);
	both_file("src/util.c", "int util;\n");
	both_bytes("bin/tool.sh", "#!/bin/sh\necho hi\n", 18, 0755);
	both_file("docs/guide.txt", "guide v1\n");
	both_file("old/a.txt", "alpha\n");
	both_file("old/b.txt", "bravo 1\nbravo 2\nbravo 3\nbravo 4\nbravo 5\nbravo 6\n");
	both_file("old/.env", "OLD_SECRET=1\n");
	both_file("old/secret.key", "KEYBYTES\n");
	both_file("old/sub/c.txt", "charlie\n");
	both_link("link", "README.md");
	both_bytes("img.bin", img, sizeof(img), 0644);
	both_file("del.txt", "delete me\n");
	both_file(".gitignore", "build/\n*.o\n");
	both_file(".env", "TOP_SECRET=1\n");
	both_file("vendor.o", "object v1\n");
	both_file("space dir/a b.txt", "spaces\n");
	both_file("thing", "a file that becomes a directory\n");
	both_file("tree/t1", "a directory that becomes a file\n");
	both_file("gen/g1", "generated 1\n");
	both_file("gen/g2", "generated 2\n");
	commit_lower();
	lay_sh("cd '%s' && git add -f vendor.o && "
	       "git -c user.name=t -c user.email=t@example.com commit -qm vendor",
	       lower);
	both_file("build/stale.o", "untracked, ignored\n");

	/* Modified, mode changes. */
	lay_copyup(lower, "README.md", upper, "README.md");
	lay_file(upper, "README.md", "hello\nworld\nagain\n");
	lay_file(expect, "README.md", "hello\nworld\nagain\n");
	lay_copyup(lower, "src/util.c", upper, "src/util.c");
	lay_chmod(upper, "src/util.c", 0755);
	lay_chmod(expect, "src/util.c", 0755);
	lay_copyup(lower, "bin/tool.sh", upper, "bin/tool.sh");
	lay_chmod(upper, "bin/tool.sh", 0644);
	lay_chmod(expect, "bin/tool.sh", 0644);
	/* Added, odd names, empty. */
	const char *odd[] = {"new file.txt", "quo\"te.txt", "new\nline.txt", "tab\there.txt",
			     "caf\xc3\xa9.txt"};
	for (size_t i = 0; i < sizeof(odd) / sizeof(*odd); i++) {
		lay_file(upper, odd[i], odd[i]);
		lay_file(expect, odd[i], odd[i]);
	}
	lay_file(upper, "empty.txt", "");
	lay_file(expect, "empty.txt", "");
	/* Deleted. */
	lay_whiteout(upper, "", "del.txt");
	lay_rm(expect, "del.txt");
	/* A renamed lower directory, with hidden entries that stay behind. */
	lay_whiteout(upper, "", "old");
	lay_redirect(upper, "renamed", "old");
	lay_copyup(lower, "old/b.txt", upper, "renamed/b.txt");
	lay_file(upper, "renamed/b.txt",
		 "bravo 1\nbravo 2\nbravo 3 changed\nbravo 4\nbravo 5\nbravo 6\n");
	lay_whiteout(upper, "renamed", "a.txt");
	lay_file(upper, "renamed/new.txt", "new in renamed\n");
	lay_rm(expect, "old/a.txt");
	lay_rm(expect, "old/b.txt");
	lay_rm(expect, "old/sub/c.txt");
	lay_file(expect, "renamed/b.txt",
		 "bravo 1\nbravo 2\nbravo 3 changed\nbravo 4\nbravo 5\nbravo 6\n");
	lay_file(expect, "renamed/sub/c.txt", "charlie\n");
	lay_file(expect, "renamed/new.txt", "new in renamed\n");
	/* Binary. */
	lay_copyup(lower, "img.bin", upper, "img.bin");
	img[100] ^= 0xff;
	img[500] = 0;
	lay_bytes(upper, "img.bin", img, sizeof(img), 0644);
	lay_bytes(expect, "img.bin", img, sizeof(img), 0644);
	/* Symlinks: a new one, and one replaced by a file. */
	lay_link(upper, "newlink", "src/main.c");
	lay_link(expect, "newlink", "src/main.c");
	lay_file(upper, "link", "now a file\n");
	lay_file(expect, "link", "now a file\n");
	/* File <-> directory, opaque directory. */
	lay_file(upper, "thing/inner.txt", "inside\n");
	lay_rm(expect, "thing");
	lay_file(expect, "thing/inner.txt", "inside\n");
	lay_file(upper, "tree", "now a file\n");
	lay_rm(expect, "tree/t1");
	lay_rmdir(expect, "tree");
	lay_file(expect, "tree", "now a file\n");
	lay_opaque(upper, "gen");
	lay_file(upper, "gen/g3", "generated 3\n");
	lay_rm(expect, "gen/g1");
	lay_rm(expect, "gen/g2");
	lay_file(expect, "gen/g3", "generated 3\n");
	/* Hidden names the agent wrote: left out. */
	lay_file(upper, ".env", "AGENT_SECRET=1\n");
	lay_file(upper, "config/secret.txt", "AGENT_SECRET=2\n");
	/* Untracked and ignored: left out; tracked and ignored: exported. */
	lay_file(upper, "build/new.o", "obj\n");
	lay_whiteout(upper, "build", "stale.o");
	lay_file(upper, "src/main.o", "obj\n");
	lay_copyup(lower, "vendor.o", upper, "vendor.o");
	lay_file(upper, "vendor.o", "object v2\n");
	lay_file(expect, "vendor.o", "object v2\n");
	lay_copyup(lower, "space dir/a b.txt", upper, "space dir/a b.txt");
	lay_file(upper, "space dir/a b.txt", "spaces\nmore\n");
	lay_file(expect, "space dir/a b.txt", "spaces\nmore\n");
	/* Conflict: the person changes a file after the agent copied it up. */
	lay_copyup(lower, "docs/guide.txt", upper, "docs/guide.txt");
	lay_file(upper, "docs/guide.txt", "guide v1 agent\n");
	/* A copy-up the agent never changed, then changed by the person: no change. */
	lay_copyup(lower, "src/main.c", upper, "src/main.c");
	both_file("docs/guide.txt", "guide v2 person\n");
	both_file("src/main.c", "person's main\n");
	commit_lower_again();

	struct changes *cs = compute();
	const struct change *c;
	ck_assert_ptr_nonnull(c = find(cs, "docs/guide.txt"));
	ck_assert_uint_eq(c->flags, CHANGE_CONFLICT);
	ck_assert_str_eq(c->origin, "docs/guide.txt");
	ck_assert_ptr_null(find(cs, "src/main.c"));
	ck_assert_ptr_nonnull(c = find(cs, ".env"));
	ck_assert_uint_eq(c->flags, CHANGE_HIDDEN_NAME);
	ck_assert_ptr_nonnull(c = find(cs, "config/secret.txt"));
	ck_assert_uint_eq(c->flags, CHANGE_HIDDEN_NAME);
	ck_assert_ptr_nonnull(c = find(cs, "build/new.o"));
	ck_assert_uint_eq(c->flags, CHANGE_IGNORED);
	ck_assert_ptr_nonnull(c = find(cs, "build/stale.o"));
	ck_assert_uint_eq(c->flags, CHANGE_IGNORED);
	ck_assert_ptr_nonnull(c = find(cs, "src/main.o"));
	ck_assert_uint_eq(c->flags, CHANGE_IGNORED);
	ck_assert_ptr_nonnull(c = find(cs, "vendor.o"));
	ck_assert_uint_eq(c->flags, 0);
	ck_assert_ptr_null(find(cs, "old/.env"));
	ck_assert_ptr_null(find(cs, "old/secret.key"));
	ck_assert_ptr_null(find(cs, "renamed/.env"));
	ck_assert_ptr_null(find(cs, "renamed/secret.key"));

	size_t len;
	char *text = make_patch(cs, &len);
	ck_assert_uint_eq(strlen(text), len);
	ck_assert_ptr_null(strstr(text, "SECRET"));
	ck_assert_ptr_null(strstr(text, "secret"));
	ck_assert_ptr_null(strstr(text, "KEYBYTES"));
	ck_assert_ptr_null(strstr(text, ".env"));
	ck_assert_ptr_null(strstr(text, "guide"));
	ck_assert_ptr_nonnull(
	    strstr(text, "rename from old/sub/c.txt\nrename to renamed/sub/c.txt\n"));
	ck_assert_ptr_nonnull(strstr(text, "GIT binary patch"));
	ck_assert_ptr_nonnull(strstr(text, "new file mode 120000"));
	ck_assert_ptr_nonnull(strstr(text, "old mode 100644\nnew mode 100755\n"));
	apply_and_compare(text, len);
	free(text);

	/* For status: renames paired, the symlink that became a file one TYPECHANGE. */
	struct patch *p = NULL;
	ck_assert_int_eq(patch_new(cs, PATCH_TYPECHANGE, NULL, NULL, &p), 0);
	git_diff *d = patch_diff(p);
	int renames = 0, typechanges = 0;
	for (size_t i = 0; i < git_diff_num_deltas(d); i++) {
		const git_diff_delta *dl = git_diff_get_delta(d, i);
		if (dl->status == GIT_DELTA_RENAMED) {
			renames++;
			ck_assert_str_eq(dl->old_file.path + 4, dl->new_file.path + 8);
		}
		if (dl->status == GIT_DELTA_TYPECHANGE) {
			typechanges++;
			ck_assert_str_eq(dl->new_file.path, "link");
		}
	}
	ck_assert_int_eq(renames, 2); /* b.txt (edited) and sub/c.txt */
	ck_assert_int_eq(typechanges, 1);
	patch_free(p);
	changes_free(cs);
}
END_TEST

/* Only a renamed directory: each visible file moves, hidden ones stay put. */
START_TEST(test_rename_dir_with_hidden)
{
	both_file("keep.txt", "keep\n");
	both_file("lib/x.c", "x\n");
	both_file("lib/deep/y.c", "y\n");
	both_file("lib/.env", "S=1\n");
	both_file("lib/deep/secret.pem", "PEM\n");
	commit_lower();
	lay_whiteout(upper, "", "lib");
	lay_redirect(upper, "src", "lib");
	/* and a directory inside moved again, out of the renamed one */
	lay_whiteout(upper, "src", "deep");
	lay_redirect(upper, "deeper", "lib/deep");
	lay_rm(expect, "lib/x.c");
	lay_rm(expect, "lib/deep/y.c");
	lay_file(expect, "src/x.c", "x\n");
	lay_file(expect, "deeper/y.c", "y\n");

	struct changes *cs = compute();
	ck_assert_uint_eq(cs->count, 4);
	for (size_t i = 0; i < cs->count; i++) {
		ck_assert_ptr_null(strstr(cs->items[i].path, ".env"));
		ck_assert_ptr_null(strstr(cs->items[i].path, "secret"));
		ck_assert_uint_eq(cs->items[i].flags, 0);
	}
	size_t len;
	char *text = make_patch(cs, &len);
	ck_assert_ptr_nonnull(strstr(text, "rename from lib/deep/y.c\nrename to deeper/y.c\n"));
	ck_assert_ptr_null(strstr(text, "PEM"));
	apply_and_compare(text, len);
	free(text);
	changes_free(cs);
}
END_TEST

/* A copy-up moved and edited while the person changed its source: both paths
 * are part of the conflict, and the patch neither adds nor deletes. */
START_TEST(test_conflict_moved_copy)
{
	both_file("a.txt", "one\n");
	both_file("other.txt", "other\n");
	commit_lower();
	lay_copyup(lower, "a.txt", upper, "b.txt");
	lay_whiteout(upper, "", "a.txt");
	lay_copyup(lower, "other.txt", upper, "other.txt");
	lay_file(upper, "other.txt", "other, edited\n");
	lay_file(expect, "other.txt", "other, edited\n");
	both_file("a.txt", "one, edited by the person\n");
	commit_lower_again();

	struct changes *cs = compute();
	ck_assert_uint_eq(cs->count, 3);
	ck_assert_uint_eq(find(cs, "a.txt")->flags, CHANGE_CONFLICT);
	ck_assert_uint_eq(find(cs, "b.txt")->flags, CHANGE_CONFLICT);
	ck_assert_str_eq(find(cs, "b.txt")->origin, "a.txt");
	ck_assert_uint_eq(find(cs, "other.txt")->flags, 0);
	size_t len;
	char *text = make_patch(cs, &len);
	ck_assert_ptr_null(strstr(text, "a.txt"));
	apply_and_compare(text, len);
	free(text);
	changes_free(cs);

	/* The person deleting the source is a conflict too. */
	lay_sh("cd '%s' && git rm -q a.txt", lower);
	lay_rm(expect, "a.txt");
	commit_lower_again();
	cs = compute();
	ck_assert_uint_eq(find(cs, "b.txt")->flags, CHANGE_CONFLICT);
	changes_free(cs);
}
END_TEST

START_TEST(test_no_changes_empty_patch)
{
	both_file("a.txt", "one\n");
	commit_lower();
	/* an upper directory merging with the lower, holding nothing changed */
	lay_dir(upper, "sub");
	lay_copyup(lower, "a.txt", upper, "a.txt");
	struct changes *cs = compute();
	ck_assert_uint_eq(cs->count, 0);
	size_t len;
	char *text = make_patch(cs, &len);
	ck_assert_uint_eq(len, 0);
	ck_assert_str_eq(text, "");
	free(text);
	changes_free(cs);
}
END_TEST

/* A binary file added, deleted and a text file becoming binary. */
START_TEST(test_binary_add_delete)
{
	unsigned char b[3000];
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (unsigned char)(i * 13 % 251);
	both_bytes("gone.bin", b, sizeof(b), 0644);
	both_file("text.txt", "text\n");
	commit_lower();
	lay_whiteout(upper, "", "gone.bin");
	lay_rm(expect, "gone.bin");
	b[0] = 0;
	lay_bytes(upper, "new.bin", b, sizeof(b), 0755);
	lay_bytes(expect, "new.bin", b, sizeof(b), 0755);
	lay_copyup(lower, "text.txt", upper, "text.txt");
	lay_bytes(upper, "text.txt", "te\0xt\n", 6, 0644);
	lay_bytes(expect, "text.txt", "te\0xt\n", 6, 0644);
	struct changes *cs = compute();
	size_t len;
	char *text = make_patch(cs, &len);
	apply_and_compare(text, len);
	free(text);
	changes_free(cs);
}
END_TEST

static Suite *patch_suite(void)
{
	Suite *s = suite_create("patch");
	TCase *tc = tcase_create("apply");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_full_scenario);
	tcase_add_test(tc, test_rename_dir_with_hidden);
	tcase_add_test(tc, test_conflict_moved_copy);
	tcase_add_test(tc, test_no_changes_empty_patch);
	tcase_add_test(tc, test_binary_add_delete);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(patch_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
