/*
 * cmd_mount.c - `agentfs mount REPO MNT`: find or create the workspace, check
 * everything that can be checked before mounting, then start the daemon.
 *
 * Process model: the command does all libgit2 and policy work, opens the lower,
 * upper and work directories, then forks.  The child (the daemon) starts a new
 * session, sends its output to <workspace>/daemon.log, opens the journal (its
 * writer thread must start after fork: threads do not survive it) and calls
 * fs_serve(), which writes one byte on a pipe once the mount serves.  The parent
 * waits for that byte; end-of-file means the daemon failed, and the last line of
 * daemon.log says why.  The daemon holds an exclusive flock(2) on the workspace
 * directory for its whole life, so two daemons never serve one workspace.
 *
 * Every refusal happens before anything is created; what this command created
 * (the workspace directory, a missing mountpoint) is removed again on failure.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <git2.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/gitpriv.h"
#include "cli/newly_hidden.h"
#include "cli/repo.h"
#include "cli/workspace.h"
#include "fs/fs.h"
#include "journal/journal.h"
#include "policy/policy.h"

const char cmd_mount_usage[] =
    "usage: agentfs mount [OPTIONS] REPO MNT\n"
    "\n"
    "Mount a filtered, copy-on-write, journaled view of the git working tree REPO\n"
    "(its top level) at MNT, which must be an empty directory (created if missing\n"
    "and its parent exists).  Changes land in the workspace's upper layer; REPO is\n"
    "never written.  Mounting a workspace again resumes it: its changes, journal\n"
    "and base commit are kept.  A new --policy that hides anything the agent could\n"
    "already see refuses the mount, naming the paths: its copies and private .git\n"
    "keep what it saw (start a new workspace for a tighter policy).\n"
    "\n"
    "Options:\n"
    "  --name NAME            workspace name (default: the basename of MNT);\n"
    "                         letters, digits, '.', '_' and '-', not starting with '.'\n"
    "  --state-dir DIR        keep workspaces in DIR/workspaces/NAME (default:\n"
    "                         ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  --policy FILE          the policy to apply (default: the workspace's snapshot\n"
    "                         when resuming, else the repository's or the built-in one;\n"
    "                         a workspace whose snapshot is gone needs it)\n"
    "  --journal-sync=MODE    always | interval (default) | never: when the journal\n"
    "                         reaches the disk (see journal/journal.h)\n"
    "  --no-journal           record nothing (the journal is the evidence; rarely wanted)\n"
    "  --no-passthrough       serve every read and write of the agent's files through\n"
    "                         the daemon, never by FUSE passthrough (Linux 6.9, root)\n"
    "  -o OPTION[,OPTION...]  extra FUSE mount options (may be repeated)\n"
    "  -f, --foreground       serve in the foreground; Ctrl-C unmounts\n"
    "  -d, --debug            libfuse debug output (implies --foreground)\n"
    "  -h, --help             show this help\n"
    "\n"
    "The workspace directory holds workspace.yml, policy.yml, upper/, work/,\n"
    "journal.jsonl, daemon.pid and daemon.log.  It must be on a filesystem with\n"
    "user extended attributes, outside REPO and MNT.\n"
    "\n"
    "Exit status: 0 once the mount serves, 1 on failure (nothing is left mounted),\n"
    "2 on a usage error.\n";

#define READY_TIMEOUT_MS 10000

struct mount_args {
	const char *repo;
	const char *mnt;
	const char *name;
	const char *state_dir;
	const char *policy_file;
	bool foreground;
	bool debug;
	bool no_journal;
	bool no_passthrough;
	enum journal_sync sync;
	char *fuse_opts; /* comma-joined -o values, or NULL */
};

/* Everything a mount holds between its checks and the daemon's exit. */
struct mount_ctx {
	struct mount_args a;
	struct repo_info ri;
	char *root; /* state root */
	char *mnt;  /* absolute mountpoint */
	struct workspace *ws;
	struct workspace *old; /* the workspace as loaded, when resuming */
	struct policy *policy;
	char *policy_yaml; /* policy_snapshot() of @policy */
	char digest[33];
	char *fsname;
	char *moved_from; /* the repository's recorded path, when it moved */
	int ws_fd;	  /* the workspace directory, flock'ed */
	int lower_fd, upper_fd, work_fd;
	/* undo on failure */
	bool created_ws;
	bool created_mnt;
	bool saved;	       /* workspace.yml was written */
	char *created_dirs[8]; /* state-root components made for a new workspace */
	int n_created_dirs;
};

static const char *const CMD = "mount";

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "agentfs: mount: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see 'agentfs mount --help')\n");
	return 2;
}

static int append_opt(char **opts, const char *o)
{
	char *n;
	if (*opts) {
		if (asprintf(&n, "%s,%s", *opts, o) < 0)
			return -ENOMEM;
		free(*opts);
	} else {
		n = strdup(o);
		if (!n)
			return -ENOMEM;
	}
	*opts = n;
	return 0;
}

/* Returns 0, or the exit status of a usage error. */
static int parse_args(int argc, char **argv, struct mount_args *a)
{
	enum { OPT_NAME = 256, OPT_STATE, OPT_POLICY, OPT_SYNC, OPT_NOJOURNAL, OPT_NOPT };
	static const struct option longopts[] = {
	    {"name", required_argument, NULL, OPT_NAME},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"policy", required_argument, NULL, OPT_POLICY},
	    {"journal-sync", required_argument, NULL, OPT_SYNC},
	    {"no-journal", no_argument, NULL, OPT_NOJOURNAL},
	    {"no-passthrough", no_argument, NULL, OPT_NOPT},
	    {"foreground", no_argument, NULL, 'f'},
	    {"debug", no_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	memset(a, 0, sizeof(*a));
	a->sync = JOURNAL_SYNC_INTERVAL;
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, ":fdho:", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_NAME:
			a->name = optarg;
			break;
		case OPT_STATE:
			a->state_dir = optarg;
			break;
		case OPT_POLICY:
			a->policy_file = optarg;
			break;
		case OPT_SYNC:
			if (strcmp(optarg, "always") == 0)
				a->sync = JOURNAL_SYNC_ALWAYS;
			else if (strcmp(optarg, "interval") == 0)
				a->sync = JOURNAL_SYNC_INTERVAL;
			else if (strcmp(optarg, "never") == 0)
				a->sync = JOURNAL_SYNC_NEVER;
			else
				return usage_error("--journal-sync: '%s' is not always, interval "
						   "or never",
						   optarg);
			break;
		case OPT_NOJOURNAL:
			a->no_journal = true;
			break;
		case OPT_NOPT:
			a->no_passthrough = true;
			break;
		case 'f':
			a->foreground = true;
			break;
		case 'd':
			a->debug = true;
			a->foreground = true;
			break;
		case 'o':
			if (!*optarg || append_opt(&a->fuse_opts, optarg) < 0)
				return usage_error("-o: '%s': empty or out of memory", optarg);
			break;
		case 'h':
			fputs(cmd_mount_usage, stdout);
			return -1;
		case ':':
			return usage_error("%s: missing argument", cli_bad_option(argv));
		default:
			return usage_error("%s: unknown option", cli_bad_option(argv));
		}
	}
	if (argc - optind != 2)
		return usage_error("%s", argc - optind < 2 ? "REPO and MNT are required"
							   : "too many arguments");
	a->repo = argv[optind];
	a->mnt = argv[optind + 1];
	return 0;
}

/* ---- checks ---- */

/* The first executable @prog on $PATH, malloc'd, or NULL. */
static char *find_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		return NULL;
	char *copy = strdup(path), *save = NULL, *found = NULL;
	for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !found;
	     d = strtok_r(NULL, ":", &save)) {
		char *cand;
		if (asprintf(&cand, "%s/%s", *d ? d : ".", prog) < 0)
			break;
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
			found = cand;
		else
			free(cand);
	}
	free(copy);
	return found;
}

/* Entries of directory @fd other than "." and "..", counting up to 1. */
static int dir_entries(int fd)
{
	int d2 = dup(fd);
	DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
	if (!d) {
		int e = errno;
		if (d2 >= 0)
			close(d2);
		return -e;
	}
	int n = 0;
	struct dirent *de;
	while (n == 0 && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int check_fuse_available(void)
{
	struct stat st;
	if (stat("/dev/fuse", &st) != 0 || !S_ISCHR(st.st_mode)) {
		cli_error(CMD, "/dev/fuse: not available (is the fuse kernel module loaded?)");
		return -ENODEV;
	}
	/* Not root: libfuse mounts through the setuid fusermount3 helper. */
	if (geteuid() != 0) {
		char *p = find_in_path("fusermount3");
		if (!p) {
			cli_error(CMD, "fusermount3: not found on PATH (install fuse3)");
			return -ENOENT;
		}
		free(p);
	}
	return 0;
}

/* Absolute form of @path whose trailing components may not exist yet. */
static char *abs_partial(const char *path)
{
	char *cur = strdup(path), *suffix = strdup("");
	char buf[PATH_MAX];
	while (cur && suffix) {
		if (realpath(cur, buf)) {
			char *r;
			if (asprintf(&r, "%s%s", strcmp(buf, "/") == 0 && *suffix ? "" : buf,
				     suffix) < 0)
				r = NULL;
			free(cur);
			free(suffix);
			return r;
		}
		char *slash = strrchr(cur, '/');
		if (!slash || errno != ENOENT)
			break;
		char *ns;
		if (asprintf(&ns, "%s%s", slash, suffix) < 0)
			break;
		free(suffix);
		suffix = ns;
		if (slash == cur)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	free(cur);
	free(suffix);
	return NULL;
}

/* Once the mount serves: where its repository went (repo_moved_to()). */
static void moved_note(const struct mount_ctx *c)
{
	if (!c->moved_from)
		return;
	char *qo = changes_quote(c->moved_from), *qn = changes_quote(c->ri.workdir);
	fprintf(stderr,
		"agentfs: mount: workspace %s: its repository %s is gone; %s has its base commit "
		"%.12s and is its repository now\n",
		c->ws->name, qo ? qo : c->moved_from, qn ? qn : c->ri.workdir, c->ws->base_commit);
	free(qo);
	free(qn);
}

static int check_overlaps(struct mount_ctx *c)
{
	const char *repo = c->ri.workdir, *mnt = c->mnt;
	if (workspace_path_within(mnt, repo)) {
		cli_error(CMD, "%s: the mountpoint is inside the repository %s", c->a.mnt, repo);
		return -EINVAL;
	}
	if (workspace_path_within(repo, mnt)) {
		cli_error(CMD, "%s: the repository %s is inside the mountpoint", c->a.mnt, repo);
		return -EINVAL;
	}
	char *wsdir = NULL;
	if (workspace_dir_for(c->root, c->ws ? c->ws->name : c->a.name, &wsdir) < 0)
		return -ENOMEM;
	char *dir = abs_partial(wsdir);
	free(wsdir);
	if (!dir) {
		cli_error(CMD, "%s: cannot resolve the state directory", c->root);
		return -EINVAL;
	}
	int rc = 0;
	if (workspace_path_within(dir, repo)) {
		cli_error(CMD, "%s: the workspace directory is inside the repository %s", dir,
			  repo);
		rc = -EINVAL;
	} else if (workspace_path_within(dir, mnt)) {
		cli_error(CMD, "%s: the workspace directory is inside the mountpoint %s", dir, mnt);
		rc = -EINVAL;
	} else if (workspace_path_within(mnt, dir)) {
		cli_error(CMD, "%s: the mountpoint is inside the workspace directory %s", mnt, dir);
		rc = -EINVAL;
	} else {
		/* Nor inside another workspace's directory: a mount in its upper
		 * would become that workspace's changes (the whole view in its
		 * export), and its rm would stop at the mount. */
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			if (workspace_path_within(mnt, dir)) {
				cli_error(
				    CMD, "%s: the mountpoint is inside the workspaces directory %s",
				    mnt, dir);
				rc = -EINVAL;
			}
		}
	}
	free(dir);
	return rc;
}

/* The mountpoint: an empty directory that is not a mount, or missing with an
 * existing parent (created later, once every check passed). */
static int check_mountpoint(struct mount_ctx *c)
{
	struct stat st;
	if (lstat(c->mnt, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ENOTCONN) {
			cli_error(CMD, "%s: a dead FUSE mount is left there (agentfs unmount %s)",
				  c->a.mnt, c->a.mnt);
			return -ENOTCONN;
		}
		cli_error(CMD, "%s: %s", c->a.mnt, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		cli_error(CMD, "%s: the mountpoint is not a directory", c->a.mnt);
		return -ENOTDIR;
	}
	if (workspace_is_mountpoint(c->mnt) == 1) {
		cli_error(CMD, "%s: the mountpoint is already a mount", c->a.mnt);
		return -EBUSY;
	}
	/* fusermount3's own rules for people mounting as themselves. */
	if (geteuid() != 0 && access(c->mnt, W_OK) != 0) {
		cli_error(CMD,
			  "%s: the mountpoint is not writable by you (fusermount3 requires it)",
			  c->a.mnt);
		return -EACCES;
	}
	if (geteuid() != 0 && (st.st_mode & S_ISVTX) && st.st_uid != geteuid()) {
		cli_error(CMD, "%s: the mountpoint is a sticky directory you do not own", c->a.mnt);
		return -EACCES;
	}
	int fd = open(c->mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		cli_error(CMD, "%s: %s", c->a.mnt, strerror(e));
		return -e;
	}
	int n = dir_entries(fd);
	close(fd);
	if (n < 0) {
		cli_error(CMD, "%s: %s", c->a.mnt, strerror(-n));
		return n;
	}
	if (n > 0) {
		cli_error(CMD, "%s: the mountpoint is not empty", c->a.mnt);
		return -ENOTEMPTY;
	}
	return 0;
}

/* The upper format keeps opaque/redirect/origin markers in user xattrs. */
static int check_xattrs(struct mount_ctx *c)
{
	static const char probe[] = "user.agentfs.probe";
	if (fsetxattr(c->upper_fd, probe, "1", 1, 0) != 0) {
		int e = errno;
		if (e == ENOTSUP || e == EPERM)
			cli_error(CMD,
				  "%s: the workspace's filesystem lacks user extended attributes "
				  "(use --state-dir on one that has them)",
				  c->ws->dir);
		else
			cli_error(CMD, "%s/upper: cannot set an extended attribute: %s", c->ws->dir,
				  strerror(e));
		return -e;
	}
	if (fremovexattr(c->upper_fd, probe) != 0) {
		int e = errno;
		cli_error(CMD, "%s/upper: cannot remove an extended attribute: %s", c->ws->dir,
			  strerror(e));
		return -e;
	}
	return 0;
}

/* ---- policy ---- */

/*
 * THE place where a mount decides its policy:
 *  - --policy FILE: the layered policy (built-in, user, repository) with FILE on
 *    top, policy_load_effective();
 *  - else, resuming: the workspace's own snapshot (policy.yml), so the agent's
 *    view does not change under it because a file outside the workspace did;
 *  - else: the layered policy of the repository.
 * The snapshot of what was chosen is written to policy.yml by
 * write_policy_snapshot() and its digest goes into workspace.yml and the journal.
 */
static int load_policy(struct mount_ctx *c)
{
	struct policy_error perr;
	memset(&perr, 0, sizeof(perr));
	char *snap = NULL;
	int rc;
	struct stat st;
	if (c->a.policy_file && workspace_is_policy_snapshot(c->root, c->a.policy_file)) {
		/* A workspace's own snapshot (as a refusal of a tighter policy
		 * suggests): the whole policy, its rules with their origins. */
		rc = policy_load_snapshot(c->a.policy_file, &c->policy, &perr);
	} else if (c->a.policy_file) {
		rc = policy_load_effective(c->ri.workdir, c->a.policy_file, &c->policy, &perr);
	} else if (c->old) {
		/* Resuming: the snapshot, never a policy the files around say
		 * now, which may show more than the agent was shown. */
		if (!(snap = workspace_path(c->old, "policy.yml")))
			return -ENOMEM;
		if (lstat(snap, &st) != 0) {
			int e = errno;
			cli_error(CMD,
				  "%s: %s: the workspace's policy is unknown; give it with "
				  "--policy FILE",
				  snap, strerror(e));
			free(snap);
			return -e;
		}
		rc = policy_load_snapshot(snap, &c->policy, &perr);
	} else {
		rc = policy_load_effective(c->ri.workdir, NULL, &c->policy, &perr);
	}
	free(snap);
	if (rc < 0) {
		if (rc == -ENOMEM)
			cli_error(CMD, "cannot load the policy: %s", strerror(-rc));
		else if (perr.file[0] && perr.line)
			cli_error(CMD, "%s:%u:%u: %s", perr.file, perr.line, perr.column,
				  perr.message[0] ? perr.message : strerror(-rc));
		else if (perr.file[0])
			cli_error(CMD, "%s: %s", perr.file,
				  perr.message[0] ? perr.message : strerror(-rc));
		else
			cli_error(CMD, "cannot load the policy: %s",
				  perr.message[0] ? perr.message : strerror(-rc));
		return rc;
	}
	policy_digest(c->policy, c->digest);
	rc = policy_snapshot(c->policy, &c->policy_yaml);
	if (rc < 0) {
		cli_error(CMD, "cannot snapshot the policy: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

/* The most paths check_newly_hidden() names. */
#define NEWLY_HIDDEN_SHOWN 20

/*
 * Under a policy other than the one the workspace was last mounted with: the
 * mount is refused while the new policy hides what the workspace's agent
 * could already see under the old one (cli/newly_hidden.h), since its copies,
 * renamed directories and private .git would keep showing it.  The old policy
 * is the workspace's snapshot (policy.yml); when it cannot be read, whatever
 * the new one hides counts.  The workspace keeps its policy and record; the
 * walk writes nothing but the modes it lifts and puts back
 * (cli/newly_hidden.h).
 */
static int check_newly_hidden(struct mount_ctx *c)
{
	if (!c->old || strcmp(c->old->policy_digest, c->digest) == 0)
		return 0;
	char *file = workspace_path(c->ws, "policy.yml");
	char *git_dir = workspace_path(c->ws, "git");
	if (!file || !git_dir) {
		free(file);
		free(git_dir);
		return -ENOMEM;
	}
	/* The old policy: the snapshot, if it is the one the workspace's
	 * record names (anyone who can write the state directory can edit
	 * it). */
	struct policy *before = NULL;
	struct policy_error perr = {0};
	const char *unknown = NULL;
	char old_digest[33];
	if (policy_load_snapshot(file, &before, &perr) < 0) {
		before = NULL;
		unknown = perr.message[0] ? perr.message : "cannot read it";
	} else if (policy_digest(before, old_digest), strcmp(old_digest, c->old->policy_digest)) {
		policy_free(before);
		before = NULL;
		unknown = "not the policy the workspace was mounted with (its digest differs)";
	}
	struct gitpriv_base base;
	int gr = gitpriv_read_base(c->ws->dir, &base);
	struct strvec found = {0};
	char where[PATH_MAX] = "";
	int rc = gr < 0 && gr != -ENOENT
		     ? gr /* a private .git whose base is unknown: fail closed */
		     : newly_hidden_find(c->lower_fd, c->upper_fd, c->ri.workdir,
					 gr == 0 ? git_dir : NULL, gr == 0 ? base.tree : NULL,
					 before, c->policy, &found, where, sizeof(where));
	if (gr < 0 && gr != -ENOENT)
		snprintf(where, sizeof(where), "git-base");
	policy_free(before);
	if (rc < 0) {
		char *q = changes_quote(where);
		cli_error(CMD, "workspace %s: cannot compare the policies at %s: %s", c->ws->name,
			  q ? q : where, strerror(-rc));
		free(q);
	} else if (found.n) {
		for (size_t i = 0; i < found.n && i < NEWLY_HIDDEN_SHOWN; i++) {
			char *q = changes_quote(found.v[i]);
			cli_error(CMD,
				  "workspace %s: %s: the new policy hides it; the old one showed "
				  "it",
				  c->ws->name, q ? q : found.v[i]);
			free(q);
		}
		if (found.n > NEWLY_HIDDEN_SHOWN)
			cli_error(CMD, "workspace %s: ... and %zu more", c->ws->name,
				  found.n - NEWLY_HIDDEN_SHOWN);
		if (unknown)
			cli_error(CMD,
				  "workspace %s: %s: %s, so all that the new policy hides counts",
				  c->ws->name, file, unknown);
		cli_error(CMD,
			  "workspace %s: not mounted: what the old policy showed may live on in "
			  "the workspace (the agent's copies, renamed directories, its .git); "
			  "export the agent's work and start a new workspace under the new "
			  "policy (agentfs rm %s)%s",
			  c->ws->name, c->ws->name,
			  unknown ? "" : ", or mount it with the old policy, which shows them");
		rc = -EACCES;
	}
	strvec_clear(&found);
	free(file);
	free(git_dir);
	return rc;
}

/* policy.yml: written to a temp file and renamed, like workspace.yml. */
static int write_policy_snapshot(struct mount_ctx *c)
{
	char *file = workspace_path(c->ws, "policy.yml");
	char *tmp = workspace_path(c->ws, ".policy.yml.tmp");
	int rc = 0;
	if (!file || !tmp) {
		rc = -ENOMEM;
		goto out;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	size_t len = strlen(c->policy_yaml), off = 0;
	while (off < len && rc == 0) {
		ssize_t w = write(fd, c->policy_yaml + off, len - off);
		if (w < 0 && errno != EINTR)
			rc = -errno;
		else if (w > 0)
			off += (size_t)w;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, file) != 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
out:
	if (rc < 0)
		cli_error(CMD, "%s/policy.yml: cannot write: %s", c->ws->dir, strerror(-rc));
	free(file);
	free(tmp);
	return rc;
}

/* ---- the workspace directory ---- */

static int mkdir_tracked(struct mount_ctx *c, const char *path)
{
	if (mkdir(path, 0700) == 0) {
		if (c->n_created_dirs < (int)(sizeof(c->created_dirs) / sizeof(c->created_dirs[0])))
			c->created_dirs[c->n_created_dirs++] = strdup(path);
		return 0;
	}
	return errno == EEXIST ? 0 : -errno;
}

/* mkdir -p of the state root and its workspaces/, remembering what was made. */
static int make_state_dirs(struct mount_ctx *c)
{
	char *ws_parent;
	if (asprintf(&ws_parent, "%s/workspaces", c->root) < 0)
		return -ENOMEM;
	char *p = ws_parent;
	int rc = 0;
	for (char *s = strchr(p + 1, '/');; s = strchr(s + 1, '/')) {
		if (s)
			*s = '\0';
		struct stat st;
		if (stat(p, &st) != 0)
			rc = mkdir_tracked(c, p);
		else if (!S_ISDIR(st.st_mode))
			rc = -ENOTDIR;
		if (s)
			*s = '/';
		if (rc < 0 || !s)
			break;
	}
	if (rc < 0)
		cli_error(CMD, "%s: cannot create the state directory: %s", c->root, strerror(-rc));
	free(ws_parent);
	return rc;
}

static int open_ws_dir(struct mount_ctx *c)
{
	c->ws_fd = open(c->ws->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->ws_fd < 0) {
		int e = errno;
		cli_error(CMD, "%s: %s", c->ws->dir, strerror(e));
		return -e;
	}
	/* A mount right after a kill -9 waits for the killed daemon to let go. */
	int lr = workspace_lock_after_kill(c->ws->dir, c->ws_fd);
	if (lr < 0) {
		int e = -lr;
		pid_t pid = 0;
		char *m = NULL;
		if (workspace_state(c->ws, &pid, &m) == WORKSPACE_MOUNTED)
			cli_error(CMD, "workspace %s is already mounted at %s (pid %ld)",
				  c->ws->name, m, (long)pid);
		else if (e == EWOULDBLOCK)
			cli_error(CMD, "workspace %s is in use by another agentfs process",
				  c->ws->name);
		else
			cli_error(CMD, "%s: cannot lock: %s", c->ws->dir, strerror(e));
		free(m);
		return -EBUSY;
	}
	return 0;
}

/* Creates the new workspace's directory, upper/ and work/. */
static int create_workspace(struct mount_ctx *c)
{
	int rc = make_state_dirs(c);
	if (rc < 0)
		return rc;
	if (mkdir(c->ws->dir, 0700) != 0) {
		int e = errno;
		cli_error(CMD, "%s: cannot create the workspace: %s", c->ws->dir, strerror(e));
		return -e;
	}
	c->created_ws = true;
	rc = open_ws_dir(c);
	if (rc < 0)
		return rc;
	if (mkdirat(c->ws_fd, "upper", 0700) != 0 || mkdirat(c->ws_fd, "work", 0700) != 0) {
		int e = errno;
		cli_error(CMD, "%s: cannot create upper/ and work/: %s", c->ws->dir, strerror(e));
		return -e;
	}
	return 0;
}

static int open_layers(struct mount_ctx *c)
{
	const int fl = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	c->lower_fd = open(c->ri.workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->lower_fd < 0) {
		int e = errno;
		cli_error(CMD, "%s: %s", c->ri.workdir, strerror(e));
		return -e;
	}
	c->upper_fd = openat(c->ws_fd, "upper", fl);
	if (c->upper_fd < 0) {
		int e = errno;
		cli_error(CMD, "%s/upper: %s", c->ws->dir, strerror(e));
		return -e;
	}
	c->work_fd = openat(c->ws_fd, "work", fl);
	if (c->work_fd < 0 && errno == ENOENT && mkdirat(c->ws_fd, "work", 0700) == 0)
		c->work_fd = openat(c->ws_fd, "work", fl);
	if (c->work_fd < 0) {
		int e = errno;
		cli_error(CMD, "%s/work: %s", c->ws->dir, strerror(e));
		return -e;
	}
	return 0;
}

/* Lazily detach a dead mount of this workspace and drop its pid file. */
/* A resumed workspace with a private .git whose build never finished (it
 * stopped at an unmount: cli/gitpriv.h, gitpriv_serving; or the daemon died
 * first) and whose upper holds nothing is a new workspace in all but name:
 * its next build takes the repository's HEAD as it is now for the base.
 * workspace.yml, `agentfs list`, the evidence and the journal's mount record
 * then name that commit too, not the one of the first mount.  0, or a
 * negative errno without memory. */
static int rebase_unbuilt(struct mount_ctx *c)
{
	if (!c->old || c->moved_from || policy_git_mode(c->policy) != POLICY_GIT_PRIVATE ||
	    strcmp(c->ws->base_commit, c->ri.base_commit) == 0)
		return 0;
	char *base = workspace_path(c->ws, "git-base");
	if (!base)
		return -ENOMEM;
	struct stat st;
	bool unbuilt = lstat(base, &st) != 0 && errno == ENOENT;
	free(base);
	return unbuilt && workspace_upper_empty(c->ws->dir)
		   ? workspace_set(&c->ws->base_commit, c->ri.base_commit)
		   : 0;
}

static int repair_stale(struct mount_ctx *c)
{
	pid_t pid;
	char *m = NULL;
	enum workspace_state st = workspace_state(c->ws, &pid, &m);
	int rc = 0;
	if (st == WORKSPACE_MOUNTED) {
		cli_error(CMD, "workspace %s is already mounted at %s (pid %ld)", c->ws->name, m,
			  (long)pid);
		rc = -EBUSY;
	} else if (st == WORKSPACE_STALE) {
		char src[PATH_MAX], want[PATH_MAX];
		snprintf(want, sizeof(want), "agentfs:%s", c->ws->name);
		if (m && workspace_fuse_mount_at(m, src, sizeof(src)) == 1 &&
		    strcmp(src, want) == 0) {
			char err[512];
			if (workspace_fuse_unmount(m, true, err, sizeof(err)) < 0) {
				cli_error(CMD,
					  "%s: cannot detach the dead mount of workspace %s: %s", m,
					  c->ws->name, err);
				rc = -EBUSY;
			}
		}
		char *pidfile = workspace_path(c->ws, "daemon.pid");
		if (rc == 0 && pidfile)
			unlink(pidfile);
		free(pidfile);
	}
	free(m);
	return rc;
}

/* ---- the daemon ---- */

/* Append @s as a JSON string body (without quotes). */
static void json_str(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
}

static char *mount_detail(const struct mount_ctx *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	fprintf(f, "{\"version\":\"%s\",\"workspace\":\"", AGENTFS_VERSION);
	json_str(f, c->ws->name);
	fprintf(f, "\",\"repo\":\"");
	json_str(f, c->ws->repo);
	fprintf(f, "\",\"mountpoint\":\"");
	json_str(f, c->mnt);
	fprintf(f, "\",\"base_commit\":\"%s\",\"policy_digest\":\"%s\",\"fuse_options\":\"",
		c->ws->base_commit, c->digest);
	json_str(f, c->a.fuse_opts);
	fprintf(f, "\",\"resumed\":%s", c->old ? "true" : "false");
	if (c->moved_from) {
		fprintf(f, ",\"repo_moved_from\":\"");
		json_str(f, c->moved_from);
		fputc('"', f);
	}
	fputc('}', f);
	fclose(f);
	return buf;
}

/* Takes @ready_fd: fs_serve() closes it, and so does every earlier failure. */
static int serve_journaled(struct mount_ctx *c, int ready_fd)
{
	struct journal *j = NULL;
	if (!c->a.no_journal) {
		char *jpath = workspace_path(c->ws, "journal.jsonl");
		int rc = jpath ? journal_open(&j, jpath, c->a.sync) : -ENOMEM;
		free(jpath);
		if (rc < 0) {
			fprintf(stderr, "agentfs: mount: %s/journal.jsonl: cannot open: %s\n",
				c->ws->dir, strerror(-rc));
			if (ready_fd >= 0)
				close(ready_fd);
			return 1;
		}
		uint64_t replayed, resumed;
		journal_open_stats(j, &replayed, &resumed);
		if (resumed)
			fprintf(stderr,
				"agentfs: journal: %" PRIu64 " lines replayed after the saved "
				"state of its first %" PRIu64 " bytes\n",
				replayed, resumed);
		else if (replayed)
			fprintf(stderr, "agentfs: journal: %" PRIu64 " lines replayed\n", replayed);
	}
	char *detail = mount_detail(c);
	struct journal_event ev = {.op = JOP_MOUNT, .pid = getpid(), .uid = getuid()};
	ev.detail = detail;
	journal_record(j, &ev);
	free(detail);
	if (j) {
		/* Files of the upper changed without a record (a crash of the last
		 * daemon) are recorded before the agent can touch them again. */
		char gitd[PATH_MAX];
		struct stat gst;
		bool private_git =
		    snprintf(gitd, sizeof(gitd), "%s/git", c->ws->dir) < (int)sizeof(gitd) &&
		    stat(gitd, &gst) == 0 && S_ISDIR(gst.st_mode);
		int n = journal_recover_upper(j, c->upper_fd, private_git);
		if (n < 0)
			fprintf(stderr,
				"%s: warning: cannot check the upper for unrecorded "
				"changes: %s\n",
				c->ws->dir, strerror(-n));
		/* The mount record is on disk before the agent can do anything. */
		int f = journal_flush(j);
		if (f < 0) {
			fprintf(stderr, "agentfs: mount: %s/journal.jsonl: cannot write: %s\n",
				c->ws->dir, strerror(-f));
			journal_close(j);
			if (ready_fd >= 0)
				close(ready_fd);
			return 1;
		}
	}

	struct fs_config cfg = {
	    .mountpoint = c->mnt,
	    .lower_fd = c->lower_fd,
	    .upper_fd = c->upper_fd,
	    .work_fd = c->work_fd,
	    .policy = c->policy,
	    .journal = j,
	    .fsname = c->fsname,
	    .fuse_opts = c->a.fuse_opts,
	    .debug = c->a.debug,
	    .passthrough = !c->a.no_passthrough,
	    .ready_fd = ready_fd,
	    .state_dir = c->ws->dir,
	};
	/* The workspace-private .git (policy `git: private`, cli/gitpriv.h). */
	struct gitpriv *gp = NULL;
	gitpriv_attach(c->ws, c->policy, c->lower_fd, c->mnt, &cfg, &gp);
	int rc = fs_serve(&cfg);
	gitpriv_free(gp);
	if (rc < 0)
		fprintf(stderr, "agentfs: mount: %s: cannot serve the mount: %s\n", c->a.mnt,
			strerror(-rc));

	struct journal_event end = {.op = JOP_UNMOUNT, .result = rc < 0 ? rc : 0};
	end.pid = getpid();
	end.uid = getuid();
	journal_record(j, &end);
	/* Records the writer could not append (a full disk) are lost with the
	 * daemon: say so in its log; the next mount's recovery accounts for the
	 * upper files they described. */
	int f = journal_flush(j);
	if (f < 0)
		fprintf(
		    stderr,
		    "agentfs: journal: cannot write journal.jsonl: %s; its last records are lost\n",
		    strerror(-f));
	journal_close(j);
	return rc < 0 ? 1 : 0;
}

/*
 * The daemon's life after fork (or the foreground mount's): pid file, journal,
 * serve, journal.  Errors go to stderr as the one line the parent will show.
 * @ready_fd is closed before this returns (end-of-file without a byte tells the
 * parent the mount failed).  Returns the exit status.
 */
static int serve(struct mount_ctx *c, int ready_fd)
{
	int rc = workspace_write_pid(c->ws, getpid(), c->mnt);
	if (rc < 0) {
		fprintf(stderr, "agentfs: mount: %s/daemon.pid: cannot write: %s\n", c->ws->dir,
			strerror(-rc));
		if (ready_fd >= 0)
			close(ready_fd);
		return 1;
	}
	int status = serve_journaled(c, ready_fd);
	char *pidfile = workspace_path(c->ws, "daemon.pid");
	if (pidfile)
		unlink(pidfile);
	free(pidfile);
	return status;
}

/*
 * Why the daemon failed, from what it wrote to daemon.log from offset @from on:
 * its last "agentfs: " line, followed by the first complaint of libfuse or
 * fusermount3 in parentheses when there is one (the helper says why a mount was
 * refused, e.g. "user has no write access to mountpoint").  malloc'd, or NULL.
 */
static char *daemon_error(const struct mount_ctx *c, off_t from)
{
	char *path = workspace_path(c->ws, "daemon.log");
	FILE *f = path ? fopen(path, "re") : NULL;
	free(path);
	if (!f)
		return NULL;
	if (fseeko(f, from, SEEK_SET) != 0) {
		fclose(f);
		return NULL;
	}
	char *line = NULL, *ours = NULL, *cause = NULL, *last = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) > 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0)
			continue;
		char **slot = strncmp(line, "agentfs: ", 9) == 0 ? &ours
			      : (!cause && (strncmp(line, "fusermount3: ", 13) == 0 ||
					    strncmp(line, "fuse: ", 6) == 0))
				  ? &cause
				  : &last;
		free(*slot);
		*slot = strdup(line);
	}
	free(line);
	fclose(f);
	char *msg = NULL;
	if (ours && cause) {
		if (asprintf(&msg, "%s (%s)", ours, cause) < 0)
			msg = NULL;
	} else if (ours) {
		msg = ours;
		ours = NULL;
	} else if (cause || last) {
		if (asprintf(&msg, "agentfs: mount: %s: the daemon failed: %s", c->a.mnt,
			     cause ? cause : last) < 0)
			msg = NULL;
	}
	free(ours);
	free(cause);
	free(last);
	return msg;
}

/* Wait for the ready byte: 1 ready, 0 end-of-file (failed), -ETIMEDOUT. */
static int wait_ready(int fd)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long spent =
		    (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (spent >= READY_TIMEOUT_MS)
			return -ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)(READY_TIMEOUT_MS - spent));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		char b;
		ssize_t k = read(fd, &b, 1);
		if (k < 0 && errno == EINTR)
			continue;
		return k == 1 ? 1 : 0;
	}
}

static void stop_child(pid_t pid)
{
	int status;
	kill(pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
}

static int start_daemon(struct mount_ctx *c)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		cli_error(CMD, "pipe: %s", strerror(errno));
		return -errno;
	}
	char *logpath = workspace_path(c->ws, "daemon.log");
	int logfd =
	    logpath ? open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600)
		    : -1;
	if (logfd < 0) {
		int e = logpath ? errno : ENOMEM;
		cli_error(CMD, "%s: %s", logpath ? logpath : "daemon.log", strerror(e));
		free(logpath);
		close(pfd[0]);
		close(pfd[1]);
		return -e;
	}
	free(logpath);
	off_t log_start = lseek(logfd, 0, SEEK_END);
	if (log_start < 0)
		log_start = 0;
	int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		cli_error(CMD, "fork: %s", strerror(e));
		close(pfd[0]);
		close(pfd[1]);
		close(logfd);
		if (nullfd >= 0)
			close(nullfd);
		return -e;
	}
	if (pid == 0) {
		close(pfd[0]);
		/* A parent killed while waiting must not take the daemon with it: no
		 * terminal signals after setsid(), and no SIGPIPE from the ready byte. */
		signal(SIGPIPE, SIG_IGN);
		setsid();
		/* Hold no directory busy: the caller's cwd may be one it wants to
		 * remove or unmount later. */
		if (chdir("/") != 0)
			_exit(1);
		if (nullfd >= 0)
			dup2(nullfd, STDIN_FILENO);
		dup2(logfd, STDOUT_FILENO);
		dup2(logfd, STDERR_FILENO);
		time_t now = time(NULL);
		char ts[64];
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
		fprintf(stderr, "%s agentfs %s daemon %ld: serving %s at %s\n", ts, AGENTFS_VERSION,
			(long)getpid(), c->ri.workdir, c->mnt);
		fflush(stderr);
		int status = serve(c, pfd[1]);
		fflush(NULL);
		_exit(status);
	}
	close(pfd[1]);
	close(logfd);
	if (nullfd >= 0)
		close(nullfd);
	int r = wait_ready(pfd[0]);
	close(pfd[0]);
	if (r == 1) {
		struct stat st;
		if (stat(c->mnt, &st) == 0)
			return 0;
		int e = errno;
		char err[512];
		cli_error(CMD, "%s: the mount does not answer: %s", c->a.mnt, strerror(e));
		workspace_fuse_unmount(c->mnt, true, err, sizeof(err));
		stop_child(pid);
		return -e;
	}
	if (r == 0) {
		int status = 0;
		waitpid(pid, &status, 0);
		/* Killed between mounting and the ready byte, the daemon left its
		 * mount behind, dead: detached, so nothing is left mounted. */
		char src[PATH_MAX], err[512];
		if (workspace_fuse_mount_at(c->mnt, src, sizeof(src)) == 1 &&
		    strcmp(src, c->fsname) == 0)
			workspace_fuse_unmount(c->mnt, true, err, sizeof(err));
		char *msg = WIFSIGNALED(status) ? NULL : daemon_error(c, log_start);
		if (WIFSIGNALED(status))
			cli_error(CMD,
				  "%s: the daemon was killed by signal %d (%s) before the mount "
				  "was ready",
				  c->a.mnt, WTERMSIG(status), strsignal(WTERMSIG(status)));
		else if (msg)
			fprintf(stderr, "%s\n", msg);
		else
			cli_error(CMD,
				  "%s: the daemon failed without a message (see %s/daemon.log)",
				  c->a.mnt, c->ws->dir);
		free(msg);
		return -EIO;
	}
	cli_error(CMD, "%s: the daemon did not start within %d s (see %s/daemon.log)", c->a.mnt,
		  READY_TIMEOUT_MS / 1000, c->ws->dir);
	stop_child(pid);
	char src[PATH_MAX], err[512];
	if (workspace_fuse_mount_at(c->mnt, src, sizeof(src)) == 1 && strcmp(src, c->fsname) == 0)
		workspace_fuse_unmount(c->mnt, true, err, sizeof(err));
	return -ETIMEDOUT;
}

/* ---- putting it together ---- */

static void undo(struct mount_ctx *c)
{
	if (c->created_ws && c->ws) {
		if (c->ws_fd >= 0) {
			close(c->ws_fd);
			c->ws_fd = -1;
		}
		workspace_remove_tree(c->ws->dir);
	} else if (c->old && c->saved) {
		workspace_save(c->old); /* a resumed workspace keeps its record as it was */
	}
	for (int i = c->n_created_dirs - 1; i >= 0; i--)
		rmdir(c->created_dirs[i]);
	if (c->created_mnt)
		rmdir(c->mnt);
}

static void ctx_free(struct mount_ctx *c)
{
	for (int fd, i = 0; i < 4; i++) {
		fd = i == 0 ? c->ws_fd : i == 1 ? c->lower_fd : i == 2 ? c->upper_fd : c->work_fd;
		if (fd >= 0)
			close(fd);
	}
	for (int i = 0; i < c->n_created_dirs; i++)
		free(c->created_dirs[i]);
	repo_info_clear(&c->ri);
	free(c->root);
	free(c->mnt);
	free(c->fsname);
	free(c->moved_from);
	free(c->a.fuse_opts);
	workspace_free(c->ws);
	workspace_free(c->old);
	policy_free(c->policy);
	free(c->policy_yaml);
}

static int prepare(struct mount_ctx *c)
{
	char err[1024];
	int rc = check_fuse_available();
	if (rc < 0)
		return rc;

	rc = repo_open_worktree(c->a.repo, &c->ri, err, sizeof(err));
	if (rc < 0) {
		cli_error(CMD, "%s: %s", c->a.repo, err);
		return rc;
	}

	rc = workspace_abspath(c->a.mnt, &c->mnt);
	if (rc < 0) {
		cli_error(CMD, "%s: %s", c->a.mnt,
			  rc == -ENOENT ? "neither the mountpoint nor its parent exists"
					: strerror(-rc));
		return rc;
	}
	if (strcmp(c->mnt, "/") == 0) {
		cli_error(CMD, "/: cannot mount over the root directory");
		return -EINVAL;
	}
	if (!c->a.name) {
		c->a.name = strrchr(c->mnt, '/') + 1;
		if (!workspace_name_valid(c->a.name)) {
			cli_error(CMD,
				  "%s: '%s' is not a valid workspace name (" WORKSPACE_NAME_RULE
				  "); pass --name",
				  c->a.mnt, c->a.name);
			return -EINVAL;
		}
	} else if (!workspace_name_valid(c->a.name)) {
		cli_error(CMD, "--name %s: not a valid workspace name (" WORKSPACE_NAME_RULE ")",
			  c->a.name);
		return -EINVAL;
	}

	rc = workspace_state_root(c->a.state_dir, &c->root);
	if (rc < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		return rc;
	}
	rc = check_overlaps(c);
	if (rc < 0)
		return rc;

	rc = workspace_load(c->root, c->a.name, &c->old, err, sizeof(err));
	if (rc == -ENOENT) {
		char *dir = NULL;
		struct stat st;
		if (workspace_dir_for(c->root, c->a.name, &dir) == 0 && lstat(dir, &st) == 0) {
			cli_error(CMD, "%s: exists but is not a workspace (no workspace.yml)", dir);
			free(dir);
			return -EEXIST;
		}
		free(dir);
	} else if (rc < 0) {
		/* A workspace another mount is creating has no workspace.yml yet:
		 * its directory is locked (open_ws_dir()). */
		char *dir = NULL;
		int fd = -1;
		if (workspace_dir_for(c->root, c->a.name, &dir) == 0)
			fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK)
			cli_error(CMD, "workspace %s is in use by another agentfs process",
				  c->a.name);
		else
			cli_error(CMD, "workspace %s: %s", c->a.name, err);
		if (fd >= 0)
			close(fd);
		free(dir);
		return rc;
	} else if (strcmp(c->old->repo, c->ri.workdir) != 0 &&
		   repo_moved_to(c->old->repo, c->old->base_commit, &c->ri)) {
		/* Moved: the upper holds changes against the base commit, which
		 * the new place has.  Said once the mount serves (moved_note()). */
		char *moved = strdup(c->ri.workdir);
		if (!moved)
			return -ENOMEM;
		c->moved_from = c->old->repo;
		c->old->repo = moved;
	} else if (strcmp(c->old->repo, c->ri.workdir) != 0) {
		struct stat st;
		bool gone = lstat(c->old->repo, &st) < 0;
		const char *why =
		    !gone ? ""
		    : *c->old->base_commit
			? ", which lacks the workspace's base commit"
			: " (made on an unborn HEAD, the workspace has no base commit to "
			  "find elsewhere)";
		char *qo = changes_quote(c->old->repo), *qn = changes_quote(c->ri.workdir);
		cli_error(CMD, "workspace %s belongs to the repository %s%s, not %s%s", c->a.name,
			  qo ? qo : c->old->repo, gone ? " (gone)" : "", qn ? qn : c->ri.workdir,
			  why);
		free(qo);
		free(qn);
		return -EINVAL;
	}

	if (c->old) {
		/* Resume: same upper, same base commit; the mountpoint may move. */
		rc = workspace_new(c->root, c->old->name, c->old->repo, c->old->base_commit, c->mnt,
				   c->old->created, c->old->policy_digest, &c->ws);
		if (rc == 0)
			rc = open_ws_dir(c);
		if (rc == 0)
			rc = repair_stale(c);
		if (rc < 0)
			return rc;
	} else {
		rc = workspace_new(c->root, c->a.name, c->ri.workdir, c->ri.base_commit, c->mnt,
				   (int64_t)time(NULL), "", &c->ws);
		if (rc < 0)
			return rc;
	}
	if (asprintf(&c->fsname, "agentfs:%s", c->ws->name) < 0) {
		c->fsname = NULL;
		return -ENOMEM;
	}

	rc = check_mountpoint(c);
	if (rc < 0)
		return rc;
	rc = load_policy(c);
	if (rc < 0)
		return rc;
	rc = workspace_set(&c->ws->policy_digest, c->digest);
	if (rc == 0)
		rc = rebase_unbuilt(c);
	if (rc < 0)
		return rc;

	/* Every refusal that needs no workspace directory is behind us. */
	if (!c->old) {
		rc = create_workspace(c);
		if (rc < 0)
			return rc;
	}
	rc = open_layers(c);
	if (rc == 0)
		rc = check_xattrs(c);
	if (rc == 0)
		rc = check_newly_hidden(c);
	if (rc == 0) {
		rc = workspace_save(c->ws);
		c->saved = rc == 0;
		if (rc < 0)
			cli_error(CMD, "%s/workspace.yml: cannot write: %s", c->ws->dir,
				  rc == -EINVAL ? "a path is not valid UTF-8" : strerror(-rc));
	}
	if (rc == 0) {
		rc = write_policy_snapshot(c);
	}
	if (rc < 0)
		return rc;

	struct stat st;
	if (lstat(c->mnt, &st) != 0) {
		if (mkdir(c->mnt, 0755) != 0) {
			int e = errno;
			cli_error(CMD, "%s: cannot create the mountpoint: %s", c->a.mnt,
				  strerror(e));
			return -e;
		}
		c->created_mnt = true;
	}
	return 0;
}

int cmd_mount(int argc, char **argv)
{
	struct mount_ctx c = {.ws_fd = -1, .lower_fd = -1, .upper_fd = -1, .work_fd = -1};
	int u = parse_args(argc, argv, &c.a);
	if (u != 0) {
		free(c.a.fuse_opts);
		return u < 0 ? 0 : u;
	}
	/* One start of libgit2 here, held until the end, serves the repository
	 * checks below and, inherited by fork, the daemon's private .git (its
	 * start reads no CA bundle: cli/notls.c). */
	git_libgit2_init();
	int rc = prepare(&c);
	if (rc == 0) {
		if (c.a.foreground) {
			moved_note(&c);
			int status = serve(&c, -1);
			rc = status == 0 ? 0 : -EIO;
		} else {
			rc = start_daemon(&c);
			if (rc == 0)
				moved_note(&c);
		}
	}
	if (rc < 0)
		undo(&c);
	ctx_free(&c);
	/* Once the daemon serves, this process only exits, and the mount's
	 * caller waits for it: freeing libgit2's state and running the
	 * libraries' exit handlers is work the kernel's teardown of the
	 * process makes unneeded. */
	if (rc == 0 && !c.a.foreground) {
		fflush(NULL);
		_exit(0);
	}
	git_libgit2_shutdown();
	return rc < 0 ? 1 : 0;
}
