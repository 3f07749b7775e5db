"""Watch folders and turn what happens in them into batches for the indexing path.

:class:`FolderWatcher` listens to file-system events through ``watchdog`` (inotify on
Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) or polls, and hands a
callback :class:`ChangeBatch` es: files written (complete: a close-after-write event, or a
size and mtime that stayed the same for ``settle`` seconds), paths gone, folders moved or
created in.  The callback runs them through the same plan -> produce -> commit path as
``searchindex index`` (:meth:`searchindex.index.watching.Watching.apply_changes`), so a
rename there is a move (no model call) and a save through a temporary file is one change.

What breaks watchers, handled here:

- a root folder that disappears (deleted, unmounted, a network share gone) is *offline*:
  nothing below it is removed from the index, it is watched for again and scanned when it
  returns;
- an inotify watch or instance limit: that folder and every later one are polled instead,
  with one warning naming the sysctl that raises the limit;
- network and FUSE file systems (NFS, SMB, sshfs, ...) send no events for changes made by
  other machines: they are polled (:func:`mount_type` reads ``/proc/mounts``).  The poller
  (:class:`FolderPoller`) keeps one number per folder, a fingerprint of its image files'
  names, sizes and mtimes, rather than a snapshot of every file, and a folder whose
  fingerprint changed (and then held still) is synced against the catalog;
- event floods: pending changes are bounded (:attr:`WatchOptions.max_pending`); past the
  bound the watcher forgets them and schedules a scan of the folders instead;
- anything missed at all: a catch-up scan at start and every ``rescan_interval`` seconds.

The watcher never writes the index itself; one batch at a time goes to the callback, which
takes the writer lock for that batch only (another writer meanwhile: the batch waits).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import IndexLockedError, MissingExtraError, SearchIndexError
from ..models.images import IMAGE_EXTENSIONS
from .plan import under

__all__ = ["NETWORK_FILE_SYSTEMS", "ChangeBatch", "FolderPoller", "FolderWatcher", "RootState", "WatchOptions",
           "mount_type", "needs_polling", "require_watchdog"]

log = logging.getLogger(__name__)

#: File-system types whose changes made elsewhere send no local events: polled.
NETWORK_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "davfs", "fuse", "fuseblk", "sshfs", "virtiofs", "vboxsf", "vmhgfs", "prl_fs", "beegfs", "orangefs",
})

_LIMIT_HINT = ("raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (and "
               "fs.inotify.max_user_instances=1024; add them to /etc/sysctl.conf to keep them)")


@dataclass(frozen=True)
class WatchOptions:
    """How a :class:`FolderWatcher` batches and polls.

    Args:
        debounce: seconds without a new event before the changes seen so far form a batch.
        settle: where no close-after-write events come (polling), a file counts as written
            once its size and mtime stayed the same this long.
        close_wait: where they come (inotify), a file still open for writing counts as written
            after this long without a change (a program writing through a memory map).
        max_wait: a steady stream of events still yields a batch this often (seconds).
        max_batch: at most this many files per batch.
        max_pending: changes remembered at once; past it they are dropped and the folders scanned.
        rescan_interval: seconds between catch-up scans (the first one runs at start); 0: only at start.
        poll_interval: seconds between two looks at a polled folder.
        polling: ``True``: poll every folder; ``False``: never fall back to polling on a
            network mount (a watch limit still falls back); ``None``: decide per folder.
    """

    debounce: float = 0.5
    settle: float = 1.0
    close_wait: float = 30.0
    max_wait: float = 5.0
    max_batch: int = 1000
    max_pending: int = 100_000
    rescan_interval: float = 3600.0
    poll_interval: float = 10.0
    polling: bool | None = None


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
class RootState:
    """What the watcher knows of one root folder."""

    path: str
    mode: str = "offline"  # "events", "polling" or "offline"
    was_mount: bool = False  # a mount point when first seen: unmounted means offline
    fs_type: str = ""
    watch: Any = None  # the observer's watch, while scheduled


@dataclass
class _Seen:
    last: float  # monotonic time of the latest event
    closed: bool = False  # a close-after-write since the latest modification
    stat: tuple[int, int] | None = None  # (size, mtime_ns) at the latest look
    since: float = 0.0  # when ``stat`` was first seen like this
    closes: bool = False  # its observer reports closes: wait for one (or for ``close_wait``)...
    written: bool = False  # ... once a write was seen (a file moved or linked in is created, never written)


def _is_image(path: str, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether ``path`` is named like a file the index takes (an image, or a video when watched)."""
    return os.path.splitext(path)[1].lower() in extensions


def mount_type(path: str, mounts: str = "/proc/mounts") -> str:
    """The file-system type of the mount holding ``path`` (``""`` when unknown, e.g. not Linux)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, kind = "", ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes spaces and tabs in mount points as octal.
        point = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if (real == point or under(real, [point]) or point == "/") and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def needs_polling(fs_type: str) -> bool:
    """Whether a file system of this type must be polled (network and FUSE file systems)."""
    return fs_type in NETWORK_FILE_SYSTEMS or fs_type.startswith("fuse.")


def require_watchdog() -> None:
    """Raise :class:`~searchindex.errors.MissingExtraError` unless watchdog can be imported."""
    _observer()


def _observer() -> Any:
    """watchdog's native observer class.

    Raises:
        MissingExtraError: watchdog is not installed (``searchindex[watch]``).
    """
    try:
        from watchdog.observers import Observer
    except ImportError:
        raise MissingExtraError("watching folders needs watchdog: pip install 'searchindex[watch]'",
                                extra="watch") from None
    return Observer


class _Pending:
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


def _handler(pending: _Pending, closes: bool, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Any:
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
                if _is_image(src, extensions):
                    pending.file_gone(src)
                if dest and _is_image(dest, extensions):
                    pending.file_written(dest, closed=True)  # a rename moves a complete file
            elif not _is_image(src, extensions):
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


class FolderPoller(threading.Thread):
    """Poll root folders every ``interval`` seconds, feeding ``pending``.

    Memory is one number per folder, not a record per file: a folder's fingerprint sums a hash
    of each image file's name, size and mtime.  A new folder is scanned, a folder gone is gone
    (below an offline root the watcher drops that), and a folder whose fingerprint changed is
    looked at again every quarter second until it held still for ``settle`` seconds (files
    still being copied), then synced.
    """

    def __init__(self, pending: _Pending, interval: float, settle: float,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> None:
        super().__init__(name="searchindex-poll", daemon=True)
        self._pending = pending
        self.extensions = extensions
        self.interval = interval
        self.settle = settle
        self._roots: dict[str, dict[str, int] | None] = {}  # root -> folder -> fingerprint (None: not listed)
        # folder -> fingerprint, since when, what ("new", "changed", "gone"): folders seen changing,
        # appearing or disappearing, until they (and the others) hold still
        self._unsettled: dict[str, tuple[int, float, str]] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._wake = threading.Event()

    def add(self, root: str) -> None:
        """Poll ``root``; its first listing, taken now, is the baseline.  Taken before the catch-up
        scan that follows (at start, or on a root's return), so no change falls between the two."""
        prints = _fingerprints(root, {}, self.extensions) if os.path.isdir(root) else None
        with self._lock:
            self._roots[root] = prints
        self._wake.set()

    def remove(self, root: str) -> None:
        """Stop polling ``root``."""
        with self._lock:
            self._roots.pop(root, None)
            for folder in [f for f in self._unsettled if f == root or under(f, [root])]:
                del self._unsettled[folder]

    def stop(self) -> None:
        """End the thread after the look in progress."""
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        next_poll = 0.0
        while not self._halt.is_set():
            now = time.monotonic()
            with self._lock:
                fresh = any(v is None for v in self._roots.values())
            if now >= next_poll or fresh:
                self.poll()
                next_poll = time.monotonic() + self.interval
            self._check_unsettled()
            wait = 0.25 if self._unsettled else next_poll - time.monotonic()
            self._wake.wait(max(0.05, wait))
            self._wake.clear()

    def poll(self) -> None:
        """One look at every root."""
        with self._lock:
            roots = list(self._roots.items())
        for root, old in roots:
            if self._halt.is_set():
                return
            if not os.path.isdir(root):  # offline: the watcher follows that; a baseline again on return
                with self._lock:
                    if root in self._roots:
                        self._roots[root] = None
                continue
            prints = _fingerprints(root, old or {}, self.extensions)
            with self._lock:
                if root not in self._roots:
                    continue
                self._roots[root] = prints
            if old is None:
                continue
            now = time.monotonic()
            for folder, fp in prints.items():
                before = old.get(folder)
                if before is None:
                    if os.path.dirname(folder) in old or folder == root:  # the top of what is new
                        with self._lock:  # scanned once settled, with its old parent's sync (moves)
                            self._unsettled[folder] = (fp, now, "new")
                elif fp != before:
                    with self._lock:
                        self._unsettled[folder] = (fp, now, "changed")
            for folder in old:
                if folder not in prints and os.path.dirname(folder) in prints:  # the top of what is gone
                    with self._lock:
                        self._unsettled[folder] = (-1, now, "gone")

    def _check_unsettled(self) -> None:
        now = time.monotonic()
        with self._lock:
            todo = list(self._unsettled.items())
        ready = []
        for folder, (fp, since, what) in todo:
            current = _fingerprint(folder, [], self.extensions)
            with self._lock:
                if folder not in self._unsettled:
                    continue
                if current != fp:
                    self._unsettled[folder] = (current, now, what)
                elif now - since >= self.settle:
                    ready.append((folder, what))
        # All held still: one batch, so that moves between them pair up.  A folder that never holds
        # still (written to all the time) does not hold the others back for more than 30 s.
        oldest = min((since for _, since, _ in (v for _, v in todo)), default=now)
        if ready and (len(ready) == len(todo) or now - oldest > 30.0):
            with self._lock:
                for folder, _ in ready:
                    self._unsettled.pop(folder, None)
            for folder, what in ready:
                if what == "new":
                    self._pending.folder_in(folder)
                elif what == "gone":
                    self._pending.folder_gone(folder)
                else:
                    self._pending.folder_changed(folder)


def _fingerprint(folder: str, subfolders: list[str], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> int:
    """A number that changes when a file named with ``extensions`` in ``folder`` (not below) is
    added, removed, renamed or rewritten; ``subfolders`` gets its folders.  -1: the folder cannot
    be listed."""
    total = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    if entry.is_dir():
                        subfolders.append(entry.path)
                    elif _is_image(entry.name, extensions):
                        st = entry.stat()
                        total += hash((entry.name, st.st_size, st.st_mtime_ns))
                except OSError:
                    continue
    except OSError:
        return -1
    return total & 0xFFFF_FFFF_FFFF_FFFF


def _fingerprints(root: str, old: dict[str, int], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> dict[str, int]:
    """Folder -> fingerprint for ``root`` and every folder below it (links followed, each folder
    once); a folder that cannot be listed keeps its ``old`` fingerprint (unreadable is not gone)."""
    prints: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        subfolders: list[str] = []
        fp = _fingerprint(folder, subfolders, extensions)
        prints[folder] = old.get(folder, 0) if fp == -1 else fp
        stack.extend(subfolders)
    return prints


class _LimitSeen(logging.Handler):
    """Hears watchdog say a folder made after the start could not get an inotify watch (the limit):
    it logs that and goes on, leaving that folder unwatched; the watcher then polls that root."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.paths: list[str] = []
        self._paths_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "Unable to watch %r: %s" and len(args) == 2:
            path, error = args
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EMFILE) \
                    and isinstance(path, (str, bytes)):
                with self._paths_lock:
                    self.paths.append(os.fsdecode(path))

    def take(self) -> list[str]:
        with self._paths_lock:
            paths, self.paths = self.paths, []
        return paths


#: watchdog's inotify logger, where it says a folder could not be watched.
_INOTIFY_LOGGER = "watchdog.observers.inotify"


class FolderWatcher:
    """Watch ``roots`` and hand their changes to ``apply`` in batches, from a thread of its own.

    Args:
        roots: absolute folder paths (missing ones are offline until they appear).
        apply: runs one :class:`ChangeBatch` through the indexing path; may raise
            :class:`~searchindex.errors.IndexLockedError` (the batch is kept and tried again).
        catch_up: brings the index in line with these (online) roots by a full scan.
        options: see :class:`WatchOptions`.
        on_error: told of each error the watcher goes on after.
        extensions: the file name extensions watched (default: images; videos' too when the
            index takes them, see :func:`searchindex.ingest.videos.scan_extensions`).
    """

    def __init__(self, roots: Sequence[str], apply: Callable[[ChangeBatch], object],
                 catch_up: Callable[[list[str], threading.Event], object], options: WatchOptions | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> None:
        self.options = options or WatchOptions()
        self.extensions = extensions
        self.roots = {r: RootState(r) for r in dict.fromkeys(os.path.abspath(r) for r in roots)}
        self._apply, self._catch_up, self._on_error = apply, catch_up, on_error
        self._pending = _Pending(self.options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._native: Any = None
        self._polling: FolderPoller | None = None
        self._handler: Any = None
        self._limit_seen = _LimitSeen()
        self._limit_hit = False  # after a watch limit, the rest is polled
        self._rescan: set[str] = set()  # roots to scan as soon as possible
        self._next_rescan = 0.0
        self._retry_at = 0.0  # a catch-up scan that found the index busy waits until then
        self._lock = threading.Lock()
        self.batches = 0
        self.errors = 0

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start observing and the thread that applies batches (the first catch-up scan runs in it).

        Raises:
            MissingExtraError: watchdog is not installed.
        """
        self._limit_seen = _LimitSeen()
        logging.getLogger(_INOTIFY_LOGGER).addHandler(self._limit_seen)
        self._native = _observer()()
        # inotify reports close-after-write; FSEvents and Windows do not.
        self._handler = _handler(self._pending, closes=type(self._native).__name__ == "InotifyObserver",
                                 extensions=self.extensions)
        self._polling = FolderPoller(self._pending, self.options.poll_interval, self.options.settle,
                                     self.extensions)
        self._native.start()
        self._polling.start()
        for root in self.roots.values():
            self._check_root(root, first=True)
        self._rescan = {r.path for r in self.roots.values() if r.mode != "offline"}
        self._next_rescan = self._due()
        self._thread = threading.Thread(target=self._run, name="searchindex-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop: the batch in flight is finished (a catch-up scan stops after its batch in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        logging.getLogger(_INOTIFY_LOGGER).removeHandler(self._limit_seen)
        if self._polling is not None:
            self._polling.stop()
        if self._native is not None:
            self._native.stop()
        for thread in (self._native, self._polling):
            if thread is not None and thread.is_alive():
                thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the watcher's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def modes(self) -> dict[str, str]:
        """Root folder -> ``events``, ``polling`` or ``offline``."""
        with self._lock:
            return {r.path: r.mode for r in self.roots.values()}

    def rescan(self) -> None:
        """Ask for a catch-up scan of the online roots as soon as possible."""
        with self._lock:
            self._rescan |= {r.path for r in self.roots.values() if r.mode != "offline"}

    # -- the roots ----------------------------------------------------------

    def _due(self) -> float:
        interval = self.options.rescan_interval
        return time.monotonic() + interval if interval > 0 else float("inf")

    @staticmethod
    def _online(root: RootState) -> bool:
        if not os.path.isdir(root.path):
            return False
        return not (root.was_mount and not os.path.ismount(root.path))

    def _check_root(self, root: RootState, first: bool = False, unwatched: Sequence[str] = ()) -> None:
        """Follow a root going offline or coming back, or losing its watches (``unwatched``: folders
        that could not be watched, from watchdog's log)."""
        limited = any(p == root.path or under(p, [root.path]) for p in unwatched)
        online = self._online(root)
        if first and online:
            root.was_mount = os.path.ismount(root.path)
        if online and root.mode == "offline":
            if not first:
                log.warning("%s is back: watching it again and scanning it", root.path)
                with self._lock:
                    self._rescan.add(root.path)
            self._schedule(root)
        elif not online and root.mode != "offline":
            log.warning("%s is gone (deleted, unmounted or offline): its indexed photos are kept; "
                        "watching for it to come back", root.path)
            self._unschedule(root)
            self._pending.forget_below(root.path)
            with self._lock:
                root.mode = "offline"
        elif not online and first:
            log.warning("%s is not there (offline?): its indexed photos are kept; watching for it to appear",
                        root.path)
        elif root.mode == "events" and (not self._emitter_alive(root) or limited):
            # A folder made since that got no watch (the limit), or an emitter that died: poll instead.
            self._unschedule(root)
            self._limit_reached(root.path, None)
            self._schedule(root)
            with self._lock:
                self._rescan.add(root.path)

    def _schedule(self, root: RootState) -> None:
        root.fs_type = mount_type(root.path)
        poll = self.options.polling
        use_polling = self._limit_hit or poll is True or (poll is None and needs_polling(root.fs_type))
        if not use_polling:
            try:
                watch = self._native.schedule(self._handler, root.path, recursive=True)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                self._limit_reached(root.path, exc)
            else:
                with self._lock:
                    root.watch, root.mode = watch, "events"
                log.info("watching %s (events)", root.path)
                return
        assert self._polling is not None  # started
        self._polling.add(root.path)
        with self._lock:
            root.watch, root.mode = root.path, "polling"
        why = f"a {root.fs_type} file system" if needs_polling(root.fs_type) and poll is None else "polling"
        log.info("watching %s (%s: looking every %g s)", root.path, why, self.options.poll_interval)

    def _limit_reached(self, path: str, exc: OSError | None) -> None:
        if not self._limit_hit:
            what = exc.strerror if exc is not None and exc.strerror else "the inotify watch limit was reached"
            log.warning("%s while watching %s: it and the folders after it are polled every %g s instead; %s",
                        what, path, self.options.poll_interval, _LIMIT_HINT)
        self._limit_hit = True

    def _unschedule(self, root: RootState) -> None:
        watch, root.watch = root.watch, None
        if watch is None:
            return
        if root.mode == "polling":
            assert self._polling is not None
            self._polling.remove(root.path)
            return
        try:
            self._native.unschedule(watch)
        except (KeyError, OSError):
            pass

    def _emitter_alive(self, root: RootState) -> bool:
        for emitter in list(getattr(self._native, "emitters", ())):
            if emitter.watch == root.watch:
                return bool(emitter.is_alive())
        return True

    # -- the loop -----------------------------------------------------------

    def _run(self) -> None:
        last_check = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            unwatched = self._limit_seen.take()
            if now - last_check >= 1.0 or unwatched:
                last_check = now
                for root in list(self.roots.values()):
                    self._guard(self._check_root, root, False, unwatched)
                if self._pending.overflowed:
                    self._pending.overflowed = False
                    log.warning("more than %d changes at once: scanning the folders instead",
                                self.options.max_pending)
                    self.rescan()
                if now >= self._next_rescan:
                    self._next_rescan = self._due()
                    self.rescan()
            with self._lock:
                todo = sorted(self._rescan)
            if todo and now >= self._retry_at:
                outcome = self._guard(self._catch_up, todo, self._stop)
                if outcome is _BUSY:  # a scan is not free: ask again a little later
                    self._retry_at = time.monotonic() + 5.0
                else:  # done, or failed: tried again at the next interval (or when asked)
                    with self._lock:
                        self._rescan -= set(todo)
                continue
            batch = self._pending.take()
            if batch is not None:
                batch = self._without_offline(batch)
            if batch:
                outcome = self._guard(self._apply, batch)
                if outcome is _BUSY:  # another writer: the batch waits for it
                    self._pending.put_back(batch)
                    self._stop.wait(1.0)
                elif outcome is _FAILED:  # dropped; a catch-up scan a minute later finds what it held
                    self._next_rescan = min(self._next_rescan, time.monotonic() + 60.0)
                else:
                    self.batches += 1
                continue
            self._stop.wait(0.1)

    def _without_offline(self, batch: ChangeBatch) -> ChangeBatch:
        """Drop what lies below roots that are offline now: a vanished (or unmounted) root is not a
        deletion, and a file or folder below it that cannot be found now would be taken for one.
        The roots themselves are never removed as folders."""
        offline = [r.path for r in self.roots.values() if not self._online(r)]

        def keep(paths: Iterable[str]) -> tuple[str, ...]:
            return tuple(p for p in paths if not any(p == o or under(p, [o]) for o in offline))

        roots = list(self.roots)
        return ChangeBatch(keep(batch.changed), keep(batch.vanished),
                           keep(f for f in batch.vanished_folders if f not in roots), keep(batch.folders),
                           keep(batch.synced_folders))

    def _guard(self, fn: Callable[..., object], *args: Any) -> object:
        """Run ``fn``; an error is logged and reported, and the watcher goes on."""
        try:
            return fn(*args)
        except IndexLockedError as exc:
            log.info("another process is writing the index (%s): waiting", exc)
            return _BUSY
        except SearchIndexError as exc:
            self.errors += 1
            log.error("%s", exc)
            if self._on_error is not None:
                self._on_error(exc)
            return _FAILED
        except Exception as exc:  # a watcher in a service must outlive one bad batch
            self.errors += 1
            log.exception("watching failed on %s", getattr(fn, "__name__", fn))
            if self._on_error is not None:
                self._on_error(exc)
            return _FAILED


_FAILED: Any = object()
_BUSY: Any = object()

