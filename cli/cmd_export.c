/* cmd_export.c - `agentfs export`: the agent's changes as a git patch. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/evidence.h"
#include "cli/patch.h"
#include "cli/series.h"
#include "cli/strvec.h"
#include "cli/workspace.h"

const char cmd_export_usage[] =
    "usage: agentfs export [OPTIONS] MNT|NAME\n"
    "\n"
    "Print the agent's changes in the workspace mounted at MNT (or named NAME) as a\n"
    "git patch: modified, added, deleted and renamed files, mode changes, symlinks\n"
    "and binary files (GIT binary patch).  Apply it in the repository with\n"
    "`git apply` or `git apply --index`.  Nothing is written to the repository.\n"
    "Paths are compared with the base: the repository's working tree as the agent\n"
    "first saw it.\n"
    "\n"
    "Left out of the patch, each named on stderr:\n"
    "  - conflicts: files the agent changed that were changed in the repository\n"
    "    after the agent copied them; the patch would revert that work.  And files\n"
    "    or symlinks the agent put where a directory held files the policy hides,\n"
    "    or where the policy hides a file or symlink (a symlink out of the\n"
    "    repository): the patch would delete or replace what the agent never saw.\n"
    "    By default export then writes no patch and fails; --conflicts=skip\n"
    "    exports the rest.\n"
    "  - files the agent created at a name the policy hides (a secret's name);\n"
    "  - untracked files the repository's ignore rules ignore (build output), with\n"
    "    the agent's changes to .gitignore files applied;\n"
    "    a change to a tracked file is always exported;\n"
    "  - fifos, sockets and devices.\n"
    "\n"
    "Refused, with each place on stderr and nothing written: an added line, a path\n"
    "name (both names of a rename) or, with mbox, a commit message that looks\n"
    "like a credential (a private key block, a cloud access key, a well-known\n"
    "token format), unless --allow-secret lets it through.\n"
    "\n"
    "Options:\n"
    "  --format=FORMAT        patch (default); mbox: one `git am`-able message per\n"
    "                         commit of `agentfs promote` (the agent's commits, then\n"
    "                         its uncommitted changes), on the HEAD at mount; stat:\n"
    "                         a `git diff --stat` summary\n"
    "  --allow-secret WHERE   hand over what looks like a credential (refused\n"
    "                         otherwise), named as the refusal names it: FILE:LINE\n"
    "                         an added line, PATH a path name; with mbox also\n"
    "                         COMMIT:LINE a line of the message of the agent's\n"
    "                         commit COMMIT (its id, 7 or more hex digits; line 1\n"
    "                         is the subject), -m:LINE of the final commit's\n"
    "                         message (may be repeated, at most 64)\n"
    "  -o, --output FILE      write the patch to FILE (replaced atomically; a\n"
    "                         device or fifo is written to) instead of stdout\n"
    "  --evidence             before the patch (the stat; in mbox, below the first\n"
    "                         message's \"---\" line, which `git am` leaves out of\n"
    "                         the commit message), a plain-text account for a\n"
    "                         reviewer: workspace, repository, base commit, the\n"
    "                         journal's span and `agentfs verify` verdict, the files\n"
    "                         read, written, created, deleted and renamed, the\n"
    "                         refusals (hidden names looked up, read-only paths\n"
    "                         changed) and the processes by name.  `git apply` and\n"
    "                         `git am` skip it: none of its lines reads as a patch\n"
    "  --evidence-max=N       list at most N paths per kind (default 100; 0: all)\n"
    "  --conflicts=MODE       fail (default): write nothing and exit 1 when there are\n"
    "                         conflicts; skip: leave them out and exit 0\n"
    "  --state-dir DIR        workspaces live in DIR/workspaces (default:\n"
    "                         ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help             show this help\n"
    "\n"
    "An empty patch (no changes) is empty output (with --evidence, the block\n"
    "alone).  Exit status: 0 success, 1 failure or conflicts, 2 usage error.\n";

static const char *const CMD = "export";

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* What export writes: @text, then, when @patch is not NULL, that patch
 * (patch_write(), delta by delta). */
struct output {
	const char *text;
	size_t len;
	const struct patch *patch;
};

/* The patch's pieces (a line, a line's one-byte origin) gathered into writes
 * of EXPORT_BUF bytes: one write(2) per piece made a patch of 2 million short
 * lines take 4x as long. */
#define EXPORT_BUF (64 * 1024)

struct fd_buf {
	int fd;
	size_t len;
	char buf[EXPORT_BUF];
};

static int fd_sink(void *arg, const char *buf, size_t len)
{
	struct fd_buf *b = arg;
	if (b->len + len > sizeof(b->buf)) {
		int r = write_all(b->fd, b->buf, b->len);
		b->len = 0;
		if (r < 0)
			return r;
		if (len > sizeof(b->buf))
			return write_all(b->fd, buf, len);
	}
	memcpy(b->buf + b->len, buf, len);
	b->len += len;
	return 0;
}

static int write_output(int fd, const struct output *o)
{
	int r = write_all(fd, o->text, o->len);
	if (r == 0 && o->patch) {
		struct fd_buf *b = malloc(sizeof(*b));
		if (!b)
			return -ENOMEM;
		b->fd = fd;
		b->len = 0;
		r = patch_write(o->patch, fd_sink, b);
		if (r == 0)
			r = write_all(fd, b->buf, b->len);
		free(b);
	}
	return r;
}

/* Write @o to @path through a temporary file in its directory and rename(2):
 * a reader never sees half a patch, a failure leaves the old file.  Only a
 * regular file (or none) is replaced so: a device, fifo or terminal (-o
 * /dev/stdout, /dev/null) is written to, since renaming over it would put a
 * regular file in its place (root may write /dev); a symlink to a regular
 * file has its target replaced, the link kept. */
static int write_file_atomic(const char *path, const struct output *o)
{
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		int fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		int r = write_output(fd, o);
		if (close(fd) < 0 && r == 0)
			r = -errno;
		return r;
	}
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		char *target = realpath(path, NULL);
		if (target) {
			int r = write_file_atomic(target, o);
			free(target);
			return r;
		}
	}
	size_t n = strlen(path);
	char *tmp = malloc(n + 16);
	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, n + 16, "%s.XXXXXX", path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		int e = -errno;
		free(tmp);
		return e;
	}
	int r = write_output(fd, o);
	mode_t um = umask(0);
	umask(um);
	if (r == 0 && fchmod(fd, 0666 & ~um) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	free(tmp);
	return r;
}

/* Put the evidence block (evidence.h) into the export *text: before it, or in
 * an mbox after the first message's "---" line (the end of its commit
 * message: `git am` keeps what follows out of the commit, and git apply skips
 * it up to the diff).  With no change at all, the block alone. */
static int with_evidence(const struct workspace *ws, bool mbox, size_t max, char **text,
			 size_t *len, char *err, size_t errlen)
{
	char *ev = NULL;
	size_t elen = 0;
	int r = evidence_format(ws, max, &ev, &elen, err, errlen);
	if (r < 0)
		return r;
	size_t at = 0;
	if (mbox && *len) {
		const char *sep = strstr(*text, "\n---\n");
		if (!sep) {
			free(ev);
			snprintf(err, errlen, "the mbox has no \"---\" line to put it after");
			return -EINVAL;
		}
		at = (size_t)(sep - *text) + 5;
	}
	char *all = malloc(*len + elen + 1);
	if (!all) {
		free(ev);
		snprintf(err, errlen, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	memcpy(all, *text, at);
	memcpy(all + at, ev, elen);
	memcpy(all + at + elen, *text + at, *len - at);
	all[*len + elen] = 0;
	free(ev);
	free(*text);
	*text = all;
	*len += elen;
	return 0;
}

int cmd_export(int argc, char **argv)
{
	enum { OPT_STATE = 256, OPT_CONFLICTS, OPT_FORMAT, OPT_ALLOW, OPT_EVIDENCE, OPT_EVMAX };
	static const struct option longopts[] = {
	    {"format", required_argument, NULL, OPT_FORMAT},
	    {"allow-secret", required_argument, NULL, OPT_ALLOW},
	    {"evidence", no_argument, NULL, OPT_EVIDENCE},
	    {"evidence-max", required_argument, NULL, OPT_EVMAX},
	    {"output", required_argument, NULL, 'o'},
	    {"conflicts", required_argument, NULL, OPT_CONFLICTS},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *state_dir = NULL, *output = NULL;
	bool skip_conflicts = false, evidence = false;
	size_t evidence_max = EVIDENCE_MAX_PATHS;
	/* --format and --allow-secret: cli/series.h series_export(). */
	const char *format = "patch";
	char *allow[64];
	size_t n_allow = 0;
	int c;
	opterr = 0;
	optind = 0; /* 0: glibc re-initialises, permuting operands and options */
	while ((c = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			output = optarg;
			break;
		case OPT_CONFLICTS:
			if (strcmp(optarg, "skip") == 0) {
				skip_conflicts = true;
			} else if (strcmp(optarg, "fail") == 0) {
				skip_conflicts = false;
			} else {
				cli_error(CMD, "--conflicts=%s: expected fail or skip", optarg);
				return 2;
			}
			break;
		case OPT_STATE:
			state_dir = optarg;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "patch") && strcmp(optarg, "mbox") &&
			    strcmp(optarg, "stat")) {
				cli_error(CMD, "--format=%s: expected patch, mbox or stat", optarg);
				return 2;
			}
			format = optarg;
			break;
		case OPT_ALLOW:
			if (n_allow == sizeof(allow) / sizeof(allow[0]) || !*optarg) {
				cli_error(CMD,
					  "--allow-secret '%s': expected FILE:LINE, PATH, "
					  "COMMIT:LINE or -m:LINE (at most 64)",
					  optarg);
				return 2;
			}
			allow[n_allow++] = optarg;
			break;
		case OPT_EVIDENCE:
			evidence = true;
			break;
		case OPT_EVMAX: {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (end == optarg || *end || optarg[0] == '-' || errno) {
				cli_error(CMD, "--evidence-max=%s: expected a number of paths",
					  optarg);
				return 2;
			}
			evidence_max = (size_t)v;
			break;
		}
		case 'h':
			fputs(cmd_export_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs export --help')", cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (argc - optind != 1) {
		cli_error(CMD, "%s (see 'agentfs export --help')",
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
	if (evidence) {
		/* A live daemon buffers its journal: the block must show the latest
		 * events (the files just written), so have it written out first. */
		int fr = workspace_daemon_flush(ws, 5000);
		if (fr < 0)
			cli_error(CMD,
				  "%s: the daemon did not write its journal out (%s); the evidence "
				  "may miss its latest events",
				  target, strerror(-fr));
	}
	struct changes *cs = NULL;
	r = changes_open_workspace(ws, &cs, err, sizeof(err));
	if (r < 0) {
		cli_error(CMD, "%s: %s", target, err);
		workspace_free(ws);
		return 1;
	}

	/* The paths named here, which an mbox's series then names no more. */
	struct strvec named = {0};
	size_t conflicts = 0;
	for (size_t i = 0; i < cs->count; i++) {
		const struct change *ch = &cs->items[i];
		if (change_exported(ch))
			continue;
		char *q = changes_quote(ch->path);
		strvec_push(&named, q ? q : ch->path); /* ENOMEM: at worst named twice */
		if (ch->flags & CHANGE_OVER_HIDDEN) {
			conflicts++;
			cli_error(CMD, "%s: %s; left out", q ? q : ch->path,
				  change_over_hidden_reason(ch));
		} else if (ch->flags & CHANGE_CONFLICT) {
			conflicts++;
			char *o = changes_quote(ch->origin);
			if ((ch->flags & CHANGE_CONFLICT_LATER) ||
			    strcmp(ch->origin, ch->path) == 0)
				cli_error(CMD,
					  "%s: conflict: changed in the repository since the "
					  "agent %s it; left out",
					  q ? q : ch->path, change_conflict_verb(ch));
			else
				cli_error(CMD,
					  "%s: conflict: its source %s changed in the "
					  "repository since the agent copied it; left out",
					  q ? q : ch->path, o ? o : ch->origin);
			free(o);
		} else {
			cli_error(CMD, "%s: left out: %s", q ? q : ch->path,
				  change_flag_reason(ch->flags));
		}
		free(q);
	}
	int status = 0;
	if (conflicts && !skip_conflicts) {
		cli_error(CMD,
			  "%s: %zu conflict%s; no patch written (--conflicts=skip exports "
			  "the rest)",
			  target, conflicts, conflicts == 1 ? "" : "s");
		status = 1;
	}

	struct patch *p = NULL;
	char *text = NULL;
	size_t len = 0;
	if (status == 0) {
		/* The plain patch is written as it is printed (patch_write): a
		 * large binary change's text is never whole in memory.  It is
		 * printed once the refusals are decided (conflicts above, secrets
		 * in series_export), so nothing is written for a refused export; a
		 * failure while printing (out of memory, a write error) can leave
		 * part of it on stdout, never in the -o file. */
		r = series_export(ws, cs, format, skip_conflicts, allow, n_allow, &named, &text,
				  &len, strcmp(format, "patch") == 0 ? &p : NULL);
		if (r == -EPERM) {
			status = 1; /* the reasons are printed */
		} else if (r < 0) {
			const git_error *ge = git_error_last();
			cli_error(CMD, "%s: building the patch: %s", target,
				  r == -EIO && ge ? ge->message : strerror(-r));
			status = 1;
		}
	}
	if (status == 0 && evidence) {
		r = with_evidence(ws, strcmp(format, "mbox") == 0, evidence_max, &text, &len, err,
				  sizeof(err));
		if (r < 0) {
			cli_error(CMD, "%s: --evidence: %s", target, err);
			status = 1;
		}
	}
	if (status == 0) {
		struct output o = {.text = text, .len = len, .patch = p};
		/* An -EIO of write(2) names no libgit2 error below.  Only while the
		 * patch holds libgit2 initialized: its error state is per thread,
		 * allocated afresh (and never freed) after the last shutdown. */
		if (p)
			git_error_clear();
		r = output ? write_file_atomic(output, &o) : write_output(1, &o);
		if (r < 0) {
			const git_error *ge = r == -EIO && p ? git_error_last() : NULL;
			cli_error(CMD, "%s: %s%s", output ? output : "stdout",
				  ge ? "printing the patch: " : "",
				  ge ? ge->message : strerror(-r));
			status = 1;
		}
	}
	free(text);
	strvec_clear(&named);
	patch_free(p);
	changes_free(cs);
	workspace_free(ws);
	return status;
}
