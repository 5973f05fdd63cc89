#!/usr/bin/env bash
# posix.sh - the POSIX semantics programs rely on, through the merged view:
# renameat2 flags, mmap shared writes, O_APPEND, sparse and >4 GiB files, user.*
# xattrs, fsync, statfs, unlink of an open file, hard links, whiteouts and
# opaque directories, reserved names, and what copy-up preserves (mode, times,
# inode number).  Every change leaves the lower untouched.
#
#   bash posix.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
(
	cd "$REPO" && mkdir posix &&
		for f in a b c d unl hl ux uy uz; do printf '%s\n' "$f-content" >posix/$f.txt; done &&
		printf '0123456789' >posix/mm.txt && printf 'start\n' >posix/ap.txt &&
		printf 'read only\n' >posix/ro.txt && chmod 444 posix/ro.txt &&
		printf 'truncate me please\n' >posix/tr.txt &&
		mkdir -p posix/tree/sub && printf 'x\n' >posix/tree/sub/x && printf 'y\n' >posix/tree/y &&
		touch -d '2001-02-03 04:05:06' posix posix/* posix/tree posix/tree/sub posix/tree/sub/x &&
		mkdir mvre && printf 'old\n' >mvre/a && mkdir cwdl && printf 'f\n' >cwdl/f &&
		mkdir -p full/in && printf 'x\n' >full/x && printf 'y\n' >full/in/y &&
		mkdir live && for f in l1 l2 l3 l4 l5 l6; do printf '%s\n' $f >live/$f; done &&
		mkdir cu && printf '#!/bin/sh\n' >cu/run.sh && chmod 755 cu/run.sh &&
		printf 'ro\n' >cu/ro && chmod 444 cu/ro && printf 'sg\n' >cu/sg && chmod 2750 cu/sg &&
		truncate -s 8M cu/holes && printf 'data' | dd of=cu/holes bs=1 seek=1048576 \
		conv=notrunc status=none && head -c 1M /dev/zero >cu/zeros
) || bail "cannot add the posix/ files"
if [ "$(id -u)" -eq 0 ]; then
	# Owners other than the caller's: a set-group-ID directory of group
	# 4242, a file of 1234:4321.
	(cd "$REPO" && mkdir -p own/sg && chgrp 4242 own/sg && chmod 2775 own/sg &&
		printf 'owned\n' >own/owned.txt && chown 1234:4321 own/owned.txt) ||
		bail "cannot add own/sg and own/owned.txt"
fi
snapshot "$REPO" "$T/lower.before"

mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi
P=$MNT/posix

# ------------------------------------------------------------------ renameat2 flags
assert_eq "RENAME_NOREPLACE onto an existing lower file: EEXIST" EEXIST \
	"$(fsops rename-noreplace "$P/a.txt" "$P/b.txt")"
assert_eq "  ...and both files are unchanged" "a-content b-content" \
	"$(t cat "$P/a.txt" "$P/b.txt" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
assert_eq "RENAME_NOREPLACE onto a free name" OK "$(fsops rename-noreplace "$P/a.txt" "$P/a2.txt")"
assert_enoent "$P/a.txt" "  ...the source is gone"
assert_eq "  ...the destination has the content" a-content "$(t cat "$P/a2.txt" 2>&1)"
assert_eq "RENAME_EXCHANGE of two lower files" OK "$(fsops rename-exchange "$P/b.txt" "$P/d.txt")"
assert_eq "  ...swaps their contents" "d-content b-content" \
	"$(t cat "$P/b.txt" "$P/d.txt" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
assert_eq "RENAME_EXCHANGE with a missing name: ENOENT" ENOENT \
	"$(fsops rename-exchange "$P/b.txt" "$P/no-such")"
assert_eq "RENAME_NOREPLACE onto a hidden name succeeds (it is free)" OK \
	"$(fsops rename-noreplace "$P/c.txt" "$MNT/.env")"
assert_eq "  ...and .env holds the renamed file, not the secret" c-content "$(t cat "$MNT/.env" 2>&1)"
assert_eq "rename of a hidden name as source: ENOENT" ENOENT \
	"$(fsops rename-noreplace "$MNT/config/id_rsa" "$MNT/config/stolen")"
step "rename replacing a lower file (mv a2.txt b.txt)" t mv "$P/a2.txt" "$P/b.txt"
assert_eq "  ...b.txt has a2's content" a-content "$(t cat "$P/b.txt" 2>&1)"
assert_eq "  ...posix/ lists each name once" "ap.txt b.txt d.txt hl.txt mm.txt ro.txt tr.txt tree unl.txt ux.txt uy.txt uz.txt" \
	"$(t ls "$P" 2>&1 | tr '\n' ' ' | sed 's/ $//')"

# ------------------------------------------------------------------ mmap, O_APPEND, truncate
assert_eq "mmap MAP_SHARED write to a lower file" OK "$(fsops mmap-write "$P/mm.txt" 3 XYZ)"
assert_eq "  ...read() sees the mapped write" 012XYZ6789 "$(t cat "$P/mm.txt" 2>&1)"
assert_eq "  ...a new mapping sees it too" "$(printf 'OK\n012XYZ6789')" "$(fsops mmap-read "$P/mm.txt")"
assert_eq "O_APPEND write lands at the end whatever the offset" OK "$(fsops append "$P/ap.txt" more)"
assert_eq "  ...content" "$(printf 'start\nmore')" "$(t cat "$P/ap.txt" 2>&1)"
step "truncate -s 8 of a lower file" t truncate -s 8 "$P/tr.txt"
assert_eq "  ...keeps the first 8 bytes" truncate "$(t cat "$P/tr.txt" 2>&1)"
assert_eq "O_EXCL create on an existing lower file: EEXIST" EEXIST "$(fsops create-excl "$P/d.txt")"

# ------------------------------------------------------------------ sparse and large files
assert_eq "pwrite at 1 MiB into a new file" OK "$(fsops pwrite "$P/sparse.bin" 1048576 END)"
assert_eq "  ...size is 1 MiB + 3" 1048579 "$(t stat -c %s "$P/sparse.bin" 2>&1)"
assert_eq "  ...the hole reads as zeros" "$(head -c 4096 /dev/zero | od -An -tx1 | sort -u)" \
	"$(t head -c 4096 "$P/sparse.bin" | od -An -tx1 | sort -u)"
assert_eq "  ...the tail reads back" "$(printf 'OK\nEND')" "$(fsops pread "$P/sparse.bin" 1048576 3)"
blocks=$(t stat -c '%b %B' "$P/sparse.bin" | awk '{ print $1 * $2 }')
if [ -n "$blocks" ] && [ "$blocks" -lt 524288 ]; then pass "  ...and stays sparse ($blocks bytes allocated)"; else
	fail "  ...and stays sparse" "allocated: $blocks bytes"
fi
step "truncate -s 5G (a sparse file over 4 GiB)" t truncate -s 5G "$P/big.bin"
assert_eq "pwrite at 4.5 GiB" OK "$(fsops pwrite "$P/big.bin" 4831838208 FAR)"
assert_eq "  ...size is still 5 GiB" 5368709120 "$(t stat -c %s "$P/big.bin" 2>&1)"
assert_eq "  ...reads back at 4.5 GiB" "$(printf 'OK\nFAR')" "$(fsops pread "$P/big.bin" 4831838208 3)"
assert_eq "  ...and not at 4.5 GiB mod 4 GiB (no 32-bit wrap)" "$(printf 'OK\n\0\0\0' | od -c)" \
	"$(fsops pread "$P/big.bin" 536870912 3 | od -c)"
blocks=$(t stat -c '%b %B' "$P/big.bin" | awk '{ print $1 * $2 }')
if [ -n "$blocks" ] && [ "$blocks" -lt 1048576 ]; then pass "  ...and stays sparse ($blocks bytes allocated)"; else
	fail "  ...5 GiB file stays sparse" "allocated: $blocks bytes"
fi
step "rm the 5 GiB file" t rm "$P/big.bin"
head -c 3145728 /dev/urandom >"$T/random.bin"
step "copy 3 MiB of random bytes in" t cp "$T/random.bin" "$P/random.bin"
assert_file_eq "  ...and read them back" "$T/random.bin" "$P/random.bin"

# ------------------------------------------------------------------ xattrs
for f in "$P/d.txt" "$P/random.bin"; do
	assert_eq "setxattr user.test on $(basename "$f")" OK "$(fsops setxattr "$f" user.test v1)"
	assert_eq "  ...getxattr" "$(printf 'OK\nv1')" "$(fsops getxattr "$f" user.test)"
	assert_contains "  ...listxattr has it" user.test "$(fsops listxattr "$f")"
	assert_eq "  ...removexattr" OK "$(fsops removexattr "$f" user.test)"
	assert_eq "  ...getxattr after remove: ENODATA" ENODATA "$(fsops getxattr "$f" user.test)"
done
step "append to a lower file (copy-up)" t bash -c "printf 'x\n' >>'$P/hl.txt'"
assert_not_contains "listxattr of a copied-up file shows no agentfs-internal xattr" user.agentfs \
	"$(fsops listxattr "$P/hl.txt") $(fsops listxattr "$P/d.txt") $(fsops listxattr "$MNT/docs")"
fsops setxattr "$MNT/src" user.agentfs.opaque y >/dev/null
assert_contains "setting user.agentfs.opaque from the view does not hide the lower directory" \
	main.c "$(t ls "$MNT/src" 2>&1)"
fsops setxattr "$P/tree" user.agentfs.redirect src >/dev/null
assert_eq "setting user.agentfs.redirect from the view does not redirect" "sub y" \
	"$(t ls "$P/tree" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
assert_eq "getxattr of an agentfs-internal name: ENODATA" ENODATA \
	"$(fsops getxattr "$P/hl.txt" user.agentfs.origin)"
# Other namespaces are not supported at all: ENOTSUP (EOPNOTSUPP), which
# coreutils' ls -l caches per file system instead of asking for every file.
for name in security.selinux system.posix_acl_access; do
	assert_eq "getxattr $name: EOPNOTSUPP" EOPNOTSUPP "$(fsops getxattr "$P/hl.txt" "$name")"
done

# ------------------------------------------------------------------ fsync, statfs, open-unlinked
assert_eq "write + fsync + fdatasync + directory fsync" OK \
	"$(cd "$P" && fsops fsync synced.txt data)"
assert_eq "  ...content" data "$(t cat "$P/synced.txt" 2>&1)"
out=$(fsops statfs "$MNT")
if [[ $out == OK* ]] && [[ $out =~ bsize=([0-9]+)\ blocks=([0-9]+).*namelen=([0-9]+) ]] &&
	[ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[2]}" -gt 0 ] && [ "${BASH_REMATCH[3]}" -ge 255 ]; then
	pass "statfs reports a block size, blocks and NAME_MAX"
else
	fail "statfs reports a block size, blocks and NAME_MAX" "$out"
fi
step "df works on the mount" t df "$MNT"
assert_eq "unlink of an open lower file: the fd keeps working" \
	"$(printf 'OK\nnlink=0 read=written-after-unlink gone=1')" "$(fsops unlink-open "$P/unl.txt")"
assert_enoent "$P/unl.txt" "  ...and the name is gone"
printf 'new\n' >"$T/newfile"
step "create a new file" t cp "$T/newfile" "$P/new.txt"
assert_eq "unlink of an open new file: the fd keeps working" \
	"$(printf 'OK\nnlink=0 read=written-after-unlink gone=1')" "$(fsops unlink-open "$P/new.txt")"
# The xattr requests of a file unlinked while open reach that file, not the
# new one made at its name (fsetxattr(2) on an unlinked file, as ext4).
ux_ok=$(printf 'OK\nfd=old name=new list=user.k removed=1 name=new')
assert_eq "xattrs through the fd of an unlinked lower file, a new file at its name" \
	"$ux_ok" "$(fsops unlink-xattr "$P/ux.txt" rw)"
step "create another new file" t cp "$T/newfile" "$P/new2.txt"
assert_eq "xattrs through the fd of an unlinked new file, a new file at its name" \
	"$ux_ok" "$(fsops unlink-xattr "$P/new2.txt" rw)"
# Opened read-only, the lower file was never copied up and cannot be once
# its name is gone: the fd's setxattr fails (ENOENT), the new file keeps its own.
assert_eq "fsetxattr through a read-only fd of an unlinked lower file: ENOENT" \
	"fsetxattr ENOENT" "$(fsops unlink-xattr "$P/uy.txt" ro)"
assert_eq "  ...and the new file at its name keeps its value" \
	"$(printf 'OK\nnew')" "$(fsops getxattr "$P/uy.txt" user.k)"
# An editor's save over a lower file another process holds open read-only:
# an xattr change through that fd must not copy the old file up over the save.
assert_eq "fsetxattr through the fd of a lower file saved over: the save stays" \
	"ENOENT saved" "$(t python3 - "$P/uz.txt" <<'PY'
import errno, os, sys
f = sys.argv[1]
fd = os.open(f, os.O_RDONLY)
with open(f + ".tmp", "w") as w:
    w.write("saved\n")
os.rename(f + ".tmp", f)
try:
    os.setxattr(fd, "user.t", b"1")
    r = "OK"
except OSError as e:
    r = errno.errorcode[e.errno]
print(r, open(f).read().strip())
PY
)"

# ------------------------------------------------------------------ hard links
step "hard link of a lower file" t ln "$P/b.txt" "$P/b-link.txt"
step "  ...append through the link" t bash -c "printf 'via link\n' >>'$P/b-link.txt'"
assert_eq "  ...the other name sees the write" "$(printf 'a-content\nvia link')" "$(t cat "$P/b.txt" 2>&1)"
assert_eq "  ...same inode, 2 links" "$(t stat -c '%i 2' "$P/b.txt")" "$(t stat -c '%i %h' "$P/b-link.txt" 2>&1)"
step "  ...rm one name" t rm "$P/b.txt"
assert_eq "  ...the other keeps the content and counts 1 link" "$(printf 'a-content\nvia link\n1')" \
	"$(t cat "$P/b-link.txt"; t stat -c %h "$P/b-link.txt")"

# ------------------------------------------------------------------ owners of new entries
# A root daemon gives each new entry the caller's owner, as the kernel would
# (inode_init_owner, fs/inode.c): in a set-group-ID directory the group is the
# directory's and a new directory is set-group-ID too; a hard link is no new
# file and keeps its owner (link(2)).
if [ "$(id -u)" -eq 0 ]; then
	O=$MNT/own
	sh_step "a file, a directory, a FIFO and a symlink in the set-group-ID own/sg/" \
		"touch '$O/sg/f' && mkdir '$O/sg/d' && mkfifo '$O/sg/p' && ln -s f '$O/sg/l'"
	assert_eq "  ...all of group 4242, the directory set-group-ID" "0:4242 0:4242 0:4242 0:4242 2" \
		"$(t stat -c '%u:%g' "$O/sg/f" "$O/sg/d" "$O/sg/p" "$O/sg/l" | tr '\n' ' ')$(($(t stat -c '0%a' "$O/sg/d") >> 9))"
	sh_step "  ...the same where own/sg/ was copied up already" "touch '$O/sg/f2' && mkdir '$O/sg/d/e'"
	assert_eq "  ...of group 4242" "0:4242 0:4242" "$(t stat -c '%u:%g' "$O/sg/f2" "$O/sg/d/e" | tr '\n' ' ' | sed 's/ $//')"
	step "a file in a directory without set-group-ID" t touch "$O/new-owned"
	assert_eq "  ...has the caller's group" "0:0" "$(t stat -c '%u:%g' "$O/new-owned" 2>&1)"
	step "a hard link of a file of 1234:4321" t ln "$O/owned.txt" "$O/owned-link.txt"
	assert_eq "  ...both names keep its owner" "1234:4321 1234:4321" \
		"$(t stat -c '%u:%g' "$O/owned.txt" "$O/owned-link.txt" | tr '\n' ' ' | sed 's/ $//')"
else
	skip "owners of new entries in a set-group-ID directory and of hard links" \
		"needs root: other owners and groups"
fi

# ------------------------------------------------------------------ a name made again after a rename
# A file made where one was deleted or saved over takes the old one's inode
# number only if the old one is gone: not while it keeps another name or is
# open, or cp, tar and find -samefile take the two for one file.
L=$MNT/live
sh_step "ln l1 l1-link, rm l1, a new l1" "ln '$L/l1' '$L/l1-link' && rm '$L/l1' && printf 'new\n' >'$L/l1'"
assert_ne "  ...l1 and l1-link are two files" "$(t stat -c %i "$L/l1")" "$(t stat -c %i "$L/l1-link")"
step "  ...cp l1 l1-link copies" t cp "$L/l1" "$L/l1-link"
sh_step "ln l2 l2-link, then a save over l2 (write temp + rename)" \
	"ln '$L/l2' '$L/l2-link' && printf 'new\n' >'$L/l2.tmp' && mv '$L/l2.tmp' '$L/l2'"
assert_ne "  ...l2 and l2-link are two files" "$(t stat -c %i "$L/l2")" "$(t stat -c %i "$L/l2-link")"
assert_eq "a lower file open while deleted and made again: two inode numbers" "two" \
	"$(t python3 - "$L/l3" 2>&1 <<'PY'
import os, sys
f = sys.argv[1]
fd = os.open(f, os.O_RDONLY)
os.unlink(f)
open(f, "w").write("new\n")
print("two" if os.fstat(fd).st_ino != os.stat(f).st_ino else "one")
PY
)"
assert_eq "a lower file open while saved over: two inode numbers" "two" \
	"$(t python3 - "$L/l4" 2>&1 <<'PY'
import os, sys
f = sys.argv[1]
fd = os.open(f, os.O_RDONLY)
open(f + ".tmp", "w").write("new\n")
os.rename(f + ".tmp", f)
print("two" if os.fstat(fd).st_ino != os.stat(f).st_ino else "one")
PY
)"
assert_eq "open l5, ln l5 l5-link, rm l5: the fd's file counts one link, keeps its xattrs" \
	"1 OK" "$(t python3 - "$L/l5" 2>&1 <<'PY'
import os, sys
f = sys.argv[1]
fd = os.open(f, os.O_RDWR)
os.link(f, f + "-link")
os.unlink(f)
os.setxattr(fd, "user.k", b"OK")
print(os.fstat(fd).st_nlink, os.getxattr(f + "-link", "user.k").decode())
PY
)"
# The agent's copy of l6 keeps l6's inode number while l6 is where it was;
# once the person moves l6 in the repository, the moved file shows with that
# number, and the copy reports its own.
sh_step "append to l6 (copy-up)" "printf 'agent\n' >>'$L/l6'"
assert_eq "  ...it keeps the repository file's inode number" "$(stat -c %i "$REPO/live/l6")" \
	"$(t stat -c %i "$L/l6")"
mv "$REPO/live/l6" "$REPO/live/l6-moved"
snapshot "$REPO" "$T/lower.before" # the person's change: the agent's must not follow
sleep 0.3 # the watch of the lower
assert_ne "  ...after the person moves l6 to l6-moved, the two differ" \
	"$(t stat -c %i "$L/l6-moved")" "$(t stat -c %i "$L/l6")"

# mv a b, then a new a (vim with `set backup backupcopy=no` saves so): two
# live files, two inode numbers, as on ext4; b keeps a's.
ino_a=$(t stat -c %i "$MNT/mvre/a")
step "mv a b, then a new file a" t bash -c "mv '$MNT/mvre/a' '$MNT/mvre/b' && printf 'new\n' >'$MNT/mvre/a'"
assert_eq "  ...b keeps a's inode number, the new a has another" "$ino_a yes" \
	"$(t stat -c %i "$MNT/mvre/b") $([ "$(t stat -c %i "$MNT/mvre/a")" != "$ino_a" ] && echo yes)"
step "  ...cp b a copies (they are not one file)" t cp "$MNT/mvre/b" "$MNT/mvre/a"
assert_eq "  ...a holds b's content" old "$(t cat "$MNT/mvre/a")"
step "the same through a save: mv a a~, write a, keep a~" t bash -c \
	"mv '$MNT/mvre/a' '$MNT/mvre/a~' && printf 'newer\n' >'$MNT/mvre/a'"
assert_ne "  ...a~ and a are two files" "$(t stat -c %i "$MNT/mvre/a~")" "$(t stat -c %i "$MNT/mvre/a")"

# ------------------------------------------------------------------ copy-up preserves metadata
f=$MNT/data/notes.txt
ino=$(t stat -c %i "$f")
mt=$(t stat -c %Y "$f")
assert_eq "a lower file shows its mode and old mtime" "640 $(stat -c %Y "$REPO/data/notes.txt")" \
	"$(t stat -c '%a %Y' "$f" 2>&1)"
step "open it for writing without writing (copy-up)" t bash -c "exec 3>>'$f'; exec 3>&-"
assert_eq "  ...mode, mtime and inode number are preserved" "640 $mt $ino" "$(t stat -c '%a %Y %i' "$f" 2>&1)"
step "append to it" t bash -c "printf 'appended\n' >>'$f'"
assert_eq "  ...mode and inode number are preserved" "640 $ino" "$(t stat -c '%a %i' "$f" 2>&1)"
now=$(date +%s)
m2=$(t stat -c %Y "$f")
if [ -n "$m2" ] && [ $((now - m2)) -lt 120 ] && [ $((m2 - now)) -lt 120 ]; then pass "  ...mtime is now"; else
	fail "  ...mtime is now" "mtime $m2, now $now"
fi
# Modes the umask would take away or that need chmod(2) (set-group-ID), as
# the copy is made (fs/copyup.c): each copied up by a change of its times.
U=$STATE/workspaces/mnt/upper
for f in run.sh ro sg; do
	step "touch -m of cu/$f (copy-up)" t touch -m -d '2012-01-01 00:00:00 UTC' "$MNT/cu/$f"
done
assert_eq "  ...each keeps its mode in the view" "755 444 2750" \
	"$(t stat -c %a "$MNT/cu/run.sh" "$MNT/cu/ro" "$MNT/cu/sg" | tr '\n' ' ' | sed 's/ $//')"
assert_eq "  ...and in the upper" "755 444 2750" \
	"$(stat -c %a "$U/cu/run.sh" "$U/cu/ro" "$U/cu/sg" | tr '\n' ' ' | sed 's/ $//')"
assert_eq "  ...and its owner" "$(stat -c %u:%g "$REPO/cu/sg")" "$(stat -c %u:%g "$U/cu/sg")"
# A file with holes keeps them; one whose blocks hold zeros is copied as it
# is; a hole at the end is the copy's length.
step "append to cu/holes and cu/zeros (copy-up)" t bash -c \
	"printf 'end' >>'$MNT/cu/holes' && printf 'end' >>'$MNT/cu/zeros'"
{ cat "$REPO/cu/holes" && printf end; } >"$T/holes.want"
{ cat "$REPO/cu/zeros" && printf end; } >"$T/zeros.want"
assert_file_eq "  ...cu/holes reads back whole" "$T/holes.want" "$MNT/cu/holes"
assert_file_eq "  ...cu/zeros reads back whole" "$T/zeros.want" "$MNT/cu/zeros"
blocks=$(stat -c %b "$U/cu/holes")
if [ -n "$blocks" ] && [ "$blocks" -lt 2048 ]; then pass "  ...the copy of cu/holes keeps its holes"; else
	fail "  ...the copy of cu/holes keeps its holes" "$blocks blocks of 512 bytes for 8 MiB"
fi
step "touch -d 2010-01-01 of a lower file" t touch -d '2010-01-01 00:00:00 UTC' "$MNT/src/util.h"
assert_eq "  ...the view shows the new mtime" 1262304000 "$(t stat -c %Y "$MNT/src/util.h" 2>&1)"
step "chmod 600 of a lower file" t chmod 600 "$MNT/src/main.c"
assert_eq "  ...the view shows 600" 600 "$(t stat -c %a "$MNT/src/main.c" 2>&1)"
assert_eq "inode numbers are stable across lookups" "$(t stat -c %i "$MNT/Makefile")" \
	"$(sleep 1; t stat -c %i "$MNT/Makefile")"

# ------------------------------------------------------------------ whiteouts, opaque dirs, reserved names
step "delete a lower file and create it again" t bash -c "rm '$MNT/src/util.c' && printf 'new\n' >'$MNT/src/util.c'"
assert_eq "  ...the new content, not the lower's" new "$(t cat "$MNT/src/util.c" 2>&1)"
assert_eq "  ...listed once" 1 "$(t ls -a "$MNT/src" | grep -cx util.c)"
assert_eq "no whiteout marker shows in listings" "" "$(t ls -aR "$MNT" 2>&1 | grep '^\.wh\.')"
step "rm -rf a lower directory tree" t rm -rf "$P/tree"
assert_enoent "$P/tree" "  ...gone"
step "  ...mkdir it again" t mkdir "$P/tree"
assert_eq "  ...the new directory is empty (opaque)" "" "$(t ls -A "$P/tree" 2>&1)"
refuse "creating a reserved .wh. name fails" "Invalid argument" touch "$MNT/.wh.README.md"
assert_contains "  ...and README.md is still there" demo "$(t cat "$MNT/README.md" 2>&1)"
refuse "mkdir of a reserved .wh. name fails" "Invalid argument" mkdir "$MNT/.wh.x"

# ------------------------------------------------------------------ new entries at hidden names
assert_eq "O_EXCL create at a hidden name succeeds (the name is free)" OK \
	"$(fsops create-excl "$MNT/certs/server.pem")"
assert_eq "  ...and it is a new empty file" 0 "$(t stat -c %s "$MNT/certs/server.pem" 2>&1)"
step "mkdir at a hidden name" t mkdir "$MNT/keys/ID_RSA"
assert_eq "  ...an empty directory" "" "$(t ls -A "$MNT/keys/ID_RSA" 2>&1)"
step "symlink at a hidden name" t ln -s ../README.md "$MNT/sub/.env.local"
assert_eq "  ...reads through to README.md" "$(cat "$REPO/README.md")" "$(t cat "$MNT/sub/.env.local" 2>&1)"
refuse "hard link from a hidden name fails with ENOENT" "No such file or directory" \
	ln "$MNT/deploy/.ENV" "$MNT/deploy/env-copy"
refuse "mv from a hidden name fails with ENOENT" "No such file or directory" \
	mv "$MNT/node_modules/x/.npmrc" "$MNT/npmrc"
run grep -r -l "$SECRET_MARK" "$MNT"
assert_eq "grep -r finds no secret after all of it" "1 " "$RC $OUT"

# ------------------------------------------------------------------ editor saves over a file of the upper
# An editor's save of saved.txt, twice (write a temp file, rename it onto the
# name): the second rename replaces a file of the upper.  It stays a plain
# rename(2): ext4 then starts writeback of the new data at once
# (auto_da_alloc, ext4(5)), so a crash leaves the old or the new version,
# never an empty file.
save_twice() {
	printf 'first save\n' >"$1/saved.txt.tmp" && mv "$1/saved.txt.tmp" "$1/saved.txt" &&
		printf 'second save\n' >"$1/saved.txt.tmp" && mv "$1/saved.txt.tmp" "$1/saved.txt"
}
step "two write-temp+rename saves of a file" t bash -c "$(declare -f save_twice); save_twice '$P'"
assert_eq "  ...the file holds the second save" "second save" "$(t cat "$P/saved.txt" 2>&1)"
assert_eq "  ...and the temporary name is gone" "saved.txt" "$(cd "$P" && ls -d saved.txt* 2>&1)"
assert_eq "  ...one link" 1 "$(t stat -c %h "$P/saved.txt" 2>&1)"
up_saved=$STATE/workspaces/mnt/upper/posix/saved.txt
if [ "$(stat -f -c %T "$STATE" 2>/dev/null)" != ext2/ext3 ] || ! command -v filefrag >/dev/null; then
	skip "  ...its data has blocks at once (no delayed allocation left)" "the upper is not on ext4"
else
	run filefrag -v "$up_saved"
	if [ "$RC" -eq 0 ] && ! grep -q delalloc <<<"$OUT"; then
		pass "  ...its data has blocks at once (no delayed allocation left)"
	else
		fail "  ...its data has blocks at once (no delayed allocation left)" "$OUT"
	fi
fi

# ------------------------------------------------------------------ execute permission
# access(2) and exec: a file without execute bits is not executable, root
# included (capabilities(7)); a root daemon's mount answers access(2) itself
# (fs/fs.c, op_access), an unprivileged one lets the kernel check.
sh_step "a script with and one without execute bits" \
	"printf '#!/bin/sh\necho ran\n' >'$P/x.sh' && cp '$P/x.sh' '$P/nox.sh' && chmod 755 '$P/x.sh' && chmod 644 '$P/nox.sh'"
assert_eq "test -x: the first is executable, the second is not" "yes no" \
	"$(t bash -c "[ -x '$P/x.sh' ] && echo yes || echo no; [ -x '$P/nox.sh' ] && echo yes || echo no" | tr '\n' ' ' | sed 's/ $//')"
assert_eq "  ...and runs" ran "$(t "$P/x.sh" 2>&1)"
refuse "  ...the second does not" "Permission denied" "$P/nox.sh"
assert_eq "test -r and -w of a 0444 file as root: yes (unprivileged: r only)" \
	"$([ "$(id -u)" -eq 0 ] && echo "yes yes" || echo "yes no")" \
	"$(t bash -c "[ -r '$P/ro.txt' ] && echo yes || echo no; [ -w '$P/ro.txt' ] && echo yes || echo no" | tr '\n' ' ' | sed 's/ $//')"

# ------------------------------------------------------------------ permissions (unprivileged only)
if [ "$(id -u)" -eq 0 ]; then
	skip "writing a 0444 file is refused" "root bypasses permission checks"
else
	refuse "writing a 0444 file is refused" "Permission denied" bash -c "printf x >>'$P/ro.txt'"
	assert_eq "  ...and it is unchanged" "read only" "$(t cat "$P/ro.txt" 2>&1)"
fi

# ------------------------------------------------------------------ directory modes bind the agent only
# A directory's mode in the view is the agent's to set; what agentfs does in the
# upper on the agent's behalf (copy-ups, the whiteouts of an empty directory)
# must not fail where the same call succeeds on a plain directory.  Root
# passes anyway; the unprivileged daemon needs its own way past the modes.
step "mkdir, chmod 000 and rmdir an empty directory" t bash -c "mkdir '$P/e0' && chmod 000 '$P/e0' && rmdir '$P/e0'"
step "mkdir, chmod 300 and rmdir an empty directory" t bash -c "mkdir '$P/e1' && chmod 300 '$P/e1' && rmdir '$P/e1'"
step "empty a lower directory, chmod 500 and rmdir it (whiteouts inside)" \
	t bash -c "rm '$MNT/scripts/run.sh' '$MNT/scripts/gen.sh' && chmod 500 '$MNT/scripts' && rmdir '$MNT/scripts'"
assert_enoent "$MNT/scripts" "  ...it is gone"
step "mv -T of an empty directory over an empty directory of mode 000" \
	t bash -c "mkdir '$P/e2' '$P/e3' && chmod 000 '$P/e3' && mv -T '$P/e2' '$P/e3' && rmdir '$P/e3'"
# A lower directory that is not empty stays so when the agent takes its read
# permission away (the unprivileged daemon then cannot read its markers).
assert_eq "rmdir of a non-empty lower directory of mode 300: ENOTEMPTY" \
	"Directory not empty" "$(t bash -c "chmod 300 '$MNT/full' && rmdir '$MNT/full'" 2>&1 | sed 's/.*: //')"
assert_eq "mv -T of an empty directory over it at mode 000: ENOTEMPTY" \
	"Directory not empty" "$(t bash -c "chmod 000 '$MNT/full' && mkdir '$P/e4' && mv -T '$P/e4' '$MNT/full'" 2>&1 | sed 's/.*: //')"
assert_eq "  ...at mode 755 it lists its entries" "in x y" \
	"$(t bash -c "chmod 755 '$MNT/full' && ls '$MNT/full' && ls '$MNT/full/in'" 2>&1 | tr '\n' ' ' | sed 's/ $//')"

step "chmod 555 of a lower directory" t chmod 555 "$MNT/docs"
step "  ...append to a lower file in it (copy-up)" t bash -c "printf 'agent\n' >>'$MNT/docs/guide.md'"
step "  ...append to a lower file in its subdirectory (copy-up of the subdirectory)" \
	t bash -c "printf 'agent\n' >>'$MNT/docs/api/index.md'"
assert_eq "  ...both appended" "agent agent" \
	"$(t tail -qn1 "$MNT/docs/guide.md" "$MNT/docs/api/index.md" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
step "  ...touch -h of a lower symlink in it (copy-up)" t touch -h -d '2011-01-01 00:00:00 UTC' "$MNT/docs/readme-link"
assert_eq "  ...the directory keeps its mode" 555 "$(t stat -c %a "$MNT/docs" 2>&1)"
step "chmod 755 again" t chmod 755 "$MNT/docs"
step "rename a lower directory of mode 555 in its parent" \
	t bash -c "chmod 555 '$MNT/docs/api' && mv '$MNT/docs/api' '$MNT/docs/API'"
step "  ...rename it back" t mv "$MNT/docs/API" "$MNT/docs/api"
assert_eq "  ...its files follow it" "agent" "$(t tail -n1 "$MNT/docs/api/index.md" 2>&1)"
assert_eq "  ...it keeps its mode" 555 "$(t stat -c %a "$MNT/docs/api" 2>&1)"
step "chmod 755 again" t chmod 755 "$MNT/docs/api"
step "chmod 300 of a lower directory" t chmod 300 "$MNT/src"
assert_eq "  ...a file in it reads" "int add(int a, int b);" "$(t cat "$MNT/src/util.h" 2>&1)"
step "  ...a file in it takes an append" t bash -c "printf '/* agent */\n' >>'$MNT/src/util.h'"
step "  ...a file is created in it" t bash -c "printf 'new\n' >'$MNT/src/new300.c'"
step "chmod 755 again" t chmod 755 "$MNT/src"

# The inode number of a copied-up file or a renamed directory comes from a
# mark on the upper entry that its owner reads only with read permission
# (user.* xattrs); the agent's chmod 000 must not change what stat reports.
ino_f=$(t stat -c %i "$MNT/src/util.h" 2>&1)
step "chmod 000 of a copied-up file" t chmod 000 "$MNT/src/util.h"
assert_eq "  ...it keeps its inode number" "$ino_f" "$(t stat -c %i "$MNT/src/util.h" 2>&1)"
assert_eq "  ...in a listing too" "$ino_f util.h" "$(t ls -i "$MNT/src" 2>&1 | grep -w util.h | sed 's/^ *//')"
step "chmod 644 again" t chmod 644 "$MNT/src/util.h"
step "rename a lower directory" t mv "$MNT/docs/api" "$MNT/docs/api2"
ino_d=$(t stat -c %i "$MNT/docs/api2" 2>&1)
step "chmod 000 of the renamed directory" t chmod 000 "$MNT/docs/api2"
assert_eq "  ...it keeps its inode number" "$ino_d" "$(t stat -c %i "$MNT/docs/api2" 2>&1)"
step "chmod 755 again" t chmod 755 "$MNT/docs/api2"
assert_eq "  ...its files are still there" "agent" "$(t tail -n1 "$MNT/docs/api2/index.md" 2>&1)"
step "rename it back" t mv "$MNT/docs/api2" "$MNT/docs/api"

# ------------------------------------------------------------------ directories moved or removed, then made again
# The daemon keeps descriptors of the upper's directories between requests
# (fs/dircache.c).  After a directory moves or goes, what is made at its old
# path must land in the directory now there, in the view and in the upper.
UP=$STATE/workspaces/mnt/upper/posix
sh_step "a file in new dm/sub, dm moved to dm2, a file in new dm/sub again" \
	"mkdir -p '$P/dm/sub' && printf 'one\n' >'$P/dm/sub/one' && mv '$P/dm' '$P/dm2' &&
	mkdir -p '$P/dm/sub' && printf 'two\n' >'$P/dm/sub/two'"
assert_eq "  ...dm/sub holds the second file, dm2/sub the first" "two one" \
	"$(t ls "$P/dm/sub" "$P/dm2/sub" 2>&1 | grep -v : | tr -s '\n' ' ' | sed 's/ $//')"
assert_eq "  ...in the upper too" "two one" "$(ls "$UP/dm/sub" "$UP/dm2/sub" 2>&1 | grep -v : |
	tr -s '\n' ' ' | sed 's/ $//')"
sh_step "a file in new dr, removed with dr, dr made again with another file" \
	"mkdir '$P/dr' && printf 'a\n' >'$P/dr/a' && rm '$P/dr/a' && rmdir '$P/dr' &&
	mkdir '$P/dr' && printf 'b\n' >'$P/dr/b'"
assert_eq "  ...dr holds the new file" "b" "$(t ls "$P/dr" 2>&1)"
sh_step "a file in each of new dx and dy, the two exchanged (RENAME_EXCHANGE)" \
	"mkdir '$P/dx' '$P/dy' && printf 'x\n' >'$P/dx/x' && printf 'y\n' >'$P/dy/y'"
assert_eq "  ...exchanged" OK "$(fsops rename-exchange "$P/dx" "$P/dy")"
sh_step "  ...a file made in each after" "printf 'n\n' >'$P/dx/nx' && printf 'n\n' >'$P/dy/ny'"
assert_eq "  ...each lands beside what the name now holds" "nx y | ny x" \
	"$(echo $(t ls "$P/dx") "|" $(t ls "$P/dy"))"
assert_eq "  ...in the upper too" "nx y | ny x" "$(echo $(ls "$UP/dx") "|" $(ls "$UP/dy"))"
# A shell whose working directory is removed under it: ls lists nothing and
# stat says no link, size 0, as on ext4 (where it failed with ENOENT).
assert_eq "a new directory removed while it is the working directory: ls, stat ." "ok 0 0" \
	"$(t sh -c "mkdir '$P/cw' && cd '$P/cw' && rmdir '$P/cw' && ls && echo ok \$(stat -c '%h %s' .)" 2>&1)"
assert_eq "a lower directory removed while it is the working directory: ls, stat ." "ok 0 0" \
	"$(t sh -c "cd '$MNT/cwdl' && rm f && rmdir '$MNT/cwdl' && ls && echo ok \$(stat -c '%h %s' .)" 2>&1)"
assert_eq "a directory renamed over while it is the working directory: ls, stat ." "ok 0" \
	"$(t sh -c "mkdir '$P/ro1' '$P/ro2' && cd '$P/ro2' && mv -T '$P/ro1' '$P/ro2' && ls && echo ok \$(stat -c %h .)" 2>&1)"
sh_step "  ...made again, with a file" "mkdir '$MNT/cwdl' && printf 'n\n' >'$MNT/cwdl/n'"
assert_eq "  ...the new one lists only its own file" n "$(t ls "$MNT/cwdl" 2>&1)"

# ------------------------------------------------------------------ a database in WAL mode
# SQLite's WAL mode maps its -shm file shared and writable and locks with
# fcntl(2); a test suite an agent runs may keep its database in the tree.
if command -v python3 >/dev/null && python3 -c 'import sqlite3' 2>/dev/null; then
	assert_eq "sqlite in WAL mode: two connections, a checkpoint, an integrity check" \
		"(2000, 1999000) ('ok',) (2001,)" "$(t python3 - "$P/db.sqlite" 2>&1 <<'PY'
import sqlite3, sys
p = sys.argv[1]
a = sqlite3.connect(p)
a.execute("pragma journal_mode=wal")
a.execute("create table t(x)")
for i in range(2000):
    a.execute("insert into t values(?)", (i,))
a.commit()
b = sqlite3.connect(p)
seen = b.execute("select count(*), sum(x) from t").fetchone()
a.execute("pragma wal_checkpoint(truncate)")
a.close()
b.close()
c = sqlite3.connect(p)
c.execute("pragma journal_mode=delete")
c.execute("insert into t values(1)")
c.commit()
print(seen, c.execute("pragma integrity_check").fetchone(), c.execute("select count(*) from t").fetchone())
PY
)"
fi

# A directory without write permission for its owner where a repository
# directory was (mkdir -m 555 after rm -r, a 555 directory moved there): its
# opaque flag is a user.* xattr, which needs that permission unless the
# daemon lifts the mode for it.  The repository's files must stay hidden.
sh_step "rm -r docs; mkdir -m 555 docs" "rm -r '$MNT/docs' && mkdir -m 555 '$MNT/docs'"
assert_eq "  ...the new docs is empty, mode 555" "555 0" \
	"$(stat -c %a "$MNT/docs") $(ls -A "$MNT/docs" | wc -l)"
sh_step "a 555 directory moved where scripts was (removed above)" "mkdir '$MNT/newd' &&
	printf 'x\n' >'$MNT/newd/x' && chmod 555 '$MNT/newd' && mv '$MNT/newd' '$MNT/scripts'"
assert_eq "  ...scripts holds its file alone" "x" "$(ls -A "$MNT/scripts" | tr '\n' ' ' | sed 's/ $//')"
step "  ...and verify passes" af verify "$MNT"
t chmod 755 "$MNT/docs" "$MNT/scripts"

assert_unchanged "the lower is unchanged (content, modes, times)" "$REPO" "$T/lower.before"
run af unmount "$MNT"
if [ "$RC" -eq 0 ] && ! is_mounted "$MNT"; then pass "unmount"; else fail "unmount" "exit $RC" "$OUT"; fi
assert_unchanged "the lower is unchanged after unmount" "$REPO" "$T/lower.before"

# ------------------------------------------------------------------ a default ACL on the state directory
# A default ACL (acl(5)), inherited by work/, gives new files their mode in
# place of the umask: a copy-up must still give its copy the lower file's
# mode (fs/copyup.c, agentfs.work_acl).  u::rwx,g::r-x,o::--- would make
# them 750 and 640.
STATE_FIRST=$STATE
STATE=$T/state-acl
mkdir -p "$STATE"
if python3 -c 'import os, struct, sys
e = lambda tag, perm: struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
os.setxattr(sys.argv[1], "system.posix_acl_default",
            struct.pack("<I", 2) + e(1, 7) + e(4, 5) + e(0x20, 0))' "$STATE" 2>/dev/null; then
	mount_ws "$REPO" "$T/mnt-acl" || bail "mount with a default ACL failed: $OUT"
	step "append to a 755 and a 644 lower file under a default ACL (copy-ups)" t bash -c \
		"printf x >>'$T/mnt-acl/cu/run.sh' && printf x >>'$T/mnt-acl/README.md'"
	# In the upper: the view's attributes are the ones looked up before.
	assert_eq "  ...their copies keep their modes" "755 644" \
		"$(stat -c %a "$STATE/workspaces/mnt-acl/upper/cu/run.sh" \
			"$STATE/workspaces/mnt-acl/upper/README.md" | tr '\n' ' ' | sed 's/ $//')"
	run af unmount "$T/mnt-acl"
	assert_eq "  ...unmount" 0 "$RC"
else
	skip "copy-ups under a default ACL" "the file system takes no POSIX ACLs"
fi
STATE=$STATE_FIRST
done_testing
