/*
 * loop.c - the daemon's request loop: one reader at a time, quick requests
 * answered by the reader itself.
 *
 * libfuse's multithreaded loop (fuse_loop_mt.c) keeps every idle worker
 * blocked in read(2) on /dev/fuse, and the kernel wakes one of them for each
 * request (fs/fuse/dev.c queues readers as exclusive waiters, woken in
 * order).  So a close(2), whose RELEASE the kernel sends without waiting,
 * wakes one worker and the caller's next open(2) another: three wake-ups
 * per file where a single thread needs two, since it finds the RELEASE
 * already queued when it comes back from the OPEN (or the reverse).  On a
 * machine where a wake-up is most of a round trip this is most of the cost
 * of `grep -r` over a warm tree.
 *
 * Here one worker at a time reads (the reader).  Most requests (lookups,
 * getattr, opens of small files (a copy-up of one included), creates,
 * renames, small reads and writes, the release of a small file that was only
 * read: see classify()) are a few system calls on cached data, cheaper than
 * a wake-up; the reader answers them itself and reads again.  Any other
 * request is handed off: the reader passes the reader role to the most
 * recently idle worker (or starts one, up to max_threads) and then answers
 * it, so requests that wait for the disk or copy a large file up (fsync,
 * large reads and writes, opens for writing of large files, truncation) or
 * for the daemon's own threads (the lookup of .git during its build, of a
 * loose object of it while base blobs are being written: see
 * fs_git_pending) run in parallel with everything else.  A rename of a file
 * still in the lower copies it up too and is answered inline: the request
 * does not say which layer its source is in, and renames are mostly an
 * editor's temporary file of the upper.  A request that finds itself long
 * once answered (the rename of a large lower file, an open for writing of a
 * file larger than last seen) passes the reader role on then
 * (fs_loop_step_aside).
 *
 * An idle reader does not go to sleep at once: after answering a request
 * whose caller usually comes back quickly it keeps looking for the next one
 * for a few tens of microseconds (receive()), which saves the wake-up.
 *
 * One kind of request is never answered by the reader: one that sends the
 * kernel a notification that drops pages (an attributes-only one, with a
 * negative offset, waits for none: fuse_reverse_inval_inode in
 * fs/fuse/inode.c).  op_link's fuse_lowlevel_notify_inval_inode waits
 * for the file's locked pages, and a page stays locked until its READ, still
 * in the kernel's queue, is answered; a reader waiting there would never
 * read that READ (tests/integration/concurrency.sh hangs so).  op_link sends
 * it after releasing ns_lock, and while it is in flight every request is
 * handed off, so some worker is always reading and none waits for a lock
 * held across the notification.  The daemon's own threads (the private .git
 * build and its base-blob thread, the journal writer, the lower watch) never
 * wait for a request.  A request on the private .git's root (a lookup in
 * it, a listing) waits for its build, seconds on a large tree, so it is
 * handed off until the build is done (waits_for_git); the lookup of ".git"
 * itself and its attributes are answered at once, uncached; a
 * lookup of a loose object may wait for the base-blob thread's write,
 * milliseconds, so it is handed off while that thread holds blobs
 * (fs_git_pending).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/internal.h"

/* How long an idle reader keeps looking for the next request before it
 * sleeps (receive()): a few times the gap between an answer and a caller's
 * next request when the caller does little in between (~5-20 us here). */
#define LOOP_SPIN_NS 50000L
/* Opcodes below this have a gap average (FUSE opcodes are 1..51 in
 * linux/fuse.h 7.38; CUSE_INIT, 4096, has none). */
#define LOOP_OPCODES 64

struct worker {
	struct loop *lp;
	pthread_t thr;
	bool go; /* handed the reader role while idle */
	pthread_cond_t cond;
	struct worker *next_idle;
	struct fuse_buf buf;
};

struct loop {
	struct agentfs *fs;
	struct fuse_session *se;
	pthread_mutex_t lock;
	bool reader;	    /* some worker holds the reader role */
	bool done;	    /* the session ended: workers exit */
	unsigned notifying; /* HAND_OFF_NOTIFIES requests being answered */
	/* An idle reader sleeps in poll(2) on the non-blocking /dev/fuse and
	 * on wake_fd, which fs_loop makes readable to end the loop. */
	int wake_fd;
	bool spin; /* before it sleeps, receive() spins */
	/* Per opcode, the reader's moving average of the time from its answer
	 * to the next request (receive()); only the reader touches it. */
	long gap_ns[LOOP_OPCODES];
	/* Bytes of each worker's request buffer, which libfuse fills too
	 * (receive()): at least libfuse's own size for it, whose largest is
	 * its session's first, FUSE_MAX_MAX_PAGES (256) pages + 4 KiB
	 * (fuse_session_new in fuse_lowlevel.c). */
	size_t bufsize;
	unsigned nstarted, max_threads;
	struct worker *idle; /* workers waiting for the role, most recent first */
	int error;
	sem_t finish;
	struct worker *w; /* [max_threads] */
};

/* What the reader does with a request (classify()). */
enum kind {
	INLINE,		  /* answer it, then read again */
	HAND_OFF,	  /* pass the reader role on, then answer it */
	HAND_OFF_NOTIFIES /* the same, and its answer may wait for the kernel */
};

/* Largest READ or WRITE answered inline, and largest file an open for
 * writing answered inline copies or hashes (internal.h). */
#define LOOP_INLINE_IO FS_INLINE_IO

/* Whether the FUSE_OPEN whose argument is @arg (@argsz bytes) opens for
 * reading only, without truncating. */
static bool open_reads_only(const char *arg, size_t argsz)
{
	struct fuse_open_in o;
	if (argsz < sizeof(o))
		return false;
	memcpy(&o, arg, sizeof(o));
	return (o.flags & (O_ACCMODE | O_TRUNC)) == O_RDONLY;
}

/* Whether the file of @nodeid, which an OPEN names, was at most
 * LOOP_INLINE_IO bytes when the daemon last saw it (struct node, size_seen).
 * The kernel holds the inode of a file being opened: the node lives. */
static bool open_small(struct agentfs *fs, uint64_t nodeid)
{
	if (nodeid == FUSE_ROOT_ID)
		return false;
	return __atomic_load_n(&node_get(fs, nodeid)->size_seen, __ATOMIC_RELAXED) <=
	       LOOP_INLINE_IO;
}

/* Whether the LOOKUP argument @arg (@argsz bytes: a NUL-terminated name) is
 * a loose object's file name in a fan-out directory: 38 lowercase hex digits
 * (gitrepository-layout(5), objects/[0-9a-f][0-9a-f]). */
static bool loose_object_name(const char *arg, size_t argsz)
{
	if (argsz < 39 || arg[38] != 0)
		return false;
	for (int i = 0; i < 38; i++)
		if (!((arg[i] >= '0' && arg[i] <= '9') || (arg[i] >= 'a' && arg[i] <= 'f')))
			return false;
	return true;
}

/* FUSE_STATX (include/uapi/linux/fuse.h, protocol 7.39, Linux 6.6): newer
 * than libfuse 3.14's header. */
#define LOOP_FUSE_STATX 52

/* Whether the request @in (arguments @arg, @argsz bytes) waits for the
 * private .git's build: any request on the node its root's lookup answered
 * with during the build (fs/internal.h, git_root_id), a rename into it too,
 * but for the attributes (answered uncached), forgets and statfs. */
static bool waits_for_git(struct agentfs *fs, const struct fuse_in_header *in, const void *arg,
			  size_t argsz)
{
	if (__atomic_load_n(&fs->git_ready, __ATOMIC_ACQUIRE))
		return false;
	uint64_t id = __atomic_load_n(&fs->git_root_id, __ATOMIC_ACQUIRE);
	if (id == 0)
		return false;
	switch (in->opcode) {
	case LOOP_FUSE_STATX: /* answered ENOSYS by libfuse 3.14, then GETATTR */
	case FUSE_GETATTR:
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
	case FUSE_STATFS:
		return false;
	case FUSE_RENAME:
	case FUSE_RENAME2: {
		/* fuse_rename_in and fuse_rename2_in begin with newdir. */
		uint64_t newdir;
		if (argsz >= sizeof(newdir)) {
			memcpy(&newdir, arg, sizeof(newdir));
			if (newdir == id)
				return true;
		}
		break;
	}
	default:
		break;
	}
	return in->nodeid == id;
}

/* A request copied aside until the private .git is built (park_for_git). */
struct parked {
	struct parked *next;
	size_t size;
	char mem[]; /* the request as read from /dev/fuse */
};

/* In a worker, before it answers the request in @b: whether it waits for the
 * private .git's build (waits_for_git) and was copied aside for the build's
 * thread to answer (fs_git_run_parked).  Not a worker waits: the kernel
 * lets any number of access(2), getxattr(2) or readdir(3) calls on one
 * directory run at once, and eight of them waiting would leave no worker to
 * read the mount's other requests until the build ended.  A LINK into .git
 * (which the kernel sends one at a time per directory, and whose answer
 * may send a notification: see the top of this file) waits in its worker,
 * as does a request that cannot be copied (no memory). */
static bool park_for_git(struct loop *lp, const struct fuse_buf *b)
{
	struct agentfs *fs = lp->fs;
	if ((b->flags & FUSE_BUF_IS_FD) || b->size < sizeof(struct fuse_in_header))
		return false; /* a WRITE: an open file, so after a lookup that waited */
	const struct fuse_in_header *in = b->mem;
	if (!waits_for_git(fs, in, in + 1, b->size - sizeof(*in)))
		return false;
	struct parked *p = in->opcode == FUSE_LINK ? NULL : malloc(sizeof(*p) + b->size);
	if (!p) {
		git_wait(fs);
		return false;
	}
	p->next = NULL;
	p->size = b->size;
	memcpy(p->mem, b->mem, b->size);
	pthread_mutex_lock(&fs->git_lock);
	bool ready = fs->git_ready;
	if (!ready) {
		*fs->git_parked_tail = p;
		fs->git_parked_tail = &p->next;
	}
	pthread_mutex_unlock(&fs->git_lock);
	if (ready)
		free(p);
	return !ready;
}

/* Whether the reader answers the request in @b itself.  Never while a
 * request that sends the kernel a notification is being answered (see the
 * top of this file).  Not for requests that wait for the disk or may copy a
 * large file up (FSYNC, FSYNCDIR, large READs and WRITEs, an OPEN for
 * writing of a file larger than LOOP_INLINE_IO when last seen, SETATTR of
 * the size, a request on .git's root during its build, a LOOKUP of a loose
 * object while base blobs are being written: they can take longer than every other
 * request queued behind them), nor for a RELEASE after writes (hashing the
 * new version for the journal: the caller does not wait for it, so another
 * worker does it while the reader serves the caller's next request).  A
 * request libfuse left in its pipe (FUSE_BUF_IS_FD) is a WRITE: it splices
 * only requests carrying more than a page (fuse_lowlevel.c). */
static enum kind classify(struct loop *lp, const struct fuse_buf *b)
{
	if (b->flags & FUSE_BUF_IS_FD)
		return b->size <= LOOP_INLINE_IO + 4096 &&
			       __atomic_load_n(&lp->notifying, __ATOMIC_ACQUIRE) == 0
			   ? INLINE
			   : HAND_OFF;
	if (b->size < sizeof(struct fuse_in_header))
		return HAND_OFF;
	const struct fuse_in_header *in = b->mem;
	const void *arg = in + 1;
	size_t argsz = b->size - sizeof(*in);
	if (in->opcode == FUSE_LINK) /* op_link: fuse_lowlevel_notify_inval_inode */
		return HAND_OFF_NOTIFIES;
	if (__atomic_load_n(&lp->notifying, __ATOMIC_ACQUIRE) != 0 ||
	    waits_for_git(lp->fs, in, arg, argsz))
		return HAND_OFF;
	switch (in->opcode) {
	case FUSE_LOOKUP:
		/* One of a loose object's name may wait for the base blobs
		 * being written while there are some (fs_git_pending): the
		 * rest do not wait. */
		return __atomic_load_n(&lp->fs->git_pending, __ATOMIC_ACQUIRE) &&
			       loose_object_name(arg, argsz)
			   ? HAND_OFF
			   : INLINE;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_GETATTR:
	case FUSE_STATFS:
	case FUSE_GETXATTR:
	case FUSE_LISTXATTR:
	case FUSE_SETXATTR:
	case FUSE_REMOVEXATTR:
	case FUSE_READLINK:
	case FUSE_ACCESS:
	case FUSE_FLUSH:
	case FUSE_LSEEK:
	case FUSE_OPENDIR:
	case FUSE_READDIR:
	case FUSE_READDIRPLUS:
	case FUSE_RELEASEDIR:
	case FUSE_CREATE:
	case FUSE_MKNOD:
	case FUSE_MKDIR:
	case FUSE_SYMLINK:
	case FUSE_UNLINK:
	case FUSE_RMDIR:
	case FUSE_RENAME:
	case FUSE_RENAME2:
		return INLINE;
	case FUSE_OPEN:
		/* Opening for writing copies a lower file up, or hashes the
		 * upper file's version before the writes (op_open): a read of
		 * the file, which the size last seen tells. */
		return open_reads_only(arg, argsz) || open_small(lp->fs, in->nodeid) ? INLINE
										     : HAND_OFF;
	case FUSE_SETATTR: {
		/* A size change may copy a lower file up, or fill a hole. */
		struct fuse_setattr_in a;
		if (argsz < sizeof(a))
			return HAND_OFF;
		memcpy(&a, arg, sizeof(a));
		return a.valid & FATTR_SIZE ? HAND_OFF : INLINE;
	}
	case FUSE_READ:
	case FUSE_WRITE: {
		/* A WRITE here is in memory, received with read(2) (receive()):
		 * up to max_write.  Both arguments begin fh, offset, size. */
		_Static_assert(offsetof(struct fuse_read_in, size) ==
				   offsetof(struct fuse_write_in, size),
			       "READ and WRITE sizes at one offset (linux/fuse.h)");
		uint32_t size;
		if (argsz < offsetof(struct fuse_read_in, size) + sizeof(size))
			return HAND_OFF;
		memcpy(&size, (const char *)arg + offsetof(struct fuse_read_in, size),
		       sizeof(size));
		return size <= LOOP_INLINE_IO ? INLINE : HAND_OFF;
	}
	case FUSE_RELEASE: {
		struct fuse_release_in r;
		if (argsz < sizeof(r))
			return HAND_OFF;
		memcpy(&r, arg, sizeof(r));
		return handle_release_quick(r.fh) ? INLINE : HAND_OFF;
	}
	default:
		return HAND_OFF;
	}
}

static void *worker_main(void *arg);

/* Under lp->lock: the reader gives up its role, to the most recently idle
 * worker (its stack and caches are warmest), or to a new one. */
static void hand_off(struct loop *lp)
{
	struct worker *w = lp->idle;
	if (w) {
		lp->idle = w->next_idle;
		w->go = true; /* lp->reader stays true: the role moves to w */
		pthread_cond_signal(&w->cond);
		return;
	}
	lp->reader = false;
	if (lp->nstarted < lp->max_threads) {
		struct worker *nw = &lp->w[lp->nstarted];
		/* Workers block every signal (inherited): signals go to the
		 * thread in fs_loop, as with libfuse's loop. */
		if (pthread_create(&nw->thr, NULL, worker_main, nw) == 0)
			lp->nstarted++;
	}
	/* Else every worker is answering a request; the first to finish
	 * takes the role (worker_main). */
}

/* Under lp->lock: the session is over. */
static void finish(struct loop *lp, int error)
{
	if (!lp->done) {
		lp->done = true;
		if (error < 0 && lp->error == 0)
			lp->error = error;
		fuse_session_exit(lp->se);
		for (struct worker *w = lp->idle; w; w = w->next_idle)
			pthread_cond_signal(&w->cond);
		lp->idle = NULL;
		sem_post(&lp->finish);
	}
}

/*
 * Reads the next request into @b with one read(2), as libfuse does when it
 * does not splice (fuse_session_receive_buf_int's fallback): the same
 * buffer, the same errors.  libfuse's splice path costs a splice(2) and a
 * read(2) from its pipe for every request under a page; it pays only for a
 * WRITE, whose pages then go from the caller's page cache to the upper file
 * without a copy through the daemon (op_write_buf).
 */
static int read_request(struct loop *lp, struct fuse_buf *b)
{
	for (;;) {
		ssize_t n = read(fuse_session_fd(lp->se), b->mem, lp->bufsize);
		if (n >= 0) {
			if ((size_t)n < sizeof(struct fuse_in_header))
				return -EIO;
			b->size = (size_t)n;
			b->flags = 0;
			return (int)n;
		}
		if (errno == ENOENT)
			continue; /* the request was interrupted: the next one */
		if (errno == ENODEV) {
			/* Unmounted, or the connection was aborted. */
			fuse_session_exit(lp->se);
			return 0;
		}
		return -errno;
	}
}

/* Set while this thread, the reader, answers a request itself. */
static _Thread_local bool answering_inline;

/* The loop of the request this thread answers itself, and whether it gave up
 * the reader role meanwhile (fs_loop_step_aside). */
static _Thread_local struct loop *inline_loop;
static _Thread_local bool stepped_aside;

/* The request this thread is answering, while libfuse processes it from
 * memory; NULL while it is left in libfuse's pipe (FUSE_BUF_IS_FD). */
static _Thread_local const struct fuse_buf *answering;

static void process(struct loop *lp, const struct fuse_buf *b)
{
	answering = b->flags & FUSE_BUF_IS_FD ? NULL : b;
	fuse_session_process_buf(lp->se, b);
	answering = NULL;
}

void fs_git_run_parked(struct agentfs *fs)
{
	pthread_mutex_lock(&fs->git_lock);
	struct parked *p = fs->git_parked;
	fs->git_parked = NULL;
	fs->git_parked_tail = &fs->git_parked;
	pthread_mutex_unlock(&fs->git_lock);
	while (p) {
		struct parked *next = p->next;
		if (!fuse_session_exited(fs->se)) {
			/* Answered beside the loop's workers: counted as theirs
			 * are (fs_loop_alone). */
			struct fuse_buf b = {.size = p->size, .mem = p->mem};
			__atomic_add_fetch(&fs->handed_off, 1, __ATOMIC_RELAXED);
			answering = &b;
			fuse_session_process_buf(fs->se, &b);
			answering = NULL;
			fs_publish(fs);
			__atomic_sub_fetch(&fs->handed_off, 1, __ATOMIC_RELAXED);
		}
		free(p);
		p = next;
	}
}

int fs_request_kills_suidgid(void)
{
	const struct fuse_buf *b = answering;
	if (!b)
		return -1;
	if (b->size < sizeof(struct fuse_in_header))
		return 0;
	const struct fuse_in_header *in = b->mem;
	const void *arg = in + 1;
	size_t argsz = b->size - sizeof(*in);
	if (in->opcode == FUSE_OPEN && argsz >= sizeof(struct fuse_open_in)) {
		struct fuse_open_in a;
		memcpy(&a, arg, sizeof(a));
		return (a.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
	}
	if (in->opcode == FUSE_WRITE && argsz >= sizeof(struct fuse_write_in)) {
		struct fuse_write_in a;
		memcpy(&a, arg, sizeof(a));
		return (a.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
	}
	return 0;
}

void fs_loop_step_aside(void)
{
	struct loop *lp = inline_loop;
	if (!lp || stepped_aside)
		return;
	pthread_mutex_lock(&lp->lock);
	__atomic_add_fetch(&lp->fs->handed_off, 1, __ATOMIC_RELAXED);
	hand_off(lp);
	pthread_mutex_unlock(&lp->lock);
	stepped_aside = true;
	answering_inline = false;
}

bool fs_loop_alone(const struct agentfs *fs)
{
	return answering_inline && __atomic_load_n(&fs->handed_off, __ATOMIC_RELAXED) == 0;
}

/*
 * Whether the request in @b leaves every file's content, name and attributes
 * as they are, so the releases answered early (op_release) may still wait
 * behind it: lookups, reads, read-only opens, the release of a handle that
 * did not write.  Before any other request the reader finishes them, so
 * their records name the version read and come first.
 */
static bool keeps_deferred(const struct fuse_buf *b)
{
	/* A request left in libfuse's pipe writes (see classify). */
	if ((b->flags & FUSE_BUF_IS_FD) || b->size < sizeof(struct fuse_in_header))
		return false;
	const struct fuse_in_header *in = b->mem;
	const char *arg = (const char *)b->mem + sizeof(*in);
	size_t argsz = b->size - sizeof(*in);
	switch (in->opcode) {
	case FUSE_LOOKUP:
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_GETATTR:
	case FUSE_READLINK:
	case FUSE_READ:
	case FUSE_STATFS:
	case FUSE_GETXATTR:
	case FUSE_LISTXATTR:
	case FUSE_OPENDIR:
	case FUSE_READDIR:
	case FUSE_READDIRPLUS:
	case FUSE_RELEASEDIR:
	case FUSE_ACCESS:
	case FUSE_INTERRUPT:
	case FUSE_LSEEK:
		return true;
	case FUSE_OPEN:
		return open_reads_only(arg, argsz);
	case FUSE_RELEASE: {
		struct fuse_release_in r;
		if (argsz < sizeof(r))
			return false;
		memcpy(&r, arg, sizeof(r));
		return !handle_wrote(r.fh) && handle_release_quick(r.fh);
	}
	default:
		return false;
	}
}

static long mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* The opcode of the request in @b, or 0 when it is too short to have one.
 * A request still in libfuse's pipe (b->mem is then not the request) counts
 * as a WRITE: libfuse leaves only requests of more than a page there, in
 * practice WRITEs (see classify()). */
static uint32_t opcode_of(const struct fuse_buf *b)
{
	if (b->flags & FUSE_BUF_IS_FD)
		return FUSE_WRITE;
	if (b->size < sizeof(struct fuse_in_header))
		return 0;
	return ((const struct fuse_in_header *)b->mem)->opcode;
}

static bool finish_deferred(struct loop *lp, bool all)
{
	return lp->fs->deferred && fs_release_deferred(lp->fs, all);
}

/*
 * Reads the next request into me->buf, as fuse_session_receive_buf does.
 * @after is the opcode of the request the reader answered last (0 if none).
 *
 * /dev/fuse is non-blocking.  When no request is queued the reader finishes
 * the releases answered early, then, in a spinning loop, may keep trying for
 * up to LOOP_SPIN_NS, giving its CPU to anything else runnable between tries
 * (sched_yield(2)), before it sleeps in poll(2) (until a request, or the end
 * of the loop: wake_fd).  The caller of a request sleeps in the kernel until its
 * answer, and its next request often follows within microseconds: a reader
 * still on the CPU takes it without the wake-up of a sleeping thread (an
 * inter-processor interrupt and, in a virtual machine, an exit from the
 * idle guest), most of a FUSE round trip on such machines.  Whether the
 * next request is near depends on what the caller does with the answer
 * (after a RELEASE it opens the next file; after an OPEN it may work on the
 * file's data for longer), so the reader keeps, per opcode, a moving
 * average of the time until the next request (gaps counted at most
 * 2 * LOOP_SPIN_NS) and spins only after opcodes whose average is under
 * LOOP_SPIN_NS.  It does not spin while a handed-off request is being
 * answered: that worker, the caller and the reader would share two CPUs.
 *
 * Returns what fuse_session_receive_buf returns: the request's size, 0 at
 * the end of the session (or of the loop), or -errno.
 */
static int receive(struct loop *lp, struct worker *me, uint32_t after)
{
	long *gap = lp->spin && after && after < LOOP_OPCODES ? &lp->gap_ns[after] : NULL;
	bool spin = gap && *gap < LOOP_SPIN_NS;
	long t0 = -1, waited = 0;
	/* Allocated here, never by libfuse, so that read_request may fill
	 * lp->bufsize bytes of it whichever call came first. */
	if (!me->buf.mem && !(me->buf.mem = malloc(lp->bufsize)))
		return -ENOMEM;
	for (;;) {
		/* libfuse's receive splices (FUSE_CAP_SPLICE_READ, fs.c) while a
		 * file is being written in large blocks (agentfs.bulk_writers);
		 * for any other request one read does. */
		int res;
		if (__atomic_load_n(&lp->fs->bulk_writers, __ATOMIC_RELAXED)) {
			/* libfuse's read(2) fallback (a pipe it could not
			 * grow) leaves the flags of the previous request. */
			me->buf.flags = 0;
			res = fuse_session_receive_buf(lp->se, &me->buf);
		} else {
			res = read_request(lp, &me->buf);
		}
		if (res != -EAGAIN) {
			if (gap && res > 0) {
				if (t0 >= 0)
					waited = mono_ns() - t0;
				if (waited > 2 * LOOP_SPIN_NS)
					waited = 2 * LOOP_SPIN_NS;
				*gap += (waited - *gap) / 8;
			}
			return res;
		}
		/* Nothing queued: time for the releases answered early. */
		if (finish_deferred(lp, false))
			continue;
		long t = mono_ns();
		if (t0 < 0)
			t0 = t;
		if (spin && t - t0 < LOOP_SPIN_NS &&
		    __atomic_load_n(&lp->fs->handed_off, __ATOMIC_RELAXED) == 0) {
			sched_yield();
			continue;
		}
		if (finish_deferred(lp, true))
			continue;
		/* POLLERR once the connection is gone: the read then ends it.
		 * wake_fd readable: the loop ends (fs_loop), as at the end of
		 * the session. */
		struct pollfd p[2] = {{.fd = fuse_session_fd(lp->se), .events = POLLIN},
				      {.fd = lp->wake_fd, .events = POLLIN}};
		if (poll(p, 2, -1) > 0 && (p[1].revents & POLLIN))
			return 0;
		spin = false;
	}
}

static void *worker_main(void *arg)
{
	struct worker *me = arg;
	struct loop *lp = me->lp;
	/* Named for `top -H` and for tests/integration/concurrency.sh. */
	pthread_setname_np(pthread_self(), "agentfs-fuse");
	pthread_mutex_lock(&lp->lock);
	for (;;) {
		/* Become the reader, or wait to be handed the role. */
		if (lp->reader && !lp->done) {
			me->go = false;
			me->next_idle = lp->idle;
			lp->idle = me;
			while (!me->go && !lp->done)
				pthread_cond_wait(&me->cond, &lp->lock);
		}
		if (lp->done)
			break;
		lp->reader = true;
		pthread_mutex_unlock(&lp->lock);
		uint32_t after = 0; /* the opcode this reader answered last */
		for (;;) {
			int res = receive(lp, me, after);
			if (res == -EINTR)
				continue;
			if (res <= 0 || fuse_session_exited(lp->se)) {
				pthread_mutex_lock(&lp->lock);
				finish(lp, res);
				goto out;
			}
			/* Whatever the requests before this one did (see
			 * agentfs.epoch). */
			(void)__atomic_load_n(&lp->fs->epoch, __ATOMIC_ACQUIRE);
			enum kind k = classify(lp, &me->buf);
			if (lp->fs->deferred && (k != INLINE || !keeps_deferred(&me->buf)))
				fs_release_deferred(lp->fs, true);
			if (k == INLINE) {
				after = opcode_of(&me->buf);
				answering_inline = true;
				inline_loop = lp;
				process(lp, &me->buf);
				answering_inline = false;
				inline_loop = NULL;
				if (!stepped_aside)
					continue;
				/* Handed off on the way (fs_loop_step_aside). */
				stepped_aside = false;
				fs_publish(lp->fs);
				__atomic_sub_fetch(&lp->fs->handed_off, 1, __ATOMIC_RELAXED);
				pthread_mutex_lock(&lp->lock);
				break; /* to the top, under the lock */
			}
			pthread_mutex_lock(&lp->lock);
			if (k == HAND_OFF_NOTIFIES)
				__atomic_add_fetch(&lp->notifying, 1, __ATOMIC_RELEASE);
			__atomic_add_fetch(&lp->fs->handed_off, 1, __ATOMIC_RELAXED);
			hand_off(lp);
			pthread_mutex_unlock(&lp->lock);
			if (!park_for_git(lp, &me->buf))
				process(lp, &me->buf);
			fs_publish(lp->fs);
			__atomic_sub_fetch(&lp->fs->handed_off, 1, __ATOMIC_RELAXED);
			pthread_mutex_lock(&lp->lock);
			if (k == HAND_OFF_NOTIFIES)
				__atomic_sub_fetch(&lp->notifying, 1, __ATOMIC_RELEASE);
			break; /* to the top, under the lock */
		}
	}
out:
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

int fs_loop(struct agentfs *fs, unsigned max_threads, int *ready_fd)
{
	struct loop lp = {.fs = fs,
			  .se = fs->se,
			  .max_threads = max_threads ? max_threads : 1,
			  .bufsize = 256 * (size_t)sysconf(_SC_PAGESIZE) + 4096};
	lp.w = calloc(lp.max_threads, sizeof(*lp.w));
	if (!lp.w)
		return -ENOMEM;
	for (unsigned i = 0; i < lp.max_threads; i++) {
		lp.w[i].lp = &lp;
		pthread_cond_init(&lp.w[i].cond, NULL);
	}
	pthread_mutex_init(&lp.lock, NULL);
	sem_init(&lp.finish, 0, 0);

	/* A non-blocking /dev/fuse, read after poll(2) on it and on wake_fd:
	 * the end of the loop wakes a sleeping reader through wake_fd (with a
	 * blocking read only pthread_cancel could, and a cancelled thread
	 * unwinds through libfuse and libc).  Releases answered early are
	 * finished when a read finds nothing (receive()).  AGENTFS_NOSPIN in
	 * the daemon's environment: sleep as soon as the queue is empty, for
	 * machines where a busy CPU costs more than a wake-up (a laptop on
	 * battery). */
	int fd = fuse_session_fd(lp.se);
	int fl = fcntl(fd, F_GETFL);
	lp.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (lp.wake_fd < 0 || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
		int e = -errno;
		if (lp.wake_fd >= 0)
			close(lp.wake_fd);
		for (unsigned i = 0; i < lp.max_threads; i++)
			pthread_cond_destroy(&lp.w[i].cond);
		sem_destroy(&lp.finish);
		pthread_mutex_destroy(&lp.lock);
		free(lp.w);
		return e;
	}
	lp.spin = getenv("AGENTFS_NOSPIN") == NULL;
	fs->defer_releases = true;
	fs_signal_ready(ready_fd);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_mutex_lock(&lp.lock);
	hand_off(&lp);
	bool ok = lp.nstarted > 0;
	pthread_mutex_unlock(&lp.lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!ok) {
		lp.error = -EAGAIN;
	} else {
		/* fuse_set_signal_handlers' handlers end the session on SIGINT,
		 * SIGTERM and SIGHUP; they interrupt this wait. */
		while (!fuse_session_exited(fs->se)) {
			pthread_mutex_lock(&lp.lock);
			bool done = lp.done;
			pthread_mutex_unlock(&lp.lock);
			if (done)
				break;
			sem_wait(&lp.finish);
		}
	}
	pthread_mutex_lock(&lp.lock);
	finish(&lp, 0);
	unsigned n = lp.nstarted;
	pthread_mutex_unlock(&lp.lock);
	/* A reader may still be asleep in poll(2) when a signal ended the
	 * session: wake_fd ends it. */
	uint64_t one = 1;
	(void)!write(lp.wake_fd, &one, sizeof(one));
	for (unsigned i = 0; i < n; i++) {
		pthread_join(lp.w[i].thr, NULL);
		free(lp.w[i].buf.mem);
	}
	fs_release_deferred(fs, true); /* a reader stopped by the end */
	for (unsigned i = 0; i < lp.max_threads; i++)
		pthread_cond_destroy(&lp.w[i].cond);
	sem_destroy(&lp.finish);
	pthread_mutex_destroy(&lp.lock);
	close(lp.wake_fd);
	int r = lp.error;
	free(lp.w);
	return r;
}
