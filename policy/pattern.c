/* pattern.c - compiling and matching gitignore(5) patterns (see pattern.h). */
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "policy/pattern.h"

/* Longest component handed to fnmatch(3); Linux names are at most 255 bytes. */
#define COMPONENT_MAX 4096

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool is_special(char c)
{
	return c == '*' || c == '?' || c == '[' || c == '\\';
}

/* Where the bracket expression opening at s[0] == '[' ends (index of ']'), or 0 if
 * it is unterminated.  Mirrors fnmatch: '!' or '^' negates, a leading ']' is a
 * member, "[:class:]" nests, '\' escapes. */
static size_t bracket_end(const char *s, size_t len)
{
	size_t i = 1;
	if (i < len && (s[i] == '!' || s[i] == '^'))
		i++;
	if (i < len && s[i] == ']')
		i++;
	while (i < len) {
		if (s[i] == ']')
			return i;
		if (s[i] == '\\') {
			i += 2;
			continue;
		}
		if (s[i] == '[' && i + 1 < len &&
		    (s[i + 1] == ':' || s[i + 1] == '.' || s[i + 1] == '=')) {
			char kind = s[i + 1];
			size_t j = i + 2;
			while (j + 1 < len && !(s[j] == kind && s[j + 1] == ']'))
				j++;
			if (j + 1 >= len)
				return 0;
			i = j + 2;
			continue;
		}
		i++;
	}
	return 0;
}

/* Validate one segment's wildcards. */
static const char *check_segment(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\\') {
			if (i + 1 >= len)
				return "trailing backslash";
			i++;
		} else if (s[i] == '[') {
			size_t end = bracket_end(s + i, len - i);
			if (end == 0)
				return "unterminated '['";
			i += end;
		}
	}
	return NULL;
}

static void classify(struct segment *sg, char *text, size_t len, bool casefold)
{
	size_t nspecial = 0, nstar = 0;
	for (size_t i = 0; i < len; i++) {
		nspecial += is_special(text[i]);
		nstar += text[i] == '*';
	}
	sg->text = text;
	sg->len = (uint32_t)len;
	if (nspecial == 0) {
		sg->kind = SEG_LITERAL;
	} else if (nstar == len) {
		sg->kind = SEG_ANY;
	} else if (nspecial == 1 && text[0] == '*') {
		sg->kind = SEG_SUFFIX;
		sg->text = text + 1;
		sg->len = (uint32_t)(len - 1);
	} else if (nspecial == 1 && text[len - 1] == '*') {
		sg->kind = SEG_PREFIX;
		sg->len = (uint32_t)(len - 1);
		text[len - 1] = '\0';
	} else {
		sg->kind = SEG_GLOB;
		return; /* fnmatch folds case itself */
	}
	if (casefold)
		for (size_t i = 0; i < sg->len; i++)
			text[(sg->text - text) + i] = (char)lower((unsigned char)sg->text[i]);
}

int pattern_compile(struct pattern *pt, const char *text, size_t len, bool casefold,
		    const char **why)
{
	memset(pt, 0, sizeof(*pt));
	pt->casefold = casefold;
	if (len == 0) {
		*why = "empty pattern";
		return -EINVAL;
	}
	if (memchr(text, '\0', len)) {
		*why = "NUL byte in pattern";
		return -EINVAL;
	}
	if (len > 1 && text[len - 1] == '/' && text[len - 2] != '\\') {
		pt->dir_only = true;
		len--;
	}
	bool anchored = false;
	if (text[0] == '/') {
		anchored = true;
		text++;
		len--;
	}
	if (len == 0) {
		*why = "pattern matches nothing but the root";
		return -EINVAL;
	}
	if (!anchored && memchr(text, '/', len))
		anchored = true;

	pt->buf = malloc(len + 1);
	size_t maxseg = 2; /* room for the trailing "**" rewrite */
	for (size_t i = 0; i < len; i++)
		maxseg += text[i] == '/';
	pt->seg = calloc(maxseg, sizeof(*pt->seg));
	if (!pt->buf || !pt->seg) {
		pattern_free(pt);
		return -ENOMEM;
	}
	memcpy(pt->buf, text, len);
	pt->buf[len] = '\0';

	/* Split on '/': segments are NUL-terminated in place. */
	char *s = pt->buf;
	uint32_t n = 0;
	for (;;) {
		char *slash = strchr(s, '/');
		size_t sl = slash ? (size_t)(slash - s) : strlen(s);
		if (slash)
			*slash = '\0';
		if (sl == 0) {
			*why = "empty path component ('//')";
			goto invalid;
		}
		if ((sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) {
			*why = "'.' and '..' components never match";
			goto invalid;
		}
		const char *bad = check_segment(s, sl);
		if (bad && slash && s[sl - 1] == '\\' && !strcmp(bad, "trailing backslash"))
			/* "a\/b": the backslash is not trailing, it is before a '/'. */
			bad = "'\\' before '/': a '/' always separates path components and "
			      "cannot be escaped";
		if (bad) {
			*why = bad;
			goto invalid;
		}
		if (anchored && sl == 2 && s[0] == '*' && s[1] == '*') {
			/* Consecutive "**" segments mean the same as one. */
			if (n == 0 || pt->seg[n - 1].kind != SEG_STARSTAR)
				pt->seg[n++] = (struct segment){.kind = SEG_STARSTAR, .text = s};
		} else {
			classify(&pt->seg[n++], s, sl, casefold);
		}
		if (!slash)
			break;
		s = slash + 1;
	}

	if (!anchored) {
		pt->basename = true;
	} else if (n == 2 && pt->seg[0].kind == SEG_STARSTAR) {
		/* "**" + "/x" matches x at any depth: same as the unanchored "x". */
		pt->seg[0] = pt->seg[1];
		n = 1;
		pt->basename = true;
	} else if (pt->seg[n - 1].kind == SEG_STARSTAR) {
		/* A trailing "**" matches one or more components: any one, then zero or
		 * more. */
		pt->seg[n - 1] = (struct segment){.kind = SEG_ANY, .text = "*", .len = 1};
		pt->seg[n++] = (struct segment){.kind = SEG_STARSTAR, .text = "**", .len = 2};
	}
	pt->nseg = n;
	return 0;

invalid:
	pattern_free(pt);
	return -EINVAL;
}

void pattern_free(struct pattern *pt)
{
	free(pt->buf);
	free(pt->seg);
	memset(pt, 0, sizeof(*pt));
}

static bool segment_match(const struct segment *sg, const char *c, size_t n, bool fold)
{
	const char *t = sg->text;
	size_t tl = sg->len;
	switch (sg->kind) {
	case SEG_ANY:
		return n > 0;
	case SEG_LITERAL:
		if (n != tl)
			return false;
		break;
	case SEG_PREFIX:
		if (n < tl)
			return false;
		break;
	case SEG_SUFFIX:
		if (n < tl)
			return false;
		c += n - tl;
		break;
	case SEG_GLOB: {
		char buf[COMPONENT_MAX];
		if (n >= sizeof(buf))
			return false;
		memcpy(buf, c, n);
		buf[n] = '\0';
		return fnmatch(t, buf, FNM_PATHNAME | (fold ? FNM_CASEFOLD : 0)) == 0;
	}
	default:
		return false;
	}
	if (!fold)
		return memcmp(c, t, tl) == 0;
	for (size_t i = 0; i < tl; i++)
		if (lower((unsigned char)c[i]) != (unsigned char)t[i])
			return false;
	return true;
}

/* Segments against components, "**" as a wildcard over whole components: the
 * classic greedy algorithm with one backtrack point, O(segments * components). */
static bool match_anchored(const struct pattern *pt, const char *path, size_t len)
{
	const struct segment *sg = pt->seg;
	size_t n = pt->nseg, pi = 0, ci = 0;
	size_t star_pi = SIZE_MAX, star_ci = 0;

	while (ci <= len) {
		if (pi < n && sg[pi].kind == SEG_STARSTAR) {
			star_pi = pi++;
			star_ci = ci;
			continue;
		}
		const char *slash = memchr(path + ci, '/', len - ci);
		size_t end = slash ? (size_t)(slash - path) : len;
		if (pi < n && segment_match(&sg[pi], path + ci, end - ci, pt->casefold)) {
			pi++;
			ci = end + 1;
			continue;
		}
		if (star_pi == SIZE_MAX)
			return false;
		pi = star_pi + 1;
		slash = memchr(path + star_ci, '/', len - star_ci);
		star_ci = slash ? (size_t)(slash - path) + 1 : len + 1;
		ci = star_ci;
	}
	while (pi < n && sg[pi].kind == SEG_STARSTAR)
		pi++;
	return pi == n;
}

bool pattern_match(const struct pattern *pt, const char *path, size_t len, const char *base,
		   bool is_dir)
{
	if (pt->dir_only && !is_dir)
		return false;
	if (pt->basename)
		return segment_match(&pt->seg[0], base, len - (size_t)(base - path), pt->casefold);
	return match_anchored(pt, path, len);
}
