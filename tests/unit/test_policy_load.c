/*
 * test_policy_load.c - the YAML loader: errors with their exact place, layering
 * (built-in, user, repository, explicit) and the rule that a repository can only
 * tighten, and snapshots that reload to the same policy.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/policy.h"
#include "policy/rules.h"

/* ------------------------------------------------------------------ errors */

struct bad {
	const char *yaml;
	unsigned line, column;
	const char *message; /* a substring of the message */
};

static const struct bad bad[] = {
    {"version: 1\nhide: ['.x']\nreadonyl: ['y']\n", 3, 1,
     "unknown key 'readonyl' (did you mean 'readonly'?)"},
    {"symlink: hide\n", 1, 1, "(did you mean 'symlinks'?)"},
    {"colour: blue\n", 1, 1, "unknown key 'colour'"},
    {"version: 2\n", 1, 10, "unsupported version '2' (this agentfs reads version 1)"},
    {"version: [1]\n", 1, 10, "unsupported version"},
    {"hide: foo\n", 1, 7, "'hide' must be a list of patterns, not a scalar"},
    {"hide:\n  - ok\n  - 'a//b'\n", 3, 5, "bad pattern 'a//b': empty path component"},
    {"hide:\n  - ok\n  - \"[abc\"\n", 3, 5, "bad pattern '[abc': unterminated '['"},
    {"readonly: ['x/../y']\n", 1, 12, "bad pattern 'x/../y'"},
    {"hide: ['trail\\']\n", 1, 8, "trailing backslash"},
    {"hide: ['a\\/b']\n", 1, 8,
     "bad pattern 'a\\/b': '\\' before '/': a '/' always separates path components"},
    {"hide: ['a\\/']\n", 1, 8, "'\\' before '/'"},
    {"hide: ['/']\n", 1, 8, "bad pattern '/'"},
    {"hide:\n  - {a: b}\n", 2, 5, "'hide' items must be patterns (strings), not a mapping"},
    {"hide:\n  - *.pem\n", 2, 6, "quote patterns that start with '*'"},
    {"case: maybe\n", 1, 7, "'case' must be one of insensitive, sensitive, not 'maybe'"},
    {"git: yes\n", 1, 6, "'git' must be one of hidden, private, readonly, not 'yes'"},
    {"symlinks: [hide]\n", 1, 11, "'symlinks' must be one of hide, allow, not a list"},
    {"extends: nothing\n", 1, 10, "'extends' must be one of default, none"},
    {"max_file_size: 12X\n", 1, 16, "'max_file_size': expected a number of bytes"},
    {"max_file_size: 99999999999999999999\n", 1, 16,
     "'max_file_size': '99999999999999999999' is too large (at most 9223372036854775807 bytes"},
    {"max_file_size: 18446744073709551615\n", 1, 16,
     "'max_file_size': '18446744073709551615' is too large"},
    {"max_file_size: 9223372036854775808\n", 1, 16, "is too large"},
    {"max_file_size: 17179869184G\n", 1, 16, "'max_file_size': '17179869184G' is too large"},
    {"max_file_size: 8589934592G\n", 1, 16, "is too large"},
    {"max_file_size: 99999999999999999999X\n", 1, 16, "expected a number of bytes"},
    {"hide: []\nshow: []\nhide: []\n", 3, 1, "duplicate key 'hide'"},
    {"show: ['!x']\n", 1, 8, "'!' has no meaning in 'show'"},
    {"- a\n", 1, 1, "expected a mapping of policy keys"},
    {"hide: ['a'\n", 2, 1, "invalid YAML"},
    /* rules: is read from a workspace's snapshot alone */
    {"hide: ['a']\nrules:\n  - {action: show, pattern: a, origin: 'built-in default:62'}\n", 2, 1,
     "unknown key 'rules' (only a workspace's policy snapshot holds rules"},
    {"rules: []\n", 1, 1, "unknown key 'rules'"},
    {"rule: []\n", 1, 1, "unknown key 'rule'"},
    {"hide: ['a']\n---\nhide: ['b']\n", 3, 1, "more than one YAML document"},
    {"? [a]\n: b\n", 1, 3, "expected a key name, not a list"},
};

/* Errors of the snapshot form (policy_load_snapshot_string). */
static const struct bad bad_snapshot[] = {
    {"rules:\n  - {action: hide}\n", 2, 5, "a rule needs both 'action' and 'pattern'"},
    {"rules:\n  - {action: hide, patern: x}\n", 2, 20, "(did you mean 'pattern'?)"},
    {"rules:\n  - {action: conceal, pattern: x}\n", 2, 14, "'action' must be one of"},
    {"rules:\n  - {action: hide, pattern: x, protect: maybe}\n", 2, 41, "'protect'"},
    {"rules: [x]\n", 1, 9, "'rules' items must be mappings"},
    {"rulez: []\n", 1, 1, "unknown key 'rulez' (did you mean 'rules'?)"},
};

static void check_error(const struct bad *b, bool snapshot)
{
	struct policy *p = NULL;
	struct policy_error err = {0};
	int rc =
	    snapshot
		? policy_load_snapshot_string("repo/policy.yml", b->yaml, strlen(b->yaml), &p, &err)
		: policy_load_string("repo/policy.yml", b->yaml, strlen(b->yaml), &p, &err);
	ck_assert_msg(rc < 0, "accepted: %s", b->yaml);
	ck_assert_ptr_null(p);
	ck_assert_str_eq(err.file, "repo/policy.yml");
	ck_assert_msg(err.line == b->line && err.column == b->column,
		      "%s: at %u:%u, expected %u:%u (%s)", b->yaml, err.line, err.column, b->line,
		      b->column, err.message);
	ck_assert_msg(strstr(err.message, b->message), "message '%s' lacks '%s'", err.message,
		      b->message);
	ck_assert_ptr_null(strchr(err.message, '\n'));
}

START_TEST(test_errors)
{
	check_error(&bad[_i], false);
}
END_TEST

START_TEST(test_snapshot_errors)
{
	check_error(&bad_snapshot[_i], true);
}
END_TEST

START_TEST(test_missing_file)
{
	struct policy *p = NULL;
	struct policy_error err = {0};
	ck_assert_int_eq(policy_load_file("/nonexistent/agentfs.yml", &p, &err), -ENOENT);
	ck_assert_str_eq(err.file, "/nonexistent/agentfs.yml");
	ck_assert_uint_eq(err.line, 0);
	ck_assert_ptr_nonnull(strstr(err.message, "No such file"));
}
END_TEST

START_TEST(test_empty_and_null_lists)
{
	struct policy *p = NULL, *d = NULL;
	struct policy_error err = {0};
	ck_assert_int_eq(policy_load_string("e.yml", "", 0, &p, &err), 0);
	ck_assert_int_eq(policy_new_default(&d), 0);
	char a[33], b[33];
	policy_digest(p, a);
	policy_digest(d, b);
	ck_assert_str_eq(a, b); /* an empty file extends the default and adds nothing */
	policy_free(p);
	const char *y = "version: 1\nextends: none\nhide:\nshow: ~\n";
	ck_assert_int_eq(policy_load_string("e.yml", y, strlen(y), &p, &err), 0);
	ck_assert_uint_eq(policy_rule_count(p), 0);
	policy_free(p);
	policy_free(d);
}
END_TEST

/* Collections nested deeper than a policy needs are refused before libyaml's
 * quadratic work on them (a repository's .agentfs.yml of 200 KB took 25 s):
 * the error names the first level too deep.  Up to the limit, the file is read
 * as any other. */
START_TEST(test_nesting_refused)
{
	size_t depth = 100000;
	char *y = malloc(6 + 2 * depth + 2);
	ck_assert_ptr_nonnull(y);
	memcpy(y, "hide: ", 6);
	memset(y + 6, '[', depth);
	memset(y + 6 + depth, ']', depth);
	memcpy(y + 6 + 2 * depth, "\n", 2);
	struct policy *p = NULL;
	struct policy_error err = {0};
	ck_assert_int_eq(policy_load_string("deep.yml", y, 6 + 2 * depth + 1, &p, &err), -EINVAL);
	ck_assert_ptr_null(p);
	ck_assert_str_eq(err.message, "nested deeper than 16 levels");
	ck_assert_uint_eq(err.line, 1);
	ck_assert_uint_eq(err.column, 6 + 16); /* the root mapping is the first level */
	/* 16 levels: a wrong type, not too deep */
	strcpy(y, "hide: [[[[[[[[[[[[[[[a]]]]]]]]]]]]]]]\n");
	ck_assert_int_eq(policy_load_string("deep.yml", y, strlen(y), &p, &err), -EINVAL);
	ck_assert_msg(strstr(err.message, "must be patterns"), "%s", err.message);
	/* a block mapping nested as deep */
	strcpy(y, "a:\n");
	for (int i = 1; i < 17; i++)
		sprintf(y + strlen(y), "%*sa:\n", 2 * i, "");
	ck_assert_int_eq(policy_load_string("deep.yml", y, strlen(y), &p, &err), -EINVAL);
	ck_assert_str_eq(err.message, "nested deeper than 16 levels");
	/* what a policy needs loads */
	strcpy(y, "version: 1\nhide: [a, [b]]\n");
	ck_assert_int_eq(policy_load_string("deep.yml", y, strlen(y), &p, &err), -EINVAL);
	ck_assert_msg(strstr(err.message, "must be patterns"), "%s", err.message);
	strcpy(y, "version: 1\nhide: [a, 'b/c']\nreadonly:\n  - d\n");
	ck_assert_int_eq(policy_load_string("deep.yml", y, strlen(y), &p, &err), 0);
	ck_assert_int_eq(policy_decide_path(p, "b/c", false, 0), POLICY_HIDDEN);
	policy_free(p);
	free(y);
}
END_TEST

/* The largest file size is the largest limit, with or without a suffix. */
START_TEST(test_max_file_size_limit)
{
	static const char *const ok[] = {"max_file_size: 9223372036854775807\n",
					 "max_file_size: 8589934591G\n"};
	static const uint64_t want[] = {9223372036854775807ull, 8589934591ull << 30};
	for (size_t i = 0; i < 2; i++) {
		struct policy *p = NULL;
		struct policy_error err = {0};
		ck_assert_msg(policy_load_string("p.yml", ok[i], strlen(ok[i]), &p, &err) == 0,
			      "%s: %s", ok[i], err.message);
		ck_assert_uint_eq(policy_max_file_size(p), want[i]);
		policy_free(p);
	}
}
END_TEST

/* ---------------------------------------------------------------- layering */

static char tmp[64];
static char repo[128], conf[128];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_msg(f != NULL, "%s", path);
	fputs(text, f);
	fclose(f);
}

static void layers_setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/agentfs-policy-load-XXXXXX");
	ck_assert(mkdtemp(tmp) != NULL);
	snprintf(repo, sizeof(repo), "%s/repo", tmp);
	snprintf(conf, sizeof(conf), "%s/config", tmp);
	ck_assert_int_eq(mkdir(repo, 0755), 0);
	ck_assert_int_eq(mkdir(conf, 0755), 0);
	char d[160];
	snprintf(d, sizeof(d), "%s/agentfs", conf);
	ck_assert_int_eq(mkdir(d, 0755), 0);
	setenv("XDG_CONFIG_HOME", conf, 1);
}

static void layers_teardown(void)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	ck_assert_int_eq(system(cmd), 0);
}

static void user_file(const char *text)
{
	char p[200];
	snprintf(p, sizeof(p), "%s/agentfs/policy.yml", conf);
	write_file(p, text);
}

static void repo_file(const char *text)
{
	char p[200];
	snprintf(p, sizeof(p), "%s/.agentfs.yml", repo);
	write_file(p, text);
}

static struct policy *effective(const char *explicit_file)
{
	struct policy *p = NULL;
	struct policy_error err = {0};
	int rc = policy_load_effective(repo, explicit_file, &p, &err);
	ck_assert_msg(rc == 0, "%s:%u:%u: %s", err.file, err.line, err.column, err.message);
	return p;
}

static int effective_error(struct policy_error *err)
{
	struct policy *p = NULL;
	int rc = policy_load_effective(repo, NULL, &p, err);
	ck_assert_ptr_null(p);
	return rc;
}

static enum policy_decision dp(const struct policy *p, const char *path)
{
	return policy_decide_path(p, path, false, 0);
}

START_TEST(test_no_files_is_default)
{
	struct policy *p = effective(NULL), *d;
	ck_assert_int_eq(policy_new_default(&d), 0);
	char a[33], b[33];
	policy_digest(p, a);
	policy_digest(d, b);
	ck_assert_str_eq(a, b);
	policy_free(p);
	policy_free(d);
}
END_TEST

START_TEST(test_repo_cannot_show_secrets)
{
	repo_file("version: 1\n"
		  "show:\n"
		  "  - '.env'\n"
		  "  - '.myconf'\n"
		  "  - 'x.pem'\n"
		  "  - '.git'\n"
		  "hide:\n"
		  "  - '!id_rsa'\n"
		  "  - '!.agentfs.yml'\n"
		  "  - '!a.key'\n");
	struct policy *p = effective(NULL);
	ck_assert_int_eq(dp(p, ".env"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "x.pem"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "id_rsa"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "a.key"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, ".agentfs.yml"), POLICY_HIDDEN);
	ck_assert_int_eq(policy_decide_path(p, ".git", true, 0), POLICY_HIDDEN);
	/* a dotfile that is not a secret: the repository may show it */
	ck_assert_int_eq(dp(p, ".myconf"), POLICY_VISIBLE);
	enum policy_decision d;
	char origin[256], want[256];
	policy_explain(p, ".myconf", false, &d, origin, sizeof(origin));
	snprintf(want, sizeof(want), "%s/.agentfs.yml:4", repo);
	ck_assert_str_eq(origin, want);
	/* .env is still decided by the built-in secret rule */
	policy_explain(p, ".env", false, &d, origin, sizeof(origin));
	ck_assert_int_eq(strncmp(origin, "built-in default:", 17), 0);
	policy_free(p);
}
END_TEST

/* The rule index (policy_finalize) only skips rules whose quick byte rules them
 * out: every path gets the decision, and the deciding rule, of the plain scan
 * over all rules.  Layers of every kind: the built-in's casefold and protected
 * rules, the person's exact-case rules, the repository's weak ones. */
START_TEST(test_index_agrees_with_scan)
{
	user_file("case: sensitive\n"
		  "hide: ['*.sql', 'Build/', '/top*', '**/cache/**', 'x?z', '[ab]*.c', 'a/**/b', "
		  "'q[xy]', '*.[xy]']\n"
		  "readonly: ['vendor/', '*.lock', '!vendor/ok*', 'docs/**']\n"
		  "show: ['.env.example', '.myconf', 'cache/keep']\n"
		  "secrets: ['.myconf2', '!.myconf3']\n");
	repo_file("hide: ['docs/', 'TODO', '*.TMP', '**/Secret_Dir/**', '*.b[a]k', 'Tmp?x']\n"
		  "show: ['dump.sql', '.env.example', '.hidden', '*.lock']\n"
		  "readonly: ['!vendor/', 'Makefile', 'src/*.h']\n");
	struct policy *p = effective(NULL);
	ck_assert_msg(p->index.always && p->index.nrules == p->nrules && p->index.words > 1,
		      "no index over %zu rules", p->nrules);
	static const char *const parts[] = {
	    ".env",
	    ".ENV",
	    "NODE_MODULES",
	    "qx",
	    "w.x",
	    "tmp1x",
	    "X.BAK",
	    "Credentials.X.ENC",
	    "credentials.a.enc",
	    "SECRET_DIR",
	    "Cache",
	    ".Docker",
	    ".docker",
	    "Config.json",
	    ".KUBE",
	    "src",
	    "Src",
	    "node_modules",
	    ".npmrc",
	    "id_rsa",
	    "ID_RSA",
	    "a.key",
	    "db",
	    "dump.sql",
	    "vendor",
	    "okfile",
	    ".git",
	    ".github",
	    "docs",
	    "a.pem",
	    "Makefile",
	    "makefile",
	    ".myconf",
	    ".myconf2",
	    "cache",
	    "keep",
	    "Build",
	    "build",
	    "top.c",
	    "xyz",
	    "ab.c",
	    "a",
	    "b",
	    "x.h",
	    "Cargo.lock",
	    "TODO",
	    "w.tmp",
	    ".hidden",
	    ".ssh",
	    "config",
	    "credentials.json",
	    ".aws",
	    "README.md",
	    "e",
	    "-",
	};
	size_t np = sizeof(parts) / sizeof(parts[0]), compared = 0;
	char path[256];
	/* Every part at depth 1 and 2; every third part at depth 3, which keeps
	 * the test to a second under ThreadSanitizer. */
	for (size_t i = 0; i < np; i++)
		for (size_t j = 0; j <= np; j++)
			for (size_t k = 0; k <= np; k++) {
				if (k < np && (j == np || (i + j + k) % 3 != 0))
					continue;
				int n = snprintf(path, sizeof(path), "%s%s%s%s%s", parts[i],
						 j < np ? "/" : "", j < np ? parts[j] : "",
						 k < np ? "/" : "", k < np ? parts[k] : "");
				for (int dir = 0; dir < 2; dir++) {
					size_t r1, r2;
					enum policy_decision d1 =
					    policy_decide_rule(p, path, (size_t)n, dir, 0, &r1);
					enum policy_decision d2 = policy_decide_rule_scan(
					    p, path, (size_t)n, dir, 0, &r2);
					ck_assert_msg(
					    d1 == d2 && r1 == r2,
					    "%s%s: index %d by rule %zu, scan %d by rule %zu", path,
					    dir ? "/" : "", d1, r1, d2, r2);
					compared++;
				}
			}
	ck_assert_msg(compared > 110000, "only %zu decisions compared", compared);
	/* Paths whose last component is empty (decide_path_rule's prefixes of
	 * "a//b"), in buffers of exactly their length: nothing past them is
	 * read (the sanitizer builds check it). */
	static const char *const slashed[] = {"a/", "docs/", "x//", "/", ".env/"};
	for (size_t i = 0; i < sizeof(slashed) / sizeof(slashed[0]); i++) {
		size_t n = strlen(slashed[i]), r1, r2;
		char *exact = malloc(n);
		ck_assert_ptr_nonnull(exact);
		memcpy(exact, slashed[i], n);
		for (int dir = 0; dir < 2; dir++)
			ck_assert_int_eq(policy_decide_rule(p, exact, n, dir, 0, &r1),
					 policy_decide_rule_scan(p, exact, n, dir, 0, &r2));
		free(exact);
	}
	policy_free(p);
}
END_TEST

START_TEST(test_repo_cannot_undo_user)
{
	user_file("hide: ['*.sql']\nreadonly: ['vendor/']\nshow: ['.env.example']\n");
	repo_file("show: ['dump.sql', '.env.example']\nreadonly: ['!vendor/']\n");
	struct policy *p = effective(NULL);
	ck_assert_int_eq(dp(p, "db/dump.sql"), POLICY_HIDDEN);
	ck_assert_int_eq(policy_decide_path(p, "vendor", true, 0), POLICY_READONLY);
	ck_assert_int_eq(dp(p, "vendor/x.c"), POLICY_READONLY);
	/* the person's own file may loosen the built-in secrets */
	ck_assert_int_eq(dp(p, ".env.example"), POLICY_VISIBLE);
	ck_assert_int_eq(dp(p, ".env.local"), POLICY_HIDDEN);
	policy_free(p);
}
END_TEST

START_TEST(test_repo_may_tighten)
{
	repo_file("case: sensitive\nhide: ['docs/', 'TODO']\nreadonly: ['Makefile']\n"
		  "show: ['.ENV', 'TODO']\nsymlinks: hide\ngit: hidden\nmax_file_size: 1M\n");
	struct policy *p = effective(NULL);
	ck_assert_int_eq(dp(p, "docs/a.md"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "Makefile"), POLICY_READONLY);
	ck_assert_int_eq(dp(p, "makefile"), POLICY_VISIBLE); /* case: sensitive, own rules */
	ck_assert_int_eq(dp(p, ".ENV"), POLICY_HIDDEN);	     /* not the built-in's */
	ck_assert_int_eq(dp(p, "TODO"), POLICY_VISIBLE);     /* its own hide, its own show */
	ck_assert_uint_eq(policy_max_file_size(p), 1 << 20);
	policy_free(p);
}
END_TEST

START_TEST(test_repo_cannot_loosen_settings)
{
	struct policy_error err;
	repo_file("hide: ['x']\nextends: none\n");
	ck_assert_int_eq(effective_error(&err), -EPERM);
	ck_assert_uint_eq(err.line, 2);
	ck_assert_uint_eq(err.column, 10);
	ck_assert_ptr_nonnull(strstr(err.message, "extends: none"));

	repo_file("symlinks: allow\n");
	ck_assert_int_eq(effective_error(&err), -EPERM);
	ck_assert_uint_eq(err.line, 1);
	ck_assert_uint_eq(err.column, 11);
	ck_assert_ptr_nonnull(strstr(err.message, "cannot loosen 'symlinks' (in force: hide)"));

	repo_file("git: readonly\n");
	ck_assert_int_eq(effective_error(&err), -EPERM);
	ck_assert_ptr_nonnull(strstr(err.message, "'git'"));

	user_file("max_file_size: 1M\nsymlinks: allow\n");
	repo_file("max_file_size: 2M\n");
	ck_assert_int_eq(effective_error(&err), -EPERM);
	ck_assert_ptr_nonnull(strstr(err.message, "'max_file_size' (in force: 1048576)"));
	repo_file("max_file_size: 0\n");
	ck_assert_int_eq(effective_error(&err), -EPERM);

	/* what the user allowed, the repository may keep or tighten */
	repo_file("max_file_size: 512K\nsymlinks: allow\n");
	struct policy *p = effective(NULL);
	ck_assert_uint_eq(policy_max_file_size(p), 512 * 1024);
	ck_assert_int_eq(policy_symlinks_mode(p), POLICY_SYMLINKS_ALLOW);
	policy_free(p);
	repo_file("symlinks: hide\n");
	p = effective(NULL);
	ck_assert_int_eq(policy_symlinks_mode(p), POLICY_SYMLINKS_HIDE);
	policy_free(p);
}
END_TEST

START_TEST(test_repo_file_symlink_refused)
{
	char target[200], link[200];
	snprintf(target, sizeof(target), "%s/elsewhere.yml", tmp);
	snprintf(link, sizeof(link), "%s/.agentfs.yml", repo);
	write_file(target, "show: ['x']\n");
	ck_assert_int_eq(symlink(target, link), 0);
	struct policy_error err;
	ck_assert_int_eq(effective_error(&err), -ELOOP);
	ck_assert_str_eq(err.file, link);
	ck_assert_ptr_nonnull(strstr(err.message, "symlink"));
}
END_TEST

START_TEST(test_repo_error_names_file)
{
	repo_file("hide:\n  - ok\n  - 'a//b'\n");
	struct policy_error err;
	ck_assert_int_eq(effective_error(&err), -EINVAL);
	char want[200];
	snprintf(want, sizeof(want), "%s/.agentfs.yml", repo);
	ck_assert_str_eq(err.file, want);
	ck_assert_uint_eq(err.line, 3);
	ck_assert_uint_eq(err.column, 5);
}
END_TEST

/* A repository (or policy file) whose path holds a newline: the error's file
 * is quoted, so FILE:LINE:COL: message stays one line. */
START_TEST(test_error_file_quoted)
{
	char dir[200], file[240];
	snprintf(dir, sizeof(dir), "%s/re\npo\"", tmp);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(file, sizeof(file), "%s/.agentfs.yml", dir);
	write_file(file, "hide: ['a//b']\n");
	struct policy *p = NULL;
	struct policy_error err = {0};
	ck_assert_int_eq(policy_load_effective(dir, NULL, &p, &err), -EINVAL);
	ck_assert_ptr_null(p);
	char want[300];
	snprintf(want, sizeof(want), "\"%s/re\\npo\\\"/.agentfs.yml\"", tmp);
	ck_assert_str_eq(err.file, want);
	ck_assert_uint_eq(err.line, 1);
	/* a name without control characters is as given */
	ck_assert_int_eq(policy_load_effective(repo, file, &p, &err), -EINVAL);
	ck_assert_str_eq(err.file, want);
	repo_file("hide: ['a//b']\n");
	ck_assert_int_eq(effective_error(&err), -EINVAL);
	snprintf(want, sizeof(want), "%s/.agentfs.yml", repo);
	ck_assert_str_eq(err.file, want);
}
END_TEST

START_TEST(test_user_extends_none)
{
	user_file("extends: none\nhide: ['*.sql']\n");
	struct policy *p = effective(NULL);
	ck_assert_int_eq(dp(p, ".env"), POLICY_VISIBLE);
	ck_assert_int_eq(dp(p, "a.sql"), POLICY_HIDDEN);
	policy_free(p);
}
END_TEST

START_TEST(test_explicit_layers)
{
	char file[200];
	snprintf(file, sizeof(file), "%s/explicit.yml", tmp);
	user_file("hide: ['*.sql']\n");
	repo_file("hide: ['docs/']\n");
	write_file(file, "show: ['.env', 'x.sql']\n");
	struct policy *p = effective(file);
	ck_assert_int_eq(dp(p, ".env"), POLICY_VISIBLE); /* the person's explicit choice */
	ck_assert_int_eq(dp(p, "x.sql"), POLICY_VISIBLE);
	ck_assert_int_eq(dp(p, "y.sql"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "docs/a"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "id_rsa"), POLICY_HIDDEN);
	policy_free(p);

	write_file(file, "extends: none\nhide: ['only']\n");
	p = effective(file);
	ck_assert_uint_eq(policy_rule_count(p), 1);
	ck_assert_int_eq(dp(p, "docs/a"), POLICY_VISIBLE);
	ck_assert_int_eq(dp(p, "only"), POLICY_HIDDEN);
	policy_free(p);
}
END_TEST

/* ---------------------------------------------------------------- snapshots */

static const char *const probe_paths[] = {
    ".env",
    "x/.ENV",
    "src/main.c",
    "db/dump.sql",
    "vendor/x.c",
    ".myconf",
    "docs/a.md",
    "Makefile",
    "node_modules/.bin/x",
    "node_modules/a/.npmrc",
    ".git",
    "we\"ird\\name",
    "sp ace",
    "#hash",
    "!bang",
    "caf\xc3\xa9.key",
    "big.bin",
    NULL,
};

static void same_policy(const struct policy *a, const struct policy *b)
{
	char da[33], db[33];
	policy_digest(a, da);
	policy_digest(b, db);
	ck_assert_str_eq(da, db);
	ck_assert_uint_eq(policy_rule_count(a), policy_rule_count(b));
	ck_assert_int_eq(policy_symlinks_mode(a), policy_symlinks_mode(b));
	ck_assert_int_eq(policy_git_mode(a), policy_git_mode(b));
	ck_assert_uint_eq(policy_max_file_size(a), policy_max_file_size(b));
	for (size_t i = 0; probe_paths[i]; i++)
		for (int dir = 0; dir < 2; dir++)
			for (uint64_t size = 0; size < 3000000; size += 1500000) {
				enum policy_decision x =
				    policy_decide_path(a, probe_paths[i], dir, size);
				enum policy_decision y =
				    policy_decide_path(b, probe_paths[i], dir, size);
				ck_assert_msg(x == y, "%s: %d vs %d", probe_paths[i], x, y);
				char oa[256], ob[256];
				policy_explain(a, probe_paths[i], dir, &x, oa, sizeof(oa));
				policy_explain(b, probe_paths[i], dir, &y, ob, sizeof(ob));
				ck_assert_str_eq(oa, ob);
			}
}

static void round_trip(const struct policy *p)
{
	char *y1 = NULL, *y2 = NULL;
	ck_assert_int_eq(policy_snapshot(p, &y1), 0);
	struct policy *q = NULL;
	struct policy_error err = {0};
	int rc = policy_load_snapshot_string("policy.yml", y1, strlen(y1), &q, &err);
	ck_assert_msg(rc == 0, "%u:%u: %s\n%s", err.line, err.column, err.message, y1);
	same_policy(p, q);
	ck_assert_int_eq(policy_snapshot(q, &y2), 0);
	ck_assert_str_eq(y1, y2);
	/* From a file, it is still the whole policy. */
	char file[200];
	snprintf(file, sizeof(file), "%s/snapshot.yml", tmp);
	write_file(file, y1);
	struct policy *r = NULL;
	ck_assert_int_eq(policy_load_snapshot(file, &r, &err), 0);
	same_policy(p, r);
	policy_free(r);
	/* Anywhere else its rules: is an unknown key. */
	r = NULL;
	ck_assert_int_eq(policy_load_effective(repo, file, &r, &err), -EINVAL);
	ck_assert_ptr_null(r);
	ck_assert_ptr_nonnull(strstr(err.message, "unknown key 'rules'"));
	policy_free(q);
	free(y1);
	free(y2);
}

START_TEST(test_snapshot_default)
{
	struct policy *p;
	ck_assert_int_eq(policy_new_default(&p), 0);
	round_trip(p);
	policy_free(p);
}
END_TEST

START_TEST(test_snapshot_layered)
{
	user_file("hide: ['*.sql', '\\!bang', 'we\"ird\\\\name']\nreadonly: ['vendor/']\n"
		  "symlinks: allow\nmax_file_size: 2M\ngit: private\n");
	repo_file("case: sensitive\nhide: ['docs/', '#hash', 'sp ace']\nshow: ['.myconf', "
		  "'.env']\nreadonly: ['Makefile', '!vendor/', 'caf\xc3\xa9.key']\n");
	struct policy *p = effective(NULL);
	ck_assert_int_eq(dp(p, "#hash"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "!bang"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, "we\"ird\\name"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, ".env"), POLICY_HIDDEN);
	ck_assert_int_eq(dp(p, ".myconf"), POLICY_VISIBLE);
	ck_assert_int_eq(policy_decide_path(p, "big.bin", false, 3 << 20), POLICY_HIDDEN);
	/* explain says so, naming where max_file_size: was set */
	enum policy_decision d;
	char origin[256], want[256];
	ck_assert_int_eq(
	    policy_explain_size(p, "big.bin", false, 3 << 20, &d, origin, sizeof(origin)), 0);
	ck_assert_int_eq(d, POLICY_HIDDEN);
	snprintf(want, sizeof(want), "larger than max_file_size 2097152, %s/agentfs/policy.yml:4",
		 conf);
	ck_assert_str_eq(origin, want);
	policy_explain_size(p, "big.bin", false, 2 << 20, &d, origin, sizeof(origin));
	ck_assert_int_eq(d, POLICY_VISIBLE);
	ck_assert_str_eq(origin, "(no rule)");
	policy_explain_size(p, "x/.env", false, 1, &d, origin, sizeof(origin));
	ck_assert_int_eq(strncmp(origin, "built-in default:", 17), 0);
	round_trip(p);
	policy_free(p);
}
END_TEST

/* The snapshot form is no way around the layering, nor a way to forge where a
 * rule came from: neither a repository's file nor the person's may say rules:
 * (it held origins such as "built-in default:62" that policy show and explain
 * print as they are). */
START_TEST(test_snapshot_form_only_in_snapshots)
{
	static const char forged[] =
	    "rules:\n  - {action: show, pattern: '.env', weak: false, origin: 'built-in "
	    "default:62'}\n";
	struct policy_error err;
	repo_file(forged);
	ck_assert_int_eq(effective_error(&err), -EINVAL);
	ck_assert_uint_eq(err.line, 1);
	ck_assert_ptr_nonnull(strstr(err.message, "unknown key 'rules'"));
	char p[200];
	snprintf(p, sizeof(p), "%s/.agentfs.yml", repo);
	unlink(p);
	user_file(forged);
	ck_assert_int_eq(effective_error(&err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.message, "unknown key 'rules'"));
	snprintf(p, sizeof(p), "%s/agentfs/policy.yml", conf);
	unlink(p);
	struct policy *q = NULL;
	struct policy_rule_info r;
	ck_assert_int_eq(policy_load_string("x.yml", forged, strlen(forged), &q, &err), -EINVAL);
	ck_assert_ptr_null(q);
	/* A snapshot keeps what it says. */
	ck_assert_int_eq(policy_load_snapshot_string("s.yml", forged, strlen(forged), &q, &err), 0);
	ck_assert_int_eq(policy_rule_get(q, policy_rule_count(q) - 1, &r), 0);
	ck_assert_str_eq(r.origin, "built-in default:62");
	ck_assert(!r.weak);
	ck_assert_int_eq(policy_rule_get(q, policy_rule_count(q), &r), -ERANGE);
	policy_free(q);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("policy-load");
	TCase *tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_loop_test(tc, test_snapshot_errors, 0,
			    (int)(sizeof(bad_snapshot) / sizeof(bad_snapshot[0])));
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_empty_and_null_lists);
	tcase_add_test(tc, test_max_file_size_limit);
	tcase_add_test(tc, test_nesting_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("layering");
	/* test_index_agrees_with_scan makes ~117,000 decisions: room for the
	 * sanitizer builds on a busy machine. */
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, layers_setup, layers_teardown);
	tcase_add_test(tc, test_no_files_is_default);
	tcase_add_test(tc, test_repo_cannot_show_secrets);
	tcase_add_test(tc, test_repo_cannot_undo_user);
	tcase_add_test(tc, test_index_agrees_with_scan);
	tcase_add_test(tc, test_repo_may_tighten);
	tcase_add_test(tc, test_repo_cannot_loosen_settings);
	tcase_add_test(tc, test_repo_file_symlink_refused);
	tcase_add_test(tc, test_repo_error_names_file);
	tcase_add_test(tc, test_user_extends_none);
	tcase_add_test(tc, test_error_file_quoted);
	tcase_add_test(tc, test_explicit_layers);
	tcase_add_test(tc, test_snapshot_default);
	tcase_add_test(tc, test_snapshot_layered);
	tcase_add_test(tc, test_snapshot_form_only_in_snapshots);
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
