"""What every command shares: the --index option, opening an index, errors, progress bars, Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..defaults import DEVICES, PRECISIONS
from ..errors import SearchIndexError

if TYPE_CHECKING:  # the library (numpy, SQLAlchemy, Pillow) loads only when a command runs
    from ..index import Index
    from ..results import CaptionProgress, IndexProgress

__all__ = ["DEVICE", "PRECISION", "display", "errors_as_click", "human_bytes", "index_option", "open_index",
           "progress_bar", "resolve_index_path", "stop_on_sigint"]

DEVICE = click.Choice(list(DEVICES))
PRECISION = click.Choice(list(PRECISIONS))


def index_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--index", "index_path", type=click.Path(path_type=Path), default=None,
        help="Index folder. Default: $SEARCHINDEX_HOME, else the platform's user-data folder.",
    )(f)


def resolve_index_path(path: Path | None) -> Path:
    from ..index import default_index_path

    return path if path is not None else default_index_path()


@contextmanager
def errors_as_click() -> Iterator[None]:
    """Turn library errors into click errors (message on stderr, exit code 1)."""
    try:
        yield
    except SearchIndexError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def open_index(index_path: Path | None, **options: str) -> Iterator[Index]:
    """Open the index at --index (or the default one), turning library errors into CLI errors."""
    from ..index import Index

    with errors_as_click(), Index.open(resolve_index_path(index_path), **options) as idx:
        yield idx


@contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[IndexProgress | CaptionProgress], None]]:
    from tqdm import tqdm

    bar: Any = None

    def update(p: IndexProgress | CaptionProgress) -> None:
        nonlocal bar
        if bar is None:
            # disable=None: no bar when stderr is not a terminal (CI, pipes).
            bar = tqdm(total=p.total, desc=desc, unit="img", disable=None, file=sys.stderr)
        bar.n = p.done
        bar.set_postfix(failed=p.failed, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def stop_on_sigint() -> Iterator[threading.Event]:
    """First Ctrl-C: finish the batch in flight, then stop. Second Ctrl-C: stop now."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("\nStopping after the batch in flight is committed (Ctrl-C again to abort now)...", err=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def display(path: str) -> str:
    """A path for human eyes: undecodable bytes shown as \\xNN instead of crashing the output."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
