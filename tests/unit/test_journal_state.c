/*
 * test_journal_state.c - the replay's saved state ("<journal>.state",
 * journal/checkpoint.c): an open resumes from it, reaches what a scan of the
 * whole journal reaches, and ignores it whenever it does not describe the
 * journal's bytes.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal/internal.h"
#include "journal/journal.h"
#include "journal/writer.h"
#include "tests/unit/journal_testlib.h"

static char *state_of(struct jt *jt)
{
	static char p[PATH_MAX + 16];
	snprintf(p, sizeof(p), "%s.state", jt->journal);
	return p;
}

static size_t lines_in(const char *path)
{
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = 0;
	for (int c; (c = fgetc(f)) != EOF;)
		n += c == '\n';
	fclose(f);
	return n;
}

static off_t size_of(const char *path)
{
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_size;
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	ck_assert_ptr_nonnull(in);
	ck_assert_ptr_nonnull(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
	fclose(in);
	ck_assert_int_eq(fclose(out), 0);
}

/* Open @path and say how much the open replayed. */
static struct journal *open_counted(const char *path, uint64_t *replayed, uint64_t *resumed)
{
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, path, JOURNAL_SYNC_NEVER), 0);
	journal_open_stats(j, replayed, resumed);
	return j;
}

START_TEST(open_resumes_where_the_last_close_left)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 300, JOURNAL_SYNC_NEVER);
	ck_assert_int_eq(access(state_of(&jt), F_OK), 0);
	uint64_t replayed, resumed;
	struct journal *j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(replayed, 0);
	ck_assert_uint_eq(resumed, (uint64_t)jt_size(&jt));
	ck_assert_uint_eq(j->seq, 301);
	for (int i = 0; i < 7; i++)
		journal_record(j, &(struct journal_event){.op = JOP_READ, .path = "a"});
	journal_close(j);
	/* Nothing after the state the last close saved. */
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(replayed, 0);
	ck_assert_uint_eq(j->seq, 308);
	journal_close(j);

	/* A daemon killed: its close never saved a state, so the next open
	 * parses what it wrote after the state its own open found. */
	off_t before = jt_size(&jt);
	pid_t child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		if (journal_open(&j, jt.journal, JOURNAL_SYNC_NEVER) < 0)
			_exit(1);
		for (int i = 0; i < 5; i++)
			journal_record(j, &(struct journal_event){.op = JOP_READ, .path = "b"});
		_exit(journal_flush(j) < 0);
	}
	int status;
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, (uint64_t)before);
	ck_assert_uint_eq(replayed, 5);
	ck_assert_uint_eq(j->seq, 313);
	journal_close(j);
	jt_teardown(&jt);
}
END_TEST

/* A writer that rests a while with much unsaved brings the saved state up
 * to date by itself: the close finds nothing left to parse. */
static char *open_text(const char *path, uint64_t *replayed);

/* The writer's thresholds for a refresh of the state, lowered so that the
 * tests write little (they take minutes under ThreadSanitizer otherwise). */
#define TEST_IDLE_BYTES (64 << 10)
#define TEST_BUSY_BYTES (256 << 10)

static void small_thresholds(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	j->state_idle_bytes = TEST_IDLE_BYTES;
	j->state_busy_bytes = TEST_BUSY_BYTES;
	pthread_mutex_unlock(&j->lock);
}

/* Records of varied paths until the journal holds @bytes more. */
static int record_until(struct jt *jt, struct journal *j, off_t bytes, int from)
{
	off_t until = jt_size(jt) + bytes;
	int n = 0;
	for (; jt_size(jt) < until; n++) {
		char path[200];
		snprintf(path, sizeof(path), "dir%d/%0150d", (from + n) % 7, from + n);
		journal_record(j, &(struct journal_event){.op = JOP_CREATE, .path = path});
		if (n % 1000 == 999)
			ck_assert_int_eq(journal_flush(j), 0);
	}
	ck_assert_int_eq(journal_flush(j), 0);
	return n;
}

/* Wait until the writer's state thread saved the state of @size bytes. */
static void wait_saved(struct journal *j, off_t size)
{
	off_t saved = 0;
	for (int i = 0; i < 1200 && saved != size; i++) {
		usleep(50000);
		pthread_mutex_lock(&j->lock);
		saved = j->checkpoint_end;
		pthread_mutex_unlock(&j->lock);
	}
	ck_assert_int_eq(saved, size);
}

START_TEST(writer_saves_the_state_when_it_rests)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	small_thresholds(j);
	int n = record_until(&jt, j, 2 * TEST_IDLE_BYTES, 0);
	off_t first = jt_size(&jt);
	wait_saved(j, first);
	/* A second rest: the thread goes on from its first scan, parsing
	 * only the records since. */
	pthread_mutex_lock(&j->lock);
	uint64_t lines = j->live ? j->live->lines : 0;
	pthread_mutex_unlock(&j->lock);
	ck_assert_uint_eq(lines, (uint64_t)n);
	n += record_until(&jt, j, 2 * TEST_IDLE_BYTES, n);
	off_t size = jt_size(&jt);
	wait_saved(j, size);
	pthread_mutex_lock(&j->lock);
	ck_assert_ptr_nonnull(j->live);
	ck_assert_uint_eq(j->live->lines_resumed, lines);
	ck_assert_uint_eq(j->live->lines, (uint64_t)n);
	pthread_mutex_unlock(&j->lock);
	/* It is the state of those bytes: another open (after this one's
	 * close, which has nothing to add) resumes from it, and reaches what
	 * a full replay does. */
	journal_close(j);
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s/full.jsonl", jt.dir);
	copy_file(jt.journal, copy);
	uint64_t replayed, full;
	char *with = open_text(jt.journal, &replayed);
	char *without = open_text(copy, &full);
	ck_assert_uint_eq(replayed, 0);
	ck_assert_uint_eq(full, (uint64_t)n);
	ck_assert_str_eq(with, without);
	free(with);
	free(without);
	jt_teardown(&jt);
}
END_TEST

/* A refresh that comes due while the state thread is still at work (the
 * first of a session on a long journal, a slow machine) is started once
 * that one is done, at the writer's next rest: the close is not left with
 * everything since. */
START_TEST(refresh_due_while_busy_starts_after)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	small_thresholds(j);
	pthread_mutex_lock(&gate);
	pthread_mutex_lock(&j->lock);
	j->state_gate = &gate;
	pthread_mutex_unlock(&j->lock);
	int n = record_until(&jt, j, 2 * TEST_IDLE_BYTES, 0);
	/* The rest starts the thread, which waits at the gate. */
	bool started = false;
	for (int i = 0; i < 200 && !started; i++) {
		usleep(50000);
		pthread_mutex_lock(&j->lock);
		started = j->state_started;
		pthread_mutex_unlock(&j->lock);
	}
	ck_assert(started);
	/* More, and a second rest while it is held: due again. */
	n += record_until(&jt, j, 2 * TEST_IDLE_BYTES, n);
	off_t size = jt_size(&jt);
	usleep((STATE_IDLE_MS + 500) * 1000);
	pthread_mutex_lock(&j->lock);
	ck_assert_int_eq(j->checkpoint_end, 0);
	pthread_mutex_unlock(&j->lock);
	/* Let it go: it saves what it was started for, then, at the next
	 * rest, a second one saves the rest, with no record written since. */
	pthread_mutex_unlock(&gate);
	wait_saved(j, size);
	journal_close(j);
	uint64_t replayed, resumed;
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, (uint64_t)size);
	ck_assert_uint_eq(replayed, 0);
	ck_assert_uint_eq(j->seq, (uint64_t)n);
	journal_close(j);
	jt_teardown(&jt);
}
END_TEST

/* Without a rest the writer still has the state saved, every
 * state_busy_bytes (STATE_BUSY_BYTES): the close never has a whole session
 * to parse. */
START_TEST(writer_saves_the_state_without_a_rest)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	small_thresholds(j);
	int n = record_until(&jt, j, 2 * TEST_BUSY_BYTES, 0);
	/* Records keep coming, a few every 100 ms (never a second's rest),
	 * until the state thread, at nice 19 on a busy machine, saved it: 120
	 * s at most. */
	off_t saved = 0;
	for (int round = 0; round < 1200 && saved == 0; round++) {
		n += record_until(&jt, j, 1, n);
		usleep(100000);
		pthread_mutex_lock(&j->lock);
		saved = j->checkpoint_end;
		pthread_mutex_unlock(&j->lock);
	}
	ck_assert_int_ge(saved, TEST_BUSY_BYTES);
	journal_close(j);
	uint64_t replayed, resumed;
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, (uint64_t)jt_size(&jt));
	ck_assert_uint_eq(j->seq, (uint64_t)n);
	journal_close(j);
	jt_teardown(&jt);
}
END_TEST

/* A journal damaged before its tail keeps the damage (evidence), so no
 * state can be saved after it: the writer starts no refresh for it. */
START_TEST(damaged_journal_gets_no_refresh)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 40, JOURNAL_SYNC_NEVER);
	size_t n;
	char **lines = jt_lines(&jt, &n);
	lines[5][30] = lines[5][30] == '1' ? '2' : '1';
	jt_put_lines(&jt, lines, n);
	jt_free_lines(lines, n);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_INTERVAL), 0);
	small_thresholds(j);
	record_until(&jt, j, 2 * TEST_BUSY_BYTES, 0);
	usleep((STATE_IDLE_MS + 500) * 1000);
	pthread_mutex_lock(&j->lock);
	ck_assert(j->state_broken);
	ck_assert(!j->state_started);
	pthread_mutex_unlock(&j->lock);
	journal_close(j);
	jt_teardown(&jt);
}
END_TEST

/* The files recovery finds missing are recorded in the order of their
 * paths, whatever order the map they come from holds them in (one loaded
 * from a state has another history than one replayed). */
START_TEST(missing_files_recovered_in_path_order)
{
	struct jt jt;
	jt_setup(&jt);
	struct journal *j;
	ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_NEVER), 0);
	for (int i = 0; i < 300; i++) {
		char path[32];
		snprintf(path, sizeof(path), "f%d", (i * 7919) % 300);
		journal_record(j, &(struct journal_event){.op = JOP_CREATE, .path = path});
		if (i % 3 == 0)
			journal_record(j, &(struct journal_event){.op = JOP_UNLINK, .path = path});
	}
	journal_record(j, &(struct journal_event){.op = JOP_UNMOUNT});
	journal_close(j);
	for (int with_state = 1; with_state >= 0; with_state--) {
		char copy[PATH_MAX];
		snprintf(copy, sizeof(copy), "%s/c%d.jsonl", jt.dir, with_state);
		copy_file(jt.journal, copy);
		if (with_state) {
			char st[PATH_MAX + 16];
			snprintf(st, sizeof(st), "%s.state", copy);
			copy_file(state_of(&jt), st);
		}
		off_t before = size_of(copy);
		uint64_t replayed, resumed;
		j = open_counted(copy, &replayed, &resumed);
		ck_assert_uint_eq(resumed != 0, with_state);
		int up = open(jt.upper, O_RDONLY | O_DIRECTORY);
		ck_assert_int_gt(journal_recover_upper(j, up, false), 0);
		close(up);
		journal_close(j);
		int fd = open(copy, O_RDONLY);
		ck_assert_int_eq(lseek(fd, before, SEEK_SET), before);
		struct journal_reader *r;
		ck_assert_int_eq(journal_reader_fd(&r, fd), 0);
		struct journal_entry e = {0};
		char err[256], last[64] = "";
		int count = 0;
		while (journal_reader_next(r, &e, err, sizeof(err)) == 1) {
			if (e.op == JOP_RECOVER && e.result == -ENOENT) {
				ck_assert_msg(strcmp(last, e.path) < 0, "%s after %s", e.path,
					      last);
				snprintf(last, sizeof(last), "%s", e.path);
				count++;
			}
			journal_entry_clear(&e);
		}
		journal_reader_close(r);
		close(fd);
		ck_assert_int_eq(count, 200);
	}
	jt_teardown(&jt);
}
END_TEST

/* What a state must not be trusted for: each case gets a full scan, whose
 * results are those of an open without any state. */
START_TEST(state_ignored_unless_it_describes_the_journal)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 40, JOURNAL_SYNC_NEVER);
	char good[PATH_MAX], journal[PATH_MAX], head[PATH_MAX];
	snprintf(good, sizeof(good), "%s/good.state", jt.dir);
	snprintf(journal, sizeof(journal), "%s/good.jsonl", jt.dir);
	snprintf(head, sizeof(head), "%s/good.head", jt.dir);
	copy_file(state_of(&jt), good);
	copy_file(jt.journal, journal);
	copy_file(jt.head, head);
	size_t all = lines_in(jt.journal);
	uint64_t replayed, resumed;

	/* 1. A byte of the state flipped: its own hash fails. */
	off_t ss = size_of(good);
	for (off_t at = 0; at < ss; at += ss / 7 + 1) {
		copy_file(good, state_of(&jt));
		int fd = open(state_of(&jt), O_RDWR);
		unsigned char b;
		ck_assert_int_eq(pread(fd, &b, 1, at), 1);
		b ^= 0x20;
		ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
		close(fd);
		struct journal *j = open_counted(jt.journal, &replayed, &resumed);
		ck_assert_msg(resumed == 0 && replayed == all, "byte %lld", (long long)at);
		journal_close(j);
	}

	/* 2. A record of the journal edited, still valid JSON: the state is of
	 * other bytes, and the damage is found as without it. */
	copy_file(good, state_of(&jt));
	size_t n;
	char **lines = jt_lines(&jt, &n);
	char *p = strstr(lines[9], "file-");
	ck_assert_ptr_nonnull(p);
	p[5] = p[5] == '9' ? '8' : '9';
	jt_put_lines(&jt, lines, n);
	jt_free_lines(lines, n);
	struct journal *j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, 0);
	ck_assert_uint_eq(replayed, all);
	journal_close(j);
	struct journal_verify v = {0};
	ck_assert_int_eq(journal_verify_file(jt.journal, -1, &v), 0);
	ck_assert_uint_eq(v.bad_line, 10);

	/* 3. The journal shorter than the state says (records cut from its
	 * end, the head file with them). */
	copy_file(good, state_of(&jt));
	lines = jt_lines(&jt, &n);
	jt_put_lines(&jt, lines, 30);
	jt_free_lines(lines, n);
	unlink(jt.head);
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, 0);
	ck_assert_uint_eq(replayed, 30);
	journal_close(j);

	/* 4. The state of another journal that is as long. */
	struct jt other;
	jt_setup(&other);
	jt_write_records(&other, 40, JOURNAL_SYNC_NEVER);
	copy_file(journal, jt.journal);
	copy_file(head, jt.head);
	char theirs[PATH_MAX + 16];
	snprintf(theirs, sizeof(theirs), "%s", state_of(&other));
	copy_file(theirs, state_of(&jt));
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, 0);
	ck_assert_uint_eq(replayed, all);
	journal_close(j);
	jt_teardown(&other);

	/* 5. The head file names a record before the state's last: the state
	 * keeps no hash of it, so only a full scan can check it. */
	copy_file(journal, jt.journal);
	copy_file(good, state_of(&jt));
	struct journal_head h;
	ck_assert_int_eq(journal_head_read(head, &h), 1);
	lines = jt_lines(&jt, &n);
	h.seq = 20;
	h.hash = journal_chain_hash(lines[19], strlen(lines[19]));
	jt_free_lines(lines, n);
	int hfd = open(jt.head, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_eq(journal_head_write_fd(hfd, &h), 0);
	close(hfd);
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, 0);
	ck_assert_uint_eq(replayed, all);
	journal_close(j);

	/* 6. A FIFO in the state's place, or in its temporary file's: the open
	 * neither waits for a writer nor for a reader. */
	copy_file(journal, jt.journal);
	copy_file(head, jt.head);
	unlink(state_of(&jt));
	ck_assert_int_eq(mkfifo(state_of(&jt), 0600), 0);
	char tmp[PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp", state_of(&jt));
	ck_assert_int_eq(mkfifo(tmp, 0600), 0);
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, 0);
	ck_assert_uint_eq(replayed, all);
	journal_close(j);
	unlink(tmp);
	unlink(state_of(&jt));

	/* 7. A huge file in the state's place: not read at all, so it costs
	 * neither the time to read it nor memory the daemon may not have. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	copy_file(journal, jt.journal);
	copy_file(head, jt.head);
	unlink(state_of(&jt));
	int big = open(state_of(&jt), O_WRONLY | O_CREAT, 0600);
	ck_assert_int_ge(big, 0);
	ck_assert_int_eq(ftruncate(big, (off_t)1000 << 20), 0);
	close(big);
	pid_t child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct rlimit lim = {(rlim_t)512 << 20, (rlim_t)512 << 20};
		if (setrlimit(RLIMIT_AS, &lim) < 0 ||
		    journal_open(&j, jt.journal, JOURNAL_SYNC_NEVER) < 0)
			_exit(1);
		journal_open_stats(j, &replayed, &resumed);
		_exit(resumed == 0 && replayed == all ? 0 : 2);
	}
	int status;
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
	unlink(state_of(&jt));
#endif

	/* And the good state, where it belongs, is used. */
	copy_file(journal, jt.journal);
	copy_file(head, jt.head);
	copy_file(good, state_of(&jt));
	j = open_counted(jt.journal, &replayed, &resumed);
	ck_assert_uint_eq(resumed, (uint64_t)size_of(journal));
	ck_assert_uint_eq(replayed, 0);
	journal_close(j);
	jt_teardown(&jt);
}
END_TEST

/* ---- an open from the state reaches what a full scan reaches ------------- */

/* The map as sorted text: each name, its content, and the first name (in
 * sorted order) of the names sharing that content (hard links). */
struct dump {
	struct journal_pathent **v;
	size_t n;
};

static void collect(void *arg, struct journal_pathent *e)
{
	struct dump *d = arg;
	d->v = realloc(d->v, (d->n + 1) * sizeof(*d->v));
	d->v[d->n++] = e;
}

static int by_path(const void *a, const void *b)
{
	return strcmp((*(struct journal_pathent *const *)a)->path,
		      (*(struct journal_pathent *const *)b)->path);
}

static char *map_text(struct journal_pathmap *m)
{
	struct dump d = {0};
	if (m)
		journal_pathmap_each(m, collect, &d);
	if (d.n)
		qsort(d.v, d.n, sizeof(*d.v), by_path);
	struct jbuf b = {0};
	jbuf_puts(&b, m ? "map\n" : "none\n");
	for (size_t i = 0; i < d.n; i++) {
		struct journal_pathent *e = d.v[i];
		size_t first = i;
		for (size_t k = 0; k < d.n; k++)
			if (d.v[k]->c == e->c) {
				first = k;
				break;
			}
		char line[PATH_MAX + 200];
		snprintf(line, sizeof(line), "%s %d %016llx%016llx c%llu e%llu =%s\n", e->path,
			 e->c->has_hash, (unsigned long long)e->c->hash.high64,
			 (unsigned long long)e->c->hash.low64, (unsigned long long)e->c->seq,
			 (unsigned long long)e->seq, d.v[first]->path);
		jbuf_puts(&b, line);
	}
	free(d.v);
	return b.p;
}

/* What an open leaves: the chain's end, the session's state, the maps, and
 * the records it appended (its recovery note), without their times. */
static char *open_text(const char *path, uint64_t *replayed)
{
	off_t before = size_of(path);
	uint64_t resumed;
	struct journal *j = open_counted(path, replayed, &resumed);
	char *map = map_text(j->map), *touched = map_text(j->touched);
	char head[256];
	snprintf(head, sizeof(head),
		 "seq %llu prev %016llx%016llx last %lld crashed %d size %lld\n",
		 (unsigned long long)j->seq, (unsigned long long)j->prev.high64,
		 (unsigned long long)j->prev.low64, (long long)j->last_time_ns, j->crashed,
		 (long long)j->size);
	ck_assert_int_eq(journal_flush(j), 0);
	struct jbuf b = {0};
	jbuf_puts(&b, head);
	jbuf_puts(&b, map);
	jbuf_puts(&b, touched);
	free(map);
	free(touched);
	int fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(lseek(fd, before, SEEK_SET), before);
	struct journal_reader *r;
	ck_assert_int_eq(journal_reader_fd(&r, fd), 0);
	struct journal_entry e = {0};
	char err[256];
	while (journal_reader_next(r, &e, err, sizeof(err)) == 1) {
		char line[4096];
		snprintf(line, sizeof(line), "appended %llu op %d result %d path %s detail %s\n",
			 (unsigned long long)e.seq, e.op, e.result, e.path ? e.path : "-",
			 e.detail ? e.detail : "-");
		jbuf_puts(&b, line);
		journal_entry_clear(&e);
	}
	journal_reader_close(r);
	close(fd);
	journal_close(j);
	return b.p;
}

static const char *const names[] = {"a", "b", "d", "d/x", "d/y", "d/e", "d/e/z", "f", "g/h"};
#define NNAMES (sizeof(names) / sizeof(names[0]))

/* One event of a random mix that moves both maps: files made, written,
 * linked, renamed (directories with what is under them, exchanges),
 * removed, discarded, recovered; some failing. */
static void random_event(struct journal *j, unsigned *seed)
{
	static const enum journal_op ops[] = {
	    JOP_CREATE, JOP_COPYUP,  JOP_WRITE,	  JOP_WRITE,  JOP_TRUNCATE, JOP_SYMLINK,
	    JOP_LINK,	JOP_RENAME,  JOP_RENAME,  JOP_UNLINK, JOP_RMDIR,    JOP_MKDIR,
	    JOP_MKNOD,	JOP_DISCARD, JOP_RECOVER, JOP_READ,   JOP_CONCEAL,
	};
	int r = rand_r(seed);
	struct journal_event ev = {
	    .op = ops[r % (sizeof(ops) / sizeof(ops[0]))],
	    .result = r % 13 == 0 ? -ENOENT : 0,
	    .pid = getpid(),
	    .path = names[(r >> 5) % NNAMES],
	    .path2 = names[(r >> 9) % NNAMES],
	    .bytes = (uint64_t)(r >> 3) % 5,
	    .has_hash_after = (r >> 13) % 4 != 0,
	    .hash_after = {(uint64_t)rand_r(seed), (uint64_t)rand_r(seed)},
	    .has_hash_before = (r >> 15) % 2,
	    .hash_before = {(uint64_t)rand_r(seed), 7},
	    .mode = (r >> 16) % 3 ? 0100644 : 010644,
	};
	if (ev.op == JOP_RENAME && (r >> 18) % 4 == 0)
		ev.flags = 2; /* RENAME_EXCHANGE */
	if (ev.op == JOP_WRITE && (r >> 20) % 8 == 0)
		ev.flags = JOURNAL_F_UNLINKED;
	if (ev.op == JOP_RECOVER && (r >> 21) % 2)
		ev.flags = JOURNAL_F_MARKER;
	if (ev.op == JOP_RECOVER && (r >> 22) % 3 == 0)
		ev.result = -ENOENT;
	if (ev.op == JOP_DISCARD && (r >> 23) % 5 == 0)
		ev.path = "";
	journal_record(j, &ev);
}

START_TEST(resumed_open_equals_full_scan)
{
	struct jt jt;
	jt_setup(&jt);
	char copy[PATH_MAX], copy_head[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s/full.jsonl", jt.dir);
	snprintf(copy_head, sizeof(copy_head), "%s/full.jsonl.head", jt.dir);
	unsigned seed = 20261207;
	uint64_t resumed_rounds = 0;
	for (int round = 0; round < 40; round++) {
		/* The same bytes, once with the state beside them, once without. */
		if (access(jt.journal, F_OK) == 0) {
			copy_file(jt.journal, copy);
			unlink(copy_head);
			if (access(jt.head, F_OK) == 0)
				copy_file(jt.head, copy_head);
			char cs[PATH_MAX + 16];
			snprintf(cs, sizeof(cs), "%s.state", copy);
			unlink(cs);
			uint64_t rs, rf;
			char *with = open_text(jt.journal, &rs);
			char *without = open_text(copy, &rf);
			ck_assert_msg(strcmp(with, without) == 0,
				      "round %d: from the state:\n%s\nfrom the start:\n%s", round,
				      with, without);
			resumed_rounds += rs < rf;
			free(with);
			free(without);
			/* open_text() appended the same records to both, and its
			 * close saved the state of that end (when intact). */
		}
		struct journal *j;
		ck_assert_int_eq(journal_open(&j, jt.journal, JOURNAL_SYNC_NEVER), 0);
		if (round % 3 == 0)
			journal_record(j, &(struct journal_event){.op = JOP_MOUNT});
		int n = 5 + rand_r(&seed) % 60;
		for (int i = 0; i < n; i++)
			random_event(j, &seed);
		if (round % 4 != 1) /* else a crash: no unmount record */
			journal_record(j, &(struct journal_event){.op = JOP_UNMOUNT});
		journal_close(j);
		if (round % 7 == 5) {
			/* A torn tail, trimmed by the next open. */
			FILE *f = fopen(jt.journal, "a");
			fputs("{\"v\":1,\"seq\":", f);
			fclose(f);
		}
		if (round == 30) {
			/* Damage before the tail, kept: no state is saved after it. */
			size_t nl;
			char **lines = jt_lines(&jt, &nl);
			char *p = strstr(lines[nl / 2], "\"op\":\"");
			ck_assert_ptr_nonnull(p);
			p[6] = p[6] == 'r' ? 'w' : 'r';
			jt_put_lines(&jt, lines, nl);
			jt_free_lines(lines, nl);
		}
	}
	/* Most opens resumed (the ones right after a torn tail or the damage
	 * did not, and from the damage on none saves a state). */
	ck_assert_uint_ge(resumed_rounds, 20);
	jt_teardown(&jt);
}
END_TEST

/* A scan with a limit (the state thread's: the journal's end when it
 * started, while the writer appends) reads nothing past it. */
START_TEST(scan_stops_at_its_limit)
{
	struct jt jt;
	jt_setup(&jt);
	jt_write_records(&jt, 10, JOURNAL_SYNC_NEVER);
	size_t n;
	char **lines = jt_lines(&jt, &n);
	off_t four = 0;
	for (int i = 0; i < 4; i++)
		four += (off_t)strlen(lines[i]) + 1;
	jt_free_lines(lines, n);
	int fd = open(jt.journal, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	/* At a record's end: four records, clean, as if the file ended there. */
	struct journal_scan s = {.limit = four};
	ck_assert_int_eq(journal_scan_fd(fd, &s), 0);
	ck_assert_uint_eq(s.records, 4);
	ck_assert_uint_eq(s.bad_line, 0);
	ck_assert_int_eq(s.file_size, four);
	ck_assert_int_eq(s.intact_end, four);
	/* Inside the fifth: that one is torn, nothing after it is read. */
	struct journal_scan t = {.limit = four + 10};
	ck_assert_int_eq(journal_scan_fd(fd, &t), 0);
	ck_assert_uint_eq(t.records, 4);
	ck_assert_uint_eq(t.bad_line, 5);
	ck_assert(t.bad_is_tail);
	close(fd);
	jt_teardown(&jt);
}
END_TEST

/* A map saved and loaded back holds the same, links shared as before. */
START_TEST(map_round_trip)
{
	struct journal_pathmap *m, *back;
	ck_assert_int_eq(journal_pathmap_new(&m), 0);
	XXH128_hash_t h = {1, 2};
	ck_assert_int_eq(journal_pathmap_set(m, "d/a", true, h, 3), 0);
	ck_assert_int_eq(journal_pathmap_link(m, "d/a", "e/b", 4), 0);
	ck_assert_int_eq(journal_pathmap_set(m, "c", false, (XXH128_hash_t){0, 0}, 5), 0);
	ck_assert_int_eq(journal_pathmap_set(m, "", true, h, 6), 0);
	struct jbuf b = {0};
	journal_pathmap_save(m, &b);
	ck_assert(!b.oom);
	ck_assert_int_eq(journal_pathmap_new(&back), 0);
	struct jcursor c = {(const unsigned char *)b.p, (const unsigned char *)b.p + b.len, false};
	ck_assert_int_eq(journal_pathmap_load(back, &c), 0);
	ck_assert(c.p == c.end);
	char *x = map_text(m), *y = map_text(back);
	ck_assert_str_eq(x, y);
	/* A write through one name is the content of both. */
	ck_assert_int_eq(journal_pathmap_update(back, "e/b", true, (XXH128_hash_t){9, 9}, 7), 0);
	ck_assert_uint_eq(journal_pathmap_get(back, "d/a")->c->hash.low64, 9);
	/* A rename of "d" finds what is under it (the prefix index rebuilt). */
	ck_assert_int_eq(journal_pathmap_rename(back, "d", "z", false, 8), 0);
	ck_assert_ptr_nonnull(journal_pathmap_get(back, "z/a"));
	ck_assert_ptr_null(journal_pathmap_get(back, "d/a"));
	/* Every truncation of the bytes is refused, never read past. */
	for (size_t cut = 0; cut < b.len; cut++) {
		struct journal_pathmap *t;
		ck_assert_int_eq(journal_pathmap_new(&t), 0);
		struct jcursor tc = {(const unsigned char *)b.p, (const unsigned char *)b.p + cut,
				     false};
		ck_assert_int_eq(journal_pathmap_load(t, &tc), -EBADMSG);
		journal_pathmap_free(t);
	}
	free(x);
	free(y);
	jbuf_free(&b);
	journal_pathmap_free(m);
	journal_pathmap_free(back);
}
END_TEST

static Suite *state_suite(void)
{
	Suite *s = suite_create("journal-state");
	TCase *tc = tcase_create("state");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, open_resumes_where_the_last_close_left);
	tcase_add_test(tc, writer_saves_the_state_when_it_rests);
	tcase_add_test(tc, writer_saves_the_state_without_a_rest);
	tcase_add_test(tc, refresh_due_while_busy_starts_after);
	tcase_add_test(tc, damaged_journal_gets_no_refresh);
	tcase_add_test(tc, missing_files_recovered_in_path_order);
	tcase_add_test(tc, state_ignored_unless_it_describes_the_journal);
	tcase_add_test(tc, resumed_open_equals_full_scan);
	tcase_add_test(tc, scan_stops_at_its_limit);
	tcase_add_test(tc, map_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(state_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
