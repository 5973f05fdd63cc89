/*
 * packwrite.h - write blobs held in memory as one git pack, stored rather than
 * compressed, and its index, so that writing them costs about a copy.
 *
 * The private .git's base blobs (cli/gitpriv.c) are read from the lower and
 * hashed as the agent copies files up, and git then reads them once or twice
 * (`git diff`); a stored pack is compressed only if it is merged with
 * another (git_packbuilder).  Deflating 100 kernel source files (2 MB) took
 * ~56 ms at zlib's default level (what git_packbuilder always uses in
 * libgit2 1.5), ~23 ms at level 1 and ~2.5 ms stored (level 0).
 *
 * The pack is gitformat-pack(5)'s: "PACK", version 2, the object count, then
 * per object its type and size (a little-endian base-128 number, 4 bits in
 * the first byte) and its content as a zlib stream, and the SHA-1 of all that
 * as trailer; the index is its version 2 (fan-out, sorted ids, CRC-32s,
 * offsets, both trailers).  Both are written here from what the caller
 * knows, each blob's id included: libgit2's indexer, which took the stream
 * before, inflates and hashes every object again with its collision-detecting
 * SHA-1 (~475 MB/s here, OpenSSL's ~1.6 GB/s), 18.1 ms for those 100 files
 * where this takes 3.9 ms.  tests/unit/test_gitpriv.c has git verify-pack
 * (which inflates and hashes each object and checks both trailers) and
 * libgit2 read the result.
 */
#ifndef AGENTFS_PACKWRITE_H
#define AGENTFS_PACKWRITE_H

#include <stddef.h>

/* Bytes of a git object id (SHA-1). */
#define PACKWRITE_ID_LEN 20

/* One blob: its content (not owned) and its id (packwrite_blob_id). */
struct packwrite_blob {
	const void *data;
	size_t len;
	const unsigned char *id; /* PACKWRITE_ID_LEN bytes */
};

/*
 * The id git gives @len bytes at @data as a blob: the SHA-1 of "blob <len>",
 * a NUL and the bytes (gitformat-pack(5), object names), with OpenSSL's
 * SHA-1.  Into @id; 0, or -ENOMEM.
 */
int packwrite_blob_id(const void *data, size_t len, unsigned char id[PACKWRITE_ID_LEN]);

/*
 * Write @blobs[0..n) as one pack and its index into directory @pack_dir:
 * pack-NAME.pack, then pack-NAME.idx, each written under a temporary name
 * and renamed into place, read-only (0444), not synced.  Each blob's id is
 * the caller's and goes into the index as given; no two may be equal.
 * @cancel, when not NULL, is asked before each object; non-zero stops the
 * write.  @name receives NAME (40 hex digits, the pack's trailer).  Returns
 * 0, -EINVAL (n is 0 or 2^32 or more, or an id given twice), -ECANCELED,
 * -ENOMEM, or a write's errno (-ENOSPC and its kind) else -EIO; on failure
 * nothing is left in @pack_dir but, after a failed last rename, the pack
 * without its index (which git never reads).
 */
int packwrite_blobs(const char *pack_dir, const struct packwrite_blob *blobs, size_t n,
		    int (*cancel)(void *arg), void *arg, char name[41]);

/* The errno @e a failed write left, as a negative errno when it says why:
 * -ENOSPC and its kind (EDQUOT, EFBIG, EROFS, EIO, ENOMEM), else -EIO.
 * (libgit2 1.5 reports some failed writes, a full disk among them, with no
 * message of its own: its callers use this too.) */
int packwrite_errno(int e);

#endif
