"""The offline demo command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import errors_as_click, progress_bar


@click.command()
@click.option("--index", "index_path", type=click.Path(path_type=Path), default=Path("indexes/demo"),
              show_default=True, help="Where the demo images and index go.")
@click.option("--count", default=300, show_default=True, type=click.IntRange(min=10),
              help="How many synthetic images to generate.")
def demo(index_path: Path, count: int) -> None:
    """Offline demo: generate shape photos, index them with tiny-shapes, run three searches."""
    from ..demo.run import run_demo

    with errors_as_click(), progress_bar("indexing") as bar:
        report = run_demo(index_path, count=count, progress=bar)
    s = report.summary
    click.echo(f"Demo index {report.index_path}: {s.indexed} indexed, {s.unchanged} unchanged "
               f"({s.seconds:.1f} s); images in {report.images_dir}")
    for q in report.queries:
        click.echo(f'\nsearchindex search "{q.text}" --index {report.index_path} -k {len(q.results)}')
        click.echo(f"  {q.correct}/{len(q.results)} results show what was asked for")
        for r in q.results:
            click.echo(f"  {r.rank:>2}  {r.score:.3f}  {os.path.relpath(r.path)}")
