/* cmd_list.c - `agentfs list`: the workspaces of a state root and their state. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/workspace.h"

const char cmd_list_usage[] =
    "usage: agentfs list [OPTIONS]\n"
    "\n"
    "List the workspaces, one a line: name, state, repository, mountpoint, base\n"
    "commit (short) and the number of changed entries in the upper layer (files,\n"
    "symlinks and deletions).  States:\n"
    "  mounted    a live daemon serves the mountpoint\n"
    "  stale      the daemon is gone but its mount or pid file is left\n"
    "             (agentfs unmount, or agentfs mount again, repairs it)\n"
    "  unmounted  kept on disk; agentfs mount resumes it\n"
    "  broken     its workspace.yml cannot be read (the reason goes to stderr)\n"
    "\n"
    "Options:\n"
    "  --state-dir DIR   workspaces live in DIR/workspaces (default:\n"
    "                    ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help        show this help\n";

static const char *const CMD = "list";

struct row {
	char *cols[6];
};

/* Columns @s takes on a terminal: its UTF-8 characters, not its bytes (a
 * path with "ü" would shift the columns after it). */
static size_t text_width(const char *s)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p & 0xc0) != 0x80;
	return n;
}

/* A path as shown: as it is, or quoted like git (changes_quote()) when it holds
 * a control character that would break the table (a newline, a tab).
 * malloc'd. */
static char *shown_path(const char *path)
{
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return changes_quote(path);
	return strdup(path);
}

static void print_row(const char *const *cols, const size_t *width)
{
	for (int k = 0; k < 5; k++)
		printf("%s%*s  ", cols[k], (int)(width[k] - text_width(cols[k])), "");
	printf("%s\n", cols[5]);
}

int cmd_list(int argc, char **argv)
{
	enum { OPT_STATE = 256 };
	static const struct option longopts[] = {
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *state_dir = NULL;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_list_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs list --help')", cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (optind != argc) {
		cli_error(CMD, "%s: unexpected argument (see 'agentfs list --help')", argv[optind]);
		return 2;
	}
	char *root = NULL;
	if (workspace_state_root(state_dir, &root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		return 1;
	}
	char **names = NULL;
	size_t n = 0;
	int rc = workspace_list_names(root, &names, &n);
	if (rc < 0) {
		cli_error(CMD, "%s/workspaces: %s", root, strerror(-rc));
		free(root);
		return 1;
	}

	static const char *const head[6] = {"NAME",	  "STATE", "REPO",
					    "MOUNTPOINT", "BASE",  "CHANGES"};
	struct row *rows = calloc(n ? n : 1, sizeof(*rows));
	size_t width[6];
	for (int k = 0; k < 6; k++)
		width[k] = text_width(head[k]);
	int status = rows ? 0 : 1;
	for (size_t i = 0; rows && i < n; i++) {
		struct workspace *ws = NULL;
		char err[1024];
		char **col = rows[i].cols;
		const char *state = "broken";
		char base[16] = "-", changes[32] = "-";
		char *mnt = NULL;
		if (workspace_load(root, names[i], &ws, err, sizeof(err)) < 0) {
			cli_error(CMD, "workspace %s: %s", names[i], err);
		} else {
			pid_t pid;
			enum workspace_state st = workspace_state(ws, &pid, &mnt);
			state = st == WORKSPACE_MOUNTED ? "mounted"
				: st == WORKSPACE_STALE ? "stale"
							: "unmounted";
			snprintf(base, sizeof(base), "%.12s",
				 ws->base_commit[0] ? ws->base_commit : "(unborn)");
			long cnt = workspace_count_upper(ws);
			if (cnt >= 0)
				snprintf(changes, sizeof(changes), "%ld", cnt);
		}
		col[0] = strdup(names[i]);
		col[1] = strdup(state);
		col[2] = shown_path(ws ? ws->repo : "-");
		col[3] = shown_path(mnt && *mnt		      ? mnt
				    : ws && ws->mountpoint[0] ? ws->mountpoint
							      : "-");
		col[4] = strdup(base);
		col[5] = strdup(changes);
		free(mnt);
		workspace_free(ws);
		for (int k = 0; k < 6; k++) {
			if (!col[k]) {
				status = 1;
				col[k] = strdup("?");
			}
			if (col[k] && text_width(col[k]) > width[k])
				width[k] = text_width(col[k]);
		}
	}
	if (n && rows) {
		print_row(head, width);
		for (size_t i = 0; i < n; i++)
			print_row((const char *const *)rows[i].cols, width);
	}
	for (size_t i = 0; rows && i < n; i++)
		for (int k = 0; k < 6; k++)
			free(rows[i].cols[k]);
	free(rows);
	workspace_names_free(names, n);
	free(root);
	if (fflush(stdout) != 0)
		status = 1;
	return status;
}
