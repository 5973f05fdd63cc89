/* patch.c - the change set's two sides as in-memory trees, diffed by libgit2. */
#include <errno.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/odb_backend.h>
#include <git2/sys/repository.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/gitpriv.h"
#include "cli/patch.h"

struct patch {
	git_odb *odb;
	git_repository *repo;
	git_diff *diff;
	bool inited; /* holds one git_libgit2_init() reference */
};

void patch_free(struct patch *p)
{
	if (!p)
		return;
	git_diff_free(p->diff);
	git_repository_free(p->repo);
	git_odb_free(p->odb);
	if (p->inited)
		git_libgit2_shutdown();
	free(p);
}

git_diff *patch_diff(const struct patch *p)
{
	return p->diff;
}

git_repository *patch_repo(const struct patch *p)
{
	return p->repo;
}

/* Add @side of the change at @path to @idx: its bytes, or @stand_in's
 * (PATCH_NAMES_ONLY) when not NULL. */
static int add_side(struct patch *p, const struct changes *cs, git_repository *attrs,
		    git_index *idx, const char *path, const struct change_side *side,
		    const char *stand_in)
{
	char *buf = NULL;
	size_t len = stand_in ? strlen(stand_in) : 0;
	int r = stand_in ? 0 : changes_read(cs, side, &buf, &len);
	if (r == -ENOENT)
		return 0; /* gone since the walk (the agent is at work): absent now */
	if (r == 0 && !stand_in && attrs && side->mode != CHANGE_MODE_LINK)
		r = gitpriv_clean_filter(attrs, path, &buf, &len);
	if (r < 0) {
		free(buf);
		return r;
	}
	git_index_entry e = {0};
	/* Straight into the mempack: git_blob_create_from_buffer() goes through
	 * a write stream, which mempack lacks, so libgit2 would buffer a third
	 * copy of a large file while the mempack takes its own. */
	r = git_odb_write(&e.id, p->odb,
			  stand_in ? stand_in
			  : buf	   ? buf
				   : "",
			  len, GIT_OBJECT_BLOB);
	free(buf);
	if (r < 0)
		return -EIO;
	e.mode = side->mode;
	e.path = path;
	e.file_size = (uint32_t)len;
	return git_index_add(idx, &e) < 0 ? -EIO : 0;
}

int patch_new(const struct changes *cs, unsigned flags, git_repository *attrs,
	      git_repository *view_attrs, struct patch **out)
{
	struct patch *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (git_libgit2_init() < 0) {
		free(p);
		return -EIO;
	}
	p->inited = true;

	git_odb_backend *mempack = NULL;
	git_config *cfg = NULL;
	git_index *bi = NULL, *vi = NULL;
	git_tree *bt = NULL, *vt = NULL;
	git_oid boid, void_;
	int r = -EIO;
	if (git_odb_new(&p->odb) < 0 || git_mempack_new(&mempack) < 0)
		goto out;
	if (git_odb_add_backend(p->odb, mempack, 1) < 0) {
		mempack->free(mempack);
		goto out;
	}
	if (git_repository_wrap_odb(&p->repo, p->odb) < 0)
		goto out;
	/* An empty configuration: the person's global settings (diff.noprefix,
	 * core.abbrev, ...) must not change the patch's form. */
	if (git_config_new(&cfg) < 0 || git_repository_set_config(p->repo, cfg) < 0)
		goto out;
	if (git_index_new(&bi) < 0 || git_index_new(&vi) < 0)
		goto out;

	r = 0;
	for (size_t i = 0; i < cs->count && r == 0; i++) {
		const struct change *c = &cs->items[i];
		if (!change_exported(c))
			continue;
		/* Not for a symlink on either side: libgit2 pairs a typechange
		 * in renames too (GIT_DIFF_INCLUDE_TYPECHANGE), by its bytes. */
		bool stand_in = (flags & PATCH_NAMES_ONLY) && c->base.present && c->view.present &&
				c->base.mode != CHANGE_MODE_LINK &&
				c->view.mode != CHANGE_MODE_LINK;
		if (c->base.present)
			r = add_side(p, cs, attrs, bi, c->path, &c->base, stand_in ? "base" : NULL);
		if (r == 0 && c->view.present)
			r = add_side(p, cs, view_attrs, vi, c->path, &c->view,
				     stand_in ? "view" : NULL);
	}
	if (r < 0)
		goto out;
	r = -EIO;
	if (git_index_write_tree_to(&boid, bi, p->repo) < 0 ||
	    git_index_write_tree_to(&void_, vi, p->repo) < 0)
		goto out;
	if (git_tree_lookup(&bt, p->repo, &boid) < 0 || git_tree_lookup(&vt, p->repo, &void_) < 0)
		goto out;

	git_diff_options dopts;
	git_diff_options_init(&dopts, GIT_DIFF_OPTIONS_VERSION);
	dopts.flags = flags & PATCH_NO_BINARY_DATA ? 0 : GIT_DIFF_SHOW_BINARY;
	/* Full object ids on "index" lines: `git apply` refuses a binary patch
	 * without them, and they let it check the preimage of every file. */
	dopts.id_abbrev = GIT_OID_HEXSZ;
	if (flags & PATCH_TYPECHANGE)
		dopts.flags |= GIT_DIFF_INCLUDE_TYPECHANGE;
	if (git_diff_tree_to_tree(&p->diff, p->repo, bt, vt, &dopts) < 0)
		goto out;
	git_diff_find_options fopts;
	git_diff_find_options_init(&fopts, GIT_DIFF_FIND_OPTIONS_VERSION);
	fopts.flags = GIT_DIFF_FIND_RENAMES;
	if (git_diff_find_similar(p->diff, &fopts) < 0)
		goto out;
	r = 0;
out:
	git_tree_free(bt);
	git_tree_free(vt);
	git_index_free(bi);
	git_index_free(vi);
	git_config_free(cfg);
	if (r < 0) {
		patch_free(p);
		return r;
	}
	*out = p;
	return 0;
}

static const char *delta_path(const git_diff_delta *d)
{
	return d->status == GIT_DELTA_DELETED ? d->old_file.path : d->new_file.path;
}

/* Text in memory (patch_format(), the stat): grown geometrically, so a large
 * binary file's patch is not copied once per line (and realloc of a large
 * block moves pages, not bytes: glibc mremap(2)s an mmap'd chunk). */
struct text {
	char *ptr;
	size_t size, cap;
};

static int text_put(struct text *t, const char *s, size_t n)
{
	if (t->size + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		while (cap < t->size + n + 1)
			cap *= 2;
		char *m = realloc(t->ptr, cap);
		if (!m)
			return -ENOMEM;
		t->ptr = m;
		t->cap = cap;
	}
	memcpy(t->ptr + t->size, s, n);
	t->size += n;
	t->ptr[t->size] = 0;
	return 0;
}

static int text_sink(void *arg, const char *buf, size_t len)
{
	return text_put(arg, buf, len);
}

struct printer {
	patch_sink sink;
	void *arg;
	int err; /* the sink's error, which stops the printing */
	bool skip_binary_line;
};

/* git_diff_line_cb: one line of the patch as git_patch_to_buf() prints it
 * (libgit2's diff_print.c): a context, added or removed line after its
 * origin character, every other line (headers, hunk headers, "\ No newline
 * at end of file", the binary payload) as it comes. */
static int print_line(const git_diff_delta *d, const git_diff_hunk *h, const git_diff_line *l,
		      void *arg)
{
	(void)d;
	(void)h;
	struct printer *pr = arg;
	if (l->origin == GIT_DIFF_LINE_BINARY && pr->skip_binary_line)
		return 0;
	char o = l->origin;
	int r = 0;
	if (o == GIT_DIFF_LINE_CONTEXT || o == GIT_DIFF_LINE_ADDITION ||
	    o == GIT_DIFF_LINE_DELETION)
		r = pr->sink(pr->arg, &o, 1);
	if (r == 0)
		r = pr->sink(pr->arg, l->content, l->content_len);
	pr->err = r;
	return r < 0 ? GIT_EUSER : 0;
}

/* Print delta @i's patch.  A rename without content change gets its header
 * only: libgit2 adds "Binary files ... differ" to one that also changes the
 * mode, which `git apply` rejects (it wants full index lines with it). */
static int print_delta(const struct patch *p, size_t i, struct printer *pr)
{
	git_patch *gp = NULL;
	if (git_patch_from_diff(&gp, p->diff, i) < 0)
		return -EIO;
	if (!gp)
		return 0;
	const git_diff_delta *d = git_diff_get_delta(p->diff, i);
	pr->skip_binary_line =
	    d->status == GIT_DELTA_RENAMED && git_oid_equal(&d->old_file.id, &d->new_file.id);
	pr->err = 0;
	int r = git_patch_print(gp, print_line, pr);
	git_patch_free(gp);
	if (r == GIT_EUSER)
		return pr->err;
	return r < 0 ? -EIO : 0;
}

int patch_write(const struct patch *p, patch_sink sink, void *arg)
{
	struct printer pr = {.sink = sink, .arg = arg};
	size_t n = git_diff_num_deltas(p->diff);
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		/* A path that changes type is deleted and added again: the deletion
		 * must come first, or `git apply` finds the path taken ("wrong type"). */
		size_t first = i, second = SIZE_MAX;
		if (i + 1 < n) {
			const git_diff_delta *a = git_diff_get_delta(p->diff, i);
			const git_diff_delta *b = git_diff_get_delta(p->diff, i + 1);
			if (a->status == GIT_DELTA_ADDED && b->status == GIT_DELTA_DELETED &&
			    strcmp(delta_path(a), delta_path(b)) == 0) {
				first = i + 1;
				second = i;
				i++;
			}
		}
		r = print_delta(p, first, &pr);
		if (r == 0 && second != SIZE_MAX)
			r = print_delta(p, second, &pr);
	}
	return r;
}

int patch_format(const struct patch *p, char **out, size_t *len)
{
	struct text all = {0};
	int r = text_put(&all, "", 0);
	if (r == 0)
		r = patch_write(p, text_sink, &all);
	if (r < 0) {
		free(all.ptr);
		return r;
	}
	*out = all.ptr;
	*len = all.size;
	return 0;
}

/* One file's line of the stat. */
struct stat_row {
	char *name; /* quoted; "OLD => NEW" for a rename */
	size_t adds, dels;
	bool binary;
	size_t old_size, new_size; /* bytes, for a binary file */
};

static size_t blob_size(const struct patch *p, const git_oid *id)
{
	size_t n = 0;
	git_object_t type;
	/* The header only: a lookup would copy the blob out of the mempack. */
	if (git_oid_is_zero(id) || git_odb_read_header(&n, &type, p->odb, id) < 0)
		return 0;
	return n;
}

/*
 * How git names a rename in --stat and --summary (pprint_rename in git's
 * diff.c): the part both paths share before a '/' and from a '/' on, once,
 * around "{OLD => NEW}" of what differs ("{docs => documentation}/guide.md",
 * "src/{ => lib}/a.c"); "OLD => NEW" in full when they share neither, or
 * when either needs quoting.  malloc'd, NULL for want of memory.
 */
static char *rename_name(const char *a, const char *b)
{
	char *qa = changes_quote(a), *qb = changes_quote(b), *out = NULL;
	if (!qa || !qb)
		goto done;
	if (strcmp(qa, a) != 0 || strcmp(qb, b) != 0) {
		if (asprintf(&out, "%s => %s", qa, qb) < 0)
			out = NULL;
		goto done;
	}
	size_t la = strlen(a), lb = strlen(b), pfx = 0, sfx = 0;
	for (size_t i = 0; a[i] && a[i] == b[i]; i++)
		if (a[i] == '/')
			pfx = i + 1;
	/* The shared tail, from its first '/'; it may take back the '/' that
	 * ends the shared head, no more. */
	size_t floor = pfx ? pfx - 1 : 0;
	for (size_t k = 1; k <= la && k <= lb; k++) {
		size_t ia = la - k, ib = lb - k;
		if (ia < floor || ib < floor || a[ia] != b[ib])
			break;
		if (a[ia] == '/')
			sfx = k;
	}
	size_t ma = la > pfx + sfx ? la - pfx - sfx : 0, mb = lb > pfx + sfx ? lb - pfx - sfx : 0;
	int n = pfx + sfx == 0 ? asprintf(&out, "%s => %s", a, b)
			       : asprintf(&out, "%.*s{%.*s => %.*s}%s", (int)pfx, a, (int)ma,
					  a + pfx, (int)mb, b + pfx, a + la - sfx);
	if (n < 0)
		out = NULL;
done:
	free(qa);
	free(qb);
	return out;
}

static int stat_row_of(const struct patch *p, size_t i, struct stat_row *row)
{
	const git_diff_delta *d = git_diff_get_delta(p->diff, i);
	git_patch *gp = NULL;
	if (git_patch_from_diff(&gp, p->diff, i) < 0)
		return -EIO;
	size_t ctx = 0;
	int r = gp ? git_patch_line_stats(&ctx, &row->adds, &row->dels, gp) : 0;
	d = gp ? git_patch_get_delta(gp) : d;
	row->binary = (d->flags & GIT_DIFF_FLAG_BINARY) != 0;
	if (row->binary) {
		row->old_size = blob_size(p, &d->old_file.id);
		row->new_size = blob_size(p, &d->new_file.id);
	}
	git_patch_free(gp);
	if (r < 0)
		return -EIO;
	row->name = d->status == GIT_DELTA_RENAMED ? rename_name(d->old_file.path, d->new_file.path)
						   : changes_quote(delta_path(d));
	return row->name ? 0 : -ENOMEM;
}

/* Are deltas @i and @i + 1 one path's type change (a file that became a
 * symlink or the reverse), which libgit2 gives as an addition and a deletion
 * of the same path, side by side, and git's --stat and --summary show as
 * one?  Then *@a is the deletion and *@b the addition. */
static bool typechange_at(const struct patch *p, size_t i, size_t n, const git_diff_delta **a,
			  const git_diff_delta **b)
{
	if (i + 1 >= n)
		return false;
	*a = git_diff_get_delta(p->diff, i);
	*b = git_diff_get_delta(p->diff, i + 1);
	if ((*a)->status == GIT_DELTA_ADDED) {
		const git_diff_delta *t = *a;
		*a = *b;
		*b = t;
	}
	return (*a)->status == GIT_DELTA_DELETED && (*b)->status == GIT_DELTA_ADDED &&
	       strcmp((*a)->old_file.path, (*b)->new_file.path) == 0;
}

/* The stat row of the type change from deletion @a to addition @b: the line
 * counts of the old blob against the new one, as git counts a type change. */
static int typechange_row(const struct patch *p, const git_diff_delta *a, const git_diff_delta *b,
			  struct stat_row *row)
{
	git_blob *old = NULL, *new = NULL;
	git_patch *gp = NULL;
	size_t ctx = 0;
	int r = git_blob_lookup(&old, p->repo, &a->old_file.id) < 0 ||
			git_blob_lookup(&new, p->repo, &b->new_file.id) < 0 ||
			git_patch_from_blobs(&gp, old, a->old_file.path, new, b->new_file.path,
					     NULL) < 0 ||
			git_patch_line_stats(&ctx, &row->adds, &row->dels, gp) < 0
		    ? -EIO
		    : 0;
	if (r == 0) {
		row->binary = (git_patch_get_delta(gp)->flags & GIT_DIFF_FLAG_BINARY) != 0;
		row->old_size = (size_t)git_blob_rawsize(old);
		row->new_size = (size_t)git_blob_rawsize(new);
		row->name = changes_quote(a->old_file.path);
		r = row->name ? 0 : -ENOMEM;
	}
	git_patch_free(gp);
	git_blob_free(old);
	git_blob_free(new);
	return r;
}

static int text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	int r = text_put(t, s, (size_t)n);
	free(s);
	return r;
}

/* The summary lines below the totals (git diff --summary). */
static int summary_of(const struct patch *p, size_t i, struct text *t)
{
	const git_diff_delta *d = git_diff_get_delta(p->diff, i);
	char *a = changes_quote(delta_path(d));
	int r = a ? 0 : -ENOMEM;
	if (r == 0 && d->status == GIT_DELTA_ADDED)
		r = text_printf(t, " create mode %06o %s\n", d->new_file.mode, a);
	else if (r == 0 && d->status == GIT_DELTA_DELETED)
		r = text_printf(t, " delete mode %06o %s\n", d->old_file.mode, a);
	else if (r == 0 && d->status == GIT_DELTA_RENAMED) {
		char *n = rename_name(d->old_file.path, d->new_file.path);
		r = n ? text_printf(t, " rename %s (%u%%)\n", n, d->similarity) : -ENOMEM;
		free(n);
	}
	/* After a rename's line git names no path again (show_mode_change). */
	if (r == 0 && d->status != GIT_DELTA_ADDED && d->status != GIT_DELTA_DELETED &&
	    d->old_file.mode != d->new_file.mode)
		r = d->status == GIT_DELTA_RENAMED
			? text_printf(t, " mode change %06o => %06o\n", d->old_file.mode,
				      d->new_file.mode)
			: text_printf(t, " mode change %06o => %06o %s\n", d->old_file.mode,
				      d->new_file.mode, a);
	free(a);
	return r;
}

static size_t decimal_width(size_t n)
{
	size_t w = 1;
	for (; n >= 10; n /= 10)
		w++;
	return w;
}

/* git's scale_linear (diff.c): @it of @max_change in @width columns, at
 * least one for a non-zero @it. */
static size_t scale_linear(size_t it, size_t width, size_t max_change)
{
	return it ? 1 + (it * (width - 1) / max_change) : 0;
}

static int graph(struct text *t, char c, size_t n)
{
	char buf[256];
	memset(buf, c, sizeof(buf));
	int r = 0;
	for (; r == 0 && n; n -= n > sizeof(buf) ? sizeof(buf) : n)
		r = text_printf(t, "%.*s", (int)(n > sizeof(buf) ? sizeof(buf) : n), buf);
	return r;
}

int patch_format_stat(const struct patch *p, unsigned width, char **out, size_t *len)
{
	size_t n = git_diff_num_deltas(p->diff);
	struct stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
	struct text t = {0};
	int r = rows && text_put(&t, "", 0) == 0 ? 0 : -ENOMEM;
	size_t max_len = 0, max_change = 0, number_w = 0, bin_w = 0, adds = 0, dels = 0;
	size_t files = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		/* A type change's second delta keeps a NULL name: no row. */
		const git_diff_delta *da, *db;
		bool tc = typechange_at(p, i, n, &da, &db);
		r = tc ? typechange_row(p, da, db, &rows[i]) : stat_row_of(p, i, &rows[i]);
		if (r < 0)
			break;
		files++;
		struct stat_row *w = &rows[i];
		i += tc;
		size_t l = strlen(w->name);
		max_len = l > max_len ? l : max_len;
		if (w->binary) {
			size_t bw = 14 + decimal_width(w->old_size) + decimal_width(w->new_size);
			bin_w = bw > bin_w ? bw : bin_w;
			number_w = 3; /* "Bin" */
			continue;
		}
		size_t c = w->adds + w->dels;
		max_change = c > max_change ? c : max_change;
		adds += w->adds;
		dels += w->dels;
	}
	/* The widths as git diff --stat sets them (diff.c, show_stats): the
	 * graph takes up to 3/8 of the line when both do not fit, the name
	 * what is left, a longer one keeps its end after "...". */
	size_t wd = width, dw = decimal_width(max_change);
	number_w = dw > number_w ? dw : number_w;
	if (wd < 16 + 6 + number_w)
		wd = 16 + 6 + number_w;
	size_t graph_w = max_change + 4 > bin_w ? max_change : bin_w - 4, name_w = max_len;
	if (name_w + number_w + 6 + graph_w > wd) {
		if (graph_w + number_w + 6 > wd * 3 / 8) {
			graph_w = wd * 3 / 8 > number_w + 6 ? wd * 3 / 8 - number_w - 6 : 0;
			graph_w = graph_w < 6 ? 6 : graph_w;
		}
		if (name_w > wd - number_w - 6 - graph_w)
			name_w = wd - number_w - 6 - graph_w;
		else
			graph_w = wd - number_w - 6 - name_w;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		struct stat_row *w = &rows[i];
		if (!w->name)
			continue;
		const char *name = w->name, *dots = "";
		size_t l = strlen(name), room = name_w;
		if (l > name_w) {
			dots = "...";
			room = name_w > 3 ? name_w - 3 : 0;
			name += l - room;
			const char *slash = strchr(name, '/');
			name = slash ? slash : name;
		}
		size_t pad = room > strlen(name) ? room - strlen(name) : 0;
		r = text_printf(&t, " %s%s%*s |", dots, name, (int)pad, "");
		if (r == 0 && w->binary) {
			r = text_printf(&t, " %*s %zu -> %zu bytes\n", (int)number_w, "Bin",
					w->old_size, w->new_size);
			continue;
		}
		size_t pa = w->adds, pd = w->dels;
		if (max_change && graph_w <= max_change) {
			size_t total = scale_linear(pa + pd, graph_w, max_change);
			if (total < 2 && pa && pd)
				total = 2;
			if (pa < pd) {
				pa = scale_linear(pa, graph_w, max_change);
				pd = total - pa;
			} else {
				pd = scale_linear(pd, graph_w, max_change);
				pa = total - pd;
			}
		}
		if (r == 0)
			r = text_printf(&t, " %*zu%s", (int)number_w, w->adds + w->dels,
					w->adds + w->dels ? " " : "");
		if (r == 0)
			r = graph(&t, '+', pa);
		if (r == 0)
			r = graph(&t, '-', pd);
		if (r == 0)
			r = text_printf(&t, "\n");
	}
	if (r == 0 && files) {
		r = text_printf(&t, " %zu file%s changed", files, files == 1 ? "" : "s");
		if (r == 0 && (adds || !dels))
			r = text_printf(&t, ", %zu insertion%s(+)", adds, adds == 1 ? "" : "s");
		if (r == 0 && (dels || !adds))
			r = text_printf(&t, ", %zu deletion%s(-)", dels, dels == 1 ? "" : "s");
		if (r == 0)
			r = text_printf(&t, "\n");
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		const git_diff_delta *da, *db;
		if (!typechange_at(p, i, n, &da, &db)) {
			r = summary_of(p, i, &t);
			continue;
		}
		r = text_printf(&t, " mode change %06o => %06o %s\n", da->old_file.mode,
				db->new_file.mode, rows[i].name);
		i++;
	}
	for (size_t i = 0; rows && i < n; i++)
		free(rows[i].name);
	free(rows);
	if (r < 0) {
		free(t.ptr);
		return r;
	}
	*out = t.ptr;
	*len = t.size;
	return 0;
}
