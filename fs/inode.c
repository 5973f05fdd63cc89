/* inode.c - the daemon's inode table: nodes, lookup counts, forget. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/internal.h"

static size_t key_hash(const struct node *parent, const char *name)
{
	return (size_t)XXH3_64bits_withSeed(name, strlen(name), (uint64_t)(uintptr_t)parent);
}

int table_init(struct agentfs *fs)
{
	fs->nbuckets = 1024;
	fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
	if (!fs->buckets)
		return -ENOMEM;
	memset(&fs->root, 0, sizeof(fs->root));
	fs->root.id = FUSE_ROOT_ID;
	fs->root.gone_fd = -1;
	fs->root.name = strdup("");
	fs->root.lower = strdup("");
	if (!fs->root.name || !fs->root.lower)
		return -ENOMEM;
	fs->root.type = S_IFDIR;
	fs->root.upper = true;
	fs->root.nlookup = 1;
	pthread_rwlock_init(&fs->ns_lock, NULL);
	pthread_mutex_init(&fs->table_lock, NULL);
	return 0;
}

static void node_free(struct node *n)
{
	if (n->gone_fd >= 0)
		close(n->gone_fd);
	free(n->dead);
	free(n->name);
	free(n->lower);
	free(n);
}

void table_destroy(struct agentfs *fs)
{
	for (size_t i = 0; i < fs->nbuckets; i++) {
		struct node *n = fs->buckets[i];
		while (n) {
			struct node *next = n->hnext;
			node_free(n);
			n = next;
		}
	}
	free(fs->buckets);
	for (struct node *n = fs->unhashed, *next; n; n = next) {
		next = n->hnext;
		node_free(n);
	}
	fs->unhashed = NULL;
	for (size_t i = 0; i < fs->ngrave; i++)
		free(fs->graveyard[i]);
	free(fs->graveyard);
	free(fs->root.name);
	free(fs->root.lower);
	pthread_rwlock_destroy(&fs->ns_lock);
	pthread_mutex_destroy(&fs->table_lock);
}

void ns_wrlock(struct agentfs *fs)
{
	pthread_rwlock_wrlock(&fs->ns_lock);
	fs->ns_gen++;
	pthread_mutex_lock(&fs->table_lock);
	for (size_t i = 0; i < fs->ngrave; i++)
		free(fs->graveyard[i]);
	fs->ngrave = 0;
	pthread_mutex_unlock(&fs->table_lock);
}

static bool in_private_git(struct agentfs *fs, const struct node *dir)
{
	if (fs->git_fd < 0 || dir == &fs->root)
		return false;
	while (dir->parent && dir->parent != &fs->root)
		dir = dir->parent;
	return dir->parent && is_git_root(fs, dir->parent, dir->name);
}

/* May a negative lookup in @dir be taken by the request after it?  Its lower
 * directory, if it merges one, must be watched, by a watch found since the
 * last directory move the watch reported to be on the directory at its path
 * (node.wd_epoch): a directory the person replaced would otherwise change
 * unseen. */
static bool neg_ok(struct agentfs *fs, const struct node *dir)
{
	if (__atomic_load_n(&fs->watch_broken, __ATOMIC_ACQUIRE) || in_private_git(fs, dir))
		return false;
	if (!node_lower(dir) || dir->opaque)
		return true;
	return fs->inotify_fd >= 0 && __atomic_load_n(&dir->wd, __ATOMIC_RELAXED) > 0 &&
	       (dir == &fs->root || __atomic_load_n(&dir->wd_epoch, __ATOMIC_RELAXED) ==
					__atomic_load_n(&fs->dir_moves, __ATOMIC_ACQUIRE));
}

void neg_remember(struct agentfs *fs, struct node *dir, const char *name, bool whiteout,
		  uint64_t lower_gen)
{
	/* Not behind a whiteout: `agentfs discard` may remove it, outside
	 * the daemon, before it hears of it. */
	if (whiteout || !neg_ok(fs, dir))
		return;
	pthread_mutex_lock(&fs->table_lock);
	fs->neg.dir = dir;
	fs->neg.ns_gen = fs->ns_gen;
	fs->neg.lower_gen = lower_gen;
	fs->neg.moves = __atomic_load_n(&fs->dir_moves, __ATOMIC_ACQUIRE);
	snprintf(fs->neg.name, sizeof(fs->neg.name), "%s", name);
	pthread_mutex_unlock(&fs->table_lock);
}

bool neg_recall(struct agentfs *fs, struct node *dir, const char *name)
{
	bool ok = neg_ok(fs, dir);
	pthread_mutex_lock(&fs->table_lock);
	bool hit = ok && fs->neg.dir == dir && fs->neg.ns_gen + 1 == fs->ns_gen &&
		   fs->neg.lower_gen == __atomic_load_n(&fs->lower_gen, __ATOMIC_ACQUIRE) &&
		   fs->neg.moves == __atomic_load_n(&fs->dir_moves, __ATOMIC_ACQUIRE) &&
		   strcmp(fs->neg.name, name) == 0;
	fs->neg.dir = NULL;
	pthread_mutex_unlock(&fs->table_lock);
	return hit;
}

struct node *node_get(struct agentfs *fs, fuse_ino_t id)
{
	if (id == FUSE_ROOT_ID)
		return &fs->root;
	return (struct node *)(uintptr_t)id;
}

static struct node *find_locked(struct agentfs *fs, struct node *parent, const char *name)
{
	size_t b = key_hash(parent, name) & (fs->nbuckets - 1);
	for (struct node *n = fs->buckets[b]; n; n = n->hnext)
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

struct node *node_find_locked(struct agentfs *fs, struct node *parent, const char *name)
{
	return find_locked(fs, parent, name);
}

struct node *node_find(struct agentfs *fs, struct node *parent, const char *name)
{
	pthread_mutex_lock(&fs->table_lock);
	struct node *n = find_locked(fs, parent, name);
	pthread_mutex_unlock(&fs->table_lock);
	return n;
}

/* Take @n out of agentfs.unhashed, if it is there. */
static void unlist_locked(struct agentfs *fs, struct node *n)
{
	if (!n->listed)
		return;
	if (n->uprev)
		n->uprev->hnext = n->hnext;
	else
		fs->unhashed = n->hnext;
	if (n->hnext)
		n->hnext->uprev = n->uprev;
	n->hnext = n->uprev = NULL;
	n->listed = false;
}

static void insert_locked(struct agentfs *fs, struct node *n)
{
	unlist_locked(fs, n);
	size_t b = key_hash(n->parent, n->name) & (fs->nbuckets - 1);
	n->hnext = fs->buckets[b];
	fs->buckets[b] = n;
	n->hashed = true;
}

static void remove_locked(struct agentfs *fs, struct node *n)
{
	if (!n->hashed)
		return;
	size_t b = key_hash(n->parent, n->name) & (fs->nbuckets - 1);
	for (struct node **p = &fs->buckets[b]; *p; p = &(*p)->hnext) {
		if (*p == n) {
			*p = n->hnext;
			break;
		}
	}
	n->hashed = false;
	/* Still held: kept on a list of its own, for table_destroy. */
	n->uprev = NULL;
	n->hnext = fs->unhashed;
	if (fs->unhashed)
		fs->unhashed->uprev = n;
	fs->unhashed = n;
	n->listed = true;
}

/* Grow the table so chains stay short on large trees (rehash under the lock;
 * amortised, and only on insert). */
static void maybe_grow_locked(struct agentfs *fs)
{
	if (fs->nnodes < fs->nbuckets * 2)
		return;
	size_t nb = fs->nbuckets * 4;
	struct node **nbk = calloc(nb, sizeof(*nbk));
	if (!nbk)
		return; /* keep the old table: slower, still correct */
	for (size_t i = 0; i < fs->nbuckets; i++) {
		struct node *n = fs->buckets[i];
		while (n) {
			struct node *next = n->hnext;
			size_t b = key_hash(n->parent, n->name) & (nb - 1);
			n->hnext = nbk[b];
			nbk[b] = n;
			n = next;
		}
	}
	free(fs->buckets);
	fs->buckets = nbk;
	fs->nbuckets = nb;
}

struct node *node_child(struct agentfs *fs, struct node *parent, const char *name,
			bool count_lookup)
{
	pthread_mutex_lock(&fs->table_lock);
	struct node *n = find_locked(fs, parent, name);
	if (!n) {
		n = calloc(1, sizeof(*n));
		if (!n || !(n->name = strdup(name))) {
			free(n);
			pthread_mutex_unlock(&fs->table_lock);
			return NULL;
		}
		n->id = (fuse_ino_t)(uintptr_t)n;
		n->gone_fd = -1;
		n->parent = parent;
		parent->refs++;
		fs->nnodes++;
		maybe_grow_locked(fs);
		insert_locked(fs, n);
	}
	if (count_lookup)
		n->nlookup++;
	pthread_mutex_unlock(&fs->table_lock);
	return n;
}

/* Free @n if nobody holds it any more, then walk up: a parent may have been
 * waiting only for this child.  Called with table_lock held. */
static void release_locked(struct agentfs *fs, struct node *n)
{
	while (n && n != &fs->root && n->nlookup == 0 && n->refs == 0) {
		struct node *parent = n->parent;
		remove_locked(fs, n);
		unlist_locked(fs, n);
		fs->nnodes--;
		if (fs->neg.dir == n)
			fs->neg.dir = NULL;    /* its address may come back as another's */
		uint64_t id = (uint64_t)n->id; /* likewise (fs/internal.h) */
		__atomic_compare_exchange_n(&fs->git_root_id, &id, 0, false, __ATOMIC_ACQ_REL,
					    __ATOMIC_RELAXED);
		watch_forget(fs, n);
		node_free(n);
		if (!parent)
			break;
		parent->refs--;
		n = parent;
	}
}

void node_unhash(struct agentfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	remove_locked(fs, n);
	pthread_mutex_unlock(&fs->table_lock);
}

/* Is @n at or below @top? */
static bool below(const struct node *n, const struct node *top)
{
	for (; n; n = n->parent)
		if (n == top)
			return true;
	return false;
}

/* The files of the upper at or below @top that discard took: with @unhash
 * they lose their names; without, whether a write record of one is on its
 * way (then nothing changes).  table_lock held. */
static bool discard_each_locked(struct agentfs *fs, struct node *top, bool unhash)
{
	if (!S_ISDIR(top->type)) { /* a file: itself alone, no walk of the table */
		if (!top->upper || in_private_git(fs, top))
			return false;
		if (!unhash)
			return top->recording != 0;
		remove_locked(fs, top);
		return false;
	}
	bool busy = false;
	for (size_t b = 0; b < fs->nbuckets && !busy; b++) {
		for (struct node *n = fs->buckets[b], *next; n && !busy; n = next) {
			next = n->hnext;
			if (S_ISDIR(n->type) || !n->upper || !below(n, top) ||
			    in_private_git(fs, n))
				continue;
			if (unhash)
				remove_locked(fs, n);
			else
				busy = n->recording != 0;
		}
	}
	return busy;
}

void node_discard_path(struct agentfs *fs, const char *path)
{
	for (;;) {
		char copy[PATH_MAX];
		snprintf(copy, sizeof(copy), "%s", path);
		ns_wrlock(fs);
		pthread_mutex_lock(&fs->table_lock);
		struct node *top = &fs->root;
		char *save = NULL;
		for (char *c = strtok_r(copy, "/", &save); c && top; c = strtok_r(NULL, "/", &save))
			top = find_locked(fs, top, c);
		bool busy = top && discard_each_locked(fs, top, false);
		if (top && !busy)
			discard_each_locked(fs, top, true);
		if (!busy) {
			pthread_mutex_unlock(&fs->table_lock);
			pthread_rwlock_unlock(&fs->ns_lock);
			return;
		}
		/* A release still hashing one: its record comes first.  Waited
		 * for without ns_lock; the walk starts again after (the nodes
		 * may be gone by then). */
		pthread_rwlock_unlock(&fs->ns_lock);
		pthread_cond_wait(&fs->recorded, &fs->table_lock);
		pthread_mutex_unlock(&fs->table_lock);
	}
}

bool node_unnamed(const struct agentfs *fs, const struct node *n)
{
	for (; n != &fs->root; n = n->parent)
		if (!n->hashed)
			return true;
	return false;
}

void node_remove_dir(struct agentfs *fs, struct node *n, const struct stat *st, bool rmdir)
{
	node_unhash(fs, n);
	if (!st || !S_ISDIR(n->type) || n->dead || !S_ISDIR(st->st_mode))
		return;
	struct stat *d = malloc(sizeof(*d));
	if (!d)
		return; /* its fstat answers ENOENT, as before */
	*d = *st;
	d->st_ino = (ino_t)n->ino;
	d->st_nlink = 0;
	if (rmdir)
		d->st_size = 0;
	n->dead = d;
}

int node_move(struct agentfs *fs, struct node *n, struct node *parent, const char *name)
{
	char *nn = strdup(name);
	if (!nn)
		return -ENOMEM;
	pthread_mutex_lock(&fs->table_lock);
	remove_locked(fs, n);
	struct node *old_parent = n->parent;
	free(n->name);
	n->name = nn;
	n->parent = parent;
	parent->refs++;
	insert_locked(fs, n);
	old_parent->refs--;
	release_locked(fs, old_parent);
	pthread_mutex_unlock(&fs->table_lock);
	return 0;
}

void node_ref(struct agentfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	n->refs++;
	pthread_mutex_unlock(&fs->table_lock);
}

void node_unref(struct agentfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	n->refs--;
	release_locked(fs, n);
	pthread_mutex_unlock(&fs->table_lock);
}

void node_forget(struct agentfs *fs, struct node *n, uint64_t nlookup)
{
	if (n == &fs->root)
		return;
	pthread_mutex_lock(&fs->table_lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	release_locked(fs, n);
	pthread_mutex_unlock(&fs->table_lock);
}

int node_path(const struct node *n, char *buf, size_t len)
{
	/* Build from the end of the buffer backwards, then move into place. */
	size_t pos = len - 1;
	buf[pos] = 0;
	const struct node *c = n;
	while (c && c->parent) {
		size_t l = strlen(c->name);
		size_t need = l + (pos == len - 1 ? 0 : 1);
		if (need > pos)
			return -ENAMETOOLONG;
		if (pos != len - 1)
			buf[--pos] = '/';
		pos -= l;
		memcpy(buf + pos, c->name, l);
		c = c->parent;
	}
	memmove(buf, buf + pos, len - pos);
	return 0;
}

int path_join(char *buf, size_t len, const char *dir, const char *name)
{
	/* Two copies, not snprintf: this runs for every entry of every listing
	 * and lookup, where snprintf's format parsing was most of its cost. */
	size_t dl = strlen(dir), nl = strlen(name), at = dl ? dl + 1 : 0;
	if (at + nl >= len) {
		if (len)
			buf[0] = 0;
		return -ENAMETOOLONG;
	}
	if (dl) {
		memcpy(buf, dir, dl);
		buf[dl] = '/';
	}
	memcpy(buf + at, name, nl + 1);
	return 0;
}

void entry_invalidate(struct agentfs *fs, fuse_ino_t parent, const char *name, bool dir)
{
	/* Expired, the kernel asks again at the next lookup and drops the entry
	 * only if the answer changed.  Invalidated, a directory's dentry is
	 * unhashed, and a process whose working directory it is (the agent's
	 * shell) gets ENOENT from getcwd() until something looks the directory
	 * up by name (git: "Unable to read current working directory").
	 * Kernels before 6.2 cannot expire: they invalidate. */
	if (dir && fuse_lowlevel_notify_expire_entry(fs->se, parent, name, strlen(name),
						     FUSE_LL_EXPIRE_ONLY) == 0)
		return;
	fuse_lowlevel_notify_inval_entry(fs->se, parent, name, strlen(name));
}

void table_invalidate_all(struct agentfs *fs)
{
	/* Collect under the lock, notify without it: the kernel may call back
	 * into the daemon while processing a notification. */
	ns_wrlock(fs);
	pthread_mutex_lock(&fs->table_lock);
	size_t n = 0, cap = fs->nnodes + 1;
	struct node_inval *v = calloc(cap, sizeof(*v));
	for (size_t i = 0; v && i < fs->nbuckets; i++) {
		for (struct node *c = fs->buckets[i]; c && n < cap; c = c->hnext) {
			v[n].parent = c->parent->id;
			v[n].ino = c->id;
			v[n].name = strdup(c->name);
			v[n].dir = S_ISDIR(c->type);
			n++;
		}
	}
	pthread_mutex_unlock(&fs->table_lock);
	pthread_rwlock_unlock(&fs->ns_lock);
	if (!v)
		return;
	fuse_lowlevel_notify_inval_inode(fs->se, FUSE_ROOT_ID, 0, 0);
	node_invals_send(fs, v, n);
}

void node_invals_send(struct agentfs *fs, struct node_inval *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (v[i].name)
			entry_invalidate(fs, v[i].parent, v[i].name, v[i].dir);
		fuse_lowlevel_notify_inval_inode(fs->se, v[i].ino, 0, 0);
		free(v[i].name);
	}
	free(v);
}
