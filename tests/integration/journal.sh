#!/usr/bin/env bash
# journal.sh - the journal through a real mount: the hash of a read equals
# `xxhsum -H2` of the file, writes are attributed to the processes that made
# them, verify detects edited, removed and truncated records and changes to the
# upper behind agentfs's back, and after kill -9 of the daemon the next mount's
# recovery makes verify pass again and says what it recovered.
#
#   bash journal.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

command -v xxhsum >/dev/null || bail "xxhsum (Debian package xxhash) is needed"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
# 1 MiB less 5 bytes: large reads are spliced from the file, and the kernel's
# last request reaches past its end; the journal counts only what it holds.
head -c 1048571 /dev/urandom >"$REPO/large.bin"
WS=$STATE/workspaces/mnt
J=$WS/journal.jsonl

mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi

# field NAME LINE: the string or number value of a top-level field of a record
field() {
	printf '%s\n' "$2" | grep -o "\"$1\":\(\"[^\"]*\"\|[0-9]*\)" | head -n 1 | sed 's/^[^:]*://; s/"//g'
}

# records OP PATH: the raw records of OP on PATH (after the daemon flushed)
records() {
	af log --json --op "$1" --path "$2" "$MNT"
}

settle() {
	sleep 0.3 # the writer thread flushes every 100 ms
}

# ------------------------------------------------------------------ reads
sh -c 'echo $$ >"$1"; exec cat "$2"' sh "$T/cat.pid" "$MNT/README.md" >/dev/null
cat_pid=$(cat "$T/cat.pid")
settle
rec=$(records read README.md | tail -n 1)
if [ -n "$rec" ]; then pass "a read of README.md is recorded"; else
	fail "a read of README.md is recorded" "$(af log "$MNT" 2>&1 | tail -n 20)"
fi
assert_eq "  ...its hash is xxhsum -H2 of the file" \
	"$(xxhsum -H2 "$REPO/README.md" 2>/dev/null | cut -d' ' -f1)" "$(field hash "$rec")"
assert_eq "  ...bytes served is the file's size" "$(stat -c %s "$REPO/README.md")" "$(field bytes "$rec")"
assert_eq "  ...by the process that read it" "$cat_pid" "$(field pid "$rec")"
assert_eq "  ...named from /proc" cat "$(field comm "$rec")"

cat "$MNT/large.bin" >"$T/large.copy"
settle
rec=$(records read large.bin | tail -n 1)
assert_file_eq "a file of 1 MiB less 5 bytes reads back whole" "$REPO/large.bin" "$T/large.copy"
assert_eq "  ...its bytes served are the file's size" 1048571 "$(field bytes "$rec")"
assert_eq "  ...its hash is xxhsum -H2 of the file" \
	"$(xxhsum -H2 "$REPO/large.bin" 2>/dev/null | cut -d' ' -f1)" "$(field hash "$rec")"

t cat "$MNT/.env" >/dev/null 2>&1
settle
assert_contains "a lookup of a hidden name is recorded as conceal" '"op":"conceal"' \
	"$(records conceal .env)"
assert_contains "  ...and shows in log --denied" ".env" "$(af log --denied "$MNT" 2>&1)"

# ------------------------------------------------------------------ reads racing a writer
# One process reads a file whole (open, read, close), then changes it through
# a handle it keeps open for writing, 100 times.  The daemon may finish a
# read's release after answering it (fs/ops_file.c, op_release), but before
# any request that changes a file: every read's record names the version that
# was read, in order.
printf '%08d\n' 0 >"$MNT/race.txt"
for i in $(seq 0 99); do printf '%08d\n' "$i" >"$T/race.$i"; done
t python3 - "$MNT/race.txt" <<'PY'
import os, sys
w = os.open(sys.argv[1], os.O_WRONLY)
for i in range(100):
    r = os.open(sys.argv[1], os.O_RDONLY)
    assert os.read(r, 64) == b"%08d\n" % i
    os.close(r)
    os.pwrite(w, b"%08d\n" % (i + 1), 0)
os.close(w)
PY
settle
want=$(for i in $(seq 0 99); do xxhsum -H2 "$T/race.$i" 2>/dev/null | cut -d' ' -f1; done)
got=$(records read race.txt | while read -r rec; do field hash "$rec"; done)
assert_eq "100 reads, each followed at once by a write: every read's record has the hash of the version read" \
	"$want" "$got"

# ------------------------------------------------------------------ a write storm
mkdir -p "$MNT/storm" || fail "mkdir storm"
writer() { # writer TAG: 60 files, each created and written by this shell itself
	echo "$BASHPID" >"$T/writer-$1.pid"
	for i in $(seq 1 60); do
		printf '%s %s\n' "$1" "$i" >"$MNT/storm/$1-$i.txt"
		printf 'more\n' >>"$MNT/storm/$1-$i.txt"
	done
}
writer a &
wa=$!
writer b &
wb=$!
wait "$wa" "$wb"
pa=$(cat "$T/writer-a.pid")
pb=$(cat "$T/writer-b.pid")
settle
wr=$(af log --json --op write --path 'storm/*' "$MNT")
assert_eq "every write of process A is recorded with its pid" 120 \
	"$(printf '%s\n' "$wr" | grep '"path":"storm/a-' | grep -c "\"pid\":$pa,")"
assert_eq "every write of process B is recorded with its pid" 120 \
	"$(printf '%s\n' "$wr" | grep '"path":"storm/b-' | grep -c "\"pid\":$pb,")"
assert_eq "  ...and no write is attributed to another process" 0 \
	"$(printf '%s\n' "$wr" | grep -vc -e "\"pid\":$pa," -e "\"pid\":$pb,")"
last=$(printf '%s\n' "$wr" | grep '"path":"storm/a-7.txt"' | tail -n 1)
assert_eq "  ...the last write's hash is xxhsum -H2 of the file" \
	"$(xxhsum -H2 "$MNT/storm/a-7.txt" 2>/dev/null | cut -d' ' -f1)" "$(field hash "$last")"
assert_contains "log --summary counts the writers' files" " 60 " \
	"$(af log --summary "$MNT" 2>&1 | grep "\[$pa\]")"

# ------------------------------------------------------------------ a second thread
# A FUSE request carries the calling thread's id, not its process's: a file
# created, written and read by a second thread (Python's threads, Node's
# libuv workers) is the process's, under its pid and its name, even when the
# thread named itself (prctl(PR_SET_NAME), what /proc/TID/comm shows).
step "a second thread of python3 creates, writes and reads a file" t python3 - "$MNT" "$T/thr.ids" <<'PY'
import ctypes, os, sys, threading
ids = {}
def work():
    ids["tid"] = threading.get_native_id()
    ctypes.CDLL(None, use_errno=True).prctl(15, b"renamed-worker", 0, 0, 0)  # PR_SET_NAME
    p = os.path.join(sys.argv[1], "threaded.txt")
    with open(p, "w") as f:
        f.write("from a thread\n")
    with open(p) as f:
        assert f.read() == "from a thread\n"
th = threading.Thread(target=work)
th.start()
th.join()
assert ids["tid"] != os.getpid()
with open("/proc/self/comm") as f:
    comm = f.read().strip()
with open(sys.argv[2], "w") as f:
    f.write("%d %d %s\n" % (os.getpid(), ids["tid"], comm))
PY
read -r thr_pid thr_tid thr_comm <"$T/thr.ids"
settle
thr=$(af log --json --path threaded.txt "$MNT")
assert_eq "  ...its create, write and read are recorded" "create write read" \
	"$(printf '%s\n' "$thr" | grep -o '"op":"[a-z]*"' | sed 's/"op":"//; s/"//' | tr '\n' ' ' | sed 's/ $//')"
assert_eq "  ...each with the process's pid (not the thread's id $thr_tid)" 3 \
	"$(printf '%s\n' "$thr" | grep -c "\"pid\":$thr_pid,")"
assert_eq "  ...and the process's name ($thr_comm), not the thread's" 3 \
	"$(printf '%s\n' "$thr" | grep -c "\"comm\":\"$thr_comm\"")"
assert_eq "  ...log --pid with the process's pid finds them" 3 \
	"$(af log --json --pid "$thr_pid" --path threaded.txt "$MNT" | grep -c .)"
# --since: an age, an epoch, a date; a negative age is a usage error.
assert_eq "log --since 1h finds them" 3 \
	"$(af log --json --since 1h --path threaded.txt "$MNT" | grep -c .)"
assert_eq "log --since @(now + 1h) finds none" 0 \
	"$(af log --json --since "@$(($(date +%s) + 3600))" --path threaded.txt "$MNT" | grep -c .)"
assert_eq "log --since 2000-01-01 finds them" 3 \
	"$(af log --json --since 2000-01-01 --path threaded.txt "$MNT" | grep -c .)"
run af log --since -5m "$MNT"
assert_eq "log --since -5m is a usage error" 2 "$RC"

# An fsync journals nothing by itself: the release records the version the
# handle left, with every byte it wrote.
fsops fsync-between "$MNT/synced.txt" "before the fsync," " after it" >/dev/null
settle
wr=$(records write synced.txt)
assert_eq "write, fsync, write, close: one write record" 1 "$(printf '%s\n' "$wr" | grep -c .)"
assert_eq "  ...its hash is xxhsum -H2 of the file left" \
	"$(xxhsum -H2 "$MNT/synced.txt" 2>/dev/null | cut -d' ' -f1)" "$(field hash "$wr")"
if passthrough_on "$WS"; then
	# The kernel wrote the file itself: the daemon cannot count the bytes.
	assert_eq "  ...no byte count: the kernel wrote it (passthrough)" "" "$(field bytes "$wr")"
else
	assert_eq "  ...its bytes are both writes'" 26 "$(field bytes "$wr")"
fi

# --follow prints records appended after it started
# Started without timeout(1) and stopped with one SIGTERM: timeout passes a
# TERM on to the process and to its group, then a CONT, and under ASan a
# second signal arriving during LeakSanitizer's exit-time stop-the-world
# left the process hanging (seen 1 run in 6 under parallel load).
"$AGENTFS" log --state-dir "$STATE" --follow --json "$MNT" >"$T/follow.out" 2>&1 &
fpid=$!
sleep 0.5
printf 'followed\n' >"$MNT/followed.txt"
sleep 0.6
kill "$fpid" 2>/dev/null
for _ in $(seq 1 300); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$fpid" 2>/dev/null
wait "$fpid" 2>/dev/null
assert_contains "log --follow shows a write made while it runs" '"path":"followed.txt"' \
	"$(cat "$T/follow.out")"

step "verify passes on a live workspace" af verify "$MNT"
# Python's tempfile.TemporaryFile without O_TMPFILE (not in FUSE 3.14):
# create, unlink at once, write, truncate through the handle.
step "a file written and truncated after its unlink (tempfile.TemporaryFile)" t python3 -c "
import tempfile
f = tempfile.TemporaryFile(dir='$MNT/docs'); f.write(b'hello'); f.flush(); f.seek(0); f.truncate(); f.write(b'x'); f.close()"
step "  ...verify still passes" af verify "$MNT"
# A rename between two names of one file does nothing (rename(2)).
step "a hard link, and a rename of one of its names onto the other" t bash -c \
	"ln '$MNT/docs/guide.md' '$MNT/docs/guide-link.md' && python3 -c \"import os; os.rename('$MNT/docs/guide.md', '$MNT/docs/guide-link.md')\""
assert_eq "  ...both names stay" "guide-link.md guide.md" "$(t ls "$MNT/docs" | grep guide | tr '\n' ' ' | sed 's/ $//')"
step "  ...verify still passes" af verify "$MNT"
step "  ...and the link goes" t rm "$MNT/docs/guide-link.md"
# A large file written, closed and at once renamed, truncated, linked or
# removed (a download, a linker's output): the release that hashes it runs
# beside the next request, and its write record must still come first.
step "64 MiB written then renamed, truncated, linked, removed at once" t python3 -c "
import os
d = '$MNT/big'
os.mkdir(d)
blob = os.urandom(64 << 20)
for i, then in enumerate(['rename', 'truncate', 'link', 'unlink']):
    p = f'{d}/{then}.tmp'
    with open(p, 'wb') as f:
        f.write(blob)
    if then == 'rename':
        os.rename(p, f'{d}/renamed.bin')
    elif then == 'truncate':
        os.truncate(p, 10)
    elif then == 'link':
        os.link(p, f'{d}/linked.bin')
    else:
        os.unlink(p)"
step "  ...verify passes" af verify "$MNT"
# The write is recorded before the rename (under the old name) or, when the
# rename took the namespace first, after it under the new one: never after it
# under the old name.
assert_eq "  ...no write of the old name after its rename" "rename" \
	"$(af log --json --path 'big/rename.tmp' "$MNT" | grep -o '"op":"[a-z]*"' | sed 's/"op":"//; s/"//' |
		grep -x 'write\|rename' | tail -n 1)"
step "  ...the directory goes" t rm -r "$MNT/big"
# `agentfs discard` of a file the agent still holds open for writing: what
# it writes after goes to the file discard took away, not to the path,
# which holds the repository's version again; the journal says so.
(exec 3>>"$MNT/README.md" && printf 'w1\n' >&3 && echo ready >"$T/disc.ready" &&
	sleep 2 && printf 'w2\n' >&3) </dev/null >/dev/null 2>&1 &
dwriter=$!
for _ in $(seq 1 50); do [ -e "$T/disc.ready" ] && break; sleep 0.1; done
step "discard of a file open for writing" af discard "$MNT" README.md
wait "$dwriter"
step "  ...verify passes after the writer's last write and close" af verify "$MNT"
assert_file_eq "  ...the path holds the repository's version" "$REPO/README.md" "$MNT/README.md"
assert_contains "  ...and log says the later write had no name left" \
	"README.md  (no name left: unlinked while open)" "$(af log --op write --path README.md "$MNT")"
# A process appending to a file over and over while the person discards it
# (with it the upper's data/, left empty): the opens succeed, though the
# daemon hears of the discard only after the upper changed (hundreds failed
# with ENOENT before f1f2719; a request other than the open can still meet
# the window, rarely: README Limits).
t python3 - "$MNT/data/notes.txt" 3 >"$T/appender.out" 2>&1 <<'PY' &
import collections, errno, os, sys, time
f, end = sys.argv[1], time.time() + float(sys.argv[2])
errs, n = collections.Counter(), 0
while time.time() < end:
    try:
        fd = os.open(f, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, b"x\n")
        os.close(fd)
    except OSError as e:
        errs[errno.errorcode[e.errno]] += 1
    n += 1
print(n, sum(errs.values()), dict(errs))
PY
appender=$!
sleep 0.3
for _ in 1 2 3 4 5; do af discard "$MNT" data/notes.txt >/dev/null 2>&1; sleep 0.3; done
wait "$appender"
read -r _ nerr _ <"$T/appender.out"
if [ "${nerr:-x}" -lt 10 ] 2>/dev/null; then
	pass "an appender racing five discards of its file: $nerr errors"
else
	fail "an appender racing five discards of its file gets (almost) no error" "$(cat "$T/appender.out")"
fi
step "  ...verify passes" af verify "$MNT"
# The same for a directory: a large file written and closed in it, its
# release still hashing, when the directory is discarded.
sh_step "64 MiB written in a new directory, then at once discard of the directory" "
	python3 -c \"import os; os.mkdir('$MNT/ddir'); open('$MNT/ddir/big.bin', 'wb').write(os.urandom(64 << 20))\"
	'$AGENTFS' discard --state-dir '$STATE' '$MNT' ddir >/dev/null"
step "  ...verify passes" af verify "$MNT"
assert_enoent "$MNT/ddir" "  ...and the directory is gone"

# No settling: verify and log ask the daemon to write its journal out first
# (the flush handshake), so files written just before are on record.
sh_step "write files, then at once verify and log" "
	mkdir '$MNT/fresh'
	for i in \$(seq 1 20); do printf '%s\n' \$i >'$MNT/fresh/f'\$i.txt; done
	'$AGENTFS' verify --state-dir '$STATE' '$MNT' >'$T/fresh.verify' 2>&1 || { cat '$T/fresh.verify'; exit 1; }"
assert_not_contains "  ...verify knows every file just written" "no record" "$(cat "$T/fresh.verify")"
printf 'last\n' >"$MNT/fresh/last.txt"
assert_contains "log at once shows the write just made" '"path":"fresh/last.txt"' \
	"$(af log --json --op write --path 'fresh/*' "$MNT" 2>&1)"

# A file still open for writing: verify's request for the journal records its
# writes so far (the writer's pid, the hash of what the upper holds), so a
# live workspace verifies; the release then adds no record for them.
(exec 3>"$MNT/open.txt" && printf 'held open\n' >&3 && echo ready >"$T/open.ready" && exec sleep 30) \
	</dev/null >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 50); do [ -e "$T/open.ready" ] && break; sleep 0.1; done
step "verify passes with a file open for writing" af verify "$MNT"
wr=$(records write open.txt)
if passthrough_on "$WS"; then
	assert_eq "  ...its writes so far are on record" 1 "$(printf '%s\n' "$wr" | grep -c '"op":"write"')"
else
	assert_eq "  ...its writes so far are on record" 1 "$(printf '%s\n' "$wr" | grep -c '"bytes":10,')"
fi
assert_eq "  ...with the hash of what the upper holds" \
	"$(xxhsum -H2 "$WS/upper/open.txt" 2>/dev/null | cut -d' ' -f1)" "$(field hash "$wr")"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
settle
assert_eq "  ...and its release adds no second record" 1 "$(records write open.txt | grep -c .)"

# ------------------------------------------------------------------ a large sparse file
# `truncate -s 1T`: its holes read as zeros and would hash as them, minutes of
# the daemon's time.  Past HASHCACHE_MAX_BYTES (fs/internal.h) the daemon
# records the file without a hash, at once, and the mount stays usable.
step "truncate -s 1T of a new file" t truncate -s 1T "$MNT/sparse.bin"
assert_eq "  ...reads as zeros" 000000 "$(t head -c 3 "$MNT/sparse.bin" | od -An -tx1 | tr -d ' \n')"
assert_eq "  ...the mount still answers" "$(cat "$REPO/README.md")" "$(t cat "$MNT/README.md")"
settle
rec=$(records read sparse.bin | tail -n 1)
if [ -n "$rec" ]; then pass "  ...its read is recorded"; else fail "  ...its read is recorded" "$(af log "$MNT" 2>&1 | tail -n 5)"; fi
assert_eq "  ...without a hash" "" "$(field hash "$rec")"
step "  ...and removed" t rm "$MNT/sparse.bin"

# ------------------------------------------------------------------ tampering
run af unmount "$MNT"
if [ "$RC" -eq 0 ] && ! is_mounted "$MNT"; then pass "unmount"; else fail "unmount" "$OUT"; fi
step "verify passes after unmount" af verify mnt
cp "$J" "$T/journal.orig"
n=$(wc -l <"$J")

# tampered DESC WANT_RECORD: verify must fail naming record WANT_RECORD
tampered() {
	run af verify mnt
	if [ "$RC" -eq 1 ] && [[ $OUT == *"record $2 "* ]]; then pass "$1"; else
		fail "$1" "exit $RC, expected 1 naming record $2" "$OUT"
	fi
	# A broken chain says nothing reliable of the upper: no file is blamed.
	assert_not_contains "  ...and blames no file of the upper" "upper:" "$OUT"
	cp "$T/journal.orig" "$J"
}
# a digit of record 5's time, a letter of a path, the last record's op
perl -i -pe 'if ($. == 5) { s/("time_ns":\d+)(\d),/$1 . (($2 + 1) % 10) . ","/e }' "$J"
tampered "editing a byte of record 5 fails verify at record 5" 5
line=$(grep -n '"path":"storm/b-9.txt"' "$J" | head -n 1 | cut -d: -f1)
sed -i "${line}s/storm\/b-9/storm\/b-8/" "$J"
tampered "editing a path in record $line fails at record $line" "$line"
sed -i '7d' "$J"
tampered "deleting record 7 fails verify at record 7" 7
head -n $((n - 3)) "$T/journal.orig" >"$J"
tampered "truncating the last 3 records fails verify" $((n - 2))
head -c -20 "$T/journal.orig" >"$J"
tampered "truncating inside the last record fails verify" "$n"
step "the restored journal verifies" af verify mnt

printf 'edited behind the back\n' >"$WS/upper/storm/a-3.txt"
refuse "verify detects a change to the upper behind agentfs's back" "storm/a-3.txt" af verify mnt

# ------------------------------------------------------------------ kill -9
mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount again"; else
	fail "mount again" "exit $RC" "$OUT"
	bail "mount failed"
fi
settle
assert_contains "the change behind agentfs's back is recorded at mount" '"path":"storm/a-3.txt"' \
	"$(af log --json --op recover "$MNT")"
step "verify passes after that recovery" af verify "$MNT"

# ------------------------------------------------------------------ hard links
# A write through a hard link changes the one upper file all its names share;
# its record names one of them, and verify holds the others to it too.
step "ln Makefile mk-link" t ln "$MNT/Makefile" "$MNT/mk-link"
step "verify passes after the link" af verify "$MNT"
sh_step "append to Makefile through mk-link" "printf '# linked\\n' >>'$MNT/mk-link'"
assert_eq "  ...Makefile shows the bytes written through mk-link" \
	"$(cat "$MNT/mk-link")" "$(cat "$MNT/Makefile")"
step "verify passes after a write through the link" af verify "$MNT"
step "rm mk-link" t rm "$MNT/mk-link"
step "verify passes with the link gone" af verify "$MNT"
printf 'linked\n' >"$MNT/linked.txt"
step "ln linked.txt linked-2.txt" t ln "$MNT/linked.txt" "$MNT/linked-2.txt"
printf 'written through linked.txt\n' >>"$MNT/linked.txt"
step "verify passes after a write through the first name" af verify "$MNT"

# ------------------------------------------------------------------ symlinks
# A symlink is checked as itself (its target), never followed: the upper has
# no README.md for docs/readme-link -> ../README.md to lead to.
step "mv docs/readme-link (a repository symlink) docs/readme-moved" \
	t mv "$MNT/docs/readme-link" "$MNT/docs/readme-moved"
step "verify passes after a repository symlink was renamed" af verify "$MNT"
step "mv it back" t mv "$MNT/docs/readme-moved" "$MNT/docs/readme-link"
step "verify passes after it was renamed back" af verify "$MNT"
step "ln -s (a new symlink)" t ln -s no-such-target "$MNT/dangling-link"
step "verify passes with a new dangling symlink" af verify "$MNT"

# The agent's git writes into the private .git, beside the upper: recovery
# after the crash below must not take its files for missing from the upper.
sh_step "a commit in the mount's .git before the crash" \
	"cd '$MNT' && printf 'x\\n' >precrash.txt && git add precrash.txt && git -c user.name=a -c user.email=a@x commit -qm 'before the crash'"
dpid=$(daemon_pid_of "$MNT")
mkdir -p "$MNT/crash"
(
	i=0
	while [ $i -lt 5000 ]; do
		printf 'crash %s\n' "$i" >"$MNT/crash/f$((i % 40)).txt" 2>/dev/null || exit 0
		i=$((i + 1))
	done
) &
cw=$!
sleep 0.4
kill -KILL "$dpid"
wait "$cw" 2>/dev/null
wait_gone "$dpid" 5
timeout 10 fusermount3 -uz "$MNT" 2>/dev/null
printf '{"v":1,"seq":' >>"$J" # and a torn write at the tail, as a crash can leave
refuse "after kill -9 and a torn tail, verify fails" "torn" af verify mnt

mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount after kill -9"; else
	fail "mount after kill -9" "exit $RC" "$OUT"
	bail "mount failed"
fi
settle
run af verify "$MNT"
if [ "$RC" -eq 0 ] && [[ $OUT == *"crash recovery"* ]]; then
	pass "verify passes after the next mount's recovery and names it"
else
	fail "verify passes after the next mount's recovery and names it" "exit $RC" "$OUT"
fi
assert_contains "  ...and the files written before the crash are in the upper" "f1.txt" \
	"$(ls "$WS/upper/crash" 2>&1)"
rec=$(af log --json --op recover "$MNT" 2>&1)
assert_not_contains "  ...and no file written through a hard link is taken for changed" \
	'"path":"Makefile"' "$rec"
assert_not_contains "  ...nor one written through its first name" '"path":"linked' "$rec"
assert_not_contains "  ...nor a file of the private .git" '"path":".git' "$rec"

run af unmount "$MNT"
step "verify passes after the final unmount" af verify mnt

# Fail closed: a change behind agentfs's back shows under every name of the file.
printf 'edited behind the back\n' >>"$WS/upper/linked-2.txt"
run af verify mnt
if [ "$RC" -eq 1 ] && [[ $OUT == *"upper: linked.txt: content"* ]] &&
	[[ $OUT == *"upper: linked-2.txt: content"* ]]; then
	pass "verify detects a change behind agentfs's back to a hard-linked file, under both names"
else
	fail "verify detects a change behind agentfs's back to a hard-linked file, under both names" \
		"exit $RC" "$OUT"
fi
ln -sfn elsewhere "$WS/upper/docs/readme-link"
refuse "verify detects a symlink retargeted behind agentfs's back" \
	"upper: docs/readme-link: content" af verify mnt
# ------------------------------------------------------------------ entries the agent made unreadable
# chmod 000 in the view is the mode of the upper entry, and verify and recovery
# walk the upper as its owner: without CAP_DAC_OVERRIDE they cannot read
# there.  They say so for that entry and check the rest (root reads anyway).
UMNT=$T/umnt
UWS=$STATE/workspaces/unread
mount_ws "$REPO" "$UMNT" --name unread
[ "$RC" -eq 0 ] || bail "mount of the unread workspace failed: $OUT"
sh_step "a file and a directory made unreadable in the mount" "cd '$UMNT' &&
	printf 'sealed\n' >sealed.txt && chmod 000 sealed.txt &&
	mkdir locked && printf 'inside\n' >locked/f.txt && chmod 000 locked"
run af verify "$UMNT"
if [ "$(id -u)" -eq 0 ]; then
	assert_eq "verify passes (root reads them)" "0" "$RC"
else
	assert_eq "verify fails" "1" "$RC"
	assert_contains "  ...naming the directory it cannot read" "upper: locked: cannot read this directory" "$OUT"
	assert_contains "  ...and the file" "upper: sealed.txt: cannot read" "$OUT"
	assert_not_contains "  ...not the journal" "journal.jsonl: Permission denied" "$OUT"
	assert_not_contains "  ...nor the files in the directory as missing" "locked/f.txt" "$OUT"
	assert_contains "  ...says the chain is intact" "journal intact:" "$OUT"
	assert_contains "  ...and what it could not check" "2 entries could not be read" "$OUT"
	assert_not_contains "  ...taking nothing for a change" "differ from the journal" "$OUT"
	refuse "status names what it cannot read" ": locked: Permission denied" af status "$UMNT"
	refuse "export names what it cannot read" ": locked: Permission denied" af export "$UMNT"
fi
dpid=$(daemon_pid_of "$UMNT")
kill -KILL "$dpid"
wait_gone "$dpid" 5
timeout 10 fusermount3 -uz "$UMNT" 2>/dev/null
for i in $(seq 1 20); do printf 'behind %s\n' "$i" >"$UWS/upper/behind-$i.txt"; done
mount_ws "$REPO" "$UMNT" --name unread
[ "$RC" -eq 0 ] || bail "mount after kill -9 failed: $OUT"
settle
run af log --json --op recover "$UMNT"
assert_eq "recovery records all 20 files written behind its back, past the unreadable entries" 20 \
	"$(grep -c '"path":"behind-' <<<"$OUT")"
t chmod 755 "$UMNT/locked"
t chmod 644 "$UMNT/sealed.txt"
step "verify passes once they are readable again" af verify "$UMNT"
step "unmount" af unmount "$UMNT"

# Every record removed and the head file with them: an empty journal is no new
# one (the first write makes the head file), so verify cannot pass it.
cp "$WS/journal.jsonl" "$T/journal.keep" && cp "$WS/journal.jsonl.head" "$T/head.keep"
: >"$WS/journal.jsonl"
rm -f "$WS/journal.jsonl.head"
refuse "verify refuses an emptied journal whose head file is gone" "the head file is missing" \
	af verify --no-upper mnt
cp "$T/journal.keep" "$WS/journal.jsonl" && cp "$T/head.keep" "$WS/journal.jsonl.head"
# A FIFO put in the head file's place must not hang verify (t's timeout: 124).
rm -f "$WS/journal.jsonl.head" && mkfifo "$WS/journal.jsonl.head"
refuse "verify refuses a FIFO as the head file, without hanging" "the head file is malformed" \
	af verify --no-upper mnt
rm -f "$WS/journal.jsonl.head" && cp "$T/head.keep" "$WS/journal.jsonl.head"

# A file that is no journal: its first bad line is named, the others counted
# (not one error line each).
seq 1 50 >"$T/not-a-journal.jsonl"
run t "$AGENTFS" log "$T/not-a-journal.jsonl"
assert_eq "log of a file that is no journal: two lines, exit 1" "1 2" \
	"$RC $(printf '%s\n' "$OUT" | wc -l)"
assert_contains "  ...the second counting the other bad lines" \
	"not-a-journal.jsonl: 49 more lines do not parse (see 'agentfs verify')" "$OUT"

# ------------------------------------------------------------------ markers of the upper
# Whiteouts, opaque and redirected directories and special files delete or
# hide repository files, in the view and in what export and promote take:
# verify holds each to a namespace record at its path or above it, and
# recovery records one that has none.  Every way the agent makes them
# passes; one planted in the upper fails.
long=$(printf 'L%.0s' $(seq 1 252)) # its whiteout is named by its hash
printf 'long\n' >"$REPO/$long"
mkfifo "$REPO/lower-fifo" # untracked: copied up by a chmod, a link
for d in deep deep2; do
	mkdir -p "$REPO/$d/b/c" && printf 'f\n' | tee "$REPO/$d/f1" "$REPO/$d/f2" "$REPO/$d/b/g1" \
		"$REPO/$d/b/g2" "$REPO/$d/b/c/h1" >/dev/null
done
KMNT=$T/kmnt
KWS=$STATE/workspaces/markers
mount_ws "$REPO" "$KMNT" --name markers
[ "$RC" -eq 0 ] || bail "mount of the markers workspace failed: $OUT"
sh_step "the agent deletes, renames and replaces repository entries" "cd '$KMNT' &&
	rm README.md '$long' && rm -r docs/api && rm src/old.c && mv src src2 &&
	rm -r scripts && mkdir scripts && mkfifo fifo && mv data data2 && mkdir data &&
	rm -r config && mkdir config && printf 'x\n' >config/new.yml &&
	chmod 600 lower-fifo && ln lower-fifo lower-fifo-2"
step "  ...and discard brings back one file of a replaced directory" \
	af discard "$KMNT" config/settings.yml
# discard's own whiteouts: deep under a directory moved away (the way to
# the file is made again, hiding the rest), and in a directory then moved
sh_step "a repository directory moved away" "mv '$KMNT/deep' '$KMNT/deep-moved'"
step "  ...and a file deep under its old name brought back" af discard "$KMNT" deep/b/g1
sh_step "a repository directory replaced" "mv '$KMNT/deep2' '$KMNT/deep2.bak' && mkdir '$KMNT/deep2'"
step "  ...one of its files brought back" af discard "$KMNT" deep2/f1
sh_step "  ...and the directory moved" "mv '$KMNT/deep2' '$KMNT/deep2-moved'"
assert_eq "  ...the upper holds whiteouts, markers and a FIFO" "yes yes yes" \
	"$([ -e "$KWS/upper/.wh.README.md" ] && echo yes) $(ls -a "$KWS/upper" | grep -q '^\.wh\.\.h\.' && echo yes) $([ -p "$KWS/upper/fifo" ] && echo yes)"
step "verify passes with the agent's markers" af verify "$KMNT"
step "unmount" af unmount "$KMNT"
step "verify passes after the unmount" af verify markers
touch "$KWS/upper/.wh.Makefile"
refuse "verify detects a whiteout planted in the upper" \
	"upper: Makefile: a whiteout (a deletion) with no record" af verify markers
rm "$KWS/upper/.wh.Makefile"
mkdir "$KWS/upper/keys" && fsops setxattr "$KWS/upper/keys" user.agentfs.opaque y >/dev/null
refuse "verify detects an opaque directory planted in the upper" \
	"upper: keys: an opaque directory" af verify markers
rmdir "$KWS/upper/keys"
mkdir "$KWS/upper/sub" && fsops setxattr "$KWS/upper/sub" user.agentfs.redirect docs >/dev/null
refuse "verify detects a redirected directory planted in the upper" \
	"upper: sub: a redirected directory" af verify markers
rmdir "$KWS/upper/sub"
mkfifo "$KWS/upper/docs/pipe"
refuse "verify detects a FIFO planted in the upper" "upper: docs/pipe: a special file" \
	af verify markers
touch "$KWS/upper/.wh.Makefile"
mount_ws "$REPO" "$KMNT" --name markers
[ "$RC" -eq 0 ] || bail "mount of the markers workspace failed: $OUT"
settle
run af verify "$KMNT"
assert_eq "verify passes after the mount recorded what was planted" 0 "$RC"
assert_contains "  ...naming the whiteout" "recovered: Makefile: whiteout without a record" "$OUT"
assert_contains "  ...and the FIFO" "recovered: docs/pipe: special file without a record" "$OUT"
assert_not_contains "  ...and nothing of the agent's own (the FIFO copied up)" "lower-fifo" \
	"$(af log --op recover "$KMNT" 2>&1)"
step "unmount" af unmount "$KMNT"

# ------------------------------------------------------------------ the saved state
# The unmount saved the replay's state beside the journal: the next mount
# parses none of what it describes.  A record edited before its end makes
# the mount scan the whole journal again, and find the damage as it would
# without a saved state.
assert_eq "the unmount saved the journal's replayed state" 0 \
	"$([ -s "$KWS/journal.jsonl.state" ]; echo $?)"
size=$(stat -c %s "$KWS/journal.jsonl")
mount_ws "$REPO" "$KMNT" --name markers
[ "$RC" -eq 0 ] || bail "mount of the markers workspace failed: $OUT"
assert_contains "the next mount resumes from it" \
	"journal: 0 lines replayed after the saved state of its first $size bytes" \
	"$(grep 'journal:' "$KWS/daemon.log" | tail -1)"
step "  ...verify passes" af verify "$KMNT"
step "unmount" af unmount "$KMNT"
lines=$(wc -l <"$KWS/journal.jsonl")
python3 - "$KWS/journal.jsonl" <<'PY'
import re, sys
p = sys.argv[1]
b = open(p, "rb").read().split(b"\n")
# record 3's time, one digit changed: still a valid record
b[2] = re.sub(rb'"time_ns":(\d)', lambda m: b'"time_ns":' + (b"1" if m.group(1) != b"1" else b"2"), b[2], 1)
open(p, "wb").write(b"\n".join(b))
PY
refuse "verify names the edited record" "record 3 was edited" af verify markers
mount_ws "$REPO" "$KMNT" --name markers
[ "$RC" -eq 0 ] || bail "mount of the markers workspace failed: $OUT"
assert_contains "the mount of the edited journal scans all of it" \
	"journal: $lines lines replayed" "$(grep 'journal:' "$KWS/daemon.log" | tail -1)"
assert_contains "  ...and notes the damage it found" '"bad_line":3' \
	"$(grep '"last_intact_seq"' "$KWS/journal.jsonl" | tail -1)"
step "unmount" af unmount "$KMNT"
done_testing
