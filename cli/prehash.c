/*
 * prehash.c - a second thread that hashes files for the private .git's build,
 * a few index entries ahead of it (see prehash.h).
 */
#include "cli/prehash.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One chunk dealt to this module's thread, until the main thread is past it. */
struct slot {
	size_t chunk; /* SIZE_MAX: none yet */
	bool done;    /* every entry of it has its result */
	struct prehash_result r[PREHASH_CHUNK];
};

struct prehash {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a chunk done, the main thread moved, stop */
	pthread_t thr;
	prehash_fn fn;
	void *arg;
	size_t nchunks;
	size_t n;
	/* Under lock: */
	size_t next;	/* the next chunk to deal */
	size_t main_at; /* the chunk the main thread is in */
	bool stop;
	struct slot slots[PREHASH_AHEAD];
	/* The main thread's own: */
	size_t cur; /* the chunk it is in, SIZE_MAX before the first */
	bool mine;  /* cur is its to do */
};

/* Run @fn on the entries of chunk @c into its slot, unlocked; then mark it
 * done.  Called and returns with p->lock held. */
static void run_chunk(struct prehash *p, int worker, size_t c)
{
	struct slot *s = &p->slots[c % PREHASH_AHEAD];
	s->chunk = c;
	s->done = false;
	pthread_mutex_unlock(&p->lock);
	memset(s->r, 0, sizeof(s->r));
	size_t lo = c * PREHASH_CHUNK;
	size_t hi = lo + PREHASH_CHUNK < p->n ? lo + PREHASH_CHUNK : p->n;
	for (size_t i = lo; i < hi && !__atomic_load_n(&p->stop, __ATOMIC_RELAXED); i++)
		p->fn(p->arg, worker, i, &s->r[i - lo]);
	pthread_mutex_lock(&p->lock);
	s->done = true;
	pthread_cond_broadcast(&p->cond);
}

static void *prehash_main(void *arg)
{
	struct prehash *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		/* At most PREHASH_AHEAD chunks held: slot next % AHEAD is then free,
		 * its last chunk (next - AHEAD < main_at) behind the main thread. */
		while (!p->stop && p->next < p->nchunks && p->next >= p->main_at + PREHASH_AHEAD)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop || p->next >= p->nchunks)
			break;
		run_chunk(p, PREHASH_THREAD, p->next++);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int prehash_start(size_t n, prehash_fn fn, void *arg, struct prehash **out)
{
	struct prehash *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->fn = fn;
	p->arg = arg;
	p->n = n;
	p->nchunks = (n + PREHASH_CHUNK - 1) / PREHASH_CHUNK;
	p->cur = SIZE_MAX;
	for (size_t k = 0; k < PREHASH_AHEAD; k++)
		p->slots[k].chunk = SIZE_MAX;
	int e = pthread_create(&p->thr, NULL, prehash_main, p);
	if (e != 0) {
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -e;
	}
	*out = p;
	return 0;
}

const struct prehash_result *prehash_get(struct prehash *p, size_t i)
{
	if (!p || i >= p->n)
		return NULL;
	size_t c = i / PREHASH_CHUNK;
	struct slot *s = &p->slots[c % PREHASH_AHEAD];
	if (c != p->cur) {
		pthread_mutex_lock(&p->lock);
		p->main_at = c;
		pthread_cond_broadcast(&p->cond); /* the window moved */
		p->mine = false;
		while (!(s->chunk == c && s->done)) {
			if (p->next <= c) {
				/* Not dealt: the main thread's to do in place.  Chunks
				 * between (none when called for every entry) are
				 * nobody's: it passed them by. */
				p->next = c + 1;
				p->mine = true;
				break;
			}
			if (p->next < p->nchunks && p->next < c + PREHASH_AHEAD)
				run_chunk(p, PREHASH_MAIN, p->next++); /* rather than wait */
			else
				pthread_cond_wait(&p->cond, &p->lock);
		}
		pthread_mutex_unlock(&p->lock);
		p->cur = c;
	}
	return p->mine ? NULL : &s->r[i % PREHASH_CHUNK];
}

bool prehash_same(const struct prehash_result *r, const struct stat *st)
{
	return r->ok && r->dev == st->st_dev && r->ino == st->st_ino && r->size == st->st_size &&
	       r->mtime.tv_sec == st->st_mtim.tv_sec && r->mtime.tv_nsec == st->st_mtim.tv_nsec &&
	       r->ctime.tv_sec == st->st_ctim.tv_sec && r->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

void prehash_stop(struct prehash *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	__atomic_store_n(&p->stop, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thr, NULL);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
