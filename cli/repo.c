/* repo.c - find a repository's working tree and HEAD commit with libgit2. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#include "cli/repo.h"

static void git_reason(char *err, size_t errlen, const char *what)
{
	const git_error *e = git_error_last();
	snprintf(err, errlen, "%s: %s", what, e && e->message ? e->message : "libgit2 error");
}

/* libgit2 reports the work directory with a trailing '/'; compare without it. */
static char *strip_slash(const char *s)
{
	char *c = strdup(s);
	if (!c)
		return NULL;
	size_t n = strlen(c);
	while (n > 1 && c[n - 1] == '/')
		c[--n] = '\0';
	return c;
}

/*
 * Did libgit2 refuse @real for its ownership rule?  Like git since 2.35.2, it
 * will not open a repository whose working tree or .git another user owns
 * unless safe.directory lists it (CVE-2022-24765), and libgit2 1.5 then says
 * only "not found" (GIT_EOWNER came later).  So look for the .git discovery
 * would find from @real (upwards, not across filesystems, like git) and
 * compare owners.  Its directory goes to @top.
 */
static bool owned_by_other(const char *real, char *top, size_t toplen)
{
	char dir[PATH_MAX];
	struct stat start;
	if (snprintf(dir, sizeof(dir), "%s", real) >= (int)sizeof(dir) || stat(dir, &start) < 0)
		return false;
	uid_t me = geteuid();
	for (;;) {
		char git[PATH_MAX + 8];
		struct stat gst, dst;
		snprintf(git, sizeof(git), "%s%s.git", dir, strcmp(dir, "/") ? "/" : "");
		if (lstat(git, &gst) == 0 && stat(dir, &dst) == 0) {
			snprintf(top, toplen, "%s", dir);
			return gst.st_uid != me || dst.st_uid != me;
		}
		char *slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			return false; /* the root has no .git either */
		*slash = 0;
		if (stat(dir, &dst) < 0 || dst.st_dev != start.st_dev)
			return false;
	}
}

int repo_open_worktree(const char *path, struct repo_info *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char real[PATH_MAX];
	if (!realpath(path, real)) {
		int e = errno;
		snprintf(err, errlen, "%s", strerror(e));
		return -e;
	}
	struct stat st;
	if (stat(real, &st) != 0) {
		int e = errno;
		snprintf(err, errlen, "%s", strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "not a directory");
		return -ENOTDIR;
	}

	git_libgit2_init();
	git_repository *repo = NULL;
	git_reference *head = NULL;
	char *workdir = NULL;
	int ret = 0;

	/* Search upwards so a subdirectory gets a precise refusal, not "not a repo";
	 * GIT_REPOSITORY_OPEN_CROSS_FS is left off like git's own default. */
	int rc = git_repository_open_ext(&repo, real, 0, NULL);
	char top[PATH_MAX];
	if ((rc == GIT_ENOTFOUND || rc == GIT_EOWNER) && owned_by_other(real, top, sizeof(top))) {
		snprintf(err, errlen,
			 "owned by another user (git's safe.directory rule); mount it as its "
			 "owner, or trust it: git config --global --add safe.directory %s",
			 top);
		ret = -EACCES;
		goto out;
	}
	if (rc == GIT_ENOTFOUND) {
		snprintf(err, errlen, "not a git working tree");
		ret = -EINVAL;
		goto out;
	}
	if (rc < 0) {
		git_reason(err, errlen, "cannot open the repository");
		ret = -EIO;
		goto out;
	}
	if (git_repository_is_bare(repo) || !git_repository_workdir(repo)) {
		snprintf(err, errlen, "a bare repository has no working tree to mount");
		ret = -EINVAL;
		goto out;
	}
	workdir = strip_slash(git_repository_workdir(repo));
	if (!workdir) {
		ret = -ENOMEM;
		goto out;
	}
	char wreal[PATH_MAX];
	if (realpath(workdir, wreal)) {
		free(workdir);
		workdir = strdup(wreal);
		if (!workdir) {
			ret = -ENOMEM;
			goto out;
		}
	}
	if (strcmp(workdir, real) != 0) {
		snprintf(err, errlen,
			 "a subdirectory of the git working tree %s (mount its top level)",
			 workdir);
		ret = -EINVAL;
		goto out;
	}

	char hex[GIT_OID_HEXSZ + 1] = "";
	rc = git_repository_head(&head, repo);
	if (rc == 0) {
		const git_oid *oid = git_reference_target(head);
		if (oid)
			git_oid_tostr(hex, sizeof(hex), oid);
	} else if (rc != GIT_EUNBORNBRANCH && rc != GIT_ENOTFOUND) {
		git_reason(err, errlen, "cannot read HEAD");
		ret = -EIO;
		goto out;
	}
	out->base_commit = strdup(hex);
	if (!out->base_commit) {
		ret = -ENOMEM;
		goto out;
	}
	out->workdir = workdir;
	workdir = NULL;
out:
	free(workdir);
	git_reference_free(head);
	git_repository_free(repo);
	git_libgit2_shutdown();
	if (ret < 0)
		repo_info_clear(out);
	return ret;
}

void repo_info_clear(struct repo_info *ri)
{
	free(ri->workdir);
	free(ri->base_commit);
	ri->workdir = NULL;
	ri->base_commit = NULL;
}

int repo_moved_to(const char *old, const char *base, const struct repo_info *ri)
{
	struct stat st;
	if (!*base)
		return 0;
	if (lstat(old, &st) == 0) {
		/* A symlink left at the old place, to the new one: the same
		 * repository, reached as before. */
		char *to = S_ISLNK(st.st_mode) ? realpath(old, NULL) : NULL;
		bool same = to && strcmp(to, ri->workdir) == 0;
		free(to);
		if (!same)
			return 0;
	} else if (errno != ENOENT && errno != ENOTDIR) {
		return 0;
	}
	git_libgit2_init(); /* counted: a caller's own init stays */
	git_repository *repo = NULL;
	git_oid id;
	git_commit *commit = NULL;
	int found =
	    git_oid_fromstr(&id, base) == 0 &&
	    git_repository_open_ext(&repo, ri->workdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) == 0 &&
	    git_commit_lookup(&commit, repo, &id) == 0;
	git_commit_free(commit);
	git_repository_free(repo);
	git_libgit2_shutdown();
	return found;
}
