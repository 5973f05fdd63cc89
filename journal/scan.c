/*
 * scan.c - reading a whole journal and checking its chain, shared by
 * journal_open() (to find a torn tail and the state to continue from) and by
 * journal_verify_file().
 *
 * Naming the right record: an edit to record K that keeps it valid JSON shows
 * as record K+1's prev not matching.  That mismatch also appears when K+1's own
 * prev field was edited; then, though, record K+2's prev no longer matches K+1
 * either.  So on a mismatch the scan looks one line ahead (or at the head file
 * for the last record) before blaming K or K+1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/internal.h"

static void set_bad(struct journal_scan *s, uint64_t line, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_bad(struct journal_scan *s, uint64_t line, uint64_t seq, const char *fmt, ...)
{
	if (s->bad_line)
		return;
	s->bad_line = line;
	s->bad_seq = seq;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
}

int journal_scan_fd(int fd, struct journal_scan *s)
{
	struct journal_reader *r;
	if (lseek(fd, s->resume ? s->intact_end : 0, SEEK_SET) < 0)
		return -errno;
	int rc = journal_reader_fd(&r, fd);
	if (rc < 0)
		return rc;
	journal_reader_limit(r, s->limit);
	if (!s->resume) {
		s->last_hash = journal_chain_genesis;
		s->file_last_hash = journal_chain_genesis;
		s->last_op = JOP__COUNT;
		s->lines = 0;
	}

	/* A prev mismatch waiting for the next line to say whom to blame. */
	bool pending = false;
	uint64_t pend_line = 0, pend_seq = 0;
	XXH128_hash_t pend_hash = {0, 0};

	uint64_t lineno = s->lines;
	const char *line;
	size_t len;
	off_t off;
	bool last_was_parse_error = false;
	while ((rc = journal_reader_line(r, &line, &len, &off)) == 1) {
		lineno++;
		if (s->prefix) {
			XXH3_128bits_update(s->prefix, line, len);
			XXH3_128bits_update(s->prefix, "\n", 1);
		}
		XXH128_hash_t h = journal_chain_hash(line, len);
		s->file_last_hash = h;
		/* Each line is parsed once: its seq and prev also settle a pending
		 * mismatch and name the file's last record when damage came before. */
		struct journal_entry e = {.lineno = lineno};
		char err[512];
		bool parsed = journal_entry_parse(line, len, &e, err, sizeof(err)) == 0;
		if (parsed)
			s->file_last_seq = e.seq;
		last_was_parse_error = !parsed;
		if (pending) {
			pending = false;
			if (parsed && XXH128_isEqual(e.prev, pend_hash))
				set_bad(s, pend_line - 1, pend_seq - 1,
					"record %" PRIu64 " was edited: it no longer hashes to the "
					"prev that record %" PRIu64 " holds",
					pend_seq - 1, pend_seq);
			else
				set_bad(s, pend_line, pend_seq,
					"record %" PRIu64 " was edited: its prev does not match "
					"record %" PRIu64,
					pend_seq, pend_seq - 1);
		}
		if (s->bad_line) {
			journal_entry_clear(&e);
			continue;
		}
		if (!parsed) {
			set_bad(s, lineno, s->last_seq + 1, "not a valid record: %s", err);
			continue;
		}
		uint64_t want = s->last_seq + 1;
		if (e.seq != want) {
			if (e.seq > want)
				set_bad(s, lineno, want,
					"record %" PRIu64 " is missing (found seq %" PRIu64
					"): records were removed",
					want, e.seq);
			else
				set_bad(s, lineno, want,
					"seq %" PRIu64 " where %" PRIu64
					" was expected: records were reordered or duplicated",
					e.seq, want);
		} else if (!XXH128_isEqual(e.prev, s->last_hash)) {
			if (want == 1) {
				set_bad(s, lineno, want,
					"record 1 was edited: its prev is not the genesis value");
			} else {
				pending = true;
				pend_line = lineno;
				pend_seq = want;
				pend_hash = h;
			}
		}
		if (s->bad_line || pending) {
			journal_entry_clear(&e);
			continue;
		}
		s->records++;
		s->last_seq = e.seq;
		s->last_hash = h;
		s->last_time_ns = e.time_ns;
		s->last_op = e.op;
		if (e.op == JOP_MOUNT || e.op == JOP_UNMOUNT)
			s->crash_noted = false;
		if (e.op == JOP_MOUNT)
			s->session_open = true;
		else if (e.op == JOP_UNMOUNT)
			s->session_open = false;
		else if (e.op == JOP_RECOVER && s->session_open && (!e.path || !*e.path))
			s->crash_noted = true;
		s->intact_end = off + (off_t)len + 1;
		if (e.op == JOP_RECOVER)
			s->recovered++;
		if (s->check_seq && e.seq == s->check_seq) {
			s->check_found = true;
			s->check_hash = h;
		}
		if (s->map) {
			int m = journal_pathmap_apply(s->map, &e);
			if (m < 0) {
				journal_entry_clear(&e);
				journal_reader_close(r);
				return m;
			}
		}
		if (s->touched) {
			int m = journal_touched_apply(s->touched, &e);
			if (m < 0) {
				journal_entry_clear(&e);
				journal_reader_close(r);
				return m;
			}
		}
		if (s->on_entry)
			s->on_entry(s->arg, &e);
		journal_entry_clear(&e);
	}
	s->lines = lineno;
	size_t partial = journal_reader_partial(r);
	journal_reader_close(r);
	if (rc < 0)
		return rc;
	if (pending) {
		/* The mismatching record is the last one: the head file, written after
		 * it, holds its original hash when only the record before was edited. */
		if (s->head && s->head->seq == pend_seq && XXH128_isEqual(s->head->hash, pend_hash))
			set_bad(s, pend_line - 1, pend_seq - 1,
				"record %" PRIu64 " was edited: it no longer hashes to the prev "
				"that record %" PRIu64 " holds",
				pend_seq - 1, pend_seq);
		else
			set_bad(s, pend_line, pend_seq,
				"record %" PRIu64
				" was edited: its prev does not match record %" PRIu64,
				pend_seq, pend_seq - 1);
	}
	if (s->bad_line && s->bad_line == lineno && last_was_parse_error)
		s->bad_is_tail = true;
	if (partial) {
		set_bad(s, lineno + 1, s->last_seq + 1,
			"torn: the last line is incomplete (%zu bytes without a newline)", partial);
		if (s->bad_line == lineno + 1)
			s->bad_is_tail = true;
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	s->file_size = s->limit && s->limit < st.st_size ? s->limit : st.st_size;
	s->complete_end = s->file_size - (off_t)partial;
	return 0;
}
