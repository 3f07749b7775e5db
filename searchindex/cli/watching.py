"""The watch command: keep the index live as its folders change (see :mod:`searchindex.ingest.watch`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import DEVICE, display, errors_as_click, finite, index_option, open_index, quiet, stop_on_sigint

if TYPE_CHECKING:
    from ..results import IndexSummary


def describe_change(s: IndexSummary) -> str:
    """One line for what a batch (or catch-up scan) changed."""
    parts = [f"{n} {what}" for n, what in ((s.new, "new"), (s.modified, "modified"), (s.moved, "moved"),
                                           (s.touched, "touched"), (s.deleted, "removed"), (s.failed, "failed"))
             if n]
    return ", ".join(parts) or "nothing changed"


@click.command()
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@index_option
@click.option("--debounce", default=0.5, show_default=True, type=click.FloatRange(min=0), callback=finite,
              help="Seconds without a new event before the changes seen form a batch.")
@click.option("--rescan-interval", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              callback=finite, help="Seconds between catch-up scans of the folders (one runs at start; 0: only then).")
@click.option("--poll-interval", default=10.0, show_default=True, type=click.FloatRange(min=0.1), callback=finite,
              help="Seconds between two looks at a polled folder (network and FUSE mounts, --polling).")
@click.option("--polling/--events", "polling", default=None,
              help="Poll every folder, or use events even on network mounts. Default: events, polling "
                   "where events do not come (network and FUSE mounts, an inotify limit reached).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images per model call.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--videos/--no-videos", "videos", default=None,
              help="Watch the videos too, as `searchindex index` indexes them. [default: when PyAV is installed] "
                   "--no-videos keeps the videos indexed before.")
def watch(folders: Sequence[Path], index_path: Path | None, debounce: float, rescan_interval: float,
          poll_interval: float, polling: bool | None, batch_size: int, device: str, videos: bool | None) -> None:
    """Keep the index up to date as FOLDERS change (default: the folders indexed so far).

    New and changed images are searchable seconds after they are written;
    renamed and moved ones keep their embedding (no model call); deleted ones
    leave the index. A folder that disappears (unmounted, deleted) is taken
    for offline: its images stay, and it is scanned when it is back. A scan at
    start and every --rescan-interval catches up with what happened meanwhile.
    New images get what the index uses: tags, captions, their text read (after
    `searchindex ocr`, in its languages) and their faces (after `searchindex
    faces`, with its detector).
    The writer lock is taken per batch, so `searchindex index` can run
    meanwhile. Ctrl-C (or SIGTERM) stops after the batch in flight.
    """
    from ..ingest.watch import WatchOptions

    with open_index(index_path, device=device) as idx, stop_on_sigint() as stop:
        options = WatchOptions(debounce=debounce, settle=max(1.0, debounce), rescan_interval=rescan_interval,
                               poll_interval=poll_interval, polling=polling)

        def changed(summary: IndexSummary) -> None:
            if not quiet():
                click.echo(f"{time.strftime('%H:%M:%S')} {describe_change(summary)}", err=True)

        with errors_as_click():
            handle = idx.watch([str(f) for f in folders] or None, on_change=changed, options=options,
                               batch_size=batch_size, videos=videos)
        with errors_as_click():
            try:
                if not quiet():
                    for folder, mode in handle.modes().items():
                        click.echo(f"Watching {display(folder)} ({mode})", err=True)
                    click.echo(f"Keeping {idx.path} live (Ctrl-C stops)", err=True)
                while handle.running and not stop.wait(0.5):
                    pass
            finally:
                handle.stop()
        if not quiet():
            click.echo(f"Stopped. {idx.path} holds {idx.count()} images.", err=True)
