/*
 * symlink.h - the policy's rule for symlinks of the lower (`symlinks: hide`),
 * one implementation for every place that decides what the view shows: the
 * mount (fs/), the change set (cli/changes.c) and `agentfs policy explain` and
 * `test`.
 *
 * Unlike the rest of policy/ this reads the filesystem, and only so: lstat and
 * readlink of entries below a directory file descriptor, every component
 * opened with O_NOFOLLOW (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the
 * kernel has it), never a symlink's target.  No allocation, no global state;
 * thread-safe.  It costs a few system calls per component of the target, and
 * is asked only about symlinks.
 */
#ifndef AGENTFS_POLICY_SYMLINK_H
#define AGENTFS_POLICY_SYMLINK_H

#include <stdbool.h>

struct policy;

/*
 * Is the lower symlink at @lpath (a policy path, see policy.h, relative to the
 * directory @lower_fd, the repository's working tree) unsafe to show: does its
 * target leave the repository (an absolute target, ".." above the top) or land
 * on a path @p hides?  The target is resolved lexically against the lower, one
 * component at a time, following further lower symlinks (at most 40, the
 * kernel's MAXSYMLINKS); each component is decided with policy_decide_path().
 * Unsure is unsafe: an unreadable link, a loop, an over-long path.
 *
 * Callers apply it only when policy_symlinks_mode(@p) is POLICY_SYMLINKS_HIDE,
 * and hide the symlink when it returns true (DESIGN.md invariant 2).
 */
bool policy_symlink_unsafe(const struct policy *p, int lower_fd, const char *lpath);

/*
 * The same decision for a target string already read from the symlink at
 * @lpath: the mount checks the very bytes it hands to the kernel (readlink,
 * copy-up), since the person may retarget a link after it was looked up.
 */
bool policy_symlink_target_unsafe(const struct policy *p, int lower_fd, const char *lpath,
				  const char *target);

#endif
