/*
 * secrets.h - refuse to hand over added lines, path names and commit messages
 * that hold a credential.
 *
 * Before export and promote give anything to a person or a repository, the
 * lines their diff adds, the path names it carries (both names of a rename; a
 * symlink's target is its one line) and the message of every commit they carry
 * are matched against high-confidence patterns: formats
 * whose shape alone says "secret" (a private key block, a cloud access key id,
 * a token with a vendor prefix), so a hit is almost never a false alarm.
 * Entropy guessing and generic "password=" rules are left out on purpose: they
 * cry wolf, and a refusal people learn to override protects nothing.
 *
 * Patterns (sources: each vendor's documented token format):
 *   private key block    "-----BEGIN ... PRIVATE KEY-----", "-----BEGIN PGP
 *                        PRIVATE KEY BLOCK-----" (RFC 7468, OpenSSH, OpenPGP)
 *   AWS access key id    AKIA/ASIA/ABIA/ACCA + 16 of [A-Z2-7] (AWS IAM docs)
 *   GitHub token         ghp_/gho_/ghu_/ghs_/ghr_ + 36 [A-Za-z0-9], github_pat_...
 *   GitLab token         glpat- + 20 [A-Za-z0-9_-]
 *   Slack token/webhook  xoxb-/xoxp-/xoxa-/xoxr-/xoxs-..., hooks.slack.com/services/T.../B.../...
 *   npm token            npm_ + 36 [A-Za-z0-9]
 *   PyPI token           pypi-AgEIcHlwaS5vcmc...
 *   Google API key       AIza + 35 [A-Za-z0-9_-]
 *   Stripe live key      sk_live_/rk_live_ + 24+ [A-Za-z0-9]
 *   OpenAI / Anthropic   sk-proj-..., sk-ant-api03-...
 *
 * A finding names where it is, and --allow-secret takes the same words to let
 * that one place through:
 *   an added line      the file and the line in the new version: "src/a.c:12"
 *   a path name        the path: "ghp_..." (the whole name: no ":LINE")
 *   a commit message   the agent's commit id (in its private .git; 12 hex digits
 *                      printed, any prefix of 7 or more accepted) and the line
 *                      of the message (1: the subject): "1a2b3c4d5e6f:1"; the
 *                      final commit of the uncommitted changes (promote's -m
 *                      MESSAGE, or the default) is "-m": "-m:1"
 *
 * Functions return 0 or a negative errno.
 */
#ifndef AGENTFS_SECRETS_H
#define AGENTFS_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct git_diff git_diff;
typedef struct git_repository git_repository;

/* Where a finding is. */
enum secrets_place {
	SECRETS_LINE = 0,    /* an added line of a file */
	SECRETS_NAME = 1,    /* a path name itself */
	SECRETS_MESSAGE = 2, /* a line of a commit message */
};

struct secrets_finding {
	enum secrets_place place;
	char *path;	  /* malloc'd: SECRETS_LINE, _NAME: repository-relative path;
			   * SECRETS_MESSAGE: the agent's commit id (40 hex digits) or
			   * "-m" (the final commit's message) */
	size_t line;	  /* 1-based line number in the new version or the message;
			   * 0 for SECRETS_NAME */
	const char *kind; /* "AWS access key id", ... (static) */
};

struct secrets {
	struct secrets_finding *items;
	size_t count;
	char **allow; /* "FILE:LINE", "PATH", "COMMIT:LINE" and "-m:LINE" strings the
		       * person let through (borrowed) */
	size_t n_allow;
};

/* A scanner with @allow (borrowed strings as above, may be NULL). */
void secrets_init(struct secrets *s, char **allow, size_t n_allow);
void secrets_clear(struct secrets *s);

/* The kind of secret @line (@len bytes, need not be NUL-terminated) holds, or
 * NULL.  Pure; thread-safe. */
const char *secrets_match(const char *line, size_t len);

/* The name of kind @i (0, 1, ...: every kind secrets_match() can return), or
 * NULL past the last.  Static. */
const char *secrets_kind_name(size_t i);

/* The article @kind takes as it is said: "an" ("an AWS access key id", "an npm
 * token"), or "a".  Static. */
const char *secrets_kind_article(const char *kind);

/* Scan one added line of @path (line number @lineno); records a finding unless
 * allowed.  Returns 0 or -ENOMEM. */
int secrets_scan_line(struct secrets *s, const char *path, size_t lineno, const char *line,
		      size_t len);

/* Scan the path name @path (NUL-terminated) as one line; records a
 * SECRETS_NAME finding unless allowed.  Returns 0 or -ENOMEM. */
int secrets_scan_name(struct secrets *s, const char *path);

/* Scan every line of commit message @msg (NUL-terminated, raw: the subject is
 * line 1) of @commit: the agent's commit id as 40 hex digits, or "-m" for the
 * final commit.  Records SECRETS_MESSAGE findings unless allowed.  Returns 0
 * or -ENOMEM. */
int secrets_scan_message(struct secrets *s, const char *commit, const char *msg);

/* Scan every added line and every path name (old and new, deletions too) of
 * @diff.  A binary file's new content (read from @repo, which holds the diff's
 * objects) is scanned whole, line by line.  Returns 0, -ENOMEM or -EIO
 * (libgit2). */
int secrets_scan_diff(struct secrets *s, git_diff *diff, git_repository *repo);

/* Scan every line of a whole file's content. */
int secrets_scan_blob(struct secrets *s, const char *path, const char *buf, size_t len);

/* Print each finding as one line, "agentfs: CMD: FILE:LINE: looks like a|an KIND;
 * not handed over (--allow-secret FILE:LINE lets this line through)" and the
 * like for names and messages, and return the number printed. */
size_t secrets_report(const struct secrets *s, const char *cmd);

#endif
