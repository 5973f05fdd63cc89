/*
 * cmd_unmount.c - `agentfs unmount MNT|NAME`: unmount a workspace and wait for
 * its daemon to finish (journal flushed, pid file gone).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/workspace.h"

const char cmd_unmount_usage[] =
    "usage: agentfs unmount [OPTIONS] MNT|NAME\n"
    "\n"
    "Unmount the workspace mounted at MNT (or named NAME) and wait up to 10 s for\n"
    "its daemon to flush the journal and exit.  A dead mount left by a daemon that\n"
    "crashed is detached and its pid file removed.\n"
    "\n"
    "Options:\n"
    "  -l, --lazy          detach now even if busy; the daemon exits when the last\n"
    "                      process using the mount lets go (fusermount3 -uz)\n"
    "  --state-dir DIR     workspaces live in DIR/workspaces (default:\n"
    "                      ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help          show this help\n"
    "\n"
    "When the mount is busy, the processes holding it (cwd, root, open files or\n"
    "mappings under MNT) are named.\n";

static const char *const CMD = "unmount";

#define EXIT_WAIT_MS 10000
#define MAX_HOLDERS  8

static bool link_within(const char *link, const char *mnt)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(link, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return workspace_path_within(buf, mnt);
}

static bool maps_within(const char *maps, const char *mnt)
{
	FILE *f = fopen(maps, "re");
	if (!f)
		return false;
	char *line = NULL;
	size_t cap = 0;
	bool hit = false;
	while (!hit && getline(&line, &cap, f) > 0) {
		char *p = strchr(line, '/');
		if (!p)
			continue;
		p[strcspn(p, "\n")] = '\0';
		hit = workspace_path_within(p, mnt);
	}
	free(line);
	fclose(f);
	return hit;
}

static bool pid_holds(const char *pid, const char *mnt)
{
	char path[PATH_MAX];
	static const char *const links[] = {"cwd", "root"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%s/%s", pid, links[i]);
		if (link_within(path, mnt))
			return true;
	}
	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	DIR *d = opendir(path);
	if (d) {
		struct dirent *de;
		bool hit = false;
		while (!hit && (de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%s/fd/%s", pid, de->d_name);
			hit = link_within(path, mnt);
		}
		closedir(d);
		if (hit)
			return true;
	}
	snprintf(path, sizeof(path), "/proc/%s/maps", pid);
	return maps_within(path, mnt);
}

/* "pid 12 (bash), pid 40 (vim)" for the processes keeping @mnt busy. */
static void describe_holders(const char *mnt, char *out, size_t outlen)
{
	out[0] = '\0';
	DIR *d = opendir("/proc");
	if (!d)
		return;
	size_t used = 0;
	int n = 0, more = 0;
	char self[32];
	snprintf(self, sizeof(self), "%ld", (long)getpid());
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9' || strcmp(de->d_name, self) == 0)
			continue;
		if (!pid_holds(de->d_name, mnt))
			continue;
		if (n >= MAX_HOLDERS) {
			more++;
			continue;
		}
		char path[300], comm[64] = "?";
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		FILE *f = fopen(path, "re");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
		int w = snprintf(out + used, outlen - used, "%spid %s (%s)", n ? ", " : "",
				 de->d_name, comm);
		if (w > 0 && (size_t)w < outlen - used)
			used += (size_t)w;
		n++;
	}
	closedir(d);
	if (more && used < outlen)
		snprintf(out + used, outlen - used, " and %d more", more);
}

/* Is @pid stopped (SIGSTOP, a debugger)? */
static bool stopped(pid_t pid)
{
	char s = workspace_pid_state(pid);
	return s == 'T' || s == 't';
}

/* Wait until the daemon lets go of the workspace lock (it exits holding it).
 * Past a second, say what it waits for, once (@shown names the mount). */

static int wait_daemon_exit(const struct workspace *ws, pid_t pid, const char *shown)
{
	bool said = false;
	int fd = open(ws->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int rc = -ETIMEDOUT;
	for (;;) {
		bool lock_free = fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) == 0;
		if (lock_free) {
			flock(fd, LOCK_UN);
			rc = 0;
			break;
		}
		if (fd < 0 && (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH))) {
			rc = 0;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		long ms =
		    (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (ms >= EXIT_WAIT_MS)
			break;
		if (ms >= 1000 && !said) {
			said = true;
			if (stopped(pid))
				cli_error(
				    CMD,
				    "%s: unmounted; waiting for the daemon (pid %ld), which is "
				    "stopped: continue it (kill -CONT %ld)",
				    shown, (long)pid, (long)pid);
			else
				cli_error(
				    CMD,
				    "%s: unmounted; waiting for the daemon (pid %ld) to finish: "
				    "a workspace with changes has its private .git built to the "
				    "end first (%s/daemon.log)",
				    shown, (long)pid, ws->dir);
		}
		usleep(10000);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

static int unmount_path(const char *shown, const char *mnt, bool lazy)
{
	char err[512];
	int rc = workspace_fuse_unmount(mnt, lazy, err, sizeof(err));
	if (rc == -EBUSY) {
		char holders[1024];
		describe_holders(mnt, holders, sizeof(holders));
		if (holders[0])
			cli_error(CMD, "%s: busy: held by %s; close them or use --lazy", shown,
				  holders);
		else
			cli_error(CMD, "%s: busy; close what uses it or use --lazy", shown);
	} else if (rc < 0) {
		cli_error(CMD, "%s: %s", shown, err);
	}
	return rc;
}

int cmd_unmount(int argc, char **argv)
{
	enum { OPT_STATE = 256 };
	static const struct option longopts[] = {
	    {"lazy", no_argument, NULL, 'l'},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *state_dir = NULL;
	bool lazy = false;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":lzh", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
		case 'z':
			lazy = true;
			break;
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_unmount_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs unmount --help')",
				  cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (argc - optind != 1) {
		cli_error(CMD, "%s (see 'agentfs unmount --help')",
			  argc - optind ? "one MNT or NAME, not more" : "MNT or NAME is required");
		return 2;
	}
	const char *arg = argv[optind];

	char *root = NULL;
	if (workspace_state_root(state_dir, &root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		return 1;
	}
	struct workspace *ws = NULL;
	char err[1024];
	int rc = workspace_find(root, arg, &ws, err, sizeof(err));
	free(root);
	if (rc == -ENOENT) {
		/* Not one of this state root's workspaces, but an agentfs mount all the
		 * same (another --state-dir, a lost workspace): let it go. */
		char *abs = NULL, src[PATH_MAX];
		if (workspace_abspath(arg, &abs) == 0 &&
		    workspace_fuse_mount_at(abs, src, sizeof(src)) == 1 &&
		    strncmp(src, "agentfs:", 8) == 0) {
			rc = unmount_path(arg, abs, lazy);
			free(abs);
			return rc < 0 ? 1 : 0;
		}
		free(abs);
		cli_error(CMD, "%s", err);
		return 1;
	}
	if (rc < 0) {
		cli_error(CMD, "%s", err);
		return 1;
	}

	pid_t pid = 0;
	char *mnt = NULL;
	enum workspace_state st = workspace_state(ws, &pid, &mnt);
	int status = 0;
	if (st == WORKSPACE_UNMOUNTED) {
		cli_error(CMD, "%s: workspace %s is not mounted", arg, ws->name);
		status = 1;
	} else if (st == WORKSPACE_STALE) {
		/* The daemon is gone: detach what it left and forget its pid. */
		char src[PATH_MAX], want[PATH_MAX];
		snprintf(want, sizeof(want), "agentfs:%s", ws->name);
		if (mnt && workspace_fuse_mount_at(mnt, src, sizeof(src)) == 1 &&
		    strcmp(src, want) == 0 && unmount_path(arg, mnt, lazy) < 0)
			status = 1;
		if (status == 0) {
			char *pidfile = workspace_path(ws, "daemon.pid");
			if (pidfile)
				unlink(pidfile);
			free(pidfile);
		}
	} else {
		if (unmount_path(arg, mnt, lazy) < 0)
			status = 1;
		else if (!lazy && wait_daemon_exit(ws, pid, arg) < 0) {
			cli_error(CMD,
				  "%s: unmounted, but the daemon (pid %ld) has not exited after "
				  "%d s",
				  arg, (long)pid, EXIT_WAIT_MS / 1000);
			status = 1;
		}
	}
	free(mnt);
	workspace_free(ws);
	return status;
}
