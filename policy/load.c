/* load.c - policy YAML files (libyaml), layering and snapshots (see policy.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "policy/rules.h"

/* policy/default.yml, embedded by policy/embed.py. */
extern const char policy_default_yml[];
extern const size_t policy_default_yml_len;

#define BUILTIN_NAME   "built-in default"
#define FILE_SIZE_MAX  (1024 * 1024) /* a policy is a page of patterns, not a data set */
#define FILE_RULES_MAX 10000
/* The deepest nesting of collections a policy needs is 3 (the top mapping, the
 * rules: list, a rule); libyaml's scanner and composer take time quadratic in
 * the depth of flow collections ('[' * 100000 took 25 s), so anything deeper is
 * refused before they see it. */
#define FILE_DEPTH_MAX 16

enum layer {
	LAYER_BUILTIN,
	LAYER_USER,
	LAYER_REPO,
	LAYER_EXPLICIT,
	LAYER_SNAPSHOT, /* a workspace's policy.yml: the only place rules: is read */
};

/* What one file says besides its rules, and where, for the layering checks. */
struct file_settings {
	bool extends_none;
	bool has_symlinks, has_git, has_max;
	enum policy_symlinks symlinks;
	enum policy_git git;
	uint64_t max_file_size;
	yaml_mark_t extends_mark, symlinks_mark, git_mark, max_mark;
};

struct loader {
	const char *name; /* the file as errors and origins name it */
	enum layer layer;
	yaml_document_t *doc;
	struct policy *p; /* rules are appended here */
	struct file_settings *fs;
	struct policy_error *err;
	bool casefold; /* the file's case: */
};

static void set_error(struct policy_error *err, const char *file, unsigned line, unsigned col,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* @name into @out (@size bytes) as it is, or, when it holds a control character
 * (a newline would split the one-line error), in double quotes with C escapes
 * as git quotes paths (cli/changes.c changes_quote): '"', '\\', control bytes and
 * bytes past ASCII escaped.  Truncated at an escape's boundary. */
static void quote_name(char *out, size_t size, const char *name)
{
	bool plain = true;
	for (const unsigned char *s = (const unsigned char *)name; *s && plain; s++)
		plain = *s >= 0x20 && *s != 0x7f;
	if (plain) {
		snprintf(out, size, "%s", name);
		return;
	}
	size_t o = 0;
	out[o++] = '"';
	for (const unsigned char *s = (const unsigned char *)name; *s && o + 6 < size; s++) {
		static const char esc[] = "\a\b\t\n\v\f\r";
		const char *e = *s >= '\a' && *s <= '\r' ? strchr(esc, *s) : NULL;
		if (*s == '"' || *s == '\\') {
			out[o++] = '\\';
			out[o++] = (char)*s;
		} else if (e) {
			out[o++] = '\\';
			out[o++] = "abtnvfr"[e - esc];
		} else if (*s < 0x20 || *s >= 0x7f) {
			o += (size_t)snprintf(out + o, size - o, "\\%03o", *s);
		} else {
			out[o++] = (char)*s;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
}

static void set_error(struct policy_error *err, const char *file, unsigned line, unsigned col,
		      const char *fmt, ...)
{
	if (!err)
		return;
	quote_name(err->file, sizeof(err->file), file);
	err->line = line;
	err->column = col;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	/* One line, whatever the quoted YAML value held. */
	for (char *c = err->message; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
}

/* libyaml marks are 0-based. */
#define AT(ld, mark) (ld)->err, (ld)->name, (unsigned)(mark).line + 1, (unsigned)(mark).column + 1

static const char *node_type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* A plain empty scalar or "~"/"null": the key is there without a value. */
static bool is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = scalar(n);
	return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	       !strcmp(s, "NULL");
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	size_t row[65];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The known word nearest to @word, if near enough to be a typo. */
static const char *nearest(const char *word, const char *const *known)
{
	const char *best = NULL;
	size_t bestd = SIZE_MAX;
	for (size_t i = 0; known[i]; i++) {
		size_t d = edit_distance(word, known[i]);
		if (d < bestd) {
			bestd = d;
			best = known[i];
		}
	}
	size_t len = strlen(word);
	return bestd <= (len < 6 ? 1 : len < 10 ? 2 : 3) ? best : NULL;
}

static int unknown_key(struct loader *ld, const yaml_node_t *key, const char *where,
		       const char *const *known)
{
	const char *near = nearest(scalar(key), known);
	if (near)
		set_error(AT(ld, key->start_mark), "unknown key '%s'%s (did you mean '%s'?)",
			  scalar(key), where, near);
	else
		set_error(AT(ld, key->start_mark), "unknown key '%s'%s", scalar(key), where);
	return -EINVAL;
}

/* Map a scalar to one of @words (NULL-terminated) and return its index, or error. */
static int one_of(struct loader *ld, const char *key, const yaml_node_t *v,
		  const char *const *words, const char *list)
{
	if (v->type == YAML_SCALAR_NODE)
		for (int i = 0; words[i]; i++)
			if (!strcmp(scalar(v), words[i]))
				return i;
	if (v->type == YAML_SCALAR_NODE)
		set_error(AT(ld, v->start_mark), "'%s' must be one of %s, not '%s'", key, list,
			  scalar(v));
	else
		set_error(AT(ld, v->start_mark), "'%s' must be one of %s, not %s", key, list,
			  node_type_name(v));
	return -EINVAL;
}

static int parse_bool(struct loader *ld, const char *key, const yaml_node_t *v, bool *out)
{
	static const char *const words[] = {"false", "true", NULL};
	int i = one_of(ld, key, v, words, "true, false");
	if (i < 0)
		return i;
	*out = i == 1;
	return 0;
}

/* The largest max_file_size: the largest file size (off_t). */
#define MAX_FILE_SIZE_LIMIT ((uint64_t)INT64_MAX)

static int parse_size(struct loader *ld, const yaml_node_t *v, uint64_t *out)
{
	const char *why = "expected a number of bytes, optionally with a K, M or G suffix";
	if (v->type != YAML_SCALAR_NODE) {
		set_error(AT(ld, v->start_mark), "'max_file_size': %s, not %s", why,
			  node_type_name(v));
		return -EINVAL;
	}
	const char *s = scalar(v);
	uint64_t n = 0;
	size_t i = 0;
	bool big = false; /* a number, but more than MAX_FILE_SIZE_LIMIT bytes */
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		if (n > (MAX_FILE_SIZE_LIMIT - (uint64_t)(s[i] - '0')) / 10)
			big = true;
		else
			n = n * 10 + (uint64_t)(s[i] - '0');
	}
	if (i == 0)
		goto bad;
	unsigned shift = 0;
	switch (s[i]) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case '\0':
		break;
	default:
		goto bad;
	}
	if (shift && s[i + 1] != '\0')
		goto bad;
	if (big || n > (MAX_FILE_SIZE_LIMIT >> shift)) {
		set_error(AT(ld, v->start_mark),
			  "'max_file_size': '%s' is too large (at most %llu bytes, the largest "
			  "file size; 0 for no limit)",
			  s, (unsigned long long)MAX_FILE_SIZE_LIMIT);
		return -EINVAL;
	}
	*out = n << shift;
	return 0;
bad:
	set_error(AT(ld, v->start_mark), "'max_file_size': %s, not '%s'", why, s);
	return -EINVAL;
}

/* Origins must survive a YAML round trip: keep valid UTF-8, replace the rest and
 * control characters with '?'. */
static char *clean_origin(const char *name, unsigned line)
{
	size_t nl = strlen(name);
	char *out = malloc(nl + 24);
	if (!out)
		return NULL;
	size_t o = 0;
	const unsigned char *s = (const unsigned char *)name;
	for (size_t i = 0; i < nl;) {
		unsigned char c = s[i];
		size_t n = c < 0x80		? 1
			   : (c & 0xe0) == 0xc0 ? 2
			   : (c & 0xf0) == 0xe0 ? 3
			   : (c & 0xf8) == 0xf0 ? 4
						: 0;
		bool ok = n > 0 && i + n <= nl && !(n == 1 && (c < 0x20 || c == 0x7f));
		for (size_t k = 1; ok && k < n; k++)
			ok = (s[i + k] & 0xc0) == 0x80;
		if (ok && n == 2 && c < 0xc2)
			ok = false; /* overlong */
		if (ok && n == 3) {
			unsigned cp =
			    ((c & 0x0fu) << 12) | ((s[i + 1] & 0x3fu) << 6) | (s[i + 2] & 0x3fu);
			ok = cp >= 0x800 && !(cp >= 0xd800 && cp <= 0xdfff);
		}
		if (ok && n == 4) {
			unsigned cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3fu) << 12) |
				      ((s[i + 2] & 0x3fu) << 6) | (s[i + 3] & 0x3fu);
			ok = cp >= 0x10000 && cp <= 0x10ffff;
		}
		if (!ok) {
			out[o++] = '?';
			i++;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	snprintf(out + o, 24, ":%u", line);
	return out;
}

/* Add one rule from a list item; @action is the list's positive action. */
static int add_item(struct loader *ld, const yaml_node_t *item, enum rule_action action,
		    bool secret, const char *key)
{
	if (item->type != YAML_SCALAR_NODE) {
		set_error(AT(ld, item->start_mark), "'%s' items must be patterns (strings), not %s",
			  key, node_type_name(item));
		return -EINVAL;
	}
	const char *text = scalar(item);
	size_t len = item->data.scalar.length;
	if (text[0] == '!') {
		if (action == RULE_UNHIDE) {
			set_error(
			    AT(ld, item->start_mark),
			    "bad pattern '%s': '!' has no meaning in 'show' (hide with 'hide')",
			    text);
			return -EINVAL;
		}
		action = action == RULE_HIDE ? RULE_UNHIDE : RULE_WRITABLE;
		text++;
		len--;
	}
	bool positive = action == RULE_HIDE || action == RULE_READONLY;
	bool protect, weak = ld->layer == LAYER_REPO;
	switch (ld->layer) {
	case LAYER_BUILTIN:
		protect = secret;
		break;
	case LAYER_REPO:
		protect = false;
		break;
	default:
		protect = true;
		break;
	}
	if (ld->p->nrules >= FILE_RULES_MAX) {
		set_error(AT(ld, item->start_mark), "more than %d rules", FILE_RULES_MAX);
		return -EINVAL;
	}
	char *origin = clean_origin(ld->name, (unsigned)item->start_mark.line + 1);
	if (!origin)
		return -ENOMEM;
	const char *why = NULL;
	int rc = policy_add_rule(ld->p, action, text, len, positive && ld->casefold, protect, weak,
				 origin, &why);
	free(origin);
	if (rc == -EINVAL)
		set_error(AT(ld, item->start_mark), "bad pattern '%s': %s", scalar(item), why);
	return rc;
}

static int add_list(struct loader *ld, const yaml_node_t *key, const yaml_node_t *v,
		    enum rule_action action, bool secret)
{
	if (is_null(v))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE) {
		set_error(AT(ld, v->start_mark), "'%s' must be a list of patterns, not %s",
			  scalar(key), node_type_name(v));
		return -EINVAL;
	}
	for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
	     it++) {
		int rc =
		    add_item(ld, yaml_document_get_node(ld->doc, *it), action, secret, scalar(key));
		if (rc < 0)
			return rc;
	}
	return 0;
}

static const char *const rule_keys[] = {"action", "pattern", "case", "protect",
					"weak",	  "origin",  NULL};

/* One entry of `rules:`, the snapshot form. */
static int add_rule_entry(struct loader *ld, const yaml_node_t *m)
{
	if (m->type != YAML_MAPPING_NODE) {
		set_error(AT(ld, m->start_mark),
			  "'rules' items must be mappings with 'action' and 'pattern', not %s",
			  node_type_name(m));
		return -EINVAL;
	}
	static const char *const actions[] = {"hide", "show", "readonly", "writable", NULL};
	static const char *const cases[] = {"sensitive", "insensitive", NULL};
	int action = -1, fold = -1;
	const yaml_node_t *pattern = NULL;
	const char *origin = NULL;
	bool protect = false, weak = false, seen[6] = {0};
	for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *v = yaml_document_get_node(ld->doc, pr->value);
		if (k->type != YAML_SCALAR_NODE) {
			set_error(AT(ld, k->start_mark), "expected a key name, not %s",
				  node_type_name(k));
			return -EINVAL;
		}
		int ki = 0;
		while (rule_keys[ki] && strcmp(rule_keys[ki], scalar(k)))
			ki++;
		if (!rule_keys[ki])
			return unknown_key(ld, k, " in a rule", rule_keys);
		if (seen[ki]) {
			set_error(AT(ld, k->start_mark), "duplicate key '%s'", scalar(k));
			return -EINVAL;
		}
		seen[ki] = true;
		int rc = 0;
		switch (ki) {
		case 0:
			rc = action =
			    one_of(ld, "action", v, actions, "hide, show, readonly, writable");
			break;
		case 1:
			if (v->type != YAML_SCALAR_NODE) {
				set_error(AT(ld, v->start_mark),
					  "'pattern' must be a string, not %s", node_type_name(v));
				return -EINVAL;
			}
			pattern = v;
			break;
		case 2:
			rc = fold = one_of(ld, "case", v, cases, "sensitive, insensitive");
			break;
		case 3:
			rc = parse_bool(ld, "protect", v, &protect);
			break;
		case 4:
			rc = parse_bool(ld, "weak", v, &weak);
			break;
		case 5:
			if (v->type != YAML_SCALAR_NODE) {
				set_error(AT(ld, v->start_mark),
					  "'origin' must be a string, not %s", node_type_name(v));
				return -EINVAL;
			}
			origin = scalar(v);
			break;
		}
		if (rc < 0)
			return rc;
	}
	if (action < 0 || !pattern) {
		set_error(AT(ld, m->start_mark), "a rule needs both 'action' and 'pattern'");
		return -EINVAL;
	}
	bool positive = action == RULE_HIDE || action == RULE_READONLY;
	if (fold < 0)
		fold = positive && ld->casefold;
	if (ld->p->nrules >= FILE_RULES_MAX) {
		set_error(AT(ld, m->start_mark), "more than %d rules", FILE_RULES_MAX);
		return -EINVAL;
	}
	char *o = origin ? strdup(origin)
			 : clean_origin(ld->name, (unsigned)pattern->start_mark.line + 1);
	if (!o)
		return -ENOMEM;
	const char *why = NULL;
	int rc = policy_add_rule(ld->p, (enum rule_action)action, scalar(pattern),
				 pattern->data.scalar.length, fold == 1, protect, weak, o, &why);
	free(o);
	if (rc == -EINVAL)
		set_error(AT(ld, pattern->start_mark), "bad pattern '%s': %s", scalar(pattern),
			  why);
	return rc;
}

static const char *const top_keys[] = {"version", "extends",	   "case",  "hide",
				       "secrets", "readonly",	   "show",  "symlinks",
				       "git",	  "max_file_size", "rules", NULL};
/* What a policy file may say: all but rules:, which only a snapshot holds. */
static const char *const file_keys[] = {"version", "extends",	    "case", "hide",
					"secrets", "readonly",	    "show", "symlinks",
					"git",	   "max_file_size", NULL};
enum top_key {
	K_VERSION,
	K_EXTENDS,
	K_CASE,
	K_HIDE,
	K_SECRETS,
	K_READONLY,
	K_SHOW,
	K_SYMLINKS,
	K_GIT,
	K_MAX,
	K_RULES,
	K_COUNT,
};

static int load_setting(struct loader *ld, enum top_key ki, const yaml_node_t *k,
			const yaml_node_t *v)
{
	static const char *const extends[] = {"default", "none", NULL};
	static const char *const symlinks[] = {"hide", "allow", NULL};
	static const char *const git[] = {"hidden", "private", "readonly", NULL};
	struct file_settings *fs = ld->fs;
	int rc = 0;
	switch (ki) {
	case K_EXTENDS:
		rc = one_of(ld, "extends", v, extends, "default, none");
		fs->extends_none = rc == 1;
		fs->extends_mark = v->start_mark;
		break;
	case K_SYMLINKS:
		rc = one_of(ld, "symlinks", v, symlinks, "hide, allow");
		fs->has_symlinks = true;
		fs->symlinks = (enum policy_symlinks)rc;
		fs->symlinks_mark = v->start_mark;
		break;
	case K_GIT:
		rc = one_of(ld, "git", v, git, "hidden, private, readonly");
		fs->has_git = true;
		fs->git = (enum policy_git)rc;
		fs->git_mark = v->start_mark;
		break;
	case K_MAX:
		rc = parse_size(ld, v, &fs->max_file_size);
		fs->has_max = true;
		fs->max_mark = v->start_mark;
		break;
	case K_HIDE:
		return add_list(ld, k, v, RULE_HIDE, false);
	case K_SECRETS:
		return add_list(ld, k, v, RULE_HIDE, true);
	case K_READONLY:
		return add_list(ld, k, v, RULE_READONLY, false);
	case K_SHOW:
		return add_list(ld, k, v, RULE_UNHIDE, false);
	case K_RULES:
		if (is_null(v))
			return 0;
		if (v->type != YAML_SEQUENCE_NODE) {
			set_error(AT(ld, v->start_mark), "'rules' must be a list, not %s",
				  node_type_name(v));
			return -EINVAL;
		}
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++) {
			rc = add_rule_entry(ld, yaml_document_get_node(ld->doc, *it));
			if (rc < 0)
				return rc;
		}
		return 0;
	default: /* version and case are read first */
		return 0;
	}
	return rc < 0 ? rc : 0;
}

static int load_root(struct loader *ld, const yaml_node_t *root)
{
	if (root->type != YAML_MAPPING_NODE) {
		set_error(AT(ld, root->start_mark),
			  "expected a mapping of policy keys (version, hide, show, ...), not %s",
			  node_type_name(root));
		return -EINVAL;
	}
	const yaml_node_t *keyed[K_COUNT][2] = {{0}};
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
	     pr < root->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *v = yaml_document_get_node(ld->doc, pr->value);
		if (k->type != YAML_SCALAR_NODE) {
			set_error(AT(ld, k->start_mark), "expected a key name, not %s",
				  node_type_name(k));
			return -EINVAL;
		}
		int ki = 0;
		while (top_keys[ki] && strcmp(top_keys[ki], scalar(k)))
			ki++;
		if (ki == K_RULES && ld->layer != LAYER_SNAPSHOT)
			return unknown_key(ld, k,
					   " (only a workspace's policy snapshot holds rules; "
					   "say hide, secrets, readonly or show)",
					   file_keys);
		if (!top_keys[ki])
			return unknown_key(ld, k, "",
					   ld->layer == LAYER_SNAPSHOT ? top_keys : file_keys);
		if (keyed[ki][0]) {
			set_error(AT(ld, k->start_mark), "duplicate key '%s'", scalar(k));
			return -EINVAL;
		}
		keyed[ki][0] = k;
		keyed[ki][1] = v;
	}
	/* version and case govern everything else, wherever they are written. */
	if (keyed[K_VERSION][0]) {
		const yaml_node_t *v = keyed[K_VERSION][1];
		if (v->type != YAML_SCALAR_NODE || strcmp(scalar(v), "1")) {
			set_error(AT(ld, v->start_mark),
				  "unsupported version '%s' (this agentfs reads version 1)",
				  v->type == YAML_SCALAR_NODE ? scalar(v) : node_type_name(v));
			return -EINVAL;
		}
	}
	ld->casefold = true;
	if (keyed[K_CASE][0]) {
		static const char *const cases[] = {"insensitive", "sensitive", NULL};
		int rc = one_of(ld, "case", keyed[K_CASE][1], cases, "insensitive, sensitive");
		if (rc < 0)
			return rc;
		ld->casefold = rc == 0;
	}
	/* Everything else in document order, so rules keep the order they are read in. */
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
	     pr < root->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *v = yaml_document_get_node(ld->doc, pr->value);
		int ki = 0;
		while (strcmp(top_keys[ki], scalar(k)))
			ki++;
		int rc = load_setting(ld, (enum top_key)ki, k, v);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/*
 * A first pass over libyaml's events that refuses collections nested deeper
 * than FILE_DEPTH_MAX, stopping at the first one: its cost is linear in the text
 * up to there.  A syntax error ends the pass quietly; the loading pass reports
 * it.  0, -EINVAL with @err filled, or -ENOMEM.
 */
static int check_depth(const char *name, const char *text, size_t len, struct policy_error *err)
{
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	int rc = 0;
	unsigned depth = 0;
	for (bool done = false; !done;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev)) {
			if (parser.error == YAML_MEMORY_ERROR)
				rc = -ENOMEM;
			break;
		}
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > FILE_DEPTH_MAX) {
				set_error(err, name, (unsigned)ev.start_mark.line + 1,
					  (unsigned)ev.start_mark.column + 1,
					  "nested deeper than %d levels", FILE_DEPTH_MAX);
				rc = -EINVAL;
				done = true;
			}
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* Parse one file's text: its rules are appended to @p, its settings go to @fs. */
static int parse_text(const char *name, const char *text, size_t len, enum layer layer,
		      struct policy *p, struct file_settings *fs, struct policy_error *err)
{
	memset(fs, 0, sizeof(*fs));
	if (len > FILE_SIZE_MAX) {
		set_error(err, name, 0, 0, "larger than %d bytes", FILE_SIZE_MAX);
		return -EFBIG;
	}
	int rc = check_depth(name, text, len, err);
	if (rc < 0)
		return rc;
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		if (parser.error == YAML_MEMORY_ERROR) {
			rc = -ENOMEM;
		} else {
			yaml_mark_t m = parser.problem_mark;
			bool alias = (parser.problem && strstr(parser.problem, "alias")) ||
				     (parser.context && strstr(parser.context, "alias"));
			set_error(
			    err, name, (unsigned)m.line + 1, (unsigned)m.column + 1,
			    "invalid YAML: %s%s%s%s", parser.problem ? parser.problem : "error",
			    parser.context ? " " : "", parser.context ? parser.context : "",
			    alias ? " (quote patterns that start with '*', e.g. \"*.pem\")" : "");
			rc = -EINVAL;
		}
		yaml_parser_delete(&parser);
		return rc;
	}
	struct loader ld = {
	    .name = name,
	    .layer = layer,
	    .doc = &doc,
	    .p = p,
	    .fs = fs,
	    .err = err,
	};
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root) {
		rc = load_root(&ld, root);
		if (rc == 0) {
			/* One document per file: a second one would be silently ignored. */
			yaml_document_t next;
			if (!yaml_parser_load(&parser, &next)) {
				yaml_mark_t m = parser.problem_mark;
				set_error(err, name, (unsigned)m.line + 1, (unsigned)m.column + 1,
					  "invalid YAML: %s",
					  parser.problem ? parser.problem : "error");
				rc = parser.error == YAML_MEMORY_ERROR ? -ENOMEM : -EINVAL;
			} else {
				yaml_node_t *r2 = yaml_document_get_root_node(&next);
				if (r2) {
					set_error(AT(&ld, r2->start_mark),
						  "more than one YAML document");
					rc = -EINVAL;
				}
				yaml_document_delete(&next);
			}
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

static struct policy *policy_alloc(void)
{
	struct policy *p = calloc(1, sizeof(*p));
	if (p) {
		p->symlinks = POLICY_SYMLINKS_HIDE;
		p->git = POLICY_GIT_HIDDEN;
	}
	return p;
}

/* Move @src's rules to the end of @dst. */
static int move_rules(struct policy *dst, struct policy *src)
{
	if (src->nrules == 0)
		return 0;
	if (dst->nrules + src->nrules > dst->cap) {
		size_t cap = dst->nrules + src->nrules;
		struct rule *r = realloc(dst->rules, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		dst->rules = r;
		dst->cap = cap;
	}
	memcpy(dst->rules + dst->nrules, src->rules, src->nrules * sizeof(*src->rules));
	dst->nrules += src->nrules;
	src->nrules = 0;
	return 0;
}

/* Put one parsed file on top of @dst: settings first (a repository may only
 * tighten them), then its rules. */
static int apply_layer(struct policy *dst, struct policy *frag, const struct file_settings *fs,
		       enum layer layer, const char *name, struct policy_error *err)
{
	static const char *const symlinks[] = {"hide", "allow"};
	static const char *const git[] = {"hidden", "private", "readonly"};
	if (layer == LAYER_REPO) {
		const yaml_mark_t *m = NULL;
		const char *what = NULL;
		char now[32] = "";
		if (fs->extends_none) {
			set_error(err, name, (unsigned)fs->extends_mark.line + 1,
				  (unsigned)fs->extends_mark.column + 1,
				  "a repository's .agentfs.yml cannot say 'extends: none' (it may "
				  "only add rules)");
			return -EPERM;
		}
		if (fs->has_symlinks && fs->symlinks > dst->symlinks) {
			m = &fs->symlinks_mark, what = "symlinks";
			snprintf(now, sizeof(now), "%s", symlinks[dst->symlinks]);
		} else if (fs->has_git && fs->git > dst->git) {
			m = &fs->git_mark, what = "git";
			snprintf(now, sizeof(now), "%s", git[dst->git]);
		} else if (fs->has_max && dst->max_file_size &&
			   (fs->max_file_size == 0 || fs->max_file_size > dst->max_file_size)) {
			m = &fs->max_mark, what = "max_file_size";
			snprintf(now, sizeof(now), "%llu", (unsigned long long)dst->max_file_size);
		}
		if (m) {
			set_error(err, name, (unsigned)m->line + 1, (unsigned)m->column + 1,
				  "a repository's .agentfs.yml cannot loosen '%s' (in force: %s)",
				  what, now);
			return -EPERM;
		}
	}
	if (fs->has_symlinks)
		dst->symlinks = fs->symlinks;
	if (fs->has_git)
		dst->git = fs->git;
	if (fs->has_max) {
		dst->max_file_size = fs->max_file_size;
		free(dst->max_size_origin);
		dst->max_size_origin = clean_origin(name, (unsigned)fs->max_mark.line + 1);
		if (!dst->max_size_origin)
			return -ENOMEM;
	}
	return move_rules(dst, frag);
}

/* Parse one file into a fragment (a policy holding only its rules). */
static int parse_fragment(const char *name, const char *text, size_t len, enum layer layer,
			  struct policy **frag, struct file_settings *fs, struct policy_error *err)
{
	*frag = policy_alloc();
	if (!*frag)
		return -ENOMEM;
	int rc = parse_text(name, text, len, layer, *frag, fs, err);
	if (rc < 0) {
		policy_free(*frag);
		*frag = NULL;
	}
	return rc;
}

static int load_builtin(struct policy *dst, struct policy_error *err)
{
	struct policy *frag;
	struct file_settings fs;
	int rc = parse_fragment(BUILTIN_NAME, policy_default_yml, policy_default_yml_len,
				LAYER_BUILTIN, &frag, &fs, err);
	if (rc == 0)
		rc = apply_layer(dst, frag, &fs, LAYER_BUILTIN, BUILTIN_NAME, err);
	policy_free(frag);
	return rc;
}

int policy_new_default(struct policy **out)
{
	struct policy *p = policy_alloc();
	if (!p)
		return -ENOMEM;
	struct policy_error err;
	int rc = load_builtin(p, &err);
	if (rc == 0)
		rc = policy_finalize(p);
	if (rc < 0) {
		policy_free(p);
		/* The embedded file is tested; only memory can fail here. */
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

/* Read a whole file (following symlinks unless @nofollow).  -ENOENT passes through
 * silently; other failures fill @err. */
static int read_file(const char *path, bool nofollow, char **text, size_t *len,
		     struct policy_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return -ENOENT;
		if (e == ELOOP && nofollow)
			set_error(err, path, 0, 0, "is a symlink; it must be a regular file");
		else
			set_error(err, path, 0, 0, "cannot open: %s", strerror(e));
		return -e;
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		set_error(err, path, 0, 0, "cannot stat: %s", strerror(-rc));
	} else if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		set_error(err, path, 0, 0, "not a regular file");
	} else if (st.st_size > FILE_SIZE_MAX) {
		rc = -EFBIG;
		set_error(err, path, 0, 0, "larger than %d bytes", FILE_SIZE_MAX);
	}
	if (rc < 0) {
		close(fd);
		return rc;
	}
	char *buf = malloc(FILE_SIZE_MAX + 1);
	size_t n = 0;
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, FILE_SIZE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			set_error(err, path, 0, 0, "cannot read: %s", strerror(-rc));
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > FILE_SIZE_MAX) {
			rc = -EFBIG;
			set_error(err, path, 0, 0, "larger than %d bytes", FILE_SIZE_MAX);
			break;
		}
	}
	close(fd);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return 0;
}

/* A file read and parsed, waiting for its place in the layering. */
struct layer_file {
	struct policy *frag;
	struct file_settings fs;
	char *name;
	bool present;
};

static void layer_file_free(struct layer_file *lf)
{
	policy_free(lf->frag);
	free(lf->name);
	lf->frag = NULL;
	lf->name = NULL;
	lf->present = false;
}

static int read_layer(const char *path, bool nofollow, bool optional, enum layer layer,
		      struct layer_file *lf, struct policy_error *err)
{
	memset(lf, 0, sizeof(*lf));
	char *text = NULL;
	size_t len = 0;
	int rc = read_file(path, nofollow, &text, &len, err);
	if (rc == -ENOENT && optional)
		return 0;
	if (rc == -ENOENT)
		set_error(err, path, 0, 0, "cannot open: %s", strerror(ENOENT));
	if (rc < 0)
		return rc;
	lf->name = strdup(path);
	rc = lf->name ? parse_fragment(path, text, len, layer, &lf->frag, &lf->fs, err) : -ENOMEM;
	free(text);
	if (rc < 0) {
		layer_file_free(lf);
		return rc;
	}
	lf->present = true;
	return 0;
}

static int build(struct layer_file **files, const enum layer *layers, size_t n, bool builtin,
		 struct policy **out, struct policy_error *err)
{
	struct policy *p = policy_alloc();
	if (!p)
		return -ENOMEM;
	int rc = builtin ? load_builtin(p, err) : 0;
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (files[i]->present)
			rc = apply_layer(p, files[i]->frag, &files[i]->fs, layers[i],
					 files[i]->name, err);
	if (rc == 0)
		rc = policy_finalize(p);
	if (rc < 0) {
		policy_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

static int load_string(const char *name, const char *text, size_t len, enum layer layer,
		       struct policy **out, struct policy_error *err)
{
	struct layer_file lf = {.present = true};
	lf.name = strdup(name);
	if (!lf.name)
		return -ENOMEM;
	int rc = parse_fragment(name, text, len, layer, &lf.frag, &lf.fs, err);
	if (rc == 0) {
		struct layer_file *files[] = {&lf};
		enum layer layers[] = {layer};
		rc = build(files, layers, 1, !lf.fs.extends_none, out, err);
	}
	layer_file_free(&lf);
	return rc;
}

static int load_file(const char *path, enum layer layer, struct policy **out,
		     struct policy_error *err)
{
	struct layer_file lf;
	int rc = read_layer(path, false, false, layer, &lf, err);
	if (rc < 0)
		return rc;
	struct layer_file *files[] = {&lf};
	enum layer layers[] = {layer};
	rc = build(files, layers, 1, !lf.fs.extends_none, out, err);
	layer_file_free(&lf);
	return rc;
}

int policy_load_string(const char *name, const char *text, size_t len, struct policy **out,
		       struct policy_error *err)
{
	return load_string(name, text, len, LAYER_EXPLICIT, out, err);
}

int policy_load_file(const char *path, struct policy **out, struct policy_error *err)
{
	return load_file(path, LAYER_EXPLICIT, out, err);
}

int policy_load_snapshot_string(const char *name, const char *text, size_t len, struct policy **out,
				struct policy_error *err)
{
	return load_string(name, text, len, LAYER_SNAPSHOT, out, err);
}

int policy_load_snapshot(const char *path, struct policy **out, struct policy_error *err)
{
	return load_file(path, LAYER_SNAPSHOT, out, err);
}

/* ${XDG_CONFIG_HOME:-$HOME/.config}/agentfs/policy.yml, or NULL if neither is set
 * (XDG_CONFIG_HOME counts only when absolute, per the XDG base directory spec). */
static char *user_config_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char *path = NULL;
	int n;
	if (xdg && xdg[0] == '/')
		n = asprintf(&path, "%s/agentfs/policy.yml", xdg);
	else if (home && home[0])
		n = asprintf(&path, "%s/.config/agentfs/policy.yml", home);
	else
		return NULL;
	return n < 0 ? NULL : path;
}

int policy_load_effective(const char *repo_dir, const char *explicit_file, struct policy **out,
			  struct policy_error *err)
{
	struct layer_file user = {0}, repo = {0}, expl = {0};
	char *user_path = NULL, *repo_path = NULL;
	int rc = 0;

	if (explicit_file) {
		rc = read_layer(explicit_file, false, false, LAYER_EXPLICIT, &expl, err);
		if (rc < 0)
			goto out;
		if (expl.fs.extends_none) {
			struct layer_file *files[] = {&expl};
			enum layer layers[] = {LAYER_EXPLICIT};
			rc = build(files, layers, 1, false, out, err);
			goto out;
		}
	}
	user_path = user_config_path();
	if (user_path) {
		rc = read_layer(user_path, false, true, LAYER_USER, &user, err);
		if (rc < 0)
			goto out;
	}
	if (repo_dir) {
		if (asprintf(&repo_path, "%s/.agentfs.yml", repo_dir) < 0) {
			repo_path = NULL;
			rc = -ENOMEM;
			goto out;
		}
		/* The repository is not the person's: never follow its symlinks. */
		rc = read_layer(repo_path, true, true, LAYER_REPO, &repo, err);
		if (rc < 0)
			goto out;
	}
	struct layer_file *files[] = {&user, &repo, &expl};
	enum layer layers[] = {LAYER_USER, LAYER_REPO, LAYER_EXPLICIT};
	rc = build(files, layers, 3, !(user.present && user.fs.extends_none), out, err);
out:
	layer_file_free(&user);
	layer_file_free(&repo);
	layer_file_free(&expl);
	free(user_path);
	free(repo_path);
	return rc;
}

/* ---- Snapshots, written with libyaml's emitter so quoting is always right. ---- */

static int emit(yaml_emitter_t *e, yaml_event_t *ev)
{
	return yaml_emitter_emit(e, ev) ? 0 : -ENOMEM;
}

static int emit_str(yaml_emitter_t *e, const char *s, bool quoted)
{
	yaml_event_t ev;
	yaml_scalar_style_t style =
	    quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE;
	if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1,
					  style))
		return -ENOMEM;
	return emit(e, &ev);
}

static int emit_pair(yaml_emitter_t *e, const char *k, const char *v, bool quoted)
{
	int rc = emit_str(e, k, false);
	return rc ? rc : emit_str(e, v, quoted);
}

static int emit_rule(yaml_emitter_t *e, const struct rule *r)
{
	yaml_event_t ev;
	bool positive = r->action == RULE_HIDE || r->action == RULE_READONLY;
	if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_FLOW_MAPPING_STYLE))
		return -ENOMEM;
	int rc = emit(e, &ev);
	if (!rc)
		rc = emit_pair(e, "action", rule_action_name(r->action), false);
	if (!rc)
		rc = emit_pair(e, "pattern", r->text, true);
	if (!rc)
		rc = emit_pair(e, "case", r->pat.casefold ? "insensitive" : "sensitive", false);
	if (!rc)
		rc = emit_pair(e, positive ? "protect" : "weak",
			       (positive ? r->protect : r->weak) ? "true" : "false", false);
	if (!rc)
		rc = emit_pair(e, "origin", r->origin, true);
	if (!rc && !yaml_mapping_end_event_initialize(&ev))
		rc = -ENOMEM;
	return rc ? rc : emit(e, &ev);
}

int policy_snapshot(const struct policy *p, char **yaml_out)
{
	static const char *const symlinks[] = {"hide", "allow"};
	static const char *const git[] = {"hidden", "private", "readonly"};
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return -ENOMEM;
	fprintf(f,
		"# agentfs policy snapshot, digest %s: the complete policy, every rule in\n"
		"# order (the last matching rule wins) with the place it came from.\n",
		p->digest);
	fflush(f);

	yaml_emitter_t e;
	yaml_event_t ev;
	int rc = 0;
	if (!yaml_emitter_initialize(&e)) {
		fclose(f);
		free(buf);
		return -ENOMEM;
	}
	yaml_emitter_set_output_file(&e, f);
	yaml_emitter_set_unicode(&e, 1);
	yaml_emitter_set_width(&e, -1);
	char max[24];
	snprintf(max, sizeof(max), "%llu", (unsigned long long)p->max_file_size);

	if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(&e, &ev) ||
	    !yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || emit(&e, &ev) ||
	    !yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
	    emit(&e, &ev) || emit_pair(&e, "version", "1", false) ||
	    emit_pair(&e, "extends", "none", false) ||
	    emit_pair(&e, "symlinks", symlinks[p->symlinks], false) ||
	    emit_pair(&e, "git", git[p->git], false) ||
	    emit_pair(&e, "max_file_size", max, false) || emit_str(&e, "rules", false) ||
	    !yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE) ||
	    emit(&e, &ev))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < p->nrules; i++)
		rc = emit_rule(&e, &p->rules[i]);
	if (!rc && (!yaml_sequence_end_event_initialize(&ev) || emit(&e, &ev) ||
		    !yaml_mapping_end_event_initialize(&ev) || emit(&e, &ev) ||
		    !yaml_document_end_event_initialize(&ev, 1) || emit(&e, &ev) ||
		    !yaml_stream_end_event_initialize(&ev) || emit(&e, &ev)))
		rc = -ENOMEM;
	yaml_emitter_delete(&e);
	if (fclose(f) != 0 && !rc)
		rc = -ENOMEM;
	if (rc) {
		free(buf);
		return rc;
	}
	*yaml_out = buf;
	return 0;
}
