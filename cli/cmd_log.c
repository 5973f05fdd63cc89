/* cmd_log.c - `agentfs log`: the journal as a table, raw records or a summary. */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/activity.h"
#include "cli/cli.h"
#include "cli/workspace.h"
#include "fs/layout.h"
#include "journal/journal.h"

const char cmd_log_usage[] =
    "usage: agentfs log [OPTIONS] MNT|NAME|JOURNAL\n"
    "\n"
    "Show the journal of the workspace mounted at MNT (or named NAME, or the\n"
    "journal file or workspace directory JOURNAL): what was read, written,\n"
    "created, deleted and refused, by which process.  One line per record:\n"
    "  TIME (local)  PROCESS[PID]  OP  RESULT  BYTES  HASH (8 of 32 hex)  PATH [-> PATH2]\n"
    "READ bytes are those the daemon served: reads answered from the kernel's\n"
    "page cache never reach it; WRITE bytes are '-' where the kernel wrote the\n"
    "file itself (FUSE passthrough).  The schema of --json is in journal/SCHEMA.md.\n"
    "\n"
    "Options:\n"
    "  --json            print the raw records (JSON Lines), exactly as stored\n"
    "  --op OP[,OP...]   only these operations (read, write, create, unlink,\n"
    "                    rename, exchange, deny, conceal, ...; see SCHEMA.md;\n"
    "                    exchange: the renames with RENAME_EXCHANGE, as shown)\n"
    "  --path GLOB       only records whose path or second path matches GLOB\n"
    "                    (fnmatch(3); '*' also matches '/')\n"
    "  --pid PID         only records of process PID\n"
    "  --since TIME      only records at or after TIME: 2024-05-01, '2024-05-01\n"
    "                    12:00[:00]' (local), the same with T and a final Z (UTC),\n"
    "                    @EPOCH_SECONDS, or an age: 30s, 10m, 2h, 1d\n"
    "  --denied          only refusals and failures (deny, conceal, result != 0)\n"
    "  --summary         per process: files read, written, created, deleted,\n"
    "                    refused (distinct paths)\n"
    "  -f, --follow      keep printing records as they are appended (Ctrl-C stops)\n"
    "  --state-dir DIR   workspaces live in DIR/workspaces (default:\n"
    "                    ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 success, 1 failure (including a record that does not parse:\n"
    "see 'agentfs verify'), 2 usage error.\n";

static const char *const CMD = "log";

struct filter {
	bool ops[JOP__COUNT];
	bool exchange; /* --op exchange: renames with RENAME_EXCHANGE only */
	bool any_op;
	const char *glob;
	pid_t pid;
	bool has_pid;
	int64_t since_ns;
	bool denied;
};

/* ---- finding the journal ---------------------------------------------------- */

/* MNT or NAME through the workspace registry; else a workspace directory or a
 * journal file given directly.  *upper is NULL when there is none. */

/* ---- options ------------------------------------------------------------------ */

static int parse_since(const char *s, int64_t *out)
{
	char *end;
	if (s[0] == '@') {
		long long v = strtoll(s + 1, &end, 10);
		if (end == s + 1 || *end)
			return -EINVAL;
		*out = (int64_t)v * 1000000000;
		return 0;
	}
	long long n = strtoll(s, &end, 10);
	/* An age: digits only ("-5m" or "+5m" is no age; strtoll takes a sign). */
	if (end != s && s[0] >= '0' && s[0] <= '9' && end[0] && !end[1] && strchr("smhd", end[0])) {
		long long mult = end[0] == 's'	 ? 1
				 : end[0] == 'm' ? 60
				 : end[0] == 'h' ? 3600
						 : 86400;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		*out = ((int64_t)ts.tv_sec - n * mult) * 1000000000 + ts.tv_nsec;
		return 0;
	}
	static const char *const fmts[] = {"%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
					   "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d"};
	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		struct tm tm = {0};
		const char *rest = strptime(s, fmts[i], &tm);
		if (!rest)
			continue;
		time_t t;
		if (rest[0] == 'Z' && !rest[1]) {
			t = timegm(&tm);
		} else if (!rest[0]) {
			tm.tm_isdst = -1;
			t = mktime(&tm);
		} else {
			continue;
		}
		*out = (int64_t)t * 1000000000;
		return 0;
	}
	return -EINVAL;
}

static int parse_ops(const char *list, struct filter *f)
{
	char *copy = strdup(list), *save = NULL;
	if (!copy)
		return -ENOMEM;
	int r = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		enum journal_op op;
		if (strcmp(t, "exchange") == 0) {
			f->exchange = true;
			f->any_op = true;
			continue;
		}
		if (journal_op_parse(t, &op) < 0) {
			cli_error(CMD, "--op: unknown operation '%s' (see journal/SCHEMA.md)", t);
			r = -EINVAL;
			break;
		}
		f->ops[op] = true;
		f->any_op = true;
	}
	free(copy);
	return r;
}

static bool is_refusal(const struct journal_entry *e)
{
	return e->op == JOP_DENY || e->op == JOP_CONCEAL;
}

static bool matches(const struct filter *f, const struct journal_entry *e)
{
	/* An exchange is stored as a rename: --op rename takes it too. */
	bool exchange = e->op == JOP_RENAME && (e->flags & RENAME_EXCHANGE);
	if (f->any_op && !(f->ops[e->op] || (exchange && f->exchange)))
		return false;
	if (f->has_pid && e->pid != f->pid)
		return false;
	if (f->since_ns && e->time_ns < f->since_ns)
		return false;
	if (f->denied && !is_refusal(e) && e->result == 0)
		return false;
	if (f->glob) {
		const char *g = f->glob[0] == '/' ? f->glob + 1 : f->glob;
		if (!(e->path && fnmatch(g, e->path, 0) == 0) &&
		    !(e->path2 && fnmatch(g, e->path2, 0) == 0))
			return false;
	}
	return true;
}

/* ---- table -------------------------------------------------------------------- */

/* A path for a terminal: hostile bytes escaped (activity.h). */
static void put_path(FILE *out, const char *p)
{
	activity_show_path(out, p);
}

static void print_row(FILE *out, const struct journal_entry *e)
{
	time_t t = (time_t)(e->time_ns / 1000000000);
	struct tm tm;
	localtime_r(&t, &tm);
	char ts[32], who[48], res[24] = "ok", bytes[24] = "-", hash[12] = "-";
	/* renameat2(2) with RENAME_EXCHANGE swaps the names: not a move. */
	bool exchange = e->op == JOP_RENAME && (e->flags & RENAME_EXCHANGE);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	if (e->comm)
		snprintf(who, sizeof(who), "%.20s[%d]", e->comm, (int)e->pid);
	else
		snprintf(who, sizeof(who), "[%d]", (int)e->pid);
	for (char *c = who; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	if (e->result) {
		const char *n = strerrorname_np(-e->result);
		snprintf(res, sizeof(res), "%s", n ? n : "error");
	}
	if (e->has_bytes && (e->bytes || e->op == JOP_READ || e->op == JOP_WRITE ||
			     e->op == JOP_TRUNCATE || e->op == JOP_COPYUP))
		snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)e->bytes);
	if (e->has_hash_after || e->has_hash_before) {
		char hex[33];
		layout_hash_hex(e->has_hash_after ? e->hash_after : e->hash_before, hex);
		snprintf(hash, sizeof(hash), "%.8s", hex);
	}
	fprintf(out, "%s.%03d  %-24s %-11s %-9s %10s  %-8s  ", ts,
		(int)((e->time_ns / 1000000) % 1000), who,
		exchange ? "exchange" : journal_op_name(e->op), res, bytes, hash);
	/* Two paths: each quoted if it could read as an arrow (activity.h). */
	void (*show)(FILE *, const char *) = e->path2 ? activity_show_pair_path : put_path;
	if (e->path)
		show(out, e->path[0] ? e->path : ".");
	else if (e->detail)
		put_path(out, e->detail);
	if (e->path2) {
		fputs(e->op == JOP_SYMLINK ? " -> target " : exchange ? " <-> " : " -> ", out);
		show(out, e->path2);
	}
	/* The file had no name left (unlinked, renamed over or discarded
	 * while open): the record says nothing of what is at the path. */
	bool unnamed_ops = e->op == JOP_READ || e->op == JOP_WRITE || e->op == JOP_TRUNCATE ||
			   e->op == JOP_SETATTR || e->op == JOP_SETXATTR ||
			   e->op == JOP_REMOVEXATTR;
	if (unnamed_ops && (e->flags & JOURNAL_F_UNLINKED))
		fputs("  (no name left: unlinked while open)", out);
	fputc('\n', out);
}

static void print_header(FILE *out)
{
	fprintf(out, "%-23s  %-24s %-11s %-9s %10s  %-8s  %s\n", "TIME", "PROCESS", "OP", "RESULT",
		"BYTES", "HASH", "PATH");
}

/* ---- summary ------------------------------------------------------------------ */

/* The columns of --summary, from activity.h's kinds (refused: concealed and
 * denied). */
static void print_summary_row(FILE *out, const struct activity *a, const char *who,
			      const char *label)
{
	fprintf(out, "%-28s %8zu %8zu %8zu %8zu %8zu\n", label, activity_count(a, who, ACT_READ),
		activity_count(a, who, ACT_WRITTEN), activity_count(a, who, ACT_CREATED),
		activity_count(a, who, ACT_DELETED),
		activity_count(a, who, ACT_CONCEALED) + activity_count(a, who, ACT_DENIED));
}

static int print_summary(FILE *out, const struct activity *a)
{
	fprintf(out, "%-28s %8s %8s %8s %8s %8s\n", "PROCESS", "READ", "WRITTEN", "CREATED",
		"DELETED", "REFUSED");
	const char **procs;
	size_t n;
	int r = activity_processes(a, &procs, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		char who[64];
		snprintf(who, sizeof(who), "%s", procs[i]);
		for (char *c = who; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		/* only processes with a path of a kind --summary shows */
		size_t any = 0;
		for (int k = 0; k < ACT__COUNT; k++)
			if (k != ACT_RENAMED)
				any += activity_count(a, procs[i], (enum activity_kind)k);
		if (any)
			print_summary_row(out, a, procs[i], who);
	}
	free(procs);
	print_summary_row(out, a, NULL, "(all processes)");
	return 0;
}

/* ---- main --------------------------------------------------------------------- */

static volatile sig_atomic_t stop_follow;

static void on_signal(int sig)
{
	(void)sig;
	stop_follow = 1;
}

int cmd_log(int argc, char **argv)
{
	enum {
		OPT_JSON = 256,
		OPT_OP,
		OPT_PATH,
		OPT_PID,
		OPT_SINCE,
		OPT_DENIED,
		OPT_SUMMARY,
		OPT_STATE
	};
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"op", required_argument, NULL, OPT_OP},
	    {"path", required_argument, NULL, OPT_PATH},
	    {"pid", required_argument, NULL, OPT_PID},
	    {"since", required_argument, NULL, OPT_SINCE},
	    {"denied", no_argument, NULL, OPT_DENIED},
	    {"summary", no_argument, NULL, OPT_SUMMARY},
	    {"follow", no_argument, NULL, 'f'},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct filter f = {0};
	bool json = false, summary = false, follow = false;
	const char *state_dir = NULL;
	int c;
	opterr = 0;
	optind = 0; /* 0: glibc re-initialises, permuting operands and options */
	while ((c = getopt_long(argc, argv, ":hf", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case OPT_JSON:
			json = true;
			break;
		case OPT_OP:
			if (parse_ops(optarg, &f) < 0)
				return 2;
			break;
		case OPT_PATH:
			f.glob = optarg;
			break;
		case OPT_PID: {
			long v = strtol(optarg, &end, 10);
			if (end == optarg || *end || v <= 0 || v > INT32_MAX) {
				cli_error(CMD, "--pid: '%s': not a process id", optarg);
				return 2;
			}
			f.pid = (pid_t)v;
			f.has_pid = true;
			break;
		}
		case OPT_SINCE:
			if (parse_since(optarg, &f.since_ns) < 0) {
				cli_error(CMD,
					  "--since: '%s': not a time (2024-05-01, '2024-05-01 "
					  "12:00', @EPOCH, 10m, 2h, 1d)",
					  optarg);
				return 2;
			}
			break;
		case OPT_DENIED:
			f.denied = true;
			break;
		case OPT_SUMMARY:
			summary = true;
			break;
		case 'f':
			follow = true;
			break;
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_log_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs log --help')", cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (argc - optind != 1) {
		cli_error(CMD, "%s (see 'agentfs log --help')",
			  optind == argc ? "missing MNT or NAME" : "too many arguments");
		return 2;
	}
	if (summary && (json || follow)) {
		cli_error(CMD, "--summary cannot be combined with --json or --follow");
		return 2;
	}
	char *journal = NULL, *upper = NULL;
	if (activity_find_journal(CMD, argv[optind], state_dir, &journal, &upper, NULL) < 0)
		return 1;
	free(upper);
	const char *base = strrchr(journal, '/');
	if (strcmp(base ? base + 1 : journal, "run.jsonl") == 0) {
		/* Its records are runs, not file events (README: agentfs run). */
		cli_error(CMD,
			  "%s: a run journal (agentfs run's record of each run, JSON Lines "
			  "to read as they are; 'agentfs verify' checks its chain), not a "
			  "workspace's journal.jsonl",
			  journal);
		free(journal);
		return 1;
	}
	struct journal_reader *r;
	int rc = journal_reader_open(&r, journal);
	if (rc < 0) {
		cli_error(CMD, "%s: %s", journal, strerror(-rc));
		free(journal);
		return 1;
	}
	if (follow) {
		struct sigaction sa = {.sa_handler = on_signal};
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		setvbuf(stdout, NULL, _IOLBF, 0);
	}
	struct activity *act = NULL;
	if (summary && activity_new(&act) < 0) {
		cli_error(CMD, "%s", strerror(ENOMEM));
		journal_reader_close(r);
		free(journal);
		return 1;
	}
	bool header = false;
	int status = 0;
	/* Lines that do not parse after the first one named: counted, not each
	 * named (a file that is no journal would give one error per line). */
	unsigned long long more_bad = 0;
	bool named_bad = false;
	for (;;) {
		struct journal_entry e = {0};
		char err[512];
		rc = journal_reader_next(r, &e, err, sizeof(err));
		if (rc == -EBADMSG && named_bad) {
			more_bad++;
			continue;
		}
		if (rc < 0) {
			cli_error(CMD, "%s: line %llu: %s (see 'agentfs verify')", journal,
				  (unsigned long long)e.lineno,
				  rc == -EBADMSG ? err : strerror(-rc));
			status = 1;
			if (rc != -EBADMSG)
				break;
			named_bad = true;
			continue; /* show what can be shown */
		}
		if (rc == 0) {
			if (!follow || stop_follow)
				break;
			fflush(stdout);
			struct timespec ts = {0, 200 * 1000000L};
			nanosleep(&ts, NULL);
			if (stop_follow)
				break;
			continue;
		}
		if (matches(&f, &e)) {
			if (summary) {
				if (activity_add(act, &e) < 0 && status == 0) {
					cli_error(CMD, "%s", strerror(ENOMEM));
					status = 1;
				}
			} else if (json) {
				fwrite(e.line, 1, e.line_len, stdout);
				putchar('\n');
			} else {
				if (!header)
					print_header(stdout);
				header = true;
				print_row(stdout, &e);
			}
		}
		journal_entry_clear(&e);
	}
	if (more_bad)
		cli_error(CMD, "%s: %llu more line%s not parse (see 'agentfs verify')", journal,
			  more_bad, more_bad == 1 ? " does" : "s do");
	if (summary && print_summary(stdout, act) < 0)
		status = 1;
	activity_free(act);
	journal_reader_close(r);
	free(journal);
	if (fflush(stdout) != 0)
		status = 1;
	return status;
}
