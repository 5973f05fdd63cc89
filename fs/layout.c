/* layout.c - markers of the upper layer: whiteouts, opaque, redirect, origin. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/layout.h"

bool layout_is_reserved(const char *name)
{
	return strncmp(name, LAYOUT_WH_PREFIX, LAYOUT_WH_PREFIX_LEN) == 0;
}

int layout_whiteout_name(const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);
	if (n + LAYOUT_WH_PREFIX_LEN <= NAME_MAX) {
		if (n + LAYOUT_WH_PREFIX_LEN + 1 > len)
			return -ENAMETOOLONG;
		memcpy(buf, LAYOUT_WH_PREFIX, LAYOUT_WH_PREFIX_LEN);
		memcpy(buf + LAYOUT_WH_PREFIX_LEN, name, n + 1);
		return 0;
	}
	/* NAME + the prefix would not fit in NAME_MAX: name the whiteout by
	 * the name's hash instead. */
	char hex[33];
	layout_hash_hex(XXH3_128bits(name, n), hex);
	if ((size_t)snprintf(buf, len, "%s%s%s", LAYOUT_WH_PREFIX, LAYOUT_WH_HASHED, hex) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int layout_has_whiteout(int dirfd, const char *name)
{
	char wh[NAME_MAX + 1];
	struct stat st;
	if (layout_whiteout_name(name, wh, sizeof(wh)) < 0)
		return 0; /* a name too long for a whiteout was never whited out */
	if (fstatat(dirfd, wh, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
}

/* Create the whiteout for @name in @dirfd with @mode, its name written to
 * @wh: its descriptor (write-only), or -EEXIST when there is one already, or
 * another -errno. */
static int whiteout_create(int dirfd, const char *name, mode_t mode, char wh[NAME_MAX + 1])
{
	int r = layout_whiteout_name(name, wh, NAME_MAX + 1);
	if (r < 0)
		return r;
	int fd = openat(dirfd, wh, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

int layout_make_whiteout(int dirfd, const char *name)
{
	char wh[NAME_MAX + 1];
	/* Mode 0: reopening an existing whiteout for writing would fail with
	 * EACCES for anyone but root, so an existing one is simply kept. */
	int fd = whiteout_create(dirfd, name, 0, wh);
	if (fd < 0)
		return fd == -EEXIST ? 0 : fd;
	close(fd);
	return 0;
}

int layout_make_whiteout_origin(int dirfd, const char *name, const struct layout_origin *o)
{
	char wh[NAME_MAX + 1];
	/* Writable while the xattr is set, then 0400: only the xattr is ever
	 * read back. */
	int fd = whiteout_create(dirfd, name, 0600, wh);
	if (fd < 0)
		return fd == -EEXIST ? 0 : fd;
	int r = layout_set_origin(fd, o);
	if (fchmod(fd, 0400) < 0 && r == 0)
		r = -errno;
	close(fd);
	if (r < 0) {
		/* Better a plain whiteout than none: the deletion must stand. */
		unlinkat(dirfd, wh, 0);
		return layout_make_whiteout(dirfd, name);
	}
	return 0;
}

int layout_whiteout_origin(int dirfd, const char *name, struct layout_origin *o)
{
	char wh[NAME_MAX + 1];
	if (layout_whiteout_name(name, wh, sizeof(wh)) < 0)
		return 0;
	int fd = openat(dirfd, wh, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return 0; /* none, or a plain whiteout (mode 0) */
	int r = layout_get_origin(fd, o);
	close(fd);
	return r == 1 ? 1 : 0;
}

int layout_remove_whiteout(int dirfd, const char *name)
{
	char wh[NAME_MAX + 1];
	if (layout_whiteout_name(name, wh, sizeof(wh)) < 0)
		return 0;
	if (unlinkat(dirfd, wh, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int layout_is_opaque(int fd)
{
	char v[2];
	ssize_t n = fgetxattr(fd, LAYOUT_XATTR_OPAQUE, v, sizeof(v));
	if (n > 0)
		return v[0] == 'y';
	return errno == ENODATA || errno == ENOTSUP ? 0 : -errno;
}

int layout_set_opaque(int fd)
{
	return fsetxattr(fd, LAYOUT_XATTR_OPAQUE, "y", 1, 0) < 0 ? -errno : 0;
}

int layout_get_redirect(int fd, char *buf, size_t len)
{
	ssize_t n = fgetxattr(fd, LAYOUT_XATTR_REDIRECT, buf, len - 1);
	if (n < 0)
		return errno == ENODATA || errno == ENOTSUP ? 0 : -errno;
	buf[n] = 0;
	return (int)n;
}

int layout_set_redirect(int fd, const char *lower_path)
{
	if (fsetxattr(fd, LAYOUT_XATTR_REDIRECT, lower_path, strlen(lower_path), 0) < 0)
		return -errno;
	return 0;
}

int layout_get_origin(int fd, struct layout_origin *o)
{
	char buf[PATH_MAX + 128];
	ssize_t n = fgetxattr(fd, LAYOUT_XATTR_ORIGIN, buf, sizeof(buf) - 1);
	if (n < 0)
		return errno == ENODATA || errno == ENOTSUP ? 0 : -errno;
	return layout_parse_origin(buf, (size_t)n, o);
}

/* /proc/self/fd/DIRFD/NAME: @name in directory @dirfd (an O_PATH one too),
 * for the l*xattr calls, which do not follow a final symlink (proc(5)). */
static int at_path(char *buf, size_t len, int dirfd, const char *name)
{
	int n = snprintf(buf, len, "/proc/self/fd/%d/%s", dirfd, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int layout_get_origin_at(int dirfd, const char *name, struct layout_origin *o)
{
	char p[64 + NAME_MAX], buf[PATH_MAX + 128];
	if (at_path(p, sizeof(p), dirfd, name) < 0)
		return -ENAMETOOLONG;
	ssize_t n = lgetxattr(p, LAYOUT_XATTR_ORIGIN, buf, sizeof(buf) - 1);
	if (n < 0)
		return errno == ENODATA || errno == ENOTSUP ? 0 : -errno;
	return layout_parse_origin(buf, (size_t)n, o);
}

/* The xattr value of @o in @buf (version 2, layout.h): its length, or
 * -ENAMETOOLONG. */
static int origin_value(const struct layout_origin *o, char *buf, size_t len)
{
	size_t pl = strlen(o->path);
	if (LAYOUT_ORIGIN_V2_HEAD + pl > len)
		return -ENAMETOOLONG;
	buf[0] = LAYOUT_ORIGIN_V2;
	for (int i = 0; i < 8; i++)
		buf[1 + i] = (char)(o->ino >> (8 * i));
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, o->hash);
	memcpy(buf + 9, c.digest, sizeof(c.digest));
	memcpy(buf + LAYOUT_ORIGIN_V2_HEAD, o->path, pl);
	return (int)(LAYOUT_ORIGIN_V2_HEAD + pl);
}

int layout_set_origin_at(int dirfd, const char *name, const struct layout_origin *o)
{
	char p[64 + NAME_MAX], buf[PATH_MAX + 128];
	int n = origin_value(o, buf, sizeof(buf));
	if (n < 0 || at_path(p, sizeof(p), dirfd, name) < 0)
		return -ENAMETOOLONG;
	return lsetxattr(p, LAYOUT_XATTR_ORIGIN, buf, (size_t)n, 0) < 0 ? -errno : 0;
}

int layout_parse_origin(char *buf, size_t n, struct layout_origin *o)
{
	buf[n] = 0;
	if (n >= LAYOUT_ORIGIN_V2_HEAD && buf[0] == LAYOUT_ORIGIN_V2) {
		size_t pl = n - LAYOUT_ORIGIN_V2_HEAD;
		if (pl >= sizeof(o->path) || memchr(buf + LAYOUT_ORIGIN_V2_HEAD, 0, pl))
			return -EINVAL;
		o->ino = 0;
		for (int i = 0; i < 8; i++)
			o->ino |= (uint64_t)(unsigned char)buf[1 + i] << (8 * i);
		XXH128_canonical_t c;
		memcpy(c.digest, buf + 9, sizeof(c.digest));
		o->hash = XXH128_hashFromCanonical(&c);
		memcpy(o->path, buf + LAYOUT_ORIGIN_V2_HEAD, pl);
		o->path[pl] = 0;
		return 1;
	}
	char hex[33];
	int off = 0;
	/* One space before the path, which may begin with more. */
	if (sscanf(buf, "v1 %" SCNu64 " %32s%n", &o->ino, hex, &off) != 2 || off <= 0 ||
	    buf[off] != ' ')
		return -EINVAL;
	off++;
	if (layout_hash_parse(hex, &o->hash) < 0)
		return -EINVAL;
	size_t plen = n - (size_t)off;
	if (plen >= sizeof(o->path))
		return -EINVAL;
	memcpy(o->path, buf + off, plen);
	o->path[plen] = 0;
	return 1;
}

int layout_set_origin(int fd, const struct layout_origin *o)
{
	char buf[PATH_MAX + 128];
	int n = origin_value(o, buf, sizeof(buf));
	if (n < 0)
		return n;
	return fsetxattr(fd, LAYOUT_XATTR_ORIGIN, buf, (size_t)n, 0) < 0 ? -errno : 0;
}

void layout_hash_zeros(XXH3_state_t *st, off_t len)
{
	static const char zeros[65536];
	while (len > 0) {
		size_t n = len > (off_t)sizeof(zeros) ? sizeof(zeros) : (size_t)len;
		XXH3_128bits_update(st, zeros, n);
		len -= (off_t)n;
	}
}

/* Hash [off, end) of @fd into @st by pread, end < 0 meaning to end of file.
 * Returns the offset reached (end, or the file's end if it came first) or
 * -errno. */
static off_t hash_range(int fd, XXH3_state_t *st, char *buf, size_t cap, off_t off, off_t end)
{
	while (end < 0 || off < end) {
		size_t want = end < 0 || (off_t)cap < end - off ? cap : (size_t)(end - off);
		ssize_t n = pread(fd, buf, want, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		XXH3_128bits_update(st, buf, (size_t)n);
		off += n;
	}
	return off;
}

int layout_hash_fd(int fd, XXH128_hash_t *out)
{
	/* On the stack: a heap buffer this size came back from malloc as
	 * fresh pages (one fault each) on many calls. */
	char buf[64 * 1024];
	const size_t cap = sizeof(buf);
	/* Most files are smaller than the buffer: one pread(2), whose short
	 * count is the end of a regular file, and a one-shot hash (xxhash
	 * gives the streaming and one-shot forms the same result). */
	ssize_t n;
	do
		n = pread(fd, buf, cap, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if ((size_t)n < cap) {
		*out = XXH3_128bits(buf, (size_t)n);
		return 0;
	}
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_128bits_reset(st);
	XXH3_128bits_update(st, buf, (size_t)n);
	/* The rest: holes are hashed as the zeros they read as, without
	 * reading them (lseek(2) SEEK_DATA/SEEK_HOLE): a sparse 4 GiB file
	 * costs its data, not 4 GiB of zero-filled pages.  Where the
	 * filesystem cannot say (EINVAL), everything is read. */
	off_t off = n, r = 0;
	for (;;) {
		off_t data = lseek(fd, off, SEEK_DATA);
		if (data < 0 && errno == ENXIO) {
			/* Only a hole remains up to the end (or off is past it). */
			struct stat st_;
			if (fstat(fd, &st_) < 0) {
				r = -errno;
				break;
			}
			if (st_.st_size > off)
				layout_hash_zeros(st, st_.st_size - off);
			break;
		}
		if (data < 0) {
			r = hash_range(fd, st, buf, cap, off, -1);
			break;
		}
		if (data > off)
			layout_hash_zeros(st, data - off);
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0) {
			r = hash_range(fd, st, buf, cap, data, -1);
			break;
		}
		r = hash_range(fd, st, buf, cap, data, hole);
		if (r < 0 || r < hole)
			break; /* an error, or the end of the file came first */
		off = hole;
	}
	if (r >= 0)
		*out = XXH3_128bits_digest(st);
	XXH3_freeState(st);
	return r < 0 ? (int)r : 0;
}

void layout_hash_hex(XXH128_hash_t h, char out[33])
{
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, h.high64, h.low64);
}

int layout_hash_parse(const char *hex, XXH128_hash_t *out)
{
	if (strlen(hex) != 32)
		return -EINVAL;
	char hi[17], lo[17];
	memcpy(hi, hex, 16);
	hi[16] = 0;
	memcpy(lo, hex + 16, 16);
	lo[16] = 0;
	char *e1, *e2;
	out->high64 = strtoull(hi, &e1, 16);
	out->low64 = strtoull(lo, &e2, 16);
	return *e1 || *e2 ? -EINVAL : 0;
}
