/*
 * chain.c - the hash chain linking records, and the head file anchoring its end.
 *
 * Each record's "prev" is journal_chain_hash() of the previous line.  This is
 * xxh3-128: it detects accidents and naive edits, not a forger who recomputes
 * the chain (xxh3 is not a MAC).  A keyed mode belongs here: a per-workspace
 * key kept outside the agent's reach, HMAC of the line, and a schema version
 * bump so readers know which function to apply.
 *
 * The chain alone cannot tell a journal whose last records were removed from
 * one that simply ended there, so the writer keeps "<journal>.head": the seq
 * and hash of the last record it made durable.  One fixed-length line,
 * rewritten in place with a single pwrite():
 *   "agentfs-journal-head v1 seq=%020llu hash=%32s size=%020llu\n"
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/layout.h"
#include "journal/internal.h"

const XXH128_hash_t journal_chain_genesis = {0, 0};

XXH128_hash_t journal_chain_hash(const char *line, size_t len)
{
	return XXH3_128bits(line, len);
}

char *journal_head_path(const char *journal_path)
{
	size_t n = strlen(journal_path);
	char *p = malloc(n + sizeof(".head"));
	if (!p)
		return NULL;
	memcpy(p, journal_path, n);
	memcpy(p + n, ".head", sizeof(".head"));
	return p;
}

#define HEAD_FMT "agentfs-journal-head v1 seq=%020" PRIu64 " hash=%s size=%020" PRIu64 "\n"

int journal_head_write_fd(int fd, const struct journal_head *h)
{
	char hex[33], line[128];
	layout_hash_hex(h->hash, hex);
	int n = snprintf(line, sizeof(line), HEAD_FMT, h->seq, hex, h->size);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -EOVERFLOW;
	ssize_t w = pwrite(fd, line, (size_t)n, 0);
	if (w < 0)
		return -errno;
	return w == n ? 0 : -EIO;
}

int journal_head_read(const char *head_path, struct journal_head *h)
{
	/* O_NONBLOCK: a FIFO planted as the head file must not hang the
	 * reader; it is no head file (-EBADMSG), nor is a symlink. */
	int fd = open(head_path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : errno == ELOOP ? -EBADMSG : -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EBADMSG;
	}
	char line[256];
	ssize_t n = pread(fd, line, sizeof(line) - 1, 0);
	int err = errno;
	close(fd);
	if (n < 0)
		return -err;
	if (n == 0)
		return 0; /* created, not yet written: as good as none */
	line[n] = 0;
	char hex[40];
	uint64_t seq, size;
	int used = 0;
	if (sscanf(line, "agentfs-journal-head v1 seq=%" SCNu64 " hash=%32s size=%" SCNu64 "\n%n",
		   &seq, hex, &size, &used) != 3 ||
	    used != n)
		return -EBADMSG;
	if (layout_hash_parse(hex, &h->hash) < 0)
		return -EBADMSG;
	h->seq = seq;
	h->size = size;
	return 1;
}
