/*
 * policy.h - which paths of a repository an agent may see or change.
 *
 * A policy is an ordered list of rules (hide, readonly, show) over gitignore-style
 * patterns (gitignore(5): leading '/' anchors, trailing '/' matches directories
 * only, '**' spans directories, last matching rule wins, '!' negates).  It is pure:
 * no FUSE, no I/O after loading.  A decision takes one path and costs a few
 * microseconds at most, so fs/ can ask on every lookup and readdir entry.
 *
 * Paths are relative to the repository root, '/'-separated, with no leading '/',
 * no "." or ".." components and no trailing '/'; "" is the root itself (always
 * visible).  They are byte strings (not necessarily UTF-8).
 */
#ifndef AGENTFS_POLICY_H
#define AGENTFS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum policy_decision {
	POLICY_VISIBLE = 0,  /* reads and changes allowed */
	POLICY_READONLY = 1, /* reads allowed, every change refused with EROFS */
	POLICY_HIDDEN = 2,   /* absent from the view: ENOENT from every operation */
};

/* What to do with a lower symlink whose target escapes the repository or lands on
 * a hidden path (the `symlinks:` key). */
enum policy_symlinks {
	POLICY_SYMLINKS_HIDE = 0, /* default: the symlink itself is hidden */
	POLICY_SYMLINKS_ALLOW = 1,
};

/* Where the agent's view gets its .git (the `git:` key; see the git issue). */
enum policy_git {
	POLICY_GIT_HIDDEN = 0,   /* no .git in the view */
	POLICY_GIT_PRIVATE = 1,  /* a workspace-private repository */
	POLICY_GIT_READONLY = 2, /* the real .git, read-only */
};

struct policy;

/* Error report of a loader: file, 1-based line and column (0 when unknown) and a
 * one-line message without trailing newline. */
struct policy_error {
	char file[512];
	unsigned line;
	unsigned column;
	char message[512];
};

/*
 * Build the built-in default policy (policy/default.yml, embedded at build time).
 * Returns 0 and a policy owned by the caller (free with policy_free), or -ENOMEM.
 */
int policy_new_default(struct policy **out);

/*
 * Decide one path.  @path as described above, @len its length in bytes, @is_dir
 * whether the entry is a directory, @size its size in bytes (only used by
 * `max_file_size`; pass 0 for directories).  Only the last component's own rules
 * are considered: fs/ walks paths component by component and never asks about
 * the children of a hidden directory.  Callers holding a whole path of unknown
 * ancestry use policy_decide_path().  Thread-safe; never fails.
 */
enum policy_decision policy_decide(const struct policy *p, const char *path, size_t len,
				   bool is_dir, uint64_t size);

/*
 * Decide a whole path: HIDDEN if any ancestor directory or the path itself is
 * hidden, else READONLY if any of them is read-only, else VISIBLE.
 */
enum policy_decision policy_decide_path(const struct policy *p, const char *path, bool is_dir,
					uint64_t size);

/* The `symlinks:` and `git:` settings. */
enum policy_symlinks policy_symlinks_mode(const struct policy *p);
enum policy_git policy_git_mode(const struct policy *p);

/* A stable digest of the effective rules (xxh3-128, 32 lowercase hex chars + NUL),
 * journaled at mount so a reviewer knows which policy was in force. */
void policy_digest(const struct policy *p, char out[33]);

void policy_free(struct policy *p);

#endif
