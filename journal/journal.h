/*
 * journal.h - the workspace's append-only, hash-chained record of events.
 *
 * fs/ calls journal_record() on its request paths; the call copies the event
 * into an in-memory queue and returns without touching the disk.  A writer
 * thread formats records as JSON Lines and appends them to the journal file.
 * Knows nothing of FUSE.
 */
#ifndef AGENTFS_JOURNAL_H
#define AGENTFS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <xxhash.h>

enum journal_op {
	JOP_MOUNT,
	JOP_UNMOUNT,
	JOP_RECOVER,  /* "changed without a record", found at mount after a crash */
	JOP_READ,     /* a handle opened for reading was released */
	JOP_WRITE,    /* a handle that wrote was released or fsynced */
	JOP_COPYUP,   /* a lower file was copied into the upper */
	JOP_TRUNCATE,
	JOP_CREATE,
	JOP_MKDIR,
	JOP_MKNOD,
	JOP_UNLINK,
	JOP_RMDIR,
	JOP_RENAME,
	JOP_LINK,
	JOP_SYMLINK,
	JOP_SETATTR,
	JOP_SETXATTR,
	JOP_REMOVEXATTR,
	JOP_READDIR,  /* a directory was listed */
	JOP_CONCEAL,  /* a lookup of a hidden name answered ENOENT */
	JOP_DENY,     /* a change refused by policy (EROFS) */
	JOP__COUNT
};

/* One event.  Strings are borrowed for the duration of journal_record() only. */
struct journal_event {
	enum journal_op op;
	int result;          /* 0 or a negative errno */
	pid_t pid;           /* requesting process (fuse_req_ctx) */
	uid_t uid;
	const char *path;    /* view path, relative to the mount root; may be NULL */
	const char *path2;   /* rename/link destination, symlink target; may be NULL */
	uint64_t bytes;      /* bytes served (READ) or written (WRITE); size (TRUNCATE) */
	uint32_t flags;      /* rename flags, open flags, setattr valid mask */
	uint32_t mode;       /* create/mkdir/setattr mode */
	bool has_hash_before;
	bool has_hash_after;
	XXH128_hash_t hash_before; /* content before (WRITE, COPYUP: the lower's) */
	XXH128_hash_t hash_after;  /* content after (WRITE), content read (READ) */
	const char *detail;  /* free-form JSON-safe note (mount options, reason); may be NULL */
};

enum journal_sync {
	JOURNAL_SYNC_INTERVAL = 0, /* flush every ~100 ms and at close (default) */
	JOURNAL_SYNC_ALWAYS,       /* write and fdatasync each batch as soon as it is queued */
	JOURNAL_SYNC_NEVER,        /* write when the buffer fills and at close, never fsync */
};

struct journal;

/*
 * Open (creating if needed) the journal at @path for appending and start the
 * writer thread.  An existing journal is verified first; a torn or unparsable
 * tail is trimmed (the count of trimmed bytes is recorded in a JOP_RECOVER
 * record).  Returns 0 and a journal owned by the caller, or a negative errno.
 */
int journal_open(struct journal **out, const char *path, enum journal_sync sync);

/* Queue one event; never blocks on I/O.  Safe from any thread.  @j may be NULL
 * (journal off): then it does nothing. */
void journal_record(struct journal *j, const struct journal_event *ev);

/* Flush every queued record to the file (fdatasync unless sync is NEVER). */
int journal_flush(struct journal *j);

/* Flush, stop the writer thread, close and free.  @j may be NULL. */
void journal_close(struct journal *j);

#endif
