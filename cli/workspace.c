/* workspace.c - a workspace's directory, its workspace.yml and its daemon's traces. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <mntent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <yaml.h>

#include "cli/workspace.h"
#include "fs/fs.h"

#define WORKSPACE_YML_MAX (64 * 1024) /* workspace.yml is a few hundred bytes */

bool workspace_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 128 || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isascii(c) || !(isalnum(c) || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static char *join(const char *a, const char *b)
{
	char *s;
	size_t la = strlen(a);
	const char *sep = (la > 0 && a[la - 1] == '/') ? "" : "/";
	if (asprintf(&s, "%s%s%s", a, sep, b) < 0)
		return NULL;
	return s;
}

int workspace_state_root(const char *override, char **out)
{
	*out = NULL;
	const char *base;
	char *tmp = NULL;
	if (override && *override) {
		base = override;
	} else {
		const char *xdg = getenv("XDG_STATE_HOME");
		/* The XDG spec says relative values are invalid and to be ignored. */
		if (xdg && xdg[0] == '/') {
			tmp = join(xdg, "agentfs");
		} else {
			const char *home = getenv("HOME");
			if (!home || home[0] != '/')
				return -ENOENT;
			tmp = join(home, ".local/state/agentfs");
		}
		if (!tmp)
			return -ENOMEM;
		*out = tmp;
		return 0;
	}
	if (base[0] == '/') {
		*out = strdup(base);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		*out = join(cwd, base);
	}
	return *out ? 0 : -ENOMEM;
}

int workspace_dir_for(const char *root, const char *name, char **out)
{
	*out = NULL;
	if (!workspace_name_valid(name))
		return -EINVAL;
	if (asprintf(out, "%s/workspaces/%s", root, name) < 0) {
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}

void workspace_free(struct workspace *ws)
{
	if (!ws)
		return;
	free(ws->name);
	free(ws->dir);
	free(ws->repo);
	free(ws->base_commit);
	free(ws->mountpoint);
	free(ws->policy_digest);
	free(ws);
}

int workspace_set(char **field, const char *value)
{
	char *c = strdup(value ? value : "");
	if (!c)
		return -ENOMEM;
	free(*field);
	*field = c;
	return 0;
}

int workspace_new(const char *root, const char *name, const char *repo, const char *base_commit,
		  const char *mountpoint, int64_t created, const char *policy_digest,
		  struct workspace **out)
{
	*out = NULL;
	struct workspace *ws = calloc(1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	int rc = workspace_dir_for(root, name, &ws->dir);
	if (rc == 0)
		rc = workspace_set(&ws->name, name);
	if (rc == 0)
		rc = workspace_set(&ws->repo, repo);
	if (rc == 0)
		rc = workspace_set(&ws->base_commit, base_commit);
	if (rc == 0)
		rc = workspace_set(&ws->mountpoint, mountpoint);
	if (rc == 0)
		rc = workspace_set(&ws->policy_digest, policy_digest);
	if (rc < 0) {
		workspace_free(ws);
		return rc;
	}
	ws->created = created;
	*out = ws;
	return 0;
}

char *workspace_path(const struct workspace *ws, const char *leaf)
{
	return join(ws->dir, leaf);
}

bool workspace_is_policy_snapshot(const char *root, const char *path)
{
	char real[PATH_MAX], dir[PATH_MAX];
	if (!root || !realpath(path, real))
		return false;
	char *ws_root = join(root, "workspaces");
	bool ok = ws_root && realpath(ws_root, dir);
	free(ws_root);
	if (!ok)
		return false;
	size_t dl = strlen(dir);
	if (strncmp(real, dir, dl) != 0 || real[dl] != '/')
		return false;
	const char *name = real + dl + 1;
	const char *slash = strchr(name, '/');
	if (!slash || strcmp(slash, "/policy.yml") != 0 || (size_t)(slash - name) > 128)
		return false;
	char nm[129];
	memcpy(nm, name, (size_t)(slash - name));
	nm[slash - name] = '\0';
	return workspace_name_valid(nm);
}

bool workspace_upper_empty(const char *ws_dir)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/upper", ws_dir) >= (int)sizeof(p))
		return false;
	DIR *d = opendir(p);
	if (!d)
		return false;
	bool empty = true;
	struct dirent *de;
	errno = 0;
	while (empty && (de = readdir(d)))
		empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
	if (errno != 0)
		empty = false;
	closedir(d);
	return empty;
}

/* ---- workspace.yml ---- */

enum yml_key { K_VERSION, K_NAME, K_REPO, K_BASE, K_MNT, K_CREATED, K_DIGEST, K__COUNT };
static const char *const yml_keys[K__COUNT] = {
    "version", "name", "repo", "base_commit", "mountpoint", "created", "policy_digest",
};

static int yml_fail(char *err, size_t errlen, const char *file, const yaml_mark_t *m,
		    const char *fmt, const char *arg)
{
	char why[256];
	snprintf(why, sizeof(why), fmt, arg);
	if (m)
		snprintf(err, errlen, "%s:%zu:%zu: %s", file, m->line + 1, m->column + 1, why);
	else
		snprintf(err, errlen, "%s: %s", file, why);
	return -EINVAL;
}

static bool is_hex(const char *s, size_t want)
{
	size_t n = strlen(s);
	if (n != want)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	return true;
}

int workspace_parse(const char *text, size_t len, const char *file, struct workspace **out,
		    char *err, size_t errlen)
{
	*out = NULL;
	yaml_parser_t parser;
	yaml_event_t ev;
	char *vals[K__COUNT] = {0};
	yaml_mark_t marks[K__COUNT];
	int rc = 0;
	enum {
		S_STREAM,
		S_DOC,
		S_MAP,
		S_KEY,
		S_VALUE,
		S_DOC_END,
		S_STREAM_END,
		S_DONE
	} st = S_STREAM;
	int key = -1;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (st != S_DONE) {
		if (!yaml_parser_parse(&parser, &ev)) {
			rc = yml_fail(err, errlen, file, &parser.problem_mark, "%s",
				      parser.problem ? parser.problem : "invalid YAML");
			break;
		}
		yaml_mark_t m = ev.start_mark;
		switch (st) {
		case S_STREAM:
			st = S_DOC; /* STREAM_START always comes first */
			break;
		case S_DOC:
			if (ev.type != YAML_DOCUMENT_START_EVENT)
				rc = yml_fail(err, errlen, file, &m, "%s", "empty file");
			st = S_MAP;
			break;
		case S_MAP:
			if (ev.type != YAML_MAPPING_START_EVENT)
				rc = yml_fail(err, errlen, file, &m, "%s",
					      "expected a mapping of keys to values");
			st = S_KEY;
			break;
		case S_KEY:
			if (ev.type == YAML_MAPPING_END_EVENT) {
				st = S_DOC_END;
				break;
			}
			if (ev.type != YAML_SCALAR_EVENT) {
				rc = yml_fail(err, errlen, file, &m, "%s", "expected a key");
				break;
			}
			key = -1;
			for (int k = 0; k < K__COUNT; k++)
				if (strcmp((const char *)ev.data.scalar.value, yml_keys[k]) == 0)
					key = k;
			if (key < 0) {
				rc = yml_fail(err, errlen, file, &m, "unknown key '%s'",
					      (const char *)ev.data.scalar.value);
				break;
			}
			if (vals[key]) {
				rc = yml_fail(err, errlen, file, &m, "duplicate key '%s'",
					      yml_keys[key]);
				break;
			}
			marks[key] = m;
			st = S_VALUE;
			break;
		case S_VALUE:
			if (ev.type != YAML_SCALAR_EVENT) {
				rc = yml_fail(err, errlen, file, &m, "'%s' must be a scalar",
					      yml_keys[key]);
				break;
			}
			vals[key] =
			    strndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
			if (!vals[key])
				rc = -ENOMEM;
			else if (strlen(vals[key]) != ev.data.scalar.length)
				rc = yml_fail(err, errlen, file, &m, "'%s' contains a NUL byte",
					      yml_keys[key]);
			st = S_KEY;
			break;
		case S_DOC_END:
			st = S_STREAM_END; /* DOCUMENT_END follows MAPPING_END */
			break;
		case S_STREAM_END:
			if (ev.type != YAML_STREAM_END_EVENT)
				rc =
				    yml_fail(err, errlen, file, &m, "%s", "more than one document");
			st = S_DONE;
			break;
		case S_DONE:
			break;
		}
		yaml_event_delete(&ev);
		if (rc < 0)
			break;
	}
	yaml_parser_delete(&parser);

	struct workspace *ws = NULL;
	if (rc == 0) {
		for (int k = 0; k < K__COUNT; k++) {
			if (!vals[k] && k != K_NAME) {
				rc = yml_fail(err, errlen, file, NULL, "missing key '%s'",
					      yml_keys[k]);
				break;
			}
		}
	}
	if (rc == 0) {
		char *end;
		errno = 0;
		long v = strtol(vals[K_VERSION], &end, 10);
		if (errno || *end || end == vals[K_VERSION] || v != WORKSPACE_FORMAT_VERSION)
			rc = yml_fail(err, errlen, file, &marks[K_VERSION],
				      "unsupported version '%s' (this agentfs reads version 1)",
				      vals[K_VERSION]);
	}
	int64_t created = 0;
	if (rc == 0) {
		char *end;
		errno = 0;
		long long c = strtoll(vals[K_CREATED], &end, 10);
		if (errno || *end || end == vals[K_CREATED] || c < 0)
			rc = yml_fail(err, errlen, file, &marks[K_CREATED],
				      "'created' must be seconds since the epoch, not '%s'",
				      vals[K_CREATED]);
		created = c;
	}
	if (rc == 0 && vals[K_REPO][0] != '/')
		rc = yml_fail(err, errlen, file, &marks[K_REPO],
			      "'repo' must be an absolute path, not '%s'", vals[K_REPO]);
	if (rc == 0 && vals[K_MNT][0] != '\0' && vals[K_MNT][0] != '/')
		rc = yml_fail(err, errlen, file, &marks[K_MNT],
			      "'mountpoint' must be an absolute path, not '%s'", vals[K_MNT]);
	if (rc == 0 && vals[K_BASE][0] != '\0' && !is_hex(vals[K_BASE], 40))
		rc = yml_fail(err, errlen, file, &marks[K_BASE],
			      "'base_commit' must be 40 lowercase hex digits or \"\", not '%s'",
			      vals[K_BASE]);
	if (rc == 0 && vals[K_DIGEST][0] != '\0' && !is_hex(vals[K_DIGEST], 32))
		rc = yml_fail(err, errlen, file, &marks[K_DIGEST],
			      "'policy_digest' must be 32 lowercase hex digits, not '%s'",
			      vals[K_DIGEST]);
	if (rc == 0) {
		ws = calloc(1, sizeof(*ws));
		if (!ws) {
			rc = -ENOMEM;
		} else {
			ws->name = vals[K_NAME];
			ws->repo = vals[K_REPO];
			ws->base_commit = vals[K_BASE];
			ws->mountpoint = vals[K_MNT];
			ws->policy_digest = vals[K_DIGEST];
			ws->created = created;
			vals[K_NAME] = vals[K_REPO] = vals[K_BASE] = vals[K_MNT] = vals[K_DIGEST] =
			    NULL;
		}
	}
	for (int k = 0; k < K__COUNT; k++)
		free(vals[k]);
	if (rc < 0)
		return rc;
	*out = ws;
	return 0;
}

/* Read a small regular file without following a symlink in its last component. */
static int read_small(const char *path, char **buf, size_t *len, size_t max)
{
	*buf = NULL;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -EINVAL : -errno;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		int e = errno;
		close(fd);
		return S_ISREG(st.st_mode) ? (e ? -e : -EFBIG) : -EINVAL;
	}
	char *b = malloc((size_t)st.st_size + 1);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	size_t n = 0;
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, b + n, (size_t)st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(b);
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

int workspace_load(const char *root, const char *name, struct workspace **out, char *err,
		   size_t errlen)
{
	*out = NULL;
	char *dir = NULL, *file = NULL, *text = NULL;
	size_t len = 0;
	struct workspace *ws = NULL;
	int rc = workspace_dir_for(root, name, &dir);
	if (rc < 0) {
		snprintf(err, errlen, "%s: invalid workspace name", name);
		return rc == -EINVAL ? -ENOENT : rc;
	}
	file = join(dir, "workspace.yml");
	if (!file) {
		rc = -ENOMEM;
		goto out;
	}
	rc = read_small(file, &text, &len, WORKSPACE_YML_MAX);
	if (rc == -ENOENT) {
		struct stat st;
		if (lstat(dir, &st) == 0) {
			snprintf(err, errlen, "%s: not a workspace (no workspace.yml)", dir);
			rc = -EINVAL;
		} else {
			snprintf(err, errlen, "no workspace named '%s'", name);
		}
		goto out;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", file,
			 rc == -EINVAL ? "not a regular file" : strerror(-rc));
		if (rc != -ENOMEM)
			rc = -EINVAL;
		goto out;
	}
	rc = workspace_parse(text, len, file, &ws, err, errlen);
	if (rc < 0)
		goto out;
	if (ws->name && strcmp(ws->name, name) != 0) {
		snprintf(err, errlen, "%s: name '%s' does not match its directory '%s'", file,
			 ws->name, name);
		rc = -EINVAL;
		goto out;
	}
	free(ws->name);
	ws->name = strdup(name);
	ws->dir = dir;
	dir = NULL;
	if (!ws->name) {
		rc = -ENOMEM;
		goto out;
	}
	*out = ws;
	ws = NULL;
out:
	workspace_free(ws);
	free(dir);
	free(file);
	free(text);
	return rc;
}

static int emit_scalar(yaml_emitter_t *em, const char *value, bool quoted)
{
	yaml_event_t ev;
	if (!yaml_scalar_event_initialize(
		&ev, NULL, NULL, (yaml_char_t *)value, (int)strlen(value), 1, 1,
		quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE))
		return -EINVAL; /* libyaml refuses invalid UTF-8 */
	return yaml_emitter_emit(em, &ev) ? 0 : -EIO;
}

static int emit_simple(yaml_emitter_t *em, int which)
{
	yaml_event_t ev;
	int ok;
	switch (which) {
	case 0:
		ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
		break;
	case 1:
		ok = yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
		break;
	case 2:
		ok = yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
							 YAML_BLOCK_MAPPING_STYLE);
		break;
	case 3:
		ok = yaml_mapping_end_event_initialize(&ev);
		break;
	case 4:
		ok = yaml_document_end_event_initialize(&ev, 1);
		break;
	default:
		ok = yaml_stream_end_event_initialize(&ev);
		break;
	}
	if (!ok)
		return -ENOMEM;
	return yaml_emitter_emit(em, &ev) ? 0 : -EIO;
}

int workspace_save(const struct workspace *ws)
{
	char *file = workspace_path(ws, "workspace.yml");
	char *tmp = workspace_path(ws, ".workspace.yml.tmp");
	int rc = 0;
	FILE *f = NULL;
	if (!file || !tmp) {
		rc = -ENOMEM;
		goto out;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	f = fdopen(fd, "w");
	if (!f) {
		rc = -errno;
		close(fd);
		goto out;
	}
	char version[16], created[32];
	snprintf(version, sizeof(version), "%d", WORKSPACE_FORMAT_VERSION);
	snprintf(created, sizeof(created), "%" PRId64, ws->created);
	const char *vals[K__COUNT] = {version,	      ws->name, ws->repo,	  ws->base_commit,
				      ws->mountpoint, created,	ws->policy_digest};

	yaml_emitter_t em;
	if (!yaml_emitter_initialize(&em)) {
		rc = -ENOMEM;
		goto out;
	}
	yaml_emitter_set_output_file(&em, f);
	yaml_emitter_set_unicode(&em, 1);
	for (int i = 0; i < 3 && rc == 0; i++)
		rc = emit_simple(&em, i);
	for (int k = 0; k < K__COUNT && rc == 0; k++) {
		rc = emit_scalar(&em, yml_keys[k], false);
		if (rc == 0)
			rc = emit_scalar(&em, vals[k] ? vals[k] : "",
					 k != K_VERSION && k != K_CREATED);
	}
	for (int i = 3; i < 6 && rc == 0; i++)
		rc = emit_simple(&em, i);
	if (rc == 0 && !yaml_emitter_flush(&em))
		rc = -EIO;
	yaml_emitter_delete(&em);
	if (rc == 0 && fflush(f) != 0)
		rc = -errno;
	if (rc == 0 && fsync(fileno(f)) != 0)
		rc = -errno;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	f = NULL;
	if (rc == 0 && rename(tmp, file) != 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
out:
	if (f)
		fclose(f);
	free(file);
	free(tmp);
	return rc;
}

/* ---- enumeration and lookup ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void workspace_names_free(char **names, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

int workspace_list_names(const char *root, char ***names, size_t *count)
{
	*names = NULL;
	*count = 0;
	char *dir = join(root, "workspaces");
	if (!dir)
		return -ENOMEM;
	DIR *d = opendir(dir);
	free(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	char **v = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!workspace_name_valid(de->d_name))
			continue;
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n] = strdup(de->d_name);
		if (!v[n]) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (rc < 0) {
		workspace_names_free(v, n);
		return rc;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_str);
	*names = v;
	*count = n;
	return 0;
}

bool workspace_path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n == 1 && dir[0] == '/')
		return path[0] == '/';
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

int workspace_abspath(const char *path, char **out)
{
	*out = NULL;
	char buf[PATH_MAX];
	if (realpath(path, buf)) {
		*out = strdup(buf);
		return *out ? 0 : -ENOMEM;
	}
	int first = errno;
	/* A missing last component, or a dead FUSE mount (ENOTCONN): resolve the parent. */
	char *c1 = strdup(path), *c2 = strdup(path);
	if (!c1 || !c2) {
		free(c1);
		free(c2);
		return -ENOMEM;
	}
	char *parent = dirname(c1), *base = basename(c2);
	int rc = 0;
	if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || strcmp(base, "/") == 0) {
		rc = -first;
	} else if (!realpath(parent, buf)) {
		rc = -first;
	} else {
		*out = join(buf, base);
		if (!*out)
			rc = -ENOMEM;
	}
	free(c1);
	free(c2);
	return rc;
}

int workspace_find(const char *root, const char *mnt_or_name, struct workspace **out, char *err,
		   size_t errlen)
{
	*out = NULL;
	char *abs = NULL;
	bool pathlike = strchr(mnt_or_name, '/') != NULL || !workspace_name_valid(mnt_or_name);
	struct stat st;
	if (pathlike || lstat(mnt_or_name, &st) == 0)
		(void)workspace_abspath(mnt_or_name, &abs);
	if (abs) {
		char **names;
		size_t n;
		int rc = workspace_list_names(root, &names, &n);
		if (rc < 0) {
			free(abs);
			snprintf(err, errlen, "%s/workspaces: %s", root, strerror(-rc));
			return rc;
		}
		/* Workspaces mounted at one place in turn all name it: the one
		 * mounted there now (or left there by a crash) is meant; among
		 * those that are not, none is more likely than another. */
		struct workspace *only = NULL, *live = NULL;
		size_t matches = 0, lives = 0;
		char *names_seen = NULL;
		size_t seen_len = 0;
		FILE *seen = open_memstream(&names_seen, &seen_len);
		for (size_t i = 0; i < n; i++) {
			struct workspace *ws;
			char e2[8];
			if (workspace_load(root, names[i], &ws, e2, sizeof(e2)) < 0)
				continue; /* a broken workspace cannot be a match */
			if (!ws->mountpoint[0] || strcmp(ws->mountpoint, abs) != 0) {
				workspace_free(ws);
				continue;
			}
			matches++;
			if (seen)
				fprintf(seen, "%s%s", matches > 1 ? ", " : "", ws->name);
			if (workspace_state(ws, NULL, NULL) != WORKSPACE_UNMOUNTED) {
				lives++;
				if (!live)
					live = ws;
				else
					workspace_free(ws);
			} else if (!only) {
				only = ws;
			} else {
				workspace_free(ws);
			}
		}
		workspace_names_free(names, n);
		if (seen)
			fclose(seen);
		if (lives == 1 || (lives == 0 && matches == 1)) {
			*out = lives ? live : only;
			workspace_free(lives ? only : live);
			free(names_seen);
			free(abs);
			return 0;
		}
		workspace_free(only);
		workspace_free(live);
		if (matches > 1) {
			snprintf(err, errlen,
				 "%s: %zu workspaces were mounted there (%s) and %s: name one",
				 mnt_or_name, matches, names_seen ? names_seen : "?",
				 lives ? "more than one is mounted" : "none is mounted now");
			free(names_seen);
			free(abs);
			return -EINVAL;
		}
		free(names_seen);
		free(abs);
	}
	if (!workspace_name_valid(mnt_or_name)) {
		snprintf(err, errlen, "%s: not an agentfs mount (no workspace found)", mnt_or_name);
		return -ENOENT;
	}
	int rc = workspace_load(root, mnt_or_name, out, err, errlen);
	if (rc == -ENOENT)
		snprintf(err, errlen, "%s: no workspace of that name or mountpoint", mnt_or_name);
	return rc;
}

/* ---- the daemon's traces: pid file and mount table ---- */

int workspace_write_pid(const struct workspace *ws, pid_t pid, const char *mountpoint)
{
	char *file = workspace_path(ws, "daemon.pid");
	char *tmp = workspace_path(ws, ".daemon.pid.tmp");
	int rc = 0;
	if (!file || !tmp) {
		rc = -ENOMEM;
		goto out;
	}
	FILE *f = fopen(tmp, "we");
	if (!f) {
		rc = -errno;
		goto out;
	}
	fprintf(f, "%ld %s\n", (long)pid, mountpoint);
	if (fflush(f) != 0)
		rc = -errno;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, file) != 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
out:
	free(file);
	free(tmp);
	return rc;
}

int workspace_read_pid(const struct workspace *ws, pid_t *pid, char **mnt)
{
	return workspace_read_pid_at(ws->dir, pid, mnt);
}

int workspace_read_pid_at(const char *dir, pid_t *pid, char **mnt)
{
	*pid = 0;
	if (mnt)
		*mnt = NULL;
	char *file = join(dir, "daemon.pid");
	if (!file)
		return -ENOMEM;
	char *text = NULL;
	size_t len = 0;
	int rc = read_small(file, &text, &len, 2 * PATH_MAX);
	free(file);
	if (rc < 0)
		return rc;
	char *end;
	errno = 0;
	long p = strtol(text, &end, 10);
	if (errno || end == text || p <= 0 || *end != ' ' || end[1] != '/') {
		free(text);
		return -EINVAL;
	}
	char *m = end + 1;
	size_t ml = strlen(m);
	if (ml && m[ml - 1] == '\n')
		m[--ml] = '\0';
	*pid = (pid_t)p;
	if (mnt) {
		*mnt = strdup(m);
		if (!*mnt)
			rc = -ENOMEM;
	}
	free(text);
	return rc;
}

/* mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo octal. */
static void unescape_octal(char *s)
{
	char *w = s;
	for (char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)(((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

/* Scan /proc/self/mountinfo for @path; the last mount on it is the visible one. */
static int mountinfo_lookup(const char *path, char *fstype, size_t fslen, char *src, size_t srclen,
			    char *super, size_t superlen)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	while (getline(&line, &cap, f) > 0) {
		/* id parent maj:min root mountpoint options [optional...] - fstype source super */
		char *save, *tok = strtok_r(line, " \n", &save);
		char *mp = NULL;
		for (int i = 0; tok && i < 4; i++)
			tok = strtok_r(NULL, " \n", &save);
		mp = tok;
		if (!mp)
			continue;
		unescape_octal(mp);
		if (strcmp(mp, path) != 0)
			continue;
		while ((tok = strtok_r(NULL, " \n", &save)) && strcmp(tok, "-") != 0)
			;
		char *t = tok ? strtok_r(NULL, " \n", &save) : NULL;
		char *s = t ? strtok_r(NULL, " \n", &save) : NULL;
		char *o = s ? strtok_r(NULL, " \n", &save) : NULL;
		found = 1;
		if (super)
			snprintf(super, superlen, "%s", o ? o : "");
		if (fstype)
			snprintf(fstype, fslen, "%s", t ? t : "");
		if (src) {
			if (s)
				unescape_octal(s);
			snprintf(src, srclen, "%s", s ? s : "");
		}
	}
	free(line);
	fclose(f);
	return found;
}

int workspace_is_mountpoint(const char *path)
{
	return mountinfo_lookup(path, NULL, 0, NULL, 0, NULL, 0);
}

int workspace_fuse_mount_at(const char *path, char *src, size_t srclen)
{
	char fstype[64];
	int rc = mountinfo_lookup(path, fstype, sizeof(fstype), src, srclen, NULL, 0);
	if (rc <= 0)
		return rc;
	return strcmp(fstype, "fuse") == 0 || strncmp(fstype, "fuse.", 5) == 0;
}

int workspace_mount_has_option(const char *path, const char *opt)
{
	char super[1024];
	int rc = mountinfo_lookup(path, NULL, 0, NULL, 0, super, sizeof(super));
	if (rc <= 0)
		return rc;
	struct mntent m = {.mnt_opts = super};
	return hasmntopt(&m, opt) != NULL;
}

static bool pid_alive(pid_t pid)
{
	if (pid <= 0)
		return false;
	if (kill(pid, 0) != 0 && errno != EPERM)
		return false;
	/* A zombie has let go of its mount; it only waits for its parent. */
	char s = workspace_pid_state(pid);
	return s != 'Z' && s != 'X';
}

char workspace_pid_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return '?';
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' && rp[2] ? rp[2] : '?';
}

bool workspace_pid_dying(pid_t pid)
{
	char s = workspace_pid_state(pid);
	if (s == 'Z' || s == 'X')
		return true; /* its leader has exited; other threads may not have */
	if (s == '?')
		return false;
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool dying = false;
	while (!dying && fgets(line, sizeof(line), f)) {
		/* a SIGKILL sent to the process is pending on it until it is gone */
		if (strncmp(line, "ShdPnd:", 7) == 0 || strncmp(line, "SigPnd:", 7) == 0) {
			unsigned long long mask = strtoull(line + 7, NULL, 16);
			dying = (mask >> (SIGKILL - 1)) & 1;
		}
	}
	fclose(f);
	return dying;
}

int workspace_lock_after_kill(const char *ws_dir, int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno != EWOULDBLOCK)
		return -errno;
	pid_t pid = 0;
	if (workspace_read_pid_at(ws_dir, &pid, NULL) < 0)
		pid = 0;
	for (int i = 0; pid > 0 && i < 1000 && workspace_pid_dying(pid); i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	return -errno;
}

/* Our daemon's mount: FUSE, with the source fs_serve was given ("agentfs:NAME"). */
static bool our_mount_at(const struct workspace *ws, const char *mnt)
{
	char src[PATH_MAX], want[PATH_MAX];
	if (workspace_fuse_mount_at(mnt, src, sizeof(src)) != 1)
		return false;
	snprintf(want, sizeof(want), "agentfs:%s", ws->name);
	return strcmp(src, want) == 0;
}

pid_t workspace_daemon_pid(const struct workspace *ws)
{
	pid_t pid = 0;
	char *mnt = NULL;
	if (workspace_read_pid(ws, &pid, &mnt) < 0)
		return 0;
	bool live = pid_alive(pid) && workspace_fuse_mount_at(mnt, NULL, 0) == 1;
	free(mnt);
	return live ? pid : 0;
}

int workspace_daemon_flush(const struct workspace *ws, int timeout_ms)
{
	pid_t pid = workspace_daemon_pid(ws);
	if (!pid)
		return 0; /* no daemon: the journal file is all there is */
	char *req = workspace_path(ws, FS_FLUSH_FILE);
	/* The daemon removes the request once the journal is written out, or
	 * renames it to FS_FLUSH_FAILED, its size the errno, when it cannot.
	 * An earlier reader's answer not taken goes before the request does:
	 * removed after it, it could be this request's answer, come already. */
	char *failed = workspace_path(ws, FS_FLUSH_FAILED);
	if (!req || !failed) {
		free(req);
		free(failed);
		return -ENOMEM;
	}
	unlink(failed);
	int fd = open(req, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	int r = fd < 0 ? -errno : 0;
	if (fd >= 0)
		close(fd);
	if (r == 0 && kill(pid, SIGUSR2) < 0)
		r = -errno;
	for (int waited = 0; r == 0; waited += 5) {
		if (access(req, F_OK) < 0) {
			struct stat st;
			r = errno == ENOENT ? 0 : -errno;
			if (r == 0 && lstat(failed, &st) == 0) {
				r = st.st_size > 0 && st.st_size < 4096 ? -(int)st.st_size : -EIO;
				unlink(failed);
			}
			break;
		}
		if (!pid_alive(pid)) {
			r = -ESRCH;
		} else if (waited >= timeout_ms) {
			r = -ETIMEDOUT;
		} else {
			struct timespec ts = {0, 5 * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
	}
	if (r < 0)
		unlink(req); /* leave no request behind */
	free(req);
	free(failed);
	return r;
}

enum workspace_state workspace_state(const struct workspace *ws, pid_t *pid, char **mnt)
{
	pid_t p = 0;
	char *m = NULL;
	enum workspace_state st = WORKSPACE_UNMOUNTED;
	int rc = workspace_read_pid(ws, &p, &m);
	if (rc == 0 || rc == -EINVAL) {
		if (rc == 0 && pid_alive(p) && workspace_fuse_mount_at(m, NULL, 0) == 1) {
			st = WORKSPACE_MOUNTED;
		} else {
			st = WORKSPACE_STALE;
			p = 0;
		}
	} else {
		p = 0;
	}
	if (!m && ws->mountpoint[0])
		m = strdup(ws->mountpoint);
	if (st == WORKSPACE_UNMOUNTED && m && our_mount_at(ws, m))
		st = WORKSPACE_STALE;
	if (pid)
		*pid = p;
	if (mnt)
		*mnt = m;
	else
		free(m);
	return st;
}

/* ---- removal and counting ---- */

static int remove_children(int dfd, dev_t dev, int depth);

static int remove_entry(int dfd, const char *name, dev_t dev, int depth)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? 0 : -errno;
	if (st.st_dev != dev)
		return -EXDEV; /* something is mounted inside: never delete across it */
	if (depth > 4096)
		return -ELOOP;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == EACCES) {
		/* An agent may have left a directory mode 000; it is the caller's to
		 * open once it is theirs.  fstatat above said it is a directory. */
		if (fchmodat(dfd, name, 0700, 0) == 0)
			fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	struct stat fst;
	if (fstat(fd, &fst) != 0 || fst.st_dev != dev) {
		close(fd);
		return -EXDEV;
	}
	if ((fst.st_mode & 0700) != 0700)
		(void)fchmod(fd, (fst.st_mode & 07777) | 0700);
	int rc = remove_children(fd, dev, depth + 1);
	close(fd);
	if (rc < 0)
		return rc;
	return unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -errno;
}

static int remove_children(int dfd, dev_t dev, int depth)
{
	int fd = dup(dfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return -e;
	}
	int rc = 0;
	struct dirent *de;
	/* Deleting while reading is fine for readdir; restart once to catch entries
	 * a directory offset shift might skip. */
	for (int pass = 0; pass < 2 && rc == 0; pass++) {
		rewinddir(d);
		errno = 0;
		while (rc == 0 && (de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			rc = remove_entry(dfd, de->d_name, dev, depth);
		}
	}
	closedir(d);
	return rc;
}

int workspace_remove_tree(const char *path)
{
	if (path[0] != '/')
		return -EINVAL;
	char *c1 = strdup(path), *c2 = strdup(path);
	if (!c1 || !c2) {
		free(c1);
		free(c2);
		return -ENOMEM;
	}
	int rc = 0;
	int pfd = open(dirname(c1), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0) {
		rc = errno == ENOENT ? 0 : -errno;
	} else {
		struct stat st;
		const char *base = basename(c2);
		if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
			rc = errno == ENOENT ? 0 : -errno;
		else if (!S_ISDIR(st.st_mode))
			rc = -ENOTDIR;
		else
			rc = remove_entry(pfd, base, st.st_dev, 0);
		close(pfd);
	}
	free(c1);
	free(c2);
	return rc;
}

static long count_tree(int dfd, int depth)
{
	if (depth > 4096)
		return -ELOOP;
	int fd = dup(dfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return -e;
	}
	long n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		unsigned char t = de->d_type;
		if (t == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
				continue;
			t = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
		}
		if (t != DT_DIR) {
			n++;
			continue;
		}
		int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		long c = count_tree(sub, depth + 1);
		close(sub);
		if (c > 0)
			n += c;
	}
	closedir(d);
	return n;
}

long workspace_count_upper(const struct workspace *ws)
{
	char *upper = workspace_path(ws, "upper");
	if (!upper)
		return -ENOMEM;
	int fd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	free(upper);
	if (fd < 0)
		return -errno;
	long n = count_tree(fd, 0);
	close(fd);
	return n;
}

/* ---- unmounting ---- */

static int run_fusermount(const char *mnt, bool lazy, char *err, size_t errlen)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pfd[0]);
		close(pfd[1]);
		return -e;
	}
	if (pid == 0) {
		dup2(pfd[1], STDERR_FILENO);
		dup2(pfd[1], STDOUT_FILENO);
		execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", "--", mnt, (char *)NULL);
		dprintf(STDERR_FILENO, "fusermount3: %s\n", strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	char out[1024];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(pfd[0], out + n, sizeof(out) - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == sizeof(out) - 1)
			break;
	}
	close(pfd[0]);
	out[n] = '\0';
	char *nl = strchr(out, '\n');
	if (nl)
		*nl = '\0';
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	snprintf(err, errlen, "%s", out[0] ? out : "fusermount3 failed");
	if (strstr(out, strerror(EBUSY)))
		return -EBUSY;
	if (strstr(out, "not found in") || strstr(out, strerror(EINVAL)))
		return -EINVAL;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return -ENOENT;
	return -EIO;
}

int workspace_fuse_unmount(const char *mnt, bool lazy, char *err, size_t errlen)
{
	if (geteuid() != 0)
		return run_fusermount(mnt, lazy, err, errlen);
	/* UMOUNT_NOFOLLOW: a symlink planted at the mountpoint must not redirect us. */
	if (umount2(mnt, (lazy ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) == 0)
		return 0;
	int e = errno;
	snprintf(err, errlen, "%s", strerror(e));
	return -e;
}
