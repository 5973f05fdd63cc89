/* series.c - replay the agent's commits and changes onto the HEAD at mount (series.h). */
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/repository.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>
#include <xxhash.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/gitpriv.h"
#include "cli/patch.h"
#include "cli/secrets.h"
#include "cli/series.h"
#include "cli/strvec.h"
#include "cli/workspace.h"
#include "fs/layout.h"
#include "policy/policy.h"
#include "policy/symlink.h"

int series_mode_parse(const char *s, enum series_mode *out)
{
	if (strcmp(s, "fail") == 0)
		*out = SERIES_FAIL;
	else if (strcmp(s, "skip") == 0)
		*out = SERIES_SKIP;
	else if (strcmp(s, "take") == 0)
		*out = SERIES_TAKE;
	else
		return -EINVAL;
	return 0;
}

/* One path's new state in a step. */
struct edit {
	char *path;
	bool del;
	uint32_t mode;
	git_oid id;
};

struct edits {
	struct edit *v;
	size_t n;
};

static int edits_add(struct edits *e, const char *path, bool del, uint32_t mode, const git_oid *id)
{
	struct edit *n = realloc(e->v, (e->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	e->v = n;
	n[e->n].path = strdup(path);
	if (!n[e->n].path)
		return -ENOMEM;
	n[e->n].del = del;
	n[e->n].mode = mode;
	if (id)
		n[e->n].id = *id;
	else
		memset(&n[e->n].id, 0, sizeof(git_oid));
	e->n++;
	return 0;
}

static void edits_clear(struct edits *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].path);
	free(e->v);
	e->v = NULL;
	e->n = 0;
}

struct ctx {
	const struct workspace *ws;
	const struct series_opts *o;
	struct series *s;
	struct policy *policy;
	git_repository *real;
	git_odb *real_odb;
	git_repository *priv; /* NULL without a private repository */
	git_odb *priv_odb;
	struct gitpriv_oidset base_objects; /* reachable from the recorded base tree */
	struct gitpriv_oidset trusted;	    /* blobs written here from the view */
	struct changes *cs; /* the view's change set, computed once before the steps */
	/* The clean filters of the view's files (view_attrs_open): NULL for
	 * c->real's, when the change set changes no .gitattributes. */
	git_repository *view_attrs;
	char *attr_standin;
	char **dirty;
	size_t n_dirty;
	bool have_dirty;     /* git-dirty was recorded (else: compare with HEAD) */
	git_tree *head_tree; /* the HEAD at mount's tree, NULL when unborn */
	/* The person's index, for its stat cache (lower_differs_from_head):
	 * loaded on first use; NULL when it cannot be read. */
	git_index *real_index;
	bool real_index_tried;
	struct timespec real_index_mtime;
	bool filemode; /* core.fileMode: the executable bit counts */
	git_index *target;
	git_oid prev_tree;
	bool have_prev_tree;
	git_signature *committer;
	size_t refusals;
	/* Where each commit of the series came from, for the secret scan
	 * (secrets.h): the agent's commit id (40 hex digits), or "-m". */
	struct strvec sources;
	/* What the notes named (series_opts.named, or the build's own list). */
	struct strvec *named;
	struct strvec own_named;
};

static int lg_fail(const struct ctx *c, const char *what)
{
	const git_error *e = git_error_last();
	char *q = changes_quote(what); /* often the agent's path */
	cli_error(c->o->cmd, "%s: %s", q ? q : what,
		  e && e->message ? e->message : "libgit2 error");
	free(q);
	return -EIO;
}

/* Print "@key: <the rest of @fmt>" unless @key (a quoted path left out, a
 * dropped commit's label) was named before: one line each, however many
 * commits touch the path and however many times the series is built. */
static void note(struct ctx *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct ctx *c, const char *key, const char *fmt, ...)
{
	for (size_t i = 0; i < c->named->n; i++)
		if (strcmp(c->named->v[i], key) == 0)
			return;
	char *msg = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	cli_error(c->o->cmd, "%s: %s", key, n < 0 ? "left out" : msg);
	free(msg);
	strvec_push(c->named, key); /* ENOMEM: at worst named again */
}

/* A file of the person's that git does not track: in the lower but not in
 * the tree of the HEAD at mount.  Its bytes are the person's uncommitted work
 * as much as a changed tracked file's, but git-dirty records only those (the
 * private base tree holds tracked files alone), so an agent's commit of it
 * would carry the person's file into the branch unasked. */
static bool path_untracked_in_lower(const struct ctx *c, const char *path)
{
	git_tree_entry *te = NULL;
	if (c->head_tree && git_tree_entry_bypath(&te, c->head_tree, path) == 0) {
		git_tree_entry_free(te);
		return false;
	}
	char p[PATH_MAX];
	struct stat st;
	if (snprintf(p, sizeof(p), "%s/%s", c->ws->repo, path) >= (int)sizeof(p))
		return false;
	return lstat(p, &st) == 0 && (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode));
}

/* The person's index and core.fileMode, read once per series
 * (ctx.real_index, ctx.filemode).  Returns the index, or NULL. */
static git_index *real_index(struct ctx *c)
{
	if (!c->real_index_tried) {
		c->real_index_tried = true;
		int fm = 1;
		git_config *cfg = NULL;
		if (git_repository_config_snapshot(&cfg, c->real) == 0)
			git_config_get_bool(&fm, cfg, "core.filemode"); /* default: true */
		git_config_free(cfg);
		c->filemode = fm != 0;
		char p[PATH_MAX];
		struct stat st;
		if (git_repository_index(&c->real_index, c->real) < 0)
			c->real_index = NULL;
		else if (snprintf(p, sizeof(p), "%sindex", git_repository_path(c->real)) <
			     (int)sizeof(p) &&
			 stat(p, &st) == 0)
			c->real_index_mtime = st.st_mtim;
	}
	return c->real_index;
}

/*
 * Does the person's working tree differ at tracked @path from the HEAD at
 * mount: a change made after the mount (git-dirty records those made before),
 * which the agent's copy of the file then holds if it copied it afterwards?
 * Decided as git would: clean when the person's index entry holds HEAD's
 * blob and its stat data still describe the file (and the file is not
 * racily clean: modified no earlier than the index was written), else by the
 * content through the repository's clean filters (gitpriv_clean_filter),
 * the executable bit (unless core.fileMode is false), a symlink's target.  A
 * path the person removed differs; a submodule's does not (its files are
 * another repository's).  A file under a filter driver libgit2 does not run
 * (git-lfs) that the stat data do not vouch for counts as differing: fail
 * closed, --dirty=take takes it.
 */
static bool lower_differs_from_head(struct ctx *c, const char *path)
{
	git_tree_entry *te = NULL;
	if (!c->head_tree || git_tree_entry_bypath(&te, c->head_tree, path) != 0)
		return false; /* untracked: path_untracked_in_lower */
	git_filemode_t mode = git_tree_entry_filemode(te);
	git_oid want;
	git_oid_cpy(&want, git_tree_entry_id(te));
	git_tree_entry_free(te);
	if (mode == GIT_FILEMODE_COMMIT)
		return false;
	char p[PATH_MAX];
	struct stat st;
	if (snprintf(p, sizeof(p), "%s/%s", c->ws->repo, path) >= (int)sizeof(p))
		return false;
	if (lstat(p, &st) != 0)
		return true;
	git_index *idx = real_index(c);
	const git_index_entry *ie = idx ? git_index_get_bypath(idx, path, 0) : NULL;
	bool racy = st.st_mtim.tv_sec > c->real_index_mtime.tv_sec ||
		    (st.st_mtim.tv_sec == c->real_index_mtime.tv_sec &&
		     st.st_mtim.tv_nsec >= c->real_index_mtime.tv_nsec);
	if (ie && git_oid_equal(&ie->id, &want) && ie->mode == mode &&
	    gitpriv_index_stat_matches(ie, &st) && !racy)
		return false;
	git_oid id;
	if (S_ISREG(st.st_mode)) {
		bool exec = (st.st_mode & 0100) != 0;
		if ((mode != GIT_FILEMODE_BLOB && mode != GIT_FILEMODE_BLOB_EXECUTABLE) ||
		    (c->filemode && exec != (mode == GIT_FILEMODE_BLOB_EXECUTABLE)))
			return true;
		char *buf = NULL;
		size_t len = 0;
		bool same = gitpriv_read_file(p, &buf, &len) == 0 &&
			    gitpriv_clean_filter(c->real, path, &buf, &len) == 0 &&
			    git_odb_hash(&id, buf ? buf : "", len, GIT_OBJECT_BLOB) == 0 &&
			    git_oid_equal(&id, &want);
		free(buf);
		return !same; /* cannot tell: the person's, to be safe */
	}
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(p, target, sizeof(target));
		if (mode != GIT_FILEMODE_LINK || n < 0 ||
		    git_odb_hash(&id, target, (size_t)n, GIT_OBJECT_BLOB) < 0)
			return true;
		return !git_oid_equal(&id, &want);
	}
	return mode != GIT_FILEMODE_TREE;
}

/*
 * Did the agent's copy of tracked @path start from another version than the
 * HEAD at mount's: the upper file there came from a copy-up (its origin)
 * whose hash is not that of HEAD's blob as checked out (git_blob_filter:
 * the smudge side of eol and the like)?  The person changed the file after
 * the mount and before the agent copied it, and may have undone that since
 * (git stash, git checkout): the working tree is clean again, but the
 * agent's copy, and the commits it made of it, hold the person's edit.  A
 * file no longer at @path in the upper says nothing.
 */
static bool copy_started_elsewhere(struct ctx *c, const char *path)
{
	git_tree_entry *te = NULL;
	if (!c->head_tree || git_tree_entry_bypath(&te, c->head_tree, path) != 0)
		return false;
	git_oid id;
	git_oid_cpy(&id, git_tree_entry_id(te));
	bool blob = git_tree_entry_type(te) == GIT_OBJECT_BLOB &&
		    git_tree_entry_filemode(te) != GIT_FILEMODE_LINK;
	git_tree_entry_free(te);
	if (!blob)
		return false;
	char *upper = workspace_path(c->ws, "upper");
	int ufd = upper ? open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	int fd = ufd < 0 ? -EBADF : changes_open_below(ufd, path, O_RDONLY | O_NONBLOCK);
	struct layout_origin o;
	int got = fd < 0 ? 0 : layout_get_origin(fd, &o);
	if (fd >= 0)
		close(fd);
	if (ufd >= 0)
		close(ufd);
	free(upper);
	if (got != 1 || strcmp(o.path, path) != 0)
		return false; /* the agent's own file, or one moved here */
	git_blob *b = NULL;
	git_buf out = GIT_BUF_INIT;
	git_blob_filter_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.version = GIT_BLOB_FILTER_OPTIONS_VERSION;
	/* No GIT_BLOB_FILTER_CHECK_FOR_BINARY: with it libgit2 gives a binary
	 * blob back empty; the crlf filter leaves binary content alone itself
	 * unless the attributes say text. */
	opts.flags = 0;
	bool differs = true; /* cannot tell: the person's, to be safe */
	if (git_blob_lookup(&b, c->real, &id) == 0 && git_blob_filter(&out, b, path, &opts) == 0) {
		XXH128_hash_t h = XXH3_128bits(out.ptr, out.size);
		differs = !XXH128_isEqual(h, o.hash);
	}
	git_buf_dispose(&out);
	git_blob_free(b);
	if (differs) {
		/* Not HEAD's bytes as a checkout writes them, but maybe the
		 * working tree's as they are now, which git takes for HEAD's
		 * (path_dirty asked lower_differs_from_head first): CRLF lines
		 * under text=auto, the index's LF.  A version the person made
		 * and undid since cannot be the one there now. */
		char p[PATH_MAX];
		char *buf = NULL;
		size_t len = 0;
		if (snprintf(p, sizeof(p), "%s/%s", c->ws->repo, path) < (int)sizeof(p) &&
		    gitpriv_read_file(p, &buf, &len) == 0 &&
		    XXH128_isEqual(XXH3_128bits(buf ? buf : "", len), o.hash))
			differs = false;
		free(buf);
	}
	return differs;
}

/* Where the person had work of their own that git has not committed: a path
 * dirty at mount (git-dirty), changed in the working tree since, or an
 * untracked file.  The reason to name, or NULL. */
static int change_path_cmp(const void *key, const void *item);

static const char *path_dirty_here(struct ctx *c, const char *path);

/* path_dirty_here() of @path, or of the repository path the view shows there
 * when that is another (a directory the agent renamed shows the repository's
 * directory live: a file the person added or changed there since, seen at
 * the new name, is the person's, not the agent's). */
static const char *path_dirty(struct ctx *c, const char *path)
{
	const struct change *ch = c->cs && c->cs->count
				      ? bsearch(path, c->cs->items, c->cs->count,
						sizeof(c->cs->items[0]), change_path_cmp)
				      : NULL;
	if (ch && ch->view.present && ch->view.layer == CHANGE_LOWER &&
	    strcmp(ch->view.path, path) != 0 && path_dirty_here(c, ch->view.path))
		return "at its old path, in a directory the agent renamed";
	/* A file the agent moved here (mv): its copy's origin names the
	 * repository file it came from, whose uncommitted changes (or whole
	 * bytes, untracked) are the person's. */
	if (ch && ch->view.present && ch->view.layer == CHANGE_UPPER) {
		/* The change set's own descriptor of the upper. */
		int fd = changes_open_below(c->cs->upper_fd, ch->view.path, O_RDONLY | O_NONBLOCK);
		struct layout_origin o;
		bool moved = fd >= 0 && layout_get_origin(fd, &o) == 1 && strcmp(o.path, path) != 0;
		if (fd >= 0)
			close(fd);
		if (moved && path_dirty_here(c, o.path))
			return "where the agent moved it from";
	}
	return path_dirty_here(c, path);
}

static const char *path_dirty_here(struct ctx *c, const char *path)
{
	if (gitpriv_path_in(c->dirty, c->n_dirty, path))
		return "at mount";
	if (!c->have_dirty)
		return NULL;
	if (path_untracked_in_lower(c, path))
		return "at mount";
	if (lower_differs_from_head(c, path))
		return "since the mount";
	return copy_started_elsewhere(c, path) ? "since the mount, in the agent's copy" : NULL;
}

/* Make blob @id available in the target repository, refusing any that is
 * neither the agent's nor the base's. */
static int carry_blob(struct ctx *c, const char *path, const git_oid *id)
{
	if (gitpriv_oidset_has(&c->trusted, id))
		return 0;
	if (c->priv_odb) {
		git_odb_object *obj = NULL;
		if (git_odb_read(&obj, c->priv_odb, id) == 0) {
			git_oid got;
			int r =
			    git_odb_object_type(obj) == GIT_OBJECT_BLOB &&
				    git_odb_write(&got, c->real_odb, git_odb_object_data(obj),
						  git_odb_object_size(obj), GIT_OBJECT_BLOB) == 0 &&
				    git_oid_equal(&got, id)
				? 0
				: -EIO;
			git_odb_object_free(obj);
			if (r == 0)
				return gitpriv_oidset_add(&c->trusted, id);
		}
	}
	if (gitpriv_oidset_has(&c->base_objects, id))
		return 0;
	char hex[GIT_OID_HEXSZ + 1];
	git_oid_tostr(hex, sizeof(hex), id);
	char *q = changes_quote(path);
	cli_error(c->o->cmd, "%s: blob %s is neither the agent's nor the base's; refused",
		  q ? q : path, hex);
	free(q);
	c->refusals++;
	return 0;
}

/* Said of a file (or symlink) put where the repository keeps hidden files. */
#define OVER_HIDDEN_FILE                                                                           \
	"replaced by a file, but the repository keeps files there the agent cannot see"

/* Does the target index hold, below directory @path, a file the policy hides
 * (or a symlink it may hide)?  Putting a file at @path would delete it
 * (series.h: hidden tracked files are carried over untouched). */
static bool over_hidden(const struct ctx *c, const char *path)
{
	size_t n = strlen(path), pos = 0;
	char *prefix = malloc(n + 2);
	if (!prefix)
		return true; /* unsure is yes */
	memcpy(prefix, path, n);
	memcpy(prefix + n, "/", 2);
	bool hit = false;
	if (git_index_find_prefix(&pos, c->target, prefix) < 0)
		pos = git_index_entrycount(c->target); /* no entry below @path */
	for (size_t i = pos; !hit && i < git_index_entrycount(c->target); i++) {
		const git_index_entry *ie = git_index_get_byindex(c->target, i);
		if (strncmp(ie->path, prefix, n + 1) != 0)
			break;
		/* A symlink left there the agent may not have seen either (the
		 * `symlinks: hide` rule): deletions ran first, so it did not go. */
		hit = policy_decide_path(c->policy, ie->path, false, 0) == POLICY_HIDDEN ||
		      ie->mode == GIT_FILEMODE_LINK;
	}
	free(prefix);
	return hit;
}

/*
 * The filter driver the person's attributes give @path (gitattributes(5),
 * "filter": git-lfs, git-crypt, a redacting clean filter), copied into @out,
 * or false.  git runs its clean command at `git add`; libgit2 runs none, so
 * a blob made here, or by the agent's git (its private config names no
 * driver), holds the working tree's bytes: smudged, decrypted.
 */
static bool filter_driver(const struct ctx *c, const char *path, char *out, size_t len)
{
	const char *v = NULL;
	if (git_attr_get(&v, c->real, GIT_ATTR_CHECK_FILE_THEN_INDEX, path, "filter") < 0 ||
	    !GIT_ATTR_HAS_VALUE(v))
		return false;
	snprintf(out, len, "%s", v);
	return true;
}

/* Said of a file or symlink put where the repository keeps one the view hides. */
#define OVER_HIDDEN_ENTRY "put where the repository keeps a file or symlink the agent cannot see"

/*
 * Does the target index hold at @path a file or symlink the view hides by
 * more than its name (a name rule refuses the edit before this): a symlink
 * out of the repository or onto a hidden path under `symlinks: hide`
 * (policy_symlink_target_unsafe(), its target as the blob holds it), a file
 * over a size rule?  The agent never saw it, so its edit there would replace
 * it.  Not an entry whose blob is the agent's own (an earlier step put it
 * there).  Unsure is yes.
 */
static bool hides_entry(const struct ctx *c, const char *path)
{
	const git_index_entry *ie = git_index_get_bypath(c->target, path, 0);
	if (!ie || ie->mode == GIT_FILEMODE_COMMIT || gitpriv_oidset_has(&c->trusted, &ie->id))
		return false;
	size_t size = 0;
	git_object_t type;
	if (git_odb_read_header(&size, &type, c->real_odb, &ie->id) < 0) {
		git_error_clear();
		return true;
	}
	if (policy_decide_path(c->policy, path, false, policy_size(ie->mode, size)) ==
	    POLICY_HIDDEN)
		return true;
	if (ie->mode != GIT_FILEMODE_LINK ||
	    policy_symlinks_mode(c->policy) != POLICY_SYMLINKS_HIDE)
		return false;
	git_odb_object *obj = NULL;
	int fd = open(c->ws->repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	bool unsafe = true;
	if (fd >= 0 && size < PATH_MAX && git_odb_read(&obj, c->real_odb, &ie->id) == 0) {
		char target[PATH_MAX];
		memcpy(target, git_odb_object_data(obj), size);
		target[size] = 0;
		unsafe = strlen(target) != size ||
			 policy_symlink_target_unsafe(c->policy, fd, path, target);
	}
	git_odb_object_free(obj);
	if (fd >= 0)
		close(fd);
	return unsafe;
}

/*
 * A repository object of @repo_dir whose working tree is a stand-in holding
 * the .gitattributes files the change set @cs leaves (changes_standin): the
 * clean filters of the view's files are then the agent's .gitattributes', as
 * its git in the mount applies them (an agent that drops an eol=crlf rule
 * and writes CRLF gets CRLF stored).  *@out is NULL when @cs changes no
 * .gitattributes: the repository's own apply.  *@standin: the directory, for
 * changes_standin_free().  Its index is the repository's without the
 * .gitattributes entries: libgit2 layers the index's .gitattributes under
 * the working tree's (GIT_ATTR_CHECK_FILE_THEN_INDEX), where git reads the
 * working tree's alone when there is one (gitattributes(5)), so a rule the
 * agent removed would still apply.  0, or a negative errno (-EIO: libgit2's).
 */
static int view_attrs_open(const char *repo_dir, const struct changes *cs, git_repository **out,
			   char **standin)
{
	*out = NULL;
	int r = changes_standin(cs, ".gitattributes", standin);
	if (r < 0 || !*standin)
		return r;
	git_index *ri = NULL, *vi = NULL;
	r = git_repository_open_ext(out, repo_dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0 ||
		    git_repository_set_workdir(*out, *standin, 0) < 0 ||
		    git_repository_index(&ri, *out) < 0 || git_index_new(&vi) < 0
		? -EIO
		: 0;
	for (size_t i = 0; r == 0 && i < git_index_entrycount(ri); i++) {
		const git_index_entry *e = git_index_get_byindex(ri, i);
		const char *slash = strrchr(e->path, '/');
		if (strcmp(slash ? slash + 1 : e->path, ".gitattributes") != 0 &&
		    git_index_add(vi, e) < 0)
			r = -EIO;
	}
	if (r == 0)
		git_repository_set_index(*out, vi);
	git_index_free(ri);
	git_index_free(vi);
	if (r < 0) {
		git_repository_free(*out);
		*out = NULL;
		changes_standin_free(*standin);
		*standin = NULL;
		return -EIO;
	}
	return 0;
}

/* Apply @e to the target index: hidden paths left out, dirty paths per mode.
 * Deletions first, so a file may become a directory and back. */
static int apply_edits(struct ctx *c, struct edits *e)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < e->n; i++) {
			struct edit *ed = &e->v[i];
			if (ed->del != (pass == 0))
				continue;
			char *q = changes_quote(ed->path);
			const char *qp = q ? q : ed->path;
			if (policy_decide_path(c->policy, ed->path, false, 0) == POLICY_HIDDEN) {
				note(c, qp, "left out: %s", change_flag_reason(CHANGE_HIDDEN_NAME));
				c->s->dropped_changes++;
				free(q);
				continue;
			}
			char drv[128];
			if (!ed->del && ed->mode != GIT_FILEMODE_LINK &&
			    filter_driver(c, ed->path, drv, sizeof(drv))) {
				/* Fail closed whatever the options: the branch would
				 * carry what the filter keeps out of the repository. */
				cli_error(
				    c->o->cmd,
				    "%s: under the filter driver '%s' (.gitattributes), which "
				    "agentfs cannot run: its blob would hold the working "
				    "tree's bytes, not what git add stores; copy the file "
				    "from the mount and `git add` it yourself (git runs the "
				    "driver), or `agentfs discard` it",
				    qp, drv);
				c->refusals++;
				free(q);
				continue;
			}
			const char *when = path_dirty(c, ed->path);
			if (when) {
				if (c->o->dirty == SERIES_FAIL) {
					/* export has no --dirty: name what it has. */
					bool promote = strcmp(c->o->cmd, "promote") == 0;
					cli_error(c->o->cmd,
						  "%s: the person had uncommitted changes here %s "
						  "(%s)",
						  qp, when,
						  promote ? "--dirty=skip leaves it as at HEAD, "
							    "--dirty=take commits the agent's "
							    "version with them"
							  : "the mbox's commits sit on HEAD; "
							    "--format=patch carries it, over the "
							    "working tree");
					c->refusals++;
					free(q);
					continue;
				}
				if (c->o->dirty == SERIES_SKIP) {
					note(c, qp,
					     "left out: the person had uncommitted changes here "
					     "%s",
					     when);
					c->s->dropped_changes++;
					free(q);
					continue;
				}
			}
			int r = 0;
			if (ed->del) {
				free(q);
				/* Not a file or symlink the agent could not see: its own
				 * file there was left out (hides_entry, below), and the
				 * step after it, from the view, lacks the path. */
				if (hides_entry(c, ed->path))
					continue;
				if (git_index_get_bypath(c->target, ed->path, 0) &&
				    git_index_remove(c->target, ed->path, 0) < 0)
					return lg_fail(c, ed->path);
				continue;
			}
			/* A file where the target has a directory: the directory goes,
			 * unless it still holds files the agent cannot see (deletions
			 * ran first, so what is left there the agent never removed).
			 * Nor over a file or symlink the agent could not see. */
			bool entry = hides_entry(c, ed->path);
			if (entry || over_hidden(c, ed->path)) {
				const char *why = entry ? OVER_HIDDEN_ENTRY : OVER_HIDDEN_FILE;
				if (c->o->conflicts == SERIES_SKIP) {
					note(c, qp, "%s; left out", why);
					c->s->dropped_changes++;
				} else {
					cli_error(c->o->cmd,
						  "%s: %s (--conflicts=skip leaves it out)", qp,
						  why);
					c->refusals++;
				}
				free(q);
				continue;
			}
			free(q);
			if (ed->mode != GIT_FILEMODE_COMMIT)
				r = carry_blob(c, ed->path, &ed->id);
			if (r < 0)
				return r;
			git_index_remove_directory(c->target, ed->path, 0);
			git_index_entry ie;
			memset(&ie, 0, sizeof(ie));
			ie.path = ed->path;
			ie.mode = ed->mode;
			ie.id = ed->id;
			if (git_index_add(c->target, &ie) < 0)
				return lg_fail(c, ed->path);
		}
	}
	return 0;
}

/* Author "Name <email>" at @when (seconds, minutes offset). */
static int parse_author(const char *s, git_time_t when, int offset, git_signature **out)
{
	const char *lt = strrchr(s, '<'), *gt = strrchr(s, '>');
	if (!lt || !gt || gt < lt || gt[1] != 0 || lt == s)
		return -EINVAL;
	size_t nl = (size_t)(lt - s);
	while (nl && s[nl - 1] == ' ')
		nl--;
	char *name = strndup(s, nl), *email = strndup(lt + 1, (size_t)(gt - lt - 1));
	int r = name && email && *name && *email &&
			git_signature_new(out, name, email, when, offset) == 0
		    ? 0
		    : -EINVAL;
	free(name);
	free(email);
	return r;
}

int series_author_check(const char *author)
{
	git_signature *sig = NULL;
	git_libgit2_init(); /* git_signature_new() needs the library's allocator */
	int r = parse_author(author, 0, 0, &sig);
	git_signature_free(sig);
	git_libgit2_shutdown();
	return r;
}

/* Write the target index as a tree and commit it on the previous one; @source
 * as ctx.sources. */
static int commit_step(struct ctx *c, const char *message, const git_signature *author,
		       const char *label, const char *source)
{
	git_oid tree_id, commit_id;
	if (git_index_write_tree_to(&tree_id, c->target, c->real) < 0)
		return lg_fail(c, "writing a tree");
	if (c->have_prev_tree && git_oid_equal(&tree_id, &c->prev_tree)) {
		note(c, label, "nothing left to commit; dropped");
		return 0;
	}
	git_tree *tree = NULL;
	git_commit *parent = NULL;
	const git_oid *pid =
	    c->s->count ? &c->s->commits[c->s->count - 1] : (c->s->unborn ? NULL : &c->s->head);
	if (git_tree_lookup(&tree, c->real, &tree_id) < 0 ||
	    (pid && git_commit_lookup(&parent, c->real, pid) < 0)) {
		git_tree_free(tree);
		return lg_fail(c, "reading the new tree");
	}
	const git_commit *parents[1] = {parent};
	int r = git_commit_create(&commit_id, c->real, NULL, author, c->committer, NULL, message,
				  tree, parent ? 1 : 0, parents);
	git_tree_free(tree);
	git_commit_free(parent);
	if (r < 0)
		return lg_fail(c, "writing a commit");
	git_oid *n = realloc(c->s->commits, (c->s->count + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	c->s->commits = n;
	if (strvec_push(&c->sources, source) < 0)
		return -ENOMEM;
	n[c->s->count++] = commit_id;
	c->prev_tree = tree_id;
	c->have_prev_tree = true;
	return 0;
}

static int tree_edits(struct ctx *c, git_tree *from, git_tree *to, struct edits *e)
{
	git_diff *d = NULL;
	git_diff_options o;
	git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
	if (git_diff_tree_to_tree(&d, c->priv, from, to, &o) < 0)
		return lg_fail(c, "comparing the agent's commits");
	int r = 0;
	size_t n = git_diff_num_deltas(d);
	for (size_t i = 0; i < n && r == 0; i++) {
		const git_diff_delta *dl = git_diff_get_delta(d, i);
		if (dl->status == GIT_DELTA_DELETED)
			r = edits_add(e, dl->old_file.path, true, 0, NULL);
		else
			r = edits_add(e, dl->new_file.path, false, dl->new_file.mode,
				      &dl->new_file.id);
	}
	git_diff_free(d);
	return r;
}

/* Entry-wise difference of two sorted indexes, as edits taking @a to @b. */
static int index_edits(git_index *a, git_index *b, struct edits *e)
{
	size_t na = git_index_entrycount(a), nb = git_index_entrycount(b), i = 0, j = 0;
	int r = 0;
	while ((i < na || j < nb) && r == 0) {
		const git_index_entry *x = i < na ? git_index_get_byindex(a, i) : NULL;
		const git_index_entry *y = j < nb ? git_index_get_byindex(b, j) : NULL;
		int cmp = !x ? 1 : !y ? -1 : strcmp(x->path, y->path);
		if (cmp == 0) {
			if (!git_oid_equal(&x->id, &y->id) || x->mode != y->mode)
				r = edits_add(e, y->path, false, y->mode, &y->id);
			i++;
			j++;
		} else if (cmp < 0) {
			r = edits_add(e, x->path, true, 0, NULL);
			i++;
		} else {
			r = edits_add(e, y->path, false, y->mode, &y->id);
			j++;
		}
	}
	return r;
}

/* Add a copy of @path to c->dirty (unsorted: the caller sorts).  0 or -ENOMEM. */
static int dirty_add(struct ctx *c, const char *path)
{
	char **n = realloc(c->dirty, (c->n_dirty + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	c->dirty = n;
	if (!(n[c->n_dirty] = strdup(path)))
		return -ENOMEM;
	c->n_dirty++;
	return 0;
}

/* The view as an index: @idx (the base) with the exported change set applied.
 * Conflicts follow o->conflicts; other changes export leaves out are named. */
static int apply_changes(struct ctx *c, const struct changes *cs, git_index *idx, bool vs_head)
{
	for (size_t i = 0; i < cs->count; i++) {
		const struct change *ch = &cs->items[i];
		char *q = changes_quote(ch->path);
		const char *qp = q ? q : ch->path;
		if (ch->flags & CHANGE_OVER_HIDDEN) {
			/* Never taken: it would delete files the agent never saw. */
			if (c->o->conflicts == SERIES_SKIP) {
				note(c, qp, "%s; left out", change_over_hidden_reason(ch));
				c->s->dropped_changes++;
			} else {
				cli_error(c->o->cmd, "%s: %s (--conflicts=skip leaves it out)", qp,
					  change_over_hidden_reason(ch));
				c->refusals++;
			}
			free(q);
			continue;
		}
		if (ch->flags & CHANGE_CONFLICT) {
			if (c->o->conflicts == SERIES_FAIL) {
				cli_error(c->o->cmd,
					  "%s: conflict: changed in the repository since the agent "
					  "%s it (--conflicts=skip leaves it out%s)",
					  qp, change_conflict_verb(ch),
					  strcmp(c->o->cmd, "promote") == 0
					      ? ", --conflicts=take takes the agent's version"
					      : "");
				c->refusals++;
				free(q);
				continue;
			}
			if (c->o->conflicts == SERIES_SKIP) {
				note(c, qp,
				     "conflict: changed in the repository since the agent %s it; "
				     "left out",
				     change_conflict_verb(ch));
				c->s->dropped_changes++;
				free(q);
				continue;
			}
		} else if (!change_exported(ch)) {
			if (!(ch->flags & CHANGE_IGNORED))
				note(c, qp, "left out: %s", change_flag_reason(ch->flags));
			free(q);
			continue;
		}
		free(q);
		if (vs_head && !c->have_dirty) {
			/* No record from mount: the person's uncommitted work is
			 * where the base side differs from HEAD. */
			const git_index_entry *he = git_index_get_bypath(idx, ch->path, 0);
			bool same = !ch->base.present && !he;
			if (ch->base.present && he && he->mode == ch->base.mode) {
				char *buf = NULL;
				size_t len = 0;
				git_oid id;
				/* As git add would store it (eol=crlf: LF). */
				if (changes_read(cs, &ch->base, &buf, &len) == 0 &&
				    (ch->base.mode == CHANGE_MODE_LINK ||
				     gitpriv_clean_filter(c->real, ch->path, &buf, &len) == 0) &&
				    git_odb_hash(&id, buf ? buf : "", len, GIT_OBJECT_BLOB) == 0)
					same = git_oid_equal(&id, &he->id);
				free(buf);
			}
			if (!same && dirty_add(c, ch->path) < 0)
				return -ENOMEM;
		}
		if (!ch->view.present) {
			git_index_remove(idx, ch->path, 0);
			continue;
		}
		char *buf = NULL;
		size_t len = 0;
		int r = changes_read(cs, &ch->view, &buf, &len);
		if (r == -ENOENT) {
			/* Gone since the walk (the agent is at work): absent now. */
			git_index_remove(idx, ch->path, 0);
			continue;
		}
		if (r < 0) {
			char *q = changes_quote(ch->path);
			cli_error(c->o->cmd, "%s: cannot read: %s", q ? q : ch->path, strerror(-r));
			free(q);
			return r;
		}
		/* Stored as git add in the view would (.gitattributes: eol=crlf
		 * files as LF), under the view's .gitattributes. */
		if (ch->view.mode != CHANGE_MODE_LINK &&
		    (r = gitpriv_clean_filter(c->view_attrs ? c->view_attrs : c->real, ch->path,
					      &buf, &len)) < 0) {
			free(buf);
			return r;
		}
		git_index_entry e;
		memset(&e, 0, sizeof(e));
		e.path = ch->path;
		e.mode = ch->view.mode;
		/* core.fileMode=false: git keeps the mode it had (git-config(1)),
		 * whatever the executable bit in the tree says. */
		const git_index_entry *had = git_index_get_bypath(idx, ch->path, 0);
		(void)real_index(c); /* reads core.fileMode */
		if (!c->filemode && had && e.mode != CHANGE_MODE_LINK &&
		    (had->mode == GIT_FILEMODE_BLOB || had->mode == GIT_FILEMODE_BLOB_EXECUTABLE))
			e.mode = had->mode;
		r = git_odb_write(&e.id, c->real_odb, buf ? buf : "", len, GIT_OBJECT_BLOB);
		free(buf);
		if (r < 0)
			return lg_fail(c, ch->path);
		if ((r = gitpriv_oidset_add(&c->trusted, &e.id)) < 0)
			return r;
		git_index_remove_directory(idx, ch->path, 0);
		if (git_index_add(idx, &e) < 0)
			return lg_fail(c, ch->path);
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The agent's commits from the base to the private HEAD, oldest first. */
static int agent_chain(struct ctx *c, const git_oid *base, git_oid **out, size_t *n)
{
	git_oid id;
	*out = NULL;
	*n = 0;
	if (git_reference_name_to_id(&id, c->priv, "HEAD") < 0) {
		cli_error(c->o->cmd, "the private .git has no HEAD commit");
		return -EPERM;
	}
	git_oid *v = NULL;
	size_t k = 0;
	while (!git_oid_equal(&id, base)) {
		git_commit *cm = NULL;
		if (k > 100000 || git_commit_lookup(&cm, c->priv, &id) < 0 ||
		    git_commit_parentcount(cm) == 0) {
			git_commit_free(cm);
			free(v);
			cli_error(c->o->cmd,
				  "the private .git's HEAD does not descend from the base "
				  "commit (rebase the agent's work onto the tag 'base')");
			return -EPERM;
		}
		git_oid *nv = realloc(v, (k + 1) * sizeof(*nv));
		if (!nv) {
			git_commit_free(cm);
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[k++] = id;
		id = *git_commit_parent_id(cm, 0);
		git_commit_free(cm);
	}
	for (size_t i = 0; i < k / 2; i++) {
		git_oid t = v[i];
		v[i] = v[k - 1 - i];
		v[k - 1 - i] = t;
	}
	*out = v;
	*n = k;
	return 0;
}

static int replay_agent_commits(struct ctx *c, const git_oid *base_commit, git_tree **last_tree)
{
	git_oid *chain = NULL;
	size_t n = 0;
	int r = agent_chain(c, base_commit, &chain, &n);
	if (r < 0)
		return r;
	git_commit *bc = NULL;
	if (git_commit_lookup(&bc, c->priv, base_commit) < 0 ||
	    git_commit_tree(last_tree, bc) < 0) {
		git_commit_free(bc);
		free(chain);
		return lg_fail(c, "reading the base commit");
	}
	git_commit_free(bc);
	for (size_t i = 0; i < n && r == 0; i++) {
		git_commit *cm = NULL;
		git_tree *t = NULL;
		git_signature *author = NULL;
		struct edits e = {0};
		char label[64];
		char hex[GIT_OID_HEXSZ + 1];
		git_oid_tostr(hex, 13, &chain[i]);
		snprintf(label, sizeof(label), "the agent's commit %s", hex);
		if (git_commit_lookup(&cm, c->priv, &chain[i]) < 0 || git_commit_tree(&t, cm) < 0) {
			r = lg_fail(c, label);
		} else {
			r = tree_edits(c, *last_tree, t, &e);
			if (r == 0)
				r = apply_edits(c, &e);
			const git_signature *a = git_commit_author(cm);
			if (r == 0 && c->o->author)
				r = parse_author(c->o->author, a->when.time, a->when.offset,
						 &author) < 0
					? -EINVAL
					: 0;
			char full[GIT_OID_HEXSZ + 1];
			git_oid_tostr(full, sizeof(full), &chain[i]);
			if (r == 0 && c->refusals == 0)
				r = commit_step(c, git_commit_message_raw(cm), author ? author : a,
						label, full);
		}
		git_signature_free(author);
		edits_clear(&e);
		git_commit_free(cm);
		if (t) {
			git_tree_free(*last_tree);
			*last_tree = t;
		}
	}
	free(chain);
	return r;
}

static int change_path_cmp(const void *key, const void *item)
{
	return strcmp(key, ((const struct change *)item)->path);
}

/* Is there a change at @path in @cs (sorted by path)? */
static bool change_at(const struct changes *cs, const char *path)
{
	return cs->count &&
	       bsearch(path, cs->items, cs->count, sizeof(cs->items[0]), change_path_cmp) != NULL;
}

/* Is @path gone from the working tree whose root is @lfd (never through a
 * symlink: a directory the person turned into one is gone as such)? */
static bool lower_gone(int lfd, const char *path)
{
	int fd = changes_open_below(lfd, path, O_PATH);
	if (fd >= 0) {
		close(fd);
		return false;
	}
	return fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP;
}

/* "@path/" ("" for the root), malloc'd (NULL on ENOMEM), and in *@pos the
 * first entry of @view below it (the entry count when there is none). */
static char *index_dir_prefix(git_index *view, const char *path, size_t *pos)
{
	size_t n = strlen(path);
	char *prefix = malloc(n + 2);
	if (!prefix)
		return NULL;
	memcpy(prefix, path, n + 1);
	if (n)
		memcpy(prefix + n, "/", 2);
	if (git_index_find_prefix(pos, view, prefix) < 0)
		*pos = git_index_entrycount(view);
	return prefix;
}

/* Collect into @out the entries of @view at @path (unless @below_only) and
 * below @path/ ("" and @below_only: all) that the change set @cs does not
 * name and the working tree @lfd no longer holds. */
static int gone_under(const struct changes *cs, git_index *view, int lfd, const char *path,
		      bool below_only, struct strvec *out)
{
	size_t pos;
	char *prefix = index_dir_prefix(view, path, &pos);
	if (!prefix)
		return -ENOMEM;
	size_t pn = strlen(prefix);
	int r = 0;
	const git_index_entry *at = below_only ? NULL : git_index_get_bypath(view, path, 0);
	/* A submodule's files are another repository's: never the agent's. */
	if (at && at->mode != GIT_FILEMODE_COMMIT && !change_at(cs, path) && lower_gone(lfd, path))
		r = strvec_push(out, path);
	for (size_t i = pos; r == 0 && i < git_index_entrycount(view); i++) {
		const git_index_entry *ie = git_index_get_byindex(view, i);
		if (strncmp(ie->path, prefix, pn) != 0)
			break;
		if (ie->mode != GIT_FILEMODE_COMMIT && !change_at(cs, ie->path) &&
		    lower_gone(lfd, ie->path))
			r = strvec_push(out, ie->path);
	}
	free(prefix);
	return r;
}

/* The names directly below directory @path ("" the root) that @view holds
 * entries at or under, each once, in @out. */
static int view_children(git_index *view, const char *path, struct strvec *out)
{
	size_t pos;
	char *prefix = index_dir_prefix(view, path, &pos);
	if (!prefix)
		return -ENOMEM;
	size_t pn = strlen(prefix);
	int r = 0;
	const char *last = NULL;
	size_t last_len = 0;
	for (size_t i = pos; r == 0 && i < git_index_entrycount(view); i++) {
		const char *p = git_index_get_byindex(view, i)->path;
		if (strncmp(p, prefix, pn) != 0)
			break;
		const char *name = p + pn, *slash = strchr(name, '/');
		size_t len = slash ? (size_t)(slash - name) : strlen(name);
		if (last && len == last_len && strncmp(name, last, len) == 0)
			continue; /* entries of one name sort together */
		last = name;
		last_len = len;
		char *s = strndup(name, len);
		r = s ? strvec_push(out, s) : -ENOMEM;
		free(s);
	}
	free(prefix);
	return r;
}

/* Does the upper directory @ufd at view path @path hide the lower directory
 * at that path: opaque, or redirected elsewhere (a directory moved away and
 * back has a redirect to its own path, which hides nothing)?  1, 0, or a
 * negative errno.  A redirect too long to read is elsewhere. */
static int hides_lower(int ufd, const char *path)
{
	char red[PATH_MAX];
	int rl = layout_get_redirect(ufd, red, sizeof(red));
	if (rl == -ERANGE || (rl > 0 && strcmp(red, path) != 0))
		return 1;
	if (rl < 0 && rl != -EACCES)
		return rl;
	int op = layout_is_opaque(ufd);
	return op == -EACCES ? 0 : op;
}

/* deletions_behind_lower() for the upper directory @ufd at view path @path. */
static int behind_walk(const struct changes *cs, git_index *view, int lfd, int ufd,
		       const char *path, struct strvec *gone)
{
	int op = hides_lower(ufd, path);
	if (op < 0)
		return op;
	if (op) /* nothing of the lower directory at @path shows */
		return gone_under(cs, view, lfd, path, true, gone);
	struct strvec kids = {0};
	int r = view_children(view, path, &kids);
	for (size_t i = 0; r == 0 && i < kids.n; i++) {
		const char *name = kids.v[i];
		char *sub = NULL;
		if (asprintf(&sub, "%s%s%s", path, *path ? "/" : "", name) < 0) {
			r = -ENOMEM;
			break;
		}
		int wh = layout_has_whiteout(ufd, name);
		if (wh < 0) {
			r = wh;
		} else if (wh) {
			r = gone_under(cs, view, lfd, sub, false, gone);
		} else {
			int cfd =
			    openat(ufd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd >= 0) {
				r = behind_walk(cs, view, lfd, cfd, sub, gone);
				close(cfd);
			} else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP) {
				r = -errno;
			}
		}
		free(sub);
	}
	strvec_clear(&kids);
	return r;
}

/*
 * Deletions the change set cannot show: the agent deleted a file, or a
 * directory (a whiteout, an opaque or redirected directory in the upper),
 * and the person then deleted it from the working tree too.  The change
 * set compares the view with the working tree, where it is gone as well,
 * so the entry would stay in @view and the branch would keep a file the
 * agent deleted, silently.  Removes from @view each entry below such a
 * marker that the change set does not name and the working tree no longer
 * holds; apply_edits then judges the deletion as the person's work too
 * (path_dirty: "since the mount").
 */
static int deletions_behind_lower(struct ctx *c, const struct changes *cs, git_index *view)
{
	char *upper = workspace_path(c->ws, "upper");
	int ufd = upper ? open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	int uerr = errno;
	free(upper);
	if (ufd < 0)
		return uerr == ENOENT ? 0 : -uerr;
	int lfd = open(c->ws->repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lfd < 0) {
		int e = errno;
		close(ufd);
		return -e;
	}
	struct strvec gone = {0};
	int r = behind_walk(cs, view, lfd, ufd, "", &gone);
	if (r < 0)
		cli_error(c->o->cmd, "%s: the upper: %s", c->ws->name, strerror(-r));
	for (size_t i = 0; r == 0 && i < gone.n; i++) {
		if (git_index_remove(view, gone.v[i], 0) < 0) {
			r = lg_fail(c, gone.v[i]);
		} else if (!c->have_dirty) {
			/* Without a record from the mount, a file gone from the
			 * working tree is the person's work as it stands (before
			 * the mount or after): path_dirty names it from c->dirty. */
			r = dirty_add(c, gone.v[i]);
		}
	}
	if (r == 0 && !c->have_dirty && gone.n)
		qsort(c->dirty, c->n_dirty, sizeof(*c->dirty), cmp_str);
	strvec_clear(&gone);
	close(lfd);
	close(ufd);
	return r;
}

static int final_step(struct ctx *c, git_tree *last_tree, const char *base_tree_hex)
{
	const struct changes *cs = c->cs;
	int r = 0;
	struct edits e = {0};
	git_index *from = NULL, *view = NULL;
	if (git_index_new(&from) < 0 || git_index_new(&view) < 0) {
		r = lg_fail(c, "index");
		goto out;
	}
	if (c->priv) {
		git_oid bt;
		git_tree *base_tree = NULL;
		if (git_oid_fromstr(&bt, base_tree_hex) < 0 ||
		    git_tree_lookup(&base_tree, c->priv, &bt) < 0 ||
		    git_index_read_tree(view, base_tree) < 0 ||
		    git_index_read_tree(from, last_tree) < 0) {
			git_tree_free(base_tree);
			r = lg_fail(c, "reading the base tree");
			goto out;
		}
		git_tree_free(base_tree);
		r = apply_changes(c, cs, view, false);
	} else {
		/* No private repository: the change set goes onto HEAD directly. */
		git_tree *ht = NULL;
		if (!c->s->unborn) {
			git_commit *hc = NULL;
			if (git_commit_lookup(&hc, c->real, &c->s->head) < 0 ||
			    git_commit_tree(&ht, hc) < 0 || git_index_read_tree(from, ht) < 0 ||
			    git_index_read_tree(view, ht) < 0) {
				git_commit_free(hc);
				git_tree_free(ht);
				r = lg_fail(c, "reading HEAD");
				goto out;
			}
			git_commit_free(hc);
			git_tree_free(ht);
		}
		r = apply_changes(c, cs, view, true);
		if (r == 0 && c->n_dirty)
			qsort(c->dirty, c->n_dirty, sizeof(*c->dirty), cmp_str);
	}
	if (r == 0)
		r = deletions_behind_lower(c, cs, view);
	if (r == 0)
		r = index_edits(from, view, &e);
	/* The base tree holds no untracked file of the person's: one the agent
	 * committed (--dirty=take) and left as it was is no deletion. */
	if (r == 0 && c->priv) {
		size_t k = 0;
		for (size_t i = 0; i < e.n; i++) {
			if (e.v[i].del && !change_at(cs, e.v[i].path) &&
			    path_untracked_in_lower(c, e.v[i].path))
				free(e.v[i].path);
			else
				e.v[k++] = e.v[i];
		}
		e.n = k;
	}
	if (r == 0 && c->o->committed_only) {
		for (size_t i = 0; i < e.n; i++) {
			char *q = changes_quote(e.v[i].path);
			/* A hidden path is no uncommitted change of the agent's:
			 * the view's side of it was left out above. */
			if (policy_decide_path(c->policy, e.v[i].path, false, 0) == POLICY_HIDDEN)
				note(c, q ? q : e.v[i].path, "left out: %s",
				     change_flag_reason(CHANGE_HIDDEN_NAME));
			else
				note(c, q ? q : e.v[i].path,
				     "left out: not committed by the agent (--committed-only)");
			free(q);
		}
		goto out;
	}
	if (r == 0)
		r = apply_edits(c, &e);
	if (r == 0 && c->refusals == 0) {
		git_signature *author = NULL;
		r = c->o->author
			? parse_author(c->o->author, time(NULL), 0, &author)
			: git_signature_now(&author, GITPRIV_AGENT_NAME, GITPRIV_AGENT_EMAIL);
		if (r < 0) {
			r = -EINVAL;
			goto out;
		}
		char *msg = NULL;
		if (c->o->message)
			r = asprintf(&msg, "%s%s", c->o->message,
				     c->o->message[0] &&
					     c->o->message[strlen(c->o->message) - 1] == '\n'
					 ? ""
					 : "\n");
		else
			r = asprintf(&msg, "Changes from agentfs workspace %s\n", c->ws->name);
		r = r < 0 ? -ENOMEM
			  : commit_step(c, msg, author, "the agent's uncommitted changes", "-m");
		free(msg);
		git_signature_free(author);
	}
out:
	edits_clear(&e);
	git_index_free(from);
	git_index_free(view);
	return r;
}

static int scan_series(struct ctx *c)
{
	struct secrets sc;
	secrets_init(&sc, c->o->allow_secret, c->o->n_allow);
	int r = 0;
	for (size_t i = 0; i < c->s->count && r == 0; i++) {
		git_commit *cm = NULL, *parent = NULL;
		git_tree *t = NULL, *pt = NULL;
		git_diff *d = NULL;
		if (git_commit_lookup(&cm, c->real, &c->s->commits[i]) < 0 ||
		    git_commit_tree(&t, cm) < 0 ||
		    (git_commit_parentcount(cm) &&
		     (git_commit_parent(&parent, cm, 0) < 0 || git_commit_tree(&pt, parent) < 0)) ||
		    git_diff_tree_to_tree(&d, c->real, pt, t, NULL) < 0)
			r = lg_fail(c, "scanning for secrets");
		else
			r = secrets_scan_diff(&sc, d, c->real);
		/* The message goes into the branch and the mbox as it is. */
		if (r == 0)
			r = secrets_scan_message(&sc, c->sources.v[i], git_commit_message_raw(cm));
		git_diff_free(d);
		git_tree_free(t);
		git_tree_free(pt);
		git_commit_free(parent);
		git_commit_free(cm);
	}
	if (r == 0 && secrets_report(&sc, c->o->cmd))
		r = -EPERM;
	secrets_clear(&sc);
	return r;
}

void series_free(struct series *s)
{
	if (!s)
		return;
	git_repository_free(s->repo);
	free(s->commits);
	free(s);
	git_libgit2_shutdown();
}

int series_build(const struct workspace *ws, const struct series_opts *o, struct series **out)
{
	git_libgit2_init();
	struct series *s = calloc(1, sizeof(*s));
	struct ctx c = {.ws = ws, .o = o, .s = s};
	c.named = o->named ? o->named : &c.own_named;
	struct gitpriv_base base;
	git_tree *last_tree = NULL;
	char err[1024] = "";
	int r = s ? 0 : -ENOMEM;
	if (r < 0)
		goto out;
	r = changes_workspace_policy(ws, &c.policy, err, sizeof(err));
	if (r < 0) {
		cli_error(o->cmd, "%s: %s", ws->name, err);
		goto out;
	}
	r = -EIO;
	if (git_repository_open_ext(&c.real, ws->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0 ||
	    git_repository_odb(&c.real_odb, c.real) < 0) {
		r = lg_fail(&c, ws->repo);
		goto out;
	}
	if (o->in_memory) {
		git_odb_backend *mp = NULL;
		if (git_mempack_new(&mp) < 0 || git_odb_add_backend(c.real_odb, mp, 1000) < 0) {
			r = lg_fail(&c, "an in-memory object database");
			goto out;
		}
	}
	int br = gitpriv_read_base(ws->dir, &base);
	const char *head_hex = br == 0 ? base.head : ws->base_commit;
	s->unborn = !head_hex || !*head_hex;
	if (!s->unborn && git_oid_fromstr(&s->head, head_hex) < 0) {
		cli_error(o->cmd, "%s: bad base commit '%s'", ws->name, head_hex);
		r = -EINVAL;
		goto out;
	}
	if (git_index_new(&c.target) < 0) {
		r = lg_fail(&c, "index");
		goto out;
	}
	if (!s->unborn) {
		git_commit *hc = NULL;
		git_tree *ht = NULL;
		if (git_commit_lookup(&hc, c.real, &s->head) < 0 || git_commit_tree(&ht, hc) < 0 ||
		    git_index_read_tree(c.target, ht) < 0) {
			git_commit_free(hc);
			git_tree_free(ht);
			r = lg_fail(&c, "reading the HEAD at mount");
			goto out;
		}
		c.prev_tree = *git_tree_id(ht);
		c.have_prev_tree = true;
		git_commit_free(hc);
		c.head_tree = ht;
	}
	if (git_signature_default(&c.committer, c.real) < 0 &&
	    git_signature_now(&c.committer, GITPRIV_BASE_NAME, GITPRIV_BASE_EMAIL) < 0) {
		r = lg_fail(&c, "signature");
		goto out;
	}

	/* Before the agent's commits are replayed: their paths are checked
	 * against it too (path_dirty). */
	err[0] = 0;
	r = changes_open_workspace(ws, &c.cs, err, sizeof(err));
	if (r < 0) {
		cli_error(o->cmd, "%s: %s", ws->name, err);
		goto out;
	}
	r = view_attrs_open(ws->repo, c.cs, &c.view_attrs, &c.attr_standin);
	if (r == -EIO) {
		lg_fail(&c, "the view's .gitattributes");
		goto out;
	} else if (r < 0) {
		cli_error(o->cmd, "the view's .gitattributes: %s", strerror(-r));
		goto out;
	}
	if (br == 0) {
		char dir[PATH_MAX];
		git_oid bc, bt;
		snprintf(dir, sizeof(dir), "%s/git", ws->dir);
		if (git_repository_open_bare(&c.priv, dir) < 0 ||
		    git_repository_odb(&c.priv_odb, c.priv) < 0) {
			r = lg_fail(&c, dir);
			goto out;
		}
		r = gitpriv_read_dirty(ws->dir, &c.dirty, &c.n_dirty);
		if (r < 0 && r != -ENOENT)
			goto out;
		c.have_dirty = true;
		if (git_oid_fromstr(&bc, base.commit) < 0 || git_oid_fromstr(&bt, base.tree) < 0) {
			r = -EINVAL;
			goto out;
		}
		r = gitpriv_base_objects(c.priv, c.real, &bt, &c.base_objects);
		if (r < 0)
			goto out;
		r = replay_agent_commits(&c, &bc, &last_tree);
		if (r < 0)
			goto out;
	} else if (br != -ENOENT) {
		cli_error(o->cmd, "%s/git-base: malformed", ws->dir);
		r = br;
		goto out;
	}
	r = final_step(&c, last_tree, br == 0 ? base.tree : NULL);
	if (r < 0)
		goto out;
	if (c.refusals) {
		cli_error(o->cmd, "%s: %zu refused change%s; nothing written", ws->name, c.refusals,
			  c.refusals == 1 ? "" : "s");
		r = -EPERM;
		goto out;
	}
	if (s->count == 0) {
		cli_error(o->cmd, "%s: nothing to hand over: no change of the agent's is left",
			  ws->name);
		r = -ENODATA;
		goto out;
	}
	r = scan_series(&c);
out:
	git_tree_free(last_tree);
	git_signature_free(c.committer);
	git_index_free(c.target);
	git_tree_free(c.head_tree);
	git_index_free(c.real_index);
	gitpriv_oidset_clear(&c.base_objects);
	gitpriv_oidset_clear(&c.trusted);
	git_repository_free(c.view_attrs);
	changes_standin_free(c.attr_standin);
	changes_free(c.cs);
	gitpriv_paths_free(c.dirty, c.n_dirty);
	strvec_clear(&c.sources);
	strvec_clear(&c.own_named);
	git_odb_free(c.priv_odb);
	git_repository_free(c.priv);
	git_odb_free(c.real_odb);
	policy_free(c.policy);
	if (r < 0) {
		git_repository_free(c.real);
		if (s) {
			free(s->commits);
			free(s);
		}
		git_libgit2_shutdown();
		return r;
	}
	s->repo = c.real;
	*out = s;
	return 0;
}

int series_mbox(const struct series *s, char **out, size_t *len)
{
	char *all = calloc(1, 1);
	size_t n = 0;
	if (!all)
		return -ENOMEM;
	int r = 0;
	for (size_t i = 0; i < s->count && r == 0; i++) {
		git_commit *cm = NULL, *parent = NULL;
		git_tree *t = NULL, *pt = NULL;
		git_diff *d = NULL;
		git_buf b = GIT_BUF_INIT;
		git_email_create_options eo;
		memset(&eo, 0, sizeof(eo));
		eo.version = GIT_EMAIL_CREATE_OPTIONS_VERSION;
		git_diff_options_init(&eo.diff_opts, GIT_DIFF_OPTIONS_VERSION);
		git_diff_find_options_init(&eo.diff_find_opts, GIT_DIFF_FIND_OPTIONS_VERSION);
		/* As `git format-patch --binary`, without rename pairing. */
		eo.diff_opts.flags = GIT_DIFF_SHOW_BINARY;
		eo.flags = GIT_EMAIL_CREATE_NO_RENAMES;
		eo.diff_opts.id_abbrev = GIT_OID_HEXSZ;
		if (git_commit_lookup(&cm, s->repo, &s->commits[i]) < 0 ||
		    git_commit_tree(&t, cm) < 0 ||
		    (git_commit_parentcount(cm) &&
		     (git_commit_parent(&parent, cm, 0) < 0 || git_commit_tree(&pt, parent) < 0)) ||
		    git_diff_tree_to_tree(&d, s->repo, pt, t, &eo.diff_opts) < 0 ||
		    git_email_create_from_diff(&b, d, i + 1, s->count, &s->commits[i],
					       git_commit_summary(cm), git_commit_body(cm),
					       git_commit_author(cm), &eo) < 0) {
			r = -EIO;
		} else {
			char *nb = realloc(all, n + b.size + 1);
			if (!nb) {
				r = -ENOMEM;
			} else {
				all = nb;
				memcpy(all + n, b.ptr, b.size);
				n += b.size;
				all[n] = 0;
			}
		}
		git_buf_dispose(&b);
		git_diff_free(d);
		git_tree_free(t);
		git_tree_free(pt);
		git_commit_free(parent);
		git_commit_free(cm);
	}
	if (r < 0) {
		free(all);
		return r;
	}
	*out = all;
	*len = n;
	return 0;
}

int series_export(const struct workspace *ws, const struct changes *cs, const char *format,
		  bool skip_conflicts, char **allow, size_t n_allow, struct strvec *named,
		  char **out, size_t *len, struct patch **patch_out)
{
	bool mbox = strcmp(format, "mbox") == 0, stat = strcmp(format, "stat") == 0;
	if (!mbox && !stat && strcmp(format, "patch") != 0)
		return -EINVAL;
	/* The secret scan reads what is handed over, once: the series' commits
	 * (scan_series, in series_build) or the patch's blobs below.  Files
	 * read again for it could differ from the ones in the patch (the
	 * agent may still be writing), and a secret written in between would
	 * pass unscanned. */
	int r;
	if (mbox) {
		struct series_opts o = {.cmd = "export",
					.conflicts = skip_conflicts ? SERIES_SKIP : SERIES_FAIL,
					.dirty = SERIES_FAIL,
					.allow_secret = allow,
					.n_allow = n_allow,
					.in_memory = true,
					.named = named};
		struct series *s = NULL;
		r = series_build(ws, &o, &s);
		if (r == -ENODATA) {
			*out = calloc(1, 1);
			*len = 0;
			return *out ? 0 : -ENOMEM;
		}
		if (r == 0)
			r = series_mbox(s, out, len);
		series_free(s);
		return r;
	}
	struct patch *p = NULL;
	/* The person's repository gives the clean filters (eol=crlf, ident):
	 * the patch holds what git stores, as promote commits it. */
	git_repository *real = NULL;
	git_libgit2_init();
	if (git_repository_open_ext(&real, ws->repo, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0) {
		git_libgit2_shutdown();
		return -EIO;
	}
	git_repository *view = NULL;
	char *standin = NULL;
	r = view_attrs_open(ws->repo, cs, &view, &standin);
	if (r == 0)
		r = patch_new(cs, stat ? PATCH_NO_BINARY_DATA : 0, real, view ? view : real, &p);
	git_repository_free(view);
	changes_standin_free(standin);
	/* A filter driver libgit2 does not run (git-lfs, git-crypt): the patch
	 * holds the working tree's bytes there, which `git apply` compares with
	 * the file it has cleaned with that driver.  Said, not refused: where
	 * the driver is not configured the patch applies. */
	for (size_t i = 0; r == 0 && !stat && i < git_diff_num_deltas(patch_diff(p)); i++) {
		const git_diff_delta *d = git_diff_get_delta(patch_diff(p), i);
		const char *v = NULL;
		if (d->new_file.mode == GIT_FILEMODE_LINK || d->status == GIT_DELTA_DELETED ||
		    git_attr_get(&v, real, GIT_ATTR_CHECK_FILE_THEN_INDEX, d->new_file.path,
				 "filter") < 0 ||
		    !GIT_ATTR_HAS_VALUE(v))
			continue;
		char *q = changes_quote(d->new_file.path);
		cli_error("export",
			  "%s: under the filter driver '%s' (.gitattributes), which agentfs does "
			  "not run: its patch holds the working tree's bytes, which `git apply` "
			  "may reject where the driver is configured",
			  q ? q : d->new_file.path, v);
		free(q);
	}
	git_repository_free(real);
	git_libgit2_shutdown();
	if (r == 0) {
		struct secrets sc;
		secrets_init(&sc, allow, n_allow);
		r = secrets_scan_diff(&sc, patch_diff(p), patch_repo(p));
		if (r == 0 && secrets_report(&sc, "export"))
			r = -EPERM;
		secrets_clear(&sc);
	}
	if (r == 0 && stat) {
		r = patch_format_stat(p, 80, out, len);
	} else if (r == 0 && patch_out) {
		*out = calloc(1, 1);
		*len = 0;
		if (!*out)
			r = -ENOMEM;
		if (r == 0) {
			*patch_out = p;
			return 0;
		}
	} else if (r == 0) {
		r = patch_format(p, out, len);
	}
	patch_free(p);
	return r;
}
