/*
 * evidence.h - `agentfs export --evidence`: a plain-text account of a
 * workspace that a reviewer can paste into a pull request beside the patch.
 *
 * The block names the workspace, the repository, the base commit, the journal's
 * span (records, first and last record time, UTC), what `agentfs verify` says of
 * the journal, the upper and the run journal, and from the journal (activity.h)
 * the files read, written, created, deleted and renamed, the refusals (lookups
 * of hidden names, concealed; changes to read-only paths, denied) and the
 * processes by name.
 *
 * It goes before a patch, so it must never read as one: `git apply` skips text
 * before the first "diff --git " line, but takes a line starting "@@ -" as a
 * broken patch and a "--- " line followed by a "+++ " line as a patch header,
 * and mail tools split an mbox at a "From " line.  So every line that holds a
 * path, a process name or a message is indented by two spaces; only the
 * block's own fixed labels start a line; and paths and names have control
 * bytes, backslash and non-UTF-8 bytes escaped as \xHH (no line of their own).
 *
 * Functions return 0 or a negative errno.
 */
#ifndef AGENTFS_EVIDENCE_H
#define AGENTFS_EVIDENCE_H

#include <stddef.h>

struct workspace;

/* Paths listed per kind when not told otherwise; the rest are counted. */
#define EVIDENCE_MAX_PATHS 100

/*
 * The block of workspace @ws in *out (malloc'd, NUL-terminated, *len bytes
 * without the NUL), ending with a blank line.  At most @max_paths paths per
 * list (0: all of them).  The caller has the daemon write its journal out
 * first (workspace_daemon_flush()) when @ws is mounted.  A damaged journal or
 * upper is said in the block, not an error; a journal that cannot be read is
 * (-errno, with a one-line reason in @err).
 */
int evidence_format(const struct workspace *ws, size_t max_paths, char **out, size_t *len,
		    char *err, size_t errlen);

#endif
