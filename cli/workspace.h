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
	char *name;	     /* workspace name ([A-Za-z0-9._-]+, not starting with '.') */
	char *dir;	     /* absolute path of the workspace directory */
	char *repo;	     /* absolute path of the repository's working tree (the lower) */
	char *base_commit;   /* 40-hex HEAD commit at creation, or "" for an unborn HEAD */
	char *mountpoint;    /* absolute path of the last mountpoint, or "" */
	int64_t created;     /* creation time, seconds since the epoch (UTC) */
	char *policy_digest; /* policy_digest() of the snapshot, 32 hex */
};

/* The state root: @override if not NULL, else ${XDG_STATE_HOME:-$HOME/.local/state}/agentfs.
 * Returns a malloc'd absolute path in *out. */
int workspace_state_root(const char *override, char **out);

/* Load <root>/workspaces/<name>/workspace.yml.  -ENOENT if no such workspace;
 * -EINVAL (with a one-line reason in @err) if the file is malformed, or the
 * directory exists without one. */
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

/* The state letter of process @pid (proc(5), /proc/PID/stat's third field,
 * after the name, which ends at the last ')'): 'R', 'S', 'T' (stopped), 'Z'
 * (zombie), ...; '?' when it cannot be read. */
char workspace_pid_state(pid_t pid);

/* Is process @pid exiting: its leader a zombie (other threads may still be
 * ending, holding its files), or a SIGKILL pending on it?  False when it is
 * gone or cannot be read. */
bool workspace_pid_dying(pid_t pid);

/* Take the exclusive lock of the workspace directory open as @fd (flock).  A
 * daemon killed (kill -9) holds it until its last thread is gone, a second or
 * more after the signal: while the daemon.pid of @ws_dir names a process
 * that is dying (workspace_pid_dying()), wait for it, polling every 10 ms, up
 * to 10 s.  0, or a negative errno (-EWOULDBLOCK: held by a live process). */
int workspace_lock_after_kill(const char *ws_dir, int fd);

/* Ask the live daemon serving @ws to write its journal out (fs/fs.h
 * FS_FLUSH_FILE: a request file and SIGUSR2) and wait, polling every 5 ms, up
 * to @timeout_ms milliseconds until it has: every event acknowledged before
 * the call is then in journal.jsonl.  Returns 0 when done or when no daemon
 * serves @ws; the daemon's error when it cannot write the journal (e.g.
 * -ENOSPC, fs/fs.h FS_FLUSH_FAILED); -ETIMEDOUT, -ESRCH (the daemon exited) or
 * another negative errno (e.g. -EPERM: the daemon is another user's), the
 * request withdrawn. */
int workspace_daemon_flush(const struct workspace *ws, int timeout_ms);

/* Paths inside the workspace directory, malloc'd: "upper", "work", "journal.jsonl", ... */
char *workspace_path(const struct workspace *ws, const char *leaf);

/* Is @path a workspace's policy snapshot: once symlinks are resolved, the file
 * policy.yml of a workspace directory <root>/workspaces/<name> (the name valid,
 * whether or not the workspace is whole)?  Only such a file is loaded with
 * policy_load_snapshot(), which reads `rules:` and the origins written there;
 * false when @path or @root cannot be resolved. */
bool workspace_is_policy_snapshot(const char *root, const char *path);

/* Does the upper of the workspace in directory @ws_dir hold nothing: no
 * change of the agent's, no whiteout?  Unreadable: false. */
bool workspace_upper_empty(const char *ws_dir);

void workspace_free(struct workspace *ws);

/* ---- Additions used by the lifecycle commands (mount, unmount, list, rm). ---- */

/* Version of the workspace.yml format this code writes and reads. */
#define WORKSPACE_FORMAT_VERSION 1

/* Is @name a valid workspace name: [A-Za-z0-9._-]{1,128}, not starting with '.'
 * (the name becomes a directory; '.'-names would hide it and allow "..")? */
bool workspace_name_valid(const char *name);
/* That rule in words, for the refusals of an invalid name. */
#define WORKSPACE_NAME_RULE "1 to 128 letters, digits, '.', '_', '-', not starting with '.'"

/* <root>/workspaces/<name>, malloc'd in *out.  -EINVAL for an invalid name. */
int workspace_dir_for(const char *root, const char *name, char **out);

/* A new in-memory workspace (nothing touches the disk); every string is copied.
 * @created is seconds since the epoch.  -EINVAL for an invalid name. */
int workspace_new(const char *root, const char *name, const char *repo, const char *base_commit,
		  const char *mountpoint, int64_t created, const char *policy_digest,
		  struct workspace **out);

/* Replace one string field (e.g. &ws->mountpoint) with a copy of @value. */
int workspace_set(char **field, const char *value);

/* Parse workspace.yml text.  @file names it in errors ("FILE:LINE:COLUMN: why").
 * Fills the fields of *out except name and dir, which the caller sets. */
int workspace_parse(const char *text, size_t len, const char *file, struct workspace **out,
		    char *err, size_t errlen);

/* Names of the entries of <root>/workspaces that are valid workspace names,
 * sorted; *count 0 and *names NULL when there are none (or no such directory).
 * Free with workspace_names_free. */
int workspace_list_names(const char *root, char ***names, size_t *count);
void workspace_names_free(char **names, size_t count);

/* daemon.pid: "<pid> <mountpoint>\n".  workspace_read_pid returns -ENOENT when there
 * is no pid file, -EINVAL when it is malformed; *mnt (may be NULL) is malloc'd.
 * workspace_read_pid_at reads the one in the workspace directory @dir. */
int workspace_write_pid(const struct workspace *ws, pid_t pid, const char *mountpoint);
int workspace_read_pid(const struct workspace *ws, pid_t *pid, char **mnt);
int workspace_read_pid_at(const char *dir, pid_t *pid, char **mnt);

enum workspace_state {
	WORKSPACE_UNMOUNTED = 0, /* no daemon, no mount, no pid file */
	WORKSPACE_MOUNTED = 1,	 /* a live daemon serves its mountpoint */
	WORKSPACE_STALE = 2,	 /* the daemon is gone but its mount or pid file is left */
};

/* State of @ws; *pid gets the live daemon's pid (or 0) and *mnt (malloc'd, may be
 * NULL; may be passed as NULL) the mountpoint the state refers to. */
enum workspace_state workspace_state(const struct workspace *ws, pid_t *pid, char **mnt);

/* Is @path (absolute, as written in /proc/self/mountinfo) a FUSE mount?  1 yes
 * (its source, e.g. "agentfs:NAME", copied into @src when not NULL), 0 no, or a
 * negative errno when mountinfo cannot be read. */
int workspace_fuse_mount_at(const char *path, char *src, size_t srclen);

/* Does the mount on @path (absolute, as in /proc/self/mountinfo; the last one
 * there) have @opt among its super options (proc(5): the field after the
 * source, e.g. "rw,user_id=0,group_id=0,default_permissions")?  1 yes, 0 no or
 * no mount, negative errno when mountinfo cannot be read. */
int workspace_mount_has_option(const char *path, const char *opt);

/* Is @path a mountpoint of any kind (mountinfo)?  1 yes, 0 no, negative errno. */
int workspace_is_mountpoint(const char *path);

/* Absolute, symlink-free form of @path whose last component may be missing (or a
 * dead FUSE mount): realpath(@path), else realpath(dirname) + "/" + basename.
 * malloc'd in *out. */
int workspace_abspath(const char *path, char **out);

/* True if @path equals @dir or lies below it (both absolute, normalized). */
bool workspace_path_within(const char *path, const char *dir);

/* Remove the directory tree at @path (absolute): never follows a symlink, never
 * crosses into another filesystem (-EXDEV), makes unreadable directories of the
 * caller's readable first.  0 if it did not exist. */
int workspace_remove_tree(const char *path);

/* Unmount the FUSE mount at @mnt (absolute): umount2() when root, else
 * `fusermount3 -u` (`-uz` when @lazy, MNT_DETACH as root).  0 on success,
 * -EBUSY when busy, -EINVAL when nothing is mounted there, other negative
 * errnos otherwise; a one-line reason in @err on failure. */
int workspace_fuse_unmount(const char *mnt, bool lazy, char *err, size_t errlen);

/* Number of non-directory entries in upper/ (changed files, symlinks and
 * whiteouts), or a negative errno. */
long workspace_count_upper(const struct workspace *ws);

#endif
