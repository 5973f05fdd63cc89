#!/usr/bin/env bash
# live_lower.sh - the person keeps working in the repository while the agent
# works in the mount.  What the person changes shows in the view (the kernel's
# cached answers must not stay wrong), new secrets are hidden from the moment
# they appear, and what the agent changed stays the agent's.
#
#   bash live_lower.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi

# eventually DESC EXPECTED CMD...: CMD's output becomes EXPECTED within 5 s.
eventually() {
	local desc=$1 want=$2 got i
	shift 2
	for ((i = 0; i < 50; i++)); do
		got=$(t "$@" 2>&1)
		if [ "$got" == "$want" ]; then
			pass "$desc"
			return 0
		fi
		sleep 0.1
	done
	fail "$desc" "after 5 s, command: $*" "expected: $want" "     got: $got"
}

# Fill the kernel's caches first: attributes, entries, listings, pages.
t cat "$MNT/README.md" "$MNT/src/util.h" "$MNT/docs/guide.md" >/dev/null
t ls -la "$MNT" "$MNT/src" "$MNT/docs" "$MNT/config" >/dev/null
t stat "$MNT/src/old.c" >/dev/null

printf 'appended by the person\n' >>"$REPO/README.md"
eventually "a lower file the person appends to shows the new content" \
	"$(cat "$REPO/README.md")" cat "$MNT/README.md"
eventually "  ...and its new size" "$(stat -c %s "$REPO/README.md")" stat -c %s "$MNT/README.md"

printf 'int sub(int a, int b);\n' >"$REPO/src/util.h.new" && mv "$REPO/src/util.h.new" "$REPO/src/util.h"
eventually "a lower file the person replaces (write + rename) shows the new content" \
	"int sub(int a, int b);" cat "$MNT/src/util.h"

printf 'new\n' >"$REPO/src/added.c"
eventually "a file the person creates appears in the listing" "added.c main.c old.c util.c util.h" \
	bash -c "ls '$MNT/src' | tr '\n' ' ' | sed 's/ \$//'"
assert_content "  ...and reads" "$MNT/src/added.c" new

rm "$REPO/src/old.c"
eventually "a file the person deletes disappears" "No such file or directory" \
	bash -c "stat '$MNT/src/old.c' 2>&1 >/dev/null | grep -o 'No such file or directory'"

printf 'TOKEN=%s-new\n' "$SECRET_MARK" >"$REPO/config/.env.production"
printf 'key %s-new\n' "$SECRET_MARK" >"$REPO/config/id_ed25519"
sleep 0.5
assert_enoent "$MNT/config/.env.production" "a secret the person adds while mounted is hidden"
assert_enoent "$MNT/config/id_ed25519" "  ...another one"
assert_not_listed "$MNT/config" .env.production
assert_not_listed "$MNT/config" id_ed25519
run grep -r -l "$SECRET_MARK" "$MNT"
assert_eq "grep -r finds none of the new secrets" "1 " "$RC $OUT"

mv "$REPO/docs" "$REPO/manual"
eventually "a directory the person renames moves in the view" "guide.md" \
	bash -c "ls '$MNT/manual' 2>&1 | grep -x guide.md"
eventually "  ...and its old name is gone" "No such file or directory" \
	bash -c "ls '$MNT/docs' 2>&1 >/dev/null | grep -o 'No such file or directory'"

# The daemon keeps descriptors of the lower directories it looked into
# (fs/dircache.c): a directory the person replaces must not keep answering.
mkdir -p "$REPO/lib/inner" && printf 'old\n' >"$REPO/lib/inner/a.txt"
eventually "a directory the person adds shows" "old" cat "$MNT/lib/inner/a.txt"
mv "$REPO/lib" "$REPO/lib.old" && mkdir -p "$REPO/lib/inner" && printf 'new\n' >"$REPO/lib/inner/b.txt"
eventually "a directory the person replaces (moved away, made again) shows the new files" \
	"new" cat "$MNT/lib/inner/b.txt"
# The new names can show before the watch's invalidation of the old
# directory's entries lands (the events of the move and of the new files are
# read apart): eventually, as for every change of the person's.
eventually "  ...not the old ones" "No such file or directory" \
	bash -c "stat '$MNT/lib/inner/a.txt' 2>&1 >/dev/null | grep -o 'No such file or directory'"
assert_enoent "$MNT/lib/inner/a.txt" "  ...not by any means"
assert_content "  ...which show under the new name" "$MNT/lib.old/inner/a.txt" old

# A watch stays on the directory it was added to, wherever it moves: after the
# person replaces a directory, its new one and what is below must be watched
# anew before the daemon keeps them, or a later move of the new one goes
# unseen.
mkdir -p "$REPO/pkg/lib" && printf 'a\n' >"$REPO/pkg/lib/a.txt"
eventually "a file two directories down shows" a cat "$MNT/pkg/lib/a.txt"
mv "$REPO/pkg" "$REPO/pkg.old" && mkdir -p "$REPO/pkg/lib" && printf 'b\n' >"$REPO/pkg/lib/b.txt"
eventually "  ...its top directory replaced, the new files show" b cat "$MNT/pkg/lib/b.txt"
mv "$REPO/pkg/lib" "$REPO/pkg/lib.moved" && mkdir "$REPO/pkg/lib" && printf 'c\n' >"$REPO/pkg/lib/c.txt"
eventually "  ...and again after the new lower one is replaced" c cat "$MNT/pkg/lib/c.txt"
t ls "$MNT/pkg" >/dev/null
printf 'late\n' >"$REPO/pkg/late.txt"
eventually "  ...a file the person adds to the new top directory shows in its listing" \
	"late.txt lib lib.moved" bash -c "ls '$MNT/pkg' | tr '\n' ' ' | sed 's/ \$//'"
t stat "$MNT/pkg/late.txt" >/dev/null
rm "$REPO/pkg/late.txt"
eventually "  ...and one the person removes from it goes" "No such file or directory" \
	bash -c "stat '$MNT/pkg/late.txt' 2>&1 >/dev/null | grep -o 'No such file or directory'"
# A directory the kernel keeps (a process works in it) and the person
# replaces: the watch moves to the new one once it is looked up again, so
# what the person then changes in it shows.
mkdir -p "$REPO/held" && printf 'x\n' >"$REPO/held/x"
eventually "a directory a process will hold shows" x cat "$MNT/held/x"
(cd "$MNT/held" && exec sleep 20) &
holder=$!
_PIDS+=("$holder")
sleep 0.3
mv "$REPO/held" "$REPO/held.old" && mkdir "$REPO/held" && printf 'y\n' >"$REPO/held/y"
eventually "  ...replaced while held, the new one's file shows" y cat "$MNT/held/y"
t ls "$MNT/held" >/dev/null
printf 'z\n' >"$REPO/held/z"
eventually "  ...and a file the person adds to it then shows in its listing" "y z" \
	bash -c "ls '$MNT/held' | tr '\n' ' ' | sed 's/ \$//'"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# A shell whose working directory the person replaces (with its parent)
# looks names up in it without looking either directory up again.
mkdir -p "$REPO/cw/d" && printf '1\n' >"$REPO/cw/d/one"
eventually "a directory a shell will work in shows" 1 cat "$MNT/cw/d/one"
run t bash -c "cd '$MNT/cw/d' && cat one >/dev/null &&
	mv '$REPO/cw' '$REPO/cw.old' && mkdir -p '$REPO/cw/d' && printf '2\n' >'$REPO/cw/d/two' &&
	sleep 0.5 && cat two >/dev/null &&
	mv '$REPO/cw/d' '$REPO/cw/d.old' && mkdir '$REPO/cw/d' && printf '3\n' >'$REPO/cw/d/three' &&
	sleep 0.5 && cat three"
assert_eq "  ...replaced twice under the shell, a name looked up from there is the newest's" \
	"0 3" "$RC $OUT"

# A shell in a directory the person then moves away, a file put at its path:
# a file made from the shell fails as in a removed directory (ENOENT), and
# no directory comes back over the person's file.
mkdir -p "$REPO/mv/w/x" && printf '1\n' >"$REPO/mv/w/x/f" && mkdir -p "$REPO/rm/w/x"
eventually "directories a shell will work in show" 1 cat "$MNT/mv/w/x/f"
run t bash -c "cd '$MNT/mv/w/x' && cat f >/dev/null &&
	mv '$REPO/mv/w' '$REPO/mv/w.old' && printf 'person file\n' >'$REPO/mv/w' &&
	sleep 0.5 && echo agent >agentfile"
assert_ne "a file made in a directory the person moved away (its path now a file) fails" 0 "$RC"
assert_contains "  ...with ENOENT" "No such file or directory" "$OUT"
assert_content "  ...and the path shows the person's file" "$MNT/mv/w" "person file"
run t bash -c "cd '$MNT/rm/w/x' && ls >/dev/null && rm -rf '$REPO/rm/w' && sleep 0.5 &&
	mkdir sub"
assert_ne "a directory made in a directory the person removed fails" 0 "$RC"
assert_enoent "$MNT/rm/w" "  ...and the removed directory does not come back"
run af status "$MNT"
assert_not_contains "  ...status shows neither" "mv/w" "$OUT"
assert_not_contains "  ...nor the other" "rm/w" "$OUT"
rm -rf "$REPO/mv" "$REPO/rm"

# A shell two directories below one the person moves away: no event names
# what lies below the moved one, yet the kernel's listing of the shell's
# directory and its entries of the directories between must not keep
# answering for paths that are gone.
mkdir -p "$REPO/deep/mid/low" && printf 'f\n' >"$REPO/deep/mid/low/f.txt"
eventually "a directory two down a shell will work in shows" f cat "$MNT/deep/mid/low/f.txt"
run t bash -c "cd '$MNT/deep/mid/low' && ls >/dev/null && ls -d ../../mid >/dev/null &&
	mv '$REPO/deep' '$REPO/deep.moved' && sleep 0.5 && { ls; ls -d ../../mid; } 2>&1"
assert_not_contains "a shell's directory moved away with its grandparent lists none of its files" \
	"f.txt" "$OUT"
assert_not_contains "  ...nor finds the directory between" "$(printf '\n../../mid')" "$(printf '\n%s' "$OUT")"
assert_content "  ...which show under the new name" "$MNT/deep.moved/mid/low/f.txt" f
rm -rf "$REPO/deep.moved"

# A burst of changes the watch reads at once (the daemon stopped meanwhile,
# as when it is slow): thousands of events in one read(2) of inotify, each of
# which must reach the kernel's cache: files rewritten longer after their
# sizes were cached, names created after they were looked up as absent.
mkdir -p "$REPO/many" && for i in $(seq 1 1500); do printf 'v1\n' >"$REPO/many/f$i"; done
eventually "1500 files show" 1500 bash -c "ls '$MNT/many' | wc -l"
t bash -c "stat '$MNT'/many/f{1..1500} '$MNT'/many/new{1..1500}" >/dev/null 2>&1
DPID=$(daemon_pid_of "$MNT") || bail "no daemon pid for $MNT"
kill -STOP "$DPID"
for i in $(seq 1 1500); do printf 'v2 longer\n' >"$REPO/many/f$i"; printf 'n\n' >"$REPO/many/new$i"; done
kill -CONT "$DPID"
eventually "after the burst, every rewritten file has its new size" 0 bash -c \
	"stat -c %s '$MNT'/many/f{1..1500} | grep -vc '^10\$'"
eventually "  ...and every name created shows" 1500 bash -c \
	"stat -c %n '$MNT'/many/new{1..1500} 2>/dev/null | wc -l"
rm -rf "$REPO/many"

# A file the agent holds open while the person saves it (write a temporary
# file, rename it over): the open file stays the old one, as on ext4, and
# the name shows the new one, with its own inode.
printf 'orig\n' >"$REPO/held.txt"
eventually "a file to hold open shows" orig cat "$MNT/held.txt"
run t python3 - "$MNT/held.txt" "$REPO" <<'PY'
import os, sys, time
path, repo = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
os.fstat(fd)
with open(repo + "/held.txt.tmp", "w") as f:
    f.write("person's new version\n")
os.rename(repo + "/held.txt.tmp", repo + "/held.txt")
time.sleep(0.5)
new = open(path).read()
held = os.fstat(fd)
print(os.pread(fd, 100, 0).decode().strip(), held.st_size, new.strip(), os.stat(path).st_size,
      "same-inode" if held.st_ino == os.stat(path).st_ino else "new-inode")
PY
assert_eq "a file held open while the person saves it stays the old one; the name is the new one" \
	"orig 5 person's new version 21 new-inode" "$OUT"
rm -f "$REPO/held.txt"

# A file the agent holds open that the person renames to a name the policy
# hides, or out of the repository: it is a secret now, or nothing the view
# shows, and what the person then writes to it must not reach the agent
# through the descriptor.  One renamed to a name the view shows reads on.
# held_read VIEWFILE FROM TO WRITTEN: hold VIEWFILE open (one read), rename
# the lower's FROM to TO, append a secret to WRITTEN (the file's new path),
# and read the descriptor again; OUT says what that read gave.
held_read() {
	run t python3 - "$@" "$SECRET_MARK" <<'PY'
import os, sys, time
path, src, dst, written, mark = sys.argv[1:6]
fd = os.open(path, os.O_RDONLY)
os.pread(fd, 100, 0)
os.rename(src, dst)
with open(written, "a") as f:
    f.write("TOKEN=" + mark + "\n")
time.sleep(0.5)
try:
    data = os.pread(fd, 4096, 0).decode()
    print("read", "the person's write" if mark in data else "no write")
except OSError as e:
    print(e.strerror)
PY
}
for dest in hidden outside shown; do
	printf 'plain\n' >"$REPO/cfg-$dest.txt"
	eventually "a file to hold open shows ($dest)" plain cat "$MNT/cfg-$dest.txt"
	case $dest in
	hidden) to=$REPO/.env.cfg ;;
	outside) to=$T/cfg-outside.txt ;;
	shown) to=$REPO/src/cfg-shown.txt ;;
	esac
	held_read "$MNT/cfg-$dest.txt" "$REPO/cfg-$dest.txt" "$to" "$to"
	case $dest in
	hidden) assert_eq "held open, renamed to a hidden name: the descriptor reads no more" \
		"Stale file handle" "$OUT" ;;
	outside) assert_eq "  ...renamed out of the repository: neither" "Stale file handle" "$OUT" ;;
	shown) assert_eq "  ...renamed to a name the view shows: it reads on" \
		"read the person's write" "$OUT" ;;
	esac
	rm -f "$to"
done
# ...and one whose directory the person renames to a hidden name.
mkdir -p "$REPO/pub/inner" && printf 'plain\n' >"$REPO/pub/inner/f.txt"
eventually "a file two down to hold open shows" plain cat "$MNT/pub/inner/f.txt"
held_read "$MNT/pub/inner/f.txt" "$REPO/pub" "$REPO/.priv" "$REPO/.priv/inner/f.txt"
assert_eq "  ...its directory renamed to a hidden name: neither" "Stale file handle" "$OUT"
rm -rf "$REPO/.priv"

# What the agent changed stays the agent's.
sh_step "the agent rewrites src/util.c" "printf 'agent version\n' >'$MNT/src/util.c'"
sh_step "the agent deletes Makefile" "rm '$MNT/Makefile'"
printf 'person version\n' >"$REPO/src/util.c"
printf 'person Makefile\n' >"$REPO/Makefile"
sleep 0.5
assert_content "the agent's copy is not replaced by the person's edit" "$MNT/src/util.c" "agent version"
assert_enoent "$MNT/Makefile" "a file the agent deleted stays deleted when the person edits it"
run af status "$MNT"
assert_contains "status reports the conflict on src/util.c" "C src/util.c" "$OUT"
assert_contains "  ...and on Makefile, which the agent deleted before the person's edit" \
	"C Makefile" "$OUT"

# A change of the person's after the agent's that no copy-up recorded: the
# patch must not delete or replace the person's newer work.
mkdir -p "$REPO/gone" "$REPO/moved" && printf 'g\n' >"$REPO/gone/kept.txt" &&
	printf 'm\n' >"$REPO/moved/m.txt" && printf 'r\n' >"$REPO/scripts/redo.sh" &&
	printf 'd\n' >"$REPO/scripts/plain.sh"
eventually "files the agent will remove show" "g m r d" \
	bash -c "cat '$MNT/gone/kept.txt' '$MNT/moved/m.txt' '$MNT/scripts/redo.sh' \
	'$MNT/scripts/plain.sh' | tr '\n' ' ' | sed 's/ \$//'"
sh_step "the agent creates src/both.c, deletes scripts/gen.sh and gone/, moves moved/" \
	"printf 'agent\n' >'$MNT/src/both.c' && rm '$MNT/scripts/gen.sh' '$MNT/scripts/plain.sh' &&
	rm -r '$MNT/gone' && mv '$MNT/moved' '$MNT/moved2'"
sh_step "the agent deletes scripts/redo.sh and saves a new one there (write + rename)" \
	"rm '$MNT/scripts/redo.sh' && printf 'agent redo\n' >'$MNT/scripts/redo.sh.tmp' &&
	mv '$MNT/scripts/redo.sh.tmp' '$MNT/scripts/redo.sh'"
sh_step "the person then creates src/both.c, edits scripts/gen.sh and moved/m.txt, adds gone/new.txt" \
	"printf 'person\n' >'$REPO/src/both.c' && printf 'echo person\n' >>'$REPO/scripts/gen.sh' &&
	printf 'person m\n' >'$REPO/moved/m.txt' && printf 'person new\n' >'$REPO/gone/new.txt'"
run af status "$MNT"
assert_contains "status: a file both created is a conflict" "C src/both.c" "$OUT"
assert_contains "  ...a file the agent deleted and the person edited since" "C scripts/gen.sh" "$OUT"
assert_contains "  ...a file the person added to a directory the agent deleted" \
	"C gone/new.txt" "$OUT"
assert_contains "  ...not a file of it the person left alone" "D gone/kept.txt" "$OUT"
assert_contains "  ...nor one the agent deleted and the person left alone" "D scripts/plain.sh" "$OUT"
assert_contains "  ...nor a file the agent deleted and saved again" "M scripts/redo.sh" "$OUT"
assert_contains "  ...nor a file of a directory the agent moved, which goes along" \
	"R moved/m.txt -> moved2/m.txt" "$OUT"
run af export "$MNT"
assert_contains "export refuses the file both created" "src/both.c: conflict" "$OUT"
assert_contains "  ...and the deletion of the person's edit" "scripts/gen.sh: conflict" "$OUT"
assert_contains "  ...and of the person's new file" "gone/new.txt: conflict" "$OUT"
run af export --conflicts=skip "$MNT"
assert_not_contains "export --conflicts=skip replaces none of the person's files" "person" "$OUT"
run af promote "$MNT" --branch agent-late --conflicts=skip
assert_contains "promote --conflicts=skip names the deletion it leaves out" \
	"scripts/gen.sh: conflict: changed in the repository since the agent deleted it; left out" "$OUT"
assert_contains "  ...and the file both made" \
	"src/both.c: conflict: changed in the repository since the agent made it; left out" "$OUT"
# The agent's copy recorded the base: a person's edit between the agent's
# change and its deletion is a conflict too.
sh_step "the agent changes config/settings.yml" "printf 'agent: 1\n' >>'$MNT/config/settings.yml'"
sh_step "the person edits config/settings.yml" "printf 'person: 1\n' >>'$REPO/config/settings.yml'"
sh_step "the agent then deletes config/settings.yml" "rm '$MNT/config/settings.yml'"
run af status "$MNT"
assert_contains "status: a file the person edited between the agent's change and deletion" \
	"C config/settings.yml" "$OUT"

# A directory the agent changed is the upper's copy, with its attributes: a
# file the person adds to it moves its mtime too (git's untracked cache
# trusts a directory's mtime), one at a hidden name does not.
sh_step "the agent adds a file to src" "printf 'a\n' >'$MNT/src/agent-note.md'"
sleep 1.1 # past the second of the mtime
before=$(stat -c %Y.%y "$MNT/src")
sh_step "the person adds a hidden file to src" "printf 's\n' >'$REPO/src/.env'"
sleep 0.5
assert_eq "a hidden file moves not the mtime of a directory the agent changed" "$before" \
	"$(stat -c %Y.%y "$MNT/src")"
sh_step "the person adds a symlink out of the repository to src (hidden)" \
	"ln -s /etc/passwd '$REPO/src/out-link'"
sleep 0.5
assert_eq "  ...nor a symlink the view hides by its target" "$before" "$(stat -c %Y.%y "$MNT/src")"
sh_step "the person adds a file to src" "printf 'p\n' >'$REPO/src/person-note.md'"
eventually "  ...a visible one does" "moved" \
	sh -c "[ \"\$(stat -c %Y.%y '$MNT/src')\" != '$before' ] && echo moved || echo same"

run af unmount "$MNT"
if [ "$RC" -eq 0 ] && ! is_mounted "$MNT"; then pass "unmount"; else fail "unmount" "exit $RC" "$OUT"; fi
done_testing
