/*
 * newly_hidden.h - what a new policy would hide that a workspace's agent could
 * already see.
 *
 * A workspace keeps what its agent saw under the policy it was mounted with:
 * the upper holds copies of repository files (the view shows upper files
 * whatever their name: DESIGN.md invariant 3 is about files the agent
 * created), a renamed directory's redirect names its lower path (the view then
 * decides the entries below by their own names, not by that path's
 * directories), the private .git's base tree names every file the policy
 * showed, whose blobs the view's git serves on demand, and the agent may have
 * read any of it.  A policy that hides
 * any of that now would hide it only in name.  `agentfs mount` therefore
 * looks for it whenever a workspace is mounted again under a policy other
 * than its own, and refuses the mount while there is any (fail closed:
 * DESIGN.md invariant 2).  Loosening, or hiding what the agent never saw,
 * passes.
 */
#ifndef AGENTFS_NEWLY_HIDDEN_H
#define AGENTFS_NEWLY_HIDDEN_H

#include "cli/strvec.h"

struct policy;

/*
 * Append to @out, once each and sorted, the paths that @now hides and
 * @before did not (as the view decides a lower entry: policy_decide_path(),
 * the path or a directory above it, and the `symlinks:` rule; @before NULL,
 * an old policy unknown: whatever @now hides), found in
 *  - the lower @lower_fd: every entry but the top-level .git, by its own
 *    size; a directory newly hidden as a whole is one path ("DIR/"), not
 *    walked;
 *  - the upper @upper_fd: a regular file whose origin record names a lower
 *    path @now hides, whatever @before says (the agent saw what it copied:
 *    a copy-up, wherever the agent moved it, also of a file the lower no
 *    longer holds), by the lower file's size where it is still there, else
 *    the copy's; a whiteout that keeps such an origin (a copy the agent
 *    removed, whose bytes its commits may hold), named by that lower path; a
 *    directory whose redirect names a path @now hides (a directory the agent
 *    renamed: the view decides what is below it by the entries' own names);
 *    a symlink at a place newly hidden (a symlink takes no origin);
 *  - the private repository @git_dir (NULL: none): every path of its base
 *    tree @tree (40 hex digits), of the trees of the commits its refs and
 *    HEAD reach (the agent's: they may hold files it read that neither the
 *    lower nor the base holds now) and of its index, with the sizes and
 *    symlink targets of their blobs from the repository whose working tree
 *    is @repo (the base's blobs are there: gitpriv.h) or the private one; a
 *    blob it cannot read counts as larger than any max_file_size.
 * The walks are breadth-first, one directory open at a time, so an agent's
 * deep tree costs neither stack nor descriptors.  Directories the agent left
 * unreadable or unsearchable (chmod 000, 600), and files whose origin it
 * cannot read, get their owner's permissions lifted for the walk and their
 * modes back at its end (the signals that end a process by default wait for
 * that, but SIGKILL and the faults; a mode that cannot be put back is said
 * on stderr); nothing else is written.  Returns 0 or a negative errno, with what
 * it failed at in
 * @where (@where_len bytes; "" when it failed elsewhere).
 */
int newly_hidden_find(int lower_fd, int upper_fd, const char *repo, const char *git_dir,
		      const char *tree, const struct policy *before, const struct policy *now,
		      struct strvec *out, char *where, size_t where_len);

#endif
