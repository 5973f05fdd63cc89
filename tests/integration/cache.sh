#!/usr/bin/env bash
# cache.sh - what reaches the daemon when a tool reads files through the
# mount, counted in libfuse's debug output (agentfs mount --debug):
#  - the first open of a small lower file puts its content in the kernel's
#    page cache (FUSE_NOTIFY_STORE), so reading it sends no READ, and a stat
#    right after sends no GETATTR (a READ would have marked atime stale);
#  - a larger file is read with READs as usual;
#  - while another file of the same inode is open a new version is not
#    stored (a READ of that file may hold a page the store would wait for),
#    and the reads go to the daemon;
#  - a sequential read of a large file goes in READs of 1008 KiB when the
#    daemon may set its mount's readahead window (root), in the kernel's
#    128 KiB otherwise;
#  - a large read's data is spliced from the layer's file and a large
#    write's pages into the upper file, not copied through the daemon;
#  - what a tool reads is the file's content in every case, and the journal
#    names it with the file's hash and size.
# The mount serves every read and write itself (--no-passthrough): where the
# kernel may read and write the agent's files directly, passthrough.sh tests
# that.
#
#   bash cache.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
mkdir -p "$REPO/src/c"
head -c 40000 /dev/urandom | base64 >"$REPO/src/c/small.txt"     # ~54 KiB
head -c 200000 /dev/urandom | base64 >"$REPO/src/c/large.txt"    # ~270 KiB
head -c 3000 /dev/urandom | base64 >"$REPO/src/c/held.txt"
head -c 4194304 /dev/urandom >"$REPO/src/c/seq.bin"  # 4 MiB
head -c 4194304 /dev/urandom >"$REPO/src/c/seq2.bin" # 4 MiB
git -C "$REPO" add -A >/dev/null && git -C "$REPO" commit -qm cache || bail "cannot commit"

# The daemon in the foreground, its libfuse debug output on stderr.
mkdir -p "$MNT"
_MOUNTS+=("$MNT")
# Not under t's timeout: the daemon lives until the EXIT trap unmounts it.
"$AGENTFS" mount --state-dir "$STATE" --debug --no-passthrough "$REPO" "$MNT" 2>"$T/debug.log" &
_PIDS+=($!)
for ((i = 0; i < 100; i++)); do
	is_mounted "$MNT" && break
	sleep 0.1
done
if is_mounted "$MNT"; then pass "mount --debug"; else
	fail "mount --debug" "$(tail -n 20 "$T/debug.log")"
	bail "mount failed"
fi

# ops CMD...: run CMD, then print the opcodes libfuse logged meanwhile, one a
# line ("READ", "GETATTR", ...).  libfuse prints each request when it starts
# answering it, and a reply reaches the caller only after that, so what CMD
# caused is in the log when it returns; RELEASE, sent after close(2) without
# waiting, may come later and is not counted.
ops() {
	local before
	before=$(wc -l <"$T/debug.log")
	"$@" >/dev/null || return 1
	tail -n +"$((before + 1))" "$T/debug.log" | sed -n 's/.*opcode: \([A-Z_]*\) .*/\1/p' |
		grep -v '^RELEASE$' || true
}
count() { grep -c "^$1\$" <<<"$2" || true; }

# ------------------------------------------------------------------ a small file
got=$(ops t cat "$MNT/src/c/small.txt")
assert_eq "the first read of a small file sends no READ" 0 "$(count READ "$got")"
assert_eq "  ...but one OPEN" 1 "$(count OPEN "$got")"
got=$(ops t stat "$MNT/src/c/small.txt")
assert_eq "  ...a stat right after sends nothing" "" "$got"
assert_file_eq "  ...and reads the file" "$REPO/src/c/small.txt" <(t cat "$MNT/src/c/small.txt")

# ------------------------------------------------------------------ a large file
got=$(ops t cat "$MNT/src/c/large.txt")
if [ "$(count READ "$got")" -ge 1 ]; then pass "a file over 64 KiB is read with READs ($(count READ "$got"))"; else
	fail "a file over 64 KiB is read with READs" "opcodes: $(echo $got)"
fi
assert_file_eq "  ...and reads the file" "$REPO/src/c/large.txt" <(t cat "$MNT/src/c/large.txt")

# ------------------------------------------------------------------ a sequential read
# 4 MiB read in 1 MiB blocks: 5 READs with a readahead window of 1008 KiB
# (the first may be smaller), the largest READ whose spliced reply fits the
# daemon's pipe; 8 with a 1 MiB window (a READ of 255 pages, the daemon's
# max_pages, and one of 1), 32 with the kernel's 128 KiB.
got=$(ops t dd if="$MNT/src/c/seq.bin" of=/dev/null bs=1M status=none)
reads=$(count READ "$got")
bdi=$(cat "/sys/class/bdi/$(mountpoint -d "$MNT")/read_ahead_kb" 2>/dev/null)
if [ "$(id -u)" -eq 0 ]; then
	assert_eq "the mount's readahead window is 1008 KiB (read_ahead_kb)" 1008 "$bdi"
	if [ "$reads" -ge 1 ] && [ "$reads" -le 6 ]; then
		pass "a 4 MiB sequential read takes $reads READs"
	else
		fail "a 4 MiB sequential read takes at most 6 READs" "$reads READs"
	fi
else
	assert_eq "unprivileged, the mount keeps the kernel's readahead window" 128 "$bdi"
	skip "a 4 MiB sequential read takes at most 6 READs" "read_ahead_kb is root's to set"
fi
assert_file_eq "  ...and reads the file" "$REPO/src/c/seq.bin" <(t cat "$MNT/src/c/seq.bin")

# ------------------------------------------------------------------ spliced reads and writes
# The daemon's rchar (proc(5)) counts what it read(2)s and pread(2)s, not
# what it splices.  A READ's reply is spliced from the layer's file to
# /dev/fuse when the reply fits the daemon's pipe, so reading a 4 MiB file
# (held open, so the journal's hash at release is not counted) raises it by
# the requests only; copied through the daemon it would be by the file.
daemon=$(cut -d' ' -f1 "$STATE/workspaces/mnt/daemon.pid")
rchar() { awk '/^rchar:/ {print $2}' "/proc/$daemon/io"; }
exec 5<"$MNT/src/c/seq2.bin"
r0=$(rchar)
t dd bs=1M status=none of=/dev/null <&5
r1=$(rchar)
exec 5<&-
if [ -n "$r0" ] && [ -n "$r1" ] && [ $(((r1 - r0) >> 10)) -lt 1024 ]; then
	pass "a 4 MiB read is spliced: the daemon read $(((r1 - r0) >> 10)) KiB"
else
	fail "a 4 MiB read is spliced: the daemon reads under 1 MiB" "rchar ${r0:-?} -> ${r1:-?}"
fi

# ------------------------------------------------------------------ another file of the inode open
# held.txt is opened on fd 3 (its content stored then) and stays open; the
# person then changes it in the repository, and cat opens the new version:
# with fd 3's file open its content is not stored, so cat reads with READs.
exec 3<"$MNT/src/c/held.txt"
head -c 5000 /dev/urandom | base64 >"$REPO/src/c/held.txt"
want=$(stat -c %s "$REPO/src/c/held.txt")
for ((i = 0; i < 50; i++)); do # the view follows the change (live_lower.sh)
	[ "$(stat -c %s "$MNT/src/c/held.txt")" == "$want" ] && break
	sleep 0.1
done
got=$(ops t cat "$MNT/src/c/held.txt")
exec 3<&-
if [ "$(count READ "$got")" -ge 1 ]; then
	pass "with another file of the inode open, a new version is not stored: cat sends READs"
else
	fail "with another file of the inode open, a new version is not stored: cat sends READs" "opcodes: $(echo $got)"
fi
assert_file_eq "  ...and reads the new version" "$REPO/src/c/held.txt" <(t cat "$MNT/src/c/held.txt")

# 16 MiB in 1 MiB blocks: from the handle's first large WRITE on, requests
# come through libfuse's pipe and their pages are spliced into the upper
# file, so the daemon read(2)s only a small part of what was written: the
# first WRITE (~1 MiB) and the requests; copied through the daemon it would
# be all of it.
exec 4>"$MNT/src/c/big.bin"
r0=$(rchar)
t dd if=/dev/zero bs=1M count=16 status=none >&4
r1=$(rchar)
exec 4>&-
if [ -n "$r0" ] && [ -n "$r1" ] && [ $(((r1 - r0) >> 10)) -ge 512 ] &&
	[ $(((r1 - r0) >> 10)) -lt 4096 ]; then
	pass "a 16 MiB write is spliced: the daemon read $(((r1 - r0) >> 10)) KiB"
else
	fail "a 16 MiB write is spliced: the daemon reads 512 KiB-4 MiB" "rchar ${r0:-?} -> ${r1:-?}"
fi
assert_eq "  ...and the file has it all" 16777216 "$(stat -c %s "$MNT/src/c/big.bin")"
assert_file_eq "  ...zeros" <(head -c 16777216 /dev/zero) "$MNT/src/c/big.bin"

# 64 MiB in 1 MiB blocks, the file left open: the daemon starts writing the
# upper file out behind the writer every 16 MiB, so a later fsync or close has
# little left to wait for.  Without it all 64 MiB would still be dirty here:
# the kernel's flusher starts on its own only after 30 s or far more dirty
# memory (vm.dirty_expire_centisecs, vm.dirty_background_ratio).
exec 4>"$MNT/src/c/behind.bin"
t dd if=/dev/zero bs=1M count=64 status=none >&4
got=$(t "$AGENTFS_FSOPS" cachestat "$STATE/workspaces/mnt/upper/src/c/behind.bin" 2>&1)
exec 4>&-
dirty=$(printf '%s\n' "$got" | sed -n 's/.*dirty=\([0-9]*\).*/\1/p')
if [ "$got" == ENOSYS ]; then
	skip "a 64 MiB write is written out behind the writer" "no cachestat(2) in this kernel"
elif [ -n "$dirty" ] && [ "$dirty" -le $(((17 << 20) / 4096)) ]; then
	pass "a 64 MiB write is written out behind the writer: $((dirty * 4)) KiB left dirty"
else
	fail "a 64 MiB write is written out behind the writer: at most 17 MiB left dirty" "$got"
fi

# ------------------------------------------------------------------ an editor's save
# With default_permissions the kernel checks the caller against the view's
# modes, and refreshes a directory's mode (a GETATTR) after each change in it
# before the next check: twice in a save.  A root daemon's mount serves root
# alone, whom those checks let through anyway, so it goes without them
# (fs/fs.c); an unprivileged one keeps them.
sh_step "a first save of src/c/saved.txt" \
	"printf 'one\n' >'$MNT/src/c/saved.txt.tmp' && mv '$MNT/src/c/saved.txt.tmp' '$MNT/src/c/saved.txt'"
# (python: mv would stat the files too)
got=$(ops t python3 -c "import os
with open('$MNT/src/c/saved.txt.tmp', 'w') as f: f.write('two\n')
os.rename('$MNT/src/c/saved.txt.tmp', '$MNT/src/c/saved.txt')")
if [ "$(id -u)" -eq 0 ]; then
	assert_eq "a root daemon's save (write a temporary file, rename it over) sends no GETATTR" \
		0 "$(count GETATTR "$got")"
	assert_not_contains "  ...and its mount has no default_permissions" default_permissions \
		"$(grep " $MNT " /proc/mounts)"
	# allow_root reaches the kernel as allow_other (libfuse filters by uid
	# itself, not for every request): the kernel keeps checking.
	mount_ws "$REPO" "$T/mnt-ar" --name mnt-ar -o allow_root
	assert_contains "  ...but a root daemon's mount with -o allow_root has it" default_permissions \
		"$(grep " $T/mnt-ar " /proc/mounts)"
	run af unmount "$T/mnt-ar"
else
	if [ "$(count GETATTR "$got")" -ge 1 ]; then
		pass "an unprivileged daemon's save lets the kernel check the directory's mode (GETATTR)"
	else
		fail "an unprivileged daemon's save lets the kernel check the directory's mode (GETATTR)" \
			"opcodes: $(echo $got)"
	fi
	assert_contains "  ...its mount has default_permissions" default_permissions \
		"$(grep " $MNT " /proc/mounts)"
fi
assert_eq "  ...and the file holds the save" two "$(t cat "$MNT/src/c/saved.txt" 2>&1)"

# ------------------------------------------------------------------ the journal
field() {
	printf '%s\n' "$2" | grep -o "\"$1\":\(\"[^\"]*\"\|[0-9]*\)" | head -n 1 | sed 's/^[^:]*://; s/"//g'
}
sleep 0.3 # the journal's writer flushes every 100 ms
rec=$(af log --json --op read --path src/c/small.txt "$MNT" | head -n 1)
if [ -n "$rec" ]; then pass "the stored read is journaled"; else
	fail "the stored read is journaled" "$(af log "$MNT" 2>&1 | tail -n 5)"
fi
assert_eq "  ...with the file's hash" \
	"$(xxhsum -H2 "$REPO/src/c/small.txt" 2>/dev/null | cut -d' ' -f1)" "$(field hash "$rec")"
assert_eq "  ...and its size as the bytes served" "$(stat -c %s "$REPO/src/c/small.txt")" "$(field bytes "$rec")"

done_testing
