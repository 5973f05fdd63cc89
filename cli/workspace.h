/*
 * workspace.h - one mount's state on disk, outside both the repository and the
 * mountpoint (DESIGN.md "Workspace on disk"):
 *
 *   ${XDG_STATE_HOME:-~/.local/state}/agentfs/workspaces/<name>/
 *     workspace.yml   repo, base commit, mountpoint, created time, policy digest
 *     policy.yml      the policy snapshot in force for this workspace
 *     upper/          the upper layer (fs/layout.h)
 *     work/           copy-up scratch space, same filesystem as upper/
 *     journal.jsonl   the journal (journal/journal.h)
 *     daemon.pid      "<pid> <mountpoint>\n" while a daemon serves the mount
 *     daemon.log      the daemon's stderr
 *
 * Functions return 0 or a negative errno; messages for people are written by
 * the CLI, not here, except where a function takes an error buffer.
 */
#ifndef AGENTFS_WORKSPACE_H
#define AGENTFS_WORKSPACE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct workspace {
	char *name;        /* workspace name ([A-Za-z0-9._-]+, not starting with '.') */
	char *dir;         /* absolute path of the workspace directory */
	char *repo;        /* absolute path of the repository's working tree (the lower) */
	char *base_commit; /* 40-hex HEAD commit at creation, or "" for an unborn HEAD */
	char *mountpoint;  /* absolute path of the last mountpoint, or "" */
	int64_t created;   /* creation time, seconds since the epoch (UTC) */
	char *policy_digest; /* policy_digest() of the snapshot, 32 hex */
};

/* The state root: @override if not NULL, else ${XDG_STATE_HOME:-$HOME/.local/state}/agentfs.
 * Returns a malloc'd absolute path in *out. */
int workspace_state_root(const char *override, char **out);

/* Load <root>/workspaces/<name>/workspace.yml.  -ENOENT if no such workspace;
 * -EINVAL (with a one-line reason in @err) if the file is malformed. */
int workspace_load(const char *root, const char *name, struct workspace **out, char *err,
		   size_t errlen);

/* Write workspace.yml atomically (temp file + rename). */
int workspace_save(const struct workspace *ws);

/* Find a workspace by mountpoint path (an existing path equal to some workspace's
 * mountpoint, after realpath) or else by name.  -ENOENT if none. */
int workspace_find(const char *root, const char *mnt_or_name, struct workspace **out, char *err,
		   size_t errlen);

/* Pid of the live daemon serving @ws (checked with kill(pid, 0) and that its
 * mountpoint is a FUSE mount in /proc/self/mountinfo), or 0 if none. */
pid_t workspace_daemon_pid(const struct workspace *ws);

/* Paths inside the workspace directory, malloc'd: "upper", "work", "journal.jsonl", ... */
char *workspace_path(const struct workspace *ws, const char *leaf);

void workspace_free(struct workspace *ws);

#endif
