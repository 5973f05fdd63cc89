/* cmd_rm.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_rm_usage[] = "usage: agentfs rm ...\n";

int cmd_rm(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("rm", "not implemented yet");
	return 1;
}
