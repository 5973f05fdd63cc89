/*
 * prehash.h - a second thread that hashes files for the private .git's build,
 * a few index entries ahead of it.
 *
 * A build of a repository whose index is stale reads and hashes every file
 * (cli/gitpriv.c, add_tracked): SHA-1 with collision detection, the CPU time
 * of ~75% of a 4.6 s build of the kernel's 78,000 files here, on one of two
 * cores.  The entries 0..n-1 are dealt in chunks of PREHASH_CHUNK, in order,
 * to whichever of two threads asks first: this module's, which runs the
 * caller's @fn on each entry of its chunks and keeps the results until the
 * build's thread (the "main" one) reaches them, and the main thread, which
 * takes every entry in order (the index, the stat cache and the objects are
 * its alone).  A chunk nobody took when the main thread reaches it is done
 * there in place; one the other thread is still in, the main thread does not
 * wait for while it can hash the next chunk ahead itself.  Chunks are dealt
 * at most PREHASH_AHEAD ahead of the main thread, so the memory held is fixed
 * (PREHASH_CHUNK * PREHASH_AHEAD results).
 *
 * A result says which version of a file was hashed (device, inode, size,
 * mtime and ctime, as lstat(2) gave them) and its id; the main thread uses it
 * only for the same version.  It is a hint: where none is given, or the main
 * thread decides otherwise, the main thread does the entry's work itself.
 */
#ifndef AGENTFS_PREHASH_H
#define AGENTFS_PREHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#define PREHASH_CHUNK 16 /* entries dealt at a time */
#define PREHASH_AHEAD 4	 /* chunks this thread may hold for the main thread */

/* One entry's hash, of the file version its stat data name. */
struct prehash_result {
	bool ok; /* false: nothing hashed (not a regular file, unchanged, failed) */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
	unsigned char id[20]; /* the git blob id (SHA-1) */
};

enum { PREHASH_MAIN, PREHASH_THREAD }; /* which thread calls: main, or this module's */

/* The work on entry @i, in thread @worker (a PREHASH_ value; the two run at
 * once): fill *@out (zeroed before). */
typedef void (*prehash_fn)(void *arg, int worker, size_t i, struct prehash_result *out);

struct prehash;

/*
 * Start the thread for entries 0..@n-1, calling @fn(@arg, i, result) on those
 * dealt to it; @arg is borrowed until prehash_stop.  0 and *out, or -errno
 * (-ENOMEM, pthread_create's error): the caller then does every entry itself.
 */
int prehash_start(size_t n, prehash_fn fn, void *arg, struct prehash **out);

/*
 * The main thread at entry @i (called for each i in increasing order, none
 * skipped): NULL when the entry is the main thread's to do, else the result of
 * this thread's @fn for it (valid until the next call).  Waits when the
 * entry's chunk is this thread's and not finished.  @p NULL: NULL.
 */
const struct prehash_result *prehash_get(struct prehash *p, size_t i);

/* Whether @r was hashed from the file version @st names (same device, inode,
 * size, mtime and ctime). */
bool prehash_same(const struct prehash_result *r, const struct stat *st);

/* Stop the thread (after the entry it is at) and free @p; NULL is ignored.
 * After it, the main thread does every entry itself. */
void prehash_stop(struct prehash *p);

#endif
