/* nofilter.c - directories where no git filter can apply (see nofilter.h). */
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli/nofilter.h"

/* An attribute file larger than this counts as mentioning a filter. */
#define SOURCE_MAX (4u << 20)

struct slot {
	char *dir; /* NULL: free */
	bool clean;
};

struct nofilter {
	git_repository *repo;
	git_index *index;
	int workdir_fd;
	bool global_clean; /* config and the sources outside the tree */
	struct slot *slots;
	size_t cap, n;
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

/* Is the attribute file @path (relative to @dfd, or absolute) absent or free
 * of filters?  Unreadable, not a regular file or too large: no. */
static bool file_clean(int dfd, const char *path)
{
	int fd = openat(dfd, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR;
	struct stat st;
	bool clean = false;
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
		clean = buf && k == 0 && n <= (size_t)st.st_size && !mentions_filter(buf, n);
		free(buf);
	}
	close(fd);
	return clean;
}

/* Is the index's blob at @path absent or free of filters? */
static bool blob_clean(struct nofilter *nf, const char *path)
{
	const git_index_entry *e = git_index_get_bypath(nf->index, path, 0);
	if (!e)
		return true;
	git_blob *blob = NULL;
	if (git_blob_lookup(&blob, nf->repo, &e->id) < 0)
		return false;
	bool clean = !mentions_filter(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
	git_blob_free(blob);
	return clean;
}

/* Every "DIR/LEAF" of libgit2's search path for @level, clean? */
static bool search_path_clean(int level, const char *leaf)
{
	git_buf buf = GIT_BUF_INIT;
	if (git_libgit2_opts(GIT_OPT_GET_SEARCH_PATH, level, &buf) < 0)
		return false;
	bool clean = true;
	char *save = NULL;
	for (char *d = strtok_r(buf.ptr, ":", &save); d && clean; d = strtok_r(NULL, ":", &save)) {
		char p[4096];
		clean = snprintf(p, sizeof(p), "%s/%s", d, leaf) < (int)sizeof(p) &&
			file_clean(AT_FDCWD, p);
	}
	git_buf_dispose(&buf);
	return clean;
}

/* core.autocrlf false or unset, core.eol unset, core.attributesFile clean. */
static bool config_clean(git_repository *repo)
{
	git_config *cfg = NULL;
	if (git_repository_config_snapshot(&cfg, repo) < 0)
		return false;
	int v = 0;
	int r = git_config_get_bool(&v, cfg, "core.autocrlf");
	bool clean = r == GIT_ENOTFOUND || (r == 0 && !v);
	const char *s = NULL;
	if (clean)
		clean = git_config_get_string(&s, cfg, "core.eol") == GIT_ENOTFOUND;
	if (clean && git_config_get_string(&s, cfg, "core.attributesFile") == 0) {
		char p[4096];
		const char *home = getenv("HOME");
		if (strncmp(s, "~/", 2) == 0)
			clean = home &&
				snprintf(p, sizeof(p), "%s/%s", home, s + 2) < (int)sizeof(p) &&
				file_clean(AT_FDCWD, p);
		else
			clean = file_clean(AT_FDCWD, s);
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
	/* info/attributes of the common directory, as libgit2 reads it
	 * (GIT_REPOSITORY_ITEM_INFO), and a linked worktree's own. */
	char info[4096], wtinfo[4096];
	nf->global_clean =
	    config_clean(repo) && search_path_clean(GIT_CONFIG_LEVEL_SYSTEM, "gitattributes") &&
	    search_path_clean(GIT_CONFIG_LEVEL_XDG, "attributes") &&
	    snprintf(info, sizeof(info), "%sinfo/attributes", git_repository_commondir(repo)) <
		(int)sizeof(info) &&
	    file_clean(AT_FDCWD, info) &&
	    snprintf(wtinfo, sizeof(wtinfo), "%sinfo/attributes", git_repository_path(repo)) <
		(int)sizeof(wtinfo) &&
	    file_clean(AT_FDCWD, wtinfo);
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

/* Are the .gitattributes of directory @dir (its first @len bytes; "" for the
 * root), the working tree's and the index's, free of filters? */
static bool own_clean(struct nofilter *nf, const char *dir, size_t len)
{
	char p[4096];
	return snprintf(p, sizeof(p), "%.*s%s.gitattributes", (int)len, dir, len ? "/" : "") <
		   (int)sizeof(p) &&
	       file_clean(nf->workdir_fd, p) && blob_clean(nf, p);
}

/* The directory @dir (its first @len bytes; "" for the root): clean?  Each
 * directory from the root down to it, decided once (clean when its parent is
 * and its own files are) and kept; a loop, not a recursion, for paths as deep
 * as PATH_MAX allows. */
static bool dir_clean(struct nofilter *nf, const char *dir, size_t len)
{
	bool clean = nf->global_clean;
	size_t l = 0; /* the prefix dir[0..l) looked at: "", "a", "a/b", ... */
	for (;;) {
		if ((nf->n + 1) * 2 > nf->cap && !grow(nf))
			return false;
		struct slot *s = find(nf, dir, l);
		if (s->dir) {
			clean = s->clean;
		} else {
			clean = clean && own_clean(nf, dir, l);
			if (!(s->dir = strndup(dir, l)))
				return false;
			s->clean = clean;
			nf->n++;
		}
		if (l == len)
			return clean;
		size_t from = l ? l + 1 : 0;
		const char *next = memchr(dir + from, '/', len - from);
		l = next ? (size_t)(next - dir) : len;
	}
}

bool nofilter_path(struct nofilter *nf, const char *path)
{
	const char *slash = strrchr(path, '/');
	return dir_clean(nf, path, slash ? (size_t)(slash - path) : 0);
}

void nofilter_free(struct nofilter *nf)
{
	if (!nf)
		return;
	for (size_t i = 0; i < nf->cap; i++)
		free(nf->slots[i].dir);
	free(nf->slots);
	free(nf);
}
