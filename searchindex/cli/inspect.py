"""Commands that describe an index: info, errors, duplicates, check, repair."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..defaults import DEFAULT_DUPLICATE_THRESHOLD
from .common import display, errors_as_click, human_bytes, index_option, open_index, resolve_index_path

if TYPE_CHECKING:
    from ..store.check import CheckReport


@click.command()
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def info(index_path: Path | None, as_json: bool) -> None:
    """Show an index's model, image count, captions per model, folders indexed, vector size, FAISS index type
    and sizes."""
    with open_index(index_path) as idx:
        data = idx.info()
    if as_json:
        click.echo(json.dumps(data.to_dict()))
        return
    sha = f" (sha256 {data.checkpoint_sha256[:12]})" if data.checkpoint_sha256 else ""
    click.echo(f"index:      {data.path}")
    click.echo(f"model:      {data.model} / {data.pretrained}{sha}")
    click.echo(f"images:     {data.images} ({data.failures} files on record as failed: searchindex errors)")
    if data.videos:
        click.echo(f"videos:     {data.videos} of them, {data.video_frames} frames kept")
    click.echo(f"vectors:    {data.dim}-d, FAISS {data.faiss_factory} (index type: {data.index_type})")
    if data.nprobe is not None:
        tuned = f", recall@10 {data.tuned_recall:.3f} when tuned" if data.tuned_recall is not None else ""
        click.echo(f"search:     nprobe {data.nprobe}{tuned} (built at {data.built_at} images)")
    for model, n in sorted(data.captions.items()):
        click.echo(f"captions:   {n} by {model}")
    if data.faces.get("images_searched"):
        f = data.faces
        click.echo(f"faces:      {f['faces']} in {f['images_searched']} images searched; {f['persons']} persons "
                   f"({f['named_persons']} named), {f['faces_grouped']} faces in a person")
    for folder in data.folders:
        click.echo(f"folder:     {display(folder)}")
    if data.ocr.get("read"):
        click.echo(f"text:       {data.ocr['with_text']} of {data.ocr['read']} images read have text "
                   f"({data.ocr['lines']} lines; searchindex ocr)")
    click.echo(f"catalog:    {human_bytes(data.catalog_bytes)}")
    click.echo(f"vector file: {human_bytes(data.vector_bytes)}")
    click.echo(f"FAISS memory: {human_bytes(data.faiss_memory_bytes)} ({data.bytes_per_image:.0f} B/image)")


@click.command()
@index_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per failure (path, reason, size, mtime_ns).")
def errors(index_path: Path | None, as_json: bool) -> None:
    """List the files that could not be indexed, with the reason for each."""
    with open_index(index_path) as idx:
        failures = idx.failures()
    for f in failures:
        click.echo(json.dumps(f.to_dict()) if as_json else f"{display(f.path)}: {f.reason}")
    if not failures and not as_json:
        click.echo("No failures recorded.", err=True)


@click.command()
@index_option
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=None,
              help=f"Cosine similarity from which two images count as near-identical. "
                   f"[default: {DEFAULT_DUPLICATE_THRESHOLD}]")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per group: {group, images: [{path, image_id, width, height, size, "
                   "mtime_ns, taken_at, similarity}]}, best copy first.")
def duplicates(index_path: Path | None, threshold: float | None, as_json: bool) -> None:
    """List groups of near-identical images (resized, recompressed, cropped or edited copies).

    Each group shows its best copy first (largest resolution, then oldest), then
    the other copies with their similarity to it.
    """
    with open_index(index_path) as idx:
        groups = idx.duplicates(DEFAULT_DUPLICATE_THRESHOLD if threshold is None else threshold)
    for n, group in enumerate(groups, 1):
        if as_json:
            click.echo(json.dumps({"group": n, **group.to_dict()}))
            continue
        click.echo(f"group {n}: {len(group.images)} images")
        for i, im in enumerate(group.images):
            label = "  best" if i == 0 else f"{im.similarity:>6.3f}"
            click.echo(f"  {label}  {f'{im.width}x{im.height}':>11}  {display(im.path)}")
    if not groups and not as_json:
        click.echo("No near-duplicates found.", err=True)
    elif not as_json:
        copies = sum(len(g.images) - 1 for g in groups)
        click.echo(f"{len(groups)} groups, {copies} copies besides the best ones.", err=True)


def _print_findings(report: CheckReport) -> None:
    for f in report.findings:
        click.echo(f"{f.severity}: {f.area}: {display(f.message)}")
        for p in f.paths:
            click.echo(f"    {display(p)}")
        if f.count > len(f.paths) and f.paths:
            click.echo(f"    ... and {f.count - len(f.paths)} more")


@click.command()
@index_option
@click.option("--no-files", is_flag=True, help="Skip comparing the catalog with the files on disk (a stat per image).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def check(index_path: Path | None, no_files: bool, as_json: bool) -> None:
    """Check an index for damage without changing it; exit code 1 when something is damaged.

    Runs SQLite's integrity check on the catalog, compares the vector file with the
    catalog (identity, generation, dimension, count, ids, the vectors themselves), the
    catalog with the disk (missing, changed, unreadable files), and lists temporary
    files left by an interrupted writer. Errors need `searchindex repair`; warnings are
    dealt with by the next `index` run (or by repair).
    """
    from ..index.facade import Index

    path = resolve_index_path(index_path)
    with errors_as_click():
        report = Index.check(path, files=not no_files)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        _print_findings(report)
        errors_ = sum(f.severity == "error" for f in report.findings)
        warnings_ = len(report.findings) - errors_
        state = "OK" if report.ok else "DAMAGED: run `searchindex repair`"
        click.echo(f"{path}: {state} ({report.images if report.images is not None else '?'} images, "
                   f"{report.vectors if report.vectors is not None else '?'} vectors, {errors_} errors, "
                   f"{warnings_} warnings).")
    if not report.ok:
        sys.exit(1)


@click.command()
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def repair(index_path: Path | None, as_json: bool) -> None:
    """Repair an index: recover a damaged catalog, rebuild the vector file, remove leftovers.

    A damaged catalog is kept aside as catalog.sqlite.damaged-TIME and every row that
    can still be read is copied into a fresh one; the vector file is rebuilt from the
    catalog; temporary files of interrupted writers are removed. Photos are never
    touched. Ends with a check of the result (exit code 1 if it still finds damage).
    """
    from ..index.facade import Index

    path = resolve_index_path(index_path)
    with errors_as_click():
        report = Index.repair(path)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        if report.swap_finished:
            click.echo(f"Interrupted reindex: {report.swap_finished}.")
        if report.catalog_recovered:
            lost = report.images_lost
            other = sum(n for table, n in report.rows_lost.items() if table != "images")
            click.echo(f"Catalog recovered: {report.rows_recovered.get('images', 0)} images"
                       + (f"; {lost} images lost" + ("" if report.images_lost_exact else " (an estimate, from "
                          "the last vector file and the rows that could not be read)") if lost else "")
                       + (f"; {other} other rows (tags, texts, captions) unreadable" if other else "")
                       + f". The damaged file is kept as {report.damaged_copy}.")
            if lost or not report.images_lost_exact:
                folders = " ".join(shlex.quote(f) for f in report.reindex_folders) or "YOUR-PHOTO-FOLDERS"
                click.echo(f"To add the lost images back, index their folders again: searchindex index {folders} "
                           f"--index {shlex.quote(str(path))}")
        if report.reindex_removed:
            click.echo(f"Removed the new index an unfinished reindex left in {report.reindex_removed}.")
        click.echo(f"Vector file rebuilt from the catalog ({report.vectors_rebuilt} vectors).")
        if report.removed:
            click.echo(f"Removed {len(report.removed)} leftover files of the index: {', '.join(report.removed)}")
        if report.check is not None:
            _print_findings(report.check)
    if report.check is not None and not report.check.ok:
        sys.exit(1)
