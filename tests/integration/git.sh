#!/usr/bin/env bash
# git.sh - git inside the mount (policy `git: private`) and promotion.
#
# On a repository whose history holds secrets (committed, hidden by the policy,
# and one removed from HEAD) and whose working tree is dirty (a staged and an
# unstaged change, an untracked file), an agent runs real git in the mount:
# status, diff, add, commit, stash, restore, show base:PATH, rebase of its own
# commits, branch.  Then the no-leak proofs over everything the private .git
# holds or can produce; the read-only config and hooks; promote to a branch
# (the person's working tree, index, HEAD and branches exactly as they were;
# hidden files carried over; refusals for dirty paths, existing branches and
# secrets); export --format=mbox applied with `git am` to a fresh clone gives
# the promoted tree; --format=stat.  Finally git status in the mount is timed
# against git status in the repository on a larger tree (reported, not asserted).
#
#   bash git.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
POLICY=$T/git-private.yml
printf 'git: private\n' >"$POLICY"
make_test_repo "$REPO" || bail "cannot create the test repository"

# A secret committed and later removed: only the history holds it.
(
	cd "$REPO" &&
		printf 'old-api-key=%s-removed\n' "$SECRET_MARK" >config/removed.key &&
		printf 'visible before removal\n' >config/note.txt &&
		git add config/removed.key config/note.txt && git commit -qm "add a key" &&
		git rm -q config/removed.key && git commit -qm "remove the key"
) || bail "cannot add history"
# The person's uncommitted work: staged, unstaged, untracked.
printf 'staged by the person\n' >>"$REPO/docs/api/index.md"
git -C "$REPO" add docs/api/index.md
printf 'unstaged by the person\n' >>"$REPO/Makefile"
printf 'the person is drafting this\n' >"$REPO/draft.txt"

# The person's side: HEAD, refs, index, status (--no-optional-locks: this
# check itself must not refresh the index) and the working tree, .git aside.
repo_state() {
	(
		cd "$REPO" || exit 1
		git rev-parse HEAD
		git for-each-ref --format='%(refname) %(objectname)'
		sha256sum .git/index .git/HEAD
		git --no-optional-locks status --porcelain=v1 --untracked-files=all
	)
}
worktree_snapshot() {
	(
		cd "$1" || exit 1
		find . -path ./.git -prune -o -printf '%p %y %m %n %s %T@ %C@ %l\n' | sort
		find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum
	) >"$2"
}
git -C "$REPO" status >/dev/null # the person's index, refreshed as their git would
repo_state >"$T/repo.before"
worktree_snapshot "$REPO" "$T/lower.before"

mount_ws "$REPO" "$MNT" --policy "$POLICY"
[ "$RC" -eq 0 ] || bail "mount failed: $OUT"
pass "mount with git: private"

G() { t git -C "$MNT" "$@"; }

# ------------------------------------------------------------------ the base
run G status --porcelain=v1
assert_eq "git status in the mount: clean but the person's untracked file" "?? draft.txt" "$OUT"
run G log --format='%an <%ae>|%s' --all
assert_eq "one root commit 'base' authored by agentfs" "agentfs <agentfs@agentfs.invalid>|base" "$OUT"
run G show base:Makefile
assert_contains "base holds the person's unstaged change" "unstaged by the person" "$OUT"
run G show base:docs/api/index.md
assert_contains "base holds the person's staged change" "staged by the person" "$OUT"
run G ls-tree -r --name-only base
assert_not_contains "base tree: no id_rsa" "id_rsa" "$OUT"
assert_not_contains "base tree: no .ENV" ".ENV" "$OUT"
assert_not_contains "base tree: no server.pem" "server.pem" "$OUT"
assert_not_contains "base tree: no symlink to a hidden file" "link-to-env" "$OUT"
assert_not_contains "base tree: no escaping symlink" "escape-link" "$OUT"
assert_contains "base tree: visible files" "src/main.c" "$OUT"
run G remote -v
assert_eq "no remotes" "" "$OUT"
run G config --local --list
assert_not_contains "config: no remote" "remote." "$OUT"
assert_not_contains "config: no include" "include" "$OUT"
assert_contains "config: fsmonitor off" "core.fsmonitor=false" "$OUT"
assert_contains "config: hooksPath is the private hooks" "core.hookspath=$MNT/.git/hooks" "$OUT"
# A local clone of the mount copies .git/objects by listing it: every
# fan-out of a base blob not yet read must show (gitpriv_fault, "objects/").
run G rev-parse base:src/main.c
main_id=$OUT
run ls "$MNT/.git/objects"
assert_contains "objects/ lists the fan-out of a blob not yet read" "${main_id:0:2}" "$OUT"
run t git clone -q "$MNT" "$T/wsclone"
assert_eq "git clone of the mount" 0 "$RC"
run t git -C "$T/wsclone" status --porcelain
assert_eq "the clone checks out the base, clean" "0 " "$RC $OUT"
cmp -s "$T/wsclone/src/main.c" "$MNT/src/main.c"
assert_eq "the clone's src/main.c is the mount's" 0 "$?"

# ------------------------------------------------------------------ the agent's git
sh_step "agent edits, adds and deletes" "cd '$MNT' && printf '/* agent 1 */\n' >>src/util.c &&
	printf 'new\n' >notes.md && rm src/old.c"
# The edit copied src/util.c up: its base blob is written into the private
# objects ahead of the `git diff` that wants it (before, git's read of it
# faulted it in).
util_id=$(git -C "$REPO" rev-parse HEAD:src/util.c)
util_obj=$STATE/workspaces/mnt/git/objects/${util_id:0:2}/${util_id:2}
for _ in $(seq 1 50); do [ -e "$util_obj" ] && break; sleep 0.1; done
if [ -e "$util_obj" ]; then pass "an edited file's base blob is in the private .git before git asks"; else
	fail "an edited file's base blob is in the private .git before git asks" "no $util_obj"
fi
run G status --porcelain=v1
assert_eq "status shows exactly the agent's changes" \
	"$(printf ' M src/util.c\n D src/old.c\n?? draft.txt\n?? notes.md' | sort)" "$(sort <<<"$OUT")"
run G diff
assert_contains "git diff shows the agent's line" "+/* agent 1 */" "$OUT"
assert_not_contains "git diff shows none of the person's changes" "by the person" "$OUT"
step "git add" G add src/util.c notes.md src/old.c
run G diff --cached --name-only
assert_eq "git diff --cached" "$(printf 'notes.md\nsrc/old.c\nsrc/util.c')" "$OUT"
step "git commit" G commit -qm "agent: first"
sleep 1.5 # the journal flushes from a thread
run grep -cE '"op":"(create|write|rename)".*"path":"\.git/(objects/|refs/heads/)' \
	"$STATE/workspaces/mnt/journal.jsonl"
assert_ne "the agent's commit is journaled (objects and refs written)" 0 "${OUT:-0}"
sh_step "second change" "cd '$MNT' && printf 'two\n' >>notes.md"
step "git stash" G stash
run G status --porcelain=v1 --untracked-files=no
assert_eq "clean after stash" "" "$OUT"
step "git stash pop" G stash pop
step "git commit -a" G commit -qam "agent: second"
sh_step "a third commit" "cd '$MNT' && printf 'three\n' >>notes.md && git commit -qam 'agent: third'"
step "git rebase of the agent's own commits (drop the third)" \
	env GIT_SEQUENCE_EDITOR="sed -i '3s/^pick/drop/'" git -C "$MNT" rebase -q -i base
run G log --format=%s
assert_eq "log after rebase" "$(printf 'agent: second\nagent: first\nbase')" "$OUT"
step "git checkout -b" G checkout -q -b work
step "git restore" bash -c "cd '$MNT' && echo junk >>README.md && git restore README.md"
run G status --porcelain=v1 --untracked-files=no
assert_eq "restore brought README.md back" "" "$OUT"
run G log -p --all
assert_contains "git log -p works (base blobs on demand)" "+A small C program" "$OUT"

# ------------------------------------------------------------------ nothing leaks
GD=$STATE/workspaces/mnt/git
run G fsck --full --lost-found
assert_eq "git fsck --full --lost-found exits 0" 0 "$RC"
assert_not_contains "fsck: no missing object" "missing" "$OUT"
all=$(G cat-file --batch-all-objects --batch 2>&1 | tr -d '\0')
assert_not_contains "cat-file --batch-all-objects: no secret bytes" "$SECRET_MARK" "$all"
assert_not_contains "cat-file --batch-all-objects: no hidden name" "id_rsa" "$all"
reach=$(G rev-list --objects --all | G cat-file --batch 2>&1 | tr -d '\0')
assert_not_contains "every reachable object: no secret bytes" "$SECRET_MARK" "$reach"
for name in id_rsa ID_RSA .ENV .env.local server.pem removed.key link-to-env escape-link; do
	assert_not_contains "reachable trees: no $name" "$name" "$(G rev-list --objects --all)"
done
run G log --all -p
assert_not_contains "git log --all -p: no secret" "$SECRET_MARK" "$OUT"
refuse "the removed key's blob cannot be asked for" "" \
	G cat-file -p "$(git -C "$REPO" rev-parse HEAD~1:config/removed.key)"
refuse "a hidden file's blob cannot be asked for" "" \
	G cat-file -p "$(git -C "$REPO" rev-parse HEAD:config/id_rsa)"
run python3 -c '
import os, sys, zlib
hits = 0
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        b = open(os.path.join(d, f), "rb").read()
        try:
            b = zlib.decompress(b)
        except Exception:
            pass
        for m in (sys.argv[2].encode(), b"id_rsa", b"ID_RSA", b"removed.key"):
            if m in b:
                print(os.path.join(d, f), m)
                hits += 1
sys.exit(1 if hits else 0)' "$GD" "$SECRET_MARK"
assert_eq "no file of the private .git (objects inflated) holds a secret or its name" "0 " "$RC $OUT"
run grep -rlF -- "$SECRET_MARK" "$GD"
assert_eq "grep of the private .git finds no marker" 1 "$RC"

# info/ and objects/info/ are read-only: gc must not try to write there.
step "git gc" G gc -q
step "git gc --aggressive --prune=now" G gc -q --aggressive --prune=now
step "git repack -a -d" G repack -q -a -d
run G log --format=%s
assert_eq "log after gc" "$(printf 'agent: second\nagent: first\nbase')" "$OUT"
run G fsck --full
assert_eq "git fsck --full after gc" 0 "$RC"

# ------------------------------------------------------------------ read-only parts
refuse "config is read-only" "" bash -c "printf '[core]\n\tfsmonitor = /tmp/evil\n' >>'$MNT/.git/config'"
refuse "hooks/ is read-only" "" bash -c "printf '#!/bin/sh\ntouch $T/pwned\n' >'$MNT/.git/hooks/pre-commit'"
refuse "info/ is read-only" "" bash -c "printf 'x\n' >'$MNT/.git/info/attributes'"
refuse "objects/info/alternates cannot be planted" "" \
	bash -c "printf '$REPO/.git/objects\n' >'$MNT/.git/objects/info/alternates'"
refuse "git config cannot add a remote" "" G remote add origin https://example.invalid/x.git
# The daemon writes objects and packs in the private .git by path, with its
# own rights: no symlink may stand there, and nothing comes in from outside.
GITDIR=$STATE/workspaces/mnt/git
mkdir -p "$T/elsewhere"
refuse "no symlink in .git (as a fan-out directory)" "Read-only file system" \
	ln -s "$T/elsewhere" "$MNT/.git/objects/zz"
refuse "no symlink in .git/objects/pack" "Read-only file system" \
	ln -s "$T/elsewhere" "$MNT/.git/objects/pack/pack-x.pack"
sh_step "a symlink and a directory in the working tree" \
	"ln -s '$T/elsewhere' '$MNT/away' && mkdir '$MNT/adir'"
refuse "no symlink renamed into .git" "Read-only file system" mv "$MNT/away" "$MNT/.git/objects/zy"
refuse "no directory renamed into .git" "Read-only file system" mv "$MNT/adir" "$MNT/.git/objects/zx"
refuse "no file renamed into .git" "Read-only file system" mv "$MNT/README.md" "$MNT/.git/README.md"
refuse "no file linked into .git" "Read-only file system" ln "$MNT/README.md" "$MNT/.git/README.md"
refuse "no symlink linked into .git" "Read-only file system" ln "$MNT/away" "$MNT/.git/objects/zw"
run find "$GITDIR" "$T/elsewhere" -type l -o -name 'README.md' -o -name 'z[wxyz]' -o -name 'pack-x*'
assert_eq "nothing of it reached the private .git" "" "$OUT"
# objects/ holds the read-only objects/info: renamed, a new objects/ could
# hold an info/alternates naming the repository's own objects.
refuse "objects/ cannot be renamed" "Read-only file system" mv "$MNT/.git/objects" "$MNT/.git/o2"
sh_step "remove them" "rm '$MNT/away' && rmdir '$MNT/adir'"

# ------------------------------------------------------------------ promote
sh_step "uncommitted work of the agent" "cd '$MNT' && printf 'uncommitted\n' >>README.md"
step "promote --branch agent/task1" af promote "$MNT" --branch agent/task1
promote_out=$OUT
assert_contains "promote names the branch" "branch agent/task1: 3 commits" "$promote_out"
repo_state >"$T/repo.after"
assert_file_eq "the person's HEAD, refs (but the new branch), index and status are as they were" \
	"$T/repo.before" <(grep -v 'refs/heads/agent/task1' "$T/repo.after")
worktree_snapshot "$REPO" "$T/lower.after"
assert_file_eq "the person's working tree is byte-for-byte as it was" "$T/lower.before" "$T/lower.after"
run git -C "$REPO" log --format=%s agent/task1
assert_eq "branch commits: the agent's messages, then the uncommitted changes" \
	"$(printf 'Changes from agentfs workspace mnt\nagent: second\nagent: first\nremove the key\nadd a key\nsecond\ninitial')" "$OUT"
run git -C "$REPO" diff --name-status HEAD agent/task1
assert_eq "the branch changes exactly the agent's paths" \
	"$(printf 'M\tREADME.md\nA\tnotes.md\nD\tsrc/old.c\nM\tsrc/util.c')" "$OUT"
run git -C "$REPO" show agent/task1:config/id_rsa
assert_contains "hidden tracked files are carried over" "$SECRET_MARK" "$OUT"
run git -C "$REPO" show agent/task1:Makefile
assert_not_contains "the person's uncommitted change stays out of the branch" "by the person" "$OUT"
refuse "an existing branch is not replaced" "the branch exists" af promote "$MNT" --branch agent/task1
step "--force replaces it" af promote "$MNT" --branch agent/task1 --force
refuse "the checked-out branch is never replaced" "checked out" af promote "$MNT" --branch main --force
for author in bad 'x <>' '<e@x>' 'x <e@x> y'; do
	run af promote "$MNT" --branch agent/author --author "$author"
	assert_eq "--author '$author' is a usage error naming it" \
		"2 agentfs: promote: --author '$author': expected \"NAME <EMAIL>\"" "$RC $OUT"
done
for msg in "" " " "
"; do
	run af promote "$MNT" --branch agent/nomsg -m "$msg"
	assert_eq "an empty -m is a usage error" "2 agentfs: promote: -m: the message is empty" "$RC $OUT"
done
step "--author 'A B <a@b>' is taken" af promote "$MNT" --branch agent/author --author 'A B <a@b>'
assert_eq "  ...as the final commit's author" "A B <a@b>" \
	"$(git -C "$REPO" log -1 --format='%an <%ae>' agent/author)"
# A lock another git left on the branch is named, with what to do about it.
: >"$REPO/.git/refs/heads/agent/locked.lock"
refuse "promote onto a locked branch names the lock" \
	"refs/heads/agent/locked: locked by $REPO/.git/refs/heads/agent/locked.lock (a git command" \
	af promote "$MNT" --branch agent/locked
rm -f "$REPO/.git/refs/heads/agent/locked.lock"

sh_step "the agent edits a file the person had changed" "cd '$MNT' && printf 'agent too\n' >>Makefile"
refuse "a path with the person's uncommitted changes is refused" "uncommitted changes here at mount" \
	af promote "$MNT" --branch agent/task2
run af export --format=mbox "$MNT"
assert_contains "export --format=mbox refuses it too" "uncommitted changes here at mount" "$OUT"
assert_not_contains "  ...naming no --dirty option, which export has not" "--dirty" "$OUT"
run git -C "$REPO" rev-parse --verify -q refs/heads/agent/task2
assert_ne "a refused promote creates no branch" 0 "$RC"
step "--dirty=skip leaves it as at HEAD" af promote "$MNT" --branch agent/task2 --dirty=skip
run git -C "$REPO" diff --name-only HEAD agent/task2 -- Makefile
assert_eq "Makefile untouched on the branch" "" "$OUT"
step "--dirty=take commits the agent's version" af promote "$MNT" --branch agent/task3 --dirty=take
run git -C "$REPO" show agent/task3:Makefile
assert_contains "the agent's version, the person's line with it" "agent too" "$OUT"
step "--committed-only" af promote "$MNT" --branch agent/task4 --committed-only --dirty=skip
run git -C "$REPO" log -1 --format=%s agent/task4
assert_eq "committed-only ends on the agent's last commit" "agent: second" "$OUT"
sh_step "undo the Makefile edit" "cd '$MNT' && git checkout -q -- Makefile"

# A file of the person's that git does not track is the person's uncommitted
# work as much as a changed tracked file: an agent's commit of it is refused
# like one (the base tree holds tracked files only, so it passed, and the
# final commit then deleted it again).
printf 'the person\x27s notes\n' >"$REPO/notes.txt"
sh_step "the agent commits the person's untracked notes.txt" \
	"cd '$MNT' && git add notes.txt && git commit -qm 'agent: notes'"
refuse "promote refuses the person's untracked file in the agent's commit" \
	"notes.txt: the person had uncommitted changes here at mount" \
	af promote "$MNT" --branch agent/notes
step "--dirty=skip leaves it out" af promote "$MNT" --branch agent/notes --dirty=skip
run git -C "$REPO" log --format= --name-only HEAD..agent/notes
assert_not_contains "  ...no commit of the branch touches it" "notes.txt" "$OUT"
step "--dirty=take takes it" af promote "$MNT" --branch agent/notes2 --dirty=take
run git -C "$REPO" show agent/notes2:notes.txt
assert_eq "  ...and no later commit deletes it" "0 the person's notes" "$RC $OUT"
sh_step "the agent drops its commit" "cd '$MNT' && git reset -q --soft HEAD~1 && git reset -q notes.txt"
rm -f "$REPO/notes.txt"

# A file where config/ was: config/ holds the tracked id_rsa the agent cannot
# see, which a promote must carry over, never delete.  Refused like a conflict.
replaced_msg="config: replaced by a file, but the repository keeps files there the agent cannot see"
sh_step "the agent replaces config (holding hidden id_rsa) by a file" \
	"cd '$MNT' && rm -rf config && printf 'agent file\n' >config"
refuse "promote refuses a file over hidden tracked files" "$replaced_msg" \
	af promote "$MNT" --branch agent/over
run git -C "$REPO" rev-parse --verify -q refs/heads/agent/over
assert_ne "no branch after that refusal" 0 "$RC"
refuse "--conflicts=take cannot take it either" "$replaced_msg" \
	af promote "$MNT" --branch agent/over --conflicts=take
step "--conflicts=skip leaves it out" af promote "$MNT" --branch agent/over --conflicts=skip
run git -C "$REPO" show agent/over:config/id_rsa
assert_contains "the hidden tracked file is carried over (skip)" "$SECRET_MARK" "$OUT"
step "the agent commits the file over config" \
	bash -c "cd '$MNT' && git add -A config && git commit -qm 'agent: config file'"
refuse "promote refuses the agent's commit of it" "$replaced_msg" \
	af promote "$MNT" --branch agent/over2
step "--conflicts=skip leaves it out of the agent's commit too" \
	af promote "$MNT" --branch agent/over2 --conflicts=skip
run git -C "$REPO" show agent/over2:config/id_rsa
assert_contains "the hidden tracked file is carried over (committed, skip)" "$SECRET_MARK" "$OUT"
step "discard config" af discard "$MNT" config
step "drop the agent's commit of it" G reset -q HEAD~1
run G status --porcelain=v1 --untracked-files=no
assert_eq "the mount is back to the uncommitted README.md" " M README.md" "$OUT"

# ------------------------------------------------------------------ secrets
AWS_KEY=AKIA$(printf 'QWERTYUIOPASDFGH')
sh_step "the agent writes an access key" "cd '$MNT' && printf 'x = 1\naws_key = \"%s\"\n' '$AWS_KEY' >config.py"
refuse "export refuses the key with file:line" "config.py:2: looks like an AWS access key id" \
	af export "$MNT"
refuse "promote refuses the key with file:line" "config.py:2" af promote "$MNT" --branch agent/secret
run git -C "$REPO" rev-parse --verify -q refs/heads/agent/secret
assert_ne "no branch after the refusal" 0 "$RC"
step "--allow-secret FILE:LINE lets it through" af export --allow-secret config.py:2 "$MNT"
step "the key is committed by the agent" G add config.py
step "committed" G commit -qm "agent: config"
sh_step "and removed again" "cd '$MNT' && git rm -q config.py && git commit -qm 'agent: no config'"
refuse "a key in the agent's history is refused too" "config.py:2" \
	af promote "$MNT" --branch agent/secret
sh_step "drop both commits" "cd '$MNT' && git reset -q --hard HEAD~2"
sh_step "uncommitted work again" "cd '$MNT' && printf 'uncommitted\n' >>README.md"
# A binary file has no lines to diff: its whole content is scanned.
sh_step "the agent writes a binary file holding the key" \
	"printf 'bin\\000\\000 %s \\000end' '$AWS_KEY' >'$MNT/blob.bin'"
refuse "export refuses the key in the binary file" "blob.bin:1: looks like an AWS access key id" \
	af export "$MNT"
step "and the agent removes it" rm "$MNT/blob.bin"
# One over 1 MiB is known binary before any patch is built (cli/secrets.c).
sh_step "the agent writes a 1.2 MB binary file holding the key" \
	"{ head -c 600000 /dev/zero; printf ' %s ' '$AWS_KEY'; head -c 600000 /dev/zero; } >'$MNT/big.bin'"
refuse "export refuses the key in the large binary file" "big.bin:1: looks like an AWS access key id" \
	af export "$MNT"
step "and the agent removes it" rm "$MNT/big.bin"

# ------------------------------------------------------------------ mbox and stat
run af export --format=stat "$MNT"
assert_contains "stat: a git diff --stat summary" "files changed" "$OUT"
assert_contains "stat names README.md" "README.md" "$OUT"
run af export --format=mbox -o "$T/series.mbox" "$MNT"
assert_eq "export --format=mbox" 0 "$RC"
run grep -c '^From [0-9a-f]\{40\} Mon Sep 17 00:00:00 2001$' "$T/series.mbox"
assert_eq "one message per commit (2 agent commits + uncommitted)" 3 "$OUT"
step "promote the same for comparison" af promote "$MNT" --branch agent/mbox
step "a fresh clone at the HEAD at mount" git clone -q "$REPO" "$T/clone"
step "git am of the mbox" git -C "$T/clone" am -q "$T/series.mbox"
assert_eq "git am reproduces the promoted branch's tree" \
	"$(git -C "$REPO" rev-parse 'agent/mbox^{tree}')" "$(git -C "$T/clone" rev-parse 'HEAD^{tree}')"

# ------------------------------------------------------------------ resume
# What the agent may leave in the private .git for the next mount, which
# rewrites the config there: a hard link at the config's old temporary
# name (it would have become the read-only config, writable through the
# agent's other name) and a FIFO; and a symlink of an older workspace.
sh_step "the agent plants a hard link in .git" \
	"cd '$MNT/.git' && printf '# mine\n' >mycfg && ln mycfg config.tmp"
# A FIFO where a file is expected (HEAD, a ref) would block every open of it,
# the person's promote included: none may be made in .git.
refuse "no FIFO in .git" "Read-only file system" mkfifo "$MNT/.git/refs/heads/pipe"
refuse "no socket in .git" "Read-only file system" \
	python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('$MNT/.git/sock')"
ln -s "$T/elsewhere" "$GITDIR/objects/zv"
mkfifo "$GITDIR/pipe"
step "unmount" af unmount "$MNT"
mount_ws "$REPO" "$MNT"
[ "$RC" -eq 0 ] || bail "remount failed: $OUT"
sh_step "the agent writes its file in .git" \
	"printf '[core]\n\tfsmonitor = \"touch $T/pwned; echo\"\n' >>'$MNT/.git/mycfg'"
run G status --porcelain
assert_eq "git in the mount runs nothing of the agent's" "no" "$([ -e "$T/pwned" ] && echo yes || echo no)"
run G config --get core.fsmonitor
assert_eq "the config is agentfs's own" "false" "$OUT"
run find "$GITDIR" -maxdepth 2 -type l -o -maxdepth 2 -type p
assert_eq "no symlink and no FIFO left in the private .git" "" "$OUT"
run G log --format=%s -1
assert_eq "the agent's commits survive a remount" "agent: second" "$OUT"
run G show base:src/main.c
assert_contains "base objects still served after remount" "#include" "$OUT"
# The resumed private .git knows the base again, whoever mounts: its info/
# is read-only, which bound an unprivileged daemon rewriting info/exclude,
# and every base object not yet copied then failed to read.
assert_contains "the private .git resumes" "private .git: resumed" \
	"$(cat "$STATE/workspaces/$(basename "$MNT")/daemon.log")"
sh_step "a file never read through git before is changed" "printf 'resumed\n' >>'$MNT/scripts/gen.sh'"
run G diff -- scripts/gen.sh
assert_contains "git diff reads its base blob after the remount" "+resumed" "$OUT"
sh_step "undo it" "cd '$MNT' && git checkout -q -- scripts/gen.sh"
step "unmount again" af unmount "$MNT"

# ------------------------------------------------------------------ git: hidden, git: readonly
printf 'git: hidden\n' >"$T/git-hidden.yml"
mount_ws "$REPO" "$T/hidmnt" --policy "$T/git-hidden.yml"
[ "$RC" -eq 0 ] || bail "mount with git: hidden failed: $OUT"
assert_enoent "$T/hidmnt/.git" "git: hidden: no .git in the view"
step "unmount the git: hidden mount" af unmount "$T/hidmnt"
printf 'git: readonly\n' >"$T/git-readonly.yml"
repo_state >"$T/repo.ro.before"
mount_ws "$REPO" "$T/romnt" --policy "$T/git-readonly.yml"
[ "$RC" -eq 0 ] || bail "mount with git: readonly failed: $OUT"
run git -C "$T/romnt" log --format=%s -3
assert_eq "git: readonly: the repository's history" \
	"$(printf 'remove the key\nadd a key\nsecond')" "$OUT"
run git -C "$T/romnt" config --local --list
assert_not_contains "git: readonly: the config is sanitised (no remote)" "remote." "$OUT"
step "git: readonly: the agent's commit" bash -c "cd '$T/romnt' && echo x >>README.md && git commit -qam ro"
repo_state >"$T/repo.ro.after"
assert_file_eq "git: readonly: the repository's refs, index and status are untouched" \
	"$T/repo.ro.before" "$T/repo.ro.after"
step "unmount the git: readonly mount" af unmount "$T/romnt"

# ------------------------------------------------------------------ secrets in names and messages
# The scan covers what a patch's headers and a branch's trees and commits carry
# besides added lines: path names (both names of a rename) and commit messages.
# A repository of its own, with a fixture at a token-shaped name.
GH_TOKEN=ghp_$(printf 'abcdefghijklmnopqrstuvwxyz0123456789')
GH_FIXTURE=ghp_$(printf '0123456789abcdefghijklmnopqrstuvwxyz')
NREPO=$T/names-repo
NMNT=$T/names-mnt
(
	git init -q -b main "$NREPO" && cd "$NREPO" && mkdir fixtures &&
		printf 'a\n' >a.txt && printf 'fixture\n' >"fixtures/$GH_FIXTURE" &&
		git add -A && git commit -qm initial
) || bail "cannot make the names repository"
mount_ws "$NREPO" "$NMNT"
[ "$RC" -eq 0 ] || bail "mount of the names repository failed: $OUT"
N() { t git -C "$NMNT" "$@"; }

step "the agent creates a file at a token's name" t touch "$NMNT/$GH_TOKEN"
refuse "export refuses the path name, naming it and the kind" \
	"$GH_TOKEN: the path name looks like a GitHub token; not handed over (--allow-secret $GH_TOKEN" \
	af export -o "$T/names.patch" "$NMNT"
assert_enoent "$T/names.patch" "  ...and writes no patch"
run af export "$NMNT"
assert_eq "  ...nothing on stdout either (exit 1, one line on stderr)" \
	"1 agentfs: export: $GH_TOKEN: the path name looks like a GitHub token; not handed over (--allow-secret $GH_TOKEN lets this name through)" \
	"$RC $OUT"
refuse "export --format=stat refuses it too" "$GH_TOKEN: the path name" af export --format=stat "$NMNT"
refuse "promote refuses it" "$GH_TOKEN: the path name" af promote "$NMNT" --branch agent/name
run git -C "$NREPO" rev-parse --verify -q refs/heads/agent/name
assert_ne "  ...and creates no branch" 0 "$RC"
run af export --allow-secret "$GH_TOKEN" "$NMNT"
assert_contains "--allow-secret PATH hands the name over" "b/$GH_TOKEN" "$OUT"
step "the agent removes it" t rm "$NMNT/$GH_TOKEN"

step "the agent renames the fixture" t mv "$NMNT/fixtures/$GH_FIXTURE" "$NMNT/fixtures/token.txt"
refuse "export refuses a rename's old name" "fixtures/$GH_FIXTURE: the path name looks like a GitHub token" \
	af export "$NMNT"
run af export --allow-secret "fixtures/$GH_FIXTURE" "$NMNT"
assert_contains "--allow-secret PATH lets the rename through" "rename from fixtures/$GH_FIXTURE" "$OUT"
step "the agent renames it back" t mv "$NMNT/fixtures/token.txt" "$NMNT/fixtures/$GH_FIXTURE"

sh_step "the agent commits with a key in the subject and a token in the body" \
	"cd '$NMNT' && echo ok >f.txt && git add f.txt &&
	git commit -qm 'token AKIAIOSFODNN7EXAMPLE' -m 'see $GH_TOKEN'"
agent_commit=$(N rev-parse HEAD)
short=${agent_commit:0:12}
run af promote "$NMNT" --branch agent/msg
assert_eq "promote refuses the message: exit 1" 1 "$RC"
assert_contains "  ...naming the commit and the subject" \
	"the agent's commit $short, message, line 1 (subject): looks like" "$OUT"
assert_contains "  ...and the kind" "AWS access key id; not handed over (--allow-secret $short:1 lets" "$OUT"
assert_contains "  ...and the body's line" \
	"the agent's commit $short, message, line 3: looks like a GitHub token" "$OUT"
run git -C "$NREPO" rev-parse --verify -q refs/heads/agent/msg
assert_ne "  ...and creates no branch" 0 "$RC"
refuse "export --format=mbox refuses it" "the agent's commit $short, message, line 1 (subject)" \
	af export --format=mbox -o "$T/msg.mbox" "$NMNT"
assert_enoent "$T/msg.mbox" "  ...and writes no mbox"
refuse "allowing the subject alone still refuses the body" "message, line 3" \
	af promote "$NMNT" --branch agent/msg --allow-secret "$short:1"
step "--allow-secret COMMIT:LINE (12 and 7 hex digits) hands both over" \
	af promote "$NMNT" --branch agent/msg --allow-secret "$short:1" \
	--allow-secret "${agent_commit:0:7}:3"
run git -C "$NREPO" log -1 --format=%s agent/msg
assert_eq "  ...the branch's subject, as the person allowed" "token AKIAIOSFODNN7EXAMPLE" "$OUT"

sh_step "uncommitted work" "cd '$NMNT' && echo two >g.txt"
refuse "promote refuses a key in -m MESSAGE" \
	"the final commit's message (-m), line 1 (subject): looks like" \
	af promote "$NMNT" --branch agent/m --allow-secret "$short:1" --allow-secret "$short:3" \
	-m "add g, key AKIAIOSFODNN7EXAMPLE"
step "--allow-secret -m:1 hands it over" \
	af promote "$NMNT" --branch agent/m --allow-secret "$short:1" --allow-secret "$short:3" \
	-m "add g, key AKIAIOSFODNN7EXAMPLE" --allow-secret -m:1

# Each path left out and each commit dropped is named once, though promote
# builds the series twice and the agent's commit and its uncommitted view
# both hold the file at a hidden name.
allow=(--allow-secret "$short:1" --allow-secret "$short:3")
sh_step "the agent commits a file at a hidden name" \
	"cd '$NMNT' && echo AGENT=1 >.env && git add -f .env && git commit -qm 'agent: env'"
env_commit=$(N rev-parse --short=12 HEAD)
run af promote "$NMNT" --branch agent/once "${allow[@]}"
assert_eq "promote with a hidden name exits 0" 0 "$RC"
assert_eq "  ...names .env once" 1 "$(grep -c '\.env: left out: hidden name' <<<"$OUT")"
assert_eq "  ...names the emptied commit once" 1 \
	"$(grep -c "the agent's commit $env_commit: nothing left to commit; dropped" <<<"$OUT")"
assert_eq "  ...and repeats no line" "" "$(sort <<<"$OUT" | uniq -d)"
run af export --format=mbox "${allow[@]}" "$NMNT"
assert_eq "export --format=mbox names .env once" 1 "$(grep -c '\.env: left out' <<<"$OUT")"
assert_eq "  ...and repeats no line" "" "$(grep '^agentfs: ' <<<"$OUT" | sort | uniq -d)"
sh_step "the agent commits g.txt and starts h.txt" \
	"cd '$NMNT' && git add g.txt && git commit -qm 'agent: g' && echo h >h.txt"
run af promote "$NMNT" --branch agent/committed --committed-only "${allow[@]}"
assert_eq "promote --committed-only exits 0" 0 "$RC"
assert_not_contains "  ...says nothing of the uncommitted changes it leaves alone" \
	"uncommitted changes: nothing left to commit" "$OUT"
assert_eq "  ...and repeats no line" "" "$(sort <<<"$OUT" | uniq -d)"
step "unmount the names mount" af unmount "$NMNT"

# ------------------------------------------------------------------ timing
# git status in the mount against the repository itself, on a larger tree
# (on a tmpfs where there is one: 4000 creates cost seconds on a busy disk).
make_scratch
BIG=$SCRATCH/big
mkdir -p "$BIG" && (
	cd "$BIG" && git init -q -b main . &&
		for d in $(seq 1 40); do
			mkdir -p "d$d/sub"
			for f in $(seq 1 50); do
				printf 'file %s %s\n' "$d" "$f" >"d$d/f$f.txt"
				printf 'sub %s %s\n' "$d" "$f" >"d$d/sub/s$f.txt"
			done
		done &&
		# An index written in the same clock tick as the files marks them
		# "racily clean" (size 0): any git must then read them once.  A
		# real working tree is not that fresh; the test should not be.
		sleep 1 && git add -A && git commit -qm big && git status >/dev/null
) || bail "cannot make the big repository"
mount_ws "$BIG" "$T/bigmnt" --policy "$POLICY"
[ "$RC" -eq 0 ] || bail "mount of the big repository failed: $OUT"
run git -C "$T/bigmnt" status --porcelain
assert_eq "git status in a 4000-file mount is clean" "" "$OUT"
# The build writes the base trees and commit as one pack, not a loose
# object each (81 trees here; ~5,000 in a 78k-file tree, a file create each).
PRIV=$STATE/workspaces/bigmnt/git
run find "$PRIV/objects" -path "$PRIV/objects/pack" -prune -o -type f -print
assert_eq "the build left no loose object" "" "$OUT"
run bash -c "ls '$PRIV/objects/pack' | grep -c '\.idx\$'"
assert_eq "  ...but one pack" 1 "$OUT"
run bash -c "git show-index <'$PRIV'/objects/pack/*.idx | awk '{ print \$2 }' | sort"
base_pack=$OUT
run bash -c "cd '$T/bigmnt' && { git rev-parse HEAD 'HEAD^{tree}' && git ls-tree -r -d --object-only HEAD; } | sort -u"
assert_eq "  ...of the base commit and every tree git reads in the mount" "$base_pack" "$OUT"
assert_eq "  ...which are the repository's trees" "$(git -C "$BIG" rev-parse 'HEAD^{tree}')" \
	"$(git -C "$T/bigmnt" rev-parse 'HEAD^{tree}')"
run bash -c "ls '$PRIV/objects/pack' | grep -c '\.keep\$'"
assert_eq "  ...kept (.keep): git repack -ad and git gc leave it alone" 1 "$OUT"
timeit() {
	local s e
	s=$(date +%s%N)
	for _ in 1 2 3 4 5; do git -C "$1" status --porcelain >/dev/null; done
	e=$(date +%s%N)
	echo $(((e - s) / 5000))
}
native=$(timeit "$BIG")
mounted=$(timeit "$T/bigmnt")
diag "git status, 4000 files, warm, mean of 5: repository ${native} us, mount ${mounted} us," \
	"ratio $(awk -v a="$mounted" -v b="$native" 'BEGIN { printf "%.2f", a / b }')"
diag "$(grep 'private .git' "$STATE/workspaces/bigmnt/daemon.log")"
# The index holds the lower's stat data: git's status reads no file content
# (every read is journaled, so the journal says which files were opened).
sleep 1.5 # the journal flushes from a thread
reads=$(grep -c '"op":"read".*"path":"d[0-9]*/' "$STATE/workspaces/bigmnt/journal.jsonl")
assert_eq "git status in the mount read no tracked file" 0 "$reads"
t cat "$T/bigmnt/d1/f1.txt" >/dev/null
sleep 1.5 # the journal flushes from a thread
reads=$(grep -c '"op":"read".*"path":"d[0-9]*/' "$STATE/workspaces/bigmnt/journal.jsonl")
assert_ne "(the check sees a read when there is one)" 0 "$reads"

# ------------------------------------------------------------------ base blobs in a pack
# The base blobs of edited files go into a pack once at least
# GITPRIV_PACK_MIN (16) of them wait and the edits pause, and git reads them
# there: a pack instead of a loose object each through the mount.  The
# listing of .git/objects/pack is read (and cached by the kernel) first, so
# the pack shows in the mount only if the daemon drops that listing.
packs_listed() { ls "$T/bigmnt/.git/objects/pack" | grep -c '\.idx$'; }
run packs_listed
assert_eq "one pack before the edits (the base trees')" 1 "$OUT"
sh_step "the agent edits 40 files" \
	"for d in \$(seq 1 40); do printf 'edited\n' >>'$T/bigmnt'/d\$d/f1.txt; done"
for _ in $(seq 1 100); do
	[ "$(packs_listed)" -ge 2 ] && break
	sleep 0.1
done
run packs_listed
if [ "${OUT:-0}" -ge 2 ]; then pass "the edited files' base blobs are in a pack, listed in the mount"; else
	fail "the edited files' base blobs are in a pack, listed in the mount" "packs: ${OUT:-0}"
fi
# Had the edits paused halfway, a second pack and a merge follow: wait until
# the set of packs holds still for a second.
for _ in $(seq 1 10); do
	a=$(ls "$STATE/workspaces/bigmnt/git/objects/pack/")
	sleep 1
	[ "$a" = "$(ls "$STATE/workspaces/bigmnt/git/objects/pack/")" ] && break
done
packed=$T/packed.ids
for idx in "$STATE/workspaces/bigmnt/git/objects/pack/"*.idx; do
	git show-index <"$idx" | awk '{ print $2 }'
done | sort >"$packed"
run bash -c "for d in \$(seq 1 40); do git -C '$BIG' rev-parse HEAD:d\$d/f1.txt; done | sort |
	comm -12 - '$packed' | wc -l"
if [ "${OUT:-0}" -ge 16 ]; then pass "at least GITPRIV_PACK_MIN of their base blobs are packed"; else
	fail "at least GITPRIV_PACK_MIN of their base blobs are packed" "packed: ${OUT:-0}"
fi
sleep 1.5 # the journal flushes from a thread
JOURNAL=$STATE/workspaces/bigmnt/journal.jsonl
lines=$(wc -l <"$JOURNAL")
run git -C "$T/bigmnt" diff --stat
assert_contains "git diff --stat: the 40 edits" "40 files changed, 40 insertions(+)" "$OUT"
sleep 1.5
tail -n +$((lines + 1)) "$JOURNAL" >"$T/diff.journal"
run bash -c "grep '\"op\":\"read\"' '$T/diff.journal' |
	grep -o '\"path\":\"\.git/objects/[0-9a-f][0-9a-f]/[0-9a-f]*' | sed 's|.*objects/||; s|/||' |
	sort | comm -12 - '$packed' | wc -l"
assert_eq "git diff read no loose copy of a packed blob" 0 "$OUT"
run grep -c '"op":"read".*"path":"\.git/objects/pack/pack-[0-9a-f]*\.pack"' "$T/diff.journal"
assert_ne "git diff read the pack" 0 "${OUT:-0}"

# An editor's save (a new file renamed over the tracked one) wants the base
# blob as much as an edit in place: the daemon reads it ahead of git too, so
# it is in the private objects before any git command asks for it.
run python3 -c "
import os, sys
for d in range(1, 41):
    p = '$T/bigmnt/d%d/f2.txt' % d
    with open(p + '.tmp', 'w') as f:
        f.write('saved %d\\n' % d)
    os.rename(p + '.tmp', p)
"
assert_eq "the agent saves 40 files by rename" 0 "$RC"
saved_ids() { for d in $(seq 1 40); do git -C "$BIG" rev-parse "HEAD:d$d/f2.txt"; done; }
have_saved() { saved_ids | git --git-dir="$PRIV" cat-file --batch-check | grep -c ' blob '; }
for _ in $(seq 1 100); do
	[ "$(have_saved)" = 40 ] && break
	sleep 0.1
done
run have_saved
assert_eq "their base blobs are in the private objects before git asks" 40 "$OUT"
run git -C "$T/bigmnt" diff --stat
assert_contains "git diff --stat: the edits and the saves" "80 files changed, 80 insertions(+), 40 deletions(-)" "$OUT"

# A base blob that a pack holds has no loose file, and the lookup of its
# loose name says so; that answer must not outlive the pack.  The agent
# repacks (every base blob then in one pack, none loose), deletes the packs
# by hand, and git asks again at once: the daemon copies the blob in from
# the repository.
saved1=$(git -C "$BIG" rev-parse HEAD:d1/f2.txt)
saved2=$(git -C "$BIG" rev-parse HEAD:d2/f2.txt)
sh_step "the agent repacks" "git -C '$T/bigmnt' repack -adq"
run stat "$T/bigmnt/.git/objects/${saved1:0:2}/${saved1:2}"
assert_ne "a packed base blob has no loose file" 0 "$RC"
# (The listing of a blob's fan-out directory, cached by the kernel before
# the packs go, must show the blob once they are gone: git fsck lists them.)
ls "$T/bigmnt/.git/objects/${saved2:0:2}/" >/dev/null
sh_step "the agent deletes the packs of base blobs" "cd '$T/bigmnt/.git/objects/pack' &&
	for k in *.keep; do base=\${k%.keep}; done &&
	for f in pack-*; do case \$f in \$base.*) ;; *) rm -f \$f ;; esac; done"
run git -C "$T/bigmnt" cat-file -t "$saved1"
assert_eq "  ...and git reads it again right away" blob "$OUT"
listed() { ls "$T/bigmnt/.git/objects/${saved2:0:2}/" | grep -qx "${saved2:2}"; }
for _ in $(seq 1 50); do listed && break; sleep 0.1; done
run listed
assert_eq "  ...and the listing of another's fan-out directory shows it" 0 "$RC"
# So must what libgit2 remembers of packs git removed: the agent orphans
# the base and collects the garbage.
sh_step "the agent orphans the base and collects the garbage" "cd '$T/bigmnt' &&
	export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@x GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@x &&
	git checkout -q --orphan pruned && git commit -qam pruned && git branch -D main -q &&
	git tag -d base >/dev/null && git reflog expire --expire=now --all &&
	git repack -adq && git prune --expire=now && git gc -q --prune=now"
run git -C "$T/bigmnt" cat-file -t "$saved2"
assert_eq "  ...and git still reads the base blobs" blob "$OUT"

# ------------------------------------------------------------------ a lookup that waits for a base blob
# The lookup of a base blob's loose name while the blob waits in memory to be
# written asks for the write and waits for it (GITPRIV_PENDING_WAIT_MS at
# most).  The rest of the mount goes on meanwhile: the wait holds neither the
# namespace's lock nor the thread that reads requests, and the write runs at
# the default priority where the daemon may raise it (root).  The test hooks
# keep the blobs pending for a minute and start each write 1.2 s late
# (cli/gitpriv.h), within the lookup's 2 s.
WMNT=$T/waitmnt
AGENTFS_TEST_PENDING_QUIET_MS=60000 AGENTFS_TEST_FLUSH_DELAY_MS=1200 \
	mount_ws "$BIG" "$WMNT" --name waitmnt || bail "mount for the waiting lookup: $OUT"
step "git in that mount is ready" git -C "$WMNT" status --porcelain
wpid=$(daemon_pid_of "$WMNT")
git_nice() { # the nice value of the daemon's agentfs-git thread
	local c
	for c in /proc/"$wpid"/task/*/comm; do
		[ "$(cat "$c" 2>/dev/null)" = agentfs-git ] && awk '{ print $19 }' "${c%comm}stat" && return
	done
}
waited=no
for k in 11 12 13; do
	sh_step "the agent edits d7/f$k.txt" "printf 'edited\n' >>'$WMNT/d7/f$k.txt'"
	wid=$(git -C "$BIG" rev-parse "HEAD:d7/f$k.txt")
	sleep 1 # the thread reads and hashes the base blob, then holds it
	stat "$WMNT/.git/objects/${wid:0:2}/${wid:2}" >/dev/null 2>&1 &
	spid=$!
	sleep 0.3
	kill -0 "$spid" 2>/dev/null || {
		wait "$spid"
		continue
	}
	waited=yes
	nice_waiting=$(git_nice)
	step "  ...while a lookup waits for it, a create, rename and unlink elsewhere" \
		sh -c "touch '$WMNT/d8/w' && mv '$WMNT/d8/w' '$WMNT/d8/w2' && rm '$WMNT/d8/w2' && ls '$WMNT/d9' >/dev/null"
	if kill -0 "$spid" 2>/dev/null; then
		pass "  ...went through before the lookup's wait ended"
	else
		fail "  ...went through before the lookup's wait ended" "the lookup ended first"
	fi
	if [ "$(id -u)" -eq 0 ]; then
		assert_eq "  ...and the write the lookup waits for runs at nice 0" 0 "$nice_waiting"
	fi
	wait "$spid"
	run git -C "$WMNT" cat-file -t "$wid"
	assert_eq "  ...and git reads the blob once written" blob "$OUT"
	assert_eq "  ...and the thread is back at nice 19" 19 "$(git_nice)"
	break
done
[ "$waited" = yes ] && pass "a lookup of a pending base blob waits for its write" ||
	fail "a lookup of a pending base blob waits for its write" "three lookups ended within 0.3 s"
step "unmount it" af unmount "$WMNT"

# ------------------------------------------------------------------ the base survives git's cleanups
# The base trees are filtered by the policy: the repository cannot give them
# again.  An agent that leaves the base commit unreachable and repacks (a new
# root commit, the branch and the tag deleted, the reflog expired) must not
# take them away: the workspace resumes at its next mount, and promote
# refuses the unrelated history in words, not with an I/O error.
K=$T/keeprepo
KM=$T/keepmnt
run bash -c "git init -q -b main '$K' && cd '$K' && mkdir -p src && printf 'a\n' >src/a.c &&
	printf 'S=1\n' >.env && printf 'n\n' >notes.md && git add -A -f &&
	git -c user.name=p -c user.email=p@x commit -qm init"
mount_ws "$K" "$KM" --policy "$POLICY"
[ "$RC" -eq 0 ] || bail "mount of the keep repository failed: $OUT"
run git -C "$KM" rev-parse 'HEAD^{tree}'
keep_tree=$OUT
# The agent may take the .keep away; the next mount puts it back.
sh_step "the agent removes the base pack's .keep" "rm '$KM'/.git/objects/pack/*.keep"
step "unmount it" af unmount "$KM"
mount_ws "$K" "$KM" --policy "$POLICY"
assert_eq "mount it again" 0 "$RC"
run git -C "$KM" rev-parse HEAD
run bash -c "ls '$STATE/workspaces/keepmnt/git/objects/pack' | grep -c '\.keep\$'"
assert_eq "  ...the .keep is back" 1 "$OUT"
assert_contains "  ...and the daemon says so" "the base pack is kept again" \
	"$(cat "$STATE/workspaces/keepmnt/daemon.log")"
sh_step "the agent orphans the base and repacks" "cd '$KM' &&
	export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@x GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@x &&
	git checkout -q --orphan clean && printf 'z\n' >>notes.md && git commit -qam fresh &&
	git branch -D main -q && git tag -d base >/dev/null && git reflog expire --expire=now --all &&
	git repack -adq && git prune --expire=now && git gc -q --prune=now"
step "unmount it" af unmount "$KM"
mount_ws "$K" "$KM" --policy "$POLICY"
assert_eq "mount it again" 0 "$RC"
run git -C "$KM" cat-file -t "$keep_tree"
assert_eq "  ...the base tree is still there" tree "$OUT"
run grep 'private .git' "$STATE/workspaces/keepmnt/daemon.log"
assert_contains "  ...and the workspace resumed" "resumed," "$OUT"
assert_not_contains "  ...with nothing missing" "not found" "$OUT"
run af promote "$KM" --branch agent/keep
assert_ne "promote refuses the unrelated history" 0 "$RC"
assert_contains "  ...saying why" "does not descend from the base" "$OUT"
assert_not_contains "  ...not with an I/O error" "Input/output error" "$OUT"
step "unmount the keep mount" af unmount "$KM"

# ------------------------------------------------------------------ no nested repository
# git in the mount, run by the person, goes into a nested repository for a
# gitlink (a .gitmodules "ignore" overrides the private config's
# diff.ignoreSubmodules) and reads that repository's config: its
# core.fsmonitor would run the agent's command.  So no ".git" may be made.
B=$T/bigmnt
refuse "no nested repository (git init)" "" git -C "$B/d1" init -q nested
refuse "no .git directory" "Read-only file system" mkdir "$B/d1/.git"
refuse "no .git file (gitdir: ...)" "Read-only file system" \
	bash -c "printf 'gitdir: ../.git/modules/x\n' >'$B/d2/.git'"
refuse "no .git symlink" "Read-only file system" ln -s ../.git "$B/d3/.git"
refuse "no .git hard link" "Read-only file system" ln "$B/d3/f1.txt" "$B/d3/.git"
sh_step "a directory to rename" "mkdir '$B/d4/x'"
refuse "no rename to .git" "Read-only file system" mv "$B/d4/x" "$B/d4/.git"
# The whole attack, whose first step the refusals above stop: a nested
# repository with a core.fsmonitor, its gitlink, and .gitmodules asking git
# to look into it.
printf '#!/bin/sh\ntouch %s\nexit 1\n' "$T/nested-pwned" >"$T/fsm.sh" && chmod +x "$T/fsm.sh"
run bash -c "cd '$B' && export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@x GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@x &&
	mkdir d5/subm && git -C d5/subm init -q && echo s >d5/subm/f && git -C d5/subm add f &&
	git -C d5/subm commit -qm s && git -C d5/subm config core.fsmonitor '$T/fsm.sh' &&
	git add d5/subm"
printf '[submodule "s"]\n\tpath = d5/subm\n\turl = ./x\n\tignore = none\n' >"$B/.gitmodules"
run git -C "$B" status --porcelain
assert_eq "the person's git status runs nothing of the agent's" "no" \
	"$([ -e "$T/nested-pwned" ] && echo yes || echo no)"
# agentfs log has the daemon write its journal out first (the records of
# the last 100 ms may still be queued).
OUT=$(af log --json --op deny "$T/bigmnt" 2>&1 | grep -c '"detail":"create a .git"')
assert_ne "the refusals are journaled" 0 "${OUT:-0}"
# Nor a bare repository: git takes any directory holding a HEAD, objects/
# and refs/ (or a commondir) for one, and runs its config's core.fsmonitor
# for the person who runs git status there.  No HEAD outside .git is the
# agent's; in a directory the repository keeps a HEAD in (a bare fixture),
# neither are config nor commondir.
run bash -c "cd '$B/d1' && git init -q --bare planted"
assert_ne "no bare repository (git init --bare)" 0 "$RC"
run bash -c "cd '$B/d2' && mkdir objects refs && printf '[core]\n\tfsmonitor = \\\"touch $T/bare-pwned; false\\\"\n' >config && printf 'ref: refs/heads/main\n' >HEAD"
assert_contains "no HEAD beside objects/, refs/ and a config" "Read-only file system" "$OUT"
run git -C "$B/d2" rev-parse --absolute-git-dir
assert_eq "  ...git in that directory finds the workspace's repository" "$B/.git" "$OUT"
run git -C "$B/d2" status --porcelain
assert_eq "  ...and the person's git status there runs nothing of the agent's" "no" \
	"$([ -e "$T/bare-pwned" ] && echo yes || echo no)"
refuse "no HEAD symlink" "Read-only file system" ln -s refs/heads/main "$B/d2/HEAD"
refuse "no rename to HEAD" "Read-only file system" mv "$B/d2/f1.txt" "$B/d2/HEAD"

# ------------------------------------------------------------------ line ends, and changes since the mount
# A file checked out with CRLF line ends (.gitattributes eol=crlf), its index
# entry stat-dirty (touched): git in the mount sees it clean, and promote
# stores the agent's version as git add would (LF), a one-line change.  A
# file the person changed after the mount and the agent then changed holds
# the person's uncommitted work: promote refuses it like one dirty at mount.
E=$T/eolrepo
EM=$T/eolmnt
run bash -c "git init -q -b main '$E' && cd '$E' && printf '*.txt text eol=crlf\n*.flt filter=red\n' >.gitattributes &&
	git config filter.red.clean 'sed s/PLAIN/REDACTED/' && git config filter.red.smudge 'sed s/REDACTED/PLAIN/' &&
	printf 'l1\nl2\n' >a.txt && printf 'n\n' >notes.md && printf 'REDACTED secret\n' >f.flt && printf 'b\n' >b.md && git add -A &&
	git -c user.name=p -c user.email=p@x commit -qm init && rm a.txt f.flt && git checkout -q a.txt f.flt &&
	touch -d '2030-01-01' a.txt"
assert_eq "the person's a.txt has CRLF line ends and git calls it clean" "2 " \
	"$(grep -c $'\r' "$E/a.txt") $(git -C "$E" status --porcelain)"
mount_ws "$E" "$EM"
assert_eq "git status in the mount: a.txt clean" "" "$(cd "$EM" && t git status --porcelain -- a.txt 2>&1)"
sh_step "the agent adds a CRLF line" "printf 'l3\r\n' >>'$EM/a.txt'"
step "promote" af promote "$EM" --branch agent/eol
assert_eq "  ...a one-line change, stored with LF" "1 0 l1|l2|l3|" \
	"$(git -C "$E" diff --numstat main agent/eol -- a.txt | cut -f1,2 | tr '\t' ' ') $(git -C "$E" cat-file -p agent/eol:a.txt | tr '\n\r' '|#')"
printf 'the person, after the mount\n' >>"$E/notes.md"
sleep 0.3 # the watch of the lower
sh_step "the agent then changes notes.md too" "printf 'the agent\n' >>'$EM/notes.md'"
refuse "promote refuses the person's change since the mount" \
	"notes.md: the person had uncommitted changes here since the mount" \
	af promote "$EM" --branch agent/since
step "  ...--dirty=skip leaves it as at HEAD" af promote "$EM" --branch agent/since --dirty=skip
assert_eq "  ...the branch does not touch notes.md" "a.txt" \
	"$(git -C "$E" diff --name-only main agent/since)"
# A file under a filter driver (git-crypt, git-lfs, a redacting filter):
# the working tree holds its smudged bytes, which git's clean command would
# turn back at git add; agentfs cannot run it, so promote refuses the path.
assert_eq "f.flt holds its smudged bytes in the tree" "PLAIN secret" "$(cat "$E/f.flt")"
sh_step "the agent changes f.flt" "printf 'agent\n' >>'$EM/f.flt'"
refuse "promote refuses a path under a filter driver" \
	"f.flt: under the filter driver 'red' (.gitattributes), which agentfs cannot run" \
	af promote "$EM" --branch agent/flt --dirty=skip
sh_step "  ...and undoes it" "cd '$EM' && git checkout -q -- f.flt"
# The person edits b.md after the mount, the agent copies and commits it,
# then the person undoes the edit (git checkout --, as after a stash): the
# tree is clean again, the agent's commit still holds the person's line.
printf 'the person, undone later\n' >>"$E/b.md"
sleep 0.3 # the watch of the lower
sh_step "the agent changes b.md and commits it" "cd '$EM' && printf 'agent\n' >>b.md &&
	git add b.md && git -c user.name=a -c user.email=a@x commit -qm 'agent: b'"
git -C "$E" checkout -q -- b.md
refuse "promote refuses the agent's commit that holds the person's undone edit" \
	"b.md: the person had uncommitted changes here since the mount, in the agent's copy" \
	af promote "$EM" --branch agent/undone --conflicts=skip
# core.fileMode=false: git keeps a file's mode whatever its executable bit
# says, and so does promote.
git -C "$E" config core.fileMode false
step "the agent makes a.txt executable" t chmod +x "$EM/a.txt"
step "promote under core.fileMode=false" \
	af promote "$EM" --branch agent/mode --dirty=skip --conflicts=skip
assert_eq "  ...a.txt keeps mode 100644 on the branch" 100644 \
	"$(git -C "$E" ls-tree agent/mode a.txt | cut -d' ' -f1)"
run af unmount "$EM"

# ------------------------------------------------------------------ deleted on both sides
# The agent deletes a file and a directory, then the person deletes them
# from the working tree too (uncommitted).  The change set compares the view
# with the working tree, where they are gone as well; promote must still see
# the agent's deletions, and judge them as the person's work: refused by
# default, named, and taken with --dirty=take.  dir/x.md is still in the
# working tree, so its deletion is an ordinary change.
G=$T/gonerepo
GM=$T/gonemnt
run bash -c "git init -q -b main '$G' && cd '$G' && printf 'k\n' >keep.md && printf 'g\n' >gone.md &&
	mkdir dir && printf 'x\n' >dir/x.md && printf 'y\n' >dir/y.md && git add -A &&
	git -c user.name=p -c user.email=p@x commit -qm init"
mount_ws "$G" "$GM"
# The private .git is built in the background from the working tree: a
# change the person makes before it is done counts as one at the mount.
step "the private .git is built" git -C "$GM" rev-parse HEAD
sh_step "the agent deletes gone.md and dir/" "rm '$GM/gone.md' && rm -r '$GM/dir'"
rm "$G/gone.md" "$G/dir/y.md"
refuse "promote names the agent's deletion the person made too" \
	"gone.md: the person had uncommitted changes here since the mount" \
	af promote "$GM" --branch agent/gone
assert_contains "  ...and the one in the deleted directory" \
	"dir/y.md: the person had uncommitted changes here since the mount" "$OUT"
step "  ...--dirty=take takes the agent's deletions" \
	af promote "$GM" --branch agent/gone --dirty=take
assert_eq "  ...the branch deletes gone.md and dir/" "dir/x.md dir/y.md gone.md" \
	"$(git -C "$G" diff --name-only main agent/gone | tr '\n' ' ' | sed 's/ $//')"
run af unmount "$GM"
# Without a private .git (git: hidden) there is no record from the mount:
# a file gone from the working tree before it, under a directory the agent
# removed, is the person's work all the same, not the agent's deletion.
H=$T/gonerepo2
HM=$T/gonemnt2
run bash -c "git init -q -b main '$H' && cd '$H' && mkdir dir && printf 'a\n' >dir/a.md &&
	printf 'b\n' >dir/b.md && mkdir keep && printf '1\n' >keep/k1.md && printf '2\n' >keep/k2.md &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init && rm dir/a.md"
mount_ws "$H" "$HM" --policy "$T/git-hidden.yml"
sh_step "the agent removes dir/ (no private .git)" "rm -r '$HM/dir'"
# A directory moved away and back shows the repository's directory again.
sh_step "  ...and moves keep/ away and back" "mv '$HM/keep' '$HM/keep2' && mv '$HM/keep2' '$HM/keep'"
rm "$H/keep/k1.md"
refuse "promote names the person's own deletion under it" \
	"dir/a.md: the person had uncommitted changes here" af promote "$HM" --branch agent/gone2
assert_not_contains "  ...and takes nothing in the directory moved back for the agent's" \
	"keep/" "$OUT"
step "  ...--dirty=skip promotes the agent's deletion alone" \
	af promote "$HM" --branch agent/gone2 --dirty=skip
assert_eq "  ...the branch deletes dir/b.md only" "dir/b.md" \
	"$(git -C "$H" diff --name-only main agent/gone2)"
run af unmount "$HM"

# ------------------------------------------------------------------ the stat cache
# A repository whose index is stale (every tracked file touched: the index's
# stat data no longer match, the bytes do).  The first workspace's build reads
# and hashes every file and keeps what it learned in the state root's stat
# cache (cli/statcache.h); a second workspace's build reads none of them
# again.  A file the person then rewrites keeping its size and mtime (its
# ctime moves) is read again: the third workspace's base holds its new bytes.
# A damaged cache costs the hashing, nothing else.  A file under a filter
# (core.autocrlf, text=auto) is taken from the cache only while the config
# and the .gitattributes that apply to it are as they were: its id depends on
# them, and the person may change them without touching the file.
S=$T/statrepo
run bash -c "git init -q -b main '$S' && cd '$S' && for i in 1 2 3 4 5 6 7 8; do printf 'file %s\n' \$i >f\$i.txt; done &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init && touch -d 2001-01-01 f*.txt"
S2=$T/statrepo2
run bash -c "git init -q -b main '$S2' && cd '$S2' && printf 'a\nb\n' >f3.txt && git add -A &&
	git -c user.name=p -c user.email=p@x commit -qm init && git config core.autocrlf true &&
	printf 'a\r\nb\r\n' >f3.txt"
# The same, an attribute the person adds without touching the file: an
# untracked sub/.gitattributes, then $GIT_DIR/info/attributes (the build
# decides a directory at a time where no filter can apply: cli/nofilter.h).
S3=$T/statrepo3
run bash -c "git init -q -b main '$S3' && cd '$S3' && mkdir sub && printf 'a\r\nb\r\n' >sub/f3.txt &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init && touch -d 2001-01-01 sub/f3.txt"
# Every file under text=auto (a common .gitattributes).
S5=$T/statrepo5
run bash -c "git init -q -b main '$S5' && cd '$S5' && printf '* text=auto\n' >.gitattributes &&
	for i in 1 2 3; do printf 'file %s\n' \$i >f\$i.txt; done &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init && touch -d 2001-01-01 f*.txt"
# CRLF in the index and the working tree, an untracked .gitattributes.
S6=$T/statrepo6
run bash -c "git init -q -b main '$S6' && cd '$S6' && printf 'a\r\nb\r\n' >a.txt && cp a.txt b.txt &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init &&
	printf '*.txt text\n' >.gitattributes && touch -d 2001-01-01 a.txt b.txt"
# For an unmount during the build (below).
S4=$T/statrepo4
run bash -c "git init -q -b main '$S4' && cd '$S4' && for i in 1 2 3 4 5 6 7 8; do printf 'file %s\n' \$i >f\$i.txt; done &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init && touch -d 2001-01-01 f*.txt"
# Older than a build's racy window (2 s before it starts: cli/statcache.h).
sleep 2.5
stat_build() { # NAME [REPO [FILE]]: mount workspace NAME of REPO ($S), wait for its build, unmount; OUT: its log line
	mount_ws "${2:-$S}" "$T/$1" || bail "mount of $1: $OUT"
	step "  ...$1: the private .git is built" git -C "$T/$1" rev-parse -q --verify HEAD
	STAT_SHOW=$(git -C "$T/$1" show "HEAD:${3:-f3.txt}" 2>&1)
	STAT_STATUS=$(cd "$T/$1" && git status --porcelain 2>&1)
	STAT_TREE=$(git -C "$T/$1" ls-tree -r HEAD 2>&1)
	run af unmount "$T/$1"
	OUT=$(grep -o 'private .git: [0-9]* entries ([^)]*)' "$STATE/workspaces/$1/daemon.log")
}
stat_build stat1
assert_contains "the first build reads and hashes the 8 touched files" \
	"(8 read and hashed, 0 from the stat cache, 0 differ from HEAD)" "$OUT"
stat_build stat2
assert_contains "a second workspace's build reads none of them again" \
	"(0 read and hashed, 8 from the stat cache, 0 differ from HEAD)" "$OUT"
assert_eq "  ...and git status in it is clean" "" "$STAT_STATUS"
printf 'FILE 3\n' >"$S/f3.txt" && touch -d 2001-01-01 "$S/f3.txt"
stat_build stat3
assert_contains "a file rewritten with the same size and mtime is read again" \
	"(1 read and hashed, 7 from the stat cache, 1 differ from HEAD)" "$OUT"
assert_eq "  ...and the base holds its new bytes" "FILE 3" "$STAT_SHOW"
# The repository's cache is the one its last build wrote (each repository of
# this script has one in the state root).
SC=$(ls -t "$STATE"/cache/statcache-* 2>/dev/null | head -1)
assert_eq "the stat cache is the user's alone" "700 600" \
	"$(stat -c %a "$STATE/cache" 2>/dev/null) $(stat -c %a "$SC" 2>/dev/null)"
# Damaged in its second record (records of these paths are 96 bytes after a
# 24-byte header, cli/statcache.h): the first still serves, the rest is read.
run python3 -c "import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[24 + 96 + 20] ^= 0xff
open(p, 'wb').write(bytes(b))" "$SC"
stat_build stat4
assert_contains "a damaged stat cache is believed up to the damage" \
	"(7 read and hashed, 1 from the stat cache, 1 differ from HEAD)" "$OUT"
assert_eq "  ...and the base is right" "FILE 3|" "$STAT_SHOW|$STAT_STATUS"
stat_build stat5 "$S2"
assert_contains "a CRLF file under core.autocrlf=true is the index's content" \
	"(1 read and hashed, 0 from the stat cache, 0 differ from HEAD)" "$OUT"
stat_build stat5b "$S2"
assert_contains "  ...and the next build takes it from the stat cache" \
	"(0 read and hashed, 1 from the stat cache, 0 differ from HEAD)" "$OUT"
git -C "$S2" config core.autocrlf false
stat_build stat6 "$S2"
assert_contains "  ...with core.autocrlf=false since, it is read again and differs" \
	"(1 read and hashed, 0 from the stat cache, 1 differ from HEAD)" "$OUT"
assert_eq "  ...and the base holds its CRLF bytes" "$(printf 'a\r\nb\r')" "$STAT_SHOW"
stat_build stat7 "$S3" sub/f3.txt
assert_contains "a CRLF file no attribute names is hashed as it is" \
	"(1 read and hashed, 0 from the stat cache, 0 differ from HEAD)" "$OUT"
printf '*.txt text\n' >"$S3/sub/.gitattributes"
stat_build stat8 "$S3" sub/f3.txt
assert_contains "  ...with an untracked sub/.gitattributes since, it is read again and differs" \
	"(1 read and hashed, 0 from the stat cache, 1 differ from HEAD)" "$OUT"
assert_eq "  ...and the base holds it as git add would (LF)" "$(printf 'a\nb')" "$STAT_SHOW"
rm "$S3/sub/.gitattributes"
stat_build stat9 "$S3" sub/f3.txt
printf '*.txt text\n' >"$S3/.git/info/attributes"
stat_build stat10 "$S3" sub/f3.txt
assert_contains "  ...and so with info/attributes" \
	"(1 read and hashed, 0 from the stat cache, 1 differ from HEAD)" "$OUT"
# A linked worktree of that repository reads the common directory's
# info/attributes, as git does.
run git -C "$S3" worktree add -q "$T/statwt"
touch -d 2001-01-01 "$T/statwt/sub/f3.txt"
stat_build stat11 "$T/statwt" sub/f3.txt
assert_contains "  ...and so in a linked worktree" \
	"(1 read and hashed, 0 from the stat cache, 1 differ from HEAD)" "$OUT"
stat_build stat12 "$S5"
stat_build stat13 "$S5"
assert_contains "files under text=auto come from the stat cache" \
	"(0 read and hashed, 3 from the stat cache, 0 differ from HEAD)" "$OUT"
printf '# the same rules\n* text=auto\n' >"$S5/.gitattributes"
stat_build stat14 "$S5"
assert_contains "  ...until the .gitattributes over them changes" \
	"(4 read and hashed, 0 from the stat cache, 1 differ from HEAD)" "$OUT"
assert_eq "  ...and git status in it is clean" "" "$STAT_STATUS"
# An attribute file changed while a build reads the files under it, then put
# back: libgit2 filtered b.txt under `ident` (its CRLF bytes, the index's id)
# where the digest was taken of `text`; the next build, under `text` again,
# must not take that id (git add gives b.txt LF bytes).
AGENTFS_TEST_ENTRY_DELAY_MS=1000 mount_ws "$S6" "$T/stat15" || bail "mount of stat15: $OUT"
sleep 1.5
printf '*.txt ident\n' >"$S6/.gitattributes"
step "  ...stat15: the private .git is built" git -C "$T/stat15" rev-parse -q --verify HEAD
run af unmount "$T/stat15"
printf '*.txt text\n' >"$S6/.gitattributes"
stat_build stat16 "$S6" b.txt
assert_eq "an attribute file changed during a build leaves no id filtered under it" \
	"$(printf 'a\nb')" "$STAT_SHOW"

# An unmount while the build runs stops it (cli/gitpriv.h, gitpriv_serving):
# the unmount does not wait for the rest of the tree to be read and hashed.
# Nothing half-built is kept, so the workspace's next mount builds again; the
# stat cache keeps the ids the stopped build hashed, and the records of an
# earlier build for the paths it did not reach.  The test hook makes the
# build pause 300 ms before each of the 8 entries.
stop_build() { # NAME: mount workspace NAME of $S4 with the build slowed, unmount during it
	AGENTFS_TEST_ENTRY_DELAY_MS=300 mount_ws "$S4" "$T/$1" || bail "mount of $1: $OUT"
	sleep 1.5
	run af unmount "$T/$1"
	assert_eq "  ...$1: unmount during the build" 0 "$RC"
	OUT=$(grep -o 'the build stopped at the unmount, after [0-9]* of [0-9]* index entries ([^)]*)' \
		"$STATE/workspaces/$1/daemon.log")
	STOP_AT=$(printf '%s' "$OUT" | sed -n 's/.*after \([0-9]*\) of .*/\1/p')
}
stop_build stop1
assert_contains "an unmount during the build stops it" "of 8 index entries" "$OUT"
assert_contains "  ...having hashed the entries it passed" "($STOP_AT read and hashed, 0 from" "$OUT"
if [ -e "$STATE/workspaces/stop1/git-base" ]; then
	fail "  ...and records no base" "git-base exists"
else
	pass "  ...and records no base"
fi
stat_build stop1 "$S4"
assert_contains "  ...its next mount builds, with what the stopped build hashed from the stat cache" \
	"($((8 - ${STOP_AT:-0})) read and hashed, ${STOP_AT:-x} from the stat cache, 0 differ from HEAD)" "$OUT"
assert_eq "  ...and git status in it is clean" "" "$STAT_STATUS"
stop_build stop2
assert_contains "a build stopped after a whole one" "(0 read and hashed, $STOP_AT from the stat cache)" "$OUT"
stat_build stop3 "$S4"
assert_contains "  ...keeps the cache's records of the entries it did not reach" \
	"(0 read and hashed, 8 from the stat cache, 0 differ from HEAD)" "$OUT"
# Not once the agent changed something: its changes need the base as of this
# mount.  Were the build thrown away, the person's commit before the next
# mount would become the agent's starting point, and promote would take
# their changes to new.txt and f7.txt for the agent's to undo.
AGENTFS_TEST_ENTRY_DELAY_MS=300 mount_ws "$S4" "$T/stop4" || bail "mount of stop4: $OUT"
echo agent >"$T/stop4/new.txt" && rm "$T/stop4/f7.txt"
run af unmount "$T/stop4"
assert_eq "an unmount during the build of a changed workspace" 0 "$RC"
assert_contains "  ...says what it waits for" "waiting for the daemon" "$OUT"
if [ -e "$STATE/workspaces/stop4/git-base" ] &&
	! grep -q "the build stopped" "$STATE/workspaces/stop4/daemon.log"; then
	pass "  ...lets the build finish"
else
	fail "  ...lets the build finish" "$(tail -3 "$STATE/workspaces/stop4/daemon.log")"
fi
run bash -c "cd '$S4' && echo person >new.txt && echo person >>f7.txt && git add -A &&
	git -c user.name=p -c user.email=p@x commit -qm person"
mount_ws "$S4" "$T/stop4" || bail "mount of stop4 again: $OUT"
run af unmount "$T/stop4"
refuse "  ...and promote refuses to undo what the person committed since" f7.txt \
	af promote "$T/stop4" --branch agent/stop4
# A file git takes for HEAD's though its bytes differ (CRLF lines in the
# working tree, LF in the index, under text=auto): the agent's edit of it is
# promoted, not refused as the person's.
S7=$T/crlfrepo
run bash -c "git init -q -b main '$S7' && cd '$S7' && printf '* text=auto\n' >.gitattributes &&
	printf 'a\nb\n' >c.txt && git add -A && git -c user.name=p -c user.email=p@x commit -qm init &&
	printf 'a\r\nb\r\n' >c.txt && git add -A 2>/dev/null && git status --porcelain"
assert_eq "a CRLF working tree over an LF index is clean for git" "" "$OUT"
mount_ws "$S7" "$T/crlf1" || bail "mount of crlf1: $OUT"
printf 'c\r\n' >>"$T/crlf1/c.txt"
run af unmount "$T/crlf1"
run af promote "$T/crlf1" --branch agent/crlf
assert_eq "  ...and the agent's edit of that file is promoted" 0 "$RC"
assert_eq "  ...as git add would store it" "$(printf 'a\nb\nc')" "$(git -C "$S7" show agent/crlf:c.txt)"
# A stopped build of a workspace that holds nothing: the next mount's base
# is the repository's HEAD then, and the workspace's description names it.
stop_build stop5
run bash -c "cd '$S4' && echo again >>f2.txt && git -c user.name=p -c user.email=p@x commit -qam again"
stat_build stop5 "$S4"
assert_eq "a stopped build's workspace takes the HEAD of its next mount for its base" \
	"$(git -C "$S4" rev-parse HEAD)" \
	"$(sed -n 's/^base_commit: "\(.*\)"$/\1/p' "$STATE/workspaces/stop5/workspace.yml")"
assert_contains "  ...as its private .git does" "$(git -C "$S4" rev-parse HEAD)" \
	"$(cat "$STATE/workspaces/stop5/git-base")"

# A stale index and no stat cache (a repository's first build here): a
# second thread hashes ahead of the build (cli/prehash.h).  The ids are the
# ones git add gives: 300 files in 10 directories whose stat data all
# changed since the index was written, 3 of them rewritten (one with the same
# size), 2 executable, and 20 committed with CRLF lines that a `text`
# attribute added since makes LF: their raw bytes are the index's, but not
# what git add stores (a filter applies: the build hashes them itself).
S8=$T/aheadrepo
run bash -c "git init -q -b main '$S8' && cd '$S8' && printf '*.txt diff\n' >.gitattributes &&
	for d in 0 1 2 3 4 5 6 7 8 9; do mkdir d\$d; for i in \$(seq 30); do
		printf 'file %s/%s\n' \$d \$i >d\$d/f\$i.txt; done; done &&
	for i in \$(seq 20); do printf 'line %s\r\n' \$i >d5/c\$i.crlf; done &&
	chmod +x d1/f1.txt d9/f30.txt && ln -s d0/f1.txt link &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init &&
	printf '*.crlf text\n' >.git/info/attributes &&
	printf 'FILE 2/7\n' >d2/f7.txt && printf 'other\n' >d8/f30.txt && printf 'file 4/4 and more\n' >d4/f4.txt &&
	find . -path ./.git -prune -o -type f -print0 | xargs -0 touch -d 2001-01-01"
run bash -c "rm -rf '$T/aheadcopy' && cp -a '$S8' '$T/aheadcopy' && cd '$T/aheadcopy' && git add -u 2>/dev/null &&
	git ls-tree -r \$(git write-tree) | grep -v gitattributes"
AHEAD_WANT=$OUT
# The same version only: 100 files, the build slowed to 30 ms an entry (the
# thread is not), and one file hashed ahead rewritten in place, same size and
# mtime, before the build reaches it.
S9=$T/aheadrepo2
run bash -c "git init -q -b main '$S9' && cd '$S9' && for i in \$(seq -w 0 99); do
		printf 'file %s\n' \$i >f\$i.txt; done &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init &&
	touch -d 2001-01-01 f*.txt"
# 400 files, the first 100 in the index's order under text=auto: what is
# hashed ahead of them is of no use, and must not keep the rest from it.
S10=$T/aheadrepo3
run bash -c "git init -q -b main '$S10' && cd '$S10' && for i in \$(seq 100 499); do
		printf 'file %s\n' \$i >f\$i.txt; done &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init &&
	printf 'f1* text=auto\n' >.git/info/attributes && touch -d 2001-01-01 f*.txt"
# The builds below are slowed to 5 ms an entry (the second thread is not):
# on a loaded machine a build of a few hundred small files can otherwise end
# before the second thread first runs, and nothing is hashed ahead.
# 200 files, 70 of them touched since the index was written (35%).
S11=$T/aheadrepo4
run bash -c "git init -q -b main '$S11' && cd '$S11' && for i in \$(seq 100 299); do
		printf 'file %s\n' \$i >f\$i.txt; done &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init &&
	touch -d 2001-01-01 \$(git ls-files | awk 'NR % 20 < 7')"
sleep 2.5 # older than the build's racy window
AGENTFS_TEST_ENTRY_DELAY_MS=5 stat_build ahead5 "$S11" f100.txt
assert_match "an index a third stale is hashed ahead too" \
	"[1-9][0-9]* hashed ahead on two threads" "$(grep 'private .git' "$STATE/workspaces/ahead5/daemon.log")"
assert_contains "  ...its 70 stale files read" "(70 read and hashed, 0 from the stat cache, 0 differ" "$OUT"
AGENTFS_TEST_ENTRY_DELAY_MS=5 stat_build ahead1 "$S8" d2/f7.txt
AHEAD_N=$(grep -o '[0-9]* hashed ahead on two threads' "$STATE/workspaces/ahead1/daemon.log" | cut -d' ' -f1)
if [ "${AHEAD_N:-0}" -gt 0 ] && [ "$AHEAD_N" -le 301 ]; then
	pass "a stale index's files are hashed ahead on two threads ($AHEAD_N of the 301 no filter applies to)"
else
	fail "a stale index's files are hashed ahead on two threads" "$(grep 'private .git' "$STATE/workspaces/ahead1/daemon.log")"
fi
assert_contains "  ...every file read and hashed" "(322 read and hashed, 0 from the stat cache, 23 differ from HEAD)" "$OUT"
assert_eq "  ...the base holds the rewritten bytes" "FILE 2/7|" "$STAT_SHOW|$STAT_STATUS"
assert_eq "  ...and each file's id is the one git add gives" "$AHEAD_WANT" \
	"$(printf '%s\n' "$STAT_TREE" | grep -v gitattributes)"
# f90 is hashed ahead (its atime, 2001 since the touch, moves: relatime)
# ~1 s into the build, which itself reaches f90 2.7 s in at the soonest; it
# is rewritten as soon as it was read.
# Rewritten later than 2 s in, the build may have read it first: no test.
AHEAD_T0=$(date +%s%N)
AGENTFS_TEST_ENTRY_DELAY_MS=30 mount_ws "$S9" "$T/ahead2" || bail "mount of ahead2: $OUT"
for _ in $(seq 100); do
	[ "$(stat -c %X "$S9/f90.txt")" -gt 1000000000 ] && break
	sleep 0.02
done
AHEAD_READ=$(stat -c %X "$S9/f90.txt")
run bash -c "printf 'FILE 90\n' >'$S9/f90.txt' && touch -d 2001-01-01 '$S9/f90.txt'"
AHEAD_MS=$((($(date +%s%N) - AHEAD_T0) / 1000000)) # the rewrite done
step "  ...ahead2: the private .git is built" git -C "$T/ahead2" rev-parse -q --verify HEAD
if [ "$AHEAD_READ" -gt 1000000000 ] && [ "$AHEAD_MS" -lt 2000 ]; then
	assert_eq "a file rewritten after it was hashed ahead is hashed again (same size and mtime)" \
		"FILE 90" "$(git -C "$T/ahead2" show HEAD:f90.txt 2>&1)"
	assert_eq "  ...and git status is clean" "" "$(cd "$T/ahead2" && git status --porcelain 2>&1)"
	assert_contains "  ...as the daemon's log says" "(1 changed since)" \
		"$(grep 'private .git' "$STATE/workspaces/ahead2/daemon.log")"
else
	skip "a file rewritten after it was hashed ahead is hashed again" \
		"not seen read and rewritten within 2 s (${AHEAD_MS} ms; noatime, or a slow machine)"
fi
run af unmount "$T/ahead2"
AGENTFS_TEST_ENTRY_DELAY_MS=5 stat_build ahead3 "$S10" f100.txt
assert_match "files under a filter first in the index do not keep the rest from being hashed ahead" \
	"[1-9][0-9]* hashed ahead on two threads" "$(grep 'private .git' "$STATE/workspaces/ahead3/daemon.log")"
# A stat cache that holds ids, but not of the files as they are now (touched
# since ahead2's build wrote it; as after a build stopped at the unmount,
# which leaves records of its first entries only): the rest is hashed ahead.
run bash -c "touch -d 2002-01-01 '$S9'/f*.txt"
AGENTFS_TEST_ENTRY_DELAY_MS=5 stat_build ahead4 "$S9" f90.txt
assert_match "files touched since the stat cache was written are hashed ahead" \
	"[1-9][0-9]* hashed ahead on two threads" "$(grep 'private .git' "$STATE/workspaces/ahead4/daemon.log")"
assert_contains "  ...every one read" "(100 read and hashed, 0 from the stat cache" "$OUT"

# ------------------------------------------------------------------ a fault on a full disk
# A base blob the daemon cannot copy in (its disk full) is absent for that
# lookup only: once there is room, the next lookup copies it (the kernel
# must not keep the absence).  Root only: the workspace on a small tmpfs.
if [ "$(id -u)" -eq 0 ]; then
	FT=$T/fulltmp
	FR=$T/fullrepo
	FM=$T/fullmnt
	mkdir -p "$FT" "$FM"
	at_exit "fusermount3 -uz $(printf %q "$FM") 2>/dev/null; umount -l $(printf %q "$FT") 2>/dev/null"
	mount -t tmpfs -o size=16M tmpfs "$FT" || bail "cannot mount a tmpfs"
	run bash -c "git init -q -b main '$FR' && cd '$FR' &&
		for i in \$(seq 1 20); do printf 'full %s\n' \$i >f\$i.txt; done &&
		git add -A && git -c user.name=p -c user.email=p@x commit -qm init"
	run t "$AGENTFS" mount "$FR" "$FM" --state-dir "$FT/state"
	assert_eq "mount a workspace on a small tmpfs" 0 "$RC"
	git -C "$FM" status >/dev/null
	fid=$(git -C "$FR" rev-parse HEAD:f7.txt)
	stat "$FM/.git/objects/${fid:0:2}" >/dev/null # the fan-out directory, made now
	dd if=/dev/zero of="$FT/filler" bs=1M 2>/dev/null
	run stat "$FM/.git/objects/${fid:0:2}/${fid:2}"
	assert_ne "a base blob the full disk takes no copy of is absent" 0 "$RC"
	rm -f "$FT/filler"
	run stat "$FM/.git/objects/${fid:0:2}/${fid:2}"
	assert_eq "  ...and there as soon as there is room" 0 "$RC"
	run t "$AGENTFS" unmount "$FM" --state-dir "$FT/state"
	assert_eq "  ...unmount it" 0 "$RC"
	umount "$FT"
else
	skip "a base blob the full disk takes no copy of" "needs root (a tmpfs)"
fi

# The private .git is built after the mount serves.  A walk that only stats
# .git (find's lstat of each entry of the root) is answered at once, while
# what looks inside .git waits for the build and finds it whole.  The test
# hook starts the build 3 s late (cli/gitpriv.h); git-base is the record the
# build writes last.
DREPO=$T/delayrepo
DMNT=$T/delaymnt
DWS=$STATE/workspaces/delaymnt
run bash -c "git init -q -b main '$DREPO' && cd '$DREPO' && mkdir -p src &&
	printf 'one\n' >src/a.c && printf 'two\n' >README &&
	git add -A && git -c user.name=p -c user.email=p@x commit -qm init"
assert_eq "a repository for the delayed build" 0 "$RC"
AGENTFS_TEST_BUILD_DELAY_MS=3000 mount_ws "$DREPO" "$DMNT" --name delaymnt ||
	bail "mount with the build delayed: $OUT"
step "right after the mount, stat .git during its build" stat "$DMNT/.git"
if [ -e "$DWS/git-base" ]; then
	fail "  ...answered before the build ended" "git-base exists already"
else
	pass "  ...answered before the build ended"
fi
run find "$DMNT" -path "$DMNT/.git" -prune -o -type f -print
assert_eq "a walk that prunes .git, during the build" 0 "$RC"
if [ -e "$DWS/git-base" ]; then
	fail "  ...ends before the build" "git-base exists already"
else
	pass "  ...ends before the build"
fi
run ls -a "$DMNT/.git"
assert_eq "a listing of .git during the build" 0 "$RC"
assert_contains "  ...waits for it and shows it whole" "HEAD" "$OUT"
step "  ...and the build has ended" test -e "$DWS/git-base"
run git -C "$DMNT" status --porcelain
assert_eq "git status in that mount" 0 "$RC"
assert_eq "  ...is clean" "" "$OUT"
step "unmount it" af unmount "$DMNT"
# Requests that wait for the build do not take the daemon's workers: ten
# listings of .git at once (the kernel lets readdirs of one directory run
# side by side; the daemon has eight workers), and the rest of the mount is
# still answered before the build ends.
AGENTFS_TEST_BUILD_DELAY_MS=4000 mount_ws "$DREPO" "$T/delaymnt3" --name delaymnt3 ||
	bail "mount with the build delayed: $OUT"
lspids=()
for i in $(seq 1 10); do
	t ls -a "$T/delaymnt3/.git" >"$T/delayls.$i" 2>&1 &
	lspids+=($!)
done
sleep 0.5
run cat "$T/delaymnt3/src/a.c"
assert_eq "ten listings of .git wait for the build; a read elsewhere" "one" "$OUT"
if [ -e "$STATE/workspaces/delaymnt3/git-base" ]; then
	fail "  ...is answered before the build ended" "git-base exists already"
else
	pass "  ...is answered before the build ended"
fi
lsok=0
for i in "${!lspids[@]}"; do
	wait "${lspids[$i]}" && grep -qx HEAD "$T/delayls.$((i + 1))" && lsok=$((lsok + 1))
done
assert_eq "  ...and each listing shows .git whole" 10 "$lsok"
step "unmount it" af unmount "$T/delaymnt3"
# A lookup inside .git during the build waits for it too.
AGENTFS_TEST_BUILD_DELAY_MS=3000 mount_ws "$DREPO" "$T/delaymnt2" --name delaymnt2 ||
	bail "mount with the build delayed: $OUT"
step "stat .git/HEAD during the build waits for it" stat "$T/delaymnt2/.git/HEAD"
step "  ...and git sees a repository" git -C "$T/delaymnt2" rev-parse --git-dir
step "unmount it" af unmount "$T/delaymnt2"

# A tracked file the daemon may not read (mode 000, as the person's own user:
# root reads it anyway): git goes on past it, and so does the build, with the
# index's version for its base, named in the daemon's log.
if [ "$(id -u)" -ne 0 ]; then
	UREPO=$T/unread-repo
	mkdir -p "$UREPO" && git -C "$UREPO" init -q && printf 'a\n' >"$UREPO/a.txt" &&
		printf 'b\n' >"$UREPO/noread.txt" && git -C "$UREPO" add -A &&
		git -C "$UREPO" -c user.name=t -c user.email=t@t commit -qm base &&
		chmod 000 "$UREPO/noread.txt" || bail "cannot create the unreadable file's repository"
	mount_ws "$UREPO" "$T/unreadmnt" || bail "mount of the unreadable file's repository: $OUT"
	run git -C "$T/unreadmnt" ls-files
	assert_eq "a tracked file the daemon cannot read leaves the private .git whole" \
		"$(printf 'a.txt\nnoread.txt')" "$OUT"
	assert_contains "  ...and the daemon's log names it" \
		"private .git: noread.txt: Permission denied: its base is the index's version" \
		"$(cat "$STATE/workspaces/unreadmnt/daemon.log")"
	step "unmount it" af unmount "$T/unreadmnt"
	chmod 644 "$UREPO/noread.txt"
else
	skip "a tracked file the daemon cannot read leaves the private .git whole" "root reads it"
fi

done_testing
