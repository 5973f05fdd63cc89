/* runlog.c - the run journal, run.jsonl (runlog.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli/runlog.h"
#include "fs/layout.h"

json_t *runlog_string(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	size_t n = strlen(s);
	char *hex = malloc(2 * n + 1);
	if (!hex)
		return NULL;
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)s[i]);
	j = json_pack("{s:s}", "hex", hex);
	free(hex);
	return j;
}

/* The last line of the file (without its newline) in a malloc'd *line, or
 * *line NULL for an empty file.  -EBADMSG when the file does not end with a
 * newline. */
static int last_line(int fd, char **line, size_t *len)
{
	*line = NULL;
	*len = 0;
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -errno;
	if (st.st_size == 0)
		return 0;
	size_t chunk = 4096;
	for (;;) {
		size_t want = (off_t)chunk > st.st_size ? (size_t)st.st_size : chunk;
		char *buf = malloc(want);
		if (!buf)
			return -ENOMEM;
		ssize_t n = pread(fd, buf, want, st.st_size - (off_t)want);
		if (n != (ssize_t)want) {
			free(buf);
			return n < 0 ? -errno : -EIO;
		}
		if (buf[want - 1] != '\n') {
			free(buf);
			return -EBADMSG;
		}
		char *nl = want >= 2 ? memrchr(buf, '\n', want - 1) : NULL;
		if (nl || want == (size_t)st.st_size) {
			char *start = nl ? nl + 1 : buf;
			*len = (size_t)(buf + want - 1 - start);
			memmove(buf, start, *len);
			buf[*len] = 0;
			*line = buf;
			return 0;
		}
		free(buf);
		chunk *= 4;
	}
}

/* seq and chain hash of the last record, or 0 and genesis. */
static int tail_state(int fd, json_int_t *seq, XXH128_hash_t *prev)
{
	char *line;
	size_t len;
	*seq = 0;
	*prev = (XXH128_hash_t){0, 0};
	int rc = last_line(fd, &line, &len);
	if (rc < 0 || !line)
		return rc;
	json_t *j = json_loadb(line, len, 0, NULL);
	json_t *s = j ? json_object_get(j, "seq") : NULL;
	if (!json_is_integer(s)) {
		json_decref(j);
		free(line);
		return -EBADMSG;
	}
	*seq = json_integer_value(s);
	*prev = XXH3_128bits(line, len);
	json_decref(j);
	free(line);
	return 0;
}

int runlog_open(struct runlog *l, const char *path)
{
	l->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (l->fd < 0)
		return -errno;
	json_int_t seq;
	XXH128_hash_t prev;
	flock(l->fd, LOCK_SH);
	int rc = tail_state(l->fd, &seq, &prev);
	flock(l->fd, LOCK_UN);
	if (rc < 0) {
		close(l->fd);
		l->fd = -1;
		return rc;
	}
	pthread_mutex_init(&l->lock, NULL);
	return 0;
}

int runlog_append(struct runlog *l, json_t *fields)
{
	if (!l || l->fd < 0)
		return 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;

	pthread_mutex_lock(&l->lock);
	int rc = 0;
	while (flock(l->fd, LOCK_EX) != 0)
		if (errno != EINTR) {
			rc = -errno;
			break;
		}
	json_int_t seq = 0;
	XXH128_hash_t prev;
	if (rc == 0)
		rc = tail_state(l->fd, &seq, &prev);
	char *text = NULL;
	if (rc == 0) {
		char hex[33];
		layout_hash_hex(prev, hex);
		json_t *rec = json_pack("{s:i, s:I, s:s, s:I}", "v", RUNLOG_VERSION, "seq", seq + 1,
					"prev", hex, "time_ns", (json_int_t)now);
		if (!rec || json_object_update(rec, fields) != 0)
			rc = -ENOMEM;
		else
			text = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(rec);
		if (rc == 0 && !text)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		size_t n = strlen(text);
		text[n] = '\n'; /* json_dumps' NUL becomes the newline: one write */
		ssize_t w = write(l->fd, text, n + 1);
		if (w != (ssize_t)(n + 1))
			rc = w < 0 ? -errno : -EIO;
		else if (fdatasync(l->fd) != 0)
			rc = -errno;
	}
	free(text);
	flock(l->fd, LOCK_UN);
	pthread_mutex_unlock(&l->lock);
	return rc;
}

void runlog_close(struct runlog *l)
{
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
		pthread_mutex_destroy(&l->lock);
	}
}

/* ---- verifying ---------------------------------------------------------------- */

static void verify_bad(struct runlog_verify *v, uint64_t line, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void verify_bad(struct runlog_verify *v, uint64_t line, uint64_t seq, const char *fmt, ...)
{
	if (v->bad_line)
		return;
	v->bad_line = line;
	v->bad_seq = seq;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

/* seq and prev (32 hex) of one line; -EBADMSG with a reason in @err. */
static int verify_parse(const char *line, size_t len, uint64_t *seq, char prev[33], char *err,
			size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		snprintf(err, errlen, "not JSON: %s (column %d)", je.text, je.column);
		return -EBADMSG;
	}
	const char *why = NULL;
	json_t *jv = json_object_get(j, "v"), *js = json_object_get(j, "seq");
	json_t *jp = json_object_get(j, "prev");
	const char *p = json_string_value(jp);
	if (!json_is_object(j))
		why = "not a JSON object";
	else if (!json_is_integer(jv) || json_integer_value(jv) != RUNLOG_VERSION)
		why = "\"v\" is not 1";
	else if (!json_is_integer(js) || json_integer_value(js) < 1)
		why = "\"seq\" is not a positive integer";
	else if (!p || strlen(p) != 32 || strspn(p, "0123456789abcdef") != 32)
		why = "\"prev\" is not 32 lowercase hex digits";
	else if (!json_is_integer(json_object_get(j, "time_ns")))
		why = "\"time_ns\" is not an integer";
	else if (!json_is_string(json_object_get(j, "op")))
		why = "\"op\" is not a string";
	if (why) {
		snprintf(err, errlen, "%s", why);
		json_decref(j);
		return -EBADMSG;
	}
	*seq = (uint64_t)json_integer_value(js);
	memcpy(prev, p, 33);
	json_decref(j);
	return 0;
}

int runlog_verify_file(const char *path, struct runlog_verify *v)
{
	memset(v, 0, sizeof(*v));
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(fd, "r");
	if (!f) {
		int e = -errno;
		close(fd);
		return e;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint64_t lineno = 0, last_seq = 0;
	char last_hash[33];
	layout_hash_hex((XXH128_hash_t){0, 0}, last_hash);
	/* A prev mismatch waiting for the next line to say whom to blame. */
	bool pending = false;
	uint64_t pend_line = 0, pend_seq = 0;
	char pend_hash[33] = "";
	while ((n = getline(&line, &cap, f)) > 0) {
		lineno++;
		if (line[n - 1] != '\n') {
			if (!pending)
				verify_bad(v, lineno, last_seq + 1,
					   "torn: the last line is incomplete (%zd bytes without a "
					   "newline)",
					   n);
			break;
		}
		size_t len = (size_t)n - 1;
		char hash[33], prev[33], err[512];
		layout_hash_hex(XXH3_128bits(line, len), hash);
		uint64_t seq = 0;
		int pr = verify_parse(line, len, &seq, prev, err, sizeof(err));
		if (pending) {
			pending = false;
			if (pr == 0 && strcmp(prev, pend_hash) == 0)
				verify_bad(v, pend_line - 1, pend_seq - 1,
					   "record %" PRIu64
					   " was edited: it no longer hashes to the "
					   "prev that record %" PRIu64 " holds",
					   pend_seq - 1, pend_seq);
			else
				verify_bad(v, pend_line, pend_seq,
					   "record %" PRIu64 " was edited: its prev does not match "
					   "record %" PRIu64,
					   pend_seq, pend_seq - 1);
			break;
		}
		uint64_t want = last_seq + 1;
		if (pr < 0) {
			verify_bad(v, lineno, want, "not a valid record: %s", err);
		} else if (seq > want) {
			verify_bad(v, lineno, want,
				   "record %" PRIu64 " is missing (found seq %" PRIu64
				   "): records were removed",
				   want, seq);
		} else if (seq < want) {
			verify_bad(v, lineno, want,
				   "seq %" PRIu64 " where %" PRIu64
				   " was expected: records were reordered or duplicated",
				   seq, want);
		} else if (strcmp(prev, last_hash) != 0) {
			if (want == 1) {
				verify_bad(
				    v, lineno, want,
				    "record 1 was edited: its prev is not the genesis value");
			} else {
				pending = true;
				pend_line = lineno;
				pend_seq = want;
				memcpy(pend_hash, hash, sizeof(hash));
				continue;
			}
		}
		if (v->bad_line)
			break;
		v->records++;
		last_seq = seq;
		memcpy(last_hash, hash, sizeof(hash));
	}
	int rc = ferror(f) ? -EIO : 0;
	free(line);
	fclose(f);
	if (rc < 0)
		return rc;
	if (pending)
		/* The last record: nothing after it (and no head file) tells whether it
		 * or the record before was edited; name the earlier. */
		verify_bad(v, pend_line - 1, pend_seq - 1,
			   "record %" PRIu64 " or the last record, %" PRIu64
			   ", was edited: they no longer chain",
			   pend_seq - 1, pend_seq);
	if (v->bad_line)
		v->records = v->bad_seq - 1; /* the intact records are those before it */
	return 0;
}
