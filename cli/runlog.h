/*
 * runlog.h - the run journal: <workspace>/run.jsonl, what `agentfs run` did.
 *
 * The workspace's journal.jsonl belongs to the mount's daemon while it serves
 * (a second writer would fork its hash chain), so runs keep their own journal
 * beside it, chained the same way: one JSON object per line, keys in order
 *
 *   v        1
 *   seq      1, 2, 3, ... without gaps
 *   prev     xxh3-128 (32 hex, as `xxhsum -H2` prints) of the previous line's
 *            bytes without its newline; 32 zeros for the first
 *   time_ns  wall clock, nanoseconds since the epoch
 *   op       "run"   a run starts: argv, cwd, mount, the sandbox settings
 *            "start" the sandbox is up: its processes' pids as the host (and
 *                    the mount's daemon, whose journal records them) sees
 *                    them, and its namespaces
 *            "net"   a connection through the proxy: allowed or refused
 *            "exit"  the run ended: exit status, how
 *   run      the run's id, "<pid of agentfs run>-<start time_ns>"
 *   ...      the op's own keys (see cmd_run.c)
 *
 * Several runs of one workspace may append at once: each append takes an
 * exclusive flock(2) on the file, reads the last line for seq and prev, writes
 * the record with one write(2) and fdatasync()s it.  The file is created mode
 * 0600.  Strings that are not UTF-8 are written as {"hex": "..."}.
 *
 * Functions return 0 or a negative errno.
 */
#ifndef AGENTFS_RUNLOG_H
#define AGENTFS_RUNLOG_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#define RUNLOG_VERSION 1

struct runlog {
	int fd;
	pthread_mutex_t lock; /* the proxy's threads append too */
};

/* Open (creating) the run journal at @path.  -EBADMSG if its last line is not
 * a complete record (it is evidence: appending after it would hide it). */
int runlog_open(struct runlog *l, const char *path);

/* Append one record: v, seq, prev and time_ns, then @fields' keys in their
 * order.  @fields is borrowed.  Safe from any thread. */
int runlog_append(struct runlog *l, json_t *fields);

void runlog_close(struct runlog *l);

/* Result of runlog_verify_file(). */
struct runlog_verify {
	uint64_t records;  /* records before the first bad one (all when intact) */
	uint64_t bad_line; /* 1-based line of the first bad record, 0 when intact */
	uint64_t bad_seq;  /* seq that line should have held */
	char why[1024];	   /* why it is bad, one line */
};

/*
 * Check the whole chain of the run journal at @path, by the rule above: every
 * line a JSON object with v 1, seq one more than the line before's (1 first),
 * prev the xxh3-128 of the line before (genesis first) and an integer time_ns
 * and a string op, and a complete last line.  When a record's prev does not
 * match, the record before is blamed if the record after still chains to this
 * one (an edited record breaks the prev of the next), else this one.  Fills
 * @v.  Returns 0 when the check ran (intact when v->bad_line == 0), -ENOENT
 * when there is no such file, or another negative errno.
 *
 * Unlike journal.jsonl, the run journal has no head file: removing whole
 * records from its end, or editing its last record so that it still parses,
 * is not detected.
 */
int runlog_verify_file(const char *path, struct runlog_verify *v);

/* A JSON string for @s, or {"hex": "..."} when @s is not valid UTF-8.  New
 * reference (NULL when out of memory). */
json_t *runlog_string(const char *s);

#endif
