/*
 * fuse_floor.c - the cheapest FUSE file system there is, to measure what the
 * FUSE transport alone costs on this machine: a flat directory of NFILES
 * files of SIZE bytes of 'x', held in memory, answered by one thread per
 * queue with no work at all (no lookup in a table, no journal, no policy,
 * long entry and attribute timeouts, FOPEN_KEEP_CACHE).  Whatever agentfs adds
 * on top of what this costs is agentfs's own; what this costs over native is
 * the protocol's.  Used by tests/bench/floor.sh.  It speaks the kernel's
 * protocol itself, not through libfuse: libfuse's own work would be part of
 * what it measures, and libfuse 3.14 (Debian 12) has no io_uring transport.
 *
 *   fuse_floor MNT [classic|uring] [NFILES] [SIZE]
 *
 * classic: one thread reads requests from /dev/fuse and answers with writev(2),
 * as libfuse's single-threaded loop does.  uring: FUSE over io_uring (Linux
 * 6.14 and later, protocol 7.42; the fuse module's enable_uring parameter must
 * be Y): INIT still comes through /dev/fuse, then one ring per CPU, each with
 * QDEPTH entries registered (FUSE_IO_URING_CMD_REGISTER), and each answer is
 * committed with the fetch of the next request in one io_uring_enter(2)
 * (FUSE_IO_URING_CMD_COMMIT_AND_FETCH); the layouts are those of
 * include/uapi/linux/fuse.h 7.42 and Documentation/filesystems/fuse-io-uring.rst,
 * which Debian 12's headers predate.
 *
 * Mounts with mount(2), so it runs as root; stays in the foreground until
 * the mount goes (fusermount3 -u MNT), then prints the number of requests it
 * answered (and how many through io_uring) on stderr.  Not part of the meson
 * build: cc -O2 -o fuse_floor fuse_floor.c -luring -lpthread (liburing-dev).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define BUF_SIZE  (1u << 20) /* a request's payload: at least max_write */
#define MAX_WRITE (128u << 10)
#define QDEPTH	  8

/* include/uapi/linux/fuse.h 7.42 */
#define FLOOR_OVER_IO_URING_HI (1u << (41 - 32)) /* FUSE_OVER_IO_URING, in flags2 */
struct floor_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};
struct floor_req_header {
	char in_out[128]; /* fuse_in_header, then fuse_out_header */
	char op_in[128];  /* the request's first argument */
	struct floor_ent_in_out ent;
};
struct floor_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
enum { FLOOR_CMD_REGISTER = 1, FLOOR_CMD_COMMIT_AND_FETCH = 2 };

static int fuse_fd;
static bool use_uring;
static unsigned long nfiles = 1000, fsize = 4096;
static char *content;
static unsigned long answered, by_uring;

static void fill_attr(struct fuse_attr *a, uint64_t ino)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->blksize = 4096;
	if (ino == FUSE_ROOT_ID) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
		a->size = 4096;
	} else {
		a->mode = S_IFREG | 0644;
		a->nlink = 1;
		a->size = fsize;
		a->blocks = (fsize + 511) / 512;
	}
}

static int lookup(const char *name, struct fuse_entry_out *e)
{
	char *end;
	if (name[0] != 'f' || name[1] < '0' || name[1] > '9')
		return -ENOENT;
	unsigned long i = strtoul(name + 1, &end, 10);
	if (*end || i >= nfiles)
		return -ENOENT;
	memset(e, 0, sizeof(*e));
	e->nodeid = 2 + i;
	e->generation = 1;
	e->entry_valid = e->attr_valid = 3600;
	fill_attr(&e->attr, e->nodeid);
	return 0;
}

static size_t list_dir(const struct fuse_read_in *r, char *out)
{
	size_t used = 0;
	for (uint64_t i = r->offset; i < nfiles; i++) {
		char name[24];
		int len = snprintf(name, sizeof(name), "f%lu", (unsigned long)i);
		size_t rec = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + (size_t)len);
		if (used + rec > r->size)
			break;
		struct fuse_dirent *d = (struct fuse_dirent *)(out + used);
		d->ino = 2 + i;
		d->off = i + 1;
		d->namelen = (uint32_t)len;
		d->type = DT_REG;
		memcpy(d->name, name, (size_t)len);
		memset(d->name + len, 0, rec - FUSE_NAME_OFFSET - (size_t)len);
		used += rec;
	}
	return used;
}

/*
 * Answer one request: @in its header, @arg its first argument, @name the
 * name a LOOKUP carries.  The answer's arguments go to @out (which may be
 * where @name is: it is read first), their size to *@outlen.  Returns 0 or a
 * negative errno, or 1 for a request that takes no answer.
 */
static int answer(const struct fuse_in_header *in, const void *arg, const char *name, char *out,
		  size_t *outlen)
{
	*outlen = 0;
	__atomic_fetch_add(&answered, 1, __ATOMIC_RELAXED);
	switch (in->opcode) {
	case FUSE_LOOKUP: {
		struct fuse_entry_out e;
		if (in->nodeid != FUSE_ROOT_ID || lookup(name, &e) < 0)
			return -ENOENT;
		memcpy(out, &e, sizeof(e));
		*outlen = sizeof(e);
		return 0;
	}
	case FUSE_GETATTR: {
		struct fuse_attr_out a;
		memset(&a, 0, sizeof(a));
		a.attr_valid = 3600;
		fill_attr(&a.attr, in->nodeid);
		memcpy(out, &a, sizeof(a));
		*outlen = sizeof(a);
		return 0;
	}
	case FUSE_OPEN:
	case FUSE_OPENDIR: {
		struct fuse_open_out o;
		memset(&o, 0, sizeof(o));
		o.fh = in->nodeid;
		o.open_flags =
		    FOPEN_KEEP_CACHE | (in->opcode == FUSE_OPENDIR ? FOPEN_CACHE_DIR : 0);
		memcpy(out, &o, sizeof(o));
		*outlen = sizeof(o);
		return 0;
	}
	case FUSE_READ: {
		struct fuse_read_in r;
		memcpy(&r, arg, sizeof(r));
		size_t n = r.offset >= fsize ? 0 : fsize - r.offset;
		if (n > r.size)
			n = r.size;
		memcpy(out, content + r.offset, n);
		*outlen = n;
		return 0;
	}
	case FUSE_READDIR: {
		struct fuse_read_in r;
		memcpy(&r, arg, sizeof(r));
		*outlen = list_dir(&r, out);
		return 0;
	}
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
		return 0;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
		return 1;
	default:
		return -ENOSYS; /* FLUSH among them: the kernel stops sending it */
	}
}

static int answer_init(const struct fuse_in_header *in, const struct fuse_init_in *ii)
{
	struct fuse_init_out o;
	memset(&o, 0, sizeof(o));
	o.major = FUSE_KERNEL_VERSION;
	o.minor = FUSE_KERNEL_MINOR_VERSION;
	o.max_readahead = ii->max_readahead;
	o.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT |
		  FUSE_PARALLEL_DIROPS | FUSE_CACHE_SYMLINKS;
	o.flags2 = use_uring ? FLOOR_OVER_IO_URING_HI : 0;
	o.max_background = 16;
	o.congestion_threshold = 12;
	o.max_write = MAX_WRITE;
	o.max_pages = MAX_WRITE / 4096;
	o.time_gran = 1;
	struct fuse_out_header oh = {.len = sizeof(oh) + sizeof(o), .unique = in->unique};
	struct iovec v[2] = {{&oh, sizeof(oh)}, {&o, sizeof(o)}};
	return writev(fuse_fd, v, 2) < 0 ? -errno : 0;
}

/* /dev/fuse: everything in classic mode; INIT, FORGETs and INTERRUPTs in
 * uring mode.  Returns at unmount. */
static void classic_loop(void)
{
	char *buf = malloc(BUF_SIZE + 4096), *out = malloc(BUF_SIZE);
	if (!buf || !out) {
		fprintf(stderr, "fuse_floor: out of memory\n");
		exit(1);
	}
	for (;;) {
		ssize_t n = read(fuse_fd, buf, BUF_SIZE + 4096);
		if (n < 0 && (errno == EINTR || errno == ENOENT || errno == EAGAIN))
			continue;
		if (n < 0) {
			if (errno != ENODEV)
				perror("fuse_floor: read /dev/fuse");
			break;
		}
		const struct fuse_in_header *in = (const void *)buf;
		if (in->opcode == FUSE_INIT) {
			if (answer_init(in, (const void *)(in + 1)) < 0)
				perror("fuse_floor: INIT");
			continue;
		}
		size_t outlen;
		int err = answer(in, in + 1, (const char *)(in + 1), out, &outlen);
		if (err == 1)
			continue;
		struct fuse_out_header oh = {.len = (uint32_t)(sizeof(oh) + (err ? 0 : outlen)),
					     .error = err,
					     .unique = in->unique};
		struct iovec v[2] = {{&oh, sizeof(oh)}, {out, err ? 0 : outlen}};
		if (writev(fuse_fd, v, err || !outlen ? 1 : 2) < 0 && errno != ENOENT)
			perror("fuse_floor: writev /dev/fuse");
	}
	free(buf);
	free(out);
}

struct ent {
	struct floor_req_header *hdr;
	char *payload;
	struct iovec iov[2];
};

struct queue {
	int qid;
	struct io_uring ring;
	struct ent ents[QDEPTH];
};

static void submit_cmd(struct io_uring *ring, struct ent *e, int qid, uint32_t cmd, uint64_t commit)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	if (!sqe) { /* full: cannot happen with 2 * QDEPTH entries and QDEPTH commands */
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
		if (!sqe)
			return;
	}
	/* A 128-byte SQE (IORING_SETUP_SQE128): the command's 80 bytes follow
	 * the 48 of the common fields. */
	memset(sqe, 0, 2 * sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fuse_fd;
	sqe->cmd_op = cmd;
	sqe->addr = (uint64_t)(uintptr_t)e->iov;
	sqe->len = 2;
	sqe->user_data = (uint64_t)(uintptr_t)e;
	struct floor_cmd_req req = {.commit_id = commit, .qid = (uint16_t)qid};
	memcpy(sqe->cmd, &req, sizeof(req));
}

static void *uring_loop(void *arg)
{
	struct queue *q = arg;
	/* The kernel queues a request on the ring of the CPU it was made on. */
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(q->qid, &cpus);
	pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
	int r = io_uring_queue_init_params(2 * QDEPTH, &q->ring, &p);
	if (r < 0) {
		fprintf(stderr, "fuse_floor: io_uring_queue_init: %s\n", strerror(-r));
		return NULL;
	}
	for (int i = 0; i < QDEPTH; i++) {
		struct ent *e = &q->ents[i];
		e->hdr = aligned_alloc(4096, 4096);
		e->payload = aligned_alloc(4096, BUF_SIZE);
		if (!e->hdr || !e->payload) {
			fprintf(stderr, "fuse_floor: out of memory\n");
			exit(1);
		}
		memset(e->hdr, 0, 4096);
		e->iov[0] = (struct iovec){e->hdr, sizeof(*e->hdr)};
		e->iov[1] = (struct iovec){e->payload, BUF_SIZE};
		submit_cmd(&q->ring, e, q->qid, FLOOR_CMD_REGISTER, 0);
	}
	io_uring_submit(&q->ring);
	for (;;) {
		struct io_uring_cqe *cqe;
		r = io_uring_wait_cqe(&q->ring, &cqe);
		if (r == -EINTR)
			continue;
		if (r < 0)
			break;
		struct ent *e = (void *)(uintptr_t)cqe->user_data;
		int res = cqe->res;
		io_uring_cqe_seen(&q->ring, cqe);
		if (res < 0) {
			if (res != -ENOTCONN && res != -ENODEV)
				fprintf(stderr, "fuse_floor: queue %d: %s\n", q->qid,
					strerror(-res));
			break;
		}
		__atomic_fetch_add(&by_uring, 1, __ATOMIC_RELAXED);
		const struct fuse_in_header *in = (const void *)e->hdr->in_out;
		uint64_t unique = in->unique, commit = e->hdr->ent.commit_id;
		size_t outlen;
		int err = answer(in, e->hdr->op_in, e->payload, e->payload, &outlen);
		if (err == 1)
			err = 0; /* the ring entry is committed all the same */
		struct fuse_out_header oh = {.len = (uint32_t)(sizeof(oh) + (err ? 0 : outlen)),
					     .error = err,
					     .unique = unique};
		memcpy(e->hdr->in_out, &oh, sizeof(oh));
		e->hdr->ent.payload_sz = err ? 0 : (uint32_t)outlen;
		submit_cmd(&q->ring, e, q->qid, FLOOR_CMD_COMMIT_AND_FETCH, commit);
		io_uring_submit(&q->ring);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 5 ||
	    (argc > 2 && strcmp(argv[2], "classic") != 0 && strcmp(argv[2], "uring") != 0)) {
		fprintf(stderr, "usage: fuse_floor MNT [classic|uring] [NFILES] [SIZE]\n");
		return 2;
	}
	use_uring = argc > 2 && strcmp(argv[2], "uring") == 0;
	if (argc > 3)
		nfiles = strtoul(argv[3], NULL, 10);
	if (argc > 4)
		fsize = strtoul(argv[4], NULL, 10);
	if (use_uring) {
		FILE *f = fopen("/sys/module/fuse/parameters/enable_uring", "r");
		int c = f ? fgetc(f) : EOF;
		if (f)
			fclose(f);
		if (c != 'Y') {
			fprintf(stderr, "fuse_floor: uring: /sys/module/fuse/parameters/"
					"enable_uring is not Y\n");
			return 1;
		}
	}
	content = malloc(fsize ? fsize : 1);
	if (!content)
		return 1;
	memset(content, 'x', fsize);
	fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse_fd < 0) {
		perror("fuse_floor: /dev/fuse");
		return 1;
	}
	char opts[128];
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=%u,group_id=%u,default_permissions", fuse_fd,
		 getuid(), getgid());
	if (mount("fuse_floor", argv[1], "fuse.fuse_floor", MS_NOSUID | MS_NODEV, opts) < 0) {
		fprintf(stderr, "fuse_floor: mount %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (use_uring) {
		/* INIT through /dev/fuse first: the rings register after it. */
		char *buf = malloc(BUF_SIZE + 4096);
		ssize_t n = buf ? read(fuse_fd, buf, BUF_SIZE + 4096) : -1;
		const struct fuse_in_header *in = (const void *)buf;
		if (n < (ssize_t)sizeof(*in) || in->opcode != FUSE_INIT ||
		    answer_init(in, (const void *)(in + 1)) < 0) {
			fprintf(stderr, "fuse_floor: no INIT\n");
			return 1;
		}
		free(buf);
		long ncpu = sysconf(_SC_NPROCESSORS_CONF);
		struct queue *qs = calloc((size_t)ncpu, sizeof(*qs));
		for (long i = 0; qs && i < ncpu; i++) {
			pthread_t t;
			qs[i].qid = (int)i;
			if (pthread_create(&t, NULL, uring_loop, &qs[i]) == 0)
				pthread_detach(t);
		}
	}
	classic_loop();
	fprintf(stderr, "fuse_floor: %lu requests answered, %lu through io_uring\n", answered,
		by_uring);
	return 0;
}
