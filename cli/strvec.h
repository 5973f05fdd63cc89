/*
 * strvec.h - a growing, NULL-terminated vector of malloc'd strings: argv and
 * envp for execve(), lists of names.
 *
 * A zero-initialized struct strvec is empty and valid.  Functions return 0 or
 * -ENOMEM; after a failure the vector holds what was added before it.
 */
#ifndef AGENTFS_STRVEC_H
#define AGENTFS_STRVEC_H

#include <stddef.h>

struct strvec {
	char **v; /* v[n] == NULL once anything was added; NULL while empty */
	size_t n, cap;
};

/* Append a copy of @s. */
int strvec_push(struct strvec *sv, const char *s);

/* Append the formatted string. */
int strvec_pushf(struct strvec *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append copies of @a, @b (for "--opt", "value" pairs and more). */
int strvec_push2(struct strvec *sv, const char *a, const char *b);
int strvec_push3(struct strvec *sv, const char *a, const char *b, const char *c);

/* A "NULL-terminated" view, never NULL (an empty vector gives a static {NULL}). */
char *const *strvec_argv(const struct strvec *sv);

void strvec_clear(struct strvec *sv);

#endif
