/*
 * fuzz_policy.c - libFuzzer target for the policy YAML loader (tests/fuzz/run.sh).
 *
 * Any input must either load or fail with a one-line error; a loaded policy must
 * decide without crashing, the same with its rule index as by visiting every
 * rule, and its snapshot must reload to the same digest and decisions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "policy/rules.h"

static const char *const paths[] = {
    "a",
    ".env",
    "src/.ENV",
    "a/b/c/d/e",
    "node_modules/.bin/x",
    "x.pem",
    ".git/config",
    "dir/sub/file.txt",
    "[x]",
    "a*b",
    "\xc3\xa9",
    "\\!",
    "k/l/m/n/o/p/q/r/s/t/u/v/w",
    "a//b",
    "Node_Modules/X/.ENV",
    "src/Deep/Dir/ID_RSA.pub",
    "\xff/\x80x",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *p = NULL, *q = NULL;
	struct policy_error err;
	memset(&err, 0, sizeof(err));
	/* As a policy file (no rules:), then as a workspace's snapshot. */
	if (policy_load_string("fuzz.yml", (const char *)data, size, &p, &err) < 0) {
		if (strchr(err.message, '\n') || !err.message[0])
			abort();
	}
	policy_free(p);
	p = NULL;
	memset(&err, 0, sizeof(err));
	if (policy_load_snapshot_string("fuzz.yml", (const char *)data, size, &p, &err) < 0) {
		if (strchr(err.message, '\n') || !err.message[0])
			abort();
		return 0;
	}
	char *snap = NULL;
	if (policy_snapshot(p, &snap) < 0)
		abort();
	if (policy_load_snapshot_string("snapshot.yml", snap, strlen(snap), &q, &err) < 0) {
		fprintf(stderr, "snapshot does not reload: %u:%u: %s\n%s\n", err.line, err.column,
			err.message, snap);
		abort();
	}
	char d1[33], d2[33];
	policy_digest(p, d1);
	policy_digest(q, d2);
	if (strcmp(d1, d2) != 0)
		abort();
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		for (int dir = 0; dir < 2; dir++) {
			enum policy_decision a = policy_decide_path(p, paths[i], dir, 1000);
			enum policy_decision b = policy_decide_path(q, paths[i], dir, 1000);
			if (a != b)
				abort();
			size_t r1, r2, len = strlen(paths[i]);
			if (policy_decide_rule(p, paths[i], len, dir, 1000, &r1) !=
				policy_decide_rule_scan(p, paths[i], len, dir, 1000, &r2) ||
			    r1 != r2)
				abort();
			char origin[64];
			policy_explain(p, paths[i], dir, &a, origin, sizeof(origin));
		}
	free(snap);
	policy_free(q);
	policy_free(p);
	return 0;
}
