/* fs.c - placeholder until the daemon lands. */
#include <errno.h>
#include "fs/fs.h"

int fs_serve(const struct fs_config *cfg)
{
	(void)cfg;
	return -ENOSYS;
}
