/* test_runlog.c - the run journal's chain (runlog.h): records appended by
 * runlog_append() verify; an edited byte, a removed, reordered or torn record
 * is found and the right record named. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/runlog.h"

static char dir[] = "/tmp/agentfs-runlog.XXXXXX";
static char path[256];

/* A run journal of @n records, freshly made. */
static void make(int n)
{
	unlink(path);
	struct runlog l;
	ck_assert_int_eq(runlog_open(&l, path), 0);
	for (int i = 0; i < n; i++) {
		json_t *f = json_pack("{s:s, s:i}", "op", i == 0 ? "run" : "net", "n", i);
		ck_assert_int_eq(runlog_append(&l, f), 0);
		json_decref(f);
	}
	runlog_close(&l);
}

static char *slurp(size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	char *buf = malloc(1 << 16);
	*len = fread(buf, 1, 1 << 16, f);
	fclose(f);
	buf[*len] = 0;
	return buf;
}

static void spit(const char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
}

/* Start of line @k (1-based) in @buf. */
static char *line_at(char *buf, int k)
{
	char *p = buf;
	for (int i = 1; i < k; i++)
		p = strchr(p, '\n') + 1;
	return p;
}

/* Add 1 to the last digit of the "n" value of line @k (valid JSON after). */
static void edit_byte(int k)
{
	size_t len;
	char *buf = slurp(&len);
	char *p = strstr(line_at(buf, k), "\"n\":");
	ck_assert_ptr_nonnull(p);
	p += 4;
	while (p[1] >= '0' && p[1] <= '9')
		p++;
	*p = (char)('0' + (*p - '0' + 1) % 10);
	spit(buf, len);
	free(buf);
}

static void remove_line(int k)
{
	size_t len;
	char *buf = slurp(&len);
	char *a = line_at(buf, k), *b = strchr(a, '\n') + 1;
	memmove(a, b, len - (size_t)(b - buf));
	spit(buf, len - (size_t)(b - a));
	free(buf);
}

START_TEST(intact)
{
	struct runlog_verify v;
	ck_assert_int_eq(runlog_verify_file(path, &v), -ENOENT);
	make(5);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 0);
	ck_assert_uint_eq(v.records, 5);
	make(0);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 0);
	ck_assert_uint_eq(v.records, 0);
}
END_TEST

START_TEST(edited_record_is_named)
{
	struct runlog_verify v;
	make(5);
	edit_byte(2);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 2);
	ck_assert_uint_eq(v.bad_seq, 2);
	ck_assert_str_eq(v.why, "record 2 was edited: it no longer hashes to the prev that record "
				"3 holds");
	ck_assert_uint_eq(v.records, 1);

	make(5);
	edit_byte(1);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_seq, 1);

	/* The record before the last: nothing after the last tells which of the two
	 * was edited; the earlier is named. */
	make(5);
	edit_byte(4);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_seq, 4);
	ck_assert_uint_eq(v.bad_line, 4);
}
END_TEST

START_TEST(edited_prev_is_named)
{
	struct runlog_verify v;
	make(5);
	size_t len;
	char *buf = slurp(&len);
	char *p = strstr(line_at(buf, 3), "\"prev\":\"") + 8;
	*p = *p == 'a' ? 'b' : 'a';
	spit(buf, len);
	free(buf);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_seq, 3);
	ck_assert_str_eq(v.why, "record 3 was edited: its prev does not match record 2");
}
END_TEST

START_TEST(removed_reordered_torn)
{
	struct runlog_verify v;
	make(5);
	remove_line(3);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 3);
	ck_assert_uint_eq(v.bad_seq, 3);
	ck_assert_ptr_nonnull(strstr(v.why, "record 3 is missing (found seq 4)"));

	make(3);
	size_t len;
	char *buf = slurp(&len);
	char *two = line_at(buf, 2), *three = line_at(buf, 3);
	size_t l2 = (size_t)(three - two), l3 = len - (size_t)(three - buf);
	char *swapped = malloc(len);
	memcpy(swapped, buf, (size_t)(two - buf));
	memcpy(swapped + (two - buf), three, l3);
	memcpy(swapped + (two - buf) + l3, two, l2);
	spit(swapped, len);
	free(swapped);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 2);
	ck_assert_ptr_nonnull(strstr(v.why, "record 2 is missing (found seq 3)"));

	spit(buf, len - 1); /* the last newline gone */
	free(buf);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 3);
	ck_assert_ptr_nonnull(strstr(v.why, "torn"));

	const char *short_prev =
	    "{\"v\":1,\"seq\":1,\"prev\":\"0\",\"time_ns\":1,\"op\":\"run\"}\n";
	spit(short_prev, strlen(short_prev));
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 1);
	ck_assert_ptr_nonnull(strstr(v.why, "not a valid record: \"prev\""));
	spit("not json\n", 9);
	ck_assert_int_eq(runlog_verify_file(path, &v), 0);
	ck_assert_uint_eq(v.bad_line, 1);
	ck_assert_ptr_nonnull(strstr(v.why, "not a valid record: not JSON"));
}
END_TEST

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}
	snprintf(path, sizeof(path), "%s/run.jsonl", dir);
	Suite *s = suite_create("runlog");
	TCase *tc = tcase_create("verify");
	tcase_add_test(tc, intact);
	tcase_add_test(tc, edited_record_is_named);
	tcase_add_test(tc, edited_prev_is_named);
	tcase_add_test(tc, removed_reordered_torn);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	unlink(path);
	rmdir(dir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
