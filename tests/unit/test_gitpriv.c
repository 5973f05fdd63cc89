/* test_gitpriv.c - the private .git built from a real repository (no mount),
 * its on-demand objects, and the secret patterns. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/gitpriv.h"
#include "cli/packwrite.h"
#include "cli/secrets.h"
#include "policy/policy.h"

#define MARK "GITPRIV_TEST_SECRET_51c2"

static char tmp[PATH_MAX], repo[PATH_MAX + 8], ws[PATH_MAX + 8], gitdir[PATH_MAX + 16];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	ck_assert_msg(system(cmd) == 0, "command failed: %s", cmd);
}

/* A repository with visible files, a committed .env and id_rsa (hidden by the
 * default policy), a symlink escaping the repository, a removed secret in its
 * history, and the person's uncommitted change to README.md. */
static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/test_gitpriv.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(repo, sizeof(repo), "%s/repo", tmp);
	snprintf(ws, sizeof(ws), "%s/ws", tmp);
	snprintf(gitdir, sizeof(gitdir), "%s/git", ws);
	sh("set -e; export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null "
	   "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t; "
	   "mkdir -p %s && cd %s && git init -q -b trunk . && mkdir -p src keys && "
	   "printf 'readme\\n' >README.md && printf 'int main;\\n' >src/main.c && "
	   "printf 'KEY=%s-env\\n' >.env && printf '%s-rsa\\n' >keys/id_rsa && "
	   "ln -s ../../outside escape && printf 'gone %s-old\\n' >old.key && "
	   "git add -A && git commit -qm one && git rm -q old.key && git commit -qm two && "
	   "printf 'person edit\\n' >>README.md && mkdir -p %s",
	   repo, repo, MARK, MARK, MARK, ws);
}

static void teardown(void)
{
	sh("chmod -R u+w %s; rm -rf %s", tmp, tmp);
}

static struct policy *default_policy(void)
{
	struct policy *p = NULL;
	ck_assert_int_eq(policy_new_default(&p), 0);
	return p;
}

static struct gitpriv *build(struct policy *p, int *lower_fd, const char *mnt)
{
	*lower_fd = open(repo, O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(*lower_fd, 0);
	struct gitpriv *g = NULL;
	ck_assert_int_eq(gitpriv_new(ws, repo, mnt, *lower_fd, p, &g), 0);
	ck_assert_int_eq(gitpriv_prepare(g), 0);
	return g;
}

static void blob_id(const char *rev, git_oid *out)
{
	git_repository *r = NULL;
	git_object *o = NULL;
	ck_assert_int_eq(git_repository_open(&r, repo), 0);
	ck_assert_int_eq(git_revparse_single(&o, r, rev), 0);
	*out = *git_object_id(o);
	git_object_free(o);
	git_repository_free(r);
}

static bool loose_exists(const git_oid *id)
{
	char hex[GIT_OID_HEXSZ + 1], path[PATH_MAX * 2];
	git_oid_tostr(hex, sizeof(hex), id);
	snprintf(path, sizeof(path), "%s/objects/%.2s/%s", gitdir, hex, hex + 2);
	return access(path, F_OK) == 0;
}

static int fault_for(struct gitpriv *g, const git_oid *id)
{
	char hex[GIT_OID_HEXSZ + 1], rel[64];
	git_oid_tostr(hex, sizeof(hex), id);
	snprintf(rel, sizeof(rel), "objects/%.2s", hex);
	int r = gitpriv_fault(g, rel);
	if (r < 0)
		return r;
	snprintf(rel, sizeof(rel), "objects/%.2s/%s", hex, hex + 2);
	return gitpriv_fault(g, rel);
}

START_TEST(base_commit_tree_and_index)
{
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	git_libgit2_init();
	git_repository *priv = NULL;
	ck_assert_int_eq(git_repository_open_bare(&priv, gitdir), 0);
	git_object *head = NULL;
	ck_assert_int_eq(git_revparse_single(&head, priv, "HEAD"), 0);
	git_commit *c = (git_commit *)head;
	ck_assert_str_eq(git_commit_summary(c), "base");
	ck_assert_str_eq(git_commit_author(c)->name, GITPRIV_BASE_NAME);
	ck_assert_uint_eq(git_commit_parentcount(c), 0);
	/* HEAD names the person's branch */
	git_reference *ref = NULL;
	ck_assert_int_eq(git_reference_lookup(&ref, priv, "refs/heads/trunk"), 0);
	git_reference_free(ref);
	ck_assert_int_eq(git_reference_lookup(&ref, priv, "refs/tags/base"), 0);
	git_reference_free(ref);

	git_tree *t = NULL;
	ck_assert_int_eq(git_commit_tree(&t, c), 0);
	git_tree_entry *te = NULL;
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, "src/main.c"), 0);
	git_tree_entry_free(te);
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, ".env"), GIT_ENOTFOUND);
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, "keys/id_rsa"), GIT_ENOTFOUND);
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, "keys"), GIT_ENOTFOUND);
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, "escape"), GIT_ENOTFOUND);
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, "old.key"), GIT_ENOTFOUND);
	/* README.md as the working tree holds it: the person's edit, its blob
	 * in the private objects already */
	ck_assert_int_eq(git_tree_entry_bypath(&te, t, "README.md"), 0);
	git_blob *b = NULL;
	ck_assert_int_eq(git_blob_lookup(&b, priv, git_tree_entry_id(te)), 0);
	ck_assert_str_eq((const char *)git_blob_rawcontent(b), "readme\nperson edit\n");
	git_blob_free(b);
	git_tree_entry_free(te);

	/* the index: the same entries, with the working tree's stat data */
	git_index *idx = NULL;
	char ipath[PATH_MAX * 2];
	snprintf(ipath, sizeof(ipath), "%s/index", gitdir);
	ck_assert_int_eq(git_index_open(&idx, ipath), 0);
	ck_assert_uint_eq(git_index_entrycount(idx), 2);
	const git_index_entry *ie = git_index_get_bypath(idx, "src/main.c", 0);
	ck_assert_ptr_nonnull(ie);
	struct stat st;
	char fpath[PATH_MAX * 2];
	snprintf(fpath, sizeof(fpath), "%s/src/main.c", repo);
	ck_assert_int_eq(lstat(fpath, &st), 0);
	ck_assert_uint_eq(ie->ino, (uint32_t)st.st_ino);
	ck_assert_uint_eq(ie->mtime.nanoseconds, (uint32_t)st.st_mtim.tv_nsec);
	ck_assert_uint_eq(ie->file_size, (uint32_t)st.st_size);
	git_index_free(idx);

	/* the records beside it */
	struct gitpriv_base base;
	ck_assert_int_eq(gitpriv_read_base(ws, &base), 0);
	ck_assert_str_eq(base.branch, "trunk");
	char hex[GIT_OID_HEXSZ + 1];
	git_oid_tostr(hex, sizeof(hex), git_commit_id(c));
	ck_assert_str_eq(base.commit, hex);
	char **dirty = NULL;
	size_t nd = 0;
	ck_assert_int_eq(gitpriv_read_dirty(ws, &dirty, &nd), 0);
	ck_assert_uint_eq(nd, 1);
	ck_assert_str_eq(dirty[0], "README.md");
	ck_assert(gitpriv_path_in(dirty, nd, "README.md"));
	ck_assert(!gitpriv_path_in(dirty, nd, "src/main.c"));
	gitpriv_paths_free(dirty, nd);

	/* the config: no remote, hooks through the mount, fsmonitor off */
	char cpath[PATH_MAX * 2], text[4096];
	snprintf(cpath, sizeof(cpath), "%s/config", gitdir);
	FILE *f = fopen(cpath, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "hooksPath = \"/mnt/agent/.git/hooks\""));
	ck_assert_ptr_nonnull(strstr(text, "fsmonitor = false"));
	ck_assert_ptr_null(strstr(text, "[remote"));
	ck_assert_ptr_null(strstr(text, "[include"));

	git_tree_free(t);
	git_object_free(head);
	git_repository_free(priv);
	gitpriv_free(g);
	close(lfd);
	policy_free(p);
	git_libgit2_shutdown();
}
END_TEST

/* Build the private .git with the default policy; its git-dirty in *@dirty
 * (free with gitpriv_paths_free); returns how many paths. */
static size_t dirty_after_build(char ***dirty)
{
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	size_t nd = 0;
	ck_assert_int_eq(gitpriv_read_dirty(ws, dirty, &nd), 0);
	gitpriv_free(g);
	close(lfd);
	policy_free(p);
	return nd;
}

/* git-dirty names the paths where the base differs from HEAD, among those
 * the agent may see, once each and in git's order: a file the person deleted,
 * one made executable, one staged new, one become a symlink, one edited
 * (README.md) and a submodule staged new and marked assume-unchanged; not a
 * hidden file deleted (.env), a hidden one kept (keys/id_rsa), a symlink out
 * of the repository (escape) or an unchanged file. */
START_TEST(dirty_names_what_differs_from_head)
{
	sh("set -e; cd %s && printf 'a\\n' >a.txt && printf 'b\\n' >b.sh && "
	   "printf 'l\\n' >ln && printf 's\\n' >same.txt && git add a.txt b.sh ln same.txt && "
	   "GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null git -c user.name=t "
	   "-c user.email=t@t commit -qm three && rm a.txt .env && chmod +x b.sh && "
	   "printf 'n\\n' >new.txt && git add new.txt && rm ln && ln -s same.txt ln && "
	   "git update-index --add --cacheinfo 160000,$(git rev-parse HEAD),sub && "
	   "git update-index --assume-unchanged sub",
	   repo);
	char **dirty = NULL;
	size_t nd = dirty_after_build(&dirty);
	static const char *const want[] = {"README.md", "a.txt", "b.sh", "ln", "new.txt", "sub"};
	ck_assert_uint_eq(nd, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < nd; i++)
		ck_assert_str_eq(dirty[i], want[i]);
	gitpriv_paths_free(dirty, nd);
}
END_TEST

/* A HEAD tree out of git's order (entries b, a, c: fsck's treeNotSorted)
 * makes libgit2's diff give a path twice; git-dirty names each path once. */
START_TEST(dirty_names_a_path_once_for_an_unsorted_tree)
{
	sh("set -e; export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null; cd %s && "
	   "for f in a b c; do echo $f >$f; done && "
	   "python3 -c \"import subprocess as s, sys; "
	   "h = lambda f: bytes.fromhex(s.check_output(['git', 'hash-object', '-w', "
	   "f]).decode().strip()); "
	   "sys.stdout.buffer.write(b''.join(b'100644 ' + f.encode() + b'\\0' + h(f) "
	   "for f in 'bac'))\" >../tree.bin && "
	   "t=$(git hash-object -t tree --literally -w ../tree.bin) && "
	   "c=$(git -c user.name=t -c user.email=t@t commit-tree $t -m unsorted) && "
	   "git update-ref refs/heads/trunk $c && rm .git/index && git update-index --add a b c",
	   repo);
	char **dirty = NULL;
	size_t nd = dirty_after_build(&dirty);
	ck_assert_uint_ge(nd, 1); /* a false change, on the safe side */
	for (size_t i = 1; i < nd; i++)
		ck_assert_str_ne(dirty[i - 1], dirty[i]);
	gitpriv_paths_free(dirty, nd);
}
END_TEST

START_TEST(objects_on_demand_only_from_the_base)
{
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	git_oid visible, hidden, removed, dotenv;
	blob_id("HEAD:src/main.c", &visible);
	blob_id("HEAD:keys/id_rsa", &hidden);
	blob_id("HEAD~1:old.key", &removed);
	blob_id("HEAD:.env", &dotenv);

	ck_assert(!loose_exists(&visible)); /* nothing copied at build */
	ck_assert_int_eq(fault_for(g, &visible), 0);
	ck_assert(loose_exists(&visible));

	ck_assert_int_eq(fault_for(g, &hidden), -ENOENT);
	ck_assert_int_eq(fault_for(g, &removed), -ENOENT);
	ck_assert_int_eq(fault_for(g, &dotenv), -ENOENT);
	ck_assert(!loose_exists(&hidden));
	ck_assert(!loose_exists(&removed));
	ck_assert(!loose_exists(&dotenv));

	ck_assert_int_eq(gitpriv_fault(g, "config"), -ENOENT);
	ck_assert_int_eq(gitpriv_fault(g, "objects/info/alternates"), -ENOENT);
	ck_assert_int_eq(gitpriv_fault(g, "objects/zz"), -ENOENT);
	ck_assert_int_eq(gitpriv_fault(g, "objects/ab/../../config"), -ENOENT);

	/* no file of the private directory holds a secret's bytes */
	char cmd[PATH_MAX * 8];
	snprintf(cmd, sizeof(cmd), "grep -rqF %s %s %s/git-base %s/git-dirty", MARK, gitdir, ws,
		 ws);
	ck_assert_int_ne(system(cmd), 0);
	gitpriv_free(g);

	/* a resumed workspace serves the same base objects, and only those */
	struct gitpriv *g2 = NULL;
	ck_assert_int_eq(gitpriv_new(ws, repo, "/mnt/elsewhere", lfd, p, &g2), 0);
	ck_assert_int_eq(gitpriv_prepare(g2), 0);
	git_oid readme;
	blob_id("HEAD:README.md", &readme); /* the committed one: not the base's */
	ck_assert_int_eq(fault_for(g2, &readme), -ENOENT);
	ck_assert_int_eq(fault_for(g2, &hidden), -ENOENT);
	char cpath[PATH_MAX * 2], text[4096];
	snprintf(cpath, sizeof(cpath), "%s/config", gitdir);
	FILE *f = fopen(cpath, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "/mnt/elsewhere/.git/hooks"));
	gitpriv_free(g2);
	close(lfd);
	policy_free(p);
}
END_TEST

/* How many packs the private objects directory holds besides the build's
 * (listed in TMP/base: the base trees and commit) (*@packs), and how many of
 * the blobs of many/fFROM.c .. many/fTO.c are in one of them (*@in). */
static void packed(int from, int to, int *in, int *packs)
{
	char cmd[PATH_MAX * 6];
	snprintf(
	    cmd, sizeof(cmd),
	    "cd %s/objects/pack && ls | grep '\\.idx$' | grep -cvxF -f %s/base; "
	    "for i in $(seq %d %d); do git -C %s rev-parse HEAD:many/f$i.c; done | sort >%s/want; "
	    "for x in *.idx; do { git show-index <\"$x\"; } 2>/dev/null; done | "
	    "awk '{ print $2 }' | sort | comm -12 %s/want - | wc -l",
	    gitdir, tmp, from, to, repo, tmp, tmp);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%d %d", packs, in), 2);
	pclose(f);
}

/* Poll (10 s at most) until the packs hold @want of many/f1.c..many/f@want.c
 * in exactly one pack. */
static bool wait_packed(int want)
{
	int in = -1, packs = -1;
	for (int i = 0; i < 200; i++) {
		packed(1, want, &in, &packs);
		if (in == want && packs == 1)
			return true;
		usleep(50 * 1000);
	}
	fprintf(stderr, "wait_packed(%d): %d in %d packs\n", want, in, packs);
	return false;
}

/* Commit @n files many/f1.c .. many/fN.c ("many N") to the repository. */
static void commit_many(int n)
{
	sh("set -e; cd %s && mkdir many && for i in $(seq 1 %d); do printf 'many %%s\\n' $i "
	   ">many/f$i.c; done && git -c user.name=t -c user.email=t@t add many && "
	   "git -c user.name=t -c user.email=t@t commit -qm many",
	   repo, n);
}

static void copied_up(struct gitpriv *g, int from, int to)
{
	for (int i = from; i <= to; i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "many/f%d.c", i);
		gitpriv_copied_up(g, rel);
	}
}

START_TEST(base_blobs_go_into_packs)
{
	commit_many(40);
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	/* The build's own pack, of the base trees and commit: the one pack yet. */
	sh("cd %s/objects/pack && ls | grep '\\.idx$' >%s/base && test $(wc -l <%s/base) = 1",
	   gitdir, tmp, tmp);
	git_oid ids[33];
	for (int i = 1; i <= 32; i++) {
		char rev[32];
		snprintf(rev, sizeof(rev), "HEAD:many/f%d.c", i);
		blob_id(rev, &ids[i]);
	}

	/* Fewer than GITPRIV_PACK_MIN written ahead: they stay loose. */
	copied_up(g, 1, GITPRIV_PACK_MIN - 1);
	for (int i = 0; i < 100 && !loose_exists(&ids[GITPRIV_PACK_MIN - 1]); i++)
		usleep(50 * 1000);
	ck_assert(loose_exists(&ids[GITPRIV_PACK_MIN - 1]));
	usleep((2 * GITPRIV_PACK_QUIET_MS + 300) * 1000);
	int in, packs;
	packed(1, 32, &in, &packs);
	ck_assert_int_eq(packs, 0);

	/* One more, then a pause: all of them in one pack. */
	copied_up(g, GITPRIV_PACK_MIN, GITPRIV_PACK_MIN);
	ck_assert(wait_packed(GITPRIV_PACK_MIN));

	/* As many again at once: written straight into a second pack (no
	 * loose copies), then merged with the first. */
	copied_up(g, GITPRIV_PACK_MIN + 1, 2 * GITPRIV_PACK_MIN);
	ck_assert(wait_packed(2 * GITPRIV_PACK_MIN));

	/* The loose copies stay; every blob reads from the private objects. */
	git_libgit2_init();
	git_odb *odb = NULL;
	char objects[PATH_MAX * 2];
	snprintf(objects, sizeof(objects), "%s/objects", gitdir);
	ck_assert_int_eq(git_odb_open(&odb, objects), 0);
	for (int i = 1; i <= 2 * GITPRIV_PACK_MIN; i++) {
		ck_assert(loose_exists(&ids[i]) == (i <= GITPRIV_PACK_MIN));
		git_odb_object *o = NULL;
		ck_assert_int_eq(git_odb_read(&o, odb, &ids[i]), 0);
		ck_assert_int_eq(git_odb_object_type(o), GIT_OBJECT_BLOB);
		git_odb_object_free(o);
	}
	git_odb_free(odb);
	git_libgit2_shutdown();
	gitpriv_free(g);
	close(lfd);
	policy_free(p);
}
END_TEST

/* How many objects each pack of this session holds (besides the build's,
 * listed in TMP/base), in @sizes[0..*@n) as git lists them. */
static void pack_sizes(int *sizes, int *n)
{
	char cmd[PATH_MAX * 3];
	snprintf(cmd, sizeof(cmd),
		 "cd %s/objects/pack && for x in $(ls | grep '\\.idx$' | grep -vxF -f %s/base); do "
		 "{ git show-index <$x | wc -l; } 2>/dev/null; done",
		 gitdir, tmp);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	*n = 0;
	while (*n < 64 && fscanf(f, "%d", &sizes[*n]) == 1)
		*n += sizes[*n] > 0; /* 0: a pack a merge took away meanwhile */
	pclose(f);
}

/* Bulk edits that come in @nb batches of @batch files (each written as a
 * pack of its own), then @last more: once the edits pause, the packs merge
 * until each holds more than twice the objects of any newer one, and every
 * blob is in one of them, the ones that found no room as packs too. */
static void batches_merge(int nb, int batch, int last)
{
	int n_all = nb * batch + last;
	commit_many(n_all);
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	sh("cd %s/objects/pack && ls | grep '\\.idx$' >%s/base", gitdir, tmp);
	for (int b = 0; b < nb; b++) {
		copied_up(g, b * batch + 1, (b + 1) * batch);
		usleep(60 * 1000); /* GITPRIV_PENDING_QUIET_MS, not GITPRIV_PACK_QUIET_MS */
	}
	copied_up(g, nb * batch + 1, n_all);
	int sizes[64], n = 0, total = 0;
	bool ok = false;
	for (int i = 0; i < 600 && !ok; i++) {
		usleep(50 * 1000);
		pack_sizes(sizes, &n);
		total = 0;
		ok = true;
		for (int k = 0; k < n; k++) {
			total += sizes[k];
			for (int j = 0; j < n; j++)
				if (j != k && sizes[k] <= sizes[j] && sizes[j] <= 2 * sizes[k])
					ok = false; /* two packs still to merge */
		}
		ok = ok && total == n_all;
	}
	ck_assert_msg(ok, "%d objects in %d packs", total, n);
	int in, packs;
	packed(1, n_all, &in, &packs);
	ck_assert_int_eq(in, n_all);
	/* At most log2(n_all / GITPRIV_PACK_MIN) + 1 packs. */
	int bound = 1;
	for (int m = n_all / GITPRIV_PACK_MIN; m > 1; m /= 2)
		bound++;
	ck_assert_int_le(packs, bound);
	gitpriv_free(g);
	close(lfd);
	policy_free(p);
}

/* The last batch packs to less than half the one before it: the older
 * packs still merge. */
START_TEST(batches_of_packs_merge)
{
	batches_merge(9, 2 * GITPRIV_PACK_MIN + 4, GITPRIV_PACK_MIN + 1);
}
END_TEST

/* More batches than GITPRIV_PACKS_MAX: the last ones are written loose, and
 * packed once the merges make room. */
START_TEST(batches_beyond_packs_max_merge)
{
	batches_merge(GITPRIV_PACKS_MAX + 4, GITPRIV_PACK_MIN + 2, GITPRIV_PACK_MIN + 1);
}
END_TEST

static double mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Paths that keep coming (~0.3 ms apart, a bulk edit's pace) are read once
 * they pause for GITPRIV_PREFETCH_QUIET_MS, not beside the copy-ups: none
 * is read while they come, all are after.  Should this thread itself be
 * held up for three quarters of the pause (a loaded machine, a sanitizer),
 * the thread may rightly read what came: the check waits until it has
 * read them all and goes on from there. */
START_TEST(the_read_ahead_waits_for_a_pause)
{
	enum { N = 40 };
	commit_many(N);
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	gitpriv_set_pending_quiet(g, 600 * 1000); /* they stay pending: counted */
	const double held_up = GITPRIV_PREFETCH_QUIET_MS * 0.75;
	size_t base = 0;
	int checked = 0;
	double last = 0;
	for (int i = 1; i <= N; i++) {
		copied_up(g, i, i);
		double now = mono_ms();
		bool gap = i == 1 || now - last >= held_up; /* the first starts the thread */
		last = now;
		usleep(300);
		if (mono_ms() - last >= held_up)
			gap = true;
		if (gap) {
			for (int k = 0; k < 200 && gitpriv_pending(g) < (size_t)i; k++)
				usleep(10 * 1000);
			ck_assert_uint_eq(gitpriv_pending(g), (size_t)i);
			base = (size_t)i;
			last = mono_ms();
			continue;
		}
		ck_assert_uint_eq(gitpriv_pending(g), base);
		checked++;
	}
	ck_assert_int_gt(checked, 0);
	for (int i = 0; i < 200 && gitpriv_pending(g) < N; i++)
		usleep(50 * 1000);
	ck_assert_uint_eq(gitpriv_pending(g), N);
	gitpriv_free(g);
	close(lfd);
	policy_free(p);
}
END_TEST

/* A lookup of a base blob the prefetch thread holds in memory makes it write
 * them at once, as one pack, and waits for that: no loose copy. */
START_TEST(a_lookup_waits_for_pending_blobs)
{
	commit_many(40);
	struct policy *p = default_policy();
	int lfd;
	struct gitpriv *g = build(p, &lfd, "/mnt/agent");
	sh("cd %s/objects/pack && ls | grep '\\.idx$' >%s/base", gitdir, tmp);
	enum { N = GITPRIV_PACK_MIN + 4 };
	git_oid ids[N + 1];
	for (int i = 1; i <= N; i++) {
		char rev[32];
		snprintf(rev, sizeof(rev), "HEAD:many/f%d.c", i);
		blob_id(rev, &ids[i]);
	}
	gitpriv_set_pending_quiet(g, 600 * 1000);
	copied_up(g, 1, N);
	for (int i = 0; i < 200 && gitpriv_pending(g) < N; i++)
		usleep(50 * 1000);
	ck_assert_uint_eq(gitpriv_pending(g), N);
	int in, packs;
	packed(1, N, &in, &packs);
	ck_assert_int_eq(packs, 0);

	/* A name git never writes (uppercase hex) is no loose object: no
	 * wait, no write. */
	char hex[GIT_OID_HEXSZ + 1], rel[64];
	git_oid_tostr(hex, sizeof(hex), &ids[N]);
	for (char *c = hex + 2; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	snprintf(rel, sizeof(rel), "objects/%.2s/%s", hex, hex + 2);
	ck_assert_int_eq(gitpriv_fault(g, rel), -ENOENT);
	ck_assert_uint_eq(gitpriv_pending(g), N);

	/* The lookup returns once they are written; one pack holds them all,
	 * and there is no loose copy (git finds the pack). */
	ck_assert_int_eq(fault_for(g, &ids[N]), 0);
	ck_assert_uint_eq(gitpriv_pending(g), 0);
	packed(1, N, &in, &packs);
	ck_assert_int_eq(packs, 1);
	ck_assert_int_eq(in, N);
	for (int i = 1; i <= N; i++)
		ck_assert(!loose_exists(&ids[i]));
	/* git itself reads the pack and its index whole. */
	sh("cd %s && git verify-pack $(ls objects/pack/*.idx | grep -vF -f %s/base) >/dev/null",
	   gitdir, tmp);
	gitpriv_free(g);
	close(lfd);
	policy_free(p);
}
END_TEST

/* packwrite_blobs's cancel callback: the fourth question and later say stop. */
static int cancel_after_3(void *arg)
{
	return ++*(int *)arg > 3;
}

/* Blobs whose sizes take one to four bytes of the pack's object header,
 * written as a pack that git reads whole (git verify-pack inflates and
 * hashes each object and checks both trailers), each with the id git gives
 * it: packwrite_blob_id's is libgit2's. */
START_TEST(packwrite_sizes)
{
	static const size_t sizes[] = {0, 1, 15, 16, 2047, 2048, 262143, 262144, 3u << 20};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct packwrite_blob b[N];
	char *bufs[N];
	git_oid ids[N];
	git_libgit2_init();
	for (size_t i = 0; i < N; i++) {
		bufs[i] = malloc(sizes[i] + 1);
		ck_assert_ptr_nonnull(bufs[i]);
		for (size_t j = 0; j < sizes[i]; j++)
			bufs[i][j] = (char)('a' + (j * 7 + i) % 26);
		ck_assert_int_eq(git_odb_hash(&ids[i], bufs[i], sizes[i], GIT_OBJECT_BLOB), 0);
		unsigned char mine[PACKWRITE_ID_LEN];
		ck_assert_int_eq(packwrite_blob_id(bufs[i], sizes[i], mine), 0);
		ck_assert_mem_eq(mine, ids[i].id, PACKWRITE_ID_LEN);
		b[i] = (struct packwrite_blob){.data = bufs[i], .len = sizes[i], .id = ids[i].id};
	}
	char dir[PATH_MAX + 16], name[41];
	snprintf(tmp, sizeof(tmp), "/tmp/test_packwrite.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(dir, sizeof(dir), "%s/pack", tmp);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	ck_assert_int_eq(packwrite_blobs(dir, b, N, NULL, NULL, name), 0);
	ck_assert_uint_eq(strlen(name), 40);
	/* git's own ids for the same contents, against the pack's index. */
	sh("cd %s && git verify-pack -v pack/pack-%s.idx | grep -c ' blob ' | grep -qx %d", tmp,
	   name, (int)N);
	for (size_t i = 0; i < N; i++) {
		char hex[GIT_OID_HEXSZ + 1];
		git_oid_tostr(hex, sizeof(hex), &ids[i]);
		sh("git show-index <%s/pack-%s.idx | grep -q ' %s '", dir, name, hex);
	}
	/* libgit2 reads each blob back from it. */
	git_odb *odb;
	ck_assert_int_eq(git_odb_new(&odb), 0);
	char objects[PATH_MAX + 16];
	snprintf(objects, sizeof(objects), "%s", tmp);
	git_odb_backend *packs;
	ck_assert_int_eq(git_odb_backend_pack(&packs, objects), 0);
	ck_assert_int_eq(git_odb_add_backend(odb, packs, 1), 0);
	for (size_t i = 0; i < N; i++) {
		git_odb_object *obj;
		ck_assert_int_eq(git_odb_read(&obj, odb, &ids[i]), 0);
		ck_assert_uint_eq(git_odb_object_size(obj), sizes[i]);
		ck_assert_mem_eq(git_odb_object_data(obj), bufs[i], sizes[i]);
		git_odb_object_free(obj);
	}
	git_odb_free(odb);
	/* No objects, or one id twice: refused, nothing written.  Canceled:
	 * nothing left. */
	ck_assert_int_eq(packwrite_blobs(dir, b, 0, NULL, NULL, name), -EINVAL);
	struct packwrite_blob twice[2] = {b[3], b[3]};
	ck_assert_int_eq(packwrite_blobs(dir, twice, 2, NULL, NULL, name), -EINVAL);
	int calls = 0;
	ck_assert_int_eq(packwrite_blobs(dir, b, N, cancel_after_3, &calls, name), -ECANCELED);
	sh("test $(ls -A %s | wc -l) = 2", dir);
	for (size_t i = 0; i < N; i++)
		free(bufs[i]);
	git_libgit2_shutdown();
	sh("rm -rf %s", tmp);
}
END_TEST

START_TEST(oidset_grows_and_finds)
{
	struct gitpriv_oidset s = {0};
	git_oid id;
	for (unsigned i = 1; i <= 5000; i++) {
		memset(&id, 0, sizeof(id));
		memcpy(id.id, &i, sizeof(i));
		id.id[19] = 1;
		ck_assert_int_eq(gitpriv_oidset_add(&s, &id), 0);
		ck_assert_int_eq(gitpriv_oidset_add(&s, &id), 0);
	}
	ck_assert_uint_eq(s.count, 5000);
	for (unsigned i = 1; i <= 5000; i++) {
		memset(&id, 0, sizeof(id));
		memcpy(id.id, &i, sizeof(i));
		id.id[19] = 1;
		ck_assert(gitpriv_oidset_has(&s, &id));
		id.id[19] = 2;
		ck_assert(!gitpriv_oidset_has(&s, &id));
	}
	memset(&id, 0, sizeof(id));
	ck_assert(!gitpriv_oidset_has(&s, &id)); /* the zero id is never a member */
	gitpriv_oidset_clear(&s);
}
END_TEST

static const char *m(const char *line)
{
	return secrets_match(line, strlen(line));
}

START_TEST(secret_patterns)
{
	ck_assert_str_eq(m("-----BEGIN RSA PRIVATE KEY-----"), "private key block");
	ck_assert_str_eq(m("x = '-----BEGIN OPENSSH PRIVATE KEY-----'"), "private key block");
	ck_assert_str_eq(m("-----BEGIN PGP PRIVATE KEY BLOCK-----"), "private key block");
	ck_assert_ptr_null(m("-----BEGIN PUBLIC KEY-----"));
	ck_assert_ptr_null(m("-----BEGIN CERTIFICATE-----"));
	ck_assert_str_eq(m("key=AKIAIOSFODNN7EXAMPLE"), "AWS access key id");
	ck_assert_str_eq(m("\"ASIAQWERTYUIOPASDFGH\""), "AWS access key id");
	ck_assert_ptr_null(m("AKIAIOSFODNN7EXAMPL"));	/* 15 after the prefix */
	ck_assert_ptr_null(m("AKIAIOSFODNN7EXAMPLEX")); /* part of a longer word */
	ck_assert_ptr_null(m("XAKIAIOSFODNN7EXAMPLE")); /* inside a word */
	ck_assert_ptr_null(m("akiaiosfodnn7example"));	/* lower case */
	ck_assert_str_eq(m("token: ghp_0123456789abcdefghijABCDEFGHIJ012345"), "GitHub token");
	ck_assert_ptr_null(m("ghp_0123456789"));
	ck_assert_str_eq(m("glpat-abcdefghij0123456789"), "GitLab token");
	ck_assert_str_eq(m("xoxb-123456789012-abcdefghij"), "Slack token");
	ck_assert_str_eq(m("https://hooks.slack.com/services/T000/B000/XXXX"), "Slack webhook URL");
	ck_assert_str_eq(
	    m("//registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789"),
	    "npm token");
	ck_assert_str_eq(m("AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"), "Google API key");
	ck_assert_str_eq(m("sk_live_abcdefghijklmnopqrstuvwx"), "Stripe live key");
	ck_assert_ptr_null(m("sk_test_abcdefghijklmnopqrstuvwx"));
	/* A rule of each first byte (the scan tries rules only at those) */
	ck_assert_str_eq(m("rk_live_abcdefghijklmnopqrstuvwx"), "Stripe live key");
	ck_assert_str_eq(m("pypi-AgEIcHlwaS5vcmc"
			   "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN"),
			 "PyPI token");
	ck_assert_str_eq(m("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"), "OpenAI API key");
	ck_assert_str_eq(m("k=sk-ant-api03-"
			   "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			   "abcdefghijklmnopqr"),
			 "Anthropic API key");
	ck_assert_ptr_null(m("int main(void) { return 0; }"));
	ck_assert_ptr_null(m("the ghp_ prefix names GitHub tokens"));
	ck_assert_ptr_null(m(""));
}
END_TEST

START_TEST(secret_findings_and_allow)
{
	char *allow[] = {"b.txt:2"};
	struct secrets s;
	secrets_init(&s, allow, 1);
	const char *text = "line one\nAKIAIOSFODNN7EXAMPLE\nthree\n";
	ck_assert_int_eq(secrets_scan_blob(&s, "a.txt", text, strlen(text)), 0);
	ck_assert_int_eq(secrets_scan_blob(&s, "b.txt", text, strlen(text)), 0);
	ck_assert_uint_eq(s.count, 1);
	ck_assert_str_eq(s.items[0].path, "a.txt");
	ck_assert_uint_eq(s.items[0].line, 2);
	/* the same line met again is one finding */
	ck_assert_int_eq(secrets_scan_line(&s, "a.txt", 2, "AKIAIOSFODNN7EXAMPLE", 20), 0);
	ck_assert_uint_eq(s.count, 1);
	secrets_clear(&s);
}
END_TEST

/* Path names and commit messages: the same detectors, their own places and
 * --allow-secret words (PATH, COMMIT:LINE with 7+ hex digits, -m:LINE). */
START_TEST(secret_names_and_messages)
{
	const char *id = "0123456789abcdef0123456789abcdef01234567";
	const char *msg =
	    "token AKIAIOSFODNN7EXAMPLE\n\nsee ghp_abcdefghijklmnopqrstuvwxyz0123456789\n";
	const char *name = "d/ghp_abcdefghijklmnopqrstuvwxyz0123456789";
	struct secrets s;
	secrets_init(&s, NULL, 0);
	ck_assert_int_eq(secrets_scan_name(&s, name), 0);
	ck_assert_int_eq(secrets_scan_name(&s, "src/main.c"), 0);
	ck_assert_int_eq(secrets_scan_message(&s, id, msg), 0);
	ck_assert_int_eq(secrets_scan_message(&s, "-m", "fine\nAKIAIOSFODNN7EXAMPLE"), 0);
	ck_assert_uint_eq(s.count, 4);
	ck_assert_int_eq(s.items[0].place, SECRETS_NAME);
	ck_assert_str_eq(s.items[0].kind, "GitHub token");
	ck_assert_uint_eq(s.items[0].line, 0);
	ck_assert_int_eq(s.items[1].place, SECRETS_MESSAGE);
	ck_assert_str_eq(s.items[1].path, id);
	ck_assert_uint_eq(s.items[1].line, 1);
	ck_assert_str_eq(s.items[1].kind, "AWS access key id");
	ck_assert_uint_eq(s.items[2].line, 3);
	ck_assert_str_eq(s.items[3].path, "-m");
	ck_assert_uint_eq(s.items[3].line, 2);
	/* a name met again (in a later commit) is one finding */
	ck_assert_int_eq(secrets_scan_name(&s, name), 0);
	ck_assert_uint_eq(s.count, 4);
	secrets_clear(&s);

	char *allow[] = {(char *)name, "0123456:1", "0123456789ab:3", "-m:2"};
	secrets_init(&s, allow, 4);
	ck_assert_int_eq(secrets_scan_name(&s, name), 0);
	ck_assert_int_eq(secrets_scan_message(&s, id, msg), 0);
	ck_assert_int_eq(secrets_scan_message(&s, "-m", "fine\nAKIAIOSFODNN7EXAMPLE"), 0);
	ck_assert_uint_eq(s.count, 0);
	/* too short an id, another commit, another line */
	char *other[] = {"012345:1", "1123456789ab:1", "0123456789ab:2", "-m:1"};
	secrets_init(&s, other, 4);
	ck_assert_int_eq(secrets_scan_message(&s, id, msg), 0);
	ck_assert_int_eq(secrets_scan_message(&s, "-m", "fine\nAKIAIOSFODNN7EXAMPLE"), 0);
	ck_assert_uint_eq(s.count, 3);
	secrets_clear(&s);
	/* a FILE:LINE allowance is not a name's, nor a name's a line's */
	char *line[] = {"AKIAIOSFODNN7EXAMPLE.txt:1", "AKIAIOSFODNN7EXAMPLE.txt"};
	secrets_init(&s, line, 1);
	ck_assert_int_eq(secrets_scan_name(&s, "AKIAIOSFODNN7EXAMPLE.txt"), 0);
	ck_assert_uint_eq(s.count, 1);
	secrets_clear(&s);
	secrets_init(&s, line + 1, 1);
	ck_assert_int_eq(
	    secrets_scan_line(&s, "AKIAIOSFODNN7EXAMPLE.txt", 1, "AKIAIOSFODNN7EXAMPLE", 20), 0);
	ck_assert_uint_eq(s.count, 1);
	secrets_clear(&s);
}
END_TEST

/* Every kind is said with its own article: "an AWS ...", "an npm ...". */
START_TEST(secret_kind_articles)
{
	static const char *const an[] = {"AWS access key id", "npm token", "OpenAI API key",
					 "Anthropic API key"};
	size_t n = 0, ans = 0;
	for (const char *k; (k = secrets_kind_name(n)); n++) {
		bool vowel = false;
		for (size_t j = 0; j < sizeof(an) / sizeof(an[0]); j++)
			vowel |= strcmp(k, an[j]) == 0;
		ans += vowel;
		ck_assert_msg(strcmp(secrets_kind_article(k), vowel ? "an" : "a") == 0, "%s %s",
			      secrets_kind_article(k), k);
	}
	ck_assert_uint_eq(n, 12);
	ck_assert_uint_eq(ans, 4);
	ck_assert_str_eq(secrets_kind_article(m("key=AKIAIOSFODNN7EXAMPLE")), "an");
	ck_assert_str_eq(secrets_kind_article(m("-----BEGIN RSA PRIVATE KEY-----")), "a");
}
END_TEST

int main(void)
{
	Suite *su = suite_create("gitpriv");
	TCase *tc = tcase_create("build");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, base_commit_tree_and_index);
	tcase_add_test(tc, dirty_names_what_differs_from_head);
	tcase_add_test(tc, dirty_names_a_path_once_for_an_unsorted_tree);
	tcase_add_test(tc, objects_on_demand_only_from_the_base);
	tcase_add_test(tc, base_blobs_go_into_packs);
	tcase_add_test(tc, a_lookup_waits_for_pending_blobs);
	tcase_add_test(tc, the_read_ahead_waits_for_a_pause);
	tcase_add_test(tc, batches_of_packs_merge);
	tcase_add_test(tc, batches_beyond_packs_max_merge);
	suite_add_tcase(su, tc);
	TCase *tp = tcase_create("pure");
	tcase_add_test(tp, packwrite_sizes);
	tcase_add_test(tp, oidset_grows_and_finds);
	tcase_add_test(tp, secret_patterns);
	tcase_add_test(tp, secret_findings_and_allow);
	tcase_add_test(tp, secret_names_and_messages);
	tcase_add_test(tp, secret_kind_articles);
	suite_add_tcase(su, tp);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
