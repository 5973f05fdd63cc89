/*
 * hashcache.c - content hashes computed once per file version.
 *
 * A version is (device, inode, size, mtime, ctime): any write, truncate or
 * metadata change moves ctime, so a stale entry never matches (DESIGN.md,
 * "caching content hashes of lower files") -- provided the change falls in a
 * later tick of the clock that stamps files than the version's ctime.  Before
 * Linux 6.13 that clock is the coarse one (current_time(), a jiffy: 1-10 ms),
 * so a same-size write within the tick of the version before keeps every
 * field of the key.  git's index has the same problem and the same answer
 * ("racily clean" entries, Documentation/technical/racy-git.txt): an entry is
 * trusted only if the version's ctime is older than the moment its content
 * was read, since any later change is then stamped with a later time.
 * The table is set-associative: a version maps to one set of HC_WAYS
 * entries and may take any free one; in a full set it replaces the way its
 * key's hash picks, never the least recently used: a tool that walks more
 * files than a set holds, over and over (grep -r), would otherwise miss on
 * every file of that set every time.  A direct-mapped table of 65,536 slots
 * lost ~15% of an 11k-file tree to collisions (1 - e^(-11k/64k)), and ~70%
 * of a 78k-file one, each hashed again at every read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "fs/internal.h"
#include "fs/layout.h"

#define HC_WAYS 8
#define HC_SETS 16384 /* a power of two; HC_WAYS * HC_SETS = 131,072 versions */

struct hc_key {
	uint64_t dev, ino, size;
	int64_t mtime_s, ctime_s;
	uint32_t mtime_ns, ctime_ns;
};

struct hc_set {
	struct hc_key k[HC_WAYS];
	XXH128_hash_t h[HC_WAYS];
	uint32_t used; /* bit i: way i holds an entry */
};

struct hashcache {
	pthread_mutex_t lock;
	pthread_t prefault_thr;
	atomic_bool prefaulting;   /* prefault_thr runs, to be joined */
	atomic_bool stop_prefault; /* hashcache_free() wants it to end */
	atomic_bool armed;	   /* hashcache_prefault_on_use(): not started yet */
	struct hc_set sets[HC_SETS];
};

static void key_of(const struct stat *st, struct hc_key *k)
{
	memset(k, 0, sizeof(*k));
	k->dev = st->st_dev;
	k->ino = st->st_ino;
	k->size = (uint64_t)st->st_size;
	k->mtime_s = st->st_mtim.tv_sec;
	k->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
	k->ctime_s = st->st_ctim.tv_sec;
	k->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
}

/* The set of @k, and in *@victim the way a full set gives up for it. */
static struct hc_set *set_of(struct hashcache *hc, const struct hc_key *k, unsigned *victim)
{
	uint64_t x = XXH3_64bits(k, sizeof(*k));
	*victim = (unsigned)(x >> 48) % HC_WAYS;
	return &hc->sets[x & (HC_SETS - 1)];
}

/* The way of @set holding @k, or -1.  Caller holds the lock. */
static int find_way(const struct hc_set *set, const struct hc_key *k)
{
	for (int i = 0; i < HC_WAYS; i++)
		if ((set->used & (1u << i)) && memcmp(&set->k[i], k, sizeof(*k)) == 0)
			return i;
	return -1;
}

/* The table (8 MiB) is its own anonymous mapping, zero until written. */
struct hashcache *hashcache_new(void)
{
	void *p = mmap(NULL, sizeof(struct hashcache), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct hashcache *hc = p;
	pthread_mutex_init(&hc->lock, NULL);
	return hc;
}

/* The populate holds the process's mmap lock for reading until its range is
 * in (mm/madvise.c, madvise_populate()), and another thread's mmap(2),
 * mprotect(2) or munmap(2) waits until the lock is free: the mount's main
 * thread, creating its threads' stacks right after mount(2), waited 2-3 ms
 * for the whole table (ftrace).  A reader may take the lock again ahead of
 * a waiting writer (kernel/locking/rwsem.c, reader lock stealing), so
 * pieces alone do not let it through: the thread also sleeps between two
 * pieces of 64 pages (~70 us each on the VM of tests/bench/RESULTS.md), and
 * a waiting writer then gets the lock.  At the default priority: at
 * SCHED_IDLE, on a busy machine, the thread was preempted inside a piece
 * and an mmap() waited up to 170 ms for it.  Writing a byte of each page
 * under the table's lock instead (faults under the mapping's own lock)
 * made the mount slower than these pieces. */
#define HC_PREFAULT_BYTES    (256u << 10)
#define HC_PREFAULT_PAUSE_NS 50000L

static void *prefault_main(void *arg)
{
	struct hashcache *hc = arg;
#ifdef MADV_POPULATE_WRITE
	/* From the mapping's start: every piece starts on a page (madvise(2)). */
	char *p = (char *)hc;
	for (size_t off = 0; off < sizeof(*hc); off += HC_PREFAULT_BYTES) {
		if (atomic_load_explicit(&hc->stop_prefault, memory_order_relaxed))
			break;
		size_t len = sizeof(*hc) - off;
		if (len > HC_PREFAULT_BYTES)
			len = HC_PREFAULT_BYTES;
		if (madvise(p + off, len, MADV_POPULATE_WRITE) != 0)
			break;
		struct timespec pause = {0, HC_PREFAULT_PAUSE_NS};
		nanosleep(&pause, NULL);
	}
#else
	(void)hc;
#endif
	return NULL;
}

void hashcache_prefault(struct hashcache *hc)
{
	if (hc && !atomic_load(&hc->prefaulting))
		atomic_store(&hc->prefaulting,
			     pthread_create(&hc->prefault_thr, NULL, prefault_main, hc) == 0);
}

void hashcache_prefault_on_use(struct hashcache *hc)
{
	if (hc)
		atomic_store(&hc->armed, true);
}

/* The table's first use starts the prefault it was armed for: one caller
 * wins the exchange. */
static void first_use(struct hashcache *hc)
{
	if (atomic_load_explicit(&hc->armed, memory_order_relaxed) &&
	    atomic_exchange(&hc->armed, false))
		hashcache_prefault(hc);
}

size_t hashcache_size(void)
{
	return sizeof(struct hashcache);
}

void hashcache_free(struct hashcache *hc)
{
	if (!hc)
		return;
	if (atomic_load(&hc->prefaulting)) {
		atomic_store(&hc->stop_prefault, true);
		pthread_join(hc->prefault_thr, NULL);
	}
	pthread_mutex_destroy(&hc->lock);
	munmap(hc, sizeof(*hc));
}

struct timespec hashcache_clock(void)
{
	struct timespec ts = {0, 0};
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return ts;
}

/* Whether @st's version may share its key with a version written after
 * @read_at (see the top of this file): its ctime is not strictly earlier.  A
 * ctime of whole seconds is taken as a file system that stores no finer time
 * (FAT keeps 2 s, and an ext4 inode of 128 bytes whole seconds): a later
 * write in the same interval would get the same stamp, so the read must
 * start at least 2 s after it. */
bool hashcache_racy(const struct stat *st, const struct timespec *read_at)
{
	if (st->st_ctim.tv_nsec == 0)
		return read_at->tv_sec < st->st_ctim.tv_sec + 2;
	return st->st_ctim.tv_sec > read_at->tv_sec ||
	       (st->st_ctim.tv_sec == read_at->tv_sec && st->st_ctim.tv_nsec >= read_at->tv_nsec);
}

void hashcache_put(struct hashcache *hc, const struct stat *st, XXH128_hash_t h,
		   const struct timespec *read_at)
{
	struct hc_key k;
	unsigned victim;
	key_of(st, &k);
	struct hc_set *set = set_of(hc, &k, &victim);
	bool keep = !hashcache_racy(st, read_at);
	first_use(hc);
	pthread_mutex_lock(&hc->lock);
	int w = find_way(set, &k);
	if (keep) {
		if (w < 0 && set->used != (1u << HC_WAYS) - 1)
			w = __builtin_ctz(~set->used);
		if (w < 0)
			w = (int)victim;
		set->used |= 1u << w;
		set->k[w] = k;
		set->h[w] = h;
	} else if (w >= 0) {
		set->used &= ~(1u << w); /* whatever it said, this version is not it */
	}
	pthread_mutex_unlock(&hc->lock);
}

bool hashcache_lookup(struct hashcache *hc, const struct stat *st, XXH128_hash_t *out)
{
	struct hc_key k;
	unsigned victim;
	key_of(st, &k);
	struct hc_set *set = set_of(hc, &k, &victim);
	first_use(hc);
	pthread_mutex_lock(&hc->lock);
	int w = find_way(set, &k);
	if (w >= 0)
		*out = set->h[w];
	pthread_mutex_unlock(&hc->lock);
	return w >= 0;
}

/* Hash the version @st open as @fd and cache it, unless it changed while
 * being read. */
static int hash_and_put(struct hashcache *hc, int fd, const struct stat *st, XXH128_hash_t *out)
{
	if (st->st_size > HASHCACHE_MAX_BYTES)
		return -EFBIG;
	struct timespec read_at = hashcache_clock();
	int r = layout_hash_fd(fd, out);
	if (r < 0)
		return r;
	if (hashcache_racy(st, &read_at)) {
		/* Not kept whatever the file holds now (a version just
		 * written, mostly): no second look, only its key dropped. */
		hashcache_put(hc, st, *out, &read_at);
		return 0;
	}
	struct stat st2;
	if (fstat(fd, &st2) == 0 && st2.st_ctim.tv_sec == st->st_ctim.tv_sec &&
	    st2.st_ctim.tv_nsec == st->st_ctim.tv_nsec && st2.st_size == st->st_size)
		hashcache_put(hc, st, *out, &read_at);
	return 0;
}

int hashcache_get(struct hashcache *hc, int fd, XXH128_hash_t *out)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (hashcache_lookup(hc, &st, out))
		return 0;
	return hash_and_put(hc, fd, &st, out);
}

int hashcache_refresh(struct hashcache *hc, int fd, XXH128_hash_t *out)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	return hash_and_put(hc, fd, &st, out);
}

int hashcache_refresh_st(struct hashcache *hc, int fd, const struct stat *st, XXH128_hash_t *out)
{
	return hash_and_put(hc, fd, st, out);
}
