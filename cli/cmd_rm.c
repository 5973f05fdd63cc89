/* cmd_rm.c - `agentfs rm NAME`: delete an unmounted workspace and its changes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/workspace.h"

const char cmd_rm_usage[] =
    "usage: agentfs rm [OPTIONS] NAME|MNT...\n"
    "\n"
    "Delete workspaces: their upper layer (the agent's changes, which are lost),\n"
    "journal and metadata.  A mounted workspace is refused (agentfs unmount it\n"
    "first), and so is one whose daemon left a dead mount behind.\n"
    "\n"
    "Options:\n"
    "  -f, --force        also delete a broken workspace (unreadable workspace.yml)\n"
    "  --state-dir DIR    workspaces live in DIR/workspaces (default:\n"
    "                     ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help         show this help\n";

static const char *const CMD = "rm";

/* Delete the directory of workspace @name under @root while holding its lock. */
static int remove_dir(const char *arg, const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		cli_error(CMD, "%s: %s", dir, strerror(errno));
		return -1;
	}
	/* A mount starting right now holds the lock: never delete under it.  A
	 * daemon just killed holds it a little longer: waited for. */
	if (workspace_lock_after_kill(dir, fd) != 0) {
		cli_error(CMD, "%s: the workspace is in use by an agentfs process", arg);
		close(fd);
		return -1;
	}
	int rc = workspace_remove_tree(dir);
	close(fd);
	if (rc < 0) {
		cli_error(CMD, "%s: cannot remove %s: %s", arg, dir,
			  rc == -EXDEV ? "something is mounted inside it" : strerror(-rc));
		return -1;
	}
	return 0;
}

static int rm_one(const char *root, const char *arg, bool force)
{
	struct workspace *ws = NULL;
	char err[1024];
	int rc = workspace_find(root, arg, &ws, err, sizeof(err));
	if (rc == -EINVAL && force && workspace_name_valid(arg)) {
		char *dir = NULL;
		if (workspace_dir_for(root, arg, &dir) < 0)
			return -1;
		rc = remove_dir(arg, dir);
		free(dir);
		return rc;
	}
	if (rc < 0) {
		if (rc == -EINVAL)
			cli_error(CMD, "%s (--force deletes it anyway)", err);
		else
			cli_error(CMD, "%s", err);
		return -1;
	}
	pid_t pid;
	char *mnt = NULL;
	enum workspace_state st = workspace_state(ws, &pid, &mnt);
	char src[PATH_MAX], want[PATH_MAX];
	snprintf(want, sizeof(want), "agentfs:%s", ws->name);
	rc = 0;
	if (st == WORKSPACE_MOUNTED) {
		cli_error(CMD, "%s: workspace %s is mounted at %s (agentfs unmount %s first)", arg,
			  ws->name, mnt, mnt);
		rc = -1;
	} else if (st == WORKSPACE_STALE && mnt &&
		   workspace_fuse_mount_at(mnt, src, sizeof(src)) == 1 && strcmp(src, want) == 0) {
		cli_error(CMD,
			  "%s: workspace %s left a dead mount at %s (agentfs unmount %s first)",
			  arg, ws->name, mnt, mnt);
		rc = -1;
	}
	if (rc == 0)
		rc = remove_dir(arg, ws->dir);
	free(mnt);
	workspace_free(ws);
	return rc;
}

int cmd_rm(int argc, char **argv)
{
	enum { OPT_STATE = 256 };
	static const struct option longopts[] = {
	    {"force", no_argument, NULL, 'f'},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *state_dir = NULL;
	bool force = false;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":fh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			force = true;
			break;
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_rm_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs rm --help')", cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (optind == argc) {
		cli_error(CMD, "NAME or MNT is required (see 'agentfs rm --help')");
		return 2;
	}
	char *root = NULL;
	if (workspace_state_root(state_dir, &root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		return 1;
	}
	int status = 0;
	for (int i = optind; i < argc; i++)
		if (rm_one(root, argv[i], force) < 0)
			status = 1;
	free(root);
	return status;
}
