#!/usr/bin/env bash
# differential.sh - seeded random operation sequences on a plain directory and
# through an agentfs mount over an identical copy (differential.py); every
# syscall result and the final trees must match, and the lower is never
# written.  A bounded number of seeds; long-run.sh runs many more.
#
#   bash tests/differential/differential.sh [AGENTFS [FSOPS]]
#   DIFF_FIRST=1 DIFF_LAST=12 DIFF_STEPS=60 bash tests/differential/differential.sh
#
# A failing seed is minimised and printed as a list of operations; replay it
# alone with DIFF_FIRST=N DIFF_LAST=N.
_HERE=$(cd "$(dirname "$0")" && pwd)
. "$_HERE/../integration/lib.sh" "$@"

command -v python3 >/dev/null || {
	echo "1..0 # SKIP python3 is not installed"
	exit 0
}
PY=$_HERE/differential.py
REPO=$T/repo
FIRST=${DIFF_FIRST:-1}
LAST=${DIFF_LAST:-12}
STEPS=${DIFF_STEPS:-60}

printf 'version: 1\nextends: none\nsymlinks: allow\ngit: hidden\nhide:\n  - /.git/\n' >"$T/policy.yml"
must "the all-visible policy is valid" "$AGENTFS" policy check "$T/policy.yml"
mkdir -p "$REPO" "$T/work" && git -C "$REPO" init -q -b main || bail "git init failed"
must "initial trees of seeds $FIRST..$LAST" python3 "$PY" prepare "$REPO" "$FIRST" "$LAST"
(cd "$REPO" && git add -A && git commit -q -m seeds) || bail "git commit failed"
snapshot "$REPO" "$T/lower.before"

# differential.py mounts and unmounts $T/work/mnt itself, once per run; the
# EXIT trap cleans it up should it be left behind.
_MOUNTS+=("$T/work/mnt")
seeds=0
while IFS= read -r line; do
	case $line in
	"ok - "*) pass "${line#ok - }" ;;
	"not ok - "*) fail "${line#not ok - }" ;;
	"# seeds: "*) seeds=${line#\# seeds: } ;;
	"# "*) diag "${line#\# }" ;;
	*) diag "$line" ;;
	esac
done < <(cd / && AGENTFS_TEST_TIMEOUT=${DIFF_TIMEOUT:-200} t python3 "$PY" run \
	--agentfs "$AGENTFS" --state "$STATE" --repo "$REPO" --policy "$T/policy.yml" \
	--work "$T/work" --steps "$STEPS" --ignore "${DIFF_IGNORE:-}" --minimise-seconds "${DIFF_MINIMISE_SECONDS:-15}" \
	"$FIRST" "$LAST" 2>&1)
assert_eq "every seed ran" "$((LAST - FIRST + 1))" "$seeds"
assert_unchanged "the lower was never written" "$REPO" "$T/lower.before"
done_testing
