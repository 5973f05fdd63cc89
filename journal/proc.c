/*
 * proc.c - naming the process behind a request: pid -> (comm, exe), cached per
 * (pid, start time) because pids are reused.
 *
 * Measured on the development machine: open+read+close of /proc/PID/stat costs
 * ~6 us, a pread() of an already open one ~3.3 us, of an open /proc/PID/comm
 * ~0.7 us, readlink(/proc/PID/exe) ~2 us.  So the first event of a process
 * reads its stat (start time and comm) and exe, and the cache keeps its comm
 * fd open (at most PROC_FD_MAX, so the daemon's fd budget is not spent here);
 * later events re-read only that fd: comm changes on exec (a shell's child
 * opens the redirect, then execs), and only a fresh read tells.  The exe link
 * is read again only when the comm changed.  An fd of /proc/PID/comm keeps
 * referring to the process it was opened for: once that process is reaped,
 * reads fail (ESRCH), so a reused pid is never mistaken for the old process.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal/internal.h"

#define PROC_CACHE_MAX 512 /* power of two */
#define PROC_WINDOW    8   /* a pid lives in one of 8 slots from pid % PROC_CACHE_MAX */
#define PROC_FD_MAX    32

struct proc_ent {
	pid_t pid; /* 0: free slot */
	uint64_t start;
	char comm[17];
	char *exe; /* malloc'd, "" when unknown */
	int fd;	   /* /proc/PID/comm, or -1 */
	int refs;  /* readers of fd outside the lock */
	uint64_t used;
};

struct journal_proc_cache {
	pthread_mutex_t lock;
	struct proc_ent ent[PROC_CACHE_MAX];
	int nfds;
	uint64_t tick;
};

int journal_proc_cache_new(struct journal_proc_cache **out)
{
	struct journal_proc_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	for (int i = 0; i < PROC_CACHE_MAX; i++)
		c->ent[i].fd = -1;
	*out = c;
	return 0;
}

void journal_proc_cache_free(struct journal_proc_cache *c)
{
	if (!c)
		return;
	for (int i = 0; i < PROC_CACHE_MAX; i++) {
		if (c->ent[i].fd >= 0)
			close(c->ent[i].fd);
		free(c->ent[i].exe);
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Parse "pid (comm) S ppid ... starttime ..." (proc(5)): comm may hold spaces
 * and parentheses, so it ends at the last ')'. */
static int parse_stat(char *buf, size_t n, char comm[17], uint64_t *start)
{
	buf[n] = 0;
	char *l = memchr(buf, '(', n);
	char *r = memrchr(buf, ')', n);
	if (!l || !r || r < l)
		return -EINVAL;
	size_t cl = (size_t)(r - l - 1);
	if (cl > 16)
		cl = 16;
	memcpy(comm, l + 1, cl);
	comm[cl] = 0;
	/* Fields after ')' start at field 3 (state); starttime is field 22. */
	char *p = r + 1;
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EINVAL;
	}
	char *end;
	*start = strtoull(p + 1, &end, 10);
	return end == p + 1 ? -EINVAL : 0;
}

static int read_stat_fd(int fd, char comm[17], uint64_t *start)
{
	char buf[1024];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return n < 0 ? -errno : -ESRCH;
	return parse_stat(buf, (size_t)n, comm, start);
}

static int read_comm_fd(int fd, char comm[17])
{
	char buf[64];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return n < 0 ? -errno : -ESRCH;
	if (buf[n - 1] == '\n')
		n--;
	if (n > 16)
		n = 16;
	memcpy(comm, buf, (size_t)n);
	comm[n] = 0;
	return 0;
}

static void read_exe(pid_t pid, char *exe, size_t len)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/exe", (int)pid);
	ssize_t n = readlink(p, exe, len - 1);
	exe[n > 0 ? n : 0] = 0;
}

static struct proc_ent *slot(struct journal_proc_cache *c, pid_t pid, int k)
{
	return &c->ent[((unsigned)pid + (unsigned)k) & (PROC_CACHE_MAX - 1)];
}

static struct proc_ent *find(struct journal_proc_cache *c, pid_t pid, uint64_t start)
{
	struct proc_ent *best = NULL;
	for (int k = 0; k < PROC_WINDOW; k++) {
		struct proc_ent *e = slot(c, pid, k);
		if (e->pid != pid)
			continue;
		if (start) {
			if (e->start == start)
				return e;
			continue;
		}
		if (!best || e->used > best->used)
			best = e;
	}
	return best;
}

static void drop_fd(struct journal_proc_cache *c, struct proc_ent *e)
{
	if (e->fd >= 0 && e->refs == 0) {
		close(e->fd);
		e->fd = -1;
		c->nfds--;
	}
}

/* A slot for a new entry in @pid's window: a free one, else the least recently
 * used idle one. */
static struct proc_ent *victim(struct journal_proc_cache *c, pid_t pid)
{
	struct proc_ent *v = NULL;
	for (int k = 0; k < PROC_WINDOW; k++) {
		struct proc_ent *e = slot(c, pid, k);
		if (e->refs)
			continue;
		if (!e->pid)
			return e;
		if (!v || e->used < v->used)
			v = e;
	}
	return v;
}

/* Least recently used entry holding an idle fd. */
static struct proc_ent *fd_victim(struct journal_proc_cache *c)
{
	struct proc_ent *v = NULL;
	for (int i = 0; i < PROC_CACHE_MAX; i++) {
		struct proc_ent *e = &c->ent[i];
		if (e->fd >= 0 && !e->refs && (!v || e->used < v->used))
			v = e;
	}
	return v;
}

static void copy_out(const struct proc_ent *e, char comm[17], char *exe, size_t exelen,
		     uint64_t *start_out)
{
	memcpy(comm, e->comm, 17);
	snprintf(exe, exelen, "%s", e->exe ? e->exe : "");
	if (start_out)
		*start_out = e->start;
}

int journal_proc_identify(struct journal_proc_cache *c, pid_t pid, uint64_t start, char comm[17],
			  char *exe, size_t exelen, uint64_t *start_out)
{
	if (pid <= 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	c->tick++;
	struct proc_ent *e = find(c, pid, start);
	if (e && start) {
		/* Attributed to the process captured earlier (at open): answer from the
		 * cache even when it has exited since. */
		e->used = c->tick;
		copy_out(e, comm, exe, exelen, start_out);
		pthread_mutex_unlock(&c->lock);
		return 1;
	}
	if (e && e->fd >= 0) {
		e->refs++;
		int fd = e->fd;
		char ocomm[17];
		memcpy(ocomm, e->comm, 17);
		pthread_mutex_unlock(&c->lock);
		char ncomm[17];
		int r = read_comm_fd(fd, ncomm);
		bool exec_seen = r == 0 && strcmp(ncomm, ocomm) != 0;
		char *nexe = NULL;
		if (exec_seen) {
			nexe = malloc(PATH_MAX);
			if (nexe)
				read_exe(pid, nexe, PATH_MAX);
		}
		pthread_mutex_lock(&c->lock);
		e->refs--;
		if (r == 0) {
			if (exec_seen) {
				memcpy(e->comm, ncomm, 17);
				if (nexe) {
					free(e->exe);
					e->exe = nexe;
					nexe = NULL;
				}
			}
			e->used = c->tick;
			copy_out(e, comm, exe, exelen, start_out);
			pthread_mutex_unlock(&c->lock);
			free(nexe);
			return 1;
		}
		/* That process is gone; the pid may belong to a new one now. */
		drop_fd(c, e);
		free(nexe);
	}
	pthread_mutex_unlock(&c->lock);

	/* comm first: if the process is replaced between the two opens, the stat
	 * read below sees a different start time than a later lookup would, and
	 * the comm fd fails from then on, so the entry is dropped, never wrong. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int sfd = open(path, O_RDONLY | O_CLOEXEC);
	char ncomm[17];
	uint64_t nstart = 0;
	int sr = sfd < 0 ? -errno : read_stat_fd(sfd, ncomm, &nstart);
	if (sfd >= 0)
		close(sfd);
	if (sr < 0 || (start && nstart != start)) {
		close(fd);
		return 0;
	}
	char *nexe = malloc(PATH_MAX);
	if (nexe)
		read_exe(pid, nexe, PATH_MAX);

	pthread_mutex_lock(&c->lock);
	struct proc_ent *n = find(c, pid, nstart);
	if (!n) {
		n = victim(c, pid);
		if (n) {
			drop_fd(c, n);
			if (n->fd >= 0) { /* busy fd: cannot reuse this slot */
				n = NULL;
			} else {
				free(n->exe);
				n->exe = NULL;
				n->pid = pid;
				n->start = nstart;
			}
		}
	}
	if (n) {
		memcpy(n->comm, ncomm, 17);
		if (nexe) {
			free(n->exe);
			n->exe = nexe;
			nexe = NULL;
		}
		n->used = c->tick;
		if (n->fd < 0) {
			if (c->nfds >= PROC_FD_MAX) {
				struct proc_ent *v = fd_victim(c);
				if (v)
					drop_fd(c, v);
			}
			if (c->nfds < PROC_FD_MAX) {
				n->fd = fd;
				fd = -1;
				c->nfds++;
			}
		}
		copy_out(n, comm, exe, exelen, start_out);
	} else {
		memcpy(comm, ncomm, 17);
		snprintf(exe, exelen, "%s", nexe ? nexe : "");
		if (start_out)
			*start_out = nstart;
	}
	pthread_mutex_unlock(&c->lock);
	if (fd >= 0)
		close(fd);
	free(nexe);
	return 1;
}
