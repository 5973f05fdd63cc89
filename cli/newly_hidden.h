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
 * Append to @out, once each, the view or repository paths that @now hides and
 * @before did not (policy_decide_path(): the path or a directory above it;
 * @before NULL, an old policy unknown: whatever @now hides), sorted, found in
 *  - the lower @lower_fd: every entry but the top-level .git, sizes its own;
 *    a directory newly hidden as a whole is one path, not walked;
 *  - the upper @upper_fd: a regular file whose origin record names such a
 *    lower path (a copy-up, wherever the agent moved it, also of a file the
 *    lower no longer holds), decided by the lower file's size where it is
 *    still there, else the copy's; and a whiteout that keeps such an origin
 *    (a copy the agent removed, whose bytes its commits may hold), named by
 *    that lower path;
 *  - the private repository @git_dir (NULL: none) at base tree @tree (40 hex
 *    digits): every path of it (size 0: `max_file_size` is decided on the
 *    lower).
 * Entries of the upper the agent left unreadable (chmod 000) are read with
 * their owner's permissions lifted for the moment and get their modes back;
 * nothing else is written.  Returns 0 or a negative errno, with what it
 * failed at in @where (@where_len bytes; "" when it failed elsewhere).
 */
int newly_hidden_find(int lower_fd, int upper_fd, const char *git_dir, const char *tree,
		      const struct policy *before, const struct policy *now, struct strvec *out,
		      char *where, size_t where_len);

#endif
