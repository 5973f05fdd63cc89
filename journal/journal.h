/*
 * journal.h - the workspace's append-only, hash-chained record of events.
 *
 * fs/ calls journal_record() on its request paths; the call copies the event
 * into an in-memory queue and returns without touching the disk.  A writer
 * thread formats records as JSON Lines and appends them to the journal file.
 * Knows nothing of FUSE.  The CLI's `log` and `verify` read the file back with
 * the reader and verifier below.  The full schema is in journal/SCHEMA.md.
 *
 * Schema (version 1), one JSON object per line, keys in this order, absent
 * keys meaning "not applicable":
 *
 *   v         1 (schema version)
 *   seq       1, 2, 3, ... without gaps, in append order
 *   prev      xxh3-128 (32 lowercase hex, big-endian as `xxhsum -H2` prints) of
 *             the previous record's exact line bytes, without its newline;
 *             32 zeros for the first record (the genesis value)
 *   time_ns   wall-clock time of the event, nanoseconds since the epoch (UTC)
 *   op        "mount" "unmount" "recover" "read" "write" "copyup" "truncate"
 *             "create" "mkdir" "mknod" "unlink" "rmdir" "rename" "link"
 *             "symlink" "setattr" "setxattr" "removexattr" "readdir"
 *             "conceal" "deny" "discard"
 *   result    0, or the errno name of the failure ("ENOENT", "EROFS", ...)
 *   pid, uid  the requesting process: its process id (thread group id), whichever
 *             of its threads made the request (for READ/WRITE: the one that
 *             opened the handle)
 *   comm, exe its name (/proc/PID/comm: its main thread's) and executable
 *             (/proc/PID/exe), when they could be read
 *   path      view path relative to the mount root
 *   path2     rename/link destination, symlink target
 *   bytes     READ: bytes the daemon served (reads satisfied by the kernel's
 *             page cache never reach the daemon and are not counted);
 *             WRITE: bytes written, absent where the kernel wrote the file
 *             itself (passthrough, fs/passthrough.c); TRUNCATE: new size;
 *             COPYUP/RECOVER: size
 *   flags     rename flags, open flags, setattr mask (when non-zero)
 *   mode      file mode (create, mkdir, mknod; setattr when non-zero)
 *   hash_before  content before (WRITE, TRUNCATE; COPYUP: the lower's)
 *   hash      content seen (READ) or produced (WRITE, COPYUP, TRUNCATE,
 *             CREATE, RECOVER)
 *   detail    a JSON object (when the event's detail text is one) or a string
 *
 * A string that is not valid UTF-8 (paths, comm and exe may be any bytes) is
 * written as KEY_hex instead (e.g. "path_hex"): the bytes in lowercase hex.
 *
 * The chain detects accidents and naive tampering (editing a byte, removing,
 * reordering or truncating records).  xxh3 is not a cryptographic MAC: anyone
 * who can write the journal can recompute the whole chain.  A keyed mode
 * would replace journal_chain_hash() (chain.c) and bump "v".
 *
 * Beside the journal, "<journal>.head" holds the seq and hash of the last
 * record the writer made durable, so truncating whole records from the end is
 * detected too (see journal_verify_file()).
 *
 * Functions return 0 or a negative errno unless said otherwise.
 */
#ifndef AGENTFS_JOURNAL_H
#define AGENTFS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <xxhash.h>

#define JOURNAL_SCHEMA_VERSION 1

enum journal_op {
	JOP_MOUNT,
	JOP_UNMOUNT,
	JOP_RECOVER, /* "changed without a record", found at mount after a crash */
	JOP_READ,    /* a handle opened for reading was released */
	JOP_WRITE,   /* a handle's writes: at its release, or while still open */
	JOP_COPYUP,  /* a lower file was copied into the upper */
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
	JOP_READDIR, /* a directory was listed */
	JOP_CONCEAL, /* a lookup of a hidden name answered ENOENT */
	JOP_DENY,    /* a change refused by policy (EROFS) */
	JOP_DISCARD, /* agentfs discard dropped the agent's changes at a path */
	JOP__COUNT
};

/* One event.  Strings are borrowed for the duration of journal_record() only. */
struct journal_event {
	enum journal_op op;
	int result; /* 0 or a negative errno */
	pid_t pid;  /* requesting task (fuse_req_ctx: the calling thread's id; the
		     * record holds its process's id), or the process id
		     * journal_process_start() gave with @pid_start */
	uid_t uid;
	const char *path;   /* view path, relative to the mount root; may be NULL */
	const char *path2;  /* rename/link destination, symlink target; may be NULL */
	uint64_t bytes;	    /* bytes served (READ) or written (WRITE); size (TRUNCATE) */
	bool bytes_unknown; /* WRITE: written by the kernel (passthrough); no "bytes" */
	uint32_t flags;	    /* rename flags, open flags, setattr valid mask; for READ,
			     * WRITE, TRUNCATE, SETATTR, SETXATTR and REMOVEXATTR:
			     * JOURNAL_F_UNLINKED */
	uint32_t mode;	    /* create/mkdir/setattr mode */
	bool has_hash_before;
	bool has_hash_after;
	XXH128_hash_t hash_before; /* content before (WRITE, COPYUP: the lower's) */
	XXH128_hash_t hash_after;  /* content after (WRITE), content read (READ) */
	const char *detail;	   /* a JSON object text (embedded as an object when it parses
				    * as one) or any other text (embedded as a string); may be NULL */
	/* Start time of process @pid (journal_process_start(), which also gave @pid)
	 * when the event is attributed to a process that may have exited since
	 * (READ/WRITE at release: pass what was captured at open).  0: look the
	 * process up now. */
	uint64_t pid_start;
};

/* READ/WRITE flag: the file had no name left in the view when its handle was
 * released (written, then unlinked while open); TRUNCATE, SETATTR, SETXATTR
 * and REMOVEXATTR: it had none when changed through its handle (Python's
 * tempfile.TemporaryFile truncates a file it unlinked at once).  The record
 * is evidence of the change, and says nothing about what the upper holds at
 * @path. */
#define JOURNAL_F_UNLINKED 0x80000000u
/* Flag of a JOP_RECOVER record: what was found is a marker of the upper (a
 * whiteout, an opaque or redirected directory, a special file: fs/layout.h),
 * not a file's content. */
#define JOURNAL_F_MARKER 0x40000000u

enum journal_sync {
	JOURNAL_SYNC_INTERVAL = 0, /* write and fdatasync every ~100 ms and at close (default) */
	JOURNAL_SYNC_ALWAYS,	   /* write and fdatasync each batch as soon as it is queued */
	JOURNAL_SYNC_NEVER,	   /* write when 64 KiB are buffered and at flush/close, never
				    * fsync: a kill -9 loses up to that much */
};

/* Interval of JOURNAL_SYNC_INTERVAL, milliseconds. */
#define JOURNAL_INTERVAL_MS 100

struct journal;

/*
 * Open (creating if needed, mode 0600) the journal at @path for appending and
 * start the writer thread.  An existing journal is scanned first: a torn tail
 * (an incomplete or unparsable last line, e.g. after kill -9 or a power loss)
 * is trimmed, and if the previous session ended without an UNMOUNT record a
 * JOP_RECOVER record says so (with the trimmed byte count and the last intact
 * seq).  Damage before the tail is not trimmed (it is evidence): the journal
 * is appended to and `verify` keeps failing at the damaged record.  The scan
 * starts after the part "<path>.state" describes when the journal still
 * begins with exactly those bytes (journal/SCHEMA.md, "The saved state"),
 * and saves the state of the end when it found every line intact; the
 * writer has a thread save it too after resting STATE_IDLE_MS with much appended
 * (writer.h), and journal_close() does at the end.
 * Returns 0 and a journal owned by the caller, or a negative errno.
 */
int journal_open(struct journal **out, const char *path, enum journal_sync sync);

/* Queue one event; never blocks on I/O (it may wait for the writer thread when
 * the queue holds JOURNAL_QUEUE_MAX events: records are never dropped).  Reads
 * /proc/PID/comm (a cached fd, ~0.8 us; ~0.1 us when ev->pid_start is given) to
 * name the process; the record's pid is the process id (thread group id,
 * proc(5)) of the thread ev->pid, or ev->pid itself when it could not be read
 * (no comm then).  The first event of a thread of a multithreaded process
 * also reads /proc/TID/status and the main thread's stat (once per thread).
 * Safe from any thread.  @j may be NULL (journal off): then it does nothing. */
void journal_record(struct journal *j, const struct journal_event *ev);

#define JOURNAL_QUEUE_MAX 8192

/* The process behind task *@pid (a FUSE request's pid: the calling thread's
 * id): sets *@pid to the process id (its thread group id, "Tgid:" in
 * /proc/TID/status, proc(5)) and returns the process's start time (field 22 of
 * /proc/TGID/stat, clock ticks since boot), caching its name and executable so
 * that a later event passing both as journal_event.pid and .pid_start is
 * attributed to this process even after it exited or its id was reused.
 * Returns 0 and leaves *@pid as it was when the task cannot be read or @j is
 * NULL. */
uint64_t journal_process_start(struct journal *j, pid_t *pid);

/* Flush every queued record to the file (fdatasync unless sync is NEVER).
 * Returns 0 when they are in; else the error of the writer's last write (a
 * full disk: the records wait in memory and go out once a write succeeds,
 * and the error is gone then), or -ENOMEM for good once a record was lost
 * for want of memory. */
int journal_flush(struct journal *j);

/* Flush, stop the writer thread, close and free.  @j may be NULL.  When the
 * journal grew since it was opened and every line of it is intact, the
 * replay's state at its end is saved beside it ("<path>.state",
 * journal/SCHEMA.md) first: the next journal_open() parses only what comes
 * after.  That costs a parse of this session's records (~5 us each). */
void journal_close(struct journal *j);

/* What journal_open() read: *@replayed the journal's lines it parsed,
 * *@resumed the bytes of its beginning it took from the saved state instead
 * (0: it parsed the whole journal).  Zeros for NULL. */
void journal_open_stats(const struct journal *j, uint64_t *replayed, uint64_t *resumed);

/*
 * Crash recovery of the upper, called by the mount after journal_open() and
 * before serving: walks the upper directory @upper_fd (skipping whiteouts,
 * ".wh.*") and records a JOP_RECOVER ("changed without a record", with the
 * file's size and hash; a symlink's hash is its target's, never followed) for
 * every regular file or symlink that has no record, whose ctime is newer than
 * the journal's last intact record, or (when the previous session ended
 * without an UNMOUNT record) whose hash differs from the last recorded one;
 * and a JOP_RECOVER with result ENOENT for a recorded file that vanished.
 * @skip_git: paths ".git" and below live in a workspace-private git
 * directory, not in the upper (as journal_verify.skip_git): not checked.
 * Returns the number of files recorded, or a negative errno.
 */
int journal_recover_upper(struct journal *j, int upper_fd, bool skip_git);

/* ---- Reading back ---------------------------------------------------------- */

/* One parsed record.  Strings are malloc'd and owned by the entry (freed by
 * journal_entry_clear()); NULL when absent.  Paths are the decoded bytes
 * (the *_hex form is decoded), NUL-terminated. */
struct journal_entry {
	uint64_t seq;
	XXH128_hash_t prev;
	int64_t time_ns;
	enum journal_op op;
	int result; /* 0 or a negative errno */
	pid_t pid;
	uid_t uid;
	char *comm, *exe, *path, *path2;
	char *detail; /* compact JSON text of the detail object, or the string */
	bool detail_is_object;
	uint64_t bytes;
	bool has_bytes; /* false: absent (a passthrough WRITE, or an op without bytes) */
	uint32_t flags, mode;
	bool has_hash_before, has_hash_after;
	XXH128_hash_t hash_before, hash_after;
	char *line; /* the raw line, without its newline */
	size_t line_len;
	uint64_t lineno; /* 1-based line number in the file */
};

void journal_entry_clear(struct journal_entry *e);

/* Parse one line (without its newline) into @e.  -EBADMSG with a one-line
 * reason in @err when it is not a valid record. */
int journal_entry_parse(const char *line, size_t len, struct journal_entry *e, char *err,
			size_t errlen);

struct journal_reader;

int journal_reader_open(struct journal_reader **out, const char *path);

/*
 * Next record: 1 and @e filled (the caller clears it), 0 at the end of the
 * data so far (a later call sees records appended since: `log --follow`),
 * -EBADMSG (reason in @err, @e->lineno set) for a line that does not parse.
 * An incomplete last line (no newline yet) is held back, not returned.
 */
int journal_reader_next(struct journal_reader *r, struct journal_entry *e, char *err,
			size_t errlen);

/* Bytes of an incomplete last line seen at the last end of data (0 if none). */
size_t journal_reader_partial(const struct journal_reader *r);

void journal_reader_close(struct journal_reader *r);

/* Name of @op as in the schema ("write"), and back (-EINVAL if unknown). */
const char *journal_op_name(enum journal_op op);
int journal_op_parse(const char *name, enum journal_op *out);

/* ---- Verifying ------------------------------------------------------------- */

struct journal_verify {
	/* Optional: called for each notable finding that is not a failure
	 * (recovery records) and for each upper mismatch, with a one-line text. */
	void (*note)(void *arg, const char *msg);
	void *arg;

	uint64_t records;	/* records that chained correctly */
	uint64_t bad_line;	/* 1-based line of the first bad record, 0 when intact */
	uint64_t bad_seq;	/* seq that line should have held */
	char why[1024];		/* why it is bad, one line */
	uint64_t recovered;	/* JOP_RECOVER records seen */
	uint64_t upper_files;	/* regular files and symlinks of the upper checked */
	uint64_t upper_bad;	/* of which differ from their last record, are unrecorded,
				 * or recorded but missing; and markers no record
				 * explains */
	uint64_t upper_markers; /* whiteouts, opaque and redirected directories and
				 * special files of the upper checked */
	uint64_t upper_unread;	/* entries of the upper it could not read (a mode the
				 * agent set: chmod 000), so not checked; named to @note */
	char upper_first[1024]; /* the first upper problem, one line */
	bool session_open;	/* the last mount record has no unmount record after it:
				 * the daemon is serving, or was killed */
	/* Set by the caller: paths ".git" and below live in a workspace-private
	 * git directory (fs_config.git_dir), not in the upper: not checked. */
	bool skip_git;
};

/*
 * Check the whole chain of the journal at @path (seq without gaps, each prev
 * equal to the hash of the line before, every line a valid record, a complete
 * last line, and the head file's seq and hash present in the journal); then,
 * when @upper_fd >= 0, that every regular file and symlink of the upper has the
 * hash of its last recorded content (WRITE/COPYUP/CREATE/SYMLINK/TRUNCATE/
 * RECOVER, following RENAME/LINK/UNLINK; a symlink's content is its target,
 * read with readlinkat, never followed), and that a namespace record (at the
 * path, or a discard below it: journal_touched_apply) explains every marker
 * of the upper: whiteout, opaque or redirected directory, special file
 * (fs/layout.h).  Fills @v.  Returns 0 when the check
 * ran (intact when v->bad_line == 0 && v->upper_bad == 0), or a negative errno
 * when the journal could not be read.
 */
int journal_verify_file(const char *path, int upper_fd, struct journal_verify *v);

#endif
