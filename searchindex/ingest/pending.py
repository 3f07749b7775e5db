"""What a watch has noticed and not yet handed over: changes gathered from events or polls, held until
each file is completely written and the folder has been quiet for a moment, then given out in batches
(:class:`~searchindex.ingest.watch.FolderWatcher` runs it)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..models.images import IMAGE_EXTENSIONS
from .plan import under

if TYPE_CHECKING:
    from .watch import WatchOptions

__all__ = ["ChangeBatch", "Pending", "handler", "is_image"]


@dataclass(frozen=True)
class ChangeBatch:
    """One batch of changes for the indexing path."""

    changed: tuple[str, ...] = ()  # files written or moved in: (re)indexed
    vanished: tuple[str, ...] = ()  # files deleted or moved away: their rows leave (or follow a move)
    vanished_folders: tuple[str, ...] = ()  # folders deleted or moved away: everything indexed below them
    folders: tuple[str, ...] = ()  # folders created or moved in: scanned
    synced_folders: tuple[str, ...] = ()  # folders polled as changed: their files synced, not below

    def __bool__(self) -> bool:
        return bool(self.changed or self.vanished or self.vanished_folders or self.folders or self.synced_folders)

    def __len__(self) -> int:
        return (len(self.changed) + len(self.vanished) + len(self.vanished_folders) + len(self.folders)
                + len(self.synced_folders))


@dataclass
class _Seen:
    last: float  # monotonic time of the latest event
    closed: bool = False  # a close-after-write since the latest modification
    stat: tuple[int, int] | None = None  # (size, mtime_ns) at the latest look
    since: float = 0.0  # when ``stat`` was first seen like this
    closes: bool = False  # its observer reports closes: wait for one (or for ``close_wait``)...
    written: bool = False  # ... once a write was seen (a file moved or linked in is created, never written)


def is_image(path: str, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether ``path`` is named like a file the index takes (an image, or a video when watched)."""
    return os.path.splitext(path)[1].lower() in extensions


class Pending:
    """The changes seen and not yet handed over, bounded; fed by the observers' threads."""

    def __init__(self, options: WatchOptions) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.files: dict[str, _Seen] = {}
        self.gone: dict[str, float] = {}
        self.gone_folders: dict[str, float] = {}
        self.folders: dict[str, float] = {}
        self.synced: dict[str, float] = {}
        self.last_event = 0.0
        self.first_event = 0.0
        self.overflowed = False

    def _tables(self) -> tuple[dict[str, Any], ...]:
        return (self.files, self.gone, self.gone_folders, self.folders, self.synced)

    def size(self) -> int:
        """Changes pending now."""
        return sum(len(t) for t in self._tables())

    def _touch(self, now: float) -> None:
        if self.size() <= 1:
            self.first_event = now
        self.last_event = now
        if self.size() > self.options.max_pending:
            # A flood beyond the bound: forget the single changes, scan the folders instead.
            for table in self._tables():
                table.clear()
            self.overflowed = True

    def file_written(self, path: str, *, closed: bool = False, closes: bool = False, written: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            self.gone.pop(path, None)
            seen = self.files.get(path)
            if seen is None:
                self.files[path] = _Seen(now, closed, closes=closes, written=written)
            else:  # written again after a close: wait for the next close (or for it to settle)
                seen.last, seen.closed, seen.written = now, closed, seen.written or written
            self._touch(now)

    def file_gone(self, path: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.files.pop(path, None)
            self.gone[path] = now
            self._touch(now)

    def folder_in(self, path: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.gone_folders.pop(path, None)
            self.folders[path] = now
            self._touch(now)

    def folder_changed(self, path: str) -> None:
        """A polled folder whose files changed (and then held still): sync its files."""
        now = time.monotonic()
        with self.lock:
            self.synced[path] = now
            self._touch(now)

    def folder_gone(self, path: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.folders.pop(path, None)
            for p in [p for p in self.files if under(p, [path])]:
                del self.files[p]
            self.gone_folders[path] = now
            self._touch(now)

    def forget_below(self, root: str) -> None:
        """Drop what is pending below ``root`` (gone offline: nothing there may be removed)."""
        with self.lock:
            for table in self._tables():
                for p in [p for p in table if p == root or under(p, [root])]:
                    del table[p]

    def put_back(self, batch: ChangeBatch) -> None:
        """Return a batch that could not be applied (another writer held the lock)."""
        now = time.monotonic()
        with self.lock:
            for p in batch.changed:
                self.files.setdefault(p, _Seen(now, closed=True))
            for p in batch.vanished:
                self.gone.setdefault(p, now)
            for p in batch.vanished_folders:
                self.gone_folders.setdefault(p, now)
            for p in batch.folders:
                self.folders.setdefault(p, now)
            for p in batch.synced_folders:
                self.synced.setdefault(p, now)
            self.first_event = min(self.first_event or now, now)

    def take(self) -> ChangeBatch | None:
        """The changes ready now, or ``None``."""
        o = self.options
        now = time.monotonic()
        with self.lock:
            if not self.size():
                return None
            quiet = now - self.last_event >= o.debounce
            if not quiet and now - self.first_event < o.max_wait:
                return None
            changed: list[str] = []
            for path, seen in list(self.files.items()):
                if now - seen.last < o.debounce:
                    continue
                if not seen.closed and (not self._settled(path, seen, now)
                                        or (seen.closes and seen.written and now - seen.last < o.close_wait)):
                    continue
                changed.append(path)
                if len(changed) >= o.max_batch:
                    break
            for path in changed:
                del self.files[path]
            # Removals only once all is quiet: a folder being deleted file by file (rm -rf of
            # a root) must be seen gone as a whole before any of its files leaves the index.
            gone = list(self.gone) if quiet else []
            gone_folders = list(self.gone_folders) if quiet else []
            folders = list(self.folders) if quiet else []
            synced = list(self.synced) if quiet else []
            for table, keys in ((self.gone, gone), (self.gone_folders, gone_folders), (self.folders, folders),
                                (self.synced, synced)):
                for k in keys:
                    del table[k]
            if self.size():
                self.first_event = now
        batch = ChangeBatch(tuple(changed), tuple(gone), tuple(gone_folders), tuple(folders), tuple(synced))
        return batch or None

    def _settled(self, path: str, seen: _Seen, now: float) -> bool:
        """No close event (polling, another OS): the file counts as written once its size and
        mtime held still for ``settle`` seconds."""
        try:
            st = os.stat(path)
            stat = (st.st_size, st.st_mtime_ns)
        except OSError:
            return True  # gone or unreadable: the indexing path says which
        if stat != seen.stat:
            seen.stat, seen.since = stat, now
            return False
        return now - seen.since >= self.options.settle


def handler(pending: Pending, closes: bool, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Any:
    """A watchdog event handler feeding ``pending`` with the files named with ``extensions``;
    ``closes``: its observer reports close-after-write events (a file being written is then
    waited for until closed)."""
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            kind = event.event_type
            src = os.fsdecode(event.src_path)
            dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else ""
            if event.is_directory:
                if kind == "moved":
                    pending.folder_gone(src)
                    if dest:
                        pending.folder_in(dest)
                elif kind == "created":
                    pending.folder_in(src)
                elif kind == "deleted":
                    pending.folder_gone(src)
                return
            if kind == "moved":
                if is_image(src, extensions):
                    pending.file_gone(src)
                if dest and is_image(dest, extensions):
                    pending.file_written(dest, closed=True)  # a rename moves a complete file
            elif not is_image(src, extensions):
                return
            elif kind == "deleted":
                pending.file_gone(src)
            elif kind == "closed":
                pending.file_written(src, closed=True)
            elif kind in ("created", "modified"):
                # A file moved in from outside, or linked, is "created" and never written nor closed:
                # it counts as written once it holds still.
                pending.file_written(src, closes=closes, written=kind == "modified")

    return Handler()
