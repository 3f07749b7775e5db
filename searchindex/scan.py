"""Walk folders for image files and tell what changed since the last run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import FolderNotFoundError
from .images import IMAGE_EXTENSIONS

__all__ = ["FileEntry", "ScanResult", "diff", "scan_folders"]


@dataclass(frozen=True)
class FileEntry:
    """A candidate file: absolute path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanResult:
    todo: list[FileEntry]  # new or changed since the last run
    unchanged: int


def scan_folders(folders: Iterable[str | Path]) -> Iterator[FileEntry]:
    """Yield every file with an image extension below ``folders``, sorted per folder."""
    roots = []
    for folder in folders:
        root = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(root):
            raise FolderNotFoundError(f"not a folder: {folder}")
        roots.append(root)
    seen: set[str] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
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


def diff(entries: Iterable[FileEntry], known: Mapping[str, tuple[int, int]]) -> ScanResult:
    """Split ``entries`` into files to (re)index and files unchanged since last time."""
    todo: list[FileEntry] = []
    unchanged = 0
    for e in entries:
        if known.get(e.path) == (e.size, e.mtime_ns):
            unchanged += 1
        else:
            todo.append(e)
    return ScanResult(todo=todo, unchanged=unchanged)
