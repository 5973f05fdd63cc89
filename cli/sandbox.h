/*
 * sandbox.h - the bubblewrap sandbox `agentfs run` starts a command in.
 *
 * The sandbox is a minimal root built from nothing (bwrap's empty tmpfs root,
 * remounted read-only once built):
 *
 *   /usr, /bin, /sbin, /lib*  read-only binds (symlinks kept as symlinks on
 *                             merged-/usr systems)
 *   /etc                      read-only, minus secrets: every entry others
 *                             cannot read (/etc/shadow, /etc/ssl/private, ...)
 *                             and the names in sandbox_etc_secret() are absent,
 *                             not emptied
 *   /proc, /dev               a new procfs of the sandbox's PID namespace and
 *                             bwrap's minimal /dev (null, zero, random, tty, pts)
 *   /tmp, /var/tmp            private, empty tmpfs
 *   $HOME                     an empty tmpfs at the person's home path
 *   --ro / --rw PATH          binds at the same path, read-only / writable
 *   the workspace mount       at the same path as outside, writable unless
 *                             read-only
 *
 * and nothing else: neither the repository, nor the state directory with the
 * workspace's upper and journal, nor the rest of the person's files.
 *
 * The process runs in new user, mount, PID, IPC, UTS and cgroup namespaces,
 * with every capability dropped (also as root: bwrap keeps root's capabilities
 * unless told otherwise), no_new_privs (bwrap always sets it), unable to make
 * further user namespaces, and dies with its parent.  The network namespace is
 * new (loopback only) for SANDBOX_NET_NONE, the host's for SANDBOX_NET_HOST, and
 * for SANDBOX_NET_PROXY the caller's own, which sandbox_spawn() creates with a
 * listening socket on 127.0.0.1:SANDBOX_PROXY_PORT in it (see netproxy.h).
 *
 * Functions return 0 or a negative errno; @err gets a one-line reason (no
 * "agentfs:" prefix) where a function takes one.
 */
#ifndef AGENTFS_SANDBOX_H
#define AGENTFS_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cli/strvec.h"

enum sandbox_net {
	SANDBOX_NET_NONE = 0, /* a private network namespace with loopback only */
	SANDBOX_NET_HOST,     /* the host's network, explicitly */
	SANDBOX_NET_PROXY,    /* a private namespace whose only way out is the proxy */
};

/* The loopback port the proxy listens on inside a SANDBOX_NET_PROXY sandbox. */
#define SANDBOX_PROXY_PORT 3128

struct sandbox_config {
	const char *mount;     /* absolute path of the workspace mount, bound at the same path */
	bool read_only;	       /* bind the workspace read-only */
	const char *cwd;       /* absolute starting directory (inside the mount) */
	const char *home;      /* absolute $HOME path, an empty tmpfs inside */
	const char *const *ro; /* absolute, symlink-free paths bound read-only */
	size_t n_ro;
	const char *const *rw; /* absolute, symlink-free paths bound writable */
	size_t n_rw;
	enum sandbox_net net;
	bool drop_root_caps; /* running as root: pass --cap-drop ALL */
	bool new_session;    /* setsid() the command (no controlling tty: no TIOCSTI);
			      * either way sandbox_spawn() puts bwrap in a process
			      * group of its own */
	int info_fd;	     /* fd bwrap writes its JSON info to (child-pid,
			      * namespaces), or -1 */
	const char *etc;     /* the /etc to filter ("/etc"; tests may pass another) */
};

/* The system directories shown read-only, NULL-terminated.  A path the sandbox
 * must not show (the repository, the state directory) may not lie inside one. */
extern const char *const sandbox_system_dirs[];

/* Is @rel (relative to /etc, e.g. "ssh/ssh_host_ed25519_key") a secret by name,
 * shown absent whatever its mode?  Mode 0 entries (others cannot read) are
 * secret too; see sandbox_build_argv(). */
bool sandbox_etc_secret(const char *rel);

/* What starts the command inside the sandbox: env(1) looks it up in PATH and
 * execs it, and exits 127 when it is not found and 126 when it is found but
 * cannot be run (the POSIX shell's statuses, env(1) of GNU coreutils), where
 * bwrap alone exits 1 for both, the status of a command that ran and failed.
 * It lies in /usr, which the sandbox shows (sandbox_system_dirs). */
#define SANDBOX_LAUNCHER "/usr/bin/env"

/*
 * Append to @argv the bwrap options (not the program name) that build the
 * sandbox for @c, then "--", SANDBOX_LAUNCHER and "--" (unless @cmd[0]
 * contains '=' or the system has no SANDBOX_LAUNCHER), then @cmd
 * (NULL-terminated).  Reads /etc (and lstat()s the system directories) to
 * decide what to show.  @argv is left with what was appended so far on error.
 */
int sandbox_build_argv(const struct sandbox_config *c, char *const cmd[], struct strvec *argv,
		       char *err, size_t errlen);

/*
 * Can this process create a user namespace?  Tries it in a short-lived child.
 * 0 if so; else -EPERM (or the errno seen) with what to enable in @err:
 * the sysctl (kernel.unprivileged_userns_clone, user.max_user_namespaces,
 * kernel.apparmor_restrict_unprivileged_userns) found to forbid it, or the
 * container/seccomp hint when none does.
 */
int sandbox_check_userns(char *err, size_t errlen);

/* bwrap's path (from $PATH), malloc'd, or -ENOENT with an install hint in @err. */
int sandbox_find_bwrap(char **out, char *err, size_t errlen);

/*
 * Fork and exec @bwrap with @argv (argv[0] included) and @envp.  The child
 * gets the default signal mask and dispositions.  For SANDBOX_NET_PROXY the
 * child first enters new user and network namespaces (mapping its own uid and
 * gid to themselves), brings loopback up and listens on
 * 127.0.0.1:SANDBOX_PROXY_PORT there; that listening socket is handed back in
 * *listen_fd (-1 otherwise) so a proxy outside the sandbox can accept on it.
 * @keep_fd (or -1) stays open across exec (bwrap's --info-fd).  The child
 * runs in a process group of its own; with @tty (a descriptor of the
 * controlling terminal whose foreground group is the caller's, or -1) that
 * group is made the terminal's foreground one before bwrap runs, as a shell
 * does for a job it starts (tcsetpgrp(3)), so the command may read it at once.
 * Returns 0 with *pid, or a negative errno with a reason in @err.
 */
int sandbox_spawn(const char *bwrap, char *const argv[], char *const envp[], enum sandbox_net net,
		  int keep_fd, int tty, pid_t *pid, int *listen_fd, char *err, size_t errlen);

#endif
