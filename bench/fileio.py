"""Reading and writing files safely: regular files only, atomic writes with the user's umask.

Import-light (stdlib only). Readers open data through ``open_regular``, so a FIFO named
``x.png`` or ``/dev/zero`` listed in a CSV is refused at once instead of blocking or reading
forever. Writers replace files atomically (a temporary file in the same folder, then
``os.replace``): a crash or a full disk leaves the old file whole and no temporary behind.
Files are created with the mode the user's umask gives (``tempfile.mkstemp`` alone would
make them 0600, unreadable to the group that shares a results folder).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

#: Errors that mean the disk (or the user's quota) is full.
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


#: Encoding error handler for text outputs: a name that is not valid UTF-8 (held by Python as
#: surrogate escapes) is written with its undecodable bytes as ``\xNN``, so the file stays
#: UTF-8 and the name stays recognisable.
ESCAPE_UNDECODABLE = "bench-escape-undecodable"


def _escape_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for char in exc.object[exc.start : exc.end]:
        code = ord(char)
        out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}")
    return "".join(out), exc.end


codecs.register_error(ESCAPE_UNDECODABLE, _escape_undecodable)


def readable_name(text: str) -> str:
    """``text`` with undecodable bytes of a file name as ``\\xNN`` (what the outputs show)."""
    return text.encode("utf-8", ESCAPE_UNDECODABLE).decode("utf-8")


class NotRegularFileError(OSError):
    """A path that is a FIFO, device, socket or folder where a regular file was expected."""


def file_kind(mode: int) -> str:
    """A name for the kind of file ``st_mode`` describes, as people say it."""
    kinds = (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def _refuse(path: str | os.PathLike[str], mode: int) -> NotRegularFileError:
    return NotRegularFileError(
        errno.EINVAL, f"not a regular file (a {file_kind(mode)})", os.fspath(path)
    )


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading; anything else raises NotRegularFileError at once.

    Checked before opening (a device is never opened) and again on the open descriptor
    (the path may change in between); O_NONBLOCK keeps a FIFO from blocking the open.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _refuse(path, mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other way: set and restore at once
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically; on any failure nothing temporary is left."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # no fchmod on Windows; some file systems have no modes
        with contextlib.suppress(AttributeError, OSError):
            os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, errors: str = "strict", fsync: bool = True
) -> None:
    """``atomic_write_bytes`` of UTF-8 text (``errors`` as for ``str.encode``)."""
    atomic_write_bytes(path, text.encode("utf-8", errors), fsync=fsync)


def rewrite_in_place(path: str | os.PathLike[str], candidates: list[bytes]) -> bool:
    """Last resort on a full disk: overwrite an existing file with the first candidate that fits.

    A full disk has no room for a temporary copy, but a file can be rewritten inside the
    space it already holds. Returns False (and writes nothing) when no candidate fits.
    """
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    for data in candidates:
        if len(data) <= size:
            try:
                with open(path, "r+b") as fh:
                    fh.write(data)
                    fh.truncate()
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError:
                return False
            return True
    return False


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL
