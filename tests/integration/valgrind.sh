#!/usr/bin/env bash
# valgrind.sh - the daemon under valgrind's memcheck through a real workload
# (reads, copy-up, renames, links, xattrs, an open unlinked file, a build, git
# in the private .git, a hidden-name probe): zero errors, no definite leak.
# valgrind 3.19 does not know openat2 (syscall 437), so this run also proves
# the component-by-component fallback path of fs/resolve.c.
#
#   bash valgrind.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

if ! command -v valgrind >/dev/null; then
	skip "the daemon under valgrind" "valgrind is not installed"
	done_testing
	exit 0
fi
REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
mkdir -p "$MNT"
_MOUNTS+=("$MNT")
LOG=$T/valgrind.log
timeout -k 5 300 valgrind --leak-check=full --show-leak-kinds=definite \
	--errors-for-leak-kinds=definite --track-fds=no --log-file="$LOG" \
	"$AGENTFS" mount -f --state-dir "$STATE" "$REPO" "$MNT" >"$T/daemon.out" 2>&1 &
vpid=$!
for _ in $(seq 240); do
	is_mounted "$MNT" && break
	kill -0 "$vpid" 2>/dev/null || break
	sleep 0.25
done
is_mounted "$MNT" || bail "the daemon under valgrind did not mount: $(tail -n 5 "$T/daemon.out")"
pass "mount under valgrind"

export AGENTFS_TEST_TIMEOUT=120
step "read every file" bash -c "cd '$MNT' && find . -path ./.git -prune -o -type f -print0 | xargs -0 cat >/dev/null"
step "copy-up by append" bash -c "printf 'more\n' >>'$MNT/README.md'"
step "editor save (temp + rename)" bash -c "printf 'new\n' >'$MNT/.save.tmp' && mv '$MNT/.save.tmp' '$MNT/README.md'"
step "mkdir, rename a directory, rm -rf" bash -ec "mkdir -p '$MNT/d/e'; touch '$MNT/d/e/f'; mv '$MNT/d' '$MNT/d2'; rm -rf '$MNT/d2'"
step "rename a lower directory" mv "$MNT/src" "$MNT/source"
step "hard link and symlink" bash -ec "ln '$MNT/Makefile' '$MNT/Makefile.lnk'; ln -s Makefile '$MNT/mk'; cat '$MNT/mk' >/dev/null"
step "xattrs" fsops setxattr "$MNT/Makefile" user.k v
refuse "a hidden name is absent" "No such file or directory" cat "$MNT/.env"
step "an open file unlinked, then written and stat'ed" python3 -c "
import os
fd = os.open('$MNT/tmpf', os.O_CREAT | os.O_RDWR)
os.write(fd, b'abc'); os.unlink('$MNT/tmpf'); os.fstat(fd); os.close(fd)"
step "git status and commit in the private .git" bash -ec \
	"cd '$MNT'; git status --short >/dev/null; git add -A; git -c user.name=a -c user.email=a@a commit -qm work"
step "unmount" fusermount3 -u "$MNT"
for _ in $(seq 240); do
	kill -0 "$vpid" 2>/dev/null || break
	sleep 0.25
done
wait "$vpid"
assert_eq "the daemon exited cleanly" 0 "$?"
errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$LOG" | tail -n 1)
assert_eq "valgrind: zero errors" 0 "${errors:-missing}"
if grep -q "definitely lost: [1-9]" "$LOG"; then
	fail "valgrind: no definite leak" "$(grep -A3 'definitely lost' "$LOG" | head -n 8)"
else
	pass "valgrind: no definite leak"
fi
if grep -q "unhandled amd64-linux syscall: 437" "$LOG"; then
	pass "openat2 was unavailable: the fallback resolution served the run"
else
	skip "the fallback resolution under valgrind" "this valgrind knows openat2"
fi
done_testing
