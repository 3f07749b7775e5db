"""Zero-shot labels: tag, tags."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from ..results import TagCount
from .common import DEVICE, index_option, open_index


@click.command()
@index_option
@click.option("--labels", "labels", default=None, metavar="A,B,...", help="Comma-separated labels to define and apply.")
@click.option("--labels-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A file with labels, one per line (or comma-separated).")
@click.option("--templates", default="default", show_default=True, metavar="default|single|FILE",
              help="Prompt templates: the CLIP-paper ensemble, the single 'a photo of a {}.', or a file with one "
                   "template per line, each containing {}.")
@click.option("--remove", "remove", multiple=True, metavar="LABEL", help="Forget a label and its tags; repeatable.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per label (label, tagged, threshold, ...).")
def tag(index_path: Path | None, labels: str | None, labels_file: Path | None, templates: str,
        remove: Sequence[str], device: str, as_json: bool) -> None:
    """Tag every image with zero-shot labels (no training).

    Each label becomes a text classifier (a prompt-template ensemble) and a
    threshold calibrated on the collection; labels are stored, and images added
    by later `index` runs are tagged automatically. Without --labels, re-tags
    the stored labels (recalibrating their thresholds).
    """
    from ..enrich.tagging import read_labels

    with open_index(index_path, device=device) as idx:
        if remove:
            if labels or labels_file:
                raise click.UsageError("--remove cannot be combined with --labels/--labels-file")
            n = idx.untag(remove)
            click.echo(f"Removed {n} label(s).", err=True)
            return
        names: list[str] | None = None
        if labels is not None or labels_file is not None:
            names = read_labels(labels, [labels_file] if labels_file is not None else [])
        reports = idx.tag(names, templates=templates)
        total = idx.count()
    for r in reports:
        if as_json:
            click.echo(json.dumps(r.to_dict()))
        else:
            how = "calibrated on the collection" if r.calibrated else "score above the generic caption"
            click.echo(f"{r.label}: {r.tagged} of {total} images (threshold {r.threshold:+.3f}, {how})")


@click.command()
@index_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per label (label, images).")
def tags(index_path: Path | None, as_json: bool) -> None:
    """List the zero-shot labels of an index with how many images carry each."""
    with open_index(index_path) as idx:
        counts = idx.tags()
    for label, n in counts:
        click.echo(json.dumps(TagCount(label, n).to_dict()) if as_json else f"{n:>7}  {label}")
    if not counts and not as_json:
        click.echo("No labels yet (add some with `searchindex tag --labels a,b`).", err=True)
