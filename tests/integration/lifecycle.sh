#!/usr/bin/env bash
# lifecycle.sh - a workspace's life: mount, list, busy and lazy unmount, resume
# (its changes and base commit kept), a daemon killed with -9 (stale, repaired by
# unmount or by mounting again), rm.
#
#   bash lifecycle.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/work1
mkdir -p "$REPO" && (cd "$REPO" && git init -q -b main . && echo hello >README &&
	git add README && git commit -q -m initial) || bail "cannot create the repository"
base=$(git -C "$REPO" rev-parse HEAD)
WS=$STATE/workspaces/work1

# list_field NAME COLUMN: a column of `agentfs list` for workspace NAME.
list_field() {
	"$AGENTFS" list --state-dir "$STATE" 2>/dev/null | awk -v n="$1" -v c="$2" '$1 == n { print $c }'
}

# ------------------------------------------------------------------ mount
mount_ws "$REPO" "$MNT" || bail "agentfs mount failed: $OUT"
pass "agentfs mount"
assert_eq "mount prints nothing on success" "" "$OUT"
pid=$(daemon_pid_of "$MNT")
_is_our_daemon "$pid" && pass "daemon.pid names the live daemon" ||
	fail "daemon.pid names the live daemon" "pid '$pid'"
for f in workspace.yml policy.yml upper work journal.jsonl daemon.pid daemon.log; do
	[ -e "$WS/$f" ] && pass "the workspace has $f" || fail "the workspace has $f" "$(ls -la "$WS")"
done
assert_contains "workspace.yml records the base commit" "base_commit: \"$base\"" "$(cat "$WS/workspace.yml")"
assert_contains "workspace.yml records the repository" "repo: \"$REPO\"" "$(cat "$WS/workspace.yml")"
assert_contains "the journal records the mount" '"op":"mount"' "$(cat "$WS/journal.jsonl")"
assert_contains "the mount shows as agentfs:NAME" "agentfs:work1" "$(awk -v m="$MNT" '$5 == m' /proc/self/mountinfo)"
assert_eq "list: mounted" mounted "$(list_field work1 2)"
assert_eq "list: repository" "$REPO" "$(list_field work1 3)"
assert_eq "list: mountpoint" "$MNT" "$(list_field work1 4)"
assert_eq "list: short base commit" "${base:0:12}" "$(list_field work1 5)"
assert_eq "list: no changes yet" 0 "$(list_field work1 6)"
step "the mount serves the repository" cat "$MNT/README"
sh_step "the agent writes a file" "echo agent >'$MNT/new.txt'"

refuse "rm refuses a mounted workspace" "is mounted at $MNT" "$AGENTFS" rm --state-dir "$STATE" work1
[ -d "$WS" ] && pass "the refused rm left the workspace" || fail "the refused rm left the workspace"

# ------------------------------------------------------------------ busy, lazy
(cd "$MNT" && exec sleep 60) </dev/null >/dev/null 2>&1 &
holder=$!
sleep 0.3
refuse "unmount of a busy mount names the process holding it" "pid $holder (sleep)" \
	"$AGENTFS" unmount --state-dir "$STATE" "$MNT"
assert_contains "and suggests --lazy" "--lazy" "$OUT"
is_mounted "$MNT" && pass "the busy mount is still mounted" || fail "the busy mount is still mounted"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

step "agentfs unmount NAME" "$AGENTFS" unmount --state-dir "$STATE" work1
wait_gone "$pid" 10 && pass "the daemon has exited when unmount returns" ||
	fail "the daemon has exited when unmount returns" "pid $pid"
is_mounted "$MNT" && fail "not mounted after unmount" || pass "not mounted after unmount"
[ -e "$WS/daemon.pid" ] && fail "daemon.pid removed" || pass "daemon.pid removed"
assert_contains "the journal records the unmount" '"op":"unmount"' "$(cat "$WS/journal.jsonl")"
assert_eq "list: unmounted" unmounted "$(list_field work1 2)"
assert_eq "list: one change" 1 "$(list_field work1 6)"
refuse "unmount of an unmounted workspace is refused" "is not mounted" "$AGENTFS" unmount --state-dir "$STATE" "$MNT"
refuse "unmount of an unknown mountpoint is refused" "not an agentfs mount" "$AGENTFS" unmount --state-dir "$STATE" "$T/nowhere"

# ------------------------------------------------------------------ resume
git -C "$REPO" commit -q --allow-empty -m "the person moves on"
mount_ws "$REPO" "$MNT" && pass "mount again resumes" || fail "mount again resumes" "$OUT"
assert_content "the agent's file is still there" "$MNT/new.txt" agent
assert_contains "the base commit is kept" "base_commit: \"$base\"" "$(cat "$WS/workspace.yml")"
assert_eq "the journal has one mount per session" 2 "$(grep -c '"op":"mount"' "$WS/journal.jsonl")"

# ------------------------------------------------------------------ a daemon killed with -9
pid=$(daemon_pid_of "$MNT")
kill -KILL "$pid"
wait_gone "$pid" 5
assert_eq "list: stale after kill -9" stale "$(list_field work1 2)"
mount_ws "$REPO" "$MNT" && pass "mount repairs a stale workspace" || fail "mount repairs a stale workspace" "$OUT"
assert_content "the agent's file survived the crash" "$MNT/new.txt" agent
assert_eq "exactly one mount at the mountpoint" 1 "$(awk -v m="$MNT" '$5 == m' /proc/self/mountinfo | wc -l)"
pid=$(daemon_pid_of "$MNT")
kill -KILL "$pid"
wait_gone "$pid" 5
refuse "rm refuses a workspace that left a dead mount" "dead mount" "$AGENTFS" rm --state-dir "$STATE" work1
step "unmount detaches the dead mount" "$AGENTFS" unmount --state-dir "$STATE" "$MNT"
is_mounted "$MNT" && fail "nothing mounted after unmounting a dead mount" ||
	pass "nothing mounted after unmounting a dead mount"
assert_eq "list: unmounted after the repair" unmounted "$(list_field work1 2)"

# ------------------------------------------------------------------ mount again at once after kill -9
# The killed daemon's threads end some time after the signal (a write to the
# upper in flight), holding the workspace's lock: a mount right after the
# kill waits for them, rather than call the workspace mounted or in use.
# kill_writing MNT FILE: start a process writing FILE (under MNT) over and
# over, then kill -9 MNT's daemon once FILE has bytes; sets pid (the daemon)
# and writer (the writing process, to wait for).
kill_writing() {
	pid=$(daemon_pid_of "$1")
	(while head -c 300000 /dev/zero >"$2" && sync "$2"; do :; done) </dev/null >/dev/null 2>&1 &
	writer=$!
	for _ in $(seq 1 50); do [ -s "$2" ] && break; sleep 0.05; done
	kill -KILL "$pid"
}
bad=()
for i in 1 2 3 4 5 6; do
	mount_ws "$REPO" "$MNT" || {
		bad+=("round $i: mount: $OUT")
		break
	}
	kill_writing "$MNT" "$MNT/busy.bin"
	mount_ws "$REPO" "$MNT" || bad+=("round $i: mount at once after kill -9 of pid $pid: $OUT")
	wait "$writer" 2>/dev/null
	is_mounted "$MNT" && ! af unmount "$MNT" >/dev/null 2>&1 && timeout 10 fusermount3 -uz "$MNT"
	wait_gone "$pid" 5
done
if [ ${#bad[@]} -eq 0 ]; then pass "mount right after a kill -9 of the daemon repairs the workspace"; else
	fail "mount right after a kill -9 of the daemon repairs the workspace" "${bad[@]}"
fi
step "verify passes after those crashes" af verify work1
# So does an rm once the dead mount is detached.
KMNT=$T/killed-rm
bad=()
for i in 1 2 3 4 5 6; do
	mount_ws "$REPO" "$KMNT" || {
		bad+=("round $i: mount: $OUT")
		break
	}
	# in a directory of the mount only: the writer stops once it is detached
	mkdir "$KMNT/w"
	kill_writing "$KMNT" "$KMNT/w/busy.bin"
	timeout 10 fusermount3 -uz "$KMNT"
	run af rm killed-rm
	[ "$RC" -eq 0 ] && [ ! -e "$STATE/workspaces/killed-rm" ] ||
		bad+=("round $i: rm at once after kill -9 of pid $pid: exit $RC: $OUT")
	wait "$writer" 2>/dev/null
	wait_gone "$pid" 5
	af rm killed-rm >/dev/null 2>&1
done
if [ ${#bad[@]} -eq 0 ]; then pass "rm right after a kill -9 of the daemon removes the workspace"; else
	fail "rm right after a kill -9 of the daemon removes the workspace" "${bad[@]}"
fi

# ------------------------------------------------------------------ verify between a kill -9 and the next mount
# The records of the last writes die with the daemon (--journal-sync=never
# keeps them all in its buffer): until the next mount records what it left,
# verify fails, and says the session was killed rather than only that the
# agent's files were changed behind agentfs's back.
mount_ws "$REPO" "$MNT" --journal-sync=never || fail "mount with --journal-sync=never" "$OUT"
pid=$(daemon_pid_of "$MNT")
sh_step "the agent writes a file, closed" "echo closed >'$MNT/unrecorded.txt'"
kill -KILL "$pid"
wait_gone "$pid" 5
timeout 10 fusermount3 -uz "$MNT" 2>/dev/null
run af verify work1
assert_eq "verify after the kill fails" 1 "$RC"
assert_contains "  ...naming the file without a record" "unrecorded.txt: no record of this file" "$OUT"
assert_contains "  ...and saying the session's daemon was killed" \
	"the last session has no unmount record (its daemon was killed): mount the workspace again" "$OUT"
mount_ws "$REPO" "$MNT" || fail "mount after the kill" "$OUT"
run af verify work1
assert_eq "verify passes once the next mount recorded the file" 0 "$RC"
assert_contains "  ...listing it as recovered" "recovered: unrecorded.txt: changed without a record" "$OUT"
step "unmount after the recovery" af unmount "$MNT"
echo tampered >"$WS/upper/unrecorded.txt"
run af verify work1
assert_eq "a file changed in the upper after a clean unmount fails verify" 1 "$RC"
assert_not_contains "  ...without naming a kill" "no unmount record" "$OUT"
echo closed >"$WS/upper/unrecorded.txt"

# ------------------------------------------------------------------ a stopped daemon
# unmount waits for the daemon to exit; one stopped (SIGSTOP, a debugger)
# is named as such, not as a private .git being built.
mount_ws "$REPO" "$MNT" || fail "mount for the stopped daemon" "$OUT"
pid=$(daemon_pid_of "$MNT")
kill -STOP "$pid"
(sleep 2.5 && kill -CONT "$pid") &
cont=$!
run af unmount "$MNT"
wait "$cont"
assert_eq "unmount of a stopped daemon ends once it is continued" 0 "$RC"
assert_contains "  ...and says the daemon is stopped" \
	"which is stopped: continue it (kill -CONT $pid)" "$OUT"

# ------------------------------------------------------------------ lazy
mount_ws "$REPO" "$MNT" || fail "mount for --lazy" "$OUT"
pid=$(daemon_pid_of "$MNT")
(cd "$MNT" && exec sleep 60) </dev/null >/dev/null 2>&1 &
holder=$!
sleep 0.3
step "unmount --lazy detaches a busy mount" "$AGENTFS" unmount --state-dir "$STATE" --lazy "$MNT"
is_mounted "$MNT" && fail "not mounted after --lazy" || pass "not mounted after --lazy"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
wait_gone "$pid" 10 && pass "the daemon exits once the last user lets go" ||
	fail "the daemon exits once the last user lets go" "pid $pid"

# ------------------------------------------------------------------ a signal with a file open for writing
# The daemon stopped by SIGTERM while a process holds a file it wrote: the
# kernel sends no RELEASE then, so the session's end journals the write, and
# the next mount finds a journal that describes the upper (verify passes).
mount_ws "$REPO" "$MNT" || fail "mount for the signal" "$OUT"
pid=$(daemon_pid_of "$MNT")
(exec 3>"$MNT/held.txt" && printf 'written, never closed\n' >&3 && exec sleep 60) \
	</dev/null >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 50); do [ -s "$MNT/held.txt" ] && break; sleep 0.1; done
kill -TERM "$pid"
wait_gone "$pid" 10 && pass "SIGTERM ends the daemon with a file open for writing" ||
	fail "SIGTERM ends the daemon with a file open for writing" "pid $pid"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
rec=$(grep '"op":"write"' "$WS/journal.jsonl" | grep '"path":"held.txt"' | tail -n 1)
if [ -n "$rec" ]; then pass "  ...and the write is journaled"; else
	fail "  ...and the write is journaled" "$(tail -n 5 "$WS/journal.jsonl")"
fi
assert_contains "  ...with the hash of what the upper holds" \
	"\"hash\":\"$(xxhsum -H2 "$WS/upper/held.txt" 2>/dev/null | cut -d' ' -f1)\"" "$rec"
is_mounted "$MNT" && fusermount3 -uz "$MNT" 2>/dev/null
step "verify passes after that session" "$AGENTFS" verify --state-dir "$STATE" work1

# ------------------------------------------------------------------ moving and removing
MNT2=$T/elsewhere
mkdir -p "$MNT2"
mount_ws "$REPO" "$MNT2" --name work1 && pass "a workspace may be mounted at another mountpoint" ||
	fail "a workspace may be mounted at another mountpoint" "$OUT"
assert_content "with its changes" "$MNT2/new.txt" agent
step "unmount by mountpoint" "$AGENTFS" unmount --state-dir "$STATE" "$MNT2"
# Two workspaces mounted at one mountpoint in turn both name it: the one
# mounted there now is the one meant by MNT (status, export, discard,
# unmount), not the first found; when neither is, MNT names neither.
TURNS=$T/turns
mount_ws "$REPO" "$TURNS" --name turn1 || fail "mount turn1 at $TURNS" "$OUT"
sh_step "the agent of turn1 writes a file" "echo one >'$TURNS/one.txt'"
step "unmount turn1" af unmount "$TURNS"
mount_ws "$REPO" "$TURNS" --name turn2 || fail "mount turn2 at $TURNS" "$OUT"
sh_step "the agent of turn2 writes a file" "echo two >'$TURNS/two.txt'"
run af status "$TURNS"
assert_eq "status MNT is the workspace mounted there now" "0 A two.txt" "$RC $OUT"
run af export "$TURNS"
assert_contains "export MNT gives its changes" "+two" "$OUT"
assert_not_contains "  ...and none of the other's" "+one" "$OUT"
step "unmount MNT unmounts the workspace mounted there" af unmount "$TURNS"
is_mounted "$TURNS" && fail "  ...and nothing is mounted there after it" ||
	pass "  ...and nothing is mounted there after it"
refuse "once neither is mounted, MNT names neither" \
	"2 workspaces were mounted there (turn1, turn2) and none is mounted now: name one" \
	af discard "$TURNS"
assert_eq "  ...and both keep their changes" "A one.txt|A two.txt" \
	"$(af status turn1)|$(af status turn2)"
af rm turn1 >/dev/null 2>&1
af rm turn2 >/dev/null 2>&1
# rm takes daemon.log with it, before the end's check of the daemons' logs.
assert_eq "no sanitizer report in the sessions' daemon.log" "" \
	"$(grep -E -A 5 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$WS/daemon.log" | head -n 12)"
step "agentfs rm" "$AGENTFS" rm --state-dir "$STATE" work1
[ -e "$WS" ] && fail "rm removed the workspace directory" || pass "rm removed the workspace directory"
assert_eq "list is empty" "" "$(af list 2>&1)"
refuse "rm of a missing workspace is refused" "no workspace" "$AGENTFS" rm --state-dir "$STATE" work1
# A mountpoint with non-ASCII letters keeps the columns of list aligned, and
# one with a newline is quoted: the table stays one line per workspace.
UMNT="$T/mnt ü"
mount_ws "$REPO" "$UMNT" --name uni || bail "mount at $UMNT: $OUT"
run af list
assert_eq "list: the columns after a non-ASCII mountpoint stay aligned" "aligned" \
	"$(LC_ALL=C.UTF-8 python3 -c 'import sys
lines = sys.stdin.read().splitlines()
cols = {l.index(w) for l, w in zip(lines, ["BASE"] + [l.split()[-2] for l in lines[1:]])}
print("aligned" if len(cols) == 1 else "columns at %s" % sorted(cols))' <<<"$OUT")"
run af unmount "$UMNT"
assert_eq "unmount $UMNT" 0 "$RC"
NLMNT="$T/mnt
nl"
mount_ws "$REPO" "$NLMNT" --name nl || bail "mount at a name with a newline: $OUT"
run af list
assert_contains "list quotes a mountpoint holding a newline" "\"$T/mnt\\nnl\"" "$OUT"
run af unmount "$NLMNT"
assert_eq "unmount the mountpoint holding a newline" 0 "$RC"

# ------------------------------------------------------------------ a moved repository
# A workspace whose repository was moved: mounting the repository at its
# new place resumes it (the old path is gone and the new one holds the base
# commit); a repository without that commit, or one whose old path still
# exists, is not taken for it.  With git: readonly, whose private git reads
# the repository's objects, too.
MREPO=$T/mrepo MMNT=$T/mmnt
cp -a "$REPO" "$MREPO" || bail "cannot copy the repository"
printf 'git: readonly\n' >"$T/git-ro.yml"
mount_ws "$MREPO" "$MMNT" --policy "$T/git-ro.yml" || bail "mount of the repository to move: $OUT"
sh_step "the agent edits README" "printf 'moved work\n' >>'$MMNT/README'"
step "unmount before the move" af unmount "$MMNT"
mv "$MREPO" "$T/mrepo-moved" || bail "cannot move the repository"
mkdir -p "$T/other" && (cd "$T/other" && git init -q -b main . && echo x >x && git add x &&
	git commit -q -m other) || bail "cannot create another repository"
refuse "a repository without the base commit is not the moved one" \
	"belongs to the repository $MREPO (gone), not $T/other, which lacks the workspace's base commit" \
	af mount "$T/other" "$MMNT"
mount_ws "$T/mrepo-moved" "$MMNT"
assert_eq "the moved repository mounts the workspace again" 0 "$RC"
assert_contains "  ...and says so" "its repository $MREPO is gone; $T/mrepo-moved has its base commit" "$OUT"
assert_eq "  ...with the agent's edit" "hello
moved work" "$(cat "$MMNT/README")"
assert_eq "  ...and the repository's history through git: readonly" \
	"$(git -C "$T/mrepo-moved" log -1 --format=%s)" "$(git -C "$MMNT" log -1 --format=%s 2>&1)"
assert_eq "list names the new place" "$T/mrepo-moved" "$(list_field mmnt 3)"
assert_contains "the journal's mount record names the old place" "\"repo_moved_from\":\"$MREPO\"" \
	"$(af log --json --op mount "$MMNT" | tail -n 1)"
run af export "$MMNT"
printf '%s\n' "$OUT" >"$T/moved.patch"
step "the export applies to the moved repository" git -C "$T/mrepo-moved" apply --check "$T/moved.patch"
step "unmount after the move" af unmount "$MMNT"
cp -a "$T/mrepo-moved" "$MREPO" || bail "cannot copy the repository back"
refuse "once its repository is there, another copy is not it" \
	"belongs to the repository $T/mrepo-moved, not $MREPO" af mount "$MREPO" "$MMNT"
# A clone made before the repository got another branch takes its place:
# git: readonly's refs are taken again, so none names an object it lacks.
CREPO=$T/crepo CMNT=$T/cmnt
cp -a "$REPO" "$CREPO" && git clone -q "$CREPO" "$T/crepo-clone" &&
	git -C "$CREPO" checkout -qb extra && echo e >"$CREPO/e" && git -C "$CREPO" add e &&
	git -C "$CREPO" commit -qm extra && git -C "$CREPO" checkout -q main ||
	bail "cannot make the repository and its clone"
mount_ws "$CREPO" "$CMNT" --policy "$T/git-ro.yml" || bail "mount of the repository to clone: $OUT"
step "unmount before the clone takes its place" af unmount "$CMNT"
rm -rf "$CREPO"
mount_ws "$T/crepo-clone" "$CMNT"
assert_eq "a clone in the gone repository's place resumes the workspace" 0 "$RC"
step "  ...and the agent's git finds every ref's object" git -C "$CMNT" log --all --oneline
# Moved while mounted: refused, and nothing said of a move.
mv "$T/crepo-clone" "$T/crepo-clone2" || bail "cannot move the clone"
run af mount "$T/crepo-clone2" "$T/cmnt2" --name cmnt
assert_eq "a workspace still mounted is not moved" "1 no note" \
	"$RC $(grep -q 'is its repository now' <<<"$OUT" && echo note || echo no note)"
step "unmount the clone's workspace" af unmount "$CMNT"
# A symlink left at the old place, to the new one, is that repository.
ln -s "$T/crepo-clone2" "$T/crepo-clone" || bail "cannot make the symlink"
mount_ws "$T/crepo-clone2" "$CMNT"
assert_eq "a symlink at the old place to the new one: the workspace resumes" 0 "$RC"
step "unmount it" af unmount "$CMNT"

# ------------------------------------------------------------------ no CA bundle
# agentfs makes no TLS connection, so neither a mount nor an export reads the
# system's CA certificates, which libgit2 would parse at its start
# (cli/notls.c).  The trace follows the command, not the daemon it starts.
# Debian's libgit2 reads /etc/ssl/certs/ca-certificates.crt when it exists.
if ! strace -qq -o /dev/null true 2>/dev/null; then
	skip "mount and export read no CA certificates" "strace cannot trace here"
elif [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then
	skip "mount and export read no CA certificates" "no CA bundle on this machine"
else
	TMNT=$T/traced
	mkdir -p "$TMNT"
	_MOUNTS+=("$TMNT")
	run strace -qq -o "$T/mount.trace" -e trace=open,openat "$AGENTFS" mount --state-dir "$STATE" \
		"$REPO" "$TMNT"
	pid=$(daemon_pid_of "$TMNT") && _PIDS+=("$pid")
	assert_eq "a mount under strace succeeds" 0 "$RC"
	assert_contains "  ...and its trace shows libgit2 opening the repository" "$REPO/.git/config" \
		"$(cat "$T/mount.trace")"
	assert_eq "  ...and it opened no CA certificates" "" \
		"$(grep -E 'ca-certificates|/etc/ssl/|/etc/pki/' "$T/mount.trace")"
	sh_step "the agent writes a file there" "echo traced >'$TMNT/traced.txt'"
	run strace -qq -o "$T/export.trace" -e trace=open,openat "$AGENTFS" export --state-dir "$STATE" \
		"$TMNT"
	assert_contains "an export under strace gives the patch" "+traced" "$OUT"
	assert_eq "  ...and opened no CA certificates" "" \
		"$(grep -E 'ca-certificates|/etc/ssl/|/etc/pki/' "$T/export.trace")"
	step "unmount the traced mount" af unmount "$TMNT"
fi

[ -f "$REPO/README" ] && [ "$(cat "$REPO/README")" == hello ] && [ ! -e "$REPO/new.txt" ] &&
	pass "the repository was never written" || fail "the repository was never written"

done_testing
