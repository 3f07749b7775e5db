"""Walk folders for image files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import FolderNotFoundError
from .fileio import clamp_int64
from .images import IMAGE_EXTENSIONS

__all__ = ["FileEntry", "scan_folders"]


@dataclass(frozen=True)
class FileEntry:
    """A candidate file: absolute path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


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
            # A folder named like an image is still walked, and also reported, so
            # that nothing with an image's name is skipped silently.
            odd = [d for d in dirnames if os.path.splitext(d)[1].lower() in IMAGE_EXTENSIONS]
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
                # Clamped to SQLite's 64-bit integers (ext4 allows mtimes up to 2446, tmpfs more).
                yield FileEntry(path, st.st_size, clamp_int64(st.st_mtime_ns))
