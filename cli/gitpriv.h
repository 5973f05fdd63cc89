/*
 * gitpriv.h - the workspace-private git repository served at the view's ".git"
 * (policy `git: private`).
 *
 * The agent's git sees one root commit, "base" (authored by agentfs), whose tree
 * is the agent's base: the repository's index entries (HEAD plus the person's
 * staged and unstaged changes to tracked files at mount), each as the working
 * tree holds it, filtered by the policy.  A hidden path is absent from every
 * tree, from the index and from the private object database; so is a tracked
 * symlink the view hides (one that escapes the repository or lands on a hidden
 * path, unless `symlinks: allow`).
 *
 * On disk, <workspace>/git/ is a plain git directory:
 *
 *   HEAD            ref: refs/heads/<branch> (the repository's branch at mount,
 *                   else "main")
 *   config          written by agentfs: no remote, credential, include or hook;
 *                   core.hooksPath = MNT/.git/hooks (empty, read-only in the view),
 *                   core.fsmonitor = false, gc.auto = 0, user.name/email of the agent
 *   hooks/ info/    empty (info/exclude empty); read-only in the view (fs/)
 *   index           the base's entries with stat data taken from the working tree
 *                   (see gitpriv_prepare) so git's first status re-reads nothing
 *   objects/        the base's trees, the blobs of files the person changed before
 *                   the mount, and whatever the agent's git writes; the other base
 *                   blobs are copied from the repository on demand (gitpriv_fault)
 *   refs/heads/<branch>, refs/tags/base   the base commit
 *
 * and beside it, out of the agent's reach through the mount:
 *
 *   <workspace>/git-base    "commit OID\ntree OID\nhead OID\nbranch NAME\n": the
 *                           base commit, its tree, the repository's HEAD at mount
 *                           ("" when unborn) and the branch name.  Promote trusts
 *                           this file, not the private refs the agent can move.
 *   <workspace>/git-dirty   the paths where the base differs from HEAD (the
 *                           person's uncommitted work at mount), each ended by NUL
 *
 * The build runs once per workspace, in the daemon, after the mount serves
 * (fs_config.git_prepare); a resumed workspace keeps its private repository
 * (the agent's commits) and only gets its config rewritten.  Its cost is
 * reading the repository's index and HEAD tree and one lstat per tracked file;
 * only files whose stat data differ from the index are read and hashed, as git
 * itself does (and not those an earlier workspace's build of the same
 * repository hashed with the same stat data and found equal to the index:
 * gitpriv_set_state_root), a block at a time unless a filter (eol=crlf)
 * applies (a file whose bytes differ from the index's is then read whole, to
 * be written into the private objects), and blobs are never copied at build
 * time.
 *
 * Functions return 0 or a negative errno (-EIO when libgit2 fails; a one-line
 * reason is printed on stderr, which is the daemon's log).
 */
#ifndef AGENTFS_GITPRIV_H
#define AGENTFS_GITPRIV_H

#include <stdbool.h>
#include <stddef.h>

struct fs_config;
struct git_index_entry;
struct git_repository;
struct policy;
struct stat;
struct workspace;

/* Author of the base commit and default identity of the agent's commits. */
#define GITPRIV_BASE_NAME   "agentfs"
#define GITPRIV_BASE_EMAIL  "agentfs@agentfs.invalid"
#define GITPRIV_AGENT_NAME  "agent"
#define GITPRIV_AGENT_EMAIL "agent@agentfs.invalid"

struct gitpriv;

/*
 * Make ready to serve the private repository of workspace directory @ws_dir
 * over the repository whose working tree is @repo (absolute) and whose
 * directory fd is @lower_fd (borrowed; must outlive the gitpriv), mounted at
 * @mountpoint, under @policy (borrowed).  Creates <ws_dir>/git/ if missing and
 * touches no libgit2 state (safe before fork()).  *out is owned by the caller
 * (gitpriv_free after fs_serve returns).
 */
int gitpriv_new(const char *ws_dir, const char *repo, const char *mountpoint, int lower_fd,
		const struct policy *policy, struct gitpriv **out);

/*
 * `git: readonly` (gitpriv_attach) serves <workspace>/git-ro/ instead: the
 * same sanitised config, the repository's objects through
 * objects/info/alternates (read-only in the view), its refs copied once as
 * packed-refs, its HEAD and its index.  The agent reads the whole history,
 * secrets included: only for repositories whose history is known clean.
 * What the agent's git writes lands in git-ro/; promote then sees only the
 * change set (no agent commits).
 *
 * For the mount: when @policy says `git: private` (or readonly), make the gitpriv of
 * workspace @ws (repository ws->repo, lower @lower_fd) mounted at @mnt and
 * fill @cfg with it; *out gets it (free after fs_serve), or NULL when the
 * policy wants no private .git or it cannot be set up (then a warning goes to
 * stderr and the view has no .git: fail closed).  Returns 0 or a negative errno.
 */
int gitpriv_attach(const struct workspace *ws, const struct policy *policy, int lower_fd,
		   const char *mnt, struct fs_config *cfg, struct gitpriv **out);

/*
 * Let @g's build read and write the stat cache of its repository under the
 * state root @root (cli/statcache.h): a file it hashed whose stat data have
 * not changed since is not read again by the next workspace's build.
 * gitpriv_attach sets it from the workspace's directory; without it (the unit
 * tests) every build hashes alone.  Returns 0 or -ENOMEM.
 */
int gitpriv_set_state_root(struct gitpriv *g, const char *root);

/* Fill cfg->git_dir, git_prepare, git_prepare_arg and git_fault for @g. */
void gitpriv_fs_config(struct gitpriv *g, struct fs_config *cfg);

/* The absolute path of the private git directory (owned by @g). */
const char *gitpriv_dir(const struct gitpriv *g);

/*
 * fs_config.git_prepare: build the private repository (or, when resuming,
 * rewrite its config, reload the set of base objects and put the base
 * pack's .keep back if the agent removed it).  A build writes
 * the base trees and commit as one pack with a .keep (git-repack(1) and
 * git-gc(1) leave it alone: the policy filtered those trees, and the
 * repository cannot give them again), the blobs of the person's uncommitted
 * files loose, and syncs every file and directory it wrote before its last
 * record, <ws_dir>/git-base.  Prints one line with the time it took to
 * stderr, or what failed.  @arg is the gitpriv.  Returns 0 or a negative
 * errno (-ENOSPC and its kind as the write said, else mostly -EIO).
 */
int gitpriv_prepare(void *arg);

/*
 * fs_config.git_fault: @rel is "objects/XX" (a fan-out directory) or
 * "objects/XX/<38 lowercase hex>" (a loose object).  Creates the directory
 * when some base object lives in it, or copies the object from the
 * repository into the private object database when it is reachable from the
 * base tree (after waiting for it when it is a pending base blob: see
 * GITPRIV_PENDING_QUIET_MS); 0 then, also when a pack of the private objects
 * holds it and no loose copy is made.  Anything else (and every object not
 * in the base, such as a hidden file's blob) is -ENOENT.  Thread-safe.
 */
int gitpriv_fault(void *arg, const char *rel);

/*
 * fs_config.git_copied_up: the file at @lower (relative to the repository's
 * top) was copied up, so the agent's git will soon want its base blob.  Queues
 * @lower (copied) for a thread of the gitpriv's own, which reads the lower
 * file, hashes it as a git blob and, when that blob is one of the base's
 * (reachable from the filtered base tree, as gitpriv_fault requires) and not
 * yet in the private objects, keeps it pending in memory: the first `git
 * diff` after an edit then finds it instead of faulting it in (~1 ms each).
 * Best effort: a full queue (GITPRIV_PREFETCH_QUEUE), a file larger than
 * GITPRIV_PREFETCH_MAX_BYTES, a file the person changed since HEAD or any
 * error drops the path, and gitpriv_fault still serves the blob.  The thread
 * starts at the first call and gitpriv_free stops it.
 */
void gitpriv_copied_up(void *arg, const char *lower);

/* fs_config.git_packs_removed: the prefetch thread (started if need be)
 * drops the kernel's listings of the fan-out directories that hold base
 * objects (fs_git_changed), so that the next listing asks gitpriv_fault,
 * which makes loose every base object no pack on disk holds any more. */
void gitpriv_packs_removed(void *arg);
#define GITPRIV_PREFETCH_QUEUE	   4096
#define GITPRIV_PREFETCH_MAX_BYTES (8u << 20)
/* The thread reads the queued paths once none came for this long (in ms),
 * or at once when half the queue is taken: beside a bulk edit's copy-ups
 * (~0.1 ms apart) its reading and hashing slowed them by a third on two
 * CPUs (tests/bench/RESULTS.md), and a git process started after the edits
 * spends longer than this before it reads a blob. */
#define GITPRIV_PREFETCH_QUIET_MS 2

/*
 * The pending blobs are written once no path came for
 * GITPRIV_PENDING_QUIET_MS (a bulk edit's copy-ups come well under a
 * millisecond apart), or at once when they reach GITPRIV_PENDING_MAX or
 * GITPRIV_PENDING_MAX_BYTES: at least GITPRIV_PACK_MIN of them as one pack
 * in objects/pack, stored rather than compressed (cli/packwrite.h: ~4 ms
 * for 100 kernel source files where git_packbuilder took ~100 ms), fewer
 * loose.  The kernel's listing of .git/objects/pack is then dropped
 * (fs_git_changed) so that the next git process finds the pack.  A lookup
 * of a loose object that is still pending (git run right after the edits)
 * asks for the write at once and waits for it (GITPRIV_PENDING_WAIT_MS at
 * most), then answers that no loose object is there (an answer the kernel
 * does not cache: the object is the fault's to give): git then looks for
 * new packs (oid_object_info_extended's reprepare_packed_git) and finds it.
 * While blobs are pending, such lookups are handed off by the request loop
 * (fs_git_pending).
 * Each loose base blob costs a git process three opens through the mount,
 * a pack two opens for any number of them (git looks in packs before loose
 * objects).  Measured on the 11k-file tree of tests/bench/RESULTS.md, 100
 * edited files and `git diff --stat` right after them: 88-100 ms with the
 * loose blobs, 60-65 ms with a pack.
 *
 * Loose base blobs are packed too, by git_packbuilder (no delta search),
 * once at least GITPRIV_PACK_MIN wait and no path came for
 * GITPRIV_PACK_QUIET_MS.  The loose copies stay (git never reads them while
 * a pack holds the same objects), so no name the kernel holds disappears.
 * This session's packs merge (git_packbuilder, compressed) after the same
 * pause, two adjacent ones at a time, while one holds no more than twice the
 * objects of the next (so there are at most log2(n / GITPRIV_PACK_MIN) + 1
 * of them); a merged
 * pack's files are removed after the merged one is durable (fsync) and
 * listed (a git process still holding the old list fails to open them and
 * looks again, as after `git repack`).  Packs of earlier mounts of the
 * workspace are left as they are.  gitpriv_free cancels a write in progress
 * (libgit2's progress callbacks).  Each pack written and each packing writes
 * one line to the daemon's log, and so does a pack that cannot be written.
 * Best effort: such a pack's blobs are written loose, a packing that fails
 * leaves them as they were, and so do the loose blobs that find no room
 * beside GITPRIV_PACKS_MAX packs.
 */
#define GITPRIV_PENDING_QUIET_MS  5
#define GITPRIV_PENDING_WAIT_MS	  2000
#define GITPRIV_PENDING_MAX	  2048
#define GITPRIV_PENDING_MAX_BYTES (64u << 20)
#define GITPRIV_PACK_MIN	  16
#define GITPRIV_PACK_QUIET_MS	  500
#define GITPRIV_PACKS_MAX	  48

/* Tests lengthen the pause (GITPRIV_PENDING_QUIET_MS, in ms) to see a lookup
 * wait for the pending blobs, and make each write of them start @ms later
 * (after the priority raise, 0 by default; the mount's end cuts it short)
 * to see what else goes on while a lookup waits.  The daemon takes both from its environment,
 * AGENTFS_TEST_PENDING_QUIET_MS and AGENTFS_TEST_FLUSH_DELAY_MS
 * (gitpriv_attach): tests/integration/git.sh sets them; nothing else should.
 * The thread that reads ahead and writes them is named "agentfs-git". */
void gitpriv_set_pending_quiet(struct gitpriv *g, long ms);
void gitpriv_set_flush_delay(struct gitpriv *g, long ms);
/* Tests start the build of the private .git (gitpriv_prepare) @ms later, to
 * see what the mount answers while it runs; from the daemon's environment,
 * AGENTFS_TEST_BUILD_DELAY_MS (gitpriv_attach), set by tests/integration/git.sh
 * alone.  Called before the daemon serves. */
void gitpriv_set_build_delay(struct gitpriv *g, long ms);
/* Tests make the build pause @ms before each entry of the repository's
 * index, to unmount while it runs (AGENTFS_TEST_ENTRY_DELAY_MS, the same
 * way).  Both pauses end early once the mount stops serving. */
void gitpriv_set_entry_delay(struct gitpriv *g, long ms);
/* How many base blobs are pending (read and hashed, not yet written). */
size_t gitpriv_pending(struct gitpriv *g);

/* fs_config.git_serving: the daemon to tell about new packs, or NULL.  With
 * NULL (the mount no longer serves), while the workspace's upper is empty, a
 * build still running stops at its next index entry: nothing of it is served
 * or kept but the stat cache, which keeps the ids it hashed
 * (statcache_keep_rest), and the next mount of the workspace builds again,
 * as for a new workspace.  The unmount waits for the build's thread
 * (fs_serve), so without this an unmount right after the mount of a large
 * tree whose index is stale waited for the whole build (9 s for the kernel's
 * 78k files).  Once the agent changed anything the build finishes: promote
 * and export need the base as of this mount. */
struct agentfs;
void gitpriv_serving(void *arg, struct agentfs *fs);

void gitpriv_free(struct gitpriv *g);

/* ---- A set of object ids (what gitpriv_fault may produce; promote's checks) ---- */

struct git_oid;
struct gitpriv_oidset {
	struct git_oid *slots; /* open addressing; the zero id marks a free slot */
	size_t cap;
	size_t count;
};

/* Add @id (no-op when present or zero); 0 or -ENOMEM. */
int gitpriv_oidset_add(struct gitpriv_oidset *s, const struct git_oid *id);
bool gitpriv_oidset_has(const struct gitpriv_oidset *s, const struct git_oid *id);
void gitpriv_oidset_clear(struct gitpriv_oidset *s);

/*
 * Add to @set every tree and blob reachable from the tree @tree, reading trees
 * from @priv, else from @real (may be NULL): an object id names one content,
 * so both give the same walk.  Returns 0, or -EIO (a tree missing in both).
 */
typedef struct git_repository git_repository;
int gitpriv_base_objects(git_repository *priv, git_repository *real, const struct git_oid *tree,
			 struct gitpriv_oidset *set);

/* ---- Reading what the build recorded (for promote and export) ---- */

struct gitpriv_base {
	char commit[41]; /* the base commit in the private repository */
	char tree[41];	 /* its tree */
	char head[41];	 /* the repository's HEAD at mount, "" when unborn */
	char branch[256];
};

/* Read <ws_dir>/git-base.  -ENOENT when the workspace has no private repository
 * (never mounted with `git: private`, or its build never finished); -EINVAL when
 * malformed. */
int gitpriv_read_base(const char *ws_dir, struct gitpriv_base *out);

/* Read <ws_dir>/git-dirty into a malloc'd array of malloc'd paths, sorted
 * bytewise (*paths NULL and *count 0 when empty).  Free with gitpriv_paths_free. */
int gitpriv_read_dirty(const char *ws_dir, char ***paths, size_t *count);
void gitpriv_paths_free(char **paths, size_t count);

/* Is @path (sorted array from gitpriv_read_dirty) in @paths? */
bool gitpriv_path_in(char *const *paths, size_t count, const char *path);

/*
 * The bytes of a working-tree file at @path (repository-relative) as git
 * stores them: *@buf (malloc'd, *@len bytes; may be NULL when empty) through
 * the clean filters @repo's attributes give the path (gitattributes(5):
 * text, eol, ident; git_filter_list_load with GIT_FILTER_TO_ODB), so a file
 * checked out with CRLF line ends becomes the LF blob git would add.  No
 * filter applies: unchanged.  Replaces *@buf.  0, -ENOMEM, or -EIO with
 * libgit2's message on stderr.
 */
int gitpriv_clean_filter(struct git_repository *repo, const char *path, char **buf, size_t *len);

/* The bytes of the regular file or symlink (its target) at @path, not
 * followed: *@buf malloc'd (NULL when empty), *@len bytes.  0, -EINVAL for
 * another type, or -errno. */
int gitpriv_read_file(const char *path, char **buf, size_t *len);

/* Do index entry @e's stat data (times, inode, owner, size, as git compares
 * them: 32 bits each) still describe the file @st describes?  The caller also
 * applies git's racy-git rule (a file modified no earlier than the index was
 * written may have changed within the same timestamp). */
bool gitpriv_index_stat_matches(const struct git_index_entry *e, const struct stat *st);

#endif
