/* cmd_discard.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_discard_usage[] = "usage: agentfs discard ...\n";

int cmd_discard(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("discard", "not implemented yet");
	return 1;
}
