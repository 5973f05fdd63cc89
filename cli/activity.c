/* activity.c - distinct paths per kind and process, from the journal (activity.h). */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include <libgen.h>
#include <sys/stat.h>
#include "cli/cli.h"
#include "cli/workspace.h"
#include "cli/activity.h"

/* Sets are JSON objects whose keys are the members (jansson's _nocheck calls:
 * a path need not be UTF-8; the keys are only compared bytewise). */
struct activity {
	json_t *total;	 /* [set x ACT__COUNT] */
	json_t *procs;	 /* "comm[pid]" -> [set x ACT__COUNT] */
	json_t *names;	 /* comm -> [set x ACT__COUNT, set of pids] */
	json_t *renames; /* [[from, to, exchange], ...]: distinct ones in journal order */
	uint64_t records;
	int64_t first_ns, last_ns;
};

static const char *const kind_names[ACT__COUNT] = {
    "read", "written", "created", "deleted", "renamed", "concealed", "denied",
};

const char *activity_kind_name(enum activity_kind k)
{
	return (unsigned)k < ACT__COUNT ? kind_names[k] : "?";
}

/* @extra more sets after the ACT__COUNT ones. */
static json_t *sets(size_t extra)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < ACT__COUNT + extra; i++)
		if (json_array_append_new(a, json_object()) != 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

int activity_new(struct activity **out)
{
	struct activity *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->total = sets(0);
	a->procs = json_object();
	a->names = json_object();
	a->renames = json_array();
	if (!a->total || !a->procs || !a->names || !a->renames) {
		activity_free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

void activity_free(struct activity *a)
{
	if (!a)
		return;
	json_decref(a->total);
	json_decref(a->procs);
	json_decref(a->names);
	json_decref(a->renames);
	free(a);
}

/* Add @key to the set at @idx of @arr; 1 if it was new, 0 if not. */
static int add_to(json_t *arr, size_t idx, const char *key)
{
	json_t *set = json_array_get(arr, idx);
	if (json_object_get(set, key))
		return 0;
	return json_object_set_new_nocheck(set, key, json_true()) == 0 ? 1 : -ENOMEM;
}

/* The member of @obj at @key, made with sets(@extra) when missing. */
static json_t *member(json_t *obj, const char *key, size_t extra)
{
	json_t *v = json_object_get(obj, key);
	if (!v) {
		v = sets(extra);
		if (!v || json_object_set_new_nocheck(obj, key, v) != 0)
			return NULL;
	}
	return v;
}

static int classify(const struct journal_entry *e, const char **path)
{
	*path = e->path;
	if (e->op == JOP_CONCEAL)
		return ACT_CONCEALED;
	if (e->op == JOP_DENY)
		return ACT_DENIED;
	if (e->result != 0)
		return -1;
	switch (e->op) {
	case JOP_READ:
		return ACT_READ;
	case JOP_WRITE:
	case JOP_TRUNCATE:
		return ACT_WRITTEN;
	case JOP_CREATE:
	case JOP_MKDIR:
	case JOP_MKNOD:
	case JOP_SYMLINK:
		return ACT_CREATED;
	case JOP_LINK:
		*path = e->path2;
		return ACT_CREATED;
	case JOP_UNLINK:
	case JOP_RMDIR:
		return ACT_DELETED;
	case JOP_RENAME:
		return e->path2 ? ACT_RENAMED : -1;
	default:
		return -1;
	}
}

int activity_add(struct activity *a, const struct journal_entry *e)
{
	if (!a->records || e->time_ns < a->first_ns)
		a->first_ns = e->time_ns;
	if (!a->records || e->time_ns > a->last_ns)
		a->last_ns = e->time_ns;
	a->records++;

	const char *path;
	int kind = classify(e, &path);
	if (kind < 0 || !path)
		return 0;
	/* A rename is one member: "LEN:" + from + to cannot be two pairs' key
	 * ("LEN=" for an exchange, which is not the rename of the same names). */
	char *key = NULL;
	bool exchange = kind == ACT_RENAMED && (e->flags & RENAME_EXCHANGE);
	if (kind == ACT_RENAMED) {
		size_t lf = strlen(path), lt = strlen(e->path2);
		key = malloc(lf + lt + 24);
		if (!key)
			return -ENOMEM;
		snprintf(key, lf + lt + 24, "%zu%c%s%s", lf, exchange ? '=' : ':', path, e->path2);
	}
	const char *k = key ? key : path;
	const char *comm = e->comm ? e->comm : "";
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)e->pid);
	size_t lc = strlen(comm);
	char *who = malloc(lc + sizeof(pid) + 3);
	if (!who) {
		free(key);
		return -ENOMEM;
	}
	snprintf(who, lc + sizeof(pid) + 3, "%s[%s]", comm, pid);

	int r = 0;
	json_t *p = member(a->procs, who, 0), *n = member(a->names, comm, 1);
	if (!p || !n)
		r = -ENOMEM;
	if (r == 0 && add_to(p, (size_t)kind, k) < 0)
		r = -ENOMEM;
	if (r == 0 && (add_to(n, (size_t)kind, k) < 0 || add_to(n, ACT__COUNT, pid) < 0))
		r = -ENOMEM;
	if (r == 0) {
		int fresh = add_to(a->total, (size_t)kind, k);
		if (fresh < 0)
			r = -ENOMEM;
		else if (fresh && kind == ACT_RENAMED) {
			json_t *pair = json_array();
			if (!pair ||
			    json_array_append_new(pair, json_stringn_nocheck(path, strlen(path))) ||
			    json_array_append_new(
				pair, json_stringn_nocheck(e->path2, strlen(e->path2))) ||
			    json_array_append_new(pair, json_boolean(exchange)) ||
			    json_array_append_new(a->renames, pair))
				r = -ENOMEM;
		}
	}
	free(who);
	free(key);
	return r;
}

uint64_t activity_records(const struct activity *a)
{
	return a->records;
}

int64_t activity_first_ns(const struct activity *a)
{
	return a->first_ns;
}

int64_t activity_last_ns(const struct activity *a)
{
	return a->last_ns;
}

static size_t set_size(json_t *arr, size_t idx)
{
	return json_object_size(json_array_get(arr, idx));
}

size_t activity_count(const struct activity *a, const char *who, enum activity_kind k)
{
	if ((unsigned)k >= ACT__COUNT)
		return 0;
	return set_size(who ? json_object_get(a->procs, who) : a->total, (size_t)k);
}

size_t activity_name_pids(const struct activity *a, const char *comm)
{
	return set_size(json_object_get(a->names, comm), ACT__COUNT);
}

size_t activity_name_count(const struct activity *a, const char *comm, enum activity_kind k)
{
	if ((unsigned)k >= ACT__COUNT)
		return 0;
	return set_size(json_object_get(a->names, comm), (size_t)k);
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The keys of @obj, sorted, in a NULL-ended array. */
static int sorted_keys(json_t *obj, const char ***out, size_t *n)
{
	size_t count = json_object_size(obj), i = 0;
	const char **keys = calloc(count + 1, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	const char *key;
	json_t *val;
	json_object_foreach(obj, key, val) keys[i++] = key;
	qsort(keys, count, sizeof(*keys), cmp_str);
	*out = keys;
	*n = count;
	return 0;
}

int activity_processes(const struct activity *a, const char ***out, size_t *n)
{
	return sorted_keys(a->procs, out, n);
}

int activity_names(const struct activity *a, const char ***out, size_t *n)
{
	return sorted_keys(a->names, out, n);
}

bool activity_renamed_exchange(const struct activity *a, size_t i)
{
	return json_is_true(json_array_get(json_array_get(a->renames, i), 2));
}

int activity_paths(const struct activity *a, enum activity_kind k, const char ***out, size_t *n)
{
	if ((unsigned)k >= ACT__COUNT)
		return -EINVAL;
	if (k != ACT_RENAMED)
		return sorted_keys(json_array_get(a->total, (size_t)k), out, n);
	size_t count = json_array_size(a->renames);
	const char **v = calloc(2 * count + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		json_t *pair = json_array_get(a->renames, i);
		v[2 * i] = json_string_value(json_array_get(pair, 0));
		v[2 * i + 1] = json_string_value(json_array_get(pair, 1));
	}
	*out = v;
	*n = count;
	return 0;
}

/* activity_show_path(), with '"' escaped too when @dq. */
static void show_path(FILE *out, const char *p, bool dq)
{
	const unsigned char *s = (const unsigned char *)p;
	while (*s) {
		unsigned char c = *s;
		size_t len = c < 0x80		  ? 1
			     : (c & 0xe0) == 0xc0 ? 2
			     : (c & 0xf0) == 0xe0 ? 3
			     : (c & 0xf8) == 0xf0 ? 4
						  : 0;
		bool ok = len > 0;
		for (size_t k = 1; ok && k < len; k++)
			ok = (s[k] & 0xc0) == 0x80;
		if (len == 1 && (c < 0x20 || c == 0x7f || c == '\\' || (dq && c == '"')))
			ok = false;
		if (!ok) {
			fprintf(out, "\\x%02x", c);
			s++;
			continue;
		}
		fwrite(s, 1, len, out);
		s += len;
	}
}

void activity_show_path(FILE *out, const char *p)
{
	show_path(out, p, false);
}

void activity_show_pair_path(FILE *out, const char *p)
{
	if (!strpbrk(p, " \"")) {
		show_path(out, p, false);
		return;
	}
	fputc('"', out);
	show_path(out, p, true);
	fputc('"', out);
}

static char *join2(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);
	if (p) {
		memcpy(p, a, la);
		p[la] = '/';
		memcpy(p + la + 1, b, lb + 1);
	}
	return p;
}

int activity_find_journal(const char *cmd, const char *target, const char *state_dir,
			  char **journal, char **upper, char **runs)
{
	*journal = *upper = NULL;
	if (runs)
		*runs = NULL;
	char *root = NULL, err[1024] = "";
	struct workspace *ws = NULL;
	int r = -ENOENT;
	if (workspace_state_root(state_dir, &root) == 0)
		r = workspace_find(root, target, &ws, err, sizeof(err));
	free(root);
	if (r == 0) {
		/* A live daemon buffers its journal: have it written out first, or
		 * the latest events (files just written) would look unrecorded. */
		int fr = workspace_daemon_flush(ws, 5000);
		if (fr < 0)
			cli_error(cmd,
				  "%s: the daemon did not write its journal out (%s); its latest "
				  "events may be missing",
				  target, strerror(-fr));
		*journal = workspace_path(ws, "journal.jsonl");
		*upper = workspace_path(ws, "upper");
		if (runs)
			*runs = workspace_path(ws, "run.jsonl");
		workspace_free(ws);
		return *journal && *upper && (!runs || *runs) ? 0 : -ENOMEM;
	}
	if (r != -ENOENT) {
		cli_error(cmd, "%s", err);
		return r;
	}
	struct stat st;
	char *dir = NULL;
	if (stat(target, &st) == 0 && S_ISDIR(st.st_mode)) {
		*journal = join2(target, "journal.jsonl");
		if (*journal && stat(*journal, &st) == 0 && S_ISREG(st.st_mode))
			dir = strdup(target);
	} else if (stat(target, &st) == 0 && S_ISREG(st.st_mode)) {
		*journal = strdup(target);
		char *c = strdup(target);
		if (c)
			dir = strdup(dirname(c));
		free(c);
	}
	if (!dir) {
		free(*journal);
		*journal = NULL;
		cli_error(cmd, "%s: not an agentfs mount (no workspace found)", target);
		return -ENOENT;
	}
	char *u = join2(dir, "upper");
	if (runs)
		*runs = join2(dir, "run.jsonl");
	free(dir);
	if (u && stat(u, &st) == 0 && S_ISDIR(st.st_mode))
		*upper = u;
	else
		free(u);
	return 0;
}
