/* cmd_policy.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_policy_usage[] = "usage: agentfs policy ...\n";

int cmd_policy(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("policy", "not implemented yet");
	return 1;
}
