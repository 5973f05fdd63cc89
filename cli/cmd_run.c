/*
 * cmd_run.c - `agentfs run`: run a command (an agent) inside a workspace, in a
 * bubblewrap sandbox that shows it the mount and little else (sandbox.h),
 * gives it an allowlisted environment (runenv.h) and an explicit network
 * (netproxy.h), and journals the run (runlog.h).
 *
 * Process model: agentfs run stays the parent of bwrap for the whole run.  It
 * blocks the signals it handles and waits for them with sigwaitinfo(); the
 * proxy (for --net allow=) runs as threads of this process, outside the
 * sandbox.  bwrap runs with --die-with-parent: if agentfs run dies (even by
 * SIGKILL) the sandbox's init gets SIGKILL and with it every process of the
 * sandbox's PID namespace.  SIGTERM and SIGHUP to agentfs run kill the
 * sandbox the same way, after which the run is journaled and the workspace
 * unmounted (if this run mounted it).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/netproxy.h"
#include "cli/repo.h"
#include "cli/runenv.h"
#include "cli/runlog.h"
#include "cli/sandbox.h"
#include "cli/strvec.h"
#include "cli/workspace.h"

#define CMD "run"

const char cmd_run_usage[] =
    "usage: agentfs run [OPTIONS] REPO|MNT|NAME [--] COMMAND [ARGS...]\n"
    "\n"
    "Run COMMAND (an agent) in the workspace, inside a sandbox: it sees the\n"
    "workspace mount at its own path, the system directories read-only (/usr,\n"
    "/etc without its secrets), a private /tmp and an empty $HOME, and nothing\n"
    "else: not the repository, not the workspace's state and journal, not your\n"
    "home.  It runs without capabilities or new privileges, in its own PID\n"
    "namespace, and dies with agentfs run.  The workspace is mounted first if it\n"
    "is not (and unmounted again afterwards; see --keep-mounted).\n"
    "\n"
    "Options:\n"
    "  --net none            no network: loopback only (default)\n"
    "  --net host            the host's network, unfiltered\n"
    "  --net allow=HOST[:PORT][,...]\n"
    "                        only HTTP(S) through a proxy outside the sandbox that\n"
    "                        lets the named hosts through (HOST alone: ports 80 and\n"
    "                        443; HOST:* any port; *.DOMAIN names below DOMAIN);\n"
    "                        HTTPS_PROXY and HTTP_PROXY point at it\n"
    "  --env NAME            pass NAME from the environment (repeatable)\n"
    "  --env NAME=VALUE      set NAME (repeatable); only PATH, HOME, LANG, LC_*,\n"
    "                        TERM, USER, SHELL and the like pass unnamed\n"
    "  --ro PATH             show PATH read-only at the same path (repeatable)\n"
    "  --rw PATH             show PATH writable at the same path (repeatable), e.g.\n"
    "                        the agent's own configuration directory\n"
    "  --read-only           show the workspace read-only (an inspection run)\n"
    "  --name NAME           the workspace, when REPO is given (default: REPO's\n"
    "                        basename); a new one is mounted at STATE/mnt/NAME\n"
    "  --state-dir DIR       workspaces live in DIR/workspaces (default:\n"
    "                        ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  --keep-mounted        leave a workspace this run mounted mounted\n"
    "  -h, --help            show this help\n"
    "\n"
    "COMMAND starts in the workspace's root, or in the same subdirectory when\n"
    "agentfs run is started inside the mount.  The run is journaled in the\n"
    "workspace's run.jsonl: the command, the settings, start, every allowed and\n"
    "refused connection, and the exit status; the file events are in its journal.\n"
    "\n"
    "Exit status: COMMAND's (128+N when it was killed by signal N); 127 when\n"
    "COMMAND was not found and 126 when it was found but could not be run, as in\n"
    "the shell; 1 when the run could not start, 2 on a usage error.\n";

enum net_mode { NET_NONE, NET_HOST, NET_ALLOW };

struct run_args {
	const char *name;
	const char *state_dir;
	enum net_mode net;
	struct netallow allow;
	struct strvec env, ro, rw;
	bool read_only, keep_mounted;
	const char *target;
	char **cmd;
};

struct run_ctx {
	struct run_args a;
	char *root;
	struct workspace *ws;
	char *mnt;
	bool mounted_here;
	char *home;
	char *cwd;
	char *bwrap;
	struct strvec ro_abs, rw_abs;
	struct runenv env;
	struct runlog log;
	bool log_open;
	char run_id[64];
};

enum { OPT_NAME = 256, OPT_STATE, OPT_NET, OPT_ENV, OPT_RO, OPT_RW, OPT_READ_ONLY, OPT_KEEP };

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "agentfs: run: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see 'agentfs run --help')\n");
	return 2;
}

static int parse_net(const char *s, struct run_args *a)
{
	char err[512];
	if (strcmp(s, "none") == 0) {
		a->net = NET_NONE;
		return 0;
	}
	if (strcmp(s, "host") == 0) {
		a->net = NET_HOST;
		return 0;
	}
	if (strncmp(s, "allow=", 6) == 0) {
		a->net = NET_ALLOW;
		netallow_clear(&a->allow);
		if (netallow_parse(s + 6, &a->allow, err, sizeof(err)) < 0) {
			cli_error(CMD, "%s", err);
			return 2;
		}
		return 0;
	}
	return usage_error("--net %s: not none, host or allow=HOST[:PORT],...", s);
}

/* Returns 0, or the exit status of a usage error. */
static int parse_args(int argc, char **argv, struct run_args *a)
{
	static const struct option opts[] = {
	    {"name", required_argument, NULL, OPT_NAME},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"net", required_argument, NULL, OPT_NET},
	    {"env", required_argument, NULL, OPT_ENV},
	    {"ro", required_argument, NULL, OPT_RO},
	    {"rw", required_argument, NULL, OPT_RW},
	    {"read-only", no_argument, NULL, OPT_READ_ONLY},
	    {"keep-mounted", no_argument, NULL, OPT_KEEP},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	optind = 1;
	opterr = 0;
	int o, rc;
	while ((o = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (o) {
		case OPT_NAME:
			a->name = optarg;
			break;
		case OPT_STATE:
			a->state_dir = optarg;
			break;
		case OPT_NET:
			if ((rc = parse_net(optarg, a)) != 0)
				return rc;
			break;
		case OPT_ENV:
			if (strvec_push(&a->env, optarg) < 0)
				return 1;
			break;
		case OPT_RO:
			if (strvec_push(&a->ro, optarg) < 0)
				return 1;
			break;
		case OPT_RW:
			if (strvec_push(&a->rw, optarg) < 0)
				return 1;
			break;
		case OPT_READ_ONLY:
			a->read_only = true;
			break;
		case OPT_KEEP:
			a->keep_mounted = true;
			break;
		case 'h':
			fputs(cmd_run_usage, stdout);
			return -1;
		case ':':
			return usage_error("%s: missing argument", cli_bad_option(argv));
		default:
			return usage_error("%s: unknown option", cli_bad_option(argv));
		}
	}
	if (optind >= argc)
		return usage_error("%s", "REPO, MNT or NAME is required");
	a->target = argv[optind++];
	if (optind < argc && strcmp(argv[optind], "--") == 0)
		optind++;
	if (optind >= argc)
		return usage_error("%s", "COMMAND is required (agentfs run MNT -- COMMAND ...)");
	a->cmd = argv + optind;
	return 0;
}

/* ---- finding (and mounting) the workspace ---- */

static int run_self(char *const argv[])
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* mkdir -p, mode 0700 for what it creates.  0 or -1 with errno. */
static int mkdir_parents(const char *path)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char saved = *p;
			*p = 0;
			if (mkdir(buf, 0700) != 0 && errno != EEXIST)
				return -1;
			*p = saved;
			if (!saved)
				return 0;
		}
	}
}

static int mount_workspace(struct run_ctx *c)
{
	/* As root, with the kernel's permission checks: the sandbox drops
	 * root's capabilities, so the view's modes bind the command (a root
	 * daemon's mount leaves them to root's capabilities otherwise: fs.c). */
	char *argv[11] = {"agentfs", "mount", "--state-dir", c->root, "--name", c->ws->name};
	int n = 6;
	if (geteuid() == 0) {
		argv[n++] = "-o";
		argv[n++] = "default_permissions";
	}
	argv[n++] = c->ws->repo;
	argv[n++] = c->mnt;
	argv[n] = NULL;
	int rc = run_self(argv);
	if (rc != 0) {
		cli_error(CMD, "%s: could not mount the workspace %s (see above)", c->mnt,
			  c->ws->name);
		return -EIO;
	}
	c->mounted_here = true;
	return 0;
}

static void unmount_workspace(struct run_ctx *c)
{
	char *argv[] = {"agentfs", "unmount", "--state-dir", c->root, c->mnt, NULL};
	if (run_self(argv) != 0)
		cli_error(CMD, "%s: could not unmount the workspace (see above)", c->mnt);
}

/* The workspace @c->a.target names: a mountpoint (live or not), a repository
 * (its workspace --name, default its basename), or a workspace's name. */
static int find_workspace(struct run_ctx *c)
{
	char err[1024];
	const char *t = c->a.target;
	struct stat st;
	int rc;
	if (stat(t, &st) == 0 && S_ISDIR(st.st_mode)) {
		char *abs = realpath(t, NULL);
		if (!abs)
			return -errno;
		struct workspace *ws = NULL;
		if (workspace_find(c->root, abs, &ws, err, sizeof(err)) == 0 &&
		    strcmp(ws->mountpoint, abs) == 0) {
			/* Its mountpoint, mounted or not: as by its name. */
			c->ws = ws;
			free(abs);
			goto mount;
		}
		workspace_free(ws);
		struct repo_info ri = {0};
		rc = repo_open_worktree(abs, &ri, err, sizeof(err));
		if (rc < 0) {
			cli_error(CMD, "%s: neither a workspace's mountpoint nor a repository: %s",
				  t, err);
			free(abs);
			return rc;
		}
		free(abs);
		const char *name = c->a.name ? c->a.name : strrchr(ri.workdir, '/') + 1;
		if (!workspace_name_valid(name)) {
			if (c->a.name)
				cli_error(
				    CMD,
				    "--name %s: not a valid workspace name (" WORKSPACE_NAME_RULE
				    ")",
				    name);
			else
				cli_error(CMD,
					  "%s: '%s' is not a valid workspace name; pass --name", t,
					  name);
			repo_info_clear(&ri);
			return -EINVAL;
		}
		rc = workspace_load(c->root, name, &c->ws, err, sizeof(err));
		if (rc == 0 && strcmp(c->ws->repo, ri.workdir) != 0 &&
		    repo_moved_to(c->ws->repo, c->ws->base_commit, &ri)) {
			/* The mount resumes it at the new place (cmd_mount.c). */
			char *moved = strdup(ri.workdir);
			if (moved) {
				free(c->ws->repo);
				c->ws->repo = moved;
			} else {
				rc = -ENOMEM;
			}
		} else if (rc == 0 && strcmp(c->ws->repo, ri.workdir) != 0) {
			cli_error(CMD, "workspace %s belongs to the repository %s, not %s%s", name,
				  c->ws->repo, ri.workdir,
				  c->a.name ? "" : " (pass --name for another workspace)");
			rc = -EINVAL;
		} else if (rc == -ENOENT) {
			rc = workspace_new(c->root, name, ri.workdir, "", "", 0, "", &c->ws);
		} else if (rc < 0) {
			cli_error(CMD, "workspace %s: %s", name, err);
		}
		repo_info_clear(&ri);
		if (rc < 0)
			return rc;
	} else {
		rc = workspace_find(c->root, t, &c->ws, err, sizeof(err));
		if (rc < 0) {
			cli_error(CMD, "%s: %s", t, err);
			return rc;
		}
	}

mount:;
	pid_t pid = 0;
	char *live = NULL;
	if (workspace_state(c->ws, &pid, &live) == WORKSPACE_MOUNTED && live) {
		c->mnt = live;
		return 0;
	}
	free(live);
	if (c->ws->mountpoint[0]) {
		c->mnt = strdup(c->ws->mountpoint);
	} else {
		char *dir;
		if (asprintf(&dir, "%s/mnt", c->root) < 0)
			return -ENOMEM;
		if (mkdir_parents(dir) != 0) {
			cli_error(CMD, "%s: cannot create: %s", dir, strerror(errno));
			free(dir);
			return -EIO;
		}
		if (asprintf(&c->mnt, "%s/%s", dir, c->ws->name) < 0)
			c->mnt = NULL;
		free(dir);
	}
	if (!c->mnt)
		return -ENOMEM;
	return mount_workspace(c);
}

/* ---- what the sandbox may show ---- */

/* Would showing @p expose @secret (the repository, the state directory):
 * does one lie inside the other? */
static bool overlaps(const char *p, const char *secret)
{
	return workspace_path_within(p, secret) || workspace_path_within(secret, p);
}

/* Is the directory @id (device and inode) @path or one of its ancestors? */
static bool chain_has(const char *path, const struct stat *id)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p))
		return false;
	for (;;) {
		struct stat st;
		if (stat(p, &st) == 0 && st.st_dev == id->st_dev && st.st_ino == id->st_ino)
			return true;
		char *slash = strrchr(p, '/');
		if (!slash || !p[1])
			return false;
		slash[slash == p] = 0; /* "/a" -> "/" */
	}
}

/* The same by identity: a bind mount shows a directory under another path,
 * with the same device and inode.  Does @p (absolute, real) hold @secret, or
 * lie inside it, under whatever paths they are reached by? */
static bool overlaps_by_id(const char *p, const char *secret)
{
	struct stat ps, ss;
	if (stat(p, &ps) < 0 || stat(secret, &ss) < 0)
		return false;
	return chain_has(secret, &ps) || chain_has(p, &ss);
}

/* The mount points strictly below @p (absolute, real), from
 * /proc/self/mountinfo (proc(5): the fifth field, with space, tab, newline
 * and backslash as octal escapes), into @out.  bwrap binds a --ro or --rw
 * path with what is mounted below it (--bind is recursive), so what those
 * show counts too.  0, or a negative errno. */
static int submounts(const char *p, struct strvec *out)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	size_t pl = strlen(p);
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;
	while (rc == 0 && getline(&line, &cap, f) > 0) {
		char *save = NULL, *field = strtok_r(line, " ", &save);
		for (int i = 1; field && i < 5; i++)
			field = strtok_r(NULL, " ", &save);
		if (!field)
			continue;
		char mp[PATH_MAX];
		size_t n = 0;
		for (const char *s = field; *s && n + 1 < sizeof(mp); s++) {
			if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
			    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
				mp[n++] =
				    (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
				s += 3;
			} else {
				mp[n++] = *s;
			}
		}
		mp[n] = 0;
		bool below = strcmp(p, "/") == 0 ? strcmp(mp, "/") != 0
						 : strncmp(mp, p, pl) == 0 && mp[pl] == '/';
		if (below)
			rc = strvec_push(out, mp);
	}
	free(line);
	fclose(f);
	return rc;
}

static int check_paths(struct run_ctx *c, const struct strvec *in, struct strvec *out,
		       const char *opt)
{
	const char *secret[] = {c->ws->repo, c->root, c->ws->dir};
	const char *what[] = {"the repository", "the state directory", "the workspace's state"};
	for (size_t i = 0; i < in->n; i++) {
		char *abs = realpath(in->v[i], NULL);
		if (!abs) {
			cli_error(CMD, "%s %s: %s", opt, in->v[i], strerror(errno));
			return -errno;
		}
		for (int k = 0; k < 3; k++) {
			if (overlaps(abs, secret[k]) || overlaps_by_id(abs, secret[k])) {
				cli_error(CMD, "%s %s: would show %s (%s) to the sandbox", opt,
					  in->v[i], what[k], secret[k]);
				free(abs);
				return -EPERM;
			}
		}
		/* And what is mounted below it, which bwrap shows with it. */
		struct strvec below = {0};
		int sr = submounts(abs, &below);
		for (size_t m = 0; sr == 0 && m < below.n; m++) {
			for (int k = 0; k < 3; k++) {
				if (overlaps_by_id(below.v[m], secret[k])) {
					cli_error(
					    CMD,
					    "%s %s: the mount at %s would show %s (%s) to the "
					    "sandbox",
					    opt, in->v[i], below.v[m], what[k], secret[k]);
					sr = -EPERM;
					break;
				}
			}
		}
		strvec_clear(&below);
		if (sr < 0) {
			if (sr != -EPERM)
				cli_error(CMD, "%s %s: reading the mounts below it: %s", opt,
					  in->v[i], strerror(-sr));
			free(abs);
			return sr;
		}
		int rc = strvec_push(out, abs);
		free(abs);
		if (rc < 0)
			return rc;
	}
	/* The system directories are shown whole: what must stay hidden may not
	 * live in one. */
	for (int i = 0; sandbox_system_dirs[i]; i++) {
		for (int k = 0; k < 3; k++) {
			if (workspace_path_within(secret[k], sandbox_system_dirs[i])) {
				cli_error(CMD, "%s lies in %s, which the sandbox shows; move it",
					  secret[k], sandbox_system_dirs[i]);
				return -EPERM;
			}
		}
	}
	return 0;
}

static int find_home(struct run_ctx *c)
{
	const char *h = getenv("HOME");
	if (!h || *h != '/') {
		struct passwd *pw = getpwuid(getuid());
		h = pw ? pw->pw_dir : NULL;
	}
	if (!h || *h != '/' || strcmp(h, "/") == 0) {
		cli_error(CMD, "HOME is unset or '/': set HOME to the home directory to replace "
			       "with an empty one");
		return -EINVAL;
	}
	for (int i = 0; sandbox_system_dirs[i]; i++)
		if (workspace_path_within(h, sandbox_system_dirs[i])) {
			cli_error(CMD, "HOME=%s lies in %s: set HOME elsewhere", h,
				  sandbox_system_dirs[i]);
			return -EINVAL;
		}
	return workspace_abspath(h, &c->home);
}

/* Start in the same subdirectory of the mount when called from inside it. */
static int find_cwd(struct run_ctx *c)
{
	char buf[PATH_MAX];
	if (getcwd(buf, sizeof(buf)) && workspace_path_within(buf, c->mnt))
		c->cwd = strdup(buf);
	else
		c->cwd = strdup(c->mnt);
	return c->cwd ? 0 : -ENOMEM;
}

/* ---- the journal of the run ---- */

static json_t *strvec_json(const struct strvec *sv)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < sv->n; i++)
		json_array_append_new(a, runlog_string(sv->v[i]));
	return a;
}

static const char *net_name(enum net_mode m)
{
	return m == NET_HOST ? "host" : m == NET_ALLOW ? "allow" : "none";
}

static void journal(struct run_ctx *c, json_t *rec)
{
	if (!rec)
		return;
	int rc = runlog_append(&c->log, rec);
	if (rc < 0)
		cli_error(CMD, "%s/run.jsonl: cannot append: %s", c->ws->dir, strerror(-rc));
	json_decref(rec);
}

static void journal_run(struct run_ctx *c)
{
	struct strvec cmd = {0};
	for (size_t i = 0; c->a.cmd[i]; i++)
		strvec_push(&cmd, c->a.cmd[i]);
	json_t *allow = json_array();
	for (size_t i = 0; allow && i < c->a.allow.n; i++) {
		const struct netallow_rule *r = &c->a.allow.rules[i];
		json_array_append_new(allow, r->port == -1 ? json_sprintf("%s:*", r->host)
					     : r->port == 0
						 ? json_sprintf("%s", r->host)
						 : json_sprintf("%s:%d", r->host, r->port));
	}
	json_t *settings = json_pack(
	    "{s:s, s:o, s:b, s:o, s:o, s:o, s:o, s:o, s:s, s:b, s:s}", "net", net_name(c->a.net),
	    "allow", allow, "read_only", c->a.read_only, "home", runlog_string(c->home), "ro",
	    strvec_json(&c->ro_abs), "rw", strvec_json(&c->rw_abs), "env",
	    strvec_json(&c->env.passed), "dropped", strvec_json(&c->env.dropped), "capabilities",
	    "none", "no_new_privs", 1, "namespaces",
	    c->a.net == NET_HOST ? "user,mount,pid,ipc,uts,cgroup"
				 : "user,mount,pid,ipc,uts,cgroup,net");
	journal(c,
		json_pack("{s:s, s:s, s:i, s:i, s:o, s:o, s:o, s:s, s:o}", "op", "run", "run",
			  c->run_id, "pid", (int)getpid(), "uid", (int)getuid(), "argv",
			  strvec_json(&cmd), "cwd", runlog_string(c->cwd), "mount",
			  runlog_string(c->mnt), "workspace", c->ws->name, "settings", settings));
	strvec_clear(&cmd);
}

static void journal_net(void *arg, const struct netproxy_event *ev)
{
	struct run_ctx *c = arg;
	json_t *r = json_pack("{s:s, s:s, s:s, s:o, s:i, s:s}", "op", "net", "run", c->run_id,
			      "method", ev->method, "host", runlog_string(ev->host), "port",
			      ev->port, "decision", ev->allowed ? "allowed" : "refused");
	if (r && ev->allowed)
		json_object_set_new(
		    r, "result",
		    ev->err
			? json_string(strerrorname_np(ev->err) ? strerrorname_np(ev->err) : "EIO")
			: json_integer(0));
	journal(c, r);
}

/* bwrap's --info-fd JSON: the sandbox init's pid and the namespaces. */
static json_t *read_info(int fd)
{
	char buf[4096];
	size_t len = 0;
	json_t *j = NULL;
	while (!j && len < sizeof(buf)) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 10000) != 1)
			break;
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		j = json_loadb(buf, len, 0, NULL);
	}
	return j;
}

/* ---- running ---- */

/* The terminal agentfs run was started in the foreground of, or -1: the
 * sandbox's process group (sandbox_spawn) gets it while it runs, as a
 * shell gives it to a job (tcsetpgrp(3); the glibc manual, "Implementing a Job
 * Control Shell"). */
/* A descriptor among 0-2 of the controlling terminal, foreground or not, or
 * -1. */
static int foreground_tty_any(void)
{
	for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++)
		if (isatty(fd) && tcgetpgrp(fd) > 0)
			return fd;
	return -1;
}

static int foreground_tty(void)
{
	/* Any of the three: `echo x | agentfs run ...` keeps the terminal on
	 * stdout, which /dev/tty reads (a password prompt) then need. */
	for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++)
		if (isatty(fd) && tcgetpgrp(fd) == getpgrp())
			return fd;
	return -1;
}

/* tcsetpgrp(3) of @tty to @pgrp from whichever group holds it now: SIGTTOU
 * (sent to a caller outside the foreground group) is ignored meanwhile. */
static void give_tty(int tty, pid_t pgrp)
{
	if (tty < 0)
		return;
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGTTOU, &ign, &old);
	(void)tcsetpgrp(tty, pgrp);
	sigaction(SIGTTOU, &old, NULL);
}

/* Wait for the sandbox (bwrap, @pid).  *@tty: the terminal the sandbox's
 * group holds, handed over at its start, or -1; -1 once it no longer does
 * (continued by `bg`), so that nothing takes the terminal from the shell. */
static int wait_sandbox(struct run_ctx *c, pid_t pid, int *tty, const sigset_t *set, int *status,
			int *killed_by)
{
	*killed_by = 0;
	for (;;) {
		siginfo_t si;
		int s = sigwaitinfo(set, &si);
		if (s < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (s == SIGTERM || s == SIGHUP || (s == SIGINT && !isatty(STDIN_FILENO))) {
			/* The sandbox's init dies with bwrap (--die-with-parent), and
			 * every process of its PID namespace with it. */
			*killed_by = s;
			kill(pid, SIGKILL);
		}
		int st;
		pid_t w = waitpid(pid, &st, WNOHANG | WUNTRACED);
		if (w == pid && WIFSTOPPED(st)) {
			/* ^Z stopped the sandbox's group: stop as a job stops, the
			 * terminal back with the shell.  Continued by `fg` (the
			 * shell gave the terminal back to this group), the sandbox
			 * gets it again; by `bg`, the shell keeps it and the
			 * sandbox runs in the background. */
			int t = *tty >= 0 ? *tty : foreground_tty_any();
			pid_t fg = *tty >= 0 ? tcgetpgrp(*tty) : -1;
			give_tty(*tty, getpgrp());
			kill(getpid(), SIGSTOP);
			*tty = -1;
			if (t >= 0 && tcgetpgrp(t) == getpgrp()) {
				*tty = t;
				give_tty(t, fg > 0 ? fg : pid);
				if (fg > 0 && fg != pid)
					kill(-fg, SIGCONT);
			}
			kill(-pid, SIGCONT);
			continue;
		}
		if (w == pid) {
			*status = st;
			return 0;
		}
		(void)c;
	}
}

static int run_sandbox(struct run_ctx *c)
{
	char err[1024];
	int rc;
	int info[2];
	if (pipe2(info, O_CLOEXEC) != 0)
		return -errno;

	struct sandbox_config sc = {
	    .mount = c->mnt,
	    .read_only = c->a.read_only,
	    .cwd = c->cwd,
	    .home = c->home,
	    .ro = (const char *const *)c->ro_abs.v,
	    .n_ro = c->ro_abs.n,
	    .rw = (const char *const *)c->rw_abs.v,
	    .n_rw = c->rw_abs.n,
	    .net = c->a.net == NET_HOST	   ? SANDBOX_NET_HOST
		   : c->a.net == NET_ALLOW ? SANDBOX_NET_PROXY
					   : SANDBOX_NET_NONE,
	    .drop_root_caps = geteuid() == 0,
	    .new_session =
		!isatty(STDIN_FILENO) && !isatty(STDOUT_FILENO) && !isatty(STDERR_FILENO),
	    .info_fd = info[1],
	    .etc = "/etc",
	};
	struct strvec argv = {0};
	rc = strvec_push(&argv, "bwrap");
	if (rc == 0)
		rc = sandbox_build_argv(&sc, c->a.cmd, &argv, err, sizeof(err));
	if (rc < 0) {
		cli_error(CMD, "%s", err);
		goto out;
	}

	journal_run(c);

	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	sigprocmask(SIG_BLOCK, &set, &old);

	pid_t pid;
	int listen_fd;
	int tty = foreground_tty();
	rc = sandbox_spawn(c->bwrap, strvec_argv(&argv), strvec_argv(&c->env.envp), sc.net, info[1],
			   tty, &pid, &listen_fd, err, sizeof(err));
	if (rc < 0)
		tty = -1;
	close(info[1]);
	info[1] = -1;
	if (rc == 0) {
		setpgid(pid, pid); /* the child does so too: whichever runs first */
		give_tty(tty, pid);
	}
	if (rc < 0) {
		cli_error(CMD, "%s", err);
		journal(c,
			json_pack("{s:s, s:s, s:s}", "op", "exit", "run", c->run_id, "error", err));
		sigprocmask(SIG_SETMASK, &old, NULL);
		goto out;
	}
	struct netproxy *proxy = NULL;
	if (listen_fd >= 0) {
		rc = netproxy_start(&proxy, listen_fd, &c->a.allow, journal_net, c);
		if (rc < 0) {
			close(listen_fd);
			cli_error(CMD, "cannot start the proxy: %s", strerror(-rc));
			kill(pid, SIGKILL);
		}
	}

	json_t *inf = read_info(info[0]);
	json_t *start =
	    json_pack("{s:s, s:s, s:i}", "op", "start", "run", c->run_id, "bwrap_pid", (int)pid);
	if (start && inf) {
		const char *keys[][2] = {{"child-pid", "sandbox_pid"},
					 {"pid-namespace", "pidns"},
					 {"net-namespace", "netns"},
					 {"mnt-namespace", "mntns"},
					 {"user-namespace", "userns"}};
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			json_t *v = json_object_get(inf, keys[i][0]);
			if (v)
				json_object_set(start, keys[i][1], v);
		}
	}
	json_decref(inf);
	/* With --net allow= the network namespace is the proxy's, made before bwrap. */
	json_t *sp = start ? json_object_get(start, "sandbox_pid") : NULL;
	if (sp && !json_object_get(start, "netns")) {
		char p[64];
		struct stat nst;
		snprintf(p, sizeof(p), "/proc/%lld/ns/net", (long long)json_integer_value(sp));
		if (stat(p, &nst) == 0)
			json_object_set_new(start, "netns", json_integer((json_int_t)nst.st_ino));
	}
	journal(c, start);

	int st = 0, killed_by = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = wait_sandbox(c, pid, &tty, &set, &st, &killed_by);
	give_tty(tty, getpgrp());
	clock_gettime(CLOCK_MONOTONIC, &t1);
	netproxy_stop(proxy);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (rc < 0)
		goto out;

	int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (killed_by)
		status = 128 + killed_by;
	json_t *ex = json_pack(
	    "{s:s, s:s, s:i, s:I}", "op", "exit", "run", c->run_id, "status", status, "duration_ns",
	    (json_int_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
	if (ex && killed_by)
		json_object_set_new(
		    ex, "killed",
		    json_sprintf("agentfs run got %s; the sandbox "
				 "was killed",
				 sigabbrev_np(killed_by) ? sigabbrev_np(killed_by) : "a signal"));
	journal(c, ex);
	rc = status;
out:
	if (info[1] >= 0)
		close(info[1]);
	close(info[0]);
	strvec_clear(&argv);
	return rc;
}

static void ctx_free(struct run_ctx *c)
{
	if (c->log_open)
		runlog_close(&c->log);
	runenv_clear(&c->env);
	strvec_clear(&c->ro_abs);
	strvec_clear(&c->rw_abs);
	strvec_clear(&c->a.env);
	strvec_clear(&c->a.ro);
	strvec_clear(&c->a.rw);
	netallow_clear(&c->a.allow);
	workspace_free(c->ws);
	free(c->root);
	free(c->mnt);
	free(c->home);
	free(c->cwd);
	free(c->bwrap);
}

int cmd_run(int argc, char **argv)
{
	struct run_ctx c = {0};
	char err[1024];
	int rc = parse_args(argc, argv, &c.a);
	if (rc != 0) {
		ctx_free(&c);
		return rc < 0 ? 0 : rc;
	}
	int status = 1;

	/* Every refusal that needs no mount comes first: nothing to undo. */
	if (sandbox_check_userns(err, sizeof(err)) < 0 ||
	    sandbox_find_bwrap(&c.bwrap, err, sizeof(err)) < 0) {
		cli_error(CMD, "%s", err);
		goto done;
	}
	if (workspace_state_root(c.a.state_dir, &c.root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		goto done;
	}
	if (find_home(&c) < 0)
		goto done;
	rc = runenv_build(environ, c.a.env.v, c.a.env.n, c.home, &c.env, err, sizeof(err));
	if (rc < 0) {
		cli_error(CMD, "%s", err);
		if (rc == -EINVAL)
			status = 2; /* a malformed --env NAME, or HOME: a usage error */
		goto done;
	}
	if (c.a.net == NET_ALLOW) {
		char url[64];
		snprintf(url, sizeof(url), "http://127.0.0.1:%d", SANDBOX_PROXY_PORT);
		const char *vars[] = {"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"};
		for (size_t i = 0; i < 4; i++)
			if (runenv_set(&c.env, vars[i], url) < 0)
				goto done;
	}

	if (find_workspace(&c) < 0)
		goto done;
	if (check_paths(&c, &c.a.ro, &c.ro_abs, "--ro") < 0 ||
	    check_paths(&c, &c.a.rw, &c.rw_abs, "--rw") < 0 || find_cwd(&c) < 0)
		goto unmount;
	if (!workspace_daemon_pid(c.ws) && workspace_fuse_mount_at(c.mnt, NULL, 0) != 1) {
		cli_error(CMD, "%s: the workspace is not mounted", c.mnt);
		goto unmount;
	}
	/* A root daemon's mount made without the kernel's permission checks
	 * (fs.c): the sandbox's root has no capabilities, yet the daemon acts
	 * with all of them. */
	if (!c.mounted_here && geteuid() == 0 && workspace_fuse_mount_at(c.mnt, NULL, 0) == 1 &&
	    workspace_mount_has_option(c.mnt, "default_permissions") == 0)
		cli_error(CMD,
			  "%s was mounted without -o default_permissions: the view's modes do not "
			  "bind the command (unmount it and let agentfs run mount it, or mount "
			  "it with -o default_permissions)",
			  c.mnt);

	char *path = workspace_path(c.ws, "run.jsonl");
	rc = path ? runlog_open(&c.log, path) : -ENOMEM;
	if (rc < 0) {
		cli_error(CMD, "%s: cannot open the run journal: %s", path ? path : "run.jsonl",
			  rc == -EBADMSG ? "its last record is incomplete" : strerror(-rc));
		free(path);
		goto unmount;
	}
	free(path);
	c.log_open = true;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(c.run_id, sizeof(c.run_id), "%d-%lld", (int)getpid(),
		 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);

	if (c.env.dropped.n > 0) {
		fprintf(stderr, "agentfs: run: not passed to the sandbox (credential-like; name "
				"one with --env to pass it):");
		for (size_t i = 0; i < c.env.dropped.n; i++)
			fprintf(stderr, "%s %s", i ? "," : "", c.env.dropped.v[i]);
		fputc('\n', stderr);
	}

	rc = run_sandbox(&c);
	status = rc < 0 ? 1 : rc;

unmount:
	if (c.mounted_here && !c.a.keep_mounted)
		unmount_workspace(&c);
done:
	ctx_free(&c);
	return status;
}
