/*
 * sandbox.c - building bwrap's command line for `agentfs run`, checking that
 * user namespaces work, and starting bwrap (sandbox.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/sandbox.h"
#include "cli/workspace.h"

const char *const sandbox_system_dirs[] = {"/usr",   "/bin",	"/sbin", "/lib", "/lib32",
					   "/lib64", "/libx32", "/etc",	 NULL};

/* Secrets of /etc by name, fnmatch(3) patterns relative to /etc.  Most are
 * also unreadable by others (and so hidden by mode); the names make sure a
 * looser mode does not show them, and cover root, who owns them and so reads
 * them even without capabilities. */
static const char *const etc_secrets[] = {
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssl/private",
    "ssh/ssh_host_*_key",
    "krb5.keytab",
    "security/opasswd",
    "ipsec.secrets",
    "ppp/*-secrets",
    "wireguard",
    "letsencrypt",
    "NetworkManager/system-connections",
    "credstore",
    "credstore.encrypted",
};

bool sandbox_etc_secret(const char *rel)
{
	for (size_t i = 0; i < sizeof(etc_secrets) / sizeof(etc_secrets[0]); i++)
		if (fnmatch(etc_secrets[i], rel, FNM_PATHNAME) == 0)
			return true;
	return false;
}

/* Hidden: a secret by name, or an entry others cannot read (a directory: list
 * and search).  What an ordinary account cannot read has no business in the
 * sandbox, and root, who could read it, must not see it there either. */
static bool etc_hidden(const char *rel, const struct stat *st)
{
	if (sandbox_etc_secret(rel))
		return true;
	if (S_ISLNK(st->st_mode))
		return false;
	if (S_ISDIR(st->st_mode))
		return (st->st_mode & (S_IROTH | S_IXOTH)) != (S_IROTH | S_IXOTH);
	return !(st->st_mode & S_IROTH);
}

/* Collect the relative paths of hidden entries under @dirfd (@rel its path
 * relative to /etc, "" for /etc itself), not descending into hidden ones. */
static int etc_collect(int dirfd, const char *rel, int depth, struct strvec *hidden)
{
	if (depth > 32)
		return 0;
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return -errno;
	}
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char crel[PATH_MAX];
		if (snprintf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", de->d_name) >=
		    (int)sizeof(crel))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (etc_hidden(crel, &st)) {
			rc = strvec_push(hidden, crel);
		} else if (S_ISDIR(st.st_mode)) {
			int fd = openat(dirfd, de->d_name,
					O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				rc = etc_collect(fd, crel, depth + 1, hidden);
		}
	}
	closedir(d);
	return rc;
}

/* /etc read-only, with every hidden entry covered: a file by /dev/null (a
 * read gives nothing), a directory by an empty read-only tmpfs.  Covering
 * costs one mount per secret; showing /etc entry by entry without them (so
 * they would be absent) cost one mount per entry, ~120 ms for Debian's /etc:
 * bwrap rereads /proc/self/mountinfo for every bind. */
static int add_etc(struct strvec *a, const char *etc)
{
	int fd = open(etc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0; /* no /etc: nothing to show */
	struct strvec hidden = {0};
	int rc = etc_collect(fd, "", 0, &hidden);
	if (rc == 0)
		rc = strvec_push3(a, "--ro-bind", etc, "/etc");
	for (size_t i = 0; rc == 0 && i < hidden.n; i++) {
		char src[PATH_MAX], dst[PATH_MAX];
		struct stat st;
		if (snprintf(src, sizeof(src), "%s/%s", etc, hidden.v[i]) >= (int)sizeof(src) ||
		    snprintf(dst, sizeof(dst), "/etc/%s", hidden.v[i]) >= (int)sizeof(dst) ||
		    lstat(src, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			rc = strvec_push2(a, "--tmpfs", dst);
			if (rc == 0)
				rc = strvec_push2(a, "--remount-ro", dst);
		} else if (S_ISREG(st.st_mode)) {
			rc = strvec_push3(a, "--ro-bind", "/dev/null", dst);
		}
		/* a symlink named as a secret points at nothing shown, or at
		 * something covered itself */
	}
	strvec_clear(&hidden);
	return rc;
}

/* /usr, and /bin, /sbin, /lib* as the host has them: symlinks into /usr on a
 * merged-/usr system, directories otherwise. */
static int add_system(struct strvec *a)
{
	int rc = 0;
	for (int i = 0; rc == 0 && sandbox_system_dirs[i]; i++) {
		const char *p = sandbox_system_dirs[i];
		if (strcmp(p, "/etc") == 0)
			continue;
		struct stat st;
		if (lstat(p, &st) != 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(p, target, sizeof(target) - 1);
			if (n < 0)
				continue;
			target[n] = 0;
			rc = strvec_push3(a, "--symlink", target, p);
		} else if (S_ISDIR(st.st_mode)) {
			rc = strvec_push3(a, "--ro-bind", p, p);
		}
	}
	return rc;
}

struct bind {
	const char *path;
	const char *how; /* "--bind" or "--ro-bind" */
};

static int cmp_bind(const void *x, const void *y)
{
	const struct bind *a = x, *b = y;
	size_t la = strlen(a->path), lb = strlen(b->path);
	return la < lb ? -1 : la > lb ? 1 : 0;
}

/* Whether @prog starts through SANDBOX_LAUNCHER: env(1) takes a first
 * operand NAME=VALUE for a variable, so such a name is left to bwrap, as is
 * every command where the system has no env. */
static bool use_launcher(const char *prog)
{
	return !strchr(prog, '=') && access(SANDBOX_LAUNCHER, X_OK) == 0;
}

int sandbox_build_argv(const struct sandbox_config *c, char *const cmd[], struct strvec *a,
		       char *err, size_t errlen)
{
	int rc = 0;
#define PUSH(expr)                                                                                 \
	do {                                                                                       \
		if (rc == 0)                                                                       \
			rc = (expr);                                                               \
	} while (0)

	/* Namespaces and privileges.  --unshare-user even as root: root's
	 * capabilities are then confined to the sandbox's namespaces and dropped
	 * anyway; --disable-userns keeps the command from making new ones. */
	PUSH(strvec_push(a, "--unshare-user"));
	PUSH(strvec_push(a, "--disable-userns"));
	PUSH(strvec_push(a, "--unshare-pid"));
	PUSH(strvec_push(a, "--unshare-ipc"));
	PUSH(strvec_push(a, "--unshare-uts"));
	PUSH(strvec_push(a, "--unshare-cgroup-try"));
	if (c->net == SANDBOX_NET_NONE)
		PUSH(strvec_push(a, "--unshare-net"));
	PUSH(strvec_push(a, "--die-with-parent"));
	if (c->new_session)
		PUSH(strvec_push(a, "--new-session"));
	if (c->drop_root_caps)
		PUSH(strvec_push2(a, "--cap-drop", "ALL"));
	PUSH(strvec_push2(a, "--hostname", "agentfs"));
	if (c->info_fd >= 0) {
		PUSH(strvec_push(a, "--info-fd"));
		PUSH(strvec_pushf(a, "%d", c->info_fd));
	}

	/* The root: system directories, /etc minus secrets, /proc, /dev, /tmp. */
	PUSH(add_system(a));
	PUSH(add_etc(a, c->etc ? c->etc : "/etc"));
	PUSH(strvec_push2(a, "--proc", "/proc"));
	PUSH(strvec_push2(a, "--dev", "/dev"));
	PUSH(strvec_push2(a, "--tmpfs", "/tmp"));
	PUSH(strvec_push2(a, "--tmpfs", "/var/tmp"));
	if (c->home)
		PUSH(strvec_push2(a, "--tmpfs", c->home));

	/* Binds, parents before children: a --ro of a directory holding the
	 * mount must not cover the mount, a --ro inside the mount must land on it. */
	size_t nb = 1 + c->n_ro + c->n_rw;
	struct bind *b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	size_t k = 0;
	b[k++] = (struct bind){c->mount, c->read_only ? "--ro-bind" : "--bind"};
	for (size_t i = 0; i < c->n_ro; i++)
		b[k++] = (struct bind){c->ro[i], "--ro-bind"};
	for (size_t i = 0; i < c->n_rw; i++)
		b[k++] = (struct bind){c->rw[i], "--bind"};
	qsort(b, nb, sizeof(*b), cmp_bind);
	for (size_t i = 0; i < nb; i++)
		PUSH(strvec_push3(a, b[i].how, b[i].path, b[i].path));
	free(b);

	/* Nothing else may be created in the root once it is built. */
	PUSH(strvec_push2(a, "--remount-ro", "/"));
	PUSH(strvec_push2(a, "--chdir", c->cwd));
	PUSH(strvec_push(a, "--"));
	if (cmd[0] && use_launcher(cmd[0]))
		PUSH(strvec_push2(a, SANDBOX_LAUNCHER, "--"));
	for (size_t i = 0; cmd[i]; i++)
		PUSH(strvec_push(a, cmd[i]));
#undef PUSH
	if (rc < 0)
		snprintf(err, errlen, "cannot build the sandbox's command line: %s", strerror(-rc));
	return rc;
}

/* ---- user namespaces ---- */

static int read_sysctl(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	int v = -1;
	if (fscanf(f, "%d", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* In a child: make a user namespace and map our uid in it, as bwrap will.
 * The exit status is 0 or the errno of the step that failed. */
static int try_userns(void)
{
	uid_t uid = geteuid();
	if (unshare(CLONE_NEWUSER) != 0)
		return errno;
	char map[64];
	int n = snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
	int fd = open("/proc/self/uid_map", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int e = write(fd, map, (size_t)n) == n ? 0 : errno;
	close(fd);
	return e;
}

int sandbox_check_userns(char *err, size_t errlen)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(try_userns());
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	int e = WIFEXITED(st) ? WEXITSTATUS(st) : EPERM;
	if (e == 0)
		return 0;

	const char *fix;
	if (read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == 0 && geteuid() != 0)
		fix = "kernel.unprivileged_userns_clone is 0: enable them with "
		      "'sysctl -w kernel.unprivileged_userns_clone=1'";
	else if (read_sysctl("/proc/sys/user/max_user_namespaces") == 0)
		fix = "user.max_user_namespaces is 0: enable them with "
		      "'sysctl -w user.max_user_namespaces=15000'";
	else if (read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1)
		fix = "AppArmor restricts unprivileged user namespaces: allow bwrap with an "
		      "AppArmor profile or 'sysctl -w "
		      "kernel.apparmor_restrict_unprivileged_userns=0'";
	else if (e == ENOSPC)
		fix = "the limit user.max_user_namespaces is reached: raise it with "
		      "'sysctl -w user.max_user_namespaces=15000'";
	else
		fix = "unshare(CLONE_NEWUSER) is forbidden (in a container, its seccomp profile "
		      "must allow it; on the host, check kernel.unprivileged_userns_clone and "
		      "user.max_user_namespaces)";
	snprintf(err, errlen, "user namespaces are unavailable (%s): %s", strerror(e), fix);
	return -e;
}

int sandbox_find_bwrap(char **out, char *err, size_t errlen)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	char *save = NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *cand;
		if (*d != '/' || asprintf(&cand, "%s/bwrap", d) < 0)
			continue;
		if (access(cand, X_OK) == 0) {
			free(copy);
			*out = cand;
			return 0;
		}
		free(cand);
	}
	free(copy);
	snprintf(err, errlen,
		 "bwrap not found in PATH: install bubblewrap "
		 "(Debian: apt-get install bubblewrap)");
	return -ENOENT;
}

/* ---- starting bwrap ---- */

/* Child side, proxy mode: a user namespace mapping us to ourselves (bwrap
 * nests its own inside) and a network namespace with loopback up and the
 * proxy's listening socket.  Returns the socket or -errno. */
static int child_netns(uid_t uid, gid_t gid)
{
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0)
		return -errno;
	char buf[64];
	struct {
		const char *file;
		unsigned id;
	} maps[] = {
	    {"/proc/self/setgroups", 0}, {"/proc/self/uid_map", uid}, {"/proc/self/gid_map", gid}};
	for (int i = 0; i < 3; i++) {
		int n = i == 0 ? snprintf(buf, sizeof(buf), "deny\n")
			       : snprintf(buf, sizeof(buf), "%u %u 1\n", maps[i].id, maps[i].id);
		int fd = open(maps[i].file, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		ssize_t w = write(fd, buf, (size_t)n);
		int e = errno;
		close(fd);
		if (w != n)
			return -e;
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct ifreq ifr = {0};
	strcpy(ifr.ifr_name, "lo");
	int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (rc == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	if (rc != 0)
		return -errno;

	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -errno;
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(SANDBOX_PROXY_PORT)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 128) != 0) {
		int e = errno;
		close(l);
		return -e;
	}
	return l;
}

static int send_fd(int sock, int fd)
{
	char byte = 'f';
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct msghdr m = {.msg_iov = &iov,
			   .msg_iovlen = 1,
			   .msg_control = u.buf,
			   .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &m, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov,
			   .msg_iovlen = 1,
			   .msg_control = u.buf,
			   .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	do
		n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n == 0 ? -EPIPE : -errno;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EPROTO;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

struct child_failure {
	int stage; /* 1: network namespace, 2: exec */
	int err;
};

int sandbox_spawn(const char *bwrap, char *const argv[], char *const envp[], enum sandbox_net net,
		  int keep_fd, int tty, pid_t *pid, int *listen_fd, char *err, size_t errlen)
{
	*listen_fd = -1;
	int status_pipe[2], sp[2] = {-1, -1};
	if (pipe2(status_pipe, O_CLOEXEC) != 0)
		return -errno;
	if (net == SANDBOX_NET_PROXY &&
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
		int e = errno;
		close(status_pipe[0]);
		close(status_pipe[1]);
		return -e;
	}
	uid_t uid = geteuid();
	gid_t gid = getegid();
	pid_t p = fork();
	if (p < 0) {
		int e = errno;
		close(status_pipe[0]);
		close(status_pipe[1]);
		if (sp[0] >= 0) {
			close(sp[0]);
			close(sp[1]);
		}
		return -e;
	}
	if (p == 0) {
		struct child_failure f = {0, 0};
		/* Its own process group, terminal or not: kill(0, sig) and
		 * kill(-1, sig) inside reach no process of the caller's group
		 * (agentfs run, the shell's other jobs).  With a terminal the group
		 * holds it from before bwrap runs (SIGTTOU, sent to a background
		 * group that asks, is still ignored here). */
		setpgid(0, 0);
		if (tty >= 0) {
			signal(SIGTTOU, SIG_IGN);
			(void)tcsetpgrp(tty, getpid());
		}
		sigset_t none;
		sigemptyset(&none);
		for (int s = 1; s < NSIG; s++)
			if (s != SIGKILL && s != SIGSTOP)
				signal(s, SIG_DFL);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (net == SANDBOX_NET_PROXY) {
			close(sp[0]);
			int l = child_netns(uid, gid);
			if (l < 0 || send_fd(sp[1], l) < 0) {
				f = (struct child_failure){1, l < 0 ? -l : errno};
				goto fail;
			}
			close(l);
			close(sp[1]);
		}
		/* Only the descriptors bwrap is told of reach the sandbox: any
		 * other the caller left open (a launcher's, a shell's exec 7<dir)
		 * would be a way out of it (/proc/self/fd/N/..). */
		if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
			long max = sysconf(_SC_OPEN_MAX);
			for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
				fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		}
		if (keep_fd >= 0)
			fcntl(keep_fd, F_SETFD, 0);
		execve(bwrap, argv, envp);
		f = (struct child_failure){2, errno};
	fail:
		if (write(status_pipe[1], &f, sizeof(f)) < 0)
			_exit(127);
		_exit(127);
	}
	close(status_pipe[1]);
	int rc = 0;
	if (net == SANDBOX_NET_PROXY) {
		close(sp[1]);
		int fd = recv_fd(sp[0]);
		close(sp[0]);
		if (fd >= 0)
			*listen_fd = fd;
	}
	struct child_failure f;
	ssize_t n;
	do
		n = read(status_pipe[0], &f, sizeof(f));
	while (n < 0 && errno == EINTR);
	close(status_pipe[0]);
	if (n == (ssize_t)sizeof(f)) {
		if (f.stage == 1)
			snprintf(err, errlen,
				 "cannot make the sandbox's network namespace with its proxy port "
				 "127.0.0.1:%d: %s",
				 SANDBOX_PROXY_PORT, strerror(f.err));
		else
			snprintf(err, errlen, "cannot run %s: %s", bwrap, strerror(f.err));
		rc = -f.err;
		while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
			;
		if (*listen_fd >= 0) {
			close(*listen_fd);
			*listen_fd = -1;
		}
		return rc ? rc : -EIO;
	}
	*pid = p;
	return 0;
}
