/* rules.c - deciding paths with a built policy, digest and inspection. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "policy/rules.h"

const char *rule_action_name(enum rule_action a)
{
	switch (a) {
	case RULE_HIDE:
		return "hide";
	case RULE_UNHIDE:
		return "show";
	case RULE_READONLY:
		return "readonly";
	case RULE_WRITABLE:
		return "writable";
	}
	return "?";
}

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* The pairs of adjacent bytes of @s (@n bytes), lowercased, each hashed to one
 * of 256 bits: a necessary condition for one string to contain another, in
 * either letter case, cheaper than looking for it. */
static void byte_pairs(const char *s, size_t n, uint64_t out[4])
{
	memset(out, 0, 4 * sizeof(uint64_t));
	for (size_t i = 0; i + 1 < n; i++) {
		unsigned h =
		    (lower((unsigned char)s[i]) * 31u + lower((unsigned char)s[i + 1])) & 255u;
		out[h >> 6] |= UINT64_C(1) << (h & 63);
	}
}

/* The byte a glob segment (fnmatch(3) text, case as written) requires first,
 * or -1: its first byte unless that one is special.  Lowercased for a
 * casefold pattern, as the quick check compares lowercased bytes then. */
static int glob_first(const struct segment *sg, bool fold)
{
	char c = sg->text[0];
	if (c == '*' || c == '?' || c == '[' || c == '\\')
		return -1;
	return fold ? lower((unsigned char)c) : (unsigned char)c;
}

/* The byte it requires last, or -1: its last byte unless special, or a ']'
 * that may close a bracket expression. */
static int glob_last(const struct segment *sg, bool fold)
{
	char c = sg->text[sg->len - 1];
	if (c == '*' || c == '?' || c == '[' || c == '\\' || c == ']' ||
	    (sg->len >= 2 && sg->text[sg->len - 2] == '\\'))
		return -1;
	return fold ? lower((unsigned char)c) : (unsigned char)c;
}

/* Most rules are a literal, prefix or suffix: one byte of the path rules them
 * out.  So are globs that start or end with an ordinary byte
 * ("credentials.*.enc"). */
static void set_quick(struct rule *r)
{
	const struct pattern *pt = &r->pat;
	const struct segment *first = &pt->seg[0], *last = &pt->seg[pt->nseg - 1];
	int g;
	r->quick = -1;
	r->need = NULL;
	if ((first->kind == SEG_LITERAL || first->kind == SEG_PREFIX) && first->len) {
		r->quick = (unsigned char)first->text[0];
		r->quick_at = pt->basename ? QUICK_BASE_FIRST : QUICK_PATH_FIRST;
	} else if ((last->kind == SEG_LITERAL || last->kind == SEG_PREFIX) && last->len) {
		r->quick = (unsigned char)last->text[0];
		r->quick_at = QUICK_BASE_FIRST;
	} else if (last->kind == SEG_SUFFIX && last->len) {
		r->quick = (unsigned char)last->text[last->len - 1];
		r->quick_at = QUICK_BASE_LAST;
	} else if (first->kind == SEG_GLOB && first->len &&
		   (g = glob_first(first, pt->casefold)) >= 0) {
		r->quick = (int16_t)g;
		r->quick_at = pt->basename ? QUICK_BASE_FIRST : QUICK_PATH_FIRST;
	} else if (last->kind == SEG_GLOB && last->len &&
		   (g = glob_first(last, pt->casefold)) >= 0) {
		r->quick = (int16_t)g;
		r->quick_at = QUICK_BASE_FIRST;
	} else if (last->kind == SEG_GLOB && last->len &&
		   (g = glob_last(last, pt->casefold)) >= 0) {
		r->quick = (int16_t)g;
		r->quick_at = QUICK_BASE_LAST;
	}
	if (r->quick >= 0 || pt->basename)
		return;
	for (uint32_t i = 0; i < pt->nseg; i++)
		if (pt->seg[i].kind == SEG_LITERAL && pt->seg[i].len > r->need_len) {
			r->need = pt->seg[i].text;
			r->need_len = pt->seg[i].len;
		}
	if (r->need)
		byte_pairs(r->need, r->need_len, r->need_pairs);
}

/* Does @path contain @need (lowercase when @fold)? */
static bool contains(const char *path, size_t len, const char *need, size_t nl, bool fold)
{
	if (!fold)
		return memmem(path, len, need, nl) != NULL;
	for (size_t i = 0; i + nl <= len; i++) {
		size_t k = 0;
		while (k < nl && lower((unsigned char)path[i + k]) == (unsigned char)need[k])
			k++;
		if (k == nl)
			return true;
	}
	return false;
}

int policy_add_rule(struct policy *p, enum rule_action action, const char *text, size_t len,
		    bool casefold, bool protect, bool weak, const char *origin, const char **why)
{
	if (p->nrules == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct rule *r = realloc(p->rules, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		p->rules = r;
		p->cap = cap;
	}
	struct rule *r = &p->rules[p->nrules];
	memset(r, 0, sizeof(*r));
	int rc = pattern_compile(&r->pat, text, len, casefold, why);
	if (rc < 0)
		return rc;
	r->text = strndup(text, len);
	r->origin = strdup(origin);
	if (!r->text || !r->origin) {
		pattern_free(&r->pat);
		free(r->text);
		free(r->origin);
		return -ENOMEM;
	}
	set_quick(r);
	r->action = (uint8_t)action;
	bool positive = action == RULE_HIDE || action == RULE_READONLY;
	r->protect = positive && protect;
	r->weak = !positive && weak;
	p->nrules++;
	return 0;
}

/*
 * Each of the two questions (hidden? read-only?) is answered by the last matching
 * rule that speaks to it.  A weak rule (a repository's show/writable) that would
 * answer "no" only does so if no protected rule before it says "yes" and no
 * non-weak rule in between says "no" first: the scan continues past it, counting
 * only those two kinds.
 */
enum { OPEN, PENDING, YES, NO };

/* One decision under way: for each question (0 hidden?, 1 read-only?) its
 * state and the rule that set it. */
struct decision {
	int state[2];
	size_t by[2];
	int resolved;
	const char *path, *base;
	size_t len;
	bool is_dir;
	unsigned char qb[3], ql[3]; /* the quick bytes as written and lowercased */
	bool prefilter;		    /* test quick bytes, need_pairs and needs */
	bool have_pairs;	    /* @pairs is computed */
	uint64_t pairs[4];	    /* byte_pairs() of the path */
};

static void decision_init(struct decision *d, const char *path, size_t len, bool is_dir)
{
	const char *slash = memrchr(path, '/', len);
	const char *base = slash ? slash + 1 : path;
	size_t blen = len - (size_t)(base - path);
	/* A path ending in '/' (a prefix decide_path_rule takes of "a//b") has
	 * an empty last component: no byte there, and no rule's quick byte is
	 * 0 (nor '/', which a segment cannot hold). */
	*d = (struct decision){.state = {OPEN, OPEN},
			       .by = {SIZE_MAX, SIZE_MAX},
			       .path = path,
			       .base = base,
			       .len = len,
			       .is_dir = is_dir,
			       .qb = {blen ? (unsigned char)base[0] : 0,
				      blen ? (unsigned char)base[blen - 1] : 0,
				      (unsigned char)path[0]}};
	for (int k = 0; k < 3; k++)
		d->ql[k] = lower(d->qb[k]);
}

/* Let rule @i speak if it matches; true once both questions are settled. */
static inline bool consider(const struct policy *p, size_t i, struct decision *d)
{
	const struct rule *r = &p->rules[i];
	int dim = r->action >= RULE_READONLY;
	if (d->state[dim] >= YES)
		return false;
	if (d->prefilter && r->quick >= 0 &&
	    (r->pat.casefold ? d->ql : d->qb)[r->quick_at] != (unsigned char)r->quick)
		return false;
	if (d->prefilter && r->need) {
		if (!d->have_pairs) {
			byte_pairs(d->path, d->len, d->pairs);
			d->have_pairs = true;
		}
		if ((r->need_pairs[0] & ~d->pairs[0]) | (r->need_pairs[1] & ~d->pairs[1]) |
		    (r->need_pairs[2] & ~d->pairs[2]) | (r->need_pairs[3] & ~d->pairs[3]))
			return false;
		if (!contains(d->path, d->len, r->need, r->need_len, r->pat.casefold))
			return false;
	}
	if (!pattern_match(&r->pat, d->path, d->len, d->base, d->is_dir))
		return false;
	bool positive = r->action == RULE_HIDE || r->action == RULE_READONLY;
	if (d->state[dim] == OPEN) {
		d->by[dim] = i;
		d->state[dim] = positive ? YES : r->weak ? PENDING : NO;
	} else if (positive ? r->protect : !r->weak) {
		/* Past a weak "no": a protected "yes" overrides it, a non-weak "no"
		 * settles it. */
		d->by[dim] = i;
		d->state[dim] = positive ? YES : NO;
	} else {
		return false;
	}
	return d->state[dim] >= YES && ++d->resolved == 2;
}

static enum policy_decision decision_end(const struct decision *d, size_t *rule)
{
	if (d->state[0] == YES) {
		*rule = d->by[0];
		return POLICY_HIDDEN;
	}
	if (d->state[1] == YES) {
		*rule = d->by[1];
		return POLICY_READONLY;
	}
	*rule = d->by[0] != SIZE_MAX ? d->by[0] : d->by[1];
	return POLICY_VISIBLE;
}

/* What decides before any rule: the root (an empty path) is visible, a file
 * over max_file_size hidden.  Returns whether that settled it (*@out). */
static bool decided_early(const struct policy *p, size_t len, bool is_dir, uint64_t size,
			  size_t *rule, enum policy_decision *out)
{
	*rule = SIZE_MAX;
	if (len == 0)
		*out = POLICY_VISIBLE;
	else if (!is_dir && p->max_file_size && size > p->max_file_size)
		*out = POLICY_HIDDEN;
	else
		return false;
	return true;
}

enum policy_decision policy_decide_rule_scan(const struct policy *p, const char *path, size_t len,
					     bool is_dir, uint64_t size, size_t *rule)
{
	enum policy_decision early;
	if (decided_early(p, len, is_dir, size, rule, &early))
		return early;
	struct decision d;
	decision_init(&d, path, len, is_dir);
	for (size_t i = p->nrules; i-- > 0;)
		if (consider(p, i, &d))
			break;
	return decision_end(&d, rule);
}

enum policy_decision policy_decide_rule(const struct policy *p, const char *path, size_t len,
					bool is_dir, uint64_t size, size_t *rule)
{
	const struct rule_index *x = &p->index;
	if (!x->always || x->nrules != p->nrules)
		return policy_decide_rule_scan(p, path, len, is_dir, size, rule);
	enum policy_decision early;
	if (decided_early(p, len, is_dir, size, rule, &early))
		return early;
	struct decision d;
	decision_init(&d, path, len, is_dir);
	d.prefilter = true;
	/* The same rules in the same order as the scan, less those whose
	 * quick byte rules them out. */
	const uint64_t *sel[7] = {x->always};
	int ns = 1;
	for (int at = 0; at < 3; at++) {
		sel[ns++] = x->by[at][0] + (size_t)d.qb[at] * x->words;
		sel[ns++] = x->by[at][1] + (size_t)d.ql[at] * x->words;
	}
	for (size_t w = x->words; w-- > 0;) {
		uint64_t bits = 0;
		for (int k = 0; k < ns; k++)
			bits |= sel[k][w];
		while (bits) {
			int b = 63 - __builtin_clzll(bits);
			bits &= ~(UINT64_C(1) << b);
			if (consider(p, w * 64 + (size_t)b, &d))
				return decision_end(&d, rule);
		}
	}
	return decision_end(&d, rule);
}

static void index_free(struct rule_index *x)
{
	free(x->always);
	for (int at = 0; at < 3; at++)
		for (int f = 0; f < 2; f++)
			free(x->by[at][f]);
	memset(x, 0, sizeof(*x));
}

static int index_build(struct policy *p)
{
	struct rule_index *x = &p->index;
	index_free(x);
	x->words = (p->nrules + 63) / 64;
	if (x->words == 0)
		x->words = 1;
	x->always = calloc(x->words, sizeof(uint64_t));
	for (int at = 0; at < 3; at++)
		for (int f = 0; f < 2; f++)
			x->by[at][f] = calloc(256 * x->words, sizeof(uint64_t));
	for (int at = 0; at < 3; at++)
		for (int f = 0; f < 2; f++)
			if (!x->by[at][f] || !x->always) {
				index_free(x);
				return -ENOMEM;
			}
	for (size_t i = 0; i < p->nrules; i++) {
		const struct rule *r = &p->rules[i];
		uint64_t bit = UINT64_C(1) << (i % 64);
		if (r->quick < 0)
			x->always[i / 64] |= bit;
		else
			x->by[r->quick_at][r->pat.casefold][(size_t)r->quick * x->words + i / 64] |=
			    bit;
	}
	x->nrules = p->nrules;
	return 0;
}

enum policy_decision policy_decide(const struct policy *p, const char *path, size_t len,
				   bool is_dir, uint64_t size)
{
	size_t rule;
	return policy_decide_rule(p, path, len, is_dir, size, &rule);
}

static enum policy_decision decide_path_rule(const struct policy *p, const char *path, bool is_dir,
					     uint64_t size, size_t *rule)
{
	size_t len = strlen(path);
	enum policy_decision worst = POLICY_VISIBLE;
	size_t worst_rule = SIZE_MAX, r;
	for (size_t i = 0; i < len; i++) {
		if (path[i] != '/')
			continue;
		enum policy_decision d = policy_decide_rule(p, path, i, true, 0, &r);
		if (d == POLICY_HIDDEN) {
			*rule = r;
			return d;
		}
		if (d == POLICY_READONLY && worst == POLICY_VISIBLE) {
			worst = d;
			worst_rule = r;
		}
	}
	enum policy_decision d = policy_decide_rule(p, path, len, is_dir, size, &r);
	if (d == POLICY_HIDDEN || worst == POLICY_VISIBLE) {
		*rule = r;
		return d;
	}
	*rule = worst_rule;
	return worst;
}

enum policy_decision policy_decide_path(const struct policy *p, const char *path, bool is_dir,
					uint64_t size)
{
	size_t rule;
	return decide_path_rule(p, path, is_dir, size, &rule);
}

int policy_explain_size(const struct policy *p, const char *path, bool is_dir, uint64_t size,
			enum policy_decision *d, char *origin, size_t len)
{
	size_t rule;
	*d = decide_path_rule(p, path, is_dir, size, &rule);
	if (len == 0)
		return 0;
	if (rule >= p->nrules && *d == POLICY_HIDDEN)
		snprintf(origin, len, "larger than max_file_size %llu%s%s",
			 (unsigned long long)p->max_file_size, p->max_size_origin ? ", " : "",
			 p->max_size_origin ? p->max_size_origin : "");
	else
		snprintf(origin, len, "%s", rule < p->nrules ? p->rules[rule].origin : "(no rule)");
	return 0;
}

int policy_explain(const struct policy *p, const char *path, bool is_dir, enum policy_decision *d,
		   char *origin, size_t len)
{
	return policy_explain_size(p, path, is_dir, 0, d, origin, len);
}

enum policy_symlinks policy_symlinks_mode(const struct policy *p)
{
	return p->symlinks;
}

enum policy_git policy_git_mode(const struct policy *p)
{
	return p->git;
}

uint64_t policy_max_file_size(const struct policy *p)
{
	return p->max_file_size;
}

size_t policy_rule_count(const struct policy *p)
{
	return p->nrules;
}

int policy_rule_get(const struct policy *p, size_t i, struct policy_rule_info *out)
{
	if (i >= p->nrules)
		return -ERANGE;
	const struct rule *r = &p->rules[i];
	*out = (struct policy_rule_info){
	    .action = rule_action_name(r->action),
	    .pattern = r->text,
	    .origin = r->origin,
	    .casefold = r->pat.casefold,
	    .protect = r->protect,
	    .weak = r->weak,
	};
	return 0;
}

/* The digest covers what decides (settings, and each rule's action, flags and text),
 * not where rules came from: a snapshot digests like the policy it was taken of. */
int policy_finalize(struct policy *p)
{
	if (index_build(p) < 0)
		return -ENOMEM;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return -ENOMEM;
	fprintf(f, "agentfs-policy 1\nsymlinks %d\ngit %d\nmax_file_size %llu\n", (int)p->symlinks,
		(int)p->git, (unsigned long long)p->max_file_size);
	for (size_t i = 0; i < p->nrules; i++) {
		const struct rule *r = &p->rules[i];
		size_t tl = strlen(r->text);
		fprintf(f, "rule %d %d %d %d %zu:", r->action, r->protect, r->weak, r->pat.casefold,
			tl);
		fwrite(r->text, 1, tl, f);
		fputc('\n', f);
	}
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(buf, size));
	free(buf);
	for (int i = 0; i < 16; i++)
		snprintf(p->digest + 2 * i, 3, "%02x", c.digest[i]);
	return 0;
}

void policy_digest(const struct policy *p, char out[33])
{
	memcpy(out, p->digest, 33);
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nrules; i++) {
		pattern_free(&p->rules[i].pat);
		free(p->rules[i].text);
		free(p->rules[i].origin);
	}
	free(p->rules);
	index_free(&p->index);
	free(p->max_size_origin);
	free(p);
}
