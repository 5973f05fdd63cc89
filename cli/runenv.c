/* runenv.c - the sandbox's environment: allowlist + --env (runenv.h). */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cli/runenv.h"

static const char *const allowed[] = {
    "PATH", "HOME",    "LANG",	"LANGUAGE", "LC_*",    "TERM",	"COLORTERM",
    "USER", "LOGNAME", "SHELL", "TZ",	    "COLUMNS", "LINES", "NO_COLOR",
};

/* Upper-case patterns; matched against the upper-cased name. */
static const char *const credential[] = {
    "*TOKEN*",	      "*SECRET*",   "*PASSWORD*",   "*PASSWD*", "*CREDENTIAL*",
    "*_KEY",	      "*_KEYS",	    "*API_KEY*",    "*APIKEY*", "*_PAT",
    "*_AUTH",	      "*_AUTH_*",   "AUTH_*",	    "*COOKIE*", "AWS_*",
    "AZURE_*",	      "GOOGLE_*",   "GCP_*",	    "VAULT_*",	"SSH_AUTH_SOCK",
    "GPG_AGENT_INFO", "KUBECONFIG", "DATABASE_URL", "*_DSN",	"*PRIVATE_KEY*",
};

/* Names the patterns above catch that hold no secret: where and how to reach
 * AWS, not with what (a CA bundle path, a region, a profile's name, output
 * settings).  Exact upper-case names; listing them as credentials taught
 * people to ignore the list. */
static const char *const not_credential[] = {
    "AWS_CA_BUNDLE", "AWS_REGION",	   "AWS_DEFAULT_REGION",
    "AWS_PROFILE",   "AWS_DEFAULT_OUTPUT", "AWS_PAGER",
};

static bool match_any(const char *const *pats, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(pats[i], s, 0) == 0)
			return true;
	return false;
}

bool runenv_allowed(const char *name)
{
	return match_any(allowed, sizeof(allowed) / sizeof(allowed[0]), name);
}

bool runenv_credential_like(const char *name)
{
	char up[256];
	size_t i;
	for (i = 0; name[i] && i < sizeof(up) - 1; i++)
		up[i] = (char)toupper((unsigned char)name[i]);
	up[i] = 0;
	for (size_t k = 0; k < sizeof(not_credential) / sizeof(not_credential[0]); k++)
		if (strcmp(up, not_credential[k]) == 0)
			return false;
	return match_any(credential, sizeof(credential) / sizeof(credential[0]), up);
}

static bool name_valid(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

static ssize_t find(const struct strvec *envp, const char *name, size_t n)
{
	for (size_t i = 0; i < envp->n; i++)
		if (strncmp(envp->v[i], name, n) == 0 && envp->v[i][n] == '=')
			return (ssize_t)i;
	return -1;
}

static int set_n(struct runenv *env, const char *name, size_t n, const char *value)
{
	char *kv;
	if (asprintf(&kv, "%.*s=%s", (int)n, name, value) < 0)
		return -ENOMEM;
	ssize_t i = find(&env->envp, name, n);
	if (i >= 0) {
		free(env->envp.v[i]);
		env->envp.v[i] = kv;
		return 0;
	}
	int rc = strvec_push(&env->envp, kv);
	free(kv);
	if (rc == 0)
		rc = strvec_pushf(&env->passed, "%.*s", (int)n, name);
	return rc;
}

int runenv_set(struct runenv *env, const char *name, const char *value)
{
	return set_n(env, name, strlen(name), value);
}

static const char *lookup(char *const *environ, const char *name, size_t n)
{
	for (size_t i = 0; environ && environ[i]; i++)
		if (strncmp(environ[i], name, n) == 0 && environ[i][n] == '=')
			return environ[i] + n + 1;
	return NULL;
}

/* Was NAME named by an --env option? */
static bool named(char *const *opts, size_t n_opts, const char *name, size_t n)
{
	for (size_t i = 0; i < n_opts; i++) {
		size_t on = strcspn(opts[i], "=");
		if (on == n && strncmp(opts[i], name, n) == 0)
			return true;
	}
	return false;
}

int runenv_build(char *const *environ, char *const *opts, size_t n_opts, const char *home,
		 struct runenv *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	int rc = 0;
	for (size_t i = 0; i < n_opts && rc == 0; i++) {
		const char *o = opts[i];
		size_t n = strcspn(o, "=");
		if (!name_valid(o, n)) {
			snprintf(err, errlen,
				 "--env %s: not a variable name ([A-Za-z_][A-Za-z0-9_]*)", o);
			rc = -EINVAL;
		} else if (n == 4 && strncmp(o, "HOME", 4) == 0) {
			snprintf(err, errlen, "--env %s: HOME is the sandbox's own empty home", o);
			rc = -EINVAL;
		}
	}
	for (size_t i = 0; environ && environ[i] && rc == 0; i++) {
		const char *kv = environ[i];
		size_t n = strcspn(kv, "=");
		if (!kv[n] || n == 0)
			continue;
		char name[256];
		if (n >= sizeof(name))
			continue;
		memcpy(name, kv, n);
		name[n] = 0;
		if (strcmp(name, "HOME") == 0 || named(opts, n_opts, name, n))
			continue;
		/* A name the allowlist takes by a pattern (LC_*) that is named
		 * like a credential (LC_DEPLOY_TOKEN) is a credential. */
		bool cred = runenv_credential_like(name);
		if (runenv_allowed(name) && !cred)
			rc = set_n(out, name, n, kv + n + 1);
		else if (cred)
			rc = strvec_push(&out->dropped, name);
	}
	for (size_t i = 0; i < n_opts && rc == 0; i++) {
		const char *o = opts[i];
		size_t n = strcspn(o, "=");
		if (o[n] == '=') {
			rc = set_n(out, o, n, o + n + 1);
			continue;
		}
		const char *v = lookup(environ, o, n);
		if (!v) {
			snprintf(err, errlen,
				 "--env %s: not set in the environment (use --env %s=VALUE)", o, o);
			rc = -ENOENT;
		} else {
			rc = set_n(out, o, n, v);
		}
	}
	if (rc == 0 && home)
		rc = set_n(out, "HOME", 4, home);
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	if (rc < 0)
		runenv_clear(out);
	return rc;
}

void runenv_clear(struct runenv *env)
{
	strvec_clear(&env->envp);
	strvec_clear(&env->passed);
	strvec_clear(&env->dropped);
}
