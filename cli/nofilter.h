/*
 * nofilter.h - where in a repository's working tree no git filter can apply,
 * decided a directory at a time.
 *
 * The private .git's build asks, for each file it would read or take from
 * its stat cache, whether a filter (libgit2 1.5's crlf for the `text`, `eol`
 * and `crlf` attributes or core.autocrlf, `ident`, a `filter` driver) applies
 * to it: git_filter_list_load answers for one path, re-reading the attribute
 * files of every directory above it (stat, readlink): 27 us a file, 2 s for
 * the kernel's 78,000.  Here the same question is answered for all the files
 * of a directory at once, conservatively: no filter can apply in directory D
 * when core.autocrlf is false or unset, core.eol is unset, and no attribute
 * source that could apply in D mentions `text`, `eol`, `crlf`, `ident`,
 * `filter`, `encoding` or defines a macro (`[attr]`): the system file and the
 * global one (gitattributes(5), found where libgit2 looks: its search paths
 * for the system and XDG levels, core.attributesFile), info/attributes of the
 * repository's common directory (a linked worktree shares it) and its own,
 * and the `.gitattributes` of D and of each directory above it, both the
 * working tree's file and the index's blob (libgit2 reads both).  Any source
 * that cannot be read counts as mentioning them.  Where the answer is "maybe",
 * the caller asks libgit2 for the path.
 *
 * Not thread-safe; one build owns one.
 */
#ifndef AGENTFS_NOFILTER_H
#define AGENTFS_NOFILTER_H

#include <stdbool.h>
#include <stdint.h>

struct git_index;
struct git_repository;
struct nofilter;

/*
 * For repository @repo (borrowed) whose index is @index (borrowed, outlives
 * the nofilter) and whose working tree is the directory @workdir_fd (borrowed):
 * 0 and *out, to free with nofilter_free, or -ENOMEM.
 */
int nofilter_new(struct git_repository *repo, struct git_index *index, int workdir_fd,
		 struct nofilter **out);

/* True when no filter can apply to the file at @path (relative to the
 * working tree, '/'-separated); false when one may. */
bool nofilter_path(struct nofilter *nf, const char *path);

/*
 * The digest of everything besides a file's bytes and its index entry that
 * libgit2 1.5's clean filters read for the file at @path: the values of
 * core.autocrlf, core.eol and core.safecrlf (src/libgit2/crlf.c,
 * convert_attrs) and core.attributesFile, and the bytes (or absence) of
 * every attribute source above, each directory's .gitattributes from the root
 * down to @path's directory, the working tree's bytes and the index's blob
 * id.  Equal digests: the same filters with the same settings apply (XXH3-64
 * of them all).  True and *out, or false when some source could not be read
 * (unreadable, not a regular file, larger than 4 MiB), or without memory.
 */
bool nofilter_digest(struct nofilter *nf, const char *path, uint64_t *out);

/*
 * Whether every attribute file read for a digest so far still has the stat
 * data it had then (device, inode, size, mtime, ctime), and every one absent
 * then is still absent.  libgit2 reads them again for its filters, at its own
 * moment: a file changed during a build, then put back, would otherwise leave
 * a record filtered under one version and named by the digest of the other.
 * One stat a source.
 */
bool nofilter_unchanged(const struct nofilter *nf);

void nofilter_free(struct nofilter *nf);

#endif
