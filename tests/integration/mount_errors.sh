#!/usr/bin/env bash
# mount_errors.sh - every refusal of `agentfs mount`: one clear line, a non-zero
# exit, nothing left mounted, no workspace directory and no mountpoint created.
#
#   bash mount_errors.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
mkdir -p "$REPO" && (cd "$REPO" && git init -q -b main . && echo hello >README &&
	git add README && git commit -q -m initial) || bail "cannot create the repository"
REPO2=$T/repo2
mkdir -p "$REPO2" && (cd "$REPO2" && git init -q -b main .) || bail "cannot create repo2"

# refused DESC MESSAGE MNT [MOUNT ARGS...]: `agentfs mount ARGS` fails with one
# line containing MESSAGE, nothing is mounted at MNT (a path that was not a
# mountpoint before), and no workspace is left.
refused() {
	local desc=$1 msg=$2 mnt=$3 before after
	shift 3
	before=$(ls -A "$STATE/workspaces" 2>/dev/null | tr '\n' ' ')
	run "$AGENTFS" mount --state-dir "$STATE" "$@"
	after=$(ls -A "$STATE/workspaces" 2>/dev/null | tr '\n' ' ')
	local errs=()
	[ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] || errs+=("exit status $RC")
	[[ $OUT == *"$msg"* ]] || errs+=("output lacks: $msg")
	[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 1 ] || errs+=("not one line")
	[[ $OUT == "agentfs: mount: "* ]] || errs+=("not 'agentfs: mount: ...'")
	is_mounted "$mnt" && errs+=("$mnt is mounted")
	[ "$before" == "$after" ] || errs+=("workspaces before: '$before' after: '$after'")
	if [ ${#errs[@]} -eq 0 ]; then
		pass "$desc"
	else
		fail "$desc" "command: agentfs mount $*" "${errs[@]}" "$OUT"
	fi
}

# ------------------------------------------------------------------ the repository
mkdir -p "$T/m"
refused "a missing repository is refused" "No such file or directory" "$T/m" \
	"$T/no-such-repo" "$T/m"
mkdir -p "$T/plain"
refused "a directory that is not a git working tree is refused" "not a git working tree" \
	"$T/m" "$T/plain" "$T/m"
git init -q --bare "$T/bare.git" || bail "git init --bare"
refused "a bare repository is refused" "bare repository" "$T/m" "$T/bare.git" "$T/m"
mkdir -p "$REPO/sub"
refused "a subdirectory of a working tree is refused, naming the top level" \
	"working tree $REPO" "$T/m" "$REPO/sub" "$T/m"
echo x >"$T/afile"
refused "a regular file as REPO is refused" "not a directory" "$T/m" "$T/afile" "$T/m"

# A repository another user owns: git (and libgit2) refuse it unless listed in
# safe.directory; the refusal must say so, not "not a git working tree".  Root
# makes the repository (root's) and mounts it as the test user.
user=${AGENTFS_TEST_USER:-agentfs-test}
if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null && id -u "$user" >/dev/null 2>&1; then
	OTHER=$T/other
	mkdir -p "$OTHER/home" "$OTHER/m" && chown -R "$user" "$OTHER"
	run runuser -u "$user" -- env HOME="$OTHER/home" XDG_CONFIG_HOME="$OTHER/home/.config" \
		"$AGENTFS" mount --state-dir "$OTHER/state" "$REPO" "$OTHER/m"
	errs=()
	[ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] || errs+=("exit status $RC")
	[[ $OUT == "agentfs: mount: $REPO: owned by another user (git's safe.directory rule)"* ]] ||
		errs+=("not the ownership refusal")
	[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 1 ] || errs+=("not one line")
	is_mounted "$OTHER/m" && errs+=("$OTHER/m is mounted")
	[ -z "$(ls -A "$OTHER/state/workspaces" 2>/dev/null)" ] || errs+=("a workspace is left")
	if [ ${#errs[@]} -eq 0 ]; then
		pass "a repository owned by another user is refused naming safe.directory"
	else
		fail "a repository owned by another user is refused naming safe.directory" "${errs[@]}" "$OUT"
	fi
else
	skip "a repository owned by another user is refused naming safe.directory" \
		"needs root, runuser and the user $user"
fi

# ------------------------------------------------------------------ the mountpoint
mkdir -p "$T/full" && touch "$T/full/x"
refused "a mountpoint that is not empty is refused" "not empty" "$T/full" "$REPO" "$T/full"
mkdir -p "$T/dotonly" && touch "$T/dotonly/.hidden"
refused "a mountpoint holding only a dotfile is not empty either" "not empty" "$T/dotonly" \
	"$REPO" "$T/dotonly"
refused "a mountpoint that is a file is refused" "not a directory" "$T/afile" "$REPO" "$T/afile"
refused "a mountpoint whose parent is missing is refused" "nor its parent" "$T/a/b" \
	"$REPO" "$T/a/b"
[ -e "$T/a" ] && fail "the missing parent was not created" || pass "the missing parent was not created"
refused "a mountpoint inside the repository is refused" "inside the repository" "$REPO/sub" \
	"$REPO" "$REPO/sub"
mkdir -p "$T/outer"
refused "a repository inside the mountpoint is refused" "is inside the mountpoint" "$T" \
	--name outer "$REPO" "$T"
refused "the root directory as mountpoint is refused" "root directory" "$T/m" --name r "$REPO" /
ln -s "$REPO/sub" "$T/link-into-repo"
refused "a symlink into the repository as mountpoint is refused" "inside the repository" \
	"$REPO/sub" "$REPO" "$T/link-into-repo"

# ------------------------------------------------------------------ the workspace
refused "an invalid --name is refused" "not a valid workspace name" "$T/m" --name ../x \
	"$REPO" "$T/m"
refused "a --name longer than 128 characters is refused naming the limit" \
	"not a valid workspace name (1 to 128 letters" "$T/m" --name "$(printf 'a%.0s' {1..129})" \
	"$REPO" "$T/m"
mkdir -p "$T/.dotmnt"
refused "a mountpoint whose basename is no valid name asks for --name" "pass --name" \
	"$T/.dotmnt" "$REPO" "$T/.dotmnt"
run "$AGENTFS" mount --state-dir "$REPO/state" "$REPO" "$T/m"
if [ "$RC" -ne 0 ] && [[ $OUT == *"workspace directory is inside the repository"* ]] &&
	[ ! -e "$REPO/state" ]; then
	pass "a state directory inside the repository is refused and not created"
else
	fail "a state directory inside the repository is refused and not created" "exit $RC" "$OUT"
fi
run "$AGENTFS" mount --state-dir "$T/m/state" "$REPO" "$T/m"
if [ "$RC" -ne 0 ] && [[ $OUT == *"workspace directory is inside the mountpoint"* ]] &&
	[ ! -e "$T/m/state" ]; then
	pass "a state directory inside the mountpoint is refused and not created"
else
	fail "a state directory inside the mountpoint is refused and not created" "exit $RC" "$OUT"
fi

# A mountpoint inside another workspace's directory (its upper): the mount would
# be that workspace's changes.  STATE/mnt, where `agentfs run REPO` mounts, is fine.
mkdir -p "$STATE/workspaces/other/upper"
_MOUNTS+=("$STATE/workspaces/other/upper/m")
refused "a mountpoint inside another workspace's upper is refused" \
	"the mountpoint is inside the workspaces directory" "$STATE/workspaces/other/upper/m" \
	--name inner "$REPO" "$STATE/workspaces/other/upper/m"
is_mounted "$STATE/workspaces/other/upper/m" && fusermount3 -u "$STATE/workspaces/other/upper/m"
rm -rf --one-file-system "$STATE/workspaces/other" "$STATE/workspaces/inner"

# A workspace of another repository, and malformed workspace.yml files.
mkdir -p "$STATE/workspaces/theirs/upper" "$STATE/workspaces/theirs/work"
cat >"$STATE/workspaces/theirs/workspace.yml" <<EOF
version: 1
name: "theirs"
repo: "$REPO2"
base_commit: ""
mountpoint: "$T/elsewhere"
created: 1700000000
policy_digest: ""
EOF
refused "a workspace of another repository is refused" "belongs to the repository $REPO2" \
	"$T/m" --name theirs "$REPO" "$T/m"
mkdir -p "$STATE/workspaces/broken"
printf 'version: 1\nrepo: "oops\n' >"$STATE/workspaces/broken/workspace.yml"
refused "a malformed workspace.yml is refused with file:line:column" \
	"workspaces/broken/workspace.yml:3:1:" "$T/m" --name broken "$REPO" "$T/m"
printf 'version: 1\nrepo: /x\ncolour: red\n' >"$STATE/workspaces/broken/workspace.yml"
refused "an unknown key in workspace.yml is refused" "workspace.yml:3:1: unknown key 'colour'" \
	"$T/m" --name broken "$REPO" "$T/m"
mkdir -p "$STATE/workspaces/noyml"
# While another mount creates a workspace its directory has no workspace.yml
# yet, and that mount holds its lock: the refusal says the workspace is busy.
if command -v flock >/dev/null; then
	exec {lockfd}<"$STATE/workspaces/noyml"
	flock -x "$lockfd"
	refused "a workspace being created by another mount is in use" \
		"workspace noyml is in use by another agentfs process" "$T/m" --name noyml "$REPO" "$T/m"
	exec {lockfd}<&-
else
	skip "a workspace being created by another mount is in use" "no flock(1)"
fi
refused "a workspace directory without workspace.yml is refused" "no workspace.yml" "$T/m" \
	--name noyml "$REPO" "$T/m"
rm -rf "$STATE/workspaces/broken" "$STATE/workspaces/noyml" "$STATE/workspaces/theirs"

# ------------------------------------------------------------------ options and policy
refused "an unknown option is a usage error" "unknown option" "$T/m" --frobnicate "$REPO" "$T/m"
run "$AGENTFS" mount "$REPO"
assert_eq "a missing operand exits 2" 2 "$RC"
refused "a bad --journal-sync is refused" "always, interval or never" "$T/m" \
	--journal-sync=sometimes "$REPO" "$T/m"
printf 'hide:\n  - [unclosed\n' >"$T/bad-policy.yml"
refused "a malformed --policy file is refused with file:line:column" "bad-policy.yml:" "$T/m" \
	--policy "$T/bad-policy.yml" "$REPO" "$T/m"
refused "a missing --policy file is refused" "no-such-policy.yml" "$T/m" \
	--policy "$T/no-such-policy.yml" "$REPO" "$T/m"
run "$AGENTFS" mount --help
if [ "$RC" -eq 0 ] && [[ $OUT == *"usage: agentfs mount"* ]] && [[ $OUT == *"--state-dir"* ]]; then
	pass "agentfs mount --help prints the usage"
else
	fail "agentfs mount --help prints the usage" "exit $RC" "$OUT"
fi

# ------------------------------------------------------------------ the machine
if [ "$(id -u)" -ne 0 ]; then
	run env PATH=/nonexistent "$AGENTFS" mount --state-dir "$STATE" "$REPO" "$T/m"
	if [ "$RC" -ne 0 ] && [[ $OUT == *"fusermount3: not found on PATH"* ]] && ! is_mounted "$T/m"; then
		pass "without fusermount3 on PATH, an unprivileged mount is refused"
	else
		fail "without fusermount3 on PATH, an unprivileged mount is refused" "exit $RC" "$OUT"
	fi
else
	skip "without fusermount3 on PATH, an unprivileged mount is refused" "root mounts without it"
fi

if [ "$(id -u)" -ne 0 ]; then
	mkdir -p "$T/readonly-mnt" && chmod 555 "$T/readonly-mnt"
	refused "a mountpoint the user cannot write is refused (fusermount3's rule)" \
		"not writable by you" "$T/readonly-mnt" "$REPO" "$T/readonly-mnt"
	chmod 755 "$T/readonly-mnt"
else
	skip "a mountpoint the user cannot write is refused" "root may write anywhere"
fi

# A private mount namespace (root only) fakes a machine without /dev/fuse and a
# state directory on a filesystem without user xattrs (ramfs has none).
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
	touch "$T/not-a-device"
	run unshare -m --propagation private bash -c \
		'mount --bind "$1" /dev/fuse && exec "$2" mount --state-dir "$3" "$4" "$5"' \
		_ "$T/not-a-device" "$AGENTFS" "$STATE" "$REPO" "$T/m"
	if [ "$RC" -ne 0 ] && [[ $OUT == *"/dev/fuse: not available"* ]]; then
		pass "without /dev/fuse, mount is refused"
	else
		fail "without /dev/fuse, mount is refused" "exit $RC" "$OUT"
	fi
	mkdir -p "$T/ramfs"
	run unshare -m --propagation private bash -c \
		'mount -t ramfs none "$1" && "$2" mount --state-dir "$1/state" "$3" "$4"; rc=$?;
		 ls -A "$1/state/workspaces" 2>/dev/null | sed "s/^/left: /"; exit $rc' \
		_ "$T/ramfs" "$AGENTFS" "$REPO" "$T/m"
	if [ "$RC" -ne 0 ] && [[ $OUT == *"lacks user extended attributes"* ]] &&
		[[ $OUT != *"left: "* ]] && ! is_mounted "$T/m"; then
		pass "a state directory without user xattrs is refused, leaving no workspace"
	else
		fail "a state directory without user xattrs is refused, leaving no workspace" \
			"exit $RC" "$OUT"
	fi
else
	skip "without /dev/fuse, mount is refused" "needs root for a mount namespace"
	skip "a state directory without user xattrs is refused" "needs root for a mount namespace"
fi

# ------------------------------------------------------------------ failures after checks
# A FUSE option libfuse rejects fails in the daemon, after the workspace and the
# missing mountpoint were created: both are removed again, and the daemon's last
# line is the error.
run "$AGENTFS" mount --state-dir "$STATE" -o no_such_fuse_option_xyz "$REPO" "$T/created"
errs=()
[ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] || errs+=("exit status $RC")
[[ $OUT == "agentfs: mount: "* ]] || errs+=("not 'agentfs: mount: ...'")
[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 1 ] || errs+=("not one line")
[ -e "$T/created" ] && errs+=("the mountpoint it created is left")
[ -e "$STATE/workspaces/created" ] && errs+=("the workspace is left")
is_mounted "$T/created" && errs+=("$T/created is mounted")
if [ ${#errs[@]} -eq 0 ]; then
	pass "a daemon failure removes the new workspace and the created mountpoint"
else
	fail "a daemon failure removes the new workspace and the created mountpoint" "${errs[@]}" "$OUT"
fi

# The daemon killed (kill -9) once it has mounted, before it tells the
# command the mount is ready (AGENTFS_TEST_READY_DELAY_MS holds the ready
# byte back): the command says so, and leaves neither the dead mount, nor
# the new workspace, nor the mountpoint it created.
_MOUNTS+=("$T/killed")
AGENTFS_TEST_READY_DELAY_MS=3000 "$AGENTFS" mount --state-dir "$STATE" "$REPO" "$T/killed" \
	>"$T/killed.out" 2>&1 &
mounter=$!
for _ in $(seq 1 100); do is_mounted "$T/killed" && break; sleep 0.05; done
pid=$(daemon_pid_of "$T/killed") && _PIDS+=("$pid") && kill -KILL "$pid"
wait "$mounter"
RC=$?
OUT=$(cat "$T/killed.out")
errs=()
[ -n "$pid" ] || errs+=("no daemon.pid to kill")
[ "$RC" -ne 0 ] || errs+=("exit status 0")
[[ $OUT == "agentfs: mount: $T/killed: the daemon was killed by signal 9"* ]] ||
	errs+=("not 'the daemon was killed by signal 9'")
[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 1 ] || errs+=("not one line")
is_mounted "$T/killed" && errs+=("the dead mount is left at $T/killed")
[ -e "$T/killed" ] && errs+=("the mountpoint it created is left")
[ -e "$STATE/workspaces/killed" ] && errs+=("the workspace is left")
if [ ${#errs[@]} -eq 0 ]; then
	pass "a daemon killed before the mount is ready leaves no mount and no workspace"
else
	fail "a daemon killed before the mount is ready leaves no mount and no workspace" "${errs[@]}" "$OUT"
fi
is_mounted "$T/killed" && timeout 10 fusermount3 -uz "$T/killed"
# Too few file descriptors (RLIMIT_NOFILE, from 10 on): each mount either
# fails with one line and leaves nothing mounted, or succeeds with a mount
# that answers.  Each limit runs out at another step of the daemon's start:
# the journal, /dev/fuse, the request loop's set-up, which reported the mount
# ready before it and then ended it (the person saw a mount that was gone,
# or one that answered EMFILE).
bad=()
for n in $(seq 10 30); do
	mnt=$T/fd$n
	mkdir -p "$mnt"
	_MOUNTS+=("$mnt")
	OUT=$(ulimit -n "$n" && t "$AGENTFS" mount --state-dir "$T/fdstate$n" "$REPO" "$mnt" 2>&1)
	RC=$?
	if [ "$RC" -ne 0 ]; then
		[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 1 ] && [[ $OUT == "agentfs: mount: "* ]] ||
			bad+=("limit $n: exit $RC, not one 'agentfs: mount:' line: $OUT")
		is_mounted "$mnt" && bad+=("limit $n: exit $RC but mounted")
	else
		# The private .git's build holds descriptors for a while: wait for it.
		t ls "$mnt/.git" >/dev/null 2>&1
		listing=$(t ls "$mnt" 2>&1) && [[ $'\n'$listing$'\n' == *$'\nREADME\n'* ]] ||
			bad+=("limit $n: mounted, but ls: $listing")
		t "$AGENTFS" unmount --state-dir "$T/fdstate$n" "$mnt" >/dev/null 2>&1
	fi
done
if [ ${#bad[@]} -eq 0 ]; then
	pass "with 10-30 file descriptors a mount fails with one line or answers"
else
	fail "with 10-30 file descriptors a mount fails with one line or answers" "${bad[@]}"
fi

# A missing mountpoint with an existing parent is created; then the checks that
# need a live mount.
mount_ws "$REPO" "$T/new-mnt"
if [ "$RC" -eq 0 ] && [ -d "$T/new-mnt" ]; then
	pass "a missing mountpoint whose parent exists is created"
else
	fail "a missing mountpoint whose parent exists is created" "exit $RC" "$OUT"
	bail "mount failed; the refusals of a live mount cannot be tested"
fi
pid=$(daemon_pid_of "$T/new-mnt")
mkdir -p "$T/m2"
refused "a workspace mounted elsewhere by a live daemon is refused" \
	"already mounted at $T/new-mnt (pid $pid)" "$T/m2" --name new-mnt "$REPO" "$T/m2"
refused "a mountpoint that is already a mount is refused" "already a mount" "$T/m2" \
	--name another "$REPO" "$T/new-mnt"
run "$AGENTFS" mount --state-dir "$STATE" --name another "$REPO" "$T/new-mnt"
assert_eq "the refused mount did not stack a second mount" 1 \
	"$(awk -v m="$T/new-mnt" '$5 == m' /proc/self/mountinfo | wc -l)"
step "the first mount still answers" stat "$T/new-mnt/README"
step "agentfs unmount" "$AGENTFS" unmount --state-dir "$STATE" "$T/new-mnt"
wait_gone "$pid" 10 && pass "the daemon exited" || fail "the daemon exited" "pid $pid"
is_mounted "$T/new-mnt" && fail "nothing is mounted after unmount" || pass "nothing is mounted after unmount"

done_testing
