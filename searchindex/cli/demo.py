"""The offline demo command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import display, errors_as_click, progress_bar


@click.command()
@click.option("--index", "index_path", type=click.Path(path_type=Path), default=None,
              help="Where the demo images and index go. [default: demo in the platform's user-data folder, "
                   "e.g. ~/.local/share/searchindex/demo]")
@click.option("--count", default=300, show_default=True, type=click.IntRange(min=10),
              help="How many synthetic images to generate.")
def demo(index_path: Path | None, count: int) -> None:
    """Offline demo: generate shape photos, index them with tiny-shapes, run three searches."""
    from ..demo.run import run_demo
    from ..store.folder import demo_index_path

    path = index_path if index_path is not None else demo_index_path()
    with errors_as_click(), progress_bar("indexing") as bar:
        report = run_demo(path, count=count, progress=bar)
    s = report.summary
    click.echo(f"Demo index {display(str(report.index_path))}: {s.indexed} indexed, {s.unchanged} unchanged "
               f"({s.seconds:.1f} s); images in {display(str(report.images_dir))}")
    for q in report.queries:
        click.echo(f'\nsearchindex search "{q.text}" --index {_shown(str(report.index_path))} -k {len(q.results)}')
        click.echo(f"  {q.correct}/{len(q.results)} results show what was asked for")
        for r in q.results:
            click.echo(f"  {r.rank:>2}  {r.score:.3f}  {_shown(r.path)}")


def _shown(path: str) -> str:
    """A path relative to the current folder when it is below it (``indexes/demo/...``), else absolute."""
    relative = os.path.relpath(path)
    return display(path if relative.startswith(os.pardir) else relative)
