/* writer.h - struct journal, shared by writer.c and recover.c only. */
#ifndef AGENTFS_JOURNAL_WRITER_H
#define AGENTFS_JOURNAL_WRITER_H

#include "journal/internal.h"

/* One queued event: the event with its strings moved into @blob. */
struct qev {
	struct journal_event ev;
	int64_t time_ns;
	const char *comm, *exe; /* in blob, NULL when unknown */
	char *blob;
	bool oom;
};

struct journal {
	char *path, *head_path;
	int fd, head_fd;
	enum journal_sync sync;
	struct journal_proc_cache *procs;

	pthread_mutex_t lock;
	pthread_cond_t nonempty, space, flushed;
	struct qev *q, *q2; /* producers append to q; the writer swaps q and q2 */
	size_t n;
	uint64_t enqueued, written, full_waits;
	uint64_t syncs;	 /* fdatasync()s of the writer; atomic */
	uint64_t rounds; /* batches the writer took, empty ones too; under lock */
	int flushers;
	bool stop, stopped;
	bool idle; /* interval and never modes: the writer waits for a first record */
	int err;   /* first write error, sticky */
	pthread_t thread;

	/* Writer thread only (and journal_open before it starts). */
	uint64_t seq, out_seq;
	XXH128_hash_t prev;
	off_t size;
	struct jbuf out;

	/* From the scan at open, for journal_recover_upper(). */
	struct journal_pathmap *map;
	struct journal_pathmap *touched; /* journal_touched_apply(); freed by it */
	int64_t last_time_ns;
	bool crashed;

	/* The open's scan: lines it parsed, journal bytes it took from the
	 * saved state instead (checkpoint.c). */
	uint64_t replayed;
	off_t resumed;
	/* The end of the journal the saved state describes (0: none); under
	 * lock. */
	off_t checkpoint_end;
	/* The state thread (writer.c, state_main): started by the writer
	 * (state_started; j->size then in state_tried, writer thread only),
	 * done (under lock), joined by the next start or the close. */
	pthread_t state_thread;
	bool state_started, state_done;
	off_t state_tried;
	/* Under lock: the journal's end when the thread was started (what it
	 * reads up to), and "no state can be saved this session" (the open
	 * found damage before the tail, which stays, or a save failed): no
	 * refresh is started, nor made at close. */
	off_t state_limit;
	bool state_broken;
	/* STATE_IDLE_BYTES and STATE_BUSY_BYTES, under lock (the unit tests
	 * lower them). */
	off_t state_idle_bytes, state_busy_bytes;
	/* NULL but in the unit tests, which hold it to keep a started state
	 * thread at work: it takes and drops it before it reads.  Set before
	 * the first start. */
	pthread_mutex_t *state_gate;
	/* The last refresh's clean scan, its maps and its hash of the bytes
	 * it read: the next refresh goes on from it (writer.c,
	 * checkpoint_refresh).  The state thread's, then the close's. */
	struct journal_scan *live;
	XXH3_state_t *live_prefix;
};

/* The writer starts the state thread once it rested this long with at least
 * this much appended since the saved state (~4,000 records, ~20 ms to
 * parse): the close then has little left to parse. */
#define STATE_IDLE_MS	 1000
#define STATE_IDLE_BYTES (1 << 20)
/* And without a rest, once this much was appended since (~60,000 records,
 * ~0.4 s to parse at nice 19): the close never has much more than this to
 * parse. */
#define STATE_BUSY_BYTES (16 << 20)

/* Times journal_record() waited for a full queue. */
uint64_t journal_full_waits(struct journal *j);

/* Times the writer has fdatasync()ed the journal since journal_open(). */
uint64_t journal_syncs(struct journal *j);

/* Times the writer has woken to take a batch (empty or not) since
 * journal_open(): at most one per JOURNAL_INTERVAL_MS while records come
 * (more when the queue fills or a flush waits), none while none come. */
uint64_t journal_writer_rounds(struct journal *j);

#endif
