/*
 * fuzz_journal.c - libFuzzer target for the journal's reader, scanner and
 * formatter (tests/fuzz/run_journal.sh).
 *
 * For any input:
 *  - scanning it as a journal (the code verify and crash recovery run on a file
 *    the agent may have written) must not crash, and must name a bad line
 *    within the file or report it intact;
 *  - a single line that parses must format back into a record that parses to
 *    the same fields;
 *  - the input split at NULs into path, path2, detail, comm, exe must format
 *    into one line (no raw newline) that parses back to the same bytes;
 *  - read as the path maps of a saved state (journal/checkpoint.c), it must be
 *    refused or loaded without reading past its end, and a map it loads must
 *    save into bytes that load back into as many names.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "journal/internal.h"
#include "journal/journal.h"

static void same_entry(const struct journal_entry *a, const struct journal_entry *b)
{
#define SAME_STR(f)                                                                                \
	if ((a->f == NULL) != (b->f == NULL) || (a->f && strcmp(a->f, b->f) != 0))                 \
	abort()
	SAME_STR(path);
	SAME_STR(path2);
	SAME_STR(comm);
	SAME_STR(exe);
	if (a->seq != b->seq || a->time_ns != b->time_ns || a->op != b->op ||
	    a->result != b->result || a->pid != b->pid || a->uid != b->uid ||
	    a->bytes != b->bytes || a->flags != b->flags || a->mode != b->mode ||
	    a->has_hash_after != b->has_hash_after || a->has_hash_before != b->has_hash_before)
		abort();
	if (!a->detail_is_object)
		SAME_STR(detail);
#undef SAME_STR
}

static void scan(const uint8_t *data, size_t size)
{
	int fd = memfd_create("journal", MFD_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, data, size) == (ssize_t)size) {
		struct journal_scan s = {0};
		if (journal_pathmap_new(&s.map) == 0) {
			if (journal_scan_fd(fd, &s) == 0) {
				size_t lines = 0;
				for (size_t i = 0; i < size; i++)
					lines += data[i] == '\n';
				if (s.bad_line > lines + 1 || (s.bad_line && !s.why[0]))
					abort();
				if (!s.bad_line && s.records != lines)
					abort();
			}
			journal_pathmap_free(s.map);
		}
	}
	close(fd);
}

static void reformat(const uint8_t *data, size_t size)
{
	struct journal_entry e = {0};
	if (journal_entry_parse((const char *)data, size, &e, NULL, 0) < 0)
		return;
	struct journal_event ev = {
	    .op = e.op,
	    .result = e.result,
	    .pid = e.pid,
	    .uid = e.uid,
	    .path = e.path,
	    .path2 = e.path2,
	    .bytes = e.bytes,
	    .flags = e.flags,
	    .mode = e.mode,
	    .has_hash_before = e.has_hash_before,
	    .has_hash_after = e.has_hash_after,
	    .hash_before = e.hash_before,
	    .hash_after = e.hash_after,
	    .detail = e.detail_is_object ? NULL : e.detail,
	};
	struct journal_who who = {e.comm, e.exe};
	struct jbuf b = {0};
	journal_format(&b, e.seq, e.prev, e.time_ns, &ev, &who,
		       e.detail_is_object ? e.detail : NULL);
	struct journal_entry e2 = {0};
	if (!b.oom) {
		if (journal_entry_parse(b.p, b.len, &e2, NULL, 0) < 0)
			abort();
		same_entry(&e, &e2);
	}
	journal_entry_clear(&e2);
	journal_entry_clear(&e);
	jbuf_free(&b);
}

static void roundtrip(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 6);
	if (!copy)
		return;
	memcpy(copy, data, size);
	memset(copy + size, 0, 6);
	const char *part[5];
	size_t at = 0;
	for (int k = 0; k < 5; k++) {
		part[k] = copy + at;
		at += strlen(copy + at) + 1;
		if (at > size)
			at = size;
	}
	struct journal_event ev = {
	    .op = JOP_RENAME,
	    .path = part[0],
	    .path2 = part[1],
	    .detail = part[2][0] == '{' ? NULL : part[2],
	};
	struct journal_who who = {strlen(part[3]) <= 16 ? part[3] : NULL, part[4]};
	struct jbuf b = {0};
	journal_format(&b, 1, journal_chain_genesis, 1, &ev, &who, NULL);
	if (!b.oom) {
		if (memchr(b.p, '\n', b.len))
			abort();
		struct journal_entry e = {0};
		if (journal_entry_parse(b.p, b.len, &e, NULL, 0) < 0)
			abort();
		if (strcmp(e.path, part[0]) || strcmp(e.path2, part[1]))
			abort();
		if (ev.detail && strcmp(e.detail, ev.detail))
			abort();
		if (who.comm && strcmp(e.comm, who.comm))
			abort();
		if (who.exe[0] && strcmp(e.exe, who.exe))
			abort();
		journal_entry_clear(&e);
	}
	jbuf_free(&b);
	free(copy);
}

static void state_maps(const uint8_t *data, size_t size)
{
	struct journal_pathmap *m, *back;
	if (journal_pathmap_new(&m) < 0)
		return;
	struct jcursor c = {data, data + size, false};
	if (journal_pathmap_load(m, &c) == 0) {
		struct jbuf b = {0};
		journal_pathmap_save(m, &b);
		if (!b.oom && journal_pathmap_new(&back) == 0) {
			struct jcursor c2 = {(const unsigned char *)b.p,
					     (const unsigned char *)b.p + b.len, false};
			if (journal_pathmap_load(back, &c2) != 0 || c2.p != c2.end ||
			    journal_pathmap_count(back) != journal_pathmap_count(m))
				abort();
			journal_pathmap_free(back);
		}
		jbuf_free(&b);
	}
	journal_pathmap_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	scan(data, size);
	state_maps(data, size);
	reformat(data, size);
	roundtrip(data, size);
	return 0;
}
