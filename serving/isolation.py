"""Server processes that share nothing with other local users: private files, a private /dev/shm.

What a server writes (its log, the Python backend's files) is created under umask 077, so only its
own user reads it. The Python backend passes every request's tensors (the audio, the transcript)
through shared-memory files in /dev/shm, which it makes readable by everyone (mode 0644, whatever
the umask: boost sets it after creating them). So each server gets a /dev/shm of its own: a new
mount namespace (as root; otherwise inside a user namespace that maps the user to itself) with a
private tmpfs, mode 0700, on /dev/shm, which the server and its Python stubs share and nobody else
sees; it vanishes with the last of them, so a killed server leaves nothing behind there. Where
Linux refuses namespaces (a container without CAP_SYS_ADMIN: it has a /dev/shm of its own anyway),
the server starts with the shared one, and `has_private_shm` says so.
"""

import ctypes
import os
import sys
from pathlib import Path

UMASK = 0o077

_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000


def private_shm() -> bool:
    """In the calling process (a child between fork and exec): a mount namespace of its own with a
    private tmpfs on /dev/shm. False, with nothing mounted, where Linux refuses it."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWNS if uid == 0 else _CLONE_NEWNS | _CLONE_NEWUSER) != 0:
        return False
    if uid != 0:
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError:
            return False
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:  # nothing propagates back out
        return False
    return libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0700") == 0


def confined(then=None):
    """A `preexec_fn` for a server: umask 077 and a private /dev/shm, then `then` (another preexec_fn)."""

    def confine():
        os.umask(UMASK)
        private_shm()
        if then is not None:
            then()

    return confine


def has_private_shm(pid: int) -> bool:
    """Whether process `pid` sees another /dev/shm than this process does."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def shm_path(pid: int, name: str) -> Path:
    """Where this process reaches the /dev/shm file `name` of process `pid` (its own /dev/shm or the shared one)."""
    return Path(f"/proc/{pid}/root/dev/shm", name)


def private_file(path: Path, append: bool):
    """`path` opened for binary writing, readable by its owner alone (0600, also where it existed):
    appended to, or emptied first."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "ab" if append else "wb")
