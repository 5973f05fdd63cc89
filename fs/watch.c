/*
 * watch.c - keeping the kernel's cached answers about the lower true while
 * the person keeps working in the repository.
 *
 * The daemon hands out long entry and attribute timeouts (the kernel then
 * answers stat, lookup and reads without asking).  To stay correct it watches
 * every lower directory the kernel has seen, lazily, at the first lookup or
 * listing in it (so mount time does not grow with the tree), with inotify(7)
 * (fanotify would need CAP_SYS_ADMIN, and people mount as themselves).  Each
 * event invalidates the entry (fuse_lowlevel_notify_inval_entry) and, for a
 * known child, its attributes and page cache (notify_inval_inode).  A
 * directory that cannot be watched (inotify limits) gets short timeouts for
 * its children instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "fs/internal.h"

#define WATCH_MASK                                                                                 \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY | IN_ATTRIB |             \
	 IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct wd_slot {
	int wd;
	struct node *node;
};

/* wd -> directory node, open addressing keyed by wd (inotify's wds are small
 * increasing integers). */
static struct node *wd_find(struct agentfs *fs, int wd)
{
	if (!fs->wd_map)
		return NULL;
	for (size_t i = (size_t)wd & (fs->wd_cap - 1);; i = (i + 1) & (fs->wd_cap - 1)) {
		struct wd_slot *s = &((struct wd_slot *)fs->wd_map)[i];
		if (s->wd == 0)
			return NULL;
		if (s->wd == wd)
			return s->node;
	}
}

static int wd_put(struct agentfs *fs, int wd, struct node *n);

static int wd_grow(struct agentfs *fs)
{
	size_t oc = fs->wd_cap;
	struct wd_slot *old = fs->wd_map;
	size_t nc = oc ? oc * 2 : 1024;
	struct wd_slot *nv = calloc(nc, sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	fs->wd_map = nv;
	fs->wd_cap = nc;
	fs->wd_count = 0;
	for (size_t i = 0; i < oc; i++)
		if (old[i].wd > 0)
			wd_put(fs, old[i].wd, old[i].node);
	free(old);
	return 0;
}

static int wd_put(struct agentfs *fs, int wd, struct node *n)
{
	if ((fs->wd_count + 1) * 2 > fs->wd_cap) {
		int r = wd_grow(fs);
		if (r < 0)
			return r;
	}
	for (size_t i = (size_t)wd & (fs->wd_cap - 1);; i = (i + 1) & (fs->wd_cap - 1)) {
		struct wd_slot *s = &((struct wd_slot *)fs->wd_map)[i];
		if (s->wd == 0 || s->wd == -1 || s->wd == wd) {
			if (s->wd != wd)
				fs->wd_count++;
			s->wd = wd;
			s->node = n;
			return 0;
		}
	}
}

static void wd_del(struct agentfs *fs, int wd)
{
	if (!fs->wd_map)
		return;
	for (size_t i = (size_t)wd & (fs->wd_cap - 1);; i = (i + 1) & (fs->wd_cap - 1)) {
		struct wd_slot *s = &((struct wd_slot *)fs->wd_map)[i];
		if (s->wd == 0)
			return;
		if (s->wd == wd) {
			s->wd = -1; /* tombstone: keeps probe chains intact */
			s->node = NULL;
			return;
		}
	}
}

void watch_dir(struct agentfs *fs, struct node *dir, int lower_dirfd)
{
	if (fs->inotify_fd < 0 || !node_lower(dir) ||
	    __atomic_load_n(&dir->wd, __ATOMIC_RELAXED) != 0)
		return;
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", lower_dirfd);
	pthread_mutex_lock(&fs->table_lock);
	if (dir->wd == 0) {
		/* Read before the watch is added: a move reported after this
		 * may have moved the directory watched. */
		__atomic_store_n(&dir->wd_epoch, __atomic_load_n(&fs->dir_moves, __ATOMIC_ACQUIRE),
				 __ATOMIC_RELAXED);
		struct stat st;
		__atomic_store_n(&dir->wd_ino,
				 fstat(lower_dirfd, &st) == 0 ? (uint64_t)st.st_ino : 0,
				 __ATOMIC_RELAXED);
		int wd = inotify_add_watch(fs->inotify_fd, p, WATCH_MASK);
		if (wd < 0 || wd_put(fs, wd, dir) < 0) {
			__atomic_store_n(
			    &dir->wd, -1,
			    __ATOMIC_RELAXED); /* unwatched: short timeouts for its children */
		} else {
			/* The same lower directory seen through another node (a
			 * redirect) shares the wd: the newest node wins, the
			 * other one falls back to short timeouts. */
			__atomic_store_n(&dir->wd, wd, __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&fs->table_lock);
}

void watch_forget(struct agentfs *fs, struct node *n)
{
	/* Called with table_lock held, as the node is freed. */
	if (n->wd > 0 && wd_find(fs, n->wd) == n) {
		inotify_rm_watch(fs->inotify_fd, n->wd);
		wd_del(fs, n->wd);
		/* Unwatched from now on, it could move unseen. */
		lower_dirs_forget(fs);
	}
	__atomic_store_n(&n->wd, 0, __ATOMIC_RELAXED);
}

void watch_dir_lazy(struct agentfs *fs, struct node *dir)
{
	if (fs->inotify_fd < 0 || !node_lower(dir) ||
	    __atomic_load_n(&dir->wd, __ATOMIC_RELAXED) != 0 || dir->opaque)
		return;
	int fd = layer_open(fs, fs->lower_fd, node_lower(dir), O_PATH | O_DIRECTORY, 0);
	if (fd < 0)
		return;
	watch_dir(fs, dir, fd);
	close(fd);
}

double entry_timeout(struct agentfs *fs, const struct node *dir)
{
	if (node_lower(dir) && __atomic_load_n(&dir->wd, __ATOMIC_RELAXED) <= 0 && !dir->opaque)
		return FS_SHORT_TIMEOUT;
	return fs->timeout;
}

struct pending {
	fuse_ino_t dir;
	fuse_ino_t child;
	char name[NAME_MAX + 1];
	struct node *entries; /* the directory, referenced, when an entry of it came
			       * or went (touch_upper_dir); else NULL */
	bool came;	      /* that entry came (created, moved in); else it went */
	bool known;	      /* the daemon had a node for it (the view showed it) */
	uint32_t mask, cookie;
	struct node *from; /* a file the daemon has open readers of, or a
			    * directory, moved away (IN_MOVED_FROM),
			    * referenced; else NULL */
};

/*
 * The file or directory @pv[@i].from was moved away by the person: where to?
 * The readers of its lower file (or of those below it) would read on whatever
 * is written to it there, so unless the IN_MOVED_TO of the same rename names a
 * place the view shows, they read no more (handles_revoke_lower): a name the
 * policy hides, or a place the daemon does not watch (out of the repository,
 * or a directory the view has not shown), which it cannot judge.
 */
static void moved_file(struct agentfs *fs, struct pending *pv, size_t np, size_t i)
{
	const struct pending *to = NULL;
	for (size_t j = 0; j < np && !to; j++)
		if ((pv[j].mask & IN_MOVED_TO) && pv[j].cookie == pv[i].cookie && pv[j].entries)
			to = &pv[j];
	bool shown = false;
	if (to) {
		char lchild[FS_PATH_MAX];
		pthread_rwlock_rdlock(&fs->ns_lock);
		const char *lower = node_lower(to->entries);
		bool ok = lower && !to->entries->opaque &&
			  path_join(lchild, sizeof(lchild), lower, to->name) == 0;
		pthread_rwlock_unlock(&fs->ns_lock);
		struct stat st;
		shown = ok && layer_stat(fs, fs->lower_fd, lchild, &st) == 0 &&
			view_decide_lower(fs, lchild, &st) != POLICY_HIDDEN;
	}
	if (shown)
		return;
	if (!S_ISDIR(pv[i].from->type)) {
		handles_revoke_lower(fs, pv[i].from);
		return;
	}
	/* A directory: the files below it that have open readers. */
	struct node **v = NULL;
	size_t n = 0, cap = 0;
	pthread_mutex_lock(&fs->table_lock);
	for (size_t b = 0; b < fs->nbuckets; b++) {
		for (struct node *c = fs->buckets[b]; c; c = c->hnext) {
			if (S_ISDIR(c->type) || !c->handles)
				continue;
			struct node *p = c->parent;
			while (p && p != pv[i].from)
				p = p->parent;
			if (!p)
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 16;
				struct node **nv = realloc(v, nc * sizeof(*nv));
				if (!nv)
					break;
				v = nv;
				cap = nc;
			}
			c->refs++; /* node_ref, with table_lock held */
			v[n++] = c;
		}
	}
	pthread_mutex_unlock(&fs->table_lock);
	for (size_t k = 0; k < n; k++) {
		handles_revoke_lower(fs, v[k]);
		node_unref(fs, v[k]);
	}
	free(v);
}

/*
 * The person added, removed or renamed the entry @name of the lower directory
 * @dir.  A directory the view also holds in the upper has the upper copy's
 * attributes (view_getattr), which the change did not move: its times are
 * moved to now, as the lower's were, so that a tool that trusts a
 * directory's mtime to tell that its listing is unchanged (git's untracked
 * cache) sees the new entry.  Only for an entry the view shows, known for
 * sure (hidden looks absent: a hidden file's coming or going must not move
 * it): one that came (@came) is judged as a lookup judges it, on the lower
 * entry itself (view_decide_lower: its name, size, symlink target); one that
 * went only when the view had shown it (@known: the daemon had a node for
 * it).  Not inside the private .git.  Takes ns_lock shared.
 */
static void touch_upper_dir(struct agentfs *fs, struct node *dir, const char *name, bool came,
			    bool known)
{
	char path[FS_PATH_MAX], child[FS_PATH_MAX], lchild[FS_PATH_MAX];
	pthread_rwlock_rdlock(&fs->ns_lock);
	const char *lower = node_lower(dir);
	bool ok = dir->upper && lower && !node_unnamed(fs, dir) &&
		  node_path(dir, path, sizeof(path)) == 0 &&
		  path_join(lchild, sizeof(lchild), lower, name) == 0;
	pthread_rwlock_unlock(&fs->ns_lock);
	if (!ok || path_join(child, sizeof(child), path, name) < 0 || view_path_in_git(fs, child) ||
	    strcmp(child, ".git") == 0)
		return;
	struct stat st;
	if (came ? layer_stat(fs, fs->lower_fd, lchild, &st) < 0 ||
		       view_decide_lower(fs, lchild, &st) == POLICY_HIDDEN
		 : !known)
		return;
	int fd = upper_open(fs, path[0] ? path : ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return;
	const struct timespec now[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_NOW}};
	(void)futimens(fd, now);
	close(fd);
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
	return x < y ? -1 : x > y;
}

/*
 * The nodes strictly below the directories @gone (@ng of them, sorted) that
 * the person moved or removed: no event names them, yet what the kernel keeps
 * of them (a shell's working directory's listing, the entries of the
 * directories between) answers for paths that are gone.  Collected with
 * table_lock held into *@out (malloc'd, *@n of them) for node_invals_send().
 */
static void below_collect(struct agentfs *fs, struct node **gone, size_t ng,
			  struct node_inval **out, size_t *n)
{
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	for (size_t i = 0; i < fs->nbuckets; i++) {
		for (struct node *c = fs->buckets[i]; c; c = c->hnext) {
			struct node *p = c->parent;
			while (p && !bsearch(&p, gone, ng, sizeof(*gone), cmp_ptr))
				p = p->parent;
			if (!p)
				continue;
			if (*n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct node_inval *v = realloc(*out, nc * sizeof(*v));
				if (!v)
					return; /* the ones so far */
				*out = v;
				cap = nc;
			}
			(*out)[*n] = (struct node_inval){.parent = c->parent->id,
							 .ino = c->id,
							 .name = strdup(c->name),
							 .dir = S_ISDIR(c->type)};
			(*n)++;
		}
	}
}

/* No more events will be read: nothing of the lower may be kept from now on. */
static void watch_end(struct agentfs *fs)
{
	__atomic_store_n(&fs->watch_broken, true, __ATOMIC_RELEASE);
	lower_dirs_forget(fs);
}

static void *watch_thread(void *arg)
{
	struct agentfs *fs = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	/* One per event a read can return (each at least a bare struct
	 * inotify_event): every change of a read is invalidated. */
	enum { MAX_EVENTS = sizeof(buf) / sizeof(struct inotify_event) };
	struct pending *pv = malloc(sizeof(*pv) * MAX_EVENTS);
	struct node **gone = malloc(sizeof(*gone) * MAX_EVENTS);
	if (!pv || !gone) {
		free(pv);
		free(gone);
		watch_end(fs);
		return NULL;
	}
	for (;;) {
		struct pollfd pfd[2] = {{.fd = fs->inotify_fd, .events = POLLIN},
					{.fd = fs->watch_stop[0], .events = POLLIN}};
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents) {
			char cmd[64];
			ssize_t n = read(fs->watch_stop[0], cmd, sizeof(cmd));
			if (n <= 0 || memchr(cmd, 'x', (size_t)n))
				break;
			continue;
		}
		if (!pfd[0].revents)
			continue;
		ssize_t len = read(fs->inotify_fd, buf, sizeof(buf));
		if (len <= 0)
			continue;
		/* Before anything is invalidated: a negative lookup resolved
		 * before these events is no longer taken (neg_recall). */
		__atomic_add_fetch(&fs->lower_gen, 1, __ATOMIC_RELEASE);
		size_t np = 0, ng = 0;
		bool overflow = false, moved = false;
		pthread_mutex_lock(&fs->table_lock);
		for (char *p = buf; p < buf + len;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			/* A directory moved or went: a kept lower descriptor
			 * may no longer be the directory at its path. */
			if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) ||
			    ((ev->mask & IN_ISDIR) &&
			     (ev->mask & (IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO))))
				moved = true;
			if (ev->mask & IN_Q_OVERFLOW) {
				overflow = true;
				continue;
			}
			struct node *dir = wd_find(fs, ev->wd);
			if (ev->mask & IN_IGNORED) {
				if (dir)
					__atomic_store_n(&dir->wd, 0, __ATOMIC_RELAXED);
				wd_del(fs, ev->wd);
				continue;
			}
			if (!dir || np == MAX_EVENTS)
				continue;
			/* The entry the event names, if the daemon knows it. */
			bool named = ev->len && ev->name[0];
			struct node *c = named ? node_find_locked(fs, dir, ev->name) : NULL;
			/* A directory the daemon knows moved or went: the nodes
			 * below it are stale (below_collect). */
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
				gone[ng++] = dir;
			else if (c && (ev->mask & IN_ISDIR) &&
				 (ev->mask & (IN_DELETE | IN_MOVED_FROM)))
				gone[ng++] = c;
			pv[np].dir = dir->id;
			pv[np].child = 0;
			pv[np].name[0] = 0;
			pv[np].entries = NULL;
			pv[np].mask = ev->mask;
			pv[np].cookie = ev->cookie;
			pv[np].from = NULL;
			if (named &&
			    (ev->mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO))) {
				dir->refs++; /* node_ref, with table_lock held */
				pv[np].entries = dir;
				pv[np].came = (ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0;
				pv[np].known = c != NULL;
			}
			if (named) {
				snprintf(pv[np].name, sizeof(pv[np].name), "%s", ev->name);
				if (c)
					pv[np].child = c->id;
				if (c && (ev->mask & IN_MOVED_FROM) &&
				    (S_ISDIR(c->type) || c->handles)) {
					c->refs++; /* node_ref, with table_lock held */
					pv[np].from = c;
				}
			}
			np++;
		}
		struct node_inval *below = NULL;
		size_t nb = 0;
		if (ng && !overflow) {
			qsort(gone, ng, sizeof(*gone), cmp_ptr);
			below_collect(fs, gone, ng, &below, &nb);
		}
		pthread_mutex_unlock(&fs->table_lock);
		/* Before the kernel drops its pages: a read after that is
		 * refused. */
		for (size_t i = 0; i < np; i++) {
			if (!pv[i].from)
				continue;
			moved_file(fs, pv, np, i);
			node_unref(fs, pv[i].from);
		}
		/* Before the kernel is told, so that its next getattr sees them. */
		for (size_t i = 0; i < np; i++) {
			if (!pv[i].entries)
				continue;
			if (!overflow)
				touch_upper_dir(fs, pv[i].entries, pv[i].name, pv[i].came,
						pv[i].known);
			node_unref(fs, pv[i].entries);
		}
		/* Before the kernel is told, so its next lookups resolve afresh. */
		if (moved || overflow) {
			__atomic_add_fetch(&fs->dir_moves, 1, __ATOMIC_RELEASE);
			lower_dirs_forget(fs);
		}
		if (overflow) {
			free(below); /* none: not collected */
			table_invalidate_all(fs);
			continue;
		}
		for (size_t i = 0; i < np; i++) {
			/* The directory's inode too: its cached listing
			 * (cache_readdir) lives in its page cache. */
			if (pv[i].name[0])
				fuse_lowlevel_notify_inval_entry(fs->se, pv[i].dir, pv[i].name,
								 strlen(pv[i].name));
			fuse_lowlevel_notify_inval_inode(fs->se, pv[i].dir, 0, 0);
			if (pv[i].child)
				fuse_lowlevel_notify_inval_inode(fs->se, pv[i].child, 0, 0);
		}
		node_invals_send(fs, below, nb);
	}
	watch_end(fs);
	free(pv);
	free(gone);
	return NULL;
}

int watch_start(struct agentfs *fs)
{
	/* Without inotify every lower entry gets short timeouts. */
	fs->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (pipe2(fs->watch_stop, O_CLOEXEC) < 0 ||
	    pthread_create(&fs->watch_thr, NULL, watch_thread, fs) != 0) {
		if (fs->inotify_fd >= 0)
			close(fs->inotify_fd);
		fs->inotify_fd = -1;
		return 0;
	}
	fs->watching = true;
	return 0;
}

void watch_stop(struct agentfs *fs)
{
	if (!fs->watching)
		return;
	(void)!write(fs->watch_stop[1], "x", 1);
	pthread_join(fs->watch_thr, NULL);
	close(fs->watch_stop[0]);
	close(fs->watch_stop[1]);
	if (fs->inotify_fd >= 0)
		close(fs->inotify_fd);
	fs->inotify_fd = -1;
	free(fs->wd_map);
	fs->wd_map = NULL;
	fs->watching = false;
}
