/*
 * cli.h - the command table and the conventions every subcommand follows.
 *
 * Each subcommand lives in cli/cmd_NAME.c and exports `int cmd_NAME(int argc,
 * char **argv)` (argv[0] is the subcommand's name; returns the process exit
 * status: 0 success, 1 failure, 2 usage error) and `const char cmd_NAME_usage[]`,
 * the text printed by both `agentfs help NAME` and `agentfs NAME --help`.
 *
 * Errors are one line on stderr: "agentfs: NAME: <what>: <why>", via cli_error().
 */
#ifndef AGENTFS_CLI_H
#define AGENTFS_CLI_H

#include <stdio.h>

struct cli_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;   /* full usage text, ends with a newline */
	const char *summary; /* one line for `agentfs --help` */
};

#define CLI_COMMAND(n)                                                                             \
	int cmd_##n(int argc, char **argv);                                                        \
	extern const char cmd_##n##_usage[]

CLI_COMMAND(mount);
CLI_COMMAND(unmount);
CLI_COMMAND(status);
CLI_COMMAND(export);
CLI_COMMAND(discard);
CLI_COMMAND(list);
CLI_COMMAND(rm);
CLI_COMMAND(log);
CLI_COMMAND(verify);
CLI_COMMAND(policy);
CLI_COMMAND(promote);
CLI_COMMAND(run);

/* Print "agentfs: CMD: " + formatted message + "\n" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* If argv holds "-h" or "--help" anywhere before "--", print @usage to stdout and
 * return 1; else 0. */
int cli_wants_help(int argc, char **argv, const char *usage);

/* The option getopt_long() just refused (it returned '?' or ':'), as the user
 * wrote it: "--name" or "--name=x" for a long option, "-x" for a short one,
 * even inside a bundle such as "-qx".  Points into @argv or a static buffer. */
const char *cli_bad_option(char **argv);

#endif
