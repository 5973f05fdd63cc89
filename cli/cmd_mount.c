/* cmd_mount.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_mount_usage[] = "usage: agentfs mount ...\n";

int cmd_mount(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("mount", "not implemented yet");
	return 1;
}
