/* evidence.c - the block `agentfs export --evidence` puts before the patch (evidence.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/activity.h"
#include "cli/evidence.h"
#include "cli/runlog.h"
#include "cli/workspace.h"
#include "journal/journal.h"

static void put_time(FILE *out, int64_t ns)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	char buf[32];
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fputs(buf, out);
}

/* One field line: two spaces, the label, the value (escaped). */
static void field(FILE *out, const char *label, const char *value)
{
	fprintf(out, "  %-13s", label);
	activity_show_path(out, value);
	fputc('\n', out);
}

/* What `agentfs verify` says (cmd_verify.c), on one indented line each. */
static int put_verify(FILE *out, const struct workspace *ws, const char *journal)
{
	char *upper = workspace_path(ws, "upper"), *runs = workspace_path(ws, "run.jsonl");
	if (!upper || !runs) {
		free(upper);
		free(runs);
		return -ENOMEM;
	}
	int upper_fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int upper_errno = upper_fd < 0 ? errno : 0;
	struct journal_verify v = {0};
	char *gitd = workspace_path(ws, "git");
	struct stat gst;
	v.skip_git = gitd && stat(gitd, &gst) == 0 && S_ISDIR(gst.st_mode);
	free(gitd);
	int r = journal_verify_file(journal, upper_fd, &v);
	if (upper_fd >= 0)
		close(upper_fd);
	fprintf(out, "  %-13s", "verify:");
	if (r < 0) {
		fprintf(out, "NOT VERIFIED: the journal cannot be read: %s\n", strerror(-r));
	} else if (v.bad_line) {
		fprintf(out, "NOT INTACT: record %" PRIu64 " (line %" PRIu64 "): ", v.bad_seq,
			v.bad_line);
		activity_show_path(out, v.why);
		fputc('\n', out);
	} else {
		fprintf(out, "journal intact: %" PRIu64 " records, chain verified", v.records);
		if (v.recovered)
			fprintf(out, ", %" PRIu64 " recovery record(s)", v.recovered);
		if (upper_fd < 0)
			fprintf(out, "; upper: not checked (%s)\n", strerror(upper_errno));
		else if (v.upper_bad) {
			fprintf(out,
				"; upper: NOT INTACT: %" PRIu64
				" file(s) or marker(s) differ, first: ",
				v.upper_bad);
			activity_show_path(out, v.upper_first);
			fputc('\n', out);
		} else if (v.upper_unread) {
			fprintf(out,
				"; upper: NOT VERIFIED: %" PRIu64
				" entr%s could not be read, %" PRIu64
				" file(s) match their last record\n",
				v.upper_unread, v.upper_unread == 1 ? "y" : "ies", v.upper_files);
		} else
			fprintf(out, "; upper: %" PRIu64 " file(s) match their last record\n",
				v.upper_files);
	}
	struct runlog_verify rv;
	r = runlog_verify_file(runs, &rv);
	fprintf(out, "  %-13s", "run journal:");
	if (r == -ENOENT)
		fputs("none (no `agentfs run` in this workspace)\n", out);
	else if (r < 0)
		fprintf(out, "NOT VERIFIED: cannot be read: %s\n", strerror(-r));
	else if (rv.bad_line) {
		fprintf(out, "NOT INTACT: record %" PRIu64 " (line %" PRIu64 "): ", rv.bad_seq,
			rv.bad_line);
		activity_show_path(out, rv.why);
		fputc('\n', out);
	} else
		fprintf(out, "intact: %" PRIu64 " records, chain verified\n", rv.records);
	free(upper);
	free(runs);
	return 0;
}

/* "Title (N):" or "Title (N): note", then up to @max of its paths, indented. */
static int put_list(FILE *out, const struct activity *a, enum activity_kind k, const char *title,
		    const char *note, size_t max)
{
	const char **paths;
	size_t n;
	int r = activity_paths(a, k, &paths, &n);
	if (r < 0)
		return r;
	fprintf(out, "%s (%zu):%s%s\n", title, n, note ? " " : "", note ? note : "");
	size_t shown = max && n > max ? max : n;
	for (size_t i = 0; i < shown; i++) {
		fputs("  ", out);
		if (k == ACT_RENAMED) {
			activity_show_pair_path(out, paths[2 * i][0] ? paths[2 * i] : ".");
			fputs(activity_renamed_exchange(a, i) ? " <-> " : " -> ", out);
			activity_show_pair_path(out, paths[2 * i + 1]);
		} else {
			activity_show_path(out, paths[i][0] ? paths[i] : ".");
		}
		fputc('\n', out);
	}
	if (shown < n)
		fprintf(out, "  ... and %zu more (agentfs log shows them all)\n", n - shown);
	free(paths);
	return 0;
}

static int put_processes(FILE *out, const struct activity *a)
{
	static const enum activity_kind cols[] = {ACT_READ,    ACT_WRITTEN, ACT_CREATED,
						  ACT_DELETED, ACT_RENAMED, ACT_CONCEALED,
						  ACT_DENIED};
	const char **names;
	size_t n;
	int r = activity_names(a, &names, &n);
	if (r < 0)
		return r;
	fprintf(out, "Processes by name (%zu): distinct pids, then distinct paths per kind\n", n);
	fprintf(out, "  %-16s %5s", "NAME", "PIDS");
	for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
		fprintf(out, " %9s", activity_kind_name(cols[c]));
	fputc('\n', out);
	for (size_t i = 0; i < n; i++) {
		/* names are at most 15 bytes (TASK_COMM_LEN); escaped they may grow */
		char *buf = NULL;
		size_t blen = 0;
		FILE *m = open_memstream(&buf, &blen);
		if (!m) {
			free(names);
			return -ENOMEM;
		}
		activity_show_path(m, names[i][0] ? names[i] : "?");
		if (fclose(m) != 0) {
			free(buf);
			free(names);
			return -ENOMEM;
		}
		fprintf(out, "  %-16s %5zu", buf, activity_name_pids(a, names[i]));
		free(buf);
		for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
			fprintf(out, " %9zu", activity_name_count(a, names[i], cols[c]));
		fputc('\n', out);
	}
	free(names);
	return 0;
}

/* Read the whole journal into @a; lines that do not parse are counted. */
static int read_journal(const char *journal, struct activity *a, uint64_t *unparsed, char *err,
			size_t errlen)
{
	struct journal_reader *rd;
	int r = journal_reader_open(&rd, journal);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", journal, strerror(-r));
		return r;
	}
	*unparsed = 0;
	for (;;) {
		struct journal_entry e = {0};
		char why[512];
		r = journal_reader_next(rd, &e, why, sizeof(why));
		if (r == -EBADMSG) {
			(*unparsed)++;
			journal_entry_clear(&e);
			continue;
		}
		if (r <= 0) {
			journal_entry_clear(&e);
			break;
		}
		r = activity_add(a, &e);
		journal_entry_clear(&e);
		if (r < 0)
			break;
	}
	journal_reader_close(rd);
	if (r < 0)
		snprintf(err, errlen, "%s: %s", journal, strerror(-r));
	return r;
}

int evidence_format(const struct workspace *ws, size_t max_paths, char **out, size_t *len,
		    char *err, size_t errlen)
{
	err[0] = 0;
	char *journal = workspace_path(ws, "journal.jsonl");
	struct activity *a = NULL;
	int r = journal ? activity_new(&a) : -ENOMEM;
	uint64_t unparsed = 0;
	if (r == 0)
		r = read_journal(journal, a, &unparsed, err, errlen);
	else
		snprintf(err, errlen, "%s", strerror(-r));
	char *buf = NULL;
	size_t blen = 0;
	FILE *f = NULL;
	if (r == 0 && !(f = open_memstream(&buf, &blen))) {
		r = -errno;
		snprintf(err, errlen, "%s", strerror(-r));
	}
	if (r == 0) {
		fputs("agentfs evidence: what the agent read, wrote and was refused, from the "
		      "workspace's journal\n",
		      f);
		field(f, "workspace:", ws->name);
		if (ws->mountpoint[0]) {
			fprintf(f, "  %-13s",
				workspace_daemon_pid(ws) ? "mounted at:" : "last mount:");
			activity_show_path(f, ws->mountpoint);
			fputc('\n', f);
		}
		field(f, "repository:", ws->repo);
		field(f,
		      "base commit:", ws->base_commit[0] ? ws->base_commit : "(none: unborn HEAD)");
		field(f, "policy:", ws->policy_digest);
		fprintf(f, "  %-13s%" PRIu64 " records", "journal:", activity_records(a));
		if (activity_records(a)) {
			fputs(", ", f);
			put_time(f, activity_first_ns(a));
			fputs(" .. ", f);
			put_time(f, activity_last_ns(a));
		}
		if (unparsed)
			fprintf(f, "; %" PRIu64 " line(s) do not parse", unparsed);
		fputc('\n', f);
		r = put_verify(f, ws, journal);
	}
	static const struct {
		enum activity_kind k;
		const char *title, *note;
	} lists[] = {
	    {ACT_READ, "Read", NULL},
	    {ACT_WRITTEN, "Written", NULL},
	    {ACT_CREATED, "Created", NULL},
	    {ACT_DELETED, "Deleted", NULL},
	    {ACT_RENAMED, "Renamed", NULL},
	    {ACT_CONCEALED, "Refused, concealed",
	     "lookups of names the policy hides (answered \"no such file\")"},
	    {ACT_DENIED, "Refused, denied", "changes to read-only paths (answered EROFS)"},
	};
	for (size_t i = 0; r == 0 && i < sizeof(lists) / sizeof(lists[0]); i++)
		r = put_list(f, a, lists[i].k, lists[i].title, lists[i].note, max_paths);
	if (r == 0)
		r = put_processes(f, a);
	if (f) {
		if (r == 0)
			fputc('\n', f);
		if (fclose(f) != 0 && r == 0)
			r = -ENOMEM;
		if (r < 0 && !err[0])
			snprintf(err, errlen, "%s", strerror(-r));
	}
	activity_free(a);
	free(journal);
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	*len = blen;
	return 0;
}
