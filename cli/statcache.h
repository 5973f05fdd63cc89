/*
 * statcache.h - the blob ids the private .git's builds computed, kept per
 * repository so that the next workspace's build does not read and hash the
 * same files again.
 *
 * A build (cli/gitpriv.c) takes a tracked file's id from the repository's
 * index when the file's stat data match the index entry's, as git does; any
 * other file it reads and hashes.  A repository whose index is stale (its
 * files copied, touched, or checked out by a tool that left the index alone:
 * every entry's ctime or inode differs) costs every new workspace a read of
 * the whole tree then: 7 s for the 78,000 files of a kernel tree here, where
 * the index alone gives 0.8 s.  agentfs never writes the repository, so it
 * cannot refresh that index; instead each build writes what it hashed to a
 * file of its own, and the next build of the same repository takes an id from
 * it where the file's stat data still match what was recorded.
 *
 * The file, <state root>/cache/statcache-<16 hex digits of XXH3-64 of the
 * repository's git directory path>, is a header and then one record per path,
 * in the order of the repository's index (git's path order), each with its
 * own checksum:
 *
 *   header  "AFSTATC2", then the threshold (below): int64 seconds, uint32
 *           nanoseconds, uint32 flags: 1 when the records' order ignores
 *           case, else 0 (a file in the other order reads as empty)  (24 bytes)
 *   record  uint16 path length, the path (no NUL), uint32 git mode,
 *           int64 mtime s, uint32 mtime ns, int64 ctime s, uint32 ctime ns,
 *           uint64 inode, uint64 size, uint32 uid, uint32 gid, uint64
 *           filters (below), 20 bytes of blob id, uint64 XXH3-64 of all the
 *           record's bytes before it                    (little-endian, packed)
 *
 * Reading streams it beside the index (one record in memory at a time); a
 * record that fails its checksum, or any malformed byte, ends its use for the
 * build (the rest is read and hashed, as without a cache).  The file is only
 * a cache: deleting it costs the next build its hashing, nothing else.
 *
 * Racy entries (git's Documentation/technical/racy-git.txt): a file changed
 * within the same timestamp as its recorded stat could keep those stat data
 * with other bytes.  Each file is written with a threshold, the time its
 * build started (CLOCK_REALTIME_COARSE, the clock the kernel stamps files
 * with: current_time() in fs/inode.c) less 2 seconds, for file systems whose
 * timestamps have 1- or 2-second resolution; a record whose mtime or ctime is
 * not before its file's threshold is neither written nor used.  Any change to
 * a file after its stat moves its ctime to at least that stat's time, so a
 * used record's bytes are the ones its stat data name.
 *
 * A file a git filter applies to (eol=crlf, text=auto, ident) has a blob id
 * that depends on more than its bytes: the config and the .gitattributes
 * that apply to it, which can change while its stat data do not.  Its record
 * carries a digest of all of those (cli/nofilter.h, nofilter_digest) and is
 * used only under the same digest; a file no filter applies to has 0 there
 * (cli/gitpriv.c, add_tracked).  libgit2 reads the attribute files again
 * at its own moment, so a build during which one of them changed (its stat
 * data, nofilter_unchanged) leaves the cache as it was, and one changed in
 * the clock tick it was read in gives no digest.  Stat data cannot
 * see every change, for this cache as for git's index: a write through a
 * shared mapping to a page already dirty may leave the timestamps as they
 * were, a network file system may answer stale attributes, and the threshold
 * assumes the repository's file system stamps files with this machine's
 * clock.
 *
 * Functions that return int give 0 or a negative errno.  Not thread-safe: one
 * build owns a statcache.
 */
#ifndef AGENTFS_STATCACHE_H
#define AGENTFS_STATCACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

/* Bytes of a blob id (SHA-1, the repositories libgit2 1.5 reads). */
#define STATCACHE_ID_LEN 20

struct statcache;

/*
 * Start a build's use of the cache file at @path: open it for reading (a
 * missing, unreadable or malformed one reads as empty) and a new one beside
 * it for writing (a temporary file in its directory, which is created 0700 if
 * missing).  @icase: the repository's index is sorted ignoring case
 * (core.ignorecase, GIT_INDEX_CAPABILITY_IGNORE_CASE), and so are the records.
 * Also removes, in that directory, temporary files older than an hour (a
 * build killed before its end) and caches no build wrote for 30 days (their
 * repository is likely gone; a live one only hashes again).  *out is owned by
 * the caller: statcache_commit, then statcache_free.  -errno when the new file
 * cannot be made (no cache then, the caller builds without).
 */
int statcache_begin(const char *path, bool icase, struct statcache **out);

/*
 * Whether the previous build recorded, for @path, the stat data @st now
 * shows, the git mode @mode, the id @id (STATCACHE_ID_LEN bytes) and the
 * filters digest @filters (0: no filter applies): then @id is the file's
 * blob id without reading it.  Calls must come in index
 * order (paths ascending by strcmp, or strcasecmp for @icase); a record
 * passed over is not found later.
 */
bool statcache_has(struct statcache *c, const char *path, const struct stat *st, uint32_t mode,
		   const unsigned char *id, uint64_t filters);

/* statcache_has, with the record's filters digest @filters or @or: for a
 * caller that does not know yet whether a filter applies (@filters 0). */
bool statcache_has_either(struct statcache *c, const char *path, const struct stat *st,
			  uint32_t mode, const unsigned char *id, uint64_t filters, uint64_t or);

/*
 * A second reader of @c's old file, for another thread (which calls
 * statcache_has on it in index order too, from the start): 0 and *out, to
 * free with statcache_free; -ENOMEM, or the -errno of opening @c's old file
 * again (through /proc/self/fd: no /proc).  The same file as @c's: a record
 * it finds is one @c would find.  Only statcache_has, statcache_has_either
 * and statcache_free apply to it.  Without an old file, it finds nothing.
 */
int statcache_reader(const struct statcache *c, struct statcache **out);

/*
 * Record that the file at @path with stat data @st (taken before its bytes
 * were read) and git mode @mode holds blob @id, under filters digest
 * @filters (0: no filter applies).  In index order, once per
 * path.  A racy entry is left out (see above); a write error is kept for
 * statcache_commit.
 */
void statcache_add(struct statcache *c, const char *path, const struct stat *st, uint32_t mode,
		   const unsigned char *id, uint64_t filters);

/*
 * For a build that stops before its last path (an unmount while it runs):
 * copy to the new file the old records not yet passed, those after the last
 * path given to statcache_has, so that what the previous builds recorded for
 * the paths this one did not reach stays for the next.  Only records whose
 * path sorts after the last one written are copied (one record per path, in
 * order), and only if their stat data are before both thresholds, the old
 * file's and this one's (a clock set back between the two builds).  Then
 * statcache_commit.
 */
void statcache_keep_rest(struct statcache *c);

/* Write out the new file and put it in the old one's place (rename(2)). */
int statcache_commit(struct statcache *c);

/* Close both files; the new one is removed unless committed.  NULL is fine. */
void statcache_free(struct statcache *c);

/* The cache file of the repository whose git directory is @git_dir, under
 * @root (the state root): a malloc'd path in *out. */
int statcache_path(const char *root, const char *git_dir, char **out);

#endif
