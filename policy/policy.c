/* policy.c - placeholder: hides nothing but .git.  Replaced by the real engine. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

struct policy {
	int unused;
};

int policy_new_default(struct policy **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

enum policy_decision policy_decide(const struct policy *p, const char *path, size_t len,
				   bool is_dir, uint64_t size)
{
	(void)p, (void)is_dir, (void)size;
	const char *base = memrchr(path, '/', len);
	base = base ? base + 1 : path;
	if (strcmp(base, ".git") == 0 || strcmp(base, ".env") == 0)
		return POLICY_HIDDEN;
	return POLICY_VISIBLE;
}

enum policy_decision policy_decide_path(const struct policy *p, const char *path, bool is_dir,
					uint64_t size)
{
	return policy_decide(p, path, strlen(path), is_dir, size);
}

enum policy_symlinks policy_symlinks_mode(const struct policy *p)
{
	(void)p;
	return POLICY_SYMLINKS_HIDE;
}

enum policy_git policy_git_mode(const struct policy *p)
{
	(void)p;
	return POLICY_GIT_HIDDEN;
}

void policy_digest(const struct policy *p, char out[33])
{
	(void)p;
	memset(out, '0', 32);
	out[32] = 0;
}

void policy_free(struct policy *p)
{
	free(p);
}
