/* test_journal_writer.c - the writer thread, process names, crash recovery. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs/layout.h"
#include "journal/internal.h"
#include "journal/journal.h"
#include "journal/writer.h"
#include "tests/unit/journal_testlib.h"

static struct journal_entry *read_all(const char *path, size_t *n)
{
	struct journal_reader *r;
	ck_assert_int_eq(journal_reader_open(&r, path), 0);
	struct journal_entry *v = NULL;
	size_t cnt = 0, cap = 0;
	for (;;) {
		struct journal_entry e = {0};
		char err[256];
		int rc = journal_reader_next(r, &e, err, sizeof(err));
		ck_assert_msg(rc >= 0, "line %llu: %s", (unsigned long long)e.lineno, err);
		if (rc == 0)
			break;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			v = realloc(v, cap * sizeof(*v));
		}
		v[cnt++] = e;
	}
	journal_reader_close(r);
	*n = cnt;
	return v;
}

static void free_all(struct journal_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		journal_entry_clear(&v[i]);
	free(v);
}

static void expect_intact(const char *journal, int upper_fd)
{
	struct journal_verify v = {0};
	ck_assert_int_eq(journal_verify_file(journal, upper_fd, &v), 0);
	ck_assert_msg(v.bad_line == 0, "line %llu: %s", (unsigned long long)v.bad_line, v.why);
	ck_assert_msg(v.upper_bad == 0, "%s", v.upper_first);
}

/* ---- stress ---------------------------------------------------------------- */

#define STRESS_THREADS 4
#define STRESS_EVENTS  10000

struct stress_arg {
	struct journal *j;
	int id;
	pid_t tid;
};

static void *stress_thread(void *p)
{
	struct stress_arg *a = p;
	char path[64];
	snprintf(path, sizeof(path), "t%d/file", a->id);
	char name[16];
	snprintf(name, sizeof(name), "stress-%d", a->id);
	pthread_setname_np(pthread_self(), name);
	a->tid = gettid(); /* a real task: /proc/TID/stat names it */
	for (int i = 0; i < STRESS_EVENTS; i++) {
		struct journal_event ev = {
		    .op = JOP_WRITE,
		    .pid = a->tid,
		    .path = path,
		    .bytes = (uint64_t)i,
		};
		journal_record(a->j, &ev);
	}
	return NULL;
}

START_TEST(stress_threads_all_recorded_in_order)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	pthread_t th[STRESS_THREADS];
	struct stress_arg args[STRESS_THREADS];
	for (int t = 0; t < STRESS_THREADS; t++) {
		args[t] = (struct stress_arg){j, t, 0};
		ck_assert_int_eq(pthread_create(&th[t], NULL, stress_thread, &args[t]), 0);
	}
	for (int t = 0; t < STRESS_THREADS; t++)
		pthread_join(th[t], NULL);
	ck_assert_int_eq(journal_flush(j), 0);
	fprintf(stderr, "stress: queue-full waits: %llu\n",
		(unsigned long long)journal_full_waits(j));
	journal_close(j);

	char comm[64] = "";
	FILE *f = fopen("/proc/self/comm", "r");
	ck_assert_ptr_nonnull(fgets(comm, sizeof(comm), f));
	fclose(f);
	comm[strcspn(comm, "\n")] = 0;

	size_t n;
	struct journal_entry *v = read_all(jt.journal, &n);
	ck_assert_uint_eq(n, STRESS_THREADS * STRESS_EVENTS);
	uint64_t next[STRESS_THREADS] = {0};
	int64_t last_time = 0;
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(v[i].seq, i + 1);
		int t = -1;
		ck_assert_int_eq(sscanf(v[i].path, "t%d/file", &t), 1);
		ck_assert(t >= 0 && t < STRESS_THREADS);
		/* The threads' records are their process's: its id and its name
		 * (the main thread's), not the threads' ("stress-N"). */
		ck_assert_int_eq(v[i].pid, getpid());
		ck_assert_ptr_nonnull(v[i].comm);
		ck_assert_str_eq(v[i].comm, comm);
		ck_assert_uint_eq(v[i].bytes, next[t]++);
		ck_assert_int_ge(v[i].time_ns, last_time);
		last_time = v[i].time_ns;
	}
	free_all(v, n);
	expect_intact(jt.journal, -1);
	jt_teardown(&jt);
}
END_TEST

/* A journal in @jt, opened in @mode, with one record of @ev written out. */
static struct journal *open_with_one(struct jt *jt, enum journal_sync mode,
				     const struct journal_event *ev)
{
	jt_setup(jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt->journal, mode), 0);
	journal_record(j, ev);
	ck_assert_int_eq(journal_flush(j), 0);
	return j;
}

START_TEST(sync_modes_flush)
{
	enum journal_sync modes[] = {JOURNAL_SYNC_ALWAYS, JOURNAL_SYNC_INTERVAL,
				     JOURNAL_SYNC_NEVER};
	for (int m = 0; m < 3; m++) {
		struct jt jt;
		struct journal_event ev = {.op = JOP_MKDIR, .pid = getpid(), .path = "d"};
		struct journal *j = open_with_one(&jt, modes[m], &ev);
		size_t n;
		struct journal_entry *v = read_all(jt.journal, &n); /* before close */
		ck_assert_uint_eq(n, 1);
		ck_assert_int_eq(v[0].op, JOP_MKDIR);
		free_all(v, n);
		if (modes[m] != JOURNAL_SYNC_NEVER) {
			/* without a flush, the interval (or "always") writes it */
			journal_record(j, &ev);
			struct timespec ts = {0, 3 * JOURNAL_INTERVAL_MS * 1000000L};
			nanosleep(&ts, NULL);
			v = read_all(jt.journal, &n);
			ck_assert_uint_eq(n, 2);
			free_all(v, n);
		}
		journal_close(j);
		expect_intact(jt.journal, -1);
		jt_teardown(&jt);
	}
}
END_TEST

/* After a flush is done the writer waits, even before the flusher has taken
 * the lock back (it used to take empty batch after empty batch until the
 * flusher ran: a spin that took a core from the mount it was flushing for).
 * The flusher runs as SCHED_IDLE while busy threads hold every CPU, so it
 * takes the lock back only when they stop, 300 ms later. */
struct busy_arg {
	bool stop; /* __atomic */
};

static void *busy_thread(void *p)
{
	struct busy_arg *b = p;
	while (!__atomic_load_n(&b->stop, __ATOMIC_RELAXED)) {
	}
	return NULL;
}

struct flusher_arg {
	struct journal *j;
	bool flushing; /* __atomic */
	int rc;
};

static void *idle_flusher(void *p)
{
	struct flusher_arg *f = p;
	struct sched_param sp = {0};
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	__atomic_store_n(&f->flushing, true, __ATOMIC_RELEASE);
	f->rc = journal_flush(f->j);
	return NULL;
}

START_TEST(writer_waits_after_a_flush)
{
	enum journal_sync modes[] = {JOURNAL_SYNC_ALWAYS, JOURNAL_SYNC_INTERVAL};
	for (int m = 0; m < 2; m++) {
		struct jt jt;
		struct journal_event ev = {.op = JOP_MKDIR, .pid = getpid(), .path = "d"};
		struct journal *j = open_with_one(&jt, modes[m], &ev);

		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		if (ncpu < 1)
			ncpu = 1;
		pthread_t busy[64];
		struct busy_arg b = {false};
		journal_record(j, &ev);
		struct flusher_arg f = {j, false, -1};
		pthread_t ft;
		ck_assert_int_eq(pthread_create(&ft, NULL, idle_flusher, &f), 0);
		while (!__atomic_load_n(&f.flushing, __ATOMIC_ACQUIRE))
			sched_yield();
		uint64_t before = journal_writer_rounds(j);
		int nb = ncpu < 64 ? (int)ncpu : 64;
		for (int i = 0; i < nb; i++)
			ck_assert_int_eq(pthread_create(&busy[i], NULL, busy_thread, &b), 0);
		struct timespec ts = {0, 300 * 1000000L};
		nanosleep(&ts, NULL);
		uint64_t during = journal_writer_rounds(j) - before;
		__atomic_store_n(&b.stop, true, __ATOMIC_RELAXED);
		for (int i = 0; i < nb; i++)
			pthread_join(busy[i], NULL);
		pthread_join(ft, NULL);
		ck_assert_int_eq(f.rc, 0);
		/* The flush's own batch and a few more, not hundreds. */
		ck_assert_msg(during <= 10, "mode %d: %llu writer rounds in 300 ms", m,
			      (unsigned long long)during);
		journal_close(j);
		expect_intact(jt.journal, -1);
		jt_teardown(&jt);
	}
}
END_TEST

/* An idle journal wakes no thread: in interval mode the writer used to take
 * an empty batch every JOURNAL_INTERVAL_MS forever, ten wake-ups a second of
 * a mount nobody used.  A record after the rest is still written and synced
 * within about an interval, with no flush asking for it. */
START_TEST(idle_writer_sleeps)
{
	enum journal_sync modes[] = {JOURNAL_SYNC_INTERVAL, JOURNAL_SYNC_NEVER};
	for (int m = 0; m < 2; m++) {
		struct jt jt;
		struct journal_event ev = {.op = JOP_MKDIR, .pid = getpid(), .path = "d"};
		struct journal *j = open_with_one(&jt, modes[m], &ev);
		struct timespec rest = {0, 5 * JOURNAL_INTERVAL_MS * 1000000L};
		nanosleep(&rest, NULL); /* the round in flight after the flush ends */
		uint64_t before = journal_writer_rounds(j);
		nanosleep(&rest, NULL);
		uint64_t idle = journal_writer_rounds(j) - before;
		ck_assert_msg(idle == 0, "mode %d: %llu writer rounds in %d ms of rest", m,
			      (unsigned long long)idle, 5 * JOURNAL_INTERVAL_MS);
		if (modes[m] == JOURNAL_SYNC_INTERVAL) {
			uint64_t syncs = journal_syncs(j);
			journal_record(j, &ev);
			struct timespec tick = {0, 10 * 1000000L};
			for (int i = 0; i < 500 && journal_syncs(j) == syncs; i++)
				nanosleep(&tick, NULL);
			ck_assert_msg(journal_syncs(j) > syncs,
				      "a record after a rest not synced in 5 s");
		}
		journal_close(j);
		size_t n;
		struct journal_entry *v = read_all(jt.journal, &n);
		ck_assert_uint_eq(n, modes[m] == JOURNAL_SYNC_INTERVAL ? 2 : 1);
		free_all(v, n);
		expect_intact(jt.journal, -1);
		jt_teardown(&jt);
	}
}
END_TEST

/* A record whose write failed (here the file size limit, as a full disk
 * would) stays in the writer's buffer and is written once writing works
 * again, with no later record or flush asking for it: the writer retries
 * every interval instead of sleeping. */
START_TEST(failed_write_retried_while_idle)
{
	enum journal_sync modes[] = {JOURNAL_SYNC_INTERVAL, JOURNAL_SYNC_ALWAYS};
	signal(SIGXFSZ, SIG_IGN);
	for (int m = 0; m < 2; m++) {
		struct jt jt;
		struct journal_event ev = {.op = JOP_MKDIR, .pid = getpid(), .path = "d"};
		struct journal *j = open_with_one(&jt, modes[m], &ev);
		struct stat st;
		ck_assert_int_eq(stat(jt.journal, &st), 0);
		off_t one = st.st_size;
		struct rlimit rl;
		ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
		struct rlimit cap = {(rlim_t)one, rl.rlim_max};
		ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &cap), 0);
		journal_record(j, &ev);
		ck_assert_int_eq(journal_flush(j), -EFBIG);
		ck_assert_int_eq(stat(jt.journal, &st), 0);
		ck_assert_int_eq(st.st_size, one); /* nothing torn left behind */
		ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
		struct timespec tick = {0, 10 * 1000000L};
		for (int i = 0; i < 500 && stat(jt.journal, &st) == 0 && st.st_size == one; i++)
			nanosleep(&tick, NULL);
		ck_assert_msg(st.st_size > one, "mode %d: the record was not written in 5 s", m);
		/* Written now: the error is over once the writer has taken the
		 * write's result, which it does right after the write. */
		int fr = journal_flush(j);
		for (int i = 0; i < 500 && fr != 0; i++) {
			nanosleep(&tick, NULL);
			fr = journal_flush(j);
		}
		ck_assert_int_eq(fr, 0);
		journal_close(j);
		size_t n;
		struct journal_entry *v = read_all(jt.journal, &n);
		ck_assert_uint_eq(n, 2);
		free_all(v, n);
		expect_intact(jt.journal, -1);
		jt_teardown(&jt);
	}
}
END_TEST

/* Interval mode under a steady stream: one fdatasync per interval, not one
 * per batch (it used to sync back to back while records kept coming). */
START_TEST(interval_paces_syncs)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	struct journal_event ev = {.op = JOP_MKDIR, .pid = getpid(), .path = "d"};
	struct timespec gap = {0, 200 * 1000L}, t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int sent = 0;
	do {
		journal_record(j, &ev);
		sent++;
		nanosleep(&gap, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 <
		 6 * JOURNAL_INTERVAL_MS);
	uint64_t syncs = journal_syncs(j);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	/* One per interval elapsed, plus the one in flight. */
	ck_assert_msg(syncs <= (uint64_t)(ms / JOURNAL_INTERVAL_MS + 2),
		      "%llu fdatasyncs for %d records in %ld ms", (unsigned long long)syncs, sent,
		      ms);
	ck_assert_uint_ge(syncs, 1);
	fprintf(stderr, "interval_paces_syncs: %llu fdatasyncs, %d records, %ld ms\n",
		(unsigned long long)syncs, sent, ms);
	journal_close(j);
	size_t n;
	struct journal_entry *v = read_all(jt.journal, &n);
	ck_assert_uint_eq(n, (size_t)sent);
	free_all(v, n);
	expect_intact(jt.journal, -1);
	jt_teardown(&jt);
}
END_TEST

START_TEST(second_writer_refused)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j, *j2;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	ck_assert_int_eq(journal_open(&j2, jt.journal, JOURNAL_SYNC_INTERVAL), -EBUSY);
	journal_close(j);
	journal_record(NULL, &(struct journal_event){.op = JOP_READ}); /* journal off */
	journal_close(NULL);
	jt_teardown(&jt);
}
END_TEST

/* ---- process names --------------------------------------------------------- */

/* This process's name and executable, as the journal names it. */
static void self_comm_exe(char *comm, size_t clen, char *exe, size_t elen)
{
	FILE *f = fopen("/proc/self/comm", "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(comm, (int)clen, f));
	fclose(f);
	comm[strcspn(comm, "\n")] = 0;
	ssize_t n = readlink("/proc/self/exe", exe, elen - 1);
	ck_assert_int_gt(n, 0);
	exe[n] = 0;
}

START_TEST(process_named_from_proc)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);

	/* a child that execs sleep: its name and exe must be sleep's, even when the
	 * event arrives after it exited (attributed at "open" time). */
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t child = fork();
	if (child == 0) {
		close(pfd[0]);
		fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
		execlp("sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	char c;
	ck_assert_int_eq(read(pfd[0], &c, 1), 0); /* EOF once exec closed it */
	close(pfd[0]);
	pid_t cpid = child;
	uint64_t start = journal_process_start(j, &cpid);
	ck_assert_int_eq(cpid, child); /* one thread: the process id is its id */
	ck_assert_uint_ne(start, 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);

	journal_record(j, &(struct journal_event){.op = JOP_READ, .pid = getpid(), .path = "me"});
	journal_record(j, &(struct journal_event){
			      .op = JOP_WRITE, .pid = child, .pid_start = start, .path = "w"});
	journal_record(j, &(struct journal_event){.op = JOP_WRITE, .pid = child, .path = "gone"});
	journal_close(j);

	char comm[64] = "", exe[PATH_MAX];
	self_comm_exe(comm, sizeof(comm), exe, sizeof(exe));

	size_t cnt;
	struct journal_entry *v = read_all(jt.journal, &cnt);
	ck_assert_uint_eq(cnt, 3);
	ck_assert_str_eq(v[0].comm, comm);
	ck_assert_str_eq(v[0].exe, exe);
	ck_assert_int_eq(v[1].pid, child);
	ck_assert_str_eq(v[1].comm, "sleep");
	ck_assert_ptr_nonnull(strstr(v[1].exe, "sleep"));
	ck_assert_ptr_null(v[2].comm); /* exited, not captured: no name rather than a wrong one */
	free_all(v, cnt);
	jt_teardown(&jt);
}
END_TEST

/* A thread of this process: renames itself, then makes the "requests". */
struct thread_req {
	struct journal *j;
	pid_t tid, pid; /* the thread's id; what journal_process_start() made of it */
	uint64_t start;
};

static void *thread_requests(void *arg)
{
	struct thread_req *t = arg;
	pthread_setname_np(pthread_self(), "renamed-thread");
	t->tid = gettid();
	journal_record(t->j, &(struct journal_event){.op = JOP_READ, .pid = t->tid, .path = "t"});
	t->pid = t->tid;
	t->start = journal_process_start(t->j, &t->pid);
	return NULL;
}

struct idle_arg {
	int tell; /* gets the thread's id */
	int wait; /* read until EOF */
};

static void *thread_idle(void *arg)
{
	struct idle_arg *a = arg;
	pthread_setname_np(pthread_self(), "idle-thread");
	pid_t tid = gettid();
	if (write(a->tell, &tid, sizeof(tid)) != sizeof(tid))
		return NULL;
	char c;
	while (read(a->wait, &c, 1) > 0)
		;
	return NULL;
}

/* A FUSE request's pid is the calling thread's id: the record holds its
 * process's id, name (the main thread's) and start time, not the thread's;
 * a process whose thread was captured is named after it exited. */
START_TEST(thread_attributed_to_process)
{
	/* A child (forked first, while this process has one thread) with a
	 * second thread that lives until this process has captured it. */
	int pfd[2], qfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(pipe(qfd), 0);
	pid_t child = fork();
	if (child == 0) {
		close(pfd[0]);
		close(qfd[1]);
		prctl(PR_SET_NAME, "multi-child");
		struct idle_arg a = {pfd[1], qfd[0]};
		pthread_t cth;
		if (pthread_create(&cth, NULL, thread_idle, &a) != 0)
			_exit(1);
		pthread_join(cth, NULL);
		_exit(0);
	}

	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);

	struct thread_req t = {.j = j};
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, thread_requests, &t), 0);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_ne(t.tid, getpid());
	ck_assert_int_eq(t.pid, getpid());
	pid_t me = getpid();
	ck_assert_uint_eq(t.start, journal_process_start(j, &me));
	ck_assert_uint_ne(t.start, 0);
	journal_record(j, &(struct journal_event){
			      .op = JOP_WRITE, .pid = t.pid, .pid_start = t.start, .path = "w"});

	/* The child's thread is captured, then the whole child killed: the event
	 * attributed to the child is still named. */
	close(pfd[1]);
	close(qfd[0]);
	pid_t ctid = 0;
	ck_assert_int_eq(read(pfd[0], &ctid, sizeof(ctid)), sizeof(ctid));
	close(pfd[0]);
	ck_assert_int_ne(ctid, child);
	pid_t cpid = ctid;
	uint64_t cstart = journal_process_start(j, &cpid);
	ck_assert_int_eq(cpid, child);
	ck_assert_uint_ne(cstart, 0);
	journal_record(j, &(struct journal_event){.op = JOP_READ, .pid = ctid, .path = "c"});
	kill(child, SIGKILL);
	close(qfd[1]);
	waitpid(child, NULL, 0);
	journal_record(j, &(struct journal_event){
			      .op = JOP_WRITE, .pid = cpid, .pid_start = cstart, .path = "cw"});
	journal_close(j);

	char comm[64] = "", exe[PATH_MAX];
	self_comm_exe(comm, sizeof(comm), exe, sizeof(exe));

	size_t cnt;
	struct journal_entry *v = read_all(jt.journal, &cnt);
	ck_assert_uint_eq(cnt, 4);
	for (size_t i = 0; i < 2; i++) {
		ck_assert_int_eq(v[i].pid, getpid());
		ck_assert_ptr_nonnull(v[i].comm);
		ck_assert_str_eq(v[i].comm, comm); /* not "renamed-thread" */
		ck_assert_str_eq(v[i].exe, exe);
	}
	for (size_t i = 2; i < 4; i++) {
		ck_assert_int_eq(v[i].pid, child);
		ck_assert_ptr_nonnull(v[i].comm);
		ck_assert_str_eq(v[i].comm, "multi-child"); /* not its thread's */
		ck_assert_str_eq(v[i].exe, exe);
	}
	free_all(v, cnt);
	jt_teardown(&jt);
}
END_TEST

START_TEST(detail_object_or_string)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_record(j, &(struct journal_event){
			      .op = JOP_MOUNT,
			      .detail = "{\"version\": \"0.1.0\", \"repo\": \"/r\\n\", \"n\": 3}"});
	journal_record(j, &(struct journal_event){.op = JOP_MOUNT, .detail = "{broken"});
	journal_record(j, &(struct journal_event){.op = JOP_MOUNT, .detail = "opts=a,b\nx=\"y\""});
	journal_close(j);
	size_t n;
	char **lines = jt_lines(&jt, &n);
	ck_assert_uint_eq(n, 3);
	ck_assert_ptr_nonnull(
	    strstr(lines[0], "\"detail\":{\"version\":\"0.1.0\",\"repo\":\"/r\\n\",\"n\":3}}"));
	ck_assert_ptr_nonnull(strstr(lines[1], "\"detail\":\"{broken\"}"));
	ck_assert_ptr_nonnull(strstr(lines[2], "\"detail\":\"opts=a,b\\nx=\\\"y\\\"\"}"));
	jt_free_lines(lines, n);
	size_t cnt;
	struct journal_entry *v = read_all(jt.journal, &cnt);
	ck_assert(v[0].detail_is_object && !v[1].detail_is_object);
	ck_assert_str_eq(v[2].detail, "opts=a,b\nx=\"y\"");
	free_all(v, cnt);
	jt_teardown(&jt);
}
END_TEST

/* ---- recovery -------------------------------------------------------------- */

START_TEST(torn_tail_trimmed_at_open)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 5, JOURNAL_SYNC_INTERVAL);
	off_t good = jt_size(&jt);
	const char *torn = "{\"v\":1,\"seq\":7,\"prev\":\"0000"; /* a torn write */
	FILE *f = fopen(jt.journal, "a");
	fputs(torn, f);
	fclose(f);
	struct journal_verify v = {0};
	ck_assert_int_eq(journal_verify_file(jt.journal, -1, &v), 0);
	ck_assert_uint_eq(v.bad_line, 7);
	ck_assert_ptr_nonnull(strstr(v.why, "torn"));

	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_close(j);
	expect_intact(jt.journal, -1);
	size_t n;
	struct journal_entry *e = read_all(jt.journal, &n);
	ck_assert_uint_eq(n, 7);
	ck_assert_int_eq(e[6].op, JOP_RECOVER);
	char want[64];
	snprintf(want, sizeof(want), "\"trimmed_bytes\":%zu", strlen(torn));
	ck_assert_ptr_nonnull(strstr(e[6].detail, want));
	ck_assert_int_eq(e[6].line_len + 1 + good, jt_size(&jt));
	free_all(e, n);

	/* garbage in the last complete line (e.g. zeros after a power loss) too */
	f = fopen(jt.journal, "a");
	fwrite("\0\0\0\0\n", 1, 5, f);
	fclose(f);
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_close(j);
	expect_intact(jt.journal, -1);
	jt_teardown(&jt);
}
END_TEST

START_TEST(damage_before_tail_is_kept)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 5, JOURNAL_SYNC_INTERVAL);
	size_t n;
	char **lines = jt_lines(&jt, &n);
	lines[2][20] = '#';
	jt_put_lines(&jt, lines, n);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_record(j, &(struct journal_event){.op = JOP_MOUNT});
	journal_close(j);
	struct journal_verify v = {0};
	ck_assert_int_eq(journal_verify_file(jt.journal, -1, &v), 0);
	ck_assert_uint_eq(v.bad_line, 3);
	size_t n2;
	char **after = jt_lines(&jt, &n2);
	ck_assert_uint_eq(n2, n + 2); /* nothing trimmed: recover + mount appended */
	ck_assert_str_eq(after[2], lines[2]);
	jt_free_lines(after, n2);
	jt_free_lines(lines, n);
	jt_teardown(&jt);
}
END_TEST

static int upper_fd_of(struct jt *jt)
{
	int fd = open(jt->upper, O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(fd, 0);
	return fd;
}

static XXH128_hash_t hash_of(const char *s)
{
	return XXH3_128bits(s, strlen(s));
}

START_TEST(crash_recovery_of_upper)
{
	struct jt jt;
	jt_setup(&jt);
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/sub", jt.upper);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/sub/a.txt", jt.upper);
	jt_put_file(p, "version 1\n");
	snprintf(p, sizeof(p), "%s/.wh.deleted", jt.upper);
	jt_put_file(p, "");
	snprintf(p, sizeof(p), "%s/kept.txt", jt.upper);
	jt_put_file(p, "kept\n");

	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_record(j, &(struct journal_event){.op = JOP_MOUNT});
	journal_record(j, &(struct journal_event){.op = JOP_WRITE,
						  .path = "sub/a.txt",
						  .has_hash_after = true,
						  .hash_after = hash_of("version 1\n")});
	journal_record(j, &(struct journal_event){.op = JOP_CREATE,
						  .path = "kept.txt",
						  .has_hash_after = true,
						  .hash_after = hash_of("kept\n")});
	journal_record(j, &(struct journal_event){.op = JOP_CREATE, .path = "vanished.txt"});
	/* "kill -9": the next records never reach the journal (no close, no unmount) */
	ck_assert_int_eq(journal_flush(j), 0);
	int upper = upper_fd_of(&jt);
	expect_intact(jt.journal, -1);

	snprintf(p, sizeof(p), "%s/sub/a.txt", jt.upper);
	jt_put_file(p, "version 2, written but not journaled\n");
	snprintf(p, sizeof(p), "%s/sub/new.txt", jt.upper);
	jt_put_file(p, "new\n");
	struct journal_verify v = {.note = NULL};
	ck_assert_int_eq(journal_verify_file(jt.journal, upper, &v), 0);
	/* sub/a.txt, sub/new.txt, vanished.txt, and .wh.deleted: its unlink's
	 * record was lost too */
	ck_assert_uint_eq(v.upper_bad, 4);
	ck_assert_uint_eq(v.upper_files, 3);
	ck_assert_uint_eq(v.upper_markers, 1);
	/* simulate the dead daemon: stop the writer without an unmount record */
	journal_close(j);

	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	ck_assert_int_eq(journal_recover_upper(j, upper, false), 4);
	journal_close(j);
	expect_intact(jt.journal, upper);

	size_t n;
	struct journal_entry *e = read_all(jt.journal, &n);
	int seen_a = 0, seen_new = 0, seen_gone = 0, crash = 0, seen_wh = 0;
	for (size_t i = 0; i < n; i++) {
		if (e[i].op != JOP_RECOVER)
			continue;
		if (!e[i].path)
			crash += strstr(e[i].detail, "\"crash\"") != NULL;
		else if (strcmp(e[i].path, "sub/a.txt") == 0)
			seen_a += e[i].has_hash_after &&
				  e[i].hash_after.low64 ==
				      hash_of("version 2, written but not journaled\n").low64;
		else if (strcmp(e[i].path, "sub/new.txt") == 0)
			seen_new++;
		else if (strcmp(e[i].path, "vanished.txt") == 0)
			seen_gone += e[i].result == -ENOENT;
		else if (strcmp(e[i].path, "deleted") == 0)
			seen_wh += (e[i].flags & JOURNAL_F_MARKER) && !e[i].has_hash_after &&
				   strstr(e[i].detail, "whiteout without a record") != NULL;
	}
	ck_assert_int_eq(seen_wh, 1);
	ck_assert_int_eq(crash, 1);
	ck_assert_int_eq(seen_a, 1);
	ck_assert_int_eq(seen_new, 1);
	ck_assert_int_eq(seen_gone, 1);
	free_all(e, n);

	/* a clean session whose upper is then changed behind agentfs's back */
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_record(j, &(struct journal_event){.op = JOP_UNMOUNT});
	journal_close(j);
	struct timespec ts = {0, 20 * 1000000L};
	nanosleep(&ts, NULL);
	snprintf(p, sizeof(p), "%s/kept.txt", jt.upper);
	jt_put_file(p, "edited behind the back\n");
	ck_assert_int_eq(journal_verify_file(jt.journal, upper, &v), 0);
	ck_assert_uint_eq(v.upper_bad, 1);
	ck_assert_ptr_nonnull(strstr(v.upper_first, "kept.txt"));
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	ck_assert_int_eq(journal_recover_upper(j, upper, false), 1);
	journal_close(j);
	expect_intact(jt.journal, upper);
	close(upper);
	jt_teardown(&jt);
}
END_TEST

START_TEST(verify_follows_renames)
{
	struct jt jt;
	jt_setup(&jt);
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/newdir", jt.upper);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/newdir/f", jt.upper);
	jt_put_file(p, "f\n");
	snprintf(p, sizeof(p), "%s/g", jt.upper);
	jt_put_file(p, "g\n");
	snprintf(p, sizeof(p), "%s/h", jt.upper);
	jt_put_file(p, "g\n");
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_record(j, &(struct journal_event){.op = JOP_MKDIR, .path = "olddir"});
	journal_record(j, &(struct journal_event){.op = JOP_CREATE, .path = "olddir/f"});
	journal_record(j, &(struct journal_event){.op = JOP_WRITE,
						  .path = "olddir/f",
						  .has_hash_after = true,
						  .hash_after = hash_of("f\n")});
	journal_record(
	    j, &(struct journal_event){.op = JOP_RENAME, .path = "olddir", .path2 = "newdir"});
	journal_record(j, &(struct journal_event){.op = JOP_COPYUP,
						  .path = "x",
						  .has_hash_before = true,
						  .hash_before = hash_of("g\n")});
	journal_record(j, &(struct journal_event){.op = JOP_RENAME, .path = "x", .path2 = "g"});
	journal_record(j, &(struct journal_event){.op = JOP_LINK, .path = "g", .path2 = "h"});
	journal_record(j, &(struct journal_event){.op = JOP_CREATE, .path = "gone"});
	journal_record(j, &(struct journal_event){.op = JOP_UNLINK, .path = "gone"});
	journal_record(j, &(struct journal_event){
			      .op = JOP_UNLINK, .result = -ENOENT, .path = "g"}); /* failed */
	journal_record(j, &(struct journal_event){.op = JOP_UNMOUNT});
	journal_close(j);
	int upper = upper_fd_of(&jt);
	expect_intact(jt.journal, upper);
	close(upper);
	jt_teardown(&jt);
}
END_TEST

/* Whiteouts, opaque and redirected directories and special files are held to
 * the namespace records at their paths or above them, renames followed. */
START_TEST(verify_holds_markers_to_records)
{
	struct jt jt;
	jt_setup(&jt);
	char p[PATH_MAX + 32];
	char longname[256];
	memset(longname, 'L', 252);
	longname[252] = 0;
	char wh[NAME_MAX + 1];
	ck_assert_int_eq(layout_whiteout_name(longname, wh, sizeof(wh)), 0);
	ck_assert_ptr_nonnull(strstr(wh, LAYOUT_WH_HASHED));
	const char *dirs[] = {"e", "o", "r", "g"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(*dirs); i++) {
		snprintf(p, sizeof(p), "%s/%s", jt.upper, dirs[i]);
		ck_assert_int_eq(mkdir(p, 0700), 0);
	}
	const char *whs[] = {".wh.d", "e/.wh.x", "o/.wh.y", wh};
	for (size_t i = 0; i < sizeof(whs) / sizeof(*whs); i++) {
		snprintf(p, sizeof(p), "%s/%s", jt.upper, whs[i]);
		jt_put_file(p, "");
	}
	snprintf(p, sizeof(p), "%s/o", jt.upper);
	ck_assert_int_eq(setxattr(p, LAYOUT_XATTR_OPAQUE, "y", 1, 0), 0);
	snprintf(p, sizeof(p), "%s/r", jt.upper);
	ck_assert_int_eq(setxattr(p, LAYOUT_XATTR_REDIRECT, "q", 1, 0), 0);
	snprintf(p, sizeof(p), "%s/fifo", jt.upper);
	ck_assert_int_eq(mkfifo(p, 0600), 0);

	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	/* d/x deleted, then d renamed to e: the upper directory and its
	 * whiteout moved with it */
	journal_record(j, &(struct journal_event){.op = JOP_UNLINK, .path = "d/x"});
	journal_record(j, &(struct journal_event){.op = JOP_RENAME, .path = "d", .path2 = "e"});
	journal_record(j, &(struct journal_event){.op = JOP_RMDIR, .path = "o"});
	journal_record(j, &(struct journal_event){.op = JOP_MKDIR, .path = "o"});
	/* discard of a file under the opaque o whites out o's other entries */
	journal_record(j, &(struct journal_event){.op = JOP_DISCARD, .path = "o/keep"});
	/* a deletion discarded: nothing of it is left to explain */
	journal_record(j, &(struct journal_event){.op = JOP_UNLINK, .path = "g/b"});
	journal_record(j, &(struct journal_event){.op = JOP_DISCARD, .path = "g/b"});
	journal_record(j, &(struct journal_event){.op = JOP_RENAME, .path = "q", .path2 = "r"});
	journal_record(
	    j, &(struct journal_event){.op = JOP_MKNOD, .path = "fifo", .mode = S_IFIFO | 0600});
	journal_record(j, &(struct journal_event){.op = JOP_UNLINK, .path = longname});
	journal_record(j, &(struct journal_event){.op = JOP_UNMOUNT});
	journal_close(j);
	int upper = upper_fd_of(&jt);
	struct journal_verify v = {.note = NULL};
	ck_assert_int_eq(journal_verify_file(jt.journal, upper, &v), 0);
	ck_assert_msg(v.upper_bad == 0, "%s", v.upper_first);
	ck_assert_uint_eq(v.upper_markers, 7);

	/* planted: a whiteout where only a failed unlink was recorded, one in a
	 * directory made by a copy-up (no namespace record), a FIFO there, one
	 * in the renamed directory, one where a deletion was discarded */
	snprintf(p, sizeof(p), "%s/u", jt.upper);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	const char *planted[] = {".wh.Makefile", "u/.wh.z", "e/.wh.z", "g/.wh.b"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s/%s", jt.upper, planted[i]);
		jt_put_file(p, "");
	}
	snprintf(p, sizeof(p), "%s/u/pipe", jt.upper);
	ck_assert_int_eq(mkfifo(p, 0600), 0);
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	journal_record(
	    j, &(struct journal_event){.op = JOP_UNLINK, .result = -ENOENT, .path = "Makefile"});
	journal_close(j);
	ck_assert_int_eq(journal_verify_file(jt.journal, upper, &v), 0);
	ck_assert_uint_eq(v.upper_bad, 5);
	ck_assert_ptr_nonnull(strstr(v.upper_first, "a whiteout"));

	/* recovery records them once, and verify passes after */
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	ck_assert_int_eq(journal_recover_upper(j, upper, false), 5);
	journal_close(j);
	expect_intact(jt.journal, upper);
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	ck_assert_int_eq(journal_recover_upper(j, upper, false), 0);
	journal_close(j);
	close(upper);
	jt_teardown(&jt);
}
END_TEST

Suite *journal_writer_suite(void)
{
	Suite *s = suite_create("journal-writer");
	TCase *tc = tcase_create("writer");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, stress_threads_all_recorded_in_order);
	tcase_add_test(tc, sync_modes_flush);
	tcase_add_test(tc, writer_waits_after_a_flush);
	tcase_add_test(tc, interval_paces_syncs);
	tcase_add_test(tc, idle_writer_sleeps);
	tcase_add_test(tc, failed_write_retried_while_idle);
	tcase_add_test(tc, second_writer_refused);
	tcase_add_test(tc, process_named_from_proc);
	tcase_add_test(tc, thread_attributed_to_process);
	tcase_add_test(tc, detail_object_or_string);
	suite_add_tcase(s, tc);
	tc = tcase_create("recovery");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, torn_tail_trimmed_at_open);
	tcase_add_test(tc, damage_before_tail_is_kept);
	tcase_add_test(tc, crash_recovery_of_upper);
	tcase_add_test(tc, verify_follows_renames);
	tcase_add_test(tc, verify_holds_markers_to_records);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(journal_writer_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
