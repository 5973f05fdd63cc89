/*
 * ops_file.c - open files: reads from whichever layer holds the file, writes
 * only ever to the upper (copy-up happens at the first open for writing).
 *
 * Each handle remembers who opened it: writes are journaled under the opener
 * (with a writeback cache the kernel's flusher sends them), with the hash of
 * the version before and after.  Reads are journaled at release with the
 * bytes this daemon served and the hash of the version that was opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/internal.h"
#include "fs/layout.h"

/* Open flags passed on to the layer.  The kernel's own bits (__FMODE_EXEC
 * on an exec, FMODE_NONOTIFY, ...) would make openat2 fail with EINVAL, and
 * O_DIRECT would demand aligned buffers the daemon does not use. */
#define OPEN_PASS (O_ACCMODE | O_APPEND | O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME)

/* A file this small is hashed at its release in microseconds (fs/loop.c). */
#define HANDLE_SMALL (1 << 20)
/* The largest written file whose release is still quick: hashed with one
 * read (layout_hash_fd's one-shot case). */
#define HANDLE_QUICK_WRITTEN (64 << 10)
/* The largest lower file whose content an open puts in the page cache
 * (store_small): one read, on the stack of a worker thread. */
#define OPEN_STORE_MAX (64 << 10)
/* How far a writer gets ahead of the upper file's write-out (write_behind). */
#define WRITE_BEHIND (16 << 20)

struct handle {
	int fd;
	/* fd is in the upper: the only kind that may change.  A reader's turns
	 * true once, under table_lock, when a copy-up moves it to the upper
	 * copy (handles_follow_copyup); read without the lock by handle_on_upper(). */
	bool upper;
	bool bulk;  /* counted in agentfs.bulk_writers (op_write_buf) */
	bool wrote; /* written since the last journal record */
	pid_t pid;
	uint64_t pid_start; /* journal_process_start() at open */
	uid_t uid;
	struct node *node;
	uint64_t rbytes;
	uint64_t wbytes;
	bool small; /* at most 1 MiB at open (handle_release_quick) */
	/* A read-only open of a loose object of the private .git: its pages
	 * are kept by version (keep_version); of at most OPEN_STORE_MAX
	 * bytes, no passthrough either (handle_pick_io). */
	bool loose_object, small_object;
	/* handle_release_quick's fstat of a written file, for its release's
	 * record (record_write): taken by the reader thread, which hands the
	 * release on after it or finishes it itself. */
	bool quick_ok;
	struct stat quick_st;
	bool created; /* made by op_create: empty at open */
	/* A lower file the person then moved to a name the view hides, or out
	 * of its sight (handles_revoke_lower): reads answer ESTALE.  Atomic. */
	bool revoked;
	off_t behind; /* written out up to here (write_behind) */
	bool has_before;
	XXH128_hash_t before;
	char *path;			    /* view path at open, for the journal */
	struct handle *next;		    /* the node's other open handles */
	struct handle *all_prev, *all_next; /* agentfs.open_handles */
	/* A release answered but not yet done (op_release): */
	bool journal_read;	      /* record the read */
	struct handle *next_deferred; /* agentfs.deferred's next */
	/* Served by passthrough (passthrough.c): the kernel reads and writes
	 * the upper file itself, and no READ or WRITE reaches the daemon. */
	bool pt;
	bool pt_write; /* ...and open for writing: changes are found by content */
	/* Answered FOPEN_DIRECT_IO: its writes reach op_write_buf without the
	 * kernel's file_remove_privs, whose SETATTR clears set-ID bits
	 * (op_setattr), only with FUSE_WRITE_KILL_SUIDGID. */
	bool direct;
	/* What the journal last said this writer's file holds: the version at
	 * open, then the hash of each record made for it (pt_base_ok: known).
	 * Under table_lock once linked. */
	bool pt_base_ok;
	XXH128_hash_t pt_base;
	/* fs_record_pending_writes' hash of the file, taken under table_lock
	 * and recorded after it. */
	bool pt_now_ok;
	XXH128_hash_t pt_now;
};

/* Hash and record under the node's lock: two handles of one file released
 * concurrently must reach the journal in the order their hashes were taken,
 * or the last record would not describe the file. */
static pthread_mutex_t *record_lock(struct agentfs *fs, struct node *n)
{
	return &fs->record_locks[((uintptr_t)n >> 6) % FS_RECORD_LOCKS];
}

/* What the journal last said of @n's file may no longer be so. */
static void pt_last_forget(struct agentfs *fs, struct node *n)
{
	pthread_mutex_t *lock = record_lock(fs, n);
	pthread_mutex_lock(lock);
	n->pt_last_ok = false;
	pthread_mutex_unlock(lock);
}

/*
 * How the kernel serves @h's reads and writes: through the daemon (returns 0)
 * or by passthrough to @h's upper file (returns the backing id to answer the
 * open with).  The kernel takes one mode per inode while any file of it is
 * open, and one backing file (fs/fuse/iomode.c: an open in the other mode or
 * with another backing fails with EIO), so the first open of a node decides
 * and the others follow it until the last is released.  Only upper files:
 * a lower one may be copied up under an open reader (handles_follow_copyup),
 * which the kernel could not follow.  An O_DIRECT open does not start
 * passthrough, as the backing file would take it with the disk's alignment
 * rules where the daemon's reads and writes have none; one that follows
 * passthrough sets *@direct: the kernel then sends its reads and writes to
 * the daemon (FOPEN_DIRECT_IO overrides FOPEN_PASSTHROUGH, fs/fuse/file.c)
 * and only its mmap uses the backing file.  Nor a reader of a small loose
 * object of the private .git: the kernel marks the inode's atime stale after
 * each read or mmap through the backing file (fs/fuse/passthrough.c,
 * fuse_file_accessed), so git's fstat(2) at each of its next opens of the
 * object (three per blob in a `git diff`) cost a GETATTR; kept in the page
 * cache instead (op_open), the object costs its opens alone.  Caller holds
 * table_lock; @h is not linked yet.
 */
static uint32_t handle_pick_io(struct agentfs *fs, struct handle *h, int oflags, bool writing,
			       bool *direct)
{
	struct node *n = h->node;
	uint32_t id = n->pt_id;
	*direct = id && (oflags & O_DIRECT);
	if (!id) {
		if (n->handles || !h->upper || (oflags & O_DIRECT) || !passthrough_usable(fs))
			return 0;
		if (!writing && h->small_object)
			return 0;
		if (!(id = passthrough_backing_open(fs, h->fd)))
			return 0;
		n->pt_id = id;
		n->pt_used = true;
	}
	if (!n->handles)
		pt_last_forget(fs, n); /* a new run of opens: a discard, a copy-up since */
	n->pt_handles++;
	h->pt = true;
	struct stat st;
	if (writing) {
		h->pt_write = true;
		if (h->has_before) {
			h->pt_base = h->before;
			h->pt_base_ok = true;
		} else if (h->created || (fstat(h->fd, &st) == 0 && st.st_size == 0)) {
			h->pt_base = XXH3_128bits("", 0); /* created, or truncated at open */
			h->pt_base_ok = true;
		}
	}
	return id;
}

/* Handles hang off their node so an unlinked but open file can still be
 * stat'ed (fstat(2) arrives as a getattr without a handle).  Returns the
 * backing id to answer the open with, and in *@direct whether the open is
 * to be answered FOPEN_DIRECT_IO (handle_pick_io). */
static uint32_t handle_link(struct agentfs *fs, struct handle *h, int oflags, bool writing,
			    bool *direct)
{
	pthread_mutex_lock(&fs->table_lock);
	*direct = false;
	uint32_t id = fs->pt_attached ? handle_pick_io(fs, h, oflags, writing, direct) : 0;
	h->next = h->node->handles;
	h->node->handles = h;
	h->all_prev = NULL;
	h->all_next = fs->open_handles;
	if (fs->open_handles)
		fs->open_handles->all_prev = h;
	fs->open_handles = h;
	pthread_mutex_unlock(&fs->table_lock);
	return id;
}

static void handle_unlink(struct agentfs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->table_lock);
	for (struct handle **p = (struct handle **)&h->node->handles; *p; p = &(*p)->next) {
		if (*p == h) {
			*p = h->next;
			break;
		}
	}
	if (__atomic_load_n(&h->bulk, __ATOMIC_RELAXED))
		__atomic_sub_fetch(&fs->bulk_writers, 1, __ATOMIC_RELAXED);
	if (h->pt && --h->node->pt_handles == 0) {
		passthrough_backing_close(fs, h->node->pt_id);
		h->node->pt_id = 0;
	}
	if (h->all_prev)
		h->all_prev->all_next = h->all_next;
	else
		fs->open_handles = h->all_next;
	if (h->all_next)
		h->all_next->all_prev = h->all_prev;
	pthread_mutex_unlock(&fs->table_lock);
}

void handles_follow_copyup(struct agentfs *fs, struct node *n, const char *path)
{
	/* The kernel keeps one size and one page cache per inode: a reader
	 * still on the lower file would read past its end once the agent's
	 * writes grow the upper one (zeros, a torn file).  The bytes are the
	 * same at this instant (or, for a copy made empty, about to be cut to
	 * nothing by the caller, as the file of every name would be), so the
	 * readers move to the upper copy: dup2() swaps the file under the
	 * handle's descriptor atomically. */
	pthread_mutex_lock(&fs->table_lock);
	for (struct handle *h = n->handles; h; h = h->next) {
		if (h->upper)
			continue;
		int fd = upper_open(fs, path, O_RDONLY, 0);
		if (fd < 0)
			continue;
		if (dup2(fd, h->fd) >= 0)
			__atomic_store_n(&h->upper, true, __ATOMIC_RELEASE);
		close(fd);
	}
	pthread_mutex_unlock(&fs->table_lock);
}

void handles_revoke_lower(struct agentfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	for (struct handle *h = n->handles; h; h = h->next)
		if (!h->upper)
			__atomic_store_n(&h->revoked, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&fs->table_lock);
}

void handles_truncated(struct agentfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	for (struct handle *h = n->handles; h; h = h->next)
		if (h->pt_write)
			__atomic_store_n(&h->wrote, true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&fs->table_lock);
	pt_last_forget(fs, n);
}

int gone_fstat(struct agentfs *fs, struct node *n, struct stat *st)
{
	if (n->gone_fd < 0)
		return -ESTALE;
	if (fstat(n->gone_fd, st) < 0)
		return -errno;
	view_fix_attr(fs, st, n->ino, true);
	return 0; /* st_nlink: the upper file's other names, all in the view */
}

int handle_node_fd(struct agentfs *fs, struct node *n, bool upper_only)
{
	int fd = -ENOENT;
	pthread_mutex_lock(&fs->table_lock);
	for (struct handle *h = n->handles; h; h = h->next) {
		if (h->upper || (!upper_only && !__atomic_load_n(&h->revoked, __ATOMIC_ACQUIRE))) {
			fd = dup(h->fd);
			if (fd < 0)
				fd = -errno;
			break;
		}
	}
	pthread_mutex_unlock(&fs->table_lock);
	return fd;
}

int handle_node_fstat(struct agentfs *fs, struct node *n, struct stat *st)
{
	int fd = -1;
	bool upper = false;
	pthread_mutex_lock(&fs->table_lock);
	struct handle *h = n->handles;
	if (h) {
		fd = dup(h->fd);
		upper = h->upper;
	}
	pthread_mutex_unlock(&fs->table_lock);
	if (fd < 0)
		return S_ISDIR(n->type) ? -ENOENT : -ESTALE;
	int r = fstat(fd, st) < 0 ? -errno : 0;
	close(fd);
	if (r == 0) {
		view_fix_attr(fs, st, n->ino, upper);
		/* An upper file's links are its names in the view (a hard link
		 * made there keeps it alive); a lower file has none left. */
		if (!upper)
			st->st_nlink = 0;
	}
	return r;
}

static struct handle *handle_of(struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

/* h->upper without table_lock.  Once true, h->fd names the upper copy (the
 * dup2() before the store).  While false, it may name either: the copy has
 * the lower file's attributes at that instant, and its bytes (or none, a
 * copy made empty for a truncate to 0). */
static bool handle_on_upper(const struct handle *h)
{
	return __atomic_load_n(&h->upper, __ATOMIC_ACQUIRE);
}

int handle_upper_fd(struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	return h && handle_on_upper(h) ? h->fd : -1;
}

int handle_fstat(struct agentfs *fs, struct fuse_file_info *fi, struct node *n, struct stat *st)
{
	struct handle *h = handle_of(fi);
	bool upper = handle_on_upper(h);
	if (fstat(h->fd, st) < 0)
		return -errno;
	view_fix_attr(fs, st, n->ino, upper);
	return 0;
}

static struct handle *handle_new(struct agentfs *fs, fuse_req_t req, struct node *n, int fd,
				 bool upper, const char *path)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->path = strdup(path);
	if (!h->path) {
		free(h);
		return NULL;
	}
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	h->fd = fd;
	h->upper = upper;
	h->pid = ctx->pid;
	h->uid = ctx->uid;
	/* Name the opener now: the release that journals this handle comes
	 * after close(), often after the process exited.  h->pid becomes the
	 * process's id (ctx->pid is the calling thread's). */
	h->pid_start = journal_process_start(fs->journal, &h->pid);
	h->node = n;
	return h;
}

/* Open the upper file for writing, preferring O_RDWR so the journal can hash
 * what was written through a write-only handle. */
static int open_upper_rw(struct agentfs *fs, const char *path, int flags)
{
	int clean = flags & OPEN_PASS & ~O_ACCMODE;
	int fd = upper_open(fs, path, clean | O_RDWR, 0);
	if (fd == -EACCES && (flags & O_ACCMODE) == O_WRONLY)
		fd = upper_open(fs, path, clean | O_WRONLY, 0);
	return fd;
}

/* Make the descriptor @fd of a copy just made (copyup_open: O_RDWR) the one
 * an open with @flags asks for: O_APPEND and O_NONBLOCK by fcntl(2); not
 * O_SYNC, O_DSYNC or O_NOATIME, which F_SETFL does not set (open(2)): -1 then,
 * and the caller opens the file again. */
static int adopt_copy(int fd, int flags)
{
	if (flags & (O_SYNC | O_DSYNC | O_NOATIME))
		return -1;
	int want = flags & (O_APPEND | O_NONBLOCK);
	return want ? fcntl(fd, F_SETFL, want) : 0;
}

/* A file version's stamp for keep_cache (node.cache_ver): a hash of its
 * inode, size, mtime and ctime; never 0, which keep_version stores for "no
 * version's pages are known to be the only ones cached". */
static uint64_t file_version(const struct stat *st)
{
	struct {
		uint64_t ino, size;
		int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
	} k = {(uint64_t)st->st_ino,	    (uint64_t)st->st_size,
	       (int64_t)st->st_mtim.tv_sec, (int64_t)st->st_mtim.tv_nsec,
	       (int64_t)st->st_ctim.tv_sec, (int64_t)st->st_ctim.tv_nsec};
	uint64_t v = XXH3_64bits(&k, sizeof(k));
	return v ? v : 1;
}

/*
 * The first open of a version of a small lower file: put its whole content
 * in the kernel's page cache for inode @ino before the open is answered
 * (FUSE_NOTIFY_STORE: fuse_lowlevel_notify_store(3), fs/fuse/dev.c), so the
 * caller's reads find it there.  Without it each such file costs a READ
 * round trip, and the kernel marks the inode's atime stale after a READ
 * (fs/fuse/file.c, fuse_invalidate_atime), so the next fstat(2) of the file
 * costs a GETATTR as well: a first walk of a tree with grep or cat paid two
 * round trips per file besides the open.  The daemon reads the file for the
 * journal's hash anyway; the hash of the stored bytes goes to the hash cache.
 *
 * The store locks each page it fills; a page is also locked while its READ
 * waits in the kernel's queue, and the reader that would read that READ may
 * be this thread.  So it stores only when no other file of the inode is open
 * (@h is the node's only handle: any READ of the inode comes through an open
 * file, whose handle stays until its RELEASE, which follows its last READ) and
 * no other request is being answered that could open one (fs_loop_alone).
 * Returns whether the content was stored: then the open keeps the cache.
 */
static bool store_small(struct agentfs *fs, fuse_ino_t ino, struct handle *h, const struct stat *st)
{
	if (st->st_size <= 0 || st->st_size > OPEN_STORE_MAX || !fs_loop_alone(fs))
		return false;
	pthread_mutex_lock(&fs->table_lock);
	bool only = h->node->handles == h && !h->next;
	pthread_mutex_unlock(&fs->table_lock);
	if (!only)
		return false;
	char buf[OPEN_STORE_MAX + 1];
	struct timespec read_at = hashcache_clock();
	ssize_t n = pread(h->fd, buf, sizeof(buf), 0);
	if (n != st->st_size)
		return false; /* changed since the fstat */
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT((size_t)n);
	bv.buf[0].mem = buf;
	if (fuse_lowlevel_notify_store(fs->se, ino, 0, &bv, 0) != 0)
		return false;
	/* No second fstat as in hashcache_get: a change after @st's tick moved
	 * its stamps on, and one within it is what hashcache_put refuses. */
	if (fs->journal)
		hashcache_put(fs->hashes, st, XXH3_128bits(buf, (size_t)n), &read_at);
	__atomic_fetch_add(&h->rbytes, (uint64_t)n, __ATOMIC_RELAXED);
	return true;
}

/*
 * Whether the open of version @st by @h (inode @ino) keeps the kernel's page
 * cache of the node: when the node's last open was of the same version, or
 * when this one stored the whole content (store_small).  Otherwise the open
 * drops the pages.  A file still open on an older version may read it into
 * the cache again after that drop: then no version is taken as known, and
 * the next open drops the pages again, until one alone stores them or finds
 * the version it last saw with no older reader in between.
 */
static bool keep_version(struct agentfs *fs, fuse_ino_t ino, struct handle *h,
			 const struct stat *st)
{
	struct node *n = h->node;
	uint64_t ver = file_version(st);
	if (__atomic_exchange_n(&n->cache_ver, ver, __ATOMIC_RELAXED) == ver ||
	    store_small(fs, ino, h, st))
		return true;
	pthread_mutex_lock(&fs->table_lock);
	bool alone = n->handles == h && !h->next;
	pthread_mutex_unlock(&fs->table_lock);
	if (!alone)
		__atomic_store_n(&n->cache_ver, 0, __ATOMIC_RELAXED);
	return false;
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	int acc = fi->flags & O_ACCMODE;
	bool writing = acc != O_RDONLY || (fi->flags & O_TRUNC);
	bool killed = false; /* set-ID bits cleared by the open (O_TRUNC) */
	char path[FS_PATH_MAX];
	struct stat st;
	int r, fd = -1;
	struct handle *h = NULL;

	/* A large file's bytes are copied before the lock: lookups and the
	 * like go on meanwhile (copyup_with takes the copy if it still fits).
	 * One the open truncates gets none (only the lower version's hash, for
	 * its origin and the journal). */
	bool trunc = writing && (fi->flags & O_TRUNC);
	struct copyup_prep prep = {.empty = trunc};
	bool prepared = false;
	if (writing && __atomic_load_n(&n->size_seen, __ATOMIC_RELAXED) > FS_INLINE_IO) {
		copyup_prepare(fs, n, trunc, &prep);
		prepared = true;
	}
lock:
	if (writing)
		ns_wrlock(fs);
	else
		pthread_rwlock_rdlock(&fs->ns_lock);
	/* A write needs the node's current state for copy-up; a read trusts
	 * the lookup that gave the kernel this inode (watch.c keeps it true).
	 * A node without a name (renamed over, unlinked) is stale: the kernel
	 * then looks its path up again (handle_node_fstat), except that one
	 * renamed over is read through what the rename kept (op_rename). */
	bool named = !node_unnamed(fs, n);
	if (!named)
		r = !writing && n->gone_fd >= 0 ? 0 : -ESTALE;
	else
		r = writing ? view_getattr(fs, n, &st) : 0;
	if (r == 0 && writing && named && S_ISREG(st.st_mode) && st.st_size > FS_INLINE_IO) {
		/* Larger than the size last seen said (the person grew the
		 * lower file, a write the daemon did not see): its copy-up or
		 * hash is a long request, answered beside the others. */
		fs_loop_step_aside();
		if (!prepared && !n->upper) {
			pthread_rwlock_unlock(&fs->ns_lock);
			copyup_prepare(fs, n, trunc, &prep);
			prepared = true;
			goto lock;
		}
	}
	if (r == 0 && S_ISDIR(n->type))
		r = -EISDIR;
	if (r == 0)
		r = node_path(n, path, sizeof(path));
	if (r < 0)
		goto fail;
	if (!named) {
		char self[64];
		snprintf(self, sizeof(self), "/proc/self/fd/%d", n->gone_fd);
		fd = open(self, (fi->flags & OPEN_PASS) | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			goto fail;
		}
		h = handle_new(fs, req, n, fd, true, path);
		if (!h) {
			r = -ENOMEM;
			goto fail;
		}
	} else if (writing) {
		if (n->readonly) {
			struct journal_event ev = {.op = JOP_DENY,
						   .result = -EROFS,
						   .path = path,
						   .flags = (uint32_t)fi->flags,
						   .detail = "open for writing"};
			fs_record_ev(fs, req, &ev);
			r = -EROFS;
			goto fail;
		}
		struct copyup_result cu;
		for (int again = 1;; again--) {
			r = copyup_open(fs, n, req, &cu, &prep, &fd);
			if (r == 0 && fd >= 0 && adopt_copy(fd, fi->flags) < 0) {
				close(fd);
				fd = -1;
			}
			if (r == 0 && fd < 0 && (fd = open_upper_rw(fs, path, fi->flags)) < 0)
				r = fd;
			if (r != -ENOENT || !again)
				break;
			/* `agentfs discard` removes upper entries, directories
			 * among them, before it tells the daemon: the nodes of
			 * the directories above may still say they are in the
			 * upper, and a descriptor kept (dircache.c) name one that
			 * is gone.  Drop those, look at the directories and the
			 * node again, and copy up once more. */
			dircache_forget(fs);
			struct stat pst;
			for (struct node *p = n->parent; p && p != &fs->root; p = p->parent)
				(void)view_getattr(fs, p, &pst);
			if ((r = view_getattr(fs, n, &st)) < 0)
				break;
		}
		if (r < 0)
			goto fail;
		h = handle_new(fs, req, n, fd, true, path);
		if (!h) {
			r = -ENOMEM;
			goto fail;
		}
		/* The version before this handle's writes: the one just
		 * copied up, or cached since the last journaled write, or
		 * hashed now. */
		if (cu.copied) {
			h->before = cu.hash;
			h->has_before = fs->journal != NULL;
		} else {
			h->has_before =
			    fs->journal && hashcache_get(fs->hashes, fd, &h->before) == 0;
		}
		if (fi->flags & O_TRUNC) {
			if (ftruncate(fd, 0) < 0) {
				r = -errno;
				goto fail;
			}
			__atomic_store_n(&h->wrote, true, __ATOMIC_RELAXED);
			/* The truncate of open(2) (handle_truncate, fs/namei.c)
			 * is the daemon's here (FUSE_CAP_ATOMIC_O_TRUNC), and so
			 * are its set-ID bits (fs_kill_suidgid). */
			killed = fs_request_kills_suidgid() == 1 &&
				 fs_kill_suidgid(fs, req, fd, NULL, path);
		}
	} else {
		int flags = fi->flags & OPEN_PASS;
		fd = n->upper ? upper_open(fs, path, flags, 0)
			      : layer_open(fs, fs->lower_fd, node_lower(n), flags, 0);
		if (fd < 0) {
			r = fd;
			goto fail;
		}
		h = handle_new(fs, req, n, fd, n->upper, path);
		if (!h) {
			r = -ENOMEM;
			goto fail;
		}
		struct stat ost;
		h->loose_object = n->upper && view_path_is_loose_object(fs, path);
		h->small_object = h->loose_object && fstat(fd, &ost) == 0 && S_ISREG(ost.st_mode) &&
				  ost.st_size <= OPEN_STORE_MAX;
	}
	node_ref(fs, n);
	bool direct;
	uint32_t backing = handle_link(fs, h, fi->flags, writing, &direct);
	/* Read under the lock: once it is released a copy-up of the file may
	 * move this handle to the upper copy (handles_follow_copyup). */
	bool on_upper = h->upper;
	pthread_rwlock_unlock(&fs->ns_lock);
	copyup_prep_drop(fs, &prep);
	/* Attributes only: waits for no page (fs/loop.c).  Before
	 * passthrough_reply_with(): every reply-shaped write this thread makes
	 * after it, a notification too, would carry the backing id. */
	if (killed)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
	h->direct = direct;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = direct;
	/* The daemon will not see this reader's reads, and a writer's
	 * writes after them would reach the file before the release: the
	 * read's record names the version open now. */
	if (h->pt && !writing && fs->journal)
		h->has_before = hashcache_get(fs->hashes, fd, &h->before) == 0;
	/* Keep the page cache across opens: only the daemon changes the upper,
	 * and watch.c invalidates a lower file the person changes.  Not for a
	 * file with other links: the kernel holds one inode per name here, and
	 * a write through another name would leave this one's pages stale.  Not
	 * for a lower file whose version differs from the one last opened
	 * through this node: a read of the old version still in flight when
	 * the person replaced the file may have refilled the cache after
	 * watch.c dropped it. */
	struct stat hst;
	int sr = fstat(fd, &hst);
	h->small = sr == 0 && hst.st_size <= HANDLE_SMALL;
	if (sr == 0)
		node_saw_size(n, hst.st_size, false);
	if (sr < 0) {
		fi->keep_cache = 0;
	} else if (on_upper) {
		/* Not after passthrough: its writes never went through the
		 * kernel's page cache of this inode. */
		fi->keep_cache = hst.st_nlink <= 1 && (h->pt || !n->pt_used);
		/* A loose object read through the page cache: the daemon's own
		 * threads may replace it beside the mount (libgit2 renames its
		 * new file over the name), so it is kept by version, as a lower
		 * file is. */
		if (fi->keep_cache && h->loose_object && !h->pt)
			fi->keep_cache = keep_version(fs, ino, h, &hst);
	} else {
		fi->keep_cache = keep_version(fs, ino, h, &hst);
	}
	/* The handle is complete before the kernel can send its first
	 * request, perhaps to another worker (fs/loop.c). */
	fs_publish(fs);
	passthrough_reply_with(backing);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* Interrupted: the kernel will not send a release. */
		handle_unlink(fs, h);
		node_unref(fs, n);
		close(fd);
		free(h->path);
		free(h);
	}
	return;
fail:
	pthread_rwlock_unlock(&fs->ns_lock);
	copyup_prep_drop(fs, &prep);
	if (h) {
		free(h->path);
		free(h);
	}
	if (fd >= 0)
		close(fd);
	fuse_reply_err(req, -r);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi)
{
	struct agentfs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent);
	char dpath[FS_PATH_MAX], path[FS_PATH_MAX];
	struct entry e;
	int r, dfd = -1, fd = -1;
	struct node *n = NULL;

	if (strlen(name) > NAME_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	if (layout_is_reserved(name)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	ns_wrlock(fs);
	if (node_unnamed(fs, dir)) {
		r = -ENOENT;
		goto fail;
	}
	if ((r = node_path(dir, dpath, sizeof(dpath))) < 0 ||
	    (r = path_join(path, sizeof(path), dpath, name)) < 0)
		goto fail;
	if (view_name_is_git(name) || dir->readonly || view_path_readonly(fs, path, false)) {
		struct journal_event ev = {.op = JOP_DENY,
					   .result = -EROFS,
					   .path = path,
					   .detail =
					       view_name_is_git(name) ? "create a .git" : "create"};
		fs_record_ev(fs, req, &ev);
		r = -EROFS;
		goto fail;
	}
	/* One open of the upper directory serves the lookup and the create. */
	if (dir->upper && (dfd = dircache_get(fs, dpath)) < 0 && dfd != -ENOENT) {
		r = dfd;
		goto fail;
	}
	if (dfd < 0)
		dfd = -1;
	bool whiteout = false; /* none behind a recalled lookup (neg_remember) */
	if (!neg_recall(fs, dir, name)) {
		if ((r = view_resolve_at(fs, dir, name, &e, NULL, dfd, -1)) < 0)
			goto fail;
		if (e.exists) {
			/* The kernel only sends CREATE after a negative
			 * lookup; a racing creator won.  O_EXCL semantics: */
			r = -EEXIST;
			goto fail;
		}
		whiteout = e.whiteout;
	}
	if (dfd < 0) {
		if ((r = copyup_dir(fs, dir)) < 0)
			goto fail;
		if ((dfd = dircache_get(fs, dpath)) < 0) {
			r = dfd;
			dfd = -1;
			goto fail;
		}
	}
	int flags =
	    (fi->flags & OPEN_PASS & ~O_ACCMODE) | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	fd = openat(dfd, name, flags | O_RDWR, mode);
	if (fd < 0 && errno == EACCES)
		fd = openat(dfd, name, flags | (fi->flags & O_ACCMODE), mode);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	fix_mode(fs, dfd, name, fd, mode);
	/* The new file's attributes, while nothing below changes them. */
	struct stat cst;
	bool cst_ok = false;
	if (fs->is_root) {
		/* New files belong to the caller; chown(2) clears set-ID bits,
		 * which the caller asked for: restore them.  In a
		 * set-group-ID directory the group stays the directory's.  A
		 * file that has the owner and group it should (a root caller)
		 * is left as it is. */
		const struct fuse_ctx *ctx = fuse_req_ctx(req);
		cst_ok = fstat(fd, &cst) == 0;
		gid_t gid = cst_ok ? new_entry_gid(dfd, cst.st_gid, ctx->gid) : ctx->gid;
		if (!cst_ok || cst.st_uid != ctx->uid || cst.st_gid != gid) {
			cst_ok = false;
			(void)!fchown(fd, ctx->uid, gid);
			mode_t setid =
			    new_entry_setid(req, S_IFREG | mode, gid) & (S_ISUID | S_ISGID);
			if (setid && fstat(fd, &cst) == 0)
				(void)!fchmod(fd, (cst.st_mode & 0777) | setid);
		}
	}
	uint64_t ino = 0;
	struct layout_origin wo;
	bool have_wo = whiteout && layout_whiteout_origin(dfd, name, &wo) == 1;
	if (have_wo) {
		/* The deleted file's base (op_unlink), with its inode number
		 * unless the file lives on under another name (op_rename
		 * leaves it out then: 0). */
		layout_set_origin(fd, &wo);
		ino = wo.ino;
	}
	if (whiteout && node_lower(dir) && !dir->opaque) {
		/* Re-created after an unlink (vim's backupcopy=no): the deleted
		 * lower file is the base of the new one. */
		char lpath[FS_PATH_MAX];
		struct stat lst;
		if (path_join(lpath, sizeof(lpath), node_lower(dir), name) == 0 &&
		    layer_stat(fs, fs->lower_fd, lpath, &lst) == 0 &&
		    view_decide_lower(fs, lpath, &lst) != POLICY_HIDDEN &&
		    origin_from_lower(fs, fd, lpath, lst.st_nlink == 1) == 0 && !have_wo &&
		    lst.st_nlink == 1)
			ino = (uint64_t)lst.st_ino;
	}
	if (whiteout)
		layout_remove_whiteout(dfd, name);
	/* The new entry, as a lookup would describe it. */
	memset(&e, 0, offsetof(struct entry, lower));
	e.lower[0] = 0;
	if (cst_ok && !whiteout) {
		e.st = cst;
	} else if (fstat(fd, &e.st) < 0) {
		r = -errno;
		goto fail;
	}
	e.exists = e.in_upper = true;
	e.type = S_IFREG;
	view_fix_attr(fs, &e.st, ino ? ino : view_upper_ino(fs, &e.st), true);
	n = node_child(fs, dir, name, true);
	if (!n || (r = view_apply(fs, n, &e)) < 0) {
		r = r < 0 ? r : -ENOMEM;
		goto fail;
	}
	struct handle *h = handle_new(fs, req, n, fd, true, path);
	if (!h) {
		r = -ENOMEM;
		goto fail;
	}
	h->has_before = false;
	h->small = true; /* new and empty */
	h->created = true;
	node_ref(fs, n);
	bool direct;
	uint32_t backing = handle_link(fs, h, fi->flags, true, &direct);
	/* The process the handle named a moment ago: no second read of its
	 * /proc entry (journal.h). */
	struct journal_event ev = {
	    .op = JOP_CREATE, .path = path, .mode = mode, .pid = h->pid, .pid_start = h->pid_start};
	fs_record_ev(fs, req, &ev);
	pthread_rwlock_unlock(&fs->ns_lock);
	dircache_put(fs, dfd);
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = 1;
	struct fuse_entry_param ep;
	memset(&ep, 0, sizeof(ep));
	ep.ino = n->id;
	ep.attr = e.st;
	ep.attr_timeout = attr_timeout(fs, n, &e.st);
	ep.entry_timeout = entry_timeout(fs, dir);
	fs_publish(fs); /* as in op_open */
	passthrough_reply_with(backing);
	if (fuse_reply_create(req, &ep, fi) == -ENOENT) {
		handle_unlink(fs, h);
		node_unref(fs, n);
		close(fd);
		free(h->path);
		free(h);
	}
	return;
fail:
	if (n)
		node_forget(fs, n, 1);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (fd >= 0)
		close(fd);
	dircache_put(fs, dfd);
	fuse_reply_err(req, -r);
}

/* Reads at least this large are spliced; below it one pread and one writev
 * are cheaper than libfuse's vmsplice, splice and splice.  64 KiB: measured
 * with 1 GiB sequential reads (spliced 1 MiB requests) and `cat` of the
 * kernel tree's small files (copied). */
#define READ_SPLICE_MIN (64 * 1024)

/*
 * The calling worker thread's read buffer, at least @size bytes, kept for the
 * thread's life (freed by the key's destructor when libfuse ends it): a fresh
 * malloc of up to max_read bytes per request came back from the kernel as
 * page faults on every read once malloc had trimmed it.  NULL without memory.
 */
static pthread_key_t read_buf_key;
static pthread_once_t read_buf_once = PTHREAD_ONCE_INIT;

struct read_buf {
	size_t cap;
	char data[];
};

static void read_buf_key_init(void)
{
	if (pthread_key_create(&read_buf_key, free) != 0)
		abort(); /* no key at all: nothing sensible to serve reads with */
}

static char *read_buf(size_t size)
{
	pthread_once(&read_buf_once, read_buf_key_init);
	struct read_buf *b = pthread_getspecific(read_buf_key);
	if (b && b->cap >= size)
		return b->data;
	/* Reads that large are spliced where the kernel takes splices: then
	 * this never grows past READ_SPLICE_MIN. */
	size_t cap = size < READ_SPLICE_MIN ? READ_SPLICE_MIN : size;
	struct read_buf *nb = malloc(sizeof(*nb) + cap);
	if (!nb)
		return NULL;
	nb->cap = cap;
	if (pthread_setspecific(read_buf_key, nb) != 0) {
		free(nb);
		return NULL;
	}
	free(b);
	return nb->data;
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = handle_of(fi);
	if (__atomic_load_n(&h->revoked, __ATOMIC_ACQUIRE) && !handle_on_upper(h)) {
		fs_publish(fs_of(req));
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (size >= READ_SPLICE_MIN && fs_of(req)->splice_write) {
		/* Spliced: libfuse moves the file's pages through a pipe to
		 * /dev/fuse (splice(2)), no copy into the daemon.  The reply's
		 * length is what the file holds from off; the size is read now
		 * so the journal counts the bytes actually served. */
		struct stat st;
		if (fstat(h->fd, &st) < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		size_t n = 0;
		if (off < st.st_size)
			n = (uint64_t)(st.st_size - off) < size ? (size_t)(st.st_size - off) : size;
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(n);
		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
		bv.buf[0].fd = h->fd;
		bv.buf[0].pos = off;
		__atomic_fetch_add(&h->rbytes, (uint64_t)n, __ATOMIC_RELAXED);
		fs_publish(fs_of(req)); /* before the reply: the RELEASE may follow at once */
		fuse_reply_data(req, &bv, 0);
		return;
	}
	char *buf = read_buf(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n;
	do
		n = pread(h->fd, buf, size, off);
	while (n < 0 && errno == EINTR);
	int err = n < 0 ? errno : 0;
	if (n >= 0)
		__atomic_fetch_add(&h->rbytes, (uint64_t)n, __ATOMIC_RELAXED);
	fs_publish(fs_of(req)); /* done with h: see op_write_buf */
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

/*
 * Start writing the upper file out behind a writer once WRITE_BEHIND bytes
 * were written past the last start (sync_file_range(2),
 * SYNC_FILE_RANGE_WRITE: starts the I/O, waits for none of it).  Nothing else
 * starts it for a long time: the kernel's flusher begins on its own only when
 * dirty pages are 30 s old or exceed vm.dirty_background_ratio of memory
 * (Documentation/admin-guide/sysctl/vm.rst), so a large file's fsync waited
 * for all of it at the end; now the disk works while the file is still being
 * written.  Measured on 1 GiB in 1 MiB writes and fsync, 4 paired rounds: the
 * fsync 0.78-0.97 s -> 0.40-0.49 s, the writes unchanged (tests/bench/
 * RESULTS.md, "Since the 20:32 run").
 * @end: where the WRITE just done ended.
 */
static void write_behind(struct handle *h, off_t end)
{
	off_t from = __atomic_load_n(&h->behind, __ATOMIC_RELAXED);
	if (end < from || end - from < WRITE_BEHIND)
		return;
	if (__atomic_compare_exchange_n(&h->behind, &from, end, false, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		sync_file_range(h->fd, from, end - from, SYNC_FILE_RANGE_WRITE);
}

static const char *current_path(struct agentfs *fs, struct handle *h, char *buf, uint32_t *flags);

void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
		  struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	/* Each answer below follows fs_publish(): once the kernel has it, the
	 * caller may close the file and the handle's RELEASE, answered by
	 * another worker, free @h.  The kernel orders the two requests; the
	 * publication shows that order to the C memory model and to
	 * ThreadSanitizer (agentfs.epoch), which do not see it through
	 * /dev/fuse.  The same holds for every request on a handle. */
	if (!handle_on_upper(h)) {
		fs_publish(fs_of(req));
		fuse_reply_err(req, EBADF); /* never write through a lower fd */
		return;
	}
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in_buf));
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = h->fd;
	out.buf[0].pos = off;
	ssize_t n = fuse_buf_copy(&out, in_buf, 0);
	if (n < 0) {
		/* A failed write (ENOSPC, EDQUOT, EIO) is evidence too. */
		struct journal_event ev = {.op = JOP_WRITE,
					   .result = (int)n,
					   .pid = h->pid,
					   .pid_start = h->pid_start,
					   .uid = h->uid,
					   .path = h->path,
					   .bytes = fuse_buf_size(in_buf)};
		if (fs_of(req)->journal)
			journal_record(fs_of(req)->journal, &ev);
		fs_publish(fs_of(req));
		fuse_reply_err(req, (int)-n);
		return;
	}
	__atomic_fetch_add(&h->wbytes, (uint64_t)n, __ATOMIC_RELAXED);
	__atomic_store_n(&h->wrote, true, __ATOMIC_RELAXED);
	/* A WRITE still in libfuse's pipe does not show its flags: it clears
	 * the bits whoever wrote (POSIX allows it of any write(2)).  The
	 * attributes-only notification waits for no page (fs/loop.c). */
	if (h->direct && fs_request_kills_suidgid() != 0) {
		char cur[FS_PATH_MAX];
		uint32_t pflags;
		if (fs_kill_suidgid(fs_of(req), req, h->fd, NULL,
				    current_path(fs_of(req), h, cur, &pflags)))
			fuse_lowlevel_notify_inval_inode(fs_of(req)->se, ino, -1, 0);
	}
	/* From a handle's first large WRITE on, requests are received through
	 * libfuse's pipe, and the next WRITEs' pages are spliced into the upper
	 * file (fs/loop.c, receive()). */
	if ((size_t)n >= FS_BULK_WRITE && !__atomic_exchange_n(&h->bulk, true, __ATOMIC_RELAXED))
		__atomic_add_fetch(&fs_of(req)->bulk_writers, 1, __ATOMIC_RELAXED);
	write_behind(h, off + n);
	node_saw_size(h->node, off + n, true);
	fs_publish(fs_of(req));
	fuse_reply_write(req, (size_t)n);
}

/* The path to journal for @h: where its file is now (it may have been
 * renamed since the open), or the path at open plus JOURNAL_F_UNLINKED when
 * it has no name left.  Writes into @buf (FS_PATH_MAX bytes) when the path
 * changed.  The caller holds ns_lock. */
static const char *path_locked(struct agentfs *fs, struct handle *h, char *buf, uint32_t *flags)
{
	*flags = 0;
	if (node_unnamed(fs, h->node))
		*flags = JOURNAL_F_UNLINKED;
	else if (node_path(h->node, buf, FS_PATH_MAX) == 0)
		return buf;
	return h->path;
}

static const char *current_path(struct agentfs *fs, struct handle *h, char *buf, uint32_t *flags)
{
	pthread_rwlock_rdlock(&fs->ns_lock);
	const char *p = path_locked(fs, h, buf, flags);
	pthread_rwlock_unlock(&fs->ns_lock);
	return p;
}

/* A handle's writes since its last record, taken from it (take_writes) and
 * journaled (record_writes) perhaps after it is gone. */
struct pending_write {
	struct node *node;
	int fd;
	pid_t pid;
	uint64_t pid_start;
	uid_t uid;
	uint32_t flags;
	const char *path;
	uint64_t bytes;
	bool has_before;
	XXH128_hash_t before;
	bool passthrough; /* written by the kernel: @bytes is not known */
	/* Passthrough: no record when the file holds what the journal last
	 * said of it (@base, or the node's last record), unless @forced. */
	bool forced;
	bool base_ok;
	XXH128_hash_t base;
	bool now_ok; /* the hash, taken already */
	XXH128_hash_t now;
	const struct stat *st; /* an fstat of @fd taken moments before, or NULL */
};

/* Reset @h's counters into @p, all but the path and its flags (path_locked):
 * the caller holds ns_lock. */
static void take_writes(struct handle *h, struct pending_write *p)
{
	bool forced = __atomic_exchange_n(&h->wrote, false, __ATOMIC_RELAXED);
	*p = (struct pending_write){
	    .node = h->node,
	    .fd = h->fd,
	    .pid = h->pid,
	    .pid_start = h->pid_start,
	    .uid = h->uid,
	    .bytes = __atomic_exchange_n(&h->wbytes, 0, __ATOMIC_RELAXED),
	    .has_before = h->has_before, /* set at open, before any write */
	    .before = h->before,
	    .passthrough = h->pt_write,
	    .forced = forced,
	    .base_ok = h->pt_base_ok,
	    .base = h->pt_base,
	};
}

/* Hash the version @p's descriptor holds and journal it, under the node's
 * record lock.  Returns whether a record was made (see pending_write.forced)
 * and the hash in @hash (*@hash_ok). */
static bool record_writes(struct agentfs *fs, const struct pending_write *p, XXH128_hash_t *hash,
			  bool *hash_ok)
{
	struct journal_event ev = {
	    .op = JOP_WRITE,
	    .pid = p->pid,
	    .pid_start = p->pid_start,
	    .uid = p->uid,
	    .flags = p->flags,
	    .path = p->path,
	    .bytes = p->bytes,
	    .bytes_unknown = p->passthrough,
	    .has_hash_before = p->has_before,
	    .hash_before = p->before,
	};
	struct node *n = p->node;
	pthread_mutex_t *lock = record_lock(fs, n);
	pthread_mutex_lock(lock);
	if (p->now_ok) {
		ev.hash_after = p->now;
		ev.has_hash_after = true;
	} else if ((p->st ? hashcache_refresh_st(fs->hashes, p->fd, p->st, &ev.hash_after)
			  : hashcache_refresh(fs->hashes, p->fd, &ev.hash_after)) == 0) {
		ev.has_hash_after = true;
	}
	/* A passthrough writer's release or flush finds no change when the
	 * file holds what its last record said, or what the node's last write
	 * record said (another writer of the file recorded it), where that
	 * record is the file's only name's (one link). */
	struct stat st;
	bool same = p->passthrough && !p->forced && ev.has_hash_after &&
		    ((p->base_ok && XXH128_isEqual(ev.hash_after, p->base)) ||
		     (n->pt_last_ok && XXH128_isEqual(ev.hash_after, n->pt_last) &&
		      fstat(p->fd, &st) == 0 && st.st_nlink == 1));
	if (!same) {
		journal_record(fs->journal, &ev);
		n->pt_last = ev.hash_after;
		n->pt_last_ok = ev.has_hash_after && !(p->flags & JOURNAL_F_UNLINKED);
	}
	pthread_mutex_unlock(lock);
	*hash = ev.hash_after;
	*hash_ok = ev.has_hash_after;
	return !same;
}

/* @n has a write record on its way: its path is taken (the caller holds
 * ns_lock, or table_lock when @locked).  record_end() when it is in the
 * journal. */
static void record_begin(struct agentfs *fs, struct node *n, bool locked)
{
	if (!locked)
		pthread_mutex_lock(&fs->table_lock);
	n->recording++;
	if (!locked)
		pthread_mutex_unlock(&fs->table_lock);
}

static void record_end(struct agentfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	if (--n->recording == 0)
		pthread_cond_broadcast(&fs->recorded);
	pthread_mutex_unlock(&fs->table_lock);
}

static bool recording_locked(const struct node *a, const struct node *b)
{
	return (a && a->recording) || (b && b->recording);
}

void ns_wrlock_settled(struct agentfs *fs, struct node *a, struct node *b)
{
	for (;;) {
		ns_wrlock(fs);
		pthread_mutex_lock(&fs->table_lock);
		bool busy = recording_locked(a, b);
		if (!busy) {
			pthread_mutex_unlock(&fs->table_lock);
			return; /* the usual case: one table_lock more */
		}
		pthread_rwlock_unlock(&fs->ns_lock); /* the mount goes on meanwhile */
		while (recording_locked(a, b))
			pthread_cond_wait(&fs->recorded, &fs->table_lock);
		pthread_mutex_unlock(&fs->table_lock);
	}
}

void ns_wrlock_settled_names(struct agentfs *fs, struct node *d1, const char *n1, struct node *d2,
			     const char *n2)
{
	for (;;) {
		ns_wrlock(fs);
		pthread_mutex_lock(&fs->table_lock);
		struct node *a = node_find_locked(fs, d1, n1);
		struct node *b = d2 ? node_find_locked(fs, d2, n2) : NULL;
		if (!recording_locked(a, b)) {
			pthread_mutex_unlock(&fs->table_lock);
			return;
		}
		/* Held while waiting: nothing else keeps them from a FORGET. */
		if (a)
			a->refs++;
		if (b)
			b->refs++;
		pthread_rwlock_unlock(&fs->ns_lock);
		while (recording_locked(a, b))
			pthread_cond_wait(&fs->recorded, &fs->table_lock);
		pthread_mutex_unlock(&fs->table_lock);
		if (a)
			node_unref(fs, a);
		if (b)
			node_unref(fs, b);
	}
}

/* Returns whether a record was made; the file's hash in @hash (*@hash_ok). */
static bool record_write(struct agentfs *fs, struct handle *h, XXH128_hash_t *hash, bool *hash_ok)
{
	*hash_ok = false;
	if (!fs->journal) {
		__atomic_store_n(&h->wrote, false, __ATOMIC_RELAXED);
		return false;
	}
	char cur[FS_PATH_MAX];
	struct pending_write p;
	pthread_rwlock_rdlock(&fs->ns_lock);
	take_writes(h, &p);
	p.path = path_locked(fs, h, cur, &p.flags);
	record_begin(fs, p.node, false);
	pthread_rwlock_unlock(&fs->ns_lock);
	/* A release: the classifying fstat describes the version to hash. */
	p.st = h->quick_ok ? &h->quick_st : NULL;
	bool made = record_writes(fs, &p, hash, hash_ok);
	record_end(fs, p.node);
	return made;
}

/* An fsync makes the handle's writes durable and journals nothing: the
 * handle's write record, with the hash of the version it leaves, is made at
 * its release, at the end of a session a signal ended with the file still
 * open (fs_record_pending_writes), or after a crash by the next mount's recovery
 * (README.md, "Crash recovery").  A record here meant hashing the whole file before the
 * fsync could return: O(file size) per call, per commit of a database, and
 * the 1 GiB sequential write of tests/bench paid a second read of the GiB. */
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = handle_of(fi);
	int r = (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? errno : 0;
	fs_publish(fs_of(req)); /* done with h: see op_write_buf */
	fuse_reply_err(req, r);
}

bool handle_wrote(uint64_t fh)
{
	const struct handle *h = (const struct handle *)(uintptr_t)fh;
	return h && (h->pt_write || __atomic_load_n(&h->wrote, __ATOMIC_RELAXED));
}

bool handle_release_quick(uint64_t fh)
{
	struct handle *h = (struct handle *)(uintptr_t)fh;
	if (!h || !h->small)
		return false;
	if (!h->pt_write && !__atomic_load_n(&h->wrote, __ATOMIC_RELAXED))
		return true;
	/* A new version to hash: quick when it takes one read. */
	h->quick_ok = fstat(h->fd, &h->quick_st) == 0;
	if (h->quick_ok)
		node_saw_size(h->node, h->quick_st.st_size, false);
	return h->quick_ok && h->quick_st.st_size <= HANDLE_QUICK_WRITTEN;
}

/* What a release does besides its answer: journal the handle's read or write,
 * forget the handle. */
static void release_finish(struct agentfs *fs, struct handle *h, bool journal_read)
{
	/* A passthrough writer's writes never reached the daemon: whether it
	 * changed the file is told by the file's content (record_writes). */
	XXH128_hash_t now;
	bool now_ok = false, wrote = false;
	if (h->pt_write || __atomic_load_n(&h->wrote, __ATOMIC_RELAXED)) {
		/* The size its writes left (handle_release_quick saw a small
		 * file's), for the next open's classify(). */
		struct stat wst;
		if (!h->quick_ok && fstat(h->fd, &wst) == 0)
			node_saw_size(h->node, wst.st_size, false);
		wrote = record_write(fs, h, &now, &now_ok);
	}
	if (!wrote && journal_read) {
		char cur[FS_PATH_MAX];
		uint32_t flags;
		const char *path = current_path(fs, h, cur, &flags);
		struct journal_event ev = {
		    .op = JOP_READ,
		    .pid = h->pid,
		    .pid_start = h->pid_start,
		    .uid = h->uid,
		    .flags = flags,
		    .path = path,
		    .bytes = __atomic_load_n(&h->rbytes, __ATOMIC_RELAXED),
		};
		pthread_mutex_t *lock = record_lock(fs, h->node);
		pthread_mutex_lock(lock);
		if (now_ok) {
			/* A writer that changed nothing: the version it saw. */
			ev.hash_after = now;
			ev.has_hash_after = true;
		} else if (h->pt) {
			/* A passthrough reader: the version open at its open
			 * (op_open), and a word when the file changed since,
			 * as the reads may have seen the later one. */
			ev.has_hash_after = h->has_before;
			ev.hash_after = h->before;
			XXH128_hash_t cur_hash;
			if (h->has_before && hashcache_get(fs->hashes, h->fd, &cur_hash) == 0 &&
			    !XXH128_isEqual(cur_hash, h->before))
				ev.detail = "changed while open: the reads may have seen a later "
					    "version";
		} else if (hashcache_get(fs->hashes, h->fd, &ev.hash_after) == 0) {
			ev.has_hash_after = true;
		}
		journal_record(fs->journal, &ev);
		pthread_mutex_unlock(lock);
	}
	handle_unlink(fs, h);
	close(h->fd);
	node_unref(fs, h->node);
	free(h->path);
	free(h);
}

size_t fs_record_pending_writes(struct agentfs *fs)
{
	if (!fs->journal)
		return 0;
	/* Taken under ns_lock (paths) and table_lock (the list; a handle is
	 * freed only after it left it), recorded after them from a duplicate
	 * of each descriptor, with a reference to its node and a copy of its
	 * path, as the handle may be released meanwhile.  Its release then
	 * records only writes made after this. */
	pthread_rwlock_rdlock(&fs->ns_lock);
	pthread_mutex_lock(&fs->table_lock);
	size_t cap = 0, n = 0;
	for (struct handle *h = fs->open_handles; h; h = h->all_next) {
		/* A passthrough writer's file is hashed here, under the
		 * locks, so that its new hash can become the handle's base
		 * (the handle may be gone once they are dropped): this runs
		 * at a flush and at the end of a session, not per request. */
		h->pt_now_ok = h->pt_write && hashcache_refresh(fs->hashes, h->fd, &h->pt_now) == 0;
		bool changed = h->pt_write && (!h->pt_now_ok || !h->pt_base_ok ||
					       !XXH128_isEqual(h->pt_now, h->pt_base));
		cap += __atomic_load_n(&h->wrote, __ATOMIC_RELAXED) || changed;
		if (changed)
			__atomic_store_n(&h->wrote, true, __ATOMIC_RELAXED);
	}
	struct pending_write *pw = cap ? calloc(cap, sizeof(*pw)) : NULL;
	for (struct handle *h = fs->open_handles; pw && h && n < cap; h = h->all_next) {
		if (!__atomic_load_n(&h->wrote, __ATOMIC_RELAXED))
			continue;
		char cur[FS_PATH_MAX];
		uint32_t flags;
		char *path = strdup(path_locked(fs, h, cur, &flags));
		int fd = path ? fcntl(h->fd, F_DUPFD_CLOEXEC, 0) : -1;
		if (fd < 0) {
			free(path);
			continue; /* left for its release */
		}
		struct pending_write *p = &pw[n];
		take_writes(h, p);
		p->fd = fd;
		p->path = path;
		p->flags = flags;
		p->now_ok = h->pt_now_ok;
		p->now = h->pt_now;
		if (h->pt_now_ok) {
			h->pt_base = h->pt_now;
			h->pt_base_ok = true;
		}
		p->node->refs++;
		record_begin(fs, p->node, true);
		n++;
	}
	pthread_mutex_unlock(&fs->table_lock);
	pthread_rwlock_unlock(&fs->ns_lock);
	for (size_t i = 0; i < n; i++) {
		struct pending_write *p = &pw[i];
		XXH128_hash_t hash;
		bool hash_ok;
		record_writes(fs, p, &hash, &hash_ok);
		record_end(fs, p->node);
		close(p->fd);
		node_unref(fs, p->node);
		free((char *)p->path);
	}
	free(pw);
	return n;
}

bool fs_release_deferred(struct agentfs *fs, bool all)
{
	bool any = false;
	while (fs->deferred) {
		struct handle *h = fs->deferred;
		fs->deferred = h->next_deferred;
		if (!fs->deferred)
			fs->deferred_tail = NULL;
		release_finish(fs, h, h->journal_read);
		any = true;
		if (!all)
			break;
	}
	return any;
}

void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct agentfs *fs = fs_of(req);
	struct handle *h = handle_of(fi);
	bool journal_read = fs->journal && (fi->flags & O_ACCMODE) != O_WRONLY;
	/* The kernel does not wait for this answer, and the caller's next
	 * request (its next open) is usually queued behind it: a handle that
	 * only read is answered now and finished when the reader has nothing
	 * to read (fs/loop.c).  Only the reader keeps such handles, and it
	 * finishes them before any request that could change a file, so a
	 * read's record still names the version read, in order. */
	if (fs->defer_releases && !handle_wrote(fi->fh) && fs_loop_alone(fs)) {
		h->journal_read = journal_read;
		h->next_deferred = NULL;
		if (fs->deferred_tail)
			fs->deferred_tail->next_deferred = h;
		else
			fs->deferred = h;
		fs->deferred_tail = h;
		fuse_reply_err(req, 0);
		return;
	}
	/* Any release answered early is finished by now: fs/loop.c finishes
	 * them before a request that may not wait behind them, as this one. */
	release_finish(fs, h, journal_read);
	fuse_reply_err(req, 0);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		  struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = handle_of(fi);
	int r = !handle_on_upper(h)			     ? EBADF
		: fallocate(h->fd, mode, offset, length) < 0 ? errno
							     : 0;
	if (r == 0) {
		__atomic_store_n(&h->wrote, true, __ATOMIC_RELAXED);
		if (!(mode & FALLOC_FL_KEEP_SIZE))
			node_saw_size(h->node, offset + length, true);
	}
	fs_publish(fs_of(req)); /* done with h: see op_write_buf */
	fuse_reply_err(req, r);
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = handle_of(fi);
	off_t r = lseek(h->fd, off, whence);
	int err = r < 0 ? errno : 0;
	fs_publish(fs_of(req)); /* done with h: see op_write_buf */
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_lseek(req, r);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			struct fuse_file_info *fi_out, size_t len, int flags)
{
	(void)ino_in, (void)ino_out;
	struct handle *in = handle_of(fi_in), *out = handle_of(fi_out);
	ssize_t n = -1;
	int err = EBADF;
	if (out->upper) {
		n = copy_file_range(in->fd, &off_in, out->fd, &off_out, len, (unsigned)flags);
		err = n < 0 ? errno : 0;
	}
	if (n >= 0) {
		__atomic_fetch_add(&in->rbytes, (uint64_t)n, __ATOMIC_RELAXED);
		__atomic_fetch_add(&out->wbytes, (uint64_t)n, __ATOMIC_RELAXED);
		__atomic_store_n(&out->wrote, true, __ATOMIC_RELAXED);
		node_saw_size(out->node, off_out, true); /* advanced past the copy */
	}
	fs_publish(fs_of(req)); /* done with both handles: see op_write_buf */
	if (n < 0)
		fuse_reply_err(req, err);
	else
		fuse_reply_write(req, (size_t)n);
}
