/*
 * pattern.h - compiled gitignore(5) patterns (internal to policy/).
 *
 * A pattern is compiled once into '/'-separated segments, each classified so that
 * most checks are a length test and a memcmp; only general segments call
 * fnmatch(3), one path component at a time.  Semantics follow gitignore(5):
 *   - a leading '/' or a '/' in the middle anchors the pattern to the root;
 *     otherwise it matches the last path component at any depth;
 *   - a trailing '/' matches directories only;
 *   - a segment "**" matches zero or more components ("**" + "/x", "a/" + "**" +
 *     "/b"), except a trailing "/" + "**", which matches one or more (everything
 *     inside, not the directory itself);
 *   - '*', '?', '[...]' and '\' escapes inside a segment as fnmatch(3) without
 *     FNM_PERIOD ('*' matches a leading dot, as in git).
 * The negating '!' is the caller's business (policy/load.c strips it).
 */
#ifndef AGENTFS_POLICY_PATTERN_H
#define AGENTFS_POLICY_PATTERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum segment_kind {
	SEG_LITERAL,  /* exact text */
	SEG_SUFFIX,   /* "*" + text: component ends with text */
	SEG_PREFIX,   /* text + "*": component starts with text */
	SEG_ANY,      /* "*": any one component */
	SEG_GLOB,     /* anything else: fnmatch(3) */
	SEG_STARSTAR, /* "**": zero or more components */
};

struct segment {
	uint8_t kind;	  /* enum segment_kind */
	uint32_t len;	  /* bytes of text */
	const char *text; /* literal part, lowercased if casefold; NUL-terminated (GLOB: the
			   * whole fnmatch pattern); points into pattern.buf */
};

struct pattern {
	char *buf;	     /* owns every segment's text */
	struct segment *seg; /* nseg segments */
	uint32_t nseg;
	bool basename; /* matches the last component only (seg[0]) */
	bool dir_only; /* trailing '/' */
	bool casefold; /* ASCII letters match either case */
};

/* Compile @text (@len bytes, no leading '!').  Returns 0, -ENOMEM, or -EINVAL with a
 * static reason in *why (e.g. "empty pattern"). */
int pattern_compile(struct pattern *pt, const char *text, size_t len, bool casefold,
		    const char **why);

void pattern_free(struct pattern *pt);

/* Does @pt match @path (policy.h path form, @len bytes, not the root) whose last
 * component starts at @base?  Never allocates. */
bool pattern_match(const struct pattern *pt, const char *path, size_t len, const char *base,
		   bool is_dir);

#endif
