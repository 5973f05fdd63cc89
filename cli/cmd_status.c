/* cmd_status.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_status_usage[] = "usage: agentfs status ...\n";

int cmd_status(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("status", "not implemented yet");
	return 1;
}
