/*
 * packwrite.h - write blobs held in memory as one git pack, stored rather than
 * compressed, so that writing it costs about a copy.
 *
 * The private .git's base blobs (cli/gitpriv.c) are read from the lower and
 * hashed as the agent copies files up, and git then reads them once or twice
 * (`git diff`); a stored pack is compressed only if it is merged with
 * another (git_packbuilder).  Deflating 100 kernel source files (2 MB) took
 * ~56 ms at zlib's default level (what git_packbuilder always uses in
 * libgit2 1.5), ~23 ms at level 1 and ~2.5 ms stored (level 0); writing
 * them as a stored pack, the indexer's inflating and hashing included,
 * 20-25 ms (3-5 ms for 100 small files).  git reads either alike.
 *
 * The stream is the pack format of gitformat-pack(5): "PACK", version 2, the
 * object count, then per object its type and size (a little-endian base-128
 * number, 4 bits in the first byte) and its content as a zlib stream, and the
 * SHA-1 of all that as trailer.  libgit2's indexer takes the stream, checks
 * it (each object inflated and hashed, the trailer compared), and writes
 * pack-NAME.pack and pack-NAME.idx into the directory, neither synced.
 */
#ifndef AGENTFS_PACKWRITE_H
#define AGENTFS_PACKWRITE_H

#include <stddef.h>

/* One blob's content (not owned). */
struct packwrite_blob {
	const void *data;
	size_t len;
};

/*
 * Write @blobs[0..n) as one pack into directory @pack_dir.  @cancel, when
 * not NULL, is asked between objects and from libgit2's progress callback;
 * non-zero stops the write (nothing is left behind).  @name receives the
 * pack's name (40 hex digits, pack-NAME.pack).  Returns 0, -EINVAL (n is 0
 * or 2^32 or more), -ECANCELED, -ENOMEM, or a write's errno (-ENOSPC and its
 * kind) else -EIO.
 */
int packwrite_blobs(const char *pack_dir, const struct packwrite_blob *blobs, size_t n,
		    int (*cancel)(void *arg), void *arg, char name[41]);

/* The errno @e a failed libgit2 write left, as a negative errno when it says
 * why (libgit2 1.5 reports some failed writes, a full disk among them, with
 * no message of its own): -ENOSPC and its kind (EDQUOT, EFBIG, EROFS, EIO,
 * ENOMEM), else -EIO. */
int packwrite_errno(int e);

#endif
