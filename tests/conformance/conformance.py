#!/usr/bin/env python3
"""conformance.py - POSIX conformance of the agentfs merged view.

Every case runs the same system calls twice: on a plain directory (the
reference: same filesystem, same user, same umask) and through an agentfs
mount, and the two runs must observe the same results (return values, errno
names, types, modes, sizes, link counts, contents, listings).  Cases also state
what POSIX requires outright (expect), so a reference that misbehaves is caught
too.  Where the layer matters a case runs three ways:

  L  its entries exist only in the lower (the repository, before the mount)
  U  its entries exist only in the upper (created through the mount)
  B  its entries exist in both (lower entries copied up through the mount)

  python3 conformance.py prepare REPO           lower fixtures, before the mount
  python3 conformance.py run MNT REF [FILTER]   the cases; REF is a plain copy of
                                                REPO made before the mount
  python3 conformance.py list                   case names

`run` prints "ok - NAME" or "not ok - NAME" per case (and variant) with "# "
diagnostics, then "# cases: N" and exits 1 if any case failed.

Known, intended differences of the view (DESIGN.md, fs/view.c) are not
compared: directories report st_nlink 1 and st_size 4096; lower files not yet
copied up report st_nlink 1; only user.* xattrs exist; names beginning with
".wh." are reserved (EINVAL).
"""
import ctypes
import errno
import hashlib
import os
import stat
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(timespec), ctypes.c_int]


def utimensat(path, atime, mtime, nofollow=False):
    """atime/mtime: (sec, nsec), or UTIME_NOW / UTIME_OMIT."""
    ts = (timespec * 2)()
    for i, t in enumerate((atime, mtime)):
        if isinstance(t, tuple):
            ts[i].tv_sec, ts[i].tv_nsec = t
        else:
            ts[i].tv_sec, ts[i].tv_nsec = 0, t
    if libc.utimensat(AT_FDCWD, os.fsencode(path), ts, 0x100 if nofollow else 0) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# ---------------------------------------------------------------- fixtures
# A fixture maps a path (relative to the case directory) to an entry:
#   ("f", bytes, mode)  ("d", mode)  ("l", target)


def F(data=b"", mode=0o644):
    return ("f", data if isinstance(data, bytes) else data.encode(), mode)


def D(mode=0o755):
    return ("d", mode)


def L(target):
    return ("l", target)


def make_entry(path, spec):
    kind = spec[0]
    if kind == "f":
        with open(path, "wb") as f:
            f.write(spec[1])
        os.chmod(path, spec[2])
    elif kind == "d":
        os.mkdir(path)
        os.chmod(path, spec[1])
    elif kind == "l":
        os.symlink(spec[1], path)


def make_fixture(root, fix):
    os.makedirs(root, exist_ok=True)
    for rel in sorted(fix):
        make_entry(os.path.join(root, rel), fix[rel])


OLD = 981173106  # 2001-02-03, so copy-ups that lose times show


def age_fixture(root, fix):
    for rel in sorted(fix, reverse=True):
        os.utime(os.path.join(root, rel), (OLD, OLD), follow_symlinks=False)


def copy_up(root, fix):
    """Make each lower entry of @fix exist in the upper too: a chown to the
    owner it already has is a setattr, which copies up (and changes nothing
    a stat compares but ctime)."""
    for rel in sorted(fix):
        p = os.path.join(root, rel)
        st = os.lstat(p)
        os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)


# ---------------------------------------------------------------- observing


def ename(e):
    return errno.errorcode.get(e, str(e))


class Ctx:
    """One run of a case below one root; records what it observes."""

    def __init__(self, root, variant, on_mount):
        self.root = root
        self.variant = variant
        self.on_mount = on_mount
        self.obs = []
        self.failures = []
        self.fds = []

    def p(self, rel=""):
        return os.path.join(self.root, rel) if rel else self.root

    def rec(self, label, value):
        self.obs.append((label, value))
        return value

    def call(self, label, fn, *args, **kw):
        """Record "OK" (or the value, when @label ends in '=') or the errno name."""
        try:
            v = fn(*args, **kw)
        except OSError as e:
            self.rec(label, ename(e.errno))
            return None
        self.rec(label, v if label.endswith("=") else "OK")
        return v if v is not None else True

    def open(self, label, rel, flags, mode=0o666):
        fd = self.call(label, os.open, self.p(rel), flags, mode)
        if fd is not None:
            self.fds.append(fd)
        return fd

    def close_all(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def expect(self, label, got, want):
        self.rec(label, got)
        if got != want:
            self.failures.append("%s: expected %r, got %r" % (label, want, got))

    def st(self, rel, follow=False, label=None):
        """Type, permission bits, owner, size and link count that the view must
        get right (directories: type, mode and owner only)."""
        label = label or ("stat " + rel)
        try:
            s = os.stat(self.p(rel), follow_symlinks=follow)
        except OSError as e:
            return self.rec(label, ename(e.errno))
        t = stat.S_IFMT(s.st_mode)
        v = (stat.filemode(s.st_mode), s.st_uid, s.st_gid)
        if not stat.S_ISDIR(t):
            v += (s.st_size, s.st_nlink)
        return self.rec(label, v)

    def raw(self, rel, follow=False):
        return os.stat(self.p(rel), follow_symlinks=follow)

    def read(self, rel, label=None):
        label = label or ("read " + rel)
        try:
            with open(self.p(rel), "rb") as f:
                return self.rec(label, f.read())
        except OSError as e:
            return self.rec(label, ename(e.errno))

    def ls(self, rel="", label=None):
        label = label or ("ls " + (rel or "."))
        try:
            names = sorted(os.listdir(self.p(rel)))
        except OSError as e:
            return self.rec(label, ename(e.errno))
        return self.rec(label, names)


CASES = []


class Case:
    def __init__(self, name, fn, fix, variants):
        self.name, self.fn, self.fix, self.variants = name, fn, fix, variants


def case(name, fix=None, variants="LUB"):
    def deco(fn):
        CASES.append(Case(name, fn, fix or {}, variants if fix else "U"))
        return fn
    return deco


# ---------------------------------------------------------------- open(2)
FILE = {"f": F("hello\n"), "d": D(), "d/in": F("inside\n"), "l": L("f"), "dangling": L("nowhere")}


@case("open-read", FILE)
def _(c):
    c.read("f")
    c.read("l", "read through symlink l")
    c.read("dangling", "read through dangling symlink")
    c.read("d/in")
    c.open("open d O_RDONLY|O_DIRECTORY", "d", os.O_RDONLY | os.O_DIRECTORY)
    c.open("open f O_DIRECTORY", "f", os.O_RDONLY | os.O_DIRECTORY)
    c.open("open d O_WRONLY", "d", os.O_WRONLY)
    c.open("open d O_RDWR", "d", os.O_RDWR)
    c.open("open l O_NOFOLLOW", "l", os.O_RDONLY | os.O_NOFOLLOW)
    c.open("open f/ (trailing slash)", "f/", os.O_RDONLY)
    c.open("open f/x (file as directory)", "f/x", os.O_RDONLY)
    c.open("open missing", "missing", os.O_RDONLY)
    c.open("open missing/x", "missing/x", os.O_RDONLY)
    c.open("open O_PATH|O_NOFOLLOW of l", "l", os.O_PATH | os.O_NOFOLLOW)


@case("open-trunc", {"f": F("0123456789"), "g": F("abc")})
def _(c):
    fd = c.open("open O_WRONLY|O_TRUNC", "f", os.O_WRONLY | os.O_TRUNC)
    c.st("f")
    if fd is not None:
        c.call("write", os.write, fd, b"xy")
    c.close_all()
    c.read("f")
    fd = c.open("open O_RDONLY|O_TRUNC (Linux truncates)", "g", os.O_RDONLY | os.O_TRUNC)
    c.close_all()
    c.st("g")


@case("open-append", {"f": F("start\n")})
def _(c):
    fd = c.open("open O_WRONLY|O_APPEND", "f", os.O_WRONLY | os.O_APPEND)
    if fd is not None:
        c.call("lseek 0", os.lseek, fd, 0, os.SEEK_SET)
        c.call("write= ", os.write, fd, b"one\n")
        c.call("pwrite at 0 (appends on Linux)=", os.pwrite, fd, b"two\n", 0)
        c.call("fstat size=", lambda: os.fstat(fd).st_size)
    c.close_all()
    c.read("f")
    fd = c.open("open O_RDWR|O_APPEND", "f", os.O_RDWR | os.O_APPEND)
    if fd is not None:
        c.call("read at 0=", os.pread, fd, 5, 0)
        c.call("write=", os.write, fd, b"three\n")
    c.close_all()
    c.read("f")


@case("open-creat", {"f": F("keep me\n")})
def _(c):
    c.open("O_CREAT|O_EXCL on existing: EEXIST", "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    c.open("O_CREAT on existing keeps content", "f", os.O_WRONLY | os.O_CREAT)
    c.close_all()
    c.read("f")
    c.open("O_CREAT|O_EXCL new", "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    c.close_all()
    c.st("new")
    c.open("O_CREAT|O_EXCL new again: EEXIST", "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    c.open("O_CREAT in a missing directory: ENOENT", "nodir/x", os.O_WRONLY | os.O_CREAT)
    c.open("O_CREAT|O_DIRECTORY: EINVAL", "cd", os.O_RDONLY | os.O_CREAT | os.O_DIRECTORY)
    c.ls()


@case("create-modes-umask")
def _(c):
    old = os.umask(0o027)
    try:
        c.open("create 0666 under umask 027", "a", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        c.close_all()
        c.expect("mode of a", oct(stat.S_IMODE(c.raw("a").st_mode)), oct(0o640))
        c.call("mkdir 0777 under umask 027", os.mkdir, c.p("d"), 0o777)
        c.expect("mode of d", oct(stat.S_IMODE(c.raw("d").st_mode)), oct(0o750))
        c.call("mkfifo 0666 under umask 027", os.mkfifo, c.p("p"), 0o666)
        c.expect("mode of p", oct(stat.S_IMODE(c.raw("p").st_mode)), oct(0o640))
        os.umask(0)
        c.open("create 0666 under umask 0", "a0", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        c.close_all()
        c.expect("mode of a0", oct(stat.S_IMODE(c.raw("a0").st_mode)), oct(0o666))
        c.call("mkdir 0777 under umask 0", os.mkdir, c.p("d0"), 0o777)
        c.expect("mode of d0", oct(stat.S_IMODE(c.raw("d0").st_mode)), oct(0o777))
        c.call("mkfifo 0666 under umask 0", os.mkfifo, c.p("p0"), 0o666)
        c.expect("mode of p0", oct(stat.S_IMODE(c.raw("p0").st_mode)), oct(0o666))
        c.call("symlink under umask 0", os.symlink, "a0", c.p("l0"))
        c.open("create 04755 under umask 0", "s", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o4755)
        c.close_all()
        c.st("s")
        c.call("mkdir 01777 under umask 0", os.mkdir, c.p("sticky"), 0o1777)
        c.st("sticky")
    finally:
        os.umask(old)
    c.st("a")
    c.st("d")
    c.st("p")


@case("create-reserved-and-long-names")
def _(c):
    c.open("255-byte name", "n" * 255, os.O_WRONLY | os.O_CREAT, 0o644)
    c.close_all()
    c.st("n" * 255, label="stat 255-byte name")
    c.open("256-byte name: ENAMETOOLONG", "n" * 256, os.O_WRONLY | os.O_CREAT, 0o644)
    c.call("mkdir 256-byte name", os.mkdir, c.p("m" * 256))
    c.call("stat 256-byte name", os.stat, c.p("m" * 256))
    c.ls()
    if c.on_mount:
        for nm in (".wh.x", ".wh..wh..opq"):
            try:
                os.close(os.open(c.p(nm), os.O_WRONLY | os.O_CREAT, 0o644))
                got = "OK"
            except OSError as e:
                got = ename(e.errno)
            if got != "EINVAL":
                c.failures.append("create of reserved %s: expected EINVAL, got %s" % (nm, got))


# ---------------------------------------------------------------- attributes
@case("chmod", {"f": F("x"), "d": D(), "x": F("#!/bin/sh\n", 0o755)})
def _(c):
    ino = c.raw("f").st_ino
    c.call("chmod f 0600", os.chmod, c.p("f"), 0o600)
    c.st("f")
    c.expect("st_ino kept across copy-up", c.raw("f").st_ino == ino, True)
    c.call("chmod d 0700", os.chmod, c.p("d"), 0o700)
    c.st("d")
    c.call("chmod x 0644", os.chmod, c.p("x"), 0o644)
    c.st("x")
    c.call("chmod f 07777", os.chmod, c.p("f"), 0o7777)
    c.st("f")
    c.call("chmod missing", os.chmod, c.p("missing"), 0o600)


@case("chown-as-mounting-user", {"f": F("x"), "l": L("f"), "d": D()})
def _(c):
    uid, gid = os.getuid(), os.getgid()
    c.call("chown f to self", os.chown, c.p("f"), uid, gid)
    c.call("chown f -1 -1", os.chown, c.p("f"), -1, -1)
    c.call("lchown l to self", os.chown, c.p("l"), uid, gid, follow_symlinks=False)
    c.call("chown d gid only", os.chown, c.p("d"), -1, gid)
    # Giving a file away is root's alone (EPERM for everyone else).
    c.call("chown f to another user", os.chown, c.p("f"), 4242, -1)
    c.st("f")
    c.st("l")
    c.st("d")
    others = [g for g in os.getgroups() if g != gid]
    c.call("chown f to a foreign group", os.chown, c.p("f"), -1, 4243)
    if others:
        c.call("chown f to a supplementary group", os.chown, c.p("f"), -1, others[0])
    c.st("f", label="stat f after group changes")


@case("utimens", {"f": F("x"), "l": L("f"), "d": D()})
def _(c):
    c.call("utimensat f set both", utimensat, c.p("f"), (1000000000, 123456789), (1100000000, 5))
    s = c.raw("f")
    c.expect("atime", (s.st_atime_ns), 1000000000123456789)
    c.expect("mtime", (s.st_mtime_ns), 1100000000000000005)
    c.call("utimensat f UTIME_OMIT mtime", utimensat, c.p("f"), (1200000000, 0), UTIME_OMIT)
    s = c.raw("f")
    c.expect("atime after omit", s.st_atime_ns, 1200000000 * 10**9)
    c.expect("mtime kept by UTIME_OMIT", s.st_mtime_ns, 1100000000000000005)
    before = time.time_ns()
    c.call("utimensat f UTIME_OMIT, UTIME_NOW", utimensat, c.p("f"), UTIME_OMIT, UTIME_NOW)
    s = c.raw("f")
    c.expect("atime kept by UTIME_OMIT", s.st_atime_ns, 1200000000 * 10**9)
    c.expect("mtime set by UTIME_NOW is now", abs(s.st_mtime_ns - before) < 5 * 10**9, True)
    c.call("utimensat both UTIME_OMIT", utimensat, c.p("f"), UTIME_OMIT, UTIME_OMIT)
    c.expect("still the same mtime", c.raw("f").st_mtime_ns == s.st_mtime_ns, True)
    c.call("utimensat l NOFOLLOW", utimensat, c.p("l"), (1300000000, 0), (1300000001, 0), True)
    c.expect("symlink mtime", c.raw("l").st_mtime_ns, 1300000001 * 10**9)
    c.expect("target mtime unchanged", c.raw("f").st_mtime_ns == s.st_mtime_ns, True)
    c.call("utimensat d", utimensat, c.p("d"), (1400000000, 0), (1400000002, 0))
    c.expect("dir mtime", c.raw("d").st_mtime_ns, 1400000002 * 10**9)
    c.call("utimensat missing", utimensat, c.p("missing"), UTIME_NOW, UTIME_NOW)


@case("truncate", {"f": F("0123456789"), "g": F("abc")})
def _(c):
    c.call("truncate f 4", os.truncate, c.p("f"), 4)
    c.read("f")
    c.call("truncate f 8 (extends with zeros)", os.truncate, c.p("f"), 8)
    c.read("f")
    fd = c.open("open g O_RDWR", "g", os.O_RDWR)
    if fd is not None:
        c.call("ftruncate g 1", os.ftruncate, fd, 1)
        c.call("fstat size=", lambda: os.fstat(fd).st_size)
    c.close_all()
    c.read("g")
    c.call("truncate a directory", os.truncate, c.p(""), 0)
    c.call("truncate -1", os.truncate, c.p("g"), -1)


# ---------------------------------------------------------------- links
@case("link-counts", {"f": F("one\n"), "d": D()})
def _(c):
    ino = c.raw("f").st_ino
    c.call("link f g", os.link, c.p("f"), c.p("g"))
    c.st("f")
    c.st("g")
    c.expect("g has f's inode number", c.raw("g").st_ino == c.raw("f").st_ino, True)
    c.expect("f keeps its inode number", c.raw("f").st_ino == ino, True)
    c.call("link f d/h", os.link, c.p("f"), c.p("d/h"))
    c.st("f", label="stat f after second link")
    fd = c.open("open g for append", "g", os.O_WRONLY | os.O_APPEND)
    if fd is not None:
        c.call("write through g", os.write, fd, b"two\n")
    c.close_all()
    c.read("f", "f sees the write through g")
    c.read("d/h", "d/h sees it too")
    c.st("d/h")
    c.call("unlink g", os.unlink, c.p("g"))
    c.st("f", label="stat f after unlink g")
    c.call("link onto existing: EEXIST", os.link, c.p("f"), c.p("d/h"))
    c.call("link of a directory: EPERM", os.link, c.p("d"), c.p("d2"))
    c.call("link of missing: ENOENT", os.link, c.p("missing"), c.p("m2"))
    c.call("rename f d/h (same inode: nothing happens)", os.rename, c.p("f"), c.p("d/h"))
    c.st("f", label="stat f after rename onto own link")
    c.st("d/h", label="stat d/h after rename onto own link")
    c.ls()
    c.ls("d")


@case("unlink-open-file", {"f": F("data\n")})
def _(c):
    fd = c.open("open f O_RDWR", "f", os.O_RDWR)
    c.call("unlink f", os.unlink, c.p("f"))
    c.st("f")
    if fd is not None:
        c.call("read after unlink=", os.pread, fd, 100, 0)
        c.call("write after unlink=", os.pwrite, fd, b"more\n", 5)
        c.call("read back=", os.pread, fd, 100, 0)
        c.call("fstat nlink=", lambda: os.fstat(fd).st_nlink)
        c.call("fchmod after unlink", os.fchmod, fd, 0o600)
        c.call("ftruncate after unlink", os.ftruncate, fd, 2)
        c.call("fstat size=", lambda: os.fstat(fd).st_size)
    c.close_all()
    c.ls()
    c.open("re-create f", "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    c.close_all()
    c.read("f", "the re-created f is empty")


@case("unlink-and-rmdir", {"f": F("x"), "d": D(), "d/x": F("x"), "e": D(), "l": L("d")})
def _(c):
    c.call("unlink a directory: EISDIR", os.unlink, c.p("d"))
    c.call("rmdir a file: ENOTDIR", os.rmdir, c.p("f"))
    c.call("rmdir non-empty: ENOTEMPTY", os.rmdir, c.p("d"))
    c.call("rmdir a symlink to a dir: ENOTDIR", os.rmdir, c.p("l"))
    c.call("unlink missing: ENOENT", os.unlink, c.p("missing"))
    c.call("rmdir d/x/ (file): ENOTDIR", os.rmdir, c.p("d/x/"))
    c.call("rmdir . : EINVAL", os.rmdir, c.p("e/."))
    c.call("rmdir empty e", os.rmdir, c.p("e"))
    c.call("unlink d/x", os.unlink, c.p("d/x"))
    c.ls("d")
    c.call("rmdir d once emptied", os.rmdir, c.p("d"))
    c.call("unlink symlink l (not its target)", os.unlink, c.p("l"))
    c.call("unlink f", os.unlink, c.p("f"))
    c.ls()
    c.call("mkdir d again", os.mkdir, c.p("d"))
    c.ls("d", "the new d is empty (nothing merges back)")
    c.call("mkdir d again: EEXIST", os.mkdir, c.p("d"))
    c.call("mkdir in missing dir: ENOENT", os.mkdir, c.p("missing/x"))


# ---------------------------------------------------------------- rename
RENAME = {
    "a": F("A\n"), "b": F("B\n"),
    "d1": D(), "d1/x": F("x1\n"), "d1/sub": D(), "d1/sub/y": F("y\n"),
    "d2": D(), "d2/z": F("z\n"),
    "empty": D(), "empty2": D(),
    "la": L("a"),
}


@case("rename-file", RENAME)
def _(c):
    ino = c.raw("a").st_ino
    c.call("rename a b (file over file)", os.rename, c.p("a"), c.p("b"))
    c.st("a")
    c.read("b")
    c.expect("b has a's inode number", c.raw("b").st_ino == ino, True)
    c.call("rename b b (onto itself)", os.rename, c.p("b"), c.p("b"))
    c.read("b", "read b after self-rename")
    c.call("rename b d1/moved (other directory)", os.rename, c.p("b"), c.p("d1/moved"))
    c.read("d1/moved")
    c.call("rename missing: ENOENT", os.rename, c.p("nope"), c.p("x"))
    c.call("rename into a missing directory: ENOENT", os.rename, c.p("d1/moved"),
           c.p("nodir/x"))
    c.call("rename file over dir: EISDIR", os.rename, c.p("d1/moved"), c.p("empty"))
    c.call("rename dir over file: ENOTDIR", os.rename, c.p("empty"), c.p("d1/moved"))
    c.call("rename symlink la lb", os.rename, c.p("la"), c.p("lb"))
    c.call("readlink lb=", os.readlink, c.p("lb"))
    c.ls()
    c.ls("d1")


@case("rename-dir", RENAME)
def _(c):
    c.call("rename d1 empty (dir over empty dir)", os.rename, c.p("d1"), c.p("empty"))
    c.ls("empty")
    c.ls("empty/sub")
    c.read("empty/sub/y")
    c.st("d1")
    c.call("rename empty d2 (over non-empty): ENOTEMPTY", os.rename, c.p("empty"), c.p("d2"))
    c.call("rename d2 d2/sub (into own subtree): EINVAL", os.rename, c.p("d2"), c.p("d2/sub"))
    c.call("rename empty empty/sub/deeper: EINVAL", os.rename, c.p("empty"),
           c.p("empty/sub/deeper"))
    c.call("rename empty/sub . (its parent): ENOTEMPTY", os.rename, c.p("empty/sub"), c.p(""))
    c.call("rename d2 newname", os.rename, c.p("d2"), c.p("newname"))
    c.ls("newname")
    c.call("create inside the renamed dir", lambda: open(c.p("newname/w"), "w").close())
    c.ls("newname", "ls newname after create")
    c.call("unlink a lower entry of the renamed dir", os.unlink, c.p("newname/z"))
    c.ls("newname", "ls newname after unlink")
    c.call("rename empty2 newname/e2 (dir into dir)", os.rename, c.p("empty2"),
           c.p("newname/e2"))
    c.call("rename newname back to d2", os.rename, c.p("newname"), c.p("d2"))
    c.ls("d2")
    c.call("mkdir newname (nothing of the old one merges)", os.mkdir, c.p("newname"))
    c.ls("newname", "ls the fresh newname")
    c.ls()


@case("rename-flags", RENAME)
def _(c):
    c.call("RENAME_NOREPLACE onto existing: EEXIST", renameat2, c.p("a"), c.p("b"),
           RENAME_NOREPLACE)
    c.call("RENAME_NOREPLACE onto free", renameat2, c.p("a"), c.p("a2"), RENAME_NOREPLACE)
    c.call("RENAME_EXCHANGE two files", renameat2, c.p("a2"), c.p("b"), RENAME_EXCHANGE)
    c.read("a2")
    c.read("b")
    c.call("RENAME_EXCHANGE file and dir", renameat2, c.p("b"), c.p("d2"), RENAME_EXCHANGE)
    c.st("b")
    c.st("d2")
    c.ls("b")
    c.read("d2")
    c.call("RENAME_EXCHANGE with missing: ENOENT", renameat2, c.p("b"), c.p("none"),
           RENAME_EXCHANGE)
    c.call("RENAME_EXCHANGE two dirs", renameat2, c.p("d1"), c.p("b"), RENAME_EXCHANGE)
    c.ls("d1")
    c.ls("b")
    c.call("RENAME_NOREPLACE|RENAME_EXCHANGE: EINVAL", renameat2, c.p("d1"), c.p("b"),
           RENAME_EXCHANGE | RENAME_NOREPLACE)
    c.call("RENAME_WHITEOUT-like unknown flag: EINVAL", renameat2, c.p("d1"), c.p("b"), 1 << 7)
    c.ls()


@case("rename-open-file", {"f": F("abc")})
def _(c):
    fd = c.open("open f", "f", os.O_RDWR)
    c.call("rename f g while open", os.rename, c.p("f"), c.p("g"))
    if fd is not None:
        c.call("write through the old handle", os.pwrite, fd, b"XYZ", 3)
    c.close_all()
    c.read("g")
    c.st("f")


# ---------------------------------------------------------------- other types
@case("symlink-readlink", {"t": F("target\n"), "d": D(), "d/f": F("in d\n")})
def _(c):
    c.call("symlink rel", os.symlink, "t", c.p("rel"))
    c.call("symlink into dir", os.symlink, "d/f", c.p("rel2"))
    c.call("symlink dangling", os.symlink, "no/such", c.p("dang"))
    c.call("symlink to dir", os.symlink, "d", c.p("ld"))
    c.call("symlink chain", os.symlink, "rel", c.p("chain"))
    c.call("symlink loop a", os.symlink, "loopb", c.p("loopa"))
    c.call("symlink loop b", os.symlink, "loopa", c.p("loopb"))
    c.call("symlink onto existing: EEXIST", os.symlink, "t", c.p("t"))
    c.call("symlink of 4095 bytes", os.symlink, "x" * 4095, c.p("long"))
    for nm in ("rel", "rel2", "dang", "ld", "chain", "loopa"):
        c.call("readlink %s=" % nm, os.readlink, c.p(nm))
    c.call("readlink long= ", lambda: len(os.readlink(c.p("long"))))
    c.call("readlink of a file: EINVAL", os.readlink, c.p("t"))
    c.st("rel")
    c.st("rel", follow=True, label="stat rel (follow)")
    c.st("dang", follow=True, label="stat dang (follow)")
    c.st("loopa", follow=True, label="stat loopa (follow): ELOOP")
    c.read("chain")
    c.ls("ld")
    c.call("create through a symlinked dir", lambda: open(c.p("ld/new"), "w").close())
    c.ls("d")
    c.call("open O_CREAT through dangling symlink creates target?", lambda: os.close(
        os.open(c.p("dang"), os.O_WRONLY | os.O_CREAT, 0o644)))


@case("symlink-lower", {"t": F("target\n"), "s": L("t"), "sd": L("."), "up": L("../x")})
def _(c):
    c.call("readlink s=", os.readlink, c.p("s"))
    c.read("s")
    c.call("readlink sd=", os.readlink, c.p("sd"))
    c.ls("sd")
    c.call("readlink up=", os.readlink, c.p("up"))
    c.st("s")
    c.call("unlink s", os.unlink, c.p("s"))
    c.call("symlink s again", os.symlink, "other", c.p("s"))
    c.call("readlink new s=", os.readlink, c.p("s"))
    c.ls()


@case("mknod-fifo", {"p0": F("placeholder")})
def _(c):
    c.call("mkfifo", os.mkfifo, c.p("fifo"), 0o600)
    c.st("fifo")
    fd = c.open("open fifo O_RDONLY|O_NONBLOCK", "fifo", os.O_RDONLY | os.O_NONBLOCK)
    fdw = c.open("open fifo O_WRONLY|O_NONBLOCK", "fifo", os.O_WRONLY | os.O_NONBLOCK)
    if fd is not None and fdw is not None:
        c.call("write into fifo=", os.write, fdw, b"ping")
        c.call("read from fifo=", os.read, fd, 10)
    c.close_all()
    c.call("mknod S_IFREG", os.mknod, c.p("regular"), 0o644 | stat.S_IFREG)
    c.st("regular")
    c.call("mkfifo onto existing: EEXIST", os.mkfifo, c.p("p0"))
    c.call("rename fifo", os.rename, c.p("fifo"), c.p("fifo2"))
    c.st("fifo2")
    c.call("unlink fifo2", os.unlink, c.p("fifo2"))
    c.ls()


# ---------------------------------------------------------------- xattrs
@case("xattr", {"f": F("x"), "d": D()})
def _(c):
    for t in ("f", "d"):
        p = c.p(t)
        c.call("%s: getxattr absent" % t, os.getxattr, p, "user.x")
        c.call("%s: setxattr user.x" % t, os.setxattr, p, "user.x", b"1")
        c.call("%s: getxattr=" % t, os.getxattr, p, "user.x")
        c.call("%s: XATTR_CREATE on existing" % t, os.setxattr, p, "user.x", b"2",
               os.XATTR_CREATE)
        c.call("%s: XATTR_REPLACE on missing" % t, os.setxattr, p, "user.y", b"2",
               os.XATTR_REPLACE)
        c.call("%s: XATTR_REPLACE on existing" % t, os.setxattr, p, "user.x", b"3",
               os.XATTR_REPLACE)
        c.call("%s: set empty value" % t, os.setxattr, p, "user.empty", b"")
        c.call("%s: get empty=" % t, os.getxattr, p, "user.empty")
        c.call("%s: set 3000-byte value" % t, os.setxattr, p, "user.big", b"v" * 3000)
        c.call("%s: get big=" % t, lambda: len(os.getxattr(p, "user.big")))
        c.call("%s: listxattr=" % t, lambda: sorted(os.listxattr(p)))
        c.call("%s: removexattr" % t, os.removexattr, p, "user.x")
        c.call("%s: removexattr again" % t, os.removexattr, p, "user.x")
        c.call("%s: listxattr after remove=" % t, lambda: sorted(os.listxattr(p)))
    c.call("getxattr of missing file", os.getxattr, c.p("missing"), "user.x")
    if c.on_mount:
        # Known difference: only user.* exists; our own names never show.
        for nm in ("user.agentfs.origin", "user.agentfs.opaque", "user.agentfs.redirect"):
            try:
                os.getxattr(c.p("f"), nm)
                c.failures.append("getxattr %s succeeded" % nm)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    c.failures.append("getxattr %s: %s, not ENODATA" % (nm, ename(e.errno)))
            try:
                os.setxattr(c.p("f"), nm, b"v1 1 00 x")
                c.failures.append("setxattr %s succeeded" % nm)
            except OSError:
                pass
        if any(n.startswith("user.agentfs.") for n in os.listxattr(c.p("f"))):
            c.failures.append("listxattr shows user.agentfs.*")
        try:
            os.getxattr(c.p("f"), "trusted.x")
            c.failures.append("getxattr trusted.x succeeded")
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                c.failures.append("getxattr trusted.x: %s" % ename(e.errno))


# ---------------------------------------------------------------- data
MB = 1 << 20


@case("seek-data-hole", {"sparse": F(b""), "dense": F(b"d" * 10000)})
def _(c):
    # "sparse": 4 KiB of data at 0 and at 2 MiB, a hole in between.
    fd = c.open("open sparse O_RDWR", "sparse", os.O_RDWR)
    if fd is None:
        return
    os.pwrite(fd, b"a" * 4096, 0)
    os.pwrite(fd, b"b" * 4096, 2 * MB)
    os.fsync(fd)
    c.close_all()
    fd = c.open("open sparse O_RDONLY", "sparse", os.O_RDONLY)
    c.call("SEEK_DATA 0=", os.lseek, fd, 0, os.SEEK_DATA)
    c.call("SEEK_HOLE 0=", os.lseek, fd, 0, os.SEEK_HOLE)
    c.call("SEEK_DATA 8192=", os.lseek, fd, 8192, os.SEEK_DATA)
    c.call("SEEK_HOLE 2MiB=", os.lseek, fd, 2 * MB, os.SEEK_HOLE)
    c.call("SEEK_DATA past EOF=", os.lseek, fd, 3 * MB, os.SEEK_DATA)
    c.call("SEEK_END=", os.lseek, fd, 0, os.SEEK_END)
    c.call("read in the hole=", os.pread, fd, 8, MB)
    c.call("read at 2MiB=", os.pread, fd, 4, 2 * MB)
    fd2 = c.open("open dense", "dense", os.O_RDONLY)
    c.call("dense SEEK_HOLE 0=", os.lseek, fd2, 0, os.SEEK_HOLE)
    c.call("dense SEEK_DATA 9999=", os.lseek, fd2, 9999, os.SEEK_DATA)
    c.call("dense SEEK_DATA 10000=", os.lseek, fd2, 10000, os.SEEK_DATA)
    c.close_all()


@case("fallocate", {"f": F(b"x" * 8192)})
def _(c):
    fd = c.open("open f O_RDWR", "f", os.O_RDWR)
    if fd is None:
        return
    c.call("posix_fallocate to 1 MiB", os.posix_fallocate, fd, 0, MB)
    c.call("size=", lambda: os.fstat(fd).st_size)
    c.call("fallocate KEEP_SIZE to 2 MiB", fallocate, fd, FALLOC_FL_KEEP_SIZE, 0, 2 * MB)
    c.call("size after KEEP_SIZE=", lambda: os.fstat(fd).st_size)
    c.call("punch hole 0..4096", fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
           4096)
    c.call("hole reads zeros=", os.pread, fd, 8, 0)
    c.call("data after the hole=", os.pread, fd, 4, 4096)
    c.call("fallocate bad mode", fallocate, fd, 0x4000, 0, 10)
    c.close_all()
    fd = c.open("open f O_RDONLY", "f", os.O_RDONLY)
    c.call("fallocate on a read-only fd: EBADF", os.posix_fallocate, fd, 0, 2 * MB)
    c.close_all()
    c.st("f")


@case("copy-file-range", {"src": F(bytes(range(256)) * 64), "dst": F("old dst\n")})
def _(c):
    fi = c.open("open src", "src", os.O_RDONLY)
    fo = c.open("open dst", "dst", os.O_WRONLY)
    if fi is None or fo is None:
        return
    c.call("copy_file_range 1000 bytes=", os.copy_file_range, fi, fo, 1000, 100, 4)
    c.call("copy_file_range past EOF=", os.copy_file_range, fi, fo, 100, 1 << 20, 0)
    c.call("copy_file_range into a read-only fd", os.copy_file_range, fo, fi, 10, 0, 0)
    c.close_all()
    c.read("dst")
    c.read("src")
    c.open("create out", "out", os.O_WRONLY | os.O_CREAT, 0o644)
    fo = c.fds[-1] if c.fds else None
    fi = c.open("open src again", "src", os.O_RDONLY)
    if fo is not None and fi is not None:
        c.call("copy whole src=", os.copy_file_range, fi, fo, 1 << 20, 0, 0)
    c.close_all()
    c.read("out")


@case("large-file", {"big": F("head")})
def _(c):
    fd = c.open("open big", "big", os.O_RDWR)
    if fd is None:
        return
    far = 5 * (1 << 30) + 12345
    c.call("pwrite at 5 GiB=", os.pwrite, fd, b"far", far)
    c.call("size=", lambda: os.fstat(fd).st_size)
    c.call("pread at 5 GiB=", os.pread, fd, 3, far)
    c.call("pread at 5 GiB mod 4 GiB=", os.pread, fd, 3, far - (1 << 32))
    c.call("pread head=", os.pread, fd, 4, 0)
    c.call("lseek SEEK_END=", os.lseek, fd, 0, os.SEEK_END)
    c.call("ftruncate to 4 GiB + 1", os.ftruncate, fd, (1 << 32) + 1)
    c.call("size after truncate=", lambda: os.fstat(fd).st_size)
    c.call("allocated less than 1 MiB=", lambda: os.fstat(fd).st_blocks * 512 < MB)
    c.close_all()


@case("write-coherence", {"f": F("0123456789")})
def _(c):
    a = c.open("open A", "f", os.O_RDWR)
    b = c.open("open B", "f", os.O_RDONLY)
    if a is None or b is None:
        return
    c.call("read through B=", os.pread, b, 10, 0)
    c.call("write through A", os.pwrite, a, b"AB", 2)
    c.call("B sees it=", os.pread, b, 10, 0)
    c.call("A extends", os.pwrite, a, b"TAIL", 10)
    c.call("B sees the size=", lambda: os.fstat(b).st_size)
    c.call("fsync A", os.fsync, a)
    c.call("fdatasync A", os.fdatasync, a)
    c.close_all()
    c.read("f")
    c.st("f")


# ---------------------------------------------------------------- directories
@case("readdir-merged", {"d": D(), "d/a": F("a"), "d/b": D(), "d/c": L("a"), "d/b/x": F("x")})
def _(c):
    c.ls("d")
    c.call("create d/new", lambda: open(c.p("d/new"), "w").close())
    c.call("unlink d/a", os.unlink, c.p("d/a"))
    c.call("mkdir d/a (dir where a file was)", os.mkdir, c.p("d/a"))
    c.ls("d")
    c.ls("d/a", "ls d/a (empty)")
    c.call("scandir types=", lambda: sorted((e.name, e.is_dir(follow_symlinks=False),
                                              e.is_symlink()) for e in os.scandir(c.p("d"))))
    c.st("d/a")
    c.call("rmdir d/a", os.rmdir, c.p("d/a"))
    c.ls("d")
    # Many entries: listing pages through more than one readdir buffer.
    for i in range(300):
        open(c.p("d/many-%03d-%s" % (i, "x" * 60)), "w").close()
    c.call("300 more entries listed=", lambda: len(os.listdir(c.p("d"))))
    c.call("ls -a has . and ..", lambda: sorted(os.listdir(c.p("d/b"))))


@case("statfs", {"f": F("x")})
def _(c):
    s = os.statvfs(c.p("f"))
    c.expect("f_namemax", s.f_namemax, 255)
    c.expect("f_bsize > 0", s.f_bsize > 0, True)
    c.expect("f_blocks > 0", s.f_blocks > 0, True)
    c.expect("f_bfree <= f_blocks", s.f_bfree <= s.f_blocks, True)
    c.call("statvfs missing", os.statvfs, c.p("missing"))


@case("access", {"f": F("x", 0o640), "x": F("#!/bin/sh\n", 0o750), "d": D(0o700)})
def _(c):
    for nm in ("f", "x", "d", "missing"):
        for m, ml in ((os.R_OK, "R"), (os.W_OK, "W"), (os.X_OK, "X"), (os.F_OK, "F")):
            c.rec("access %s %s" % (nm, ml), os.access(c.p(nm), m))


# ---------------------------------------------------------------- running


def tree(root):
    """Names, types, modes, sizes, contents and link counts below @root (the
    view's known differences left out)."""
    out = {}
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for nm in dns + fns:
            p = os.path.join(dp, nm)
            rel = os.path.relpath(p, root)
            s = os.lstat(p)
            v = [stat.filemode(s.st_mode), s.st_uid, s.st_gid]
            if stat.S_ISREG(s.st_mode):
                with open(p, "rb") as f:
                    data = f.read(1 << 16)
                v += [s.st_size, s.st_nlink, hashlib.sha1(data).hexdigest()[:12]]
            elif stat.S_ISLNK(s.st_mode):
                v += [os.readlink(p)]
            out[rel] = v
    return out


def case_dirs():
    for cs in CASES:
        for v in cs.variants:
            yield cs, v, "c/%s-%s" % (cs.name, v)


def prepare(repo):
    for cs, v, rel in case_dirs():
        d = os.path.join(repo, rel)
        os.makedirs(d)
        if v in "LB":
            make_fixture(d, cs.fix)
            age_fixture(d, cs.fix)
        # Git does not keep empty directories, agentfs must not care.
        open(os.path.join(d, ".keep"), "w").close()


def diff_obs(a, b):
    out = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else ("(missing)", None)
        y = b[i] if i < len(b) else ("(missing)", None)
        if x != y:
            out.append("%s: plain directory %r, view %r" % (x[0], x[1], y[1]))
    return out


def run(mnt, ref, filt=None):
    os.umask(0o022)
    n = failed = 0
    for cs, v, rel in case_dirs():
        name = "%s [%s]" % (cs.name, {"L": "lower", "U": "upper", "B": "both"}[v])
        if filt and filt not in name:
            continue
        n += 1
        results = []
        for root, on_mount in ((ref, False), (mnt, True)):
            c = Ctx(os.path.join(root, rel), v, on_mount)
            try:
                if v == "U":
                    make_fixture(c.root, cs.fix)
                    age_fixture(c.root, cs.fix)
                elif v == "B":
                    copy_up(c.root, cs.fix)
                cs.fn(c)
            except Exception as e:  # a crash of the case is a failure, with its cause
                c.failures.append("raised %s: %s" % (type(e).__name__, e))
            finally:
                c.close_all()
            try:
                c.rec("final tree", tree(c.root))
            except OSError as e:
                c.rec("final tree", "walk failed: %s" % e)
            results.append(c)
        plain, view = results
        problems = ["plain directory: " + f for f in plain.failures]
        problems += ["view: " + f for f in view.failures]
        problems += diff_obs(plain.obs, view.obs)
        if problems:
            failed += 1
            print("not ok - %s" % name)
            for p in problems[:30]:
                print("# %s" % p.replace("\n", "\\n")[:600])
        else:
            print("ok - %s (%d observations)" % (name, len(view.obs)))
        sys.stdout.flush()
    print("# cases: %d" % n)
    return 1 if failed else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "prepare":
        prepare(argv[2])
        return 0
    if len(argv) >= 4 and argv[1] == "run":
        return run(argv[2], argv[3], argv[4] if len(argv) > 4 else None)
    if len(argv) == 2 and argv[1] == "list":
        for cs, v, rel in case_dirs():
            print(rel)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
