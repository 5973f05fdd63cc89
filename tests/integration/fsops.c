/*
 * fsops.c - single system calls for the integration tests, where the shell has
 * no command that makes exactly that call (renameat2 flags, mmap, xattrs, ...).
 *
 *   fsops OP ARGS...
 *
 * Prints "OK" (plus the op's output, if any) and exits 0 when the call
 * succeeded, or prints the errno's name (e.g. "ENOENT") and exits 1.  Usage
 * errors exit 2.  Offsets and lengths are decimal bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

static int fail(void)
{
	const char *name = strerrorname_np(errno);
	printf("%s\n", name ? name : "EUNKNOWN");
	return 1;
}

static int ok(void)
{
	printf("OK\n");
	return 0;
}

static long long num(const char *s)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < 0) {
		fprintf(stderr, "fsops: not a byte count: %s\n", s);
		exit(2);
	}
	return v;
}

static int op_rename(char **a, unsigned flags)
{
	if (renameat2(AT_FDCWD, a[0], AT_FDCWD, a[1], flags) < 0)
		return fail();
	return ok();
}

static int op_rename_noreplace(char **a)
{
	return op_rename(a, RENAME_NOREPLACE);
}

static int op_rename_exchange(char **a)
{
	return op_rename(a, RENAME_EXCHANGE);
}

/* Write a[2] at offset a[1] of a[0] through a shared writable mapping, then msync. */
static int op_mmap_write(char **a)
{
	long long off = num(a[1]);
	size_t len = strlen(a[2]);
	int fd = open(a[0], O_RDWR);
	if (fd < 0)
		return fail();
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < off + (long long)len) {
		if (errno == 0)
			errno = EINVAL;
		return fail();
	}
	char *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return fail();
	memcpy(p + off, a[2], len);
	if (msync(p, (size_t)st.st_size, MS_SYNC) < 0)
		return fail();
	if (munmap(p, (size_t)st.st_size) < 0 || close(fd) < 0)
		return fail();
	return ok();
}

/* Read a[0] through a shared read-only mapping and print it. */
static int op_mmap_read(char **a)
{
	int fd = open(a[0], O_RDONLY);
	if (fd < 0)
		return fail();
	struct stat st;
	if (fstat(fd, &st) < 0)
		return fail();
	if (st.st_size == 0)
		return ok();
	char *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return fail();
	printf("OK\n");
	fwrite(p, 1, (size_t)st.st_size, stdout);
	munmap(p, (size_t)st.st_size);
	close(fd);
	return 0;
}

/* Open a[0] with O_APPEND after seeking to 0 and write a[1]: must land at the end. */
static int op_append(char **a)
{
	int fd = open(a[0], O_WRONLY | O_APPEND);
	if (fd < 0)
		return fail();
	if (lseek(fd, 0, SEEK_SET) < 0)
		return fail();
	size_t len = strlen(a[1]);
	if (write(fd, a[1], len) != (ssize_t)len)
		return fail();
	if (close(fd) < 0)
		return fail();
	return ok();
}

/* pwrite a[2] at offset a[1] of a[0] (created if missing, mode 0644). */
static int op_pwrite(char **a)
{
	long long off = num(a[1]);
	int fd = open(a[0], O_WRONLY | O_CREAT, 0644);
	if (fd < 0)
		return fail();
	size_t len = strlen(a[2]);
	if (pwrite(fd, a[2], len, (off_t)off) != (ssize_t)len)
		return fail();
	if (close(fd) < 0)
		return fail();
	return ok();
}

/* Print a[2] bytes of a[0] from offset a[1]. */
static int op_pread(char **a)
{
	long long off = num(a[1]);
	long long len = num(a[2]);
	char *buf = malloc((size_t)len + 1);
	if (!buf)
		return fail();
	int fd = open(a[0], O_RDONLY);
	if (fd < 0)
		return fail();
	ssize_t n = pread(fd, buf, (size_t)len, (off_t)off);
	if (n < 0)
		return fail();
	close(fd);
	printf("OK\n");
	fwrite(buf, 1, (size_t)n, stdout);
	free(buf);
	return 0;
}

/* Create a[0] with O_CREAT|O_EXCL. */
static int op_create_excl(char **a)
{
	int fd = open(a[0], O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		return fail();
	close(fd);
	return ok();
}

/* Write a[1] to a[0] (truncating), fsync and fdatasync before close. */
static int op_fsync(char **a)
{
	int fd = open(a[0], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return fail();
	size_t len = strlen(a[1]);
	if (write(fd, a[1], len) != (ssize_t)len)
		return fail();
	if (fsync(fd) < 0 || fdatasync(fd) < 0)
		return fail();
	if (close(fd) < 0)
		return fail();
	int dfd = open(".", O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		/* fsync of a directory must not fail either */
		if (fsync(dfd) < 0)
			return fail();
		close(dfd);
	}
	return ok();
}

/* Write a[1] to a[0] (truncating), fsync, write a[2] after it, close. */
static int op_fsync_between(char **a)
{
	int fd = open(a[0], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return fail();
	size_t l1 = strlen(a[1]), l2 = strlen(a[2]);
	if (write(fd, a[1], l1) != (ssize_t)l1 || fsync(fd) < 0 ||
	    write(fd, a[2], l2) != (ssize_t)l2)
		return fail();
	if (close(fd) < 0)
		return fail();
	return ok();
}

static int op_statfs(char **a)
{
	struct statfs s;
	if (statfs(a[0], &s) < 0)
		return fail();
	printf("OK\nbsize=%lld blocks=%llu bfree=%llu bavail=%llu files=%llu namelen=%lld\n",
	       (long long)s.f_bsize, (unsigned long long)s.f_blocks, (unsigned long long)s.f_bfree,
	       (unsigned long long)s.f_bavail, (unsigned long long)s.f_files,
	       (long long)s.f_namelen);
	return 0;
}

/* Open a[0] read-write, unlink it, then write and read through the open fd.
 * A failure names the step: "pwrite ENOENT". */
static int op_unlink_open(char **a)
{
	const char *step = "open";
	int fd = open(a[0], O_RDWR);
	if (fd < 0)
		goto err;
	step = "unlink";
	if (unlink(a[0]) < 0)
		goto err;
	const char msg[] = "written-after-unlink";
	step = "pwrite";
	if (pwrite(fd, msg, sizeof(msg) - 1, 0) != (ssize_t)(sizeof(msg) - 1))
		goto err;
	char buf[64] = {0};
	step = "pread";
	if (pread(fd, buf, sizeof(msg) - 1, 0) < 0)
		goto err;
	struct stat st;
	step = "fstat";
	if (fstat(fd, &st) < 0)
		goto err;
	int gone = access(a[0], F_OK) < 0 && errno == ENOENT;
	step = "close";
	if (close(fd) < 0)
		goto err;
	printf("OK\nnlink=%lu read=%s gone=%d\n", (unsigned long)st.st_nlink, buf, gone);
	return 0;
err:
	printf("%s ", step);
	return fail();
}

/*
 * The xattrs of a file unlinked while open belong to it, not to a new file
 * made at its name: open a[0] (O_RDWR when a[1] is "rw", else O_RDONLY),
 * unlink it, create a new file at the name with user.k=new, then
 * fsetxattr(fd, user.k, "old"), fgetxattr, flistxattr and fremovexattr
 * through the old descriptor, and getxattr of the name after each.
 * Prints "OK" and "fd=... name=... list=... removed=... name=..." or the
 * failing step and errno.
 */
static int op_unlink_xattr(char **a)
{
	const char *step = "open";
	char fdval[64] = "", name1[64] = "", name2[64] = "", list[256] = "", gone[16];
	int fd = open(a[0], strcmp(a[1], "rw") == 0 ? O_RDWR : O_RDONLY);
	if (fd < 0)
		goto err;
	step = "unlink";
	if (unlink(a[0]) < 0)
		goto err;
	step = "create";
	int nfd = open(a[0], O_CREAT | O_EXCL | O_WRONLY, 0644);
	if (nfd < 0 || close(nfd) < 0)
		goto err;
	step = "setxattr-name";
	if (setxattr(a[0], "user.k", "new", 3, 0) < 0)
		goto err;
	step = "fsetxattr";
	if (fsetxattr(fd, "user.k", "old", 3, 0) < 0)
		goto err;
	step = "fgetxattr";
	ssize_t n = fgetxattr(fd, "user.k", fdval, sizeof(fdval) - 1);
	if (n < 0)
		goto err;
	fdval[n] = 0;
	step = "getxattr-name";
	if ((n = getxattr(a[0], "user.k", name1, sizeof(name1) - 1)) < 0)
		goto err;
	name1[n] = 0;
	step = "flistxattr";
	if ((n = flistxattr(fd, list, sizeof(list) - 1)) < 0)
		goto err;
	list[n] = 0;
	for (ssize_t i = 0; i + 1 < n; i++)
		if (!list[i])
			list[i] = ','; /* names joined */
	step = "fremovexattr";
	if (fremovexattr(fd, "user.k") < 0)
		goto err;
	int removed = fgetxattr(fd, "user.k", gone, sizeof(gone)) < 0 && errno == ENODATA;
	step = "getxattr-name-2";
	if ((n = getxattr(a[0], "user.k", name2, sizeof(name2) - 1)) < 0)
		goto err;
	name2[n] = 0;
	close(fd);
	printf("OK\nfd=%s name=%s list=%s removed=%d name=%s\n", fdval, name1, list, removed,
	       name2);
	return 0;
err:
	printf("%s ", step);
	return fail();
}

static int op_setxattr(char **a)
{
	if (setxattr(a[0], a[1], a[2], strlen(a[2]), 0) < 0)
		return fail();
	return ok();
}

static int op_getxattr(char **a)
{
	char buf[4096];
	ssize_t n = getxattr(a[0], a[1], buf, sizeof(buf) - 1);
	if (n < 0)
		return fail();
	buf[n] = 0;
	printf("OK\n%s\n", buf);
	return 0;
}

static int op_removexattr(char **a)
{
	if (removexattr(a[0], a[1]) < 0)
		return fail();
	return ok();
}

/* Print the names listxattr returns, one per line (unsorted, as the fs gives them). */
static int op_listxattr(char **a)
{
	char buf[65536];
	ssize_t n = llistxattr(a[0], buf, sizeof(buf));
	if (n < 0)
		return fail();
	printf("OK\n");
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
		printf("%s\n", buf + i);
	return 0;
}

/*
 * Try every operation that names @path as an existing entry and print
 * "op=RESULT" for each.  For a hidden path every one must be ENOENT.  @spare is
 * a free name in a visible directory, the destination of rename and link.
 */
static int op_probe(char **a)
{
	const char *p = a[0], *spare = a[1];
	struct stat st;
	char buf[256];
	int fd;

#define REPORT(name, expr)                                                                         \
	do {                                                                                       \
		errno = 0;                                                                         \
		int r_ = (expr) < 0;                                                               \
		printf("%s=%s\n", name, r_ ? strerrorname_np(errno) : "OK");                       \
	} while (0)

	REPORT("lstat", lstat(p, &st));
	REPORT("stat", stat(p, &st));
	REPORT("access", access(p, F_OK));
	REPORT("readlink", readlink(p, buf, sizeof(buf)));
	errno = 0;
	fd = open(p, O_RDONLY | O_NOFOLLOW);
	printf("open_rdonly=%s\n", fd < 0 ? strerrorname_np(errno) : "OK");
	if (fd >= 0)
		close(fd);
	errno = 0;
	fd = open(p, O_RDONLY | O_DIRECTORY);
	printf("opendir=%s\n", fd < 0 ? strerrorname_np(errno) : "OK");
	if (fd >= 0)
		close(fd);
	errno = 0;
	fd = open(p, O_WRONLY | O_NOFOLLOW);
	printf("open_wronly=%s\n", fd < 0 ? strerrorname_np(errno) : "OK");
	if (fd >= 0)
		close(fd);
	REPORT("getxattr", getxattr(p, "user.x", buf, sizeof(buf)));
	REPORT("listxattr", llistxattr(p, buf, sizeof(buf)));
	REPORT("setxattr", lsetxattr(p, "user.x", "1", 1, 0));
	REPORT("removexattr", lremovexattr(p, "user.x"));
	REPORT("chmod", fchmodat(AT_FDCWD, p, 0644, 0));
	REPORT("utimens", utimensat(AT_FDCWD, p, NULL, AT_SYMLINK_NOFOLLOW));
	REPORT("truncate", truncate(p, 0));
	REPORT("link", link(p, spare));
	REPORT("rename", rename(p, spare));
	REPORT("unlink", unlink(p));
	REPORT("rmdir", rmdir(p));
#undef REPORT
	return 0;
}

/* cachestat(2) (Linux 6.5): the page cache state of all of FILE, printed as
 * "cache=N dirty=N writeback=N" in pages.  No glibc wrapper in Debian 12. */
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
static int op_cachestat(char **a)
{
	struct {
		uint64_t off, len;
	} range = {0, 0}; /* len 0: to the end of the file */
	struct {
		uint64_t cache, dirty, writeback, evicted, recently_evicted;
	} cs;
	int fd = open(a[0], O_RDONLY);
	if (fd < 0)
		return fail();
	long r = syscall(SYS_cachestat, fd, &range, &cs, 0);
	int err = errno;
	close(fd);
	errno = err;
	if (r < 0)
		return fail();
	printf("OK\ncache=%llu dirty=%llu writeback=%llu\n", (unsigned long long)cs.cache,
	       (unsigned long long)cs.dirty, (unsigned long long)cs.writeback);
	return 0;
}

struct op {
	const char *name;
	int nargs;
	int (*fn)(char **args);
	const char *usage;
};

static const struct op ops[] = {
    {"rename-noreplace", 2, op_rename_noreplace, "OLD NEW"},
    {"rename-exchange", 2, op_rename_exchange, "A B"},
    {"mmap-write", 3, op_mmap_write, "FILE OFFSET STRING"},
    {"mmap-read", 1, op_mmap_read, "FILE"},
    {"append", 2, op_append, "FILE STRING"},
    {"pwrite", 3, op_pwrite, "FILE OFFSET STRING"},
    {"pread", 3, op_pread, "FILE OFFSET LENGTH"},
    {"create-excl", 1, op_create_excl, "FILE"},
    {"fsync", 2, op_fsync, "FILE STRING"},
    {"fsync-between", 3, op_fsync_between, "FILE STRING STRING"},
    {"statfs", 1, op_statfs, "PATH"},
    {"unlink-open", 1, op_unlink_open, "FILE"},
    {"unlink-xattr", 2, op_unlink_xattr, "FILE rw|ro"},
    {"setxattr", 3, op_setxattr, "PATH NAME VALUE"},
    {"getxattr", 2, op_getxattr, "PATH NAME"},
    {"removexattr", 2, op_removexattr, "PATH NAME"},
    {"listxattr", 1, op_listxattr, "PATH"},
    {"probe", 2, op_probe, "PATH SPARE"},
    {"cachestat", 1, op_cachestat, "FILE"},
};

int main(int argc, char **argv)
{
	if (argc >= 2) {
		for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
			if (strcmp(argv[1], ops[i].name) != 0)
				continue;
			if (argc - 2 != ops[i].nargs) {
				fprintf(stderr, "usage: fsops %s %s\n", ops[i].name, ops[i].usage);
				return 2;
			}
			int r = ops[i].fn(argv + 2);
			fflush(stdout);
			return r;
		}
	}
	fprintf(stderr, "usage: fsops OP ARGS...\nops:");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		fprintf(stderr, " %s", ops[i].name);
	fputc('\n', stderr);
	return 2;
}
