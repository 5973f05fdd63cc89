/* test_negmemo.c - the memory of the last negative lookup (neg_remember and
 * neg_recall, fs/internal.h): taken by the request right after it and only
 * when nothing could have changed the name since. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "fs/internal.h"

static struct agentfs *fs;
static struct node *dir;

static void setup(void)
{
	fs = calloc(1, sizeof(*fs));
	ck_assert_ptr_nonnull(fs);
	ck_assert_int_eq(table_init(fs), 0);
	fs->timeout = 86400;
	fs->git_fd = -1;
	fs->inotify_fd = -1;
	dir = node_child(fs, &fs->root, "d", true);
	ck_assert_ptr_nonnull(dir);
	dir->type = S_IFDIR;
	dir->upper = true;
}

static void teardown(void)
{
	table_destroy(fs);
	free(fs);
}

/* The lookup (ns_lock shared), then the request (exclusive): whether it
 * took the memory.  @wh: a whiteout hid the name. */
static bool lookup_then_create(const char *looked, const char *made, bool wh)
{
	pthread_rwlock_rdlock(&fs->ns_lock);
	neg_remember(fs, dir, looked, wh, __atomic_load_n(&fs->lower_gen, __ATOMIC_ACQUIRE));
	pthread_rwlock_unlock(&fs->ns_lock);
	ns_wrlock(fs);
	bool hit = neg_recall(fs, dir, made);
	pthread_rwlock_unlock(&fs->ns_lock);
	return hit;
}

/* The lookup alone, with the lower's event count @lower_gen read before it. */
static void remember(struct node *d, const char *name, uint64_t lower_gen)
{
	pthread_rwlock_rdlock(&fs->ns_lock);
	neg_remember(fs, d, name, false, lower_gen);
	pthread_rwlock_unlock(&fs->ns_lock);
}

/* The request alone: whether it took the memory. */
static bool recall(struct node *d, const char *name)
{
	ns_wrlock(fs);
	bool hit = neg_recall(fs, d, name);
	pthread_rwlock_unlock(&fs->ns_lock);
	return hit;
}

static uint64_t lower_gen(void)
{
	return __atomic_load_n(&fs->lower_gen, __ATOMIC_ACQUIRE);
}

START_TEST(taken_once_by_the_next_request)
{
	ck_assert(lookup_then_create("x", "x", false));
	ck_assert(!recall(dir, "x")); /* taken */
	/* Behind a whiteout, which `agentfs discard` may remove unseen: not
	 * remembered. */
	ck_assert(!lookup_then_create("y", "y", true));
}
END_TEST

START_TEST(not_for_another_name_or_directory)
{
	ck_assert(!lookup_then_create("x", "y", false));
	ck_assert(!lookup_then_create("x", "xx", false));
	struct node *other = node_child(fs, &fs->root, "e", true);
	ck_assert_ptr_nonnull(other);
	remember(dir, "x", 0);
	ck_assert(!recall(other, "x"));
}
END_TEST

START_TEST(not_after_another_change)
{
	/* Another exclusive hold of ns_lock in between (an unlink, a
	 * rename...). */
	remember(dir, "x", lower_gen());
	ns_wrlock(fs);
	pthread_rwlock_unlock(&fs->ns_lock);
	ck_assert(!recall(dir, "x"));
	/* Lower events read after the lookup began, during its resolve... */
	uint64_t before = lower_gen();
	__atomic_add_fetch(&fs->lower_gen, 1, __ATOMIC_RELEASE);
	remember(dir, "x", before);
	ck_assert(!recall(dir, "x"));
	/* ... or after it, before the request. */
	remember(dir, "x", lower_gen());
	__atomic_add_fetch(&fs->lower_gen, 1, __ATOMIC_RELEASE);
	ck_assert(!recall(dir, "x"));
	/* A directory of the lower moved. */
	remember(dir, "x", lower_gen());
	__atomic_add_fetch(&fs->dir_moves, 1, __ATOMIC_RELEASE);
	ck_assert(!recall(dir, "x"));
	/* The lower's watch ended. */
	remember(dir, "x", lower_gen());
	ck_assert(recall(dir, "x")); /* (nothing changed: taken) */
	remember(dir, "x", lower_gen());
	__atomic_store_n(&fs->watch_broken, true, __ATOMIC_RELEASE);
	ck_assert(!recall(dir, "x"));
}
END_TEST

START_TEST(not_where_the_kernel_keeps_it_briefly)
{
	/* A lower directory without a watch: its negative entries live a
	 * second in the kernel, a change below goes unseen. */
	dir->lower = strdup("d");
	ck_assert_ptr_nonnull(dir->lower);
	ck_assert(!lookup_then_create("x", "x", false));
	fs->inotify_fd = 99; /* never used here */
	dir->wd = 7;	     /* watched */
	ck_assert(lookup_then_create("x", "x", false));
	/* A directory move reported since the watch was last found on the
	 * directory at its path: it may watch one elsewhere now. */
	__atomic_add_fetch(&fs->dir_moves, 1, __ATOMIC_RELEASE);
	ck_assert(!lookup_then_create("x", "x", false));
	dir->wd_epoch = fs->dir_moves; /* found again (view_apply) */
	ck_assert(lookup_then_create("x", "x", false));
	/* The watch went between the lookup and the request. */
	remember(dir, "x", lower_gen());
	dir->wd = 0;
	ck_assert(!recall(dir, "x"));
	ck_assert(!lookup_then_create("x", "x", false)); /* unwatched */
	fs->inotify_fd = -1;
	dir->opaque = true; /* the lower below does not count */
	ck_assert(lookup_then_create("x", "x", false));
}
END_TEST

START_TEST(forgotten_with_its_directory)
{
	struct node *gone = node_child(fs, &fs->root, "gone", true);
	ck_assert_ptr_nonnull(gone);
	remember(gone, "x", 0);
	ck_assert_ptr_eq(fs->neg.dir, gone);
	node_forget(fs, gone, 1); /* freed: its address may be another's next */
	ck_assert_ptr_null(fs->neg.dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("negmemo");
	TCase *tc = tcase_create("negmemo");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, taken_once_by_the_next_request);
	tcase_add_test(tc, not_for_another_name_or_directory);
	tcase_add_test(tc, not_after_another_change);
	tcase_add_test(tc, not_where_the_kernel_keeps_it_briefly);
	tcase_add_test(tc, forgotten_with_its_directory);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
