/*
 * newly_hidden.c - what a new policy would hide that a workspace's agent could
 * already see (newly_hidden.h).
 *
 * The walks are breadth-first over paths below their layer's root, one
 * directory open at a time (openat2(2) with RESOLVE_BENEATH and no symlinks,
 * else one component at a time with O_NOFOLLOW): neither the stack nor the
 * descriptors grow with the depth an agent can give a tree.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <jansson.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli/changes.h"
#include "cli/newly_hidden.h"
#include "fs/layout.h"
#include "policy/policy.h"
#include "policy/symlink.h"

struct walk {
	int lower_fd, upper_fd;
	struct strvec lifted; /* "MODE PATH": upper directories lifted (put_back_all) */
	const struct policy *before, *now;
	bool sizes;		      /* either policy has max_file_size */
	git_odb *real_odb, *priv_odb; /* for the blobs of the private trees; NULL */
	json_t *seen;		      /* "TREE-ID PATH" of the private trees walked */
	struct strvec *out;
	char *where;
	size_t where_len;
	int error; /* the git walk's */
};

/* Whether @p hides @path (a directory, or a file of @size bytes; a symlink
 * to @target, NULL: read it from the lower at @path), as the view decides a
 * lower entry (fs/view.c, view_decide_lower). */
static bool hides(const struct walk *w, const struct policy *p, const char *path, mode_t mode,
		  uint64_t size, const char *target)
{
	bool is_dir = S_ISDIR(mode);
	if (policy_decide_path(p, path, is_dir, policy_size(mode, size)) == POLICY_HIDDEN)
		return true;
	if (!S_ISLNK(mode) || policy_symlinks_mode(p) != POLICY_SYMLINKS_HIDE)
		return false;
	return target ? policy_symlink_target_unsafe(p, w->lower_fd, path, target)
		      : policy_symlink_unsafe(p, w->lower_fd, path);
}

static int report(struct walk *w, const char *path, bool is_dir)
{
	return (is_dir ? strvec_pushf(w->out, "%s/", path) : strvec_push(w->out, path)) < 0
		   ? -ENOMEM
		   : 0;
}

static void fail_at(struct walk *w, const char *what)
{
	if (w->where && !*w->where)
		snprintf(w->where, w->where_len, "%s", *what ? what : ".");
}

/* "@dir/@name" (or @name at the top), malloc'd; NULL on ENOMEM. */
static char *join(const char *dir, const char *name)
{
	char *p = NULL;
	if ((*dir ? asprintf(&p, "%s/%s", dir, name) : asprintf(&p, "%s", name)) < 0)
		return NULL;
	return p;
}

/* The directory @rel below @root ("" the root itself) opened for reading, or
 * -errno; no symlink is followed, nothing outside @root is reached. */
static int open_below(int root, const char *rel)
{
	struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
			       .resolve =
				   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	long fd = syscall(SYS_openat2, root, *rel ? rel : ".", &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	if (errno != ENOSYS && errno != EPERM)
		return -errno;
	/* No openat2(2) (before Linux 5.6, valgrind, a seccomp filter): one
	 * component at a time. */
	return changes_open_below(root, rel, O_RDONLY | O_DIRECTORY);
}

/* The names in directory @fd (consumed), but "." and "..", into @names. */
static int list_dir(int fd, struct strvec *names)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	struct dirent *de;
	int r = 0;
	while (r == 0 && (errno = 0, de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			r = strvec_push(names, de->d_name);
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	return r;
}

/* A queue of directory paths: strvec @q from index *@head on. */
static const char *next_dir(struct strvec *q, size_t *head)
{
	return *head < q->n ? q->v[(*head)++] : NULL;
}

/* ---- the lower ---------------------------------------------------------- */

static int walk_lower(struct walk *w)
{
	struct strvec q = {0};
	size_t head = 0;
	int r = strvec_push(&q, "");
	const char *rel;
	while (r == 0 && (rel = next_dir(&q, &head))) {
		int fd = open_below(w->lower_fd, rel);
		if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP || fd == -EACCES ||
		    fd == -ENAMETOOLONG)
			continue; /* gone, replaced, or unreadable: nor can the view list it */
		if (fd < 0) {
			r = fd;
			fail_at(w, rel);
			break;
		}
		struct strvec names = {0};
		int dfd = dup(fd);
		r = dfd < 0 ? -errno : list_dir(dfd, &names);
		for (size_t i = 0; r == 0 && i < names.n; i++) {
			const char *name = names.v[i];
			if (!*rel && strcmp(name, ".git") == 0)
				continue; /* never the agent's (fs/view.c) */
			struct stat st;
			if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue; /* gone meanwhile */
			char *p = join(rel, name);
			if (!p) {
				r = -ENOMEM;
				break;
			}
			uint64_t size = (uint64_t)st.st_size;
			if (hides(w, w->before, p, st.st_mode, size, NULL))
				; /* the agent never saw it, nor what is below it */
			else if (hides(w, w->now, p, st.st_mode, size, NULL))
				r = report(w, p, S_ISDIR(st.st_mode));
			else if (S_ISDIR(st.st_mode))
				r = strvec_push(&q, p);
			free(p);
		}
		close(fd);
		strvec_clear(&names);
		if (r < 0)
			fail_at(w, rel);
	}
	strvec_clear(&q);
	return r;
}

/* ---- the upper ---------------------------------------------------------- */

/* Lift the owner's @bits of @name in @dfd, which the agent may have taken
 * away (chmod 000): its old mode, for put_back(), or -1 when unchanged. */
static int lift(int dfd, const char *name, mode_t bits)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(st.st_mode) ||
	    (st.st_mode & bits) == bits ||
	    fchmodat(dfd, name, (st.st_mode & 07777) | bits, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	return (int)(st.st_mode & 07777);
}

static void put_back(int dfd, const char *name, int mode)
{
	if (mode >= 0)
		(void)fchmodat(dfd, name, (mode_t)mode, AT_SYMLINK_NOFOLLOW);
}

/* The origin of @name in @dfd, its owner's read permission lifted for the
 * moment if the agent took it away: 1 and *@o, 0 none, or -errno. */
static int origin_of(int dfd, const char *name, struct layout_origin *o)
{
	int r = layout_get_origin_at(dfd, name, o);
	if (r == -EACCES) {
		int mode = lift(dfd, name, S_IRUSR);
		r = layout_get_origin_at(dfd, name, o);
		put_back(dfd, name, mode);
	}
	return r == -EINVAL ? 0 : r; /* not an origin agentfs wrote: nothing to decide */
}

/* Whether @now hides the lower file the origin @o names: by the lower file's
 * size where it is still there, else by @size, the copy's.  Whatever @before
 * says: the agent saw that file, since it copied it (a copy is an upper file,
 * which the view shows whatever any rule says). */
static bool origin_hidden(const struct walk *w, const struct layout_origin *o, uint64_t size)
{
	struct stat lst;
	if (fstatat(w->lower_fd, o->path, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(lst.st_mode))
		size = (uint64_t)lst.st_size;
	return policy_decide_path(w->now, o->path, false, size) == POLICY_HIDDEN;
}

/* One entry @name (fstat @st) of upper directory @fd at view path @rel. */
static int upper_entry(struct walk *w, int fd, const char *rel, const char *name,
		       const struct stat *st, struct strvec *q)
{
	char *vp = join(rel, name);
	if (!vp)
		return -ENOMEM;
	int r = 0;
	struct layout_origin o;
	if (layout_is_reserved(name)) {
		/* The whiteout of a file the agent had changed keeps its origin
		 * (fs/layout.h): the copy's bytes may live on in the agent's
		 * commits.  Named by the lower path. */
		if (strncmp(name, LAYOUT_WH_PREFIX, LAYOUT_WH_PREFIX_LEN) == 0 &&
		    S_ISREG(st->st_mode) && (r = origin_of(fd, name, &o)) == 1)
			r = origin_hidden(w, &o, (uint64_t)st->st_size) ? report(w, o.path, false)
									: 0;
	} else if (S_ISDIR(st->st_mode)) {
		r = strvec_push(q, vp); /* its redirect: walk_upper() */
	} else if (S_ISREG(st->st_mode)) {
		if ((r = origin_of(fd, name, &o)) == 1)
			r = origin_hidden(w, &o, (uint64_t)st->st_size) ? report(w, vp, false) : 0;
	} else if (S_ISLNK(st->st_mode)) {
		/* A symlink takes no origin (user xattrs): one at a place the
		 * new policy hides and the old one did not may be the person's,
		 * copied up. */
		char target[PATH_MAX];
		ssize_t n = readlinkat(fd, name, target, sizeof(target) - 1);
		if (n >= 0) {
			target[n] = 0;
			if (!hides(w, w->before, vp, st->st_mode, 0, target) &&
			    hides(w, w->now, vp, st->st_mode, 0, target))
				r = report(w, vp, false);
		}
	}
	free(vp);
	return r < 0 ? r : 0;
}

/* The parent directory of upper path @rel opened, and its last component in
 * *@base, or -errno. */
static int open_parent(int upper_fd, const char *rel, const char **base)
{
	const char *slash = strrchr(rel, '/');
	*base = slash ? slash + 1 : rel;
	char *parent = strndup(rel, slash ? (size_t)(slash - rel) : 0);
	if (!parent)
		return -ENOMEM;
	int fd = open_below(upper_fd, parent);
	free(parent);
	return fd;
}

/* Give the directories lift_dir() lifted their modes back, the deepest
 * first (their parents are reached through the lifted ones). */
static void put_back_all(struct walk *w)
{
	for (size_t i = w->lifted.n; i-- > 0;) {
		char *end;
		long mode = strtol(w->lifted.v[i], &end, 8);
		const char *base;
		int pfd = open_parent(w->upper_fd, end + 1, &base);
		if (pfd < 0 || fchmodat(pfd, base, (mode_t)mode, AT_SYMLINK_NOFOLLOW) < 0)
			fprintf(stderr,
				"agentfs: mount: upper/%s: cannot give its mode %lo back: %s\n",
				end + 1, mode, strerror(pfd < 0 ? -pfd : errno));
		if (pfd >= 0)
			close(pfd);
	}
	strvec_clear(&w->lifted);
}

/* Upper directory @rel, which the agent made unreadable or unsearchable: its
 * owner's read and search permissions lifted until the walk ends (its
 * subdirectories are reached through it), then it is opened again.  The
 * descriptor, or -errno. */
static int lift_dir(struct walk *w, const char *rel)
{
	const char *base;
	int pfd = open_parent(w->upper_fd, rel, &base);
	if (pfd < 0)
		return pfd;
	/* Recorded before it is lifted: nothing fails between the two. */
	const mode_t bits = S_IRUSR | S_IXUSR;
	struct stat st;
	int r = 0;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
	    (st.st_mode & bits) != bits) {
		if (strvec_pushf(&w->lifted, "%o %s", (unsigned)(st.st_mode & 07777), rel) < 0)
			r = -ENOMEM;
		else
			(void)lift(pfd, base, bits);
	}
	close(pfd);
	return r < 0 ? r : open_below(w->upper_fd, rel);
}

static int walk_upper(struct walk *w)
{
	struct strvec q = {0};
	size_t head = 0;
	int r = strvec_push(&q, "");
	const char *rel;
	while (r == 0 && (rel = next_dir(&q, &head))) {
		int fd = open_below(w->upper_fd, rel);
		struct stat dst;
		if (fd == -EACCES && *rel) {
			fd = lift_dir(w, rel);
		} else if (fd >= 0 && *rel && geteuid() != 0 && fstat(fd, &dst) == 0 &&
			   (dst.st_mode & (S_IRUSR | S_IXUSR)) != (S_IRUSR | S_IXUSR)) {
			/* Readable but not searchable (0600), or the reverse:
			 * its entries cannot be looked at as they are. */
			close(fd);
			fd = lift_dir(w, rel);
		}
		struct strvec names = {0};
		if (fd >= 0) {
			int dfd = dup(fd);
			r = dfd < 0 ? -errno : list_dir(dfd, &names);
		} else {
			r = fd;
		}
		/* A renamed directory: the view decides what is below it by the
		 * entries' own names, not by the directories of the path it came
		 * from.  The agent saw that path, which it renamed. */
		char redirect[PATH_MAX];
		if (r == 0 && *rel && layout_get_redirect(fd, redirect, sizeof(redirect)) > 0 &&
		    policy_decide_path(w->now, redirect, true, 0) == POLICY_HIDDEN)
			r = report(w, rel, true);
		for (size_t i = 0; r == 0 && i < names.n; i++) {
			struct stat st;
			if (fstatat(fd, names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
				r = errno == ENOENT ? 0 : -errno;
				continue;
			}
			r = upper_entry(w, fd, rel, names.v[i], &st, &q);
		}
		if (fd >= 0)
			close(fd);
		strvec_clear(&names);
		if (r < 0)
			fail_at(w, rel);
	}
	strvec_clear(&q);
	put_back_all(w);
	return r;
}

/* ---- the private repository's base tree ----------------------------------- */

/* Object @id read, from the repository (the base's blobs: gitpriv.h), else
 * from the private one (the person's uncommitted files at the build, the
 * agent's own): 0, or -1. */
static int read_object(const struct walk *w, const git_oid *id, git_odb_object **obj)
{
	return (w->real_odb && git_odb_read(obj, w->real_odb, id) == 0) ||
		       (w->priv_odb && git_odb_read(obj, w->priv_odb, id) == 0)
		   ? 0
		   : -1;
}

static int read_size(const struct walk *w, const git_oid *id, size_t *len)
{
	git_object_t type;
	return (w->real_odb && git_odb_read_header(len, &type, w->real_odb, id) == 0) ||
		       (w->priv_odb && git_odb_read_header(len, &type, w->priv_odb, id) == 0)
		   ? 0
		   : -1;
}

/* The size and, for a symlink, the target (into @target, PATH_MAX bytes) of
 * blob @id.  Unknown: the largest size, which every max_file_size hides. */
static uint64_t blob_facts(const struct walk *w, const git_oid *id, bool link, char *target)
{
	*target = 0;
	if (!link) {
		size_t len;
		if (!w->sizes)
			return 0;
		return read_size(w, id, &len) == 0 ? len : UINT64_MAX;
	}
	git_odb_object *obj = NULL;
	if (read_object(w, id, &obj) < 0)
		return UINT64_MAX;
	size_t n = git_odb_object_size(obj);
	if (n < PATH_MAX) {
		memcpy(target, git_odb_object_data(obj), n);
		target[n] = 0;
	}
	git_odb_object_free(obj);
	return n;
}

/* Decide the private repository's entry @path (git mode @fm, object @id):
 * 1 when what is below it needs no look (hidden before, or reported now), 0
 * to go on, -1 on an error (in w->error). */
static int git_entry(struct walk *w, const char *path, git_filemode_t fm, const git_oid *id)
{
	mode_t mode = fm == GIT_FILEMODE_TREE	? S_IFDIR
		      : fm == GIT_FILEMODE_LINK ? S_IFLNK
						: S_IFREG;
	char target[PATH_MAX];
	uint64_t size = 0;
	if (fm == GIT_FILEMODE_BLOB || fm == GIT_FILEMODE_BLOB_EXECUTABLE ||
	    fm == GIT_FILEMODE_LINK)
		size = blob_facts(w, id, fm == GIT_FILEMODE_LINK, target);
	/* An unknown target (unreadable): unsafe under `symlinks: hide`, and
	 * so hidden before and now alike; "" decides as the link's own path. */
	const char *t = fm == GIT_FILEMODE_LINK ? target : NULL;
	if (hides(w, w->before, path, mode, size == UINT64_MAX ? 0 : size, t))
		return 1; /* not below it either */
	if (hides(w, w->now, path, mode, size, t))
		return (w->error = report(w, path, S_ISDIR(mode))) < 0 ? -1 : 1;
	return 0;
}

static int tree_entry(const char *root, const git_tree_entry *e, void *arg)
{
	struct walk *w = arg;
	char *p = NULL, *key = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	if (asprintf(&p, "%s%s", root, git_tree_entry_name(e)) < 0) {
		w->error = -ENOMEM;
		return -1;
	}
	int ret = 0;
	/* A subtree already walked at this path (the commits share most of
	 * theirs): decided the same, as the policy decides by path. */
	if (git_tree_entry_type(e) == GIT_OBJECT_TREE) {
		git_oid_tostr(hex, sizeof(hex), git_tree_entry_id(e));
		if (asprintf(&key, "%s %s", hex, p) < 0) {
			w->error = -ENOMEM;
			ret = -1;
		} else if (json_object_get(w->seen, key)) {
			ret = 1;
		} else if (json_object_set_new_nocheck(w->seen, key, json_true()) < 0) {
			w->error = -ENOMEM;
			ret = -1;
		}
	}
	if (ret == 0)
		ret = git_entry(w, p, git_tree_entry_filemode(e), git_tree_entry_id(e));
	free(key);
	free(p);
	return ret;
}

/* Walk @tree of @priv, unless the same tree was walked already. */
static int walk_one_tree(struct walk *w, git_repository *priv, const git_oid *id)
{
	char hex[GIT_OID_HEXSZ + 1], key[GIT_OID_HEXSZ + 2];
	git_oid_tostr(hex, sizeof(hex), id);
	snprintf(key, sizeof(key), "%s ", hex);
	if (json_object_get(w->seen, key))
		return 0;
	if (json_object_set_new_nocheck(w->seen, key, json_true()) < 0)
		return -ENOMEM;
	git_tree *tree = NULL;
	if (git_tree_lookup(&tree, priv, id) < 0)
		return -EIO;
	int r = git_tree_walk(tree, GIT_TREEWALK_PRE, tree_entry, w) < 0
		    ? (w->error ? w->error : -EIO)
		    : 0;
	git_tree_free(tree);
	return r;
}

/* The trees of every commit the private repository's refs reach (the
 * agent's commits may hold files it read that neither the lower nor the base
 * holds now), and its index. */
static int walk_history(struct walk *w, git_repository *priv)
{
	git_revwalk *rw = NULL;
	int r = git_revwalk_new(&rw, priv) < 0 ? -EIO : 0;
	if (r == 0 && git_revwalk_push_glob(rw, "refs/*") < 0)
		r = -EIO;
	if (r == 0)
		(void)git_revwalk_push_head(rw); /* a detached HEAD */
	git_oid id;
	while (r == 0 && git_revwalk_next(&id, rw) == 0) {
		git_commit *c = NULL;
		if (git_commit_lookup(&c, priv, &id) < 0) {
			r = -EIO;
			break;
		}
		r = walk_one_tree(w, priv, git_commit_tree_id(c));
		git_commit_free(c);
	}
	git_revwalk_free(rw);
	git_index *idx = NULL;
	if (r == 0 && git_repository_index(&idx, priv) == 0) {
		size_t n = git_index_entrycount(idx);
		for (size_t i = 0; r == 0 && i < n; i++) {
			const git_index_entry *e = git_index_get_byindex(idx, i);
			if (e && git_entry(w, e->path, (git_filemode_t)e->mode, &e->id) < 0)
				r = w->error ? w->error : -EIO;
		}
	}
	git_index_free(idx);
	return r;
}

static int walk_git(struct walk *w, const char *git_dir, const char *tree_hex, const char *repo)
{
	git_repository *priv = NULL, *real = NULL;
	git_oid id;
	int r = 0;
	if (!(w->seen = json_object()))
		return -ENOMEM;
	if (repo && git_repository_open_ext(&real, repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) == 0)
		(void)git_repository_odb(&w->real_odb, real);
	if (git_oid_fromstrn(&id, tree_hex, strlen(tree_hex)) < 0 ||
	    git_repository_open_bare(&priv, git_dir) < 0 ||
	    git_repository_odb(&w->priv_odb, priv) < 0)
		r = -EIO;
	if (r == 0 && (r = walk_one_tree(w, priv, &id)) < 0)
		fail_at(w, "the private .git's base tree");
	if (r == 0 && (r = walk_history(w, priv)) < 0)
		fail_at(w, "the private .git's commits");
	if (r < 0)
		fail_at(w, "the private .git");
	git_odb_free(w->real_odb);
	git_odb_free(w->priv_odb);
	w->real_odb = w->priv_odb = NULL;
	json_decref(w->seen);
	w->seen = NULL;
	git_repository_free(priv);
	git_repository_free(real);
	return r;
}

/* ---- all of them -------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int newly_hidden_find(int lower_fd, int upper_fd, const char *repo, const char *git_dir,
		      const char *tree, const struct policy *before, const struct policy *now,
		      struct strvec *out, char *where, size_t where_len)
{
	if (where && where_len)
		*where = 0;
	struct walk w = {.lower_fd = lower_fd,
			 .upper_fd = upper_fd,
			 .before = before,
			 .now = now,
			 .sizes = policy_max_file_size(now) != 0 ||
				  (before && policy_max_file_size(before) != 0),
			 .out = out,
			 .where = where_len ? where : NULL,
			 .where_len = where_len};
	/* Unknown, the old policy hides nothing: whatever @now hides counts. */
	struct policy *none = NULL;
	if (!before) {
		static const char text[] = "version: 1\nextends: none\nsymlinks: allow\n";
		struct policy_error perr;
		int r = policy_load_string("(unknown)", text, sizeof(text) - 1, &none, &perr);
		if (r < 0)
			return r;
		w.before = none;
	}
	size_t first = out->n;
	int r = walk_lower(&w);
	if (r == 0) {
		/* An interrupt waits for the modes walk_upper() lifts to be put
		 * back (SIGKILL cannot: then the agent's unreadable directories
		 * stay readable by their owner). */
		static const int ending[] = {SIGINT,	SIGTERM, SIGHUP,  SIGQUIT,
					     SIGPIPE,	SIGALRM, SIGUSR1, SIGUSR2,
					     SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ};
		sigset_t block, old;
		sigemptyset(&block);
		for (size_t i = 0; i < sizeof(ending) / sizeof(ending[0]); i++)
			sigaddset(&block, ending[i]);
		sigprocmask(SIG_BLOCK, &block, &old);
		r = walk_upper(&w);
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	if (r == 0 && git_dir)
		r = walk_git(&w, git_dir, tree, repo);
	policy_free(none);
	/* Sorted, each once (the lower and the base tree name most alike). */
	if (out->n > first) {
		qsort(out->v + first, out->n - first, sizeof(*out->v), cmp_str);
		size_t k = first;
		for (size_t i = first; i < out->n; i++) {
			if (k > first && strcmp(out->v[k - 1], out->v[i]) == 0)
				free(out->v[i]);
			else
				out->v[k++] = out->v[i];
		}
		for (size_t i = k; i < out->n; i++)
			out->v[i] = NULL;
		out->n = k;
	}
	return r;
}
