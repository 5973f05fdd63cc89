/*
 * layout.h - the on-disk format of a workspace's upper layer.
 *
 * The upper is a plain directory tree that mirrors the merged view's namespace:
 * a file the agent created or changed sits at its view path.  Three kinds of
 * marker record what the tree alone cannot say; they never show in the view:
 *
 *  - whiteout: an empty regular file ".wh.NAME" in an upper directory says the
 *    lower entry NAME of that directory was deleted (the aufs/fuse-overlayfs
 *    convention; a 0/0 character device needs privileges people mounting as
 *    themselves do not have).  Names beginning with ".wh." are reserved: the
 *    view refuses to create them (EINVAL).  The whiteout of a file the agent
 *    had changed keeps that file's origin (below) for a file made at the name
 *    later: layout_make_whiteout_origin().
 *  - opaque directory: xattr "user.agentfs.opaque" (value "y") on an upper
 *    directory hides the lower directory of the same path (created after an
 *    rmdir or when a directory replaces a lower one).
 *  - redirect: xattr "user.agentfs.redirect" on an upper directory holds the
 *    lower path (relative, no leading '/') this directory's lower entries come
 *    from, after a rename of a lower directory (overlayfs "redirect_dir", see
 *    Documentation/filesystems/overlayfs.rst).  A redirected directory never
 *    merges with the lower directory at its own path.
 *  - origin: xattr "user.agentfs.origin" on a copied-up upper file says which
 *    lower file it came from and what that file held then.  Version 2,
 *    written since 2026-12-07: the byte 0x02, the inode number (8 bytes,
 *    little-endian), the xxh3-128 (XXH128_canonical_t: 16 bytes, big-endian)
 *    and the lower path to the end of the value, 25 bytes and the path.
 *    Version 1, still read: "v1 <ino> <xxh3-128 hex> <lower path>" (ino
 *    decimal), 44 bytes and more beside the path.  ext4 keeps xattrs in the
 *    inode while they fit (256-byte inodes: 96 bytes, of which this name's
 *    entry takes 32 and the headers 8, so 56 of value), else in a block of
 *    their own, allocated and journaled with each copy-up: version 2 keeps
 *    paths of up to 31 bytes in the inode (v1: 11).
 *    Export uses it to tell the agent's change from the person's (conflicts).
 *
 * The workspace also holds "work/", a scratch directory on the same filesystem
 * where copy-ups are assembled before renameat() publishes them, so a crash
 * never leaves a half-copied file in the upper.
 *
 * Functions return 0 or a negative errno.
 */
#ifndef AGENTFS_LAYOUT_H
#define AGENTFS_LAYOUT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <xxhash.h>

#define LAYOUT_WH_PREFIX	".wh."
#define LAYOUT_WH_PREFIX_LEN	4
#define LAYOUT_WH_HASHED	".h."
#define LAYOUT_XATTR_OPAQUE	"user.agentfs.opaque"
#define LAYOUT_XATTR_REDIRECT	"user.agentfs.redirect"
#define LAYOUT_XATTR_ORIGIN	"user.agentfs.origin"
#define LAYOUT_XATTR_PREFIX	"user.agentfs."
#define LAYOUT_ORIGIN_V2	'\x02'
#define LAYOUT_ORIGIN_V2_HEAD	25 /* version, ino, hash */
#define LAYOUT_XATTR_PREFIX_LEN 13

/* True if @name is a whiteout marker or any other reserved name. */
bool layout_is_reserved(const char *name);

/* Write the whiteout name for @name into @buf (@len bytes): ".wh." + @name, or,
 * when that would exceed NAME_MAX (names of 252..255 bytes), ".wh..h." + the
 * 32 hex digits of xxh3-128(@name).  -ENAMETOOLONG if @len is too small. */
int layout_whiteout_name(const char *name, char *buf, size_t len);

/* Does directory @dirfd (upper) contain a whiteout for @name?  1 yes, 0 no. */
int layout_has_whiteout(int dirfd, const char *name);

/* Create (or keep) the whiteout for @name in @dirfd, durable against a crash once
 * the directory is synced. */
int layout_make_whiteout(int dirfd, const char *name);

/* Remove the whiteout for @name if any (0 if there was none). */
int layout_remove_whiteout(int dirfd, const char *name);

/* Opaque flag of an upper directory opened as @fd: 1 opaque, 0 not. */
int layout_is_opaque(int fd);
int layout_set_opaque(int fd);

/* Redirect of an upper directory: copies the lower path into @buf (NUL
 * terminated) and returns its length, 0 when there is no redirect. */
int layout_get_redirect(int fd, char *buf, size_t len);
int layout_set_redirect(int fd, const char *lower_path);

struct layout_origin {
	uint64_t ino;	     /* st_ino of the lower file at copy-up; 0: the file
			      * reports its own (a base taken over from a file
			      * that lives on under another name: op_rename) */
	XXH128_hash_t hash;  /* xxh3-128 of its bytes at copy-up */
	char path[PATH_MAX]; /* its lower path */
};

/* Origin of an upper file opened as @fd: 1 and *o filled, 0 when it has none. */
int layout_get_origin(int fd, struct layout_origin *o);
/* Parse an origin value of @n bytes held in @buf (which has room for one more
 * byte, written as a NUL): 1 and *o filled, or -EINVAL. */
int layout_parse_origin(char *buf, size_t n, struct layout_origin *o);
int layout_set_origin(int fd, const struct layout_origin *o);
/* The same for @name in directory @dirfd (any descriptor, O_PATH too), by
 * path through /proc/self/fd without following a symlink at @name: one
 * system call where an open, the xattr call and a close take three.
 * Errors as for lgetxattr(2) and lsetxattr(2). */
int layout_get_origin_at(int dirfd, const char *name, struct layout_origin *o);
int layout_set_origin_at(int dirfd, const char *name, const struct layout_origin *o);

/* Create the whiteout for @name in @dirfd keeping @o, the origin of the
 * copied-up upper file it stands in for (unlink(2), or a rename away, of a
 * file the agent changed): a file made at @name later takes @o over
 * (layout_whiteout_origin), so the person's change of the lower file after
 * the copy-up still shows as a conflict.  Such a whiteout has mode 0400, for
 * reading the xattr back.  An existing whiteout is kept as it is. */
int layout_make_whiteout_origin(int dirfd, const char *name, const struct layout_origin *o);

/* The origin kept by @name's whiteout in @dirfd: 1 and *o filled, 0 when it
 * keeps none (or there is no whiteout, or it cannot be read). */
int layout_whiteout_origin(int dirfd, const char *name, struct layout_origin *o);

/* xxh3-128 of everything readable from @fd, from offset 0 (pread; the file
 * position is unchanged), holes hashed as the zeros they read as without
 * reading them (lseek(2) SEEK_DATA / SEEK_HOLE).  0, or -errno (-ENOMEM).
 * Symlinks: hash the target string instead. */
int layout_hash_fd(int fd, XXH128_hash_t *out);
/* Feed @len zero bytes to @st (the hash of a hole). */
void layout_hash_zeros(XXH3_state_t *st, off_t len);

/* 32 lowercase hex chars + NUL, the canonical (big-endian) form xxhsum -H2 prints. */
void layout_hash_hex(XXH128_hash_t h, char out[33]);
int layout_hash_parse(const char *hex, XXH128_hash_t *out);

#endif
