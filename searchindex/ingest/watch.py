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
  other machines: they are polled (:func:`mount_type` reads ``/proc/mounts``);
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

__all__ = ["NETWORK_FILE_SYSTEMS", "ChangeBatch", "FolderWatcher", "RootState", "WatchOptions", "mount_type",
           "needs_polling"]

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

    def __bool__(self) -> bool:
        return bool(self.changed or self.vanished or self.vanished_folders or self.folders)

    def __len__(self) -> int:
        return len(self.changed) + len(self.vanished) + len(self.vanished_folders) + len(self.folders)


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
    closes: bool = False  # its observer reports closes: wait for one (or for ``close_wait``)


def _is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


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


def _observers() -> tuple[Any, Any]:
    """watchdog's native observer class and its polling one.

    Raises:
        MissingExtraError: watchdog is not installed (``searchindex[watch]``).
    """
    try:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver
    except ImportError:
        raise MissingExtraError("watching folders needs watchdog: pip install 'searchindex[watch]'",
                                extra="watch") from None
    return Observer, PollingObserver


class _Pending:
    """The changes seen and not yet handed over, bounded; fed by the observers' threads."""

    def __init__(self, options: WatchOptions) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.files: dict[str, _Seen] = {}
        self.gone: dict[str, float] = {}
        self.gone_folders: dict[str, float] = {}
        self.folders: dict[str, float] = {}
        self.last_event = 0.0
        self.first_event = 0.0
        self.overflowed = False

    def _touch(self, now: float) -> None:
        if not (self.files or self.gone or self.gone_folders or self.folders):
            self.first_event = now
        self.last_event = now
        if len(self.files) + len(self.gone) + len(self.folders) + len(self.gone_folders) > self.options.max_pending:
            # A flood beyond the bound: forget the single changes, scan the folders instead.
            self.files.clear()
            self.gone.clear()
            self.folders.clear()
            self.gone_folders.clear()
            self.overflowed = True

    def file_written(self, path: str, *, closed: bool = False, closes: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            self.gone.pop(path, None)
            seen = self.files.get(path)
            if seen is None:
                self.files[path] = _Seen(now, closed, closes=closes)
            else:  # written again after a close: wait for the next close (or for it to settle)
                seen.last, seen.closed = now, closed
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
            for table in (self.files, self.gone, self.gone_folders, self.folders):
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
            self.first_event = min(self.first_event or now, now)

    def take(self) -> ChangeBatch | None:
        """The changes ready now, or ``None``."""
        o = self.options
        now = time.monotonic()
        with self.lock:
            if not (self.files or self.gone or self.gone_folders or self.folders):
                return None
            quiet = now - self.last_event >= o.debounce
            if not quiet and now - self.first_event < o.max_wait:
                return None
            changed: list[str] = []
            for path, seen in list(self.files.items()):
                if now - seen.last < o.debounce:
                    continue
                if not seen.closed and (not self._settled(path, seen, now)
                                        or (seen.closes and now - seen.last < o.close_wait)):
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
            for table, keys in ((self.gone, gone), (self.gone_folders, gone_folders), (self.folders, folders)):
                for k in keys:
                    del table[k]
            if self.files or self.gone or self.gone_folders or self.folders:
                self.first_event = now
        batch = ChangeBatch(tuple(changed), tuple(gone), tuple(gone_folders), tuple(folders))
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


def _handler(pending: _Pending, closes: bool) -> Any:
    """A watchdog event handler feeding ``pending``; ``closes``: its observer reports
    close-after-write events (a file being written is then waited for until closed)."""
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
                if _is_image(src):
                    pending.file_gone(src)
                if dest and _is_image(dest):
                    pending.file_written(dest, closed=True)  # a rename moves a complete file
            elif not _is_image(src):
                return
            elif kind == "deleted":
                pending.file_gone(src)
            elif kind == "closed":
                pending.file_written(src, closed=True)
            elif kind in ("created", "modified"):
                pending.file_written(src, closes=closes)

    return Handler()


class FolderWatcher:
    """Watch ``roots`` and hand their changes to ``apply`` in batches, from a thread of its own.

    Args:
        roots: absolute folder paths (missing ones are offline until they appear).
        apply: runs one :class:`ChangeBatch` through the indexing path; may raise
            :class:`~searchindex.errors.IndexLockedError` (the batch is kept and tried again).
        catch_up: brings the index in line with these (online) roots by a full scan.
        options: see :class:`WatchOptions`.
        on_error: told of each error the watcher goes on after.
    """

    def __init__(self, roots: Sequence[str], apply: Callable[[ChangeBatch], object],
                 catch_up: Callable[[list[str], threading.Event], object], options: WatchOptions | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.options = options or WatchOptions()
        self.roots = {r: RootState(r) for r in dict.fromkeys(os.path.abspath(r) for r in roots)}
        self._apply, self._catch_up, self._on_error = apply, catch_up, on_error
        self._pending = _Pending(self.options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._native: Any = None
        self._polling: Any = None
        self._handler: Any = None
        self._poll_handler: Any = None
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
        native, polling = _observers()
        self._native = native()
        # inotify reports close-after-write; FSEvents, Windows and polling do not.
        self._handler = _handler(self._pending, closes=type(self._native).__name__ == "InotifyObserver")
        self._poll_handler = _handler(self._pending, closes=False)
        self._polling = polling(timeout=self.options.poll_interval)
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
        for observer in (self._native, self._polling):
            if observer is not None:
                observer.stop()
        for observer in (self._native, self._polling):
            if observer is not None and observer.is_alive():
                observer.join(timeout)

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

    def _check_root(self, root: RootState, *, first: bool = False) -> None:
        """Follow a root going offline or coming back."""
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
        elif root.mode == "events" and not self._emitter_alive(root):
            # An emitter that died (a watch limit reached for a folder made since): poll instead.
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
        watch = self._polling.schedule(self._poll_handler, root.path, recursive=True)
        with self._lock:
            root.watch, root.mode = watch, "polling"
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
        for observer in (self._native, self._polling):
            try:
                observer.unschedule(watch)
            except (KeyError, OSError):
                continue

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
            if now - last_check >= 1.0:
                last_check = now
                for root in list(self.roots.values()):
                    self._guard(self._check_root, root)
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
                if outcome is _BUSY:
                    self._retry_at = time.monotonic() + 1.0
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
        """Drop removals below roots that are offline now (a vanished root is not a deletion)."""
        offline = [r.path for r in self.roots.values() if not self._online(r)]

        def keep(paths: Iterable[str]) -> tuple[str, ...]:
            return tuple(p for p in paths if not any(p == o or under(p, [o]) for o in offline))

        roots = list(self.roots)
        return ChangeBatch(batch.changed, keep(batch.vanished),
                           keep(f for f in batch.vanished_folders if f not in roots), batch.folders)

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

