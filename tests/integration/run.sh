#!/usr/bin/env bash
# run.sh - `agentfs run`: the sandbox shows the workspace and nothing else,
# passes only allowlisted and named variables, keeps the network off or behind
# the allowlisting proxy, drops every capability, dies with agentfs run, and
# journals the run.  Runs as root and (run-unprivileged.sh) as an ordinary user.
. "$(dirname "$0")/lib.sh" "$@"

if ! command -v bwrap >/dev/null 2>&1; then
	echo "1..0 # SKIP bwrap is not installed (Debian: bubblewrap)"
	exit 0
fi
PY=$(PATH=/usr/bin:/bin command -v python3) || {
	echo "1..0 # SKIP /usr/bin/python3 is needed for the test servers"
	exit 0
}

# The person's home, with something in it the sandbox must not see.
export HOME=$T/home
mkdir -p "$HOME/.agent" "$HOME/.tool-ro"
echo "person's file" >"$HOME/private-notes"
echo '{"model":"x"}' >"$HOME/.agent/config.json"
echo 'ro-config' >"$HOME/.tool-ro/settings"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot make the test repository"
snapshot "$REPO" "$T/repo.snap"
mount_ws "$REPO" "$MNT" || bail "mount failed: $OUT"
WS=$STATE/workspaces/mnt
RUNLOG=$WS/run.jsonl

# agentfs run with this test's state dir, under a timeout; its own stderr
# (the note on dropped variables) goes to $T/run.err, the command's too.
arun() {
	t "$AGENTFS" run --state-dir "$STATE" "$@" 2>"$T/run.err"
}
# The same with stderr kept, for messages.
arun2() {
	t "$AGENTFS" run --state-dir "$STATE" "$@"
}

# ---------------------------------------------------------------- test servers
_SERVERS=()
# start_server DIR: an HTTP server on 127.0.0.1 serving DIR; prints its port.
start_server() {
	local dir=$1 pf
	pf=$(mktemp "$T/port.XXXXXX")
	timeout 200 "$PY" -c '
import http.server, socketserver, sys, os, functools
os.chdir(sys.argv[1])
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
h.func.log_message = lambda *a: None
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
open(sys.argv[2], "w").write(str(s.server_address[1]))
s.serve_forever()
' "$dir" "$pf" </dev/null >/dev/null 2>&1 &
	_SERVERS+=($!)
	local i
	for ((i = 0; i < 100; i++)); do
		[ -s "$pf" ] && break
		sleep 0.05
	done
	cat "$pf"
}
_RUNS=()
_stop_servers() {
	local p
	for p in "${_SERVERS[@]}" "${_RUNS[@]}"; do
		kill "$p" 2>/dev/null
	done
}
trap '_rc=$?; _stop_servers; (exit $_rc); _cleanup' EXIT

# Host pids of the processes in the PID namespace whose inode is $1.
pids_in_pidns() {
	# one find, not a readlink per process: this runs in polling loops
	find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/pid' -lname "pid:\[$1\]" \
		-printf '%h\n' 2>/dev/null | sed 's|^/proc/||; s|/ns$||'
}

# The value of KEY (a number) in the last run.jsonl record with "op":"OP".
last_field() {
	grep "\"op\":\"$1\"" "$RUNLOG" | tail -n 1 | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

# wait_start N: wait until run.jsonl holds N "start" records.
wait_start() {
	local i
	for ((i = 0; i < 200; i++)); do
		[ "$(grep -c '"op":"start"' "$RUNLOG" 2>/dev/null)" -ge "$1" ] && return 0
		sleep 0.05
	done
	return 1
}

# ---------------------------------------------------------------- privileges
run arun "$MNT" -- cat /proc/self/status
assert_eq "the command ran" 0 "$RC"
assert_eq "CapEff is 0 inside" "0000000000000000" "$(sed -n 's/^CapEff:\t//p' <<<"$OUT")"
assert_eq "CapPrm is 0 inside" "0000000000000000" "$(sed -n 's/^CapPrm:\t//p' <<<"$OUT")"
assert_eq "CapBnd is 0 inside" "0000000000000000" "$(sed -n 's/^CapBnd:\t//p' <<<"$OUT")"
assert_eq "no_new_privs is set inside" "1" "$(sed -n 's/^NoNewPrivs:\t//p' <<<"$OUT")"
run arun "$MNT" -- sh -c 'echo $$; readlink /proc/1/exe >/dev/null 2>&1; ps -e -o pid= 2>/dev/null | wc -l'
assert_eq "the command runs in its own PID namespace (pid 2)" "2" "$(head -n 1 <<<"$OUT")"
run arun "$MNT" -- id -u
assert_eq "the uid inside is the caller's" "$(id -u)" "$OUT"
run arun "$MNT" -- unshare -U true
assert_ne "no new user namespace can be made inside" 0 "$RC"

# ---------------------------------------------------------------- filesystem
run arun "$MNT" -- sh -c "test -e '$REPO' && echo visible; ls -A '$T'; test -e '$STATE' && echo state-visible; ls -A '$HOME'"
assert_eq "only the mount and the empty home show under the test dir: no repository, state dir or home contents" \
	"home
mnt" "$OUT"
run arun "$MNT" -- sh -c 'echo "$HOME"; ls -A "$HOME" | wc -l'
assert_eq "HOME keeps its path and is empty" "$HOME
0" "$OUT"
run arun "$MNT" -- sh -c 'for f in /etc/shadow /etc/gshadow /etc/sudoers; do cat $f 2>/dev/null; done; test -r /etc/passwd && echo passwd-ok'
assert_eq "/etc/shadow, gshadow and sudoers give nothing inside; /etc/passwd reads" "passwd-ok" "$OUT"
run arun "$MNT" -- sh -c 'ls -A /'
assert_eq "the root holds only system directories and the private ones" \
	"$(printf '%s\n' bin dev etc lib lib32 lib64 libx32 proc sbin tmp usr var "${HOME#/}" "${T#/}" |
		cut -d/ -f1 | sort -u | while read -r d; do [ -e "/$d" ] && echo "$d"; done)" \
	"$(sort <<<"$OUT")"
# A descriptor the caller left open (a launcher's, a shell's exec) does not
# reach the sandbox: through /proc/self/fd/N/.. it would reach everything.
exec 7<"$REPO"
run arun "$MNT" -- sh -c 'test -e /proc/self/fd/7 && echo open; true'
exec 7<&-
assert_not_contains "a directory descriptor the caller left open is not inherited" "open" "$OUT"
run arun "$MNT" -- sh -c 'pwd'
assert_eq "the command starts in the workspace root" "$MNT" "$OUT"
OUT=$(cd "$MNT/src" && t "$AGENTFS" run --state-dir "$STATE" "$MNT" -- pwd 2>/dev/null)
assert_eq "started inside the mount, the command starts in the same subdirectory" "$MNT/src" "$OUT"

# writes land in the workspace and nowhere else
probe=agentfs-run-probe-$$-$RANDOM
run arun "$MNT" -- sh -c "echo agent-wrote >'$probe.txt' && echo tmp >/tmp/$probe && echo home >\"\$HOME/$probe\" &&
	for d in / /usr /etc /bin '$T' '$T/..'; do echo x >\"\$d/$probe\" 2>/dev/null && echo \"wrote \$d\"; done; true"
assert_eq "writes to the system directories fail" "wrote $T
wrote $T/.." "$OUT"
assert_enoent "$T/$probe" "a write beside the mount stays in the sandbox's private /tmp"
assert_enoent "$T/../$probe" "... also one level up"
assert_content "a write in the sandbox shows in the mount" "$MNT/$probe.txt" "agent-wrote"
step "and lands in the upper" test -f "$WS/upper/$probe.txt"
assert_enoent "/tmp/$probe" "the sandbox's /tmp is private"
assert_enoent "$HOME/$probe" "the sandbox's HOME is not the person's"
assert_unchanged "the repository is unchanged" "$REPO" "$T/repo.snap"

# --read-only
refuse "--read-only refuses writes to the workspace" "Read-only file system" \
	arun2 --read-only "$MNT" -- sh -c "echo x >'$MNT/ro-probe'"
run arun --read-only "$MNT" -- cat README.md
assert_contains "--read-only still reads" "A small C program" "$OUT"
assert_enoent "$MNT/ro-probe" "--read-only left no file"

# --rw / --ro
run arun --rw "$HOME/.agent" --ro "$HOME/.tool-ro" "$MNT" -- sh -c \
	'cat "$HOME/.agent/config.json" && echo state >"$HOME/.agent/session" && cat "$HOME/.tool-ro/settings" && { echo x >"$HOME/.tool-ro/settings" 2>/dev/null || echo ro-refused; }; ls -A "$HOME"'
assert_eq "--rw and --ro show those paths, writable and read-only, and nothing else of HOME" \
	'{"model":"x"}
ro-config
ro-refused
.agent
.tool-ro' "$OUT"
assert_content "a write to a --rw path lands there" "$HOME/.agent/session" "state"
refuse "--rw of the repository is refused" "would show the repository" arun2 --rw "$REPO" "$MNT" -- true
refuse "--ro of the state dir is refused" "would show the state directory" \
	arun2 --ro "$STATE" "$MNT" -- true
# The same directories under other paths (bind mounts, root only, in a private
# mount namespace that goes with the command): refused by device and inode.
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
	mkdir -p "$T/bind-repo" "$T/bind-top" "$T/bind-state"
	# bind SRC DST -- agentfs run ARGS...: run with SRC bound at DST
	bound() {
		local src=$1 dst=$2
		shift 2
		t unshare -m --propagation private bash -c \
			'mount --bind "$1" "$2" && shift 2 && exec "$@"' _ "$src" "$dst" \
			"$AGENTFS" run --state-dir "$STATE" "$@"
	}
	refuse "--ro of a bind mount of the repository is refused" "would show the repository" \
		bound "$REPO" "$T/bind-repo" --ro "$T/bind-repo" "$MNT" -- true
	refuse "--rw of a directory inside that bind mount is refused" "would show the repository" \
		bound "$REPO" "$T/bind-repo" --rw "$T/bind-repo/src" "$MNT" -- true
	refuse "--ro of a bind mount of the repository's parent is refused" \
		"would show the repository" bound "$(dirname "$REPO")" "$T/bind-top" \
		--ro "$T/bind-top" "$MNT" -- true
	refuse "--ro of a bind mount of the state dir is refused" "would show the state directory" \
		bound "$STATE" "$T/bind-state" --ro "$T/bind-state" "$MNT" -- true
	# A directory with such a mount below it: bwrap binds it recursively.
	mkdir -p "$T/bind-above/x"
	refuse "--ro of a directory with a bind mount of the repository below it is refused" \
		"the mount at $T/bind-above/x would show the repository" \
		bound "$REPO" "$T/bind-above/x" --ro "$T/bind-above" "$MNT" -- true
	is_mounted "$T/bind-repo" && fail "the bind mounts went with their namespace" ||
		pass "the bind mounts went with their namespace"
else
	for d in "a bind mount of the repository" "a directory inside that bind mount" \
		"a bind mount of the repository's parent" "a bind mount of the state dir" \
		"a directory with a bind mount of the repository below it" \
		"(the bind mounts' namespace)"; do
		skip "--ro of $d is refused" "needs root for bind mounts in a mount namespace"
	done
fi

# ---------------------------------------------------------------- environment
export AGENTFS_TEST_TOKEN=tok-$SECRET_MARK MY_API_KEY=key-$SECRET_MARK PLAIN_VAR=plain
run arun "$MNT" -- env
assert_not_contains "a credential variable is not passed" "$SECRET_MARK" "$OUT"
assert_not_contains "an unlisted variable is not passed" "PLAIN_VAR" "$OUT"
assert_contains "the run names the credential variables it dropped" "AGENTFS_TEST_TOKEN" "$(cat "$T/run.err")"
assert_contains "... all of them" "MY_API_KEY" "$(cat "$T/run.err")"
assert_not_contains "... and only those" "PLAIN_VAR" "$(cat "$T/run.err")"
assert_contains "PATH passes" "PATH=$PATH" "$OUT"
run arun --env AGENTFS_TEST_TOKEN --env EXTRA=given "$MNT" -- env
assert_contains "--env NAME passes that variable" "AGENTFS_TEST_TOKEN=tok-$SECRET_MARK" "$OUT"
assert_contains "--env NAME=VALUE sets it" "EXTRA=given" "$OUT"
assert_not_contains "the other credential still is not passed" "key-$SECRET_MARK" "$OUT"
refuse "--env of an unset variable is refused" "not set in the environment" \
	arun2 --env AGENTFS_UNSET_VAR "$MNT" -- true
unset AGENTFS_TEST_TOKEN MY_API_KEY PLAIN_VAR

# ---------------------------------------------------------------- network
mkdir -p "$T/www-a" "$T/www-b"
echo "server-a-$RANDOM" >"$T/www-a/hello.txt"
echo "server-b" >"$T/www-b/hello.txt"
PA=$(start_server "$T/www-a")
PB=$(start_server "$T/www-b")
[ -n "$PA" ] && [ -n "$PB" ] || bail "test servers did not start"
step "the test server answers outside the sandbox" "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PA/hello.txt')"

tcp_probe="exec 3<>/dev/tcp/127.0.0.1/$PA && echo connected"
run arun "$MNT" -- bash -c "$tcp_probe"
assert_not_contains "--net none (default): a loopback server outside is unreachable" connected "$OUT"
run arun --net none "$MNT" -- bash -c "$tcp_probe"
assert_not_contains "--net none: the same" connected "$OUT"
run arun --net host "$MNT" -- bash -c "$tcp_probe"
assert_contains "--net host reaches it" connected "$OUT"

fetch='import os, sys, urllib.request as u
try:
    print(u.urlopen(sys.argv[1], timeout=10).read().decode().strip())
except Exception as e:
    print("ERR", getattr(e, "code", e))'
run arun --net "allow=127.0.0.1:$PA" "$MNT" -- python3 -c "$fetch" "http://127.0.0.1:$PA/hello.txt"
assert_eq "--net allow=: an allowed host is reachable through the proxy" "$(cat "$T/www-a/hello.txt")" "$OUT"
run arun --net "allow=127.0.0.1:$PA" "$MNT" -- python3 -c "$fetch" "http://127.0.0.1:$PB/hello.txt"
assert_eq "--net allow=: another host is refused (403)" "ERR 403" "$OUT"
run arun --net "allow=127.0.0.1:$PA" "$MNT" -- bash -c \
	"exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'CONNECT 127.0.0.1:$PA HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && head -n 1 <&3 &&
	 printf 'GET /hello.txt HTTP/1.0\r\n\r\n' >&3 && tail -n 1 <&3"
assert_eq "--net allow=: CONNECT tunnels to the allowed host" "HTTP/1.1 200 Connection established
$(cat "$T/www-a/hello.txt")" "$(tr -d '\r' <<<"$OUT")"
run arun --net "allow=127.0.0.1:$PA" "$MNT" -- bash -c "$tcp_probe"
assert_not_contains "--net allow=: no direct connection besides the proxy" connected "$OUT"
assert_contains "the run journal records the allowed connection" \
	"\"host\":\"127.0.0.1\",\"port\":$PA,\"decision\":\"allowed\",\"result\":0" "$(cat "$RUNLOG")"
assert_contains "the run journal records the refused one" \
	"\"host\":\"127.0.0.1\",\"port\":$PB,\"decision\":\"refused\"" "$(cat "$RUNLOG")"
refuse "--net with a bad value is a usage error" "not none, host or allow" arun2 --net bogus "$MNT" -- true
refuse "--net allow= with a bad host is refused" "--net allow" arun2 --net "allow=a b" "$MNT" -- true
for env in "" "=x" "A B=1" HOME=/x; do
	run arun2 --env "$env" "$MNT" -- true
	assert_eq "--env '$env' is a usage error (exit 2)" 2 "$RC"
done
run arun2 --name 'bad name' "$REPO" -- true
assert_eq "run --name with an invalid name names --name" \
	"1 agentfs: run: --name bad name: not a valid workspace name (1 to 128 letters, digits, '.', '_', '-', not starting with '.')" \
	"$RC $OUT"

# ---------------------------------------------------------------- exit status, killing
run arun "$MNT" -- sh -c 'exit 7'
assert_eq "the command's exit status is agentfs run's" 7 "$RC"
# As in the shell: 127 for a command not found, 126 for one that cannot run,
# so a caller tells them from a command that ran and failed (exit 1).
run arun2 "$MNT" -- agentfs-no-such-command
assert_eq "a command not found exits 127" 127 "$RC"
assert_contains "  ...and says which" "agentfs-no-such-command" "$OUT"
assert_contains "  ...and run.jsonl has that status" '"status":127' \
	"$(grep '"op":"exit"' "$RUNLOG" | tail -n 1)"
run arun "$MNT" -- ./README.md
assert_eq "a command that is not executable exits 126" 126 "$RC"
# A first word NAME=VALUE is a command name like any other: env(1) would take
# it for a variable, print the environment and exit 0.
run arun "$MNT" -- AGENTFS_X=1
assert_eq "a command named NAME=VALUE is not found, nothing runs" "1 " "$RC $OUT"

for sig in TERM KILL; do
	n=$(grep -c '"op":"start"' "$RUNLOG")
	"$AGENTFS" run --state-dir "$STATE" "$MNT" -- sh -c 'sleep 300 & sleep 301; wait' \
		</dev/null >/dev/null 2>&1 &
	rp=$!
	_RUNS+=($rp)
	if ! wait_start $((n + 1)); then
		fail "SIG$sig: the run started" "$(tail -n 3 "$RUNLOG")"
		kill -KILL $rp 2>/dev/null
		continue
	fi
	ns=$(last_field start pidns)
	sleep 0.3
	before=$(pids_in_pidns "$ns" | wc -l)
	kill -$sig $rp
	wait $rp 2>/dev/null
	left=
	for ((i = 0; i < 50; i++)); do
		left=$(pids_in_pidns "$ns")
		[ -z "$left" ] && break
		sleep 0.1
	done
	if [ "$before" -ge 3 ] && [ -z "$left" ]; then
		pass "SIG$sig to agentfs run kills the sandboxed process tree ($before processes)"
	else
		fail "SIG$sig to agentfs run kills the sandboxed process tree" \
			"before: $before processes; left: $left"
	fi
done
assert_contains "a run killed by SIGTERM is journaled as such" '"killed":"agentfs run got TERM' \
	"$(grep '"op":"exit"' "$RUNLOG" | tail -n 2)"

# From a terminal (script(1) makes one) the sandbox runs in a process group of
# its own that holds the terminal: it reads it, and kill(0, sig) inside reaches
# neither agentfs run nor the caller's shell.  The terminal comes back after.
if command -v script >/dev/null; then
	cat >"$T/outer.sh" <<'EOF'
trap 'echo caller-got-USR1 >>"$SIGLOG"' USR1
"$AGENTFS" run --state-dir "$STATE" "$MNT" -- sh -c 'trap "" USR1; read x; echo "got $x"; kill -USR1 0'
echo "run-exit $?" >>"$SIGLOG"
[ "$(ps -o tpgid= -p $$)" -eq "$(ps -o pgid= -p $$)" ] && echo tty-back >>"$SIGLOG"
EOF
	(sleep 1 && echo hello) | (export SIGLOG="$T/sig.log" AGENTFS STATE MNT &&
		t script -qec "bash '$T/outer.sh'" /dev/null >"$T/script.out" 2>&1)
	assert_not_contains "kill(0) in a terminal's sandbox does not reach the caller" \
		"caller-got-USR1" "$(cat "$T/sig.log" 2>&1)"
	assert_contains "  ...the sandbox read the terminal" "got hello" "$(cat "$T/script.out" 2>&1)"
	assert_contains "  ...agentfs run lived to report the exit" "run-exit 138" "$(cat "$T/sig.log" 2>&1)"
	assert_contains "  ...and the terminal is the caller's again" "tty-back" "$(cat "$T/sig.log" 2>&1)"
else
	skip "kill(0) in a terminal's sandbox does not reach the caller" "no script(1)"
fi

# Job control in an interactive shell's terminal (a pty): a run whose stdin is
# a pipe still gets the terminal (a prompt reads /dev/tty); one stopped with
# ^Z and continued with bg runs in the background and leaves the terminal to
# the shell, which lives on.  Each step waits for its answer (at most 30 s).
cat >"$T/jobs.py" <<'PY'
import os, pty, select, sys, time
agentfs, state, mnt = sys.argv[1:4]
pid, fd = pty.fork()
if pid == 0:
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
seen = b""
def wait_for(text, limit=30):
    global seen
    end = time.time() + limit
    while time.time() < end:
        if text.encode() in seen:
            return True
        if select.select([fd], [], [], 0.1)[0]:
            try:
                d = os.read(fd, 4096)
            except OSError:
                return False
            if not d:
                return False
            seen += d
    return False
def send(s):
    os.write(fd, s.encode())
send("PS1='$ '\n")
run = "%s run --state-dir %s %s -- " % (agentfs, state, mnt)
send("echo hi | " + run + "sh -c 'read a; printf \"%s=\\n\" prompt; read b </dev/tty; echo \"tty=$b\"' 2>/dev/null\n")
ok1 = wait_for("prompt=")
send("typed\n")
print("tty-read", ok1 and wait_for("tty=typed"))
send(run + "sh -c 'echo $((40+1))-started; sleep 3' 2>/dev/null\n")
ok2 = wait_for("41-started")
send("\x1a")
ok2 = ok2 and wait_for("Stopped")
send("bg\n")
send("echo $((40+2))-alive\n")
ok2 = ok2 and wait_for("42-alive")
# The run ends meanwhile; bash says so before its next prompt.
send("sleep 4; echo $((40+3))-alive\n")
ok2 = ok2 and wait_for("43-alive")
send("echo $((40+4))-alive\n")
print("bg", ok2 and wait_for("44-alive") and wait_for("Done"))
send("exit\n")
PY
run t python3 "$T/jobs.py" "$AGENTFS" "$STATE" "$MNT"
assert_contains "a run with stdin from a pipe reads the terminal (/dev/tty)" "tty-read True" "$OUT"
assert_contains "a run stopped (^Z) and continued with bg leaves the shell its terminal" "bg True" "$OUT"

# ---------------------------------------------------------------- the journals
n=$(grep -c '"op":"start"' "$RUNLOG")
rm -f "$MNT/go"
timeout 60 "$AGENTFS" run --state-dir "$STATE" "$MNT" -- sh -c 'while [ ! -e go ]; do sleep 0.05; done; exec cat docs/guide.md' \
	</dev/null >"$T/cat.out" 2>&1 &
rp=$!
_RUNS+=($rp)
wait_start $((n + 1)) || fail "the run started"
ns=$(last_field start pidns)
shpid=
for ((i = 0; i < 50; i++)); do
	for p in $(pids_in_pidns "$ns"); do
		[ "$(cat /proc/$p/comm 2>/dev/null)" == sh ] && shpid=$p
	done
	[ -n "$shpid" ] && break
	sleep 0.05
done
touch "$MNT/go"
wait $rp
assert_eq "the sandboxed cat ran" 0 "$?"
rm -f "$MNT/go"
run af unmount "$MNT"; [ "$RC" -eq 0 ] || bail "unmount failed: $OUT"
# Named by the path of its mountpoint while unmounted: mounted for the run,
# as when named by its name.
OUT=$(cd "$(dirname "$MNT")" && t "$AGENTFS" run --state-dir "$STATE" "$(basename "$MNT")" -- pwd 2>"$T/run.err")
assert_eq "run MNT of an unmounted workspace mounts it for the run" "$MNT" "$OUT"
rec=$(grep '"op":"read"' "$WS/journal.jsonl" | grep '"path":"docs/guide.md"' | grep "\"pid\":$shpid,")
# The record carries the host pid; the name when the daemon could still read it
# (a process as short-lived as this cat may be gone by then).
if [ -n "$shpid" ] && [ -n "$rec" ] && { [[ $rec != *'"comm":'* ]] || [[ $rec == *'"comm":"cat"'* ]]; }; then
	pass "the workspace journal names the sandboxed process (host pid $shpid, cat)"
else
	fail "the workspace journal names the sandboxed process" "pid in the sandbox: '$shpid'" \
		"$(grep 'docs/guide.md' "$WS/journal.jsonl" | tail -n 3)"
fi

# run.jsonl: a complete chain, each record's prev the xxh3-128 of the line before
bad=0
prev=00000000000000000000000000000000
seq=0
while IFS= read -r line; do
	seq=$((seq + 1))
	[[ $line == "{\"v\":1,\"seq\":$seq,\"prev\":\"$prev\","* ]] || bad=$seq
	prev=$(printf '%s' "$line" | xxhsum -H2 | cut -d' ' -f1)
	prev=${prev#XXH128_}
done <"$RUNLOG"
if [ $bad -eq 0 ] && [ $seq -gt 10 ]; then
	pass "run.jsonl is one unbroken chain ($seq records)"
else
	fail "run.jsonl is one unbroken chain" "first bad record: $bad of $seq" "$(sed -n "${bad}p" "$RUNLOG")"
fi
assert_contains "the run record holds the command line" '"argv":["sh","-c","exit 7"]' "$(cat "$RUNLOG")"
assert_contains "... and the settings" '"settings":{"net":"allow","allow":["127.0.0.1:'"$PA"'"],"read_only":false' \
	"$(cat "$RUNLOG")"
assert_contains "the exit record holds the status" '"op":"exit"' "$(grep '"status":7' "$RUNLOG")"

run af log "$RUNLOG"
assert_eq "agentfs log of run.jsonl says what it is, in one line" \
	"1 agentfs: log: $RUNLOG: a run journal (agentfs run's record of each run, JSON Lines to read as they are; 'agentfs verify' checks its chain), not a workspace's journal.jsonl" \
	"$RC $OUT"

# agentfs verify checks run.jsonl by the same chain rule, naming its first bad record.
run af verify mnt
assert_eq "verify passes after the runs" 0 "$RC"
assert_contains "  ...and checked run.jsonl" "run journal intact: $seq records, chain verified" "$OUT"
cp "$RUNLOG" "$T/run.jsonl.orig"
# One byte of record 2 (a digit of its time), the JSON still valid: record 3's
# prev no longer matches, and record 2 is blamed.
"$PY" - "$RUNLOG" <<'PYEOF'
import re, sys
lines = open(sys.argv[1], "rb").read().split(b"\n")
m = re.search(rb'"time_ns":\d*(\d)', lines[1])
d = m.group(1)[0]
lines[1] = lines[1][:m.start(1)] + bytes([ord("0") + (d - ord("0") + 1) % 10]) + lines[1][m.end(1):]
open(sys.argv[1], "wb").write(b"\n".join(lines))
PYEOF
refuse "verify fails after a byte of run.jsonl is edited, naming the record" \
	"agentfs: verify: $RUNLOG: record 2 (line 2): record 2 was edited" af verify mnt
refuse "verify of run.jsonl alone names the same record" "$RUNLOG: record 2 (line 2)" \
	af verify "$RUNLOG"
sed -i 3d "$RUNLOG"
refuse "verify names a removed record of run.jsonl" \
	"$RUNLOG: record 3 (line 3): record 3 is missing (found seq 4)" af verify mnt
cp "$T/run.jsonl.orig" "$RUNLOG"
step "verify passes again with run.jsonl restored" af verify mnt

# ---------------------------------------------------------------- run REPO mounts and unmounts
run arun --name via-repo "$REPO" -- sh -c 'cat README.md; pwd'
assert_contains "run REPO mounts a workspace and runs in it" "A small C program" "$OUT"
mp=$(tail -n 1 <<<"$OUT")
_MOUNTS+=("$mp")
if [ -n "$mp" ] && ! is_mounted "$mp"; then
	pass "run REPO unmounts the workspace it mounted"
else
	fail "run REPO unmounts the workspace it mounted" "$OUT"
fi
step "run REPO journals in that workspace" grep -q '"op":"exit"' "$STATE/workspaces/via-repo/run.jsonl"
run arun --name via-repo "$REPO" -- sh -c "test -e '$STATE/workspaces' && echo state-visible; test -e '$REPO' && echo repo-visible; true"
assert_eq "run REPO: the state and the repository are absent inside" "" "$OUT"
# A root daemon's own mount leaves permission checks to root's capabilities
# (fs/fs.c), which the command here has not: as root, the mount run makes
# has the kernel check the view's modes.
if [ "$(id -u)" -eq 0 ]; then
	run arun --name via-repo "$REPO" -- sh -c 'grep " $(pwd) " /proc/self/mounts'
	assert_contains "run REPO as root: the mount it makes has default_permissions" default_permissions "$OUT"
	run arun --name via-repo "$REPO" -- sh -c "printf x >ro.txt && chmod 444 ro.txt && printf y >>ro.txt"
	assert_ne "  ...so the command cannot write a 0444 file" 0 "$RC"
	run arun --name via-repo "$REPO" -- rm -f ro.txt
	assert_not_contains "  ...and the run says nothing of its modes" "default_permissions" \
		"$(cat "$T/run.err")"
	# A mount of its own, made by `agentfs mount` as root: the kernel
	# does not check modes there, and the run says so.
	mount_ws "$REPO" "$T/own" || bail "mount of own failed: $OUT"
	run arun2 "$T/own" -- true
	assert_eq "run MNT on a root mount without default_permissions runs" 0 "$RC"
	assert_contains "  ...and says the view's modes do not bind the command" \
		"mounted without -o default_permissions" "$OUT"
	run af unmount "$T/own"
else
	skip "run REPO as root: the mount it makes has default_permissions" "not root"
	skip "  ...so the command cannot write a 0444 file" "not root"
	skip "  ...and the run says nothing of its modes" "not root"
	mount_ws "$REPO" "$T/own" || bail "mount of own failed: $OUT"
	run arun2 "$T/own" -- true
	assert_eq "run MNT of a person's own mount runs" 0 "$RC"
	assert_not_contains "  ...and says nothing of default_permissions" "default_permissions" "$OUT"
	run af unmount "$T/own"
fi

# ---------------------------------------------------------------- a moved repository
# run REPO of a workspace whose repository was moved resumes it there, as a
# mount of the new place does (lifecycle.sh).
make_test_repo "$T/rrepo" || bail "cannot make another test repository"
run arun2 "$T/rrepo" -- sh -c 'printf "run work\n" >>README.md'
assert_eq "run REPO writes in its workspace" 0 "$RC"
mv "$T/rrepo" "$T/rrepo-moved" || bail "cannot move the repository"
run arun2 --name rrepo "$T/rrepo-moved" -- tail -n 1 README.md
assert_eq "run REPO --name of the moved repository resumes its workspace" "0 run work" \
	"$RC $(tail -n 1 <<<"$OUT")"

# ---------------------------------------------------------------- no user namespaces
if command -v unshare >/dev/null && unshare -U -r true 2>/dev/null; then
	run unshare -U -r sh -c 'echo 0 >/proc/sys/user/max_user_namespaces && exec "$0" run --state-dir "$1" "$2" -- true' \
		"$AGENTFS" "$STATE" "$REPO"
	if [ "$RC" -ne 0 ] && [[ $OUT == *"user namespaces are unavailable"*"user.max_user_namespaces"* ]]; then
		pass "without user namespaces the run fails, saying what to enable"
	else
		fail "without user namespaces the run fails, saying what to enable" "exit $RC" "$OUT"
	fi
else
	skip "without user namespaces the run fails, saying what to enable" "unshare -U -r unavailable"
fi

done_testing
