#!/usr/bin/env bash
# passthrough.sh - FUSE passthrough (fs/passthrough.c): where the daemon runs
# as root on Linux 6.9 or later, the kernel reads and writes the agent's
# (upper) files itself, and everything the journal and the view promise still
# holds:
#  - the data of writes through an open file never reaches the daemon (its
#    wchar in /proc/PID/io does not grow with them), where a mount with
#    --no-passthrough writes each one itself;
#  - each handle's writes are journaled at its release with the hash of the
#    version it left and no byte count, a handle that wrote nothing adds no
#    record, and a quick overwrite of the same size is found by its content;
#  - a read's record names the version read, even when a write follows at
#    once, and says so when the file changed while it was open;
#  - a writer's change after verify's flush (an mmap store) is recorded;
#  - mmap writes, a reader on the lower file while a writer copies it up, a
#    reader and an O_DIRECT open beside a passthrough writer: no EIO, the
#    right bytes; unaligned O_DIRECT reads and writes beside it work;
#  - writes, truncates and chowns clear set-user-ID and set-group-ID bits as
#    the file system under the mount does (by the daemon: the kernel leaves
#    it to it, FUSE_HANDLE_KILLPRIV_V2);
#  - verify passes and the export carries the changes.
# Unprivileged, the daemon may not register backing files: every write reaches
# it and is counted in the journal, as before.
#
#   bash passthrough.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
make_test_repo "$REPO" || bail "cannot create the test repository"
mkdir -p "$REPO/pt"
for f in a b c d e f g h i; do printf '%s-content\n' "$f" >"$REPO/pt/$f.txt"; done
git -C "$REPO" add -A >/dev/null && git -C "$REPO" commit -qm pt || bail "cannot commit"

MNT=$T/mnt
NMNT=$T/nmnt
WS=$STATE/workspaces/mnt
NWS=$STATE/workspaces/nmnt
mount_ws "$REPO" "$MNT" || bail "mount failed: $OUT"
mount_ws "$REPO" "$NMNT" --no-passthrough || bail "mount --no-passthrough failed: $OUT"
pass "mount, and mount --no-passthrough beside it"

printf 'first\n' >"$MNT/pt/new.txt"
printf 'first\n' >"$NMNT/pt/new.txt"

# Expected where the daemon is root and the kernel has FUSE_DEV_IOC_BACKING_OPEN.
kernel_ok() {
	local v maj min
	v=$(uname -r)
	maj=${v%%.*}
	min=${v#*.}
	min=${min%%[!0-9]*}
	[ "$maj" -gt 6 ] || { [ "$maj" -eq 6 ] && [ "$min" -ge 9 ]; }
}
PT=0
if [ "$(id -u)" -eq 0 ] && kernel_ok; then
	if passthrough_on "$WS"; then
		PT=1
		pass "as root on Linux $(uname -r): the daemon uses passthrough"
	elif grep -q "passthrough: refused by the kernel" "$WS/daemon.log"; then
		skip "passthrough" "$(grep "passthrough: refused" "$WS/daemon.log")"
	else
		fail "as root on Linux $(uname -r): the daemon uses passthrough" \
			"$(tail -n 5 "$WS/daemon.log")"
	fi
else
	if passthrough_on "$WS"; then
		fail "unprivileged: no passthrough" "$(tail -n 5 "$WS/daemon.log")"
	else
		pass "unprivileged or before Linux 6.9: no passthrough"
	fi
fi
if passthrough_on "$NWS"; then
	fail "--no-passthrough: no passthrough" "$(tail -n 5 "$NWS/daemon.log")"
else
	pass "--no-passthrough: no passthrough"
fi

# ------------------------------------------------------------------ what reaches the daemon
# wchar of the daemon (proc(5), /proc/PID/io: bytes the whole process passed
# to write(2) and its kin): a WRITE it answers is a pwrite(2) of the data.
wchar() {
	awk '/^wchar:/ {print $2}' "/proc/$1/io"
}
writes() { # FILE: 2000 writes of 4 KiB through one open file
	python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
buf = b"w" * 4096
for i in range(2000):
    os.pwrite(fd, buf, (i % 64) * 4096)
os.close(fd)
EOF
}
pid=$(daemon_pid_of "$MNT")
npid=$(daemon_pid_of "$NMNT")
s0=$(wchar "$pid")
writes "$MNT/pt/many.bin"
s1=$(wchar "$pid")
n0=$(wchar "$npid")
writes "$NMNT/pt/many.bin"
n1=$(wchar "$npid")
if [ $((n1 - n0)) -ge 8192000 ]; then
	pass "--no-passthrough: 2000 writes of 4 KiB: the daemon wrote $((n1 - n0)) bytes"
else
	fail "--no-passthrough: 2000 writes of 4 KiB: the daemon writes 8192000 bytes" "$n0 -> $n1"
fi
if [ "$PT" -eq 1 ]; then
	if [ $((s1 - s0)) -lt 1048576 ]; then
		pass "passthrough: 2000 writes of 4 KiB: the daemon wrote $((s1 - s0)) bytes"
	else
		fail "passthrough: 2000 writes of 4 KiB: the daemon writes under 1 MiB" "$s0 -> $s1"
	fi
fi
assert_file_eq "  ...the two files hold the same bytes" "$NMNT/pt/many.bin" "$MNT/pt/many.bin"

# ------------------------------------------------------------------ the journal
jrec() { # MNT OP PATH: the records (JSON) of OP on PATH
	"$AGENTFS" log --state-dir "$STATE" --json --op "$2" --path "$3" "$1" 2>&1
}
field() {
	printf '%s\n' "$2" | grep -o "\"$1\":\(\"[^\"]*\"\|[0-9]*\)" | head -n 1 | sed 's/^[^:]*://; s/"//g'
}
hash_of() { xxhsum -H2 "$1" 2>/dev/null | cut -d' ' -f1; }

wr=$(jrec "$MNT" write pt/many.bin)
assert_eq "one write record for the 2000 writes" 1 "$(printf '%s\n' "$wr" | grep -c '"op":"write"')"
assert_eq "  ...with the hash of the version left" "$(hash_of "$MNT/pt/many.bin")" "$(field hash "$wr")"
if [ "$PT" -eq 1 ]; then
	assert_eq "  ...and no byte count (the kernel wrote it)" "" "$(field bytes "$wr")"
	assert_contains "  ...which log shows as '-'" " - " \
		"$(af log --op write --path pt/many.bin "$MNT" 2>&1 | tail -n 1)"
else
	assert_eq "  ...and its byte count" 8192000 "$(field bytes "$wr")"
fi
nwr=$(jrec "$NMNT" write pt/many.bin)
assert_eq "--no-passthrough: the byte count" 8192000 "$(field bytes "$nwr")"

# A file opened for writing and closed unwritten adds no record; 20 quick
# overwrites of one byte, each closed at once, add 20, the last naming the
# file as it is.
python3 - "$MNT/pt/a.txt" <<'EOF'
import os, sys
os.close(os.open(sys.argv[1], os.O_RDWR))
EOF
assert_eq "open for writing, close unwritten: no write record" 0 \
	"$(jrec "$MNT" write pt/a.txt | grep -c '"op":"write"')"
python3 - "$MNT/pt/a.txt" <<'EOF'
import os, sys
for i in range(20):
    fd = os.open(sys.argv[1], os.O_RDWR)
    os.pwrite(fd, bytes([ord("A") + i]), 0)
    os.close(fd)
EOF
wr=$(jrec "$MNT" write pt/a.txt)
assert_eq "20 one-byte overwrites, each closed at once: 20 write records" 20 \
	"$(printf '%s\n' "$wr" | grep -c '"op":"write"')"
assert_eq "  ...the last with the hash of the file" "$(hash_of "$MNT/pt/a.txt")" \
	"$(field hash "$(printf '%s\n' "$wr" | tail -n 1)")"
assert_content "  ...which holds the last byte" "$MNT/pt/a.txt" "T-content"

# Each read's record names the version read, though a writer that holds the
# file open writes the next version right after it, and the daemon sees
# neither.
python3 - "$MNT/pt/b.txt" <<'EOF'
import os, sys
p = sys.argv[1]
w = os.open(p, os.O_WRONLY | os.O_TRUNC)
os.pwrite(w, b"version 00\n", 0)
for i in range(1, 31):
    with open(p, "rb") as f:
        f.read()
    os.pwrite(w, b"version %02d\n" % i, 0)
os.close(w)
EOF
reads=$(jrec "$MNT" read pt/b.txt | tail -n 30 | while read -r l; do field hash "$l"; done)
want=$(for i in $(seq 0 29); do printf 'version %02d\n' "$i" | xxhsum -H2 - | cut -d' ' -f1; done)
assert_eq "30 reads beside a writer that writes the next version after each" "$want" "$reads"

# ------------------------------------------------------------------ mmap, mixed opens
step "a shared mmap write" fsops mmap-write "$MNT/pt/c.txt" 0 ZZ
wr=$(jrec "$MNT" write pt/c.txt | tail -n 1)
assert_eq "  ...is journaled with the hash of the file" "$(hash_of "$MNT/pt/c.txt")" "$(field hash "$wr")"
assert_content "  ...which holds it" "$MNT/pt/c.txt" "ZZcontent"

# A reader holds the lower file open while a writer copies it up; a third
# open comes while both are open; then all close and a writer opens it again.
out=$(python3 - "$MNT/pt/d.txt" <<'EOF'
import os, sys
p = sys.argv[1]
try:
    r = os.open(p, os.O_RDONLY)
    first = os.read(r, 100)
    w = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(w, b"more\n")
    r2 = os.open(p, os.O_RDONLY)
    both = os.pread(r2, 100, 0)
    for fd in (r, w, r2):
        os.close(fd)
    w = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(w, b"again\n")
    os.close(w)
    print(first.decode().strip(), "|", both.decode().replace("\n", " ").strip(), "|",
          open(p).read().replace("\n", " ").strip())
except OSError as e:
    print("error:", e)
EOF
)
assert_eq "a reader on the lower file, a writer copying it up, a third open, a writer after" \
	"d-content | d-content more | d-content more again" "$out"

# A passthrough writer open; a reader and an O_DIRECT reader open beside it.
out=$(python3 - "$MNT/pt/e.txt" <<'EOF'
import mmap, os, sys
p = sys.argv[1]
try:
    w = os.open(p, os.O_RDWR | os.O_TRUNC)
    os.write(w, b"x" * 4096)
    r = os.open(p, os.O_RDONLY)
    a = os.read(r, 8192)
    d = os.open(p, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    n = os.preadv(d, [buf], 0)
    for fd in (w, r, d):
        os.close(fd)
    print(len(a), n, buf[:4096] == b"x" * 4096)
except OSError as e:
    print("error:", e)
EOF
)
assert_eq "a reader and an O_DIRECT reader beside a writer" "4096 4096 True" "$out"

# An O_DIRECT open beside a passthrough one reads and writes through the
# daemon, with any buffer, as it would alone.
out=$(python3 - "$MNT/pt/e.txt" <<'EOF'
import os, sys
p = sys.argv[1]
try:
    w = os.open(p, os.O_RDWR)
    d = os.open(p, os.O_RDWR | os.O_DIRECT)
    a = os.pread(d, 100, 0)
    n = os.pwrite(d, b"hello", 3)
    for fd in (w, d):
        os.close(fd)
    print(len(a), n, open(p, "rb").read(10))
except OSError as e:
    print("error:", e)
EOF
)
assert_eq "an unaligned O_DIRECT read and write beside a passthrough open" \
	"100 5 b'xxxhelloxx'" "$out"

# ------------------------------------------------------------------ set-user-ID
# Only the user who mounted may use a FUSE mount (no allow_other): as root the
# writer drops CAP_FSETID from its bounding set, unprivileged it never had it.
# The daemon clears the bits itself (FUSE_HANDLE_KILLPRIV_V2, fs/passthrough.c):
# each way the kernel asks for it, on both mounts, against a directory of the
# file system under them.
nofsetid() {
	if [ "$(id -u)" -eq 0 ]; then
		setpriv --bounding-set=-fsetid --inh-caps=-fsetid "$@"
	else
		"$@"
	fi
}
ODIRECT_WRITE='
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(b"d" * 4096)
os.pwrite(fd, buf, 0)'
# One line per case: its name and the mode it leaves.
suid_cases() (
	cd "$1" || exit 1
	mk() { printf 'suid\n' >"$1" && chmod "$2" "$1"; }
	mk append 4777 && nofsetid sh -c 'printf more >>append'
	mk append-fsetid 4777 && sh -c 'printf more >>append-fsetid'
	mk rw 4777 && nofsetid sh -c 'exec 3<>rw; printf x >&3'
	mk otrunc 4777 && nofsetid sh -c ': >otrunc'
	mk otrunc-fsetid 4777 && sh -c ': >otrunc-fsetid'
	mk truncate 4777 && nofsetid truncate -s 2 truncate
	mk truncate-fsetid 4777 && truncate -s 2 truncate-fsetid
	mk sgid 2775 && nofsetid sh -c 'printf more >>sgid'
	mk sgid-noexec 2765 && nofsetid sh -c 'printf more >>sgid-noexec'
	mk chown 4777 && chown "$(id -u)" chown
	# Open before the bit is set, written after (kernel-served on the
	# passthrough mount: the FUSE inode was marked S_NOSEC at its first
	# write and chmod's reply must unmark it).
	printf 'held\n' >held && exec 7>>held && printf a >&7 && chmod 4777 held &&
		nofsetid sh -c 'printf b >&7'
	exec 7>&-
	# O_DIRECT beside a reader, so a passthrough node answers it
	# FOPEN_DIRECT_IO and its writes reach the daemon without the kernel's
	# file_remove_privs.
	head -c 4096 /dev/zero >direct && chmod 4777 direct && exec 8<direct &&
		nofsetid python3 -c "$ODIRECT_WRITE" direct 2>&1
	exec 8<&-
	for f in append append-fsetid rw otrunc otrunc-fsetid truncate truncate-fsetid \
		sgid sgid-noexec chown held direct; do
		echo "$f $(stat -c %a "$f" 2>&1)"
	done
)
mkdir -p "$T/native-suid"
native=$(suid_cases "$T/native-suid" 2>&1)
case "$native" in
*"append 777"*) ;;
*) diag "native: $native" ;;
esac
for m in "$MNT" "$NMNT"; do
	mkdir -p "$m/pt/suid"
	assert_eq "set-ID bits after writes, truncates and chown as on the file system under the mount ($(basename "$m"))" \
		"$native" "$(suid_cases "$m/pt/suid" 2>&1)"
	printf 'suid\n' >"$m/pt/suid.bin" && chmod 4777 "$m/pt/suid.bin"
	nofsetid sh -c "printf more >>'$m/pt/suid.bin'" 2>&1
	assert_content "  ...and a write lands" "$m/pt/suid.bin" "suid
more"
done
assert_contains "the journal records the bits cleared" '"detail":"set-ID bits cleared"' \
	"$(af log --json --op setattr --path pt/suid/append "$MNT" 2>&1)"

# A writer holding a lower file open: verify's request for the journal
# records its writes so far, and its release adds no second record.
(exec 3>>"$MNT/pt/f.txt" && printf 'held\n' >&3 && echo ready >"$T/held.ready" && exec sleep 30) \
	</dev/null >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 50); do [ -e "$T/held.ready" ] && break; sleep 0.1; done
step "verify passes with a file held open for writing" af verify "$MNT"
assert_eq "  ...its writes so far are on record" 1 "$(jrec "$MNT" write pt/f.txt | grep -c '"op":"write"')"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
sleep 0.3
assert_eq "  ...and its release adds no second record" 1 "$(jrec "$MNT" write pt/f.txt | grep -c '"op":"write"')"

# An mmap write after verify's flush, to a page the first write already
# dirtied (no fault, so no new ctime), then a close: the release records the
# file as it is, and verify passes.
python3 - "$MNT/pt/mm.bin" "$AGENTFS" "$STATE" "$MNT" <<'EOF'
import mmap, os, subprocess, sys
p, agentfs, state, mnt = sys.argv[1:5]
with open(p, "wb") as f:
    f.write(b"a" * 8192)
fd = os.open(p, os.O_RDWR)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
m[0:5] = b"11111"
subprocess.run([agentfs, "verify", "--state-dir", state, mnt], stdout=subprocess.DEVNULL)
m[0:5] = b"22222"
m.close()
os.close(fd)
EOF
assert_eq "an mmap write after a flush: the last record names the file" "$(hash_of "$MNT/pt/mm.bin")" \
	"$(field hash "$(jrec "$MNT" write pt/mm.bin | tail -n 1)")"
step "  ...and verify passes" af verify "$MNT"

# A writer whose writes verify took, closed without writing more: its read
# record names the file as it is, not as it was opened.
python3 - "$MNT/pt/g.txt" "$AGENTFS" "$STATE" "$MNT" <<'EOF'
import os, subprocess, sys
p, agentfs, state, mnt = sys.argv[1:5]
fd = os.open(p, os.O_RDWR)
os.write(fd, b"g-longer-content\n")
subprocess.run([agentfs, "verify", "--state-dir", state, mnt], stdout=subprocess.DEVNULL)
os.close(fd)
EOF
assert_eq "a writer closed after a flush: one write record" 1 \
	"$(jrec "$MNT" write pt/g.txt | grep -c '"op":"write"')"
assert_eq "  ...and its read names the file as it is" "$(hash_of "$MNT/pt/g.txt")" \
	"$(field hash "$(jrec "$MNT" read pt/g.txt | tail -n 1)")"

# A reader open while another handle writes a new version: the daemon cannot
# tell which one it read, and its record says so.
python3 - "$MNT/pt/h.txt" <<'EOF'
import os, sys
p = sys.argv[1]
open(p, "w").write("old\n")
r = os.open(p, os.O_RDONLY)
open(p, "w").write("NEW-VERSION\n")
os.read(r, 100)
os.close(r)
EOF
rd=$(jrec "$MNT" read pt/h.txt | tail -n 1)
if [ "$PT" -eq 1 ]; then
	assert_contains "a reader open across a write: its record says the file changed while open" \
		"changed while open" "$rd"
else
	assert_eq "a reader open across a write: its record names the version read" \
		"$(hash_of "$MNT/pt/h.txt")" "$(field hash "$rd")"
fi

# A writer truncates its file (journaled as a truncate) and writes back the
# very bytes it opened: its release records them, though they are what the
# file held at the open.
python3 - "$MNT/pt/i.txt" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
old = os.pread(fd, 100, 0)
os.ftruncate(fd, 0)
os.pwrite(fd, old, 0)
os.close(fd)
EOF
assert_eq "truncate, then write back the bytes opened: the last record names them" \
	"$(hash_of "$MNT/pt/i.txt")" "$(field hash "$(jrec "$MNT" write pt/i.txt | tail -n 1)")"
step "  ...and verify passes" af verify "$MNT"

# ------------------------------------------------------------------ loose objects
# A read through the backing file marks the inode's atime stale
# (fs/fuse/passthrough.c, fuse_file_accessed), so every open and fstat(2)
# after it costs a GETATTR.  git opens each loose object up to three times a
# command: the private .git's small loose objects are read through the page
# cache instead.  Counted with the kernel's fuse_request_send tracepoint in
# a trace instance of this script's own (root, tracefs), for this mount's
# connection and the reading process only, after a first read and stat.
INSTANCE=/sys/kernel/tracing/instances/agentfs-test-$$
if [ "$PT" -eq 1 ] && mkdir "$INSTANCE" 2>/dev/null; then
	at_exit "rmdir $(printf %q "$INSTANCE") 2>/dev/null"
	EV=$INSTANCE/events/fuse/fuse_request_send
	git -C "$MNT" rev-parse HEAD >/dev/null 2>&1 # the private .git is built
	printf 'a loose object\n' >"$MNT/pt/obj.txt"
	oid=$(git -C "$MNT" hash-object -w pt/obj.txt)
	obj=$MNT/.git/objects/${oid:0:2}/${oid:2}
	# Its attributes went stale with git's write: the first stat asks.
	cat "$obj" >/dev/null && stat "$obj" >/dev/null
	conn=$(mountpoint -d "$MNT" | cut -d: -f2)
	if [ -z "$conn" ]; then
		fail "a loose object's requests: the mount's connection" "mountpoint -d $MNT said nothing"
	elif [ -d "$EV" ] && echo "connection == $conn" >"$EV/filter" && echo 1 >"$EV/enable"; then
		echo 1 >"$INSTANCE/tracing_on"
		rpid=$(python3 - "$obj" <<'EOF'
import mmap, os, sys
print(os.getpid(), flush=True)
for _ in range(3): # as git does: open, fstat, map, close
    fd = os.open(sys.argv[1], os.O_RDONLY)
    size = os.fstat(fd).st_size
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
        m.read(size)
    os.close(fd)
EOF
		)
		echo 0 >"$INSTANCE/tracing_on"
		echo 0 >"$EV/enable"
		mine=$(grep -E -- "-$rpid +\[" "$INSTANCE/trace" | grep -o '(FUSE_[A-Z]*)' |
			sort | uniq -c | tr -s ' ' | tr '\n' ';')
		case $mine in
		*FUSE_OPEN*)
			case $mine in
			*GETATTR* | *"(FUSE_READ)"*)
				fail "a loose object opened and mapped 3 times: no GETATTR, no READ" "$mine" ;;
			*) pass "a loose object opened and mapped 3 times: no GETATTR, no READ ($mine)" ;;
			esac
			;;
		*) fail "a loose object opened 3 times: its requests are traced" "${mine:-none}" ;;
		esac
	else
		skip "loose objects' requests" "no fuse tracepoint in this kernel"
	fi
	assert_eq "  ...its bytes are git's" "a loose object" "$(git -C "$MNT" cat-file -p "$oid")"
	rmdir "$INSTANCE" 2>/dev/null
else
	skip "loose objects' requests" "needs passthrough and a trace instance (root, tracefs)"
fi

# A loose object the daemon's own threads replace in the workspace's git
# directory (the base-blob thread, a fault: libgit2 renames its new file
# over the name) is read as it is now, even when a reader of the old one
# stays open across the new one's first open and reads after it (its read
# may fill the cache with the old bytes again), and for an object too large
# to be stored at open.  Read with and without fstat(2): a GETATTR after a
# change drops the pages by itself, a bare read(2) does not.
raw4() { # FILE: its first 4 bytes in hex, read without fstat(2)
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(os.read(fd, 4).hex())' "$1"
}
printf 'one version\n' >"$MNT/pt/obj2.txt"
oid=$(git -C "$MNT" hash-object -w pt/obj2.txt)
rel=objects/${oid:0:2}/${oid:2}
cat "$MNT/.git/$rel" >/dev/null
exec 7<"$MNT/.git/$rel"
head -c "$(stat -c %s "$WS/git/$rel")" /dev/zero | tr '\0' x >"$WS/git/$rel.new"
mv -f "$WS/git/$rel.new" "$WS/git/$rel"
exec 8<"$MNT/.git/$rel"
head -c 4 <&7 >/dev/null
exec 7<&- 8<&-
assert_eq "a loose object replaced beside the mount under an open reader that read on: the new bytes" \
	78787878 "$(raw4 "$MNT/.git/$rel")"
assert_eq "  ...at the next open too" 78787878 "$(raw4 "$MNT/.git/$rel")"
assert_file_eq "  ...and all of them" "$WS/git/$rel" "$MNT/.git/$rel"
head -c 150000 /dev/urandom >"$MNT/pt/big.bin"
oid=$(git -C "$MNT" hash-object -w pt/big.bin)
rel=objects/${oid:0:2}/${oid:2}
cat "$MNT/.git/$rel" >/dev/null && stat "$MNT/.git/$rel" >/dev/null
head -c "$(stat -c %s "$WS/git/$rel")" /dev/zero | tr '\0' x >"$WS/git/$rel.new"
mv -f "$WS/git/$rel.new" "$WS/git/$rel"
assert_eq "a loose object of 150 kB replaced beside the mount: the new bytes" \
	78787878 "$(raw4 "$MNT/.git/$rel")"
assert_file_eq "  ...all of them" "$WS/git/$rel" "$MNT/.git/$rel"

# ------------------------------------------------------------------ evidence
step "verify passes" af verify "$MNT"
patch=$(af export "$MNT" 2>&1)
assert_contains "the export carries the new file" "+++ b/pt/new.txt" "$patch"
assert_contains "  ...and the overwritten one" "+++ b/pt/a.txt" "$patch"

done_testing
