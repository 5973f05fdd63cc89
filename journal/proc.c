/*
 * proc.c - naming the process behind a request: the id FUSE gives (the
 * calling thread's id) -> (process id, start time, comm, exe), cached per
 * (id, start time) because ids are reused.
 *
 * The kernel fills a FUSE request's pid with the calling thread's id (TID);
 * the process is its thread group (proc(5): "Tgid:" in /proc/TID/status), and
 * its name is its main thread's (/proc/TGID/comm, what ps(1) shows): a thread
 * may have renamed itself (prctl(PR_SET_NAME)).  Thread ids are valid
 * /proc/TID paths though /proc does not list them.
 *
 * Measured on the development machine: open+read+close of /proc/PID/stat costs
 * ~6 us, a pread() of an already open one ~3.3 us, of an open /proc/PID/comm
 * ~0.7 us, readlink(/proc/PID/exe) ~2 us.  So the first event of a task
 * reads its stat (start time, comm, thread count) and exe, and the cache keeps
 * its comm fd open (at most PROC_FD_MAX, so the daemon's fd budget is not spent
 * here); later events re-read only that fd: comm changes on exec (a shell's
 * child opens the redirect, then execs), and only a fresh read tells.  The exe
 * link is read again only when the comm changed.  An fd of /proc/PID/comm keeps
 * referring to the task it was opened for: once that task is reaped, reads
 * fail (ESRCH), so a reused id is never mistaken for the old task.
 *
 * A task whose stat counts one thread is its process's only thread, so its
 * id is the process id: most processes cost nothing more.  Only a task of a
 * multithreaded process has its status read (its Tgid, once per new entry)
 * and, when it is not the main thread, the main thread's stat (the process's
 * name and start time).  Such a thread's entry holds its process's name, exe,
 * id and start time; its fd, of the thread's own comm, only tells that the
 * thread still lives (its name is not the process's), and so that the
 * process has not exec'd since (execve(2) ends every other thread).  A thread
 * entry also keeps an entry of its process (id, start) in the cache, which an
 * event attributed to the process (journal_event.pid_start) finds.
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
#define PROC_WINDOW    8   /* an id lives in one of 8 slots from id % PROC_CACHE_MAX */
#define PROC_FD_MAX    32

struct proc_ent {
	pid_t pid;	     /* the task's id (a thread's or a process's); 0: free slot */
	uint64_t start;	     /* its start time */
	pid_t tgid;	     /* its process (thread group) id: pid for a main thread */
	uint64_t tgid_start; /* the process's start time: start for a main thread */
	char comm[17];	     /* the process's name */
	char *exe;	     /* malloc'd, "" when unknown */
	int fd;		     /* /proc/PID/comm, or -1 */
	int refs;	     /* readers of fd outside the lock */
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

/* Parse "pid (comm) S ppid ... num_threads ... starttime ..." (proc(5)): comm
 * may hold spaces and parentheses, so it ends at the last ')'. */
static int parse_stat(char *buf, size_t n, char comm[17], uint64_t *start, long *threads)
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
	/* Fields after ')' start at field 3 (state); num_threads is field 20,
	 * starttime field 22. */
	char *p = r + 1;
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EINVAL;
		if (field == 19)
			*threads = strtol(p + 1, NULL, 10);
	}
	char *end;
	*start = strtoull(p + 1, &end, 10);
	return end == p + 1 ? -EINVAL : 0;
}

/* Read /proc/@pid/@file into @buf (@size bytes with the NUL that ends it):
 * its length, or a negative errno (-ESRCH for an empty read: the task is
 * gone). */
static ssize_t read_proc(pid_t pid, const char *file, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = pread(fd, buf, size - 1, 0);
	ssize_t r = n < 0 ? -errno : n == 0 ? -ESRCH : n;
	close(fd);
	if (r > 0)
		buf[r] = 0;
	return r;
}

/* Read /proc/@pid/stat: comm, start time and thread count. */
static int read_stat(pid_t pid, char comm[17], uint64_t *start, long *threads)
{
	char buf[1024];
	ssize_t n = read_proc(pid, "stat", buf, sizeof(buf));
	return n < 0 ? (int)n : parse_stat(buf, (size_t)n, comm, start, threads);
}

/* The thread group id of task @pid: "Tgid:" of /proc/@pid/status (proc(5)),
 * near its top (after Name, whose escaped form is at most 64 bytes, Umask and
 * State). */
static int read_tgid(pid_t pid, pid_t *tgid)
{
	char buf[512];
	ssize_t n = read_proc(pid, "status", buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	char *t = strstr(buf, "\nTgid:");
	if (!t)
		return -EINVAL;
	char *end;
	long v = strtol(t + 6, &end, 10);
	if (end == t + 6 || v <= 0 || v > INT_MAX)
		return -EINVAL;
	*tgid = (pid_t)v;
	return 0;
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
 * used idle one; never @keep. */
static struct proc_ent *victim(struct journal_proc_cache *c, pid_t pid, const struct proc_ent *keep)
{
	struct proc_ent *v = NULL;
	for (int k = 0; k < PROC_WINDOW; k++) {
		struct proc_ent *e = slot(c, pid, k);
		if (e->refs || e == keep)
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

/* With c->lock held: @e is a thread's entry (not its process's main thread);
 * keep an entry of its process, (tgid, tgid_start), in the cache, made from
 * @e's (no /proc read), so that an event attributed to the process by the
 * start time journal_proc_identify() gave finds it, even after the process
 * exited.  Without a slot (all busy), or memory for the exe, it does
 * nothing: that event then reads /proc as one without a start would. */
static void keep_process(struct journal_proc_cache *c, const struct proc_ent *e)
{
	struct proc_ent *p = find(c, e->tgid, e->tgid_start);
	if (!p) {
		p = victim(c, e->tgid, e);
		if (!p)
			return;
		drop_fd(c, p);
		if (p->fd >= 0) /* busy fd: cannot reuse this slot */
			return;
		char *exe = strdup(e->exe ? e->exe : "");
		if (!exe)
			return;
		free(p->exe);
		p->exe = exe;
		p->pid = p->tgid = e->tgid;
		p->start = p->tgid_start = e->tgid_start;
		memcpy(p->comm, e->comm, 17);
	}
	p->used = c->tick;
}

static void copy_out(const struct proc_ent *e, char comm[17], char *exe, size_t exelen,
		     pid_t *pid_out, uint64_t *start_out)
{
	memcpy(comm, e->comm, 17);
	snprintf(exe, exelen, "%s", e->exe ? e->exe : "");
	if (pid_out)
		*pid_out = e->tgid;
	if (start_out)
		*start_out = e->tgid_start;
}

int journal_proc_identify(struct journal_proc_cache *c, pid_t pid, uint64_t start, char comm[17],
			  char *exe, size_t exelen, pid_t *pid_out, uint64_t *start_out)
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
		copy_out(e, comm, exe, exelen, pid_out, start_out);
		pthread_mutex_unlock(&c->lock);
		return 1;
	}
	if (e && e->fd >= 0) {
		e->refs++;
		int fd = e->fd;
		bool thread = e->tgid != e->pid;
		char ocomm[17];
		memcpy(ocomm, e->comm, 17);
		pthread_mutex_unlock(&c->lock);
		char ncomm[17];
		int r = read_comm_fd(fd, ncomm);
		/* A thread's own name is not its process's: its read only tells
		 * that it lives. */
		bool exec_seen = r == 0 && !thread && strcmp(ncomm, ocomm) != 0;
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
			if (thread)
				keep_process(c, e);
			copy_out(e, comm, exe, exelen, pid_out, start_out);
			pthread_mutex_unlock(&c->lock);
			free(nexe);
			return 1;
		}
		/* That task is gone; the id may belong to a new one now. */
		drop_fd(c, e);
		free(nexe);
	}
	pthread_mutex_unlock(&c->lock);

	/* comm first: if the task is replaced between the two opens, the stat
	 * read below sees a different start time than a later lookup would, and
	 * the comm fd fails from then on, so the entry is dropped, never wrong. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char ncomm[17];
	uint64_t nstart = 0;
	long nthreads = 0;
	if (read_stat(pid, ncomm, &nstart, &nthreads) < 0 || (start && nstart != start)) {
		close(fd);
		return 0;
	}
	/* The only thread of its process is the main one (a main thread that
	 * exited stays counted until the whole group has): its id is the
	 * process's.  Else read which process it belongs to and, for another
	 * thread, the main thread's name and start time (its group's id stays
	 * taken while any of the group lives). */
	pid_t tgid = pid;
	uint64_t tgstart = nstart;
	if (nthreads > 1) {
		long ignored;
		if (read_tgid(pid, &tgid) < 0 ||
		    (tgid != pid && read_stat(tgid, ncomm, &tgstart, &ignored) < 0)) {
			close(fd);
			return 0;
		}
	}
	/* The task's own link: the process's, and a main thread that exited
	 * (pthread_exit) has none. */
	char *nexe = malloc(PATH_MAX);
	if (nexe)
		read_exe(pid, nexe, PATH_MAX);

	pthread_mutex_lock(&c->lock);
	struct proc_ent *n = find(c, pid, nstart);
	if (!n) {
		n = victim(c, pid, NULL);
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
		n->tgid = tgid;
		n->tgid_start = tgstart;
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
		if (tgid != pid)
			keep_process(c, n);
		copy_out(n, comm, exe, exelen, pid_out, start_out);
	} else {
		memcpy(comm, ncomm, 17);
		snprintf(exe, exelen, "%s", nexe ? nexe : "");
		if (pid_out)
			*pid_out = tgid;
		if (start_out)
			*start_out = tgstart;
	}
	pthread_mutex_unlock(&c->lock);
	if (fd >= 0)
		close(fd);
	free(nexe);
	return 1;
}
