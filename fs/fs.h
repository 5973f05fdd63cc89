/*
 * fs.h - the FUSE daemon serving a workspace's merged view.
 *
 * The only module that talks to libfuse.  It reaches the lower and the upper
 * solely through the directory file descriptors given here and *at() calls that
 * cannot follow a symlink out of them.
 */
#ifndef AGENTFS_FS_H
#define AGENTFS_FS_H

#include <stdbool.h>

struct policy;
struct journal;
struct agentfs;

struct fs_config {
	const char *mountpoint;	     /* absolute path; must exist and be an empty directory */
	int lower_fd;		     /* O_RDONLY|O_DIRECTORY fd of the repository's working tree */
	int upper_fd;		     /* O_RDONLY|O_DIRECTORY fd of the workspace's upper/ */
	int work_fd;		     /* O_RDONLY|O_DIRECTORY fd of the workspace's work/ */
	const struct policy *policy; /* borrowed; outlives fs_serve() */
	struct journal *journal;     /* borrowed; NULL for no journal */
	const char *fsname;	     /* shown in /proc/mounts, e.g. "agentfs:NAME" */
	const char *fuse_opts;	     /* extra comma-separated -o options, or NULL */
	bool debug;		     /* libfuse debug output on stderr */
	/* Let the kernel read and write upper files itself (FUSE passthrough,
	 * fs/passthrough.c): taken only where it is offered, by Linux 6.9 and
	 * later to a daemon with CAP_SYS_ADMIN.  Its WRITE records then carry
	 * no byte count (journal.h). */
	bool passthrough;
	int ready_fd;	       /* written one byte ('1') once the mount serves, then
				* closed; -1 for none */
	const char *state_dir; /* the workspace directory (for FS_INVALIDATE_FILE), or
				* NULL */
	/* The workspace-private git repository served at the view's ".git"
	 * (policy `git: private`): an absolute path, or NULL for none.  Its
	 * config, hooks/ and info/ are read-only to the agent. */
	const char *git_dir;
	/* Called once on a thread of its own after the mount serves, to build
	 * the private repository in the background; until it returns, what
	 * looks inside ".git" waits (fs/loop.c, waits_for_git), while the
	 * lookup of ".git" itself is answered at once.  0 or a negative errno,
	 * which the daemon's log gets, but -ECANCELED: the build stopped because
	 * the mount stopped serving (git_serving with NULL), and said so.  NULL
	 * when there is nothing to build. */
	int (*git_prepare)(void *arg);
	void *git_prepare_arg;
	/* Called when a lookup under the private .git finds nothing at @rel (a
	 * path relative to git_dir, e.g. "objects/ab/cdef..."), before the
	 * daemon answers ENOENT: it may create that entry in git_dir (an object
	 * produced on demand) and return 0, and the lookup is tried again (if
	 * that entry is still absent, the kernel is told not to cache its
	 * absence: the object may be the callback's to make later); or
	 * return a negative errno.  Before a directory under .git is listed it
	 * is also called with that directory's path and a trailing '/'
	 * ("objects/ab/"), to make every entry that should be listed.  Runs on
	 * a request thread; NULL for none.  Receives git_prepare_arg. */
	int (*git_fault)(void *arg, const char *rel);
	/* Called when a regular file of the lower, at @lower (relative to the
	 * lower's top), has been copied up or replaced by a new file (an
	 * editor's save: origin_from_lower): the agent is changing it, and its
	 * git will soon want the base version (`git diff`).  Runs on a
	 * request thread and must return at once (queue the work).  NULL for
	 * none.  Receives git_prepare_arg. */
	void (*git_copied_up)(void *arg, const char *lower);
	/* Called when a file of the private .git's objects/pack was removed:
	 * objects the kernel's cached listings of objects/XX did not show (a
	 * pack held them) may now be git_fault's to make loose, so those
	 * listings are to be dropped (fs_git_changed).  Runs on a request
	 * thread and must return at once.  NULL for none.  Receives
	 * git_prepare_arg. */
	void (*git_packs_removed)(void *arg);
	/* Called with the serving daemon once the mount serves, before
	 * git_prepare runs, and with NULL before fs_serve tears it down (after
	 * that call returns, the daemon is never used again): until then the
	 * owner of git_prepare_arg may call fs_git_changed() on it from any
	 * thread.  NULL for none.  Receives git_prepare_arg. */
	void (*git_serving)(void *arg, struct agentfs *fs);
};

/*
 * Tell the serving daemon @fs that entries of directory @rel_dir of
 * fs_config.git_dir (e.g. "objects/pack") were added behind it: the kernel's
 * cached listing and attributes of that directory are dropped
 * (fuse_lowlevel_notify_inval_inode, which takes no directory lock, so it
 * cannot wait on a request in flight), and the next listing asks the daemon.
 * A name the kernel already holds is not invalidated: only for directories
 * whose entries are added, or removed where a reader copes with a stale name
 * (git's packs).  A no-op when the kernel holds nothing of @rel_dir.  Never
 * call it while holding a lock that a request may wait for (git_fault's).
 */
void fs_git_changed(struct agentfs *fs, const char *rel_dir);

/*
 * Whether a lookup of a loose object's name (38 lowercase hex digits) may
 * now wait in git_fault for base blobs being written (cli/gitpriv.h): while
 * @pending, the request loop hands such lookups to a worker instead of
 * answering them on the thread that reads /dev/fuse (fs/loop.c), so that
 * other requests are not held up.  Callable from any thread in the same
 * window as fs_git_changed().
 */
void fs_git_pending(struct agentfs *fs, bool pending);

/*
 * Changing the upper behind a serving daemon (agentfs discard): append each
 * changed view path, terminated by a NUL byte, to <state_dir>/FS_INVALIDATE_FILE,
 * then send SIGUSR1 to the daemon.  The daemon takes the file (rename), drops
 * the kernel's cached entries for those paths (negative ones included) and
 * every attribute and entry it handed out before.  A path written after
 * FS_INVALIDATE_DISCARDED (a view path never starts with it) was also
 * discarded: its upper entry, and all below it, went back to the base, and
 * the daemon journals a JOP_DISCARD for it ("" for the whole view); the
 * others (the directories above, a restored rename source) only changed
 * their answers.
 */
#define FS_INVALIDATE_FILE	"invalidate"
#define FS_INVALIDATE_DISCARDED "/"
/* While the daemon works through a request it holds it under this name; the
 * request is done when neither file exists. */
#define FS_INVALIDATE_TAKEN "invalidate.taken"

/*
 * Asking a serving daemon to write out its journal (agentfs log, verify on a
 * live mount): create <state_dir>/FS_FLUSH_FILE, send SIGUSR2, and wait until
 * the file is gone: every event acknowledged before the signal is then in the
 * journal file.
 */
#define FS_FLUSH_FILE "flush"

/*
 * A request the daemon could not satisfy (the journal cannot be written: a full
 * disk, EIO) is renamed to this name instead of removed, and truncated to as
 * many bytes as the positive errno: on a full disk a rename and a sparse
 * truncate still succeed where writing a message would not.  The reader
 * reports the error and removes the file.
 */
#define FS_FLUSH_FAILED "flush.failed"

/*
 * Mount at cfg->mountpoint and serve requests until the filesystem is unmounted
 * (fusermount3 -u) or SIGINT/SIGTERM/SIGHUP arrive.  Returns 0 after a clean
 * unmount, or a negative errno if the mount could not be set up (in that case
 * nothing is left mounted and ready_fd is closed without a byte).
 */
int fs_serve(const struct fs_config *cfg);

#endif
