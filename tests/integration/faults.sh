#!/usr/bin/env bash
# faults.sh - what survives when things go wrong under a mount:
#  - kill -9 of the daemon in the middle of writes, copy-ups and renames: the
#    workspace mounts again, agentfs verify passes after recovery, the lower
#    is untouched, no half-copied file is visible, every name exists once;
#  - the upper's filesystem full (ENOSPC, root only: a small tmpfs): the
#    writer gets ENOSPC, everything else keeps working, the journal says so;
#  - the person edits the lower and runs git checkout while the workspace is
#    mounted.  Documented behaviour: the view follows the lower for every path
#    the agent has not changed (new, changed, deleted files show), the agent's
#    own changes stay as they are, the daemon never crashes and never writes
#    the lower.
#
#   bash faults.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
# Random bytes do not deflate: git stores them as they are (looseCompression=0)
# instead of spending seconds trying.
(
	cd "$REPO" && mkdir -p big ren && head -c 64M /dev/urandom >big/blob.bin &&
		for i in $(seq 1 8); do head -c 4M /dev/urandom >"big/part$i.bin"; done &&
		for i in $(seq 1 200); do printf 'file %d\n' "$i" >"ren/f$i"; done &&
		head -c 40M /dev/zero >big/zeros.bin &&
		git -c core.looseCompression=0 add -A && git commit -q -m "fault fixtures"
) || bail "cannot add the fixtures"
sha_of() { sha256sum <"$1" | cut -d' ' -f1; }
snapshot "$REPO" "$T/lower.before"
WS=$STATE/workspaces/mnt

# kill_daemon: kill -9 the daemon of $MNT and lazily unmount the dead mount.
kill_daemon() {
	local pid
	pid=$(daemon_pid_of "$MNT") || {
		fail "kill -9 the daemon" "no daemon.pid for $MNT"
		return 1
	}
	kill -KILL "$pid" && wait_gone "$pid" 5 &&
		pass "kill -9 the daemon (pid $pid)" || fail "kill -9 the daemon (pid $pid)"
	timeout 10 fusermount3 -uz "$MNT" 2>/dev/null
	! is_mounted "$MNT" || fail "the dead mount went away"
}

remount() {
	mount_ws "$REPO" "$MNT"
	if [ "$RC" -eq 0 ]; then pass "mount again $1"; else
		fail "mount again $1" "exit $RC" "$OUT"
		bail "cannot remount"
	fi
}

# ------------------------------------------------------------------ kill -9 during writes and copy-ups
mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi
printf 'acknowledged\n' >"$MNT/acked.txt" && sync "$MNT/acked.txt" ||
	fail "an acknowledged write before the crash"
# Writers: new files, appends, and copy-ups of large lower files (each open
# for writing copies 4-64 MiB), all in flight when the daemon dies.
(
	for i in $(seq 1 100000); do printf 'line %d\n' "$i" >>"$MNT/src/main.c" || exit 0; done
) 2>/dev/null &
w1=$!
(
	for i in $(seq 1 100000); do head -c 8192 /dev/zero >"$MNT/docs/new-$i.bin" || exit 0; done
) 2>/dev/null &
w2=$!
(
	for f in big/blob.bin big/part{1..8}.bin; do printf x >>"$MNT/$f" || exit 0; done
) 2>/dev/null &
w3=$!
sleep 0.6
kill_daemon
wait $w1 $w2 $w3 2>/dev/null
remount "after a kill -9 during writes and copy-ups"
assert_content "the acknowledged write survived" "$MNT/acked.txt" acknowledged
# Every big file is either the lower's bytes or a complete copy plus the
# agent's one appended byte: never a torn copy.
torn=()
for f in big/blob.bin big/part{1..8}.bin; do
	want=$(sha_of "$REPO/$f")
	size=$(stat -c %s "$REPO/$f")
	got=$(t head -c "$size" "$MNT/$f" | sha256sum | cut -d' ' -f1)
	vsize=$(t stat -c %s "$MNT/$f")
	if [ "$got" != "$want" ] || { [ "$vsize" != "$size" ] && [ "$vsize" != $((size + 1)) ]; }; then
		torn+=("$f: size $vsize (lower $size), prefix sha $got")
	fi
done
if [ ${#torn[@]} -eq 0 ]; then pass "no half-copied file is visible"; else
	fail "no half-copied file is visible" "${torn[@]}"
fi
leftover=$(find "$WS/work" -mindepth 1 2>/dev/null | wc -l)
diag "work/ holds $leftover leftover entries after the crash"
assert_not_listed "$MNT/big" "$(ls "$WS/work" 2>/dev/null | head -n 1)"
step "agentfs verify passes after recovery" af verify "$MNT"
assert_unchanged "the lower is untouched after the crash" "$REPO" "$T/lower.before"

# ------------------------------------------------------------------ kill -9 during renames
# 200 lower files renamed back and forth between two directories; after the
# crash each exists exactly once, with its own content.
(
	cd "$MNT" || exit 0
	mkdir -p ren2 || exit 0
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		for i in $(seq 1 200); do mv "ren/f$i" "ren2/f$i" || exit 0; done
		for i in $(seq 1 200); do mv "ren2/f$i" "ren/f$i" || exit 0; done
	done
) 2>/dev/null &
w1=$!
( cd "$MNT" 2>/dev/null && for i in $(seq 1 1000); do mv docs docs.x && mv docs.x docs || exit 0; done ) 2>/dev/null &
w2=$!
sleep 0.8
kill_daemon
wait $w1 $w2 2>/dev/null
remount "after a kill -9 during renames"
bad=()
for i in $(seq 1 200); do
	n=0
	for d in ren ren2; do
		if [ -e "$MNT/$d/f$i" ]; then
			n=$((n + 1))
			[ "$(cat "$MNT/$d/f$i")" == "file $i" ] || bad+=("$d/f$i: wrong content")
		fi
	done
	[ $n -eq 1 ] || bad+=("f$i exists $n times")
done
if [ ${#bad[@]} -eq 0 ]; then pass "after the crash every renamed file exists exactly once"; else
	fail "after the crash every renamed file exists exactly once" "${bad[@]:0:10}"
fi
if [ -d "$MNT/docs" ] || [ -d "$MNT/docs.x" ]; then
	pass "the directory renamed back and forth is there under one of its names"
else
	fail "the directory renamed back and forth is there under one of its names"
fi
step "agentfs verify passes after the rename crash" af verify "$MNT"
assert_unchanged "the lower is untouched after the rename crash" "$REPO" "$T/lower.before"
step "unmount" t fusermount3 -u "$MNT"

# ------------------------------------------------------------------ the person edits and checks out the lower
git -C "$REPO" checkout -q -b other &&
	printf 'changed on other\n' >"$REPO/docs/guide.md" && git -C "$REPO" rm -q src/old.c &&
	printf 'added on other\n' >"$REPO/src/added.c" && git -C "$REPO" add -A &&
	git -C "$REPO" commit -q -m other && git -C "$REPO" checkout -q main ||
	bail "cannot prepare the other branch"
mount_ws "$REPO" "$MNT" --name live
if [ "$RC" -eq 0 ]; then pass "mount a fresh workspace for the live-lower case"; else
	fail "mount a fresh workspace" "$OUT"
	bail "mount failed"
fi
printf 'agent version\n' >"$MNT/README.md" || fail "the agent writes README.md"
t cat "$MNT/docs/guide.md" "$MNT/src/old.c" >/dev/null
lower_readme=$(sha_of "$REPO/README.md")
pid=$(daemon_pid_of "$MNT")
# Readers in the view while the person switches branches back and forth.
( for i in $(seq 1 2000); do cat "$MNT/docs/guide.md" "$MNT/src/old.c" "$MNT/src/added.c" >/dev/null 2>&1; ls -R "$MNT/src" >/dev/null 2>&1; done ) &
rd=$!
for i in 1 2 3 4 5; do
	git -C "$REPO" checkout -q other && git -C "$REPO" checkout -q main || fail "git checkout in the lower ($i)"
done
git -C "$REPO" checkout -q other || fail "git checkout other"
kill $rd 2>/dev/null
wait $rd 2>/dev/null
if _is_our_daemon "$pid" && is_mounted "$MNT"; then pass "the daemon survives git checkouts of the lower"; else
	fail "the daemon survives git checkouts of the lower"
fi
eventually() {
	local desc=$1 want=$2 got i
	shift 2
	for ((i = 0; i < 50; i++)); do
		got=$(t "$@" 2>&1)
		[ "$got" == "$want" ] && {
			pass "$desc"
			return 0
		}
		sleep 0.1
	done
	fail "$desc" "after 5 s: $*" "expected: $want" "     got: $got"
}
eventually "a file the checkout changed shows the new content" "changed on other" cat "$MNT/docs/guide.md"
eventually "a file the checkout added appears" "added on other" cat "$MNT/src/added.c"
eventually "a file the checkout deleted disappears" "gone" bash -c "[ -e '$MNT/src/old.c' ] && echo there || echo gone"
assert_content "the agent's own change stays" "$MNT/README.md" "agent version"
assert_eq "the checkout did not take the agent's change into the lower" "$lower_readme" "$(sha_of "$REPO/README.md")"
printf 'person edit\n' >>"$REPO/README.md"
assert_content "  ...nor does the person's later edit of that file show over the agent's" \
	"$MNT/README.md" "agent version"
run af export "$MNT"
if [ "$RC" -le 1 ] && [[ $OUT != *"$SECRET_MARK"* ]]; then
	pass "export still answers (patch or conflict) after the checkouts (exit $RC)"
else
	fail "export still answers after the checkouts" "exit $RC" "$OUT"
fi
step "agentfs verify passes" af verify "$MNT"
git -C "$REPO" checkout -q main && git -C "$REPO" checkout -q -- README.md 2>/dev/null
step "unmount" t fusermount3 -u "$MNT"
# The agent changed nothing in the lower: git sees only the person's edit.
assert_eq "git status of the lower shows only what the person did" "" \
	"$(git -C "$REPO" status --porcelain --untracked-files=all)"
snapshot "$REPO" "$T/lower.before2"

# ------------------------------------------------------------------ ENOSPC
if [ "$(id -u)" -ne 0 ]; then
	skip "ENOSPC on a small upper filesystem" "needs root to mount a small tmpfs"
else
	SMALL=$T/small
	mkdir -p "$SMALL"
	if ! mount -t tmpfs -o size=24m agentfs-test-small "$SMALL" 2>"$T/tmpfs.err"; then
		skip "ENOSPC on a small upper filesystem" "cannot mount a tmpfs: $(cat "$T/tmpfs.err")"
	else
		SMNT=$T/smnt
		# On an early exit: the mount on the tmpfs, then the tmpfs, then the rest.
		small_cleanup() {
			cd / || true
			is_mounted "$SMNT" && { timeout 10 fusermount3 -u "$SMNT" 2>/dev/null ||
				timeout 10 fusermount3 -uz "$SMNT" 2>/dev/null; }
			_stop_daemons
			is_mounted "$SMALL" && umount -l "$SMALL"
		}
		# shellcheck disable=SC2154 # rc is the trap's own
		trap 'rc=$?; small_cleanup; (exit $rc); _cleanup' EXIT
		OSTATE=$STATE
		STATE=$SMALL/state
		mkdir -p "$STATE"
		mount_ws "$REPO" "$SMNT"
		if [ "$RC" -ne 0 ]; then
			fail "mount with the state dir on a 24 MiB tmpfs" "$OUT"
		else
			pass "mount with the state dir on a 24 MiB tmpfs"
			# The private .git is built in the background, in the state
			# dir: a build still running when the fill comes fails there
			# and removes what it wrote, freeing space while "full".
			step "the private .git is ready before the fill" t git -C "$SMNT" rev-parse HEAD
			run t dd if=/dev/zero of="$SMNT/fill.bin" bs=1M count=64 conv=fsync
			assert_contains "a writer filling the upper gets ENOSPC" "No space left on device" "$OUT"
			run t bash -c "printf 'more\n' >>'$SMNT/docs/guide.md' && sync '$SMNT/docs/guide.md'"
			diag "a copy-up while full: exit $RC: $OUT"
			step "reading still works while full" t cat "$SMNT/README.md" "$SMNT/src/main.c"
			step "listing still works while full" t ls -laR "$SMNT/src"
			# More records than the journal file's last page holds: their
			# write fails, and verify must say so rather than take the new
			# files for changes made behind agentfs's back.  Empty files
			# (an inode, no data) are made while full, and their records
			# are queued before each create returns (the records of reads
			# wait for the daemon to be idle).
			for i in $(seq 1 100); do : >"$SMNT/while-full-$i"; done
			run t "$AGENTFS" verify --state-dir "$STATE" smnt
			assert_contains "verify while full says the daemon cannot write the journal" \
				"the daemon did not write its journal out (No space left on device)" "$OUT"
			# Also when the daemon's answer comes before verify looks for it
			# (each unlink(2) of verify delayed by 0.3 s): an answer already
			# there is no stale one to remove.
			if command -v strace >/dev/null; then
				run t strace -f -qq -o /dev/null -e trace=unlink \
					-e inject=unlink:delay_enter=300000 "$AGENTFS" verify --state-dir "$STATE" smnt
				assert_contains "  ...also when the daemon answers at once" \
					"the daemon did not write its journal out (No space left on device)" "$OUT"
			fi
			step "deleting the big file frees the space" t rm "$SMNT/fill.bin"
			run t "$AGENTFS" verify --state-dir "$STATE" smnt
			assert_eq "  ...then verify passes, without that warning" \
				"0 no warning" "$RC $([[ $OUT == *"did not write"* ]] && echo warning || echo no warning)"
			step "writing works again" bash -ec "printf 'after\n' >'$SMNT/after.txt'; sync '$SMNT/after.txt'"
			assert_content "  ...with the right bytes" "$SMNT/after.txt" after
			# A truncate to 0 copies none of the lower file's bytes up:
			# 64 and 40 MiB do not fit in what is left of 24 MiB.
			step "an O_TRUNC open of a 64 MiB lower file, on a small upper" \
				bash -ec "printf 'new\n' >'$SMNT/big/blob.bin'"
			assert_content "  ...leaves what was written" "$SMNT/big/blob.bin" new
			step "a truncate(2) to 0 of a 40 MiB lower file, on a small upper" \
				t python3 -c 'import os, sys; os.truncate(sys.argv[1], 0)' "$SMNT/big/zeros.bin"
			assert_eq "  ...leaves it empty" 0 "$(stat -c %s "$SMNT/big/zeros.bin")"
			# agentfs unmount waits for the daemon to write its journal out.
			step "unmount" t "$AGENTFS" unmount --state-dir "$STATE" "$SMNT"
			if grep -E '"result":-28|ENOSPC|No space left' "$STATE/workspaces/smnt/journal.jsonl" >/dev/null; then
				pass "the journal records the ENOSPC"
			else
				fail "the journal records the ENOSPC" \
					"no record with result -28 (ENOSPC); last records:" \
					"$(tail -n 4 "$STATE/workspaces/smnt/journal.jsonl" | cut -c 1-200)" \
					"$(df -k "$SMALL" | tail -n 1)" "$(du -sk "$STATE"/workspaces/smnt/* 2>&1)" \
					"$(tail -n 5 "$STATE/workspaces/smnt/daemon.log")"
			fi
			run t bash -c "grep '\"op\":\"copyup\"' '$STATE/workspaces/smnt/journal.jsonl' |
				grep -c -E '\"path\":\"big/(blob|zeros)\\.bin\".*\"bytes\":0[,}]'"
			assert_eq "the journal's copy-ups of the truncated files say 0 bytes" 2 "$OUT"
			step "agentfs verify passes after ENOSPC" t "$AGENTFS" verify --state-dir "$STATE" smnt
		fi
		small_cleanup
		STATE=$OSTATE
		trap _cleanup EXIT
	fi
fi

assert_unchanged "the lower is untouched since the person's last change" "$REPO" "$T/lower.before2"
done_testing
