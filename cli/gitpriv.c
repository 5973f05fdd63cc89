/* gitpriv.c - build and serve the workspace-private .git (see gitpriv.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/odb_backend.h>
#include <git2/sys/repository.h>
#include <limits.h>
#include <malloc.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cli/gitpriv.h"
#include "cli/nofilter.h"
#include "cli/packwrite.h"
#include "cli/prehash.h"
#include "cli/statcache.h"
#include "cli/workspace.h"
#include "fs/fs.h"
#include "policy/policy.h"

/* ---- a set of object ids (open addressing; the zero id marks a free slot) ---- */

#define oidset gitpriv_oidset

static size_t oid_hash(const git_oid *id)
{
	uint64_t h;
	memcpy(&h, id->id, sizeof(h)); /* object ids are uniformly distributed */
	return (size_t)h;
}

static bool oid_zero(const git_oid *id)
{
	static const git_oid zero;
	return memcmp(id->id, zero.id, GIT_OID_RAWSZ) == 0;
}

static int oidset_grow(struct oidset *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 1024;
	git_oid *n = calloc(ncap, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++) {
		if (oid_zero(&s->slots[i]))
			continue;
		size_t j = oid_hash(&s->slots[i]) & (ncap - 1);
		while (!oid_zero(&n[j]))
			j = (j + 1) & (ncap - 1);
		n[j] = s->slots[i];
	}
	free(s->slots);
	s->slots = n;
	s->cap = ncap;
	return 0;
}

static bool oidset_has(const struct oidset *s, const git_oid *id)
{
	if (!s->cap || oid_zero(id))
		return false;
	for (size_t j = oid_hash(id) & (s->cap - 1);; j = (j + 1) & (s->cap - 1)) {
		if (oid_zero(&s->slots[j]))
			return false;
		if (git_oid_equal(&s->slots[j], id))
			return true;
	}
}

static int oidset_add(struct oidset *s, const git_oid *id)
{
	if (oid_zero(id) || oidset_has(s, id))
		return 0;
	if ((s->count + 1) * 2 > s->cap) {
		int r = oidset_grow(s);
		if (r < 0)
			return r;
	}
	size_t j = oid_hash(id) & (s->cap - 1);
	while (!oid_zero(&s->slots[j]))
		j = (j + 1) & (s->cap - 1);
	s->slots[j] = *id;
	s->count++;
	return 0;
}

int gitpriv_oidset_add(struct gitpriv_oidset *s, const git_oid *id)
{
	return oidset_add(s, id);
}

bool gitpriv_oidset_has(const struct gitpriv_oidset *s, const git_oid *id)
{
	return oidset_has(s, id);
}

void gitpriv_oidset_clear(struct gitpriv_oidset *s)
{
	free(s->slots);
	memset(s, 0, sizeof(*s));
}

/* ---- the handle ---- */

struct gitpriv {
	char *ws_dir;
	char *repo;
	char *mountpoint;
	char *dir;	  /* <ws_dir>/git */
	char *state_root; /* for the stat cache (gitpriv_set_state_root), or NULL */
	int lower_fd;
	const struct policy *policy;
	bool readonly; /* `git: readonly`: the repository's history, see prepare_readonly() */

	pthread_mutex_t lock;  /* guards everything below (faults run on request threads) */
	bool inited;	       /* holds a git_libgit2_init() reference */
	git_odb *real_odb;     /* the repository's objects, read only */
	git_odb *priv_odb;     /* the private objects directory */
	struct oidset allowed; /* every object reachable from the base tree */
	bool fanout[256];      /* objects/XX holds some allowed object */

	/* Base blobs ahead of git (gitpriv_copied_up): a ring of lower paths
	 * and the thread that takes them, under a lock of their own so that a
	 * request never waits for a fault or the build. */
	pthread_mutex_t qlock;
	pthread_cond_t qcond; /* on CLOCK_MONOTONIC */
	pthread_t qthread;
	bool qstarted, qstop;
	size_t qhead, qlen;
	char *queue[GITPRIV_PREFETCH_QUEUE];
	/* When the last path came, and when the thread wakes by itself
	 * (LLONG_MAX: only when woken; 0: it is awake), in CLOCK_MONOTONIC
	 * nanoseconds: a path wakes it only if it would otherwise sleep past
	 * the pause it waits for (GITPRIV_PREFETCH_QUIET_MS). */
	long long qlast_ns, qwake_ns;
	/* Base blobs read and hashed, not yet written (GITPRIV_PENDING_QUIET_MS):
	 * under qlock, since a fault looks for its object among them (pendset,
	 * their ids).  A fault that finds it sets flush_now and waits on fcond
	 * until the object is no longer pending. */
	struct pending {
		git_oid id;
		char *buf;
		size_t len;
	} * pend;
	size_t npend, cappend, pend_bytes;
	struct oidset pendset;
	bool pend_any; /* npend > 0, for pending_announce; atomic */
	bool flush_now;
	bool packs_gone;       /* gitpriv_packs_removed: drop the fan-out listings */
	long pending_quiet_ms; /* GITPRIV_PENDING_QUIET_MS; gitpriv_set_pending_quiet */
	long flush_delay_ms;   /* 0; gitpriv_set_flush_delay */
	long build_delay_ms;   /* 0; gitpriv_set_build_delay */
	long entry_delay_ms;   /* 0; gitpriv_set_entry_delay */
	pthread_cond_t fcond;  /* on CLOCK_MONOTONIC */

	/* Base blobs in packs (GITPRIV_PACK_MIN): the ones that thread wrote
	 * loose since its last pack, and this session's packs of them, oldest
	 * first.  That thread's alone. */
	git_oid *fresh;
	size_t nfresh, capfresh;
	/* The private objects' loose store, written directly with the id that
	 * thread computed: git_odb_write would hash the blob again and, for an
	 * object it does not have, rescan objects/pack twice. */
	git_odb_backend *loose;
	struct basepack {
		char name[2 * GIT_OID_HEXSZ + 1]; /* pack-NAME.pack, pack-NAME.idx */
		git_oid *ids;
		size_t n;
	} packs[GITPRIV_PACKS_MAX];
	size_t npacks;
	bool merge_wanted; /* a pack was added since the last merge_due check */

	pthread_mutex_t fslock; /* guards fs, held across fs_git_changed */
	struct agentfs *fs;	/* the serving daemon (gitpriv_serving), or NULL */
	/* The mount stopped serving (gitpriv_serving with NULL) while the
	 * workspace held no changes: a build still running stops
	 * (build_stopped).  Atomic: the build polls it, as it sets building. */
	bool bstop, building;
};

int gitpriv_new(const char *ws_dir, const char *repo, const char *mountpoint, int lower_fd,
		const struct policy *policy, struct gitpriv **out)
{
	struct gitpriv *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->lower_fd = lower_fd;
	g->policy = policy;
	g->pending_quiet_ms = GITPRIV_PENDING_QUIET_MS;
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->qlock, NULL);
	pthread_mutex_init(&g->fslock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->qcond, &ca);
	pthread_cond_init(&g->fcond, &ca);
	pthread_condattr_destroy(&ca);
	g->ws_dir = strdup(ws_dir);
	g->repo = strdup(repo);
	g->mountpoint = strdup(mountpoint);
	if (!g->ws_dir || !g->repo || !g->mountpoint || asprintf(&g->dir, "%s/git", ws_dir) < 0) {
		g->dir = NULL;
		gitpriv_free(g);
		return -ENOMEM;
	}
	if (mkdir(g->dir, 0755) != 0 && errno != EEXIST) {
		int e = -errno;
		gitpriv_free(g);
		return e;
	}
	*out = g;
	return 0;
}

int gitpriv_attach(const struct workspace *ws, const struct policy *policy, int lower_fd,
		   const char *mnt, struct fs_config *cfg, struct gitpriv **out)
{
	*out = NULL;
	enum policy_git mode = policy_git_mode(policy);
	if (mode == POLICY_GIT_HIDDEN)
		return 0;
	int r = gitpriv_new(ws->dir, ws->repo, mnt, lower_fd, policy, out);
	if (r == 0 && mode == POLICY_GIT_READONLY) {
		/* A directory of its own: the private repository of another
		 * mount of this workspace stays as it was. */
		(*out)->readonly = true;
		free((*out)->dir);
		if (asprintf(&(*out)->dir, "%s/git-ro", ws->dir) < 0) {
			(*out)->dir = NULL;
			r = -ENOMEM;
		} else if (mkdir((*out)->dir, 0755) != 0 && errno != EEXIST) {
			r = -errno;
		}
		if (r < 0) {
			gitpriv_free(*out);
			*out = NULL;
		}
	}
	if (r < 0) {
		fprintf(stderr, "agentfs: mount: %s/git: cannot set up the private .git: %s\n",
			ws->dir, strerror(-r));
		return r;
	}
	/* The integration tests' hooks (gitpriv.h), from the daemon's
	 * environment: a number of milliseconds from 1 to 600,000, else
	 * ignored. */
	const char *q = getenv("AGENTFS_TEST_PENDING_QUIET_MS");
	const char *d = getenv("AGENTFS_TEST_FLUSH_DELAY_MS");
	const char *bd = getenv("AGENTFS_TEST_BUILD_DELAY_MS");
	const char *ed = getenv("AGENTFS_TEST_ENTRY_DELAY_MS");
	long qms = q ? strtol(q, NULL, 10) : 0, dms = d ? strtol(d, NULL, 10) : 0;
	long bms = bd ? strtol(bd, NULL, 10) : 0, ems = ed ? strtol(ed, NULL, 10) : 0;
	if (qms > 0 && qms <= 600000)
		gitpriv_set_pending_quiet(*out, qms);
	if (dms > 0 && dms <= 600000)
		gitpriv_set_flush_delay(*out, dms);
	if (bms > 0 && bms <= 600000)
		gitpriv_set_build_delay(*out, bms);
	if (ems > 0 && ems <= 600000)
		gitpriv_set_entry_delay(*out, ems);
	/* <root>/workspaces/<name>: the state root is two levels up. */
	char *root = strdup(ws->dir);
	char *slash = root ? strrchr(root, '/') : NULL;
	if (slash) {
		*slash = 0;
		slash = strrchr(root, '/');
	}
	if (slash && strcmp(slash, "/workspaces") == 0) {
		*slash = 0;
		gitpriv_set_state_root(*out, *root ? root : "/");
	}
	free(root);
	gitpriv_fs_config(*out, cfg);
	return 0;
}

int gitpriv_set_state_root(struct gitpriv *g, const char *root)
{
	char *r = strdup(root);
	if (!r)
		return -ENOMEM;
	free(g->state_root);
	g->state_root = r;
	return 0;
}

void gitpriv_fs_config(struct gitpriv *g, struct fs_config *cfg)
{
	cfg->git_dir = g->dir;
	cfg->git_prepare = gitpriv_prepare;
	cfg->git_prepare_arg = g;
	cfg->git_fault = gitpriv_fault;
	if (!g->readonly) { /* git-ro reads the repository's own objects */
		cfg->git_copied_up = gitpriv_copied_up;
		cfg->git_packs_removed = gitpriv_packs_removed;
		cfg->git_serving = gitpriv_serving;
	}
}

void gitpriv_serving(void *arg, struct agentfs *fs)
{
	struct gitpriv *g = arg;
	pthread_mutex_lock(&g->fslock);
	g->fs = fs;
	pthread_mutex_unlock(&g->fslock);
	if (fs)
		return;
	/* A stopped build is thrown away, and the next mount builds the base
	 * from the repository as it is then: the same as a new workspace, as
	 * long as the agent changed nothing.  Once the upper holds a change,
	 * promote and export need the base as of this mount (the person may
	 * commit before the next one, and a base built then would take their
	 * commit for the agent's starting point), so the build finishes. */
	if (workspace_upper_empty(g->ws_dir))
		__atomic_store_n(&g->bstop, true, __ATOMIC_RELAXED);
	else if (__atomic_load_n(&g->building, __ATOMIC_RELAXED))
		fprintf(stderr, "agentfs: private .git: the workspace holds changes: the build "
				"finishes before the daemon exits\n");
}

/* The mount is no longer served: nobody will look at the build's result. */
static bool build_stopped(struct gitpriv *g)
{
	return __atomic_load_n(&g->bstop, __ATOMIC_RELAXED);
}

/* The tests' pauses (gitpriv_set_build_delay, gitpriv_set_entry_delay):
 * @ms in slices of at most 10 ms, cut short when the mount stops serving. */
static void build_pause(struct gitpriv *g, long ms)
{
	while (ms > 0 && !build_stopped(g)) {
		long step = ms < 10 ? ms : 10;
		struct timespec d = {0, step * 1000000L};
		while (nanosleep(&d, &d) != 0 && errno == EINTR)
			;
		ms -= step;
	}
}

const char *gitpriv_dir(const struct gitpriv *g)
{
	return g->dir;
}

void gitpriv_free(struct gitpriv *g)
{
	if (!g)
		return;
	if (g->qstarted) {
		pthread_mutex_lock(&g->qlock);
		/* Atomic: a packing in progress polls it without the lock. */
		__atomic_store_n(&g->qstop, true, __ATOMIC_RELAXED);
		pthread_cond_signal(&g->qcond);
		pthread_mutex_unlock(&g->qlock);
		pthread_join(g->qthread, NULL);
	}
	for (size_t i = 0; i < g->qlen; i++)
		free(g->queue[(g->qhead + i) % GITPRIV_PREFETCH_QUEUE]);
	for (size_t i = 0; i < g->npend; i++)
		free(g->pend[i].buf);
	free(g->pend);
	gitpriv_oidset_clear(&g->pendset);
	free(g->fresh);
	if (g->loose)
		g->loose->free(g->loose);
	for (size_t i = 0; i < g->npacks; i++)
		free(g->packs[i].ids);
	pthread_cond_destroy(&g->qcond);
	pthread_cond_destroy(&g->fcond);
	pthread_mutex_destroy(&g->qlock);
	pthread_mutex_destroy(&g->fslock);
	git_odb_free(g->real_odb);
	git_odb_free(g->priv_odb);
	if (g->inited)
		git_libgit2_shutdown();
	free(g->allowed.slots);
	pthread_mutex_destroy(&g->lock);
	free(g->ws_dir);
	free(g->repo);
	free(g->mountpoint);
	free(g->dir);
	free(g->state_root);
	free(g);
}

static int git_fail(const char *what)
{
	const git_error *e = git_error_last();
	fprintf(stderr, "agentfs: private .git: %s: %s\n", what,
		e && e->message ? e->message : "libgit2 error");
	return -EIO;
}

/* ---- the lower, reached without following symlinks ---- */

/* Open directory @dir ("" for the top) below @lower_fd, refusing symlinks and
 * escapes: openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), else one O_NOFOLLOW
 * component at a time. */
static int lower_open_dir(int lower_fd, const char *dir)
{
	if (!*dir) {
		int fd = fcntl(lower_fd, F_DUPFD_CLOEXEC, 0);
		return fd < 0 ? -errno : fd;
	}
	struct open_how how = {
	    .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, lower_fd, dir, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	if (errno != ENOSYS && errno != EPERM)
		return -errno;
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	int cur = fcntl(lower_fd, F_DUPFD_CLOEXEC, 0);
	if (cur < 0)
		return -errno;
	char *save = NULL;
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, "..") == 0 || strcmp(c, ".") == 0) {
			close(cur);
			return -EINVAL;
		}
		int n = openat(cur, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(cur);
		if (n < 0)
			return -e;
		cur = n;
	}
	return cur;
}

/* The lower's parent directory of the paths being walked, kept open while
 * consecutive index entries share it. */
struct dircache {
	int lower_fd;
	char dir[PATH_MAX];
	int fd; /* -1, or a negative errno for a parent that cannot be opened */
	bool valid;
};

static int dircache_parent(struct dircache *dc, const char *path, const char **leaf)
{
	const char *slash = strrchr(path, '/');
	size_t dl = slash ? (size_t)(slash - path) : 0;
	*leaf = slash ? slash + 1 : path;
	if (dl >= sizeof(dc->dir))
		return -ENAMETOOLONG;
	if (dc->valid && strlen(dc->dir) == dl && memcmp(dc->dir, path, dl) == 0)
		return dc->fd;
	if (dc->valid && dc->fd >= 0)
		close(dc->fd);
	memcpy(dc->dir, path, dl);
	dc->dir[dl] = 0;
	dc->fd = lower_open_dir(dc->lower_fd, dc->dir);
	dc->valid = true;
	return dc->fd;
}

static void dircache_close(struct dircache *dc)
{
	if (dc->valid && dc->fd >= 0)
		close(dc->fd);
	dc->valid = false;
}

static int lower_lstat(int lower_fd, const char *path, struct stat *st)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	size_t dl = slash ? (size_t)(slash - path) : 0;
	if (dl >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, dl);
	dir[dl] = 0;
	int fd = lower_open_dir(lower_fd, dir);
	if (fd < 0)
		return fd;
	int r = fstatat(fd, slash ? slash + 1 : path, st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
	close(fd);
	return r;
}

/* Read a regular file or a symlink's target at @leaf of @dfd whose lstat is @st
 * into a malloc'd buffer. */
static int read_entry(int dfd, const char *leaf, const struct stat *st, char **buf, size_t *len)
{
	if (S_ISLNK(st->st_mode)) {
		char *b = malloc(PATH_MAX);
		if (!b)
			return -ENOMEM;
		ssize_t n = readlinkat(dfd, leaf, b, PATH_MAX);
		if (n < 0 || n >= PATH_MAX) {
			free(b);
			return n < 0 ? -errno : -ENAMETOOLONG;
		}
		*buf = b;
		*len = (size_t)n;
		return 0;
	}
	/* O_NONBLOCK: a FIFO put in the file's place since the lstat reads as
	 * empty instead of blocking the reader. */
	int fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = st->st_size > 0 ? (size_t)st->st_size + 1 : 4096, n = 0;
	char *b = malloc(cap);
	int r = b ? 0 : -ENOMEM;
	while (r == 0) {
		if (n == cap) {
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				r = -ENOMEM;
				break;
			}
			b = nb;
			cap *= 2;
		}
		ssize_t k = read(fd, b + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			r = -errno;
		else if (k == 0)
			break;
		else
			n += (size_t)k;
	}
	close(fd);
	if (r < 0) {
		free(b);
		return r;
	}
	*buf = b;
	*len = n;
	return 0;
}

/*
 * Would the view hide the symlink at @path whose target is @target?  The same
 * rule as fs/ (view.c): a target that is absolute, escapes the repository or
 * passes through a hidden path hides the link; lower symlinks met on the way
 * are followed (at most 40).  Unsure means yes.
 */
static bool symlink_hidden(const struct gitpriv *g, const char *path, const char *target)
{
	if (policy_symlinks_mode(g->policy) == POLICY_SYMLINKS_ALLOW)
		return false;
	char cur[PATH_MAX], pending[PATH_MAX * 2];
	const char *slash = strrchr(path, '/');
	size_t dl = slash ? (size_t)(slash - path) : 0;
	memcpy(cur, path, dl);
	cur[dl] = 0;
	if (target[0] == '/' ||
	    snprintf(pending, sizeof(pending), "%s", target) >= (int)sizeof(pending))
		return true;
	int hops = 0;
	char *p = pending;
	while (*p) {
		char *s = strchr(p, '/');
		if (s)
			*s = 0;
		char *comp = p;
		p = s ? s + 1 : p + strlen(p);
		if (!*comp || strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			if (!cur[0])
				return true;
			char *t = strrchr(cur, '/');
			if (t)
				*t = 0;
			else
				cur[0] = 0;
			continue;
		}
		char next[PATH_MAX];
		if (snprintf(next, sizeof(next), "%s%s%s", cur, cur[0] ? "/" : "", comp) >=
		    (int)sizeof(next))
			return true;
		struct stat st;
		bool exists = lower_lstat(g->lower_fd, next, &st) == 0;
		bool is_dir = exists ? S_ISDIR(st.st_mode) : *p != 0;
		if (policy_decide_path(g->policy, next, is_dir,
				       exists ? policy_size(st.st_mode, (uint64_t)st.st_size)
					      : 0) == POLICY_HIDDEN)
			return true;
		if (exists && S_ISLNK(st.st_mode)) {
			if (++hops > 40)
				return true;
			char t2[PATH_MAX];
			const char *leaf;
			struct dircache dc = {.lower_fd = g->lower_fd, .fd = -1};
			int d2 = dircache_parent(&dc, next, &leaf);
			ssize_t m = d2 >= 0 ? readlinkat(d2, leaf, t2, sizeof(t2) - 1) : -1;
			dircache_close(&dc);
			if (m <= 0)
				return true;
			t2[m] = 0;
			if (t2[0] == '/')
				return true;
			char rest[PATH_MAX * 2];
			if ((size_t)snprintf(rest, sizeof(rest), "%s/%s", t2, p) >= sizeof(rest))
				return true;
			memcpy(pending, rest, strlen(rest) + 1);
			p = pending;
			continue;
		}
		memcpy(cur, next, strlen(next) + 1);
	}
	return false;
}

/* ---- small files ---- */

/* Write @path whole through a temporary file and rename(2).  The temporary
 * name is new (mkostemp(3): O_CREAT | O_EXCL), never one the agent may have
 * made in the private .git: an agent's hard link at "config.tmp" would
 * otherwise be written and renamed into place as the read-only config, the
 * agent keeping a writable name for it; a FIFO there would block. */
static int write_file(const char *path, const char *text, size_t len, mode_t mode)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	size_t off = 0;
	while (off < len && r == 0) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0 && errno != EINTR)
			r = -errno;
		else if (w > 0)
			off += (size_t)w;
	}
	if (r == 0 && fchmod(fd, mode) != 0)
		r = -errno;
	if (r == 0 && fsync(fd) != 0)
		r = -errno;
	if (close(fd) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) != 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static int write_text(const char *dir, const char *leaf, const char *text, mode_t mode)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, leaf) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	return write_file(path, text, strlen(text), mode);
}

/* A config value in double quotes with '"' and '\' escaped (git-config(1)). */
static void config_quote(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

/*
 * The private config, rewritten at every mount (the mountpoint may move).
 * Nothing in it reaches outside the workspace or runs a program:
 *  - no remote, credential, url.*.insteadOf or include;
 *  - core.hooksPath names the private hooks/ through the mount, empty and
 *    read-only there, so no hook runs for the agent or for a person using git
 *    in the mount (whatever their global core.hooksPath);
 *  - core.fsmonitor = false: a person's global fsmonitor hook must not be
 *    pointed at the agent's tree, and nobody may plant one;
 *  - diff.ignoreSubmodules = all: a gitlink the agent adds could point git at a
 *    nested repository whose own config (core.fsmonitor, ...) the agent wrote;
 *  - gc.auto = 0, maintenance.auto = false: a background repack would read
 *    every base object and copy it into the workspace;
 *  - gc.writeCommitGraph = false, repack.updateServerInfo = false: info/ and
 *    objects/info/ are read-only (ignore rules, alternates), and a `git gc`
 *    or `git repack` the agent runs would fail writing the commit-graph,
 *    info/refs and objects/info/packs there after packing;
 *  - core.checkStat stays "default" and core.trustctime true: the view reports
 *    a lower file's own inode number, owner, size, mtime and ctime (st_dev
 *    differs, which git does not compare unless built with USE_STDEV), and the
 *    index holds exactly those, so the full check costs nothing and catches a
 *    same-size edit within one second that "minimal" would miss.
 */
static int write_config(const struct gitpriv *g)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "# Written by agentfs at every mount; read-only in the view.\n"
		   "[core]\n"
		   "\trepositoryformatversion = 0\n"
		   "\tfilemode = true\n"
		   "\tbare = false\n"
		   "\tlogallrefupdates = true\n"
		   "\tsymlinks = true\n"
		   "\tignorecase = false\n"
		   "\tfsmonitor = false\n"
		   "\tcheckStat = default\n"
		   "\ttrustctime = true\n"
		   "\thooksPath = ");
	char hooks[PATH_MAX];
	snprintf(hooks, sizeof(hooks), "%s/.git/hooks", g->mountpoint);
	config_quote(f, hooks);
	fprintf(f, "\n[diff]\n"
		   "\tignoreSubmodules = all\n"
		   "[gc]\n"
		   "\tauto = 0\n"
		   "\twriteCommitGraph = false\n"
		   "[repack]\n"
		   "\tupdateServerInfo = false\n"
		   "[maintenance]\n"
		   "\tauto = false\n"
		   "[user]\n"
		   "\tname = " GITPRIV_AGENT_NAME "\n"
		   "\temail = " GITPRIV_AGENT_EMAIL "\n");
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/config", g->dir);
	int r = write_file(path, buf, len, 0444);
	free(buf);
	return r;
}

/* Remove what is neither a directory nor a regular file from directory
 * @path, not recursively.  The daemon writes in the private .git by
 * path: a symlink or a FIFO of the agent's there (fs/ops_entry.c refuses to
 * make them since; a workspace may be older) would lead or block it. */
static int drop_odd(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return e == ENOENT ? 0 : -e;
	}
	int r = 0;
	for (struct dirent *de; (de = readdir(d));) {
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) &&
		    unlinkat(dirfd(d), de->d_name, 0) != 0)
			r = -errno;
	}
	closedir(d);
	return r;
}

static int make_dirs(const struct gitpriv *g)
{
	static const char *const dirs[] = {"objects",	 "objects/info", "objects/pack", "refs",
					   "refs/heads", "refs/tags",	 "info",	 "hooks"};
	char path[PATH_MAX];
	int r = drop_odd(g->dir);
	snprintf(path, sizeof(path), "%s/objects", g->dir);
	if (r == 0)
		r = drop_odd(path);
	snprintf(path, sizeof(path), "%s/objects/pack", g->dir);
	if (r == 0)
		r = drop_odd(path);
	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", g->dir, dirs[i]);
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			return -errno;
	}
	/* A resumed workspace's info/ is read-only already (below): without
	 * CAP_DAC_OVERRIDE the exclude file is written only once its owner may
	 * write there again. */
	snprintf(path, sizeof(path), "%s/info", g->dir);
	if (chmod(path, 0755) != 0)
		return -errno;
	r = write_text(g->dir, "info/exclude", "", 0444);
	if (chmod(path, 0555) != 0 && r == 0)
		r = -errno;
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/hooks", g->dir);
	if (chmod(path, 0555) != 0)
		return -errno;
	return 0;
}

/* Empty <ws>/git (a build that never finished) without following symlinks. */
static int clear_dir(int dfd)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			continue;
		if (errno != EISDIR && errno != EPERM) {
			r = -errno;
			continue;
		}
		fchmodat(dirfd(d), de->d_name, 0755, 0);
		int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
		if (sub < 0) {
			r = -errno;
			continue;
		}
		int e = clear_dir(sub);
		if (e < 0)
			r = e;
		else if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) != 0)
			r = -errno;
	}
	closedir(d);
	return r;
}

/* ---- the build ---- */

/* The in-memory backend's priority in the private odb: above libgit2's loose
 * (1) and packed (2) backends (odb.c), so that it takes every write. */
#define GITPRIV_MEMPACK_PRIORITY 999

struct build {
	struct gitpriv *g;
	git_repository *real;
	git_repository *priv;
	git_odb *odb; /* priv's, with the in-memory backend (pack_base) */
	git_index *real_index;
	git_index *base; /* the private index being written */
	struct dircache dc;
	struct timespec index_mtime; /* of the repository's index file: racy entries */
	FILE *dirty;		     /* <ws>/git-dirty.tmp */
	struct statcache *sc;	     /* the repository's stat cache, or NULL */
	struct nofilter *nf;	     /* where no filter can apply, or NULL */
	bool sc_void;		     /* an attribute file changed during the build: no stat cache */
	size_t entries, hashed, cached, changed;
	size_t pre_used;    /* ids hashed ahead (prehash.h), taken */
	size_t pre_changed; /* ids hashed ahead of a file changed since */
};

_Static_assert(sizeof(((git_oid *)0)->id) == STATCACHE_ID_LEN, "a blob id is a SHA-1");

static bool stat_matches(const git_index_entry *e, const struct stat *st)
{
	return (uint32_t)e->mtime.seconds == (uint32_t)st->st_mtim.tv_sec &&
	       e->mtime.nanoseconds == (uint32_t)st->st_mtim.tv_nsec &&
	       (uint32_t)e->ctime.seconds == (uint32_t)st->st_ctim.tv_sec &&
	       e->ctime.nanoseconds == (uint32_t)st->st_ctim.tv_nsec &&
	       e->ino == (uint32_t)st->st_ino && e->uid == st->st_uid && e->gid == st->st_gid &&
	       e->file_size == (uint32_t)st->st_size;
}

/* git's racy-git rule: an entry modified no earlier than the index was written
 * may have changed within the same timestamp; its content must be read. */
static bool racy(const struct build *b, const struct stat *st)
{
	if (st->st_mtim.tv_sec != b->index_mtime.tv_sec)
		return st->st_mtim.tv_sec > b->index_mtime.tv_sec;
	return st->st_mtim.tv_nsec >= b->index_mtime.tv_nsec;
}

static uint32_t git_mode_of(const struct stat *st)
{
	if (S_ISLNK(st->st_mode))
		return GIT_FILEMODE_LINK;
	return (st->st_mode & S_IXUSR) ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
}

static void fill_stat(git_index_entry *e, const struct stat *st)
{
	e->ctime.seconds = (int32_t)st->st_ctim.tv_sec;
	e->ctime.nanoseconds = (uint32_t)st->st_ctim.tv_nsec;
	e->mtime.seconds = (int32_t)st->st_mtim.tv_sec;
	e->mtime.nanoseconds = (uint32_t)st->st_mtim.tv_nsec;
	e->dev = (uint32_t)st->st_dev;
	e->ino = (uint32_t)st->st_ino;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->file_size = (uint32_t)st->st_size;
}

/* The clean filters of @path (gitpriv_clean_filter, in two steps): *fl NULL
 * when none applies.  0 or -EIO. */
static int load_clean_filters(git_repository *repo, const char *path, git_filter_list **fl);
/* Replace *@buf by its bytes through @fl.  0, -ENOMEM or -EIO. */
static int apply_clean_filters(git_filter_list *fl, const char *path, char **buf, size_t *len);

/*
 * Hash the regular file at @leaf of @dfd, which no filter applies to, a block
 * at a time (git_odb_hashfile, through the descriptor's /proc/thread-self/fd
 * link, so the path is not resolved again): 1 and *id then.  0 when the file
 * opened is not the one @st describes (replaced since the lstat: its stat data
 * must not be recorded with these bytes) or this way fails (no /proc, the file
 * shrank meanwhile): the caller's read decides then.  Else -errno.  A 24 MB
 * header of the kernel's tree read whole was 23 MiB of the daemon's peak.
 */
static int hash_streamed(int dfd, const char *leaf, const struct stat *st, git_oid *id)
{
	/* O_NONBLOCK, as read_entry: a FIFO put in the file's place. */
	int fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat fst;
	int r = 0;
	if (fstat(fd, &fst) == 0 && S_ISREG(fst.st_mode) && fst.st_ino == st->st_ino &&
	    fst.st_dev == st->st_dev && fst.st_size == st->st_size &&
	    fst.st_ctim.tv_sec == st->st_ctim.tv_sec &&
	    fst.st_ctim.tv_nsec == st->st_ctim.tv_nsec) {
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/thread-self/fd/%d", fd);
		r = git_odb_hashfile(id, proc, GIT_OBJECT_BLOB) == 0;
	}
	close(fd);
	return r;
}

/* A tracked file the daemon may not read (an unprivileged mount, a file of
 * mode 000 or another user's): git itself goes on past it, and so does the
 * build, with the index's id for it, named on stderr (the daemon's log),
 * rather than leave the workspace without a repository.  The agent cannot
 * read it through the view either.  True when @err is such a refusal and
 * @e took the index's id. */
static bool unreadable(const char *path, int err, const git_index_entry *re, git_index_entry *e)
{
	if (err != -EACCES && err != -EPERM)
		return false;
	fprintf(stderr, "agentfs: private .git: %s: %s: its base is the index's version\n", path,
		strerror(-err));
	e->id = re->id;
	return true;
}

/* One tracked path of the repository's index: decide, stat, maybe hash, add.
 * @pre: its hash made ahead, or NULL (prehash_get). */
static int add_tracked(struct build *b, const git_index_entry *re, bool conflicted,
		       const struct prehash_result *pre)
{
	struct gitpriv *g = b->g;
	const char *path = re->path;
	if (re->mode == GIT_FILEMODE_COMMIT) {
		/* A submodule: its commit id, no object of ours. */
		if (policy_decide_path(g->policy, path, true, 0) == POLICY_HIDDEN)
			return 0;
		/* Not the person's flags either: libgit2's diff passes over an
		 * entry marked assume-unchanged (record_dirty). */
		git_index_entry e = *re;
		e.flags &= ~(GIT_INDEX_ENTRY_STAGEMASK | GIT_INDEX_ENTRY_VALID);
		e.flags_extended = 0;
		return git_index_add(b->base, &e) < 0 ? git_fail(path) : 0;
	}
	const char *leaf;
	int dfd = dircache_parent(&b->dc, path, &leaf);
	if (dfd == -ENOENT || dfd == -ENOTDIR || dfd == -ELOOP)
		return 0; /* deleted in the working tree (or its directory replaced) */
	if (dfd < 0)
		return dfd;
	struct stat st;
	if (fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
		return 0; /* a directory now: its contents are untracked */
	if (policy_decide_path(g->policy, path, false,
			       policy_size(st.st_mode, (uint64_t)st.st_size)) == POLICY_HIDDEN)
		return 0;

	git_index_entry e;
	memset(&e, 0, sizeof(e));
	e.path = path;
	e.mode = git_mode_of(&st);
	fill_stat(&e, &st);
	bool unchanged =
	    !conflicted && e.mode == re->mode && stat_matches(re, &st) && !racy(b, &st);
	/* A regular file no filter applies to is hashed a block at a time.
	 * What an earlier build found equal to the index's id (other content
	 * must be read into our objects) is taken from the stat cache: under a
	 * filter only with the same digest of the config and .gitattributes
	 * that apply (nofilter_digest), which can change while the file's stat
	 * data do not; where a source cannot be read, not at all. */
	bool raw = false;
	git_filter_list *fl = NULL; /* what applies when not raw, loaded once */
	uint64_t filters = 0;	    /* the digest for the stat cache; 0 when raw */
	bool cacheable = false;
	if (!unchanged && S_ISREG(st.st_mode)) {
		int r = b->nf && nofilter_path(b->nf, path)
			    ? 0
			    : load_clean_filters(b->real, path, &fl);
		if (r < 0)
			return r;
		raw = fl == NULL;
		cacheable = raw || (b->nf && nofilter_digest(b->nf, path, &filters));
		if (!raw && filters == 0)
			filters = 1; /* 0 says "no filter" */
	}
	bool cache = b->sc && cacheable && !conflicted;
	bool record = false;
	if (cache && statcache_has(b->sc, path, &st, e.mode, re->id.id, filters)) {
		unchanged = record = true;
		b->cached++;
	}
	char *buf = NULL;
	size_t len = 0;
	int h = 0;
	if (!unchanged && raw && pre && pre->ok) {
		if (prehash_same(pre, &st)) {
			/* This version's bytes, hashed ahead. */
			memcpy(e.id.id, pre->id, sizeof(pre->id));
			h = 1;
			b->pre_used++;
		} else {
			b->pre_changed++; /* since: hashed again */
		}
	}
	if (unchanged && !S_ISLNK(st.st_mode)) {
		e.id = re->id;
		git_filter_list_free(fl);
	} else if (raw && h == 0 && (h = hash_streamed(dfd, leaf, &st, &e.id)) < 0 &&
		   !unreadable(path, h, re, &e)) {
		git_filter_list_free(fl);
		return h == -ENOENT ? 0 : h;
	} else if (h < 0) {
		git_filter_list_free(fl); /* unreadable: the index's id */
	} else if (h == 1 && git_oid_equal(&e.id, &re->id)) {
		b->hashed++; /* the index's content: nothing to write */
		record = cache;
	} else {
		int r = read_entry(dfd, leaf, &st, &buf, &len);
		bool denied = r < 0 && unreadable(path, r, re, &e);
		if (r == 0 && fl)
			r = apply_clean_filters(fl, path, &buf, &len); /* eol=crlf */
		git_filter_list_free(fl);
		if (r == -ENOENT)
			return 0;
		if (denied) {
			free(buf);
			if (git_index_add(b->base, &e) < 0)
				return git_fail(path);
			b->entries++;
			return 0;
		}
		if (r < 0) {
			free(buf);
			return r;
		}
		b->hashed++;
		if (git_odb_hash(&e.id, buf, len, GIT_OBJECT_BLOB) < 0) {
			free(buf);
			return git_fail(path);
		}
		record = cache && !raw && git_oid_equal(&e.id, &re->id); /* filtered */
		if (S_ISLNK(st.st_mode)) {
			char *t = strndup(buf, len);
			bool hide = !t || memchr(buf, 0, len) || symlink_hidden(g, path, t);
			free(t);
			if (hide) {
				free(buf);
				return 0;
			}
		}
		if (!git_oid_equal(&e.id, &re->id)) {
			/* The person's uncommitted content: into the private objects
			 * now, the repository may never hold it. */
			git_odb *odb = NULL;
			int w = git_repository_odb(&odb, b->priv) < 0
				    ? -1
				    : git_odb_write(&e.id, odb, buf, len, GIT_OBJECT_BLOB);
			git_odb_free(odb);
			if (w < 0) {
				free(buf);
				return git_fail(path);
			}
		}
		free(buf);
	}
	if (record)
		statcache_add(b->sc, path, &st, e.mode, e.id.id, filters);
	if (git_index_add(b->base, &e) < 0)
		return git_fail(path);
	b->entries++;
	return 0;
}

/* The hashing ahead of a build (prehash.h), on two threads: the build's
 * (PREHASH_MAIN, when it hashes a chunk ahead rather than wait) and the
 * module's (PREHASH_THREAD).  Each has its own directory cache and reader of
 * the old stat cache (those stream in index order); the thread has its own
 * filter decisions (not thread-safe) and repository too (libgit2's are not to
 * be shared between threads, threading.md), where the build's thread uses the
 * build's.  Both read the repository's index, which nothing changes during
 * the loop. */
struct prehasher {
	const struct build *b;
	git_repository *repo; /* the thread's, or NULL */
	struct dircache dc[2];
	struct statcache *sc[2]; /* NULL: no cache */
	struct nofilter *nf[2];	 /* NULL: every path may have a filter */
};

/* False when the thread's own repository, filter decisions or stat cache
 * reader cannot be had: it would hash nothing, or what the cache holds. */
static bool prehasher_init(struct prehasher *ph, const struct build *b)
{
	memset(ph, 0, sizeof(*ph));
	ph->b = b;
	bool ok = true;
	for (int w = 0; w < 2; w++) {
		ph->dc[w] = (struct dircache){.lower_fd = b->g->lower_fd, .fd = -1};
		if (b->sc && statcache_reader(b->sc, &ph->sc[w]) < 0) {
			ph->sc[w] = NULL;
			ok = false; /* it would hash what the cache holds */
		}
	}
	ph->nf[PREHASH_MAIN] = b->nf; /* the build's own, in its thread */
	if (git_repository_open_ext(&ph->repo, b->g->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) <
		0 ||
	    nofilter_new(ph->repo, b->real_index, b->g->lower_fd, &ph->nf[PREHASH_THREAD]) < 0)
		ph->nf[PREHASH_THREAD] = NULL;
	return ok && ph->nf[PREHASH_THREAD] != NULL;
}

static void prehasher_free(struct prehasher *ph)
{
	for (int w = 0; w < 2; w++) {
		dircache_close(&ph->dc[w]);
		statcache_free(ph->sc[w]);
	}
	nofilter_free(ph->nf[PREHASH_THREAD]); /* PREHASH_MAIN's is the build's */
	git_repository_free(ph->repo);
}

/* Of entry @re: the stat data of its regular file when the build may read and
 * hash it: its stat data differ from the index's (or are racy), the stat
 * cache has no id for it, and it is not hidden.  *maybe_filtered: a filter
 * may apply (nofilter.h); the build then asks libgit2, and takes an id hashed
 * ahead only where none does.  0, or -1 (the build does it, as any other). */
static int prehash_candidate(struct prehasher *ph, int worker, const git_index_entry *re, int *dfd,
			     const char **leaf, struct stat *st, bool *maybe_filtered)
{
	const struct build *b = ph->b;
	if (!re || GIT_INDEX_ENTRY_STAGE(re) != 0 ||
	    (re->flags_extended & GIT_INDEX_ENTRY_INTENT_TO_ADD) ||
	    (re->mode != GIT_FILEMODE_BLOB && re->mode != GIT_FILEMODE_BLOB_EXECUTABLE))
		return -1;
	*dfd = dircache_parent(&ph->dc[worker], re->path, leaf);
	if (*dfd < 0 || fstatat(*dfd, *leaf, st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st->st_mode))
		return -1;
	if (git_mode_of(st) == re->mode && stat_matches(re, st) && !racy(b, st))
		return -1; /* the index's id */
	/* The cache's id: recorded raw (0), or under the filters that apply
	 * now (add_tracked's digest), which only the build knows for sure. */
	struct nofilter *nf = ph->nf[worker];
	*maybe_filtered = !nf || !nofilter_path(nf, re->path);
	uint64_t digest = 0;
	if (*maybe_filtered && nf && nofilter_digest(nf, re->path, &digest) && digest == 0)
		digest = 1;
	if (ph->sc[worker] && statcache_has_either(ph->sc[worker], re->path, st, git_mode_of(st),
						   re->id.id, 0, digest))
		return -1;
	if (policy_decide_path(b->g->policy, re->path, false,
			       policy_size(st->st_mode, (uint64_t)st->st_size)) == POLICY_HIDDEN)
		return -1;
	return 0;
}

static void prehash_entry(void *arg, int worker, size_t i, struct prehash_result *out)
{
	struct prehasher *ph = arg;
	if (build_stopped(ph->b->g))
		return;
	/* git_index_get_byindex sorts the entries first, a no-op on the
	 * repository's index once read (sorted then): a read here. */
	const git_index_entry *re = git_index_get_byindex(ph->b->real_index, i);
	int dfd;
	const char *leaf;
	struct stat st;
	bool maybe_filtered;
	git_oid id;
	if (prehash_candidate(ph, worker, re, &dfd, &leaf, &st, &maybe_filtered) < 0 ||
	    hash_streamed(dfd, leaf, &st, &id) != 1)
		return;
	out->dev = st.st_dev;
	out->ino = st.st_ino;
	out->size = st.st_size;
	out->mtime = st.st_mtim;
	out->ctime = st.st_ctim;
	memcpy(out->id, id.id, sizeof(out->id));
	out->ok = true;
}

/* Whether hashing ahead would pay: of PREHASH_SAMPLE entries spread evenly
 * over the index, a quarter or more of the regular files are ones the build
 * would read and hash raw (prehash_candidate, and no filter applies), and
 * these are at least half of those it would read at all.  Else a fresh
 * index, or a stale one whose ids the stat cache holds, would cost each
 * thread an lstat(2) of half the files again (~7% of a build of the
 * kernel's 78k files with a fresh index here, 0.8 s), and where most files
 * to read are under a filter (`* text=auto`) the raw ids hashed ahead would
 * be of no use. */
#define PREHASH_SAMPLE 64
static bool worth_hashing_ahead(const struct build *b, size_t n)
{
	struct prehasher ph;
	memset(&ph, 0, sizeof(ph));
	ph.b = b;
	ph.dc[0] = (struct dircache){.lower_fd = b->g->lower_fd, .fd = -1};
	ph.nf[0] = b->nf; /* the build's, in its own thread */
	if (b->sc && statcache_reader(b->sc, &ph.sc[0]) < 0)
		return false;
	size_t files = 0, to_read = 0, raw = 0;
	for (size_t k = 0; k < PREHASH_SAMPLE; k++) {
		const git_index_entry *re =
		    git_index_get_byindex(b->real_index, k * n / PREHASH_SAMPLE);
		int dfd;
		const char *leaf;
		struct stat st;
		bool maybe;
		if (re &&
		    (re->mode == GIT_FILEMODE_BLOB || re->mode == GIT_FILEMODE_BLOB_EXECUTABLE))
			files++;
		if (prehash_candidate(&ph, 0, re, &dfd, &leaf, &st, &maybe) < 0)
			continue;
		to_read++;
		git_filter_list *fl = NULL;
		if (!maybe || (load_clean_filters(b->real, re->path, &fl) == 0 && !fl))
			raw++;
		git_filter_list_free(fl);
	}
	dircache_close(&ph.dc[0]);
	statcache_free(ph.sc[0]);
	return files > 0 && raw * 4 >= files && raw * 2 >= to_read;
}

/* Paths where the base differs from HEAD (@head_tree, NULL on an unborn
 * branch), among those the agent may see, in git's order: libgit2's diff of the
 * tree against the base index, which reads the tree a directory at a time, not
 * flattened into a second index (~20 MB for the kernel's 78k paths). */
static int record_dirty(struct build *b, git_tree *head_tree)
{
	git_diff_options o;
	git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
	o.flags = GIT_DIFF_INCLUDE_TYPECHANGE; /* a file become a symlink: one path */
	git_diff *d = NULL;
	if (git_diff_tree_to_index(&d, b->real, head_tree, b->base, &o) < 0)
		return git_fail("comparing the base with HEAD");
	int r = 0;
	const char *last = NULL; /* a tree out of git's order gives a path twice */
	size_t n = git_diff_num_deltas(d);
	for (size_t i = 0; i < n && r == 0; i++) {
		const git_diff_delta *dd = git_diff_get_delta(d, i);
		const char *path = dd->new_file.path; /* added (staged), changed */
		if (dd->status == GIT_DELTA_DELETED) {
			/* In HEAD, not in the base: deleted by the person, or hidden. */
			const git_diff_file *of = &dd->old_file;
			path = of->mode != GIT_FILEMODE_LINK &&
				       policy_decide_path(b->g->policy, of->path,
							  of->mode == GIT_FILEMODE_COMMIT,
							  0) != POLICY_HIDDEN
				   ? of->path
				   : NULL;
		}
		if (path && !(last && strcmp(last, path) == 0)) {
			b->changed++;
			if (fwrite(path, 1, strlen(path) + 1, b->dirty) != strlen(path) + 1)
				r = -EIO;
			last = path;
		}
	}
	git_diff_free(d);
	return r;
}

/* Add every object reachable from @tree_id to @set (and mark its fan-out
 * directory in @fanout when not NULL).  Trees are read from the private odb,
 * else from the repository's: an id names one content, so the walk from the
 * recorded base tree sees the same trees either way. */
static int walk_tree(git_repository *priv, git_repository *real, const git_oid *tree_id,
		     struct oidset *set, bool *fanout)
{
	if (oidset_has(set, tree_id))
		return 0;
	int r = oidset_add(set, tree_id);
	if (r < 0)
		return r;
	if (fanout)
		fanout[tree_id->id[0]] = true;
	git_tree *t = NULL;
	if (git_tree_lookup(&t, priv, tree_id) < 0 &&
	    (!real || git_tree_lookup(&t, real, tree_id) < 0))
		return git_fail("reading a base tree");
	size_t n = git_tree_entrycount(t);
	for (size_t i = 0; i < n && r == 0; i++) {
		const git_tree_entry *te = git_tree_entry_byindex(t, i);
		git_object_t type = git_tree_entry_type(te);
		const git_oid *id = git_tree_entry_id(te);
		if (type == GIT_OBJECT_TREE) {
			r = walk_tree(priv, real, id, set, fanout);
		} else if (type == GIT_OBJECT_BLOB) {
			r = oidset_add(set, id);
			if (fanout)
				fanout[id->id[0]] = true;
		}
	}
	git_tree_free(t);
	return r;
}

int gitpriv_base_objects(git_repository *priv, git_repository *real, const git_oid *tree,
			 struct gitpriv_oidset *set)
{
	return walk_tree(priv, real, tree, set, NULL);
}

static int allow_tree(struct gitpriv *g, git_repository *priv, git_repository *real,
		      const git_oid *tree_id)
{
	return walk_tree(priv, real, tree_id, &g->allowed, g->fanout);
}

static int write_base_record(const struct gitpriv *g, const git_oid *commit, const git_oid *tree,
			     const char *head, const char *branch)
{
	char c[GIT_OID_HEXSZ + 1], t[GIT_OID_HEXSZ + 1], text[PATH_MAX];
	git_oid_tostr(c, sizeof(c), commit);
	git_oid_tostr(t, sizeof(t), tree);
	snprintf(text, sizeof(text), "commit %s\ntree %s\nhead %s\nbranch %s\n", c, t, head,
		 branch);
	return write_text(g->ws_dir, "git-base", text, 0644);
}

static int pack_objects(struct gitpriv *g, git_odb *odb, const git_oid *ids, size_t n,
			char name[2 * GIT_OID_HEXSZ + 1]);
static int pack_sync(struct gitpriv *g, const char *name);

/* The ids of a build's own objects: its trees and its commit. */
struct idlist {
	git_oid *ids;
	size_t n, cap;
	int err; /* -ENOMEM once an add failed */
};

static int idlist_add(struct idlist *l, const git_oid *id)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		git_oid *ids = realloc(l->ids, cap * sizeof(*ids));
		if (!ids)
			return l->err = -ENOMEM;
		l->ids = ids;
		l->cap = cap;
	}
	l->ids[l->n++] = *id;
	return 0;
}

/* git_tree_walk's callback: every subtree (the blobs are the real
 * repository's, copied in when git asks). */
static int list_subtree(const char *root, const git_tree_entry *e, void *payload)
{
	(void)root;
	if (git_tree_entry_type(e) != GIT_OBJECT_TREE)
		return 0;
	return idlist_add(payload, git_tree_entry_id(e)) < 0 ? -1 : 0;
}

/* The content of the base pack's .keep (git-repack(1) shows it). */
static const char base_keep_text[] = "agentfs: the base trees and commit\n";

/* Write the trees of @tree and commit @commit, which @odb holds in its
 * in-memory backend, as one durable pack.  A pack, not loose objects: a
 * 78k-file tree has ~5,000 trees, which loose cost as many files in the
 * workspace and a file create each in the build. */
static int pack_base(struct gitpriv *g, git_odb *odb, const git_tree *tree, const git_oid *commit)
{
	struct idlist l = {0};
	char name[2 * GIT_OID_HEXSZ + 1];
	int r = idlist_add(&l, git_tree_id(tree));
	if (r == 0)
		r = idlist_add(&l, commit);
	if (r == 0 && git_tree_walk(tree, GIT_TREEWALK_PRE, list_subtree, &l) < 0)
		r = l.err ? l.err : git_fail("listing the base trees");
	if (r == 0 && (r = pack_objects(g, odb, l.ids, l.n, name)) < 0) {
		const git_error *e = git_error_last();
		fprintf(stderr, "agentfs: private .git: packing the base trees: %s\n",
			r != -EIO || !e || !e->message ? strerror(-r) : e->message);
	}
	/* Kept: `git repack -ad` and `git gc` in the mount leave a pack with
	 * a .keep alone (git-repack(1), git-gc(1)), and these trees, filtered
	 * by the policy, cannot come again from the repository. */
	if (r == 0) {
		char keep[PATH_MAX];
		snprintf(keep, sizeof(keep), "%s/objects/pack/pack-%s.keep", g->dir, name);
		r = write_file(keep, base_keep_text, sizeof(base_keep_text) - 1, 0444);
	}
	if (r == 0)
		r = pack_sync(g, name);
	free(l.ids);
	return r;
}

/* fsync(2) @path: a directory with @flags O_DIRECTORY (the entries made in
 * it last), else a regular file (-EINVAL for anything else; O_NONBLOCK: a
 * FIFO in its place must not block). */
static int sync_path(const char *path, int flags)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | flags);
	int r = fd < 0 || fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
		r = -EINVAL;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	return r;
}

static int sync_dir(const char *path)
{
	return sync_path(path, O_DIRECTORY);
}

static __thread int sync_err; /* sync_one's first failure, for sync_git_dirs */

/* nftw(3)'s callback: fsync each directory but objects/XX, whose loose
 * objects libgit2 synced with it. */
static int sync_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	if (type != FTW_D)
		return 0;
	size_t len = strlen(path);
	if (ftw->level == 2 && len - (size_t)ftw->base == 2 && len >= 11 &&
	    memcmp(path + len - 11, "/objects/", 9) == 0)
		return 0;
	int r = sync_dir(path);
	if (r < 0 && !sync_err)
		sync_err = r;
	return 0;
}

/* fsync every directory of the private git directory @dir (refs/heads/...,
 * logs/..., info/, objects/, objects/pack, @dir itself). */
static int sync_git_dirs(const char *dir)
{
	sync_err = 0;
	if (nftw(dir, sync_one, 16, FTW_PHYS) != 0 && !sync_err)
		sync_err = -errno;
	return sync_err;
}

static int build_steps(struct gitpriv *g);

/* Build the private repository, every file of it durable before the record
 * that says it is built (write_base_record): libgit2 fsyncs what it writes,
 * and the directories it writes in, while the option is on (a global of the
 * library: nothing else of this daemon uses libgit2 meanwhile, the faults
 * and base blobs waiting for the build).  Its object cache is off meanwhile:
 * the build reads each tree once, and the cache would keep every tree of
 * HEAD it compared (6.6 MB for the kernel's) for as long as the build runs. */
static int build(struct gitpriv *g)
{
	git_libgit2_opts(GIT_OPT_ENABLE_FSYNC_GITDIR, 1);
	git_libgit2_opts(GIT_OPT_ENABLE_CACHING, 0);
	int r = build_steps(g);
	git_libgit2_opts(GIT_OPT_ENABLE_CACHING, 1);
	git_libgit2_opts(GIT_OPT_ENABLE_FSYNC_GITDIR, 0);
	return r;
}

/* Put the build's stat cache in place; a failure costs the next build its
 * hashing, so it is said and the build goes on. */
static void commit_cache(struct statcache *sc)
{
	int e = statcache_commit(sc);
	if (e < 0)
		fprintf(stderr, "agentfs: private .git: cannot write the stat cache: %s\n",
			strerror(-e));
}

static int build_steps(struct gitpriv *g)
{
	struct build b = {.g = g, .dc = {.lower_fd = g->lower_fd, .fd = -1}};
	git_commit *head = NULL;
	git_tree *head_tree = NULL, *base_tree = NULL;
	git_reference *href = NULL;
	git_signature *sig = NULL;
	git_oid tree_id, commit_id;
	char head_hex[GIT_OID_HEXSZ + 1] = "", branch[256] = "main";
	char dirty_tmp[PATH_MAX], dirty_path[PATH_MAX], index_path[PATH_MAX];
	int r = make_dirs(g);
	if (r == 0)
		r = write_config(g);
	if (r < 0)
		return r;
	r = -EIO;
	if (git_repository_open_ext(&b.real, g->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0) {
		r = git_fail(g->repo);
		goto out;
	}
	/* A HEAD first: without one libgit2 sees no repository. */
	if ((r = write_text(g->dir, "HEAD", "ref: refs/heads/main\n", 0644)) < 0)
		goto out;
	r = -EIO;
	if (git_repository_open_bare(&b.priv, g->dir) < 0) {
		r = git_fail(g->dir);
		goto out;
	}
	/* The branch the person is on names ours, so the agent's git reads alike. */
	if (git_repository_head(&href, b.real) == 0) {
		if (git_reference_is_branch(href))
			snprintf(branch, sizeof(branch), "%s", git_reference_shorthand(href));
		if (git_reference_peel((git_object **)&head, href, GIT_OBJECT_COMMIT) == 0)
			git_oid_tostr(head_hex, sizeof(head_hex), git_commit_id(head));
	} else if (git_reference_lookup(&href, b.real, "HEAD") == 0 &&
		   git_reference_type(href) == GIT_REFERENCE_SYMBOLIC &&
		   strncmp(git_reference_symbolic_target(href), "refs/heads/", 11) == 0) {
		snprintf(branch, sizeof(branch), "%s", git_reference_symbolic_target(href) + 11);
	}
	if (git_repository_index(&b.real_index, b.real) < 0) {
		r = git_fail("reading the repository's index");
		goto out;
	}
	{
		char ipath[PATH_MAX];
		struct stat ist;
		snprintf(ipath, sizeof(ipath), "%s/index", git_repository_path(b.real));
		if (stat(ipath, &ist) == 0)
			b.index_mtime = ist.st_mtim;
	}
	if (nofilter_new(b.real, b.real_index, g->lower_fd, &b.nf) < 0)
		b.nf = NULL; /* libgit2 decides for each file */
	if (g->state_root) {
		char *scp = NULL;
		int e = statcache_path(g->state_root, git_repository_path(b.real), &scp);
		if (e == 0)
			e = statcache_begin(
			    scp, git_index_caps(b.real_index) & GIT_INDEX_CAPABILITY_IGNORE_CASE,
			    &b.sc);
		if (e < 0) /* a cache: the build goes on without */
			fprintf(stderr, "agentfs: private .git: %s: no stat cache: %s\n",
				scp ? scp : g->state_root, strerror(-e));
		free(scp);
	}
	snprintf(index_path, sizeof(index_path), "%s/index", g->dir);
	unlink(index_path);
	if (git_index_open(&b.base, index_path) < 0) {
		r = git_fail(index_path);
		goto out;
	}
	snprintf(dirty_path, sizeof(dirty_path), "%s/git-dirty", g->ws_dir);
	snprintf(dirty_tmp, sizeof(dirty_tmp), "%s/git-dirty.tmp", g->ws_dir);
	b.dirty = fopen(dirty_tmp, "we");
	if (!b.dirty) {
		r = -errno;
		goto out;
	}

	r = 0;
	size_t n = git_index_entrycount(b.real_index), i;
	/* A stale index whose ids the stat cache does not hold (the first
	 * build of this repository here, or files touched since) has its files
	 * hashed by two threads (prehash.h). */
	struct prehasher phr = {0};
	struct prehash *pre = NULL;
	bool hash_ahead = n >= 2 * PREHASH_CHUNK && worth_hashing_ahead(&b, n);
	if (hash_ahead &&
	    (!prehasher_init(&phr, &b) || prehash_start(n, prehash_entry, &phr, &pre) < 0))
		pre = NULL;
	for (i = 0; i < n && r == 0; i++) {
		if (g->entry_delay_ms > 0)
			build_pause(g, g->entry_delay_ms);
		/* The mount went away: what a stale index costs is mostly here
		 * (every file read and hashed, 7 s for the kernel's 78k), and the
		 * unmount waits for this thread (fs_serve).  What was hashed so
		 * far is kept for the next build (statcache_keep_rest). */
		if (build_stopped(g)) {
			r = -ECANCELED;
			break;
		}
		const struct prehash_result *ph = prehash_get(pre, i);
		const git_index_entry *re = git_index_get_byindex(b.real_index, i);
		bool conflicted = GIT_INDEX_ENTRY_STAGE(re) != 0;
		if (conflicted && i > 0 &&
		    strcmp(git_index_get_byindex(b.real_index, i - 1)->path, re->path) == 0)
			continue; /* one entry per conflicted path */
		/* An entry git add -N made: nothing staged, the person's own. */
		if (re->flags_extended & GIT_INDEX_ENTRY_INTENT_TO_ADD)
			continue;
		r = add_tracked(&b, re, conflicted, ph);
	}
	prehash_stop(pre);
	if (hash_ahead)
		prehasher_free(&phr);
	if (r == 0 && build_stopped(g))
		r = -ECANCELED; /* after the last entry: the rest is short */
	dircache_close(&b.dc);
	/* The filters' last reads are behind (add_tracked): had an attribute
	 * file changed since its digest was taken, this build's records of
	 * filtered files could be named by the wrong digest.  The old cache
	 * stays then. */
	if (b.sc && b.nf && !nofilter_unchanged(b.nf)) {
		b.sc_void = true;
		fprintf(stderr, "agentfs: private .git: attribute files changed during the "
				"build: the stat cache is left as it was\n");
	}
	nofilter_free(b.nf); /* it borrows the index */
	b.nf = NULL;
	/* One flattened tree in memory at a time (~10-20 MB each for the 78k
	 * paths of the kernel's tree): the repository's index goes once read,
	 * and the repository's own reference to it too (sys/repository.h). */
	git_repository_set_index(b.real, NULL);
	git_index_free(b.real_index);
	b.real_index = NULL;
	if (r == -ECANCELED) {
		fprintf(stderr,
			"agentfs: private .git: the build stopped at the unmount, after %zu of %zu "
			"index entries (%zu read and hashed, %zu from the stat cache); the next "
			"mount of this workspace builds it again\n",
			i, n, b.hashed, b.cached);
		if (b.sc && !b.sc_void) {
			statcache_keep_rest(b.sc);
			commit_cache(b.sc);
		}
	}
	if (r < 0)
		goto out;
	/* The trees and the commit go to memory, then into one pack
	 * (pack_base); the blobs hashed above are loose already.  The odb
	 * owns the backend once added (git2/sys/mempack.h). */
	git_odb_backend *mem = NULL;
	if (git_repository_odb(&b.odb, b.priv) < 0 || git_mempack_new(&mem) < 0 ||
	    git_odb_add_backend(b.odb, mem, GITPRIV_MEMPACK_PRIORITY) < 0) {
		if (mem)
			mem->free(mem);
		r = git_fail("an in-memory object store");
		goto out;
	}
	if (git_index_write_tree_to(&tree_id, b.base, b.priv) < 0) {
		r = git_fail("writing the base trees");
		goto out;
	}
	if (git_index_write(b.base) < 0) {
		r = git_fail("writing the index");
		goto out;
	}
	if (head && git_commit_tree(&head_tree, head) < 0) {
		r = git_fail("reading HEAD's tree");
		goto out;
	}
	r = record_dirty(&b, head_tree);
	git_index_free(b.base); /* written: the rest works on trees */
	b.base = NULL;
	if (r == 0 && (fflush(b.dirty) != 0 || fsync(fileno(b.dirty)) != 0))
		r = -errno;
	if (r < 0)
		goto out;

	if (git_tree_lookup(&base_tree, b.priv, &tree_id) < 0 ||
	    git_signature_now(&sig, GITPRIV_BASE_NAME, GITPRIV_BASE_EMAIL) < 0 ||
	    git_commit_create(&commit_id, b.priv, NULL, sig, sig, NULL,
			      "base\n\nThe repository as the agent first saw it: its HEAD and the "
			      "uncommitted\nchanges to tracked files at mount, filtered by the "
			      "workspace's policy.\n",
			      base_tree, 0, NULL) < 0) {
		r = git_fail("writing the base commit");
		goto out;
	}
	if ((r = pack_base(g, b.odb, base_tree, &commit_id)) < 0)
		goto out;
	{
		char refname[300];
		git_reference *ref = NULL;
		snprintf(refname, sizeof(refname), "refs/heads/%s", branch);
		if (git_reference_create(&ref, b.priv, refname, &commit_id, 1, "agentfs: base") <
		    0) {
			r = git_fail(refname);
			goto out;
		}
		git_reference_free(ref);
		if (git_reference_create(&ref, b.priv, "refs/tags/base", &commit_id, 1, NULL) < 0) {
			r = git_fail("refs/tags/base");
			goto out;
		}
		git_reference_free(ref);
		char headtext[320];
		snprintf(headtext, sizeof(headtext), "ref: %s\n", refname);
		r = write_text(g->dir, "HEAD", headtext, 0644);
		if (r < 0)
			goto out;
	}
	r = allow_tree(g, b.priv, b.real, &tree_id);
	if (r < 0)
		goto out;
	if (fclose(b.dirty) != 0) {
		b.dirty = NULL;
		r = -errno;
		goto out;
	}
	b.dirty = NULL;
	if (rename(dirty_tmp, dirty_path) != 0) {
		r = -errno;
		goto out;
	}
	/* Everything before it durable first: libgit2 synced its loose
	 * objects, refs and packs and the directories they are in (build(),
	 * GIT_OPT_ENABLE_FSYNC_GITDIR), but not the index (its writer takes
	 * no part in that option in libgit2 1.5); HEAD, the config and
	 * git-dirty were synced; every directory is synced for the entries
	 * made in it. */
	if ((r = sync_path(index_path, 0)) < 0 || (r = sync_git_dirs(g->dir)) < 0 ||
	    (r = sync_dir(g->ws_dir)) < 0)
		goto out;
	/* Last: its presence says the build finished, and its own entry is
	 * synced too: without it the next mount builds again, over whatever
	 * the agent committed meanwhile. */
	r = write_base_record(g, &commit_id, &tree_id, head_hex, branch);
	if (r == 0)
		r = sync_dir(g->ws_dir);
	char ahead[128] = "";
	if (b.pre_used > 0 || b.pre_changed > 0)
		snprintf(ahead, sizeof(ahead),
			 "; %zu hashed ahead on two threads (%zu changed since)", b.pre_used,
			 b.pre_changed);
	if (r == 0)
		fprintf(
		    stderr,
		    "agentfs: private .git: %zu entries (%zu read and hashed, %zu from the stat "
		    "cache, %zu differ from HEAD), %zu base objects%s\n",
		    b.entries, b.hashed, b.cached, b.changed, g->allowed.count, ahead);
	if (r == 0 && b.sc && !b.sc_void)
		commit_cache(b.sc);
out:
	nofilter_free(b.nf);
	statcache_free(b.sc);
	if (b.dirty) {
		fclose(b.dirty);
		unlink(dirty_tmp);
	}
	git_signature_free(sig);
	git_tree_free(base_tree);
	git_tree_free(head_tree);
	git_commit_free(head);
	git_reference_free(href);
	git_index_free(b.base);
	git_index_free(b.real_index);
	git_odb_free(b.odb);
	git_repository_free(b.priv);
	git_repository_free(b.real);
	return r;
}

/* The pack that holds base tree @tree gets its .keep back, if the agent
 * took it away or the workspace was built before there was one (pack_base):
 * from this mount on, git's repack and gc leave it alone again.  Best
 * effort: loose base trees (older builds) have no pack to keep. */
static void keep_base_pack(struct gitpriv *g, const git_oid *tree)
{
	char dir[PATH_MAX], path[PATH_MAX * 2];
	snprintf(dir, sizeof(dir), "%s/objects/pack", g->dir);
	DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len < 4 || strcmp(de->d_name + len - 4, ".idx") != 0)
			continue;
		git_odb_backend *be = NULL;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		bool has = git_odb_backend_one_pack(&be, path) == 0 && be->exists(be, tree);
		if (be)
			be->free(be);
		if (!has)
			continue;
		snprintf(path, sizeof(path), "%s/%.*s.keep", dir, (int)(len - 4), de->d_name);
		if (access(path, F_OK) == 0)
			break;
		int r = write_file(path, base_keep_text, sizeof(base_keep_text) - 1, 0444);
		if (r == 0)
			r = sync_dir(dir);
		if (r == 0)
			fprintf(stderr, "agentfs: private .git: the base pack is kept again (%s)\n",
				de->d_name);
		else
			fprintf(stderr,
				"agentfs: private .git: %s: cannot keep the base pack (%s); git "
				"repack -ad in the mount may delete its trees\n",
				path, strerror(-r));
		break;
	}
	if (d)
		closedir(d);
}

/* A resumed workspace: its private repository stays; the allowed set comes
 * back from the recorded base tree. */
static int resume(struct gitpriv *g, const struct gitpriv_base *base)
{
	int r = make_dirs(g);
	if (r == 0)
		r = write_config(g);
	if (r < 0)
		return r;
	git_repository *priv = NULL, *real = NULL;
	git_oid tree;
	if (git_oid_fromstr(&tree, base->tree) < 0)
		return -EINVAL;
	keep_base_pack(g, &tree);
	if (git_repository_open_bare(&priv, g->dir) < 0) {
		git_repository_free(priv);
		return git_fail(g->dir);
	}
	/* The repository serves trees the agent's git removed (gc, prune). */
	if (git_repository_open_ext(&real, g->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0)
		real = NULL;
	r = allow_tree(g, priv, real, &tree);
	git_repository_free(priv);
	git_repository_free(real);
	if (r == 0)
		fprintf(stderr, "agentfs: private .git: resumed, %zu base objects\n",
			g->allowed.count);
	return r;
}

/* packed-refs lines "OID REFNAME", ordered by name. */
static int cmp_line(const void *a, const void *b)
{
	const char *x = strchr(*(char *const *)a, ' '), *y = strchr(*(char *const *)b, ' ');
	return strcmp(x ? x : "", y ? y : "");
}

/* One packed-refs line per reference of the repository. */
static int pack_ref(git_reference *ref, void *payload)
{
	FILE *f = payload;
	git_reference *res = NULL;
	if (git_reference_resolve(&res, ref) == 0) {
		char hex[GIT_OID_HEXSZ + 1];
		git_oid_tostr(hex, sizeof(hex), git_reference_target(res));
		fprintf(f, "%s %s\n", hex, git_reference_name(ref));
	}
	git_reference_free(res);
	git_reference_free(ref);
	return 0;
}

/*
 * `git: readonly`: the repository's history, its refs and its index, served
 * from <ws>/git-ro with the same sanitised config as `git: private`.  The
 * objects are the repository's, reached through objects/info/alternates
 * (read-only in the view; git never writes through an alternate), so whatever
 * the agent's git writes lands in git-ro/ and the repository is never
 * written.  Refs are copied once, as packed-refs; the index is the person's,
 * so tracked files the policy hides show as deleted.  Every secret in the
 * history is readable: only for repositories whose history is known clean.
 */
static int prepare_readonly(struct gitpriv *g)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/HEAD", g->dir);
	bool fresh = access(path, F_OK) != 0;
	int r = make_dirs(g);
	if (r == 0)
		r = write_config(g);
	if (r < 0)
		return r;
	git_repository *real = NULL;
	git_reference *head = NULL;
	if (git_repository_open_ext(&real, g->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0)
		return git_fail(g->repo);
	/* At every mount: the repository may have moved (cmd_mount.c), and
	 * then its refs are taken again, as the objects they name are the new
	 * place's (a clone of the moved one may lack the old one's). */
	char text[PATH_MAX + 64], was[PATH_MAX + 64] = "";
	snprintf(text, sizeof(text), "%sobjects\n", git_repository_commondir(real));
	snprintf(path, sizeof(path), "%s/objects/info/alternates", g->dir);
	int afd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t wl = afd >= 0 ? pread(afd, was, sizeof(was) - 1, 0) : -1;
	if (afd >= 0)
		close(afd);
	bool moved = !fresh && (wl < 0 || strcmp(was, text) != 0);
	r = write_text(g->dir, "objects/info/alternates", text, 0444);
	if (r < 0 || (!fresh && !moved)) {
		git_repository_free(real);
		return r;
	}
	char *buf = NULL;
	size_t len = 0;
	FILE *f = r == 0 ? open_memstream(&buf, &len) : NULL;
	if (r == 0 && !f)
		r = -ENOMEM;
	if (r == 0) {
		git_reference_foreach(real, pack_ref, f);
		fclose(f);
		/* git wants packed-refs sorted: sort its lines */
		size_t n = 0;
		for (size_t i = 0; i < len; i++)
			n += buf[i] == '\n';
		char **lines = calloc(n ? n : 1, sizeof(*lines)), *save = NULL;
		size_t k = 0;
		for (char *l = lines ? strtok_r(buf, "\n", &save) : NULL; l && k < n;
		     l = strtok_r(NULL, "\n", &save))
			lines[k++] = l;
		if (k > 1)
			qsort(lines, k, sizeof(*lines), cmp_line); /* lines may be NULL */
		char *out = NULL;
		size_t olen = 0;
		FILE *o = open_memstream(&out, &olen);
		if (o) {
			fputs("# pack-refs with: peeled fully-peeled sorted \n", o);
			for (size_t i = 0; i < k; i++)
				fprintf(o, "%s\n", lines[i]);
			fclose(o);
			snprintf(path, sizeof(path), "%s/packed-refs", g->dir);
			r = write_file(path, out, olen, 0644);
		} else {
			r = -ENOMEM;
		}
		free(out);
		free(lines);
		free(buf);
	}
	if (r == 0 && fresh && git_reference_lookup(&head, real, "HEAD") == 0) {
		if (git_reference_type(head) == GIT_REFERENCE_SYMBOLIC)
			snprintf(text, sizeof(text), "ref: %s\n",
				 git_reference_symbolic_target(head));
		else
			snprintf(text, sizeof(text), "%s\n",
				 git_oid_tostr_s(git_reference_target(head)));
		r = write_text(g->dir, "HEAD", text, 0644);
	}
	if (r == 0 && fresh) {
		/* The person's index: its stat data match the view's. */
		char src[PATH_MAX + 16], *ibuf = NULL;
		snprintf(src, sizeof(src), "%sindex", git_repository_path(real));
		int fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    (ibuf = malloc((size_t)st.st_size + 1)) != NULL) {
			ssize_t got = pread(fd, ibuf, (size_t)st.st_size, 0);
			if (got == (ssize_t)st.st_size) {
				snprintf(path, sizeof(path), "%s/index", g->dir);
				r = write_file(path, ibuf, (size_t)got, 0644);
			}
		}
		if (fd >= 0)
			close(fd);
		free(ibuf);
	}
	git_reference_free(head);
	git_repository_free(real);
	return r;
}

int gitpriv_prepare(void *arg)
{
	struct gitpriv *g = arg;
	struct timespec t0, t1;
	if (g->build_delay_ms > 0) /* the tests' (gitpriv_set_build_delay) */
		build_pause(g, g->build_delay_ms);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_mutex_lock(&g->lock);
	int r = 0;
	if (git_libgit2_init() < 0) {
		r = -EIO;
		goto out;
	}
	g->inited = true;
	/* Base trees name blobs copied on demand, not present yet. */
	git_libgit2_opts(GIT_OPT_ENABLE_STRICT_OBJECT_CREATION, 0);

	struct gitpriv_base base;
	if (g->readonly) {
		r = prepare_readonly(g);
		goto out;
	}
	r = gitpriv_read_base(g->ws_dir, &base);
	if (r == 0) {
		r = resume(g, &base);
	} else if (r == -ENOENT) {
		int dfd = open(g->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = dfd < 0 ? -errno : clear_dir(dfd);
		__atomic_store_n(&g->building, true, __ATOMIC_RELAXED);
		if (r == 0 && build_stopped(g)) {
			fprintf(stderr, "agentfs: private .git: the mount ended before the build "
					"started; the next mount of this workspace builds it\n");
			r = -ECANCELED;
		} else if (r == 0) {
			r = build(g);
		}
		__atomic_store_n(&g->building, false, __ATOMIC_RELAXED);
		if (r < 0) {
			/* Nothing half-built is served: git says "not a repository". */
			dfd = open(g->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (dfd >= 0)
				clear_dir(dfd);
			free(g->allowed.slots);
			memset(&g->allowed, 0, sizeof(g->allowed));
			memset(g->fanout, 0, sizeof(g->fanout));
		}
	}
	if (r < 0)
		goto out;
	git_repository *real = NULL, *priv = NULL;
	if (git_repository_open_ext(&real, g->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0 ||
	    git_repository_odb(&g->real_odb, real) < 0 ||
	    git_repository_open_bare(&priv, g->dir) < 0 ||
	    git_repository_odb(&g->priv_odb, priv) < 0)
		r = git_fail("opening the object databases");
	git_repository_free(real);
	git_repository_free(priv);
	/* The build's index and tree copies are freed by now, but malloc keeps
	 * their pages (~50 MiB on a 78k-file tree): hand them back, or the
	 * daemon carries them for the whole session (malloc_trim(3)). */
	malloc_trim(0);
out:
	pthread_mutex_unlock(&g->lock);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r == 0)
		fprintf(stderr, "agentfs: private .git: ready in %.1f ms\n",
			(double)(t1.tv_sec - t0.tv_sec) * 1e3 +
			    (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
	fflush(stderr);
	return r;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The private objects as they are on disk now (free with git_odb_free), or
 * NULL when they cannot be opened.  libgit2 keeps every pack it ever saw in
 * priv_odb, those the agent's git has removed since (`git gc`) among them. */
static git_odb *odb_now(struct gitpriv *g)
{
	char dir[PATH_MAX];
	git_odb *now = NULL;
	snprintf(dir, sizeof(dir), "%s/objects", g->dir);
	return git_odb_open(&now, dir) == 0 ? now : NULL;
}

/* Copy allowed object @id from the real repository into the private one,
 * unless the private objects hold it now (in a pack: 0 and no loose copy),
 * as @now says (odb_now), or when NULL, priv_odb and, if it says so, a
 * fresh odb_now.  Caller holds g->lock. */
static int copy_object(struct gitpriv *g, git_odb *now, const git_oid *id, const char *rel)
{
	git_odb *mine = NULL;
	if (!now && git_odb_exists(g->priv_odb, id) && !(now = mine = odb_now(g)))
		return 0; /* cannot tell: as libgit2 said */
	if (now && git_odb_exists(now, id)) {
		git_odb_free(mine);
		return 0;
	}
	git_odb_object *o = NULL;
	git_oid got;
	int r = -ENOENT; /* gone from the repository (gc'd) */
	if (git_odb_read(&o, g->real_odb, id) == 0)
		r = git_odb_write(&got, now ? now : g->priv_odb, git_odb_object_data(o),
				  git_odb_object_size(o), git_odb_object_type(o)) < 0
			? git_fail(rel)
			: 0;
	git_odb_object_free(o);
	git_odb_free(mine);
	return r;
}

static void pending_wait(struct gitpriv *g, const git_oid *id);

int gitpriv_fault(void *arg, const char *rel)
{
	struct gitpriv *g = arg;
	if (strncmp(rel, "objects/", 8) != 0)
		return -ENOENT;
	const char *p = rel + 8;
	if (p[0] == 0) {
		/* A listing of objects/ (cp -a, tar, `git clone` of the mount, which
		 * copies the directory): every fan-out that holds an object this
		 * function would make must show, as git's own store shows it. */
		pthread_mutex_lock(&g->lock);
		for (unsigned fan = 0; fan < 256; fan++) {
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%s/objects/%02x", g->dir, fan);
			if (g->fanout[fan])
				(void)mkdir(path, 0755); /* EEXIST; a failure shows as absent */
		}
		pthread_mutex_unlock(&g->lock);
		return 0;
	}
	int hi = hexval(p[0]), lo = hi >= 0 ? hexval(p[1]) : -1;
	if (hi < 0 || lo < 0)
		return -ENOENT;
	unsigned fan = (unsigned)(hi << 4 | lo);
	int r = -ENOENT;
	/* A loose object's name: 38 more lowercase hex digits, as git writes
	 * them (and as fs/loop.c hands such lookups off). */
	git_oid id;
	bool loose = p[2] == '/' && strlen(p + 3) == GIT_OID_HEXSZ - 2;
	for (int i = 3; loose && i < GIT_OID_HEXSZ + 1; i++)
		loose = hexval(p[i]) >= 0;
	if (loose) {
		char hex[GIT_OID_HEXSZ + 1];
		snprintf(hex, sizeof(hex), "%c%c%s", p[0], p[1], p + 3);
		loose = git_oid_fromstr(&id, hex) == 0;
	} else if (p[2] == '/' && p[3] != 0) {
		return -ENOENT;
	}
	/* A base blob the prefetch thread holds, about to be written (maybe
	 * in a pack, which git then finds when this lookup says the loose
	 * object is absent): waited for, not copied twice. */
	if (loose)
		pending_wait(g, &id);
	pthread_mutex_lock(&g->lock);
	if (p[2] == 0) {
		if (g->fanout[fan]) {
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%s/objects/%c%c", g->dir, p[0], p[1]);
			r = mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -errno;
		}
	} else if (loose && g->real_odb && g->priv_odb) {
		/* No copy when a pack holds it, such as the one just written
		 * for the wait. */
		if (oidset_has(&g->allowed, &id))
			r = copy_object(g, NULL, &id, rel);
	} else if (p[2] == '/' && p[3] == 0 && g->real_odb && g->priv_odb) {
		/* A listing of objects/XX/ (git fsck, abbreviated ids): every
		 * allowed object of that fan-out must show, so all are made. */
		r = 0;
		git_odb *now = odb_now(g);
		for (size_t i = 0; i < g->allowed.cap; i++) {
			const git_oid *id = &g->allowed.slots[i];
			if (!oid_zero(id) && id->id[0] == fan)
				copy_object(g, now, id, rel);
		}
		git_odb_free(now);
	}
	pthread_mutex_unlock(&g->lock);
	return r;
}

/* ---- base blobs ahead of git (gitpriv_copied_up) ---- */

/* Read lower file @lower whole into *buf (malloc'd), refusing symlinks,
 * escapes, non-regular files and files over GITPRIV_PREFETCH_MAX_BYTES. */
static int read_lower(const struct gitpriv *g, const char *lower, char **buf, size_t *len)
{
	struct dircache dc = {.lower_fd = g->lower_fd};
	const char *leaf;
	struct stat st;
	int dfd = dircache_parent(&dc, lower, &leaf), r = dfd < 0 ? dfd : 0;
	if (r == 0 && fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	else if (r == 0 &&
		 (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > GITPRIV_PREFETCH_MAX_BYTES))
		r = -EFBIG;
	else if (r == 0)
		r = read_entry(dfd, leaf, &st, buf, len);
	dircache_close(&dc);
	return r;
}

static void fresh_add(struct gitpriv *g, const git_oid *id);

/* The prefetch thread's loose store (g->loose), opened at its first use.
 * Returns 0 or -EIO. */
static int loose_store(struct gitpriv *g)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/objects", g->dir);
	/* libgit2's defaults: level 1 (Z_BEST_SPEED), no fsync, modes of git
	 * (odb_loose.c), as git_odb_write gave them. */
	if (!g->loose && git_odb_backend_loose(&g->loose, dir, -1, 0, 0, 0) < 0) {
		g->loose = NULL;
		return -EIO;
	}
	return 0;
}

/* Tell the daemon whether base blobs are pending now (fs_git_pending), as
 * pend_any says.  Caller holds no lock: qlock is taken under ns_lock (a
 * copy-up's gitpriv_copied_up) and ns_lock under fslock (packs_changed). */
static void pending_announce(struct gitpriv *g)
{
	pthread_mutex_lock(&g->fslock);
	fs_git_pending(g->fs, __atomic_load_n(&g->pend_any, __ATOMIC_ACQUIRE));
	pthread_mutex_unlock(&g->fslock);
}

/* Read the base blob of copied-up file @lower and keep it pending, when it is
 * one of the base's and the private objects lack it.  Returns true when the
 * pending blobs reached GITPRIV_PENDING_MAX or GITPRIV_PENDING_MAX_BYTES. */
static bool prefetch_one(struct gitpriv *g, const char *lower)
{
	char *buf;
	size_t len;
	git_oid id;
	pthread_mutex_lock(&g->lock);
	bool ready = g->priv_odb != NULL; /* built (gitpriv_prepare) */
	pthread_mutex_unlock(&g->lock);
	if (!ready || read_lower(g, lower, &buf, &len) < 0)
		return false;
	bool full = false;
	_Static_assert(sizeof(id.id) == PACKWRITE_ID_LEN, "git_oid is a SHA-1 (libgit2 1.5)");
	if (packwrite_blob_id(buf, len, id.id) == 0) {
		/* Only a blob of the base: exactly what gitpriv_fault would copy.
		 * Checked outside g->lock but for the set (libgit2's object
		 * databases are thread-safe; the odb lives until gitpriv_free
		 * joins this thread), so a fault never waits behind this
		 * low-priority thread for longer than that. */
		pthread_mutex_lock(&g->lock);
		bool want = oidset_has(&g->allowed, &id);
		pthread_mutex_unlock(&g->lock);
		/* Not in the packs libgit2 knows (a pack of this thread's too
		 * new for it gets a duplicate, which git never minds) nor
		 * loose. */
		if (want && git_odb_exists_ext(g->priv_odb, &id, GIT_ODB_LOOKUP_NO_REFRESH) == 0) {
			/* The daemon hears of it before a lookup can find it
			 * pending (pend_any is this thread's to change). */
			if (!__atomic_load_n(&g->pend_any, __ATOMIC_ACQUIRE)) {
				__atomic_store_n(&g->pend_any, true, __ATOMIC_RELEASE);
				pending_announce(g);
			}
			pthread_mutex_lock(&g->qlock);
			bool dup = oidset_has(&g->pendset, &id);
			if (!dup && g->npend == g->cappend) {
				size_t cap = g->cappend ? g->cappend * 2 : 64;
				struct pending *n = realloc(g->pend, cap * sizeof(*n));
				if (n) {
					g->pend = n;
					g->cappend = cap;
				}
			}
			if (!dup && g->npend < g->cappend && oidset_add(&g->pendset, &id) == 0) {
				g->pend[g->npend++] =
				    (struct pending){.id = id, .buf = buf, .len = len};
				g->pend_bytes += len;
				buf = NULL;
			}
			full = g->npend >= GITPRIV_PENDING_MAX ||
			       g->pend_bytes >= GITPRIV_PENDING_MAX_BYTES;
			bool none = !g->npend; /* not added (a duplicate, no memory) */
			pthread_mutex_unlock(&g->qlock);
			if (none) {
				__atomic_store_n(&g->pend_any, false, __ATOMIC_RELEASE);
				pending_announce(g);
			}
		}
	}
	free(buf);
	return full;
}

static bool stopping(struct gitpriv *g);
static int pack_stopping(void *arg);
static void packs_changed(struct gitpriv *g);

/* Write the pending base blobs (@n of them): as one stored pack when they
 * are at least GITPRIV_PACK_MIN (and a pack may be added), else, or when
 * that fails, loose.  Only the prefetch thread adds and writes them; they
 * stay pending (a fault waits for them) until the caller drops them. */
static void pending_write(struct gitpriv *g, size_t n)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (n >= GITPRIV_PACK_MIN && g->npacks < GITPRIV_PACKS_MAX) {
		struct packwrite_blob *b = malloc(n * sizeof(*b));
		struct basepack p = {.ids = malloc(n * sizeof(git_oid)), .n = n};
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s/objects/pack", g->dir);
		int r = b && p.ids ? 0 : -ENOMEM;
		for (size_t i = 0; r == 0 && i < n; i++) {
			b[i] = (struct packwrite_blob){
			    .data = g->pend[i].buf, .len = g->pend[i].len, .id = g->pend[i].id.id};
			p.ids[i] = g->pend[i].id;
		}
		if (r == 0)
			r = packwrite_blobs(dir, b, n, pack_stopping, g, p.name);
		free(b);
		if (r == 0) {
			g->packs[g->npacks++] = p;
			g->merge_wanted = true;
			packs_changed(g);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			fprintf(
			    stderr,
			    "agentfs: private .git: %zu base blobs written as a pack in %.1f ms "
			    "(%zu packs)\n",
			    n,
			    (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
				(double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
			    g->npacks);
			fflush(stderr);
			return;
		}
		free(p.ids);
		if (stopping(g))
			return;
		fprintf(stderr,
			"agentfs: private .git: %zu base blobs not written as a pack (%s): "
			"written loose\n",
			n, strerror(-r));
		fflush(stderr);
	}
	for (size_t i = 0; i < n && !stopping(g); i++)
		if (loose_store(g) == 0 && g->loose->write(g->loose, &g->pend[i].id, g->pend[i].buf,
							   g->pend[i].len, GIT_OBJECT_BLOB) == 0)
			fresh_add(g, &g->pend[i].id);
}

static void deadline_ms(struct timespec *t, long ms);

/* Write the pending base blobs (pending_write), drop them and wake the
 * faults waiting for them.  Caller holds qlock (released meanwhile). */
static void pending_flush(struct gitpriv *g)
{
	size_t n = g->npend;
	/* A lookup waits for this write: at the default priority, where the
	 * daemon may raise it again (CAP_SYS_NICE, or RLIMIT_NICE:
	 * setpriority(2)); else at nice 19 as the rest of this thread. */
	bool boost = g->flush_now;
	id_t tid = (id_t)syscall(SYS_gettid);
	if (boost)
		(void)setpriority(PRIO_PROCESS, tid, 0);
	if (g->flush_delay_ms > 0) {
		/* The tests' delay (gitpriv_set_flush_delay): not past the
		 * mount's end. */
		struct timespec until;
		deadline_ms(&until, g->flush_delay_ms);
		while (!g->qstop &&
		       pthread_cond_timedwait(&g->qcond, &g->qlock, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&g->qlock);
	pending_write(g, n);
	if (boost)
		(void)setpriority(PRIO_PROCESS, tid, 19);
	pthread_mutex_lock(&g->qlock);
	/* Every pending blob was in this write (only this thread adds), so
	 * a lookup that asked meanwhile has its blob written. */
	g->flush_now = false;
	for (size_t i = 0; i < n; i++)
		free(g->pend[i].buf);
	g->npend = g->pend_bytes = 0;
	gitpriv_oidset_clear(&g->pendset);
	pthread_cond_broadcast(&g->fcond);
	__atomic_store_n(&g->pend_any, false, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&g->qlock);
	pending_announce(g);
	pthread_mutex_lock(&g->qlock);
}

/* CLOCK_MONOTONIC's time now, in nanoseconds. */
static long long mono_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* CLOCK_MONOTONIC's time @ms milliseconds from now, in *@t. */
static void deadline_ms(struct timespec *t, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	t->tv_sec += t->tv_nsec / 1000000000L;
	t->tv_nsec %= 1000000000L;
}

/*
 * A fault's wait for @id while it is pending: ask the thread to write now
 * and wait, GITPRIV_PENDING_WAIT_MS at most, until it is written (or the
 * mount is going away).  Returns at once when @id is not pending.  Caller
 * holds no lock.
 */
static void pending_wait(struct gitpriv *g, const git_oid *id)
{
	pthread_mutex_lock(&g->qlock);
	if (oidset_has(&g->pendset, id)) {
		struct timespec until;
		deadline_ms(&until, GITPRIV_PENDING_WAIT_MS);
		while (!g->qstop && oidset_has(&g->pendset, id)) {
			g->flush_now = true;
			pthread_cond_signal(&g->qcond);
			if (pthread_cond_timedwait(&g->fcond, &g->qlock, &until) == ETIMEDOUT)
				break;
		}
	}
	pthread_mutex_unlock(&g->qlock);
}

/* ---- base blobs in packs (GITPRIV_PACK_MIN) ---- */

static void fresh_add(struct gitpriv *g, const git_oid *id)
{
	if (g->nfresh == g->capfresh) {
		size_t cap = g->capfresh ? g->capfresh * 2 : 64;
		git_oid *n = realloc(g->fresh, cap * sizeof(*n));
		if (!n)
			return; /* stays loose */
		g->fresh = n;
		g->capfresh = cap;
	}
	g->fresh[g->nfresh++] = *id;
}

/* The kernel's listing of .git/objects/pack is stale: drop it. */
static void packs_changed(struct gitpriv *g)
{
	pthread_mutex_lock(&g->fslock);
	if (g->fs)
		fs_git_changed(g->fs, "objects/pack");
	pthread_mutex_unlock(&g->fslock);
}

/* The kernel's listings of the fan-out directories that hold base objects
 * are stale (a pack of them was removed): drop them. */
static void fanouts_changed(struct gitpriv *g)
{
	char rel[16];
	bool fanout[256];
	pthread_mutex_lock(&g->lock);
	memcpy(fanout, g->fanout, sizeof(fanout));
	pthread_mutex_unlock(&g->lock);
	for (unsigned fan = 0; fan < 256; fan++) {
		if (!fanout[fan])
			continue;
		snprintf(rel, sizeof(rel), "objects/%02x", fan);
		pthread_mutex_lock(&g->fslock);
		if (g->fs)
			fs_git_changed(g->fs, rel);
		pthread_mutex_unlock(&g->fslock);
	}
}

/* The mount is going away (gitpriv_free): a packing stops where it is. */
static bool stopping(struct gitpriv *g)
{
	return __atomic_load_n(&g->qstop, __ATOMIC_RELAXED);
}

/* packwrite_blobs's cancel callback. */
static int pack_stopping(void *arg)
{
	return stopping(arg);
}

/* git_packbuilder's progress callback: non-zero cancels the write. */
static int pack_progress(int stage, uint32_t current, uint32_t total, void *payload)
{
	(void)stage;
	(void)current;
	(void)total;
	return stopping(payload) ? -1 : 0;
}

/* git_packbuilder_write's indexer callback: non-zero cancels the write. */
static int index_progress(const git_indexer_progress *stats, void *payload)
{
	(void)stats;
	return stopping(payload) ? -1 : 0;
}

/* Write objects @ids[0..n) as one pack in objects/pack, naming it in
 * @name (pack-NAME.pack, pack-NAME.idx).  The objects are read through
 * @odb, or through the private objects directory when it is NULL.  Returns
 * 0, -ENOSPC and its kind (write_errno) or -EIO. */
static int pack_objects(struct gitpriv *g, git_odb *odb, const git_oid *ids, size_t n,
			char name[2 * GIT_OID_HEXSZ + 1])
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/objects/pack", g->dir);
	/* No delta search: base blobs of different files rarely delta, and
	 * it made packing 100 of them take ~300 ms instead of ~100.  libgit2
	 * 1.5 takes the size above which an object gets no delta from
	 * pack.deltaCacheSize (packbuilder_config, pack-objects.c), git from
	 * pack.bigFileThreshold: both say 1 byte.  A file of the workspace's
	 * own, out of the agent's reach, never the private config. */
	char cpath[PATH_MAX];
	snprintf(cpath, sizeof(cpath), "%s/git-pack.config", g->ws_dir);
	static const char ctext[] = "# Written by agentfs: how it packs base blobs.\n"
				    "[pack]\n\tdeltaCacheSize = 1\n\tbigFileThreshold = 1\n";
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	git_packbuilder *pb = NULL;
	int r = access(cpath, F_OK) == 0 ? 0 : write_file(cpath, ctext, sizeof(ctext) - 1, 0644);
	if (r == 0 &&
	    ((odb ? git_repository_wrap_odb(&repo, odb) : git_repository_open_bare(&repo, g->dir)) <
		 0 ||
	     git_config_new(&cfg) < 0 ||
	     git_config_add_file_ondisk(cfg, cpath, GIT_CONFIG_LEVEL_LOCAL, repo, 1) < 0 ||
	     git_repository_set_config(repo, cfg) < 0 || git_packbuilder_new(&pb, repo) < 0))
		r = -EIO;
	if (r == 0) {
		git_packbuilder_set_threads(pb, 1);
		git_packbuilder_set_callbacks(pb, pack_progress, g);
	}
	for (size_t i = 0; r == 0 && i < n; i++)
		if (stopping(g) || git_packbuilder_insert(pb, &ids[i], NULL) < 0)
			r = -EIO;
	errno = 0;
	git_error_clear();
	if (r == 0 && git_packbuilder_write(pb, dir, 0, index_progress, g) < 0)
		r = packwrite_errno(errno);
	if (r == 0)
		snprintf(name, 2 * GIT_OID_HEXSZ + 1, "%s", git_packbuilder_name(pb));
	git_packbuilder_free(pb);
	git_config_free(cfg);
	git_repository_free(repo);
	return r;
}

/* Write @p's objects (all in the private objects) as one pack in
 * objects/pack; fills p->name.  Returns 0 or -EIO. */
static int pack_write(struct gitpriv *g, struct basepack *p)
{
	return pack_objects(g, NULL, p->ids, p->n, p->name);
}

/* Make pack @name's files and their names durable: the packs a merge replaces
 * go only after it (libgit2 writes without fsync unless told to for every
 * write, GIT_OPT_ENABLE_FSYNC_GITDIR). */
static int pack_sync(struct gitpriv *g, const char *name)
{
	static const char *const ext[] = {"pack", "idx"};
	char path[PATH_MAX];
	int r = 0;
	for (size_t i = 0; i < 2 && r == 0; i++) {
		snprintf(path, sizeof(path), "%s/objects/pack/pack-%s.%s", g->dir, name, ext[i]);
		r = sync_path(path, 0);
	}
	snprintf(path, sizeof(path), "%s/objects/pack", g->dir);
	return r < 0 ? r : sync_dir(path);
}

/* Take the files of pack @p away; the private object database forgets it. */
static void pack_remove(struct gitpriv *g, const struct basepack *p)
{
	char path[PATH_MAX];
	/* The index first: git lists packs by their .idx. */
	snprintf(path, sizeof(path), "%s/objects/pack/pack-%s.idx", g->dir, p->name);
	(void)unlink(path);
	snprintf(path, sizeof(path), "%s/objects/pack/pack-%s.pack", g->dir, p->name);
	(void)unlink(path);
}

/* Reopen the private object database: libgit2 keeps every pack it ever saw. */
static void priv_odb_reopen(struct gitpriv *g)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/objects", g->dir);
	git_odb *odb = NULL;
	if (git_odb_open(&odb, dir) < 0)
		return;
	pthread_mutex_lock(&g->lock);
	git_odb *old = g->priv_odb;
	g->priv_odb = odb;
	pthread_mutex_unlock(&g->lock);
	git_odb_free(old);
}

/* The newest pair of adjacent packs of this session to merge: the newer
 * holding at least half the objects of the older.  Returns the index of the
 * newer, or 0 for none. */
static size_t merge_pair(const struct gitpriv *g)
{
	for (size_t k = g->npacks; k-- > 1;)
		if (g->packs[k - 1].n <= 2 * g->packs[k].n)
			return k;
	return 0;
}

/* Is a merge to be tried: a pack was added since the last try, and a pair
 * qualifies (merge_pair)? */
static bool merge_due(const struct gitpriv *g)
{
	return g->merge_wanted && merge_pair(g) != 0;
}

/* Merge pairs of this session's packs while one qualifies (merge_pair), so
 * that each holds more than twice the objects of the next.  Returns how many
 * merges were made; stops at the first that fails. */
static size_t packs_merge(struct gitpriv *g)
{
	size_t merged = 0, k;
	while (!stopping(g) && (k = merge_pair(g)) != 0) {
		struct basepack *a = &g->packs[k - 1], *b = &g->packs[k];
		struct basepack m = {.n = a->n + b->n};
		if (!(m.ids = malloc(m.n * sizeof(*m.ids))))
			break;
		memcpy(m.ids, a->ids, a->n * sizeof(*m.ids));
		memcpy(m.ids + a->n, b->ids, b->n * sizeof(*m.ids));
		if (pack_write(g, &m) < 0 || pack_sync(g, m.name) < 0) {
			free(m.ids);
			break;
		}
		/* The merged pack is listed before the two go. */
		packs_changed(g);
		pack_remove(g, a);
		pack_remove(g, b);
		free(a->ids);
		free(b->ids);
		*a = m;
		memmove(b, b + 1, (g->npacks - k - 1) * sizeof(*b));
		g->npacks--;
		priv_odb_reopen(g);
		packs_changed(g);
		merged++;
	}
	return merged;
}

/* Pack the fresh loose base blobs (when at least GITPRIV_PACK_MIN), then merge
 * this session's packs (packs_merge; first too, when they are
 * GITPRIV_PACKS_MAX).  Loose blobs that find no room, or whose pack fails,
 * stay loose for good. */
static void pack_fresh(struct gitpriv *g)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	size_t merged = g->npacks == GITPRIV_PACKS_MAX ? packs_merge(g) : 0;
	struct basepack p = {.ids = g->fresh, .n = g->nfresh};
	if (p.n >= GITPRIV_PACK_MIN) {
		g->fresh = NULL;
		g->nfresh = g->capfresh = 0;
		if (g->npacks == GITPRIV_PACKS_MAX || pack_write(g, &p) < 0) {
			free(p.ids);
			p.n = 0;
		} else {
			/* No refresh of priv_odb: libgit2 looks for new packs
			 * itself when an object is missing, and a refresh here
			 * would hold g->lock (which a lookup's fault waits for)
			 * on this low-priority thread. */
			g->packs[g->npacks++] = p;
			g->merge_wanted = true;
			packs_changed(g);
		}
	} else {
		p.n = 0;
	}
	if (g->merge_wanted)
		merged += packs_merge(g);
	g->merge_wanted = false;
	if (!p.n && !merged)
		return;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	fprintf(stderr,
		"agentfs: private .git: %zu loose base blobs packed, %zu merges, in %.1f ms (%zu "
		"packs)\n",
		p.n, merged,
		(double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
		g->npacks);
	fflush(stderr);
}

/* The prefetch thread's wait on qcond until CLOCK_MONOTONIC's @due
 * nanoseconds (LLONG_MAX: until woken), with g->qwake_ns telling
 * gitpriv_copied_up.  Returns whether it ended by the time.  Caller holds
 * qlock. */
static bool qwait_until(struct gitpriv *g, long long due)
{
	int r;
	g->qwake_ns = due;
	if (due == LLONG_MAX) {
		r = pthread_cond_wait(&g->qcond, &g->qlock);
	} else {
		struct timespec until = {.tv_sec = (time_t)(due / 1000000000LL),
					 .tv_nsec = (long)(due % 1000000000LL)};
		r = pthread_cond_timedwait(&g->qcond, &g->qlock, &until);
	}
	g->qwake_ns = 0;
	return r == ETIMEDOUT;
}

static void *prefetch_thread(void *arg)
{
	struct gitpriv *g = arg;
	/* Ahead-of-time work: it yields to the agent's own processes and to
	 * the request threads (nice 19; setpriority(2) on a thread id is
	 * per-thread on Linux). */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	pthread_setname_np(pthread_self(), "agentfs-git");
	pthread_mutex_lock(&g->qlock);
	while (!g->qstop) {
		if (g->flush_now && g->npend) {
			pending_flush(g);
			continue;
		}
		if (g->packs_gone) {
			g->packs_gone = false;
			pthread_mutex_unlock(&g->qlock);
			fanouts_changed(g);
			pthread_mutex_lock(&g->qlock);
			continue;
		}
		if (g->qlen) {
			/* Paths still coming (a bulk edit, a build): read
			 * them once they pause, not beside the copy-ups. */
			long long due = g->qlast_ns + GITPRIV_PREFETCH_QUIET_MS * 1000000LL;
			if (g->qlen < GITPRIV_PREFETCH_QUEUE / 2 && mono_now_ns() < due) {
				qwait_until(g, due);
				continue;
			}
			char *lower = g->queue[g->qhead];
			g->qhead = (g->qhead + 1) % GITPRIV_PREFETCH_QUEUE;
			g->qlen--;
			pthread_mutex_unlock(&g->qlock);
			bool full = prefetch_one(g, lower);
			free(lower);
			pthread_mutex_lock(&g->qlock);
			if (full)
				pending_flush(g);
			continue;
		}
		/* Nothing queued: write the pending blobs once the copy-ups
		 * have paused for GITPRIV_PENDING_QUIET_MS since the last path
		 * (a bulk edit makes one pack; after the queue's own pause and
		 * reading, that is mostly at once), then pack the loose ones
		 * and merge packs once they pause for GITPRIV_PACK_QUIET_MS. */
		long long now = mono_now_ns(), due;
		if (g->npend)
			due = g->qlast_ns + g->pending_quiet_ms * 1000000LL;
		else if (g->nfresh >= GITPRIV_PACK_MIN || merge_due(g))
			due = now + GITPRIV_PACK_QUIET_MS * 1000000LL;
		else
			due = LLONG_MAX;
		if (now < due && (!qwait_until(g, due) || g->qlen || g->qstop))
			continue;
		if (g->npend) {
			pending_flush(g);
		} else {
			pthread_mutex_unlock(&g->qlock);
			pack_fresh(g);
			pthread_mutex_lock(&g->qlock);
		}
	}
	/* Faults waiting for pending blobs copy them themselves. */
	pthread_cond_broadcast(&g->fcond);
	pthread_mutex_unlock(&g->qlock);
	return NULL;
}

size_t gitpriv_pending(struct gitpriv *g)
{
	pthread_mutex_lock(&g->qlock);
	size_t n = g->npend;
	pthread_mutex_unlock(&g->qlock);
	return n;
}

void gitpriv_set_pending_quiet(struct gitpriv *g, long ms)
{
	pthread_mutex_lock(&g->qlock);
	g->pending_quiet_ms = ms;
	pthread_mutex_unlock(&g->qlock);
}

void gitpriv_set_flush_delay(struct gitpriv *g, long ms)
{
	pthread_mutex_lock(&g->qlock);
	g->flush_delay_ms = ms;
	pthread_mutex_unlock(&g->qlock);
}

void gitpriv_set_build_delay(struct gitpriv *g, long ms)
{
	g->build_delay_ms = ms; /* before the daemon serves: no lock */
}

void gitpriv_set_entry_delay(struct gitpriv *g, long ms)
{
	g->entry_delay_ms = ms; /* before the daemon serves: no lock */
}

void gitpriv_packs_removed(void *arg)
{
	struct gitpriv *g = arg;
	pthread_mutex_lock(&g->qlock);
	if (!g->qstarted && !g->qstop)
		g->qstarted = pthread_create(&g->qthread, NULL, prefetch_thread, g) == 0;
	g->packs_gone = true;
	pthread_cond_signal(&g->qcond);
	pthread_mutex_unlock(&g->qlock);
}

void gitpriv_copied_up(void *arg, const char *lower)
{
	struct gitpriv *g = arg;
	pthread_mutex_lock(&g->qlock);
	if (!g->qstarted && !g->qstop)
		g->qstarted = pthread_create(&g->qthread, NULL, prefetch_thread, g) == 0;
	char *copy;
	if (g->qstarted && g->qlen < GITPRIV_PREFETCH_QUEUE && (copy = strdup(lower))) {
		g->queue[(g->qhead + g->qlen) % GITPRIV_PREFETCH_QUEUE] = copy;
		g->qlen++;
		g->qlast_ns = mono_now_ns();
		/* A wake-up per path would cost each copy-up more than the
		 * thread's reading it: only when the thread would not look
		 * at the queue by itself once the paths pause, or when the
		 * queue fills. */
		if (g->qwake_ns > g->qlast_ns + GITPRIV_PREFETCH_QUIET_MS * 1000000LL ||
		    g->qlen >= GITPRIV_PREFETCH_QUEUE / 2)
			pthread_cond_signal(&g->qcond);
	}
	pthread_mutex_unlock(&g->qlock);
}

/* ---- reading the records ---- */

static int read_small(const char *path, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	char *b = malloc((size_t)st.st_size + 1);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	size_t n = 0;
	while (n < (size_t)st.st_size) {
		ssize_t k = read(fd, b + n, (size_t)st.st_size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	b[n] = 0;
	*out = b;
	*len = n;
	return 0;
}

int gitpriv_read_base(const char *ws_dir, struct gitpriv_base *out)
{
	char path[PATH_MAX], *text = NULL;
	size_t len;
	snprintf(path, sizeof(path), "%s/git-base", ws_dir);
	int r = read_small(path, &text, &len);
	if (r < 0)
		return r;
	memset(out, 0, sizeof(*out));
	int got = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');
		if (!sp)
			continue;
		*sp = 0;
		const char *v = sp + 1;
		if (strcmp(line, "commit") == 0 && strlen(v) == GIT_OID_HEXSZ)
			got |= 1, snprintf(out->commit, sizeof(out->commit), "%s", v);
		else if (strcmp(line, "tree") == 0 && strlen(v) == GIT_OID_HEXSZ)
			got |= 2, snprintf(out->tree, sizeof(out->tree), "%s", v);
		else if (strcmp(line, "head") == 0 && (strlen(v) == GIT_OID_HEXSZ || !*v))
			got |= 4, snprintf(out->head, sizeof(out->head), "%s", v);
		else if (strcmp(line, "branch") == 0)
			got |= 8, snprintf(out->branch, sizeof(out->branch), "%s", v);
	}
	free(text);
	return got == 15 ? 0 : -EINVAL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int gitpriv_read_dirty(const char *ws_dir, char ***paths, size_t *count)
{
	char path[PATH_MAX], *text = NULL;
	size_t len;
	*paths = NULL;
	*count = 0;
	snprintf(path, sizeof(path), "%s/git-dirty", ws_dir);
	int r = read_small(path, &text, &len);
	if (r < 0)
		return r;
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += text[i] == 0;
	char **v = n ? calloc(n, sizeof(*v)) : NULL;
	if (n && !v) {
		free(text);
		return -ENOMEM;
	}
	size_t k = 0;
	for (size_t i = 0; i < len && k < n;) {
		v[k] = strdup(text + i);
		if (!v[k]) {
			gitpriv_paths_free(v, k);
			free(text);
			return -ENOMEM;
		}
		i += strlen(text + i) + 1;
		k++;
	}
	free(text);
	if (k > 1)
		qsort(v, k, sizeof(*v), cmp_str); /* v is NULL when there are none */
	*paths = v;
	*count = k;
	return 0;
}

void gitpriv_paths_free(char **paths, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(paths[i]);
	free(paths);
}

static int path_cmp(const void *key, const void *item)
{
	return strcmp(key, *(char *const *)item);
}

int gitpriv_clean_filter(git_repository *repo, const char *path, char **buf, size_t *len)
{
	git_filter_list *fl = NULL;
	int r = load_clean_filters(repo, path, &fl);
	if (r == 0 && fl)
		r = apply_clean_filters(fl, path, buf, len);
	git_filter_list_free(fl);
	return r;
}

static int load_clean_filters(git_repository *repo, const char *path, git_filter_list **fl)
{
	*fl = NULL;
	/* GIT_FILTER_ALLOW_UNSAFE: an irreversible conversion (mixed line
	 * ends) converts, as git add does unless core.safecrlf is true, and as
	 * libgit2's own status and diff hash. */
	if (git_filter_list_load(fl, repo, NULL, path, GIT_FILTER_TO_ODB, GIT_FILTER_ALLOW_UNSAFE) <
	    0)
		return git_fail(path);
	return 0;
}

static int apply_clean_filters(git_filter_list *fl, const char *path, char **buf, size_t *len)
{
	git_buf out = GIT_BUF_INIT;
	int r = git_filter_list_apply_to_buffer(&out, fl, *buf ? *buf : "", *len);
	if (r < 0) {
		git_buf_dispose(&out);
		return git_fail(path);
	}
	char *nb = malloc(out.size ? out.size : 1);
	if (!nb) {
		git_buf_dispose(&out);
		return -ENOMEM;
	}
	memcpy(nb, out.ptr, out.size);
	free(*buf);
	*buf = nb;
	*len = out.size;
	git_buf_dispose(&out);
	return 0;
}

int gitpriv_read_file(const char *path, char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	struct stat st;
	if (lstat(path, &st) != 0)
		return -errno;
	if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
		return -EINVAL;
	return read_entry(AT_FDCWD, path, &st, buf, len);
}

bool gitpriv_index_stat_matches(const git_index_entry *e, const struct stat *st)
{
	return stat_matches(e, st);
}

bool gitpriv_path_in(char *const *paths, size_t count, const char *path)
{
	return count && bsearch(path, paths, count, sizeof(*paths), path_cmp) != NULL;
}
