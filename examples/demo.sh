#!/usr/bin/env bash
# demo.sh - agentfs in one minute.  Copies the example repository (examples/hello)
# to a temp dir, commits it, mounts it with agentfs, shows that its secrets are
# invisible in the mount, edits and builds there as an agent would, prints the
# patch `agentfs export` makes, unmounts and shows the real repository untouched.
#
#   bash examples/demo.sh        (after: meson setup build && ninja -C build)
#
# AGENTFS names the binary (default: build/cli/agentfs of this source tree).
# Everything happens in a private temp dir, removed on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
AGENTFS=${AGENTFS:-$here/../build/cli/agentfs}
if [ ! -x "$AGENTFS" ]; then
	echo "demo: no agentfs binary at $AGENTFS; build it first: meson setup build && ninja -C build" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/agentfs-demo.XXXXXX")
mnt=$tmp/agent
state=$tmp/state

cleanup() {
	if awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
	fi
	rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

# Print a command line as one would type it.
show() {
	local a line=
	for a in "$@"; do
		[[ $a =~ [[:space:]] ]] && a="'$a'"
		line+="$a "
	done
	printf '\n\033[1m$ %s\033[0m\n' "${line% }"
}
# Show a command, then run it (under a timeout: a demo must never hang).
say() {
	show "$@"
	timeout -k 5 60 "$@"
}
# agentfs prints nothing about --state-dir in the demo's transcript; all state
# stays in the temp dir.
af() {
	local cmd=$1
	shift
	show agentfs "$cmd" "$@"
	timeout -k 5 60 "$AGENTFS" "$cmd" --state-dir "$state" "$@"
}

cd "$tmp"
echo "== The example repository, copied to $tmp/hello and committed:"
cp -a "$here/hello" hello
git -C hello init -q -b main
git -C hello add -A
git -C hello -c user.name=demo -c user.email=demo@example.invalid commit -q -m "hello"
say ls -a hello hello/config
say cat hello/.env

echo
echo "== Mount it for an agent: a filtered, copy-on-write view"
af mount hello agent
say ls -a agent agent/config

show cat agent/.env
if out=$(timeout 10 cat agent/.env 2>&1); then
	echo "demo: UNEXPECTED: the agent can read .env: $out" >&2
	exit 1
fi
echo "$out"
show cat agent/config/id_rsa
if out=$(timeout 10 cat agent/config/id_rsa 2>&1); then
	echo "demo: UNEXPECTED: the agent can read config/id_rsa: $out" >&2
	exit 1
fi
echo "$out"

echo
echo "== The agent edits, builds and runs, inside the mount"
say sed -i 's/Hello, /Hello from agentfs, /' agent/src/greet.c
say make -s -C agent
say agent/build/hello demo

echo
echo "== What changed, as a patch to review and apply with git apply"
af status agent
af export agent

echo
echo "== The journal: what the agent read and wrote (last lines)"
printf '\n\033[1m$ agentfs log agent | tail -n 8\033[0m\n'
timeout -k 5 60 "$AGENTFS" log --state-dir "$state" agent | tail -n 8 ||
	echo "demo: agentfs log failed (see above)"

echo
echo "== Unmount; the real repository was never written"
af unmount agent
say git -C hello status --short
if [ -n "$(git -C hello status --porcelain)" ]; then
	echo "demo: UNEXPECTED: the repository changed" >&2
	exit 1
fi
say grep Hello hello/src/greet.c
echo
echo "demo: done (the workspace, with its journal, is removed with $tmp)"
