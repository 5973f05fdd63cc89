/* cmd_status.c - `agentfs status`: the paths the agent changed, like git status --short. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/patch.h"
#include "cli/workspace.h"

const char cmd_status_usage[] =
    "usage: agentfs status [OPTIONS] MNT|NAME\n"
    "\n"
    "List the paths the agent changed in the workspace mounted at MNT (or named\n"
    "NAME), compared with the base (the repository's working tree as the agent\n"
    "first saw it), one a line: a code, a space, the path (quoted like git when it\n"
    "holds special characters).  Exported changes first, sorted by path:\n"
    "  M  modified (content or mode)\n"
    "  A  added\n"
    "  D  deleted\n"
    "  R  renamed, \"R OLD -> NEW\" (git rename detection, 50% similarity)\n"
    "  T  type changed (file <-> symlink)\n"
    "then the paths `agentfs export` leaves out:\n"
    "  C  conflict: changed in the repository after the agent copied it, or a\n"
    "     file or symlink where a directory held files the agent cannot see, or\n"
    "     where the policy hides a file or symlink\n"
    "  H  created by the agent at a name the policy hides\n"
    "  !  untracked and ignored by the repository's ignore rules\n"
    "  X  a fifo, socket or device\n"
    "  S  inside a submodule: the submodule is another repository\n"
    "\n"
    "Options:\n"
    "  --state-dir DIR   workspaces live in DIR/workspaces (default:\n"
    "                    ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 success (with or without changes), 1 failure, 2 usage error.\n";

static const char *const CMD = "status";

static char delta_code(git_delta_t s)
{
	switch (s) {
	case GIT_DELTA_ADDED:
		return 'A';
	case GIT_DELTA_DELETED:
		return 'D';
	case GIT_DELTA_RENAMED:
		return 'R';
	case GIT_DELTA_TYPECHANGE:
		return 'T';
	case GIT_DELTA_COPIED:
		return 'C';
	default:
		return 'M';
	}
}

/* A path as `git status --short` shows it: C-quoted when it holds a control
 * character, a quote, a backslash or a byte past ASCII, and when it holds a
 * space too (QUOTE_PATH_QUOTE_SP, git's wt-status.c), so that a name such as
 * "a -> b" cannot read as a rename.  NULL on ENOMEM. */
static char *quote_status(const char *path)
{
	char *q = changes_quote(path);
	if (!q || q[0] == '"' || !strchr(path, ' '))
		return q;
	char *w = NULL;
	if (asprintf(&w, "\"%s\"", q) < 0)
		w = NULL;
	free(q);
	return w;
}

static void print_path(char code, const char *path, const char *to)
{
	char *q = quote_status(path);
	char *t = to ? quote_status(to) : NULL;
	if (to)
		printf("%c %s -> %s\n", code, q ? q : path, t ? t : to);
	else
		printf("%c %s\n", code, q ? q : path);
	free(q);
	free(t);
}

int cmd_status(int argc, char **argv)
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
	optind = 0; /* 0: glibc re-initialises, permuting operands and options */
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_status_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs status --help')", cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (argc - optind != 1) {
		cli_error(CMD, "%s (see 'agentfs status --help')",
			  optind == argc ? "missing MNT or NAME" : "too many arguments");
		return 2;
	}
	const char *target = argv[optind];
	char *root = NULL;
	if (workspace_state_root(state_dir, &root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		return 1;
	}
	char err[1024] = "";
	struct workspace *ws = NULL;
	int r = workspace_find(root, target, &ws, err, sizeof(err));
	free(root);
	if (r < 0) {
		if (r == -ENOENT)
			cli_error(CMD, "%s: not an agentfs mount (no workspace found)", target);
		else
			cli_error(CMD, "%s", err);
		return 1;
	}
	struct changes *cs = NULL;
	r = changes_open_workspace(ws, &cs, err, sizeof(err));
	workspace_free(ws);
	if (r < 0) {
		cli_error(CMD, "%s: %s", target, err);
		return 1;
	}
	struct patch *p = NULL;
	r = patch_new(cs, PATCH_TYPECHANGE | PATCH_NAMES_ONLY, NULL, NULL, &p);
	if (r < 0) {
		const git_error *ge = git_error_last();
		cli_error(CMD, "%s: comparing with the base: %s", target,
			  r == -EIO && ge ? ge->message : strerror(-r));
		changes_free(cs);
		return 1;
	}
	git_diff *d = patch_diff(p);
	for (size_t i = 0; i < git_diff_num_deltas(d); i++) {
		const git_diff_delta *dl = git_diff_get_delta(d, i);
		const char *oldp = dl->old_file.path, *newp = dl->new_file.path;
		if (dl->status == GIT_DELTA_RENAMED)
			print_path('R', oldp, newp);
		else
			print_path(delta_code(dl->status),
				   dl->status == GIT_DELTA_DELETED ? oldp : newp, NULL);
	}
	for (size_t i = 0; i < cs->count; i++)
		if (!change_exported(&cs->items[i]))
			print_path(change_code(&cs->items[i]), cs->items[i].path, NULL);
	patch_free(p);
	changes_free(cs);
	return fflush(stdout) == 0 ? 0 : 1;
}
