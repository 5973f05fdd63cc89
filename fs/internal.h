/*
 * internal.h - shared state of the FUSE daemon (private to fs/).
 *
 * The daemon keeps its own inode table: one `struct node` per view path the
 * kernel knows (a dentry-like tree: parent + name), with the kernel's lookup
 * count (see fuse_lowlevel.h, "forget") and our own references.  A node's FUSE
 * nodeid is its address (as in libfuse's passthrough_ll), the root is
 * FUSE_ROOT_ID.  Reported st_ino values are stable: the lower file's inode
 * number, kept across copy-up (stored in the origin xattr), or the upper
 * file's for entries the agent created (tagged with bit 63 when the two layers
 * are on different devices, so the numbers cannot collide).
 *
 * Locking: `ns_lock` (rwlock) orders namespace changes: lookups, getattr and
 * directory listings take it shared; create, unlink, rename, copy-up and the
 * like take it exclusive, so a path computed from the node tree stays valid
 * for the duration of the operation.  `table_lock` (mutex) protects the hash
 * table and the reference counts, and is never held across a system call.
 */
#ifndef AGENTFS_FS_INTERNAL_H
#define AGENTFS_FS_INTERNAL_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/fs.h"
#include "fs/layout.h"
#include "journal/journal.h"
#include "policy/policy.h"

/* Longest view path we handle, in bytes including the NUL.  Deeper trees get
 * ENAMETOOLONG; the kernel's own limit per syscall is PATH_MAX too. */
#define FS_PATH_MAX PATH_MAX

struct node {
	fuse_ino_t id;
	struct node *parent; /* NULL only for the root */
	char *name;	     /* name in the parent, "" for the root */
	struct node *hnext;  /* hash chain, keyed by (parent, name); once unhashed,
			      * the next of agentfs.unhashed */
	struct node *uprev;  /* the previous of agentfs.unhashed, or NULL */
	uint64_t nlookup;    /* kernel references (lookup replies minus forgets) */
	uint32_t refs;	     /* children, open handles and in-flight operations */
	/* Write records of its file whose path is taken and which are not
	 * yet in the journal (ops_file.c, record_begin), under table_lock. */
	uint32_t recording;
	bool hashed; /* in the table (false once unlinked/renamed over) */
	bool listed; /* in agentfs.unhashed */
	/* A file of the upper renamed over while the kernel knew it: an
	 * O_PATH descriptor of it, so that an open the kernel sends for it
	 * after the rename is served (op_open); -1 none.  Closed when the
	 * node is freed. */
	int gone_fd;
	/* A directory removed (rmdir, or renamed over) while the kernel knew
	 * it: its attributes then, with no link, for the fstat(2) of a process
	 * whose working directory it was (ext4 answers it too).  NULL
	 * otherwise.  Set under ns_lock held exclusively; freed with the node. */
	struct stat *dead;

	mode_t type;	    /* S_IFMT bits */
	uint64_t ino;	    /* reported st_ino */
	bool upper;	    /* exists in the upper at its view path */
	bool opaque;	    /* directory: never merge lower entries */
	bool readonly;	    /* policy said read-only for its lower path */
	void *handles;	    /* open file handles (ops_file.c), under table_lock */
	uint64_t cache_ver; /* version last opened of a lower file or loose object,
			     * 0 if none is known (ops_file.c, keep_version) */
	int wd;		    /* directory: inotify watch of its lower directory;
			     * 0 not yet, -1 could not be watched */
	/* A watch stays on the inode it was added to (@wd_ino), so after the
	 * person moves or removes a directory it may watch one no longer at
	 * this path.  @wd_epoch: agentfs.dir_moves when the inode at the path
	 * was last found to be @wd_ino (view_apply; dircache.c,
	 * lower_keepable). */
	uint64_t wd_ino;
	uint32_t wd_epoch;
	/* A regular file's size when the daemon last saw it (lookup, getattr,
	 * open, write, release, setattr: node_saw_size).  A guess read without
	 * a lock, by fs/loop.c's classify() before an open for writing (whose
	 * copy-up, or hash of the version before, takes time in proportion);
	 * relaxed atomics. */
	uint64_t size_seen;
	char *lower; /* lower path: a file's lower file, a directory's merged
		      * lower directory; NULL if none */
	/* Passthrough (ops_file.c, handle_pick_io), under table_lock: the
	 * backing id its open files share (0: none), how many hold it, and
	 * whether any ever did (its page cache then is not the file's). */
	uint32_t pt_id;
	uint32_t pt_handles;
	bool pt_used;
	/* The hash of the last write record of this file while it is open
	 * (ops_file.c, record_writes), under its record lock. */
	bool pt_last_ok;
	XXH128_hash_t pt_last;
};

struct hashcache;

struct agentfs {
	const struct fs_config *cfg;
	struct fuse_session *se;
	int lower_fd;
	int upper_fd;
	int work_fd;
	const struct policy *policy;
	struct journal *journal;
	bool use_openat2; /* false after openat2 answered ENOSYS (old kernel, valgrind) */
	/* Tests only (AGENTFS_TEST_COPYUP_DELAY_MS): how long a copy-up of a
	 * file of 1 MiB or more keeps its finished copy in work/ before it is
	 * taken, outside ns_lock, so that a test sees requests answered during
	 * it however fast the disk copies.  0 otherwise. */
	unsigned copyup_delay_ms;
	bool tag_upper_ino; /* lower and upper on different devices */
	dev_t lower_dev;
	double timeout;	 /* entry and attribute cache timeout, seconds */
	bool no_opendir; /* the kernel lists directories without opendir */
	/* The kernel takes read replies spliced from a file (FUSE_CAP_SPLICE_WRITE). */
	bool splice_write;
	mode_t umask; /* the daemon's own umask (fix_mode()) */
	/* the daemon runs as root: new entries get the caller's owner */
	bool is_root;
	/* The owner a new file of work/ gets: the daemon's effective ids, or
	 * gid (gid_t)-1 when the directory's group would be another
	 * (set-group-ID, or mounted grpid: open(2)).  copyup() gives a copy
	 * another owner only where the lower file's differs. */
	uid_t work_uid;
	gid_t work_gid;
	/* work/ has a default ACL, which gives new files their mode in place
	 * of the umask (acl(5)): copyup() then always sets the mode. */
	bool work_acl;

	pthread_rwlock_t ns_lock;
	pthread_mutex_t table_lock;
	struct node root;
	struct node **buckets;
	size_t nbuckets;
	/* Nodes out of the table that the kernel or a request still holds
	 * (unlinked, renamed over, discarded), linked through hnext and uprev:
	 * freed with their last reference, or by table_destroy at the end. */
	struct node *unhashed;
	size_t nnodes;

	/* Exclusive holds of ns_lock so far (ns_wrlock): what the upper's
	 * names may have changed by.  Read under ns_lock. */
	uint64_t ns_gen;
	/* The last negative lookup (neg_remember), under table_lock. */
	struct {
		struct node *dir; /* NULL: none */
		uint64_t ns_gen, lower_gen;
		uint32_t moves;
		char name[NAME_MAX + 1];
	} neg;

	/* Lower paths replaced while readers may still use the old string
	 * (view_apply runs under ns_lock shared): freed at the next exclusive
	 * hold of ns_lock, when no reader can hold one (ns_wrlock()). */
	char **graveyard;
	size_t ngrave, capgrave;

	pthread_mutex_t copyup_lock;
	uint64_t tmp_seq;

	struct hashcache *hashes;
	/* dircache.c: the upper's and the lower's directories; NULL: every
	 * open resolves afresh */
	struct dircache *dirs, *ldirs;
	/* Bumped (release) once a request's effects are done, read (acquire)
	 * before each request is answered: the order the kernel gives two
	 * requests (the second sent after the first's reply) made visible to
	 * the C memory model and to ThreadSanitizer, which cannot see it
	 * through /dev/fuse and splice(2) (fs/loop.c). */
	uint64_t epoch;
	/* Requests being answered by workers other than the reader (loop.c);
	 * changed only by the reader and by those workers. */
	unsigned handed_off;
	/* Releases answered but not finished, oldest first (op_release): only
	 * the reader thread touches them, and it finishes them all before it
	 * hands its role on or sleeps. */
	bool defer_releases; /* set by fs_loop when its reader can finish them */
	struct handle *deferred, *deferred_tail;
	/* Every open file handle (ops_file.c), under table_lock. */
	struct handle *open_handles;
	/* How many of them have had a WRITE of FS_BULK_WRITE bytes or more
	 * (op_write_buf): while there are none the reader receives requests
	 * with one read(2) instead of libfuse's splice (loop.c, receive()). */
	unsigned bulk_writers;
#define FS_CONCEAL_SLOTS 4096
	uint64_t concealed[FS_CONCEAL_SLOTS]; /* ops_entry.c, conceal_first() */
#define FS_RECORD_LOCKS 64
	pthread_mutex_t record_locks[FS_RECORD_LOCKS]; /* ops_file.c, record_lock() */
	pthread_cond_t recorded; /* a node's recording fell to 0; with table_lock */

	/* The private .git (fs_config.git_dir): served from git_fd.  While the
	 * background build runs (git_ready false), the lookup of ".git" is
	 * answered at once, uncached (git_building_root), and every other
	 * request on that node, a lookup in it above all, waits for the build
	 * (loop.c, waits_for_git, park_for_git): a walk that only stats .git
	 * does not wait, and nothing reaches inside it half-built.
	 * git_root_id is the node id the last such lookup answered with, 0
	 * before it and once that node is freed (a node id is its address,
	 * which another node may get next: inode.c, release_locked); atomic. */
	int git_fd;
	bool git_ready;
	uint64_t git_root_id;
	/* Requests that wait for the build, copied aside so that no worker
	 * waits (loop.c, park_for_git), oldest first; answered by the build's
	 * thread when it ends (fs_git_run_parked).  With git_lock. */
	struct parked *git_parked, **git_parked_tail;
	bool git_pending; /* fs_git_pending(); atomic */
	pthread_mutex_t git_lock;
	pthread_cond_t git_cond;

	/* passthrough.c */
	bool pt_attached; /* its I/O may add backing ids to open replies */
	bool pt_init_seen;
	bool pt_offered; /* INIT asked for FUSE_PASSTHROUGH */
	bool pt_failed;	 /* the kernel refused a backing file: never again */
	bool pt_logged;	 /* daemon.log said passthrough is on */

	/* watch.c */
	int inotify_fd;
	/* Directory moves and removals the lower watch has reported (and
	 * overflows), and whether its thread stopped early. */
	uint32_t dir_moves;
	/* Batches of lower events read so far (neg_recall). */
	uint64_t lower_gen;
	bool watch_broken;
	int watch_stop[2];
	pthread_t watch_thr;
	bool watching;
	void *wd_map;
	size_t wd_cap, wd_count;
};

/* Entry and attribute timeout for what the kernel caches, seconds: long,
 * because every change is either made by the daemon (the kernel sees the
 * reply) or announced by a notification (watch.c, discard). */
#define FS_LONG_TIMEOUT 86400.0
/* Bytes of the pipe libfuse splices requests and replies through: the
 * largest an unprivileged process may ask for, pipe-max-size's default
 * (pipe(7); a larger pipe needs CAP_SYS_RESOURCE).  Without the pipe libfuse
 * copies every request and reply through the daemon. */
#define FS_PIPE_SIZE (1u << 20)

/* The largest WRITE, bytes: FS_PIPE_SIZE less a page, so that a spliced WRITE
 * (libfuse's buffer of max_write + FUSE_BUFFER_HEADER_SIZE, 4 KiB: a page
 * for the header and one per page of data, the kernel's max_pages, which
 * libfuse derives from max_write: fuse_lowlevel.c do_init) fits the pipe. */
static inline size_t fs_max_write(void)
{
	return FS_PIPE_SIZE - (size_t)sysconf(_SC_PAGESIZE);
}

/* The mount's readahead window, bytes (fs.c: op_init, raise_readahead), and so
 * the largest READ: FS_PIPE_SIZE less four pages, the largest whose spliced
 * reply fits the pipe (fuse_send_data_iov in fuse_lowlevel.c asks for the
 * data plus three pages and the reply's header). */
static inline size_t fs_readahead(void)
{
	return FS_PIPE_SIZE - 4 * (size_t)sysconf(_SC_PAGESIZE);
}

/* A WRITE this large marks its handle as writing in bulk (bulk_writers). */
#define FS_BULK_WRITE (64u << 10)
/* For children of lower directories that could not be watched. */
#define FS_SHORT_TIMEOUT 1.0
/* For a name's absence, at most: an overflow of the lower watch's queue
 * (inotify(7), IN_Q_OVERFLOW) drops what the daemon knows of, and the kernel
 * forgets a name found absent before it after this long. */
#define FS_NEG_TIMEOUT 60.0

static inline struct agentfs *fs_of(fuse_req_t req)
{
	return (struct agentfs *)fuse_req_userdata(req);
}

/* Take ns_lock exclusive (and free what view_apply retired). */
void ns_wrlock(struct agentfs *fs);

/* The kernel sends CREATE, MKDIR, MKNOD, SYMLINK and LINK for a name right
 * after its negative LOOKUP (fs/namei.c, lookup_open and filename_create), and
 * the request resolves the name again before making it.  op_lookup remembers
 * its last negative answer (@whiteout: a whiteout of the upper hides the
 * name), read with the lower's event count @lower_gen taken before the name
 * was resolved; the request that follows may take it instead of resolving.
 * Only in a directory that merges no lower directory or a watched one whose
 * watch is current (node.wd_epoch), outside the private .git, and not for a
 * name behind a whiteout (`agentfs discard` removes whiteouts before the
 * daemon hears of it).  Under ns_lock shared. */
void neg_remember(struct agentfs *fs, struct node *dir, const char *name, bool whiteout,
		  uint64_t lower_gen);
/* Under ns_lock exclusive: whether the last negative lookup was of @name in
 * @dir with nothing changed since (no other exclusive hold of ns_lock, no
 * lower event read, no directory moved).  Such a name has no whiteout either
 * (neg_remember).  Takes it: true once at most. */
bool neg_recall(struct agentfs *fs, struct node *dir, const char *name);

/* A node's lower path.  It may be replaced by a refresh under the shared
 * ns_lock while others read it (view_apply); the old string stays valid
 * until the next exclusive hold (ns_wrlock), so a reader sees either. */
static inline const char *node_lower(const struct node *n)
{
	return __atomic_load_n(&n->lower, __ATOMIC_ACQUIRE);
}

/* --- passthrough.c: the kernel serves upper files' I/O itself ------ */
/* After fuse_session_mount(): carry the session's replies through an I/O
 * whose INIT asks for FUSE_HANDLE_KILLPRIV_V2 and, when fs_config.passthrough
 * and the daemon runs as root, for passthrough, adding backing ids to open
 * replies. */
void passthrough_attach(struct agentfs *fs);
/* Whether opens may ask for passthrough now: INIT asked for it and the
 * kernel has not refused a backing file. */
bool passthrough_usable(const struct agentfs *fs);
/* Register @fd (a regular file) as a backing file: its id (> 0), or 0 when
 * the kernel refused (then passthrough_usable() may turn false). */
uint32_t passthrough_backing_open(struct agentfs *fs, int fd);
void passthrough_backing_close(struct agentfs *fs, uint32_t id);
/* The next OPEN or CREATE reply this thread sends carries backing @id
 * (0: none).  Call right before fuse_reply_open()/fuse_reply_create(). */
void passthrough_reply_with(uint32_t id);

/* --- inode.c: the node table ----------------------------------------- */
int table_init(struct agentfs *fs);
void table_destroy(struct agentfs *fs);
/* The node for @id (FUSE_ROOT_ID or a node address). */
struct node *node_get(struct agentfs *fs, fuse_ino_t id);
/* What one page-cache copy serves in microseconds, in bytes: the largest
 * READ or WRITE the request loop's reader answers itself, and the largest
 * file (size_seen) whose open for writing it answers itself (fs/loop.c);
 * larger ones are sequential I/O that can wait on the disk.  A larger file's
 * copy-up copies its bytes before taking ns_lock (copyup_prepare). */
#define FS_INLINE_IO (64u << 10)
/* Note @size (bytes) as @n's size now (struct node, size_seen); @grown_to:
 * only if larger than the size noted (a write that ends at @size). */
static inline void node_saw_size(struct node *n, off_t size, bool grown_to)
{
	uint64_t s = size < 0 ? 0 : (uint64_t)size;
	if (!grown_to) {
		__atomic_store_n(&n->size_seen, s, __ATOMIC_RELAXED);
		return;
	}
	uint64_t cur = __atomic_load_n(&n->size_seen, __ATOMIC_RELAXED);
	while (cur < s && !__atomic_compare_exchange_n(&n->size_seen, &cur, s, true,
						       __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
	}
}
/* Find the hashed child @name of @parent, or NULL.  Caller holds ns_lock. */
struct node *node_find(struct agentfs *fs, struct node *parent, const char *name);
/* Find or create the child; the returned node has one more kernel lookup when
 * @count_lookup.  NULL on ENOMEM.  Caller holds ns_lock. */
struct node *node_child(struct agentfs *fs, struct node *parent, const char *name,
			bool count_lookup);
/* node_find() for callers already holding table_lock. */
struct node *node_find_locked(struct agentfs *fs, struct node *parent, const char *name);
/* Take the node out of the name table (unlinked, or replaced by a rename). */
void node_unhash(struct agentfs *fs, struct node *n);
/* Has @n no name in the view: it or a directory above it out of the name
 * table (unlinked, renamed over, discarded)?  Its requests then reach its
 * file only through an open handle, never by a path, which names another
 * file now or none.  Caller holds ns_lock. */
bool node_unnamed(const struct agentfs *fs, const struct node *n);
/* `agentfs discard` took the upper's entries at view path @path ("" the
 * whole view) away: the node there, if a file of the upper, or every such
 * file below it, loses its name (node_unhash), so a handle still open on one
 * (the agent's editor) writes to the file discard removed, its records say
 * so (JOURNAL_F_UNLINKED), and the kernel's next lookup of the path finds
 * the lower's version as a new inode; first, the write records on their way
 * for them go into the journal (ns_wrlock_settled).  Directories keep their
 * names (a shell in one lists what is there now), and the private .git is
 * not the upper's.  Takes ns_lock itself. */
void node_discard_path(struct agentfs *fs, const char *path);
/* node_unhash() for an entry removed from the view, keeping in node.dead
 * what a directory's fstat(2) answers from then on: @st, its attributes
 * just before (NULL: unknown), with no link, and size 0 after an rmdir
 * (@rmdir; a rename over keeps the size), as ext4 leaves a directory
 * (ext4_rmdir, ext4_rename).  Caller holds ns_lock exclusively. */
void node_remove_dir(struct agentfs *fs, struct node *n, const struct stat *st, bool rmdir);
/* Move a hashed node to (@parent, @name).  Caller holds ns_lock exclusive. */
int node_move(struct agentfs *fs, struct node *n, struct node *parent, const char *name);
void node_ref(struct agentfs *fs, struct node *n);
void node_unref(struct agentfs *fs, struct node *n);
void node_forget(struct agentfs *fs, struct node *n, uint64_t nlookup);
/* Write the view path of @n ("" for the root) into @buf.  -ENAMETOOLONG. */
int node_path(const struct node *n, char *buf, size_t len);
/* Child path: @dir's path + "/" + @name (no slash for the root).  0, or
 * -ENAMETOOLONG (with @buf empty) when it needs more than @len bytes. */
int path_join(char *buf, size_t len, const char *dir, const char *name);
/* Invalidate every cached kernel answer (after the upper changed behind us). */
void table_invalidate_all(struct agentfs *fs);

/* Have the kernel drop its cached entry @name in directory @parent, which holds
 * a directory when @dir.  A directory's entry is only expired (looked up again
 * at its next use), so a process whose working directory it is keeps it. */
void entry_invalidate(struct agentfs *fs, fuse_ino_t parent, const char *name, bool dir);
/* A node to tell the kernel about: its entry (@name in @parent, malloc'd, or
 * NULL for none) and its inode's attributes and pages. */
struct node_inval {
	fuse_ino_t parent;
	fuse_ino_t ino;
	char *name;
	bool dir;
};
/* Notify the kernel of each of @v's @n nodes (entry_invalidate(), then
 * fuse_lowlevel_notify_inval_inode()), and free @v and its names.  Called
 * without ns_lock and table_lock: the kernel may call back into the daemon
 * while it processes a notification. */
void node_invals_send(struct agentfs *fs, struct node_inval *v, size_t n);

/* --- resolve.c: reaching the layers without following symlinks --------- */
/* Open @rel (relative, "" = the layer root) beneath @rootfd, never following a
 * symlink in any component (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or a
 * component-by-component O_NOFOLLOW walk).  Returns an fd or -errno. */
int layer_open(struct agentfs *fs, int rootfd, const char *rel, int flags, mode_t mode);
/* The writable layer for view path @path: the private git directory for
 * ".git/..." (when served), else the upper.  Same contract as layer_open()
 * and layer_open_parent(); the parent of ".git" itself is refused (-EBUSY):
 * it is not an entry of the upper. */
int upper_open(struct agentfs *fs, const char *path, int flags, mode_t mode);
int upper_open_parent(struct agentfs *fs, const char *path, const char **leaf);
/* Is @name in @dir the served private .git? */
bool is_git_root(struct agentfs *fs, const struct node *dir, const char *name);
/* Whether @n is the node the lookup of the private .git's root answered
 * with during its build (git_root_id), and the build has not ended: the
 * kernel may cache neither its entry nor its attributes then (they change
 * as the build fills it).  By id, not by name: no lock needed. */
bool git_building_root(struct agentfs *fs, const struct node *n);
/* Answers the requests parked for the private .git's build, on the calling
 * thread (the build's, once git_ready is set); after the session ended,
 * drops them.  loop.c. */
void fs_git_run_parked(struct agentfs *fs);
/* Is the private .git built (or none served)? */
bool git_is_ready(struct agentfs *fs);
/* Block until the private .git is built. */
void git_wait(struct agentfs *fs);
/* lstat-like: fstatat of @rel beneath @rootfd without following symlinks. */
int layer_stat(struct agentfs *fs, int rootfd, const char *rel, struct stat *st);
/* Split @path into its parent directory fd (opened beneath @rootfd) and the
 * final component, which is returned as a pointer into @path. */
int layer_open_parent(struct agentfs *fs, int rootfd, const char *path, const char **leaf);

/* --- dircache.c: the layers' directories, kept open between requests --- */
#define DIRCACHE_SLOTS 128
struct dircache;
/* A table of DIRCACHE_SLOTS descriptors; NULL without memory.  Freed (every
 * descriptor closed) by dircache_free(), which takes NULL too. */
struct dircache *dircache_new(void);
void dircache_free(struct dircache *dc);
/* An O_PATH descriptor of the upper directory at view path @path ("" = the
 * root), as upper_open(@path, O_PATH | O_DIRECTORY) gives, kept in fs->dirs
 * between requests (paths below the private .git never are).  Returns the
 * fd, to hand back with dircache_put() and never to close(), or -errno. */
int dircache_get(struct agentfs *fs, const char *path);
/* Hand back @fd from dircache_get(); nothing for a negative @fd. */
void dircache_put(struct agentfs *fs, int fd);
/* Forget every upper descriptor: a directory of the upper was removed or
 * moved, so one of them may no longer be the directory at its path.  Those
 * in use stay open until their put.  The daemon calls it with ns_lock
 * exclusive, and before it drops the kernel's entries after a discard. */
void dircache_forget(struct agentfs *fs);
/* The lower directory of node @dir (node_lower), as layer_open(O_PATH |
 * O_DIRECTORY) gives, kept in fs->ldirs only where the lower watch would see
 * it move (dircache.c).  Caller holds ns_lock.  The fd, for lower_dir_put(),
 * or -errno (-ENOENT when @dir has no lower directory). */
int lower_dir_get(struct agentfs *fs, const struct node *dir);
void lower_dir_put(struct agentfs *fs, int fd);
/* Forget every lower descriptor (watch.c: a directory moved or went). */
void lower_dirs_forget(struct agentfs *fs);
/* fstatat(2) of @name in @dir's lower directory without following a symlink:
 * 0, or -errno.  Caller holds ns_lock. */
int lower_stat_in(struct agentfs *fs, const struct node *dir, const char *name, struct stat *st);

/* --- view.c: deciding what the merged view holds ----------------------- */
struct entry {
	bool exists;
	bool in_upper;
	bool in_lower; /* a visible lower entry backs it */
	bool opaque;
	bool readonly;
	bool whiteout; /* absent because the upper holds a whiteout for it */
	/* The upper entry's markers (origin, redirect, opaque: layout.h) could
	 * not be read: the agent took its owner's read permission (chmod 000),
	 * which reading user.* xattrs needs (xattr(7)).  Its inode number,
	 * lower and opacity are then the ones the node had (view_apply). */
	bool markers_unknown;
	/* An upper file's origin marker (layout.h) was read: @origin holds it.
	 * Clear with markers known: the file has none. */
	bool has_origin;
	/* A directory: st_ino of its lower directory (0: none), and
	 * agentfs.dir_moves read before it was looked at (view_apply). */
	uint64_t lower_dir_ino;
	uint32_t moves;
	mode_t type;
	struct stat st;		 /* the entry's attributes as reported (fixed up) */
	char lower[FS_PATH_MAX]; /* lower path, "" if none */
	struct layout_origin origin;
};
/* Resolve child @name of directory node @dir: upper first, then whiteout,
 * then the lower (policy-filtered).  Caller holds ns_lock.  Returns 0 with
 * e->exists set or cleared, or -errno.  @concealed (optional) is set when a
 * lower entry exists but the policy hides it. */
int view_resolve(struct agentfs *fs, struct node *dir, const char *name, struct entry *e,
		 bool *concealed);
/* view_resolve() with the directory's upper and lower directories already
 * open (-1 when not): listings resolve many names in one directory. */
int view_resolve_at(struct agentfs *fs, struct node *dir, const char *name, struct entry *e,
		    bool *concealed, int dir_ufd, int dir_lfd);
/* The inode number reported for an upper-only entry with attributes @st. */
uint64_t view_upper_ino(struct agentfs *fs, const struct stat *st);
/* Apply an entry to a node (type, lower path, flags, ino).  An entry whose
 * markers could not be read takes the node's inode number, lower and opacity
 * instead, when the node already stands for that upper entry. */
int view_apply(struct agentfs *fs, struct node *n, struct entry *e);
/* After @n was copied up to @path: move its handles still reading the lower
 * file to the upper copy.  ops_file.c. */
void handles_follow_copyup(struct agentfs *fs, struct node *n, const char *path);
/* The person moved @n's lower file to a name the view hides, or where the
 * daemon cannot see it: its open readers of the lower file read no more
 * (ESTALE), as they would read what the person writes to it there. */
void handles_revoke_lower(struct agentfs *fs, struct node *n);
/* @n's file was truncated (and journaled so): its passthrough writers record
 * their file at release even when it holds what their last record said. */
void handles_truncated(struct agentfs *fs, struct node *n);
/* A duplicate of the descriptor of an open handle of @n, of the upper's
 * file if @upper_only (the caller closes it), or -ENOENT.  ops_file.c. */
int handle_node_fd(struct agentfs *fs, struct node *n, bool upper_only);
/* The attributes of the file renamed over that node @n stood for, through
 * the descriptor the rename kept (node.gone_fd); -ESTALE without one.  For
 * GETATTR (and the xattr requests, ops_xattr.c): other requests act on a node
 * by its path, which now names another file.  ops_file.c. */
int gone_fstat(struct agentfs *fs, struct node *n, struct stat *st);
/* Take ns_lock exclusively (ns_wrlock) once no write record of @a's or @b's
 * file that took its path is on its way to the journal (a release hashing a
 * large file takes a while, on another thread): a rename, unlink, link or
 * truncate of it then comes after them in the journal, as it came after them
 * for the agent.  Waits without ns_lock, so the rest of the mount goes on
 * meanwhile; records start only under ns_lock, so none is on its way once
 * it is held.  @a and @b may be NULL; the caller keeps them from being freed
 * (the kernel holds a request's inodes).  ops_file.c. */
void ns_wrlock_settled(struct agentfs *fs, struct node *a, struct node *b);
/* ns_wrlock_settled() for the nodes named @n1 in @d1 and @n2 in @d2 (@d2 may
 * be NULL), whichever they are when ns_lock is taken; held while waited for.
 * ops_file.c. */
void ns_wrlock_settled_names(struct agentfs *fs, struct node *d1, const char *n1, struct node *d2,
			     const char *n2);
/* fstat through any open handle of @n (a file unlinked while open); without
 * one, -ENOENT for a directory and -ESTALE for anything else: the name the kernel found it by now
 * holds another file or none (a rename over it raced the caller's lookup), and the kernel looks the
 * path up again on ESTALE (do_filp_open, vfs_statx and the other path calls'
 * retry_estale, fs/namei.c), as for NFS's stale handles.  ops_file.c. */
int handle_node_fstat(struct agentfs *fs, struct node *n, struct stat *st);
/* Does @e, the entry now at @n's name, stand for another file than @n: of
 * another type, or a lower file with another inode (the person replaced it,
 * as an editor's save does)?  The kernel must then get a new inode for the
 * name, and files open through @n keep the old one. */
bool view_replaced(const struct node *n, const struct entry *e);
/* Current attributes of @n (of the file still open through it, when the
 * person replaced the lower file at its name: view_replaced). */
int view_getattr(struct agentfs *fs, struct node *n, struct stat *st);
/* Fix up attributes before they are reported (ino, link counts, dir sizes). */
void view_fix_attr(struct agentfs *fs, struct stat *st, uint64_t ino, bool upper);
/* Policy decision for a lower path (with symlink rules). */
enum policy_decision view_decide_lower(struct agentfs *fs, const char *lower_path,
				       const struct stat *st);
/* Is the view path @path read-only by policy (for creating new entries)? */
bool view_path_readonly(struct agentfs *fs, const char *path, bool is_dir);
/*
 * Whether view path @path is below the private .git (with one).  The daemon
 * writes there too (objects faulted in, base blobs and their packs:
 * cli/gitpriv.c), through libgit2, by path, with its own rights: a symlink
 * there, as a directory, would lead those writes out of the workspace.  git
 * never makes a symlink in .git, nor moves or links anything into it from
 * the working tree, so neither may the agent (ops_entry.c): no symlink under
 * .git/, no rename or link bringing an entry in from outside it, no FIFO,
 * socket or device.
 */
bool view_path_in_git(const struct agentfs *fs, const char *path);
/* Whether view path @path names a loose object of the private .git
 * (".git/objects/XX/...", XX two hex digits: gitrepository-layout(5)).  git
 * never changes one in place (a new object is written elsewhere and renamed
 * or linked in), and reads each several times per command. */
bool view_path_is_loose_object(const struct agentfs *fs, const char *path);
/* Whether view path @path is a directory of the private .git with a
 * read-only path below it (".git/objects", above objects/info): it may be
 * neither renamed nor exchanged, or that path would move from under its
 * protection. */
bool view_path_holds_readonly(struct agentfs *fs, const char *path);
/*
 * Whether @name is ".git", which no create, mkdir, mknod, symlink, link or
 * rename may make anywhere in the view (EROFS and a deny record).  git in the
 * mount, run by the person, goes into a nested repository it finds there:
 * for a gitlink it runs `git status` in it (a .gitmodules "ignore" the agent
 * writes overrides the private config's diff.ignoreSubmodules), and that
 * reads the nested repository's own config, whose core.fsmonitor would run
 * the agent's command as the person.  A `.git` file ("gitdir: ...") leads
 * there as well.  At the top the private .git stands (with `git: hidden`,
 * nothing may); the lower's nested .git entries are hidden by the default
 * policy.
 */
bool view_name_is_git(const char *name);
/* List the merged directory @dir: @cb is called once per visible entry with
 * its name, S_IFMT type and layer inode number; a non-zero return stops the
 * walk (a negative one is returned).  Caller holds ns_lock. */
typedef int (*view_list_cb)(void *ctx, const char *name, mode_t type, ino_t ino);
int view_list(struct agentfs *fs, struct node *dir, view_list_cb cb, void *ctx);
/* Is the directory node @dir empty in the view? 1 empty, 0 not, -errno.
 * Answers for a directory whatever its mode (rmdir and rename over it do not
 * read it as the agent), so the caller holds ns_lock exclusive. */
int view_dir_empty(struct agentfs *fs, struct node *dir);

/* --- copyup.c ----------------------------------------------------------- */
/* Make sure directory node @n exists in the upper (recursively), made from
 * the lower directory at its lower path with its mode, owner and times.
 * -ENOENT when that path no longer holds a directory (the person moved or
 * removed it since the lookup), rather than a directory the lower does not
 * have. */
int copyup_dir(struct agentfs *fs, struct node *n);
/* What copyup() did: @copied when it copied a regular file now, whose lower
 * version's xxh3-128 is then @hash (the version the upper copy starts as,
 * unless it was copied empty: copyup_prep.empty). */
struct copyup_result {
	bool copied;
	XXH128_hash_t hash;
};
/* Copy a lower file/symlink node into the upper (no-op if already there).
 * Records JOP_COPYUP.  Caller holds ns_lock exclusive.  @res may be NULL. */
int copyup(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_result *res);
/* A regular file's copy made before taking ns_lock (copyup_prepare), so
 * that a large one holds no lookup up while its bytes are copied: its name
 * in work/ ("" none), the lower path and the lower file's fstat it copies,
 * and what copy_data found.  @empty, the caller's: it truncates the file to
 * 0 at once (open(2) with O_TRUNC, truncate(2) to 0), so the copy gets the
 * lower file's metadata and origin but none of its bytes; copyup_with() then
 * copies so whether or not a copy was prepared. */
struct copyup_prep {
	bool empty;
	char tmp[64];
	char *lower;
	struct stat st;
	XXH128_hash_t hash;
	bool lower_same;
	struct timespec read_at;
};
/* Copy @n's lower file into work/ (with no bytes if @empty) if @n is a
 * regular file still only in the lower; @p is set up whatever happens.
 * Takes ns_lock shared for a moment; the copy runs without it, the reader
 * role passed on first (fs_loop_step_aside).  Best effort: nothing prepared
 * leaves copyup_with() to copy. */
void copyup_prepare(struct agentfs *fs, struct node *n, bool empty, struct copyup_prep *p);
/* copyup() that renames @prep's copy into place instead of copying, when it
 * is of what the lower holds at @n's lower path now (the same file, its
 * size, mtime and ctime unchanged); then it takes the copy (@prep->tmp
 * emptied).  @prep may be NULL. */
int copyup_with(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_result *res,
		struct copyup_prep *prep);
/* copyup_with() for an open: when it copies a regular file now, *@fdp is a
 * descriptor of the copy (O_RDWR, at offset 0), opened before the copy is
 * renamed into place, so that no open can fail once the view shows it (an
 * empty copy, copyup_prep.empty, must not show unless the open that truncates
 * it succeeds); else -1, and the caller opens the upper file itself. */
int copyup_open(struct agentfs *fs, struct node *n, fuse_req_t req, struct copyup_result *res,
		struct copyup_prep *prep, int *fdp);
/* Remove @p's copy if no copyup_with() took it; free what it holds (@p->empty
 * stays). */
void copyup_prep_drop(struct agentfs *fs, struct copyup_prep *p);
struct layout_origin;
/* Give the new upper file open as @fd, which replaces the visible lower file
 * @lpath (an editor's save by rename, a re-create after unlink), that file as
 * its origin, so export can still tell the person's later changes from the
 * agent's; with its inode number if @with_ino (see origin_of_lower).  Keeps
 * an origin the file already has.  A new origin names a base blob the
 * agent's git will want, as a copy-up does (fs_config.git_copied_up). */
int origin_from_lower(struct agentfs *fs, int fd, const char *lpath, bool with_ino);
/* The origin regular lower file @lpath gives a file that replaces it: its
 * hash, path and, if @with_ino, its inode number, which the new file then
 * reports; without, 0 (the new file reports its own: the replaced one lives
 * on, open or under another name, and two live files must not share one).
 * 0 and *o filled, or -errno (-EINVAL: not a regular file). */
int origin_of_lower(struct agentfs *fs, const char *lpath, bool with_ino, struct layout_origin *o);
/* Does the file that @n (may be NULL) stands for live on after its name
 * goes: open through a handle, or @st (its attributes) counting another
 * link?  Its inode number then stays its own (origin_of_lower). */
bool file_lives_on(struct agentfs *fs, struct node *n, const struct stat *st);
/* The origin of regular upper file @name in directory @dirfd: 1 and *o
 * filled, 0 when it has none (a file the agent made) or cannot be opened. */
int origin_of_upper(int dirfd, const char *name, struct layout_origin *o);
/* Remove everything inside an upper directory that is empty in the view
 * (whiteouts), then the directory itself, whatever the directory's own mode
 * (as rmdir(2)).  0 or -errno (-ENOTEMPTY when it holds a visible entry). */
int upper_rmdir(struct agentfs *fs, int parentfd, const char *name);
/*
 * The daemon's own way past an upper directory's mode.  The view's modes are
 * the agent's (chmod 555, 300 or 000 of a directory), checked by the kernel
 * against the agent (default_permissions).  What the daemon then does in the
 * upper on the agent's behalf (copy a file up into such a directory, pin a
 * renamed directory's lower origin on it, clear the whiteouts of an empty
 * one) is bound by the same mode when the daemon is not root: EACCES where
 * the same call on a plain directory passes.  So, on EACCES, the owner's rwx
 * is added to upper directory @fd (any descriptor, O_PATH too) for that one
 * step, with ns_lock held exclusive, and put back after.
 *
 * upper_dir_grant() returns the mode to hand to upper_dir_restore() (>= 0),
 * or -errno when nothing was changed (-EACCES: the owner has rwx already, so
 * the refusal was not the mode's; -EPERM: not the owner).
 * upper_dir_restore() does nothing for a negative @mode.
 */
int upper_dir_grant(int fd);
void upper_dir_restore(int fd, int mode);

/* --- watch.c: invalidation when the lower changes ------------------------ */
int watch_start(struct agentfs *fs);
void watch_stop(struct agentfs *fs);
/* Watch the lower directory of @dir (open as @lower_dirfd) if not yet. */
void watch_dir(struct agentfs *fs, struct node *dir, int lower_dirfd);
/* Drop @n's watch; table_lock held (the node is being freed). */
void watch_forget(struct agentfs *fs, struct node *n);
/* Timeout for entries under @dir. */
double entry_timeout(struct agentfs *fs, const struct node *dir);
/* Watch @dir's lower directory before answering about its children. */
void watch_dir_lazy(struct agentfs *fs, struct node *dir);

/* --- loop.c -------------------------------------------------------------- */
/* Serve fs->se until the session ends (unmount, or a signal handled by
 * fuse_set_signal_handlers) with up to @max_threads workers, one of them
 * reading /dev/fuse at a time (see loop.c).  Once its set-up succeeded it
 * signals *@ready_fd (fs_signal_ready); if the set-up fails it returns with
 * *@ready_fd untouched.  Returns 0 or a negative errno (the set-up's, or from
 * reading /dev/fuse). */
int fs_loop(struct agentfs *fs, unsigned max_threads, int *ready_fd);
/* fs.c: tell the process waiting on @fd (fs_config.ready_fd) that the mount
 * serves: one byte, then close; *@fd becomes -1.  Nothing if it is < 0. */
void fs_signal_ready(int *fd);
/* Whether the calling thread is the reader answering a request itself while
 * no other worker answers any: then no other request of the kernel is being
 * answered, and none will be until this one is.  An answer that waits for
 * the kernel (a notification that locks pages, whose READ may still be
 * queued) is safe when no file of that inode is open; see op_open. */
bool fs_loop_alone(const struct agentfs *fs);
/* The request the calling thread answers takes longer than its kind said
 * (an open for writing of a file larger than its size last seen): if the
 * thread is the reader answering it itself, the reader role passes to
 * another worker now, as for a request handed off from the start, so that
 * the kernel's other requests are read meanwhile.  No-op otherwise. */
void fs_loop_step_aside(void);
/* Whether the request the calling thread answers asks the daemon to clear
 * the file's set-user-ID and set-group-ID bits (FUSE_OPEN_KILL_SUIDGID of an
 * OPEN, FUSE_WRITE_KILL_SUIDGID of a WRITE: the kernel sets them for a caller
 * without CAP_FSETID once INIT said FUSE_HANDLE_KILLPRIV_V2, include/uapi/
 * linux/fuse.h; libfuse 3.14 passes neither on): 1 or 0, or -1 when the
 * request is not in memory (a large WRITE left in libfuse's pipe). */
int fs_request_kills_suidgid(void);
/* A request's effects are complete (see agentfs.epoch); called before a reply
 * that does not go through fuse_session_process_buf's return, e.g. op_read's
 * spliced one. */
static inline void fs_publish(struct agentfs *fs)
{
	__atomic_fetch_add(&fs->epoch, 1, __ATOMIC_RELEASE);
}
/* ops_file.c: finish the oldest release op_release answered early, or all
 * of them with @all; whether there was one.  The reader's, from fs/loop.c. */
bool fs_release_deferred(struct agentfs *fs, bool all);
/* ops_file.c: journal the writes of open handles made since their last
 * record, so the journal describes the upper as it is now: when a reader
 * asks for the journal (flush_for_reader: verify, log) and when the session
 * ends (a signal stops the daemon with files open, and then the kernel sends
 * no RELEASE).  Each such handle's release records only later writes.  Safe
 * while requests are answered.  Returns how many records it made. */
size_t fs_record_pending_writes(struct agentfs *fs);
/* ops_file.c: whether the release of handle @fh is a few system calls: its
 * file is small enough to hash at once if the journal has no hash of it yet
 * (at most 1 MiB at open), and it wrote nothing or the version it leaves is
 * at most 64 KiB (one fstat(2) here to know). */
bool handle_release_quick(uint64_t fh);
/* ops_file.c: whether handle @fh wrote since its last journal record. */
bool handle_wrote(uint64_t fh);

/* --- hashcache.c --------------------------------------------------------- */
/* A table of 131,072 versions (16,384 sets of 8), 8 MiB; NULL without
 * memory. */
struct hashcache *hashcache_new(void);
/* Start faulting the whole table in (madvise(2) MADV_POPULATE_WRITE, Linux
 * 5.14; nothing where the kernel lacks it), so that no request pays for it: a
 * slot first touched by a request costs a read fault and a copy-on-write
 * fault with a TLB shootdown, ~24 us a page measured on the 2-vCPU VM of
 * tests/bench/RESULTS.md, and hash slots are spread over every page.  A
 * thread of its own does it in pieces with pauses, off the mount's path
 * (hashcache.c says why); ~2 ms of CPU.  The contents are unchanged: safe
 * while other threads use the table.  Once per table; without a thread,
 * nothing. */
void hashcache_prefault(struct hashcache *hc);
/* The same, started by the table's first use (hashcache_put or a lookup), not
 * now: a mount whose agent only walks metadata (find, ls -l) opens no file
 * and keeps the table's 8 MiB out of memory (the daemon of a walk of 78k
 * files: 43 -> 35 MiB resident), and the mount itself does not share the
 * CPU with the prefault.  The first file opened (git's own reads of .git
 * included) brings it in. */
void hashcache_prefault_on_use(struct hashcache *hc);
/* Stops and joins the prefault thread, then unmaps the table. */
void hashcache_free(struct hashcache *hc);
/* The length of a table's mapping, in bytes (from its first byte). */
size_t hashcache_size(void);
/* Files larger than this (st_size, bytes) are not hashed by the daemon:
 * -EFBIG, and their journal records carry no hash.  The size is the file's
 * length, holes included, which hash as the zeros they read as: a sparse
 * 8 TiB file from `truncate -s` would hold the daemon for minutes; 3 GiB of
 * data hash in about a second on the machine of tests/bench/RESULTS.md. */
#define HASHCACHE_MAX_BYTES (4LL << 30)
/* xxh3-128 of the file version open as @fd, computed once per (dev, ino, size,
 * mtime, ctime) unless that version is racily clean (hashcache_put); -EFBIG
 * over HASHCACHE_MAX_BYTES. */
int hashcache_get(struct hashcache *hc, int fd, XXH128_hash_t *out);
/* The cached hash of the version @st describes, into @out: true if there is
 * one.  Never hashes. */
bool hashcache_lookup(struct hashcache *hc, const struct stat *st, XXH128_hash_t *out);
/* The same, ignoring any cached entry: for a version just written.  File
 * timestamps come from the kernel's coarse clock (a few ms), so two writes of
 * the same size within one tick can leave (size, mtime, ctime) as they were,
 * and the entry of the version before would match the new one; since Linux
 * 6.13 (multigrain timestamps) the fstat here makes the next change's stamps
 * fine-grained, before that it does not (Debian 12 runs 6.1).  The fresh
 * hash replaces that entry, or, for a version racily clean (hashcache_put),
 * drops it.  Returns 0 or -errno. */
int hashcache_refresh(struct hashcache *hc, int fd, XXH128_hash_t *out);
/* The same with @st, an fstat of @fd taken moments before (a release's, in
 * handle_release_quick): one system call less. */
int hashcache_refresh_st(struct hashcache *hc, int fd, const struct stat *st, XXH128_hash_t *out);
/* Remember a hash computed elsewhere for the version described by @st, whose
 * content was read starting at @read_at (hashcache_clock()).  Not remembered
 * when @st's ctime is not earlier than @read_at: a change in the same tick of
 * the clock that stamps files (coarse before Linux 6.13) could keep size and
 * stamps, and the entry would describe the next version too (git's "racily
 * clean" rule, Documentation/technical/racy-git.txt); an entry already under
 * that key is dropped.  Such versions are hashed again when next asked for. */
void hashcache_put(struct hashcache *hc, const struct stat *st, XXH128_hash_t h,
		   const struct timespec *read_at);
/* The rule hashcache_put applies: whether @st's version is racily clean for
 * content read from @read_at on (its ctime is not earlier; for a ctime of
 * whole seconds, not 2 s earlier: FAT's granularity). */
bool hashcache_racy(const struct stat *st, const struct timespec *read_at);
/* The clock file stamps come from before Linux 6.13 (CLOCK_REALTIME_COARSE,
 * what the kernel's current_time() reads): take it before reading content
 * whose hash goes to hashcache_put(). */
struct timespec hashcache_clock(void);

/* A new entry @name in @dfd (or the file @fd when >= 0) was created with
 * @mode under the daemon's umask: give it exactly @mode. */
static inline void fix_mode(struct agentfs *fs, int dfd, const char *name, int fd, mode_t mode)
{
	if (!(mode & fs->umask & 0777))
		return;
	if (fd >= 0)
		(void)!fchmod(fd, mode & 07777);
	else
		(void)!fchmodat(dfd, name, mode & 07777, 0);
}

/* The group a new entry of the upper directory @dfd should have when the
 * daemon, as root, gives it to the caller (group @caller): the group the
 * upper's file system gave it (@got) where that is the directory's (a
 * set-group-ID directory, or a file system mounted with grpid: inode_init_owner
 * in fs/inode.c, mount(8) for ext4's grpid), else @caller.  Reads @dfd's mode
 * only when @got is the daemon's own group and not the caller's. */
gid_t new_entry_gid(int dfd, gid_t got, gid_t caller);
/* @mode (type and permission bits) of a new entry given group @gid, with
 * set-group-ID dropped as inode_init_owner and mode_strip_sgid do (fs/inode.c):
 * a file that group members may execute, in a group its non-root caller is
 * not in (fuse_req_getgroups).  Linux 6.0 and later strip it before the
 * request; older kernels leave it to the file system. */
mode_t new_entry_setid(fuse_req_t req, mode_t mode, gid_t gid);

/* --- events (ops_*.c) --------------------------------------------------- */
void fs_record(struct agentfs *fs, fuse_req_t req, enum journal_op op, int result, const char *path,
	       const char *path2);
/* Journal @ev with @req's uid and pid (the calling thread's id; the journal
 * records its process), or with ev->pid as given when ev->pid_start is set
 * (the process journal_process_start() captured). */
void fs_record_ev(struct agentfs *fs, fuse_req_t req, struct journal_event *ev);
/* Clear the set-user-ID bit of the regular file at @fd (with @leaf: @leaf in
 * the directory @fd, not followed), and its set-group-ID bit where group
 * execute is set, as the kernel does on a write, truncate or chown by a
 * caller without CAP_FSETID (should_remove_suid, fs/inode.c; the daemon's
 * job under FUSE_HANDLE_KILLPRIV_V2), journaled under view path @path.
 * Returns whether the mode changed; a reply that carries no attributes must
 * then have the kernel drop the ones it holds (fuse_lowlevel_notify_inval_inode
 * with a negative offset: attributes only, no page is waited for).  Anything
 * else, or a failure, leaves the file as it is. */
bool fs_kill_suidgid(struct agentfs *fs, fuse_req_t req, int fd, const char *leaf,
		     const char *path);

extern const struct fuse_lowlevel_ops fs_ops;
/* Attribute cache timeout for an entry, seconds. */
double attr_timeout(struct agentfs *fs, const struct node *n, const struct stat *st);

/* ops_entry.c */
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_access(fuse_req_t req, fuse_ino_t ino, int mask);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		struct fuse_file_info *fi);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
/* ops_dir.c */
void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
/* ops_file.c */
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
		  struct fuse_file_info *fi);
void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		  struct fuse_file_info *fi);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			struct fuse_file_info *fi_out, size_t len, int flags);
/* ops_xattr.c */
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		 int flags);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

#endif
