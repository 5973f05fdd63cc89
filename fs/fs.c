/*
 * fs.c - mounting the merged view and running the FUSE session.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/internal.h"

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Lookups and listings in one directory may run in parallel; the
	 * daemon orders namespace changes itself (ns_lock). */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* O_TRUNC arrives with open instead of as a separate setattr, so the
	 * journal sees one event and copy-up happens once. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Page cache of a file is dropped when its mtime or size changes at a
	 * getattr: a lower file the person edits is not served stale forever. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* Writes are spliced straight into the upper file. */
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
	conn->want &= ~(unsigned)FUSE_CAP_EXPORT_SUPPORT;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.link = op_link,
	.statfs = op_statfs,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write_buf = op_write_buf,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.copy_file_range = op_copy_file_range,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};

/* SIGUSR1 asks the daemon to drop every cached answer: the upper changed
 * behind the mount (agentfs discard).  Handled on a thread of its own,
 * since notifications must not be sent from a signal handler. */
static void *signal_thread(void *arg)
{
	struct agentfs *fs = arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGUSR1)
			table_invalidate_all(fs);
	}
	return NULL;
}

static int add_opt(struct fuse_args *args, const char *opt)
{
	return fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opt) ? -ENOMEM : 0;
}

static void signal_ready(int *fd)
{
	if (*fd < 0)
		return;
	ssize_t w;
	do
		w = write(*fd, "1", 1);
	while (w < 0 && errno == EINTR);
	close(*fd);
	*fd = -1;
}

int fs_serve(const struct fs_config *cfg)
{
	struct agentfs *fs = calloc(1, sizeof(*fs));
	int ready_fd = cfg->ready_fd;
	int r = 0;
	if (!fs) {
		r = -ENOMEM;
		goto out_ready;
	}
	fs->cfg = cfg;
	fs->lower_fd = cfg->lower_fd;
	fs->upper_fd = cfg->upper_fd;
	fs->work_fd = cfg->work_fd;
	fs->policy = cfg->policy;
	fs->journal = cfg->journal;
	fs->use_openat2 = true;
	fs->timeout = 1.0;
	pthread_mutex_init(&fs->copyup_lock, NULL);
	struct stat lst, ust;
	if (fstat(fs->lower_fd, &lst) < 0 || fstat(fs->upper_fd, &ust) < 0) {
		r = -errno;
		goto out_free;
	}
	fs->lower_dev = lst.st_dev;
	fs->tag_upper_ino = lst.st_dev != ust.st_dev;
	if ((r = table_init(fs)) < 0)
		goto out_free;
	fs->root.ino = (uint64_t)lst.st_ino;
	if (!(fs->hashes = hashcache_new())) {
		r = -ENOMEM;
		goto out_table;
	}

	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char fsname[512];
	snprintf(fsname, sizeof(fsname), "fsname=%s,subtype=agentfs",
		 cfg->fsname ? cfg->fsname : "agentfs");
	/* default_permissions: the kernel checks modes against the caller
	 * (fuse.rst, "default_permissions"), so permission checks bite exactly
	 * as on the lower, and the daemon never decides access by itself. */
	if (fuse_opt_add_arg(&args, "agentfs") || add_opt(&args, "default_permissions") ||
	    add_opt(&args, fsname) || (cfg->fuse_opts && add_opt(&args, cfg->fuse_opts)) ||
	    (cfg->debug && fuse_opt_add_arg(&args, "-d"))) {
		r = -ENOMEM;
		goto out_args;
	}
	fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	if (!fs->se) {
		r = -EINVAL;
		goto out_args;
	}
	if (fuse_set_signal_handlers(fs->se) != 0) {
		r = -EIO;
		goto out_session;
	}
	/* SIGUSR1 goes to the signal thread only: block it before any
	 * worker thread exists so they all inherit the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t sigthr;
	bool have_sigthr = pthread_create(&sigthr, NULL, signal_thread, fs) == 0;

	if (fuse_session_mount(fs->se, cfg->mountpoint) != 0) {
		r = -EIO;
		goto out_signals;
	}
	signal_ready(&ready_fd);

	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	if (!lc) {
		r = -ENOMEM;
		goto out_unmount;
	}
	/* Two cores here; a few more threads than cores keep the kernel's
	 * queue drained while some wait on disk. */
	fuse_loop_cfg_set_max_threads(lc, 16);
	fuse_loop_cfg_set_idle_threads(lc, 4);
	int lr = fuse_session_loop_mt(fs->se, lc);
	fuse_loop_cfg_destroy(lc);
	r = lr < 0 ? lr : 0;
out_unmount:
	fuse_session_unmount(fs->se);
out_signals:
	if (have_sigthr) {
		pthread_cancel(sigthr);
		pthread_join(sigthr, NULL);
	}
	fuse_remove_signal_handlers(fs->se);
out_session:
	fuse_session_destroy(fs->se);
out_args:
	fuse_opt_free_args(&args);
	hashcache_free(fs->hashes);
out_table:
	table_destroy(fs);
out_free:
	pthread_mutex_destroy(&fs->copyup_lock);
	free(fs);
out_ready:
	if (ready_fd >= 0)
		close(ready_fd);
	return r;
}
