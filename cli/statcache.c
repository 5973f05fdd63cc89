/* statcache.c - blob ids of the private .git's builds, per repository (see statcache.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli/statcache.h"

#define MAGIC	     "AFSTATC2"
#define HEADER_LEN   24
#define FIXED_LEN    (4 + 8 + 4 + 8 + 4 + 8 + 8 + 4 + 4 + 8 + STATCACHE_ID_LEN)
#define MAX_PATH_LEN PATH_MAX
/* Seconds before a build's start that still count as racy (statcache.h). */
#define RACY_MARGIN_S 2
/* The header's flags: the records' order ignores case. */
#define FLAG_ICASE 1u
/* Age in seconds of a temporary file no build is writing any more (a build
 * of the kernel's 78k files takes seconds), and of a cache no build has
 * written for so long that its repository is likely gone (statcache.h). */
#define STALE_TMP_S   3600
#define STALE_CACHE_S (30 * 86400)

struct rec {
	char path[MAX_PATH_LEN + 1];
	uint32_t mode, mtime_ns, ctime_ns, uid, gid;
	int64_t mtime_s, ctime_s;
	uint64_t ino, size, filters;
	unsigned char id[STATCACHE_ID_LEN];
};

struct statcache {
	char *path, *tmp;
	FILE *in, *out;
	bool icase;  /* the index's order ignores case (core.ignorecase) */
	bool in_ok;  /* more records may follow */
	bool have;   /* cur holds the next unmatched record */
	int out_err; /* the first write error */
	bool committed;
	struct timespec in_thr, out_thr; /* the thresholds (statcache.h) */
	struct rec cur;
	char last[MAX_PATH_LEN + 1]; /* the path of the last record written, or "" */
};

/* ---- little-endian fields ---- */

static unsigned char *put(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	return p + n;
}

static const unsigned char *get(const unsigned char *p, uint64_t *v, int n)
{
	*v = 0;
	for (int i = 0; i < n; i++)
		*v |= (uint64_t)p[i] << (8 * i);
	return p + n;
}

static bool before(int64_t s, uint32_t ns, const struct timespec *t)
{
	return s < (int64_t)t->tv_sec || (s == (int64_t)t->tv_sec && (long)ns < t->tv_nsec);
}

/* Read the next record into c->cur: false at the end or on anything malformed. */
static bool read_record(struct statcache *c)
{
	unsigned char b[2 + MAX_PATH_LEN + FIXED_LEN + 8];
	uint64_t v;
	if (fread(b, 1, 2, c->in) != 2)
		return false;
	get(b, &v, 2);
	size_t len = (size_t)v;
	if (len == 0 || len > MAX_PATH_LEN ||
	    fread(b + 2, 1, len + FIXED_LEN + 8, c->in) != len + FIXED_LEN + 8)
		return false;
	size_t body = 2 + len + FIXED_LEN;
	get(b + body, &v, 8);
	if (v != XXH3_64bits(b, body) || memchr(b + 2, 0, len))
		return false;
	struct rec *r = &c->cur;
	memcpy(r->path, b + 2, len);
	r->path[len] = 0;
	const unsigned char *p = b + 2 + len;
	p = get(p, &v, 4), r->mode = (uint32_t)v;
	p = get(p, &v, 8), r->mtime_s = (int64_t)v;
	p = get(p, &v, 4), r->mtime_ns = (uint32_t)v;
	p = get(p, &v, 8), r->ctime_s = (int64_t)v;
	p = get(p, &v, 4), r->ctime_ns = (uint32_t)v;
	p = get(p, &v, 8), r->ino = v;
	p = get(p, &v, 8), r->size = v;
	p = get(p, &v, 4), r->uid = (uint32_t)v;
	p = get(p, &v, 4), r->gid = (uint32_t)v;
	p = get(p, &v, 8), r->filters = v;
	memcpy(r->id, p, STATCACHE_ID_LEN);
	return true;
}

/* Read the old file from @fd (taken; -1: none): its header, then records. */
static void open_old_fd(struct statcache *c, int fd)
{
	c->in = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!c->in) {
		if (fd >= 0)
			close(fd);
		return;
	}
	unsigned char h[HEADER_LEN];
	uint64_t s, ns, flags;
	if (fread(h, 1, HEADER_LEN, c->in) != HEADER_LEN || memcmp(h, MAGIC, 8) != 0)
		return;
	get(get(get(h + 8, &s, 8), &ns, 4), &flags, 4);
	/* Records in another order (core.ignorecase changed since): unusable. */
	if (ns >= 1000000000u || flags != (c->icase ? FLAG_ICASE : 0))
		return;
	c->in_thr.tv_sec = (time_t)(int64_t)s;
	c->in_thr.tv_nsec = (long)ns;
	c->in_ok = true;
}

static void open_old(struct statcache *c)
{
	open_old_fd(c, open(c->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
}

int statcache_reader(const struct statcache *c, struct statcache **out)
{
	*out = NULL;
	struct statcache *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->icase = c->icase;
	r->out_err = -EBADF; /* nothing to write */
	if (c->in) {
		/* The same file, not the one at the path now: a build of another
		 * workspace may have put a newer one there since. */
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fileno(c->in));
		int fd = open(proc, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			free(r);
			return -e;
		}
		open_old_fd(r, fd);
	}
	*out = r;
	return 0;
}

/* Remove what no build will read or finish in @dir: temporary files older
 * than STALE_TMP_S, caches older than STALE_CACHE_S. */
static void clean_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "statcache-", 10) != 0)
			continue;
		bool tmp = strchr(de->d_name, '.') != NULL;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) &&
		    now.tv_sec - st.st_mtim.tv_sec > (tmp ? STALE_TMP_S : STALE_CACHE_S))
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

int statcache_begin(const char *path, bool icase, struct statcache **out)
{
	*out = NULL;
	struct statcache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	int r = -ENOMEM;
	c->path = strdup(path);
	const char *slash = c->path ? strrchr(c->path, '/') : NULL;
	if (!c->path || !slash || asprintf(&c->tmp, "%s.XXXXXX", path) < 0) {
		c->tmp = NULL;
		goto fail;
	}
	char *dir = strndup(c->path, (size_t)(slash - c->path));
	if (!dir)
		goto fail;
	if (*dir && mkdir(dir, 0700) != 0 && errno != EEXIST) {
		r = -errno;
		free(dir);
		goto fail;
	}
	clean_dir(*dir ? dir : "/");
	free(dir);
	c->icase = icase;
	int fd = mkostemp(c->tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		free(c->tmp);
		c->tmp = NULL;
		goto fail;
	}
	c->out = fdopen(fd, "w");
	if (!c->out) {
		r = -errno;
		close(fd);
		goto fail;
	}
	clock_gettime(CLOCK_REALTIME_COARSE, &c->out_thr);
	c->out_thr.tv_sec -= RACY_MARGIN_S;
	unsigned char h[HEADER_LEN], *p = h;
	memcpy(p, MAGIC, 8);
	p = put(p + 8, (uint64_t)(int64_t)c->out_thr.tv_sec, 8);
	p = put(p, (uint64_t)c->out_thr.tv_nsec, 4);
	put(p, icase ? FLAG_ICASE : 0, 4);
	if (fwrite(h, 1, HEADER_LEN, c->out) != HEADER_LEN)
		c->out_err = -EIO;
	open_old(c);
	*out = c;
	return 0;
fail:
	statcache_free(c);
	return r;
}

bool statcache_has(struct statcache *c, const char *path, const struct stat *st, uint32_t mode,
		   const unsigned char *id, uint64_t filters)
{
	return statcache_has_either(c, path, st, mode, id, filters, filters);
}

bool statcache_has_either(struct statcache *c, const char *path, const struct stat *st,
			  uint32_t mode, const unsigned char *id, uint64_t filters, uint64_t or)
{
	while (c->in_ok) {
		if (!c->have && !(c->have = read_record(c))) {
			c->in_ok = false;
			break;
		}
		/* The index's order: libgit2 sorts an index that ignores case
		 * with strcasecmp (git_index_entry_icmp), in the C locale here. */
		int cmp = c->icase ? strcasecmp(c->cur.path, path) : strcmp(c->cur.path, path);
		if (cmp > 0)
			return false; /* none for @path: the record waits for its own */
		c->have = false;
		if (cmp < 0 || strcmp(c->cur.path, path) != 0)
			continue; /* passed over, or another case of this path */
		const struct rec *r = &c->cur;
		return r->mode == mode && r->mtime_s == (int64_t)st->st_mtim.tv_sec &&
		       r->mtime_ns == (uint32_t)st->st_mtim.tv_nsec &&
		       r->ctime_s == (int64_t)st->st_ctim.tv_sec &&
		       r->ctime_ns == (uint32_t)st->st_ctim.tv_nsec &&
		       r->ino == (uint64_t)st->st_ino && r->size == (uint64_t)st->st_size &&
		       r->uid == st->st_uid && r->gid == st->st_gid &&
		       (r->filters == filters || r->filters == or) &&
		       memcmp(r->id, id, STATCACHE_ID_LEN) == 0 &&
		       before(r->mtime_s, r->mtime_ns, &c->in_thr) &&
		       before(r->ctime_s, r->ctime_ns, &c->in_thr);
	}
	return false;
}

void statcache_add(struct statcache *c, const char *path, const struct stat *st, uint32_t mode,
		   const unsigned char *id, uint64_t filters)
{
	size_t len = strlen(path);
	if (c->out_err || len == 0 || len > MAX_PATH_LEN ||
	    !before((int64_t)st->st_mtim.tv_sec, (uint32_t)st->st_mtim.tv_nsec, &c->out_thr) ||
	    !before((int64_t)st->st_ctim.tv_sec, (uint32_t)st->st_ctim.tv_nsec, &c->out_thr))
		return;
	unsigned char b[2 + MAX_PATH_LEN + FIXED_LEN + 8], *p = b;
	p = put(p, len, 2);
	memcpy(p, path, len);
	p += len;
	p = put(p, mode, 4);
	p = put(p, (uint64_t)(int64_t)st->st_mtim.tv_sec, 8);
	p = put(p, (uint64_t)st->st_mtim.tv_nsec, 4);
	p = put(p, (uint64_t)(int64_t)st->st_ctim.tv_sec, 8);
	p = put(p, (uint64_t)st->st_ctim.tv_nsec, 4);
	p = put(p, (uint64_t)st->st_ino, 8);
	p = put(p, (uint64_t)st->st_size, 8);
	p = put(p, st->st_uid, 4);
	p = put(p, st->st_gid, 4);
	p = put(p, filters, 8);
	memcpy(p, id, STATCACHE_ID_LEN);
	p += STATCACHE_ID_LEN;
	p = put(p, XXH3_64bits(b, (size_t)(p - b)), 8);
	if (fwrite(b, 1, (size_t)(p - b), c->out) != (size_t)(p - b))
		c->out_err = -EIO;
	memcpy(c->last, path, len + 1);
}

/* Write record @r as it was read (statcache_add's layout). */
static void write_record(struct statcache *c, const struct rec *r)
{
	struct stat st;
	memset(&st, 0, sizeof(st));
	st.st_mtim.tv_sec = (time_t)r->mtime_s;
	st.st_mtim.tv_nsec = (long)r->mtime_ns;
	st.st_ctim.tv_sec = (time_t)r->ctime_s;
	st.st_ctim.tv_nsec = (long)r->ctime_ns;
	st.st_ino = (ino_t)r->ino;
	st.st_size = (off_t)r->size;
	st.st_uid = r->uid;
	st.st_gid = r->gid;
	statcache_add(c, r->path, &st, r->mode, r->id, r->filters);
}

void statcache_keep_rest(struct statcache *c)
{
	while (c->in_ok && !c->out_err) {
		if (!c->have && !(c->have = read_record(c))) {
			c->in_ok = false;
			break;
		}
		c->have = false;
		const struct rec *r = &c->cur;
		/* Only after what is written: one record per path, in order (the
		 * same path in another case too, where the order ignores it). */
		if (c->last[0] &&
		    (c->icase ? strcasecmp(r->path, c->last) : strcmp(r->path, c->last)) <= 0)
			continue;
		/* statcache_add checks this file's threshold. */
		if (before(r->mtime_s, r->mtime_ns, &c->in_thr) &&
		    before(r->ctime_s, r->ctime_ns, &c->in_thr))
			write_record(c, r);
	}
}

int statcache_commit(struct statcache *c)
{
	FILE *out = c->out;
	c->out = NULL;
	int r = c->out_err;
	if (fclose(out) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(c->tmp, c->path) != 0)
		r = -errno;
	c->committed = r == 0;
	return r;
}

void statcache_free(struct statcache *c)
{
	if (!c)
		return;
	if (c->in)
		fclose(c->in);
	if (c->out)
		fclose(c->out);
	if (c->tmp && !c->committed)
		unlink(c->tmp);
	free(c->tmp);
	free(c->path);
	free(c);
}

int statcache_path(const char *root, const char *git_dir, char **out)
{
	if (asprintf(out, "%s/cache/statcache-%016" PRIx64, root,
		     (uint64_t)XXH3_64bits(git_dir, strlen(git_dir))) < 0) {
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}
