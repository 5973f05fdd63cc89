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

/* A JSON string for @s, or {"hex": "..."} when @s is not valid UTF-8.  New
 * reference (NULL when out of memory). */
json_t *runlog_string(const char *s);

#endif
