/* secrets.c - high-confidence credential patterns over added lines, path names and
 * commit messages (secrets.h). */
#include <errno.h>
#include <git2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/changes.h"
#include "cli/cli.h"
#include "cli/secrets.h"

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool in_set(unsigned char c, const char *extra)
{
	return is_alnum(c) || (c && strchr(extra, c));
}

static bool is_upper_b32(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7');
}

/* Count bytes of @s (up to @n) in [A-Za-z0-9] + @extra. */
static size_t run_of(const char *s, size_t n, const char *extra)
{
	size_t i = 0;
	while (i < n && in_set((unsigned char)s[i], extra))
		i++;
	return i;
}

/* Does a token start at @i (not inside a longer word)? */
static bool word_start(const char *l, size_t i)
{
	return i == 0 || !in_set((unsigned char)l[i - 1], "_-");
}

/* Every kind of secret, with the article it takes as it is said ("an AWS ...",
 * "an npm ...", "a PyPI ..."): a new kind comes with its article. */
enum kind {
	K_PRIVATE_KEY,
	K_AWS,
	K_GITHUB,
	K_GITLAB,
	K_SLACK,
	K_SLACK_WEBHOOK,
	K_NPM,
	K_PYPI,
	K_GOOGLE,
	K_STRIPE,
	K_OPENAI,
	K_ANTHROPIC,
	K_COUNT
};

static const struct {
	const char *article;
	const char *name;
} kinds[K_COUNT] = {
    [K_PRIVATE_KEY] = {"a", "private key block"},
    [K_AWS] = {"an", "AWS access key id"},
    [K_GITHUB] = {"a", "GitHub token"},
    [K_GITLAB] = {"a", "GitLab token"},
    [K_SLACK] = {"a", "Slack token"},
    [K_SLACK_WEBHOOK] = {"a", "Slack webhook URL"},
    [K_NPM] = {"an", "npm token"},
    [K_PYPI] = {"a", "PyPI token"},
    [K_GOOGLE] = {"a", "Google API key"},
    [K_STRIPE] = {"a", "Stripe live key"},
    [K_OPENAI] = {"an", "OpenAI API key"},
    [K_ANTHROPIC] = {"an", "Anthropic API key"},
};

const char *secrets_kind_name(size_t i)
{
	return i < K_COUNT ? kinds[i].name : NULL;
}

const char *secrets_kind_article(const char *kind)
{
	for (size_t i = 0; i < K_COUNT; i++)
		if (strcmp(kind, kinds[i].name) == 0)
			return kinds[i].article;
	return "a";
}

struct prefix_rule {
	const char *prefix;
	const char *extra; /* characters allowed besides [A-Za-z0-9] */
	size_t min;	   /* token characters required after the prefix */
	size_t max;	   /* at most (0: no limit); a longer run is another thing */
	enum kind kind;
};

static const struct prefix_rule prefix_rules[] = {
    {"ghp_", "", 36, 0, K_GITHUB},
    {"gho_", "", 36, 0, K_GITHUB},
    {"ghu_", "", 36, 0, K_GITHUB},
    {"ghs_", "", 36, 0, K_GITHUB},
    {"ghr_", "", 36, 0, K_GITHUB},
    {"github_pat_", "_", 60, 0, K_GITHUB},
    {"glpat-", "_-", 20, 0, K_GITLAB},
    {"xoxb-", "-", 10, 0, K_SLACK},
    {"xoxp-", "-", 10, 0, K_SLACK},
    {"xoxa-", "-", 10, 0, K_SLACK},
    {"xoxr-", "-", 10, 0, K_SLACK},
    {"xoxs-", "-", 10, 0, K_SLACK},
    {"npm_", "", 36, 0, K_NPM},
    {"pypi-AgEIcHlwaS5vcmc", "_-", 50, 0, K_PYPI},
    {"AIza", "_-", 35, 35, K_GOOGLE},
    {"sk_live_", "", 24, 0, K_STRIPE},
    {"rk_live_", "", 24, 0, K_STRIPE},
    {"sk-proj-", "_-", 40, 0, K_OPENAI},
    {"sk-ant-api03-", "_-", 80, 0, K_ANTHROPIC},
};

/* A new file at least this large (bytes) is looked at before its patch is
 * built (secrets_scan_diff): below it, a binary file's patch costs little. */
#define SECRETS_BINARY_PRECHECK (1u << 20)

/* The bytes a prefix rule starts with, so that the scan tries the rules only
 * at those (secrets_match runs for every byte of what it scans). */
static bool rule_first[256];
static pthread_once_t rule_first_once = PTHREAD_ONCE_INIT;

static void rule_first_init(void)
{
	for (size_t r = 0; r < sizeof(prefix_rules) / sizeof(prefix_rules[0]); r++)
		rule_first[(unsigned char)prefix_rules[r].prefix[0]] = true;
}

static const char *match_private_key(const char *l, size_t len)
{
	static const char begin[] = "-----BEGIN ";
	for (const char *p = l; (size_t)(p - l) + sizeof(begin) - 1 <= len; p++) {
		p = memmem(p, len - (size_t)(p - l), begin, sizeof(begin) - 1);
		if (!p)
			return NULL;
		const char *q = p + sizeof(begin) - 1, *end = l + len;
		/* "[RSA |EC |OPENSSH |ENCRYPTED |DSA |PGP ]PRIVATE KEY[ BLOCK]-----" */
		const char *dash = memmem(q, (size_t)(end - q), "-----", 5);
		if (!dash || dash - q > 40)
			continue;
		const char *pk = memmem(q, (size_t)(dash - q), "PRIVATE KEY", 11);
		if (pk)
			return kinds[K_PRIVATE_KEY].name;
	}
	return NULL;
}

const char *secrets_match(const char *l, size_t len)
{
	const char *k = match_private_key(l, len);
	if (k)
		return k;
	pthread_once(&rule_first_once, rule_first_init);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)l[i];
		/* AWS access key ids: a fixed prefix and 16 base32 capitals. */
		if ((c == 'A') && i + 20 <= len && word_start(l, i) &&
		    (memcmp(l + i, "AKIA", 4) == 0 || memcmp(l + i, "ASIA", 4) == 0 ||
		     memcmp(l + i, "ABIA", 4) == 0 || memcmp(l + i, "ACCA", 4) == 0)) {
			size_t j = 4;
			while (j < 20 && is_upper_b32((unsigned char)l[i + j]))
				j++;
			if (j == 20 && (i + 20 == len || !is_alnum((unsigned char)l[i + 20])))
				return kinds[K_AWS].name;
		}
		if (c == 'h' && len - i > 36 &&
		    memcmp(l + i, "https://hooks.slack.com/services/T", 34) == 0)
			return kinds[K_SLACK_WEBHOOK].name;
		if (!rule_first[c])
			continue;
		for (size_t r = 0; r < sizeof(prefix_rules) / sizeof(prefix_rules[0]); r++) {
			const struct prefix_rule *pr = &prefix_rules[r];
			if ((unsigned char)pr->prefix[0] != c)
				continue;
			size_t pl = strlen(pr->prefix);
			if (len - i < pl + pr->min || memcmp(l + i, pr->prefix, pl) != 0 ||
			    !word_start(l, i))
				continue;
			size_t run = run_of(l + i + pl, len - i - pl, pr->extra);
			if (run >= pr->min && (!pr->max || run <= pr->max))
				return kinds[pr->kind].name;
		}
	}
	return NULL;
}

void secrets_init(struct secrets *s, char **allow, size_t n_allow)
{
	memset(s, 0, sizeof(*s));
	s->allow = allow;
	s->n_allow = n_allow;
}

void secrets_clear(struct secrets *s)
{
	for (size_t i = 0; i < s->count; i++)
		free(s->items[i].path);
	free(s->items);
	s->items = NULL;
	s->count = 0;
}

/* Is @a "@where:@line"? */
static bool is_place(const char *a, const char *where, size_t wl, size_t line)
{
	char buf[32];
	snprintf(buf, sizeof(buf), ":%zu", line);
	return strncmp(a, where, wl) == 0 && strcmp(a + wl, buf) == 0;
}

static bool allowed(const struct secrets *s, enum secrets_place place, const char *path,
		    size_t line)
{
	size_t pl = strlen(path);
	for (size_t i = 0; i < s->n_allow; i++) {
		const char *a = s->allow[i];
		if (place == SECRETS_LINE && is_place(a, path, pl, line))
			return true;
		if (place == SECRETS_NAME && strcmp(a, path) == 0)
			return true;
		if (place == SECRETS_NAME) {
			/* the path as the refusal printed it (quoted, if odd) */
			char *q = changes_quote(path);
			bool same = q && strcmp(a, q) == 0;
			free(q);
			if (same)
				return true;
		}
		if (place == SECRETS_MESSAGE && strcmp(path, "-m") == 0 &&
		    is_place(a, path, pl, line))
			return true;
		if (place == SECRETS_MESSAGE && strcmp(path, "-m") != 0) {
			/* an abbreviated commit id, as git takes one: 7 or more */
			const char *colon = strchr(a, ':');
			size_t hl = colon ? (size_t)(colon - a) : 0;
			if (hl >= 7 && hl <= pl && strspn(a, "0123456789abcdef") == hl &&
			    is_place(a, path, hl, line))
				return true;
		}
	}
	return false;
}

static int record(struct secrets *s, enum secrets_place place, const char *path, size_t line,
		  const char *kind)
{
	if (allowed(s, place, path, line))
		return 0;
	for (size_t i = 0; i < s->count; i++)
		if (s->items[i].place == place && s->items[i].line == line &&
		    strcmp(s->items[i].path, path) == 0)
			return 0; /* the same place met again (in a later commit) */
	struct secrets_finding *n = realloc(s->items, (s->count + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->items = n;
	n[s->count].path = strdup(path);
	if (!n[s->count].path)
		return -ENOMEM;
	n[s->count].place = place;
	n[s->count].line = line;
	n[s->count].kind = kind;
	s->count++;
	return 0;
}

int secrets_scan_line(struct secrets *s, const char *path, size_t lineno, const char *line,
		      size_t len)
{
	const char *kind = secrets_match(line, len);
	return kind ? record(s, SECRETS_LINE, path, lineno, kind) : 0;
}

int secrets_scan_name(struct secrets *s, const char *path)
{
	const char *kind = secrets_match(path, strlen(path));
	return kind ? record(s, SECRETS_NAME, path, 0, kind) : 0;
}

int secrets_scan_message(struct secrets *s, const char *commit, const char *msg)
{
	size_t lineno = 1, len = strlen(msg);
	for (size_t start = 0; start < len; lineno++) {
		const char *nl = memchr(msg + start, '\n', len - start);
		size_t end = nl ? (size_t)(nl - msg) : len;
		const char *kind = secrets_match(msg + start, end - start);
		int r = kind ? record(s, SECRETS_MESSAGE, commit, lineno, kind) : 0;
		if (r < 0)
			return r;
		start = end + 1;
	}
	return 0;
}

/* Every line of a whole blob (binary files: no line-level diff exists). */
static int scan_blob(struct secrets *s, const char *path, const char *buf, size_t len)
{
	size_t lineno = 1;
	for (size_t start = 0; start < len;) {
		const char *nl = memchr(buf + start, '\n', len - start);
		size_t end = nl ? (size_t)(nl - buf) : len;
		int r = secrets_scan_line(s, path, lineno, buf + start, end - start);
		if (r < 0)
			return r;
		start = end + 1;
		lineno++;
	}
	return 0;
}

static int scan_patch(struct secrets *s, git_patch *p, const char *path)
{
	size_t hunks = git_patch_num_hunks(p);
	for (size_t h = 0; h < hunks; h++) {
		int lines = git_patch_num_lines_in_hunk(p, h);
		for (int k = 0; k < lines; k++) {
			const git_diff_line *l = NULL;
			if (git_patch_get_line_in_hunk(&l, p, h, (size_t)k) < 0)
				return -EIO;
			if (l->origin != GIT_DIFF_LINE_ADDITION)
				continue;
			size_t ll = l->content_len;
			if (ll && l->content[ll - 1] == '\n')
				ll--;
			int r = secrets_scan_line(s, path, (size_t)l->new_lineno, l->content, ll);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* The size of object @id of @repo from its header alone, 0 if unknown. */
static size_t object_size(git_repository *repo, const git_oid *id)
{
	git_odb *odb = NULL;
	size_t len = 0;
	git_object_t type;
	if (git_repository_odb(&odb, repo) < 0 || git_odb_read_header(&len, &type, odb, id) < 0) {
		git_error_clear();
		len = 0;
	}
	git_odb_free(odb);
	return len;
}

int secrets_scan_diff(struct secrets *s, git_diff *diff, git_repository *repo)
{
	size_t n = git_diff_num_deltas(diff);
	for (size_t i = 0; i < n; i++) {
		const git_diff_delta *d = git_diff_get_delta(diff, i);
		/* The names go wherever the diff goes (a patch's headers, a
		 * branch's trees), a deletion's and a rename's old one too. */
		int r = secrets_scan_name(s, d->old_file.path);
		if (r == 0 && strcmp(d->old_file.path, d->new_file.path) != 0)
			r = secrets_scan_name(s, d->new_file.path);
		if (r < 0)
			return r;
		if (d->status == GIT_DELTA_DELETED || d->new_file.mode == GIT_FILEMODE_COMMIT ||
		    d->new_file.mode == GIT_FILEMODE_TREE)
			continue;
		/* A binary file has no lines to diff: its whole new content is
		 * scanned.  A large one known binary as libgit2's diff would call
		 * it (a NUL in its first 8000 bytes) gets no patch here: a patch
		 * of a binary file with GIT_DIFF_SHOW_BINARY deflates all of it,
		 * which the export does again when it writes the patch.  (One
		 * that attributes make text is then scanned whole: more than its
		 * added lines.)  A small one, or one that looks like text, is
		 * left to the patch, as before. */
		const char *path = d->new_file.path;
		git_blob *b = NULL;
		git_patch *p = NULL;
		bool binary = d->flags & GIT_DIFF_FLAG_BINARY;
		if (!binary && !(d->flags & GIT_DIFF_FLAG_NOT_BINARY) &&
		    object_size(repo, &d->new_file.id) >= SECRETS_BINARY_PRECHECK) {
			if (git_blob_lookup(&b, repo, &d->new_file.id) == 0) {
				size_t sz = (size_t)git_blob_rawsize(b);
				binary = memchr(git_blob_rawcontent(b), 0, sz < 8000 ? sz : 8000) !=
					 NULL;
				if (!binary) {
					git_blob_free(b); /* the patch reads it again */
					b = NULL;
				}
			} else {
				git_error_clear();
			}
		}
		if (!binary) {
			if (git_patch_from_diff(&p, diff, i) < 0)
				return -EIO;
			binary = !p || (git_patch_get_delta(p)->flags & GIT_DIFF_FLAG_BINARY);
			if (!binary)
				r = scan_patch(s, p, path);
			git_patch_free(p);
		}
		if (binary) {
			if (!b && git_blob_lookup(&b, repo, &d->new_file.id) < 0)
				r = -EIO;
			else
				r = scan_blob(s, path, git_blob_rawcontent(b),
					      (size_t)git_blob_rawsize(b));
		}
		git_blob_free(b);
		if (r < 0)
			return r;
	}
	return 0;
}

size_t secrets_report(const struct secrets *s, const char *cmd)
{
	for (size_t i = 0; i < s->count; i++) {
		const struct secrets_finding *f = &s->items[i];
		const char *an = secrets_kind_article(f->kind);
		if (f->place == SECRETS_NAME) {
			char *q = changes_quote(f->path);
			const char *qp = q ? q : f->path;
			cli_error(cmd,
				  "%s: the path name looks like %s %s; not handed over "
				  "(--allow-secret %s lets this name through)",
				  qp, an, f->kind, qp);
			free(q);
		} else if (f->place == SECRETS_MESSAGE) {
			bool final = strcmp(f->path, "-m") == 0;
			char where[64];
			if (final)
				snprintf(where, sizeof(where), "the final commit's message (-m)");
			else
				snprintf(where, sizeof(where), "the agent's commit %.12s, message",
					 f->path);
			cli_error(cmd,
				  "%s, line %zu%s: looks like %s %s; not handed over "
				  "(--allow-secret %.12s:%zu lets this line through)",
				  where, f->line, f->line == 1 ? " (subject)" : "", an, f->kind,
				  f->path, f->line);
		} else {
			cli_error(
			    cmd,
			    "%s:%zu: looks like %s %s; not handed over (--allow-secret %s:%zu "
			    "lets this line through)",
			    f->path, f->line, an, f->kind, f->path, f->line);
		}
	}
	return s->count;
}

int secrets_scan_blob(struct secrets *s, const char *path, const char *buf, size_t len)
{
	return scan_blob(s, path, buf, len);
}
