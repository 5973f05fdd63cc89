#!/usr/bin/env bash
# bench.sh - agentfs against native ext4 and fuse-overlayfs, same tree, same run.
#
#   tests/bench/bench.sh [--smoke] [--modes] [--rounds N] [--tree small|full]
#                        [--agentfs PATH] [--raw FILE] [--fresh-ext4] [--user NAME]
#
# The tree is the Linux kernel source of Debian's linux-source-6.1 package
# (/usr/src/linux-source-6.1.tar.xz), committed into git repositories: "small"
# (~11k files: include/, kernel/, mm/, fs/, lib/, scripts/, tools/{lib,include,
# build,...} and a few more) and "full" (all ~78k files).  They are prepared once
# and cached under $AGENTFS_BENCH_CACHE (default /var/tmp/agentfs-bench); the
# runs' scratch space (native clones, uppers, workspaces) lives there too, so
# every system works on the same file system.
#
# --fresh-ext4 (root) runs every system on a new ext4 instead: an image file
# under the cache (sparse, 24 GiB), made by mkfs.ext4 with its defaults (so with
# a journal, as a distribution's installer makes one), attached to a loop
# device with direct I/O (no second page cache of the image), and mounted for
# the run only; the trees are copied into it (~20 s).  Use it when the cache's
# file system is not what people work on: ext4 without a journal, as some
# virtual machines' root file systems are, skips inodes freed in the last
# 60 seconds when it allocates one (recently_deleted in fs/ext4/ialloc.c, for
# file systems without a journal only) and scans past all of them on every
# create, so the small-file rows there measure the disk's recent history as
# much as the systems.
#
# Systems: native (a git clone of the repository, on the cache's file system),
# fuse-overlayfs (the repository as lowerdir, fresh upper and work dirs; it has
# no policy, so it shows .git), and agentfs (default policy, journal on).  With
# --modes also agentfs-nojournal (--no-journal) and agentfs-nopolicy (a policy
# file saying `extends: none` and `git: private`: no rule at all, the same
# .git as the default).  With --user NAME (root) also agentfs-user: agentfs
# as people run it, mounted by the unprivileged user NAME (any account but
# root; `nobody` will do) through the setuid fusermount3, so without FUSE
# passthrough and with default_permissions, on repositories that user cloned
# from the trees at the start of the run (git and libgit2 refuse a
# repository another user owns), every workload run as that user (setpriv;
# each is timed inside the user's shell, from before its command to after
# it).  Every system gets a fresh instance for each
# phase of each round, and the systems take turns within a round in an order
# that rotates from round to round and is reversed every other round (so no
# system always follows the same neighbour); after each instance is torn down
# the script syncs, so its writeback falls on no other system's timing.
#
# Workloads run on the --tree tree (default small):
#   git phase  git status cold (caches dropped), warm (the next run) and warm
#              again (the run after that: on a FUSE mount the cold run's
#              directory listings leave each directory's attributes stale,
#              so the first warm run asks for them again), appending to 100
#              files, git diff --stat.  native and fuse-overlayfs use the real
#              .git; agentfs (every mode) the workspace-private .git (a
#              filtered base commit, objects on demand)
#   tree phase mount until the first `ls` succeeds (the median of 5 mounts a
#              round, see mount_up), find -type f, ls -lR, cat
#              of every file, grep -r (each once as the fresh mount's first
#              walk, then again warm), make -j2 of libbpf (tools/lib/bpf: ~45
#              C files, needs libelf and zlib headers), 1000 editor-style saves
#              (write FILE.benchtmp, rename onto FILE), 10k 4 KiB creates then
#              deletes, 1 GiB sequential write with fsync and read (caches
#              dropped before each of three reads; the fastest counts: see
#              tm_cold), creating a 20k-file tree and rm -rf of it
#   full phase mount until the first `ls` succeeds on the full tree (5 mounts
#              a round, as above), a walk
#              (find -type f, then ls -lR), the daemon's VmRSS and VmHWM
#              after the walk
# .git is left out of every walk (find/ls/cat/grep), so all systems read the same
# files (agentfs's default policy also hides a few dotfiles).  Caches are dropped
# only where said (root only; otherwise those rows are warm and say so).
#
# Output: a Markdown table of medians per workload and system, and the ratios
# fuse-overlayfs/native, agentfs/native and agentfs/fuse-overlayfs of this run.
# No timing is asserted anywhere.  --smoke uses a tiny generated tree (a ~20-file
# C project for the build), one round and small counts; it runs in seconds and
# fails only if a workload did not run or produced no sane row.
#
# Every mount is unmounted on exit (trap), every command runs under timeout, and
# only processes this script started are waited for or signalled (by pid).

# The whole script is one compound command: bash parses it fully before running
# it, so editing the file during a run cannot change the run.
{
set -u
set -o pipefail
export LC_ALL=C
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_ROOT=$(cd "$HERE/../.." && pwd)

SMOKE=0
MODES=0
ROUNDS=3
TREE=small
RAW=
FRESH_EXT4=0
USER_NAME=
AGENTFS=${AGENTFS:-}
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) SMOKE=1 ;;
	--modes) MODES=1 ;;
	--rounds)
		ROUNDS=${2:?--rounds needs a number}
		shift
		;;
	--tree)
		TREE=${2:?--tree needs small or full}
		shift
		;;
	--agentfs)
		AGENTFS=${2:?--agentfs needs a path}
		shift
		;;
	--raw)
		RAW=${2:?--raw needs a file}
		shift
		;;
	--fresh-ext4) FRESH_EXT4=1 ;;
	--user)
		USER_NAME=${2:?--user needs an account name}
		shift
		;;
	-h | --help)
		sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "bench.sh: unknown argument: $1" >&2
		exit 2
		;;
	esac
	shift
done
case $TREE in small | full) ;; *)
	echo "bench.sh: --tree: not small or full: $TREE" >&2
	exit 2
	;;
esac
case $ROUNDS in '' | *[!0-9]* | 0)
	echo "bench.sh: --rounds: not a positive number: $ROUNDS" >&2
	exit 2
	;;
esac

die() {
	echo "bench.sh: $*" >&2
	exit 1
}
note() { echo "# $*" >&2; }

# skip_or_die MESSAGE: a smoke run skips (exit 77, as meson reads it) what
# this machine cannot do; a real run stops.
skip_or_die() {
	if [ $SMOKE = 1 ]; then
		echo "bench.sh: SKIP: $*"
		exit 77
	fi
	die "$*"
}
if [ $FRESH_EXT4 = 1 ]; then
	[ "$(id -u)" = 0 ] || skip_or_die "--fresh-ext4: needs root (mkfs, losetup, mount)"
	for tool in mkfs.ext4 losetup mount umount; do
		command -v $tool >/dev/null 2>&1 || skip_or_die "--fresh-ext4: $tool is required"
	done
fi

[ -n "$AGENTFS" ] || AGENTFS=$SRC_ROOT/build/cli/agentfs
[ -x "$AGENTFS" ] || die "agentfs binary not found: $AGENTFS (set AGENTFS or --agentfs)"
AGENTFS=$(cd "$(dirname "$AGENTFS")" && pwd)/$(basename "$AGENTFS")

if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null 2>&1; then
	echo "bench.sh: SKIP: no /dev/fuse or fusermount3"
	exit 77
fi
for tool in git make cc timeout mountpoint; do
	command -v $tool >/dev/null 2>&1 || die "$tool is required"
done
HAVE_FO=1
if ! command -v fuse-overlayfs >/dev/null 2>&1; then
	[ $SMOKE = 1 ] || die "fuse-overlayfs is required (apt-get install -y fuse-overlayfs)"
	HAVE_FO=0
	note "fuse-overlayfs not installed: its column is skipped"
fi
# --user: an existing account other than root, and root to act as it.  A
# smoke run goes on without the column when it cannot be had.
if [ -n "$USER_NAME" ]; then
	why=
	if [ "$(id -u)" != 0 ]; then
		why="needs root (to run commands as $USER_NAME)"
	elif ! USER_UID=$(id -u -- "$USER_NAME" 2>/dev/null) || ! USER_GID=$(id -g -- "$USER_NAME"); then
		why="no account $USER_NAME"
	elif [ "$USER_UID" = 0 ]; then
		why="$USER_NAME is root: name an unprivileged account"
	elif ! command -v setpriv >/dev/null 2>&1; then
		why="setpriv (util-linux) is required"
	elif [ ! -u "$(command -v fusermount3)" ]; then
		why="fusermount3 is not setuid root: $USER_NAME cannot mount"
	fi
	if [ -n "$why" ]; then
		[ $SMOKE = 1 ] || die "--user: $why"
		note "--user: $why: the agentfs-user column is skipped"
		USER_NAME=
	fi
fi

# The smoke mode neither drops caches nor syncs between systems: it times
# nothing, and in the test suite both would slow every test running beside it.
CAN_DROP=0
if [ $SMOKE = 0 ] && [ -w /proc/sys/vm/drop_caches ] &&
	(echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
	CAN_DROP=1
fi

# Keep the person's configuration out of git and agentfs.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="agentfs bench" GIT_AUTHOR_EMAIL="bench@agentfs.invalid"
export GIT_COMMITTER_NAME="agentfs bench" GIT_COMMITTER_EMAIL="bench@agentfs.invalid"
export GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"

# ------------------------------------------------------------------ sizes
if [ $SMOKE = 1 ]; then
	ROUNDS=1
	N_EDITS=10 N_SAVES=20 N_CREATES=200 SEQ_MIB=8 N_RMTREE=500 MOUNT_TRIES=1
	WL_TIMEOUT=60
else
	N_EDITS=100 N_SAVES=1000 N_CREATES=10000 SEQ_MIB=1024 N_RMTREE=20000 MOUNT_TRIES=5
	WL_TIMEOUT=900
fi

# ------------------------------------------------------------------ scratch + cleanup
if [ $SMOKE = 1 ]; then
	CACHE=$(mktemp -d "${TMPDIR:-/tmp}/agentfs-bench-smoke.XXXXXX") || die "mktemp failed"
	RUN=$CACHE/run
else
	CACHE=${AGENTFS_BENCH_CACHE:-/var/tmp/agentfs-bench}
	mkdir -p "$CACHE" || die "cannot create $CACHE"
	CACHE=$(cd "$CACHE" && pwd)
	RUN=$(mktemp -d "$CACHE/run.XXXXXX") || die "mktemp failed"
fi
mkdir -p "$RUN/cfg"
export XDG_CONFIG_HOME=$RUN/cfg XDG_STATE_HOME=$RUN/xdg-state
ROWS=$RUN/rows.tsv
: >"$ROWS"

MOUNTS=() # mountpoints this script mounted
PIDS=()   # daemons this script started or found in daemon.pid
SCRATCH=$RUN # where the instances live (the fresh ext4 with --fresh-ext4)
EXT4_DIR= EXT4_LOOP= EXT4_IMG=

cleanup() {
	local m p i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		m=${MOUNTS[$i]}
		is_mounted "$m" || continue
		timeout 30 "$AGENTFS" unmount "$m" >/dev/null 2>&1 ||
			timeout 10 fusermount3 -u -- "$m" 2>/dev/null ||
			timeout 10 fusermount3 -uz -- "$m" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null && kill "$p" 2>/dev/null
	done
	if [ -n "$EXT4_DIR" ]; then
		for p in "${PIDS[@]}"; do wait_gone "$p" 30; done
		mountpoint -q -- "$EXT4_DIR" && { timeout 60 umount -- "$EXT4_DIR" ||
			timeout 60 umount -l -- "$EXT4_DIR"; }
		[ -n "$EXT4_LOOP" ] && losetup -d "$EXT4_LOOP" 2>/dev/null
		rmdir -- "$EXT4_DIR" 2>/dev/null
		[ -n "$EXT4_IMG" ] && rm -f -- "$EXT4_IMG"
	fi
	if [ $SMOKE = 1 ]; then
		rm -rf -- "$CACHE"
	elif [ -n "${RUN:-}" ] && [ -d "$RUN" ]; then
		[ -n "$RAW" ] && cp -- "$ROWS" "$RAW" 2>/dev/null
		rm -rf -- "$RUN"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_us() { echo "${EPOCHREALTIME/./}"; }

# is_mounted DIR: is a file system mounted on DIR?  From the mount table, not
# from stat(2) as mountpoint(1) does: root may not look into a FUSE mount of
# another user (no allow_other).  The bench's paths have no blanks, which
# mountinfo would escape.
is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# as_user COMMAND...: COMMAND as the --user account, with the bench's git
# settings and its own HOME.
as_user() {
	setpriv --reuid="$USER_UID" --regid="$USER_GID" --clear-groups \
		env HOME="$USER_HOME" XDG_STATE_HOME="$USER_HOME/.local/state" "$@"
}

drop_caches() {
	[ $CAN_DROP = 1 ] || return 0
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

exited() { # PID: has the process ended?  A zombie has (proc(5), state "Z"):
	# a daemon's parent is init, which may collect it a second or more later.
	local st
	kill -0 "$1" 2>/dev/null || return 0
	read -r st <"/proc/$1/stat" 2>/dev/null || return 0
	st=${st##*) }
	[ "${st%% *}" = Z ]
}

wait_gone() { # PID SECONDS: wait for a process to exit
	local i
	for ((i = 0; i < $2 * 100; i++)); do
		exited "$1" && return 0
		sleep 0.01
	done
	return 1
}

# A private copy of the binary: a rebuild during the run must not change it.
cp -- "$AGENTFS" "$RUN/agentfs" || die "cannot copy $AGENTFS"
AGENTFS_ORIG=$AGENTFS
AGENTFS=$RUN/agentfs

# ------------------------------------------------------------------ helpers
BENCHOPS=$RUN/benchops
cc -O2 -Wall -Wextra -o "$BENCHOPS" "$HERE/benchops.c" || die "cannot build benchops"

commit_tree() { # DIR: make DIR a git repository with one commit of everything
	(
		cd "$1" &&
			git init -q -b main . &&
			git add -A -f &&
			git -c gc.auto=0 commit -q -m "bench tree" &&
			git gc -q &&
			git status --porcelain >/dev/null
	) || die "cannot commit $1"
}

prepare_kernel() {
	local tarball src
	[ -f "$CACHE/repo-full.ready" ] && [ -f "$CACHE/repo-small.ready" ] && return 0
	tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1)
	[ -n "$tarball" ] || die "no /usr/src/linux-source-*.tar.xz (apt-get install -y linux-source-6.1)"
	note "preparing the kernel trees from $tarball under $CACHE (once)"
	rm -rf -- "$CACHE/repo-full" "$CACHE/repo-small" "$CACHE/extract"
	mkdir -p "$CACHE/extract"
	timeout 1200 tar -C "$CACHE/extract" -xf "$tarball" || die "cannot extract $tarball"
	src=$(ls -d "$CACHE"/extract/linux-source-* | head -1)
	mv -- "$src" "$CACHE/repo-full" && rmdir "$CACHE/extract"
	# Debian's tarball appends "ignore everything at the top level" to .gitignore;
	# drop that block so the ignore rules are upstream's, where every file of the
	# tarball is tracked (git add -f below, as upstream's dotfiles are).
	sed -i '/^# Debian packaging/,$d' "$CACHE/repo-full/.gitignore"
	sed -i '${/^#$/d}' "$CACHE/repo-full/.gitignore"
	mkdir -p "$CACHE/repo-small/tools"
	(
		cd "$CACHE/repo-full" &&
			for f in * .[!.]*; do [ -f "$f" ] && cp -a -- "$f" "$CACHE/repo-small/"; done &&
			cp -a include kernel mm fs lib scripts block crypto security ipc init certs usr \
				virt io_uring LICENSES "$CACHE/repo-small/" &&
			cp -a tools/lib tools/include tools/arch tools/build tools/scripts tools/objtool \
				tools/Makefile "$CACHE/repo-small/tools/"
	) || die "cannot copy the small tree"
	timeout 1800 bash -c "$(declare -f commit_tree die); commit_tree '$CACHE/repo-small'" || exit 1
	touch "$CACHE/repo-small.ready"
	timeout 3600 bash -c "$(declare -f commit_tree die); commit_tree '$CACHE/repo-full'" || exit 1
	touch "$CACHE/repo-full.ready"
}

prepare_smoke() {
	local r=$CACHE/repo-small d i
	mkdir -p "$r/cproj" "$r/docs"
	for ((d = 0; d < 20; d++)); do
		mkdir -p "$r/src/m$d"
		for ((i = 0; i < 10; i++)); do
			printf '/* module %d file %d */\nint m%d_f%d(void) { return %d; }\n' \
				$d $i $d $i $((d * i)) >"$r/src/m$d/f$i.c"
		done
	done
	for ((i = 0; i < 20; i++)); do
		printf '#include "common.h"\nint unit%d(int x) { return x * %d + COMMON; }\n' $i $i \
			>"$r/cproj/unit$i.c"
	done
	printf '#define COMMON 7\n' >"$r/cproj/common.h"
	printf 'int unit0(int);\nint main(void) { return unit0(0) != 7; }\n' >"$r/cproj/main.c"
	cat >"$r/cproj/Makefile" <<'EOF'
SRCS := $(wildcard *.c)
OBJS := $(SRCS:.c=.o)
prog: $(OBJS)
	$(CC) -o $@ $(OBJS)
%.o: %.c common.h
	$(CC) -O2 -c -o $@ $<
EOF
	printf 'a smoke tree for bench.sh\n' >"$r/README"
	printf '*.o\nprog\n' >"$r/.gitignore"
	printf 'SECRET=1\n' >"$r/.env"
	commit_tree "$r"
	ln -s repo-small "$CACHE/repo-full"
}

if [ $SMOKE = 1 ]; then
	prepare_smoke
	BUILD_DIR=cproj
	BUILD_CMD="make -j2 -s -C cproj"
	BUILD_CHECK=cproj/prog
	GREP_WORD=return
else
	prepare_kernel
	BUILD_DIR=tools/lib/bpf
	BUILD_CMD="make -j2 -s -C tools/lib/bpf"
	BUILD_CHECK=tools/lib/bpf/libbpf.a
	GREP_WORD=EXPORT_SYMBOL
	if ! pkg-config --exists libelf zlib 2>/dev/null; then
		note "libelf/zlib headers missing: the build row is skipped (apt-get install -y libelf-dev zlib1g-dev)"
		BUILD_CMD=
	fi
fi
TREES=$CACHE
if [ $FRESH_EXT4 = 1 ]; then
	EXT4_IMG=$RUN.ext4.img
	EXT4_DIR=$RUN.ext4
	note "--fresh-ext4: making $EXT4_IMG and copying the trees into it"
	truncate -s "$([ $SMOKE = 1 ] && echo 1G || echo 24G)" -- "$EXT4_IMG" ||
		die "cannot create $EXT4_IMG"
	mkfs.ext4 -q -F -- "$EXT4_IMG" || die "mkfs.ext4 $EXT4_IMG failed"
	EXT4_LOOP=$(losetup --find --show --direct-io=on -- "$EXT4_IMG") ||
		skip_or_die "--fresh-ext4: no loop device for $EXT4_IMG"
	mkdir -p -- "$EXT4_DIR" && mount -- "$EXT4_LOOP" "$EXT4_DIR" ||
		die "cannot mount $EXT4_LOOP on $EXT4_DIR"
	timeout 1800 cp -a -- "$CACHE/repo-small" "$CACHE/repo-full" "$EXT4_DIR/" ||
		die "cannot copy the trees into $EXT4_DIR"
	# The copies' files have new inode numbers and change times, which
	# their git indexes do not know: git would hash every file again (and
	# agentfs's private .git, built from the repository at mount, with it)
	# until an index refresh records them.
	for t in repo-small repo-full; do
		timeout 600 git -C "$EXT4_DIR/$t" status --porcelain >/dev/null ||
			die "cannot refresh the index of $EXT4_DIR/$t"
	done
	sync
	TREES=$EXT4_DIR
	SCRATCH=$EXT4_DIR/run
	mkdir -p -- "$SCRATCH"
fi
REPO=$TREES/repo-$TREE
REPO_FULL=$TREES/repo-full
if [ $FRESH_EXT4 = 1 ]; then
	[ "$(findmnt -n -o SOURCE -T "$REPO")" = "$EXT4_LOOP" ] ||
		die "--fresh-ext4: $REPO is not on $EXT4_LOOP"
fi
NFILES_REPO=$(git -C "$REPO" ls-files | wc -l)
NFILES_FULL=$(git -C "$REPO_FULL" ls-files | wc -l)

# Files the edit and save workloads touch: the first .c files of the tree.
mapfile -t EDIT_FILES < <(git -C "$REPO" ls-files '*.c' | head -n "$N_EDITS")
mapfile -t SAVE_FILES < <(git -C "$REPO" ls-files '*.c' | tail -n 10)
[ ${#EDIT_FILES[@]} = "$N_EDITS" ] || die "the tree has fewer than $N_EDITS .c files"

# No rule at all; git: private keeps the same .git as the default policy (an
# explicit file with extends: none has no .git in the view otherwise).
printf 'extends: none\ngit: private\n' >"$RUN/cfg/empty.yml"

SYSTEMS=(native)
[ $HAVE_FO = 1 ] && SYSTEMS+=(fuse-overlayfs)
SYSTEMS+=(agentfs)
[ $MODES = 1 ] && SYSTEMS+=(agentfs-nojournal agentfs-nopolicy)

# --user: the account's own clones of the trees, beside the other systems'
# instances; the directories above them open to it (mktemp made them 0700).
if [ -n "$USER_NAME" ]; then
	USER_HOME=$SCRATCH/user
	chmod 755 "$RUN" "$SCRATCH" && { [ $SMOKE = 0 ] || chmod 755 "$CACHE"; } &&
		mkdir -p "$USER_HOME" && chown "$USER_UID:$USER_GID" "$USER_HOME" ||
		die "cannot make $USER_HOME for $USER_NAME"
	[ -z "$EXT4_DIR" ] || chmod 755 "$EXT4_DIR" || die "cannot open $EXT4_DIR to $USER_NAME"
	# Only to clone the trees, which root owns (safe.directory, git-config(1)).
	printf '[safe]\n\tdirectory = *\n' >"$RUN/cfg/safe.gitconfig" && chmod 644 "$RUN/cfg/safe.gitconfig"
	USER_REPO=$USER_HOME/repo
	USER_REPO_FULL=$USER_REPO
	[ "$(realpath "$REPO_FULL")" = "$(realpath "$REPO")" ] || USER_REPO_FULL=$USER_HOME/repo-full
	for t in "$REPO:$USER_REPO" "$REPO_FULL:$USER_REPO_FULL"; do
		[ -d "${t#*:}" ] && continue
		as_user timeout 1800 env GIT_CONFIG_GLOBAL="$RUN/cfg/safe.gitconfig" \
			git clone -q -- "${t%%:*}" "${t#*:}" || die "$USER_NAME cannot clone ${t%%:*}"
	done
	SYSTEMS+=(agentfs-user)
fi

# ------------------------------------------------------------------ instances
# inst_up SYSTEM ROLE REPO: a fresh instance; sets INST (the directory to work
# in), INST_PID (the daemon, if any) and INST_MOUNT_S (seconds from the mount
# command to the first successful ls; for native just the ls).
# ROLE full reuses the repository itself for native (reads only).
INST_SEQ=0
inst_up() {
	local sys=$1 role=$2 repo=$3 base t0 t1 i opts=()
	INST_SEQ=$((INST_SEQ + 1))
	base=$SCRATCH/i$INST_SEQ-$sys-$role
	mkdir -p "$base"
	INST_PID=
	case $sys in
	native)
		if [ "$role" = full ]; then
			INST=$repo
		else
			INST=$base/tree
			timeout 600 git clone -q "$repo" "$INST" || return 1
		fi
		t0=$(now_us)
		ls "$INST" >/dev/null || return 1
		t1=$(now_us)
		;;
	fuse-overlayfs)
		INST=$base/mnt
		mkdir -p "$base/upper" "$base/work" "$INST"
		t0=$(now_us)
		fuse-overlayfs -f -o "lowerdir=$repo,upperdir=$base/upper,workdir=$base/work" "$INST" \
			2>"$base/fo.log" &
		INST_PID=$!
		PIDS+=("$INST_PID")
		MOUNTS+=("$INST")
		for ((i = 0; i < 200000; i++)); do
			mountpoint -q "$INST" && ls "$INST" >/dev/null 2>&1 && break
			kill -0 "$INST_PID" 2>/dev/null || break
			[ $(($(now_us) - t0)) -gt 30000000 ] && break
		done
		t1=$(now_us)
		mountpoint -q "$INST" || {
			cat "$base/fo.log" >&2
			return 1
		}
		;;
	agentfs-user)
		# The user's own repository, workspace and mount point; the mount
		# and the first ls timed in the user's shell.
		INST=$base/mnt
		[ "$repo" = "$REPO_FULL" ] && repo=$USER_REPO_FULL || repo=$USER_REPO
		mkdir -p "$INST" && chown "$USER_UID:$USER_GID" "$base" "$INST" || return 1
		MOUNTS+=("$INST")
		as_user bash -c 't0=$EPOCHREALTIME
			timeout 60 "$1" mount "$2" "$3" --state-dir "$4" || exit 1
			ls "$3" >/dev/null || exit 1
			echo "${t0/./} ${EPOCHREALTIME/./}" >&3' _ \
			"$AGENTFS" "$repo" "$INST" "$base/state" 3>"$RUN/mount.t" || return 1
		read -r t0 t1 <"$RUN/mount.t" || return 1
		INST_PID=$(awk 'NR == 1 { print $1 }' "$base/state/workspaces/mnt/daemon.pid" 2>/dev/null)
		[ -n "$INST_PID" ] && PIDS+=("$INST_PID")
		# The column is the unprivileged daemon's or nothing.
		[ "$(awk '$1 == "Uid:" { print $2 }' "/proc/$INST_PID/status" 2>/dev/null)" = "$USER_UID" ] || {
			note "agentfs-user: the daemon ${INST_PID:-?} does not run as $USER_NAME"
			return 1
		}
		;;
	agentfs*)
		INST=$base/mnt
		mkdir -p "$INST"
		case $sys in
		agentfs-nojournal) opts+=(--no-journal) ;;
		agentfs-nopolicy) opts+=(--policy "$RUN/cfg/empty.yml") ;;
		esac
		MOUNTS+=("$INST")
		t0=$(now_us)
		timeout 60 "$AGENTFS" mount "$repo" "$INST" --state-dir "$base/state" "${opts[@]}" ||
			return 1
		ls "$INST" >/dev/null || return 1
		t1=$(now_us)
		INST_PID=$(awk 'NR == 1 { print $1 }' "$base/state/workspaces/mnt/daemon.pid" 2>/dev/null)
		[ -n "$INST_PID" ] && PIDS+=("$INST_PID")
		;;
	esac
	INST_BASE=$base
	INST_MOUNT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }')
}

inst_down() {
	local sys=$1
	case $sys in
	native) [ "$INST" != "$REPO" ] && [ "$INST" != "$REPO_FULL" ] && rm -rf -- "$INST_BASE" ;;
	fuse-overlayfs)
		timeout 30 fusermount3 -u -- "$INST" || timeout 10 fusermount3 -uz -- "$INST"
		wait_gone "$INST_PID" 30 || note "fuse-overlayfs $INST_PID did not exit"
		wait "$INST_PID" 2>/dev/null
		rm -rf -- "$INST_BASE"
		;;
	agentfs-user)
		if is_mounted "$INST"; then
			as_user timeout 60 "$AGENTFS" unmount "$INST" --state-dir "$INST_BASE/state" || {
				note "agentfs unmount $INST (as $USER_NAME) failed; daemon.log tail:"
				tail -5 "$INST_BASE/state/workspaces/mnt/daemon.log" >&2
				timeout 10 fusermount3 -u -- "$INST" || timeout 10 fusermount3 -uz -- "$INST"
			}
		fi
		[ -n "$INST_PID" ] && { wait_gone "$INST_PID" 30 || note "agentfs daemon $INST_PID did not exit"; }
		rm -rf -- "$INST_BASE"
		;;
	agentfs*)
		if mountpoint -q "$INST"; then
			timeout 60 "$AGENTFS" unmount "$INST" || {
				note "agentfs unmount $INST failed; daemon.log tail:"
				tail -5 "$INST_BASE/state/workspaces/mnt/daemon.log" >&2
				timeout 10 fusermount3 -u -- "$INST" || timeout 10 fusermount3 -uz -- "$INST"
			}
		fi
		[ -n "$INST_PID" ] && { wait_gone "$INST_PID" 30 || note "agentfs daemon $INST_PID did not exit"; }
		rm -rf -- "$INST_BASE"
		;;
	esac
	# This system's writeback (and the deletes above) is not the next
	# one's to pay for.
	[ $SMOKE = 1 ] || sync
	return 0
}

# ------------------------------------------------------------------ measuring
# row WORKLOAD UNIT SYSTEM ROUND VALUE STATUS
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"; }

# tm WORKLOAD SYSTEM ROUND COMMAND: time COMMAND (bash) in $INST under timeout;
# on agentfs-user as the --user account, timed in its shell.
tm() {
	local wl=$1 sys=$2 round=$3 cmd=$4 t0 t1 rc
	if [ "$sys" = agentfs-user ]; then
		: >"$RUN/tm.t"
		as_user bash -c 'cd "$1" || exit 1
			t0=$EPOCHREALTIME
			timeout "$2" bash -c "$3"
			rc=$?
			echo "${t0/./} ${EPOCHREALTIME/./}" >&3
			exit $rc' _ "$INST" "$WL_TIMEOUT" "$cmd" >"$RUN/last.out" 2>"$RUN/last.err" 3>"$RUN/tm.t"
		rc=$?
		read -r t0 t1 <"$RUN/tm.t" || { t0=0 t1=0; }
	else
		t0=$(now_us)
		(cd "$INST" && timeout "$WL_TIMEOUT" bash -c "$cmd") >"$RUN/last.out" 2>"$RUN/last.err"
		rc=$?
		t1=$(now_us)
	fi
	if [ $rc = 0 ]; then
		row "$wl" s "$sys" "$round" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }')" ok
	else
		row "$wl" s "$sys" "$round" - "FAIL(rc=$rc)"
		note "FAIL: $wl on $sys (round $round): exit $rc: $cmd"
		tail -5 "$RUN/last.err" | sed 's/^/#   /' >&2
		if [ -f "$INST_BASE/state/workspaces/mnt/daemon.log" ]; then
			note "daemon.log tail:"
			tail -5 "$INST_BASE/state/workspaces/mnt/daemon.log" | sed 's/^/#   /' >&2
		fi
	fi
	return $rc
}

# tm_cold K WORKLOAD SYSTEM ROUND COMMAND: K times, drop the caches and time
# COMMAND; the row is the fastest (a failure, if one failed).  The cold rows
# of this machine's disk are bimodal: one file read cold 8 times natively in
# a row took 0.54-0.58 s five times and 1.18-1.23 s three times, so one try
# a round gave whichever mode the disk was in, not the system's speed.
tm_cold() {
	local k=$1 wl=$2 sys=$3 round=$4 cmd=$5 i rows=$ROWS rc=0
	ROWS=$RUN/cold.rows
	: >"$ROWS"
	for ((i = 0; i < k && rc == 0; i++)); do
		drop_caches
		tm "$wl" "$sys" "$round" "$cmd" || rc=$?
	done
	ROWS=$rows
	if [ $rc = 0 ]; then
		row "$wl" s "$sys" "$round" "$(cut -f5 "$RUN/cold.rows" | sort -g | head -1)" ok
	else
		grep -v '	ok$' "$RUN/cold.rows" | head -1 >>"$ROWS"
	fi
	return $rc
}

# mount_up WORKLOAD SYSTEM ROUND ROLE REPO: the instance a phase works in,
# after MOUNT_TRIES - 1 instances brought up and torn down at once; the row is
# the median of the MOUNT_TRIES times to the first ls.  One mount a round left
# the row to chance: on the quiet machine of the 04:33 run agentfs's full
# tree took 19, 30 and 47 ms in its three rounds (20 such mounts in a row:
# p25 19 ms, p75 22 ms).  native's row is a bare ls after a clone: one.
# Returns inst_up's status.
mount_up() {
	local wl=$1 sys=$2 round=$3 role=$4 repo=$5 i tries=$MOUNT_TRIES
	[ "$sys" = native ] && tries=1
	: >"$RUN/mount.times"
	for ((i = 1; i < tries; i++)); do
		inst_up "$sys" "$role" "$repo" || return 1
		echo "$INST_MOUNT_S" >>"$RUN/mount.times"
		inst_down "$sys"
	done
	inst_up "$sys" "$role" "$repo" || return 1
	echo "$INST_MOUNT_S" >>"$RUN/mount.times"
	row "$wl" s "$sys" "$round" "$(sort -g "$RUN/mount.times" |
		awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')" ok
}

skip_phase() { # WORKLOADS... SYSTEM ROUND: record a failed instance
	local sys=${*: -2:1} round=${*: -1} wl
	for wl in "${@:1:$#-2}"; do row "$wl" s "$sys" "$round" - "FAIL(mount)"; done
}

EDIT_CMD="for f in ${EDIT_FILES[*]}; do printf '\n/* edited by agentfs bench */\n' >>\"\$f\" || exit 1; done"
WALK_FIND="find . -path ./.git -prune -o -type f -print | wc -l"
WALK_LS="ls -I .git -lR >/dev/null"
WALK_CAT="find . -path ./.git -prune -o -type f -print0 | xargs -0 cat >/dev/null"
WALK_GREP="grep -r --exclude-dir=.git -c $GREP_WORD . >/dev/null"
COLD=cold
[ $CAN_DROP = 1 ] || COLD="cold-not-dropped"

phase_git() {
	local sys=$1 r=$2
	if ! inst_up "$sys" git "$REPO"; then
		skip_phase "git status ($COLD)" "git status (warm)" "git status (warm, again)" \
			"append to $N_EDITS files" \
			"git diff --stat" "$sys" "$r"
		inst_down "$sys"
		return
	fi
	drop_caches
	tm "git status ($COLD)" "$sys" "$r" "git status --porcelain >/dev/null"
	tm "git status (warm)" "$sys" "$r" "git status --porcelain >/dev/null"
	tm "git status (warm, again)" "$sys" "$r" "git status --porcelain >/dev/null"
	tm "append to $N_EDITS files" "$sys" "$r" "$EDIT_CMD"
	tm "git diff --stat" "$sys" "$r" "git diff --stat | tail -1 | grep -q 'files\\? changed'"
	inst_down "$sys"
}

phase_tree() {
	local sys=$1 r=$2 n
	if ! mount_up "mount until ls ($TREE)" "$sys" "$r" tree "$REPO"; then
		skip_phase "mount until ls ($TREE)" "$sys" "$r"
		inst_down "$sys"
		return
	fi
	# First walks of the fresh mount (the kernel caches nothing of it yet),
	# then the same walks again: "warm", as the targets are stated.
	if tm "find -type f (first walk)" "$sys" "$r" "$WALK_FIND"; then
		n=$(cat "$RUN/last.out")
		echo "$sys $n" >>"$RUN/counts"
	fi
	tm "ls -lR (first walk)" "$sys" "$r" "$WALK_LS"
	tm "cat every file (first walk)" "$sys" "$r" "$WALK_CAT"
	tm "grep -r (first walk)" "$sys" "$r" "$WALK_GREP"
	tm "find -type f (warm)" "$sys" "$r" "$WALK_FIND"
	tm "ls -lR (warm)" "$sys" "$r" "$WALK_LS"
	tm "cat every file (warm)" "$sys" "$r" "$WALK_CAT"
	tm "grep -r (warm)" "$sys" "$r" "$WALK_GREP"
	if [ -n "$BUILD_CMD" ]; then
		tm "make -j2 ($BUILD_DIR)" "$sys" "$r" "$BUILD_CMD >build.log 2>&1 && test -f $BUILD_CHECK ||
			{ tail -20 build.log >&2; exit 1; }"
	fi
	tm "$N_SAVES editor saves" "$sys" "$r" "'$BENCHOPS' saves $N_SAVES ${SAVE_FILES[*]}"
	tm "$N_CREATES creates+deletes 4K" "$sys" "$r" \
		"mkdir bench-creates && '$BENCHOPS' creates bench-creates $N_CREATES 4096"
	tm "seq write $SEQ_MIB MiB+fsync" "$sys" "$r" "'$BENCHOPS' seqwrite bench-seq.bin $SEQ_MIB"
	tm_cold 3 "seq read $SEQ_MIB MiB ($COLD, best of 3)" "$sys" "$r" "'$BENCHOPS' seqread bench-seq.bin"
	if [ "$sys" = agentfs-user ]; then as_user rm -f -- "$INST/bench-seq.bin"; else rm -f -- "$INST/bench-seq.bin"; fi
	tm "create $N_RMTREE-file tree" "$sys" "$r" "mkdir bench-gen && '$BENCHOPS' gentree bench-gen $N_RMTREE"
	tm "rm -rf $N_RMTREE-file tree" "$sys" "$r" "rm -rf bench-gen && test ! -e bench-gen"
	inst_down "$sys"
}

phase_full() {
	local sys=$1 r=$2
	if ! mount_up "mount until ls (full)" "$sys" "$r" full "$REPO_FULL"; then
		skip_phase "mount until ls (full)" "walk full tree (find+ls -lR)" "$sys" "$r"
		inst_down "$sys"
		return
	fi
	tm "walk full tree (find+ls -lR)" "$sys" "$r" "find . -path ./.git -prune -o -type f -print >/dev/null && $WALK_LS"
	if [ -n "$INST_PID" ]; then
		# Resident now, and the peak (which includes the private .git's build
		# running in the background during the walk).  A listing of .git
		# waits until that build is done, so "now" is after it.
		local key label val
		if [ "$sys" = agentfs-user ]; then
			as_user timeout 120 ls "$INST/.git" >/dev/null 2>&1
		else
			timeout 120 ls "$INST/.git" >/dev/null 2>&1
		fi
		for key in VmRSS VmHWM; do
			label="daemon $key after walk"
			val=$(awk -v k="$key:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$INST_PID/status" 2>/dev/null)
			if [ -n "$val" ]; then
				row "$label" MiB "$sys" "$r" "$val" ok
			else
				row "$label" MiB "$sys" "$r" - "FAIL(no /proc/$INST_PID)"
			fi
		done
	fi
	inst_down "$sys"
}

# fs_desc DIR: DIR's file system type, and for ext4 whether it has a journal
# (a jbd2 journal of the device is listed in /proc/fs/jbd2 as DEVICE-N).
fs_desc() {
	local src type
	read -r src type < <(findmnt -n -o SOURCE,FSTYPE -T "$1" 2>/dev/null) ||
		{ stat -f -c %T "$1"; return; }
	if [ "$type" = ext4 ]; then
		if compgen -G "/proc/fs/jbd2/${src##*/}-*" >/dev/null; then
			type="ext4 with a journal"
		else
			type="ext4 without a journal"
		fi
	fi
	echo "$type ($src)"
}

# ------------------------------------------------------------------ run
agentfs_rev=$(git -C "$SRC_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$SRC_ROOT" diff --quiet HEAD 2>/dev/null || agentfs_rev="$agentfs_rev+uncommitted"
{
	echo "# agentfs bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $( [ $SMOKE = 1 ] && echo smoke || echo full) mode, $ROUNDS round(s)"
	echo "# machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r), $(fs_desc "$TREES") under $TREES"
	echo "# versions: agentfs $agentfs_rev ($AGENTFS_ORIG, $(stat -c %y "$AGENTFS_ORIG" | cut -d. -f1)), libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '?'), $(fuse-overlayfs --version 2>/dev/null | grep -m1 '^fuse-overlayfs' || echo 'no fuse-overlayfs'), $(git --version)"
	[ -z "$USER_NAME" ] || echo "# agentfs-user: mounted and driven by $USER_NAME (uid $USER_UID) through $(command -v fusermount3)"
	echo "# tree: $TREE = $NFILES_REPO tracked files; full = $NFILES_FULL; caches dropped: $([ $CAN_DROP = 1 ] && echo yes || { [ $SMOKE = 1 ] && echo no, smoke mode; } || echo no, not root); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RUN/header"

for ((r = 1; r <= ROUNDS; r++)); do
	n=${#SYSTEMS[@]}
	order=()
	# Rotated each round, and reversed every other round: a rotation alone
	# keeps each system right after the same neighbour, whose teardown
	# could weigh on it in every round.
	for ((k = 0; k < n; k++)); do order+=("${SYSTEMS[$(((k + r - 1) % n))]}"); done
	if ((r % 2 == 0)); then
		rev=()
		for ((k = n - 1; k >= 0; k--)); do rev+=("${order[$k]}"); done
		order=("${rev[@]}")
	fi
	note "round $r/$ROUNDS: ${order[*]}"
	for phase in phase_git phase_tree phase_full; do
		for sys in "${order[@]}"; do
			$phase "$sys" "$r"
		done
	done
done

# ------------------------------------------------------------------ table
echo
awk -F'\t' -v systems="${SYSTEMS[*]}" '
function median(list,    a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(v) { return v == "" ? "—" : (v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : v >= 0.1 ? sprintf("%.2f", v) : sprintf("%.4f", v)) }
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "—" : sprintf("%.2fx", a / b) }
{
	if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1; unit[$1] = $2 }
	if ($6 == "ok") vals[$1, $3] = vals[$1, $3] " " $5; else fails[$1, $3]++
}
END {
	ns = split(systems, sys, " ")
	hdr = "| workload | unit |"; sep = "|---|---|"
	for (s = 1; s <= ns; s++) { hdr = hdr " " sys[s] " |"; sep = sep "---:|" }
	hdr = hdr " fo/native | agentfs/native | agentfs/fo |"; sep = sep "---:|---:|---:|"
	if (systems ~ /agentfs-user/) { hdr = hdr " agentfs-user/native | agentfs-user/fo |"; sep = sep "---:|---:|" }
	print hdr; print sep
	for (w = 1; w <= nw; w++) {
		wl = order[w]; line = "| " wl " | " unit[wl] " |"
		delete m
		for (s = 1; s <= ns; s++) {
			k = vals[wl, sys[s]]
			m[sys[s]] = (k == "") ? "" : median(k)
			cell = fmt(m[sys[s]])
			if (fails[wl, sys[s]]) cell = cell " (" fails[wl, sys[s]] " failed)"
			line = line " " cell " |"
		}
		line = line " " ratio(m["fuse-overlayfs"], m["native"]) " | " ratio(m["agentfs"], m["native"]) " | " ratio(m["agentfs"], m["fuse-overlayfs"]) " |"
		if (systems ~ /agentfs-user/) line = line " " ratio(m["agentfs-user"], m["native"]) " | " ratio(m["agentfs-user"], m["fuse-overlayfs"]) " |"
		print line
	}
}' "$ROWS"
echo
if [ -f "$RUN/counts" ]; then
	echo "# files seen by find -type f (outside .git), per system: $(sort -u "$RUN/counts" | tr '\n' ';')"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here; the spread per row is in --raw)"
[ $SMOKE = 1 ] || echo "# medians of $ROUNDS rounds; a mount row's value in a round is the median of $MOUNT_TRIES mounts (native: one bare ls); the build is '$BUILD_CMD'"

# ------------------------------------------------------------------ sanity
# Every workload has an ok row with a positive number for every system (the
# VmRSS and VmHWM rows only for systems with a daemon), and no row failed.
bad=$(awk -F'\t' -v systems="${SYSTEMS[*]}" '
{ if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 } }
$6 != "ok" { print "failed: " $1 " on " $3 " (round " $4 "): " $6; next }
$5 !~ /^[0-9]+(\.[0-9]+)?$/ || $5 + 0 <= 0 { print "not a positive number: " $1 " on " $3 ": " $5; next }
{ ok[$1, $3]++ }
END {
	ns = split(systems, sys, " ")
	for (w = 1; w <= nw; w++)
		for (s = 1; s <= ns; s++) {
			if (order[w] ~ /VmHWM|VmRSS/ && sys[s] == "native") continue
			if (!ok[order[w], sys[s]]) print "no row: " order[w] " on " sys[s]
		}
	if (nw == 0) print "no rows at all"
}' "$ROWS")
if [ -n "$bad" ]; then
	echo "$bad" | sed 's/^/bench.sh: /' >&2
	exit 1
fi
echo "# every workload ran on every system"
exit
}
