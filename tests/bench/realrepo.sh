#!/usr/bin/env bash
# realrepo.sh - the main job of agentfs on a real repository, end to end.
#
#   tests/bench/realrepo.sh [--agentfs PATH] [REPO]
#
# REPO defaults to the full kernel tree that bench.sh prepares
# ($AGENTFS_BENCH_CACHE/repo-full, default /var/tmp/agentfs-bench).  Steps, each
# printed with its time and outcome:
#   1. mount REPO with the default policy; time until the first ls; count files
#   2. a real build inside the mount: make defconfig, make -j2 scripts (the
#      host tools), then make -j2 kernel/ (prepare: generated headers, asm
#      offsets, objtool; then every object of kernel/ for x86_64 defconfig).  It
#      writes .config and the .*.cmd dotfiles a kernel build makes, names the
#      default policy hides, so they are new entries in the upper
#   3. edit two tracked files (one in the middle, one appended), create one file
#   4. agentfs status, agentfs export > x.patch
#   5. git apply --check, then git apply, on a fresh clone of REPO; the clone's
#      diff must be exactly the edited and created files
#   6. the lower is unchanged: git status --porcelain in REPO is empty and HEAD
#      is the same
# On a failure: the command, what was expected, what came, and the daemon.log
# tail.  Always unmounts (trap); only signals the daemon it started.  With
# REALREPO_KEEP=1 the scratch directory (workspace, journal, patch) is kept.

# The whole script is one compound command: bash parses it fully before running
# it, so editing the file during a run cannot change the run.
{
set -u
set -o pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AGENTFS=${AGENTFS:-$HERE/../../build/cli/agentfs}
if [ "${1:-}" = --agentfs ]; then
	AGENTFS=$2
	shift 2
fi
CACHE=${AGENTFS_BENCH_CACHE:-/var/tmp/agentfs-bench}
REPO=${1:-$CACHE/repo-full}
[ -x "$AGENTFS" ] || {
	echo "realrepo.sh: agentfs not found: $AGENTFS" >&2
	exit 1
}
[ -d "$REPO/.git" ] || {
	echo "realrepo.sh: not a git repository: $REPO (run bench.sh once to prepare it)" >&2
	exit 1
}
REPO=$(cd "$REPO" && pwd)
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="agentfs bench" GIT_AUTHOR_EMAIL="bench@agentfs.invalid"
export GIT_COMMITTER_NAME="agentfs bench" GIT_COMMITTER_EMAIL="bench@agentfs.invalid"

T=$(mktemp -d "$CACHE/realrepo.XXXXXX") || exit 1
MNT=$T/mnt
STATE=$T/state
export XDG_CONFIG_HOME=$T/cfg
mkdir -p "$MNT" "$XDG_CONFIG_HOME"
LOG=$STATE/workspaces/mnt/daemon.log
PID=
FAILED=0

cleanup() {
	if mountpoint -q "$MNT" 2>/dev/null; then
		timeout 60 "$AGENTFS" unmount "$MNT" >/dev/null 2>&1 ||
			timeout 10 fusermount3 -u -- "$MNT" 2>/dev/null ||
			timeout 10 fusermount3 -uz -- "$MNT" 2>/dev/null
	fi
	[ -n "$PID" ] && kill -0 "$PID" 2>/dev/null && kill "$PID"
	if [ -n "${REALREPO_KEEP:-}" ]; then
		echo "kept: $T (workspace in $STATE/workspaces/mnt)"
	else
		rm -rf -- "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'; }
say() { echo "$*"; }
fail() { # WHAT EXPECTED GOT
	FAILED=1
	say "FAIL: $1"
	say "  expected: $2"
	say "  got:      $3"
	if [ -f "$LOG" ]; then
		say "  daemon.log tail:"
		tail -10 "$LOG" | sed 's/^/    /'
	fi
}

HEAD0=$(git -C "$REPO" rev-parse HEAD)
STATUS0=$(git -C "$REPO" status --porcelain | wc -l)
say "repository: $REPO ($(git -C "$REPO" ls-files | wc -l) tracked files, HEAD ${HEAD0:0:12}, $STATUS0 lines of git status)"
say "agentfs: $AGENTFS ($("$AGENTFS" --version 2>&1 | head -1))"

# 1. mount
t0=$(now_us)
timeout 120 "$AGENTFS" mount "$REPO" "$MNT" --state-dir "$STATE" 2>"$T/mount.err"
rc=$?
if [ $rc != 0 ]; then
	fail "agentfs mount $REPO $MNT --state-dir $STATE" "exit 0" "exit $rc: $(cat "$T/mount.err")"
	exit 1
fi
ls "$MNT" >/dev/null
t1=$(now_us)
PID=$(awk 'NR == 1 { print $1 }' "$STATE/workspaces/mnt/daemon.pid" 2>/dev/null)
say "mount until first ls: $(secs "$t0" "$t1") s"
t0=$(now_us)
nfiles=$(cd "$MNT" && find . -path ./.git -prune -o -type f -print | wc -l)
t1=$(now_us)
nlower=$(cd "$REPO" && find . -path ./.git -prune -o -type f -print | wc -l)
say "files in the view outside .git: $nfiles (lower: $nlower; hidden by policy: $((nlower - nfiles))); find took $(secs "$t0" "$t1") s; .git in the view: $(cd "$MNT" && find .git -type f 2>/dev/null | wc -l) files"

# 2. build
t0=$(now_us)
if (cd "$MNT" && timeout 600 make -s defconfig >"$T/defconfig.log" 2>&1); then
	t1=$(now_us)
	say "make defconfig: ok in $(secs "$t0" "$t1") s ($(grep -c '=y' "$MNT/.config" 2>/dev/null) options =y in .config)"
	t0=$(now_us)
	if (cd "$MNT" && timeout 900 make -j2 scripts >"$T/scripts.log" 2>&1); then
		t1=$(now_us)
		say "make -j2 scripts: ok in $(secs "$t0" "$t1") s; built: $(cd "$MNT" && ls scripts/basic/fixdep scripts/kconfig/conf 2>&1 | tr '\n' ' ')"
		t0=$(now_us)
		if (cd "$MNT" && timeout 1800 make -j2 kernel/ >"$T/kernel.log" 2>&1); then
			t1=$(now_us)
			say "make -j2 kernel/: ok in $(secs "$t0" "$t1") s; $(cd "$MNT" && find kernel -name '*.o' | wc -l) objects, kernel/built-in.a: $(ls -l "$MNT/kernel/built-in.a" 2>&1 | awk '{ print $5 " bytes" }')"
		else
			rc=$?
			fail "make -j2 kernel/ (in the mount)" "exit 0" "exit $rc; last lines: $(tail -5 "$T/kernel.log" | tr '\n' '|')"
		fi
	else
		rc=$?
		fail "make -j2 scripts (in the mount)" "exit 0" "exit $rc; last lines: $(tail -5 "$T/scripts.log" | tr '\n' '|')"
	fi
else
	rc=$?
	fail "make defconfig (in the mount)" "exit 0" "exit $rc; last lines: $(tail -5 "$T/defconfig.log" | tr '\n' '|')"
fi

# 3. edits
E1=kernel/sys.c
E2=README
printf '/* agentfs: an edit in the middle */\n' >"$T/ins"
(cd "$MNT" && sed -i '100r '"$T/ins" "$E1" && printf '\nEdited through agentfs.\n' >>"$E2" &&
	printf 'A new file made through agentfs.\n' >kernel/agentfs-note.txt) ||
	fail "editing $E1, $E2 and creating kernel/agentfs-note.txt" "success" "failure"

# 4. status and export
t0=$(now_us)
timeout 300 "$AGENTFS" status --state-dir "$STATE" "$MNT" >"$T/status.out" 2>&1
rc=$?
t1=$(now_us)
say "agentfs status: exit $rc in $(secs "$t0" "$t1") s, $(wc -l <"$T/status.out") lines; first 12:"
head -12 "$T/status.out" | sed 's/^/  /'
t0=$(now_us)
timeout 300 "$AGENTFS" export --state-dir "$STATE" "$MNT" >"$T/x.patch" 2>"$T/export.err"
rc=$?
t1=$(now_us)
if [ $rc != 0 ]; then
	fail "agentfs export --state-dir $STATE $MNT > x.patch" "exit 0" "exit $rc: $(head -3 "$T/export.err" | tr '\n' '|')"
fi
[ -s "$T/export.err" ] && say "export stderr ($(wc -l <"$T/export.err") lines), first 5:" && head -5 "$T/export.err" | sed 's/^/  /'
say "export: $(secs "$t0" "$t1") s, $(wc -c <"$T/x.patch") bytes, files: $(grep '^diff --git' "$T/x.patch" | wc -l)"
grep '^diff --git' "$T/x.patch" | head -20 | sed 's/^/  /'

# 5. apply on a fresh clone
git clone -q "$REPO" "$T/clone"
if ! (cd "$T/clone" && git apply --check "$T/x.patch") 2>"$T/apply.err"; then
	fail "git apply --check x.patch (fresh clone)" "exit 0" "$(head -3 "$T/apply.err" | tr '\n' '|')"
elif ! (cd "$T/clone" && git apply "$T/x.patch") 2>"$T/apply.err"; then
	fail "git apply x.patch (fresh clone)" "exit 0" "$(head -3 "$T/apply.err" | tr '\n' '|')"
else
	got=$(cd "$T/clone" && git add -A && git diff --cached --name-only | sort | tr '\n' ' ')
	want="$(printf '%s\n' kernel/agentfs-note.txt "$E2" "$E1" | sort | tr '\n' ' ')"
	if [ "$got" = "$want" ]; then
		say "git apply --check and git apply on a fresh clone: ok; changed: $got"
	else
		fail "the applied patch's files (git diff --cached --name-only)" "$want" "${got:0:2000}"
	fi
	for f in "$E1" "$E2"; do
		cmp -s "$T/clone/$f" "$MNT/$f" || fail "cmp clone/$f mnt/$f" "identical" "different"
	done
fi

# 6. lower unchanged
STATUS1=$(git -C "$REPO" status --porcelain | wc -l)
HEAD1=$(git -C "$REPO" rev-parse HEAD)
if [ "$STATUS1" = "$STATUS0" ] && [ "$STATUS1" = 0 ] && [ "$HEAD1" = "$HEAD0" ]; then
	say "lower unchanged: git status --porcelain empty, HEAD unchanged"
else
	fail "git status --porcelain in $REPO" "empty, HEAD $HEAD0" "$STATUS1 lines, HEAD $HEAD1: $(git -C "$REPO" status --porcelain | head -5 | tr '\n' '|')"
fi
[ -e "$REPO/.config" ] && fail "test ! -e $REPO/.config" "no .config in the lower" ".config exists"

t0=$(now_us)
timeout 120 "$AGENTFS" unmount "$MNT"
rc=$?
[ $rc = 0 ] || fail "agentfs unmount $MNT" "exit 0" "exit $rc"
t1=$(now_us)
say "unmount: $(secs "$t0" "$t1") s; journal: $(wc -l <"$STATE/workspaces/mnt/journal.jsonl" 2>/dev/null) records, $(du -sh "$STATE/workspaces/mnt/journal.jsonl" 2>/dev/null | cut -f1); upper: $(du -sh "$STATE/workspaces/mnt/upper" | cut -f1)"
"$AGENTFS" verify --state-dir "$STATE" mnt >"$T/verify.out" 2>&1
rc=$?
if [ $rc = 0 ]; then
	say "agentfs verify mnt: ok ($(tail -1 "$T/verify.out"))"
else
	fail "agentfs verify --state-dir $STATE mnt (after unmount)" "exit 0" "exit $rc: $(head -3 "$T/verify.out" | tr '\n' '|')"
fi
[ $FAILED = 0 ] && say "RESULT: ok" || say "RESULT: FAILED"
exit $FAILED
exit
}
