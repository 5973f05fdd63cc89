/*
 * test_prehash.c - the dealing of index entries between the build's thread
 * and the thread that hashes ahead of it (cli/prehash.h).
 */
#include "cli/prehash.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What each call of the work function saw. */
struct work {
	size_t n;
	unsigned *calls;   /* per entry, how many times */
	int *worker;	   /* per entry, which thread */
	size_t skip_every; /* entries i % skip_every == 0 give no result (0: none) */
	long delay_us;	   /* per entry */
	bool gate;	   /* the thread's calls wait until the main thread made one */
	unsigned main_ran; /* the main thread made a call (atomic) */
};

/* Wait (in 100 us steps, at most 60 s) until *@flag is set. */
static void wait_for(const unsigned *flag)
{
	for (int k = 0; k < 600000 && !__atomic_load_n(flag, __ATOMIC_ACQUIRE); k++)
		usleep(100);
	if (!__atomic_load_n(flag, __ATOMIC_ACQUIRE))
		abort();
}

static void work_fn(void *arg, int worker, size_t i, struct prehash_result *out)
{
	struct work *w = arg;
	if (i >= w->n)
		abort(); /* not ck_assert: this may be the module's thread */
	w->worker[i] = worker;
	__atomic_add_fetch(&w->calls[i], 1, __ATOMIC_RELEASE);
	if (worker == PREHASH_MAIN)
		__atomic_store_n(&w->main_ran, 1u, __ATOMIC_RELEASE);
	else if (w->gate)
		wait_for(&w->main_ran);
	if (w->delay_us > 0)
		usleep((useconds_t)w->delay_us);
	if (w->skip_every && i % w->skip_every == 0)
		return;
	out->ok = true;
	out->ino = (ino_t)i;
	memcpy(out->id, &i, sizeof(i));
}

static struct work *work_new(size_t n)
{
	struct work *w = calloc(1, sizeof(*w));
	w->n = n;
	w->calls = calloc(n, sizeof(*w->calls));
	w->worker = calloc(n, sizeof(*w->worker));
	return w;
}

static void work_free(struct work *w)
{
	free(w->calls);
	free(w->worker);
	free(w);
}

/* Walk entries 0..n-1 as the build does; count what came from hashing ahead
 * and check each result is its own entry's.  *by_thread: results made by the
 * module's thread. */
static size_t walk(struct prehash *p, struct work *w, long main_delay_us, size_t *by_thread)
{
	size_t got = 0;
	*by_thread = 0;
	for (size_t i = 0; i < w->n; i++) {
		const struct prehash_result *r = prehash_get(p, i);
		if (r) {
			ck_assert_uint_eq(w->calls[i], 1); /* dealt once, done */
			if (r->ok) {
				size_t id;
				memcpy(&id, r->id, sizeof(id));
				ck_assert_uint_eq(id, i);
				ck_assert_uint_eq((size_t)r->ino, i);
				got++;
				if (w->worker[i] == PREHASH_THREAD)
					(*by_thread)++;
			} else {
				ck_assert(w->skip_every && i % w->skip_every == 0);
			}
		} else {
			/* The build's to do in place: nobody hashed it ahead. */
			ck_assert_uint_eq(w->calls[i], 0);
		}
		if (main_delay_us > 0)
			usleep((useconds_t)main_delay_us);
	}
	return got;
}

START_TEST(every_entry_dealt_once_in_order)
{
	size_t n = 1000;
	struct work *w = work_new(n);
	w->skip_every = 7;
	w->delay_us = 50;
	struct prehash *p = NULL;
	ck_assert_int_eq(prehash_start(n, work_fn, w, &p), 0);
	size_t by_thread;
	(void)walk(p, w, 20, &by_thread); /* checks each entry */
	prehash_stop(p);
	for (size_t i = 0; i < n; i++)
		ck_assert_uint_le(w->calls[i], 1);
	work_free(w);
}
END_TEST

START_TEST(the_build_shares_the_hashing)
{
	/* The thread holds its first chunk (0) until the main thread has hashed
	 * something: the main thread, finding chunk 0 not done, must hash a
	 * chunk ahead itself rather than wait. */
	size_t n = 640;
	struct work *w = work_new(n);
	w->gate = true;
	struct prehash *p = NULL;
	ck_assert_int_eq(prehash_start(n, work_fn, w, &p), 0);
	wait_for(&w->calls[0]); /* the thread is in chunk 0 */
	size_t by_thread;
	size_t got = walk(p, w, 0, &by_thread);
	prehash_stop(p);
	size_t by_main = 0;
	for (size_t i = 0; i < n; i++)
		if (w->calls[i] && w->worker[i] == PREHASH_MAIN)
			by_main++;
	ck_assert_uint_ge(by_main, PREHASH_CHUNK);
	ck_assert_uint_ge(by_thread, PREHASH_CHUNK);
	ck_assert_uint_eq(got, by_main + by_thread);
	work_free(w);
}
END_TEST

START_TEST(stopped_midway)
{
	size_t n = 100000;
	struct work *w = work_new(n);
	w->delay_us = 10;
	struct prehash *p = NULL;
	ck_assert_int_eq(prehash_start(n, work_fn, w, &p), 0);
	for (size_t i = 0; i < 100; i++)
		(void)prehash_get(p, i);
	prehash_stop(p); /* the thread is at most PREHASH_AHEAD chunks ahead */
	size_t called = 0;
	for (size_t i = 0; i < n; i++)
		called += w->calls[i];
	ck_assert_uint_le(called, 100 + (PREHASH_AHEAD + 1) * PREHASH_CHUNK);
	ck_assert_ptr_null(prehash_get(NULL, 0));
	work_free(w);
}
END_TEST

START_TEST(fewer_entries_than_a_chunk)
{
	size_t n = 3;
	struct work *w = work_new(n);
	struct prehash *p = NULL;
	ck_assert_int_eq(prehash_start(n, work_fn, w, &p), 0);
	size_t by_thread;
	(void)walk(p, w, 0, &by_thread);
	ck_assert_ptr_null(prehash_get(p, n)); /* past the end */
	prehash_stop(p);
	work_free(w);
}
END_TEST

START_TEST(same_version_only)
{
	struct prehash_result r = {.ok = true, .dev = 1, .ino = 2, .size = 3};
	r.mtime.tv_sec = 4;
	r.mtime.tv_nsec = 5;
	r.ctime.tv_sec = 6;
	r.ctime.tv_nsec = 7;
	struct stat st;
	memset(&st, 0, sizeof(st));
	st.st_dev = 1;
	st.st_ino = 2;
	st.st_size = 3;
	st.st_mtim.tv_sec = 4;
	st.st_mtim.tv_nsec = 5;
	st.st_ctim.tv_sec = 6;
	st.st_ctim.tv_nsec = 7;
	ck_assert(prehash_same(&r, &st));
	struct stat o = st;
	o.st_ctim.tv_nsec = 8; /* written since, same size and mtime */
	ck_assert(!prehash_same(&r, &o));
	o = st;
	o.st_ino = 9; /* replaced */
	ck_assert(!prehash_same(&r, &o));
	o = st;
	o.st_size = 4;
	ck_assert(!prehash_same(&r, &o));
	o = st;
	o.st_mtim.tv_sec = 5;
	ck_assert(!prehash_same(&r, &o));
	o = st;
	o.st_dev = 2;
	ck_assert(!prehash_same(&r, &o));
	r.ok = false;
	ck_assert(!prehash_same(&r, &st));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("prehash");
	TCase *tc = tcase_create("prehash");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, every_entry_dealt_once_in_order);
	tcase_add_test(tc, the_build_shares_the_hashing);
	tcase_add_test(tc, stopped_midway);
	tcase_add_test(tc, fewer_entries_than_a_chunk);
	tcase_add_test(tc, same_version_only);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
