/*
 * repo.h - the git repository a workspace is made over, found with libgit2.
 *
 * Only the facts a mount needs: the working tree's top level (the lower) and the
 * base commit (HEAD).  All libgit2 work happens here, before the mount forks its
 * daemon, so no libgit2 state crosses a fork().
 */
#ifndef AGENTFS_REPO_H
#define AGENTFS_REPO_H

#include <stddef.h>

struct repo_info {
	char *workdir;	   /* realpath of the working tree's top level, no trailing '/' */
	char *base_commit; /* 40 hex chars of HEAD's commit, or "" when HEAD is unborn */
};

/*
 * Open the repository whose working tree's top level is @path (any path naming
 * that directory; symlinks are resolved).  A subdirectory of a working tree is
 * refused rather than widened to the whole tree: the user asked for less than
 * the mount would show.
 *
 * Returns 0 and fills @out (free with repo_info_clear), or a negative errno with
 * a one-line reason (no "agentfs:" prefix) in @err:
 *   -ENOENT  @path does not exist
 *   -ENOTDIR @path is not a directory
 *   -EINVAL  not a git working tree: no repository, a bare repository, or a
 *            subdirectory of a working tree (the reason names the top level)
 *   -EACCES  the repository is another user's and not in safe.directory: git's
 *            ownership rule, which libgit2 applies too
 *   -EIO     libgit2 failed otherwise (its message in @err)
 */
int repo_open_worktree(const char *path, struct repo_info *out, char *err, size_t errlen);

void repo_info_clear(struct repo_info *ri);

/*
 * Was a workspace's repository, recorded at @old with base commit @base (40
 * hex, or "" for an unborn HEAD), moved to the one @ri opened?  Yes when
 * nothing is left at @old (lstat(2) ENOENT or ENOTDIR) or only a symlink to
 * @ri's working tree, and @ri's repository holds the commit @base; an
 * unborn base proves nothing: no.  1 yes, 0 no.
 */
int repo_moved_to(const char *old, const char *base, const struct repo_info *ri);

#endif
