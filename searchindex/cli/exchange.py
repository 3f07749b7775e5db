"""Commands that move embeddings in and out of an index as Parquet: export, import-embeddings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import click

from ..defaults import DEFAULT_MAX_FILE_MB
from .common import echo_failures, errors_as_click, index_option, open_index, progress_bar, resolve_index_path

__all__ = ["export", "import_embeddings"]


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@index_option
@click.option("--format", "fmt", type=click.Choice(["parquet"]), default="parquet", show_default=True,
              help="File format of the export.")
@click.option("--layout", type=click.Choice(["parquet", "clip-retrieval"]), default="parquet", show_default=True,
              help="parquet: OUT/part-*.parquet with an embedding column; clip-retrieval: OUT/img_emb/*.npy "
                   "plus OUT/metadata/*.parquet, as clip-retrieval's inference writes them.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def export(out: Path, index_path: Path | None, fmt: str, layout: str, as_json: bool) -> None:
    """Write every image's embedding, path, hash and metadata to the new folder OUT.

    One row per image (image_path, image_id, sha256, size, mtime_ns, width,
    height, format, photo metadata, model, pretrained, embedding), readable by
    DuckDB, Spark, pandas, embedding-reader and autofaiss; see docs/scaling.md.
    """
    with open_index(index_path) as idx, errors_as_click():
        summary = idx.export_embeddings(out, layout=layout)
    if as_json:
        click.echo(json.dumps(asdict(summary)))
    else:
        click.echo(f"Exported {summary.rows} embeddings ({summary.dim}-d) to {out} in {len(summary.files)} files "
                   f"({fmt}, layout {layout}).")


@click.command("import-embeddings")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_option
@click.option("--model", default=None,
              help="The model that made embeddings whose files do not record it (clip-retrieval's); checked "
                   "against the index's model.")
@click.option("--pretrained", default=None, help="Its pretrained tag (with --model).")
@click.option("--base", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder that relative image paths in the files start from. Default: the current folder.")
@click.option("--replace", is_flag=True,
              help="Replace the embeddings of files already indexed with the same content (and drop their tags "
                   "and captions). Default: they keep their own.")
@click.option("--max-file-mb", type=click.IntRange(min=1), default=DEFAULT_MAX_FILE_MB, show_default=True,
              help="Image files larger than this are not read; their rows fail (as in index).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def import_embeddings(files: Sequence[Path], index_path: Path | None, model: str | None, pretrained: str | None,
                      base: Path | None, replace: bool, max_file_mb: int, as_json: bool) -> None:
    """Add embeddings computed elsewhere (FILES: Parquet files or export folders) to the index.

    Each row is joined to the image file at its image_path (and checked against
    its sha256 when present); missing or changed files are recorded as failures
    (see `searchindex errors`). Embeddings of another model or vector size are
    refused before anything is written. A row whose vector is NaN, infinite or
    all zeros is skipped and listed; files already indexed with the same content
    keep their embeddings unless --replace; a row that does not match its file
    never removes an indexed file's row. A missing index is created for the
    model the files record (or --model).
    """
    from ..index.facade import Index
    from ..ingest.parquet import recorded_model

    path = resolve_index_path(index_path)
    with errors_as_click():
        if Index.exists(path):
            idx = Index.open(path)
        else:
            found = recorded_model(files)
            if found is None and model is None:
                raise click.UsageError("no index at the path and the files do not record their model: "
                                       "give --model (and --pretrained)")
            idx = (Index.create(path, model=model, pretrained=pretrained) if model
                   else Index.create(path, model=found.model, pretrained=found.pretrained))  # type: ignore[union-attr]
        with idx, progress_bar("importing") as bar:
            summary = idx.import_embeddings(files, model=model, pretrained=pretrained, base=base, replace=replace,
                                            max_file_bytes=max_file_mb * 1024 * 1024, progress=bar)
            total = idx.count()
    if as_json:
        click.echo(json.dumps({**asdict(summary), "failures": [asdict(f) for f in summary.failures],
                               "total": total}))
        return
    already = (f"{summary.replaced} replaced for files already indexed" if replace
               else f"{summary.unchanged} files already indexed kept their own")
    click.echo(f"Imported {summary.imported} embeddings ({already}), {summary.failed} not imported; "
               f"the index holds {total} images.")
    echo_failures(summary.failures, "", total=summary.failed, more=" (searchindex errors)")
