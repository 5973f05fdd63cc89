#!/usr/bin/env bash
# resources.sh - the daemon's memory and file descriptors stay bounded:
#  - a 100,000-file tree (40,000 unprivileged or under a sanitizer) walked
#    repeatedly: VmRSS stays bounded because the inode table honours forget
#    (as root, drop_caches makes the kernel forget between walks), and the
#    daemon holds no fd per known inode;
#  - thousands of files open at once through the mount (more than the usual
#    1024 soft limit), and the fds go away when they are closed;
#  - eight workspaces of one repository mounted at once, each isolated;
#  - the private .git's build over 30,000 tracked files: what it adds to the
#    daemon's peak stays within 2.5 times the repository's index file, and
#    a stale 64 MiB file is hashed without being held whole;
#  - `agentfs status` of a changed 128 MiB file holds neither version;
#  - `agentfs export` of a 64 MiB binary file holds its patch's text only a
#    delta at a time, and --format=stat builds no binary payload.
#
#   bash resources.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

command -v python3 >/dev/null || {
	echo "1..0 # SKIP python3 is not installed"
	exit 0
}
# The big tree lives on a tmpfs when there is one (/dev/shm): creating and
# removing 100,000 files on the disk costs seconds, and on an ext4 without a
# journal every later create in the suite then skips past the recently
# deleted inodes (ext4's find_inode_bit).  The daemon's upper and journal stay
# under $T, on the disk.
make_scratch
REPO=$SCRATCH/repo
MNT=$T/mnt
# 100,000 files where the memory is measured (root: drop_caches makes the
# kernel forget between walks); elsewhere the walks check fds and a second
# walk's cost, which 40,000 show as well.
if [ "$(id -u)" -eq 0 ] && [[ ${AGENTFS_SANITIZE:-none} != *address* ]] &&
	[[ ${AGENTFS_SANITIZE:-none} != *thread* ]]; then
	NFILES=${RESOURCES_NFILES:-100000}
else
	NFILES=${RESOURCES_NFILES:-40000}
fi
make_test_repo "$REPO" || bail "cannot create the test repository"
python3 - "$REPO/tree" "$NFILES" <<'PY' || bail "cannot create the big tree"
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
for d in range((n + per - 1) // per):
    dp = os.path.join(root, "d%03d" % d)
    os.makedirs(dp)
    for f in range(min(per, n - d * per)):
        os.close(os.open(os.path.join(dp, "f%04d.c" % f), os.O_CREAT | os.O_WRONLY, 0o644))
PY
snapshot "$REPO/src" "$T/lower.before"

mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi
PID=$(daemon_pid_of "$MNT") || bail "no daemon pid"
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# fds other than pipes: libfuse keeps a splice pipe pair per worker thread,
# bounded by its thread count, not by what the daemon was asked to do.
nfds() { for f in /proc/"$1"/fd/*; do readlink "$f"; done | grep -vc '^pipe:'; }
fd_targets() { for f in /proc/"$1"/fd/*; do readlink "$f"; done | sort | uniq -c | sort -rn | head -n 12; }
forget_all() {
	# The kernel forgets inodes it no longer caches: FORGET requests reach
	# the daemon.  Only root can ask for that.
	[ "$(id -u)" -eq 0 ] && sync && echo 2 >/proc/sys/vm/drop_caches
	sleep 0.5
}

# ------------------------------------------------------------------ 100k files walked repeatedly
# Walk the two halves of the tree in turn (A, B, A, B), a stat per file.  If
# the inode table honours forget, the nodes of A are freed once the kernel
# forgets them and B reuses their memory: VmRSS after the fourth walk is
# about what one half cost, not what both together would.
walk() { # walk HALF: stat every file of one half of the tree; prints the count
	local dirs
	if [ "$1" == A ]; then dirs=$(seq -f "$MNT/tree/d%03g" 0 $((NFILES / 2000 - 1))); else
		dirs=$(seq -f "$MNT/tree/d%03g" $((NFILES / 2000)) $((NFILES / 1000 - 1)))
	fi
	# shellcheck disable=SC2086
	t find $dirs -type f -printf '%s\n' | wc -l # -printf %s: a stat (lookup) per file
}
fds0=$(nfds "$PID")
# What may stay open besides: the descriptors of directories the daemon keeps
# between requests, at most DIRCACHE_SLOTS (fs/internal.h: 128) per layer.
fds_kept=$((16 + 2 * 128))
base=$(rss_kb "$PID")
rss=()
for half in A B A B; do
	n=$(walk $half)
	[ "$n" -eq $((NFILES / 2)) ] || fail "walk of half $half finds every file" "found $n of $((NFILES / 2))"
	rss+=("$(rss_kb "$PID")")
	forget_all
done
pass "four walks of $((NFILES / 2)) files each (VmRSS: $base kB, then ${rss[*]} kB)"
fds1=$(nfds "$PID")
if [ "$fds1" -le $((fds0 + fds_kept)) ]; then
	pass "the daemon holds no fd per known inode ($fds0 fds before the walks, $fds1 after)"
else
	fail "the daemon holds no fd per known inode" "$fds0 fds before the walks, $fds1 after" \
		"$(fd_targets "$PID")"
fi
half_cost=$((rss[0] - base))
if [[ ${AGENTFS_SANITIZE:-none} == *address* || ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	skip "forgotten nodes are freed and reused" "sanitizer build: freed memory is quarantined"
	skip "walking the same files again costs no more memory" "sanitizer build: freed memory is quarantined"
elif [ "$(id -u)" -eq 0 ]; then
	if [ $((rss[3] - rss[0])) -le $((half_cost / 2 + 2048)) ]; then
		pass "forgotten nodes are freed and reused: VmRSS grew $((rss[3] - rss[0])) kB after the first half (which cost $half_cost kB)"
	else
		fail "forgotten nodes are freed and reused" \
			"the first half cost $half_cost kB; after both halves twice VmRSS grew $((rss[3] - rss[0])) kB more" \
			"VmRSS: $base kB, then ${rss[*]} kB"
	fi
else
	skip "forgotten nodes are freed and reused" "drop_caches needs root"
fi
if [[ ${AGENTFS_SANITIZE:-none} == *address* || ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	: # skipped above
elif [ $((rss[3] - rss[1])) -le 4096 ]; then
	pass "walking the same files again costs no more memory ($((rss[3] - rss[1])) kB)"
else
	fail "walking the same files again costs no more memory" "VmRSS: $base kB, then ${rss[*]} kB"
fi

# ------------------------------------------------------------------ an idle daemon sleeps
# After a request the reader may keep looking for the next one for a few
# tens of microseconds before it sleeps (fs/loop.c, receive()); once the
# requests stop, the daemon's threads use no CPU.  Ticks of user + system
# time of all its threads over 2 s, right after a burst of lookups: a reader
# that never went to sleep would use ~200 (one CPU).
cpu_ticks() { local t s sum=0; for t in /proc/"$1"/task/*/stat; do
	s=$(sed 's/.*) //' "$t") && set -- $s && sum=$((sum + ${12} + ${13})); done; echo $sum; }
# over_2s COUNTER: how much COUNTER of the daemon grows over 2 s.
over_2s() { local a; a=$("$1" "$PID"); sleep 2; echo $(($("$1" "$PID") - a)); }
t find "$MNT/tree/d000" -type f -printf '%s\n' >/dev/null
ticks=$(over_2s cpu_ticks)
if [ "$ticks" -le 10 ]; then
	pass "an idle daemon sleeps ($ticks ticks of CPU in 2 s after a burst of lookups)"
else
	fail "an idle daemon sleeps" "$ticks ticks of CPU in 2 s (at most 10)"
fi

# ------------------------------------------------------------------ an idle daemon wakes no thread
# Nor does it wake up to find nothing to do: context switches of all its
# threads over 2 s of rest, once the burst's journal records are written.
# The journal's writer used to take an empty batch every 100 ms (~20 here);
# a few are allowed for what the kernel may still send (FORGETs of inodes
# it evicts).
# ThreadSanitizer's runtime has a thread of its own that wakes periodically.
switches() { local t sum=0 n; for t in /proc/"$1"/task/*/status; do
	n=$(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$t") && sum=$((sum + n)); done
	echo $sum; }
if [[ ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	skip "an idle daemon wakes no thread" "ThreadSanitizer's background thread"
else
	sleep 1
	woke=$(over_2s switches)
	if [ "$woke" -le 5 ]; then
		pass "an idle daemon wakes no thread ($woke context switches in 2 s)"
	else
		fail "an idle daemon wakes no thread" "$woke context switches in 2 s (at most 5)"
	fi
fi

# ------------------------------------------------------------------ thousands of open files
run t python3 - "$MNT/tree" "$PID" <<'PY'
import os, resource, sys
root, pid = sys.argv[1], sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(5000, hard - 100)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds, err = [], None
try:
    for i in range(want):
        fds.append(os.open(os.path.join(root, "d%03d" % (i // 1000), "f%04d.c" % (i % 1000)),
                           os.O_RDONLY))
except OSError as e:
    err = e
held = len(os.listdir("/proc/%s/fd" % pid))
for fd in fds:
    os.close(fd)
print("opened %d of %d%s; daemon fds while open: %d" % (len(fds), want,
      " (%s)" % err if err else "", held))
PY
assert_contains "thousands of files open at once through the mount" "opened 5000 of 5000;" "$OUT"
diag "$OUT"
sleep 1
fds2=$(nfds "$PID")
if [ "$fds2" -le $((fds0 + fds_kept)) ]; then
	pass "the daemon's fds go back down when they are closed ($fds2)"
else
	fail "the daemon's fds go back down when they are closed" "$fds0 before, $fds2 after" \
		"$(fd_targets "$PID")"
fi
run t python3 - "$MNT/tree" <<'PY'
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds = []
try:
    for i in range(3000):
        fds.append(os.open(os.path.join(sys.argv[1], "d001", "w%04d" % i),
                           os.O_CREAT | os.O_WRONLY, 0o644))
    for fd in fds:
        os.write(fd, b"x")
finally:
    for fd in fds:
        os.close(fd)
print(len(fds))
PY
assert_eq "3000 files created and held open for writing at once" 3000 "$OUT"
step "unmount" t fusermount3 -u "$MNT"

# ------------------------------------------------------------------ eight workspaces
mnts=()
for i in 1 2 3 4 5 6 7 8; do
	mount_ws "$REPO" "$T/ws$i" --name "ws$i"
	if [ "$RC" -ne 0 ]; then
		fail "mount workspace ws$i" "$OUT"
		continue
	fi
	mnts+=("$T/ws$i")
done
assert_eq "eight workspaces of one repository mounted at once" 8 "${#mnts[@]}"
pids=()
for i in 1 2 3 4 5 6 7 8; do
	(printf 'workspace %d\n' "$i" >"$T/ws$i/README.md" && printf '%d\n' "$i" >"$T/ws$i/only-$i" &&
		rm "$T/ws$i/src/util.h" && mkdir "$T/ws$i/dir-$i") &
	pids+=($!)
done
wait "${pids[@]}" # not a bare wait: the watchdog is our child too
bad=()
for i in 1 2 3 4 5 6 7 8; do
	[ "$(cat "$T/ws$i/README.md" 2>&1)" == "workspace $i" ] || bad+=("ws$i: README.md is $(cat "$T/ws$i/README.md" 2>&1 | head -n 1)")
	[ -e "$T/ws$i/src/util.h" ] && bad+=("ws$i: src/util.h is back")
	others=$(find "$T/ws$i" -mindepth 1 -maxdepth 1 \( -name 'only-*' -o -name 'dir-*' \) \
		! -name "only-$i" ! -name "dir-$i" -printf '%f ')
	[ -z "$others" ] || bad+=("ws$i sees: $others")
	[ -e "$STATE/workspaces/ws$i/upper/only-$i" ] || bad+=("ws$i: not in its own upper")
done
if [ ${#bad[@]} -eq 0 ]; then pass "each workspace sees only its own changes"; else
	fail "each workspace sees only its own changes" "${bad[@]}"
fi
assert_eq "the lower still has its README and util.h" "$(git -C "$REPO" show HEAD:README.md) yes" \
	"$(cat "$REPO/README.md") $([ -e "$REPO/src/util.h" ] && echo yes)"
for i in 1 8; do
	assert_not_contains "ws$i's journal has nothing of the others" "only-$((9 - i))" \
		"$(cat "$STATE/workspaces/ws$i/journal.jsonl")"
done
for m in "${mnts[@]}"; do
	t fusermount3 -u "$m" || fail "unmount $m"
done
pass "unmount the eight workspaces"

# ------------------------------------------------------------------ the private .git's build
# 30,000 tracked files in 2,000 directories: the build of the workspace's
# private .git holds at most the repository's index and the one it writes,
# not HEAD's tree flattened beside them nor a cache of every tree it read
# (cli/gitpriv.c, build).  What it adds to the daemon's peak (VmHWM of the
# mount that builds, less that of the same workspace mounted again, which
# builds nothing) stays under 2.5 times the size of the repository's index
# file: 1.6-2.1 times here, 2.8 times with the trees cached, 7.7 times with
# three flattened copies.  Sanitizers change what memory costs: not there.
# build_peaks REPO MNT WHAT: mount a new workspace of REPO at MNT (named for
# MNT), then the same again; hwm gets each daemon's VmHWM, read once its log
# says the private .git is ready: built ("N entries"), then resumed
# (cli/gitpriv.c).
build_peaks() {
	local repo=$1 mnt=$2 what=$3 pass_ want bpid ready log
	log=$STATE/workspaces/$(basename "$mnt")/daemon.log
	hwm=()
	for pass_ in built resumed; do
		want='private .git: [0-9]* entries'
		[ "$pass_" = resumed ] && want='private .git: resumed'
		mount_ws "$repo" "$mnt" || bail "mount of $what ($pass_): $OUT"
		bpid=$(daemon_pid_of "$mnt")
		ready=no
		for _ in $(seq 1 600); do
			grep -q "$want" "$log" 2>/dev/null && ready=yes && break
			sleep 0.1
		done
		[ "$ready" = yes ] || bail "the private .git of $what was not $pass_ within 60 s"
		sleep 0.2
		hwm+=("$(awk '/^VmHWM:/ { print $2 }' "/proc/$bpid/status")")
		step "unmount $what ($pass_)" af unmount "$mnt"
	done
}
if [[ ${AGENTFS_SANITIZE:-none} == *address* || ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	skip "the private .git's build holds two flattened trees at most" "under a sanitizer"
else
	BREPO=$SCRATCH/brepo BMNT=$T/bmnt
	mkdir -p "$BREPO" && git -C "$BREPO" init -q -b main && python3 - "$BREPO" <<'PY' &&
import os, sys
for a in range(40):
    for b in range(50):
        d = os.path.join(sys.argv[1], "src", "m%02d" % a, "sub%02d" % b)
        os.makedirs(d)
        for f in range(15):
            with open(os.path.join(d, "file_%02d.c" % f), "w") as fh:
                fh.write("%d %d %d\n" % (a, b, f))
PY
		git -C "$BREPO" add -A && git -C "$BREPO" -c user.name=t -c user.email=t@t \
		commit -qm tree || bail "cannot create the repository of 30,000 files"
	build_peaks "$BREPO" "$BMNT" "the 30,000 files"
	ikb=$(($(stat -c %s "$BREPO/.git/index") / 1024))
	added=$((hwm[0] - hwm[1]))
	if [ "$added" -le $((ikb * 5 / 2)) ]; then
		pass "the private .git's build adds $added kB to the peak (index file: $ikb kB)"
	else
		fail "the private .git's build holds two flattened trees at most" \
			"it adds $added kB to the peak (VmHWM ${hwm[0]} kB, ${hwm[1]} kB mounted again); the index file is $ikb kB"
	fi
fi
# A stale index entry of a 64 MiB file (touched: its bytes are the index's):
# the build hashes the file a block at a time (hash_streamed in
# cli/gitpriv.c), so what it adds to the peak is far below the file's size
# (64 MiB more when read whole).
if [[ ${AGENTFS_SANITIZE:-none} == *address* || ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	skip "the private .git's build hashes a large file a block at a time" "under a sanitizer"
else
	HREPO=$T/hrepo HMNT=$T/hmnt
	mkdir -p "$HREPO" && git -C "$HREPO" init -q -b main &&
		head -c 64M /dev/zero >"$HREPO/large.bin" && printf 'small\n' >"$HREPO/small.txt" &&
		git -C "$HREPO" add -A && git -C "$HREPO" -c user.name=t -c user.email=t@t \
		-c core.bigFileThreshold=1m commit -qm large && touch -d 2001-01-01 "$HREPO/large.bin" ||
		bail "cannot create the repository of a 64 MiB file"
	build_peaks "$HREPO" "$HMNT" "the 64 MiB file"
	added=$((hwm[0] - hwm[1]))
	if grep -q '(1 read and hashed' "$STATE/workspaces/hmnt/daemon.log" &&
		[ "$added" -le $((16 * 1024)) ]; then
		pass "the build hashes a stale 64 MiB file adding $added kB to the peak"
	else
		fail "the private .git's build hashes a large file a block at a time" \
			"it adds $added kB to the peak (VmHWM ${hwm[0]} kB, ${hwm[1]} kB mounted again); $(grep 'private .git: [0-9]* entries' "$STATE/workspaces/hmnt/daemon.log")"
	fi
fi
assert_unchanged "the lower was never written" "$REPO/src" "$T/lower.before"
# ------------------------------------------------------------------ status of a large file
# agentfs status names a change and its kind: it holds neither version of a
# changed file in memory (PATCH_NAMES_ONLY), however large.  Its peak, from
# getrusage of the child; not under a sanitizer, whose shadow memory counts.
if [[ ${AGENTFS_SANITIZE:-none} == *address* || ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	skip "status of a 128 MiB change stays small" "a sanitizer's memory counts"
else
	LREPO=$T/lrepo
	LMNT=$T/lmnt
	mkdir -p "$LREPO" && git -C "$LREPO" init -q &&
		head -c 128M /dev/zero >"$LREPO/large.bin" && git -C "$LREPO" add large.bin &&
		git -C "$LREPO" -c user.name=t -c user.email=t@t -c core.bigFileThreshold=1m \
			commit -qm large || bail "cannot create the repository of a 128 MiB file"
	mount_ws "$LREPO" "$LMNT" || bail "mount of the 128 MiB file: $OUT"
	step "append to the 128 MiB file" sh -c "printf x >>'$LMNT/large.bin'"
	run t python3 - "$AGENTFS" "$STATE" "$LMNT" <<'PY'
import resource, subprocess, sys
agentfs, state, mnt = sys.argv[1:4]
out = subprocess.run([agentfs, "status", "--state-dir", state, mnt], capture_output=True,
                     text=True).stdout.strip()
print(out, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
PY
	peak=${OUT##* }
	if [[ ${OUT% *} == "M large.bin" && $peak =~ ^[0-9]+$ && $peak -lt 64 ]]; then
		pass "status of a 128 MiB change peaks at $peak MiB"
	else
		fail "status of a 128 MiB change stays under 64 MiB" "got: $OUT (status, peak MiB)"
	fi
	step "unmount the 128 MiB file" af unmount "$LMNT"
fi
# ------------------------------------------------------------------ export of a large binary file
# A 64 MiB file of random bytes, added: its patch is a GIT binary patch, the
# whole file deflated and base85-encoded (~85 MiB of text).  export writes it
# delta by delta (patch_write), never whole; --format=stat builds no binary
# payload (PATCH_NO_BINARY_DATA).  Bounds on each peak, from getrusage of the
# child as above: the file is held in the in-memory object store and, while
# its patch is printed, once more as read, deflated and encoded by libgit2
# (~4.4x the file); holding the text whole as well, or building a stat's
# payload, goes past them.
if [[ ${AGENTFS_SANITIZE:-none} == *address* || ${AGENTFS_SANITIZE:-none} == *thread* ]]; then
	skip "export of a 64 MiB binary file stays within 5x its size" "a sanitizer's memory counts"
else
	XREPO=$T/xrepo
	XMNT=$T/xmnt
	make_test_repo "$XREPO" || bail "cannot create the repository for the binary export"
	mount_ws "$XREPO" "$XMNT" || bail "mount for the binary export: $OUT"
	step "write a 64 MiB random file" sh -c "head -c 64M /dev/urandom >'$XMNT/random.bin'"
	peak_of() {
		python3 - "$@" <<'PY'
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, r.stderr.strip())
PY
	}
	OUT=$(peak_of "$AGENTFS" export --state-dir "$STATE" -o "$T/x.patch" "$XMNT")
	read -r xrc xpeak _ <<<"$OUT"
	if [[ $xrc == 0 && $xpeak =~ ^[0-9]+$ && $xpeak -lt 320 ]]; then
		pass "export of a 64 MiB binary file peaks at $xpeak MiB"
	else
		fail "export of a 64 MiB binary file stays under 320 MiB" "got: $OUT (status, peak MiB, stderr)"
	fi
	XCLONE=$T/xclone
	git clone -q "$XREPO" "$XCLONE" &&
		git -C "$XCLONE" apply --index "$T/x.patch" 2>"$T/xapply.err" &&
		cmp -s "$XCLONE/random.bin" "$XMNT/random.bin"
	assert_eq "the exported binary patch applies and gives the same bytes" 0 "$?"
	OUT=$(peak_of "$AGENTFS" export --state-dir "$STATE" --format=stat "$XMNT")
	read -r xrc xpeak _ <<<"$OUT"
	if [[ $xrc == 0 && $xpeak =~ ^[0-9]+$ && $xpeak -lt 192 ]]; then
		pass "export --format=stat of a 64 MiB binary file peaks at $xpeak MiB"
	else
		fail "export --format=stat of a 64 MiB binary file stays under 192 MiB" \
			"got: $OUT (status, peak MiB, stderr)"
	fi
	step "unmount the binary export's workspace" af unmount "$XMNT"
fi

done_testing
