/*
 * writer.c - the journal's queue and writer thread: journal_open(),
 * journal_record(), journal_flush(), journal_close().
 *
 * journal_record() runs on FUSE worker threads.  It names the process (proc.c),
 * copies the event and its strings into one allocation, and appends it to the
 * queue under a short mutex.  The queue is two arrays swapped by the writer, so
 * the lock is held for a pointer swap, not for formatting.  When the queue is
 * full the caller waits for the writer rather than drop a record (counted in
 * full_waits; the writer empties a full queue in well under a millisecond).
 *
 * The writer thread alone assigns seq and prev, formats lines (record.c), and
 * appends them with one pwrite() per batch, then fdatasync()s per the sync mode
 * and rewrites the head file (chain.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal/internal.h"
#include "journal/writer.h"

#define NEVER_WRITE_AT (64 * 1024)

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void free_batch(struct qev *q, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(q[i].blob);
}

/* Copy @s into the blob at *at; returns the copy or NULL for NULL. */
static const char *stash(char **at, const char *s, size_t n)
{
	if (!s)
		return NULL;
	char *d = *at;
	memcpy(d, s, n + 1);
	*at += n + 1;
	return d;
}

static void enqueue(struct journal *j, const struct journal_event *ev, const char *comm,
		    const char *exe)
{
	size_t lp = ev->path ? strlen(ev->path) : 0, lp2 = ev->path2 ? strlen(ev->path2) : 0,
	       ld = ev->detail ? strlen(ev->detail) : 0, lc = comm ? strlen(comm) : 0,
	       le = exe ? strlen(exe) : 0;
	struct qev q = {.ev = *ev};
	q.blob = malloc(lp + lp2 + ld + lc + le + 5);
	if (!q.blob) {
		/* Keep the event without its strings rather than lose it. */
		q.ev.path = q.ev.path2 = q.ev.detail = NULL;
		q.oom = true;
	} else {
		char *at = q.blob;
		q.ev.path = stash(&at, ev->path, lp);
		q.ev.path2 = stash(&at, ev->path2, lp2);
		q.ev.detail = stash(&at, ev->detail, ld);
		q.comm = stash(&at, comm, lc);
		q.exe = stash(&at, exe, le);
	}

	pthread_mutex_lock(&j->lock);
	while (j->n == JOURNAL_QUEUE_MAX && !j->stopped) {
		j->full_waits++;
		pthread_cond_signal(&j->nonempty);
		pthread_cond_wait(&j->space, &j->lock);
	}
	if (j->stopped) { /* recorded after close began: nowhere to go */
		pthread_mutex_unlock(&j->lock);
		free(q.blob);
		return;
	}
	/* Time taken under the lock, so time_ns never goes backwards along seq. */
	q.time_ns = now_ns();
	j->q[j->n++] = q;
	j->enqueued++;
	if (j->sync == JOURNAL_SYNC_ALWAYS || j->n == JOURNAL_QUEUE_MAX / 2 || j->idle)
		pthread_cond_signal(&j->nonempty);
	pthread_mutex_unlock(&j->lock);
}

void journal_record(struct journal *j, const struct journal_event *ev)
{
	if (!j || !ev)
		return;
	char comm[17], exe[PATH_MAX];
	struct journal_event e = *ev;
	/* e.pid becomes the process id when the request came from a thread. */
	bool named = journal_proc_identify(j->procs, ev->pid, ev->pid_start, comm, exe, sizeof(exe),
					   &e.pid, NULL) == 1;
	enqueue(j, &e, named ? comm : NULL, named ? exe : NULL);
}

uint64_t journal_process_start(struct journal *j, pid_t *pid)
{
	if (!j)
		return 0;
	char comm[17], exe[PATH_MAX];
	uint64_t start = 0;
	pid_t tgid;
	if (journal_proc_identify(j->procs, *pid, 0, comm, exe, sizeof(exe), &tgid, &start) != 1)
		return 0;
	*pid = tgid;
	return start;
}

/* Detail text that is a JSON object goes in as an object (compact, one line);
 * anything else as a string.  Returns malloc'd JSON or NULL. */
static char *detail_object(const char *detail)
{
	if (!detail || detail[0] != '{')
		return NULL;
	json_t *o = json_loads(detail, JSON_REJECT_DUPLICATES, NULL);
	char *s = NULL;
	if (o && json_is_object(o))
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static void format_batch(struct journal *j, struct qev *q, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct journal_who who = {q[i].comm, q[i].exe};
		char *dj = detail_object(q[i].ev.detail);
		size_t start = j->out.len;
		struct journal_event ev = q[i].ev;
		if (q[i].oom && !ev.detail)
			ev.detail = "strings lost: out of memory when recorded";
		journal_format(&j->out, j->seq + 1, j->prev, q[i].time_ns, &ev, &who, dj);
		free(dj);
		if (j->out.oom)
			break;
		j->seq++;
		j->prev = journal_chain_hash(j->out.p + start, j->out.len - start);
		jbuf_putc(&j->out, '\n');
		j->out_seq = j->seq;
	}
}

/* Write the formatted buffer, sync, update the head.  Writer thread only. */
static int write_out(struct journal *j)
{
	if (j->out.len == 0)
		return 0;
	size_t done = 0;
	while (done < j->out.len) {
		ssize_t w =
		    pwrite(j->fd, j->out.p + done, j->out.len - done, j->size + (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int err = w < 0 ? -errno : -EIO;
			/* Leave no partial line behind; the buffer is retried next time. */
			if (ftruncate(j->fd, j->size) < 0) {
				/* the next mount trims the torn tail */
			}
			return err;
		}
		done += (size_t)w;
	}
	j->size += (off_t)done;
	j->out.len = 0;
	if (j->sync != JOURNAL_SYNC_NEVER) {
		if (fdatasync(j->fd) < 0)
			return -errno;
		__atomic_fetch_add(&j->syncs, 1, __ATOMIC_RELAXED);
	}
	struct journal_head h = {j->out_seq, j->prev, (uint64_t)j->size};
	if (j->head_fd >= 0)
		return journal_head_write_fd(j->head_fd, &h);
	return 0;
}

/* A flusher waits for records not written yet.  Not merely "a flusher is
 * counted": one whose records are written stays counted until it takes the
 * lock back, and a writer that did not wait meanwhile took empty batch after
 * empty batch (hundreds of thousands in 300 ms with the flusher kept off the
 * CPU; tests/unit/test_journal_writer.c).  Under j->lock. */
static bool flush_pending(const struct journal *j)
{
	return j->flushers > 0 && j->written < j->enqueued;
}

/* ---- the saved state (checkpoint.c) --------------------------------------- */

/* After a scan of the whole journal open as @fd into @s, fed to @prefix:
 * when it found every line intact and read any past @from, save its state
 * at @sp (a failure to save costs a later open a longer scan, nothing
 * else).  The journal may have grown during the scan (the state thread):
 * the scan then ended at a complete line or found a torn one, and the size
 * check or the bad line keeps it from being saved.  True when the scan was
 * clean, saved or not. */
static bool save_if_clean(struct journal *j, const char *sp, struct journal_scan *s,
			  const XXH3_state_t *prefix, off_t from)
{
	bool clean = !s->bad_line && s->intact_end == s->file_size;
	int r = clean && s->intact_end > from ? journal_checkpoint_save(sp, s, prefix) : 0;
	pthread_mutex_lock(&j->lock);
	if (clean && r == 0 && s->intact_end > j->checkpoint_end)
		j->checkpoint_end = s->intact_end;
	/* Damage before the tail stays (it is evidence), and a state file
	 * that cannot be written now will not be later this session: no
	 * refresh would save anything, and each would parse all that follows
	 * the last state. */
	if (r < 0 || (s->bad_line && !s->bad_is_tail))
		j->state_broken = true;
	pthread_mutex_unlock(&j->lock);
	return clean;
}

/* Scan the journal, open as @fd, into @s, from the saved state when there is
 * one that describes how it begins (*@from: the bytes it covered, 0 if
 * none), and save the state of the end when the scan was clean. */
static int scan_and_checkpoint(struct journal *j, int fd, struct journal_scan *s, off_t *from)
{
	char *sp = journal_state_path(j->path);
	XXH3_state_t *prefix = XXH3_createState();
	int r = sp && prefix ? 0 : -ENOMEM;
	if (r == 0) {
		XXH3_128bits_reset(prefix);
		r = journal_checkpoint_load(sp, fd, s, prefix);
	}
	*from = r == 1 ? s->intact_end : 0;
	pthread_mutex_lock(&j->lock);
	j->checkpoint_end = *from;
	pthread_mutex_unlock(&j->lock);
	s->lines_resumed = s->lines;
	s->prefix = prefix;
	if (r >= 0)
		r = journal_scan_fd(fd, s);
	s->prefix = NULL;
	if (r == 0)
		save_if_clean(j, sp, s, prefix, *from);
	XXH3_freeState(prefix);
	free(sp);
	return r;
}

static void live_free(struct journal *j)
{
	if (j->live) {
		journal_pathmap_free(j->live->map);
		journal_pathmap_free(j->live->touched);
		free(j->live);
	}
	if (j->live_prefix)
		XXH3_freeState(j->live_prefix);
	j->live = NULL;
	j->live_prefix = NULL;
}

/* Bring the saved state to the end of the journal open as @fd.  The first
 * refresh of a session loads the saved state (hashing the journal's bytes it
 * stands for) into maps of its own (the open's were changed by crash
 * recovery and freed); a clean scan is kept (j->live) and the next refresh
 * goes on from it, parsing and hashing only what came since.  Whatever was
 * written meanwhile to the part already read is no concern of the state:
 * the next open hashes the file itself. */
static void checkpoint_refresh(struct journal *j, int fd, off_t limit)
{
	pthread_mutex_lock(&j->lock);
	bool failed = j->err != 0;
	pthread_mutex_unlock(&j->lock);
	char *sp = journal_state_path(j->path);
	if (failed || !sp) {
		free(sp);
		return;
	}
	int r = 0;
	off_t from;
	if (j->live) {
		from = j->live->intact_end;
	} else {
		j->live = calloc(1, sizeof(*j->live));
		j->live_prefix = XXH3_createState();
		if (!j->live || !j->live_prefix || journal_pathmap_new(&j->live->map) < 0 ||
		    journal_pathmap_new(&j->live->touched) < 0)
			r = -ENOMEM;
		if (r == 0) {
			XXH3_128bits_reset(j->live_prefix);
			r = journal_checkpoint_load(sp, fd, j->live, j->live_prefix);
		}
		from = r == 1 ? j->live->intact_end : 0;
	}
	struct journal_scan *s = j->live;
	if (r >= 0) {
		s->resume = from > 0;
		s->lines_resumed = s->lines;
		s->prefix = j->live_prefix;
		s->limit = limit;
		r = journal_scan_fd(fd, s);
		s->prefix = NULL;
	}
	if (r < 0 || !save_if_clean(j, sp, s, j->live_prefix, from))
		live_free(j);
	free(sp);
}

/* The state thread: one refresh, at the lowest priority, while the writer
 * goes on appending (a refresh in the writer held records back from the
 * disk for as long as it parsed).  It reads through j->fd: the writer's
 * pwrite()s leave the file offset alone, and no one else moves it while
 * the thread runs (journal_close() joins it first). */
static void *state_main(void *arg)
{
	struct journal *j = arg;
	setpriority(PRIO_PROCESS, (id_t)gettid(), 19); /* best effort */
	if (j->state_gate) {
		pthread_mutex_lock(j->state_gate);
		pthread_mutex_unlock(j->state_gate);
	}
	pthread_mutex_lock(&j->lock);
	off_t limit = j->state_limit;
	pthread_mutex_unlock(&j->lock);
	checkpoint_refresh(j, j->fd, limit);
	pthread_mutex_lock(&j->lock);
	j->state_done = true;
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* Is a refresh of the saved state worth starting?  At least @bytes
 * appended since the state and since the last start, and a state can be
 * saved (j->state_broken).  Writer thread, under j->lock. */
static bool state_due(const struct journal *j, off_t bytes)
{
	return !j->state_broken && j->size - j->checkpoint_end >= bytes &&
	       j->size - j->state_tried >= bytes;
}

/* Start the state thread, unless the last one is still at work.  Under
 * j->lock. */
static void state_start(struct journal *j)
{
	/* Still at work: asked again at the writer's next rest or write, as
	 * long as the refresh is due (state_tried moves only with a start). */
	if (j->state_started && !j->state_done)
		return;
	j->state_tried = j->size;
	j->state_limit = j->size; /* whole records, written */
	if (j->state_started)
		pthread_join(j->state_thread, NULL);
	j->state_started = false;
	j->state_done = false;
	if (pthread_create(&j->state_thread, NULL, state_main, j) == 0)
		j->state_started = true;
}

/* @t plus @ms milliseconds, normalised. */
static void add_ms(struct timespec *t, long ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	t->tv_sec += t->tv_nsec / 1000000000L;
	t->tv_nsec %= 1000000000L;
}

static void *writer_main(void *arg)
{
	struct journal *j = arg;
	pthread_mutex_lock(&j->lock);
	/* Interval mode: one write and fdatasync per JOURNAL_INTERVAL_MS at most
	 * while records keep coming (a steady stream would otherwise sync back to
	 * back), sooner when the queue is half full, a flush waits or the journal
	 * closes.  With nothing queued the writer sleeps until a record comes
	 * (j->idle): a mount nobody uses wakes no thread.  Not while records
	 * whose write failed wait in j->out (a full disk, EIO): they are
	 * retried every interval, in the always mode too.
	 * The deadline runs on CLOCK_REALTIME, the condition's clock. */
	struct timespec due_at;
	clock_gettime(CLOCK_REALTIME, &due_at);
	for (;;) {
		bool retry = j->sync != JOURNAL_SYNC_NEVER && j->out.len > 0;
		if (j->sync == JOURNAL_SYNC_ALWAYS && !retry) {
			while (j->n == 0 && !j->stop && !flush_pending(j))
				pthread_cond_wait(&j->nonempty, &j->lock);
		} else {
			if (j->n == 0 && !j->stop && !flush_pending(j) && !retry) {
				j->idle = true;
				while (j->n == 0 && !j->stop && !flush_pending(j)) {
					if (!state_due(j, j->state_idle_bytes)) {
						pthread_cond_wait(&j->nonempty, &j->lock);
						continue;
					}
					/* Rested STATE_IDLE_MS with much unsaved:
					 * the state thread brings the saved state
					 * up to date. */
					struct timespec rest;
					clock_gettime(CLOCK_REALTIME, &rest);
					add_ms(&rest, STATE_IDLE_MS);
					if (pthread_cond_timedwait(&j->nonempty, &j->lock, &rest) !=
						ETIMEDOUT ||
					    j->n || j->stop || flush_pending(j))
						continue;
					state_start(j);
				}
				j->idle = false;
				/* The first record after a rest waits one interval for
				 * the ones that follow it. */
				clock_gettime(CLOCK_REALTIME, &due_at);
			}
			add_ms(&due_at, JOURNAL_INTERVAL_MS);
			while (j->n < JOURNAL_QUEUE_MAX / 2 && !j->stop && !flush_pending(j) &&
			       pthread_cond_timedwait(&j->nonempty, &j->lock, &due_at) !=
				   ETIMEDOUT) {
			}
			clock_gettime(CLOCK_REALTIME, &due_at);
		}
		j->rounds++;
		struct qev *batch = j->q;
		size_t n = j->n;
		j->q = j->q2;
		j->q2 = batch;
		j->n = 0;
		uint64_t target = j->enqueued;
		bool stopping = j->stop, flushing = j->flushers > 0;
		pthread_cond_broadcast(&j->space);
		pthread_mutex_unlock(&j->lock);

		format_batch(j, batch, n);
		free_batch(batch, n);
		int err = 0;
		bool due = j->sync != JOURNAL_SYNC_NEVER || stopping || flushing ||
			   j->out.len >= NEVER_WRITE_AT;
		if (j->out.oom)
			err = -ENOMEM;
		else if (due)
			err = write_out(j);

		pthread_mutex_lock(&j->lock);
		/* A failed write's records wait in j->out for the next one: the
		 * error lasts until a write succeeds, except a record lost to
		 * memory, which no later write brings back. */
		if (err && j->err != -ENOMEM)
			j->err = err;
		else if (!err && due && j->err != -ENOMEM)
			j->err = 0;
		if (due)
			j->written = target;
		if (!err && state_due(j, j->state_busy_bytes))
			state_start(j);
		pthread_cond_broadcast(&j->flushed);
		if (stopping && j->n == 0)
			break;
	}
	j->stopped = true;
	pthread_cond_broadcast(&j->space);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

int journal_flush(struct journal *j)
{
	if (!j)
		return 0;
	pthread_mutex_lock(&j->lock);
	uint64_t target = j->enqueued;
	j->flushers++;
	pthread_cond_signal(&j->nonempty);
	while (j->written < target && !j->stopped)
		pthread_cond_wait(&j->flushed, &j->lock);
	j->flushers--;
	int err = j->err;
	pthread_mutex_unlock(&j->lock);
	return err;
}

static void destroy(struct journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	if (j->head_fd >= 0)
		close(j->head_fd);
	free_batch(j->q, j->n);
	free(j->q);
	free(j->q2);
	jbuf_free(&j->out);
	journal_proc_cache_free(j->procs);
	journal_pathmap_free(j->map);
	journal_pathmap_free(j->touched);
	live_free(j);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->nonempty);
	pthread_cond_destroy(&j->space);
	pthread_cond_destroy(&j->flushed);
	free(j->path);
	free(j->head_path);
	free(j);
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	j->stop = true;
	pthread_cond_signal(&j->nonempty);
	pthread_mutex_unlock(&j->lock);
	pthread_join(j->thread, NULL);
	if (j->state_started)
		pthread_join(j->state_thread, NULL);
	/* The rest, so that the next open parses nothing of this session. */
	if (!j->state_broken && j->size > j->checkpoint_end)
		checkpoint_refresh(j, j->fd, 0);
	destroy(j);
}

void journal_open_stats(const struct journal *j, uint64_t *replayed, uint64_t *resumed)
{
	*replayed = j ? j->replayed : 0;
	*resumed = j ? (uint64_t)j->resumed : 0;
}

uint64_t journal_syncs(struct journal *j)
{
	return __atomic_load_n(&j->syncs, __ATOMIC_RELAXED);
}

uint64_t journal_writer_rounds(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	uint64_t n = j->rounds;
	pthread_mutex_unlock(&j->lock);
	return n;
}

uint64_t journal_full_waits(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	uint64_t n = j->full_waits;
	pthread_mutex_unlock(&j->lock);
	return n;
}

/* A record the journal makes about itself (recovery at open). */
static void record_self(struct journal *j, enum journal_op op, int result, const char *path,
			const char *detail)
{
	struct journal_event ev = {
	    .op = op,
	    .result = result,
	    .pid = getpid(),
	    .uid = getuid(),
	    .path = path,
	    .detail = detail,
	};
	journal_record(j, &ev);
}

/* Look at what the last session left: trim a torn tail, note a crash, lost
 * records or damage in one JOP_RECOVER record. */
static int recover_tail(struct journal *j)
{
	struct journal_head head;
	int hr = journal_head_read(j->head_path, &head);
	struct journal_scan s = {
	    .map = j->map, .touched = j->touched, .head = hr == 1 ? &head : NULL};
	if (hr == 1)
		s.check_seq = head.seq;
	off_t from;
	int r = scan_and_checkpoint(j, j->fd, &s, &from);
	if (r < 0)
		return r;
	j->replayed = s.lines - s.lines_resumed;
	j->resumed = from;
	j->last_time_ns = s.last_time_ns;

	off_t keep = s.bad_line && s.bad_is_tail ? s.intact_end : s.complete_end;
	uint64_t trimmed = (uint64_t)(s.file_size - keep);
	if (trimmed && ftruncate(j->fd, keep) < 0)
		return -errno;
	j->size = keep;
	if (s.bad_line && !s.bad_is_tail) {
		/* Damage before the tail stays; continue the chain from the last line. */
		j->seq = s.file_last_seq;
		j->prev = s.file_last_hash;
	} else {
		j->seq = s.last_seq;
		j->prev = s.last_hash;
	}
	/* Not "the last record is no unmount": records appended without a
	 * daemon (an unmounted workspace's discard) follow a clean unmount. */
	j->crashed = s.records > 0 && s.session_open;
	bool lost = hr == 1 && (head.seq > s.last_seq ||
				(s.check_found && !XXH128_isEqual(s.check_hash, head.hash)));
	if (!j->crashed && !trimmed && !lost && !s.bad_line && hr >= 0)
		return 0;
	/* Noted once already (the crash is still one: j->crashed stays, so the
	 * mount still recovers the upper). */
	if (j->crashed && s.crash_noted && !trimmed && !lost && !s.bad_line && hr >= 0)
		return 0;

	json_t *d = json_object();
	json_object_set_new(d, "event", json_string(j->crashed || trimmed ? "crash" : "repair"));
	json_object_set_new(d, "last_intact_seq", json_integer((json_int_t)s.last_seq));
	json_object_set_new(d, "trimmed_bytes", json_integer((json_int_t)trimmed));
	if (s.bad_line) {
		json_object_set_new(d, "bad_line", json_integer((json_int_t)s.bad_line));
		json_object_set_new(d, "why", json_string(s.why));
	}
	if (lost) {
		json_object_set_new(d, "head_seq", json_integer((json_int_t)head.seq));
		json_object_set_new(d, "lost",
				    json_string("the head file records a later or "
						"different record than the journal holds"));
	}
	if (hr < 0)
		json_object_set_new(d, "head", json_string("unreadable"));
	char *txt = json_dumps(d, JSON_COMPACT);
	json_decref(d);
	record_self(j, JOP_RECOVER, s.bad_line && !s.bad_is_tail ? -EBADMSG : 0, NULL,
		    txt ? txt : "crash recovery");
	free(txt);
	return 0;
}

int journal_open(struct journal **out, const char *path, enum journal_sync sync)
{
	struct journal *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = j->head_fd = -1;
	j->sync = sync;
	j->state_idle_bytes = STATE_IDLE_BYTES;
	j->state_busy_bytes = STATE_BUSY_BYTES;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->nonempty, NULL);
	pthread_cond_init(&j->space, NULL);
	pthread_cond_init(&j->flushed, NULL);
	int r = -ENOMEM;
	j->path = strdup(path);
	j->head_path = j->path ? journal_head_path(path) : NULL;
	j->q = calloc(JOURNAL_QUEUE_MAX, sizeof(*j->q));
	j->q2 = calloc(JOURNAL_QUEUE_MAX, sizeof(*j->q2));
	if (!j->head_path || !j->q || !j->q2)
		goto fail;
	if ((r = journal_proc_cache_new(&j->procs)) < 0 || (r = journal_pathmap_new(&j->map)) < 0 ||
	    (r = journal_pathmap_new(&j->touched)) < 0)
		goto fail;
	j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (j->fd < 0) {
		r = -errno;
		goto fail;
	}
	/* One writer per journal: a second daemon on the same workspace would fork
	 * the chain. */
	if (flock(j->fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	j->head_fd = open(j->head_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (j->head_fd < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = recover_tail(j)) < 0)
		goto fail;
	if ((r = pthread_create(&j->thread, NULL, writer_main, j)) != 0) {
		r = -r;
		goto fail;
	}
	*out = j;
	return 0;
fail:
	destroy(j);
	return r;
}
