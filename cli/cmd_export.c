/* cmd_export.c - placeholder until the subcommand lands. */
#include "cli/cli.h"

const char cmd_export_usage[] = "usage: agentfs export ...\n";

int cmd_export(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("export", "not implemented yet");
	return 1;
}
