/*
 * benchops.c - the file-system operations of tests/bench/bench.sh that a shell
 * loop would measure badly (a fork per file costs more than the operation).
 *
 *   benchops saves N FILE...        N editor-style saves, round-robin over FILEs:
 *                                   write FILE.benchtmp (4 KiB), close, rename
 *                                   it onto FILE
 *   benchops creates DIR N SIZE     create N files of SIZE bytes in DIR (closed
 *                                   after each write), then unlink them all
 *   benchops seqwrite FILE MIB      write MIB MiB in 1 MiB blocks, fsync, close
 *   benchops seqread FILE           read FILE to the end in 1 MiB blocks
 *   benchops gentree DIR N          create N small files under DIR, 100 a
 *                                   directory (DIR/dNNN/fNNN)
 *
 * Prints nothing on success (the caller times the whole process); on failure
 * one line "benchops: OP: PATH: strerror" and exit status 1.  Built by bench.sh
 * with the system compiler; not part of the meson build.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK (1024 * 1024)

static int fail(const char *op, const char *path)
{
	fprintf(stderr, "benchops: %s: %s: %s\n", op, path, strerror(errno));
	return 1;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int op_saves(long n, int nfiles, char **files)
{
	static char buf[4096];
	char tmp[4096];

	for (long i = 0; i < n; i++) {
		const char *f = files[i % nfiles];
		memset(buf, 'a' + (int)(i % 26), sizeof(buf));
		if (snprintf(tmp, sizeof(tmp), "%s.benchtmp", f) >= (int)sizeof(tmp)) {
			errno = ENAMETOOLONG;
			return fail("saves", f);
		}
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return fail("saves: open", tmp);
		if (write_all(fd, buf, sizeof(buf)) < 0 || close(fd) < 0)
			return fail("saves: write", tmp);
		if (rename(tmp, f) < 0)
			return fail("saves: rename", f);
	}
	return 0;
}

static int op_creates(const char *dir, long n, long size)
{
	char path[4096];
	char *buf = calloc(1, (size_t)size + 1);

	if (!buf)
		return fail("creates", dir);
	memset(buf, 'x', (size_t)size);
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/c%06ld", dir, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return fail("creates: open", path);
		if (write_all(fd, buf, (size_t)size) < 0 || close(fd) < 0)
			return fail("creates: write", path);
	}
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/c%06ld", dir, i);
		if (unlink(path) < 0)
			return fail("creates: unlink", path);
	}
	free(buf);
	return 0;
}

static int op_seqwrite(const char *file, long mib)
{
	char *buf = malloc(BLOCK);

	if (!buf)
		return fail("seqwrite", file);
	for (size_t i = 0; i < BLOCK; i++)
		buf[i] = (char)(i * 131 + 7);
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail("seqwrite: open", file);
	for (long i = 0; i < mib; i++) {
		buf[0] = (char)i;
		if (write_all(fd, buf, BLOCK) < 0)
			return fail("seqwrite: write", file);
	}
	if (fsync(fd) < 0)
		return fail("seqwrite: fsync", file);
	if (close(fd) < 0)
		return fail("seqwrite: close", file);
	free(buf);
	return 0;
}

static int op_seqread(const char *file)
{
	char *buf = malloc(BLOCK);
	long long total = 0;

	if (!buf)
		return fail("seqread", file);
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail("seqread: open", file);
	for (;;) {
		ssize_t r = read(fd, buf, BLOCK);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return fail("seqread: read", file);
		}
		if (r == 0)
			break;
		total += r;
	}
	close(fd);
	free(buf);
	if (total == 0) {
		errno = ENODATA;
		return fail("seqread: empty", file);
	}
	return 0;
}

static int op_gentree(const char *dir, long n)
{
	char path[4096];
	char line[64];

	for (long i = 0; i < n; i++) {
		if (i % 100 == 0) {
			snprintf(path, sizeof(path), "%s/d%03ld", dir, i / 100);
			if (mkdir(path, 0755) < 0 && errno != EEXIST)
				return fail("gentree: mkdir", path);
		}
		snprintf(path, sizeof(path), "%s/d%03ld/f%03ld", dir, i / 100, i % 100);
		int len = snprintf(line, sizeof(line), "generated file %ld\n", i);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return fail("gentree: open", path);
		if (write_all(fd, line, (size_t)len) < 0 || close(fd) < 0)
			return fail("gentree: write", path);
	}
	return 0;
}

static long num(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v <= 0) {
		fprintf(stderr, "benchops: not a positive number: %s\n", s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "saves") == 0)
		return op_saves(num(argv[2]), argc - 3, argv + 3);
	if (argc == 5 && strcmp(argv[1], "creates") == 0)
		return op_creates(argv[2], num(argv[3]), num(argv[4]));
	if (argc == 4 && strcmp(argv[1], "seqwrite") == 0)
		return op_seqwrite(argv[2], num(argv[3]));
	if (argc == 3 && strcmp(argv[1], "seqread") == 0)
		return op_seqread(argv[2]);
	if (argc == 4 && strcmp(argv[1], "gentree") == 0)
		return op_gentree(argv[2], num(argv[3]));
	fprintf(stderr, "usage: benchops saves N FILE... | creates DIR N SIZE | seqwrite FILE MIB"
			" | seqread FILE | gentree DIR N\n");
	return 2;
}
