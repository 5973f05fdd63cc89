/*
 * reader.c - reading records back: a line reader that can follow a growing
 * file, and the parser of one record (jansson).
 *
 * The parser is strict: every key must be one the schema defines, with the
 * right type, because `verify` relies on it to tell a valid record from an
 * edited one, and `log` prints what it returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/layout.h"
#include "journal/internal.h"

struct journal_reader {
	int fd;
	bool own_fd;
	char *buf;
	size_t start, end, cap;
	off_t base; /* file offset of buf[0] */
	size_t partial;
	uint64_t lineno;
	off_t limit; /* read nothing at or past this offset; 0: no limit */
};

int journal_reader_fd(struct journal_reader **out, int fd)
{
	struct journal_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cap = 1 << 16;
	r->buf = malloc(r->cap);
	if (!r->buf) {
		free(r);
		return -ENOMEM;
	}
	r->fd = fd;
	off_t pos = lseek(fd, 0, SEEK_CUR);
	r->base = pos < 0 ? 0 : pos;
	*out = r;
	return 0;
}

int journal_reader_open(struct journal_reader **out, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = journal_reader_fd(out, fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	(*out)->own_fd = true;
	return 0;
}

void journal_reader_close(struct journal_reader *r)
{
	if (!r)
		return;
	if (r->own_fd)
		close(r->fd);
	free(r->buf);
	free(r);
}

void journal_reader_limit(struct journal_reader *r, off_t limit)
{
	r->limit = limit;
}

size_t journal_reader_partial(const struct journal_reader *r)
{
	return r->partial;
}

int journal_reader_line(struct journal_reader *r, const char **line, size_t *len, off_t *off)
{
	size_t scanned = r->start;
	for (;;) {
		char *nl = memchr(r->buf + scanned, '\n', r->end - scanned);
		if (nl) {
			*line = r->buf + r->start;
			*len = (size_t)(nl - (r->buf + r->start));
			*off = r->base + (off_t)r->start;
			r->start = (size_t)(nl - r->buf) + 1;
			r->lineno++;
			r->partial = 0;
			return 1;
		}
		scanned = r->end;
		if (r->start > 0) { /* compact */
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->base += (off_t)r->start;
			r->end -= r->start;
			scanned -= r->start;
			r->start = 0;
		}
		if (r->end == r->cap) {
			char *nb = realloc(r->buf, r->cap * 2);
			if (!nb)
				return -ENOMEM;
			r->buf = nb;
			r->cap *= 2;
		}
		size_t want = r->cap - r->end;
		if (r->limit) {
			off_t left = r->limit - (r->base + (off_t)r->end);
			want = left <= 0 ? 0 : (uint64_t)left < want ? (size_t)left : want;
		}
		ssize_t n = want ? read(r->fd, r->buf + r->end, want) : 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			r->partial = r->end - r->start;
			return 0;
		}
		r->end += (size_t)n;
	}
}

void journal_entry_clear(struct journal_entry *e)
{
	free(e->comm);
	free(e->exe);
	free(e->path);
	free(e->path2);
	free(e->detail);
	free(e->line);
	memset(e, 0, sizeof(*e));
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The schema's keys (journal/SCHEMA.md), in strcmp order for bsearch; a
 * record's values are looked up once, by their index here. */
enum key {
	K_BYTES,
	K_COMM,
	K_COMM_HEX,
	K_DETAIL,
	K_DETAIL_HEX,
	K_EXE,
	K_EXE_HEX,
	K_FLAGS,
	K_HASH,
	K_HASH_BEFORE,
	K_MODE,
	K_OP,
	K_PATH,
	K_PATH2,
	K_PATH2_HEX,
	K_PATH_HEX,
	K_PID,
	K_PREV,
	K_RESULT,
	K_SEQ,
	K_TIME_NS,
	K_UID,
	K_V,
	K__COUNT
};

static const char *const key_names[K__COUNT] = {
    "bytes", "comm",	    "comm_hex", "detail", "detail_hex", "exe",	 "exe_hex",   "flags",
    "hash",  "hash_before", "mode",	"op",	  "path",	"path2", "path2_hex", "path_hex",
    "pid",   "prev",	    "result",	"seq",	  "time_ns",	"uid",	 "v",
};

static int key_cmp(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

/* A string field (@s the KEY value, @h the KEY_hex one) into *out (malloc'd).
 * 0 absent, 1 set, <0 bad. */
static int get_string(json_t *s, json_t *h, const char *key, char **out, char *err, size_t errlen)
{
	if (s && h)
		return fail(err, errlen, "both \"%s\" and \"%s_hex\"", key, key);
	if (!s && !h)
		return 0;
	json_t *v = s ? s : h;
	if (!json_is_string(v))
		return fail(err, errlen, "\"%s%s\" is not a string", key, s ? "" : "_hex");
	const char *str = json_string_value(v);
	size_t n = json_string_length(v);
	if (s) {
		if (strlen(str) != n)
			return fail(err, errlen, "\"%s\" holds a NUL", key);
		*out = strdup(str);
		return *out ? 1 : -ENOMEM;
	}
	if (n % 2)
		return fail(err, errlen, "\"%s_hex\" is not hex", key);
	char *p = malloc(n / 2 + 1);
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < n; i += 2) {
		int a = hexval(str[i]), b = hexval(str[i + 1]);
		if (a < 0 || b < 0 || (a | b) == 0) {
			free(p);
			return fail(err, errlen, "\"%s_hex\" is not hex of a NUL-free string", key);
		}
		p[i / 2] = (char)(a << 4 | b);
	}
	p[n / 2] = 0;
	*out = p;
	return 1;
}

static int get_uint(json_t *v, const char *key, bool required, uint64_t max, uint64_t *out,
		    char *err, size_t errlen)
{
	if (!v) {
		if (required)
			return fail(err, errlen, "no \"%s\"", key);
		*out = 0;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return fail(err, errlen, "\"%s\" is not an integer in range", key);
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

static int get_hash(json_t *v, const char *key, bool *has, XXH128_hash_t *h, char *err,
		    size_t errlen)
{
	*has = false;
	if (!v)
		return 0;
	if (!json_is_string(v) || json_string_length(v) != 32)
		return fail(err, errlen, "\"%s\" is not 32 hex digits", key);
	const char *s = json_string_value(v);
	for (int i = 0; i < 32; i++)
		if (hexval(s[i]) < 0)
			return fail(err, errlen, "\"%s\" is not 32 lowercase hex digits", key);
	if (layout_hash_parse(s, h) < 0)
		return fail(err, errlen, "\"%s\" is not 32 hex digits", key);
	*has = true;
	return 1;
}

static int parse_obj(json_t *o, struct journal_entry *e, char *err, size_t errlen)
{
	json_t *k[K__COUNT] = {0};
	const char *key;
	json_t *val;
	json_object_foreach(o, key, val)
	{
		const char *const *at =
		    bsearch(key, key_names, K__COUNT, sizeof(key_names[0]), key_cmp);
		if (!at)
			return fail(err, errlen, "unknown key \"%.40s\"", key);
		k[at - key_names] = val; /* no duplicates: JSON_REJECT_DUPLICATES */
	}
	uint64_t u = 0;
	int r;
	if ((r = get_uint(k[K_V], "v", true, INT64_MAX, &u, err, errlen)) < 0)
		return r;
	if (u != JOURNAL_SCHEMA_VERSION)
		return fail(err, errlen, "schema version %llu is not %d", (unsigned long long)u,
			    JOURNAL_SCHEMA_VERSION);
	if ((r = get_uint(k[K_SEQ], "seq", true, INT64_MAX, &e->seq, err, errlen)) < 0)
		return r;
	bool has;
	if ((r = get_hash(k[K_PREV], "prev", &has, &e->prev, err, errlen)) < 0)
		return r;
	if (!has)
		return fail(err, errlen, "no \"prev\"");
	if ((r = get_uint(k[K_TIME_NS], "time_ns", true, INT64_MAX, &u, err, errlen)) < 0)
		return r;
	e->time_ns = (int64_t)u;
	json_t *op = k[K_OP];
	if (!json_is_string(op) || journal_op_parse(json_string_value(op), &e->op) < 0)
		return fail(err, errlen, "\"op\" is missing or unknown");
	json_t *res = k[K_RESULT];
	if (json_is_integer(res) && json_integer_value(res) == 0)
		e->result = 0;
	else if (!json_is_string(res) ||
		 journal_errno_parse(json_string_value(res), &e->result) < 0)
		return fail(err, errlen, "\"result\" is neither 0 nor an errno name");
	if ((r = get_uint(k[K_PID], "pid", true, INT32_MAX, &u, err, errlen)) < 0)
		return r;
	e->pid = (pid_t)u;
	if ((r = get_uint(k[K_UID], "uid", true, UINT32_MAX, &u, err, errlen)) < 0)
		return r;
	e->uid = (uid_t)u;
	if ((r = get_string(k[K_COMM], k[K_COMM_HEX], "comm", &e->comm, err, errlen)) < 0 ||
	    (r = get_string(k[K_EXE], k[K_EXE_HEX], "exe", &e->exe, err, errlen)) < 0 ||
	    (r = get_string(k[K_PATH], k[K_PATH_HEX], "path", &e->path, err, errlen)) < 0 ||
	    (r = get_string(k[K_PATH2], k[K_PATH2_HEX], "path2", &e->path2, err, errlen)) < 0)
		return r;
	if ((r = get_uint(k[K_BYTES], "bytes", false, INT64_MAX, &e->bytes, err, errlen)) < 0)
		return r;
	e->has_bytes = r > 0;
	if ((r = get_uint(k[K_FLAGS], "flags", false, UINT32_MAX, &u, err, errlen)) < 0)
		return r;
	e->flags = (uint32_t)u;
	if ((r = get_uint(k[K_MODE], "mode", false, UINT32_MAX, &u, err, errlen)) < 0)
		return r;
	e->mode = (uint32_t)u;
	if ((r = get_hash(k[K_HASH_BEFORE], "hash_before", &e->has_hash_before, &e->hash_before,
			  err, errlen)) < 0 ||
	    (r = get_hash(k[K_HASH], "hash", &e->has_hash_after, &e->hash_after, err, errlen)) < 0)
		return r;
	json_t *d = k[K_DETAIL];
	if (json_is_object(d) && k[K_DETAIL_HEX]) {
		return fail(err, errlen, "both \"detail\" and \"detail_hex\"");
	} else if (json_is_object(d)) {
		e->detail = json_dumps(d, JSON_COMPACT);
		if (!e->detail)
			return -ENOMEM;
		e->detail_is_object = true;
	} else if (d && !json_is_string(d)) {
		return fail(err, errlen, "\"detail\" is neither an object nor a string");
	} else if ((r = get_string(d, k[K_DETAIL_HEX], "detail", &e->detail, err, errlen)) < 0) {
		return r;
	}
	return 0;
}

int journal_entry_parse(const char *line, size_t len, struct journal_entry *e, char *err,
			size_t errlen)
{
	uint64_t lineno = e->lineno;
	memset(e, 0, sizeof(*e));
	e->lineno = lineno;
	json_error_t jerr;
	json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		return fail(err, errlen, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
	int r;
	if (!json_is_object(o))
		r = fail(err, errlen, "not a JSON object");
	else
		r = parse_obj(o, e, err, errlen);
	json_decref(o);
	if (r == 0) {
		e->line = malloc(len + 1);
		if (!e->line) {
			r = -ENOMEM;
		} else {
			memcpy(e->line, line, len);
			e->line[len] = 0;
			e->line_len = len;
		}
	}
	if (r < 0) {
		journal_entry_clear(e);
		e->lineno = lineno;
	}
	return r;
}

int journal_reader_next(struct journal_reader *r, struct journal_entry *e, char *err, size_t errlen)
{
	const char *line;
	size_t len;
	off_t off;
	int n = journal_reader_line(r, &line, &len, &off);
	if (n <= 0)
		return n;
	e->lineno = r->lineno;
	return journal_entry_parse(line, len, e, err, errlen) < 0 ? -EBADMSG : 1;
}
