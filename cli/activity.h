/*
 * activity.h - what a workspace's journal says happened: the distinct paths
 * read, written, created, deleted, renamed and refused, in all and per
 * process.  `agentfs log --summary` prints it as a table; `agentfs export
 * --evidence` as lists a reviewer can read (cli/evidence.h).
 *
 * These are events, not the net change: a file created and then deleted is
 * both created and deleted here and absent from the patch.  Only successful
 * operations count, except refusals, which are failures by nature:
 *
 *   read       READ
 *   written    WRITE, TRUNCATE
 *   created    CREATE, MKDIR, MKNOD, SYMLINK, and LINK's new name (path2)
 *   deleted    UNLINK, RMDIR
 *   renamed    RENAME: "path -> path2" pairs, in journal order (an exchange
 *              is one too: activity_renamed_exchange)
 *   concealed  CONCEAL: a lookup of a name the policy hides (the name the
 *              process tried; it was told ENOENT)
 *   denied     DENY: a change to a read-only path refused (EROFS)
 *
 * Processes are told apart by name and pid ("comm[pid]"; a process whose name
 * could not be read has the name "").  Paths are the journal's bytes, which
 * may be any bytes but NUL: escape them for a terminal (activity_show_path).
 *
 * Functions return 0 or a negative errno unless said otherwise.
 */
#ifndef AGENTFS_ACTIVITY_H
#define AGENTFS_ACTIVITY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "journal/journal.h"

enum activity_kind {
	ACT_READ,
	ACT_WRITTEN,
	ACT_CREATED,
	ACT_DELETED,
	ACT_RENAMED,
	ACT_CONCEALED,
	ACT_DENIED,
	ACT__COUNT
};

/* "read", "written", "created", "deleted", "renamed", "concealed", "denied". */
const char *activity_kind_name(enum activity_kind k);

struct activity;

int activity_new(struct activity **out);
void activity_free(struct activity *a);

/* Count the record @e (borrowed).  Every record counts towards the span
 * (activity_records, activity_first_ns, activity_last_ns), whatever its op. */
int activity_add(struct activity *a, const struct journal_entry *e);

/* Records added; time_ns of the first and of the last added (0 when none). */
uint64_t activity_records(const struct activity *a);
int64_t activity_first_ns(const struct activity *a);
int64_t activity_last_ns(const struct activity *a);

/* Distinct paths (renames: distinct pairs) of kind @k, of the process @who
 * ("comm[pid]" as activity_processes() lists it), or of all when @who is NULL.
 * 0 for an unknown process. */
size_t activity_count(const struct activity *a, const char *who, enum activity_kind k);

/*
 * The processes with at least one path of some kind, "comm[pid]", sorted
 * (bytewise), in *out: a NULL-ended array of *n strings owned by @a (valid
 * until activity_free() or the next activity_add()); free only the array.
 */
int activity_processes(const struct activity *a, const char ***out, size_t *n);

/* The names seen (comm; "" when unknown), sorted, as activity_processes(). */
int activity_names(const struct activity *a, const char ***out, size_t *n);

/* For the name @comm: how many distinct pids, and distinct paths of kind @k
 * over all its processes. */
size_t activity_name_pids(const struct activity *a, const char *comm);
size_t activity_name_count(const struct activity *a, const char *comm, enum activity_kind k);

/*
 * The paths of kind @k over all processes, sorted (bytewise), as
 * activity_processes().  For ACT_RENAMED, *out holds 2 * *n strings: the
 * pairs (from, to) in journal order.
 */
int activity_paths(const struct activity *a, enum activity_kind k, const char ***out, size_t *n);
/* Whether pair @i of the ACT_RENAMED paths is an exchange (renameat2(2) with
 * RENAME_EXCHANGE: each name now holds what the other held), not a move. */
bool activity_renamed_exchange(const struct activity *a, size_t i);

/* Write @p for a terminal or a pull request: control bytes, backslash, DEL
 * and bytes that are not UTF-8 as \xHH, so a hostile name cannot move the
 * cursor or start a line of its own. */
void activity_show_path(FILE *out, const char *p);
/* activity_show_path() for one path of a pair ("FROM -> TO", "A <-> B"): in
 * double quotes, '"' escaped as \x22 too, when it holds a space or a quote,
 * so that no name can read as an arrow and another name (as git status
 * quotes such names). */
void activity_show_pair_path(FILE *out, const char *p);

/*
 * Find the journal of MNT|NAME @target (a workspace found in @state_dir's
 * root, or a workspace directory, or a journal file named directly): sets
 * malloc'd paths of the journal, the upper (NULL when there is none) and,
 * when @runs is not NULL, the run journal.  A mounted workspace's daemon is
 * first asked to write its journal out.  Errors are printed as @cmd's;
 * returns 0 or a negative errno.
 */
int activity_find_journal(const char *cmd, const char *target, const char *state_dir,
			  char **journal, char **upper, char **runs);

#endif
