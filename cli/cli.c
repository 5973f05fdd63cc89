/* cli.c - what every subcommand shares: one-line errors, --help. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

void cli_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "agentfs: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_wants_help(int argc, char **argv, const char *usage)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 1;
		}
	}
	return 0;
}

const char *cli_bad_option(char **argv)
{
	/* A short option may sit in a bundle (-qz), and optind moves past the
	 * bundle only once it is used up: argv[optind - 1] would name the word
	 * before it.  getopt leaves the option's letter in optopt. */
	static char shortopt[3];
	const char *arg = argv[optind - 1];
	if (strncmp(arg, "--", 2) != 0 && optopt > ' ' && optopt < 0x7f) {
		shortopt[0] = '-';
		shortopt[1] = (char)optopt;
		return shortopt;
	}
	return arg;
}
