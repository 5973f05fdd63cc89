/*
 * fuzz_workspace.c - libFuzzer target for the workspace metadata reader
 * (workspace.yml, cli/workspace.c; tests/fuzz/run_workspace.sh).
 *
 * workspace.yml sits in the person's state directory, but a crash mid-write,
 * a full disk or a hand edit can leave anything there: for any bytes,
 * workspace_load() must either fail with a one-line reason or return a
 * workspace whose fields are all set, and a loaded workspace must save and
 * load back to the same fields.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/workspace.h"

static char root[PATH_MAX];
static char file[PATH_MAX + 64];

static void setup(void)
{
	if (root[0])
		return;
	char tmpl[] = "/tmp/agentfs-fuzz-ws.XXXXXX";
	if (!mkdtemp(tmpl))
		abort();
	snprintf(root, sizeof(root), "%s", tmpl);
	char d[PATH_MAX + 32];
	snprintf(d, sizeof(d), "%s/workspaces", root);
	mkdir(d, 0700);
	snprintf(d, sizeof(d), "%s/workspaces/w", root);
	mkdir(d, 0700);
	snprintf(file, sizeof(file), "%s/workspaces/w/workspace.yml", root);
}

static int same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	FILE *f = fopen(file, "wb");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);

	struct workspace *ws = NULL;
	char err[512] = "";
	int r = workspace_load(root, "w", &ws, err, sizeof(err));
	if (r < 0) {
		/* A refusal is one line. */
		if (ws || strchr(err, '\n'))
			abort();
		return 0;
	}
	if (!ws || !ws->name || !ws->dir || !ws->repo || !ws->base_commit || !ws->mountpoint ||
	    !ws->policy_digest)
		abort();
	/* Round trip: what loads must save and load to the same fields. */
	if (workspace_save(ws) == 0) {
		struct workspace *again = NULL;
		if (workspace_load(root, "w", &again, err, sizeof(err)) < 0)
			abort();
		if (!same(ws->repo, again->repo) || !same(ws->base_commit, again->base_commit) ||
		    !same(ws->mountpoint, again->mountpoint) ||
		    !same(ws->policy_digest, again->policy_digest) || ws->created != again->created)
			abort();
		workspace_free(again);
	}
	workspace_free(ws);
	return 0;
}
