/*
 * dircache.c - descriptors of the layers' directories, kept open between
 * requests.
 *
 * A namespace request reached its directories from the layer roots each time
 * (openat2 with RESOLVE_BENEATH, resolve.c), often more than once: a create
 * opened its upper directory twice and its lower directory once, the rename
 * of an editor's save its upper directory five times.  On a machine where a
 * system call costs a microsecond before it does anything, those openat2 and
 * close pairs were a quarter of the daemon's system calls per save.
 *
 * A descriptor names a directory, not a path: it stays the directory at its
 * path only while no directory on that path is removed or moved.
 *
 * The upper's directories (fs->dirs) change only by the daemon while it
 * serves (DESIGN.md: the upper is the daemon's), under ns_lock exclusive,
 * and then it forgets every descriptor (dircache_forget: upper_rmdir,
 * op_rename of a directory).  The exception is agentfs discard, which
 * changes the upper behind the daemon and then tells it (fs.h,
 * FS_INVALIDATE_FILE); the daemon forgets them before it drops the kernel's
 * entries.  Until then the kernel's cached entries are as stale as the
 * descriptors, and a descriptor of a directory discard removed answers as an
 * empty directory in which nothing can be created (ENOENT: may_create() on a
 * dead directory), as a fresh resolution of the removed path does.  The
 * private .git is changed by the daemon's own build and by git_fault outside
 * any request: its paths are never kept.
 *
 * The lower's directories (fs->ldirs) are the person's, who may move or
 * remove them at any time.  A descriptor is kept only where the lower watch
 * (watch.c) sees such a change on every directory of its path: the
 * directory and each one above it are watched, each found to be the very
 * directory its watch is on since the last move or removal of a directory
 * the watch reported (lower_keepable), and its lower path is its view path
 * (no redirect of a renamed directory on the way).  The watch forgets every
 * lower descriptor at an event that moves or removes a directory, at a
 * queue overflow, when it stops watching a directory and when its thread
 * ends (lower_dirs_forget).  Until the event is read a descriptor is as
 * stale as the kernel's own cached entries for that directory, which the
 * same event invalidates.
 *
 * Each table is direct-mapped on a hash of the path.  An entry in use by
 * another request (refs > 0) is not replaced: the new descriptor is handed
 * out uncached and closed by its put.  A forgotten entry still in use is
 * closed by its last put.  A layer's root is its own descriptor, never
 * opened or closed here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/internal.h"

struct dircache_slot {
	char *path; /* NULL: the slot holds nothing findable */
	uint64_t key;
	int fd; /* -1: empty */
	unsigned refs;
};

struct dircache {
	pthread_mutex_t lock;
	/* Bumped by each forget: a descriptor opened before one is not kept
	 * (it may be of the directory that moved). */
	uint64_t gen;
	struct dircache_slot s[DIRCACHE_SLOTS];
};

struct dircache *dircache_new(void)
{
	struct dircache *dc = calloc(1, sizeof(*dc));
	if (!dc)
		return NULL;
	pthread_mutex_init(&dc->lock, NULL);
	for (size_t i = 0; i < DIRCACHE_SLOTS; i++)
		dc->s[i].fd = -1;
	return dc;
}

void dircache_free(struct dircache *dc)
{
	if (!dc)
		return;
	for (size_t i = 0; i < DIRCACHE_SLOTS; i++) {
		if (dc->s[i].fd >= 0)
			close(dc->s[i].fd);
		free(dc->s[i].path);
	}
	pthread_mutex_destroy(&dc->lock);
	free(dc);
}

/* Empty slot @s if nobody uses it; else make it unfindable, for its last
 * user to close.  Caller holds the lock. */
static void slot_drop(struct dircache_slot *s)
{
	free(s->path);
	s->path = NULL;
	s->key = 0;
	if (s->refs == 0 && s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
}

static bool slot_is(const struct dircache_slot *s, uint64_t key, const char *path)
{
	return s->path && s->key == key && strcmp(s->path, path) == 0;
}

/* @path's descriptor from @dc, else opened O_PATH|O_DIRECTORY beneath
 * @rootfd and kept in @dc unless @keepable (NULL: always) says no for @dir;
 * asked on a miss only, as every forget empties the table.  Returns the fd
 * or -errno. */
static int table_get(struct agentfs *fs, struct dircache *dc, int rootfd, const char *path,
		     bool (*keepable)(struct agentfs *, const struct node *),
		     const struct node *dir)
{
	if (!path[0])
		return rootfd;
	if (!dc)
		return layer_open(fs, rootfd, path, O_PATH | O_DIRECTORY, 0);
	uint64_t key = XXH3_64bits(path, strlen(path));
	struct dircache_slot *s = &dc->s[key % DIRCACHE_SLOTS];
	pthread_mutex_lock(&dc->lock);
	if (slot_is(s, key, path)) {
		s->refs++;
		int fd = s->fd;
		pthread_mutex_unlock(&dc->lock);
		return fd;
	}
	uint64_t gen = dc->gen;
	pthread_mutex_unlock(&dc->lock);
	int fd = layer_open(fs, rootfd, path, O_PATH | O_DIRECTORY, 0);
	if (fd < 0 || (keepable && !keepable(fs, dir)))
		return fd; /* not kept: its put closes it */
	char *copy = strdup(path);
	pthread_mutex_lock(&dc->lock);
	if (copy && dc->gen == gen && s->refs == 0 && !slot_is(s, key, path)) {
		slot_drop(s);
		s->path = copy;
		s->key = key;
		s->fd = fd;
		s->refs = 1;
		copy = NULL;
	}
	pthread_mutex_unlock(&dc->lock);
	free(copy); /* not kept: its put closes it */
	return fd;
}

static void table_put(struct dircache *dc, int rootfd, int fd)
{
	if (fd < 0 || fd == rootfd)
		return;
	if (dc) {
		pthread_mutex_lock(&dc->lock);
		for (size_t i = 0; i < DIRCACHE_SLOTS; i++) {
			struct dircache_slot *s = &dc->s[i];
			if (s->fd != fd || s->refs == 0)
				continue;
			if (--s->refs == 0 && !s->path) {
				close(s->fd);
				s->fd = -1;
			}
			pthread_mutex_unlock(&dc->lock);
			return;
		}
		pthread_mutex_unlock(&dc->lock);
	}
	close(fd);
}

static void table_forget(struct dircache *dc)
{
	if (!dc)
		return;
	pthread_mutex_lock(&dc->lock);
	dc->gen++;
	for (size_t i = 0; i < DIRCACHE_SLOTS; i++)
		if (dc->s[i].path)
			slot_drop(&dc->s[i]);
	pthread_mutex_unlock(&dc->lock);
}

int dircache_get(struct agentfs *fs, const char *path)
{
	if (view_path_in_git(fs, path) || strcmp(path, ".git") == 0)
		return upper_open(fs, path, O_PATH | O_DIRECTORY, 0);
	return table_get(fs, fs->dirs, fs->upper_fd, path, NULL, NULL);
}

void dircache_put(struct agentfs *fs, int fd)
{
	table_put(fs->dirs, fs->upper_fd, fd);
}

void dircache_forget(struct agentfs *fs)
{
	table_forget(fs->dirs);
}

/* May @dir's lower directory be kept (see the top of this file)?  Caller
 * holds ns_lock. */
static bool lower_keepable(struct agentfs *fs, const struct node *dir)
{
	if (fs->inotify_fd < 0 || __atomic_load_n(&fs->watch_broken, __ATOMIC_ACQUIRE))
		return false;
	char vpath[FS_PATH_MAX];
	const char *lower = node_lower(dir);
	if (!lower || node_path(dir, vpath, sizeof(vpath)) < 0 || strcmp(vpath, lower) != 0)
		return false;
	/* A watch stays on the inode it was added to: after the person moved
	 * or removed a directory, a node's may watch one now elsewhere while
	 * nothing watches the one at its path (a shell whose working directory
	 * was moved away looks names up in it without looking it up first).
	 * So each directory of the chain must have been found to be the one
	 * watched since the last such move the watch reported (wd_epoch,
	 * view_apply). */
	uint32_t moves = __atomic_load_n(&fs->dir_moves, __ATOMIC_ACQUIRE);
	for (const struct node *n = dir; n; n = n->parent) {
		if (__atomic_load_n(&n->wd, __ATOMIC_RELAXED) <= 0)
			return false;
		/* The root is the layer's own descriptor: its watch is on it. */
		if (n->parent && __atomic_load_n(&n->wd_epoch, __ATOMIC_RELAXED) != moves)
			return false;
	}
	return true;
}

int lower_dir_get(struct agentfs *fs, const struct node *dir)
{
	const char *lower = node_lower(dir);
	if (!lower)
		return -ENOENT;
	return table_get(fs, fs->ldirs, fs->lower_fd, lower, lower_keepable, dir);
}

void lower_dir_put(struct agentfs *fs, int fd)
{
	table_put(fs->ldirs, fs->lower_fd, fd);
}

void lower_dirs_forget(struct agentfs *fs)
{
	table_forget(fs->ldirs);
}

int lower_stat_in(struct agentfs *fs, const struct node *dir, const char *name, struct stat *st)
{
	int fd = lower_dir_get(fs, dir);
	if (fd < 0)
		return fd;
	int r = fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	lower_dir_put(fs, fd);
	return r;
}
