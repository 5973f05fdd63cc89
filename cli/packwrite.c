/* packwrite.c - blobs in memory as one stored git pack (packwrite.h). */
#include <errno.h>
#include <git2.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "cli/packwrite.h"

struct stream {
	git_indexer *idx;
	git_indexer_progress stats;
	EVP_MD_CTX *sha1; /* of everything before the trailer */
	int (*cancel)(void *arg);
	void *arg;
	bool canceled;
};

/* libgit2's progress callback: non-zero stops the indexer. */
static int progress(const git_indexer_progress *stats, void *payload)
{
	struct stream *s = payload;
	(void)stats;
	if (s->cancel && s->cancel(s->arg))
		s->canceled = true;
	return s->canceled ? -1 : 0;
}

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

/* What a failed libgit2 call of the write left (packwrite_errno). */
static int failed(const struct stream *s)
{
	return s->canceled ? -ECANCELED : packwrite_errno(errno);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Hash @len bytes at @p into the trailer's SHA-1 and give them to the indexer. */
static int feed(struct stream *s, const void *p, size_t len)
{
	if (EVP_DigestUpdate(s->sha1, p, len) != 1)
		return -ENOMEM;
	errno = 0;
	return git_indexer_append(s->idx, p, len, &s->stats) < 0 ? failed(s) : 0;
}

int packwrite_blobs(const char *pack_dir, const struct packwrite_blob *blobs, size_t n,
		    int (*cancel)(void *arg), void *arg, char name[41])
{
	if (n == 0 || n > UINT32_MAX)
		return -EINVAL;
	struct stream s = {.cancel = cancel, .arg = arg};
	git_indexer_options opts;
	git_indexer_options_init(&opts, GIT_INDEXER_OPTIONS_VERSION);
	opts.progress_cb = progress;
	opts.progress_cb_payload = &s;
	unsigned char *z = NULL;
	size_t zcap = 0;
	int r = (s.sha1 = EVP_MD_CTX_new()) && EVP_DigestInit_ex(s.sha1, EVP_sha1(), NULL) == 1
		    ? 0
		    : -ENOMEM;
	errno = 0;
	if (r == 0 && git_indexer_new(&s.idx, pack_dir, 0, NULL, &opts) < 0)
		r = failed(&s);
	/* The header: signature, version 2, the number of objects, big-endian. */
	unsigned char head[12] = {'P', 'A', 'C', 'K'};
	put_be32(head + 4, 2);
	put_be32(head + 8, (uint32_t)n);
	if (r == 0)
		r = feed(&s, head, sizeof(head));
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (cancel && cancel(arg)) {
			r = -ECANCELED;
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
				r = -ENOMEM;
				break;
			}
			z = nz;
			zcap = zlen;
		}
		if (compress2(z, &zlen, blobs[i].data, blobs[i].len, Z_NO_COMPRESSION) != Z_OK) {
			r = -ENOMEM;
			break;
		}
		r = feed(&s, oh, k);
		if (r == 0)
			r = feed(&s, z, zlen);
	}
	unsigned char sum[EVP_MAX_MD_SIZE];
	unsigned int sumlen = 0;
	if (r == 0 && (EVP_DigestFinal_ex(s.sha1, sum, &sumlen) != 1 || sumlen != 20))
		r = -ENOMEM;
	errno = 0;
	if (r == 0 && (git_indexer_append(s.idx, sum, sumlen, &s.stats) < 0 ||
		       git_indexer_commit(s.idx, &s.stats) < 0))
		r = failed(&s);
	if (r == 0)
		snprintf(name, 41, "%s", git_indexer_name(s.idx));
	git_indexer_free(s.idx);
	EVP_MD_CTX_free(s.sha1);
	free(z);
	return r;
}
