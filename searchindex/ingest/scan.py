"""Walk folders for image files."""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import FolderNotFoundError, PathTypeError
from ..fileio import clamp_int64
from ..models.images import IMAGE_EXTENSIONS
from ..results import FailureRecord
from ..store.folder import INNER_STAGING, holds_index

__all__ = ["FileEntry", "check_folders", "entries_of", "path_list", "scan_folders"]


@dataclass(frozen=True)
class FileEntry:
    """A candidate file: absolute path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


def _one_path(value: object, what: str) -> str:
    if isinstance(value, bytes):
        return os.fsdecode(value)  # a POSIX path as bytes, as os functions take it
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        return os.fsdecode(path) if isinstance(path, bytes) else path
    raise PathTypeError(f"{what} must be a path (str, bytes or os.PathLike), not {type(value).__name__}: "
                        f"{value!r:.80}")


def path_list(value: object, what: str) -> list[str]:
    """One path, or an iterable of paths, as a list of ``str`` paths (bytes decoded as ``os`` does).

    A single path is one path (``add_files("/a/photo.png")`` is one file, not 17 letters).

    Raises:
        PathTypeError: ``value`` (or an item of it) is no path.
    """
    if isinstance(value, (str, bytes, os.PathLike)):
        return [_one_path(value, what)]
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise PathTypeError(f"{what} must be a path or an iterable of paths, not {type(value).__name__}") from None
    return [_one_path(v, what) for v in items]


def entries_of(paths: Iterable[str]) -> list[FileEntry]:
    """The files at ``paths`` as scan entries; a file that cannot be stat'ed gets an impossible size,
    so that reading it reports why (as the scan does)."""
    entries = []
    for p in paths:
        try:
            st = os.stat(p)
            entries.append(FileEntry(p, st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append(FileEntry(p, -1, 0))
    return entries


def check_folders(folders: Iterable[str | os.PathLike[str]]) -> None:
    """Raise :class:`~searchindex.errors.FolderNotFoundError` for the first of ``folders`` that is not one."""
    for folder in folders:
        if not os.path.isdir(os.fspath(folder)):
            raise FolderNotFoundError(f"not a folder: {folder}")


def _unread_reason(exc: OSError, what: str) -> str:
    """Why ``what`` (``folder cannot be listed``, ...) could not be read, for the failure list."""
    if exc.errno == errno.ENAMETOOLONG:
        return f"path too long for this system ({exc.strerror or exc})"
    return f"unreadable: {what}: {exc.strerror or exc}"


def scan_folders(folders: Iterable[str | os.PathLike[str]], skipped: list[str] | None = None,
                 unread: list[FailureRecord] | None = None,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Iterator[FileEntry]:
    """Yield every file with an image extension (or one of ``extensions``) below ``folders``, sorted per folder.

    Symbolic links to folders are followed (like ``find -L``), and every folder is
    walked once, known by its device and inode: the real folders below
    ``folders`` first, then the folders links lead to, skipping any already walked
    (a loop, or a second way into a folder).  The folders not walked (such links,
    and folders that cannot be listed) are appended to ``skipped``: what was
    indexed below them must not be taken for deleted.

    What the scan could not read is appended to ``unread`` with its reason (the
    run records it as a failure, so nothing is left out silently): a folder that
    cannot be listed (no read permission, an I/O error), a folder that can be
    listed but not entered (read without execute permission: its files cannot
    even be stat'ed), and a folder or file whose path exceeds the system's limit.
    Their reasons start with ``unreadable:`` (tried again every run) or ``path too
    long``.
    """
    roots = []
    for folder in folders:
        root = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(root):
            raise FolderNotFoundError(f"not a folder: {folder}")
        roots.append(root)
    not_walked = skipped if skipped is not None else []
    problems = unread if unread is not None else []
    seen: set[str] = set()
    walked: set[tuple[int, int]] = set()  # (st_dev, st_ino) of every folder entered

    def report(path: str, exc: OSError, what: str) -> None:
        problems.append(FailureRecord(path, 0, 0, _unread_reason(exc, what)))

    def unlisted(exc: OSError) -> None:
        if exc.filename is not None:
            not_walked.append(os.fspath(exc.filename))
            if exc.errno != errno.ENOENT:  # removed since it was listed: nothing left to read
                report(os.fspath(exc.filename), exc, "folder cannot be listed")

    def first_time(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError as exc:
            not_walked.append(path)
            if exc.errno != errno.ENOENT:  # a dangling link to a folder is no folder
                report(path, exc, "folder cannot be read")
            return False
        key = (st.st_dev, st.st_ino)
        if key in walked:
            not_walked.append(path)
            return False
        walked.add(key)
        return True

    queue = deque(roots)
    while queue:
        top = queue.popleft()
        if not first_time(top):
            continue
        for dirpath, dirnames, filenames in os.walk(top, onerror=unlisted):
            dirnames.sort()
            if INNER_STAGING in dirnames and holds_index(Path(dirpath, INNER_STAGING)):
                # The new index a reindex builds inside an index folder on a mount point: never photos.
                dirnames.remove(INNER_STAGING)
            # A folder named like an image is still walked, and also reported, so
            # that nothing with an image's name is skipped silently.
            odd = [d for d in dirnames if os.path.splitext(d)[1].lower() in extensions]
            for name in sorted(filenames + odd):
                if os.path.splitext(name)[1].lower() not in extensions:
                    continue
                path = os.path.join(dirpath, name)
                if path in seen:
                    continue
                seen.add(path)
                try:
                    st = os.stat(path)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EPERM):
                        # Listed but not enterable: no file in it can be read, and none is gone.
                        not_walked.append(dirpath)
                        report(dirpath, exc, "folder cannot be entered")
                        dirnames.clear()
                        break
                    if exc.errno == errno.ENAMETOOLONG:
                        report(path, exc, "")
                        continue
                    # Vanished or a broken link; the indexer's decode step reports
                    # such files, so hand it over with an impossible size.
                    yield FileEntry(path, -1, 0)
                    continue
                # Clamped to SQLite's 64-bit integers (ext4 allows mtimes up to 2446, tmpfs more).
                yield FileEntry(path, st.st_size, clamp_int64(st.st_mtime_ns))
            # Folders after the files: a folder that cannot be entered has none to walk.
            for d in list(dirnames):
                sub = os.path.join(dirpath, d)
                if os.path.islink(sub):  # walked after the real folders, if not walked by then
                    dirnames.remove(d)
                    queue.append(sub)
                elif not first_time(sub):
                    dirnames.remove(d)
