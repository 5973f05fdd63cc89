/* test_workspace.c - workspace.yml, names, the state root, lookup, pid files, removal. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/workspace.h"

#define HEAD_A "0123456789abcdef0123456789abcdef01234567"
#define DIGEST "00112233445566778899aabbccddeeff"

static char tmp[PATH_MAX];

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "%s/agentfs-ws-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void)
{
	ck_assert_int_eq(workspace_remove_tree(tmp), 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

static char *mkpath(const char *fmt, const char *a)
{
	char *p;
	ck_assert_int_ge(asprintf(&p, fmt, tmp, a), 0);
	return p;
}

/* Create <tmp>/state/workspaces/<name> holding a workspace.yml with @text. */
static void put_yml(const char *name, const char *text)
{
	char *d = mkpath("%s/state/workspaces/%s", name);
	char *cmd;
	ck_assert_int_ge(asprintf(&cmd, "mkdir -p '%s'", d), 0);
	ck_assert_int_eq(system(cmd), 0);
	char *f = mkpath("%s/state/workspaces/%s/workspace.yml", name);
	write_file(f, text);
	free(cmd);
	free(d);
	free(f);
}

START_TEST(name_validation)
{
	static const char *const good[] = {"a", "task1", "my.ws", "A-b_c.9", "x.."};
	static const char *const bad[] = {"",	 ".",	  "..", ".hidden", "a/b",
					  "a b", "tab\t", "é",	"a:b",	   NULL};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(workspace_name_valid(good[i]), "'%s' should be valid", good[i]);
	for (size_t i = 0; bad[i]; i++)
		ck_assert_msg(!workspace_name_valid(bad[i]), "'%s' should be invalid", bad[i]);
	ck_assert(!workspace_name_valid(NULL));
	char longname[200];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	ck_assert(!workspace_name_valid(longname));
	longname[128] = '\0';
	ck_assert(workspace_name_valid(longname));
	char *dir;
	ck_assert_int_eq(workspace_dir_for("/r", "../x", &dir), -EINVAL);
	ck_assert_int_eq(workspace_dir_for("/r", "x", &dir), 0);
	ck_assert_str_eq(dir, "/r/workspaces/x");
	free(dir);
}
END_TEST

START_TEST(state_root)
{
	char *r;
	char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	char *xdg = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;

	ck_assert_int_eq(workspace_state_root("/abs/dir", &r), 0);
	ck_assert_str_eq(r, "/abs/dir");
	free(r);

	ck_assert_int_eq(chdir(tmp), 0);
	ck_assert_int_eq(workspace_state_root("rel", &r), 0);
	char *want = mkpath("%s/%s", "rel");
	char real[PATH_MAX];
	ck_assert_ptr_nonnull(realpath(tmp, real));
	char *want2;
	ck_assert_int_ge(asprintf(&want2, "%s/rel", real), 0);
	ck_assert_msg(strcmp(r, want) == 0 || strcmp(r, want2) == 0, "got %s", r);
	free(r);
	free(want);
	free(want2);

	setenv("XDG_STATE_HOME", "/x/state", 1);
	ck_assert_int_eq(workspace_state_root(NULL, &r), 0);
	ck_assert_str_eq(r, "/x/state/agentfs");
	free(r);

	/* A relative XDG_STATE_HOME is invalid per the spec: fall back to HOME. */
	setenv("XDG_STATE_HOME", "relative", 1);
	setenv("HOME", "/home/u", 1);
	ck_assert_int_eq(workspace_state_root(NULL, &r), 0);
	ck_assert_str_eq(r, "/home/u/.local/state/agentfs");
	free(r);

	unsetenv("XDG_STATE_HOME");
	ck_assert_int_eq(workspace_state_root("", &r), 0);
	ck_assert_str_eq(r, "/home/u/.local/state/agentfs");
	free(r);

	unsetenv("HOME");
	ck_assert_int_eq(workspace_state_root(NULL, &r), -ENOENT);

	if (home)
		setenv("HOME", home, 1);
	if (xdg)
		setenv("XDG_STATE_HOME", xdg, 1);
	free(home);
	free(xdg);
}
END_TEST

START_TEST(yml_round_trip)
{
	char *root = mkpath("%s/%s", "state");
	struct workspace *ws, *back;
	/* Paths with characters YAML gives meaning to, and a non-ASCII one. */
	const char *repo = "/src/my repo: \"quoted\" #not-a-comment 'x' - [a] {b} é";
	ck_assert_int_eq(
	    workspace_new(root, "ws1", repo, HEAD_A, "/mnt/x y", 1700000000, DIGEST, &ws), 0);
	ck_assert_int_eq(mkdir(root, 0700), 0);
	char *wsd = mkpath("%s/%s", "state/workspaces");
	ck_assert_int_eq(mkdir(wsd, 0700), 0);
	ck_assert_int_eq(mkdir(ws->dir, 0700), 0);
	ck_assert_int_eq(workspace_save(ws), 0);

	char err[512] = "";
	ck_assert_int_eq(workspace_load(root, "ws1", &back, err, sizeof(err)), 0);
	ck_assert_str_eq(back->name, "ws1");
	ck_assert_str_eq(back->dir, ws->dir);
	ck_assert_str_eq(back->repo, repo);
	ck_assert_str_eq(back->base_commit, HEAD_A);
	ck_assert_str_eq(back->mountpoint, "/mnt/x y");
	ck_assert_int_eq(back->created, 1700000000);
	ck_assert_str_eq(back->policy_digest, DIGEST);
	workspace_free(back);

	/* Unborn HEAD and no mountpoint: empty strings survive. */
	ck_assert_int_eq(workspace_set(&ws->base_commit, ""), 0);
	ck_assert_int_eq(workspace_set(&ws->mountpoint, ""), 0);
	ck_assert_int_eq(workspace_save(ws), 0);
	ck_assert_int_eq(workspace_load(root, "ws1", &back, err, sizeof(err)), 0);
	ck_assert_str_eq(back->base_commit, "");
	ck_assert_str_eq(back->mountpoint, "");
	workspace_free(back);

	/* No temp file is left behind by the atomic save. */
	char *t = mkpath("%s/state/workspaces/ws1/%s", ".workspace.yml.tmp");
	ck_assert_int_eq(access(t, F_OK), -1);
	free(t);
	workspace_free(ws);
	free(wsd);
	free(root);
}
END_TEST

/* Each malformed workspace.yml gives -EINVAL and "FILE:LINE:COL: why" or "FILE: why". */
START_TEST(yml_malformed)
{
	static const struct {
		const char *text, *where, *why;
	} cases[] = {
	    {"version: 1\nrepo: \"unterminated\n", ":3:1:", "end of stream"},
	    {"version: 1\nrepo: /r\nbase_commit: \"\"\nmountpoint: \"\"\ncreated: 1\n"
	     "policy_digest: \"\"\ncolour: red\n",
	     ":7:1:", "unknown key 'colour'"},
	    {"version: 1\nrepo: /r\nbase_commit: \"\"\nmountpoint: \"\"\ncreated: 1\n",
	     "workspace.yml: missing", "missing key 'policy_digest'"},
	    {"version: 2\nrepo: /r\nbase_commit: \"\"\nmountpoint: \"\"\ncreated: 1\n"
	     "policy_digest: \"\"\n",
	     ":1:1:", "unsupported version '2'"},
	    {"version: 1\nrepo: relative\nbase_commit: \"\"\nmountpoint: \"\"\ncreated: 1\n"
	     "policy_digest: \"\"\n",
	     ":2:1:", "absolute path"},
	    {"version: 1\nrepo: /r\nbase_commit: xyz\nmountpoint: \"\"\ncreated: 1\n"
	     "policy_digest: \"\"\n",
	     ":3:1:", "40 lowercase hex"},
	    {"version: 1\nrepo: /r\nbase_commit: \"\"\nmountpoint: \"\"\ncreated: soon\n"
	     "policy_digest: \"\"\n",
	     ":5:1:", "seconds since the epoch"},
	    {"version: 1\nrepo:\n  - /a\n", ":3:3:", "'repo' must be a scalar"},
	    {"version: 1\nversion: 1\n", ":2:1:", "duplicate key 'version'"},
	    {"- just\n- a list\n", ":1:1:", "expected a mapping"},
	    {"", "workspace.yml", "empty file"},
	    {"version: 1\nname: other\nrepo: /r\nbase_commit: \"\"\nmountpoint: \"\"\n"
	     "created: 1\npolicy_digest: \"\"\n",
	     "workspace.yml:", "does not match its directory"},
	};
	char *root = mkpath("%s/%s", "state");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		put_yml("bad", cases[i].text);
		struct workspace *ws = NULL;
		char err[512] = "";
		int rc = workspace_load(root, "bad", &ws, err, sizeof(err));
		ck_assert_msg(rc == -EINVAL, "case %zu: rc %d", i, rc);
		ck_assert_ptr_null(ws);
		ck_assert_msg(strstr(err, cases[i].where) && strstr(err, cases[i].why),
			      "case %zu: '%s' lacks '%s' / '%s'", i, err, cases[i].where,
			      cases[i].why);
		ck_assert_msg(strchr(err, '\n') == NULL, "case %zu: more than one line", i);
		ck_assert_msg(strstr(err, "/state/workspaces/bad/workspace.yml") != NULL,
			      "case %zu: error does not name the file: %s", i, err);
	}
	free(root);
}
END_TEST

START_TEST(load_missing_and_not_a_workspace)
{
	char *root = mkpath("%s/%s", "state");
	struct workspace *ws = NULL;
	char err[512];
	ck_assert_int_eq(workspace_load(root, "none", &ws, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(ws);
	char *d = mkpath("%s/state/workspaces/%s", "");
	char *cmd;
	ck_assert_int_ge(asprintf(&cmd, "mkdir -p '%sempty'", d), 0);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(workspace_load(root, "empty", &ws, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "no workspace.yml"));
	free(cmd);
	free(d);
	free(root);
}
END_TEST

static void make_ws(const char *root, const char *name, const char *mnt)
{
	struct workspace *ws;
	char *cmd;
	ck_assert_int_eq(workspace_new(root, name, "/repo", HEAD_A, mnt, 1, DIGEST, &ws), 0);
	ck_assert_int_ge(asprintf(&cmd, "mkdir -p '%s/upper'", ws->dir), 0);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(workspace_save(ws), 0);
	free(cmd);
	workspace_free(ws);
}

START_TEST(find_by_name_and_mountpoint)
{
	char real[PATH_MAX];
	ck_assert_ptr_nonnull(realpath(tmp, real));
	char *root, *mnt1, *mnt_gone;
	ck_assert_int_ge(asprintf(&root, "%s/state", real), 0);
	ck_assert_int_ge(asprintf(&mnt1, "%s/m1", real), 0);
	ck_assert_int_ge(asprintf(&mnt_gone, "%s/gone", real), 0);
	ck_assert_int_eq(mkdir(mnt1, 0755), 0);
	make_ws(root, "alpha", mnt1);
	make_ws(root, "beta", mnt_gone);
	put_yml("broken", "version: [\n");

	struct workspace *ws = NULL;
	char err[512];
	ck_assert_int_eq(workspace_find(root, "beta", &ws, err, sizeof(err)), 0);
	ck_assert_str_eq(ws->name, "beta");
	workspace_free(ws);

	/* A path reaching the mountpoint through "..": found after realpath. */
	char *indirect;
	ck_assert_int_ge(asprintf(&indirect, "%s/m1/../m1", real), 0);
	ck_assert_int_eq(workspace_find(root, indirect, &ws, err, sizeof(err)), 0);
	ck_assert_str_eq(ws->name, "alpha");
	workspace_free(ws);

	/* A relative path, from the mountpoint's parent. */
	ck_assert_int_eq(chdir(real), 0);
	ck_assert_int_eq(workspace_find(root, "./m1", &ws, err, sizeof(err)), 0);
	ck_assert_str_eq(ws->name, "alpha");
	workspace_free(ws);
	/* A bare name that is also a directory here: the mountpoint wins. */
	ck_assert_int_eq(workspace_find(root, "m1", &ws, err, sizeof(err)), 0);
	ck_assert_str_eq(ws->name, "alpha");
	workspace_free(ws);

	/* A mountpoint that no longer exists (or is a dead mount). */
	ck_assert_int_eq(workspace_find(root, mnt_gone, &ws, err, sizeof(err)), 0);
	ck_assert_str_eq(ws->name, "beta");
	workspace_free(ws);

	ck_assert_int_eq(workspace_find(root, "nothing", &ws, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "nothing"));
	ck_assert_int_eq(workspace_find(root, "/no/such/mnt", &ws, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "not an agentfs mount"));
	ck_assert_int_eq(workspace_find(root, "broken", &ws, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "workspace.yml:1:"));

	char **names;
	size_t n;
	ck_assert_int_eq(workspace_list_names(root, &names, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(names[0], "alpha");
	ck_assert_str_eq(names[1], "beta");
	ck_assert_str_eq(names[2], "broken");
	workspace_names_free(names, n);

	free(indirect);
	free(root);
	free(mnt1);
	free(mnt_gone);
}
END_TEST

START_TEST(pid_file_and_state)
{
	char *root = mkpath("%s/%s", "state");
	make_ws(root, "w", "/nowhere/mnt");
	struct workspace *ws;
	char err[512];
	ck_assert_int_eq(workspace_load(root, "w", &ws, err, sizeof(err)), 0);

	pid_t pid;
	char *mnt;
	ck_assert_int_eq(workspace_read_pid(ws, &pid, &mnt), -ENOENT);
	ck_assert_int_eq(workspace_state(ws, &pid, NULL), WORKSPACE_UNMOUNTED);
	ck_assert_int_eq(pid, 0);
	ck_assert_int_eq(workspace_daemon_pid(ws), 0);

	ck_assert_int_eq(workspace_write_pid(ws, 4242, "/mnt/with space"), 0);
	ck_assert_int_eq(workspace_read_pid(ws, &pid, &mnt), 0);
	ck_assert_int_eq(pid, 4242);
	ck_assert_str_eq(mnt, "/mnt/with space");
	free(mnt);

	/* A pid that has exited: its pid file makes the workspace stale. */
	pid_t child = fork();
	if (child == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(child, NULL, 0), child);
	ck_assert_int_eq(workspace_write_pid(ws, child, "/nowhere/mnt"), 0);
	ck_assert_int_eq(workspace_state(ws, &pid, &mnt), WORKSPACE_STALE);
	ck_assert_int_eq(pid, 0);
	ck_assert_str_eq(mnt, "/nowhere/mnt");
	free(mnt);

	/* A live process whose mountpoint is no FUSE mount is no daemon either. */
	ck_assert_int_eq(workspace_write_pid(ws, getpid(), "/"), 0);
	ck_assert_int_eq(workspace_daemon_pid(ws), 0);
	ck_assert_int_eq(workspace_state(ws, NULL, NULL), WORKSPACE_STALE);

	char *pf = workspace_path(ws, "daemon.pid");
	write_file(pf, "garbage\n");
	ck_assert_int_eq(workspace_read_pid(ws, &pid, NULL), -EINVAL);
	ck_assert_int_eq(workspace_state(ws, NULL, NULL), WORKSPACE_STALE);
	free(pf);
	workspace_free(ws);
	free(root);
}
END_TEST

START_TEST(paths_and_mounts)
{
	ck_assert(workspace_path_within("/a/b", "/a"));
	ck_assert(workspace_path_within("/a", "/a"));
	ck_assert(workspace_path_within("/a", "/a/"));
	ck_assert(!workspace_path_within("/ab", "/a"));
	ck_assert(!workspace_path_within("/", "/a"));
	ck_assert(workspace_path_within("/x", "/"));

	char *p;
	ck_assert_int_eq(workspace_abspath("/", &p), 0);
	ck_assert_str_eq(p, "/");
	free(p);
	char real[PATH_MAX];
	ck_assert_ptr_nonnull(realpath(tmp, real));
	char *missing, *want;
	ck_assert_int_ge(asprintf(&missing, "%s/./new", tmp), 0);
	ck_assert_int_ge(asprintf(&want, "%s/new", real), 0);
	ck_assert_int_eq(workspace_abspath(missing, &p), 0);
	ck_assert_str_eq(p, want);
	free(p);
	free(missing);
	free(want);
	ck_assert_int_eq(workspace_abspath("/no/such/parent/x", &p), -ENOENT);

	ck_assert_int_eq(workspace_is_mountpoint("/"), 1);
	ck_assert_int_eq(workspace_is_mountpoint(real), 0);
	ck_assert_int_eq(workspace_fuse_mount_at(real, NULL, 0), 0);
}
END_TEST

START_TEST(remove_tree_stays_inside)
{
	char *outside = mkpath("%s/%s", "outside");
	char *victim = mkpath("%s/%s", "outside/keep");
	char *ws = mkpath("%s/%s", "ws");
	char *cmd;
	ck_assert_int_ge(
	    asprintf(&cmd,
		     "mkdir -p '%s' '%s/upper/a/b' '%s/upper/locked/in' '%s/upper/ro' && "
		     "echo keep > '%s' && ln -s '%s' '%s/upper/a/link' && "
		     "ln -s '%s' '%s/upper/dirlink' && touch '%s/upper/a/b/f' "
		     "'%s/upper/.wh.gone' '%s/upper/ro/f' '%s/upper/locked/in/f' && "
		     "chmod 000 '%s/upper/locked' && chmod 555 '%s/upper/ro'",
		     outside, ws, ws, ws, victim, victim, ws, outside, ws, ws, ws, ws, ws, ws, ws),
	    0);
	ck_assert_int_eq(system(cmd), 0);
	free(cmd);

	struct workspace w = {.dir = ws};
	/* a/b/f, a/link, dirlink, .wh.gone, ro/f, locked/in/f */
	if (geteuid() == 0)
		ck_assert_int_eq(workspace_count_upper(&w), 6);

	ck_assert_int_eq(workspace_remove_tree(ws), 0);
	ck_assert_int_eq(access(ws, F_OK), -1);
	ck_assert_int_eq(access(victim, F_OK), 0);	/* symlink targets survive */
	ck_assert_int_eq(workspace_remove_tree(ws), 0); /* already gone */
	ck_assert_int_eq(workspace_remove_tree("relative"), -EINVAL);
	ck_assert_int_eq(workspace_remove_tree(victim), -ENOTDIR);
	free(outside);
	free(victim);
	free(ws);
}
END_TEST

START_TEST(count_upper)
{
	char *ws = mkpath("%s/%s", "w");
	char *cmd;
	ck_assert_int_ge(asprintf(&cmd,
				  "mkdir -p '%s/upper/d/e' && touch '%s/upper/x' '%s/upper/d/e/y' "
				  "'%s/upper/.wh.z'",
				  ws, ws, ws, ws),
			 0);
	ck_assert_int_eq(system(cmd), 0);
	struct workspace w = {.dir = ws};
	ck_assert_int_eq(workspace_count_upper(&w), 3);
	free(cmd);
	free(ws);
	struct workspace none = {.dir = "/no/such/ws"};
	ck_assert_int_eq(workspace_count_upper(&none), -ENOENT);
}
END_TEST

static Suite *workspace_suite(void)
{
	Suite *s = suite_create("workspace");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, name_validation);
	tcase_add_test(tc, state_root);
	tcase_add_test(tc, yml_round_trip);
	tcase_add_test(tc, yml_malformed);
	tcase_add_test(tc, load_missing_and_not_a_workspace);
	tcase_add_test(tc, find_by_name_and_mountpoint);
	tcase_add_test(tc, pid_file_and_state);
	tcase_add_test(tc, paths_and_mounts);
	tcase_add_test(tc, remove_tree_stays_inside);
	tcase_add_test(tc, count_upper);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(workspace_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
