/* nofilter.c - directories where no git filter can apply (see nofilter.h). */
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli/nofilter.h"

/* An attribute file larger than this counts as mentioning a filter. */
#define SOURCE_MAX (4u << 20)

/* What applies in a directory: whether no filter can (clean), and the
 * digest of every source (ok: all could be read; nofilter_digest). */
struct verdict {
	bool clean, ok;
	uint64_t digest;
};

struct slot {
	char *dir; /* NULL: free */
	struct verdict v;
};

/* An attribute file as read for a digest: its stat data, or its absence
 * (nofilter_unchanged). */
struct source {
	int dfd; /* AT_FDCWD or the working tree's (borrowed) */
	char *path;
	bool present;
	struct stat st;
};

struct nofilter {
	git_repository *repo;
	git_index *index;
	int workdir_fd;
	struct verdict global; /* config and the sources outside the tree */
	struct slot *slots;
	size_t cap, n;
	struct source *srcs;
	size_t nsrcs, capsrcs;
	bool srcs_lost; /* one could not be remembered: nofilter_unchanged says no */
};

/* Does @buf name an attribute that can make a filter, or define a macro? */
static bool mentions_filter(const char *buf, size_t len)
{
	static const char *const words[] = {"text",   "eol",	  "crlf",  "ident",
					    "filter", "encoding", "[attr]"};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (memmem(buf, len, words[i], strlen(words[i])))
			return true;
	return false;
}

/* Into @h: a tag and @len bytes, the length first (no two sequences of
 * sources hash alike). */
static void feed(XXH3_state_t *h, char tag, const void *buf, size_t len)
{
	uint64_t n = len;
	XXH3_64bits_update(h, &tag, 1);
	XXH3_64bits_update(h, &n, sizeof(n));
	if (len)
		XXH3_64bits_update(h, buf, len);
}

/* Remember a source read for a digest: @st, or absent when NULL. */
static void remember(struct nofilter *nf, int dfd, const char *path, const struct stat *st)
{
	if (nf->nsrcs == nf->capsrcs) {
		size_t cap = nf->capsrcs ? nf->capsrcs * 2 : 64;
		struct source *n = realloc(nf->srcs, cap * sizeof(*n));
		if (!n) {
			nf->srcs_lost = true;
			return;
		}
		nf->srcs = n;
		nf->capsrcs = cap;
	}
	struct source *s = &nf->srcs[nf->nsrcs];
	if (!(s->path = strdup(path))) {
		nf->srcs_lost = true;
		return;
	}
	s->dfd = dfd;
	s->present = st != NULL;
	if (st)
		s->st = *st;
	nf->nsrcs++;
}

static bool same_version(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Is the attribute file @path (relative to @dfd, or absolute) absent or free
 * of filters?  Unreadable, not a regular file or too large: no, and *ok is
 * cleared; so too for a file changed in the clock tick it is read in, which
 * a later change could leave with the same stat data (racy, as git's index
 * entries: Documentation/technical/racy-git.txt).  Its bytes, or its
 * absence, go into @h, and its stat data are remembered. */
static bool file_clean(struct nofilter *nf, int dfd, const char *path, XXH3_state_t *h, bool *ok)
{
	struct timespec read_at;
	clock_gettime(CLOCK_REALTIME_COARSE, &read_at);
	int fd = openat(dfd, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		bool absent = errno == ENOENT || errno == ENOTDIR;
		feed(h, 'A', NULL, 0);
		*ok = *ok && absent;
		if (absent)
			remember(nf, dfd, path, NULL);
		return absent;
	}
	struct stat st;
	bool clean = false, read_ok = false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size <= SOURCE_MAX) {
		char *buf = malloc((size_t)st.st_size + 1);
		size_t n = 0;
		ssize_t k = 1;
		while (buf && k > 0 && n <= (size_t)st.st_size) {
			k = read(fd, buf + n, (size_t)st.st_size + 1 - n);
			if (k > 0)
				n += (size_t)k;
			else if (k < 0 && errno == EINTR)
				k = 1;
		}
		read_ok = buf && k == 0 && n <= (size_t)st.st_size;
		clean = read_ok && !mentions_filter(buf, n);
		if (read_ok)
			feed(h, 'F', buf, n);
		free(buf);
		if (read_ok)
			remember(nf, dfd, path, &st);
	}
	close(fd);
	bool racy = read_ok &&
		    (st.st_ctim.tv_sec > read_at.tv_sec || (st.st_ctim.tv_sec == read_at.tv_sec &&
							    st.st_ctim.tv_nsec >= read_at.tv_nsec));
	*ok = *ok && read_ok && !racy;
	return clean;
}

/* Is the index's blob at @path absent or free of filters?  Its id, or its
 * absence, goes into @h. */
static bool blob_clean(struct nofilter *nf, const char *path, XXH3_state_t *h)
{
	const git_index_entry *e = git_index_get_bypath(nf->index, path, 0);
	if (!e) {
		feed(h, 'A', NULL, 0);
		return true;
	}
	feed(h, 'B', e->id.id, sizeof(e->id.id));
	git_blob *blob = NULL;
	if (git_blob_lookup(&blob, nf->repo, &e->id) < 0)
		return false;
	bool clean = !mentions_filter(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
	git_blob_free(blob);
	return clean;
}

/* Every "DIR/LEAF" of libgit2's search path for @level, clean? */
static bool search_path_clean(struct nofilter *nf, int level, const char *leaf, XXH3_state_t *h,
			      bool *ok)
{
	git_buf buf = GIT_BUF_INIT;
	if (git_libgit2_opts(GIT_OPT_GET_SEARCH_PATH, level, &buf) < 0) {
		*ok = false;
		return false;
	}
	bool clean = true;
	char *save = NULL;
	for (char *d = strtok_r(buf.ptr, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char p[4096];
		feed(h, 'P', d, strlen(d));
		if (snprintf(p, sizeof(p), "%s/%s", d, leaf) >= (int)sizeof(p)) {
			clean = *ok = false;
			break;
		}
		clean = file_clean(nf, AT_FDCWD, p, h, ok) && clean;
	}
	git_buf_dispose(&buf);
	return clean;
}

/* core.autocrlf false or unset, core.eol unset, core.attributesFile clean.
 * The values of the settings libgit2's crlf filter reads (core.autocrlf,
 * core.eol, core.safecrlf: git2 1.5 src/libgit2/crlf.c) and the
 * attributesFile's bytes go into @h. */
static bool config_clean(struct nofilter *nf, git_repository *repo, XXH3_state_t *h, bool *ok)
{
	git_config *cfg = NULL;
	if (git_repository_config_snapshot(&cfg, repo) < 0) {
		*ok = false;
		return false;
	}
	static const char *const keys[] = {"core.autocrlf", "core.eol", "core.safecrlf",
					   "core.attributesFile"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		/* The entry, not its string: a key without a value ("autocrlf"
		 * alone, true) and one with an empty value (false) read alike
		 * as strings (git-config(1), "Syntax"). */
		git_config_entry *e = NULL;
		int r = git_config_get_entry(&e, cfg, keys[i]);
		if (r == 0 && !e->value)
			feed(h, 'N', NULL, 0);
		else if (r == 0)
			feed(h, 'V', e->value, strlen(e->value));
		else if (r == GIT_ENOTFOUND)
			feed(h, 'A', NULL, 0);
		else
			*ok = false;
		git_config_entry_free(e);
	}
	int v = 0;
	int r = git_config_get_bool(&v, cfg, "core.autocrlf");
	bool clean = r == GIT_ENOTFOUND || (r == 0 && !v);
	const char *s = NULL;
	if (clean)
		clean = git_config_get_string(&s, cfg, "core.eol") == GIT_ENOTFOUND;
	if (git_config_get_string(&s, cfg, "core.attributesFile") == 0) {
		char p[4096];
		const char *home = getenv("HOME"), *file = s;
		if (strncmp(s, "~/", 2) == 0) {
			file = home && snprintf(p, sizeof(p), "%s/%s", home, s + 2) < (int)sizeof(p)
				   ? p
				   : NULL;
			if (!file)
				clean = *ok = false;
		}
		if (file && !file_clean(nf, AT_FDCWD, file, h, ok))
			clean = false;
	}
	git_config_free(cfg);
	return clean;
}

int nofilter_new(git_repository *repo, git_index *index, int workdir_fd, struct nofilter **out)
{
	struct nofilter *nf = calloc(1, sizeof(*nf));
	if (!nf)
		return -ENOMEM;
	nf->repo = repo;
	nf->index = index;
	nf->workdir_fd = workdir_fd;
	/* Every source is read (each one's bytes go into the digest), so no
	 * short cut once one names a filter. */
	XXH3_state_t *h = XXH3_createState();
	if (!h) {
		free(nf);
		return -ENOMEM;
	}
	XXH3_64bits_reset(h);
	bool ok = true, clean = config_clean(nf, repo, h, &ok);
	clean = search_path_clean(nf, GIT_CONFIG_LEVEL_SYSTEM, "gitattributes", h, &ok) && clean;
	clean = search_path_clean(nf, GIT_CONFIG_LEVEL_XDG, "attributes", h, &ok) && clean;
	/* info/attributes of the common directory, as libgit2 reads it
	 * (GIT_REPOSITORY_ITEM_INFO), and a linked worktree's own. */
	const char *infos[] = {git_repository_commondir(repo), git_repository_path(repo)};
	for (int i = 0; i < 2; i++) {
		char p[4096];
		if (!infos[i] ||
		    snprintf(p, sizeof(p), "%sinfo/attributes", infos[i]) >= (int)sizeof(p)) {
			clean = ok = false;
			continue;
		}
		clean = file_clean(nf, AT_FDCWD, p, h, &ok) && clean;
	}
	nf->global = (struct verdict){.clean = clean, .ok = ok, .digest = XXH3_64bits_digest(h)};
	XXH3_freeState(h);
	*out = nf;
	return 0;
}

static struct slot *find(struct nofilter *nf, const char *dir, size_t len)
{
	size_t i = (size_t)XXH3_64bits(dir, len) & (nf->cap - 1);
	while (nf->slots[i].dir &&
	       !(strlen(nf->slots[i].dir) == len && memcmp(nf->slots[i].dir, dir, len) == 0))
		i = (i + 1) & (nf->cap - 1);
	return &nf->slots[i];
}

static bool grow(struct nofilter *nf)
{
	size_t cap = nf->cap ? nf->cap * 2 : 256;
	struct slot *s = calloc(cap, sizeof(*s));
	if (!s)
		return false;
	struct slot *old = nf->slots;
	size_t ocap = nf->cap;
	nf->slots = s;
	nf->cap = cap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].dir)
			*find(nf, old[i].dir, strlen(old[i].dir)) = old[i];
	free(old);
	return true;
}

/* Directory @dir (its first @len bytes; "" for the root) under a parent
 * whose verdict is @up: clean when @up is and its .gitattributes, the working
 * tree's and the index's, are free of filters; its digest, @up's and theirs. */
static struct verdict own_verdict(struct nofilter *nf, const char *dir, size_t len,
				  const struct verdict *up)
{
	struct verdict v = {.clean = false, .ok = false, .digest = 0};
	char p[4096];
	XXH3_state_t *h = XXH3_createState();
	if (!h || snprintf(p, sizeof(p), "%.*s%s.gitattributes", (int)len, dir, len ? "/" : "") >=
		      (int)sizeof(p)) {
		XXH3_freeState(h);
		return v;
	}
	XXH3_64bits_reset(h);
	feed(h, 'U', &up->digest, sizeof(up->digest));
	v.ok = up->ok;
	bool file = file_clean(nf, nf->workdir_fd, p, h, &v.ok);
	bool blob = blob_clean(nf, p, h);
	v.clean = up->clean && file && blob;
	v.digest = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return v;
}

/* The directory @dir (its first @len bytes; "" for the root): its verdict
 * in *out, or false without memory.  Each directory from the root down to
 * it, decided once and kept; a loop, not a recursion, for paths as deep as
 * PATH_MAX allows.  Verdicts are copied: the table moves when it grows. */
static bool dir_verdict(struct nofilter *nf, const char *dir, size_t len, struct verdict *out)
{
	struct verdict up = nf->global;
	size_t l = 0; /* the prefix dir[0..l) looked at: "", "a", "a/b", ... */
	for (;;) {
		if ((nf->n + 1) * 2 > nf->cap && !grow(nf))
			return false;
		struct slot *s = find(nf, dir, l);
		if (!s->dir) {
			struct verdict v = own_verdict(nf, dir, l, &up);
			if (!(s->dir = strndup(dir, l)))
				return false;
			s->v = v;
			nf->n++;
		}
		up = s->v;
		if (l == len) {
			*out = up;
			return true;
		}
		size_t from = l ? l + 1 : 0;
		const char *next = memchr(dir + from, '/', len - from);
		l = next ? (size_t)(next - dir) : len;
	}
}

static bool path_verdict(struct nofilter *nf, const char *path, struct verdict *out)
{
	const char *slash = strrchr(path, '/');
	return dir_verdict(nf, path, slash ? (size_t)(slash - path) : 0, out);
}

bool nofilter_path(struct nofilter *nf, const char *path)
{
	struct verdict v;
	return path_verdict(nf, path, &v) && v.clean;
}

bool nofilter_digest(struct nofilter *nf, const char *path, uint64_t *out)
{
	struct verdict v;
	if (!path_verdict(nf, path, &v) || !v.ok)
		return false;
	*out = v.digest;
	return true;
}

bool nofilter_unchanged(const struct nofilter *nf)
{
	if (nf->srcs_lost)
		return false;
	for (size_t i = 0; i < nf->nsrcs; i++) {
		const struct source *s = &nf->srcs[i];
		struct stat st;
		bool present = fstatat(s->dfd, s->path, &st, 0) == 0;
		if (!present && errno != ENOENT && errno != ENOTDIR)
			return false;
		if (present != s->present || (present && !same_version(&st, &s->st)))
			return false;
	}
	return true;
}

void nofilter_free(struct nofilter *nf)
{
	if (!nf)
		return;
	for (size_t i = 0; i < nf->nsrcs; i++)
		free(nf->srcs[i].path);
	free(nf->srcs);
	for (size_t i = 0; i < nf->cap; i++)
		free(nf->slots[i].dir);
	free(nf->slots);
	free(nf);
}
