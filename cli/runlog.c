/* runlog.c - the run journal, run.jsonl (runlog.h). */
#include <errno.h>
#include <fcntl.h>
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
