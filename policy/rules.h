/*
 * rules.h - the in-memory shape of a policy (internal to policy/).
 *
 * A policy is the concatenation of every layer's rules, in precedence order (the
 * last matching rule wins), plus the settings.  It is immutable once built, so any
 * number of threads may decide with it.
 */
#ifndef AGENTFS_POLICY_RULES_H
#define AGENTFS_POLICY_RULES_H

#include "policy/pattern.h"
#include "policy/policy.h"

enum rule_action {
	RULE_HIDE,     /* hidden */
	RULE_UNHIDE,   /* visible again: show:, '!' in hide:/secrets: */
	RULE_READONLY, /* read-only */
	RULE_WRITABLE, /* writable again: '!' in readonly: */
};

enum quick_at {
	QUICK_BASE_FIRST, /* first byte of the last component */
	QUICK_BASE_LAST,  /* last byte of the last component */
	QUICK_PATH_FIRST, /* first byte of the path */
};

struct rule {
	struct pattern pat;
	char *text;	  /* the pattern as written, without the negating '!' */
	char *origin;	  /* "FILE:LINE" */
	int16_t quick;	  /* a byte the path must have at quick_at, or -1: rejects most
			   * rules without calling pattern_match() */
	uint8_t quick_at; /* enum quick_at */
	const char *need; /* a literal component the path must contain (in pat.buf), or
			   * NULL: rejects "**" + "/dir/" + "**" rules cheaply */
	uint32_t need_len;
	uint64_t need_pairs[4]; /* the pairs of adjacent bytes of @need, lowercased,
				 * hashed into 256 bits (rules.c, byte_pairs()): a
				 * path lacking one cannot contain @need */
	uint8_t action;		/* enum rule_action */
	bool protect;		/* a HIDE/READONLY that a weak rule cannot undo */
	bool weak;		/* an UNHIDE/WRITABLE from a repository */
};

/*
 * Which rules can match a path, by the bytes their quick checks look at
 * (policy_finalize builds it): bitmaps of rule indices, @words 64-bit words
 * each.  A rule with a quick byte is in one bitmap of @by (its quick_at, 0 for
 * an exact or 1 for a casefold rule, the byte); a rule without one is in
 * @always.  The candidates for a path are @always and the six bitmaps its
 * bytes select, a few rules where the scan visited every one.  It costs
 * 6 * 256 * 8 bytes per 64 rules (12 KiB), and holds only while the rules are
 * not changed after policy_finalize(): it is checked by their count alone.
 */
struct rule_index {
	size_t nrules; /* the rules it was built for: used only while p->nrules is */
	size_t words;
	uint64_t *always;
	uint64_t *by[3][2]; /* [quick_at][casefold]: 256 bitmaps each */
};

struct policy {
	struct rule *rules;
	size_t nrules, cap;
	struct rule_index index;
	enum policy_symlinks symlinks;
	enum policy_git git;
	uint64_t max_file_size; /* bytes; 0 = no limit */
	char *max_size_origin;	/* where max_file_size was set, or NULL */
	char digest[33];	/* computed by policy_finalize() */
};

/* Append a rule; takes nothing over from the caller (copies @text and @origin).
 * Returns 0, -ENOMEM, or -EINVAL with *why set for a bad pattern. */
int policy_add_rule(struct policy *p, enum rule_action action, const char *text, size_t len,
		    bool casefold, bool protect, bool weak, const char *origin, const char **why);

/* Compute the digest once every rule and setting is in place.  0 or -ENOMEM. */
int policy_finalize(struct policy *p);

/* The name of an action as policy_rule_info and snapshots spell it. */
const char *rule_action_name(enum rule_action a);

/* Decide one path and report the deciding rule's index (SIZE_MAX for none, or for
 * max_file_size).  Uses the rule index once policy_finalize() built it. */
enum policy_decision policy_decide_rule(const struct policy *p, const char *path, size_t len,
					bool is_dir, uint64_t size, size_t *rule);

/* The same decision by matching every rule in turn (pattern_match alone: no
 * index, no quick byte, no literal search): the reference the indexed
 * decision must always agree with (tests/unit), and what decides while a
 * policy has no index. */
enum policy_decision policy_decide_rule_scan(const struct policy *p, const char *path, size_t len,
					     bool is_dir, uint64_t size, size_t *rule);

#endif
