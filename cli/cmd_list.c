/* cmd_list.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_list_usage[] = "usage: agentfs list ...\n";

int cmd_list(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("list", "not implemented yet");
	return 1;
}
