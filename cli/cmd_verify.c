/* cmd_verify.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_verify_usage[] = "usage: agentfs verify ...\n";

int cmd_verify(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("verify", "not implemented yet");
	return 1;
}
