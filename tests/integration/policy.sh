#!/usr/bin/env bash
# policy.sh - a team's policy takes effect in a real mount: its hide, readonly
# and show rules, refusals journaled, the repository's own .agentfs.yml hidden
# from the agent and out of its reach, and a malformed policy refusing to mount.
#
#   bash policy.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
mkdir -p "$REPO/ci/workflows" "$REPO/src" "$REPO/docs" "$REPO/data" || bail "mkdir"
(
	cd "$REPO" || exit 1
	git init -q -b main .
	printf 'int main(void) { return 0; }\n' >src/main.c
	printf 'internal roadmap MARK-INTERNAL\n' >docs/internal.md
	printf 'public docs\n' >docs/public.md
	printf 'name: ci\n' >ci/workflows/build.yml
	printf 'SECRET=MARK-ENV\n' >.env
	printf 'EXAMPLE=1\n' >.env.example
	printf 'hooks: true\n' >.pre-commit-config.yaml
	head -c 4096 /dev/zero >data/big.bin
	printf 'x\n' >data/small.bin
	mkdir lib notes && printf 'int util;\n' >lib/util.c && printf 'a note\n' >notes/a.md
	# The repository's own policy: may tighten, never loosen.
	cat >.agentfs.yml <<-'EOF'
		version: 1
		hide:
		  - "/docs/internal.md"
		show:
		  - ".env"
	EOF
	git add -A && git -c user.name=t -c user.email=t@t commit -qm init
) || bail "cannot create the repository"

# The person's own policy (--policy): hides data/ files over 1 KiB, makes CI
# read-only, shows .env.example.
cat >"$T/team.yml" <<'EOF'
version: 1
extends: default
readonly:
  - "ci/**"
  - "/src/main.c"
show:
  - ".env.example"
max_file_size: 1K
EOF
step "agentfs policy check accepts the team's policy" t "$AGENTFS" policy check "$T/team.yml"

mount_ws "$REPO" "$MNT" --policy "$T/team.yml" --journal-sync=always
if [ "$RC" -eq 0 ]; then pass "mount with --policy"; else
	fail "mount with --policy" "exit $RC" "$OUT"
	bail "mount failed"
fi
J=$STATE/workspaces/mnt/journal.jsonl

# ------------------------------------------------------------------ hide and show
assert_like_missing "$MNT/docs/internal.md" "the repository's hide rule takes effect"
assert_not_listed "$MNT/docs" internal.md
assert_content "a file next to it reads normally" "$MNT/docs/public.md" "public docs"
assert_like_missing "$MNT/.env" "the repository's show: cannot reveal the built-in secret .env"
assert_content "the person's show: reveals .env.example" "$MNT/.env.example" "EXAMPLE=1"
assert_like_missing "$MNT/data/big.bin" "max_file_size hides a file over 1 KiB"
assert_content "...and keeps a smaller one" "$MNT/data/small.bin" "x"

# ------------------------------------------------------------------ the policy file itself
assert_like_missing "$MNT/.agentfs.yml" "the repository's .agentfs.yml is hidden from the agent"
assert_not_listed "$MNT" .agentfs.yml
sh_step "the agent may create its own .agentfs.yml" \
	"printf 'version: 1\nshow: [\"/docs/internal.md\"]\n' >'$MNT/.agentfs.yml'"
assert_like_missing "$MNT/docs/internal.md" "  ...which changes no policy in force"
run af export mnt
assert_contains "  ...and export leaves it out, naming it" ".agentfs.yml" "$OUT"
assert_not_contains "  ...its bytes are not in the patch" 'show: ["/docs/internal.md"]' \
	"$(af export mnt 2>/dev/null)"
assert_content "the repository's policy file is untouched" "$REPO/.agentfs.yml" \
	"$(printf 'version: 1\nhide:\n  - "/docs/internal.md"\nshow:\n  - ".env"')"
step "remove the agent's .agentfs.yml" rm "$MNT/.agentfs.yml"

# ------------------------------------------------------------------ read-only
assert_content "a read-only file reads normally" "$MNT/ci/workflows/build.yml" "name: ci"
refuse "writing a read-only file: EROFS" "Read-only file system" \
	bash -c "printf 'evil\n' >>'$MNT/ci/workflows/build.yml'"
refuse "creating a file in a read-only tree: EROFS" "Read-only file system" \
	bash -c "printf 'x\n' >'$MNT/ci/workflows/evil.yml'"
refuse "removing a read-only file: EROFS" "Read-only file system" rm "$MNT/ci/workflows/build.yml"
refuse "renaming onto a read-only path: EROFS" "Read-only file system" \
	mv "$MNT/docs/public.md" "$MNT/ci/workflows/public.md"
refuse "chmod of a read-only file: EROFS" "Read-only file system" chmod +x "$MNT/src/main.c"
refuse "truncating a read-only file: EROFS" "Read-only file system" truncate -s 0 "$MNT/src/main.c"
assert_content "  ...the read-only file is unchanged" "$MNT/src/main.c" "int main(void) { return 0; }"
step "other files stay writable" bash -c "printf 'more\n' >>'$MNT/docs/public.md'"

# ------------------------------------------------------------------ journal
step "agentfs verify (the journal is flushed first)" af verify mnt
deny=$(grep -F '"op":"deny"' "$J" | grep -F '"path":"ci/workflows/build.yml"' | head -n 1)
assert_contains "a refused write is journaled as deny" '"result":"EROFS"' "$deny"
conceal=$(grep -F '"op":"conceal"' "$J" | grep -F '"path":"docs/internal.md"' | head -n 1)
assert_contains "a hidden-name lookup is journaled as conceal" '"result":"ENOENT"' "$conceal"
mount_rec=$(grep -F '"op":"mount"' "$J" | head -n 1)
digest=$(t "$AGENTFS" policy show --policy "$T/team.yml" "$REPO" 2>/dev/null | grep -io 'digest[^0-9a-f]*[0-9a-f]\{32\}' |
	grep -o '[0-9a-f]\{32\}' | head -n 1)
if [ -n "$digest" ]; then
	assert_contains "the mount record carries the policy digest" "$digest" "$mount_rec"
else
	assert_contains "the mount record carries a policy digest" 'digest' "$mount_rec"
fi

# ------------------------------------------------------------------ explain
run t "$AGENTFS" policy explain --policy "$T/team.yml" "$REPO" src/main.c docs/internal.md .env.example
assert_contains "explain: src/main.c is read-only by the team's rule" "read-only" "$OUT"
assert_contains "explain: docs/internal.md is hidden by the repository's rule" ".agentfs.yml" "$OUT"
# max_file_size: explain judges the file's size, as the mount and test do.
run t "$AGENTFS" policy explain --policy "$T/team.yml" "$REPO" data/big.bin data/small.bin
assert_eq "explain: a file over max_file_size is hidden, naming the setting" \
	"data/big.bin: hidden (larger than max_file_size 1024, $T/team.yml:8)
data/small.bin: visible (no rule)" "$OUT"
run t "$AGENTFS" policy test --policy "$T/team.yml" "$REPO"
assert_contains "  ...as test says" \
	"hidden     data/big.bin  (larger than max_file_size 1024, $T/team.yml:8)" "$OUT"
# A subdirectory of the repository is no root of its own: its answers would
# skip the repository's .agentfs.yml and match the wrong paths.
refuse "explain of a subdirectory of the repository is refused, as mount refuses it" \
	"explain: $REPO/src: a subdirectory of the git working tree" \
	t "$AGENTFS" policy explain "$REPO/src" main.c
refuse "test of a subdirectory of the repository is refused" \
	"test: $REPO/src: a subdirectory of the git working tree" t "$AGENTFS" policy test "$REPO/src"

step "unmount" af unmount mnt

# ------------------------------------------------------------------ a tighter policy later
# A workspace keeps what its agent saw: copies of the repository's files (the
# view shows upper files whatever their name), renamed directories (their
# entries are decided by their own names) and the private .git's base tree.
# A policy that newly hides any of it refuses the workspace's next mount.
printf 'notes\n' >"$REPO/todo.md"
printf 'untouched\n' >"$REPO/untouched.md"
printf 'gone\n' >"$REPO/gone.md"
printf 'committed\n' >"$REPO/committed.md"
mount_ws "$REPO" "$MNT" --policy "$T/team.yml"
if [ "$RC" -ne 0 ]; then fail "mount again with the team's policy" "$OUT"; fi
step "  ...its private .git is built" t git -C "$MNT" rev-parse -q --verify HEAD
sh_step "the agent changes files: appends, a move, a renamed directory, a file of its own" \
	"printf 'more\n' >>'$MNT/docs/public.md' && printf 'more\n' >>'$MNT/gone.md' &&
	mv '$MNT/data/small.bin' '$MNT/moved.bin' && mv '$MNT/notes' '$MNT/renamed-notes' &&
	printf 'mine\n' >'$MNT/mine.txt'"
# The copy of data/small.bin put away behind two directories the agent made
# unreadable (as a person, the check lifts their modes for the moment).
sh_step "the agent hides a copy behind directories of mode 000" \
	"mkdir -p '$MNT/locked/inner' && mv '$MNT/moved.bin' '$MNT/locked/inner/moved.bin' &&
	chmod 000 '$MNT/locked/inner' '$MNT/locked'"
# committed.md: changed, committed in the private .git, then removed (its
# whiteout keeps where the copy came from; the commit keeps its bytes).
sh_step "the agent commits a changed file, then removes it" \
	"printf 'more\n' >>'$MNT/committed.md' && git -C '$MNT' add committed.md &&
	git -C '$MNT' commit -qm 'the agent' && rm '$MNT/committed.md'"
step "unmount" af unmount mnt
# What the lower no longer holds: gone.md and committed.md (what the agent
# made of them is all that is left) and lib/util.c (committed away: the
# private .git's base still has it).
sh_step "the person removes gone.md, committed.md and lib/util.c" \
	"rm '$REPO/gone.md' '$REPO/committed.md' && git -C '$REPO' rm -q lib/util.c &&
	git -C '$REPO' -c user.name=t -c user.email=t@t commit -qm 'no util'"
{
	cat "$T/team.yml"
	printf 'hide:\n'
	for p in /docs/public.md /untouched.md /gone.md /committed.md /lib/ /notes/ /data/ /mine.txt \
		/nowhere.md; do
		printf '  - "%s"\n' "$p"
	done
} >"$T/tight.yml"
before_yml=$(cat "$STATE/workspaces/mnt/workspace.yml")
before_pol=$(cat "$STATE/workspaces/mnt/policy.yml")
run af mount --policy "$T/tight.yml" "$REPO" "$MNT"
assert_eq "a policy that hides what the agent could see: the mount is refused" 1 "$RC"
for p in docs/public.md untouched.md gone.md committed.md lib/ notes/ data/ \
	locked/inner/moved.bin; do
	assert_contains "  ...naming $p" "mnt: $p: the new policy hides it" "$OUT"
done
assert_not_contains "  ...not the agent's own file" "mine.txt" "$OUT"
assert_not_contains "  ...nor what is nowhere" "nowhere.md" "$OUT"
assert_contains "  ...saying what to do" "start a new workspace" "$OUT"
if is_mounted "$MNT"; then fail "  ...and nothing is mounted" "$MNT is a mount"; else
	pass "  ...and nothing is mounted"
fi
assert_eq "  ...and the workspace keeps its record" "$before_yml" \
	"$(cat "$STATE/workspaces/mnt/workspace.yml")"
assert_eq "  ...and its policy" "$before_pol" "$(cat "$STATE/workspaces/mnt/policy.yml")"
assert_eq "  ...and the modes of the agent's directories" 0 \
	"$(stat -c %a "$STATE/workspaces/mnt/upper/locked")"
mount_ws "$REPO" "$MNT" --policy "$STATE/workspaces/mnt/policy.yml"
assert_eq "the workspace mounts with its own policy, as the error says" 0 "$RC"
assert_content "  ...its copies as they were" "$MNT/gone.md" "$(printf 'gone\nmore')"
step "unmount" af unmount mnt
step "agentfs rm of the workspace" af rm mnt
mount_ws "$REPO" "$MNT" --policy "$T/tight.yml"
assert_eq "a new workspace mounts under the tighter policy" 0 "$RC"
assert_like_missing "$MNT/docs/public.md" "  ...and hides what it says"
assert_like_missing "$MNT/notes" "  ...a directory too"
sh_step "  ...its agent writes a file at a name the policy hides" "printf 'own\n' >'$MNT/mine.txt'"
# (As a person, the comparison must also look into a directory the agent
# left readable but not searchable.)
sh_step "  ...and leaves a directory of mode 600" \
	"mkdir -p '$MNT/half/sub' && printf 'h\n' >'$MNT/half/f' && chmod 600 '$MNT/half'"
step "unmount" af unmount mnt
mount_ws "$REPO" "$MNT" --policy "$T/team.yml"
assert_eq "a looser policy mounts it again" 0 "$RC"
assert_content "  ...showing what it hid no more" "$MNT/docs/public.md" "public docs"
assert_eq "  ...the agent's directory keeps its mode" 600 \
	"$(stat -c %a "$STATE/workspaces/mnt/upper/half")"
step "unmount" af unmount mnt
# Resumed without --policy, a workspace whose snapshot is gone is refused
# rather than mounted under whatever the files around say now.
rm "$STATE/workspaces/mnt/policy.yml"
run af mount "$REPO" "$MNT"
assert_eq "a workspace without its policy snapshot: the mount is refused" \
	"1 policy.yml: No such file or directory: the workspace's policy is unknown; give it with --policy FILE" \
	"$RC ${OUT#*workspaces/mnt/}"
if is_mounted "$MNT"; then fail "  ...and nothing is mounted" "$MNT is a mount"; else
	pass "  ...and nothing is mounted"
fi
mount_ws "$REPO" "$MNT" --policy "$T/team.yml"
assert_eq "  ...with --policy it mounts" 0 "$RC"
step "unmount" af unmount mnt

# ------------------------------------------------------------------ tighter, the subtle ways
# Sizes in the private .git's base tree, the symlink rule, a renamed directory
# whose source is away at the mount, an edited snapshot, a deep tree.
R2=$T/repo2
M2=$T/w2
mkdir -p "$R2" && git -C "$R2" init -q -b main && (
	cd "$R2" && printf 'a\n' >a.txt && head -c 5000 /dev/zero >dump.sql &&
		ln -s /etc/hostname link-out && git add -A &&
		git -c user.name=t -c user.email=t@t commit -qm two
) && mkdir "$R2/private" && printf 'plan\n' >"$R2/private/plan.md" || bail "cannot create repo2"
printf 'version: 1\nextends: none\ngit: private\nsymlinks: allow\nhide: ["/none"]\n' >"$T/p0.yml"
printf 'version: 1\nextends: none\ngit: private\nsymlinks: hide\nmax_file_size: 1K\n%s\n' \
	'hide: ["/none", "/private/"]' >"$T/p1.yml"
mount_ws "$R2" "$M2" --policy "$T/p0.yml" || bail "mount of repo2: $OUT"
step "  ...its private .git is built" t git -C "$M2" rev-parse -q --verify HEAD
deep=$(python3 -c "print('/'.join(['d'] * 1500))")
sh_step "the agent renames private/ and makes a tree 1500 directories deep" \
	"mv '$M2/private' '$M2/renamed' && cd '$M2' && mkdir -p '$deep'"
step "unmount" af unmount w2
sh_step "the person cuts dump.sql short and moves private/ away" \
	"printf 'cut\n' >'$R2/dump.sql' && mv '$R2/private' '$T/private.away'"
run af mount --policy "$T/p1.yml" "$R2" "$M2"
assert_eq "a tighter policy on repo2's workspace: refused" 1 "$RC"
assert_contains "  ...naming dump.sql (5000 bytes in the base tree, max_file_size 1K)" \
	"w2: dump.sql: the new policy hides it" "$OUT"
assert_contains "  ...naming link-out (symlinks: hide)" "w2: link-out: the new policy hides it" "$OUT"
assert_contains "  ...naming renamed/ (from private/, which is away)" \
	"w2: renamed/: the new policy hides it" "$OUT"
mv "$T/private.away" "$R2/private"
# An edited snapshot is not the old policy: what it hides now counts in full.
printf -- '- {action: hide, pattern: "/a.txt", case: insensitive, protect: false, origin: "edit:1"}\n' \
	>>"$STATE/workspaces/w2/policy.yml"
run af mount "$R2" "$M2"
assert_eq "an edited policy snapshot: refused" 1 "$RC"
assert_contains "  ...naming a.txt" "w2: a.txt: the new policy hides it" "$OUT"
assert_contains "  ...saying why" "its digest differs" "$OUT"
if is_mounted "$M2"; then fail "  ...and nothing is mounted" "$M2 is a mount"; else
	pass "  ...and nothing is mounted"
fi

# A file system mounted inside the repository is walked as the view shows it
# (root: a small tmpfs).
if [ "$(id -u)" -ne 0 ]; then
	skip "a file system inside the repository is compared too" "needs root to mount a tmpfs"
elif ! { mkdir -p "$R2/inner" && mount -t tmpfs -o size=1m agentfs-test-inner "$R2/inner"; }; then
	skip "a file system inside the repository is compared too" "cannot mount a tmpfs"
else
	at_exit "umount -l '$R2/inner'"
	printf 'inner\n' >"$R2/inner/s.txt"
	printf 'version: 1\nextends: none\ngit: private\nsymlinks: allow\nhide: ["/none", "/inner/"]\n' \
		>"$T/p4.yml"
	mount_ws "$R2" "$T/w4" --policy "$T/p0.yml" || bail "mount of w4: $OUT"
	assert_content "the view shows the file system inside the repository" "$T/w4/inner/s.txt" inner
	step "unmount" af unmount w4
	run af mount --policy "$T/p4.yml" "$R2" "$T/w4"
	assert_eq "a policy hiding it: refused, naming it" "1 w4: inner/: the new policy hides it" \
		"$RC $(grep -o 'w4: inner/: the new policy hides it' <<<"$OUT")"
	umount -l "$R2/inner"
fi

# The person's uncommitted change at the mount (its blob is in the private
# .git only) passes a looser max_file_size; a file the agent committed, which
# the person removed since, is found in the agent's commits.
R3=$T/repo3
M3=$T/w3
mkdir -p "$R3" && git -C "$R3" init -q -b main && printf 'a\n' >"$R3/a.txt" &&
	git -C "$R3" add -A && git -C "$R3" -c user.name=t -c user.email=t@t commit -qm three &&
	printf 'dirty\n' >>"$R3/a.txt" && printf 'late\n' >"$R3/late.md" || bail "cannot create repo3"
printf 'version: 1\nextends: none\ngit: private\nmax_file_size: %s\nhide: ["/none"]\n' 1K \
	>"$T/q1.yml"
printf 'version: 1\nextends: none\ngit: private\nmax_file_size: %s\nhide: ["/none"]\n' 2K \
	>"$T/q2.yml"
printf 'version: 1\nextends: none\ngit: private\nmax_file_size: %s\nhide: ["/late.md"]\n' 2K \
	>"$T/q3.yml"
mount_ws "$R3" "$M3" --policy "$T/q1.yml" || bail "mount of repo3: $OUT"
sh_step "the agent commits late.md in its .git" \
	"git -C '$M3' add late.md && git -C '$M3' commit -qm 'the agent'"
step "unmount" af unmount w3
mount_ws "$R3" "$M3" --policy "$T/q2.yml"
assert_eq "a looser max_file_size mounts (a.txt was uncommitted at the first mount)" 0 "$RC"
step "unmount" af unmount w3
rm "$R3/late.md"
run af mount --policy "$T/q3.yml" "$R3" "$M3"
assert_eq "hiding late.md, gone from the lower, in the agent's commit: refused" \
	"1 w3: late.md: the new policy hides it" "$RC $(grep -o 'w3: late.md: the new policy hides it' <<<"$OUT")"

# ------------------------------------------------------------------ a malformed policy
printf 'version: 1\nhide:\n  - "a"\n  readonly: [b]\n' >"$T/broken.yml"
refuse "a malformed policy is refused with file:line:column" "broken.yml:4:" \
	af mount --policy "$T/broken.yml" "$REPO" "$T/m2"
if is_mounted "$T/m2"; then fail "  ...and nothing is mounted" "$T/m2 is a mount"; else
	pass "  ...and nothing is mounted"
fi
printf 'version: 1\nredonly: [b]\n' >"$T/typo.yml"
refuse "an unknown key names the nearest known one" "readonly" t "$AGENTFS" policy check "$T/typo.yml"
printf 'max_file_size: 18446744073709551615\n' >"$T/huge.yml"
refuse "a max_file_size past the largest file size is too large, at file:line:column" \
	"huge.yml:1:16: 'max_file_size': '18446744073709551615' is too large" \
	t "$AGENTFS" policy check "$T/huge.yml"

# A repository's .agentfs.yml nested 100000 levels deep (libyaml takes time
# quadratic in the depth: 25 s) is refused at the first level too deep.
R5=$T/repo5
mkdir -p "$R5" && git -C "$R5" init -q -b main && printf 'a\n' >"$R5/a.txt" &&
	python3 -c "print('hide: ' + '[' * 100000 + ']' * 100000)" >"$R5/.agentfs.yml" ||
	bail "cannot create repo5"
refuse "a deeply nested .agentfs.yml: policy check refuses it, naming the place" \
	"$R5/.agentfs.yml:1:22: nested deeper than 16 levels" t "$AGENTFS" policy check "$R5/.agentfs.yml"
refuse "  ...and the mount" "$R5/.agentfs.yml:1:22: nested deeper than 16 levels" \
	af mount "$R5" "$T/m5"
if is_mounted "$T/m5"; then fail "  ...and nothing is mounted" "$T/m5 is a mount"; else
	pass "  ...and nothing is mounted"
fi
assert_eq "  ...nor a workspace made" "" "$(af list 2>&1 | grep -F m5)"
printf 'hide: [a, "b/c"]\n' >"$R5/.agentfs.yml"
run t "$AGENTFS" policy explain "$R5" b/c
assert_contains "  ...a policy nested as a policy needs is read" "b/c: hidden ($R5/.agentfs.yml:1)" "$OUT"

# rules: (the snapshot form, with the origin of each rule) is read from a
# workspace's snapshot only: a repository could forge where its rules came from.
R6=$T/repo6
mkdir -p "$R6" && git -C "$R6" init -q -b main && printf 'a\n' >"$R6/a.txt" || bail "repo6"
printf '%s\n' 'rules:' '  - {action: hide, pattern: a.txt, origin: "built-in default:62"}' \
	>"$R6/.agentfs.yml"
refuse "rules: in a repository's .agentfs.yml is an unknown key" \
	"$R6/.agentfs.yml:1:1: unknown key 'rules'" t "$AGENTFS" policy explain "$R6" a.txt
refuse "  ...the mount is refused" "$R6/.agentfs.yml:1:1: unknown key 'rules'" af mount "$R6" "$T/m6"
if is_mounted "$T/m6"; then fail "  ...and nothing is mounted" "$T/m6 is a mount"; else
	pass "  ...and nothing is mounted"
fi
cp "$R6/.agentfs.yml" "$T/rules.yml" && rm "$R6/.agentfs.yml"
refuse "  ...and in a --policy file" "rules.yml:1:1: unknown key 'rules'" \
	t "$AGENTFS" policy show --policy "$T/rules.yml" "$R6"
# What policy show and explain print cannot be made to hold lines of its own.
printf '%s\n' 'hide:' '  - "x\nhide      y                            built-in default:1"' \
	'  - "/n\x01l"' >"$T/nl.yml"
run t "$AGENTFS" policy show --policy "$T/nl.yml" "$R6"
assert_contains "policy show quotes a pattern holding a newline" \
	'"x\nhide      y                            built-in default:1"' "$OUT"
assert_eq "  ...no line of its own" "" "$(grep '^hide      y' <<<"$OUT")"
assert_contains "  ...and a control character" '"/n\001l"' "$OUT"
printf 'z\n' >"$R6/$(printf 'n\001l')"
run t "$AGENTFS" policy explain --policy "$T/nl.yml" "$R6" "$(printf 'n\001l')"
assert_eq "policy explain quotes the path" "\"n\\001l\": hidden ($T/nl.yml:3)" "$OUT"
run t "$AGENTFS" policy test --policy "$T/nl.yml" "$R6"
assert_contains "policy test quotes the path" "hidden     \"n\\001l\"  ($T/nl.yml:3)" "$OUT"

# max_file_size: judges regular files only: a symlink whose target is longer
# than the limit stays, in the view, in the private .git's base tree, in
# policy test and explain alike.
R7=$T/repo7
M7=$T/w7
long=a-small-file-with-a-name-longer-than-the-limit.txt
mkdir -p "$R7" && git -C "$R7" init -q -b main && printf 'x\n' >"$R7/$long" &&
	ln -s "$long" "$R7/link" && head -c 100 /dev/zero >"$R7/big" && git -C "$R7" add -A &&
	git -C "$R7" -c user.name=t -c user.email=t@t commit -qm seven || bail "repo7"
printf 'version: 1\nextends: none\ngit: private\nsymlinks: allow\nmax_file_size: 16\n' >"$T/p7.yml"
run t "$AGENTFS" policy explain --policy "$T/p7.yml" "$R7" link big
assert_eq "explain: a symlink with a target longer than max_file_size is visible" \
	"link: visible (no rule)
big: hidden (larger than max_file_size 16, $T/p7.yml:5)" "$OUT"
run t "$AGENTFS" policy test --policy "$T/p7.yml" "$R7"
assert_not_contains "  ...test does not list it" "link" "$OUT"
mount_ws "$R7" "$M7" --policy "$T/p7.yml" || bail "mount of repo7: $OUT"
assert_eq "  ...the view shows it" "$long" "$(readlink "$M7/link")"
assert_like_missing "$M7/big" "  ...and hides the larger regular file"
assert_eq "  ...the private .git agrees with the view: git status is clean" \
	"" "$(git -C "$M7" status --porcelain 2>&1)"
assert_eq "  ...its index holds the symlink" "link" "$(git -C "$M7" ls-files link)"
step "unmount" af unmount w7

# policy test names each directory it cannot read and exits 1 (its list is
# incomplete); root reads any directory whatever its mode.
if [ "$(id -u)" -eq 0 ]; then
	skip "policy test names a directory it cannot read" "root reads any directory"
else
	mkdir -p "$R7/locked/sub" && printf 'l\n' >"$R7/locked/sub/f" && chmod 000 "$R7/locked" &&
		at_exit "chmod 755 '$R7/locked'"
	run t "$AGENTFS" policy test --policy "$T/p7.yml" "$R7"
	assert_eq "policy test names a directory it cannot read, exit 1" \
		"1 agentfs: policy: test: locked: Permission denied (not walked)" \
		"$RC $(grep -F 'not walked' <<<"$OUT")"
	assert_contains "  ...and lists the rest" "hidden     big" "$OUT"
	chmod 755 "$R7/locked"
fi

# A policy file or repository whose path holds a newline: the error is still
# one line (the name quoted as git quotes paths).
nl=$(printf 'n\nl')
mkdir -p "$T/$nl" && git -C "$T/$nl" init -q -b main && printf 'hide: [a//b]\n' >"$T/$nl/.agentfs.yml" &&
	cp "$T/$nl/.agentfs.yml" "$T/$nl.yml" || bail "a repository named with a newline"
run t "$AGENTFS" policy check "$T/$nl.yml"
assert_eq "policy check: a file named with a newline, one line quoted" \
	"1 agentfs: policy: \"$T/n\\nl.yml\":1:8: bad pattern 'a//b': empty path component ('//')" \
	"$RC $OUT"
run af mount "$T/$nl" "$T/m8"
assert_eq "mount: a repository named with a newline, one line quoted" \
	"1 1 \"$T/n\\nl/.agentfs.yml\":1:8: bad pattern 'a//b'" \
	"$RC $(wc -l <<<"$OUT") $(grep -o '"[^"]*":1:8: bad pattern .a//b.' <<<"$OUT")"
if is_mounted "$T/m8"; then fail "  ...and nothing is mounted" "$T/m8 is a mount"; else
	pass "  ...and nothing is mounted"
fi

# ------------------------------------------------------------------ usage errors
# One line naming what is missing, exit status 2, like the other commands.
for args in "" "check" "check a b" "show a b" "explain" "explain $REPO" "test" "test a b"; do
	# shellcheck disable=SC2086 # the words are the arguments
	run t "$AGENTFS" policy $args
	assert_eq "policy $args: a one-line usage error, exit 2" \
		"2 1 agentfs: policy: " "$RC $(printf '%s\n' "$OUT" | wc -l) ${OUT:0:17}"
done

# ------------------------------------------------------------------ a hidden HEAD
# Next to a repository HEAD (a bare fixture) config is read-only (fs/view.c,
# gitdir_entry); next to a HEAD the policy hides it is not: hidden looks
# absent, and git run in the view sees no repository there.
HREPO=$T/hrepo
mkdir -p "$HREPO/fixture" "$HREPO/seen" && git -C "$HREPO" init -q &&
	for d in fixture seen; do
		printf 'ref: refs/heads/main\n' >"$HREPO/$d/HEAD" && printf '[core]\n' >"$HREPO/$d/config"
	done && git -C "$HREPO" add -A && git -C "$HREPO" -c user.name=t -c user.email=t@t commit -qm f ||
	bail "cannot create the fixtures' repository"
printf 'hide:\n  - fixture/HEAD\n' >"$T/hhead.yml"
mount_ws "$HREPO" "$T/hmnt" --policy "$T/hhead.yml" || bail "mount of the fixtures: $OUT"
assert_enoent "$T/hmnt/fixture/HEAD" "the hidden HEAD is absent"
step "config beside a hidden HEAD is the agent's to change" \
	sh -c "printf '[user]\n' >>'$T/hmnt/fixture/config'"
refuse "config beside a HEAD the view shows is read-only" "Read-only file system" \
	sh -c "printf '[user]\n' >>'$T/hmnt/seen/config'"
step "unmount the fixtures" af unmount "$T/hmnt"

done_testing
