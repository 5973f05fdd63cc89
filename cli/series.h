/*
 * series.h - the agent's work as commits on the HEAD the workspace was mounted
 * at, for `agentfs promote` (a branch) and `agentfs export --format=mbox`.
 *
 * The commits, in order:
 *  1. each commit the agent made in the private .git (gitpriv.h), from the
 *     base commit recorded in <workspace>/git-base to the private HEAD along
 *     first parents, with its message and author;
 *  2. unless committed-only, one commit with the rest of the agent's changes:
 *     the view (base + the export's change set) against the private HEAD's tree
 *     (the base tree without a private repository).
 * Each commit's changes (tree against its first parent) are replayed path by
 * path onto the repository's tree at mount, so:
 *  - tracked files the policy hides are carried over untouched (the agent never
 *    saw them; no change names them) and a change at a hidden path (a file the
 *    agent made at a secret's name) is left out and named;
 *  - a change at a path where the person had uncommitted changes at mount
 *    (git-dirty) is refused, skipped or taken (SERIES_FAIL/SKIP/TAKE): the
 *    agent's version holds the person's uncommitted work;
 *  - an export conflict (the person changed the file after the agent copied it)
 *    is refused, skipped or taken the same way;
 *  - every blob a new tree names must be the agent's (in the private objects,
 *    its id verified) or the base's (reachable from the recorded base tree):
 *    a tree cannot smuggle the id of a hidden file's blob into the branch.
 * A commit left with no change is dropped (named on stderr).  Each path left
 * out and each commit dropped is named once (series_opts.named).  Nothing is
 * written to the repository's working tree, index, HEAD or refs; objects go to
 * its object database, or to memory only (in_memory).
 *
 * Functions return 0 or a negative errno; a refusal prints its reasons as
 * "agentfs: CMD: ..." lines and returns -EPERM.
 */
#ifndef AGENTFS_SERIES_H
#define AGENTFS_SERIES_H

#include <git2.h>
#include <stdbool.h>
#include <stddef.h>

struct changes;
struct patch;
struct strvec;
struct workspace;

enum series_mode {
	SERIES_FAIL = 0, /* refuse the whole series */
	SERIES_SKIP = 1, /* leave the path as it is at HEAD */
	SERIES_TAKE = 2, /* take the agent's version */
};

/* Parse "fail" / "skip" / "take"; -EINVAL otherwise. */
int series_mode_parse(const char *s, enum series_mode *out);

/* Check an --author value: 0 when it reads "Name <email>" (both non-empty,
 * as git takes them), -EINVAL otherwise. */
int series_author_check(const char *author);

struct series_opts {
	const char *cmd;	    /* "promote", "export": prefix of messages */
	const char *author;	    /* "Name <email>" for every commit, or NULL */
	const char *message;	    /* the final commit's message, or NULL */
	bool committed_only;	    /* leave uncommitted changes out (named) */
	enum series_mode dirty;	    /* paths the person had changed at mount */
	enum series_mode conflicts; /* export conflicts */
	char **allow_secret;	    /* --allow-secret strings (secrets.h) */
	size_t n_allow;
	bool in_memory; /* objects to memory: nothing reaches the repository */
	/* What was named on stderr as left out or dropped (borrowed, may be
	 * NULL): the quoted path or the commit's label, each named once and added
	 * here, so a second build of the series, or a caller that named the change
	 * set's left-out paths first (cli/strvec.h, same keys), repeats none. */
	struct strvec *named;
};

struct series {
	git_repository *repo; /* the person's repository (objects in memory if asked) */
	git_oid head;	      /* the HEAD at mount */
	bool unborn;	      /* no HEAD at mount: the first commit is a root */
	git_oid *commits;     /* in order; commits[0]'s parent is head */
	size_t count;
	size_t dropped_changes; /* changes left out (hidden names, skipped paths) */
	void *priv;		/* internal */
};

/* Build the series of workspace @ws.  A secret found in an added line, a path
 * name or a commit message of the series (secrets.h) is a refusal. */
int series_build(const struct workspace *ws, const struct series_opts *o, struct series **out);

/* The series as `git format-patch` mbox text ("From <id> Mon Sep 17 00:00:00 2001",
 * [PATCH n/m] subjects, binary diffs with full ids): `git am` recreates it on
 * a clone at the HEAD at mount.  *out is malloc'd (NUL-terminated). */
int series_mbox(const struct series *s, char **out, size_t *len);

void series_free(struct series *s);

/*
 * `agentfs export --format=FORMAT` for FORMAT "patch", "mbox" or "stat": the
 * secret scan over the change set @cs, its lines and paths (and, for mbox, over
 * every commit of the series, its messages too), then the text in *out
 * (malloc'd).  For "patch" with @patch_out not NULL, the scanned patch instead
 * in *@patch_out (the caller's, for patch_write(), then patch_free()) and ""
 * in *out: a large change's text need not be held whole.  @allow: --allow-secret strings
 * (secrets.h).  @named: the paths the caller named as left out (series_opts.named; may be NULL).
 * @skip_conflicts as export's
 * --conflicts=skip.  Returns 0, -EPERM after printing refusals, -EINVAL for an
 * unknown format, or another negative errno (libgit2 failures: -EIO, reason
 * printed).
 */
int series_export(const struct workspace *ws, const struct changes *cs, const char *format,
		  bool skip_conflicts, char **allow, size_t n_allow, struct strvec *named,
		  char **out, size_t *len, struct patch **patch_out);

#endif
