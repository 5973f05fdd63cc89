/* cmd_verify.c - `agentfs verify`: the journal's chain, and the upper against it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/activity.h"
#include "cli/cli.h"
#include "cli/runlog.h"
#include "cli/workspace.h"
#include "journal/journal.h"

const char cmd_verify_usage[] =
    "usage: agentfs verify [OPTIONS] MNT|NAME|JOURNAL\n"
    "\n"
    "Check the journal of the workspace mounted at MNT (or named NAME, or the\n"
    "journal file or workspace directory JOURNAL):\n"
    "  - the whole chain: every line a valid record, seq without gaps, each\n"
    "    record's prev equal to the hash of the line before, a complete last\n"
    "    line, and the last record the journal's head file names still there\n"
    "    (so editing, removing, reordering or truncating records is detected);\n"
    "  - that every file in the upper still has the hash of its last recorded\n"
    "    content (detects changes to the workspace made behind agentfs's back).\n"
    "Recovery records (files changed without a record after a crash) are listed.\n"
    "The run journal beside it (run.jsonl, what `agentfs run` did), when there is\n"
    "one, is checked by the same chain rule; it has no head file, so records\n"
    "removed from its end, or an edit of its last record that leaves it valid\n"
    "JSON, are not detected.  JOURNAL may name a run.jsonl alone.\n"
    "\n"
    "The chain uses xxh3-128: it detects accidents and naive tampering, not a\n"
    "forger who rewrites the journal and recomputes every hash.  While the\n"
    "workspace is mounted, a file being written may differ from its last record\n"
    "until its handle is closed.\n"
    "\n"
    "Options:\n"
    "  --no-upper        check the journal only\n"
    "  -q, --quiet       print nothing when intact\n"
    "  --state-dir DIR   workspaces live in DIR/workspaces (default:\n"
    "                    ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 intact, 1 not intact (the first bad record and why are named)\n"
    "or failure, 2 usage error.\n";

static const char *const CMD = "verify";

/* As in cmd_log.c: MNT or NAME through the registry, else a workspace directory
 * or a journal file.  *runs is the run journal's path beside it (runlog.h),
 * whether or not there is one. */

static void print_note(void *arg, const char *msg)
{
	bool *quiet = arg;
	if (!*quiet)
		printf("%s\n", msg);
}

/* The run journal at @path, when there is one: 0 intact or absent, 1 damaged
 * or unreadable (said on stderr). */
static int verify_runs(const char *path, bool quiet)
{
	struct runlog_verify rv;
	int r = runlog_verify_file(path, &rv);
	if (r == -ENOENT)
		return 0; /* no run in this workspace */
	if (r < 0) {
		cli_error(CMD, "%s: %s", path, strerror(-r));
		return 1;
	}
	if (rv.bad_line) {
		cli_error(CMD, "%s: record %" PRIu64 " (line %" PRIu64 "): %s", path, rv.bad_seq,
			  rv.bad_line, rv.why);
		return 1;
	}
	if (!quiet)
		printf("run journal intact: %" PRIu64 " records, chain verified\n", rv.records);
	return 0;
}

static bool is_run_journal(const char *path)
{
	const char *slash = strrchr(path, '/');
	return strcmp(slash ? slash + 1 : path, "run.jsonl") == 0;
}

/* Does the workspace whose upper is @upper serve a private .git (its git/
 * beside upper/)?  Then ".git/..." records are not the upper's. */
static bool private_git_beside(const char *upper)
{
	if (!upper)
		return false;
	char p[PATH_MAX];
	struct stat st;
	return snprintf(p, sizeof(p), "%s/../git", upper) < (int)sizeof(p) && stat(p, &st) == 0 &&
	       S_ISDIR(st.st_mode);
}

/* Is the daemon named by the daemon.pid beside @journal running? */
static bool daemon_live(const char *journal)
{
	const char *slash = strrchr(journal, '/');
	char *dir = slash ? strndup(journal, (size_t)(slash - journal)) : strdup(".");
	pid_t pid = 0;
	bool ok = dir && workspace_read_pid_at(dir, &pid, NULL) == 0;
	free(dir);
	char st = ok ? workspace_pid_state(pid) : '?';
	return st != '?' && st != 'Z' && st != 'X';
}

int cmd_verify(int argc, char **argv)
{
	enum { OPT_NO_UPPER = 256, OPT_STATE };
	static const struct option longopts[] = {
	    {"no-upper", no_argument, NULL, OPT_NO_UPPER},
	    {"quiet", no_argument, NULL, 'q'},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool no_upper = false, quiet = false;
	const char *state_dir = NULL;
	int c;
	opterr = 0;
	optind = 0; /* 0: glibc re-initialises, permuting operands and options */
	while ((c = getopt_long(argc, argv, ":hq", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_NO_UPPER:
			no_upper = true;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_verify_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs verify --help')", cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (argc - optind != 1) {
		cli_error(CMD, "%s (see 'agentfs verify --help')",
			  optind == argc ? "missing MNT or NAME" : "too many arguments");
		return 2;
	}
	char *journal = NULL, *upper = NULL, *runs = NULL;
	if (activity_find_journal(CMD, argv[optind], state_dir, &journal, &upper, &runs) < 0)
		return 1;
	if (is_run_journal(journal)) {
		/* a run journal named directly: that file alone */
		int st = verify_runs(journal, quiet);
		free(journal);
		free(upper);
		free(runs);
		return fflush(stdout) != 0 ? 1 : st;
	}
	int upper_fd = -1;
	if (upper && !no_upper) {
		upper_fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (upper_fd < 0) {
			cli_error(CMD, "%s: %s", upper, strerror(errno));
			free(journal);
			free(upper);
			free(runs);
			return 1;
		}
	}
	/* Notes go to stdout as they come; the verdict is the last line. */
	struct journal_verify v = {.note = print_note, .arg = &quiet};
	v.skip_git = private_git_beside(upper);
	int r = journal_verify_file(journal, upper_fd, &v);
	if (upper_fd >= 0)
		close(upper_fd);
	int status = 0;
	if (r < 0) {
		cli_error(CMD, "%s: %s", journal, strerror(-r));
		status = 1;
	} else if (v.bad_line) {
		cli_error(CMD, "%s: record %" PRIu64 " (line %" PRIu64 "): %s", journal, v.bad_seq,
			  v.bad_line, v.why);
		status = 1;
	} else {
		if (v.upper_bad) {
			/* After a kill -9 the records of the last writes may be lost
			 * (the journal's unflushed tail): until the next mount
			 * records what the daemon left (recover), those files look
			 * changed behind agentfs's back. */
			bool killed = v.session_open && !daemon_live(journal);
			cli_error(CMD,
				  "%s: %" PRIu64
				  " file(s) or marker(s) differ from the journal; first: %s%s",
				  upper, v.upper_bad, v.upper_first,
				  killed ? "; the last session has no unmount record (its daemon "
					   "was killed): mount the workspace again to record what "
					   "it left (recover)"
					 : "");
			status = 1;
		}
		if (v.upper_unread) {
			/* Fail closed: what cannot be read is not verified. */
			cli_error(CMD,
				  "%s: %" PRIu64 " entr%s could not be read (named above): not "
				  "checked",
				  upper, v.upper_unread, v.upper_unread == 1 ? "y" : "ies");
			status = 1;
		}
		if (!quiet) {
			printf("journal intact: %" PRIu64 " records, chain verified", v.records);
			if (v.recovered)
				printf(", %" PRIu64 " recovery record(s) listed above",
				       v.recovered);
			if ((upper_fd >= 0 || (upper && !no_upper)) && !v.upper_bad) {
				printf("; upper: %" PRIu64 " file(s) match their last record",
				       v.upper_files);
				if (v.upper_markers)
					printf(", %" PRIu64 " marker(s) (whiteouts, opaque and "
					       "redirected directories, special files) have their "
					       "records",
					       v.upper_markers);
			}
			printf("\n");
		}
	}
	if (runs && verify_runs(runs, quiet))
		status = 1;
	free(journal);
	free(upper);
	free(runs);
	if (fflush(stdout) != 0)
		status = 1;
	return status;
}
