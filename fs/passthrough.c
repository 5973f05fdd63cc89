/*
 * passthrough.c - FUSE passthrough: reads and writes of upper files served by
 * the kernel from the upper file itself, without a round trip to the daemon.
 *
 * Linux 6.9 and later let a FUSE server answer an OPEN with a "backing file"
 * (Documentation/filesystems/fuse-passthrough.rst): the server registers a
 * file it holds open with the FUSE_DEV_IOC_BACKING_OPEN ioctl of /dev/fuse,
 * gets an id, and replies to OPEN or CREATE with FOPEN_PASSTHROUGH and that
 * id; the kernel then does the file's read(2), write(2), splice and mmap on
 * the backing file directly.  The connection must have negotiated
 * FUSE_PASSTHROUGH in its INIT reply, with a max_stack_depth, and the ioctl
 * needs CAP_SYS_ADMIN (fs/fuse/passthrough.c, fuse_backing_open), so only a
 * daemon run as root gets it; an unprivileged mount serves every request
 * itself as before.
 *
 * libfuse 3.14 knows none of it: its INIT reply has no way to ask for bits
 * above 31 and its open reply has no backing id.  Both replies are patched on
 * their way to /dev/fuse, in the writev of a custom I/O (fuse_session_custom_io
 * in fuse_lowlevel.h), whose other calls are the plain system calls.  The
 * layouts are the kernel's (include/uapi/linux/fuse.h, protocol 7.40): in
 * fuse_init_out, flags at byte 12, flags2 at byte 32 and max_stack_depth at
 * byte 36; in fuse_open_out, open_flags at byte 8 and backing_id at byte 12
 * (padding in libfuse's 7.38 header, which it zeroes).
 *
 * The INIT reply also says FUSE_HANDLE_KILLPRIV_V2 (Linux 5.11), for every
 * mount, the unprivileged ones included: the daemon clears the set-ID bits
 * itself (fs_kill_suidgid), and in return the kernel marks the superblock
 * SB_NOSEC, so a file found without set-ID bits or security.capability
 * stays marked S_NOSEC until its attributes are next refreshed.  Before, it
 * asked GETXATTR security.capability before every write(2) (file_remove_privs,
 * fs/inode.c): 12,893 such requests during a `make -j2` of libbpf, 156 with
 * it.  libfuse 3.14 cannot ask for it (no FUSE_CAP_HANDLE_KILLPRIV_V2).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fs/internal.h"

/* include/uapi/linux/fuse.h, 7.40 */
#define PT_FUSE_INIT_EXT       (1u << 30)
#define PT_FUSE_KILLPRIV_V2    (1u << 28)	 /* FUSE_HANDLE_KILLPRIV_V2, in flags */
#define PT_FUSE_PASSTHROUGH_HI (1u << (37 - 32)) /* FUSE_PASSTHROUGH, in flags2 */
#define PT_FOPEN_PASSTHROUGH   (1u << 7)
/* What may come with it (FOPEN_PASSTHROUGH_MASK, fs/fuse/iomode.c: any other
 * bit, FOPEN_KEEP_CACHE included, fails the open with EIO): FOPEN_DIRECT_IO,
 * FOPEN_NOFLUSH, FOPEN_PARALLEL_DIRECT_WRITES. */
#define PT_FOPEN_ALLOWED   ((1u << 0) | (1u << 5) | (1u << 6))
#define PT_INIT_OUT_SIZE   64
#define PT_OPEN_OUT_SIZE   16
#define PT_ENTRY_OUT_SIZE  128
#define PT_OUT_HEADER_SIZE 16

struct pt_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define PT_DEV_IOC_MAGIC	 229
#define PT_DEV_IOC_BACKING_OPEN	 _IOW(PT_DEV_IOC_MAGIC, 1, struct pt_backing_map)
#define PT_DEV_IOC_BACKING_CLOSE _IOW(PT_DEV_IOC_MAGIC, 2, uint32_t)

/* The backing id the reply this thread is about to send should carry (an
 * OPEN's or a CREATE's), 0 for none. */
static _Thread_local uint32_t reply_backing;

static void patch_init(struct agentfs *fs, struct iovec *iov, int count, char *copy)
{
	if (count != 2 || iov[0].iov_len != PT_OUT_HEADER_SIZE ||
	    iov[1].iov_len != PT_INIT_OUT_SIZE)
		return;
	memcpy(copy, iov[1].iov_base, PT_INIT_OUT_SIZE);
	uint32_t major, flags, flags2, depth = 1;
	memcpy(&major, copy, 4);
	memcpy(&flags, copy + 12, 4);
	memcpy(&flags2, copy + 32, 4);
	if (major != 7)
		return;
	flags |= PT_FUSE_KILLPRIV_V2;
	memcpy(copy + 12, &flags, 4);
	iov[1].iov_base = copy;
	/* flags2 is read by the kernel only with FUSE_INIT_EXT, which libfuse
	 * sets when the kernel offered it. */
	if (!fs->pt_attached || !(flags & PT_FUSE_INIT_EXT))
		return;
	flags2 |= PT_FUSE_PASSTHROUGH_HI;
	memcpy(copy + 32, &flags2, 4);
	memcpy(copy + 36, &depth, 4);
	__atomic_store_n(&fs->pt_offered, true, __ATOMIC_RELAXED);
}

static void patch_open(struct iovec *iov, int count, char *copy, uint32_t id)
{
	if (count != 2 || iov[0].iov_len != PT_OUT_HEADER_SIZE)
		return;
	size_t at;
	if (iov[1].iov_len == PT_OPEN_OUT_SIZE)
		at = 0;
	else if (iov[1].iov_len == PT_ENTRY_OUT_SIZE + PT_OPEN_OUT_SIZE)
		at = PT_ENTRY_OUT_SIZE;
	else
		return;
	memcpy(copy, iov[1].iov_base, iov[1].iov_len);
	uint32_t open_flags;
	memcpy(&open_flags, copy + at + 8, 4);
	open_flags = (open_flags & PT_FOPEN_ALLOWED) | PT_FOPEN_PASSTHROUGH;
	memcpy(copy + at + 8, &open_flags, 4);
	memcpy(copy + at + 12, &id, 4);
	iov[1].iov_base = copy;
}

static ssize_t pt_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct agentfs *fs = userdata;
	char copy[PT_ENTRY_OUT_SIZE + PT_OPEN_OUT_SIZE];
	struct iovec v[2];
	/* The first reply of a session is INIT's: the kernel sends nothing
	 * else before it is answered.  (Read first: every reply passes here.) */
	bool init = !__atomic_load_n(&fs->pt_init_seen, __ATOMIC_RELAXED) &&
		    !__atomic_exchange_n(&fs->pt_init_seen, true, __ATOMIC_RELAXED);
	uint32_t id = reply_backing;
	reply_backing = 0;
	if (count != 2 || (!init && !id))
		return writev(fd, iov, count);
	memcpy(v, iov, sizeof(v));
	if (init)
		patch_init(fs, v, count, copy);
	else
		patch_open(v, count, copy, id);
	return writev(fd, v, count);
}

static ssize_t pt_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

static ssize_t pt_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			 unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

void passthrough_attach(struct agentfs *fs)
{
	static const struct fuse_custom_io io = {
	    .writev = pt_writev,
	    .read = pt_read,
	    .splice_receive = pt_splice,
	    .splice_send = pt_splice,
	};
	if (fuse_session_custom_io(fs->se, &io, fuse_session_fd(fs->se)) == 0)
		fs->pt_attached = fs->cfg->passthrough && geteuid() == 0;
}

bool passthrough_usable(const struct agentfs *fs)
{
	return __atomic_load_n(&fs->pt_offered, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&fs->pt_failed, __ATOMIC_RELAXED);
}

uint32_t passthrough_backing_open(struct agentfs *fs, int fd)
{
	struct pt_backing_map map = {.fd = fd};
	int id = ioctl(fuse_session_fd(fs->se), PT_DEV_IOC_BACKING_OPEN, &map);
	if (id > 0) {
		if (!__atomic_exchange_n(&fs->pt_logged, true, __ATOMIC_RELAXED))
			fprintf(stderr, "agentfs: passthrough: the kernel reads and writes the "
					"agent's files itself\n");
		return (uint32_t)id;
	}
	/* EPERM (no CAP_SYS_ADMIN, or the kernel did not take the INIT's
	 * FUSE_PASSTHROUGH), ENOTTY (no passthrough in this kernel): never
	 * again.  Anything else (EMFILE, ENOMEM, ELOOP for a backing file on a
	 * stacked file system) concerns this file. */
	if (id < 0 && (errno == EPERM || errno == ENOTTY || errno == EINVAL) &&
	    !__atomic_exchange_n(&fs->pt_failed, true, __ATOMIC_RELAXED))
		fprintf(stderr,
			"agentfs: passthrough: refused by the kernel (%s): every read "
			"and write goes through the daemon\n",
			strerror(errno));
	return 0;
}

void passthrough_backing_close(struct agentfs *fs, uint32_t id)
{
	if (id)
		(void)ioctl(fuse_session_fd(fs->se), PT_DEV_IOC_BACKING_CLOSE, &id);
}

void passthrough_reply_with(uint32_t id)
{
	reply_backing = id;
}
