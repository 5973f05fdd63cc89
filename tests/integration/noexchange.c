/*
 * noexchange.c - an LD_PRELOAD shim for the daemon under test: renameat2(2)
 * with RENAME_EXCHANGE fails with EINVAL, as on a file system that does not
 * support the flag (rename(2), "EINVAL ... not supported by the filesystem").
 * Every other call goes to the C library.  posix.sh mounts a workspace with it
 * to show that a rename over a file of the upper still works there.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
	      unsigned int flags)
{
	static int (*real)(int, const char *, int, const char *, unsigned int);
	if (flags & RENAME_EXCHANGE) {
		errno = EINVAL;
		return -1;
	}
	if (!real)
		real = (int (*)(int, const char *, int, const char *, unsigned int))dlsym(
		    RTLD_NEXT, "renameat2");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	return real(olddirfd, oldpath, newdirfd, newpath, flags);
}
