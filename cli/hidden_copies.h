/*
 * hidden_copies.h - the agent's copies of repository files that a policy hides.
 *
 * A copy-up keeps the lower file's path in the upper copy's origin record
 * (fs/layout.h).  When a workspace is mounted again under a policy that hides
 * that path, the copy would still show the agent the person's bytes (and its
 * own changes on top of them): a copy is an upper entry, which the view shows
 * whatever its name (DESIGN.md invariant 3 is about files the agent created).
 * `agentfs mount` therefore looks for such copies whenever the policy differs
 * from the one the workspace was last mounted with, and refuses the mount
 * while there are any (fail closed: DESIGN.md, invariant 2).
 */
#ifndef AGENTFS_HIDDEN_COPIES_H
#define AGENTFS_HIDDEN_COPIES_H

#include "cli/strvec.h"

struct policy;

/*
 * Walk the upper layer open as @upper_fd over the lower @lower_fd (both
 * O_RDONLY|O_DIRECTORY, borrowed) and append to @out the view path of every
 * file or symlink that would show the agent what @now hides and @before did
 * not (policy_decide_path(): the path or a directory above it; @before NULL
 * hides nothing):
 *  - a regular file whose origin record names such a lower path (a copy-up,
 *    wherever the agent moved it since), or
 *  - one at a place whose lower entry is such a path and still there (its
 *    lower path, through redirected directories): written over the lower file
 *    by a rename (sed -i, an editor's save), which leaves no origin.
 * Sizes for `max_file_size` are the upper file's.  Whiteouts, markers and
 * files the agent created are not copies.  A directory the agent left
 * unreadable (chmod 000) is read with its owner's rwx lifted for the moment
 * and gets its mode back; nothing else is written.  Returns 0 or a negative
 * errno, with the view path it failed at in @where (@where_len bytes; "" when
 * it failed elsewhere).
 */
int hidden_copies_find(int upper_fd, int lower_fd, const struct policy *before,
		       const struct policy *now, struct strvec *out, char *where, size_t where_len);

#endif
