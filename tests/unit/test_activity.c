/* test_activity.c - what the journal says happened (activity.h): kinds, distinct
 * paths, renames in order, processes by pid and by name, escaping. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/activity.h"

static void add(struct activity *a, enum journal_op op, int result, const char *comm, pid_t pid,
		const char *path, const char *path2, int64_t t)
{
	struct journal_entry e = {.op = op,
				  .result = result,
				  .pid = pid,
				  .time_ns = t,
				  .comm = (char *)comm,
				  .path = (char *)path,
				  .path2 = (char *)path2};
	ck_assert_int_eq(activity_add(a, &e), 0);
}

START_TEST(kinds_and_counts)
{
	struct activity *a;
	ck_assert_int_eq(activity_new(&a), 0);
	add(a, JOP_MOUNT, 0, "agentfs", 1, NULL, NULL, 100);
	add(a, JOP_READ, 0, "cat", 10, "src/a.c", NULL, 200);
	add(a, JOP_READ, 0, "cat", 11, "src/a.c", NULL, 300); /* same path: counted once */
	add(a, JOP_READ, 0, "cat", 11, "b", NULL, 300);
	add(a, JOP_WRITE, 0, "sh", 12, "README.md", NULL, 400);
	add(a, JOP_WRITE, -ENOSPC, "sh", 12, "failed.txt", NULL, 400); /* failed: not written */
	add(a, JOP_TRUNCATE, 0, "sh", 12, "t", NULL, 400);
	add(a, JOP_CREATE, 0, "sh", 12, "new", NULL, 400);
	add(a, JOP_LINK, 0, "ln", 13, "new", "hard", 400); /* created: the new name */
	add(a, JOP_UNLINK, 0, "rm", 14, "old", NULL, 400);
	add(a, JOP_RENAME, 0, "mv", 15, "z", "y", 450);
	add(a, JOP_RENAME, 0, "mv", 15, "a", "b", 460);
	add(a, JOP_RENAME, 0, "mv", 16, "z", "y", 470); /* the same pair again */
	add(a, JOP_CONCEAL, -ENOENT, "cat", 10, ".env", NULL, 500);
	add(a, JOP_DENY, -EROFS, "", 17, "ro/file", NULL, 50); /* earlier than the first */

	ck_assert_uint_eq(activity_records(a), 15);
	ck_assert_int_eq(activity_first_ns(a), 50);
	ck_assert_int_eq(activity_last_ns(a), 500);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_READ), 2);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_WRITTEN), 2);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_CREATED), 2);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_DELETED), 1);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_RENAMED), 2);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_CONCEALED), 1);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_DENIED), 1);
	ck_assert_uint_eq(activity_count(a, "cat[10]", ACT_READ), 1);
	ck_assert_uint_eq(activity_count(a, "cat[10]", ACT_CONCEALED), 1);
	ck_assert_uint_eq(activity_count(a, "nobody[1]", ACT_READ), 0);

	const char **v;
	size_t n;
	ck_assert_int_eq(activity_paths(a, ACT_CREATED, &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(v[0], "hard");
	ck_assert_str_eq(v[1], "new");
	ck_assert_ptr_null(v[2]);
	free(v);
	ck_assert_int_eq(activity_paths(a, ACT_RENAMED, &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(v[0], "z"); /* journal order, not sorted */
	ck_assert_str_eq(v[1], "y");
	ck_assert_str_eq(v[2], "a");
	ck_assert_str_eq(v[3], "b");
	free(v);

	/* processes with a path of some kind only: not agentfs[1] (mount) */
	ck_assert_int_eq(activity_processes(a, &v, &n), 0);
	ck_assert_uint_eq(n, 8);
	ck_assert_str_eq(v[0], "[17]");
	ck_assert_str_eq(v[1], "cat[10]");
	ck_assert_str_eq(v[2], "cat[11]");
	free(v);
	ck_assert_int_eq(activity_names(a, &v, &n), 0);
	ck_assert_uint_eq(n, 6); /* "", cat, ln, mv, rm, sh */
	free(v);
	ck_assert_uint_eq(activity_name_pids(a, "cat"), 2);
	ck_assert_uint_eq(activity_name_count(a, "cat", ACT_READ), 2);
	ck_assert_uint_eq(activity_name_pids(a, "mv"), 2);
	ck_assert_uint_eq(activity_name_count(a, "mv", ACT_RENAMED), 2);
	activity_free(a);
}
END_TEST

START_TEST(rename_pairs_are_not_confused)
{
	/* "ab" -> "c" and "a" -> "bc" are two pairs */
	struct activity *a;
	ck_assert_int_eq(activity_new(&a), 0);
	add(a, JOP_RENAME, 0, "mv", 1, "ab", "c", 1);
	add(a, JOP_RENAME, 0, "mv", 1, "a", "bc", 2);
	ck_assert_uint_eq(activity_count(a, NULL, ACT_RENAMED), 2);
	activity_free(a);
}
END_TEST

START_TEST(show_path_escapes)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	activity_show_path(f, "a\nb\\c\x7f\xff\xc3\xa9");
	fclose(f);
	ck_assert_str_eq(buf, "a\\x0ab\\x5cc\\x7f\\xff\xc3\xa9");
	free(buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("activity");
	TCase *tc = tcase_create("activity");
	tcase_add_test(tc, kinds_and_counts);
	tcase_add_test(tc, rename_pairs_are_not_confused);
	tcase_add_test(tc, show_path_escapes);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
