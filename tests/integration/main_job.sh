#!/usr/bin/env bash
# main_job.sh - the main job, end to end: an agent works in a mounted workspace
# the way agents and editors do (editor saves, sed -i, swap files, make, renames,
# links, deletes), never sees a secret, and its work comes out as a patch that
# git applies to a fresh clone to give exactly what the agent saw; the real
# repository is byte-for-byte unchanged; unmount and mount again resumes.
#
#   bash main_job.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
snapshot "$REPO" "$T/lower.before"

# ------------------------------------------------------------------ mount
mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "agentfs mount $REPO $MNT"; else
	fail "agentfs mount $REPO $MNT" "exit status $RC" "$OUT"
	bail "mount failed"
fi
pid=$(daemon_pid_of "$MNT")
if _is_our_daemon "$pid"; then pass "daemon.pid names a live agentfs daemon ($pid)"; else
	fail "daemon.pid names a live agentfs daemon" "pid: '$pid'" "$(ls -la "$STATE"/workspaces/*/ 2>&1)"
fi
assert_contains "the mount is listed by agentfs list" "$(basename "$MNT")" "$(af list 2>&1)"

# ------------------------------------------------------------------ secrets are invisible
for p in .env config/id_rsa keys/ID_RSA deploy/.ENV sub/.env.local certs/server.pem \
	node_modules/x/.npmrc onlysecret/.env link-to-env sub/envlink escape-link; do
	assert_enoent "$MNT/$p" "hidden: $p is ENOENT to stat, ls and cat"
done
assert_like_missing "$MNT/.env" "hidden: .env answers every operation like a missing name"
assert_like_missing "$MNT/config/id_rsa" "hidden: config/id_rsa answers every operation like a missing name"
assert_like_missing "$MNT/link-to-env" "hidden: a symlink to .env answers like a missing name"
assert_enoent "$MNT/sub/../.env" "hidden: sub/../.env is ENOENT"
assert_enoent "$MNT/src/../config/id_rsa" "hidden: src/../config/id_rsa is ENOENT"
for p in .env link-to-env escape-link; do assert_not_listed "$MNT" "$p"; done
assert_not_listed "$MNT/config" id_rsa
assert_not_listed "$MNT/keys" ID_RSA
assert_not_listed "$MNT/deploy" .ENV
assert_not_listed "$MNT/sub" .env.local
assert_not_listed "$MNT/sub" envlink
assert_not_listed "$MNT/certs" server.pem
assert_not_listed "$MNT/node_modules/x" .npmrc
assert_eq "a directory whose only entry is hidden looks empty" "" "$(t ls -A "$MNT/onlysecret" 2>&1)"
found=$(cd "$MNT" && t find . -path ./.git -prune -o -print 2>&1 |
	grep -iE '(^|/)(\.env[^/]*|id_rsa|[^/]*\.pem|\.npmrc|link-to-env|envlink|escape-link)$')
assert_eq "find lists no hidden entry" "" "$found"
run grep -r -l "$SECRET_MARK" "$MNT"
assert_eq "grep -r finds no secret in the view (exit 1: no match, no error)" "1 " "$RC $OUT"
# link counts and sizes exclude hidden entries: config/ holds settings.yml only
assert_eq "config/ lists exactly its visible entry" "settings.yml" "$(t ls -A "$MNT/config" 2>&1)"

# ------------------------------------------------------------------ visible content
for p in .gitignore .editorconfig README.md Makefile src/main.c data/blob.bin scripts/run.sh \
	node_modules/x/index.js docs/api/index.md; do
	assert_file_eq "visible: $p reads as in the repository" "$REPO/$p" "$MNT/$p"
done
assert_listed "$MNT" .gitignore
assert_listed "$MNT" .editorconfig
assert_eq "a symlink inside the repo to a visible file reads through" \
	"$(cat "$REPO/README.md")" "$(t cat "$MNT/docs/readme-link" 2>&1)"
assert_eq "readlink of a visible symlink" "../README.md" "$(t readlink "$MNT/docs/readme-link" 2>&1)"
assert_eq "modes show through" "$(stat -c %a "$REPO/scripts/run.sh") $(stat -c %a "$REPO/data/notes.txt")" \
	"$(t stat -c %a "$MNT/scripts/run.sh" "$MNT/data/notes.txt" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
assert_eq "mtimes show through" "$(stat -c %Y "$REPO/src/util.c")" "$(t stat -c %Y "$MNT/src/util.c" 2>&1)"
step "an executable script runs from the view" t "$MNT/scripts/run.sh"

# ------------------------------------------------------------------ the agent works
cd "$MNT" || bail "cannot cd into the mount"

# editor-style save: write a temp file, then rename it over the original
sh_step "editor save: write a temp file and rename it over src/util.c" '
	cat >src/.util.c.tmp~ <<EOF
#include "util.h"

/* add two numbers */
int add(int a, int b)
{
	return a + b;
}
EOF
	mv -f src/.util.c.tmp~ src/util.c'
sh_step "sed -i README.md" "sed -i 's/A small C program/A small, tested C program/' README.md"
assert_contains "sed -i result is visible" "A small, tested C program" "$(t cat README.md 2>&1)"

# vim: swap file created, written, deleted; then the file itself written
sh_step "vim-style swap file: create, write, delete" '
	printf "b0VIM 9.0" >docs/.guide.md.swp
	printf "more swap" >>docs/.guide.md.swp
	test "$(cat docs/.guide.md.swp)" = "b0VIM 9.0more swap"
	rm docs/.guide.md.swp
	printf "# Guide\n\nRun build/app, then check the output.\n" >docs/guide.md'
assert_enoent "$MNT/docs/.guide.md.swp" "the deleted swap file is gone"

sh_step "O_TRUNC rewrite of src/main.c" '
	cat >src/main.c <<EOF
#include <stdio.h>
#include "util.h"

int main(void)
{
	printf("%d\n", add(40, 2));
	return 0;
}
EOF'
sh_step "append to docs/api/index.md" 'printf "sub(a, b)\n" >>docs/api/index.md'
assert_eq "append kept the old content" "$(printf '# API\n\nadd(a, b)\nsub(a, b)')" "$(t cat docs/api/index.md 2>&1)"
sh_step "append bytes to the binary data/blob.bin" "printf '\\000\\377tail' >>data/blob.bin"
assert_eq "the binary grew by 6 bytes" 262 "$(t stat -c %s data/blob.bin 2>&1)"

step "make builds the C project inside the mount" t make -s
assert_eq "the built program runs and prints the edited result" 42 "$(t ./build/app 2>&1)"
sh_step "make is incremental (nothing to do the second time)" 'test -z "$(make -s -q build/app || echo stale)"'

sh_step "mkdir -p and rmdir" 'mkdir -p tmp/a/b && rmdir tmp/a/b tmp/a tmp && test ! -e tmp'
step "rmdir of a lower directory whose only entry is hidden" t rmdir onlysecret
assert_enoent "$MNT/onlysecret" "the removed directory is gone"
step "mkdir at that name again" t mkdir onlysecret
assert_eq "the new directory is empty (the hidden entry does not come back)" "" "$(t ls -A onlysecret 2>&1)"
assert_enoent "$MNT/onlysecret/.env" "onlysecret/.env is still ENOENT"

step "rename a lower directory (docs -> documentation), no EXDEV" t mv docs documentation
assert_enoent "$MNT/docs" "the old directory name is gone"
assert_eq "renamed directory keeps its files" "$(printf 'sub(a, b)')" "$(t tail -n 1 documentation/api/index.md 2>&1)"
assert_eq "renamed directory keeps its symlink" "../README.md" "$(t readlink documentation/readme-link 2>&1)"
step "rename a lower directory holding a hidden file (config -> conf)" t mv config conf
assert_eq "the renamed directory shows its visible file" "settings.yml" "$(t ls -A conf 2>&1)"
assert_enoent "$MNT/conf/id_rsa" "a hidden file stays hidden when its directory is renamed"
assert_like_missing "$MNT/conf/id_rsa" "conf/id_rsa answers every operation like a missing name"

step "hard link of a lower file (src/util.h -> src/util-copy.h)" t ln src/util.h src/util-copy.h
assert_eq "the hard link has the same content" "$(cat "$REPO/src/util.h")" "$(t cat src/util-copy.h 2>&1)"
assert_eq "the hard link shares the inode" "$(t stat -c %i src/util.h 2>&1)" "$(t stat -c %i src/util-copy.h 2>&1)"
assert_eq "both names count 2 links" "2 2" "$(t stat -c %h src/util.h src/util-copy.h 2>&1 | tr '\n' ' ' | sed 's/ $//')"
step "symlink (src/util-link.h -> util.h)" t ln -s util.h src/util-link.h
assert_eq "the new symlink reads through" "$(cat "$REPO/src/util.h")" "$(t cat src/util-link.h 2>&1)"
step "chmod +x scripts/gen.sh" t chmod +x scripts/gen.sh
assert_eq "scripts/gen.sh is now 755" 755 "$(t stat -c %a scripts/gen.sh 2>&1)"
assert_eq "scripts/gen.sh runs" gen-ok "$(t ./scripts/gen.sh 2>&1)"
step "delete a lower file (src/old.c)" t rm src/old.c
assert_enoent "$MNT/src/old.c" "the deleted lower file is ENOENT"
assert_not_listed "$MNT/src" old.c
sh_step "create a new file (src/new.c)" 'printf "int unused;\n" >src/new.c'

# the agent's own .env: a new, empty file, never the lower content
step "create .env (a hidden name) as a new file" t touch .env
assert_eq "the agent's .env is a new empty file" 0 "$(t stat -c %s .env 2>&1)"
assert_eq "the agent's .env reads empty" "" "$(t cat .env 2>&1)"
sh_step "write the agent's .env" 'printf "AGENT_SETTING=1\n" >.env'
assert_eq "the agent's .env holds what the agent wrote" "AGENT_SETTING=1" "$(t cat .env 2>&1)"
run grep -r -l "$SECRET_MARK" "$MNT"
assert_eq "grep -r still finds no secret after all the changes" "1 " "$RC $OUT"
cd / || bail "cd /"

# ------------------------------------------------------------------ status and export
run af status "$MNT"
if [ "$RC" -eq 0 ] && [[ $OUT == *src/util.c* ]] && [[ $OUT == *src/old.c* ]]; then
	pass "agentfs status names the changed paths"
else
	fail "agentfs status names the changed paths" "exit $RC" "$OUT"
fi
assert_not_contains "agentfs status shows no secret" "$SECRET_MARK" "$OUT"

af export "$MNT" >"$T/patch" 2>"$T/export.err"
rc=$?
if [ $rc -eq 0 ] && [ -s "$T/patch" ]; then pass "agentfs export $MNT"; else
	fail "agentfs export $MNT" "exit $rc" "$(cat "$T/export.err")"
fi
assert_not_contains "the patch holds no secret" "$SECRET_MARK" "$(cat "$T/patch")"
paths=$(patch_paths "$T/patch")
for p in README.md src/util.c src/main.c src/old.c src/new.c src/util-copy.h src/util-link.h \
	scripts/gen.sh data/blob.bin docs/guide.md documentation/guide.md conf/settings.yml \
	config/settings.yml; do
	assert_contains "the patch covers $p" "$p" "$(grep -xF -- "$p" <<<"$paths")"
done
bad=$(grep -E '^(\.env|build/.*|node_modules/.*|onlysecret/.*|.*\.swp|.*\.tmp~|config/id_rsa|conf/id_rsa)$' <<<"$paths")
assert_eq "the patch leaves out .env, build outputs, swap files and hidden files" "" "$bad"

# A fresh clone + the patch must equal the view on every path the patch names.
compare_with_view() {
	local clone=$1 label=$2 p errs=()
	while IFS= read -r p; do
		[ -n "$p" ] || continue
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
	done <<<"$paths"
	if [ ${#errs[@]} -eq 0 ] && [ -n "$paths" ]; then
		pass "$label: every patched path equals the view"
	else
		fail "$label: every patched path equals the view" "${errs[@]}"
	fi
}
must "git clone the repository (1)" git clone -q --no-hardlinks "$REPO" "$T/clone1"
step "git apply the export on a fresh clone" git -C "$T/clone1" apply "$T/patch"
compare_with_view "$T/clone1" "git apply"
must "git clone the repository (2)" git clone -q --no-hardlinks "$REPO" "$T/clone2"
step "git apply --index the export on a fresh clone" git -C "$T/clone2" apply --index "$T/patch"
compare_with_view "$T/clone2" "git apply --index"
assert_eq "after git apply --index nothing is left unstaged" "" \
	"$(git -C "$T/clone2" status --porcelain --untracked-files=all | grep -v '^[MADRC] ' )"
assert_eq "the staged changes build and run" 42 \
	"$(cd "$T/clone2" && t make -s >/dev/null 2>&1 && ./build/app)"

assert_unchanged "the lower is unchanged (content, modes, times) while mounted" "$REPO" "$T/lower.before"

# ------------------------------------------------------------------ unmount and resume
run af unmount "$MNT"
if [ "$RC" -eq 0 ] && ! is_mounted "$MNT"; then pass "agentfs unmount $MNT"; else
	fail "agentfs unmount $MNT" "exit $RC" "$OUT" "$(grep " $MNT " /proc/self/mountinfo)"
fi
if [ -n "$pid" ] && wait_gone "$pid" 10; then pass "the daemon exited after unmount"; else
	fail "the daemon exited after unmount" "pid $pid"
fi
assert_eq "the mountpoint is an empty directory again" "" "$(ls -A "$MNT" 2>&1)"
assert_unchanged "the lower is unchanged after unmount" "$REPO" "$T/lower.before"

mount_ws "$REPO" "$MNT"
if [ "$RC" -eq 0 ]; then pass "mount again"; else
	fail "mount again" "exit $RC" "$OUT"
	bail "second mount failed"
fi
assert_contains "resumed: the sed -i edit is there" "A small, tested C program" "$(t cat "$MNT/README.md" 2>&1)"
assert_file_eq "resumed: src/util.c as the agent saved it" "$T/clone1/src/util.c" "$MNT/src/util.c"
assert_enoent "$MNT/src/old.c" "resumed: the deleted file stays deleted"
assert_enoent "$MNT/docs" "resumed: the renamed directory stays renamed"
assert_eq "resumed: the agent's .env" "AGENT_SETTING=1" "$(t cat "$MNT/.env" 2>&1)"
assert_enoent "$MNT/conf/id_rsa" "resumed: the hidden file of a renamed directory stays hidden"
assert_enoent "$MNT/link-to-env" "resumed: the symlink to .env stays hidden"
assert_eq "resumed: the build output is there" 42 "$(t "$MNT/build/app" 2>&1)"
af export "$MNT" >"$T/patch2" 2>/dev/null
assert_file_eq "resumed: the export is the same" "$T/patch" "$T/patch2"
run af unmount "$MNT"
assert_eq "unmount again" "0" "$RC$( [ "$RC" -ne 0 ] && echo " $OUT")"

step "agentfs verify passes on the workspace" af verify "$(basename "$MNT")"
run af log "$(basename "$MNT")"
assert_not_contains "the journal shows no secret" "$SECRET_MARK" "$OUT"
assert_unchanged "the lower is unchanged at the end" "$REPO" "$T/lower.before"

done_testing
