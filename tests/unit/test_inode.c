/* test_inode.c - the inode table (fs/inode.c): a node out of the table that
 * the kernel still holds (unlinked, renamed over) stays reachable until its
 * last reference goes, and table_destroy frees it at the end of a session
 * whose kernel never sent the FORGET (an unmount does not wait for them). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "fs/internal.h"

static struct agentfs *new_table(void)
{
	struct agentfs *fs = calloc(1, sizeof(*fs));
	ck_assert_ptr_nonnull(fs);
	ck_assert_int_eq(table_init(fs), 0);
	fs->git_fd = -1;
	fs->inotify_fd = -1;
	return fs;
}

START_TEST(unhashed_nodes_stay_listed_until_freed)
{
	struct agentfs *fs = new_table();
	struct node *a = node_child(fs, &fs->root, "a", true);
	struct node *b = node_child(fs, &fs->root, "b", true);
	struct node *c = node_child(fs, &fs->root, "c", true);
	ck_assert(a && b && c);
	ck_assert_ptr_null(fs->unhashed);
	node_unhash(fs, a); /* unlinked while the kernel holds it */
	node_unhash(fs, b);
	node_unhash(fs, c);
	ck_assert_ptr_null(node_find(fs, &fs->root, "b"));
	ck_assert_ptr_eq(fs->unhashed, c);
	node_forget(fs, b, 1); /* the middle one's last reference: freed, unlisted */
	ck_assert_ptr_eq(fs->unhashed, c);
	ck_assert_ptr_eq(c->hnext, a);
	ck_assert_ptr_eq(a->uprev, c);
	node_forget(fs, c, 1);
	ck_assert_ptr_eq(fs->unhashed, a);
	ck_assert_ptr_null(a->uprev);
	/* A new node of the same name is another node, in the table. */
	struct node *a2 = node_child(fs, &fs->root, "a", true);
	ck_assert_ptr_ne(a2, a);
	ck_assert_ptr_eq(node_find(fs, &fs->root, "a"), a2);
	/* a is still held by the kernel at the end: table_destroy frees it
	 * (LeakSanitizer in the sanitizer build says if not). */
	table_destroy(fs);
	free(fs);
}
END_TEST

START_TEST(moved_back_into_the_table)
{
	struct agentfs *fs = new_table();
	struct node *d = node_child(fs, &fs->root, "d", true);
	struct node *f = node_child(fs, &fs->root, "f", true);
	ck_assert(d && f);
	d->type = S_IFDIR;
	node_unhash(fs, f);
	ck_assert_ptr_eq(fs->unhashed, f);
	ck_assert_int_eq(node_move(fs, f, d, "g"), 0); /* named again */
	ck_assert_ptr_null(fs->unhashed);
	ck_assert_ptr_eq(node_find(fs, d, "g"), f);
	table_destroy(fs);
	free(fs);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("inode");
	TCase *tc = tcase_create("inode");
	tcase_add_test(tc, unhashed_nodes_stay_listed_until_freed);
	tcase_add_test(tc, moved_back_into_the_table);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
