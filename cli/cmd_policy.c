/* cmd_policy.c - `agentfs policy`: check, show, explain and test policies. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/workspace.h"
#include "policy/policy.h"
#include "policy/symlink.h"

const char cmd_policy_usage[] =
    "usage: agentfs policy check FILE\n"
    "       agentfs policy show [--policy FILE] [REPO]\n"
    "       agentfs policy explain [--policy FILE] REPO PATH...\n"
    "       agentfs policy test [--policy FILE] REPO\n"
    "\n"
    "Which paths of a repository an agent may see or change.  The effective policy\n"
    "is the built-in default (share/agentfs/default.yml), then\n"
    "${XDG_CONFIG_HOME:-~/.config}/agentfs/policy.yml, then REPO/.agentfs.yml, then\n"
    "--policy FILE; the last matching rule wins, except that a repository's rules\n"
    "can never show what the built-in secrets or the person's own files hide.\n"
    "\n"
    "  check FILE        validate FILE (on top of what it extends) and print its digest\n"
    "  show [REPO]       print the effective rules with the file and line of each;\n"
    "                    without REPO, the built-in default and the user's file\n"
    "  explain REPO PATH...\n"
    "                    say whether each PATH (relative to REPO; a trailing '/' means\n"
    "                    a directory) is hidden, read-only or visible, and by which rule\n"
    "  test REPO         walk REPO's files (not inside .git) and list those the policy\n"
    "                    hides or makes read-only; each directory it cannot read is\n"
    "                    named on stderr and the exit status is 1\n"
    "\n"
    "Options:\n"
    "  --policy FILE     add FILE on top of the layers above (with 'extends: none' it is\n"
    "                    the whole policy)\n"
    "\n"
    "A symlink of REPO whose target leaves the repository or is hidden is hidden\n"
    "too, as the mount hides it (symlinks: hide).  A mountpoint given as REPO is\n"
    "read as a directory like any other.  REPO inside a git working tree must be\n"
    "its top level, as for `agentfs mount`.\n";

/* Said of a symlink the `symlinks: hide` rule hides (policy/symlink.h). */
#define SYMLINK_RULE "symlinks: hide: its target leaves the repository or is hidden"

/* Print @s as changes_quote() quotes it (a control character, '"' or '\\', or a
 * byte past ASCII makes it a C-style quoted string, as git quotes paths), then
 * @suffix: a name in the output cannot add lines of its own. */
static void put_quoted(const char *s, const char *suffix)
{
	char *q = changes_quote(s);
	if (q)
		fputs(q, stdout);
	else /* out of memory: no name rather than an unquoted one */
		fputs("?", stdout);
	fputs(suffix, stdout);
	free(q);
}

static const char *decision_name(enum policy_decision d)
{
	switch (d) {
	case POLICY_HIDDEN:
		return "hidden";
	case POLICY_READONLY:
		return "read-only";
	default:
		return "visible";
	}
}

static void print_load_error(const char *sub, int rc, const struct policy_error *err)
{
	if (rc == -ENOMEM)
		cli_error("policy", "%s: out of memory", sub);
	else if (err->line)
		cli_error("policy", "%s:%u:%u: %s", err->file, err->line, err->column,
			  err->message);
	else
		cli_error("policy", "%s: %s", err->file, err->message);
}

/* Whether @file is a workspace's policy snapshot (workspace.h) under the default
 * state directory: the only file whose rules: (and their origins) are read. */
static bool is_snapshot(const char *file)
{
	char *root = NULL;
	bool yes =
	    workspace_state_root(NULL, &root) == 0 && workspace_is_policy_snapshot(root, file);
	free(root);
	return yes;
}

static int load(const char *sub, const char *repo, const char *file, struct policy **p)
{
	struct policy_error err = {0};
	int rc = file && is_snapshot(file) ? policy_load_snapshot(file, p, &err)
					   : policy_load_effective(repo, file, p, &err);
	if (rc < 0) {
		print_load_error(sub, rc, &err);
		return -1;
	}
	return 0;
}

/* A directory inside a git working tree but not at its top level is refused,
 * as `agentfs mount` refuses it: a mount shows the top level, whose paths the
 * rules match and whose .agentfs.yml they come from, so answers for the
 * subdirectory as a root would be wrong.  Any other directory (no working
 * tree above it, or its top level) is read as it is. */
static int check_top_level(const char *sub, const char *dir)
{
	char real[PATH_MAX], top[PATH_MAX];
	if (!realpath(dir, real))
		return 0; /* check_dir said why */
	git_libgit2_init();
	git_repository *repo = NULL;
	int r = 0;
	if (git_repository_open_ext(&repo, real, 0, NULL) == 0 && !git_repository_is_bare(repo) &&
	    git_repository_workdir(repo) && realpath(git_repository_workdir(repo), top) &&
	    strcmp(top, real) != 0) {
		char *qd = changes_quote(dir), *qt = changes_quote(top);
		cli_error("policy",
			  "%s: %s: a subdirectory of the git working tree %s (give its top "
			  "level: the rules match its paths and read its .agentfs.yml)",
			  sub, qd ? qd : "?", qt ? qt : "?");
		free(qd);
		free(qt);
		r = -1;
	}
	git_repository_free(repo);
	git_libgit2_shutdown();
	return r;
}

static int check_dir(const char *sub, const char *dir)
{
	struct stat st;
	const char *why = NULL;
	if (stat(dir, &st) < 0)
		why = strerror(errno);
	else if (!S_ISDIR(st.st_mode))
		why = "not a directory";
	if (why) {
		char *q = changes_quote(dir);
		cli_error("policy", "%s: %s: %s", sub, q ? q : "?", why);
		free(q);
		return -1;
	}
	return check_top_level(sub, dir);
}

/* A usage error: one line naming what is wrong, exit status 2. */
static int usage_error(const char *sub, const char *what)
{
	cli_error("policy", "%s%s%s (see 'agentfs policy --help')", sub ? sub : "", sub ? ": " : "",
		  what);
	return 2;
}

static int do_check(int argc, char **argv)
{
	if (argc != 2) {
		return usage_error("check", argc < 2 ? "FILE is required" : "too many arguments");
	}
	struct policy *p;
	struct policy_error err = {0};
	int rc = is_snapshot(argv[1]) ? policy_load_snapshot(argv[1], &p, &err)
				      : policy_load_file(argv[1], &p, &err);
	if (rc < 0) {
		print_load_error("check", rc, &err);
		return 1;
	}
	char digest[33];
	policy_digest(p, digest);
	put_quoted(argv[1], ": ok, ");
	printf("%zu rules in effect, digest %s\n", policy_rule_count(p), digest);
	policy_free(p);
	return 0;
}

static int do_show(const char *file, int argc, char **argv)
{
	if (argc > 2) {
		return usage_error("show", "too many arguments");
	}
	const char *repo = argc == 2 ? argv[1] : NULL;
	if (repo && check_dir("show", repo) < 0)
		return 1;
	struct policy *p;
	if (load("show", repo, file, &p) < 0)
		return 1;
	static const char *const symlinks[] = {"hide", "allow"};
	static const char *const git[] = {"hidden", "private", "readonly"};
	char digest[33];
	policy_digest(p, digest);
	printf("# effective policy%s", repo ? " for " : "");
	if (repo)
		put_quoted(repo, "");
	printf(", digest %s\n", digest);
	printf("symlinks: %s\ngit: %s\nmax_file_size: %llu\n", symlinks[policy_symlinks_mode(p)],
	       git[policy_git_mode(p)], (unsigned long long)policy_max_file_size(p));
	printf("# rules, the last match wins:\n");
	for (size_t i = 0; i < policy_rule_count(p); i++) {
		struct policy_rule_info r;
		policy_rule_get(p, i, &r);
		/* Quoted where they hold a control character (git's way): a
		 * pattern or origin cannot add lines of its own. */
		char *pat = changes_quote(r.pattern), *org = changes_quote(r.origin);
		if (!pat || !org) {
			free(pat);
			free(org);
			policy_free(p);
			cli_error("policy", "show: out of memory");
			return 1;
		}
		printf("%-9s %-28s %s%s%s%s\n", r.action, pat, org, r.protect ? "  protected" : "",
		       r.weak ? "  from-repository" : "", r.casefold ? "  any-case" : "");
		free(pat);
		free(org);
	}
	policy_free(p);
	return 0;
}

/* @arg as a policy path relative to @repo: "./" and duplicate or trailing '/'
 * removed (a trailing '/' sets *is_dir), an absolute path inside @repo made
 * relative.  NULL with a message for ".." or a path outside the repository. */
static char *relative_path(const char *repo, const char *arg, bool *is_dir)
{
	char *abs = NULL;
	if (arg[0] == '/') {
		char *root = realpath(repo, NULL);
		size_t rl = root ? strlen(root) : 0;
		if (root && strncmp(arg, root, rl) == 0 && (arg[rl] == '/' || arg[rl] == '\0')) {
			abs = strdup(arg + rl);
		} else {
			cli_error("policy", "explain: %s: not inside %s", arg, repo);
			free(root);
			return NULL;
		}
		free(root);
		if (!abs)
			return NULL;
		arg = abs;
	}
	size_t n = strlen(arg);
	char *out = malloc(n + 1);
	size_t o = 0;
	if (!out) {
		free(abs);
		return NULL;
	}
	*is_dir = n > 0 && arg[n - 1] == '/';
	for (const char *s = arg; *s;) {
		while (*s == '/')
			s++;
		const char *e = strchrnul(s, '/');
		size_t cl = (size_t)(e - s);
		if (cl == 0)
			break;
		if (cl == 2 && s[0] == '.' && s[1] == '.') {
			cli_error("policy", "explain: %s: '..' is not allowed", arg);
			free(out);
			free(abs);
			return NULL;
		}
		if (!(cl == 1 && s[0] == '.')) {
			if (o)
				out[o++] = '/';
			memcpy(out + o, s, cl);
			o += cl;
		}
		s = e;
	}
	out[o] = '\0';
	free(abs);
	return out;
}

static int do_explain(const char *file, int argc, char **argv)
{
	if (argc < 3) {
		return usage_error("explain",
				   argc < 2 ? "REPO and PATH are required" : "PATH is required");
	}
	const char *repo = argv[1];
	if (check_dir("explain", repo) < 0)
		return 1;
	struct policy *p;
	if (load("explain", repo, file, &p) < 0)
		return 1;
	int status = 0;
	for (int i = 2; i < argc; i++) {
		bool is_dir = false;
		char *path = relative_path(repo, argv[i], &is_dir);
		if (!path) {
			status = 1;
			continue;
		}
		bool is_link = false;
		uint64_t size = 0; /* a regular file's, for max_file_size: */
		int dfd = open(repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (!is_dir && path[0]) {
			struct stat st;
			if (dfd >= 0 && fstatat(dfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
				is_dir = S_ISDIR(st.st_mode);
				is_link = S_ISLNK(st.st_mode);
				size = policy_size(st.st_mode, (uint64_t)st.st_size);
			}
		}
		enum policy_decision d;
		char origin[600];
		policy_explain_size(p, path, is_dir, size, &d, origin, sizeof(origin));
		/* The mount hides an unsafe symlink whatever the rules say. */
		if (is_link && d != POLICY_HIDDEN &&
		    policy_symlinks_mode(p) == POLICY_SYMLINKS_HIDE &&
		    policy_symlink_unsafe(p, dfd, path)) {
			d = POLICY_HIDDEN;
			snprintf(origin, sizeof(origin), "%s", SYMLINK_RULE);
		}
		if (dfd >= 0)
			close(dfd);
		put_quoted(path[0] ? path : ".", is_dir && path[0] ? "/: " : ": ");
		printf("%s (", decision_name(d));
		put_quoted(origin[0] == '(' ? "no rule" : origin, ")\n");
		free(path);
	}
	policy_free(p);
	return status;
}

struct walk {
	const struct policy *p;
	int root_fd; /* the repository, for the symlink rule */
	unsigned long counts[3];
	int status;
};

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What the walk could not read: one line on stderr naming @path (quoted, "."
 * for the root) and @err; policy test then exits 1, its list incomplete. */
static void walk_error(struct walk *w, const char *path, int err)
{
	char *q = changes_quote(path[0] ? path : ".");
	cli_error("policy", "test: %s: %s (not walked)", q ? q : "?", strerror(err));
	free(q);
	w->status = 1;
}

/* Walk the directory @fd (the repository path @path, "" for the root) as fs/ does:
 * component by component, a hidden directory's contents never asked about,
 * read-only inherited from the parent.  Takes ownership of @fd. */
static void walk_dir(struct walk *w, int fd, char *path, size_t len, bool parent_ro)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		walk_error(w, path, errno);
		close(fd);
		return;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	for (;;) {
		errno = 0;
		if (!(de = readdir(d))) {
			if (errno)
				walk_error(w, path, errno);
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **nn = realloc(names, cap * sizeof(*nn));
			if (!nn) {
				walk_error(w, path, ENOMEM);
				break;
			}
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name))) {
			walk_error(w, path, ENOMEM);
			break;
		}
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names); /* names is NULL for none */
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(names[i]);
		if (len + 1 + nl >= PATH_MAX) {
			walk_error(w, path, ENAMETOOLONG);
			continue;
		}
		size_t plen = len;
		if (plen)
			path[plen++] = '/';
		memcpy(path + plen, names[i], nl + 1);
		plen += nl;
		struct stat st;
		if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) /* else gone meanwhile */
				walk_error(w, path, errno);
			path[len] = '\0';
			continue;
		}
		bool is_dir = S_ISDIR(st.st_mode);
		uint64_t size = policy_size(st.st_mode, (uint64_t)st.st_size);
		enum policy_decision dec = policy_decide(w->p, path, plen, is_dir, size);
		if (dec == POLICY_VISIBLE && parent_ro)
			dec = POLICY_READONLY;
		bool unsafe_link = S_ISLNK(st.st_mode) && dec != POLICY_HIDDEN &&
				   policy_symlinks_mode(w->p) == POLICY_SYMLINKS_HIDE &&
				   policy_symlink_unsafe(w->p, w->root_fd, path);
		if (unsafe_link)
			dec = POLICY_HIDDEN;
		w->counts[dec]++;
		if (dec == POLICY_HIDDEN || (dec == POLICY_READONLY && !parent_ro)) {
			enum policy_decision why;
			char origin[600];
			policy_explain_size(w->p, path, is_dir, size, &why, origin, sizeof(origin));
			if (unsafe_link)
				snprintf(origin, sizeof(origin), "%s", SYMLINK_RULE);
			printf("%-10s ", decision_name(dec));
			put_quoted(path, is_dir ? "/  (" : "  (");
			put_quoted(origin, ")\n");
		}
		/* Never descend into a hidden directory, nor into any .git's internals. */
		if (is_dir && dec != POLICY_HIDDEN && strcmp(names[i], ".git") != 0) {
			int sub = openat(dirfd(d), names[i],
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				walk_dir(w, sub, path, plen, dec == POLICY_READONLY);
			else if (errno != ENOENT) /* else gone meanwhile */
				walk_error(w, path, errno);
		}
		path[len] = '\0';
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
}

static int do_test(const char *file, int argc, char **argv)
{
	if (argc != 2) {
		return usage_error("test", argc < 2 ? "REPO is required" : "too many arguments");
	}
	const char *repo = argv[1];
	if (check_dir("test", repo) < 0)
		return 1;
	struct policy *p;
	if (load("test", repo, file, &p) < 0)
		return 1;
	int fd = open(repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		cli_error("policy", "test: %s: %s", repo, strerror(errno));
		policy_free(p);
		return 1;
	}
	struct walk w = {.p = p, .root_fd = fd};
	char path[PATH_MAX] = "";
	walk_dir(&w, fd, path, 0, false); /* closes fd */
	printf("%lu hidden, %lu read-only, %lu visible (not counting inside hidden "
	       "directories)\n",
	       w.counts[POLICY_HIDDEN], w.counts[POLICY_READONLY], w.counts[POLICY_VISIBLE]);
	policy_free(p);
	return w.status;
}

int cmd_policy(int argc, char **argv)
{
	if (cli_wants_help(argc, argv, cmd_policy_usage))
		return 0;
	if (argc < 2)
		return usage_error(NULL, "missing subcommand: check, show, explain or test");
	const char *sub = argv[1];
	/* Options after the subcommand: --policy FILE (or --policy=FILE). */
	const char *file = NULL;
	char **args = calloc((size_t)argc, sizeof(*args));
	int n = 0;
	if (!args)
		return 1;
	args[n++] = argv[1];
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--policy") && i + 1 < argc) {
			file = argv[++i];
		} else if (!strcmp(argv[i], "--policy")) {
			cli_error("policy", "%s: --policy: missing argument", sub);
			free(args);
			return 2;
		} else if (!strncmp(argv[i], "--policy=", 9)) {
			file = argv[i] + 9;
		} else if (!strcmp(argv[i], "--")) {
			while (++i < argc)
				args[n++] = argv[i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			cli_error("policy", "%s: unknown option '%s'", sub, argv[i]);
			free(args);
			return 2;
		} else {
			args[n++] = argv[i];
		}
	}
	int rc;
	if (!strcmp(sub, "check"))
		rc = file ? (cli_error("policy", "check: --policy: unknown option (the policy "
						 "to check is FILE)"),
			     2)
			  : do_check(n, args);
	else if (!strcmp(sub, "show"))
		rc = do_show(file, n, args);
	else if (!strcmp(sub, "explain"))
		rc = do_explain(file, n, args);
	else if (!strcmp(sub, "test"))
		rc = do_test(file, n, args);
	else {
		cli_error("policy", "unknown subcommand '%s' (check, show, explain, test)", sub);
		rc = 2;
	}
	free(args);
	return rc;
}
