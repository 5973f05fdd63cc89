#!/usr/bin/env bash
# conformance.sh - POSIX conformance of the merged view: runs conformance.py's
# cases on a plain directory and through an agentfs mount of an identical
# repository (lower-only, upper-only and copied-up variants), then checks that
# the lower was never written.
#
#   bash tests/conformance/conformance.sh [AGENTFS [FSOPS]] 
#   CONFORMANCE_FILTER=rename bash tests/conformance/conformance.sh   (some cases)
#
# The mount uses a policy that hides nothing but .git, so the plain directory
# and the view hold the same names.
_HERE=$(cd "$(dirname "$0")" && pwd)
. "$_HERE/../integration/lib.sh" "$@"

command -v python3 >/dev/null || {
	echo "1..0 # SKIP python3 is not installed"
	exit 0
}
PY=$_HERE/conformance.py
REPO=$T/repo
REF=$T/plain
MNT=$T/mnt

# Everything visible (no dotfile or secret rule), the real .git hidden.
printf 'version: 1\nextends: none\nsymlinks: allow\ngit: hidden\nhide:\n  - /.git/\n' >"$T/policy.yml"
must "the all-visible policy is valid" "$AGENTFS" policy check "$T/policy.yml"

mkdir -p "$REPO" && git -C "$REPO" init -q -b main ||
	bail "git init failed"
must "prepare the lower fixtures" python3 "$PY" prepare "$REPO"
(cd "$REPO" && git add -A && git commit -q -m fixtures) || bail "git commit failed"
# The plain directory is a copy of the lower, on the same filesystem as the
# upper (holes and sizes behave alike).
mkdir -p "$REF" && cp -a "$REPO/." "$REF/" && rm -rf "$REF/.git" || bail "cp failed"
snapshot "$REPO" "$T/lower.before"

mount_ws "$REPO" "$MNT" --policy "$T/policy.yml"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi

# Each line of conformance.py becomes a TAP line of ours.
cases=0
while IFS= read -r line; do
	case $line in
	"ok - "*) pass "${line#ok - }" ;;
	"not ok - "*) fail "${line#not ok - }" ;;
	"# cases: "*) cases=${line#\# cases: } ;;
	"# "*) diag "${line#\# }" ;;
	*) diag "$line" ;;
	esac
done < <(cd / && t python3 "$PY" run "$MNT" "$REF" "${CONFORMANCE_FILTER:-}" 2>&1)
if [ "$cases" -gt 0 ]; then pass "conformance.py ran $cases cases"; else
	fail "conformance.py ran no case"
fi

assert_unchanged "the lower was never written" "$REPO" "$T/lower.before"
step "unmount" t fusermount3 -u "$MNT"
done_testing
