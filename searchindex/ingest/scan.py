"""Walk folders for image files."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import FolderNotFoundError
from ..models.images import IMAGE_EXTENSIONS

__all__ = ["FileEntry", "check_folders", "scan_folders"]


@dataclass(frozen=True)
class FileEntry:
    """A candidate file: absolute path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


def check_folders(folders: Iterable[str | os.PathLike[str]]) -> None:
    """Raise :class:`~searchindex.errors.FolderNotFoundError` for the first of ``folders`` that is not one."""
    for folder in folders:
        if not os.path.isdir(os.fspath(folder)):
            raise FolderNotFoundError(f"not a folder: {folder}")


def scan_folders(folders: Iterable[str | os.PathLike[str]], skipped: list[str] | None = None) -> Iterator[FileEntry]:
    """Yield every file with an image extension below ``folders``, sorted per folder.

    Symbolic links to folders are followed (like ``find -L``), and every folder is
    walked once, known by its device and inode: the real folders below
    ``folders`` first, then the folders links lead to, skipping any already walked
    (a loop, or a second way into a folder).  The folders not walked (such links,
    and folders that cannot be listed) are appended to ``skipped``: what was
    indexed below them must not be taken for deleted.
    """
    roots = []
    for folder in folders:
        root = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(root):
            raise FolderNotFoundError(f"not a folder: {folder}")
        roots.append(root)
    not_walked = skipped if skipped is not None else []
    seen: set[str] = set()
    walked: set[tuple[int, int]] = set()  # (st_dev, st_ino) of every folder entered

    def unlisted(exc: OSError) -> None:
        if exc.filename is not None:
            not_walked.append(os.fspath(exc.filename))

    def first_time(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            not_walked.append(path)
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
            # A folder named like an image is still walked, and also reported, so
            # that nothing with an image's name is skipped silently.
            odd = [d for d in dirnames if os.path.splitext(d)[1].lower() in IMAGE_EXTENSIONS]
            for d in list(dirnames):
                sub = os.path.join(dirpath, d)
                if os.path.islink(sub):  # walked after the real folders, if not walked by then
                    dirnames.remove(d)
                    queue.append(sub)
                elif not first_time(sub):
                    dirnames.remove(d)
            for name in sorted(filenames + odd):
                if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                if path in seen:
                    continue
                seen.add(path)
                try:
                    st = os.stat(path)
                except OSError:
                    # Vanished or a broken link; the indexer's decode step reports
                    # such files, so hand it over with an impossible size.
                    yield FileEntry(path, -1, 0)
                    continue
                yield FileEntry(path, st.st_size, st.st_mtime_ns)
