#!/usr/bin/env bash
# run-unprivileged.sh - run integration scripts as an ordinary user, the way
# people use agentfs: mounting through the setuid fusermount3, with no
# CAP_DAC_OVERRIDE, so permission checks bite.
#
#   bash tests/run-unprivileged.sh [SCRIPT.sh...]   (default: every tests/integration/*.sh)
#
# Needs root (to create the user and run as it); run as anyone else it skips.
# Inputs: AGENTFS and AGENTFS_FSOPS (the binaries; default: ./build), and
# AGENTFS_TEST_USER (default agentfs-test, created with useradd -m if missing).
#
# The build directory may be unreadable to the user (e.g. under /root, mode
# 700), so the binaries and scripts are copied into a world-readable temp dir;
# the user's scripts keep their own temp dirs inside it, so whatever a killed
# run leaves behind (a mount, a daemon) is found and cleaned up here.
set -u
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP not root: the integration suite already runs unprivileged"
	exit 0
fi

user=${AGENTFS_TEST_USER:-agentfs-test}
AGENTFS=${AGENTFS:-$here/../build/cli/agentfs}
AGENTFS_FSOPS=${AGENTFS_FSOPS:-$(dirname "$AGENTFS")/../tests/fsops}

scripts=("$@")
if [ ${#scripts[@]} -eq 0 ]; then
	for s in "$here"/integration/*.sh; do
		[ "$(basename "$s")" = lib.sh ] || scripts+=("$s")
	done
fi

fusermount=$(command -v fusermount3) || {
	echo "1..0 # SKIP fusermount3 is not installed"
	exit 0
}
if [ ! -u "$fusermount" ]; then
	echo "1..0 # SKIP $fusermount is not setuid root"
	exit 0
fi
if [ ! -e /dev/fuse ]; then
	echo "1..0 # SKIP no /dev/fuse"
	exit 0
fi
for f in "$AGENTFS" "$AGENTFS_FSOPS"; do
	if [ ! -x "$f" ]; then
		echo "Bail out! not an executable: $f"
		exit 1
	fi
done

# Scripts may run side by side (meson test -j): one at a time creates the
# user (the lock is this script's own file, nothing to plant in /tmp).
exec 9<"${BASH_SOURCE[0]}" && flock 9
if ! id -u "$user" >/dev/null 2>&1; then
	# A group of that name may be left over from an earlier user: reuse it.
	group_opt=()
	getent group "$user" >/dev/null && group_opt=(-g "$user")
	useradd -m -s /bin/bash "${group_opt[@]}" "$user" || {
		echo "Bail out! cannot create the user $user"
		exit 1
	}
fi
exec 9<&-
uid=$(id -u "$user")
home=$(getent passwd "$user" | cut -d: -f6)
if [ ! -d "$home" ]; then
	mkdir -p "$home" && chown "$user:" "$home"
fi

# Debian's udev rules make /dev/fuse 0666; a machine without udev (a container)
# may leave it 0600, and then no one but root can mount.
if ! runuser -u "$user" -- test -r /dev/fuse -a -w /dev/fuse; then
	echo "# /dev/fuse is $(stat -c %a /dev/fuse); making it 0666 as udev would"
	chmod 0666 /dev/fuse || {
		echo "Bail out! /dev/fuse is not usable by $user"
		exit 1
	}
fi

D=$(mktemp -d /tmp/agentfs-unprivileged.XXXXXX) || exit 1
cleanup() {
	local m f pid
	# mounts the user's scripts left (they should have cleaned up themselves)
	while read -r m; do
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
	done < <(awk -v d="$D/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo)
	for f in "$D"/tmp/*/state/workspaces/*/daemon.pid; do
		[ -f "$f" ] || continue
		read -r pid _ <"$f" || continue
		[[ $pid =~ ^[0-9]+$ ]] || continue
		if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q agentfs; then
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	rm -rf --one-file-system -- "$D"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

mkdir -p "$D/bin" "$D/integration" "$D/tmp" || exit 1
cp "$AGENTFS" "$D/bin/agentfs" && cp "$AGENTFS_FSOPS" "$D/bin/fsops" &&
	cp "$here"/integration/*.sh "$here"/integration/fsops.c "$D/integration/" || exit 1
chmod -R a+rX "$D"
chmod 755 "$D"
chown "$user:" "$D/tmp"

rc=0
for s in "${scripts[@]}"; do
	name=$(basename "$s")
	# Scripts outside integration/ (conformance/, differential/) source
	# ../integration/lib.sh: copy their whole directory beside it.
	sub=$(basename "$(dirname "$s")")
	if [ ! -f "$D/$sub/$name" ]; then
		mkdir -p "$D/$sub" && cp "$(dirname "$s")"/* "$D/$sub/" && chmod -R a+rX "$D/$sub" ||
			exit 1
	fi
	[ ${#scripts[@]} -gt 1 ] && echo "# $name as $user (uid $uid)"
	# a clean environment: the user's own HOME and PATH, none of root's
	runuser -u "$user" -- env -i \
		HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		TMPDIR="$D/tmp" \
		AGENTFS="$D/bin/agentfs" AGENTFS_FSOPS="$D/bin/fsops" \
		${ASAN_OPTIONS:+ASAN_OPTIONS="$ASAN_OPTIONS"} \
		${UBSAN_OPTIONS:+UBSAN_OPTIONS="$UBSAN_OPTIONS"} \
		${AGENTFS_TEST_WATCHDOG:+AGENTFS_TEST_WATCHDOG="$AGENTFS_TEST_WATCHDOG"} \
		${AGENTFS_SANITIZE:+AGENTFS_SANITIZE="$AGENTFS_SANITIZE"} \
		timeout -k 10 290 bash "$D/$sub/$name" || rc=1
done
exit $rc
