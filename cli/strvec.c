/* strvec.c - a growing vector of strings (strvec.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/strvec.h"

static int add(struct strvec *sv, char *s)
{
	if (!s)
		return -ENOMEM;
	if (sv->n + 2 > sv->cap) {
		size_t cap = sv->cap ? sv->cap * 2 : 16;
		char **v = realloc(sv->v, cap * sizeof(*v));
		if (!v) {
			free(s);
			return -ENOMEM;
		}
		sv->v = v;
		sv->cap = cap;
	}
	sv->v[sv->n++] = s;
	sv->v[sv->n] = NULL;
	return 0;
}

int strvec_push(struct strvec *sv, const char *s)
{
	return add(sv, strdup(s));
}

int strvec_pushf(struct strvec *sv, const char *fmt, ...)
{
	char *s;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return add(sv, n < 0 ? NULL : s);
}

int strvec_push2(struct strvec *sv, const char *a, const char *b)
{
	int rc = strvec_push(sv, a);
	return rc ? rc : strvec_push(sv, b);
}

int strvec_push3(struct strvec *sv, const char *a, const char *b, const char *c)
{
	int rc = strvec_push2(sv, a, b);
	return rc ? rc : strvec_push(sv, c);
}

char *const *strvec_argv(const struct strvec *sv)
{
	static char *const empty[1] = {NULL};
	return sv->v ? sv->v : empty;
}

void strvec_clear(struct strvec *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	sv->v = NULL;
	sv->n = sv->cap = 0;
}
