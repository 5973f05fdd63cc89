/* cmd_log.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_log_usage[] = "usage: agentfs log ...\n";

int cmd_log(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("log", "not implemented yet");
	return 1;
}
