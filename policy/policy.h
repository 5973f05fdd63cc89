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
#include <sys/stat.h>

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
	POLICY_GIT_HIDDEN = 0,	 /* no .git in the view */
	POLICY_GIT_PRIVATE = 1,	 /* a workspace-private repository */
	POLICY_GIT_READONLY = 2, /* the real .git, read-only */
};

struct policy;

/* Error report of a loader: file, 1-based line and column (0 when unknown) and a
 * one-line message without trailing newline.  @file is the name as given, or,
 * when it holds a control character (a newline in a repository's or a policy
 * file's path), that name in double quotes with C escapes, as git quotes paths:
 * "FILE:LINE:COL: message" stays one line. */
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
 * ancestry use policy_decide_path().  Thread-safe; never fails; never allocates
 * (in the C locale, where fnmatch(3) needs no wide-character conversion).
 * Like HIDDEN, READONLY covers everything below a directory (gitignore(5): a
 * directory's rule decides its contents), so fs/ carries a read-only parent's
 * decision down to its children, as policy_decide_path() does.
 */
enum policy_decision policy_decide(const struct policy *p, const char *path, size_t len,
				   bool is_dir, uint64_t size);

/*
 * The size max_file_size: judges of an entry of mode @mode (st_mode, or a git
 * file mode: theirs agree) and size @size: @size for a regular file, 0 for
 * anything else ("larger regular files are hidden": a symlink's size is its
 * target's length, a directory's its listing's).  Every caller that has a
 * size passes it through here, so the view, the private .git's base tree and
 * the change set agree.
 */
static inline uint64_t policy_size(mode_t mode, uint64_t size)
{
	return S_ISREG(mode) ? size : 0;
}

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

/*
 * ---- Loading (policy/load.c) ----
 *
 * The YAML schema (version 1; policy/default.yml is the reference example):
 *
 *   version: 1                       optional; any other value is an error
 *   extends: default | none          what the file sits on (default: default)
 *   case: insensitive | sensitive    how this file's hide/secrets/readonly rules
 *                                    match letter case (default: insensitive)
 *   hide: [PATTERN...]               hidden; '!PATTERN' un-hides
 *   secrets: [PATTERN...]            like hide, and protected (see layering)
 *   readonly: [PATTERN...]           read-only; '!PATTERN' makes writable again
 *   show: [PATTERN...]               un-hides (never makes read-only paths writable)
 *   symlinks: hide | allow
 *   git: hidden | private | readonly
 *   max_file_size: BYTES             0 = no limit; suffix K, M or G (powers of 1024);
 *                                    at most INT64_MAX (larger: "too large");
 *                                    larger regular files are hidden
 *   rules: [{action, pattern, ...}]  the exact form policy_snapshot() writes, with
 *                                    each rule's origin and flags: read only by
 *                                    policy_load_snapshot*(), an unknown key to
 *                                    every other loader (a repository's or the
 *                                    person's file cannot forge where a rule
 *                                    came from, nor its protect/weak flags)
 *
 * Rules apply in the order they are written, keys in document order.  Hidden and
 * read-only are two independent questions, each answered by the last matching
 * rule that speaks to it (hide/secrets/show for the first, readonly for the
 * second); a path is HIDDEN if hidden, else READONLY if read-only.  Un-hiding
 * rules ('!' in hide, show:) always match letter case exactly, so `.ENV` stays
 * hidden by `.*` even when `.env` were shown (fail closed).
 *
 * Layering, policy_load_effective():
 *   built-in default -> user (${XDG_CONFIG_HOME:-$HOME/.config}/agentfs/policy.yml)
 *   -> repository (REPO/.agentfs.yml) -> explicit file (--policy FILE).
 * Rules are concatenated in that order.  A repository may only tighten: its
 * show:/'!' rules never reveal what the built-in secrets: or any hide/secrets
 * rule of the user or explicit file hides, its '!' readonly rules never make
 * writable what the user made read-only, it may not say `extends: none`, and it
 * may not loosen symlinks:, git: (hidden < private < readonly) or max_file_size:.
 * A user file with `extends: none` drops the built-in default; an explicit file
 * with `extends: none` is the whole policy (workspace snapshots are loaded so).
 */

/* Load @path (a single file) on top of what it extends.  Returns 0 and a policy
 * owned by the caller, -ENOMEM, or another negative errno with @err filled
 * (file, line, column, message) for unreadable files, malformed YAML, unknown keys,
 * wrong types, bad patterns and unsupported versions.  Lists and mappings nested
 * deeper than 16 levels are refused (-EINVAL, "nested deeper than 16 levels" at
 * the first one too deep) by a first pass over the parser's events, before the
 * document is built: libyaml takes time quadratic in the depth. */
int policy_load_file(const char *path, struct policy **out, struct policy_error *err);

/* Like policy_load_file() for text in memory; @name stands for the file in errors
 * and rule origins. */
int policy_load_string(const char *name, const char *text, size_t len, struct policy **out,
		       struct policy_error *err);

/* Load a workspace's policy snapshot (its policy.yml, policy_snapshot()'s text),
 * the only kind of file whose `rules:` key is read: its rules keep the origins
 * and flags written there.  Otherwise as policy_load_file() (a snapshot says
 * `extends: none`; one that does not sits on the built-in default). */
int policy_load_snapshot(const char *path, struct policy **out, struct policy_error *err);

/* Like policy_load_snapshot() for text in memory; @name stands for the file. */
int policy_load_snapshot_string(const char *name, const char *text, size_t len, struct policy **out,
				struct policy_error *err);

/* The layered lookup described above.  @repo_dir (the repository's working tree)
 * and @explicit_file may be NULL.  Missing user or repository files are skipped;
 * a repository .agentfs.yml that is not a regular file is an error. */
int policy_load_effective(const char *repo_dir, const char *explicit_file, struct policy **out,
			  struct policy_error *err);

/* A self-contained YAML text (`extends: none`, every rule with its flags and
 * origin) that policy_load_snapshot()/policy_load_snapshot_string() turn back
 * into a policy with the same decisions and digest.  *yaml_out is malloc'd, NUL-terminated.
 * Returns 0 or -ENOMEM. */
int policy_snapshot(const struct policy *p, char **yaml_out);

/*
 * Decide @path like policy_decide_path() (with @size 0, so max_file_size: never
 * applies) and say which rule decided: @origin gets "FILE:LINE" of that rule,
 * "built-in default:LINE" for the built-in policy, or "(no rule)".  For an ancestor
 * hidden or read-only, it is that ancestor's rule.  Returns 0 (truncating @origin
 * to @len bytes, NUL included).
 */
int policy_explain(const struct policy *p, const char *path, bool is_dir, enum policy_decision *d,
		   char *origin, size_t len);

/*
 * policy_explain() of a file of @size bytes, as policy_decide_path() decides it
 * (pass policy_size(): 0 for anything but a regular file): one over
 * max_file_size: is HIDDEN with @origin "larger than max_file_size N, FILE:LINE"
 * (FILE:LINE where max_file_size: was set; without it when unknown).
 */
int policy_explain_size(const struct policy *p, const char *path, bool is_dir, uint64_t size,
			enum policy_decision *d, char *origin, size_t len);

/* ---- Inspection, for `agentfs policy show` ---- */

struct policy_rule_info {
	const char *action;  /* "hide", "show", "readonly" or "writable" */
	const char *pattern; /* as written, without the negating '!' */
	const char *origin;  /* "FILE:LINE" */
	bool casefold;	     /* matches letter case insensitively */
	bool protect;	     /* a hide/readonly that repository rules cannot undo */
	bool weak;	     /* a repository's show/writable: cannot undo protected rules */
};

/* Number of rules, and rule @i (0-based, in order of precedence, last wins).  The
 * strings are owned by @p.  policy_rule_get returns -ERANGE past the end. */
size_t policy_rule_count(const struct policy *p);
int policy_rule_get(const struct policy *p, size_t i, struct policy_rule_info *out);

/* max_file_size: in bytes, 0 for no limit. */
uint64_t policy_max_file_size(const struct policy *p);

#endif
