#!/usr/bin/env bash
# concurrency.sh - many processes at once through one mount: parallel make
# builds, two writers on one file, listings during create/delete storms,
# rename storms, and many readers of one lower file while it is copied up
# (none may see a torn copy).  The lower is never written.
#
#   bash concurrency.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

command -v python3 >/dev/null || {
	echo "1..0 # SKIP python3 is not installed"
	exit 0
}
REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
# Random bytes do not deflate: git stores them as they are (looseCompression=0)
# instead of spending seconds trying.
(
	cd "$REPO" && mkdir -p proj/src storm ren && head -c 32M /dev/urandom >big.bin &&
		for i in $(seq 1 40); do
			printf 'int f%d(int x) { return x + %d; }\n' "$i" "$i" >"proj/src/f$i.c"
		done &&
		{
			printf '#include <stdio.h>\n'
			for i in $(seq 1 40); do printf 'int f%d(int);\n' "$i"; done
			printf 'int main(void) { int s = 0;\n'
			for i in $(seq 1 40); do printf 's += f%d(1);\n' "$i"; done
			printf 'printf("%%d\\n", s); return 0; }\n'
		} >proj/src/main.c &&
		cat >proj/Makefile <<'EOF'
SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:src/%.c=build/%.o)
build/app: $(OBJS)
	$(CC) -o $@ $(OBJS)
build/%.o: src/%.c
	@mkdir -p build
	$(CC) -O0 -c -o $@ $<
clean:
	rm -rf build
EOF
	for i in $(seq 1 300); do printf 'r%d\n' "$i" >"ren/r$i"; done && mkdir ren/xdir &&
		for i in $(seq 1 20); do printf 'x%d\n' "$i" >"ren/xdir/x$i"; done &&
		git -c core.looseCompression=0 add -A && git commit -q -m "concurrency fixtures" &&
		head -c 128M <(yes 0123456789abcdef) >huge.bin # untracked: git never reads it
) || bail "cannot add the fixtures"
snapshot "$REPO" "$T/lower.before"

# A copy-up of 1 MiB or more keeps its finished copy in work/ 300 ms before it
# is taken (outside ns_lock; fs/internal.h): the checks that a lookup and a
# read are answered during a copy (during_copy, below) then hold however fast
# the disk copies or however slow a loaded machine answers them.
export AGENTFS_TEST_COPYUP_DELAY_MS=300
mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi

# alive_after SECTION: the daemon must survive each section; if it died, say so
# and mount the workspace again so the next sections still test something.
alive_after() {
	local pid probe
	pid=$(daemon_pid_of "$MNT")
	# a name never looked up: the kernel cannot answer it from its caches
	probe=$(t stat "$MNT/never-looked-up-$RANDOM$RANDOM" 2>&1)
	if _is_our_daemon "$pid" && [[ $probe == *"No such file or directory"* ]]; then
		pass "the daemon survived: $1"
		return 0
	fi
	fail "the daemon survived: $1" "$probe" "$(tail -n 5 "$STATE"/workspaces/mnt/daemon.log)"
	timeout 10 fusermount3 -uz "$MNT" 2>/dev/null
	_stop_daemons
	mount_ws "$REPO" "$MNT" || bail "cannot mount again: $OUT"
}

# ------------------------------------------------------------------ make -j
if command -v make >/dev/null && command -v cc >/dev/null; then
	# What build/app prints: the sum of f1(1) .. f40(1), each 1 + i.
	want=$((40 + 40 * 41 / 2))
	for round in 1 2; do
		step "make -j8 in the mount (round $round)" bash -ec \
			"make -s -C '$MNT/proj' clean && make -s -C '$MNT/proj' -j8 build/app"
	done
	assert_eq "  ...the program it built runs" "$want" "$(t "$MNT/proj/build/app" 2>&1)"
	step "make -j8 of the small C project, twice in parallel trees" bash -ec "
		cp -a '$MNT/proj' '$MNT/proj2'
		make -s -C '$MNT/proj' clean; make -s -C '$MNT/proj2' clean
		make -s -C '$MNT/proj' -j4 build/app & p=\$!
		make -s -C '$MNT/proj2' -j4 build/app; wait \$p"
	assert_eq "  ...both programs run" "$want $want" \
		"$(t "$MNT/proj/build/app" 2>&1) $(t "$MNT/proj2/build/app" 2>&1)"
else
	skip "make -j" "make or cc is not installed"
fi
alive_after "parallel builds"

# ------------------------------------------------------------------ two writers, one file
# Two processes write interleaved 4 KiB blocks of one lower file (both open it
# for writing, racing for the copy-up) and of one new file.
run t python3 - "$MNT" <<'PY'
import os, sys
m = sys.argv[1]
BS, N = 4096, 256
out = []
for name in ("README.md", "two-writers.bin"):
    p = os.path.join(m, name)
    pids = []
    for w in (0, 1):
        pid = os.fork()
        if pid == 0:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            for i in range(w, N, 2):
                os.pwrite(fd, bytes([65 + w]) * BS, i * BS)
            os.close(fd)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    data = open(p, "rb").read()
    want = b"".join(bytes([65 + (i % 2)]) * BS for i in range(N))
    out.append("%s: %s" % (name, "OK" if data == want else "MISMATCH (%d bytes)" % len(data)))
print("\n".join(out))
PY
assert_eq "two writers on one file: every block of each lands" \
	"README.md: OK
two-writers.bin: OK" "$OUT"
alive_after "two writers on one file"

# ------------------------------------------------------------------ readdir during create/delete storms
run t python3 - "$MNT/storm" <<'PY'
import os, sys, time
d = sys.argv[1]
names = {"s%03d" % i for i in range(200)}
stop = time.time() + 3
kids = []
for w in range(3):
    pid = os.fork()
    if pid == 0:
        mine = sorted(names)[w::3]
        while time.time() < stop:
            for n in mine:
                try:
                    os.close(os.open(os.path.join(d, n), os.O_CREAT | os.O_WRONLY, 0o644))
                except OSError:
                    os._exit(3)
            for n in mine:
                try:
                    os.unlink(os.path.join(d, n))
                except OSError:
                    os._exit(4)
        os._exit(0)
    kids.append(pid)
bad, lists = [], 0
while time.time() < stop:
    try:
        l = os.listdir(d)
    except OSError as e:
        bad.append("listdir: %s" % e)
        break
    lists += 1
    if len(l) != len(set(l)):
        bad.append("a name listed twice")
    if set(l) - names:
        bad.append("unknown names: %s" % sorted(set(l) - names)[:3])
    for e in os.scandir(d):
        try:
            e.stat(follow_symlinks=False)
        except FileNotFoundError:
            pass  # deleted between readdir and stat: fine
        except OSError as ex:
            bad.append("stat: %s" % ex)
for pid in kids:
    _, st = os.waitpid(pid, 0)
    if st:
        bad.append("a creator/deleter failed (status %d)" % st)
final = os.listdir(d)
if final:
    bad.append("left over: %s" % final[:5])
print("\n".join(sorted(set(bad))[:10]) or "OK %s" % ("listed" if lists > 5 else "few lists"))
PY
assert_eq "readdir during create/delete storms: no duplicates, no strangers, no errors" \
	"OK listed" "$OUT"
alive_after "create/delete storms with listings"

# ------------------------------------------------------------------ rename storms
run t python3 - "$MNT/ren" <<'PY'
import os, sys
d = sys.argv[1]
for sub in ("a", "b", "c"):
    os.makedirs(os.path.join(d, sub), exist_ok=True)
kids = []
for w in range(4):
    pid = os.fork()
    if pid == 0:
        mine = ["r%d" % i for i in range(1 + w, 301, 4)]
        where = {n: "" for n in mine}
        try:
            for rnd in range(6):
                for n in mine:
                    nxt = ["", "a", "b", "c"][(rnd + 1 + hash(n) % 3) % 4]
                    if nxt == where[n]:
                        continue
                    os.rename(os.path.join(d, where[n], n), os.path.join(d, nxt, n))
                    where[n] = nxt
            # and a lower directory, back and forth
            if w == 0:
                for i in range(50):
                    os.rename(os.path.join(d, "xdir"), os.path.join(d, "xdir2"))
                    os.rename(os.path.join(d, "xdir2"), os.path.join(d, "xdir"))
        except OSError as e:
            print("worker %d: %s" % (w, e))
            os._exit(1)
        os._exit(0)
    kids.append(pid)
bad = []
for pid in kids:
    if os.waitpid(pid, 0)[1]:
        bad.append("a worker failed")
seen = {}
for dp, dns, fns in os.walk(d):
    for f in fns:
        seen.setdefault(f, []).append(dp)
        if open(os.path.join(dp, f)).read() != f + "\n":
            bad.append("%s/%s: wrong content" % (dp, f))
for n in ["r%d" % i for i in range(1, 301)] + ["x%d" % i for i in range(1, 21)]:
    if len(seen.get(n, [])) != 1:
        bad.append("%s found %d times" % (n, len(seen.get(n, []))))
print("\n".join(bad[:10]) or "OK")
PY
assert_eq "rename storms: every file exists exactly once with its content" OK "$OUT"
alive_after "rename storms"

# ------------------------------------------------------------------ saves while others read
# An editor's save (write a temporary file, rename it over the file) while
# other processes open and stat the file by name: on a native file system the
# name always holds the old file or the new one.  The kernel may look the
# name up just before the rename and ask for the file after it: the daemon
# answers ESTALE for a file left without a name, and the kernel looks the
# name up again (do_filp_open, vfs_statx).
run t python3 - "$MNT/saves" <<'PY'
import os, sys, time
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
target, tmp = os.path.join(d, "target"), os.path.join(d, "target.tmp")
with open(target, "w") as f:
    f.write("0\n")
pid = os.fork()
if pid == 0:
    for i in range(1, 3001):
        with open(tmp, "w") as f:
            f.write("%d\n" % i)
        os.rename(tmp, target)
    os._exit(0)
bad, reads = {}, 0
while os.waitpid(pid, os.WNOHANG) == (0, 0):
    for op in ("open", "stat"):
        try:
            if op == "open":
                with open(target) as f:
                    if not f.read().endswith("\n"):
                        bad["torn read"] = bad.get("torn read", 0) + 1
            else:
                os.stat(target)
            reads += 1
        except OSError as e:
            k = "%s: %s" % (op, e.strerror)
            bad[k] = bad.get(k, 0) + 1
print(", ".join("%s x%d" % kv for kv in bad.items()) or "OK" if reads > 1000 else "only %d reads" % reads)
PY
assert_eq "saves (rename over the file) while others open and stat it: never ENOENT" OK "$OUT"
alive_after "saves while others read"

# ------------------------------------------------------------------ readers during a copy-up
# Eight readers hash the 32 MiB lower file over and over while a writer opens
# it for appending (the copy-up): each read sees the lower bytes or the lower
# bytes plus the append, never a torn or short copy.
run t python3 - "$MNT/big.bin" "$REPO/big.bin" <<'PY'
import hashlib, os, sys, time
view, lower = sys.argv[1], sys.argv[2]
orig = open(lower, "rb").read()
ok = {hashlib.sha256(orig).hexdigest(), hashlib.sha256(orig + b"appended").hexdigest()}
r, w = os.pipe()
kids = []
for k in range(8):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        bad = 0
        stop = time.time() + 2
        n = 0
        what = b""
        while time.time() < stop:
            with open(view, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() not in ok:
                bad += 1
                diff = next((i for i in range(0, min(len(data), len(orig)), 4096)
                             if data[i:i + 4096] != orig[i:i + 4096]), None)
                what = b"%d-bytes-first-diff-block-at-%s" % (len(data), str(diff).encode())
            n += 1
        os.write(w, b"%d %d %s\n" % (bad, n, what or b"-"))
        os._exit(0)
    kids.append(pid)
os.close(w)
time.sleep(0.3)
fd = os.open(view, os.O_WRONLY | os.O_APPEND)
os.write(fd, b"appended")
os.close(fd)
for pid in kids:
    os.waitpid(pid, 0)
res = os.read(r, 4096).decode().split()
bad = sum(int(x) for x in res[0::3])
reads = sum(int(x) for x in res[1::3])
what = [x for x in res[2::3] if x != "-"]
print("OK" if bad == 0 and reads >= 8 else "torn reads: %d of %d (lower: %d bytes; %s)"
      % (bad, reads, len(orig), what[:3]))
PY
assert_eq "readers during a copy-up never see a torn file" OK "$OUT"
{ cat "$REPO/big.bin" && printf appended; } >"$T/big.want"
assert_file_eq "  ...and afterwards the view holds the appended copy" "$T/big.want" "$MNT/big.bin"
alive_after "readers during a copy-up"

# ------------------------------------------------------------------ requests during a large copy-up
# during_copy ACTION VIEW [LOWER]: in one thread ACTION copies VIEW (a large
# lower file) up: "append" opens it for appending, "reopen" grows LOWER by
# 128 MiB while VIEW is open and then opens /proc/self/fd/N for appending,
# "rename" renames it to VIEW.moved, "chmod" makes it mode 600, "setxattr"
# gives it user.agentfs-test, "exchange" swaps it with the file OTHER
# (renameat2(2), RENAME_EXCHANGE; OTHER in LOWER's place).  Meanwhile a lookup of a new name in
# proj/ and a read of proj/Makefile must be answered while the copy is still
# in work/ (it is renamed into the upper before ACTION returns).  Prints OK.
cat >"$T/during_copy.py" <<'PY'
import ctypes, glob, os, sys, threading, time
work, mnt, action, view = sys.argv[1:5]
done = []
def act():
    if action == "append":
        os.close(os.open(view, os.O_WRONLY | os.O_APPEND))
    elif action == "reopen":
        os.close(os.open("/proc/self/fd/%d" % held, os.O_WRONLY | os.O_APPEND))
    elif action == "chmod":
        os.chmod(view, 0o600)
    elif action == "setxattr":
        os.setxattr(view, "user.agentfs-test", b"1")
    elif action == "exchange":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(-100, sys.argv[5].encode(), -100, view.encode(), 2) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
    else:
        os.rename(view, view + ".moved")
    done.append(True)
if action == "reopen":
    held = os.open(view, os.O_RDONLY)  # looked up now: its size seen
    with open(sys.argv[5], "ab") as f:  # the person's 128 MiB
        for _ in range(128):
            f.write(b"0123456789abcdef" * 65536)
    time.sleep(0.5)  # the lower's watch has its say
else:
    os.stat(view)  # looked up: its size seen
t = threading.Thread(target=act)
t.start()
stop = time.time() + 60
while not glob.glob(work + "/copyup.*") and not done and time.time() < stop:
    time.sleep(0.0005)
copying = bool(glob.glob(work + "/copyup.*"))
try:
    os.stat("%s/proj/never-looked-up-%s-%d" % (mnt, action, os.getpid()))
except FileNotFoundError:
    pass
with open(mnt + "/proj/Makefile", "rb") as f:
    f.read()
still = bool(glob.glob(work + "/copyup.*"))
t.join()
print("OK" if copying and still and done else
      "copy seen %s, still copying after the answers %s" % (copying, still))
PY
during_copy() {
	run t python3 "$T/during_copy.py" "$STATE/workspaces/mnt/work" "$MNT" "$@"
}

# The copy-up of a large file is answered by a worker of its own (fs/loop.c:
# an open for writing of a file seen larger than LOOP_INLINE_IO), and its
# bytes are copied before ns_lock is taken (copyup_prepare).
during_copy append "$MNT/huge.bin"
assert_eq "a lookup and a read during a 128 MiB copy-up are answered before it ends" OK "$OUT"
alive_after "requests during a large copy-up"

# The person grows a lower file the agent holds open; an open for writing
# through /proc/self/fd sends no lookup, so the daemon's size of the file is
# the one before (struct node, size_seen) and the reader takes the open
# itself.  It finds the file large: the reader role passes on
# (fs_loop_step_aside) and the bytes are copied outside ns_lock.
assert_unchanged "the lower was not written before the person grows grown.bin" "$REPO" \
	"$T/lower.before"
printf 'small\n' >"$REPO/grown.bin"
during_copy reopen "$MNT/grown.bin" "$REPO/grown.bin"
assert_eq "an open through /proc/self/fd of a file grown to 128 MiB: answered beside others" OK \
	"$OUT"
alive_after "a copy-up of a file grown behind the daemon's back"

# The rename of a large lower file copies it up: its bytes too are copied
# outside ns_lock while another worker reads (the reader takes renames).
# The kernel holds the directory of a rename meanwhile (lock_rename): the
# lookup is in another one.
head -c 128M <(yes fedcba9876543210) >"$REPO/moveme.bin"
during_copy rename "$MNT/moveme.bin"
assert_eq "mv of a 128 MiB lower file: a lookup and a read answered while it copies" OK "$OUT"
{ head -c 128M <(yes fedcba9876543210); } | cmp -s - "$MNT/moveme.bin.moved" &&
	pass "  ...the moved file holds the bytes" ||
	fail "  ...the moved file holds the bytes" "$(t ls -l "$MNT"/moveme* 2>&1)"
alive_after "the rename of a large lower file"

# A chmod(2) or setxattr(2) of a large lower file copies it up as well, its
# bytes before ns_lock (the reader takes both requests).
for act in chmod setxattr; do
	head -c 128M <(yes fedcba9876543210) >"$REPO/$act.bin"
	during_copy $act "$MNT/$act.bin"
	assert_eq "$act of a 128 MiB lower file: a lookup and a read answered while it copies" OK "$OUT"
done
assert_eq "  ...the mode is set" 600 "$(stat -c %a "$MNT/chmod.bin")"
assert_eq "  ...the xattr is set" 1 "$(t python3 -c 'import os, sys
print(os.getxattr(sys.argv[1], "user.agentfs-test").decode())' "$MNT/setxattr.bin" 2>&1)"
alive_after "a chmod and a setxattr of large lower files"

# An exchange of a small file with a large lower one copies the latter up,
# its bytes before ns_lock too.
head -c 128M <(yes fedcba9876543210) >"$REPO/xchg.bin"
printf 'small\n' >"$MNT/xchg.small"
during_copy exchange "$MNT/xchg.bin" "$MNT/xchg.small"
assert_eq "an exchange with a 128 MiB lower file: a lookup and a read answered while it copies" \
	OK "$OUT"
assert_eq "  ...the files swapped" "small" "$(cat "$MNT/xchg.bin" 2>&1)"
{ head -c 128M <(yes fedcba9876543210); } | cmp -s - "$MNT/xchg.small" &&
	pass "  ...the small name holds the large file's bytes" ||
	fail "  ...the small name holds the large file's bytes" "$(t ls -l "$MNT"/xchg* 2>&1)"
alive_after "an exchange with a large lower file"
snapshot "$REPO" "$T/lower.before" # the person's changes are theirs

# Hard links while readers miss the page cache: op_link tells the kernel to
# drop the file's pages (notify_inval_inode), which waits for pages a READ in
# the queue holds locked; the loop must keep reading /dev/fuse meanwhile
# (fs/loop.c: a LINK is never answered by the reader).  A hang is the failure.
head -c 4M /dev/urandom >"$T/linkme.want"
t cp "$T/linkme.want" "$MNT/linkme.bin"
run t python3 - "$MNT/linkme.bin" "$T/linkme.want" <<'PY'
import os, sys
view, want = sys.argv[1], open(sys.argv[2], "rb").read()
kids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        bad = 0
        for _ in range(20):
            with open(view, "rb") as f:
                if f.read() != want:
                    bad += 1
        os._exit(1 if bad else 0)
    kids.append(pid)
# Link and unlink for as long as the readers read, so the two overlap
# whatever the machine's speed.
status, links = {}, 0
while len(status) < len(kids) or links < 20:
    os.link(view, view + ".lnk")
    os.unlink(view + ".lnk")
    links += 1
    for p in kids:
        if p not in status:
            done, st = os.waitpid(p, os.WNOHANG)
            if done:
                status[p] = st
ok = all(st == 0 for st in status.values())
print("OK" if ok else "a reader saw other bytes")
PY
assert_eq "hard links while the file is read: no hang, same bytes (rc $RC)" OK "$OUT"
alive_after "hard links during reads"

# One process asking one thing at a time is answered by one worker (fs/loop.c):
# no wake-up of a second thread per request.  libfuse's loop would spread the
# requests over its idle workers, which the kernel wakes in turn.  Counted in
# CPU time (clock ticks of user + system time per worker thread, proc(5)), not
# in context switches: the reader may find the next request without sleeping
# (receive() in fs/loop.c), so one worker answering everything may switch
# less than once per request.
pid=$(daemon_pid_of "$MNT")
worker_ticks() {
	local t f
	for t in /proc/"$pid"/task/*; do
		[ "$(cat "$t/comm" 2>/dev/null)" = agentfs-fuse ] || continue
		f=$(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
		# shellcheck disable=SC2086
		set -- $f
		echo "${t##*/} $((${12} + ${13}))"
	done
}
mkdir -p "$T/seq" && for i in $(seq 1 400); do : >"$T/seq/f$i"; done
t cp -r "$T/seq" "$MNT/seq"
worker_ticks >"$T/sw.before"
# Names never looked up: each stat is a LOOKUP the daemon answers, one after
# another from one process.  In rounds until the workers used 10 clock ticks
# (a few rounds under ASan, more on a fast machine): fewer say nothing.
for round in 1 2 3 4 5 6 7 8 9 10 11 12; do
	t python3 -c '
import os, sys
for i in range(1, 401):
    for name in ["f%d" % i] + ["nothing%s.%d.%d" % (sys.argv[2], i, k) for k in range(9)]:
        try:
            os.stat(os.path.join(sys.argv[1], name))
        except FileNotFoundError:
            pass
' "$MNT/seq" "$round"
	worker_ticks >"$T/sw.after"
	OUT=$(join -a2 <(sort "$T/sw.before") <(sort "$T/sw.after") | awk '{ d = (NF == 3 ? $3 - $2 : $2); all += d; if (d > top) top = d }
		END { printf "%s %d %d\n", (all >= 10 && top >= 0.9 * all) ? "OK" : "spread", top, all }')
	[ "${OUT##* }" -ge 10 ] && break
done
assert_eq "sequential requests are answered by one worker (ticks: top, all: $OUT)" OK "${OUT%% *}"

step "unmount" t fusermount3 -u "$MNT"
assert_unchanged "the lower was never written" "$REPO" "$T/lower.before"
done_testing
