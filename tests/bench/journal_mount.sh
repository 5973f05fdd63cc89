#!/usr/bin/env bash
# journal_mount.sh - workloads through a real mount with the journal off
# (--no-journal) and on in each --journal-sync mode, same tree, same run.
#
#   tests/bench/journal_mount.sh [--rounds N] [--files N] [--agentfs PATH]
#
# Workloads on a generated repository of --files small files (default 2000):
# cat of every file (one READ record each), find -type f (lookups, READDIR),
# creating and writing --files new files (CREATE + WRITE each), 500 editor-style
# saves (write a temp file, rename it onto the original: CREATE, WRITE, RENAME)
# and deleting the new files (UNLINK).  Each mode gets a fresh workspace per
# round; the table shows the median seconds per workload and mode, and the
# ratio to the journal off.  No timing is asserted.  Every mount is unmounted
# on exit; only processes this script started are signalled, by pid.
set -u
set -o pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/median.sh"
AGENTFS=$HERE/../../build/cli/agentfs
ROUNDS=3
FILES=2000
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift 2 ;;
	--files) FILES=$2; shift 2 ;;
	--agentfs) AGENTFS=$2; shift 2 ;;
	-h | --help) sed -n '2,15p' "$0"; exit 0 ;;
	*) echo "journal_mount.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -x "$AGENTFS" ] || { echo "journal_mount.sh: no agentfs binary at $AGENTFS" >&2; exit 1; }
AGENTFS=$(realpath "$AGENTFS")

T=$(mktemp -d "${TMPDIR:-/tmp}/agentfs-jbench.XXXXXX") || exit 1
MNT=$T/mnt
cleanup() {
	cd /
	if grep -qs " $MNT " /proc/self/mountinfo; then
		timeout 10 fusermount3 -u "$MNT" 2>/dev/null || timeout 10 fusermount3 -uz "$MNT"
	fi
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
REPO=$T/repo
mkdir -p "$REPO" && cd "$REPO" && git init -q -b main . || exit 1
for ((i = 0; i < FILES; i++)); do
	d=src/d$((i % 50))
	[ -d "$d" ] || mkdir -p "$d"
	printf 'file %d\n%s\n' "$i" "$(head -c 600 /dev/zero | tr '\0' x)" >"$d/f$i.c"
done
git add -A && git -c user.name=b -c user.email=b@b commit -qm tree || exit 1
cd /

now() { date +%s.%N; }
declare -A SUM
run_mode() { # MODE ROUND
	local mode=$1 opts=() s e
	case $mode in
	off) opts=(--no-journal) ;;
	*) opts=("--journal-sync=$mode") ;;
	esac
	mkdir -p "$MNT"
	timeout 60 "$AGENTFS" mount --state-dir "$T/state-$mode-$2" "${opts[@]}" "$REPO" "$MNT" ||
		{ echo "mount failed ($mode)" >&2; exit 1; }
	s=$(now); timeout 300 find "$MNT/src" -type f -exec cat {} + >/dev/null; e=$(now)
	echo "cat-all $mode $(echo "$e - $s" | bc)"
	s=$(now); timeout 300 find "$MNT/src" -type f >/dev/null; e=$(now)
	echo "find $mode $(echo "$e - $s" | bc)"
	mkdir -p "$MNT/new"
	s=$(now); for ((i = 0; i < FILES; i++)); do printf 'new %d\n' "$i" >"$MNT/new/n$i"; done; e=$(now)
	echo "create+write $mode $(echo "$e - $s" | bc)"
	s=$(now)
	for ((i = 0; i < 500; i++)); do
		f=$MNT/src/d$((i % 50))/f$i.c
		printf 'saved %d\n' "$i" >"$f.tmp" && mv -f "$f.tmp" "$f"
	done
	e=$(now)
	echo "editor-save $mode $(echo "$e - $s" | bc)"
	s=$(now); rm -rf "$MNT/new"; e=$(now)
	echo "rm-new $mode $(echo "$e - $s" | bc)"
	timeout 60 "$AGENTFS" unmount --state-dir "$T/state-$mode-$2" "$MNT" >/dev/null 2>&1 ||
		timeout 10 fusermount3 -u "$MNT"
	if [ "$mode" != off ]; then
		timeout 120 "$AGENTFS" verify -q --state-dir "$T/state-$mode-$2" "$MNT" ||
			echo "verify failed ($mode)" >&2
	fi
	rm -rf "$T/state-$mode-$2"
}

RAW=$T/raw
modes=(off interval always never)
for ((r = 0; r < ROUNDS; r++)); do
	for ((k = 0; k < ${#modes[@]}; k++)); do
		run_mode "${modes[(k + r) % ${#modes[@]}]}" "$r" >>"$RAW"
	done
done
echo "journal on/off, $FILES files, $ROUNDS rounds, median seconds (ratio to off)"
printf '| %-13s |' workload
for m in "${modes[@]}"; do printf ' %-16s |' "$m"; done
echo
printf '|%s|' "---------------"
for m in "${modes[@]}"; do printf '%s|' "------------------"; done
echo
for w in cat-all find create+write editor-save rm-new; do
	printf '| %-13s |' "$w"
	bench_cells "$RAW" "$w" ' %7.3f (%5.2fx) |' "${modes[@]}"
	echo
done
