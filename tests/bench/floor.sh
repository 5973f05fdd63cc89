#!/usr/bin/env bash
# floor.sh - what the FUSE transport alone costs on this machine, against what
# agentfs costs: warm `grep -r` and `cat` of every file of a flat directory of
# small files, on native ext4, on agentfs (default policy, journal on), and on
# fuse_floor (tests/bench/fuse_floor.c), a FUSE file system that answers from
# memory and does no work at all, over /dev/fuse and, with --uring, over
# io_uring.  Each workload runs once to warm the caches, then --reps times;
# a round's value is the median of those, the table the median of --rounds
# rounds (the systems take turns, the order rotating), with ratios to native.
# No timing is asserted anywhere.
#
#   tests/bench/floor.sh [--smoke] [--rounds N] [--reps N] [--files N]
#                        [--size BYTES] [--agentfs PATH] [--uring] [--limit SECS]
#
# Before it is timed on a system, each workload's output is checked (grep
# names every file, cat gives every byte): a system that answers wrongly
# fails the run with one line.  --smoke (the test suite's): 30 files, one
# round of one, and a failure unless every system gave every workload a
# value and fuse_floor answered.  A run longer than --limit seconds (900;
# smoke 90) is stopped: the servers it started are killed, so a request
# stuck in one fails, and the mounts are unmounted.
# --uring sets the fuse module's enable_uring parameter to Y for the run and
# puts the old value back at exit (FUSE over io_uring needs Linux 6.14 and
# later).  Runs as root (fuse_floor mounts with mount(2)); builds fuse_floor
# with the system compiler (needs liburing-dev).  Every mount is unmounted at
# exit; only processes this script started are signalled, by pid.
set -u
set -o pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/median.sh"
AGENTFS=${AGENTFS:-$HERE/../../build/cli/agentfs}
ROUNDS=3
REPS=7
FILES=2000
SIZE=4096
URING=0
SMOKE=0
LIMIT=900
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift 2 ;;
	--reps) REPS=$2; shift 2 ;;
	--files) FILES=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--agentfs) AGENTFS=$2; shift 2 ;;
	--uring) URING=1; shift ;;
	--limit) LIMIT=$2; shift 2 ;;
	--smoke) SMOKE=1; FILES=30; ROUNDS=1; REPS=1; LIMIT=90; shift ;;
	-h | --help) sed -n '2,27p' "$0"; exit 0 ;;
	*) echo "floor.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -x "$AGENTFS" ] || { echo "floor.sh: no agentfs binary at $AGENTFS" >&2; exit 1; }
AGENTFS=$(realpath "$AGENTFS")
if [ "$(id -u)" -ne 0 ]; then
	echo "floor.sh: run it as root (fuse_floor mounts with mount(2))" >&2
	[ "$SMOKE" -eq 1 ] && exit 77 # meson's "skipped"
	exit 1
fi
URING_PARAM=/sys/module/fuse/parameters/enable_uring
if [ "$URING" -eq 1 ] && [ ! -w "$URING_PARAM" ]; then
	echo "floor.sh: --uring: no $URING_PARAM (FUSE over io_uring needs Linux 6.14 and later)" >&2
	exit 1
fi

T=$(mktemp -d "${TMPDIR:-/var/tmp}/agentfs-floor.XXXXXX") || exit 1
OLD_URING=
PIDS=()
cleanup() {
	cd /
	for m in "$T"/mnt-*; do
		[ -d "$m" ] || continue
		if grep -qs " $m " /proc/self/mountinfo; then
			timeout 10 fusermount3 -u "$m" 2>/dev/null || timeout 10 fusermount3 -uz "$m"
		fi
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	[ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
	[ -n "$OLD_URING" ] && echo "$OLD_URING" >"$URING_PARAM"
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# After --limit seconds: kill the servers this run started (their pids are
# in $T/pids, agentfs's daemon's in its daemon.pid), then this shell, whose
# EXIT trap unmounts.
watchdog() {
	local main=$1 sp pid f
	trap 'kill $sp 2>/dev/null; exit 0' TERM
	sleep "$LIMIT" &
	sp=$!
	wait "$sp"
	echo "floor.sh: stopped after $LIMIT s" >&2
	while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$T/pids"
	for f in "$T"/state/workspaces/*/daemon.pid; do
		[ -f "$f" ] && read -r pid _ <"$f" && kill -KILL "$pid" 2>/dev/null
	done
	kill -TERM "$main"
}
: >"$T/pids"
watchdog $$ </dev/null >/dev/null &
WATCHDOG=$!

cc -O2 -Wall -o "$T/fuse_floor" "$HERE/fuse_floor.c" -luring -lpthread ||
	{ echo "floor.sh: cannot build fuse_floor (is liburing-dev installed?)" >&2; exit 1; }
if [ "$URING" -eq 1 ]; then
	OLD_URING=$(cat "$URING_PARAM")
	echo Y >"$URING_PARAM"
fi

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
REPO=$T/repo
mkdir -p "$REPO" && cd "$REPO" && git init -q -b main . || exit 1
head -c "$SIZE" /dev/zero | tr '\0' x >"$T/content"
for ((i = 0; i < FILES; i++)); do cp "$T/content" "f$i"; done
git add -A && git -c user.name=b -c user.email=b@b commit -qm tree || exit 1
cd /

systems=(native agentfs floor)
[ "$URING" -eq 1 ] && systems+=(floor-uring)

# Mount SYSTEM; sets DIR to the directory to run the workloads in.
start() {
	local m=$T/mnt-$1
	case $1 in
	native) DIR=$REPO ;;
	agentfs)
		mkdir -p "$m"
		timeout 60 "$AGENTFS" mount --state-dir "$T/state" "$REPO" "$m" >/dev/null ||
			{ echo "floor.sh: agentfs mount failed" >&2; exit 1; }
		DIR=$m
		;;
	floor | floor-uring)
		mkdir -p "$m"
		local mode=classic
		[ "$1" = floor-uring ] && mode=uring
		"$T/fuse_floor" "$m" "$mode" "$FILES" "$SIZE" </dev/null >/dev/null 2>>"$T/floor.log" &
		PIDS+=($!)
		echo "$!" >>"$T/pids"
		for _ in $(seq 100); do
			grep -qs " $m " /proc/self/mountinfo && break
			sleep 0.05
		done
		grep -qs " $m " /proc/self/mountinfo ||
			{ echo "floor.sh: fuse_floor did not mount: $(tail -n 1 "$T/floor.log")" >&2; exit 1; }
		DIR=$m
		;;
	esac
}
stop() {
	local m=$T/mnt-$1
	case $1 in
	native) ;;
	agentfs)
		timeout 60 "$AGENTFS" unmount --state-dir "$T/state" "$m" >/dev/null 2>&1 ||
			timeout 10 fusermount3 -u "$m"
		rm -rf "$T/state"
		;;
	*) timeout 10 fusermount3 -u "$m" ;;
	esac
}
# Median of REPS timed runs of a command in DIR, seconds, after one to warm.
timed() { # DIR CMD
	(
		cd "$1" || exit 1
		eval "$2" >/dev/null 2>&1
		for ((k = 0; k < REPS; k++)); do
			s=$(date +%s%N)
			eval "$2" >/dev/null 2>&1
			e=$(date +%s%N)
			echo "$(((e - s) / 1000))"
		done | sort -n | awk '{ v[NR] = $1 } END { printf "%.6f\n", v[int((NR + 1) / 2)] / 1e6 }'
	)
}
GREP='grep -r -c --exclude-dir=.git zzqq .'
CAT='find . -path ./.git -prune -o -type f -print0 | xargs -0 cat'
# The workloads' output on SYSTEM in DIR is what the files hold: grep names
# each file once, cat gives FILES * SIZE bytes.
check() { # SYSTEM DIR
	local n
	n=$(cd "$2" && eval "$GREP" 2>/dev/null | wc -l)
	[ "$n" -eq "$FILES" ] || { echo "floor.sh: $1: grep -r named $n files of $FILES" >&2; exit 1; }
	n=$(cd "$2" && eval "$CAT" 2>/dev/null | wc -c)
	[ "$n" -eq $((FILES * SIZE)) ] ||
		{ echo "floor.sh: $1: cat gave $n bytes of $((FILES * SIZE))" >&2; exit 1; }
}

RAW=$T/raw
for ((r = 0; r < ROUNDS; r++)); do
	for ((k = 0; k < ${#systems[@]}; k++)); do
		sys=${systems[(k + r) % ${#systems[@]}]}
		start "$sys"
		check "$sys" "$DIR"
		echo "grep $sys $(timed "$DIR" "$GREP")" >>"$RAW"
		echo "cat $sys $(timed "$DIR" "$CAT")" >>"$RAW"
		stop "$sys"
		sync
	done
done

echo "# floor.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $FILES files of $SIZE bytes in one directory," \
	"$ROUNDS round(s) of $REPS"
echo "# kernel $(uname -r), $(nproc) cores; $("$AGENTFS" --version 2>/dev/null | head -n 1) at $AGENTFS"
printf '| workload |'
for s in "${systems[@]}"; do printf ' %s |' "$s"; done
echo
printf '|---|'
for _ in "${systems[@]}"; do printf -- '---:|'; done
echo
for w in grep cat; do
	printf '| %s (warm) |' "$w"
	bench_cells "$RAW" "$w" ' %.4f s (%.2fx) |' "${systems[@]}"
	echo
done
grep -h "requests answered" "$T/floor.log" | sed 's/^/# /' | tail -n 4
if [ "$SMOKE" -eq 1 ]; then
	for w in grep cat; do
		for s in "${systems[@]}"; do
			awk -v w="$w" -v s="$s" '$1 == w && $2 == s && $3 > 0 { ok = 1 } END { exit !ok }' \
				"$RAW" || { echo "floor.sh: smoke: no value for $w on $s" >&2; exit 1; }
		done
	done
	grep -q "answered, [0-9]* through" "$T/floor.log" &&
		! grep -q "^fuse_floor: 0 requests" "$T/floor.log" ||
		{ echo "floor.sh: smoke: fuse_floor answered nothing" >&2; exit 1; }
	echo "floor.sh: smoke: every system ran every workload"
fi
