/*
 * internal.h - declarations shared by the journal's own files; not for other
 * modules.
 */
#ifndef AGENTFS_JOURNAL_INTERNAL_H
#define AGENTFS_JOURNAL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <xxhash.h>

#include "journal/journal.h"

/* ---- buf: a growing byte buffer ------------------------------------------- */

struct jbuf {
	char *p;
	size_t len, cap;
	bool oom; /* an append failed; contents are incomplete */
};

void jbuf_put(struct jbuf *b, const void *s, size_t n);
void jbuf_puts(struct jbuf *b, const char *s);
void jbuf_putc(struct jbuf *b, char c);
void jbuf_free(struct jbuf *b);

/* Reading back what jbuf_put() laid out (checkpoint.c): a cursor over @n
 * bytes that turns bad, and stays so, at the first read past the end. */
struct jcursor {
	const unsigned char *p, *end;
	bool bad;
};

/* Copy the next @n bytes to @out (zeros once the cursor is bad); false when
 * fewer than @n are left. */
bool jcur_get(struct jcursor *c, void *out, size_t n);

/* ---- chain.c -------------------------------------------------------------- */

/* The genesis "prev" of the first record. */
extern const XXH128_hash_t journal_chain_genesis;

/* Chain hash of one record's line (without its newline).  The single place a
 * keyed mode would change. */
XXH128_hash_t journal_chain_hash(const char *line, size_t len);

/* ---- record.c: formatting ------------------------------------------------- */

/* What the writer knows about an event besides struct journal_event. */
struct journal_who {
	const char *comm; /* NULL when unknown */
	const char *exe;  /* NULL when unknown */
};

/*
 * Append one record (no newline) to @b.  @detail_json, when not NULL, is the
 * compact JSON text of an object and is embedded as is; otherwise ev->detail,
 * if any, is written as a string.
 */
void journal_format(struct jbuf *b, uint64_t seq, XXH128_hash_t prev, int64_t time_ns,
		    const struct journal_event *ev, const struct journal_who *who,
		    const char *detail_json);

/* Append "KEY":"escaped" when @s is valid UTF-8, else "KEY_hex":"hex". */
void journal_put_string_field(struct jbuf *b, const char *key, const char *s, size_t n);

bool journal_utf8_valid(const char *s, size_t n);

/* "ENOENT" for -ENOENT; "E<n>" when the C library has no name for it. */
void journal_errno_name(int negerr, char *out, size_t len);
/* Back: -EINVAL if @name is neither. */
int journal_errno_parse(const char *name, int *negerr);

/* ---- proc.c: request id -> process cache ---------------------------------- */

struct journal_proc_cache;

int journal_proc_cache_new(struct journal_proc_cache **out);
void journal_proc_cache_free(struct journal_proc_cache *c);

/*
 * Identify the process of task @pid (a thread id, as a FUSE request carries, or
 * a process id): copies the process's comm (its main thread's, <= 15 bytes +
 * NUL) and exe (@exelen bytes, PATH_MAX will do, or "" when unknown) and
 * returns 1, or returns 0 when it cannot be named (nothing written then).
 * When @start is non-zero, the answer is the cached one for the task (pid,
 * start), read fresh only if that task is still alive; pass a process id and
 * start time this function gave.  *@pid_out gets the process id (the thread
 * group id, proc(5) "Tgid:") and *@start_out the process's start time (field 22
 * of /proc/TGID/stat, clock ticks since boot); either may be NULL.
 */
int journal_proc_identify(struct journal_proc_cache *c, pid_t pid, uint64_t start, char comm[17],
			  char *exe, size_t exelen, pid_t *pid_out, uint64_t *start_out);

/* ---- pathmap.c: view path -> last recorded content ------------------------- */

struct journal_pathmap;

/* An upper file's last recorded content, shared by all its names (hard links). */
struct journal_content {
	bool has_hash; /* false: content changed by a record that carried no hash */
	XXH128_hash_t hash;
	uint64_t seq; /* record that set the content */
	size_t refs;  /* names pointing here */
	uint64_t id;  /* journal_pathmap_save()'s numbering; 0 outside it */
};

struct journal_pathent {
	char *path;
	struct journal_content *c; /* owned reference; NULL once dead */
	uint64_t seq;		   /* record that gave the path this content (or moved it here) */
	bool live;
};

int journal_pathmap_new(struct journal_pathmap **out);
void journal_pathmap_free(struct journal_pathmap *m);
/* The live entry of @path, or NULL; valid until the map next changes. */
struct journal_pathent *journal_pathmap_get(struct journal_pathmap *m, const char *path);
/* Does a directory above @path ("a" or "a/b" for "a/b/c") have an entry? */
bool journal_pathmap_has_parent(struct journal_pathmap *m, const char *path);
/* @path names a new file (copy-up, create) holding @h (when @has_hash), no
 * longer a link of any other name.  0 or -ENOMEM. */
int journal_pathmap_set(struct journal_pathmap *m, const char *path, bool has_hash, XXH128_hash_t h,
			uint64_t seq);
/* The file @path names now holds @h (a write, truncate, recovery): so do all
 * its other names.  Like journal_pathmap_set() when @path is unknown.  0 or
 * -ENOMEM. */
int journal_pathmap_update(struct journal_pathmap *m, const char *path, bool has_hash,
			   XXH128_hash_t h, uint64_t seq);
/* @to becomes another name of the file @from names (a hard link); nothing
 * when @from is unknown.  0 or -ENOMEM. */
int journal_pathmap_link(struct journal_pathmap *m, const char *from, const char *to, uint64_t seq);
void journal_pathmap_del(struct journal_pathmap *m, const char *path);
/* Remove @path and everything under "@path/" ("": everything). */
void journal_pathmap_del_tree(struct journal_pathmap *m, const char *path);
/* Move @from and everything under "@from/" to @to; with @exchange, swap. */
int journal_pathmap_rename(struct journal_pathmap *m, const char *from, const char *to,
			   bool exchange, uint64_t seq);
/* Apply one intact record's effect on the upper's content. */
int journal_pathmap_apply(struct journal_pathmap *m, const struct journal_entry *e);
/* The map of paths the namespace records touched (verify's and recovery's
 * check of the upper's markers): the path of a successful unlink, rmdir,
 * mkdir, create, mknod, symlink, copy-up or marker recovery, both paths of a
 * rename (which also moves what the map holds under its source, as the upper
 * directory moved with its markers), the new path of a link; a rmdir or
 * mkdir forgets what was below its path; a discard removes its path and all
 * below it and marks the directories on the way to it from the first one
 * touched down (their entries may have markers the discard made).  0 or
 * -ENOMEM. */
int journal_touched_apply(struct journal_pathmap *m, const struct journal_entry *e);
/* Does a record explain a marker at @path (journal_marker_fn): @path touched,
 * or its directory touched and marked by a discard, or, for a hashed
 * whiteout (@hashed, HEX), a name touched in its directory that hashes to
 * HEX? */
bool journal_touched_explains(struct journal_pathmap *m, const char *path, const char *hashed);
/* Call @fn for every live entry; iteration order is unspecified. */
void journal_pathmap_each(struct journal_pathmap *m,
			  void (*fn)(void *arg, struct journal_pathent *e), void *arg);
size_t journal_pathmap_count(const struct journal_pathmap *m);
/* Append every live entry of @m to @b (checkpoint.c's layout, in host byte
 * order): the contents, each once however many names share it, then the
 * names.  The prefix index is not saved: it is rebuilt from the names, and a
 * prefix of names that are gone changes no answer of the map. */
void journal_pathmap_save(struct journal_pathmap *m, struct jbuf *b);
/* Read what journal_pathmap_save() wrote into the empty map @m.  0, or
 * -EBADMSG when the bytes do not hold one (@m then holds part of it: the
 * caller frees it), -ENOMEM. */
int journal_pathmap_load(struct journal_pathmap *m, struct jcursor *c);
/* Exchange what @a and @b hold. */
void journal_pathmap_swap(struct journal_pathmap *a, struct journal_pathmap *b);

/* ---- head file ------------------------------------------------------------ */

struct journal_head {
	uint64_t seq;
	XXH128_hash_t hash;
	uint64_t size; /* journal bytes through that record */
};

/* "<path>.head", malloc'd. */
char *journal_head_path(const char *journal_path);
/* 1 and @h filled, 0 when there is no head file, -EBADMSG when malformed. */
int journal_head_read(const char *head_path, struct journal_head *h);
int journal_head_write_fd(int fd, const struct journal_head *h);

/* ---- scan.c: read a journal file and check its chain ---------------------- */

struct journal_scan {
	struct journal_pathmap *map;	 /* when not NULL, updated from intact records */
	struct journal_pathmap *touched; /* the same, journal_touched_apply() */
	void (*on_entry)(void *arg, const struct journal_entry *e); /* optional */
	void *arg;

	uint64_t records; /* intact records */
	uint64_t last_seq;
	XXH128_hash_t last_hash; /* chain hash of the last intact line (genesis if none) */
	int64_t last_time_ns;
	enum journal_op last_op;
	/* A mount record was not followed by an unmount record: the last mount's
	 * daemon did not end its session (a crash), whatever was appended after
	 * it without a daemon (agentfs discard of an unmounted workspace). */
	bool session_open;
	/* While session_open: a crash recovery record (a JOP_RECOVER without a
	 * path) follows that mount record, written by a command that opened the
	 * journal after the crash (agentfs discard of the unmounted workspace):
	 * the next mount recovers the upper without noting the crash again. */
	bool crash_noted;
	off_t intact_end; /* file offset just past the last intact line's newline */
	off_t file_size;
	uint64_t recovered; /* JOP_RECOVER records among the intact ones */

	/* First problem, when bad_line != 0. */
	uint64_t bad_line;
	uint64_t bad_seq;
	char why[1024];
	bool bad_is_tail; /* the problem is confined to the last line (torn tail) */
	/* The file's actual last complete line's hash (for appending after damage). */
	XXH128_hash_t file_last_hash;
	uint64_t file_last_seq;
	off_t complete_end; /* offset past the last newline */

	/* Input: the head file, when known, to judge an edit of the last record. */
	const struct journal_head *head;
	/* Input: a seq whose line hash to report (for checking the head). */
	uint64_t check_seq;
	bool check_found;
	XXH128_hash_t check_hash;

	uint64_t lines;		/* complete lines read, the damaged ones included */
	uint64_t lines_resumed; /* of them, those a saved state stood for */
	/* Input: the fields above (records through recovered, file_last_*,
	 * lines) and the maps already hold the state after the journal's first
	 * intact_end bytes, all of them intact (journal_checkpoint_load()): the
	 * scan goes on from there. */
	bool resume;
	/* Input, optional: each complete line read, and its newline, is fed to
	 * this xxh3-128 state (the checkpoint's binding to the bytes it
	 * describes). */
	XXH3_state_t *prefix;
	/* Input, optional: the scan ends at this offset, as if the file did
	 * (file_size is then at most this); 0: at the file's end. */
	off_t limit;
};

/* Scan the journal open as @fd from offset 0 (with @s->resume, from
 * @s->intact_end).  Returns 0 (problems are in @s) or a negative errno on
 * I/O failure. */
int journal_scan_fd(int fd, struct journal_scan *s);

/* ---- checkpoint.c: the scan's state, kept beside the journal -------------- */

/* "<journal_path>.state", malloc'd (NULL: no memory). */
char *journal_state_path(const char *journal_path);

/*
 * Seed @s (its maps empty, check_seq set when the head is checked) from the
 * checkpoint at @state_path, if it describes how the journal open as @fd
 * begins: its recorded prefix is hashed again into @prefix and must match.
 * 1: @s resumes (s->resume, its state and maps set; @prefix holds the
 * prefix's bytes, for journal_checkpoint_save()); 0: no usable checkpoint
 * (none, damaged, of other bytes, larger than journal/checkpoint.c's
 * bound, older than the head's record, or no memory to load it: @s is as it
 * was, @prefix reset).
 */
int journal_checkpoint_load(const char *state_path, int fd, struct journal_scan *s,
			    XXH3_state_t *prefix);

/* Save the state of @s, a scan that found every line of the journal intact
 * (no bad line, intact_end = file_size, both maps) and fed them to @prefix.
 * 0, -EINVAL when @s is not such a scan, or a negative errno of the write. */
int journal_checkpoint_save(const char *state_path, const struct journal_scan *s,
			    const XXH3_state_t *prefix);

/* ---- reader.c: lines ------------------------------------------------------ */

/* A reader over @fd (borrowed), from its current position. */
int journal_reader_fd(struct journal_reader **out, int fd);

/* Read nothing at or past file offset @limit (0: to the end of the file):
 * the end of what a writer appending meanwhile had written. */
void journal_reader_limit(struct journal_reader *r, off_t limit);

/* Next complete line: 1 with *line (valid until the next call; not
 * NUL-terminated), *len (without the newline) and *off (its file offset);
 * 0 at the end of the data so far (an incomplete line is held back);
 * negative errno on a read error. */
int journal_reader_line(struct journal_reader *r, const char **line, size_t *len, off_t *off);

/* ---- upper.c: walking the upper ------------------------------------------ */

/* Called for each regular file and symlink of the upper (whiteouts and other
 * reserved names skipped), with its view path, its directory fd and name, and
 * its lstat, and for each directory the walk cannot open (EACCES: the agent
 * can chmod 000 a directory, and the walk runs as the workspace's owner),
 * whose files then go unseen.  A non-zero return stops the walk and is
 * returned. */
typedef int (*journal_upper_fn)(void *arg, const char *path, int dirfd, const char *name,
				const struct stat *st);

int journal_walk_upper(int upper_fd, journal_upper_fn fn, void *arg);

/* What the upper says besides files (fs/layout.h): a whiteout deletes a
 * lower entry, an opaque directory hides the lower directory at its path, a
 * redirected one shows another; a FIFO, socket or device node is a special
 * file. */
enum journal_marker {
	JOURNAL_MARK_WHITEOUT,
	JOURNAL_MARK_OPAQUE,
	JOURNAL_MARK_REDIRECT,
	JOURNAL_MARK_SPECIAL,
};

/* Called for each marker of the upper with the view path it speaks of: a
 * whiteout's is the path it deletes (for the hashed form of a long name,
 * ".wh..h.HEX", the directory's path + "/.h.HEX", and @hashed points to
 * HEX, else NULL); a directory's or a special file's is its own ("" for the
 * upper's root). */
typedef int (*journal_marker_fn)(void *arg, const char *path, const char *hashed,
				 enum journal_marker kind);

/* journal_walk_upper(), and @mfn (when not NULL) for each marker. */
int journal_walk_upper_all(int upper_fd, journal_upper_fn fn, journal_marker_fn mfn, void *arg);

/* xxh3-128 of the content of @name in @dirfd, whose lstat is @st: a regular
 * file's bytes, or a symlink's target (never followed).  0 or a negative
 * errno (-ELOOP or -EINVAL when it is no longer of @st's type). */
int journal_hash_at(int dirfd, const char *name, const struct stat *st, XXH128_hash_t *out);

/* Is view path @path ".git" or below it: the workspace-private git directory,
 * which lives beside the upper, not in it (journal_verify.skip_git)? */
static inline bool journal_under_git(const char *path)
{
	return strncmp(path, ".git", 4) == 0 && (path[4] == 0 || path[4] == '/');
}

#endif
