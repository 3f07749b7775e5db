"""What every command shares: the --index option, opening an index, errors, progress bars, Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..defaults import DEVICES, PRECISIONS
from ..errors import (
    EmbeddingFileError,
    EngineError,
    FolderNotFoundError,
    IndexCorruptError,
    IndexExistsError,
    IndexFolderError,
    IndexLockedError,
    IndexNotFoundError,
    IndexSchemaError,
    IndexTypeError,
    IndexWriteError,
    MissingExtraError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    QueryError,
    SearchIndexError,
    UnknownModelError,
    WeightsUnavailableError,
)

if TYPE_CHECKING:  # the library (numpy, SQLAlchemy, Pillow) loads only when a command runs
    from ..index.facade import Index
    from ..ingest.exchange import ImportProgress
    from ..results import CaptionProgress, IndexProgress

__all__ = ["DEVICE", "EXIT_CODES", "EXIT_ERROR", "EXIT_USAGE", "PRECISION", "configure_logging", "display",
           "errors_as_click", "exit_code", "human_bytes", "index_option", "open_index", "progress_bar", "quiet",
           "resolve_index_path", "stop_on_sigint", "verbosity_options"]

DEVICE = click.Choice(list(DEVICES))
PRECISION = click.Choice(list(PRECISIONS))


def index_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--index", "index_path", type=click.Path(path_type=Path), default=None,
        help="Index folder. Default: $SEARCHINDEX_HOME, else the platform's user-data folder.",
    )(f)


def resolve_index_path(path: Path | None) -> Path:
    from ..store.folder import default_index_path

    return path if path is not None else default_index_path()


#: A command failed: what was asked for is well formed, but could not be done here and now.
EXIT_ERROR = 1
#: A usage error: a bad option, argument or value, whether click or the library found it out.
EXIT_USAGE = 2

#: The exit code of each library error (the most specific class listed wins); docs/cli.md shows
#: this table and a test holds the two together.  What the user typed is wrong -> EXIT_USAGE, as
#: click's own checks of types, ranges, choices and paths; the rest -> EXIT_ERROR.
EXIT_CODES: dict[type[SearchIndexError], int] = {
    QueryError: EXIT_USAGE,  # also ParameterError: a bad search value, date, glob, term, query image, tag
    NotFoundError: EXIT_USAGE,  # an image id, concept or label the index does not have
    IndexTypeError: EXIT_USAGE,  # --index-type that FAISS cannot build
    UnknownModelError: EXIT_USAGE,  # --model that names no model
    FolderNotFoundError: EXIT_USAGE,  # a FOLDER that is not there (as click.Path(exists=True))
    IndexNotFoundError: EXIT_ERROR,
    IndexExistsError: EXIT_ERROR,
    IndexFolderError: EXIT_ERROR,
    ModelMismatchError: EXIT_ERROR,
    WeightsUnavailableError: EXIT_ERROR,
    ModelError: EXIT_ERROR,
    IndexLockedError: EXIT_ERROR,
    IndexWriteError: EXIT_ERROR,
    IndexSchemaError: EXIT_ERROR,
    IndexCorruptError: EXIT_ERROR,
    MissingExtraError: EXIT_ERROR,
    EngineError: EXIT_ERROR,
    EmbeddingFileError: EXIT_ERROR,
    SearchIndexError: EXIT_ERROR,
}


def exit_code(exc: SearchIndexError) -> int:
    """The exit code for a library error: that of the nearest class in :data:`EXIT_CODES`."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_ERROR


@contextmanager
def errors_as_click() -> Iterator[None]:
    """Turn library errors into click errors: one line on stderr, the exit code of :func:`exit_code`."""
    try:
        yield
    except SearchIndexError as exc:
        if exit_code(exc) == EXIT_USAGE:  # shown as click shows its own bad values
            raise click.UsageError(str(exc)) from None
        raise click.ClickException(str(exc)) from None


_VERBOSITY = "searchindex.verbosity"


def _add_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """-v/-q before or after the command name add up; logging follows the sum (-1 quiet ... 2 debug)."""
    if not value or ctx.resilient_parsing:
        return
    meta = ctx.find_root().meta
    meta[_VERBOSITY] = meta.get(_VERBOSITY, 0) + (value if param.name == "verbose" else -value)
    _configure_logging(meta[_VERBOSITY])


def configure_logging() -> None:
    """Set up logging for the verbosity given so far (the default when no -v/-q was given)."""
    ctx = click.get_current_context(silent=True)
    _configure_logging(ctx.find_root().meta.get(_VERBOSITY, 0) if ctx is not None else 0)


def _configure_logging(verbosity: int) -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ours = logging.getLogger("searchindex")
    if verbosity <= 0:
        # open_clip logs on the root logger at every model load (and its failures
        # reach the user through our own error message anyway).
        logging.getLogger().setLevel(logging.CRITICAL)
        ours.setLevel(logging.WARNING if verbosity == 0 else logging.ERROR)
    else:
        logging.getLogger().setLevel(logging.WARNING if verbosity == 1 else logging.DEBUG)
        ours.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def verbosity_options(f: Any) -> Any:
    """``-v``/``-q``, taken before the command name (``searchindex -q search``) and after it."""
    for option in (
        click.option("-q", "--quiet", count=True, expose_value=False, callback=_add_verbosity,
                     help="Quieter stderr: no log warnings, no progress bar."),
        click.option("-v", "--verbose", count=True, expose_value=False, callback=_add_verbosity,
                     help="More log output on stderr (-vv for debug)."),
    ):
        f = option(f)
    return f


def quiet() -> bool:
    """Whether -q was given (more -q than -v) to the command running now."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_root().meta.get(_VERBOSITY, 0) < 0


@contextmanager
def open_index(index_path: Path | None, **options: str) -> Iterator[Index]:
    """Open the index at --index (or the default one), turning library errors into CLI errors."""
    from ..index.facade import Index

    with errors_as_click(), Index.open(resolve_index_path(index_path), **options) as idx:
        yield idx


@contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[IndexProgress | CaptionProgress | ImportProgress], None]]:
    from tqdm import tqdm

    bar: Any = None

    def update(p: IndexProgress | CaptionProgress | ImportProgress) -> None:
        nonlocal bar
        if bar is None:
            # disable=None: no bar when stderr is not a terminal (CI, pipes).
            bar = tqdm(total=p.total, desc=desc, unit="img", disable=True if quiet() else None, file=sys.stderr)
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
    """First Ctrl-C or SIGTERM: finish the batch in flight, then stop. A second one: stop now.

    SIGTERM (``kill``, a service manager, a container stopping) gets the same orderly
    stop as Ctrl-C: the batch in flight is committed and the command says how to resume.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        click.echo(f"\n{what}: stopping after the batch in flight is committed ({what} again to abort now)...",
                   err=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse nan and inf, which click's FloatRange lets through (nan compares false with every bound)."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


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


def echo_failures(failures: Sequence[Any], verb: str = "skipped", *, total: int | None = None, more: str = "",
                  shown: int = 20) -> None:
    """The first ``shown`` of a run's files that could not be used (``path`` and ``reason`` each), on
    stderr, then how many more; ``total`` when the run kept only some of them; ``more``: where the rest are."""
    for f in failures[:shown]:
        click.echo(f"  {verb + ': ' if verb else ''}{display(f.path)}: {f.reason}", err=True)
    left = (len(failures) if total is None else total) - shown
    if left > 0:
        click.echo(f"  ... and {left} more{more}", err=True)
