/* cmd_unmount.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_unmount_usage[] = "usage: agentfs unmount ...\n";

int cmd_unmount(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("unmount", "not implemented yet");
	return 1;
}
