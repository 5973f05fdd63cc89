/* cmd_promote.c - `agentfs promote`: the agent's work as a branch of the repository. */
#include <errno.h>
#include <getopt.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/series.h"
#include "cli/strvec.h"
#include "cli/workspace.h"

const char cmd_promote_usage[] =
    "usage: agentfs promote [OPTIONS] MNT|NAME --branch BRANCH\n"
    "\n"
    "Create, in the repository of the workspace mounted at MNT (or named NAME), the\n"
    "branch BRANCH whose commits sit on the HEAD the workspace was mounted at and\n"
    "apply the agent's changes to it.  The person's working tree, index, HEAD and\n"
    "other branches are not touched; only objects and refs/heads/BRANCH are written.\n"
    "\n"
    "Each commit the agent made in the mount's private .git becomes a commit of the\n"
    "branch, with its message and author; the agent's uncommitted changes (the view\n"
    "against its last commit, as `agentfs export` sees them) become one final commit.\n"
    "Tracked files the policy hides from the agent are carried over untouched; a\n"
    "file the agent created at a hidden name is left out and named.\n"
    "\n"
    "Refused, with each reason on stderr and nothing written:\n"
    "  - a change at a path where the person had uncommitted changes at mount\n"
    "    (see --dirty);\n"
    "  - a file the agent changed that the repository changed after the agent\n"
    "    copied it (see --conflicts);\n"
    "  - a file or symlink the agent put where a directory held files the policy\n"
    "    hides, or where the policy hides a file or symlink: they would be\n"
    "    deleted or replaced (--conflicts=skip leaves it out; take\n"
    "    cannot take it);\n"
    "  - an added line, a path name or a commit message that looks like a\n"
    "    credential (a private key block, a cloud access key, a well-known token\n"
    "    format), unless --allow-secret lets it through;\n"
    "  - an existing BRANCH, unless --force; the branch checked out, always.\n"
    "\n"
    "Options:\n"
    "  -b, --branch BRANCH     the branch to create (required)\n"
    "  -m, --message MESSAGE   message of the final commit (default: \"Changes from\n"
    "                          agentfs workspace NAME\")\n"
    "  --author \"NAME <EMAIL>\" author of every commit (default: the agent's commits\n"
    "                          keep theirs; the final one is the agent's identity);\n"
    "                          the committer is the person (user.name/user.email)\n"
    "  --force                 replace an existing BRANCH\n"
    "  --committed-only        only the agent's commits; uncommitted changes are\n"
    "                          left out (and named)\n"
    "  --dirty=MODE            fail (default) | skip: leave such a path as at HEAD |\n"
    "                          take: commit the agent's version, which holds the\n"
    "                          person's uncommitted work there\n"
    "  --conflicts=MODE        fail (default) | skip | take, the same for conflicts\n"
    "  --allow-secret WHERE    hand over what looks like a credential, named as the\n"
    "                          refusal names it: FILE:LINE an added line, PATH a\n"
    "                          path name, COMMIT:LINE a line of the message of the\n"
    "                          agent's commit COMMIT (its id, 7 or more hex\n"
    "                          digits; line 1 is the subject), -m:LINE a line of\n"
    "                          the final commit's message (may be repeated)\n"
    "  --state-dir DIR         workspaces live in DIR/workspaces (default:\n"
    "                          ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Prints the branch and its commits.  Exit status: 0 success, 1 failure or\n"
    "refusal, 2 usage error.\n";

static const char *const CMD = "promote";

struct promote_args {
	const char *target;
	const char *branch;
	const char *state_dir;
	bool force;
	struct series_opts o;
	char **allow;
	size_t n_allow;
};

static int parse(int argc, char **argv, struct promote_args *a)
{
	enum {
		OPT_AUTHOR = 256,
		OPT_FORCE,
		OPT_COMMITTED,
		OPT_DIRTY,
		OPT_CONFLICTS,
		OPT_ALLOW,
		OPT_STATE
	};
	static const struct option longopts[] = {
	    {"branch", required_argument, NULL, 'b'},
	    {"message", required_argument, NULL, 'm'},
	    {"author", required_argument, NULL, OPT_AUTHOR},
	    {"force", no_argument, NULL, OPT_FORCE},
	    {"committed-only", no_argument, NULL, OPT_COMMITTED},
	    {"dirty", required_argument, NULL, OPT_DIRTY},
	    {"conflicts", required_argument, NULL, OPT_CONFLICTS},
	    {"allow-secret", required_argument, NULL, OPT_ALLOW},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	a->o.cmd = CMD;
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, ":hb:m:", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			a->branch = optarg;
			break;
		case 'm':
			/* git refuses a commit with an empty message; so does promote. */
			if (!optarg[strspn(optarg, " \t\n")]) {
				cli_error(CMD, "-m: the message is empty");
				return 2;
			}
			a->o.message = optarg;
			break;
		case OPT_AUTHOR:
			/* Checked now: the series parses it only once it has built
			 * every commit but the last. */
			if (series_author_check(optarg) < 0) {
				cli_error(CMD, "--author '%s': expected \"NAME <EMAIL>\"", optarg);
				return 2;
			}
			a->o.author = optarg;
			break;
		case OPT_FORCE:
			a->force = true;
			break;
		case OPT_COMMITTED:
			a->o.committed_only = true;
			break;
		case OPT_DIRTY:
		case OPT_CONFLICTS:
			if (series_mode_parse(optarg,
					      c == OPT_DIRTY ? &a->o.dirty : &a->o.conflicts) < 0) {
				cli_error(CMD, "--%s=%s: expected fail, skip or take",
					  c == OPT_DIRTY ? "dirty" : "conflicts", optarg);
				return 2;
			}
			break;
		case OPT_ALLOW: {
			/* FILE:LINE, PATH, COMMIT:LINE or -m:LINE (secrets.h). */
			char **n = realloc(a->allow, (a->n_allow + 1) * sizeof(*n));
			if (!*optarg || !n) {
				if (n)
					a->allow = n;
				cli_error(CMD,
					  "--allow-secret '%s': expected FILE:LINE, PATH, "
					  "COMMIT:LINE or -m:LINE",
					  optarg);
				return 2;
			}
			a->allow = n;
			a->allow[a->n_allow++] = optarg;
			break;
		}
		case OPT_STATE:
			a->state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_promote_usage, stdout);
			return -1;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs promote --help')",
				  cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (argc - optind != 1) {
		cli_error(CMD, "%s (see 'agentfs promote --help')",
			  optind == argc ? "missing MNT or NAME" : "too many arguments");
		return 2;
	}
	if (!a->branch) {
		cli_error(CMD, "--branch BRANCH is required (see 'agentfs promote --help')");
		return 2;
	}
	a->target = argv[optind];
	a->o.allow_secret = a->allow;
	a->o.n_allow = a->n_allow;
	return 0;
}

/* Refusals about the branch itself, before any object is written. */
static int check_branch(const struct promote_args *a, const struct workspace *ws,
			const char *refname)
{
	int valid = 0;
	if (git_branch_name_is_valid(&valid, a->branch) < 0 || !valid) {
		cli_error(CMD, "--branch %s: not a valid branch name", a->branch);
		return -EINVAL;
	}
	git_repository *repo = NULL;
	if (git_repository_open_ext(&repo, ws->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0) {
		const git_error *e = git_error_last();
		cli_error(CMD, "%s: %s", ws->repo, e ? e->message : "cannot open");
		return -EIO;
	}
	int r = 0;
	git_reference *ref = NULL;
	if (git_reference_lookup(&ref, repo, refname) == 0) {
		if (git_branch_is_checked_out(ref) == 1 || git_branch_is_head(ref) == 1) {
			cli_error(CMD,
				  "%s: the branch is checked out in the repository; promoting onto "
				  "it would change the person's working tree",
				  a->branch);
			r = -EBUSY;
		} else if (!a->force) {
			cli_error(CMD, "%s: the branch exists (--force replaces it)", a->branch);
			r = -EEXIST;
		}
		git_reference_free(ref);
	}
	git_repository_free(repo);
	return r;
}

static void print_result(const struct promote_args *a, const struct series *s)
{
	char head[13] = "(root)";
	if (!s->unborn)
		git_oid_tostr(head, sizeof(head), &s->head);
	printf("branch %s: %zu commit%s on %s\n", a->branch, s->count, s->count == 1 ? "" : "s",
	       head);
	for (size_t i = 0; i < s->count; i++) {
		git_commit *c = NULL;
		char hex[13];
		git_oid_tostr(hex, sizeof(hex), &s->commits[i]);
		if (git_commit_lookup(&c, s->repo, &s->commits[i]) == 0)
			printf("  %s %s\n", hex, git_commit_summary(c));
		git_commit_free(c);
	}
}

int cmd_promote(int argc, char **argv)
{
	struct promote_args a;
	memset(&a, 0, sizeof(a));
	int u = parse(argc, argv, &a);
	if (u != 0) {
		free(a.allow);
		return u < 0 ? 0 : u;
	}
	char *root = NULL;
	if (workspace_state_root(a.state_dir, &root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		free(a.allow);
		return 1;
	}
	char err[1024] = "";
	struct workspace *ws = NULL;
	int r = workspace_find(root, a.target, &ws, err, sizeof(err));
	free(root);
	if (r < 0) {
		if (r == -ENOENT)
			cli_error(CMD, "%s: not an agentfs mount (no workspace found)", a.target);
		else
			cli_error(CMD, "%s", err);
		free(a.allow);
		return 1;
	}
	git_libgit2_init();
	char refname[512];
	snprintf(refname, sizeof(refname), "refs/heads/%s", a.branch);
	int status = 1;
	struct series *s = NULL;
	/* Built twice: what the first build named, the second does not repeat. */
	struct strvec named = {0};
	a.o.named = &named;
	r = check_branch(&a, ws, refname);
	if (r == 0) {
		/* Everything is checked and scanned in memory first: a refusal
		 * leaves the repository's object database as it was. */
		a.o.in_memory = true;
		r = series_build(ws, &a.o, &s);
		series_free(s);
		s = NULL;
	}
	if (r == 0) {
		a.o.in_memory = false;
		r = series_build(ws, &a.o, &s);
	}
	if (r == 0) {
		git_reference *ref = NULL;
		char msg[600];
		snprintf(msg, sizeof(msg), "agentfs promote: workspace %s", ws->name);
		int gr = git_reference_create(&ref, s->repo, refname, &s->commits[s->count - 1],
					      a.force, msg);
		if (gr == GIT_ELOCKED) {
			/* libgit2's message ends in an empty reason here. */
			cli_error(CMD,
				  "%s: locked by %s%s.lock (a git command running in the "
				  "repository, or one that stopped and left it: remove it if "
				  "none runs)",
				  refname, git_repository_commondir(s->repo), refname);
		} else if (gr < 0) {
			const git_error *e = git_error_last();
			cli_error(CMD, "%s: %s", refname, e ? e->message : "cannot create");
		} else {
			print_result(&a, s);
			status = 0;
		}
		git_reference_free(ref);
	}
	series_free(s);
	strvec_clear(&named);
	git_libgit2_shutdown();
	workspace_free(ws);
	free(a.allow);
	return status;
}
