/* main.c - agentfs entry point: dispatches to the subcommand table. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct cli_command commands[] = {
    {"mount", cmd_mount, cmd_mount_usage, "mount a filtered copy-on-write view of a repository"},
    {"unmount", cmd_unmount, cmd_unmount_usage, "unmount a workspace, waiting for its daemon"},
    {"status", cmd_status, cmd_status_usage, "list the paths the agent changed"},
    {"export", cmd_export, cmd_export_usage, "print the agent's changes as a patch"},
    {"discard", cmd_discard, cmd_discard_usage, "drop the agent's changes to paths, or all"},
    {"list", cmd_list, cmd_list_usage, "list workspaces"},
    {"rm", cmd_rm, cmd_rm_usage, "remove an unmounted workspace"},
    {"log", cmd_log, cmd_log_usage, "show the journal"},
    {"verify", cmd_verify, cmd_verify_usage, "verify the journal's chain and the upper"},
    {"policy", cmd_policy, cmd_policy_usage, "check, show, explain and test policies"},
    {"promote", cmd_promote, cmd_promote_usage,
     "create a branch in the repository from the agent's work"},
    {"run", cmd_run, cmd_run_usage, "run a command (an agent) sandboxed in a workspace"},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: agentfs COMMAND [ARGS...]\n\n"
		     "A filtered, copy-on-write, journaled workspace over a git repository.\n\n"
		     "Commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\n'agentfs help COMMAND' or 'agentfs COMMAND --help' for a command's usage.\n"
		     "'agentfs --version' prints the version.\n");
}

static const struct cli_command *find(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[1];
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
		printf("agentfs %s\n", AGENTFS_VERSION);
		return 0;
	}
	if (strcmp(name, "help") == 0) {
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		const struct cli_command *c = find(argv[2]);
		if (!c) {
			fprintf(stderr, "agentfs: help: unknown command '%s'\n", argv[2]);
			return 2;
		}
		fputs(c->usage, stdout);
		return 0;
	}
	const struct cli_command *c = find(name);
	if (!c) {
		fprintf(stderr, "agentfs: unknown command '%s' (see 'agentfs --help')\n", name);
		return 2;
	}
	if (cli_wants_help(argc - 1, argv + 1, c->usage))
		return 0;
	return c->run(argc - 1, argv + 1);
}
