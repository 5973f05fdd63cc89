#!/usr/bin/env bash
# export.sh - status, export and discard on a real mount: an agent edits through
# the mount (odd names, renames of directories holding hidden files, binary and
# mode changes, symlinks, files at hidden and ignored names) while the person
# edits one of the same files in the repository; status names every change with
# its code, export leaves out the conflict, the hidden and the ignored paths, and
# its patch applied to a fresh clone gives exactly the view on every path it
# touches; discard brings paths, a renamed directory, and everything back.
#
#   bash export.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"

mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "agentfs mount $REPO $MNT"; else
	fail "agentfs mount $REPO $MNT" "exit status $RC" "$OUT"
	bail "mount failed"
fi

# ------------------------------------------------------------------ the agent's work
cd "$MNT" || bail "cd $MNT"
sh_step "edit README.md" 'printf "# demo, edited\n" >README.md'
# an append copies the file up, recording the version it came from (sed -i
# would replace it with a new file, which carries no such record)
sh_step "edit src/util.c" 'printf "/* agent */\n" >>src/util.c'
step "chmod +x scripts/gen.sh" t chmod +x scripts/gen.sh
step "rm src/old.c" t rm src/old.c
step "mv docs documentation (a lower directory)" t mv docs documentation
step "mv config conf (holding hidden id_rsa)" t mv config conf
sh_step "names with a space, a quote, a newline" '
	printf "space\n" >"with space.txt"
	printf "quote\n" >"quo\"te.txt"
	printf "newline\n" >"$(printf "new\nline.txt")"'
step "an empty file" t touch empty.txt
step "a new symlink" t ln -s src/util.h util-link.h
sh_step "binary change" "printf '\\000\\001\\002' >>data/blob.bin"
sh_step "a file at a hidden name (.env)" 'printf "AGENT=1\n" >.env'
sh_step "a file at a hidden name in a renamed directory (conf/id_rsa)" 'printf "agent key\n" >conf/id_rsa'
sh_step "ignored and untracked build output" 'mkdir -p build && printf "obj\n" >build/x.o'
cd / || bail "cd /"
# the person edits a file the agent changed, after the agent copied it
sh_step "the person edits src/util.c in the repository" \
	"printf '/* person */\n' >>'$REPO/src/util.c' && git -C '$REPO' commit -qam person"

# ------------------------------------------------------------------ status
run af status "$MNT"
assert_eq "agentfs status exits 0" 0 "$RC"
status_out=$OUT
# Options may also follow the operand, as with mount.
for c in status log verify; do
	run t "$AGENTFS" $c "$MNT" --state-dir "$STATE"
	assert_eq "agentfs $c MNT --state-dir DIR: options after the operand" 0 "$RC"
done
run t "$AGENTFS" export "$MNT" --state-dir "$STATE" --format stat --conflicts=skip
assert_eq "agentfs export MNT --state-dir DIR --format stat: options after the operand" 0 "$RC"
# A name with a newline would otherwise forge a line of the summary.
assert_contains "export --format=stat quotes a name as git does" ' "new\nline.txt" ' "$OUT"
assert_eq "  ...so that no name spans two lines" "" "$(grep '^line\.txt' <<<"$OUT")"
assert_contains "  ...and says what was created" ' create mode 100644 "new\nline.txt"' "$OUT"
for line in "M README.md" "D src/old.c" "M scripts/gen.sh" "M data/blob.bin" \
	"R docs/guide.md -> documentation/guide.md" \
	"R config/settings.yml -> conf/settings.yml" \
	'A "quo\"te.txt"' 'A "new\nline.txt"' 'A "with space.txt"' "A empty.txt" "A util-link.h" \
	"C src/util.c" "H .env" "H conf/id_rsa" "! build/x.o"; do
	assert_contains "status: $line" "$(printf '%s\n' "$line")" "$status_out"
done
assert_not_contains "status shows no secret" "$SECRET_MARK" "$status_out"
assert_not_contains "status shows no hidden lower entry" "config/id_rsa" "$status_out"

# ------------------------------------------------------------------ export
refuse "export refuses while there is a conflict" "src/util.c: conflict" af export "$MNT"
af export "$MNT" >"$T/refused.patch" 2>/dev/null
assert_eq "the refused export writes nothing" "" "$(cat "$T/refused.patch")"
run af export --conflicts=skip -o "$T/patch" "$MNT"
assert_eq "export --conflicts=skip -o FILE exits 0" 0 "$RC"
assert_contains "export names the conflict on stderr" "src/util.c: conflict" "$OUT"
assert_contains "export names the hidden name on stderr" ".env: left out: hidden name" "$OUT"
assert_contains "export names the ignored path on stderr" "build/x.o: left out: ignored" "$OUT"
# -o of something that is not a regular file writes to it and never replaces
# it (a rename over root's /dev/null would put a regular file there); -o of a
# symlink to a file replaces the file and keeps the link.
mkfifo "$T/out.fifo"
(timeout 10 cat "$T/out.fifo" >"$T/fifo.read") &
fifo_reader=$!
run af export --conflicts=skip -o "$T/out.fifo" "$MNT"
wait "$fifo_reader"
assert_eq "export -o FIFO writes into the fifo, which stays one" "0 fifo" \
	"$RC $([ -p "$T/out.fifo" ] && echo fifo || echo replaced)"
assert_file_eq "  ...the patch, read from the fifo" "$T/patch" "$T/fifo.read"
printf 'old\n' >"$T/out.real" && ln -s out.real "$T/out.link"
run af export --conflicts=skip -o "$T/out.link" "$MNT"
assert_eq "export -o SYMLINK keeps the symlink" "0 link" \
	"$RC $([ -L "$T/out.link" ] && echo link || echo replaced)"
assert_file_eq "  ...and replaces the file it points to" "$T/patch" "$T/out.real"
if [ "$(id -u)" -eq 0 ]; then
	mknod "$T/null" c 1 3
	run af export --conflicts=skip -o "$T/null" "$MNT"
	assert_eq "export -o of a character device keeps the device" "0 device" \
		"$RC $([ -c "$T/null" ] && echo device || echo replaced)"
else
	skip "export -o of a character device keeps the device" "mknod needs root"
fi
# An mbox's series meets the same left-out paths again (and promote builds it
# twice): each is named once all the same.
run af export --conflicts=skip --format=mbox -o "$T/left-out.mbox" "$MNT"
assert_eq "export --format=mbox --conflicts=skip exits 0" 0 "$RC"
assert_contains "  ...names the hidden name" ".env: left out: hidden name" "$OUT"
assert_eq "  ...and each path it leaves out once" "" \
	"$(grep 'left out' <<<"$OUT" | sed -E 's/^agentfs: export: ([^:]*):.*/\1/' | sort | uniq -d)"
patch=$(cat "$T/patch")
assert_not_contains "the patch holds no secret" "$SECRET_MARK" "$patch"
assert_not_contains "the patch holds no agent file at a hidden name" "AGENT=1" "$patch"
assert_not_contains "the patch holds no ignored output" "build/x.o" "$patch"
assert_not_contains "the patch leaves the conflict out" "src/util.c" "$patch"
assert_contains "the patch renames the directory's files" "rename to documentation/guide.md" "$patch"
assert_contains "the patch holds a binary patch" "GIT binary patch" "$patch"
af export --conflicts=skip "$MNT" >"$T/patch.stdout" 2>/dev/null
assert_file_eq "export to stdout is the same patch" "$T/patch" "$T/patch.stdout"

# A fresh clone + the patch must equal the view on every path the patch touches.
compare_with_view() {
	local clone=$1 label=$2 p errs=() n=0
	while IFS= read -r -d '' p; do
		n=$((n + 1))
		local v=$MNT/$p c=$clone/$p
		if [ -L "$v" ]; then
			[ -L "$c" ] && [ "$(readlink "$v")" == "$(readlink "$c")" ] ||
				errs+=("$p: symlink differs")
		elif [ -f "$v" ]; then
			[ -f "$c" ] && [ ! -L "$c" ] && cmp -s "$v" "$c" || errs+=("$p: content differs")
			if { [ -x "$v" ] && [ ! -x "$c" ]; } || { [ ! -x "$v" ] && [ -x "$c" ]; }; then
				errs+=("$p: executable bit differs")
			fi
		elif [ -e "$v" ]; then
			errs+=("$p: not a file or symlink in the view")
		else
			{ [ -e "$c" ] || [ -L "$c" ]; } && errs+=("$p: present in the clone, absent in the view")
		fi
	done < <(git -C "$clone" diff --cached --no-renames --name-only -z)
	if [ ${#errs[@]} -eq 0 ] && [ "$n" -ge 15 ]; then
		pass "$label: every patched path ($n) equals the view"
	else
		fail "$label: every patched path equals the view" "$n paths" "${errs[@]}"
	fi
}
must "git clone the repository" git clone -q --no-hardlinks "$REPO" "$T/clone"
step "git apply --index the export" git -C "$T/clone" apply --index "$T/patch"
compare_with_view "$T/clone" "git apply --index"
must "git clone the repository again" git clone -q --no-hardlinks "$REPO" "$T/clone2"
step "git apply the export" git -C "$T/clone2" apply "$T/patch"
git -C "$T/clone2" add -A
compare_with_view "$T/clone2" "git apply"
assert_eq "the hidden file of the renamed directory stays in the repository" \
	"$(cat "$REPO/config/id_rsa")" "$(cat "$T/clone/config/id_rsa" 2>&1)"

# ------------------------------------------------------------------ export --evidence
# Before the patch, what the agent read, wrote and was refused, for a reviewer;
# git apply and git am skip it.
step "the agent reads src/main.c" t cat "$MNT/src/main.c"
refuse "the agent looks up onlysecret/.env (hidden)" "No such file or directory" \
	t cat "$MNT/onlysecret/.env"
sh_step "names that start like patch lines" \
	"printf 'x\n' >'$MNT/@@ -1 +1 @@' && printf 'y\n' >'$MNT/From me'"
run af export --conflicts=skip --evidence -o "$T/evidence.patch" "$MNT"
assert_eq "export --evidence exits 0" 0 "$RC"
af export --conflicts=skip "$MNT" >"$T/plain.patch" 2>/dev/null
ev=$(sed '/^diff --git /,$d' "$T/evidence.patch")
# section TITLE: the indented lines under the block's line "TITLE (N):"
section() {
	awk -v h="$1 (" 'index($0, h) == 1 { on = 1; next } /^[^ ]/ { on = 0 } on' <<<"$ev"
}
assert_contains "the evidence names the workspace" "  workspace:   mnt" "$ev"
assert_contains "  ...the repository" "  repository:  $REPO" "$ev"
assert_contains "  ...the base commit (HEAD at mount)" \
	"  base commit: $(git -C "$REPO" rev-parse HEAD^)" "$ev"
assert_contains "  ...the journal's verdict" "  verify:      journal intact:" "$ev"
assert_contains "  ...the file the agent read" "  src/main.c" "$(section Read)"
assert_contains "  ...a file the agent wrote" "  README.md" "$(section Written)"
assert_contains "  ...a file the agent created" "  with space.txt" "$(section Created)"
assert_contains "  ...a name with a newline, escaped" '  new\x0aline.txt' "$(section Created)"
assert_contains "  ...names that start like patch lines, indented" \
	"$(printf '  @@ -1 +1 @@\n  From me')" "$(section Created)"
assert_contains "  ...a file the agent deleted" "  src/old.c" "$(section Deleted)"
assert_contains "  ...the directory the agent renamed" "  docs -> documentation" \
	"$(section Renamed)"
concealed=$(section "Refused, concealed")
assert_contains "  ...the concealed lookup of onlysecret/.env" "  onlysecret/.env" "$concealed"
assert_contains "  ...the concealed lookup of .env" "  .env" "$concealed"
assert_contains "  ...the processes by name" "  cat " "$(section "Processes by name")"
assert_not_contains "the evidence holds no secret" "$SECRET_MARK" "$ev"
# Only the block's own labels start a line: nothing a patch parser could take.
assert_eq "no line of the evidence starts like a patch or an mbox message" "" \
	"$(grep -E '^(diff |--- |\+\+\+ |@@ |From |Index: )' <<<"$ev")"
assert_eq "the rest is the patch, unchanged" "$(cat "$T/plain.patch")" \
	"$(sed -n '/^diff --git /,$p' "$T/evidence.patch")"
for how in "--index" ""; do
	must "git clone the repository (evidence, apply $how)" \
		git clone -q --no-hardlinks "$REPO" "$T/clone-ev$how"
	step "git apply $how of the export --evidence" \
		git -C "$T/clone-ev$how" apply $how "$T/evidence.patch"
	git -C "$T/clone-ev$how" add -A
	compare_with_view "$T/clone-ev$how" "git apply $how of the export --evidence"
done
run af export --conflicts=skip --evidence --format=stat "$MNT"
assert_contains "export --evidence --format=stat: the block, then the stat" \
	"$(printf '  cat ')" "$(sed '/files changed/,$d' <<<"$OUT")"
assert_contains "  ...the stat follows it" "files changed" "$(sed '1,/^Processes by name/d' <<<"$OUT")"
af export --conflicts=skip --evidence --format=mbox "$MNT" >"$T/evidence.mbox" 2>/dev/null
must "git clone the repository at the HEAD at mount (mbox)" \
	git clone -q --no-hardlinks "$REPO" "$T/clone-mbox"
git -C "$T/clone-mbox" checkout -q HEAD^ 2>/dev/null
step "git am of export --evidence --format=mbox" git -C "$T/clone-mbox" am -q "$T/evidence.mbox"
assert_not_contains "  ...the commit message leaves the evidence out" "agentfs evidence" \
	"$(git -C "$T/clone-mbox" log -1 --format=%B)"
assert_contains "  ...the mbox holds it below the \"---\" line" "$(printf -- '---\nagentfs evidence')" \
	"$(cat "$T/evidence.mbox")"
refuse "export --evidence-max of a non-number is a usage error" "--evidence-max=x: expected" \
	af export --evidence-max=x "$MNT"
run af export --conflicts=skip --evidence --evidence-max=1 "$MNT"
assert_contains "--evidence-max=1 lists one path per kind and counts the rest" "  ... and " \
	"$(sed '/^diff --git /,$d' <<<"$OUT")"

# ------------------------------------------------------------------ discard
# A file renamed away and back has an upper copy that changes nothing status
# shows, and discard removes it all the same: .editorconfig, and
# scripts/run.sh beside scripts/gen.sh, which has a change of its own.
for f in .editorconfig scripts/run.sh; do
	step "mv $f away" t mv "$MNT/$f" "$MNT/$f.away"
	step "  ...and back" t mv "$MNT/$f.away" "$MNT/$f"
done
step "verify passes before discarding" af verify "$MNT"
refuse "discard refuses a path outside the view" "outside the view" af discard "$MNT" /etc/passwd
refuse "discard refuses .. above the top" "outside the view" af discard "$MNT" ../x
refuse "discard refuses a path without changes" "no change at this path" af discard "$MNT" Makefile
run t "$AGENTFS" discard "$MNT" Makefile --state-dir "$STATE"
assert_contains "discard MNT PATH --state-dir DIR: options after the operands" "no change at this path" "$OUT"
before=$(af status "$MNT" 2>&1)
run af discard "$MNT" ""
assert_eq "discard refuses an empty PATH: a usage error" \
	"2 agentfs: discard: an empty PATH (no PATH, or '.', discards everything; see 'agentfs discard --help')" \
	"$RC $OUT"
assert_eq "  ...and discards nothing" "$before" "$(af status "$MNT" 2>&1)"
refuse "discard refuses a path inside a renamed directory" "discard that directory" \
	af discard "$MNT" documentation/guide.md
sh_step "a directory replaced inside the renamed one" "rm -r '$MNT/documentation/api' &&
	mkdir '$MNT/documentation/api' && printf 'n\n' >'$MNT/documentation/api/n'"
refuse "discard refuses it too" "discard that directory" af discard "$MNT" documentation/api
assert_eq "  ...before it changes anything" "n" "$(ls "$MNT/documentation/api" 2>&1)"
# conf is config renamed; config/id_rsa is hidden, so nothing shows at
# conf/id_rsa once the agent's file there is gone.
key_before=$(cat "$REPO/config/id_rsa")
run af discard "$MNT" conf/id_rsa
assert_eq "discard of a file in a renamed directory over a hidden one" "0 H conf/id_rsa" "$RC $OUT"
assert_enoent "$MNT/conf/id_rsa" "  ...conf/id_rsa is gone from the view"
assert_eq "  ...the repository's config/id_rsa is untouched" "$key_before" "$(cat "$REPO/config/id_rsa")"
pid=$(daemon_pid_of "$MNT")
run af discard "$MNT" README.md
assert_eq "discard README.md prints what it discarded" "0 M README.md" "$RC $OUT"
if _is_our_daemon "$pid" && is_mounted "$MNT"; then
	pass "the daemon survives the discard's SIGUSR1"
else
	fail "the daemon survives the discard's SIGUSR1" "pid $pid" \
		"$(tail -n 5 "$STATE"/workspaces/*/daemon.log 2>&1)"
	bail "the mount is gone"
fi
assert_file_eq "README.md reads as in the repository again (the daemon forgot its cache)" \
	"$REPO/README.md" "$MNT/README.md"
step "verify passes after discarding README.md" af verify "$MNT"
step "discard scripts/gen.sh" af discard "$MNT" scripts/gen.sh
step "verify passes after discarding scripts/gen.sh (scripts/run.sh beside it stays)" \
	af verify "$MNT"
run af discard "$MNT" "$MNT/documentation"
assert_eq "discard of the renamed directory (absolute path) exits 0" 0 "$RC"
assert_file_eq "docs/guide.md is back" "$REPO/docs/guide.md" "$MNT/docs/guide.md"
assert_enoent "$MNT/documentation" "documentation is gone"
assert_not_contains "status no longer lists docs" "docs" "$(af status "$MNT" 2>&1)"
run af discard "$MNT" src/util.c
assert_eq "discard of the conflict exits 0" 0 "$RC"
assert_file_eq "src/util.c shows the person's version" "$REPO/src/util.c" "$MNT/src/util.c"
# A process whose working directory is a directory discard leaves in place
# (the agent's shell in a directory it made) keeps it: getcwd() still works,
# though the daemon told the kernel to forget what it cached.
sh_step "a directory the agent made, two files in it" \
	"mkdir '$MNT/agentdir' && printf 'one\n' >'$MNT/agentdir/f1' && printf 'two\n' >'$MNT/agentdir/f2'"
# (realpath: its getcwd() comes first; a lookup of the directory by its path,
# as python's start-up makes, would make the kernel find it again.)
run t bash -c "cd '$MNT/agentdir' && '$AGENTFS' discard --state-dir '$STATE' '$MNT' agentdir/f2 >/dev/null &&
	realpath ."
assert_eq "getcwd() in agentdir works after discarding agentdir/f2" "0 $MNT/agentdir" "$RC $OUT"
run af discard "$MNT"
assert_eq "discard of everything exits 0" 0 "$RC"
assert_eq "status is empty after discarding everything" "" "$(af status "$MNT" 2>&1)"
assert_file_eq "conf is gone, config is back" "$REPO/config/settings.yml" "$MNT/config/settings.yml"
assert_enoent "$MNT/.env" "the agent's .env is gone (the repository's stays hidden)"
assert_eq "export after discarding everything is empty" "" "$(af export "$MNT" 2>&1)"
step "verify passes after discarding everything (the renamed-back file included)" \
	af verify "$MNT"
# The daemon kept a descriptor of agentdir's upper directory (fs/dircache.c),
# which discard removed behind it.
sh_step "agentdir made again, a file in it" \
	"mkdir '$MNT/agentdir' && printf 'three\n' >'$MNT/agentdir/f3'"
assert_eq "  ...it holds the new file" "f3" "$(t ls "$MNT/agentdir" 2>&1)"
assert_eq "  ...in the upper too" "f3" "$(ls "$STATE"/workspaces/*/upper/agentdir 2>&1)"
step "  ...discard it" af discard "$MNT" agentdir

# ------------------------------------------------------------------ a file truncated by its open
# An open with O_TRUNC copies none of the lower file's bytes up, but the copy
# still names the version it replaces: a change, not a conflict, until the
# person changes that file too.
sh_step "printf >src/main.c (an O_TRUNC open of a lower file)" \
	"printf 'int main(void) { return 1; }\n' >'$MNT/src/main.c'"
assert_contains "status: M src/main.c" "M src/main.c" "$(af status "$MNT" 2>&1)"
assert_eq "export of it applies to the repository" "" \
	"$(af export "$MNT" 2>&1 | git -C "$REPO" apply --check - 2>&1)"
sh_step "the person edits src/main.c in the repository" \
	"printf '/* person */\n' >>'$REPO/src/main.c' && git -C '$REPO' commit -qam 'person, main.c'"
assert_contains "status: then C src/main.c" "C src/main.c" "$(af status "$MNT" 2>&1)"
step "discard src/main.c" af discard "$MNT" src/main.c

# ------------------------------------------------------------------ a file over hidden files
# config/ holds the tracked id_rsa the agent cannot see: a file or symlink put
# in config's place cannot go into the repository without deleting it, so it
# is left out like a conflict (and never makes a patch git cannot apply).
replaced_msg="config: replaced by a file, but the repository keeps files there the agent cannot see"
sh_step "rm -rf config (holding hidden id_rsa), a file in its place" \
	"rm -rf '$MNT/config' && printf 'agent file\n' >'$MNT/config'"
run af status "$MNT"
assert_contains "status marks the file over hidden files a conflict" "C config" "$OUT"
refuse "export refuses the file over hidden files" "$replaced_msg" af export "$MNT"
run af export --conflicts=skip -o "$T/over-hidden.patch" "$MNT"
assert_eq "export --conflicts=skip leaves it out and exits 0" 0 "$RC"
assert_contains "export --conflicts=skip names it" "$replaced_msg; left out" "$OUT"
must "git clone the repository (file over hidden files)" \
	git clone -q --no-hardlinks "$REPO" "$T/clone3"
step "git apply --index of that export" git -C "$T/clone3" apply --index "$T/over-hidden.patch"
assert_eq "the hidden id_rsa stays in the repository" \
	"$(cat "$REPO/config/id_rsa")" "$(cat "$T/clone3/config/id_rsa" 2>&1)"
step "discard config" af discard "$MNT" config
# The same by RENAME_EXCHANGE of config with a file: config is a file, README.md a directory.
step "renameat2(RENAME_EXCHANGE) config README.md" fsops rename-exchange "$MNT/config" "$MNT/README.md"
run af status "$MNT"
assert_contains "status after the exchange marks config a conflict" "C config" "$OUT"
# The journal's record is a rename with RENAME_EXCHANGE: both names stay.
assert_contains "log names the exchange an exchange" "exchange" \
	"$(af log --op exchange --path config "$MNT" 2>&1)"
assert_contains "  ...of both names" "config <-> README.md" \
	"$(af log --op exchange --path config "$MNT" 2>&1)"
assert_contains "  ...and --op rename takes it too (it is stored as one)" "<->" \
	"$(af log --op rename --path config "$MNT" 2>&1)"
assert_not_contains "  ...while --op exchange takes no plain rename" "config -> conf" \
	"$(af log --op exchange --path config "$MNT" 2>&1)"
assert_contains "  ...and so does the evidence" "  config <-> README.md" \
	"$(af export --conflicts=skip --evidence "$MNT" 2>/dev/null | sed '/^diff --git /,$d')"
refuse "export refuses the exchanged directory" "$replaced_msg" af export "$MNT"
run af export --conflicts=skip -o "$T/exchange.patch" "$MNT"
assert_eq "export --conflicts=skip after the exchange exits 0" 0 "$RC"
must "git clone the repository (exchange)" git clone -q --no-hardlinks "$REPO" "$T/clone4"
step "git apply --index of the exchange's export" git -C "$T/clone4" apply --index "$T/exchange.patch"
assert_eq "the hidden id_rsa stays after the exchange" \
	"$(cat "$REPO/config/id_rsa")" "$(cat "$T/clone4/config/id_rsa" 2>&1)"
# Names that hold an arrow are quoted where two paths share a line.
sh_step "an exchange and a move of names that hold arrows" \
	"printf 'p\n' >'$MNT/p -> q' && printf 'r\n' >'$MNT/r' && printf 's\n' >'$MNT/s' &&
	'$AGENTFS_FSOPS' rename-exchange '$MNT/p -> q' '$MNT/r' && mv '$MNT/s' '$MNT/q <-> r2'"
ev2=$(af export --conflicts=skip --evidence "$MNT" 2>/dev/null | sed '/^diff --git /,$d')
assert_contains "the evidence quotes them: the exchange" '  "p -> q" <-> r' "$ev2"
assert_contains "  ...and the move" '  s -> "q <-> r2"' "$ev2"
assert_contains "  ...as log does" '"p -> q" <-> r' "$(af log --op exchange "$MNT" 2>&1)"
step "discard of everything after the exchange" af discard "$MNT"
assert_eq "status is empty again" "" "$(af status "$MNT" 2>&1)"

# ------------------------------------------------------------------ rmdir of a dir of hidden files
# onlysecret/ holds only a hidden .env: it looks empty, rmdir succeeds (a
# whiteout in the upper), and no visible path changed, so status and export
# say nothing; discard of that path drops the whiteout all the same.
step "rmdir onlysecret (only hidden entries)" t rmdir "$MNT/onlysecret"
assert_enoent "$MNT/onlysecret" "onlysecret is gone from the view"
assert_eq "status shows nothing for it" "" "$(af status "$MNT" 2>&1)"
assert_eq "export exports nothing for it" "" "$(af export "$MNT" 2>&1)"
step "discard onlysecret drops the whiteout" af discard "$MNT" onlysecret
step "onlysecret is a directory in the view again (the daemon was told)" \
	t test -d "$MNT/onlysecret"
run t ls -A "$MNT/onlysecret"
assert_eq "  ...that still looks empty" "0 " "$RC $OUT"
refuse "discard of it again: no change at this path" "no change at this path" \
	af discard "$MNT" onlysecret

# ------------------------------------------------------------------ discard past the agent's modes
# The agent's chmod 000 of a directory is the mode of its upper copy, which a
# person who is not root then cannot read as its owner: discard is still the
# way back, and what it leaves keeps the agent's mode.
sh_step "the agent locks a new directory, a second one and a lower one" "cd '$MNT' &&
	mkdir locked kept && printf 'x\n' >locked/f && printf 'y\n' >kept/f &&
	printf 'agent\n' >>src/util.c && chmod 000 locked kept src"
# Nor can export read them: it says which and how to let it (root reads past
# the modes and exports them).
if [ "$(id -u)" -ne 0 ]; then
	run af export "$MNT"
	assert_eq "export past a locked directory fails" 1 "$RC"
	re='^agentfs: export: [^ ]+: (locked|kept|src): Permission denied in the workspace [(]the agent took its permissions away: chmod u[+]rwX it in the mount, then try again[)]$'
	assert_eq "  ...naming it and what to do" yes "$([[ $OUT =~ $re ]] && echo yes || echo "$OUT")"
else
	skip "export past a locked directory fails" "root reads past the modes"
	skip "  ...naming it and what to do" "root reads past the modes"
fi
run af discard "$MNT" locked
assert_eq "discard of the locked directory" "0 A locked/f" "$RC $OUT"
assert_enoent "$MNT/locked" "  ...it is gone"
assert_eq "  ...the other keeps its mode" "0" "$(t stat -c %a "$MNT/kept" 2>&1)"
run af discard "$MNT"
assert_eq "discard of everything past the locked directories" "0" "$RC"
assert_eq "  ...the lower directory is back as it was" "755 0" \
	"$(t stat -c %a "$MNT/src" 2>&1) $(t grep -c agent "$MNT/src/util.c" 2>&1)"
assert_eq "  ...and nothing is left to discard" "" "$(af status "$MNT" 2>&1)"

# ------------------------------------------------------------------ saves keep the base
# A file the agent changed, then replaced by a new file (a second editor save
# by rename, vim's rename to a backup name and write, rm and write again):
# the new file's base is still the version the agent copied up, so the
# person's change to the repository file in between is a conflict, never a
# change export would silently undo.
REPO2=$T/repo2
MNT2=$T/mnt2
mkdir -p "$REPO2" && git -C "$REPO2" init -q -b main &&
	for f in twice vim rm rmmv sed; do printf '%s\n' "$f" >"$REPO2/$f.txt"; done &&
	git -C "$REPO2" add -A && git -C "$REPO2" -c user.name=p -c user.email=p@x commit -qm base ||
	bail "cannot create $REPO2"
mount_ws "$REPO2" "$MNT2" || bail "mount $REPO2: $OUT"
save() { # FILE TEXT: write FILE.tmp, rename it onto FILE
	python3 -c 'import os, sys
open(sys.argv[1] + ".tmp", "w").write(sys.argv[2])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])' "$1" "$2"
}
sh_step "two saves by rename of twice.txt" "$(declare -f save); save '$MNT2/twice.txt' 'one
'; save '$MNT2/twice.txt' 'two
'"
for f in vim rm rmmv sed; do sh_step "the agent appends to $f.txt" "printf 'agent\n' >>'$MNT2/$f.txt'"; done
sh_step "the person edits every file in the repository" \
	"for f in twice vim rm rmmv sed; do printf 'person\n' >>'$REPO2/'\$f.txt; done"
sh_step "vim's save of vim.txt: rename to a backup name, write a new file" \
	"mv '$MNT2/vim.txt' '$MNT2/vim.txt~' && printf 'vim save\n' >'$MNT2/vim.txt' && rm '$MNT2/vim.txt~'"
sh_step "rm rm.txt, then write it again" "rm '$MNT2/rm.txt' && printf 'again\n' >'$MNT2/rm.txt'"
sh_step "rm rmmv.txt, then rename a new file onto its name" \
	"rm '$MNT2/rmmv.txt' && printf 'moved\\n' >'$MNT2/rmmv.tmp' && mv '$MNT2/rmmv.tmp' '$MNT2/rmmv.txt'"
step "sed -i sed.txt (temp + rename over the changed file)" t sed -i 's/^sed$/sed2/' "$MNT2/sed.txt"
run af status "$MNT2"
for f in twice vim rm rmmv sed; do
	assert_contains "  ...$f.txt is a conflict" "C $f.txt" "$OUT"
done
refuse "export refuses while they are conflicts" "twice.txt: conflict" af export "$MNT2"
run af unmount "$MNT2"
assert_eq "unmount $MNT2" 0 "$RC"

# ------------------------------------------------------------------ submodules
# A submodule's files show in the view, but they belong to another repository:
# a patch or branch of the superproject cannot change them, and taking them
# would replace the gitlink by a directory holding only the changed files.
SUP=$T/super
MNT3=$T/mnt3
git init -q -b main "$T/subrepo" && printf 'sub\n' >"$T/subrepo/lib.c" &&
	printf 'keep\n' >"$T/subrepo/keep.c" && git -C "$T/subrepo" add -A &&
	git -C "$T/subrepo" -c user.name=p -c user.email=p@x commit -qm sub &&
	git init -q -b main "$SUP" && printf 'top\n' >"$SUP/top.txt" &&
	git -C "$SUP" -c protocol.file.allow=always submodule -q add "$T/subrepo" lib &&
	git -C "$SUP" add -A && git -C "$SUP" -c user.name=p -c user.email=p@x commit -qm base ||
	bail "cannot create $SUP"
mount_ws "$SUP" "$MNT3" || bail "mount $SUP: $OUT"
sh_step "the agent edits a file of the submodule, adds one there and edits top.txt" \
	"printf 'agent\n' >>'$MNT3/lib/lib.c' && printf 'new\n' >'$MNT3/lib/new.c' &&
	printf 'agent\n' >>'$MNT3/top.txt'"
run af status "$MNT3"
assert_eq "status marks the submodule's files S, after the exported change" \
	"M top.txt
S lib/lib.c
S lib/new.c" "$OUT"
run af export "$MNT3"
assert_contains "export leaves the submodule's files out, naming them" \
	"agentfs: export: lib/lib.c: left out: inside a submodule" "$OUT"
assert_not_contains "  ...and its patch does not touch them" "b/lib/" "$OUT"
step "promote takes the rest" af promote "$MNT3" --branch agent/sub
run git -C "$SUP" ls-tree -r agent/sub
assert_contains "  ...and keeps the submodule a gitlink" "160000 commit" "$OUT"
assert_not_contains "  ...without a file of it" "lib/" "$OUT"
run af unmount "$MNT3"
assert_eq "unmount $MNT3" 0 "$RC"

# ------------------------------------------------------------------ errors
refuse "export of a path that is no workspace" \
	"agentfs: export: $T/nowhere: not an agentfs mount (no workspace found)" af export "$T/nowhere"
refuse "status with an unknown option" "agentfs: status: --bogus: unknown option" \
	af status --bogus "$MNT"
# An option missing its argument is named as such, not as an unknown option.
for cmd in mount unmount status export promote discard list rm log verify run; do
	run "$AGENTFS" "$cmd" --state-dir
	assert_eq "$cmd --state-dir without a directory: missing argument, status 2" \
		"2 agentfs: $cmd: --state-dir: missing argument (see 'agentfs $cmd --help')" "$RC $OUT"
done
run "$AGENTFS" export -o
assert_eq "export -o without a file: missing argument" \
	"2 agentfs: export: -o: missing argument (see 'agentfs export --help')" "$RC $OUT"
# An unknown letter in a bundle of short options is the option named, not the
# word before it.
for cmd in verify export log status; do
	run "$AGENTFS" "$cmd" -zh x
	assert_eq "$cmd -zh names -z as the unknown option" \
		"2 agentfs: $cmd: -z: unknown option (see 'agentfs $cmd --help')" "$RC $OUT"
done
run "$AGENTFS" policy show --policy
assert_eq "policy show --policy without a file: missing argument" \
	"2 agentfs: policy: show: --policy: missing argument" "$RC $OUT"

# ------------------------------------------------------------------ discard while unmounted
step "mv README.md away" t mv "$MNT/README.md" "$MNT/README-away.md"
step "  ...and back" t mv "$MNT/README-away.md" "$MNT/README.md"
sh_step "a new file" "printf 'new\\n' >'$MNT/new.txt'"

run af unmount "$MNT"
assert_eq "unmount" 0 "$RC"
run af discard "$MNT"
assert_eq "discard of everything while unmounted" "0 A new.txt" "$RC $OUT"
step "verify passes after discarding everything while unmounted" af verify "$MNT"
# The discard's records follow a clean unmount: mounting again is no recovery.
mount_ws "$REPO" "$MNT" || bail "mount again: $OUT"
run af verify "$MNT"
assert_eq "mounting after an unmounted discard records no crash" "0 no crash" \
	"$RC $([[ $OUT == *crash* ]] && echo crash || echo no crash)"
# After a crash the discard that first opens the journal notes it; the mount
# that follows recovers the upper without noting the same crash again.
sh_step "a new file before the crash" "printf 'new\\n' >'$MNT/new2.txt'"
dpid=$(daemon_pid_of "$MNT")
kill -KILL "$dpid"
wait_gone "$dpid" 5
timeout 10 fusermount3 -uz "$MNT" 2>/dev/null
run af discard "$MNT" new2.txt
assert_eq "discard after the crash, unmounted" "0 A new2.txt" "$RC $OUT"
mount_ws "$REPO" "$MNT" || bail "mount after the crash: $OUT"
run af verify "$MNT"
assert_eq "one crash is one crash record" "0 1" "$RC $(grep -c 'crash recovery' <<<"$OUT")"
# export and status while the agent keeps saving (temp + rename): a file
# gone between the walk of the upper and its read is absent now, not an
# error; export's secret scan reads the patch it hands over, not the files
# again (a file rewritten in between would otherwise pass unscanned).
touch "$T/churning"
t bash -c "while [ -e '$T/churning' ]; do printf 'x\n' >'$MNT/churn.tmp' &&
	mv '$MNT/churn.tmp' '$MNT/churn.txt'; done" &
cpid=$!
fails=0
for i in $(seq 1 15); do
	af status "$MNT" >/dev/null 2>>"$T/churn.err" || fails=$((fails + 1))
	af export --conflicts=skip "$MNT" >/dev/null 2>>"$T/churn.err" || fails=$((fails + 1))
	af export --conflicts=skip --format=mbox "$MNT" >/dev/null 2>>"$T/churn.err" ||
		fails=$((fails + 1))
done
rm -f "$T/churning"
wait "$cpid"
assert_eq "export, export --format=mbox and status while the agent saves files: none fails" 0 \
	"$fails$(grep -v 'left out\|conflict' "$T/churn.err" | head -n 3 | sed 's/^/ /')"
rm -f "$MNT/churn.txt" "$MNT/churn.tmp"

run af unmount "$MNT"
assert_eq "unmount" 0 "$RC"

# ------------------------------------------------------------------ stat as git shows it
# export --format=stat of renames is git's stat of the same trees: git names
# a rename by what both paths share around "{OLD => NEW}".
SREPO=$T/stat-repo SMNT=$T/stat-mnt
must "a repository for the stat" bash -c "git init -q '$SREPO' && cd '$SREPO' &&
	mkdir -p docs/api src old cfg/.ssh cfg/sub && for f in docs/guide.md docs/api/ref.md src/a.c src/b.c \
		old/x.txt 'odd name.txt' plain.txt cfg/app.yml cfg/.ssh/id cfg/sub/x.txt tc.txt mode.sh; do seq 1 40 | sed \"s|^|\$f |\" >\"\$f\"; done &&
	ln -s /etc/passwd cfg/out && git add -A && git -c user.name=t -c user.email=t@t commit -qm base"
mount_ws "$SREPO" "$SMNT" || bail "mount for the stat: $OUT"
sh_step "renames that share a head, a tail, both or nothing; an edit; a type change" "cd '$SMNT' &&
	mv docs documentation && mkdir src/lib && mv src/a.c src/lib/a.c &&
	mv src/b.c src/b2.c && mv old/x.txt x.txt && mv 'odd name.txt' 'odd \"name\".txt' &&
	mv plain.txt renamed.md && printf 'more\n' >>src/b2.c && rm tc.txt &&
	ln -s src/b2.c tc.txt && mv mode.sh mode2.sh && chmod +x mode2.sh"
af export "$SMNT" >"$T/stat.patch" 2>/dev/null
af export --format=stat "$SMNT" >"$T/stat.out" 2>/dev/null
must "git clone it" git clone -q "$SREPO" "$T/stat-clone"
step "git apply --index the export" git -C "$T/stat-clone" apply --index "$T/stat.patch"
assert_eq "export --format=stat is git diff --stat --summary -M of the same change" \
	"$(git -C "$T/stat-clone" diff --cached --stat=80 --summary -M)" "$(cat "$T/stat.out")"
# A symlink leaving the repository is hidden (symlinks: hide): the agent's
# file at its place in the renamed directory can be discarded, nothing shows
# there after.
sh_step "cfg renamed cfg2 (holding a hidden symlink), a file at its name" \
	"mv '$SMNT/cfg' '$SMNT/cfg2' && printf 'agent\n' >'$SMNT/cfg2/out'"
run af discard "$SMNT" cfg2/out
assert_eq "discard of a file in a renamed directory over a hidden symlink" "0 A cfg2/out" "$RC $OUT"
assert_enoent "$SMNT/cfg2/out" "  ...nothing shows at cfg2/out after"
# A file of a directory the agent made at a hidden name, over the hidden
# cfg/.ssh: status shows the directory before and after, discard names the
# file it removed.
sh_step "a file in a directory at a hidden name (cfg2/.ssh/key)" \
	"mkdir '$SMNT/cfg2/.ssh' && printf 'k\n' >'$SMNT/cfg2/.ssh/key'"
run af discard "$SMNT" cfg2/.ssh/key
assert_eq "discard names a file removed from inside an unchanged change" "0 H cfg2/.ssh/key" "$RC $OUT"
assert_enoent "$SMNT/cfg2/.ssh/key" "  ...and it is gone"
# A directory made again in the renamed one (opaque): the repository's file
# of that name cannot show there, so a new file at its name is discarded.
sh_step "cfg2/sub removed and made again, a file at a repository file's name" \
	"rm -r '$SMNT/cfg2/sub' && mkdir '$SMNT/cfg2/sub' && printf 'n\n' >'$SMNT/cfg2/sub/x.txt'"
run af discard "$SMNT" cfg2/sub/x.txt
assert_eq "discard of a file in a directory made again inside a renamed one" 0 "$RC"
assert_eq "  ...and the directory shows nothing after" "" "$(ls -A "$SMNT/cfg2/sub" 2>&1)"
run af unmount "$SMNT"
assert_eq "unmount the stat's mount" 0 "$RC"

# A repository file turned into a symlink to its new name: status pairs the
# rename by the file's bytes, as export does (a typechange is a rename source).
TREPO=$T/trepo
TMNT=$T/tmnt
mkdir -p "$TREPO" && git -C "$TREPO" init -q && printf 'key: value\nother: 1\n' >"$TREPO/config.yml" &&
	git -C "$TREPO" add -A && git -C "$TREPO" -c user.name=t -c user.email=t@t commit -qm c ||
	bail "cannot create the typechange repository"
mount_ws "$TREPO" "$TMNT" || bail "mount of the typechange repository: $OUT"
sh_step "the agent moves config.yml to config.real.yml and links its old name to it" \
	"mv '$TMNT/config.yml' '$TMNT/config.real.yml' && ln -s config.real.yml '$TMNT/config.yml'"
assert_eq "status pairs the rename across the typechange, as export does" \
	"$(printf 'R config.yml -> config.real.yml\nA config.yml')" "$(af status "$TMNT" 2>&1)"
assert_contains "  ...(export: a rename)" "rename from config.yml" "$(af export "$TMNT" 2>&1)"
run af unmount "$TMNT"
assert_eq "unmount the typechange repository" 0 "$RC"
# Files under git's text conversions, in a clone whose working tree holds
# them converted: eol=crlf (CRLF checked out, LF stored), ident ("$Id$"
# expanded), core.autocrlf=true.  The patch holds what git stores (the clean
# filters): it applies with and without --index, as `git diff`'s would; and
# promote, with no record of the person's changes at mount (git: hidden),
# finds the clean CRLF file unchanged from HEAD.
CO=$T/crlf-origin
CREPO=$T/crlf-repo
CMNT=$T/cmnt
mkdir -p "$CO" && git -C "$CO" init -q &&
	printf '*.bat eol=crlf\n*.c ident\n*.flt filter=red\n' >"$CO/.gitattributes" &&
	printf 'f\n' >"$CO/f.flt" &&
	printf 'x\ny\n' >"$CO/w.bat" && printf '/* $Id$ */\nint x;\n' >"$CO/a.c" &&
	printf 'p\nq\n' >"$CO/plain.txt" &&
	git -C "$CO" add -A && git -C "$CO" -c user.name=t -c user.email=t@t commit -qm base &&
	git clone -q -c core.autocrlf=true "$CO" "$CREPO" ||
	bail "cannot create the repository of converted files"
assert_eq "the clone holds w.bat with CRLF" "$(printf 'x\r\ny\r\n')" "$(cat "$CREPO/w.bat")"
printf 'git: hidden\n' >"$T/crlf-policy.yml"
mount_ws "$CREPO" "$CMNT" --policy "$T/crlf-policy.yml" || bail "mount of the converted files: $OUT"
sh_step "the agent appends a CRLF line to w.bat and plain.txt, a line to a.c" \
	"printf 'z\r\n' >>'$CMNT/w.bat' && printf 'r\r\n' >>'$CMNT/plain.txt' &&
	printf 'int y;\n' >>'$CMNT/a.c' && printf 'g\n' >>'$CMNT/f.flt'"
run af export -o "$T/crlf.patch" "$CMNT"
assert_eq "export of converted files" 0 "$RC"
assert_contains "  ...a file under a filter driver is named" \
	"f.flt: under the filter driver 'red' (.gitattributes), which agentfs does not run" "$OUT"
assert_contains "  ...w.bat's patch adds the line" "+z" "$(grep -A8 'b/w.bat' "$T/crlf.patch")"
assert_not_contains "  ...as stored: LF, no CR in the patch" "$(printf '\r')" "$(cat "$T/crlf.patch")"
for mode in --index ""; do
	D=$T/crlf-apply${mode:-plain}
	git clone -q -c core.autocrlf=true "$CO" "$D"
	run t git -C "$D" apply $mode "$T/crlf.patch"
	assert_eq "git apply ${mode:-(no --index)} of the converted files' patch" 0 "$RC"
	assert_eq "  ...w.bat and plain.txt hold the view's bytes" "same" \
		"$(cmp -s "$D/w.bat" "$CMNT/w.bat" && cmp -s "$D/plain.txt" "$CMNT/plain.txt" && echo same)"
done
run af promote --branch crlf "$CMNT"
assert_contains "promote refuses the file under a filter driver" "f.flt: under the filter driver 'red'" "$OUT"
run af discard "$CMNT" f.flt
assert_eq "  ...discarded" 0 "$RC"
run af promote --branch crlf "$CMNT"
assert_eq "promote of a clean CRLF file's change (no dirty record)" 0 "$RC"
assert_eq "  ...the branch stores w.bat with LF" "$(printf 'x\ny\nz')" \
	"$(git -C "$CREPO" show crlf:w.bat)"
run af unmount "$CMNT"
assert_eq "unmount the converted files' workspace" 0 "$RC"
# A file the agent puts at the name of a symlink the view hides (it points out
# of the repository): the patch would replace what the agent never saw, and
# `git apply` would find the path taken.  Left out like a conflict.
HREPO=$T/hsl-repo
HMNT=$T/hsl-mnt
mkdir -p "$HREPO" && git -C "$HREPO" init -q && printf 'a\n' >"$HREPO/a" &&
	ln -s /etc/passwd "$HREPO/out" && git -C "$HREPO" add -A &&
	git -C "$HREPO" -c user.name=t -c user.email=t@t commit -qm base ||
	bail "cannot create the repository of a hidden symlink"
mount_ws "$HREPO" "$HMNT" || bail "mount of the hidden symlink's repository: $OUT"
assert_enoent "$HMNT/out" "the symlink out of the repository is hidden"
sh_step "the agent writes a file at its name, and another file" \
	"printf 'agent\n' >'$HMNT/out' && printf 'b\n' >'$HMNT/b'"
run af status "$HMNT"
assert_eq "status: the file over the hidden symlink is a conflict" "$(printf 'A b\nC out')" "$OUT"
run af export "$HMNT"
assert_eq "export refuses it" 1 "$RC"
assert_contains "  ...naming why" "out: a file put where the repository keeps a file or symlink the agent cannot see" "$OUT"
run af export --conflicts=skip -o "$T/hsl.patch" "$HMNT"
assert_eq "export --conflicts=skip" 0 "$RC"
assert_not_contains "  ...leaves it out" "b/out" "$(cat "$T/hsl.patch")"
git clone -q "$HREPO" "$T/hsl-clone" && git -C "$T/hsl-clone" apply --index "$T/hsl.patch"
assert_eq "  ...and the rest applies" 0 "$?"
run af promote --branch hsl --conflicts=take "$HMNT"
assert_eq "promote refuses it, --conflicts=take too" 1 "$RC"
assert_eq "  ...and the repository keeps the symlink" "/etc/passwd" "$(readlink "$HREPO/out")"
# The same file committed by the agent in its private .git: promote's series
# leaves its step out too, and the last step (from the view, which lacks
# the file) deletes nothing of the repository's.
sh_step "the agent commits both files" \
	"cd '$HMNT' && git add -A && git -c user.name=a -c user.email=a@x commit -qm agent"
run af promote --branch hsl "$HMNT"
assert_eq "promote refuses the agent's commit of it" 1 "$RC"
assert_contains "  ...naming why" "out: put where the repository keeps a file or symlink the agent cannot see" "$OUT"
run af promote --branch hsl --conflicts=skip "$HMNT"
assert_eq "promote --conflicts=skip" 0 "$RC"
assert_eq "  ...the branch keeps the repository's symlink and takes the rest" \
	"$(printf '120000 out\n100644 b')" \
	"$(git -C "$HREPO" ls-tree hsl -- out b | awk '{ print $1, $4 }' | sort -r)"
run af unmount "$HMNT"
assert_eq "unmount the hidden symlink's workspace" 0 "$RC"
# A directory the agent renamed shows the repository's directory live: a file
# the person adds there afterwards shows at the new name, but it is the
# person's.  promote refuses it (--dirty=skip leaves it out), in the
# uncommitted changes and in the agent's commit of them.
RREPO=$T/rdir-repo
RMNT=$T/rdir-mnt
mkdir -p "$RREPO/d" && git -C "$RREPO" init -q && seq 1 20 >"$RREPO/d/a" &&
	git -C "$RREPO" add -A && git -C "$RREPO" -c user.name=t -c user.email=t@t commit -qm base ||
	bail "cannot create the renamed directory's repository"
mount_ws "$RREPO" "$RMNT" || bail "mount of the renamed directory's repository: $OUT"
step "the agent renames d to e" t mv "$RMNT/d" "$RMNT/e"
sh_step "the person adds d/notes in the repository" "printf 'private\n' >'$RREPO/d/notes'"
assert_eq "the view shows it at e/notes" "private" "$(cat "$RMNT/e/notes" 2>&1)"
run af promote --branch rdir "$RMNT"
assert_eq "promote refuses the person's file under the new name" 1 "$RC"
assert_contains "  ...naming it" "e/notes: the person had uncommitted changes here at its old path" "$OUT"
run af promote --branch rdir --dirty=skip "$RMNT"
assert_eq "promote --dirty=skip" 0 "$RC"
assert_eq "  ...takes the rename, not the person's file" "e/a" \
	"$(git -C "$RREPO" ls-tree -r --name-only rdir)"
sh_step "the agent commits the view in its private .git" \
	"cd '$RMNT' && git add -A && git -c user.name=a -c user.email=a@x commit -qm agent"
run af promote --branch rdir2 "$RMNT"
assert_eq "promote refuses the agent's commit of it too" 1 "$RC"
assert_contains "  ...naming it" "e/notes: the person had uncommitted changes here at its old path" "$OUT"
run af unmount "$RMNT"
assert_eq "unmount the renamed directory's workspace" 0 "$RC"
# Files the agent moves (mv): one the person had changed and not committed,
# one untracked (the person's), one clean.  The moved copies of the first
# two carry the person's bytes: promote refuses them as it refuses an edit
# in place (--dirty=skip leaves them out), and takes the clean rename.
MREPO=$T/mv-repo
MMNT=$T/mv-mnt
mkdir -p "$MREPO" && git -C "$MREPO" init -q && printf 'a\n' >"$MREPO/a" &&
	seq 1 10 >"$MREPO/t" && seq 1 5 >"$MREPO/c" && git -C "$MREPO" add -A &&
	git -C "$MREPO" -c user.name=t -c user.email=t@t commit -qm base &&
	printf 'mine\n' >"$MREPO/u2" && printf 'dirty\n' >>"$MREPO/t" ||
	bail "cannot create the moved files' repository"
mount_ws "$MREPO" "$MMNT" || bail "mount of the moved files' repository: $OUT"
sh_step "the agent moves t, u2 and c" \
	"mv '$MMNT/u2' '$MMNT/u3' && mv '$MMNT/t' '$MMNT/t2' && mv '$MMNT/c' '$MMNT/c2'"
run af promote --branch mv "$MMNT"
assert_eq "promote refuses the moved files that carry the person's bytes" 1 "$RC"
assert_contains "  ...t2" "t2: the person had uncommitted changes here where the agent moved it from" "$OUT"
assert_contains "  ...u3" "u3: the person had uncommitted changes here where the agent moved it from" "$OUT"
assert_not_contains "  ...not the clean one" "c2:" "$OUT"
run af promote --branch mv --dirty=skip "$MMNT"
assert_eq "promote --dirty=skip" 0 "$RC"
assert_eq "  ...takes the clean rename alone" "$(printf 'a\nc2\nt')" \
	"$(git -C "$MREPO" ls-tree -r --name-only mv)"
run af unmount "$MMNT"
assert_eq "unmount the moved files' workspace" 0 "$RC"
# The agent edits the ignore rules: what is ignored is judged by the rules the
# working tree will have once the change is taken, as the agent's git in the
# mount judges it: a file the old rules ignored is exported, one the new rules
# ignore is left out (and a .gitignore the agent did not touch still counts).
IREPO=$T/ign-repo
IMNT=$T/ign-mnt
mkdir -p "$IREPO/sub" && git -C "$IREPO" init -q && printf '*.log\n' >"$IREPO/.gitignore" &&
	printf 'keep.tmp\n' >"$IREPO/sub/.gitignore" && printf 'a\n' >"$IREPO/a" &&
	git -C "$IREPO" add -A && git -C "$IREPO" -c user.name=t -c user.email=t@t commit -qm base ||
	bail "cannot create the ignore rules' repository"
mount_ws "$IREPO" "$IMNT" || bail "mount of the ignore rules' repository: $OUT"
sh_step "the agent swaps *.log for dist/ in .gitignore, writes foo.log, dist/app.js, sub/keep.tmp" \
	"printf 'dist/\n' >'$IMNT/.gitignore' && printf 'x\n' >'$IMNT/foo.log' &&
	mkdir '$IMNT/dist' && printf 'js\n' >'$IMNT/dist/app.js' && printf 't\n' >'$IMNT/sub/keep.tmp'"
run af status "$IMNT"
assert_eq "status judges by the agent's rules" \
	"$(printf 'M .gitignore\nA foo.log\n! dist/app.js\n! sub/keep.tmp')" "$OUT"
assert_eq "  ...as the agent's git does" "$(printf ' M .gitignore\n?? foo.log')" \
	"$(t git -C "$IMNT" status --porcelain --untracked-files=all)"
mkdir -p "$T/ign-tmp"
run env TMPDIR="$T/ign-tmp" "$AGENTFS" export --state-dir "$STATE" -o "$T/ign.patch" "$IMNT"
assert_eq "export" 0 "$RC"
assert_eq "  ...holds .gitignore and foo.log" "$(printf 'a/.gitignore\na/foo.log')" \
	"$(grep '^diff --git' "$T/ign.patch" | awk '{ print $3 }')"
assert_eq "  ...and leaves no stand-in directory behind" "" "$(ls -A "$T/ign-tmp")"
run af unmount "$IMNT"
assert_eq "unmount the ignore rules' workspace" 0 "$RC"
# The agent edits the attributes: it drops the eol=crlf rule and writes a
# file with CRLF line ends.  Its git stores them as they are, and so do the
# patch and promote (the clean filters of the view's files are the view's
# .gitattributes'), where the person's rule would have stored LF.
AO=$T/attr-origin
AREPO=$T/attr-repo
AMNT=$T/attr-mnt
mkdir -p "$AO" && git -C "$AO" init -q && printf '*.bat eol=crlf\n' >"$AO/.gitattributes" &&
	printf 'x\n' >"$AO/w.bat" && git -C "$AO" add -A &&
	git -C "$AO" -c user.name=t -c user.email=t@t commit -qm base && git clone -q "$AO" "$AREPO" ||
	bail "cannot create the attributes' repository"
mount_ws "$AREPO" "$AMNT" || bail "mount of the attributes' repository: $OUT"
sh_step "the agent empties .gitattributes and writes w.bat with CRLF" \
	": >'$AMNT/.gitattributes' && printf 'x\r\ny\r\n' >'$AMNT/w.bat'"
run t git -C "$AMNT" diff --stat
assert_contains "the agent's git sees w.bat change" "w.bat" "$OUT"
run af export -o "$T/attr.patch" "$AMNT"
assert_eq "export" 0 "$RC"
git clone -q "$AO" "$T/attr-apply" && git -C "$T/attr-apply" apply --index "$T/attr.patch"
assert_eq "  ...applies with --index" 0 "$?"
assert_eq "  ...and stores w.bat with CRLF, as the agent's git would" "$(printf 'x\r\ny\r')" \
	"$(git -C "$T/attr-apply" show :w.bat)"
run af promote --branch attr "$AMNT"
assert_eq "promote" 0 "$RC"
assert_eq "  ...the branch stores w.bat with CRLF" "$(printf 'x\r\ny\r')" \
	"$(git -C "$AREPO" show attr:w.bat)"
run af unmount "$AMNT"
assert_eq "unmount the attributes' workspace" 0 "$RC"
# The patch is written in large writes, not one per line: 20,000 added lines
# and 300 new files take a few dozen write(2)s (one a line took 4x as long).
if command -v strace >/dev/null; then
	WREPO=$T/w-repo
	WMNT=$T/w-mnt
	mkdir -p "$WREPO" && git -C "$WREPO" init -q && printf 'a\n' >"$WREPO/a" &&
		git -C "$WREPO" add -A && git -C "$WREPO" -c user.name=t -c user.email=t@t commit -qm base ||
		bail "cannot create the writes' repository"
	mount_ws "$WREPO" "$WMNT" || bail "mount of the writes' repository: $OUT"
	sh_step "the agent writes 20,000 lines and 300 files" \
		"seq 1 20000 >'$WMNT/big.txt' && mkdir '$WMNT/many' && for i in \$(seq 1 300); do printf 'x\n' >'$WMNT/many/f'\$i; done"
	writes=$(t strace -f -qq -e trace=write -o "$T/w.strace" "$AGENTFS" export --state-dir "$STATE" \
		-o "$T/w.patch" "$WMNT" 2>/dev/null; grep -c 'write(' "$T/w.strace")
	if [[ $writes =~ ^[0-9]+$ ]] && [ "$writes" -lt 200 ] && [ "$(grep -c '^+' "$T/w.patch")" -ge 20300 ]; then
		pass "export writes its patch in $writes write(2)s"
	else
		fail "export writes its patch in fewer than 200 write(2)s" "got: $writes"
	fi
	run af unmount "$WMNT"
	assert_eq "unmount the writes' workspace" 0 "$RC"
else
	skip "export writes its patch in fewer than 200 write(2)s" "no strace"
fi
done_testing
