/*
 * runenv.h - the environment of a command run in the sandbox: an allowlist of
 * harmless variables plus exactly what the person names with --env; nothing
 * else passes.  Dropped variables whose names look like credentials are
 * listed so the run can say so.
 *
 * Functions return 0 or a negative errno; @err gets a one-line reason.
 */
#ifndef AGENTFS_RUNENV_H
#define AGENTFS_RUNENV_H

#include <stdbool.h>
#include <stddef.h>

#include "cli/strvec.h"

struct runenv {
	struct strvec envp;    /* "NAME=VALUE", the sandbox's environment */
	struct strvec passed;  /* names in envp, in order */
	struct strvec dropped; /* credential-like names of the outer environment
				* that were not passed */
};

/* Does @name (a variable name) pass without being named: PATH, HOME, LANG,
 * LANGUAGE, LC_*, TERM, COLORTERM, USER, LOGNAME, SHELL, TZ, COLUMNS, LINES,
 * NO_COLOR? */
bool runenv_allowed(const char *name);

/* Does @name look like it holds a credential: *TOKEN*, *SECRET*, *PASSWORD*,
 * *PASSWD*, *CREDENTIAL*, *_KEY, *_KEYS, *API_KEY*, *_PAT, *_AUTH, *_AUTH_*, AUTH_*,
 * *COOKIE*,
 * AWS_*, AZURE_*, GOOGLE_*, GCP_*, VAULT_*, SSH_AUTH_SOCK, GPG_AGENT_INFO,
 * KUBECONFIG, DATABASE_URL, *_DSN (case-insensitive)?  Except names known to
 * hold none: AWS_CA_BUNDLE, AWS_REGION, AWS_DEFAULT_REGION, AWS_PROFILE,
 * AWS_DEFAULT_OUTPUT, AWS_PAGER. */
bool runenv_credential_like(const char *name);

/*
 * Build the sandbox's environment from @environ (NULL-terminated "NAME=VALUE")
 * and @opts, the --env arguments: "NAME" passes NAME's value from @environ
 * (-ENOENT if unset there), "NAME=VALUE" sets it.  HOME is set to @home and
 * may not be named (-EINVAL).  Names must be [A-Za-z_][A-Za-z0-9_]* (-EINVAL).
 */
int runenv_build(char *const *environ, char *const *opts, size_t n_opts, const char *home,
		 struct runenv *out, char *err, size_t errlen);

/* Set (replacing) NAME=VALUE in @env. */
int runenv_set(struct runenv *env, const char *name, const char *value);

void runenv_clear(struct runenv *env);

#endif
