/* cmd_discard.c - `agentfs discard`: drop the agent's changes to paths, or all. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <git2.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/strvec.h"
#include "journal/journal.h"
#include "cli/workspace.h"
#include "fs/fs.h"
#include "fs/layout.h"
#include "policy/policy.h"

const char cmd_discard_usage[] =
    "usage: agentfs discard [OPTIONS] MNT|NAME [PATH...]\n"
    "\n"
    "Drop the agent's changes to each PATH and everything below it, or to all paths\n"
    "when none is given, so the view shows the base again (the repository's\n"
    "working tree as the agent first saw it; what the person changed in it since\n"
    "shows too).  Discarding a renamed file or directory restores the original.\n"
    "Only the workspace's upper layer is written; a mounted workspace's daemon is\n"
    "told to forget what it cached (SIGUSR1).\n"
    "\n"
    "A PATH is relative to the repository's top level, or absolute below the\n"
    "mountpoint or the repository.  Every PATH must hold a change (see\n"
    "`agentfs status`; a rename's old or new path, a deletion's path), or\n"
    "something of the agent's that changes no visible path (a removed directory\n"
    "whose only entries are hidden); otherwise nothing is discarded.  A path\n"
    "inside a renamed directory cannot be discarded on its own: discard the\n"
    "directory.  Entries the agent made unreadable (chmod 000) are read and\n"
    "removed all the same; what stays keeps its mode.\n"
    "\n"
    "Prints the discarded paths like `agentfs status` (without rename pairing).\n"
    "\n"
    "Options:\n"
    "  --state-dir DIR   workspaces live in DIR/workspaces (default:\n"
    "                    ${XDG_STATE_HOME:-~/.local/state}/agentfs)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

static const char *const CMD = "discard";

/* @arg as a repository-relative path, malloc'd in *out ("" for the top level):
 * -EINVAL when it lies outside the view. */
static int view_path(const struct workspace *ws, const char *arg, char **out)
{
	const char *rel = arg;
	if (arg[0] == '/') {
		char *abs = NULL;
		if (workspace_abspath(arg, &abs) < 0)
			return -EINVAL;
		const char *bases[] = {ws->mountpoint, ws->repo};
		rel = NULL;
		for (size_t i = 0; i < 2 && !rel; i++) {
			size_t n = strlen(bases[i]);
			if (n && workspace_path_within(abs, bases[i]))
				rel = strdup(abs[n] ? abs + n + 1 : "");
		}
		free(abs);
		if (!rel)
			return -EINVAL;
		*out = (char *)rel;
		return 0;
	}
	/* Collapse "." and empty components; ".." may not climb above the top. */
	char *res = malloc(strlen(rel) + 1);
	if (!res)
		return -ENOMEM;
	size_t len = 0;
	for (const char *p = rel; *p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (len == 0) {
				free(res);
				return -EINVAL;
			}
			while (len && res[len - 1] != '/')
				len--;
			if (len)
				len--;
		} else if (n && !(n == 1 && p[0] == '.')) {
			if (len)
				res[len++] = '/';
			memcpy(res + len, p, n);
			len += n;
		}
		p = slash ? slash + 1 : p + n;
	}
	res[len] = 0;
	*out = res;
	return 0;
}

static bool reserved_component(const char *path)
{
	for (const char *p = path; *p;) {
		if (layout_is_reserved(p))
			return true;
		const char *slash = strchr(p, '/');
		if (!slash)
			break;
		p = slash + 1;
	}
	return false;
}

static bool at_or_below(const char *path, const char *top)
{
	size_t n = strlen(top);
	n -= n > 1 && top[n - 1] == '/'; /* a directory's change path: "dir/" */
	return n == 0 || (strncmp(path, top, n) == 0 && (path[n] == 0 || path[n] == '/'));
}

static bool has_change(const struct changes *cs, const char *top)
{
	for (size_t i = 0; i < cs->count; i++)
		if (at_or_below(cs->items[i].path, top))
			return true;
	return false;
}

/* Would discarding @path leave a change there: its directory shows another
 * lower directory than the one at its own path (it or a directory above was
 * renamed), whose entry at @path's place would show again at @path, where
 * the base has nothing (changes_discard's -EBUSY, which it finds only after
 * changing the upper)?  The view decides, as for status
 * (changes_upper_dir_source(), changes_lower_shown()).  Unsure is yes. */
static bool inside_renamed(int upper_fd, int lower_fd, const struct policy *pol, const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n >= sizeof(dir))
		return true;
	memcpy(dir, path, n);
	dir[n] = 0;
	char *lv = NULL;
	int r = changes_upper_dir_source(lower_fd, upper_fd, pol, dir, &lv);
	if (r == -ENOENT || r == -ENOTDIR)
		return false; /* not in the upper: it shows the lower at its own path */
	if (r < 0)
		return true;
	bool renamed = lv && strcmp(lv, dir) != 0;
	char src[PATH_MAX];
	int sn = renamed ? snprintf(src, sizeof(src), "%s%s%s", lv, *lv ? "/" : "",
				    slash ? slash + 1 : path)
			 : 0;
	free(lv);
	if (!renamed)
		return false;
	if (sn >= (int)sizeof(src))
		return true;
	int lfd = changes_open_below(lower_fd, src, O_PATH | O_NOFOLLOW);
	if (lfd < 0)
		return lfd != -ENOENT && lfd != -ENOTDIR;
	struct stat st;
	int sr = fstat(lfd, &st);
	close(lfd);
	return sr < 0 || changes_lower_shown(pol, lower_fd, src, &st);
}

static const struct change *find(const struct changes *cs, const char *path)
{
	for (size_t i = 0; i < cs->count; i++)
		if (strcmp(cs->items[i].path, path) == 0)
			return &cs->items[i];
	return NULL;
}

/* Append @path and each of its ancestors, NUL-terminated, to @f. */
static void put_with_ancestors(FILE *f, const char *path)
{
	fwrite(path, 1, strlen(path) + 1, f);
	for (const char *s = strrchr(path, '/'); s; s = memrchr(path, '/', (size_t)(s - path))) {
		fwrite(path, 1, (size_t)(s - path), f);
		fputc(0, f);
	}
}

/* One "Name:\t<hex>" signal mask of a /proc status file; false if unreadable. */
static bool status_mask(const char *file, const char *name, unsigned long long *mask)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return false;
	char line[256];
	size_t n = strlen(name);
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		if (strncmp(line, name, n) == 0 && line[n] == ':')
			found = sscanf(line + n + 1, "%llx", mask) == 1;
	fclose(f);
	return found;
}

/* Would SIGUSR1 reach a handler in daemon @pid rather than end it?  It does when
 * the process catches it, or when every thread blocks it but the one waiting
 * for it in sigwait() (/proc/PID/task/TID: SigBlk, wchan).  A daemon of an
 * older agentfs might do neither; signalling it would unmount the workspace
 * under the agent, so when unsure the answer is no. */
static bool daemon_takes_sigusr1(pid_t pid)
{
	const unsigned long long bit = 1ull << (SIGUSR1 - 1);
	char path[64];
	unsigned long long m;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (status_mask(path, "SigCgt", &m) && (m & bit))
		return true;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool all = true;
	int threads = 0;
	struct dirent *de;
	while (all && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char st[128];
		snprintf(st, sizeof(st), "/proc/%d/task/%.32s/status", (int)pid, de->d_name);
		all = status_mask(st, "SigBlk", &m) && (m & bit);
		/* sigwait() unblocks what it waits for while it waits: the daemon's
		 * signal thread shows SIGUSR1 unblocked, and is where it goes. */
		snprintf(st, sizeof(st), "/proc/%d/task/%.32s/wchan", (int)pid, de->d_name);
		char wchan[64] = "";
		FILE *f = all ? NULL : fopen(st, "re");
		if (f) {
			if (!fgets(wchan, sizeof(wchan), f))
				wchan[0] = 0;
			fclose(f);
			all = strncmp(wchan, "do_sigtimedwait", 15) == 0;
		}
		threads++;
	}
	closedir(d);
	return all && threads > 0;
}

/* What changes_discard() removed from the upper. */
struct gone {
	struct strvec paths;
	bool oom; /* a path could not be kept: the list is incomplete */
};

static void on_removed(void *arg, const char *path)
{
	struct gone *g = arg;
	/* A PATH that was an upper entry was named as it went, last. */
	if (g->paths.n && strcmp(g->paths.v[g->paths.n - 1], path) == 0)
		return;
	if (strvec_push(&g->paths, path) < 0)
		g->oom = true;
}

/* Name the view paths whose answers changed (every path whose change went or
 * changed, every discarded path, and their directories) in the workspace's
 * invalidation file, and the paths to record as discarded, @gone, marked
 * (fs/fs.h), then signal the daemon. */
static int tell_daemon(const struct workspace *ws, pid_t pid, const struct changes *before,
		       const struct changes *after, char **paths, size_t npaths,
		       const struct gone *gone)
{
	char *file = workspace_path(ws, FS_INVALIDATE_FILE);
	if (!file)
		return -ENOMEM;
	int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	free(file);
	FILE *f = fd >= 0 ? fdopen(fd, "a") : NULL;
	if (!f) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		return e;
	}
	for (size_t i = 0; i < before->count; i++) {
		const struct change *a = after ? find(after, before->items[i].path) : NULL;
		if (!a || change_code(a) != change_code(&before->items[i]))
			put_with_ancestors(f, before->items[i].path);
	}
	for (size_t i = 0; i < npaths; i++)
		if (*paths[i])
			put_with_ancestors(f, paths[i]);
	for (size_t i = 0; i < gone->paths.n; i++) {
		fputs(FS_INVALIDATE_DISCARDED, f);
		fwrite(gone->paths.v[i], 1, strlen(gone->paths.v[i]) + 1, f);
	}
	int r = fclose(f) == 0 ? 0 : -errno;
	if (r == 0 && kill(pid, SIGUSR1) < 0)
		r = -errno;
	if (r < 0)
		return r;
	/* Wait (up to 5 s) until the daemon took the file and went through it (it
	 * renames it to FILE.taken and removes that when done), so whatever runs
	 * after discard sees the restored view, not the kernel's cached answers. */
	char *from = workspace_path(ws, FS_INVALIDATE_FILE);
	char *taken = workspace_path(ws, FS_INVALIDATE_FILE ".taken");
	r = from && taken ? -ETIMEDOUT : -ENOMEM;
	for (int i = 0; from && taken && i < 500; i++) {
		struct stat st;
		if (lstat(from, &st) < 0 && errno == ENOENT && lstat(taken, &st) < 0 &&
		    errno == ENOENT) {
			r = 0;
			break;
		}
		if (kill(pid, 0) < 0) {
			r = -ESRCH;
			break;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	free(from);
	free(taken);
	return r;
}

/*
 * An upper entry whose mode discard lifted, and the mode to put back if it
 * stays.  The agent's chmod in the view is the mode of the upper copy, and a
 * person who is not root reads, lists and removes there as its owner only: a
 * directory the agent made 000 (or 300, or a file it made unreadable) stopped
 * discard, the way back to the base, with "Permission denied".  So for the
 * discard each upper directory gets its owner's rwx and each regular file its
 * owner's read where they lack them, and what stays gets its mode back.
 */
struct lifted {
	char *path; /* relative to the upper */
	mode_t mode;
};

struct lifts {
	struct lifted *v;
	size_t n, cap;
};

static int lift_record(struct lifts *l, const char *path, mode_t mode)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 16;
		struct lifted *nv = realloc(l->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = nc;
	}
	if (!(l->v[l->n].path = strdup(path)))
		return -ENOMEM;
	l->v[l->n++].mode = mode;
	return 0;
}

/* Lift the modes below upper directory @dfd (at @rel, "" for the top), which
 * is open for reading; never follows a symlink.  0 or -errno. */
static int lift_below(int dfd, const char *rel, struct lifts *l)
{
	int rd = dup(dfd);
	DIR *d = rd < 0 ? NULL : fdopendir(rd);
	if (!d) {
		int e = errno;
		if (rd >= 0)
			close(rd);
		return -e;
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		mode_t need = S_ISDIR(st.st_mode) ? S_IRWXU : S_ISREG(st.st_mode) ? S_IRUSR : 0;
		char *path = NULL;
		if (asprintf(&path, "%s%s%s", rel, *rel ? "/" : "", name) < 0) {
			r = -ENOMEM;
			break;
		}
		mode_t mode = st.st_mode & 07777;
		/* Never through a symlink: a mounted agent may have put one
		 * at the name since the fstatat. */
		if ((mode & need) != need && st.st_uid == geteuid() &&
		    fchmodat(dfd, name, mode | need, AT_SYMLINK_NOFOLLOW) == 0)
			r = lift_record(l, path, mode);
		if (r == 0 && S_ISDIR(st.st_mode)) {
			int sub =
			    openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				r = lift_below(sub, path, l);
				close(sub);
			}
		}
		free(path);
	}
	closedir(d);
	return r;
}

/* Put back the modes of the lifted entries that stayed, deepest first, each
 * reached beneath @upper_fd without following a symlink (a mounted agent may
 * have renamed meanwhile: a symlink is never followed out of the upper). */
static void lift_restore(int upper_fd, struct lifts *l)
{
	for (size_t i = l->n; i-- > 0;) {
		char *path = l->v[i].path;
		char *slash = strrchr(path, '/');
		const char *leaf = slash ? slash + 1 : path;
		int pfd = upper_fd;
		if (slash) {
			*slash = 0;
			struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
					       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
							  RESOLVE_NO_MAGICLINKS};
			pfd = (int)syscall(SYS_openat2, upper_fd, path, &how, sizeof(how));
		}
		if (pfd >= 0)
			(void)fchmodat(pfd, leaf, l->v[i].mode, AT_SYMLINK_NOFOLLOW);
		if (pfd >= 0 && pfd != upper_fd)
			close(pfd);
		free(path);
	}
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* Mark ignored paths as status does, so the codes printed match its own. */
static void mark_ignored(const struct workspace *ws, struct changes *cs)
{
	git_repository *repo = NULL;
	git_libgit2_init();
	if (git_repository_open_ext(&repo, ws->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) == 0)
		(void)changes_mark_ignored(cs, repo);
	git_repository_free(repo);
	git_libgit2_shutdown();
}

int cmd_discard(int argc, char **argv)
{
	enum { OPT_STATE = 256 };
	static const struct option longopts[] = {
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *state_dir = NULL;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_STATE:
			state_dir = optarg;
			break;
		case 'h':
			fputs(cmd_discard_usage, stdout);
			return 0;
		default:
			cli_error(CMD, "%s: %s (see 'agentfs discard --help')",
				  cli_bad_option(argv),
				  c == ':' ? "missing argument" : "unknown option");
			return 2;
		}
	}
	if (optind == argc) {
		cli_error(CMD, "missing MNT or NAME (see 'agentfs discard --help')");
		return 2;
	}
	const char *target = argv[optind++];
	/* An empty PATH would be the top level, everything: most likely a
	 * script's unset variable (agentfs discard MNT "$FILE"). */
	for (int i = optind; i < argc; i++) {
		if (!argv[i][0]) {
			cli_error(CMD, "an empty PATH (no PATH, or '.', discards everything; see "
				       "'agentfs discard --help')");
			return 2;
		}
	}
	char *root = NULL;
	if (workspace_state_root(state_dir, &root) < 0) {
		cli_error(CMD, "cannot find the state directory (set HOME, XDG_STATE_HOME or "
			       "--state-dir)");
		return 1;
	}
	char err[1024] = "";
	struct workspace *ws = NULL;
	int r = workspace_find(root, target, &ws, err, sizeof(err));
	free(root);
	if (r < 0) {
		if (r == -ENOENT)
			cli_error(CMD, "%s: not an agentfs mount (no workspace found)", target);
		else
			cli_error(CMD, "%s", err);
		return 1;
	}

	int status = 1;
	struct gone gone = {0};
	struct policy *pol = NULL;
	struct changes *before = NULL, *after = NULL;
	struct lifts lifts = {0};
	char *upper = workspace_path(ws, "upper");
	int lfd = -1, ufd = -1;
	size_t npaths = (size_t)(argc - optind);
	char **paths = calloc(npaths ? npaths : 1, sizeof(*paths));
	if (!upper || !paths) {
		cli_error(CMD, "%s: out of memory", target);
		goto out;
	}
	if (changes_workspace_policy(ws, &pol, err, sizeof(err)) < 0) {
		cli_error(CMD, "%s: %s", target, err);
		goto out;
	}
	if ((lfd = open(ws->repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		cli_error(CMD, "%s: %s", ws->repo, strerror(errno));
		goto out;
	}
	if ((ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		cli_error(CMD, "%s: %s", upper, strerror(errno));
		goto out;
	}
	if (geteuid() != 0 && (r = lift_below(ufd, "", &lifts)) < 0) {
		cli_error(CMD, "%s: %s", upper, strerror(-r));
		goto out;
	}
	if ((r = changes_compute(lfd, ufd, pol, &before)) < 0) {
		cli_error(CMD, "%s: reading the upper and the repository: %s", target,
			  strerror(-r));
		goto out;
	}
	mark_ignored(ws, before);
	/* Check every path before touching anything. */
	for (size_t i = 0; i < npaths; i++) {
		const char *arg = argv[optind + (int)i];
		r = view_path(ws, arg, &paths[i]);
		if (r == -ENOMEM) {
			cli_error(CMD, "%s: out of memory", arg);
			goto out;
		}
		if (r < 0 || reserved_component(paths[i])) {
			cli_error(CMD, "%s: outside the view", arg);
			goto out;
		}
		/* Also what the upper holds without a visible change: the whiteout
		 * of a removed directory whose only entries are hidden. */
		if (!has_change(before, paths[i]) && changes_upper_holds(ufd, paths[i]) <= 0) {
			cli_error(CMD, "%s: no change at this path (see 'agentfs status')", arg);
			goto out;
		}
		if (inside_renamed(ufd, lfd, pol, paths[i])) {
			cli_error(CMD,
				  "%s: inside a renamed or replaced directory; discard that "
				  "directory",
				  arg);
			goto out;
		}
	}
	/* What goes on record as discarded: every entry removed from the upper,
	 * whatever status showed of it (a file renamed away and back shows no
	 * change, yet its upper copy goes), and each PATH done, "" for all
	 * (journal/SCHEMA.md: it and all below it went back to the base). */
	if (npaths == 0) {
		r = changes_discard(lfd, ufd, pol, "", on_removed, &gone);
		if (r == 0)
			on_removed(&gone, "");
	}
	for (size_t i = 0; i < npaths && r >= 0; i++) {
		r = changes_discard(lfd, ufd, pol, paths[i], on_removed, &gone);
		if (r == 0)
			on_removed(&gone, paths[i]);
		if (r == -ENOENT)
			r = 0; /* an earlier path covered it */
		if (r == -EBUSY) {
			cli_error(CMD,
				  "%s: inside a renamed or replaced directory; discard that "
				  "directory",
				  argv[optind + (int)i]);
			break;
		}
		if (r < 0)
			cli_error(CMD, "%s: %s", argv[optind + (int)i], strerror(-r));
	}
	if (r == -ENOENT && npaths == 0)
		r = 0; /* nothing to discard */
	else if (r < 0 && npaths == 0)
		cli_error(CMD, "%s: %s", upper, strerror(-r));

	int r2 = changes_compute(lfd, ufd, pol, &after);
	if (r2 < 0)
		cli_error(CMD, "%s: reading the upper again: %s", target, strerror(-r2));
	else
		mark_ignored(ws, after);
	/* Before the daemon drops its cache: it must not cache a lifted mode. */
	lift_restore(ufd, &lifts);

	/* The upper changed (perhaps only in part): the daemon must forget what the
	 * kernel cached about those paths (fs/fs.h, FS_INVALIDATE_FILE). */
	pid_t pid = workspace_daemon_pid(ws);
	if (pid > 0 && !daemon_takes_sigusr1(pid)) {
		cli_error(CMD,
			  "%s: the daemon (pid %d) cannot be told to drop its cache; "
			  "unmount and mount again to see the discarded paths",
			  target, (int)pid);
	} else if (pid > 0) {
		int e = tell_daemon(ws, pid, before, after, paths, npaths, &gone);
		if (e < 0)
			cli_error(CMD, "%s: telling the daemon (pid %d) to forget its cache: %s%s",
				  target, (int)pid, strerror(-e),
				  e == -ETIMEDOUT ? " (the view may show the old state for a while)"
						  : "");
	}
	if (r2 < 0)
		goto out;
	/* The journal says what was discarded: a serving daemon records the
	 * paths it is told to forget; otherwise this command appends them. */
	struct journal *j = NULL;
	char *jpath = pid > 0 ? NULL : workspace_path(ws, "journal.jsonl");
	if (jpath && journal_open(&j, jpath, JOURNAL_SYNC_ALWAYS) < 0)
		j = NULL;
	free(jpath);
	size_t printed = 0;
	for (size_t i = 0; i < before->count; i++) {
		const struct change *b = &before->items[i];
		const struct change *a = find(after, b->path);
		if (a && change_code(a) == change_code(b))
			continue;
		char *q = changes_quote(b->path);
		printf("%c %s\n", change_code(b), q ? q : b->path);
		free(q);
		printed++;
	}
	/* Entries went from inside a change that status still shows as it was
	 * (a file of a directory the agent made at a hidden name): those
	 * entries, under the code of the change that held them. */
	for (size_t i = 0; !printed && i < gone.paths.n; i++) {
		const struct change *in = NULL;
		for (size_t k = 0; k < before->count; k++)
			if (at_or_below(gone.paths.v[i], before->items[k].path) &&
			    (!in || strlen(before->items[k].path) > strlen(in->path)))
				in = &before->items[k];
		if (!in || !*gone.paths.v[i])
			continue;
		char *q = changes_quote(gone.paths.v[i]);
		printf("%c %s\n", change_code(in), q ? q : gone.paths.v[i]);
		free(q);
	}
	if (gone.oom)
		cli_error(CMD, "%s: out of memory: the journal does not say all that was discarded",
			  target);
	for (size_t i = 0; j && i < gone.paths.n; i++) {
		struct journal_event ev = {.op = JOP_DISCARD,
					   .pid = getpid(),
					   .uid = getuid(),
					   .path = gone.paths.v[i],
					   .detail = "agentfs discard"};
		journal_record(j, &ev);
	}
	journal_close(j);
	status = r < 0 ? 1 : 0;
out:
	if (fflush(stdout) != 0)
		status = 1;
	for (size_t i = 0; paths && i < npaths; i++)
		free(paths[i]);
	free(paths);
	strvec_clear(&gone.paths);
	changes_free(before);
	changes_free(after);
	if (ufd >= 0)
		lift_restore(ufd, &lifts);
	if (lfd >= 0)
		close(lfd);
	if (ufd >= 0)
		close(ufd);
	free(upper);
	policy_free(pol);
	workspace_free(ws);
	return status;
}
