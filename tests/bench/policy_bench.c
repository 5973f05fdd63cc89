/*
 * policy_bench.c - decisions per second of the built-in default policy.
 *
 * The FUSE daemon asks policy_decide() once per lookup and readdir entry, so the
 * cost per decision bounds metadata-heavy work (find, git status).  This times
 * policy_decide() over a mix of ordinary, dotfile, secret and dependency-tree
 * paths for about a second of CPU time each (thread CPU time, so a busy machine
 * does not skew it), with the default policy (about 100 rules) and
 * with that policy plus a repository file's worth of anchored rules.
 *
 *   build/tests/policy_bench [SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/policy.h"

static const char *const paths[] = {
    "src/main.c",
    "src/fs/inode.c",
    "README.md",
    "Makefile",
    "docs/guide/index.md",
    "node_modules/react/index.js",
    "node_modules/.bin/tsc",
    "node_modules/x/.npmrc",
    ".env",
    "config/.env.production",
    "certs/server.pem",
    "id_rsa",
    ".gitignore",
    ".github/workflows/ci.yml",
    ".git",
    "lib/very/deep/path/to/some/module/file.py",
    "tests/fixtures/data.json",
    ".venv/lib/python3.11/site-packages/numpy/core/x.so",
    "include/app/config.h",
    "vendor/github.com/pkg/errors/errors.go",
    ".vscode",
    "build/out/app.o",
    "scripts/deploy.sh",
    "package.json",
    "Cargo.toml",
    ".cargo",
};
#define NPATHS (sizeof(paths) / sizeof(paths[0]))

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: robust to a busy machine */
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double bench(const struct policy *p, double seconds, unsigned *sink)
{
	size_t lens[NPATHS];
	for (size_t i = 0; i < NPATHS; i++)
		lens[i] = strlen(paths[i]);
	unsigned long long n = 0;
	double start = now(), elapsed;
	do {
		for (int rep = 0; rep < 1000; rep++)
			for (size_t i = 0; i < NPATHS; i++)
				*sink += policy_decide(p, paths[i], lens[i], i % 3 == 0, 100);
		n += 1000 * NPATHS;
		elapsed = now() - start;
	} while (elapsed < seconds);
	return (double)n / elapsed;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.0;
	struct policy *p;
	struct policy_error err = {0};
	unsigned sink = 0;
	if (policy_new_default(&p) < 0)
		return 1;
	printf("default policy, %zu rules: %.0f decisions/s\n", policy_rule_count(p),
	       bench(p, seconds, &sink));
	policy_free(p);

	/* A repository file adding 40 anchored and wildcard rules on top. */
	char yaml[8192];
	size_t o = (size_t)snprintf(yaml, sizeof(yaml), "hide:\n");
	for (int i = 0; i < 20; i++)
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o,
				      "  - '/generated/part%d/**'\n  - 'a%d/**/b[0-9]?.tmp'\n", i,
				      i);
	o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "readonly: ['vendor/', '*.lock']\n");
	if (policy_load_string("bench.yml", yaml, o, &p, &err) < 0) {
		fprintf(stderr, "%s:%u:%u: %s\n", err.file, err.line, err.column, err.message);
		return 1;
	}
	printf("default + 42 repository rules, %zu rules: %.0f decisions/s\n", policy_rule_count(p),
	       bench(p, seconds, &sink));
	policy_free(p);
	return sink == 0xdeadbeef; /* keep the work observable */
}
