/*
 * test_policy_default.c - the built-in default policy (policy/default.yml).
 *
 * Hand-written tables of decisions, plus a sweep over every rule of the embedded
 * file: a sample name is built from each secret and allowlist pattern and checked
 * at the root, nested, in other letter cases and inside the allowlisted trees.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

static struct policy *dflt;

static void setup(void)
{
	ck_assert_int_eq(policy_new_default(&dflt), 0);
}

static void teardown(void)
{
	policy_free(dflt);
}

static const char *name(enum policy_decision d)
{
	return d == POLICY_HIDDEN ? "hidden" : d == POLICY_READONLY ? "read-only" : "visible";
}

static void expect(const char *path, bool is_dir, enum policy_decision want)
{
	enum policy_decision got = policy_decide_path(dflt, path, is_dir, 0);
	ck_assert_msg(got == want, "%s%s: %s, expected %s", path, is_dir ? "/" : "", name(got),
		      name(want));
}

struct want {
	const char *path;
	bool dir;
	enum policy_decision d;
};

static const struct want table[] = {
    /* .git, at the root and nested, files inside */
    {".git", true, POLICY_HIDDEN},
    {".git/config", false, POLICY_HIDDEN},
    {".GIT", true, POLICY_HIDDEN},
    {"vendor/lib/.git", false, POLICY_HIDDEN},
    /* the repository's own policy at the root; elsewhere it is a mere dotfile */
    {".agentfs.yml", false, POLICY_HIDDEN},
    {".AGENTFS.YML", false, POLICY_HIDDEN},
    /* the secrets named in the design, in several cases and depths */
    {".env", false, POLICY_HIDDEN},
    {".ENV", false, POLICY_HIDDEN},
    {"src/.env", false, POLICY_HIDDEN},
    {".env.local", false, POLICY_HIDDEN},
    {".Env.Production", false, POLICY_HIDDEN},
    {"server.pem", false, POLICY_HIDDEN},
    {"certs/SERVER.PEM", false, POLICY_HIDDEN},
    {"tls.key", false, POLICY_HIDDEN},
    {"id_rsa", false, POLICY_HIDDEN},
    {"ID_RSA", false, POLICY_HIDDEN},
    {"home/.ssh/id_ed25519", false, POLICY_HIDDEN},
    {"keys/id_ecdsa.pub", false, POLICY_HIDDEN},
    {"id_dsa", false, POLICY_HIDDEN},
    {"store.p12", false, POLICY_HIDDEN},
    {"store.pfx", false, POLICY_HIDDEN},
    {"app.jks", false, POLICY_HIDDEN},
    {"release.keystore", false, POLICY_HIDDEN},
    {".npmrc", false, POLICY_HIDDEN},
    {".pypirc", false, POLICY_HIDDEN},
    {".netrc", false, POLICY_HIDDEN},
    {".git-credentials", false, POLICY_HIDDEN},
    {".aws", true, POLICY_HIDDEN},
    {".aws/credentials", false, POLICY_HIDDEN},
    {".ssh", true, POLICY_HIDDEN},
    {".docker/config.json", false, POLICY_HIDDEN},
    {"ci/.docker/config.json", false, POLICY_HIDDEN},
    {".kube/config", false, POLICY_HIDDEN},
    {"deploy/kubeconfig", false, POLICY_HIDDEN},
    {"infra/terraform.tfstate", false, POLICY_HIDDEN},
    {"infra/terraform.tfstate.backup", false, POLICY_HIDDEN},
    {"infra/prod.tfvars", false, POLICY_HIDDEN},
    {"config/credentials.json", false, POLICY_HIDDEN},
    {"config/Credentials.yml", false, POLICY_HIDDEN},
    {"config/secrets.yaml", false, POLICY_HIDDEN},
    {"config/credentials.yml.enc", false, POLICY_HIDDEN},
    {".streamlit/secrets.toml", false, POLICY_HIDDEN},
    {"Downloads/credentials.csv", false, POLICY_HIDDEN},
    {"jenkins/credentials.xml", false, POLICY_HIDDEN},
    {"app/secrets.env", false, POLICY_HIDDEN},
    /* source files named for what they handle are not secrets */
    {"cli/secrets.c", false, POLICY_VISIBLE},
    {"cli/secrets.h", false, POLICY_VISIBLE},
    {"botocore/credentials.py", false, POLICY_VISIBLE},
    {"lib/Credentials.java", false, POLICY_VISIBLE},
    {"pkg/secrets.go", false, POLICY_VISIBLE},
    {"src/secrets.rs", false, POLICY_VISIBLE},
    {"web/credentials.ts", false, POLICY_VISIBLE},
    {".yarnrc.yml", false, POLICY_HIDDEN},
    {".envrc", false, POLICY_HIDDEN},
    /* dotfiles in general */
    {".bashrc", false, POLICY_HIDDEN},
    {"src/.hidden", false, POLICY_HIDDEN},
    {".vscode", true, POLICY_HIDDEN},
    {".idea/workspace.xml", false, POLICY_HIDDEN},
    {".cache", true, POLICY_HIDDEN},
    {".terraform", true, POLICY_HIDDEN},
    /* the allowlist, and its letter case is exact (fail closed) */
    {".gitignore", false, POLICY_VISIBLE},
    {"sub/dir/.gitignore", false, POLICY_VISIBLE},
    {".GITIGNORE", false, POLICY_HIDDEN},
    {".gitattributes", false, POLICY_VISIBLE},
    {".gitmodules", false, POLICY_VISIBLE},
    {".editorconfig", false, POLICY_VISIBLE},
    {".clang-format", false, POLICY_VISIBLE},
    {".prettierrc.json", false, POLICY_VISIBLE},
    {".eslintrc.cjs", false, POLICY_VISIBLE},
    {".github", true, POLICY_VISIBLE},
    {".github/workflows/ci.yml", false, POLICY_VISIBLE},
    {".github/.secret", false, POLICY_HIDDEN},
    {".github/deploy.pem", false, POLICY_HIDDEN},
    {".cargo/config.toml", false, POLICY_VISIBLE},
    {".cargo/credentials.toml", false, POLICY_HIDDEN},
    {".cargo/credentials", false, POLICY_HIDDEN},
    /* dependency trees, with everything inside except secrets */
    {"node_modules", true, POLICY_VISIBLE},
    {"node_modules/.bin", true, POLICY_VISIBLE},
    {"node_modules/.bin/tsc", false, POLICY_VISIBLE},
    {"web/node_modules/.package-lock.json", false, POLICY_VISIBLE},
    {"node_modules/x/.npmrc", false, POLICY_HIDDEN},
    {"node_modules/x/.env", false, POLICY_HIDDEN},
    {"node_modules/x/test/fixture.pem", false, POLICY_HIDDEN},
    {".venv", true, POLICY_VISIBLE},
    {".venv/lib/python3.11/site-packages/numpy/.libs/x.so", false, POLICY_VISIBLE},
    {".venv/.env", false, POLICY_HIDDEN},
    {"py/.tox/py311/.bin", true, POLICY_VISIBLE},
    {".mypy_cache/3.11/x.json", false, POLICY_VISIBLE},
    {".pytest_cache/v/cache/lastfailed", false, POLICY_VISIBLE},
    /* ordinary files */
    {"README.md", false, POLICY_VISIBLE},
    {"src/main.c", false, POLICY_VISIBLE},
    {"src", true, POLICY_VISIBLE},
    {"keyboard.c", false, POLICY_VISIBLE},
    {"docs/env.md", false, POLICY_VISIBLE},
    {"", true, POLICY_VISIBLE},
};

START_TEST(test_table)
{
	expect(table[_i].path, table[_i].dir, table[_i].d);
}
END_TEST

/* A concrete name for a pattern: wildcards become letters, anchors and '**' go.
 * Sets *dir for a trailing '/'. */
static void sample(const char *pattern, char *out, size_t len, bool *dir)
{
	size_t o = 0, pl = strlen(pattern);
	*dir = pattern[pl - 1] == '/';
	if (pattern[0] == '/')
		pattern++;
	while (strncmp(pattern, "**/", 3) == 0)
		pattern += 3;
	for (const char *s = pattern; *s && o + 2 < len; s++) {
		if (*s == '/' && s[1] == '\0')
			break;
		out[o++] = (*s == '*' || *s == '?') ? 'x' : *s;
		if (s[0] == '*' && s[1] == '*')
			s++;
	}
	out[o] = '\0';
}

static void upcase(char *s)
{
	for (; *s; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
}

/* Every secret of the file: hidden at the root, nested, in capitals, and inside
 * each allowlisted tree. */
START_TEST(test_every_secret)
{
	static const char *const trees[] = {
	    "", "src/deep/", "node_modules/pkg/", ".venv/lib/", ".github/", ".cargo/", ".tox/x/"};
	size_t nsecret = 0;
	for (size_t i = 0; i < policy_rule_count(dflt); i++) {
		struct policy_rule_info r;
		ck_assert_int_eq(policy_rule_get(dflt, i, &r), 0);
		if (!r.protect)
			continue;
		nsecret++;
		ck_assert_msg(r.casefold, "%s (%s) must ignore letter case", r.pattern, r.origin);
		ck_assert_str_eq(r.action, "hide");
		char s[256], path[512];
		bool dir;
		sample(r.pattern, s, sizeof(s), &dir);
		bool anchored = r.pattern[0] == '/';
		for (size_t t = 0; t < (anchored ? 1 : sizeof(trees) / sizeof(trees[0])); t++) {
			snprintf(path, sizeof(path), "%s%s", trees[t], s);
			expect(path, dir, POLICY_HIDDEN);
			upcase(path);
			expect(path, dir, POLICY_HIDDEN);
		}
	}
	ck_assert_uint_ge(nsecret, 30);
}
END_TEST

/* Every allowlist entry: visible at the root and nested (or, for a directory,
 * the directory and a file inside), hidden in capitals when it is a dotfile. */
START_TEST(test_every_allowed)
{
	size_t nshow = 0;
	for (size_t i = 0; i < policy_rule_count(dflt); i++) {
		struct policy_rule_info r;
		policy_rule_get(dflt, i, &r);
		if (strcmp(r.action, "show") != 0)
			continue;
		nshow++;
		ck_assert_msg(!r.casefold, "%s: show rules match case exactly", r.pattern);
		char s[256], path[512];
		bool dir;
		sample(r.pattern, s, sizeof(s), &dir);
		expect(s, dir, POLICY_VISIBLE);
		snprintf(path, sizeof(path), "a/b/%s", s);
		expect(path, dir, POLICY_VISIBLE);
		if (dir) {
			snprintf(path, sizeof(path), "%s/file.txt", s);
			expect(path, false, POLICY_VISIBLE);
		}
		if (s[0] == '.') {
			upcase(s);
			expect(s, dir, POLICY_HIDDEN);
		}
	}
	ck_assert_uint_ge(nshow, 40);
}
END_TEST

START_TEST(test_settings)
{
	ck_assert_int_eq(policy_symlinks_mode(dflt), POLICY_SYMLINKS_HIDE);
	ck_assert_int_eq(policy_git_mode(dflt), POLICY_GIT_PRIVATE);
	ck_assert_uint_eq(policy_max_file_size(dflt), 0);
	char d1[33], d2[33];
	policy_digest(dflt, d1);
	ck_assert_uint_eq(strlen(d1), 32);
	ck_assert_uint_eq(strspn(d1, "0123456789abcdef"), 32);
	struct policy *again;
	ck_assert_int_eq(policy_new_default(&again), 0);
	policy_digest(again, d2);
	ck_assert_str_eq(d1, d2);
	policy_free(again);
}
END_TEST

START_TEST(test_explain_origin)
{
	enum policy_decision d;
	char origin[128];
	policy_explain(dflt, "src/.env", false, &d, origin, sizeof(origin));
	ck_assert_int_eq(d, POLICY_HIDDEN);
	ck_assert_msg(strncmp(origin, "built-in default:", 17) == 0, "%s", origin);
	ck_assert_int_gt(atoi(origin + 17), 20);
	/* Everything inside .git is decided by the .git rule itself. */
	char o2[128];
	policy_explain(dflt, ".git/hooks/pre-commit", false, &d, o2, sizeof(o2));
	ck_assert_int_eq(d, POLICY_HIDDEN);
	policy_explain(dflt, ".git", true, &d, origin, sizeof(origin));
	ck_assert_str_eq(origin, o2);
	policy_explain(dflt, "src/main.c", false, &d, origin, sizeof(origin));
	ck_assert_int_eq(d, POLICY_VISIBLE);
	ck_assert_str_eq(origin, "(no rule)");
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("policy-default");
	TCase *tc = tcase_create("default");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_table, 0, (int)(sizeof(table) / sizeof(table[0])));
	tcase_add_test(tc, test_every_secret);
	tcase_add_test(tc, test_every_allowed);
	tcase_add_test(tc, test_settings);
	tcase_add_test(tc, test_explain_origin);
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
