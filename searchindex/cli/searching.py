"""The search command and how results are printed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..defaults import DEFAULT_ITM_MODEL, DEFAULT_POOL, DEFAULT_RERANK_TOP, RERANKERS, SEARCH_MODES, SORT_KEYS
from .common import DEVICE, display, errors_as_click, index_option, open_index

if TYPE_CHECKING:
    from ..index import Index
    from ..results import SearchResult
    from ..search.params import SearchParams



_TERM_HELP = ("[WEIGHT:]TEXT or [WEIGHT:]IMAGE-FILE, e.g. 2:sunset or photo.jpg (prefix text: or image: "
              "to force the kind). Repeatable.")


@click.command()
@click.argument("query", required=False)
@click.option("--image", "images", type=click.Path(path_type=Path), multiple=True,
              help="Search by example: images similar to this file. Repeatable; combines with QUERY.")
@click.option("--plus", multiple=True, metavar="TERM", help="Add a term to the query: " + _TERM_HELP)
@click.option("--minus", multiple=True, metavar="TERM", help="Subtract a term from the query: " + _TERM_HELP)
@click.option("--plus-weight", "plus_weighted", type=(float, str), multiple=True, metavar="W TERM",
              help="Add TERM with weight W (same as --plus W:TERM). Repeatable.")
@click.option("--minus-weight", "minus_weighted", type=(float, str), multiple=True, metavar="W TERM",
              help="Subtract TERM with weight W (same as --minus W:TERM). Repeatable.")
@index_option
@click.option("-k", "k", default=None, type=int,
              help="Number of results. [default: 10; with --threshold/--min-score: no limit]")
@click.option("--offset", default=0, show_default=True, type=int,
              help="Skip this many results first (paging: -k 20 --offset 20 is the second page).")
@click.option("--concept", default=None, metavar="NAME",
              help="Run a saved concept (its text and liked/unliked examples; saved from `searchindex serve`). "
                   "A QUERY given too replaces its text.")
@click.option("--threshold", default=None, metavar="auto|X",
              help="'auto': only the results that stand out for this query (see docs/queries.md). A number: "
                   "same as --min-score.")
@click.option("--min-score", type=float, default=None,
              help="Only results with at least this cosine similarity.")
@click.option("--path", "path_globs", multiple=True, metavar="GLOB",
              help="Only images whose absolute path matches (a folder, or a pattern with * ? [...]; * also "
                   "matches /). Repeatable: any of them.")
@click.option("--exclude", "exclude_globs", multiple=True, metavar="GLOB",
              help="Leave out images whose path matches (as --path). Repeatable.")
@click.option("--min-width", type=int, default=None, help="Only images at least this wide (px).")
@click.option("--min-height", type=int, default=None,
              help="Only images at least this tall (px).")
@click.option("--after", metavar="DATE", default=None,
              help="Only images taken at or after DATE (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM, "
                   "the photo's local time).")
@click.option("--before", metavar="DATE", default=None,
              help="Only images taken before DATE (exclusive: --after 2023-06 --before 2023-07 is June).")
@click.option("--camera", "cameras", multiple=True, metavar="TEXT",
              help="Only images whose camera make and model contain TEXT (case-insensitive). Repeatable: any.")
@click.option("--ocr-text", metavar="TEXT", default=None,
              help="Only images whose text read by `searchindex ocr` holds every word of TEXT.")
@click.option("--near", metavar="LAT,LON", default=None,
              help="Only images taken near this GPS position (decimal degrees), within --radius.")
@click.option("--radius", "radius_km", type=float, default=None, metavar="KM",
              help="Distance for --near in km. [default: 10]")
@click.option("--sort", type=click.Choice(list(SORT_KEYS)), default="score", show_default=True,
              help="Order of the results: by score, or by date taken (newest first; same results).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per result (rank, score, path, size and date fields; see docs/queries.md).")
@click.option("--paths", "paths_only", is_flag=True, help="Only paths, one per line (for xargs).")
@click.option("-0", "--null", is_flag=True, help="Only paths, each ended by a NUL byte (for xargs -0).")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--tag", "tag", default=None, help="Only images carrying this zero-shot label (see `searchindex tag`).")
@click.option("--like", "like", multiple=True, metavar="PATH|ID",
              help="An example of what you mean (an image file, or an image_id from --json results); repeatable.")
@click.option("--unlike", "unlike", multiple=True, metavar="PATH|ID",
              help="An example of what you do not mean; repeatable.")
@click.option("--pool", default=DEFAULT_POOL, show_default=True, type=int,
              help="CLIP candidates reranked with --like/--unlike.")
@click.option("--mode", type=click.Choice(list(SEARCH_MODES)), default="auto", show_default=True,
              help="vector: CLIP only; text: words only (keywords, descriptions, captions, file names); hybrid: "
                   "both rankings fused; auto: hybrid when some image's words match all the query's words.")
@click.option("--rerank", type=click.Choice(list(RERANKERS)), default=None,
              help="itm: re-score the top results with BLIP's image-text matching head (needs the caption extra).")
@click.option("--rerank-top", default=DEFAULT_RERANK_TOP, show_default=True, type=int,
              help="How many of the top results --rerank re-scores.")
@click.option("--rerank-model", default=None, metavar="MODEL",
              help=f"ITM model for --rerank itm: a hub id or local folder. [default: {DEFAULT_ITM_MODEL}]")
def search(query: str | None, images: tuple[Path, ...], plus: tuple[str, ...],
           minus: tuple[str, ...], plus_weighted: tuple[tuple[float, str], ...],
           minus_weighted: tuple[tuple[float, str], ...], index_path: Path | None, k: int | None, offset: int,
           concept: str | None,
           threshold: str | None, min_score: float | None, path_globs: tuple[str, ...],
           exclude_globs: tuple[str, ...], min_width: int | None, min_height: int | None, after: str | None,
           before: str | None, cameras: tuple[str, ...], ocr_text: str | None, near: str | None,
           radius_km: float | None, sort: str,
           as_json: bool, paths_only: bool, null: bool, device: str, tag: str | None, like: Sequence[str],
           unlike: Sequence[str], pool: int, mode: str, rerank: str | None, rerank_top: int,
           rerank_model: str | None) -> None:
    """Find the images that best match QUERY (text), --image (an example), or a mix.

    Terms add up: "beach" --plus sunset --minus people --plus 2:photo.jpg ranks by
    beach + sunset - people + 2 x (that photo). Filters (--path, --exclude,
    --min-width/--min-height, --after/--before, --camera, --ocr-text, --near/--radius)
    narrow the images ranked; the ranking among them stays exact. --like and
    --unlike rerank the results towards a few marked examples (the examples
    themselves are left out); --tag keeps only images with that label.
    Keywords and descriptions people wrote (XMP, IPTC, sidecar .txt/.xmp files)
    and generated captions are searched as words too (--mode), and so is the text
    read in the photos by `searchindex ocr`.
    """
    from ..search.params import search_params

    if as_json + paths_only + null > 1:
        raise click.UsageError("choose one of --json, --paths and --null")

    def build(idx: Index | None) -> SearchParams:
        return search_params(
            idx, query, images=[str(p) for p in images], plus=plus, minus=minus, plus_weighted=plus_weighted,
            minus_weighted=minus_weighted, k=k, offset=offset, threshold=threshold, min_score=min_score,
            paths=path_globs, exclude=exclude_globs, min_width=min_width, min_height=min_height, after=after,
            before=before, cameras=cameras, ocr_text=ocr_text, near=near, radius=radius_km, sort=sort, tag=tag,
            like=like,
            unlike=unlike, pool=pool, mode=mode, rerank=rerank, rerank_top=rerank_top, rerank_model=rerank_model,
            concept=concept)

    with errors_as_click():
        params = build(None) if concept is None else None  # bad options fail before the index opens
        with open_index(index_path, device=device) as idx:
            params = params or build(idx)
            results = params.run(idx)
    empty = params.empty_message()
    _print_results(results, as_json, paths_only, null, empty)


def _print_results(results: Sequence[SearchResult], as_json: bool, paths_only: bool, null: bool = False,
                   empty: str = "No results (the index is empty).") -> None:
    if as_json:
        for r in results:
            click.echo(json.dumps(r.to_dict()))
    elif null:
        for r in results:
            click.echo(os.fsencode(r.path) + b"\0", nl=False)
    elif paths_only:
        for r in results:
            click.echo(os.fsencode(r.path))
    elif not results:
        click.echo(empty, err=True)
    else:
        show_tags = any(r.tags for r in results)
        show_words = any(r.caption or r.keywords for r in results)
        click.echo(f"{'rank':>4}  {'score':>6}  {'date':<16}  path" + ("  [tags]" if show_tags else "")
                   + ("  | caption; keywords" if show_words else ""))
        for r in results:
            tags = f"  [{', '.join(r.tags)}]" if show_tags else ""
            words = f"  | {_words(r)}" if show_words else ""
            click.echo(f"{r.rank:>4}  {r.score:>6.3f}  {_date(r.taken_at):<16}  {display(r.path)}{tags}{words}")


def _words(r: SearchResult, width: int = 80) -> str:
    """Caption and keywords on one line, shortened to ``width`` characters."""
    text = "; ".join(part for part in (r.caption or "", ", ".join(r.keywords)) if part)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _date(taken_at: str | None) -> str:
    """``2024-07-14 18:03`` from the catalog's ISO text; ``-`` when unknown."""
    return taken_at[:16].replace("T", " ") if taken_at else "-"
