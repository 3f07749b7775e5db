"""What decides how a folder is watched: its file system (network and FUSE mounts are polled), the
inotify watch limit (reached: poll the rest and say once how to raise it), and watchdog itself (optional)."""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Any

from ..errors import MissingExtraError
from .plan import under

__all__ = ["INOTIFY_LOGGER", "LIMIT_HINT", "NETWORK_FILE_SYSTEMS", "LimitSeen", "mount_type", "needs_polling",
           "observer", "require_watchdog"]


#: File-system types whose changes made elsewhere send no local events: polled.
NETWORK_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "davfs", "fuse", "fuseblk", "sshfs", "virtiofs", "vboxsf", "vmhgfs", "prl_fs", "beegfs", "orangefs",
})


LIMIT_HINT = ("raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (and "
               "fs.inotify.max_user_instances=1024; add them to /etc/sysctl.conf to keep them)")


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
    observer()


def observer() -> Any:
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


class LimitSeen(logging.Handler):
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
INOTIFY_LOGGER = "watchdog.observers.inotify"
