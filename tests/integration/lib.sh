# shellcheck shell=bash
# lib.sh - shared helpers of the agentfs integration tests (bash; source it).
#
#   . "$(dirname "$0")/lib.sh" "$@"
#   mount_ws "$REPO" "$MNT" || bail "mount failed"
#   step "creating a file" touch "$MNT/x"
#   ...
#   done_testing
#
# Inputs, from the environment or the arguments:
#   AGENTFS        the agentfs binary ($1 if unset; else ../../build/cli/agentfs)
#   AGENTFS_FSOPS  the fsops helper ($2 if unset; else next to the build's tests/,
#                  else compiled from fsops.c into the private temp dir)
#   AGENTFS_TEST_WATCHDOG  seconds before the whole script is aborted (240)
#
# Every script gets a private temp dir $T (mktemp -d), a state dir $STATE inside
# it (passed to every agentfs command as --state-dir), and a trap on EXIT that
# unmounts every mount it made (fusermount3 -u, then -uz), stops the daemons it
# started (their pids from the workspaces' daemon.pid, nothing else) and removes
# $T.  Output is TAP: "ok N - what" / "not ok N - what" with "# " diagnostics,
# and "1..N" at the end; the exit status is non-zero if any test failed.

set -u
set -o pipefail
export LC_ALL=C
umask 022

_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

AGENTFS=${AGENTFS:-${1:-}}
if [ -z "$AGENTFS" ]; then
	AGENTFS=$_LIB_DIR/../../build/cli/agentfs
fi
if [ ! -x "$AGENTFS" ]; then
	echo "Bail out! agentfs binary not found or not executable: $AGENTFS"
	exit 1
fi
AGENTFS=$(cd "$(dirname "$AGENTFS")" && pwd)/$(basename "$AGENTFS")
export AGENTFS

# Mount tests need FUSE; without it the whole script is skipped, not failed.
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null 2>&1; then
	echo "1..0 # SKIP no /dev/fuse or fusermount3"
	exit 0
fi
if [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then
	echo "1..0 # SKIP /dev/fuse is not readable and writable by $(id -un)"
	exit 0
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/agentfs-test.XXXXXX") || {
	echo "Bail out! mktemp failed"
	exit 1
}
chmod 755 "$T"
STATE=$T/state
mkdir -p "$STATE"
export T STATE

# make_scratch: set SCRATCH to a private directory on a tmpfs (/dev/shm), for
# trees of many files that only need to be read, or to $T/scratch when there
# is no writable tmpfs.  The EXIT trap removes it with $T.
SCRATCH=
make_scratch() {
	[ -n "$SCRATCH" ] && return 0
	if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ] &&
		SCRATCH=$(mktemp -d /dev/shm/agentfs-test.XXXXXX); then
		chmod 755 "$SCRATCH"
	else
		SCRATCH=$T/scratch
		mkdir -p "$SCRATCH"
	fi
}

# Keep the person's configuration out: git sees no global or system config,
# agentfs has no state root other than $STATE.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="agentfs test" GIT_AUTHOR_EMAIL="test@agentfs.invalid"
export GIT_COMMITTER_NAME="agentfs test" GIT_COMMITTER_EMAIL="test@agentfs.invalid"
export XDG_STATE_HOME=$T/xdg-state

# A marker that every secret of make_test_repo holds and no visible file does.
SECRET_MARK=AGENTFS_TEST_SECRET_7f3a91
export SECRET_MARK

_N=0
_FAILED=0
_MOUNTS=()
_PIDS=()
_WATCHDOG_PID=

# ---------------------------------------------------------------- TAP output

# Diagnostics go to stderr: meson shows a failed test's stderr (--print-errorlogs)
# and parses its stdout as TAP.
diag() {
	local line
	while IFS= read -r line; do
		printf '# %s\n' "$line"
	done <<<"$*" >&2
}

pass() {
	_N=$((_N + 1))
	printf 'ok %d - %s\n' "$_N" "$1"
}

# fail DESC [DIAGNOSTIC...]
fail() {
	_N=$((_N + 1))
	_FAILED=$((_FAILED + 1))
	printf 'not ok %d - %s\n' "$_N" "$1"
	printf 'not ok %d - %s\n' "$_N" "$1" >&2
	shift
	local d
	for d in "$@"; do
		diag "$(printf '%s\n' "$d" | head -n 40)"
	done
}

skip() {
	_N=$((_N + 1))
	printf 'ok %d - %s # SKIP %s\n' "$_N" "$1" "$2"
}

# Abort the script: the EXIT trap still cleans up.
bail() {
	printf 'Bail out! %s\n' "$*"
	printf 'Bail out! %s\n' "$*" >&2
	_FAILED=$((_FAILED + 1))
	exit 1
}

done_testing() {
	cd / || true
	_check_daemon_logs
	printf '1..%d\n' "$_N"
	if [ "$_FAILED" -ne 0 ]; then
		diag "$_FAILED of $_N tests failed"
		exit 1
	fi
	exit 0
}

# ---------------------------------------------------------------- running

# Every command that may touch a mount runs under a timeout: a hung daemon must
# fail the test, not hang it.
t() {
	timeout -k 5 "${AGENTFS_TEST_TIMEOUT:-60}" "$@"
}

# Run CMD under a timeout; sets OUT (stdout+stderr) and RC.  CMD may be one
# of the functions here (t, af, fsops: they carry their own timeout).
run() {
	[ "$1" == t ] && shift
	if declare -F -- "$1" >/dev/null; then
		OUT=$("$@" 2>&1)
		RC=$?
	else
		OUT=$(t "$@" 2>&1)
		RC=$?
	fi
}

# step DESC CMD...: the command must succeed.
step() {
	local desc=$1
	shift
	run "$@"
	if [ "$RC" -eq 0 ]; then
		pass "$desc"
	else
		fail "$desc" "command: $*" "exit status $RC$([ "$RC" -eq 124 ] && echo ' (timed out)')" "$OUT"
	fi
	return "$RC"
}

# must DESC CMD...: like step, but the script cannot go on without it.
must() {
	step "$@" || bail "$1: cannot continue"
}

# sh_step DESC SCRIPT: step DESC bash -c SCRIPT (the script is run with set -e).
sh_step() {
	step "$1" bash -ec "$2"
}

# refuse DESC MESSAGE CMD...: the command must fail (not time out) and its output
# must contain MESSAGE (e.g. "No such file or directory").
refuse() {
	local desc=$1 msg=$2
	shift 2
	run "$@"
	if [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] && [[ $OUT == *"$msg"* ]]; then
		pass "$desc"
	else
		fail "$desc" "command: $*" "expected failure with '$msg'; exit status $RC" "$OUT"
	fi
}

# The agentfs CLI with this test's state dir (options first; they may also follow operands).
af() {
	local cmd=$1
	shift
	t "$AGENTFS" "$cmd" --state-dir "$STATE" "$@"
}

# ---------------------------------------------------------------- assertions

assert_eq() {
	if [ "$2" == "$3" ]; then
		pass "$1"
	else
		fail "$1" "expected: $2" "     got: $3"
	fi
}

assert_ne() {
	if [ "$2" != "$3" ]; then
		pass "$1"
	else
		fail "$1" "expected anything but: $2"
	fi
}

# assert_contains DESC NEEDLE HAYSTACK
assert_contains() {
	if [[ $3 == *"$2"* ]]; then
		pass "$1"
	else
		fail "$1" "expected to contain: $2" "in: $3"
	fi
}

# assert_match DESC ERE TEXT: TEXT has a match of the extended regular expression ERE
assert_match() {
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		pass "$1"
	else
		fail "$1" "expected to match: $2" "in: $3"
	fi
}

assert_not_contains() {
	if [[ $3 != *"$2"* ]]; then
		pass "$1"
	else
		fail "$1" "expected not to contain: $2" "in: $(grep -F -- "$2" <<<"$3" | head -n 10)"
	fi
}

# assert_file_eq DESC FILE1 FILE2: same bytes (both must exist).
assert_file_eq() {
	local desc=$1 a=$2 b=$3
	if t cmp -s -- "$a" "$b"; then
		pass "$desc"
	else
		fail "$desc" "files differ: $a $b" "$(t cmp -- "$a" "$b" 2>&1)" \
			"$(t diff -u -- "$a" "$b" 2>&1 | head -n 20)"
	fi
}

# assert_content DESC FILE EXPECTED: the file holds exactly EXPECTED.
assert_content() {
	local got
	got=$(t cat -- "$2" 2>&1)
	local rc=$?
	if [ $rc -eq 0 ] && [ "$got" == "$3" ]; then
		pass "$1"
	else
		fail "$1" "file: $2 (cat exit $rc)" "expected: $3" "     got: $got"
	fi
}

# assert_enoent PATH [DESC]: stat, ls and cat all fail with "No such file or
# directory", and the shell's -e / -L tests are false.
assert_enoent() {
	local p=$1 desc=${2:-"$1 does not exist"} errs=() o
	local c
	for c in stat "ls -d" cat; do
		if o=$(t $c -- "$p" 2>&1); then
			errs+=("$c succeeded: $o")
		elif [[ $o != *"No such file or directory"* ]]; then
			errs+=("$c: $o")
		fi
	done
	t test -e "$p" && errs+=("test -e is true")
	t test -L "$p" && errs+=("test -L is true")
	if [ ${#errs[@]} -eq 0 ]; then
		pass "$desc"
	else
		fail "$desc" "${errs[@]}"
	fi
}

# assert_like_missing PATH [DESC]: every operation fsops probe tries on PATH
# answers exactly as on a name that never existed in the same directory.
assert_like_missing() {
	local p=$1 desc=${2:-"$1 is indistinguishable from a missing entry"}
	local dir missing got want
	dir=$(dirname "$p")
	missing=$dir/agentfs-never-existed-$$
	got=$(t "$AGENTFS_FSOPS" probe "$p" "$dir/agentfs-spare-$$" 2>&1)
	want=$(t "$AGENTFS_FSOPS" probe "$missing" "$dir/agentfs-spare-$$" 2>&1)
	if [ "$got" == "$want" ] && [[ $want == *ENOENT* ]]; then
		pass "$desc"
	else
		fail "$desc" "probe of $p:" "$(diff <(echo "$want") <(echo "$got"))"
	fi
}

# assert_listed DIR NAME / assert_not_listed DIR NAME (readdir via ls -a)
assert_listed() {
	local l
	l=$(t ls -a1 -- "$1" 2>&1)
	if grep -qxF -- "$2" <<<"$l"; then
		pass "ls -a $1 lists $2"
	else
		fail "ls -a $1 lists $2" "listing: $(tr '\n' ' ' <<<"$l")"
	fi
}

assert_not_listed() {
	local l rc
	l=$(t ls -a1 -- "$1" 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && ! grep -qxF -- "$2" <<<"$l"; then
		pass "ls -a $1 does not list $2"
	else
		fail "ls -a $1 does not list $2" "ls exit $rc; listing: $(tr '\n' ' ' <<<"$l")"
	fi
}

# ---------------------------------------------------------------- mounts

is_mounted() {
	local m
	m=$(realpath -m -- "$1")
	# mountinfo escapes a space, tab, newline and backslash in octal; passed
	# in the environment, as awk -v would undo the escapes.
	m=${m//\\/\\134}
	m=${m// /\\040}
	m=${m//$'\t'/\\011}
	m=${m//$'\n'/\\012}
	M=$m awk '$5 == ENVIRON["M"] { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# Pid of the daemon serving MNT according to the workspaces' daemon.pid, or "".
daemon_pid_of() {
	local m f pid mp
	m=$(realpath -m -- "$1")
	for f in "$STATE"/workspaces/*/daemon.pid; do
		[ -f "$f" ] || continue
		read -r pid mp <"$f" || true
		if [ "$(realpath -m -- "$mp")" == "$m" ]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

# Is PID alive and an agentfs process (guards against pid reuse)?
_is_our_daemon() {
	local pid=$1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep agentfs >/dev/null
}

# mount_ws REPO MNT [OPTION...]: agentfs mount --state-dir $STATE OPTION... REPO MNT
# Sets OUT and RC like run; remembers the mount and its daemon for cleanup.
mount_ws() {
	local repo=$1 mnt=$2 pid
	shift 2
	mkdir -p -- "$mnt"
	_MOUNTS+=("$mnt")
	OUT=$(af mount "$@" "$repo" "$mnt" 2>&1)
	RC=$?
	if pid=$(daemon_pid_of "$mnt"); then
		_PIDS+=("$pid")
	fi
	if [ "$RC" -eq 0 ] && ! is_mounted "$mnt"; then
		OUT="agentfs mount exited 0 but $mnt is not a mountpoint; $OUT"
		RC=1
	fi
	return "$RC"
}

# passthrough_on WSDIR: does the workspace's daemon let the kernel read and
# write the agent's files itself (FUSE passthrough: root, Linux 6.9+)?  Said
# in its daemon.log at the first file it opened that way.
passthrough_on() {
	grep -q "passthrough: the kernel reads and writes" "$1/daemon.log" 2>/dev/null
}

# exited PID: has the process ended?  A zombie has: it holds nothing any more
# and only waits for its parent to collect its status (proc(5), /proc/PID/stat
# state "Z").  A daemon's parent is init, which may do that a second or more
# later, so kill -0 alone would count that wait too.  But a thread group's
# leader turns zombie as soon as it exits itself, while its other threads
# may still be dying (one finishing a system call), and the files they
# share, with the workspace's lock, close only when the last one is done:
# every thread of /proc/PID/task must be a zombie (or gone).
exited() {
	local st t
	kill -0 "$1" 2>/dev/null || return 0
	for t in /proc/"$1"/task/*; do
		read -r st <"$t/stat" 2>/dev/null || continue
		st=${st##*) }
		[ "${st%% *}" = Z ] || [ "${st%% *}" = X ] || return 1
	done
	return 0
}

# wait_gone PID [SECONDS]: wait for a process that is not our child to exit.
wait_gone() {
	local pid=$1 i
	for ((i = 0; i < ${2:-10} * 20; i++)); do
		exited "$pid" && return 0
		sleep 0.05
	done
	return 1
}

_unmount_all() {
	local m
	for m in "${_MOUNTS[@]}"; do
		if is_mounted "$m"; then
			timeout 10 fusermount3 -u -- "$m" 2>/dev/null ||
				timeout 10 fusermount3 -uz -- "$m" 2>/dev/null ||
				echo "# cleanup: could not unmount $m" >&2
		fi
	done
}

_stop_daemons() {
	local pids=("${_PIDS[@]}") f pid mp
	for f in "$STATE"/workspaces/*/daemon.pid; do
		# The daemon removes its pid file as it exits: it may go at any time.
		pid=
		{ read -r pid mp <"$f"; } 2>/dev/null || [ -n "$pid" ] || continue
		pids+=("$pid")
	done
	for pid in "${pids[@]}"; do
		_is_our_daemon "$pid" || continue
		wait_gone "$pid" 3 && continue
		kill -TERM "$pid" 2>/dev/null
		wait_gone "$pid" 5 && continue
		kill -KILL "$pid" 2>/dev/null
	done
}

# Sanitizer reports in a daemon's log fail the script (the daemon's stderr goes
# to daemon.log, where nobody else would see them).
_check_daemon_logs() {
	local f bad=()
	_unmount_all
	_stop_daemons
	for f in "$STATE"/workspaces/*/daemon.log; do
		[ -f "$f" ] || continue
		if grep -qE 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$f"; then
			bad+=("$f:" "$(grep -E -A 30 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$f" | head -n 40)")
		fi
	done
	if [ ${#bad[@]} -eq 0 ]; then
		pass "no sanitizer report in the daemons' logs"
	else
		fail "no sanitizer report in the daemons' logs" "${bad[@]}"
	fi
}

# at_exit COMMAND: run COMMAND (eval, in a subshell: an error or exit there
# cannot cut the cleanup short) when the script ends, however it ends,
# before the mounts go.
_AT_EXIT=()
at_exit() {
	_AT_EXIT+=("$1")
}

_cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	local c
	for c in "${_AT_EXIT[@]}"; do
		(eval "$c") || true
	done
	if [ -n "$_WATCHDOG_PID" ]; then
		kill -TERM "$_WATCHDOG_PID" 2>/dev/null
		wait "$_WATCHDOG_PID" 2>/dev/null
	fi
	if [ -f "$T/watchdog-fired" ]; then
		echo "Bail out! watchdog: the script ran longer than ${AGENTFS_TEST_WATCHDOG:-240}s"
		echo "Bail out! watchdog: the script ran longer than ${AGENTFS_TEST_WATCHDOG:-240}s" >&2
		rc=1
	fi
	cd / || true # our own cwd must not keep a mount busy
	_unmount_all
	_stop_daemons
	# --one-file-system: never descend into a mount that failed to go away
	local d
	for d in "$T" ${SCRATCH:+"$SCRATCH"}; do
		rm -rf --one-file-system -- "$d" 2>/dev/null || chmod -R u+rwX "$d" 2>/dev/null
		rm -rf --one-file-system -- "$d" 2>/dev/null
		[ -d "$d" ] && echo "# cleanup: could not remove $d" >&2
	done
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The watchdog kills our daemons first (a request stuck in a daemon unblocks
# with ENOTCONN), then this shell, whose EXIT trap cleans up.
_watchdog() {
	local main=$1 secs=$2 f pid mp sp
	trap 'kill $sp 2>/dev/null; exit 0' TERM
	sleep "$secs" &
	sp=$!
	wait "$sp"
	touch "$T/watchdog-fired"
	for f in "$STATE"/workspaces/*/daemon.pid; do
		[ -f "$f" ] || continue
		read -r pid mp <"$f" || true
		_is_our_daemon "$pid" && kill -KILL "$pid"
	done
	kill -TERM "$main"
}
_watchdog $$ "${AGENTFS_TEST_WATCHDOG:-240}" </dev/null >/dev/null 2>&1 &
_WATCHDOG_PID=$!

# ---------------------------------------------------------------- fsops helper

AGENTFS_FSOPS=${AGENTFS_FSOPS:-${2:-}}
if [ -z "$AGENTFS_FSOPS" ] && [ -x "$(dirname "$AGENTFS")/../tests/fsops" ]; then
	AGENTFS_FSOPS=$(dirname "$AGENTFS")/../tests/fsops
fi
if [ -z "$AGENTFS_FSOPS" ] || [ ! -x "$AGENTFS_FSOPS" ]; then
	AGENTFS_FSOPS=$T/fsops
	${CC:-cc} -std=c17 -D_GNU_SOURCE -O1 -o "$AGENTFS_FSOPS" "$_LIB_DIR/fsops.c" ||
		bail "no fsops helper and cannot compile $_LIB_DIR/fsops.c"
fi
export AGENTFS_FSOPS
fsops() {
	t "$AGENTFS_FSOPS" "$@"
}

# ---------------------------------------------------------------- lower snapshots

# snapshot DIR OUT: every entry's path, type, mode, link count, size, mtime,
# ctime and symlink target, then the sha256 of every regular file.  Two equal
# snapshots mean nothing in DIR was written, chmod'ed, touched, linked or renamed.
snapshot() {
	(
		cd "$1" || exit 1
		find . -printf '%p %y %m %n %s %T@ %C@ %l\n' | sort
		find . -type f -print0 | sort -z | xargs -0 -r sha256sum
	) >"$2"
}

# assert_unchanged DESC DIR SNAPSHOT
assert_unchanged() {
	local now=$T/snapshot.now
	snapshot "$2" "$now"
	if cmp -s "$3" "$now"; then
		pass "$1"
	else
		fail "$1" "$(diff "$3" "$now" | head -n 30)"
	fi
}

# ---------------------------------------------------------------- test repository

# make_test_repo DIR: a small but realistic repository: a C project with a
# Makefile, docs, a binary file, an executable script, allowed dotfiles, and
# secrets (each holding $SECRET_MARK) both committed and ignored, nested, in
# other letter cases, behind symlinks, and one outside the repository that a
# symlink points at.  Files get an old mtime so copy-up preservation shows.
make_test_repo() (
	r=$1
	mkdir -p "$r" && cd "$r" || exit 1
	git init -q -b main . || exit 1
	mkdir -p src docs/api scripts data config keys deploy certs sub \
		node_modules/x onlysecret || exit 1

	printf '# demo\n\nA small C program. Build it with `make`.\n' >README.md
	cat >Makefile <<'EOF'
CC ?= cc
CFLAGS ?= -O1 -Wall
OBJS = build/main.o build/util.o

build/app: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS)

build/%.o: src/%.c src/util.h
	@mkdir -p build
	$(CC) $(CFLAGS) -c -o $@ $<

clean:
	rm -rf build

.PHONY: clean
EOF
	cat >src/main.c <<'EOF'
#include <stdio.h>
#include "util.h"

int main(void)
{
	printf("%d\n", add(2, 3));
	return 0;
}
EOF
	cat >src/util.c <<'EOF'
#include "util.h"

int add(int a, int b)
{
	return a + b;
}
EOF
	printf 'int add(int a, int b);\n' >src/util.h
	printf '/* unused, to be deleted */\n' >src/old.c
	printf '# Guide\n\nRun build/app.\n' >docs/guide.md
	printf '# API\n\nadd(a, b)\n' >docs/api/index.md
	ln -s ../README.md docs/readme-link
	printf '#!/bin/sh\necho run-ok\n' >scripts/run.sh
	chmod 755 scripts/run.sh
	printf '#!/bin/sh\necho gen-ok\n' >scripts/gen.sh
	chmod 644 scripts/gen.sh
	printf 'notes, kept old\n' >data/notes.txt
	chmod 640 data/notes.txt
	# every byte value, so text/binary handling and patches get tested
	printf "$(printf '\\%03o' $(seq 0 255))" >data/blob.bin
	printf 'root = true\n\n[*]\nindent_style = tab\n' >.editorconfig
	printf 'build/\nnode_modules/\n.env\n' >.gitignore
	printf 'name: demo\nport: 8080\n' >config/settings.yml

	# secrets, committed (they are in the history too)
	printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\n%s-id_rsa\n-----END OPENSSH PRIVATE KEY-----\n' \
		"$SECRET_MARK" >config/id_rsa
	printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\n%s-ID_RSA\n-----END OPENSSH PRIVATE KEY-----\n' \
		"$SECRET_MARK" >keys/ID_RSA
	printf 'DB_PASSWORD=%s-ENV-upper\n' "$SECRET_MARK" >deploy/.ENV
	printf 'LOCAL_TOKEN=%s-env-local\n' "$SECRET_MARK" >sub/.env.local
	printf -- '-----BEGIN PRIVATE KEY-----\n%s-pem\n-----END PRIVATE KEY-----\n' \
		"$SECRET_MARK" >certs/server.pem
	ln -s .env link-to-env
	ln -s ../.env sub/envlink
	printf 'outside the repository: %s-outside\n' "$SECRET_MARK" >../outside-secret
	ln -s ../outside-secret escape-link

	# secrets, ignored (never committed)
	printf 'API_KEY=%s-dotenv\n' "$SECRET_MARK" >.env
	printf '//registry.npmjs.org/:_authToken=%s-npmrc\n' "$SECRET_MARK" >node_modules/x/.npmrc
	printf 'module.exports = 1;\n' >node_modules/x/index.js
	printf 'ONLY=%s-only\n' "$SECRET_MARK" >onlysecret/.env

	git add -A . && git commit -q -m "initial" || exit 1
	printf '\nMore text.\n' >>docs/guide.md
	git commit -q -am "second" || exit 1
	# a remote whose URL holds a token, as real clones often do
	git remote add origin "https://deploy:$SECRET_MARK-token@git.example.invalid/demo.git"

	find . -path ./.git -prune -o ! -type l -exec touch -h -d '2001-02-03 04:05:06' {} + || exit 1
)

# Paths a diff touches ("diff --git a/X b/Y" -> X and Y), sorted, unique.
patch_paths() {
	sed -n 's|^diff --git a/\(.*\) b/\(.*\)$|\1\n\2|p' "$1" | sort -u
}
