/*
 * record.c - formatting one record as a JSON line (schema in journal.h and
 * SCHEMA.md).
 *
 * A small escaper rather than the JSON library: the chain hashes the exact
 * bytes, so the output must be one canonical form we control, with no
 * allocation per field; strings that are not valid UTF-8 are written as
 * KEY_hex, which the library would refuse.  The reader (reader.c) uses jansson.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/layout.h"
#include "journal/internal.h"

static const char *const op_names[JOP__COUNT] = {
    [JOP_MOUNT] = "mount",	 [JOP_UNMOUNT] = "unmount",   [JOP_RECOVER] = "recover",
    [JOP_READ] = "read",	 [JOP_WRITE] = "write",	      [JOP_COPYUP] = "copyup",
    [JOP_TRUNCATE] = "truncate", [JOP_CREATE] = "create",     [JOP_MKDIR] = "mkdir",
    [JOP_MKNOD] = "mknod",	 [JOP_UNLINK] = "unlink",     [JOP_RMDIR] = "rmdir",
    [JOP_RENAME] = "rename",	 [JOP_LINK] = "link",	      [JOP_SYMLINK] = "symlink",
    [JOP_SETATTR] = "setattr",	 [JOP_SETXATTR] = "setxattr", [JOP_REMOVEXATTR] = "removexattr",
    [JOP_READDIR] = "readdir",	 [JOP_CONCEAL] = "conceal",   [JOP_DENY] = "deny",
    [JOP_DISCARD] = "discard",
};

const char *journal_op_name(enum journal_op op)
{
	if ((unsigned)op >= JOP__COUNT)
		return "unknown";
	return op_names[op];
}

int journal_op_parse(const char *name, enum journal_op *out)
{
	for (int i = 0; i < JOP__COUNT; i++)
		if (strcmp(op_names[i], name) == 0) {
			*out = (enum journal_op)i;
			return 0;
		}
	return -EINVAL;
}

void journal_errno_name(int negerr, char *out, size_t len)
{
	int e = negerr < 0 ? -negerr : negerr;
	const char *n = strerrorname_np(e);
	if (n)
		snprintf(out, len, "%s", n);
	else
		snprintf(out, len, "E%d", e);
}

int journal_errno_parse(const char *name, int *negerr)
{
	if (name[0] != 'E' || !name[1])
		return -EINVAL;
	if (name[1] >= '0' && name[1] <= '9') {
		char *end;
		long v = strtol(name + 1, &end, 10);
		if (*end || v <= 0 || v > 4095)
			return -EINVAL;
		*negerr = -(int)v;
		return 0;
	}
	for (int e = 1; e < 4096; e++) {
		const char *n = strerrorname_np(e);
		if (n && strcmp(n, name) == 0) {
			*negerr = -e;
			return 0;
		}
	}
	return -EINVAL;
}

/* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool journal_utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		if (c < 0x80) {
			if (c == 0)
				return false;
			i++;
			continue;
		}
		size_t need;
		uint32_t cp, min;
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (size_t k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += need + 1;
	}
	return true;
}

static void put_escaped(struct jbuf *b, const char *s, size_t n)
{
	static const char hexd[] = "0123456789abcdef";
	jbuf_putc(b, '"');
	size_t run = 0; /* bytes copied verbatim in one go */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
			continue;
		jbuf_put(b, s + run, i - run);
		run = i + 1;
		switch (c) {
		case '"':
			jbuf_put(b, "\\\"", 2);
			break;
		case '\\':
			jbuf_put(b, "\\\\", 2);
			break;
		case '\n':
			jbuf_put(b, "\\n", 2);
			break;
		case '\t':
			jbuf_put(b, "\\t", 2);
			break;
		case '\r':
			jbuf_put(b, "\\r", 2);
			break;
		default: {
			char u[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
			jbuf_put(b, u, 6);
		}
		}
	}
	jbuf_put(b, s + run, n - run);
	jbuf_putc(b, '"');
}

void journal_put_string_field(struct jbuf *b, const char *key, const char *s, size_t n)
{
	static const char hexd[] = "0123456789abcdef";
	jbuf_put(b, ",\"", 2);
	jbuf_puts(b, key);
	if (journal_utf8_valid(s, n)) {
		jbuf_put(b, "\":", 2);
		put_escaped(b, s, n);
		return;
	}
	jbuf_puts(b, "_hex\":\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char h[2] = {hexd[c >> 4], hexd[c & 15]};
		jbuf_put(b, h, 2);
	}
	jbuf_putc(b, '"');
}

static void put_u64(struct jbuf *b, const char *key, uint64_t v)
{
	char tmp[48];
	int n = snprintf(tmp, sizeof(tmp), ",\"%s\":%" PRIu64, key, v);
	jbuf_put(b, tmp, (size_t)n);
}

static void put_hash(struct jbuf *b, const char *key, XXH128_hash_t h)
{
	char hex[33];
	layout_hash_hex(h, hex);
	jbuf_put(b, ",\"", 2);
	jbuf_puts(b, key);
	jbuf_put(b, "\":\"", 3);
	jbuf_put(b, hex, 32);
	jbuf_putc(b, '"');
}

static bool op_has_bytes(enum journal_op op)
{
	return op == JOP_READ || op == JOP_WRITE || op == JOP_TRUNCATE || op == JOP_COPYUP ||
	       op == JOP_RECOVER;
}

static bool op_has_mode(enum journal_op op)
{
	return op == JOP_CREATE || op == JOP_MKDIR || op == JOP_MKNOD;
}

void journal_format(struct jbuf *b, uint64_t seq, XXH128_hash_t prev, int64_t time_ns,
		    const struct journal_event *ev, const struct journal_who *who,
		    const char *detail_json)
{
	char tmp[64], hex[33];
	layout_hash_hex(prev, hex);
	int n = snprintf(tmp, sizeof(tmp), "{\"v\":%d,\"seq\":%" PRIu64 ",\"prev\":\"",
			 JOURNAL_SCHEMA_VERSION, seq);
	jbuf_put(b, tmp, (size_t)n);
	jbuf_put(b, hex, 32);
	n = snprintf(tmp, sizeof(tmp), "\",\"time_ns\":%" PRId64 ",\"op\":\"", time_ns);
	jbuf_put(b, tmp, (size_t)n);
	jbuf_puts(b, journal_op_name(ev->op));
	if (ev->result == 0) {
		jbuf_puts(b, "\",\"result\":0");
	} else {
		char name[32];
		journal_errno_name(ev->result, name, sizeof(name));
		jbuf_puts(b, "\",\"result\":\"");
		jbuf_puts(b, name);
		jbuf_putc(b, '"');
	}
	n = snprintf(tmp, sizeof(tmp), ",\"pid\":%d,\"uid\":%u", (int)ev->pid, (unsigned)ev->uid);
	jbuf_put(b, tmp, (size_t)n);
	if (who && who->comm)
		journal_put_string_field(b, "comm", who->comm, strlen(who->comm));
	if (who && who->exe && who->exe[0])
		journal_put_string_field(b, "exe", who->exe, strlen(who->exe));
	if (ev->path)
		journal_put_string_field(b, "path", ev->path, strlen(ev->path));
	if (ev->path2)
		journal_put_string_field(b, "path2", ev->path2, strlen(ev->path2));
	if ((op_has_bytes(ev->op) && !ev->bytes_unknown) || ev->bytes)
		put_u64(b, "bytes", ev->bytes);
	if (ev->flags)
		put_u64(b, "flags", ev->flags);
	if (op_has_mode(ev->op) || ev->mode) {
		n = snprintf(tmp, sizeof(tmp), ",\"mode\":%" PRIu32, ev->mode);
		jbuf_put(b, tmp, (size_t)n);
	}
	if (ev->has_hash_before)
		put_hash(b, "hash_before", ev->hash_before);
	if (ev->has_hash_after)
		put_hash(b, "hash", ev->hash_after);
	if (detail_json) {
		jbuf_puts(b, ",\"detail\":");
		jbuf_puts(b, detail_json);
	} else if (ev->detail) {
		journal_put_string_field(b, "detail", ev->detail, strlen(ev->detail));
	}
	jbuf_putc(b, '}');
}
