/*
 * journal_bench.c - what journal_record() costs the FUSE request that calls it,
 * and how fast the writer drains the queue.
 *
 *   journal_bench [EVENTS_PER_THREAD [THREADS]]
 *
 * Reports, per event, on the calling thread: the journal off (NULL), the
 * journal on with the process named from /proc (the cached-fd path), and the
 * writer's end-to-end throughput (records formatted, chained and written per
 * second, until journal_flush() returns).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "journal/journal.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct arg {
	struct journal *j;
	long n;
	int naming; /* 0: pid_start from "open" (cached), 1: named from /proc each time */
	double secs;
};

static void *run(void *p)
{
	struct arg *a = p;
	pid_t tid = gettid(), pid = tid;
	uint64_t start = journal_process_start(a->j, &pid);
	double t0 = 0;
	double secs = 0;
	/* Rounds below the queue's capacity, flushed between rounds (not timed),
	 * so the time is journal_record()'s own, not waiting for a full queue. */
	long round = JOURNAL_QUEUE_MAX / 4;
	for (long i = 0; i < a->n; i++) {
		if (i % round == 0) {
			if (i)
				secs += now() - t0;
			if (i)
				journal_flush(a->j);
			t0 = now();
		}
		struct journal_event ev = {
		    .op = JOP_READ,
		    .pid = a->naming ? tid : pid,
		    .uid = 1000,
		    .path = "src/some/directory/file_name.c",
		    .bytes = 4096,
		    .has_hash_after = true,
		    .hash_after = {(uint64_t)i, 42},
		    .pid_start = a->naming ? 0 : start,
		};
		journal_record(a->j, &ev);
	}
	secs += now() - t0;
	a->secs = secs;
	return NULL;
}

static double bench(struct journal *j, long n, int threads, int naming, double *drain)
{
	pthread_t th[64];
	struct arg a[64];
	double t0 = now();
	for (int t = 0; t < threads; t++) {
		a[t] = (struct arg){j, n, naming, 0};
		pthread_create(&th[t], NULL, run, &a[t]);
	}
	double sum = 0;
	for (int t = 0; t < threads; t++) {
		pthread_join(th[t], NULL);
		sum += a[t].secs;
	}
	if (j)
		journal_flush(j);
	*drain = now() - t0;
	return sum / ((double)n * threads) * 1e9;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200000;
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	if (threads < 1 || threads > 64 || n < 1) {
		fprintf(stderr, "usage: journal_bench [EVENTS_PER_THREAD [THREADS (1-64)]]\n");
		return 2;
	}
	char dir[] = "/tmp/journal-bench.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char path[256];
	snprintf(path, sizeof(path), "%s/journal.jsonl", dir);

	double drain;
	double off = bench(NULL, n, threads, 0, &drain);
	printf("journal off:            %8.1f ns/event on the calling thread\n", off);
	static const char *const names[] = {"interval", "always", "never"};
	enum journal_sync modes[] = {JOURNAL_SYNC_INTERVAL, JOURNAL_SYNC_ALWAYS,
				     JOURNAL_SYNC_NEVER};
	for (int m = 0; m < 3; m++) {
		unlink(path);
		char head[300];
		snprintf(head, sizeof(head), "%s.head", path);
		unlink(head);
		struct journal *j;
		if (journal_open(&j, path, modes[m]) < 0) {
			perror("journal_open");
			return 1;
		}
		double cached = bench(j, n, threads, 0, &drain);
		double named = bench(j, n, threads, 1, &drain);
		journal_close(j);
		printf(
		    "journal on (%-8s):   %8.1f ns/event with the opener's start time (release), "
		    "%8.1f ns/event naming the process from /proc, "
		    "%8.0f records/s end to end (%ld x %d threads)\n",
		    names[m], cached, named, (double)n * threads / drain, n, threads);
	}
	unlink(path);
	char head[300];
	snprintf(head, sizeof(head), "%s.head", path);
	unlink(head);
	rmdir(dir);
	return 0;
}
