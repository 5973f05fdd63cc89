/*
 * patch.h - a change set as a git diff and a git-style patch (libgit2).
 *
 * The exported changes of a change set (cli/changes.h, change_exported()) become
 * two trees holding only the touched paths, the base side and the view side,
 * written to an in-memory object database (git_mempack) behind a repository
 * object that has no directory, no configuration and no working tree: nothing
 * is written to the real repository or to the disk.  Their tree-to-tree diff has
 * renames paired (git_diff_find_similar, git's default 50% similarity) and
 * binary deltas included, so the patch applies with `git apply` and
 * `git apply --index` to a working tree equal to the base.
 *
 * The blobs are the bytes of the layers as git stores them: through the clean
 * filters the repository's attributes give each path (gitpriv_clean_filter():
 * text, eol, core.autocrlf, ident), so a file checked out with CRLF line ends
 * is diffed as its LF blob, as `git diff` shows it, and the patch applies
 * with and without --index.  Filter drivers (gitattributes(5) "filter") are
 * not run: their files are diffed as the working tree holds them.
 *
 * Functions return 0 or a negative errno (-EIO when libgit2 fails; its message
 * is then in git_error_last()).
 */
#ifndef AGENTFS_PATCH_H
#define AGENTFS_PATCH_H

#include <git2.h>

#include "cli/changes.h"

enum patch_flag {
	/* Report a file <-> symlink change as one GIT_DELTA_TYPECHANGE delta (for
	 * status); without it the diff holds a deletion and an addition, the form
	 * `git apply` reads. */
	PATCH_TYPECHANGE = 1u << 0,
	/* Only the paths and the kinds of the deltas are wanted (status): a change
	 * with a regular file on both sides at its path gets two small stand-in
	 * blobs that differ, not its bytes, which may be large.  Such a
	 * modification is never paired in a rename (GIT_DIFF_FIND_RENAMES without
	 * rewrites pairs additions, deletions and, with PATCH_TYPECHANGE,
	 * typechanges), so the deltas are those of the bytes. */
	PATCH_NAMES_ONLY = 1u << 1,
	/* No binary payloads: a binary file's patch is its header and "Binary
	 * files ... differ", not a GIT binary patch (for patch_format_stat(),
	 * which counts lines and sizes).  Building the payload deflates the
	 * whole file and, for a modification, computes a delta of its two
	 * versions: seconds and hundreds of MiB for a large file.  Such a diff
	 * must not be given to patch_format(): `git apply` rejects the patch. */
	PATCH_NO_BINARY_DATA = 1u << 2,
};

struct patch;

/* Build the trees and the diff of @cs (borrowed during the call).  @attrs and
 * @view_attrs: the repositories whose attributes and configuration give each
 * regular file's clean filters, of the base side and of the view side (the
 * agent may have changed the .gitattributes: changes_standin()); borrowed;
 * NULL: the raw bytes, as for status, which compares names and kinds. */
int patch_new(const struct changes *cs, unsigned flags, git_repository *attrs,
	      git_repository *view_attrs, struct patch **out);

/* The diff (owned by the patch): deltas sorted by path, renames paired. */
git_diff *patch_diff(const struct patch *p);
/* The in-memory repository holding the blobs of @p's diff (owned by @p). */
git_repository *patch_repo(const struct patch *p);

/* Called with each piece of a patch's text, in order; returns 0 or a negative
 * errno, which stops the writing. */
typedef int (*patch_sink)(void *arg, const char *buf, size_t len);

/* Write the unified patch of @p through @sink, delta by delta, as
 * patch_format() would give it: nothing but the delta being printed is held,
 * so a large binary file's patch (its deflated bytes, base85-encoded) is
 * never whole in memory.  Returns 0, the sink's error, or -EIO.  On an error
 * some deltas may have been written. */
int patch_write(const struct patch *p, patch_sink sink, void *arg);

/* The unified patch text, "diff --git a/... b/..." headers, in *out (malloc'd,
 * NUL-terminated; *len bytes without the NUL).  An empty diff gives "". */
int patch_format(const struct patch *p, char **out, size_t *len);

/* The `git diff --stat --summary` text of @p at @width columns (80 as
 * git's default) in *out (malloc'd, as patch_format): " NAME | COUNT
 * GRAPH" per file, "OLD => NEW" for a rename, "Bin A -> B bytes" for a
 * binary file, then the totals and the create, delete, rename and mode
 * lines.  Names are quoted as git quotes them (changes_quote): a name
 * holding a newline cannot forge lines of the summary.  "" for an empty
 * diff. */
int patch_format_stat(const struct patch *p, unsigned width, char **out, size_t *len);
void patch_free(struct patch *p);

#endif
