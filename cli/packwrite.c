/* packwrite.c - blobs in memory as one stored git pack (packwrite.h). */
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cli/packwrite.h"

#define ID_LEN PACKWRITE_ID_LEN

int packwrite_errno(int e)
{
	switch (e) {
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
	case EROFS:
	case EIO:
	case ENOMEM:
		return -e;
	default:
		return -EIO;
	}
}

int packwrite_blob_id(const void *data, size_t len, unsigned char id[PACKWRITE_ID_LEN])
{
	/* gitformat-pack(5), "Object names": the SHA-1 of "blob", a space,
	 * the size in decimal, a NUL, then the content. */
	char head[32];
	int hl = snprintf(head, sizeof(head), "blob %zu", len);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned int got = 0;
	int ok = c && EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 &&
		 EVP_DigestUpdate(c, head, (size_t)hl + 1) == 1 &&
		 EVP_DigestUpdate(c, data, len) == 1 && EVP_DigestFinal_ex(c, id, &got) == 1 &&
		 got == ID_LEN;
	EVP_MD_CTX_free(c);
	return ok ? 0 : -ENOMEM;
}

/* A file being written: its stream and the SHA-1 of everything put so far. */
struct out {
	FILE *f;
	EVP_MD_CTX *sha1;
	uint64_t pos; /* bytes put */
	int err;      /* the first failure, as a negative errno */
};

static void put(struct out *o, const void *p, size_t len)
{
	if (o->err)
		return;
	if (EVP_DigestUpdate(o->sha1, p, len) != 1)
		o->err = -ENOMEM;
	else if (len && fwrite(p, 1, len, o->f) != len)
		o->err = packwrite_errno(errno);
	o->pos += len;
}

static void put_be32(struct out *o, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};
	put(o, b, sizeof(b));
}

/* Open a new temporary file in @dir, its name in @path (PATH_MAX bytes). */
static int out_open(struct out *o, const char *dir, const char *stem, char *path)
{
	*o = (struct out){0};
	if (snprintf(path, PATH_MAX, "%s/%s_XXXXXX", dir, stem) >= PATH_MAX) {
		path[0] = 0;
		return -ENAMETOOLONG;
	}
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		path[0] = 0;
		return packwrite_errno(errno);
	}
	o->f = fdopen(fd, "wb");
	o->sha1 = EVP_MD_CTX_new();
	if (!o->f || !o->sha1 || EVP_DigestInit_ex(o->sha1, EVP_sha1(), NULL) != 1) {
		if (o->f)
			fclose(o->f);
		else
			close(fd);
		o->f = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Put the SHA-1 of everything so far (its copy in @sum, when not NULL),
 * make the file read-only as git's packs are, and close it.  Returns the
 * first failure of the file's writes, or 0. */
static int out_close(struct out *o, unsigned char *sum)
{
	unsigned char s[EVP_MAX_MD_SIZE];
	unsigned int got = 0;
	if (!o->err && (EVP_DigestFinal_ex(o->sha1, s, &got) != 1 || got != ID_LEN))
		o->err = -ENOMEM;
	if (!o->err && fwrite(s, 1, ID_LEN, o->f) != ID_LEN)
		o->err = packwrite_errno(errno);
	if (!o->err && sum)
		memcpy(sum, s, ID_LEN);
	if (!o->err && (fflush(o->f) != 0 || fchmod(fileno(o->f), 0444) != 0))
		o->err = packwrite_errno(errno);
	if (fclose(o->f) != 0 && !o->err)
		o->err = packwrite_errno(errno);
	o->f = NULL;
	EVP_MD_CTX_free(o->sha1);
	o->sha1 = NULL;
	return o->err;
}

/* An object's place in the pack, for the index. */
struct entry {
	unsigned char id[ID_LEN];
	uint64_t off;
	uint32_t crc; /* CRC-32 of its bytes in the pack, header included */
};

static int by_id(const void *a, const void *b)
{
	return memcmp(((const struct entry *)a)->id, ((const struct entry *)b)->id, ID_LEN);
}

/* The pack: gitformat-pack(5), "pack-*.pack files have the following
 * format". */
static int write_pack(struct out *o, const struct packwrite_blob *blobs, size_t n, struct entry *e,
		      int (*cancel)(void *arg), void *arg, unsigned char *sum)
{
	unsigned char *z = NULL;
	size_t zcap = 0;
	/* Signature, version 2, the number of objects, big-endian. */
	put(o, "PACK", 4);
	put_be32(o, 2);
	put_be32(o, (uint32_t)n);
	for (size_t i = 0; !o->err && i < n; i++) {
		if (cancel && cancel(arg)) {
			o->err = -ECANCELED;
			break;
		}
		/* Type 3 (blob) in bits 4-6 of the first byte with the size's
		 * low 4 bits, then 7 bits a byte; bit 7 says another follows. */
		unsigned char oh[16];
		size_t k = 0, sz = blobs[i].len;
		oh[k++] = (unsigned char)(GIT_OBJECT_BLOB << 4 | (sz & 15) | (sz > 15 ? 0x80 : 0));
		for (sz >>= 4; sz; sz >>= 7)
			oh[k++] = (unsigned char)((sz & 0x7f) | (sz > 0x7f ? 0x80 : 0));
		uLongf zlen = compressBound(blobs[i].len);
		if (zlen > zcap) {
			unsigned char *nz = realloc(z, zlen);
			if (!nz) {
				o->err = -ENOMEM;
				break;
			}
			z = nz;
			zcap = zlen;
		}
		if (compress2(z, &zlen, blobs[i].data, blobs[i].len, Z_NO_COMPRESSION) != Z_OK) {
			o->err = -ENOMEM;
			break;
		}
		memcpy(e[i].id, blobs[i].id, ID_LEN);
		e[i].off = o->pos;
		e[i].crc = (uint32_t)crc32_z(crc32_z(0, oh, k), z, zlen);
		put(o, oh, k);
		put(o, z, zlen);
	}
	free(z);
	return out_close(o, sum);
}

/* The index of @e[0..n), sorted by id, for the pack whose trailer is
 * @pack_sum: gitformat-pack(5), "Version 2 pack-*.idx files". */
static int write_index(struct out *o, const struct entry *e, size_t n,
		       const unsigned char *pack_sum)
{
	put(o, "\377tOc", 4);
	put_be32(o, 2);
	/* Fan-out: how many ids begin with a byte at most 0, 1, ... 255. */
	size_t k = 0;
	for (unsigned b = 0; b < 256; b++) {
		while (k < n && e[k].id[0] <= b)
			k++;
		put_be32(o, (uint32_t)k);
	}
	for (size_t i = 0; i < n; i++)
		put(o, e[i].id, ID_LEN);
	for (size_t i = 0; i < n; i++)
		put_be32(o, e[i].crc);
	/* Offsets of 2^31 and more go to a table of 8-byte ones, which the
	 * 4-byte entry indexes with its top bit set. */
	uint32_t large = 0;
	for (size_t i = 0; i < n; i++)
		put_be32(o, e[i].off < 0x80000000u ? (uint32_t)e[i].off : 0x80000000u | large++);
	for (size_t i = 0; i < n; i++) {
		if (e[i].off >= 0x80000000u) {
			put_be32(o, (uint32_t)(e[i].off >> 32));
			put_be32(o, (uint32_t)e[i].off);
		}
	}
	put(o, pack_sum, ID_LEN);
	return out_close(o, NULL);
}

/* Rename temporary file @tmp to pack-@hex.@ext in @dir; @tmp emptied once
 * renamed. */
static int publish(char *tmp, const char *dir, const char *hex, const char *ext)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/pack-%s.%s", dir, hex, ext);
	if (rename(tmp, path) != 0)
		return packwrite_errno(errno);
	tmp[0] = 0;
	return 0;
}

int packwrite_blobs(const char *pack_dir, const struct packwrite_blob *blobs, size_t n,
		    int (*cancel)(void *arg), void *arg, char name[41])
{
	if (n == 0 || n > UINT32_MAX)
		return -EINVAL;
	struct entry *e = malloc(n * sizeof(*e));
	char tpack[PATH_MAX] = "", tidx[PATH_MAX] = "";
	unsigned char sum[ID_LEN];
	struct out o;
	int r = e ? 0 : -ENOMEM;
	if (r == 0 && (r = out_open(&o, pack_dir, "tmp_pack", tpack)) == 0)
		r = write_pack(&o, blobs, n, e, cancel, arg, sum);
	if (r == 0) {
		qsort(e, n, sizeof(*e), by_id);
		for (size_t i = 1; r == 0 && i < n; i++)
			if (memcmp(e[i - 1].id, e[i].id, ID_LEN) == 0)
				r = -EINVAL; /* one object twice: the caller's mistake */
	}
	if (r == 0 && (r = out_open(&o, pack_dir, "tmp_idx", tidx)) == 0)
		r = write_index(&o, e, n, sum);
	/* Named for the pack's trailer, as git names them; the index last,
	 * since git finds a pack by its index. */
	char hex[2 * ID_LEN + 1] = "";
	for (size_t i = 0; r == 0 && i < ID_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", sum[i]);
	/* Should the index's fail, the pack stays without one, which git
	 * never reads (and the same name may be an earlier pack of the same
	 * objects, whose index is there). */
	if (r == 0)
		r = publish(tpack, pack_dir, hex, "pack");
	if (r == 0)
		r = publish(tidx, pack_dir, hex, "idx");
	if (tpack[0])
		unlink(tpack);
	if (tidx[0])
		unlink(tidx);
	if (r == 0)
		memcpy(name, hex, sizeof(hex));
	free(e);
	return r;
}
