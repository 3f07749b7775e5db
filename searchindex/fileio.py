"""Reading files a user pointed us at, without letting any one of them hang or exhaust the run.

Every path the library opens for its content (images, sidecars, query images,
label files) goes through :func:`open_regular`:

- only regular files are opened: the type is checked with ``stat`` before the
  open, and again with ``fstat`` on the descriptor, which is opened with
  ``O_NONBLOCK`` so that a FIFO swapped in between the two checks cannot block
  the open (a FIFO without a writer would wait forever; a character device such
  as ``/dev/zero`` never ends);
- reads are bounded (:func:`read_bounded` refuses files above a size limit
  before reading, and stops at the limit should the file grow meanwhile), and
  the SHA-256 is computed in chunks while reading.

Errors are :class:`NotRegularFileError` and :class:`FileTooLargeError`, both
``OSError`` subclasses, so callers that already report ``OSError`` per file
keep working.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import BinaryIO

from .defaults import DEFAULT_MAX_FILE_MB

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "INT64_MAX",
    "INT64_MIN",
    "FileTooLargeError",
    "NotRegularFileError",
    "clamp_int64",
    "describe_type",
    "open_regular",
    "read_bounded",
]

DEFAULT_MAX_FILE_BYTES = DEFAULT_MAX_FILE_MB * 1024 * 1024

#: SQLite stores integers as signed 64-bit: nanosecond times after 2262 or before 1677 do not fit.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

_CHUNK = 1024 * 1024


class NotRegularFileError(OSError):
    """The path is a FIFO, socket, device or folder: it is never opened for reading."""


class FileTooLargeError(OSError):
    """The file is larger than the configured limit: it is not read."""


def clamp_int64(value: int) -> int:
    """``value`` limited to what a SQLite INTEGER holds (an ext4 mtime in 2446 does not)."""
    return max(INT64_MIN, min(INT64_MAX, int(value)))


def describe_type(mode: int) -> str:
    """A short name for the kind of file ``mode`` (from ``stat``) describes."""
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path: str | os.PathLike[str], mode: int) -> NotRegularFileError:
    return NotRegularFileError(0, f"not a regular file: {describe_type(mode)}", os.fspath(path))


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading if, and only if, it is a regular file.

    Raises:
        NotRegularFileError: a FIFO, socket, device or folder (checked without opening it).
        OSError: the usual (missing, permission denied, symbolic-link loop, ...).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode)
    # O_NONBLOCK: if a FIFO replaced the file since the stat, the open returns at once.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, st.st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # regular files never block; plain reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_large(path: str | os.PathLike[str], size: int, limit: int) -> FileTooLargeError:
    return FileTooLargeError(0, f"file too large: {size / 1e6:.0f} MB (limit {limit / 1e6:.0f} MB, "
                                f"set with --max-file-mb)", os.fspath(path))


def read_bounded(path: str | os.PathLike[str], limit: int = DEFAULT_MAX_FILE_BYTES,
                 *, digest: bool = False) -> tuple[bytes, str | None]:
    """The content of the regular file ``path`` (at most ``limit`` bytes) and its SHA-256 when asked.

    The size is checked before reading (an 8 GB sparse file costs nothing), and
    reading stops past ``limit`` should the file grow while it is read.

    Raises:
        FileTooLargeError: the file holds more than ``limit`` bytes.
        NotRegularFileError, OSError: see :func:`open_regular`.
    """
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise _too_large(path, size, limit)
        sha = hashlib.sha256() if digest else None
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = fh.read(min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _too_large(path, total, limit)
            if sha is not None:
                sha.update(chunk)
            parts.append(chunk)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data, sha.hexdigest() if sha is not None else None
