/*
 * test_policy_match.c - pattern semantics, checked against git itself.
 *
 * Each table is a .gitignore and a list of paths.  The paths are created in a
 * scratch repository and `git check-ignore --no-index` says which are ignored; the
 * same patterns as a `hide:` list (case: sensitive, no built-in) must hide exactly
 * those paths via policy_decide_path().
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/policy.h"

struct table {
	const char *name;
	const char *const *patterns; /* NULL-terminated */
	const char *const *paths;    /* NULL-terminated; a trailing '/' makes a directory */
};

static const char *const basic_patterns[] = {
    "*.log",	"/build",   "docs/",	 "!keep.log", "**/cache", "a/**/z",
    "foo/**",	".hidden*", "sub/*.txt", "[abc]x?",   "\\!bang",  "lit\\*star",
    "deep/**/", "*.tar.gz", "x[!0-9]y",	 "pre*fix",   "?",	  NULL,
};
static const char *const basic_paths[] = {
    "app.log",
    "dir/app.log",
    "keep.log",
    "dir/keep.log",
    "APP.LOG",
    "build/",
    "src/build/",
    "build.txt",
    "docs/",
    "docs/readme.md",
    "src/docs",
    "src/docs2/",
    "cache/",
    "x/y/cache",
    "x/cachex",
    "a/z",
    "a/b/z",
    "a/b/c/z",
    "b/a/z",
    "a/zz",
    "foo/",
    "foo/bar",
    "foo/sub/",
    "foo/sub/baz",
    "foox/bar",
    ".hidden",
    ".hiddenfile",
    "x/.hidden2",
    ".HIDDEN",
    "sub/a.txt",
    "sub/deep/a.txt",
    "other/sub/a.txt",
    "ax1",
    "bxx",
    "dx1",
    "q/cx9",
    "!bang",
    "bang",
    "lit*star",
    "litXstar",
    "deep/",
    "deep/q/",
    "deep/q/f",
    "deep/f",
    "r/deep/q/",
    "a.tar.gz",
    "a.tar.gzip",
    "xay",
    "x5y",
    "prefix",
    "pre-and-fix",
    "prefixx",
    "p",
    "pp",
    "m/n/o",
    NULL,
};

static const char *const negation_patterns[] = {
    "*", "!*/", "!*.c", "/top/*.c", "mid/dir/", "!mid/dir/keep", "*.h", "!inc/**/*.h", NULL,
};
static const char *const negation_paths[] = {
    "main.c",  "main.h",   "README",	   "src/",	  "src/x.c",
    "src/x.h", "top/",	   "top/a.c",	   "top/b/",	  "top/b/a.c",
    "mid/",    "mid/dir/", "mid/dir/keep", "mid/dir2/",	  "mid/dir2/keep.c",
    "inc/",    "inc/a.h",  "inc/x/y/b.h",  "inc/x/y/b.o", NULL,
};

static const char *const dotfile_patterns[] = {
    ".*",	   "!.gitignore",     ".env",	       ".env.*",
    "!.github/",   "node_modules/",   "!**/vendor/**", "vendor/secret*",
    "/.root-only", "**/.kube/config", "id_rsa*",       NULL,
};
static const char *const dotfile_paths[] = {
    ".gitignore",
    "x/.gitignore",
    ".env",
    ".env.local",
    "sub/.env",
    "sub/.env.prod",
    ".envrc",
    ".github/",
    ".github/wf.yml",
    ".github/.secret",
    "node_modules/",
    "node_modules/p/i.js",
    "x/node_modules/",
    "vendor/",
    "vendor/.x",
    "vendor/a/secretive",
    "vendor/secret.txt",
    "a/vendor/secret.txt",
    ".root-only",
    "d/.root-only",
    ".kube/",
    ".kube/config",
    "a/b/.kube/",
    "a/b/.kube/config",
    "id_rsa",
    "id_rsa.pub",
    "keys/id_rsa",
    "xid_rsa",
    NULL,
};

static const char *const anchoring_patterns[] = {
    "/a/b", "c/d", "e/", "/f/", "g/*/h", "**/i/j", "k/**/l/**/m", "/n/**", "o/**/", NULL,
};
static const char *const anchoring_paths[] = {
    "a/",      "a/b",	"x/a/b", "c/",	  "c/d",       "x/c/d",	 "e/",	    "x/e/", "x/e/y",
    "ex/",     "f/",	"x/f/",	 "g/",	  "g/x/",      "g/x/h",	 "g/x/y/h", "i/",   "i/j",
    "x/y/i/j", "k/",	"k/l/",	 "k/l/m", "k/x/l/y/m", "k/m",	 "n/",	    "n/w",  "n/x/y",
    "x/n/",    "x/n/x", "o/",	 "o/p/",  "o/p/q",     "o/file", NULL,
};

static const struct table tables[] = {
    {"basic", basic_patterns, basic_paths},
    {"negation", negation_patterns, negation_paths},
    {"dotfiles", dotfile_patterns, dotfile_paths},
    {"anchoring", anchoring_patterns, anchoring_paths},
};

static void run(const char *cmd)
{
	int rc = system(cmd);
	ck_assert_msg(rc == 0, "command failed (%d): %s", rc, cmd);
}

static void make_path(const char *root, const char *path)
{
	char buf[4096];
	size_t len = strlen(path);
	bool dir = path[len - 1] == '/';
	snprintf(buf, sizeof(buf), "%s/%s", root, path);
	/* mkdir -p for the parents (and the path itself if a directory) */
	for (char *s = buf + strlen(root) + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		ck_assert(mkdir(buf, 0755) == 0 || errno == EEXIST);
		*s = '/';
	}
	if (!dir) {
		FILE *f = fopen(buf, "w");
		ck_assert_msg(f != NULL, "create %s", buf);
		fclose(f);
	}
}

/* The YAML hide list for @patterns, every item double-quoted. */
static char *yaml_for(const char *const *patterns)
{
	char *buf;
	size_t size;
	FILE *f = open_memstream(&buf, &size);
	fprintf(f, "version: 1\nextends: none\ncase: sensitive\nhide:\n");
	for (size_t i = 0; patterns[i]; i++) {
		fputs("  - \"", f);
		for (const char *s = patterns[i]; *s; s++) {
			if (*s == '"' || *s == '\\')
				fputc('\\', f);
			fputc(*s, f);
		}
		fputs("\"\n", f);
	}
	fclose(f);
	return buf;
}

static void check_table(const struct table *t)
{
	char root[] = "/tmp/agentfs-policy-git-XXXXXX";
	ck_assert(mkdtemp(root) != NULL);
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "git init -q '%s'", root);
	run(cmd);

	char path[4200];
	snprintf(path, sizeof(path), "%s.paths", root);
	FILE *f = fopen(path, "w");
	for (size_t i = 0; t->paths[i]; i++) {
		make_path(root, t->paths[i]);
		size_t len = strlen(t->paths[i]);
		if (t->paths[i][len - 1] == '/')
			len--;
		fprintf(f, "%.*s\n", (int)len, t->paths[i]);
	}
	fclose(f);
	/* After the paths: a table may list .gitignore itself. */
	snprintf(path, sizeof(path), "%s/.gitignore", root);
	f = fopen(path, "w");
	for (size_t i = 0; t->patterns[i]; i++)
		fprintf(f, "%s\n", t->patterns[i]);
	fclose(f);

	/* Exit status 1 means "nothing ignored"; only 128 is an error. */
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && git -c core.ignorecase=false check-ignore "
		 "--no-index --stdin < '%s.paths' > '%s.out'; test $? -le 1",
		 root, root, root);
	run(cmd);

	char *yaml = yaml_for(t->patterns);
	struct policy *p = NULL;
	struct policy_error err = {0};
	int rc = policy_load_string(t->name, yaml, strlen(yaml), &p, &err);
	ck_assert_msg(rc == 0, "%s:%u:%u: %s", err.file, err.line, err.column, err.message);
	free(yaml);

	snprintf(path, sizeof(path), "%s.out", root);
	char *ignored = NULL;
	size_t isize = 0;
	f = fopen(path, "r");
	ck_assert(f != NULL);
	char line[4096];
	FILE *acc = open_memstream(&ignored, &isize);
	fputc('\n', acc);
	while (fgets(line, sizeof(line), f))
		fputs(line, acc);
	fclose(acc);
	fclose(f);

	int mismatches = 0;
	for (size_t i = 0; t->paths[i]; i++) {
		char q[4096];
		size_t len = strlen(t->paths[i]);
		bool dir = t->paths[i][len - 1] == '/';
		snprintf(q, sizeof(q), "%.*s", (int)(dir ? len - 1 : len), t->paths[i]);
		char needle[4100];
		snprintf(needle, sizeof(needle), "\n%s\n", q);
		bool git_says = strstr(ignored, needle) != NULL;
		bool we_say = policy_decide_path(p, q, dir, 0) == POLICY_HIDDEN;
		if (git_says != we_say) {
			fprintf(stderr, "%s: %s%s: git %s, agentfs %s\n", t->name, q,
				dir ? "/" : "", git_says ? "ignores" : "keeps",
				we_say ? "hides" : "shows");
			mismatches++;
		}
	}
	free(ignored);
	policy_free(p);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.paths' '%s.out'", root, root, root);
	run(cmd);
	ck_assert_msg(mismatches == 0, "%s: %d paths decided unlike git", t->name, mismatches);
}

START_TEST(test_against_git)
{
	check_table(&tables[_i]);
}
END_TEST

/* A table whose verdicts are all "kept" would prove nothing: make sure each table
 * hides some and shows some. */
START_TEST(test_tables_discriminate)
{
	const struct table *t = &tables[_i];
	char *yaml = yaml_for(t->patterns);
	struct policy *p = NULL;
	struct policy_error err = {0};
	ck_assert_int_eq(policy_load_string(t->name, yaml, strlen(yaml), &p, &err), 0);
	free(yaml);
	int hidden = 0, shown = 0;
	for (size_t i = 0; t->paths[i]; i++) {
		char q[4096];
		size_t len = strlen(t->paths[i]);
		bool dir = t->paths[i][len - 1] == '/';
		snprintf(q, sizeof(q), "%.*s", (int)(dir ? len - 1 : len), t->paths[i]);
		if (policy_decide_path(p, q, dir, 0) == POLICY_HIDDEN)
			hidden++;
		else
			shown++;
	}
	policy_free(p);
	ck_assert_int_gt(hidden, 3);
	ck_assert_int_gt(shown, 3);
}
END_TEST

static struct policy *load(const char *yaml)
{
	struct policy *p = NULL;
	struct policy_error err = {0};
	int rc = policy_load_string("t.yml", yaml, strlen(yaml), &p, &err);
	ck_assert_msg(rc == 0, "%s:%u:%u: %s", err.file, err.line, err.column, err.message);
	return p;
}

static enum policy_decision decide(const struct policy *p, const char *path, bool dir)
{
	return policy_decide(p, path, strlen(path), dir, 0);
}

START_TEST(test_case_folding)
{
	struct policy *p =
	    load("extends: none\nhide: ['*.PEM', secret, 'id_*', 'a/B/c', '[x]y*z']\n"
		 "show: ['ok.pem']\n");
	ck_assert_int_eq(decide(p, "k.pem", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "d/K.Pem", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "SECRET", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "ID_RSA", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "A/b/C", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "XyQZ", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "secrets", false), POLICY_VISIBLE);
	/* show rules match exactly: another letter case stays hidden */
	ck_assert_int_eq(decide(p, "ok.pem", false), POLICY_VISIBLE);
	ck_assert_int_eq(decide(p, "OK.pem", false), POLICY_HIDDEN);
	policy_free(p);

	p = load("extends: none\ncase: sensitive\nhide: ['*.pem', secret]\n");
	ck_assert_int_eq(decide(p, "k.pem", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "k.PEM", false), POLICY_VISIBLE);
	ck_assert_int_eq(decide(p, "Secret", false), POLICY_VISIBLE);
	policy_free(p);
}
END_TEST

START_TEST(test_readonly_dimension)
{
	/* Hidden and read-only are separate questions: a later readonly rule does not
	 * reveal a hidden path, and '!' in readonly: makes writable again. */
	struct policy *p = load("extends: none\nhide: ['*.key']\nreadonly: ['**', '!src/**']\n");
	ck_assert_int_eq(decide(p, "a.key", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "README", false), POLICY_READONLY);
	ck_assert_int_eq(decide(p, "src/x.c", false), POLICY_VISIBLE);
	ck_assert_int_eq(decide(p, "src/x.key", false), POLICY_HIDDEN);
	ck_assert_int_eq(decide(p, "", true), POLICY_VISIBLE);
	policy_free(p);

	p = load("extends: none\nreadonly: ['vendor/']\nhide: ['vendor/private/']\n");
	ck_assert_int_eq(policy_decide_path(p, "vendor/a/b.c", false, 0), POLICY_READONLY);
	ck_assert_int_eq(policy_decide_path(p, "vendor/private/k", false, 0), POLICY_HIDDEN);
	ck_assert_int_eq(policy_decide_path(p, "vendorx/a", false, 0), POLICY_VISIBLE);
	/* policy_decide answers for the last component's own rules only */
	ck_assert_int_eq(decide(p, "vendor/a/b.c", false), POLICY_VISIBLE);
	policy_free(p);
}
END_TEST

START_TEST(test_max_file_size)
{
	struct policy *p = load("extends: none\nmax_file_size: 10K\n");
	ck_assert_uint_eq(policy_max_file_size(p), 10240);
	ck_assert_int_eq(policy_decide(p, "big", 3, false, 10240), POLICY_VISIBLE);
	ck_assert_int_eq(policy_decide(p, "big", 3, false, 10241), POLICY_HIDDEN);
	ck_assert_int_eq(policy_decide(p, "big", 3, true, 99999), POLICY_VISIBLE);
	policy_free(p);
	p = load("extends: none\nmax_file_size: 2G\n");
	ck_assert_uint_eq(policy_max_file_size(p), 2ull << 30);
	policy_free(p);
}
END_TEST

/* Many '**' against a deep path must stay cheap (no exponential backtracking). */
START_TEST(test_starstar_is_linear)
{
	struct policy *p =
	    load("extends: none\nhide: ['a/**/a/**/a/**/a/**/a/**/a/**/a/**/a/**/b']\n");
	char path[4096];
	size_t o = 0;
	for (int i = 0; i < 1000; i++)
		o += (size_t)snprintf(path + o, sizeof(path) - o, "a/");
	memcpy(path + o, "c", 2); /* a/a/.../a/c */
	ck_assert_int_eq(decide(p, path, false), POLICY_VISIBLE);
	memcpy(path + o, "b", 2); /* a/a/.../a/b */
	ck_assert_int_eq(decide(p, path, false), POLICY_HIDDEN);
	memcpy(path + 2 * 990, "b", 2); /* only 990 a's: still enough */
	ck_assert_int_eq(decide(p, path, false), POLICY_HIDDEN);
	memcpy(path, "b", 2); /* "b" alone: not enough a's */
	ck_assert_int_eq(decide(p, path, false), POLICY_VISIBLE);
	policy_free(p);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("policy-match");
	TCase *tc = tcase_create("git");
	tcase_set_timeout(tc, 60);
	size_t n = sizeof(tables) / sizeof(tables[0]);
	tcase_add_loop_test(tc, test_against_git, 0, (int)n);
	tcase_add_loop_test(tc, test_tables_discriminate, 0, (int)n);
	suite_add_tcase(s, tc);
	tc = tcase_create("semantics");
	tcase_add_test(tc, test_case_folding);
	tcase_add_test(tc, test_readonly_dimension);
	tcase_add_test(tc, test_max_file_size);
	tcase_add_test(tc, test_starstar_is_linear);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
