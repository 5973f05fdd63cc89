/*
 * changes.h - the change set of a workspace: which paths of the repository the
 * agent changed, with the bytes on each side.
 *
 * The change set compares two trees over the same namespace (repository-relative
 * paths, '/'-separated, no leading '/'):
 *
 *  - the *base*: the lower as the agent first saw it.  agentfs keeps no copy of
 *    it; it is the current lower, filtered by the policy by each entry's lower
 *    path.  For a copied-up file the upper records the hash of the lower file at
 *    copy-up (fs/layout.h "origin"); when the current lower file no longer has
 *    that hash the person changed it since, and the path is a *conflict*.
 *    An upper file without an origin (one the agent created, or wrote over the
 *    lower file by a rename, as editors and `sed -i` save) records no version
 *    of the lower: its base is the current lower and no conflict can be told.
 *  - the *view*: the merged view the agent sees: the upper (fs/layout.h: files,
 *    whiteouts, opaque and redirected directories) over the lower, with lower
 *    entries filtered by the policy by their *lower* path (so entries hidden in
 *    a directory the agent renamed stay out), and upper entries shown whatever
 *    their name.
 *
 * Only the regions the upper touches are walked (the upper's directories, the
 * lower directories they merge with or hide, and lower subtrees shown under a
 * renamed directory), so the cost grows with the agent's changes, not with the
 * repository.  Directories themselves are not changes (git tracks none); a
 * change is a path whose file, symlink or nothing differs between the sides.
 * A copied-up file whose bytes and mode equal the lower's is no change.
 *
 * Renames are not paired here: a renamed file is a deletion on its old path and
 * an addition on its new one; cli/patch.h pairs them (git rename detection).
 *
 * Functions return 0 or a negative errno.
 */
#ifndef AGENTFS_CHANGES_H
#define AGENTFS_CHANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct policy;
struct workspace;
typedef struct git_repository git_repository;

/* The layer holding one side's bytes. */
enum change_layer {
	CHANGE_LOWER = 0,
	CHANGE_UPPER = 1,
};

/* Git file modes, the only kinds a side can hold. */
#define CHANGE_MODE_FILE 0100644u
#define CHANGE_MODE_EXEC 0100755u
#define CHANGE_MODE_LINK 0120000u

struct change_side {
	bool present;		 /* false: no file or symlink on this side at the path */
	enum change_layer layer; /* where the bytes are */
	char *path;		 /* path inside that layer (malloc'd): the lower path of a
				  * lower entry, the upper path of an upper one */
	uint32_t mode;		 /* CHANGE_MODE_FILE, _EXEC or _LINK */
	uint64_t size;		 /* bytes (symlinks: length of the target) */
};

/* Why a change is left out of exports (0: it is exported). */
enum change_flag {
	/* The person changed the lower file after the agent copied it up (its hash
	 * differs from the origin's): a patch would revert the person's work. */
	CHANGE_CONFLICT = 1u << 0,
	/* The view path is hidden by the policy: a file the agent created at a secret
	 * name (DESIGN.md invariant 3). */
	CHANGE_HIDDEN_NAME = 1u << 1,
	/* Untracked (in neither the repository's index nor its HEAD tree) and ignored
	 * by the repository's ignore rules.  Set by changes_mark_ignored(). */
	CHANGE_IGNORED = 1u << 2,
	/* The view holds something git cannot: a fifo, socket or device. */
	CHANGE_UNSUPPORTED = 1u << 3,
	/* The view holds a file or symlink where the base has a directory that
	 * holds entries the policy hides (rm -rf DIR; echo x >DIR, or a
	 * RENAME_EXCHANGE): the repository cannot take it without deleting files
	 * the agent never saw, so it is left out like a conflict (export's and
	 * promote's --conflicts; `take` refuses it too).  Also a file or symlink
	 * where the base holds a file or symlink the view hides (a symlink out
	 * of the repository under `symlinks: hide`, a file over a size rule):
	 * then CHANGE_OVER_HIDDEN_ENTRY is set with it. */
	CHANGE_OVER_HIDDEN = 1u << 4,
	/* The path lies inside a submodule (below a gitlink of the repository's
	 * index or HEAD tree): its files belong to another repository, which a
	 * patch or commit of this one cannot change; taking them would replace
	 * the gitlink by a directory holding only the changed files.  Set by
	 * changes_mark_ignored(), alone (the other reasons no longer matter). */
	CHANGE_SUBMODULE = 1u << 5,
	/* With CHANGE_OVER_HIDDEN: what the view hides there is a file or
	 * symlink, not a directory's entries. */
	CHANGE_OVER_HIDDEN_ENTRY = 1u << 6,
	/* With CHANGE_CONFLICT: no copy-up recorded the base, but the person
	 * changed or made the lower entry at the path after the agent deleted
	 * it (its whiteout, or that of a directory above) or made its own file
	 * or symlink there: the change would delete or replace the person's
	 * newer work.  origin is the path itself. */
	CHANGE_CONFLICT_LATER = 1u << 7,
};

struct change {
	char *path;		 /* repository-relative path (malloc'd) */
	struct change_side base; /* what the base holds at path */
	struct change_side view; /* what the view holds at path */
	unsigned flags;		 /* enum change_flag bits */
	char *origin;		 /* CHANGE_CONFLICT: the lower path the agent's copy came
				  * from (malloc'd), else NULL */
};

struct changes {
	struct change *items; /* sorted by path, bytewise */
	size_t count;
	int lower_fd; /* owned duplicates of the layers, for changes_read() */
	int upper_fd;
};

/*
 * Compute the change set of the upper @upper_fd over the lower @lower_fd (both
 * O_RDONLY|O_DIRECTORY; duplicated, the caller keeps its own) under @policy
 * (borrowed, used only during the call).  Nothing is written.  Every path is
 * resolved below its layer without following symlinks.  On success *out is
 * owned by the caller (changes_free()).
 */
int changes_compute(int lower_fd, int upper_fd, const struct policy *policy, struct changes **out);
/* changes_compute(), and on failure the view path it failed at in @where
 * (@where_len bytes; "" when it failed elsewhere), such as a file or directory
 * the agent made unreadable (chmod 000). */
int changes_compute_at(int lower_fd, int upper_fd, const struct policy *policy,
		       struct changes **out, char *where, size_t where_len);

/*
 * Set CHANGE_SUBMODULE on changes whose path lies inside a submodule of @repo
 * (the real repository, only read: its index and HEAD tree), and
 * CHANGE_IGNORED on the other changes whose path is untracked there and ignored
 * by its ignore rules (.gitignore files, info/exclude, core.excludesFile), the
 * .gitignore files as the exported changes leave them (the agent's edits
 * count, as its git in the mount reads them; a private temporary directory
 * under $TMPDIR stands in for the working tree while they are read).  A
 * tracked path is never marked ignored: a change to a tracked file is always
 * exported.  @repo NULL: no-op.
 */
int changes_mark_ignored(struct changes *cs, git_repository *repo);

/*
 * A stand-in for the working tree's files named @name (".gitignore",
 * ".gitattributes") once the change set @cs is taken: a private temporary
 * directory (under $TMPDIR, else /tmp) holding, for every directory on the
 * way to a change, its @name as the view's exported change leaves it, else
 * the repository's, else empty (libgit2 reads attributes from the working
 * tree, then the index: an empty file keeps a deleted one from coming back
 * from the index).  Point a repository at it with git_repository_set_workdir()
 * to have libgit2 read the agent's rules.  *@dir (malloc'd) is NULL when no
 * exported change is a file of that name: the repository's own working tree
 * holds the right ones.  0 or a negative errno.
 */
int changes_standin(const struct changes *cs, const char *name, char **dir);
/* Remove the stand-in @dir and free it (NULL: nothing). */
void changes_standin_free(char *dir);

/* True when the change goes into exports (no flag set). */
static inline bool change_exported(const struct change *c)
{
	return c->flags == 0;
}

/* Is the change a conflict (CHANGE_CONFLICT or CHANGE_OVER_HIDDEN): left out
 * under --conflicts=skip, refused by default? */
static inline bool change_conflicts(const struct change *c)
{
	return (c->flags & (CHANGE_CONFLICT | CHANGE_OVER_HIDDEN)) != 0;
}

/* One line for a CHANGE_OVER_HIDDEN change, without the path: "replaced by a
 * file, but the repository keeps files there the agent cannot see". */
const char *change_over_hidden_reason(const struct change *c);

/* One phrase for the first flag set in @flags ("conflict", "hidden name", ...). */
const char *change_flag_reason(unsigned flags);

/* What the agent did that the person's later change conflicts with, for
 * "changed in the repository since the agent %s it": "copied" (a copy-up's
 * base moved on), else (CHANGE_CONFLICT_LATER) "made" or "deleted". */
const char *change_conflict_verb(const struct change *c);

/*
 * The status letter of one change, paths unpaired (see `agentfs status --help`):
 * 'S' inside a submodule, 'C' conflict (or a file over hidden files), 'H'
 * hidden name, '!' ignored, 'X' unsupported; else 'A' added,
 * 'D' deleted, 'T' file <-> symlink, 'M' modified (content or mode).
 */
char change_code(const struct change *c);

/* @path as git prints it: unchanged when it holds only printable ASCII other than
 * '"' and '\', else in double quotes with C escapes (\n, \t, \", \\) and
 * octal for other bytes (git's quote_c_style).  malloc'd, NULL on ENOMEM. */
char *changes_quote(const char *path);

/*
 * Read one side's bytes (a file's content, a symlink's target) into a malloc'd
 * buffer *buf of *len bytes (*buf may be NULL when *len is 0).  -ENOENT if the
 * entry vanished, -EIO if it no longer is what the change set saw.
 */
int changes_read(const struct changes *cs, const struct change_side *side, char **buf, size_t *len);

/* Open @rel below the directory @root one component at a time, following no
 * symlink (O_NOFOLLOW at each step; the last with @flags): a descriptor, or
 * -errno (-EINVAL for an empty component). */
int changes_open_below(int root, const char *rel, int flags);

/*
 * Does the view show the lower entry at lower path @lpath (below @lower_fd,
 * lstat'ed into @st)?  The policy's decision for the whole path, and for a
 * symlink the `symlinks: hide` rule (policy/symlink.h), as fs/view.c
 * decides a lower entry.
 */
bool changes_lower_shown(const struct policy *pol, int lower_fd, const char *lpath,
			 const struct stat *st);

/*
 * The lower directory the view shows under the upper directory at view path
 * @upath (each component through the upper: redirects, opaque flags and
 * whiteouts on the way, and the policy): its lower path malloc'd in *@lv, or
 * NULL when it shows none.  -ENOENT when @upath is not all in the upper.
 */
int changes_upper_dir_source(int lower_fd, int upper_fd, const struct policy *pol,
			     const char *upath, char **lv);

void changes_free(struct changes *cs);

/*
 * Drop the agent's changes at @path and below ("" for all): afterwards the view
 * at @path equals the base.  Removes upper entries and the whiteouts that hide
 * lower ones; discarding a renamed directory or file restores its original
 * (removes the whiteout of its source); an opaque directory above @path keeps
 * hiding its other lower entries (whiteouts replace the opaque flag).  Empty
 * plain upper directories left behind are removed.  Writes only the upper.
 *
 * @removed, when not NULL, is called with @arg and the view path of each entry
 * (file, symlink, directory) removed from the upper, as it goes, whatever the
 * outcome: what verify must no longer expect there.  Whiteouts are not named.
 *
 * Returns 0; -ENOENT if no change lies at or below @path and the upper holds
 * nothing there (changes_upper_holds()); -EBUSY if changes
 * remain at or below @path that only discarding a directory above it can undo
 * (a path inside a renamed directory) — the upper may then be partly restored.
 */
typedef void (*changes_removed_fn)(void *arg, const char *path);
int changes_discard(int lower_fd, int upper_fd, const struct policy *policy, const char *path,
		    changes_removed_fn removed, void *arg);

/*
 * Does the upper @upper_fd hold anything at view path @path (not ""): an entry,
 * or the whiteout of a lower one?  1 yes, 0 no, or a negative errno.  Some
 * change no visible path — the whiteout of a removed directory whose only
 * entries are hidden — and changes_discard() drops them all the same.
 */
int changes_upper_holds(int upper_fd, const char *path);

/*
 * The change set of workspace @ws: opens its repository (the lower) and its upper,
 * loads its policy snapshot, computes and marks ignored paths.  On failure a
 * one-line reason goes to @err.
 */
int changes_open_workspace(const struct workspace *ws, struct changes **out, char *err,
			   size_t errlen);

/* Load the policy in force for @ws (its snapshot); @err as above. */
int changes_workspace_policy(const struct workspace *ws, struct policy **out, char *err,
			     size_t errlen);

#endif
