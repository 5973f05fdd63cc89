#!/usr/bin/env bash
# hostile.sh - an agent inside the mount trying to reach what the policy hides
# or what lies outside the repository: ".." at the root, symlinks it makes
# (relative, absolute, chains, loops) and symlinks already in the lower, hard
# links and renames from and onto hidden names, renames of directories holding
# hidden entries, rmdir of a directory whose entries are all hidden, link
# counts and directory sizes, odd names (UTF-8 slash look-alikes, binary,
# 255 bytes, trees past PATH_MAX), /proc/self/fd re-opens, O_PATH + openat,
# other letter cases, and a directory swapped for a symlink in the lower while
# the agent reads through it.  Every touch of a hidden name must look like a
# missing entry (ENOENT), be journaled, and never yield a secret's bytes; the
# lower is never written.
#
#   bash hostile.sh [AGENTFS [FSOPS]]
. "$(dirname "$0")/lib.sh" "$@"

REPO=$T/repo
MNT=$T/mnt
make_test_repo "$REPO" || bail "cannot create the test repository"
(
	cd "$REPO" || exit 1
	mkdir -p .secretdir person/swap.d person/deep &&
		printf 'S=%s-secretdir\n' "$SECRET_MARK" >.secretdir/file &&
		printf 'visible through swap\n' >person/swap.d/f && ln -s swap.d person/swap &&
		printf 'shared\n' >docs/shared.txt && ln docs/shared.txt .hidden-hardlink &&
		printf 'P=%s-deep\n' "$SECRET_MARK" >person/deep/.env &&
		printf 'n255\n' >"$(printf 'n%.0s' $(seq 255))"
) || bail "cannot add the hostile fixtures"
mkdir -p "$T/outside" && printf 'outside %s-swapped\n' "$SECRET_MARK" >"$T/outside/f" &&
	printf 'outside %s-idrsa\n' "$SECRET_MARK" >"$T/outside/id_rsa"
# person/ is where the person works while the agent does (the lower is live);
# everything else stays as it is.
lower_snapshot() {
	snapshot "$REPO" "$1.all"
	grep -v -e '^\./person' -e '^[0-9a-f]*  \./person' "$1.all" >"$1"
}
lower_snapshot "$T/lower.before"

mount_ws "$REPO" "$MNT" --journal-sync=always
if [ "$RC" -eq 0 ]; then pass "mount"; else
	fail "mount" "exit $RC" "$OUT"
	bail "mount failed"
fi
J=$(dirname "$(grep -l "$MNT" "$STATE"/workspaces/*/daemon.pid | head -n 1)")/journal.jsonl

# no_secret DESC CMD...: the command's output never holds a secret's bytes.
no_secret() {
	local desc=$1
	shift
	run "$@"
	if [[ $OUT != *"$SECRET_MARK"* ]]; then pass "$desc"; else
		fail "$desc" "command: $*" "output holds a secret: $(grep -F "$SECRET_MARK" <<<"$OUT" | head -n 3)"
	fi
}

# conceal_journaled PATH: the journal has a conceal record for PATH.  Read
# through agentfs log, which has the daemon write out what it queued first
# (the records of lookups wait for it to be idle): the file alone may not
# hold the last ones yet.
conceal_journaled() {
	local recs
	recs=$(af log --json --op conceal "$MNT" 2>&1)
	if grep -F "\"path\":\"$1\"" <<<"$recs" >/dev/null; then
		pass "  ...the attempt on $1 is journaled as conceal"
	else
		fail "  ...the attempt on $1 is journaled as conceal" "$(tail -n 5 <<<"$recs")"
	fi
}

# ------------------------------------------------------------------ .. at the root
assert_eq ".. of the mount root is the mountpoint's parent, not the repository's" \
	"$(stat -c %d:%i "$T")" "$(t stat -c %d:%i "$MNT/..")"
assert_eq "src/../.. is the mountpoint's parent too" \
	"$(stat -c %d:%i "$T")" "$(t stat -c %d:%i "$MNT/src/../..")"
no_secret "cat of ../outside-secret from the root finds the host file, never through the view" \
	bash -c "cat '$MNT/../repo/../outside-secret' >/dev/null; ls -a '$MNT' '$MNT/..'"
assert_not_listed "$MNT" outside-secret

# ------------------------------------------------------------------ symlinks the agent makes
step "symlink to a hidden file (relative)" t ln -s .env "$MNT/to-env"
step "symlink to a hidden file in a subdirectory" t ln -s ../config/id_rsa "$MNT/src/to-key"
step "symlink to the hidden file through the mount's absolute path" t ln -s "$MNT/.env" "$MNT/abs-env"
step "a chain of symlinks ending at a hidden file" bash -ec \
	"ln -s to-env '$MNT/chain1'; ln -s chain1 '$MNT/chain2'; ln -s ./src/../chain2 '$MNT/chain3'"
step "a symlink to a hidden directory" t ln -s .secretdir "$MNT/to-secretdir"
step "a symlink loop" bash -ec "ln -s loop-b '$MNT/loop-a'; ln -s loop-a '$MNT/loop-b'"
for l in to-env src/to-key abs-env chain1 chain2 chain3 to-secretdir/file; do
	refuse "cat $l fails with ENOENT" "No such file or directory" cat "$MNT/$l"
done
refuse "cat through a loop fails with ELOOP" "Too many levels of symbolic links" cat "$MNT/loop-a"
no_secret "nothing read through the agent's symlinks holds a secret" \
	bash -c "cd '$MNT' && cat to-env src/to-key abs-env chain3 to-secretdir/file; ls -la to-secretdir/ chain3"
assert_eq "readlink of the agent's symlink is what it wrote" .env "$(t readlink "$MNT/to-env")"
step "writing through a symlink chain to a hidden name creates the agent's own file" \
	bash -ec "printf 'agent-made\n' >'$MNT/chain3'"
assert_eq "  ...which holds the agent's bytes, not the secret" agent-made "$(t cat "$MNT/.env" 2>&1)"
step "  ...and can be removed" t rm "$MNT/.env"
assert_enoent "$MNT/.env" "  ...after which .env is absent again (the secret does not resurface)"

# ------------------------------------------------------------------ symlinks in the lower
for l in link-to-env sub/envlink escape-link; do
	assert_like_missing "$MNT/$l" "the lower symlink $l (to a hidden or outside path) is hidden"
done
assert_not_listed "$MNT" escape-link
assert_eq "a lower symlink inside the repository shows" ../README.md "$(t readlink "$MNT/docs/readme-link")"

# ------------------------------------------------------------------ hard links and renames
refuse "hard link from a hidden name: ENOENT" "No such file or directory" ln "$MNT/.env" "$MNT/stolen"
refuse "hard link from a hidden dotdir's file: ENOENT" "No such file or directory" \
	ln "$MNT/.secretdir/file" "$MNT/stolen"
refuse "rename from a hidden name: ENOENT" "No such file or directory" mv "$MNT/keys/ID_RSA" "$MNT/stolen"
refuse "rename of a hidden directory: ENOENT" "No such file or directory" mv "$MNT/.secretdir" "$MNT/sd"
assert_enoent "$MNT/stolen" "  ...nothing appeared at the destination"
conceal_journaled ".secretdir"
conceal_journaled "keys/ID_RSA"
step "rename onto a hidden name (a new entry of the agent's)" bash -ec \
	"printf 'agent\n' >'$MNT/mine.txt' && mv '$MNT/mine.txt' '$MNT/config/id_rsa'"
assert_content "  ...reads the agent's bytes" "$MNT/config/id_rsa" agent
step "hard link onto a hidden name" t ln "$MNT/README.md" "$MNT/keys/ID_RSA"
assert_file_eq "  ...is the linked file" "$MNT/README.md" "$MNT/keys/ID_RSA"
step "remove both agent entries" t rm "$MNT/config/id_rsa" "$MNT/keys/ID_RSA"
assert_like_missing "$MNT/config/id_rsa" "  ...and the hidden lower file is still unreadable"
assert_like_missing "$MNT/keys/ID_RSA" "  ...as is keys/ID_RSA"

# ------------------------------------------------------------------ directories holding hidden entries
step "rename a directory holding a hidden file (config -> cfg2)" t mv "$MNT/config" "$MNT/cfg2"
assert_like_missing "$MNT/cfg2/id_rsa" "  ...the hidden file stays hidden at its new path"
assert_not_listed "$MNT/cfg2" id_rsa
assert_content "  ...and the visible file moved" "$MNT/cfg2/settings.yml" "$(cat "$REPO/config/settings.yml")"
step "rename it once more, into another directory" t mv "$MNT/cfg2" "$MNT/docs/cfg3"
assert_like_missing "$MNT/docs/cfg3/id_rsa" "  ...still hidden two renames later"
step "a directory whose only entry is hidden can be removed" t rmdir "$MNT/onlysecret"
assert_enoent "$MNT/onlysecret" "  ...it is gone"
step "  ...a new one at the same name" t mkdir "$MNT/onlysecret"
assert_eq "  ...is empty" "" "$(t ls -A "$MNT/onlysecret" 2>&1)"
assert_like_missing "$MNT/onlysecret/.env" "  ...and does not reveal the hidden lower file"
step "mkdir at a hidden directory's name" t mkdir "$MNT/.secretdir"
assert_eq "  ...gives an empty directory" "" "$(t ls -A "$MNT/.secretdir" 2>&1)"
assert_like_missing "$MNT/.secretdir/file" "  ...where the lower's file stays hidden"
run t rmdir "$MNT/.secretdir"

# ------------------------------------------------------------------ counts and sizes
assert_eq "a directory holding hidden entries reports the constant size and link count" \
	"4096 1" "$(t stat -c '%s %h' "$MNT/keys")"
assert_eq "  ...as does the root (hidden .env, .git ...)" "4096 1" "$(t stat -c '%s %h' "$MNT")"
assert_eq "a lower file hard-linked to a hidden name reports one link" 1 \
	"$(t stat -c %h "$MNT/docs/shared.txt")"
step "  ...and after copy-up (chmod)" t chmod 600 "$MNT/docs/shared.txt"
assert_eq "  ...still one link" 1 "$(t stat -c %h "$MNT/docs/shared.txt")"
assert_eq "ls -a of a directory whose secrets are hidden lists only . and .." ". .." \
	"$(t ls -a "$MNT/person/deep" | tr '\n' ' ' | sed 's/ $//')"

# ------------------------------------------------------------------ odd names
if command -v python3 >/dev/null; then
	run t python3 - "$MNT" <<'PY'
import os, sys
m = sys.argv[1]
bad = []
# Slash look-alikes (U+2215, U+2044, U+FF0F, U+29F8) and dot look-alikes:
# names like any other, never a path to ../.env.
for nm in ["..\u2215.env", "src\u2044..\u2044.env", "\uff0f.env", "\u29f8etc\u29f8passwd",
           "\u2024\u2024", ".\u0435nv"]:
    p = os.path.join(m, nm)
    try:
        with open(p, "x") as f:
            f.write("agent " + nm)
        with open(p) as f:
            if f.read() != "agent " + nm:
                bad.append("content of %r" % nm)
    except OSError as e:
        bad.append("create %r: %s" % (nm, e))
    if nm not in os.listdir(m):
        bad.append("%r not listed" % nm)
# Binary, NUL-free names (not UTF-8), control characters, newline.
for nm in [b"\xff\xfe", b"\x01\x02\x7f", b"a\nb", b"\x80.env", b"\xe2\x88"]:
    p = os.path.join(os.fsencode(m), nm)
    try:
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.stat(p)
    except OSError as e:
        bad.append("create %r: %s" % (nm, e))
    if nm not in os.listdir(os.fsencode(m)):
        bad.append("%r not listed" % nm)
# 255 bytes is the limit, in bytes (multi-byte UTF-8 counts per byte).
for nm, want in [("l" * 255, None), ("l" * 256, "ENAMETOOLONG"),
                 ("\u00e9" * 127 + "x", None), ("\u00e9" * 128, "ENAMETOOLONG")]:
    try:
        os.close(os.open(os.path.join(m, nm), os.O_CREAT | os.O_WRONLY, 0o644))
        got = None
    except OSError as e:
        got = os.strerror(e.errno) and __import__("errno").errorcode[e.errno]
    if got != want:
        bad.append("create of %d-byte name: %s, expected %s" % (len(nm.encode()), got, want))
print("\n".join(bad) or "OK")
PY
	assert_eq "UTF-8 slash look-alikes, binary and 255-byte names are plain names" OK "$OUT"
	no_secret "  ...and none of them reads a secret" bash -c "cat '$MNT'/*env* 2>/dev/null"
else
	skip "odd names" "python3 is not installed"
fi
N255=$(printf 'n%.0s' $(seq 255))
step "a lower file with a 255-byte name can be read" t cat "$MNT/$N255"
step "  ...and removed (the whiteout of a 255-byte name must still fit)" t rm "$MNT/$N255"
assert_enoent "$MNT/$N255" "  ...and is gone"

# A tree deeper than PATH_MAX, built with relative paths: a clean error when
# too deep, never a crash; and a secret at the bottom of a deep lower tree
# stays hidden.
if command -v python3 >/dev/null; then
	run t python3 - "$MNT" <<'PY'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
depth, err = 0, None
for depth in range(1, 40):  # 40 * 200 bytes: twice PATH_MAX
    try:
        os.mkdir("d" * 199, dir_fd=fd)
        nfd = os.open("d" * 199, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    except OSError as e:
        err = errno.errorcode[e.errno]
        break
    os.close(fd)
    fd = nfd
print("depth", depth, err)
PY
	if [[ $OUT == "depth 39 None" || $OUT == *ENAMETOOLONG* ]]; then
		pass "a tree past PATH_MAX: created, or refused with ENAMETOOLONG ($OUT)"
	else
		fail "a tree past PATH_MAX: created, or refused with ENAMETOOLONG" "$OUT"
	fi
	step "  ...and the daemon still serves" t ls "$MNT/src"
fi
(
	cd "$REPO/person/deep" || exit 1
	for _ in $(seq 22); do mkdir "$(printf 'e%.0s' $(seq 199))" && cd "$(printf 'e%.0s' $(seq 199))" || exit 1; done
	printf 'P=%s-deepest\n' "$SECRET_MARK" >.env
) || bail "cannot build the deep lower tree"
if command -v python3 >/dev/null; then
	run t python3 - "$MNT/person/deep" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
comp = "e" * 199
try:
    for _ in range(22):
        nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    try:
        print(os.read(os.open(".env", os.O_RDONLY, dir_fd=fd), 100))
    except OSError as e:
        print("open .env:", os.strerror(e.errno))
except OSError as e:
    print("walk:", os.strerror(e.errno))
PY
	if [[ $OUT != *"$SECRET_MARK"* && ($OUT == *"No such file"* || $OUT == *"too long"*) ]]; then
		pass "a secret below a lower tree deeper than PATH_MAX stays hidden ($OUT)"
	else
		fail "a secret below a lower tree deeper than PATH_MAX stays hidden" "$OUT"
	fi
fi
rm -rf "$REPO/person/deep/$(printf 'e%.0s' $(seq 199))"

# ------------------------------------------------------------------ fds: /proc/self/fd, O_PATH
if command -v python3 >/dev/null; then
	run t python3 - "$MNT" <<'PY'
import errno, os, sys
m = sys.argv[1]
out = []
def tryit(label, fn):
    try:
        r = fn()
        out.append("%s: OK %s" % (label, r if r is not None else ""))
    except OSError as e:
        out.append("%s: %s" % (label, errno.errorcode[e.errno]))
d = os.open(os.path.join(m, "keys"), os.O_PATH | os.O_DIRECTORY)
tryit("openat(O_PATH keys, ID_RSA)", lambda: os.open("ID_RSA", os.O_RDONLY, dir_fd=d))
tryit("fstatat(O_PATH keys, ID_RSA)", lambda: os.stat("ID_RSA", dir_fd=d, follow_symlinks=False) and None)
tryit("openat(O_PATH keys, ../.env)", lambda: os.open("../.env", os.O_RDONLY, dir_fd=d))
tryit("open /proc/self/fd/N/ID_RSA", lambda: os.open("/proc/self/fd/%d/ID_RSA" % d, os.O_RDONLY))
tryit("open /proc/self/fd/N/../.env", lambda: os.open("/proc/self/fd/%d/../.env" % d, os.O_RDONLY))
r = os.open(os.path.join(m, "README.md"), os.O_RDONLY)
# Re-opening a read-only fd for writing through its magic link: a copy-up,
# the lower stays as it is.
def reopen():
    w = os.open("/proc/self/fd/%d" % r, os.O_WRONLY | os.O_APPEND)
    os.write(w, b"appended via /proc/self/fd\n")
    os.close(w)
tryit("re-open /proc/self/fd/N O_WRONLY and append", reopen)
p = os.open(os.path.join(m, "src/main.c"), os.O_PATH)
tryit("open /proc/self/fd/(O_PATH) O_RDWR", lambda: os.close(os.open("/proc/self/fd/%d" % p, os.O_RDWR)))
print("\n".join(out))
PY
	assert_eq "O_PATH + openat and /proc/self/fd never reach a hidden name" \
		"openat(O_PATH keys, ID_RSA): ENOENT
fstatat(O_PATH keys, ID_RSA): ENOENT
openat(O_PATH keys, ../.env): ENOENT
open /proc/self/fd/N/ID_RSA: ENOENT
open /proc/self/fd/N/../.env: ENOENT
re-open /proc/self/fd/N O_WRONLY and append: OK 
open /proc/self/fd/(O_PATH) O_RDWR: OK " "$OUT"
	assert_contains "  ...the /proc/self/fd write landed in the view" "appended via /proc/self/fd" \
		"$(t cat "$MNT/README.md")"
fi

# ------------------------------------------------------------------ letter cases
for p in deploy/.ENV deploy/.Env keys/ID_RSA keys/id_rsa KEYS/ID_RSA .ENV .Env sub/.ENV.LOCAL \
	certs/SERVER.PEM certs/server.pem; do
	assert_like_missing "$MNT/$p" "case variant $p looks missing"
done
conceal_journaled deploy/.ENV

# ------------------------------------------------------------------ a directory swapped for a symlink
# The person swaps swap (a symlink to swap.d) between swap.d, a symlink to a
# directory outside the repository, and a symlink to keys/ while the agent
# reads swap/f and swap/ID_RSA: the daemon must never follow a lower symlink
# out of the repository or to a hidden name, whatever it looked up before.
(
	cd "$REPO/person" || exit 1
	end=$((SECONDS + 4))
	while [ $SECONDS -lt $end ]; do
		ln -sfn "$T/outside" swap.tmp && mv -T swap.tmp swap
		ln -sfn ../keys swap.tmp && mv -T swap.tmp swap
		ln -sfn swap.d swap.tmp && mv -T swap.tmp swap
		rm -f swap && mkdir swap && cp swap.d/f swap/ && rm -rf swap
		ln -sfn swap.d swap
	done
) &
swapper=$!
leaks=0
end=$((SECONDS + 4))
while [ $SECONDS -lt $end ]; do
	out=$(t cat "$MNT/person/swap/f" "$MNT/person/swap/ID_RSA" "$MNT/person/swap/../keys/ID_RSA" 2>/dev/null)
	[[ $out == *"$SECRET_MARK"* ]] && leaks=$((leaks + 1))
done
wait $swapper
assert_eq "swapping a lower directory for symlinks never leaks a secret" 0 "$leaks"
step "  ...and the daemon still serves" t cat "$MNT/README.md"

# ------------------------------------------------------------------ journal
assert_contains "the journal records conceal" '"op":"conceal"' "$(grep -F '"op":"conceal"' "$J" | head -n 1)"
conceal_journaled .env
# Every attempt, not only the first: the kernel caches the negative answer
# (entry_timeout), so later attempts on the same name never reach the daemon.
n0=$(af log --json --op conceal --path certs/server.pem "$MNT" | grep -cF '"op":"conceal"')
for _ in 1 2 3; do t cat "$MNT/certs/server.pem" >/dev/null 2>&1; done
n1=$(af log --json --op conceal --path certs/server.pem "$MNT" | grep -cF '"op":"conceal"')
_N=$((_N + 1))
if [ $((n1 - n0)) -ge 3 ]; then
	printf 'ok %d - three attempts on a hidden name are journaled three times\n' "$_N"
else
	# TAP TODO: a known gap (negative entries are cached), reported, not hidden
	printf 'not ok %d - three attempts on a hidden name are journaled three times # TODO negative entries are cached by the kernel; got %d record(s)\n' "$_N" $((n1 - n0))
fi
no_secret "the journal never holds a secret's bytes" cat "$J"
step "agentfs export works after all this" af export "$MNT"
assert_not_contains "  ...and the patch holds no secret" "$SECRET_MARK" "$OUT"
step "unmount" t fusermount3 -u "$MNT"
lower_snapshot "$T/lower.after"
if cmp -s "$T/lower.before" "$T/lower.after"; then pass "the lower was never written"; else
	fail "the lower was never written" "$(diff "$T/lower.before" "$T/lower.after" | head -n 20)"
fi
done_testing
