/*
 * fs.c - mounting the merged view and running the FUSE session.
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <mntent.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/internal.h"
#include "fs/layout.h"

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct agentfs *fs = userdata;
	/* Directories need no open: saves two round trips per listing and lets
	 * the kernel cache listings (see op_opendir). */
	fs->no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
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
	/* Listings carry attributes; the kernel picks plain or plus. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
	/* Writes are spliced straight into the upper file: libfuse receives
	 * requests through its pipe (FS_PIPE_SIZE, fs/internal.h) while a
	 * file is being written in large blocks (fs/loop.c, receive()). */
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
	/* Large reads are spliced from the layer's file to the kernel: the
	 * data is not copied through the daemon (see op_read). */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE) {
		conn->want |= FUSE_CAP_SPLICE_WRITE;
		fs->splice_write = true;
	}
	/* Readahead of fs_readahead() per request.  The kernel takes the smaller
	 * of this and the mount's bdi window, which starts at 128 KiB
	 * (fuse_bdi_init(), process_init_reply() in fs/fuse/inode.c): see
	 * raise_readahead() for the other half. */
	conn->max_readahead = (unsigned)fs_readahead();
	/* libfuse offers its own largest (its buffer's, or 32 pages where the
	 * kernel has no FUSE_MAX_PAGES): only ever lowered. */
	if (conn->max_write > fs_max_write())
		conn->max_write = (unsigned)fs_max_write();
	conn->want &= ~(unsigned)FUSE_CAP_EXPORT_SUPPORT;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .access = op_access,
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
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write_buf = op_write_buf,
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

/* Drop the kernel's entry for one view path (see FS_INVALIDATE_FILE).  Each
 * directory on the way is held (node_ref) from its lookup until its child's
 * entry is dropped: the kernel forgets what an invalidation dropped, and a
 * FORGET answered meanwhile would free it. */
static void invalidate_path(struct agentfs *fs, char *path)
{
	struct node *dir = &fs->root;
	char *save = NULL;
	for (char *comp = strtok_r(path, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		pthread_rwlock_rdlock(&fs->ns_lock);
		struct node *c = node_find(fs, dir, comp);
		bool is_dir = c && S_ISDIR(c->type);
		if (c)
			node_ref(fs, c);
		pthread_rwlock_unlock(&fs->ns_lock);
		entry_invalidate(fs, dir->id, comp, is_dir);
		if (dir != &fs->root)
			node_unref(fs, dir);
		if (!c)
			return; /* the kernel caches nothing below an unknown name */
		dir = c;
	}
	if (dir != &fs->root)
		node_unref(fs, dir);
}

static void take_invalidations(struct agentfs *fs)
{
	if (!fs->cfg->state_dir)
		return;
	char from[PATH_MAX], to[PATH_MAX];
	snprintf(from, sizeof(from), "%s/%s", fs->cfg->state_dir, FS_INVALIDATE_FILE);
	snprintf(to, sizeof(to), "%s/%s", fs->cfg->state_dir, FS_INVALIDATE_TAKEN);
	if (rename(from, to) < 0)
		return;
	/* discard removed or restored upper directories behind the daemon. */
	dircache_forget(fs);
	FILE *f = fopen(to, "re");
	if (f) {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n;
		while ((n = getdelim(&line, &cap, '\0', f)) > 0) {
			if (line[n - 1] == 0)
				n--;
			line[n] = 0;
			size_t mark = strlen(FS_INVALIDATE_DISCARDED);
			char *path = line;
			if (strncmp(line, FS_INVALIDATE_DISCARDED, mark) == 0) {
				/* Discarded, not only changed: on record, or verify
				 * would miss what left the upper (journal/SCHEMA.md). */
				path += mark;
				node_discard_path(fs, path);
				struct journal_event ev = {
				    .op = JOP_DISCARD, .path = path, .detail = "agentfs discard"};
				fs_record_ev(fs, NULL, &ev);
			}
			if (*path)
				invalidate_path(fs, path);
		}
		free(line);
		fclose(f);
	}
}

static void release_invalidations(struct agentfs *fs)
{
	if (!fs->cfg->state_dir)
		return;
	char to[PATH_MAX];
	snprintf(to, sizeof(to), "%s/%s", fs->cfg->state_dir, FS_INVALIDATE_TAKEN);
	unlink(to);
}

/* SIGUSR1 asks the daemon to drop every cached answer: the upper changed
 * behind the mount (agentfs discard).  The handler only writes a byte to a
 * pipe (async-signal-safe, and correct whichever thread the kernel picks,
 * including threads the caller started before fs_serve); a thread of its own
 * does the work, since notifications must not be sent from a handler. */
static int usr1_pipe[2] = {-1, -1};

static void on_usr1(int sig)
{
	int saved = errno;
	(void)!write(usr1_pipe[1], sig == SIGUSR2 ? "f" : "u", 1);
	errno = saved;
}

/* SIGUSR2: write the journal out for a reader (FS_FLUSH_FILE). */
static void flush_for_reader(struct agentfs *fs)
{
	if (!fs->cfg->state_dir)
		return;
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", fs->cfg->state_dir, FS_FLUSH_FILE);
	if (access(p, F_OK) != 0)
		return;
	/* Writes through handles still open are on record too: the reader
	 * compares the upper with the journal. */
	fs_record_pending_writes(fs);
	int r = journal_flush(fs->journal);
	if (r < 0) {
		/* The reader would take the upper's newest files for changes made
		 * behind agentfs's back: tell it the journal is behind. */
		char failed[PATH_MAX];
		snprintf(failed, sizeof(failed), "%s/%s", fs->cfg->state_dir, FS_FLUSH_FAILED);
		fprintf(stderr, "agentfs: journal: cannot write journal.jsonl: %s\n", strerror(-r));
		/* Sized first: the reader looks at the answer as soon as the
		 * request's name is gone (an empty one would read as EIO). */
		if (truncate(p, -r) == 0 && rename(p, failed) == 0)
			return;
	}
	unlink(p);
}

static void *signal_thread(void *arg)
{
	struct agentfs *fs = arg;
	char c;
	for (;;) {
		ssize_t n = read(usr1_pipe[0], &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || c == 'q')
			break;
		if (c == 'f') {
			flush_for_reader(fs);
			continue;
		}
		take_invalidations(fs);
		table_invalidate_all(fs);
		release_invalidations(fs);
	}
	return NULL;
}

/* Builds the private .git after the mount serves (fs_config.git_prepare);
 * lookups of ".git" wait for it.  A failed build leaves an empty private
 * directory: git in the view then says it is not a repository, and the
 * reason is in the daemon's log. */
static void *git_thread(void *arg)
{
	struct agentfs *fs = arg;
	int r = fs->cfg->git_prepare(fs->cfg->git_prepare_arg);
	if (r < 0 && r != -ECANCELED) /* stopped by the unmount: said already */
		fprintf(stderr, "agentfs: private .git: %s\n", strerror(-r));
	pthread_mutex_lock(&fs->git_lock);
	__atomic_store_n(&fs->git_ready, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&fs->git_cond);
	pthread_mutex_unlock(&fs->git_lock);
	fs_git_run_parked(fs); /* the requests that waited for it (loop.c) */
	return NULL;
}

void fs_git_changed(struct agentfs *fs, const char *rel_dir)
{
	char buf[FS_PATH_MAX];
	if (!fs || fs->git_fd < 0 ||
	    (size_t)snprintf(buf, sizeof(buf), "%s", rel_dir) >= sizeof(buf))
		return;
	/* The node of ".git/REL_DIR", if the kernel was ever given it: else
	 * it caches nothing there. */
	fuse_ino_t ino = 0;
	char *save = NULL;
	pthread_rwlock_rdlock(&fs->ns_lock);
	struct node *n = node_find(fs, &fs->root, ".git");
	for (char *c = strtok_r(buf, "/", &save); n && c; c = strtok_r(NULL, "/", &save))
		n = node_find(fs, n, c);
	if (n)
		ino = n->id;
	pthread_rwlock_unlock(&fs->ns_lock);
	if (ino)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
}

void fs_git_pending(struct agentfs *fs, bool pending)
{
	if (fs)
		__atomic_store_n(&fs->git_pending, pending, __ATOMIC_RELEASE);
}

static int add_opt(struct fuse_args *args, const char *opt)
{
	return fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opt) ? -ENOMEM : 0;
}

/* Is this process root in the initial user namespace, real and effective,
 * user and group?  Its mount is then root's alone (the mount's owner is the
 * real uid and gid: libfuse's mount.c), and root's capabilities mean what
 * capabilities(7) says.  The initial namespace maps every uid to itself
 * (user_namespaces(7), /proc/self/uid_map "0 0 4294967295"). */
static bool root_alone(void)
{
	if (getuid() != 0 || geteuid() != 0 || getgid() != 0 || getegid() != 0)
		return false;
	FILE *f = fopen("/proc/self/uid_map", "re");
	if (!f)
		return false;
	unsigned long inside = 1, outside = 1, count = 0;
	bool initial = fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3 && inside == 0 &&
		       outside == 0 && count == 4294967295UL;
	fclose(f);
	return initial;
}

/* Is @opt one of the comma-separated options @opts (NULL: none)?
 * hasmntopt(3) only reads the string. */
static bool has_opt(const char *opts, const char *opt)
{
	struct mntent m = {.mnt_opts = (char *)opts};
	return opts && hasmntopt(&m, opt) != NULL;
}

void fs_signal_ready(int *fd)
{
	if (*fd < 0)
		return;
	/* Tests widen the window between the mount and the ready byte. */
	const char *rd = getenv("AGENTFS_TEST_READY_DELAY_MS");
	if (rd)
		poll(NULL, 0, (int)strtol(rd, NULL, 10));
	ssize_t w;
	do
		w = write(*fd, "1", 1);
	while (w < 0 && errno == EINTR);
	close(*fd);
	*fd = -1;
}

/*
 * Widen the new mount's readahead window to fs_readahead(), the size
 * op_init() offers: a FUSE mount's backing device starts at 128 KiB
 * (VM_READAHEAD_PAGES), and INIT can only lower it, so a sequential read
 * would otherwise cost a READ round trip per 128 KiB.  The window is the
 * mount's bdi attribute read_ahead_kb (Documentation/ABI/stable/
 * sysfs-class-bdi), writable by root only: an unprivileged mount keeps the
 * kernel's default.  The device number comes from the mount's root without a
 * request to this daemon, which serves none yet: O_PATH opens nothing, and
 * AT_STATX_DONT_SYNC answers from the attributes the kernel holds (statx(2)).
 */
static void raise_readahead(const char *mountpoint)
{
	int fd = open(mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	/* The system call itself: glibc's statx() falls back to fstatat()
	 * where the call is refused (ENOSYS under some seccomp profiles), and
	 * that would send a GETATTR nobody answers yet. */
	struct statx stx;
	long r = syscall(SYS_statx, fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, &stx);
	close(fd);
	/* Only a FUSE mount's root: an anonymous device (major 0), and the
	 * root of a mount where the kernel says (STATX_ATTR_MOUNT_ROOT, 5.8). */
	if (r < 0 || stx.stx_dev_major != 0 ||
	    ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	     !(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)))
		return;
	char path[96];
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", stx.stx_dev_major,
		 stx.stx_dev_minor);
	int bfd = open(path, O_WRONLY | O_CLOEXEC);
	if (bfd < 0)
		return;
	char v[16];
	int n = snprintf(v, sizeof(v), "%zu", fs_readahead() / 1024);
	(void)!write(bfd, v, (size_t)n);
	close(bfd);
}

/* The view's root is the upper's root directory: on a workspace's first
 * mount it takes the lower root's mode, owner and times, once (the agent may
 * chmod it later). */
static void init_upper_root(struct agentfs *fs, const struct stat *lst)
{
	static const char key[] = LAYOUT_XATTR_PREFIX "root";
	char v[2];
	if (fgetxattr(fs->upper_fd, key, v, sizeof(v)) >= 0 || errno != ENODATA)
		return;
	(void)!fchown(fs->upper_fd, lst->st_uid, lst->st_gid);
	fchmod(fs->upper_fd, lst->st_mode & 07777);
	struct timespec ts[2] = {lst->st_atim, lst->st_mtim};
	futimens(fs->upper_fd, ts);
	fsetxattr(fs->upper_fd, key, "y", 1, 0);
}

/* Copy-ups that a crash interrupted are only ever in work/: drop them. */
static void clean_work(int work_fd)
{
	int fd = openat(work_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, "copyup.", 7) == 0)
			unlinkat(work_fd, de->d_name, 0);
	closedir(d);
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
	const char *cd = getenv("AGENTFS_TEST_COPYUP_DELAY_MS");
	fs->copyup_delay_ms = cd ? (unsigned)strtoul(cd, NULL, 10) : 0;
	fs->lower_fd = cfg->lower_fd;
	fs->upper_fd = cfg->upper_fd;
	fs->work_fd = cfg->work_fd;
	fs->policy = cfg->policy;
	fs->journal = cfg->journal;
	fs->use_openat2 = true;
	fs->timeout = FS_LONG_TIMEOUT;
	fs->inotify_fd = -1;
	fs->git_fd = -1;
	fs->is_root = geteuid() == 0;
	fs->work_uid = geteuid();
	fs->work_gid = getegid();
	struct stat wst;
	if (fstat(fs->work_fd, &wst) != 0 || wst.st_gid != fs->work_gid)
		fs->work_gid = (gid_t)-1;
	fs->work_acl =
	    fgetxattr(fs->work_fd, "system.posix_acl_default", NULL, 0) >= 0 || errno != ENODATA;
	/* The kernel applied the caller's umask to every mode it sends
	 * (FUSE_CAP_DONT_MASK is off); where the daemon's own umask would
	 * take bits away again, the create operations restore them. */
	/* glibc gives each worker thread an arena of its own; nodes allocated
	 * and freed by different workers then fragment into many.  Two arenas
	 * keep the daemon's memory flat on repeated walks (mallopt(3)). */
	mallopt(M_ARENA_MAX, 2);
	fs->umask = umask(022);
	umask(fs->umask);
	/* Open files through the mount hold descriptors here: allow as many
	 * as the hard limit lets (getrlimit(2)). */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	fs->git_ready = true;
	pthread_mutex_init(&fs->git_lock, NULL);
	fs->git_parked_tail = &fs->git_parked;
	pthread_cond_init(&fs->git_cond, NULL);
	pthread_cond_init(&fs->recorded, NULL);
	if (cfg->git_dir) {
		fs->git_fd = open(cfg->git_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fs->git_fd < 0) {
			r = -errno;
			goto out_free;
		}
		fs->git_ready = cfg->git_prepare == NULL;
	}
	pthread_mutex_init(&fs->copyup_lock, NULL);
	for (int i = 0; i < FS_RECORD_LOCKS; i++)
		pthread_mutex_init(&fs->record_locks[i], NULL);
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
	init_upper_root(fs, &lst);
	clean_work(fs->work_fd);
	if (!(fs->hashes = hashcache_new())) {
		r = -ENOMEM;
		goto out_table;
	}
	hashcache_prefault_on_use(fs->hashes);
	/* Without them, every open resolves afresh. */
	fs->dirs = dircache_new();
	fs->ldirs = dircache_new();

	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char fsname[512];
	snprintf(fsname, sizeof(fsname), "fsname=%s,subtype=agentfs",
		 cfg->fsname ? cfg->fsname : "agentfs");
	/* default_permissions: the kernel checks modes against the caller
	 * (fuse.rst, "default_permissions"), so permission checks bite exactly
	 * as on the lower, and the daemon never decides access by itself.
	 * Not for a daemon running as root (root_alone) without allow_other or
	 * allow_root (libfuse makes the latter allow_other for the kernel and
	 * filters by uid itself, not for every request): only root may use its
	 * mount then (fuse_allow_current_process, fs/fuse/dir.c), and
	 * root passes every check but the execute bit of a regular file
	 * (capabilities(7): CAP_DAC_OVERRIDE, CAP_FOWNER), which the kernel
	 * checks without the option too, and which op_access answers.  The
	 * option would cost a GETATTR of a directory after each change in it,
	 * the kernel refreshing its mode for the check: two of the nine round
	 * trips of an editor's save.  A root without those capabilities (a
	 * sandbox's) is not bound by the view's modes then, only by the
	 * policy, which the daemon applies either way; agentfs run mounts
	 * with the option (-o default_permissions) for that reason. */
	bool kernel_checks_modes = !root_alone() || has_opt(cfg->fuse_opts, "allow_other") ||
				   has_opt(cfg->fuse_opts, "allow_root") ||
				   has_opt(cfg->fuse_opts, "default_permissions");
	if (fuse_opt_add_arg(&args, "agentfs") ||
	    (kernel_checks_modes && !has_opt(cfg->fuse_opts, "default_permissions") &&
	     add_opt(&args, "default_permissions")) ||
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
	pthread_t sigthr;
	bool have_sigthr = false;
	if (pipe2(usr1_pipe, O_CLOEXEC) == 0) {
		have_sigthr = pthread_create(&sigthr, NULL, signal_thread, fs) == 0;
		struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
		sigemptyset(&sa.sa_mask);
		if (have_sigthr) {
			sigaction(SIGUSR1, &sa, NULL);
			sigaction(SIGUSR2, &sa, NULL);
		}
	}

	if (fuse_session_mount(fs->se, cfg->mountpoint) != 0) {
		r = -EIO;
		goto out_signals;
	}
	passthrough_attach(fs);
	raise_readahead(cfg->mountpoint);
	watch_start(fs);
	watch_dir_lazy(fs, &fs->root);
	if (cfg->git_serving)
		cfg->git_serving(cfg->git_prepare_arg, fs);
	pthread_t gitthr;
	bool need_git = !fs->git_ready;
	bool have_gitthr = need_git && pthread_create(&gitthr, NULL, git_thread, fs) == 0;
	if (need_git && !have_gitthr)
		git_thread(fs); /* no thread: build before serving */
	/* Two cores here; a few more threads than cores keep requests moving
	 * while some wait on disk (see loop.c).  The mount is ready once the
	 * loop is set up: a failure before that is the mount's, reported by
	 * `agentfs mount` (fs_loop). */
	int lr = fs_loop(fs, 8, &ready_fd);
	r = lr < 0 ? lr : 0;
	if (cfg->git_serving)
		cfg->git_serving(cfg->git_prepare_arg, NULL);
	/* Before the last records: the build's thread may still be answering
	 * requests that waited for it (fs_git_run_parked). */
	if (have_gitthr)
		pthread_join(gitthr, NULL);
	fs_record_pending_writes(fs);
	watch_stop(fs);
	fuse_session_unmount(fs->se);
out_signals:
	if (have_sigthr) {
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_IGN);
		(void)!write(usr1_pipe[1], "q", 1);
		pthread_join(sigthr, NULL);
	}
	if (usr1_pipe[0] >= 0) {
		close(usr1_pipe[0]);
		close(usr1_pipe[1]);
		usr1_pipe[0] = usr1_pipe[1] = -1;
	}
	fuse_remove_signal_handlers(fs->se);
out_session:
	fuse_session_destroy(fs->se);
out_args:
	fuse_opt_free_args(&args);
	hashcache_free(fs->hashes);
	dircache_free(fs->dirs);
	dircache_free(fs->ldirs);
out_table:
	table_destroy(fs);
out_free:
	if (fs->git_fd >= 0)
		close(fs->git_fd);
	pthread_mutex_destroy(&fs->git_lock);
	pthread_cond_destroy(&fs->git_cond);
	pthread_cond_destroy(&fs->recorded);
	pthread_mutex_destroy(&fs->copyup_lock);
	free(fs);
out_ready:
	if (ready_fd >= 0)
		close(ready_fd);
	return r;
}
