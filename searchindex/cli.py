"""The ``searchindex`` command: a thin shell over :class:`searchindex.Index`.

Each command parses options, calls the library, and formats what comes back.
Library errors become one-line messages with a non-zero exit code.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .defaults import (
    DEFAULT_CAPTION_MODEL,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_ITM_MODEL,
    DEFAULT_MAX_MEGAPIXELS,
    DEFAULT_POOL,
    DEFAULT_RERANK_TOP,
)
from .errors import SearchIndexError

if TYPE_CHECKING:  # the library (numpy, SQLAlchemy, Pillow) loads only when a command runs
    from .captioning import CaptionProgress, CaptionSummary
    from .index import Index, SearchResult
    from .indexer import IndexProgress, IndexSummary

_DEVICE = click.Choice(["auto", "cpu", "cuda"])
_PRECISION = click.Choice(["auto", "fp32", "bf16", "int8", "fp16", "onnx"])


def _index_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--index", "index_path", type=click.Path(path_type=Path), default=None,
        help="Index folder. Default: $SEARCHINDEX_HOME, else the platform's user-data folder.",
    )(f)


def _resolve_index_path(path: Path | None) -> Path:
    from .index import default_index_path

    return path if path is not None else default_index_path()


@contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors into click errors (message on stderr, exit code 1)."""
    try:
        yield
    except SearchIndexError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _open_index(index_path: Path | None, **options: str) -> Iterator[Index]:
    """Open the index at --index (or the default one), turning library errors into CLI errors."""
    from .index import Index

    with _errors(), Index.open(_resolve_index_path(index_path), **options) as idx:
        yield idx


@contextmanager
def _progress_bar(desc: str) -> Iterator[Callable[[IndexProgress | CaptionProgress], None]]:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="searchindex")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Search your photos by what is in them, offline.

    Index a folder once (searchindex index ~/Pictures), then ask in words
    (searchindex search "kids building a sandcastle") or by example image.
    """
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ours = logging.getLogger("searchindex")
    if verbose == 0:
        # open_clip logs on the root logger at every model load (and its failures
        # reach the user through our own error message anyway).
        logging.getLogger().setLevel(logging.CRITICAL)
        ours.setLevel(logging.WARNING)
    else:
        logging.getLogger().setLevel(logging.WARNING if verbose == 1 else logging.DEBUG)
        ours.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


@cli.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@_index_option
@click.option("--model", default=None,
              help="open_clip architecture (ViT-B-32), hf-hub:ORG/REPO, or tiny-shapes. Only when creating "
                   "an index; default ViT-B-32-256.")
@click.option("--pretrained", default=None,
              help="Pretrained tag, local checkpoint file, or 'none' (random weights). Default: the model's own.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images per model call and per catalog commit.")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Decoding processes (default: one per CPU, at most 8); 0 decodes in threads.")
@click.option("--precision", type=_PRECISION, default="auto", show_default=True,
              help="Image-encoding precision: auto is fp16 on CUDA, int8 on x86 CPUs, else fp32.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--max-megapixels", default=DEFAULT_MAX_MEGAPIXELS, show_default=True, type=click.FloatRange(min=0.01),
              help="Larger images are recorded as failures (decompression-bomb guard).")
@click.option("--index-type", default=None, metavar="FACTORY_STRING",
              help="FAISS index type: 'auto' (exact below 100k images, IVF above; the default for new indexes) "
                   "or an index_factory string such as IVF1024,SQ8. Recorded in the index; the vector index "
                   "is rebuilt when a run ends with another type wanted.")
@click.option("--strict", is_flag=True, help="Exit with code 3 when any file failed.")
@click.option("--caption", "caption_after", is_flag=True,
              help="Then caption the images that have no caption from --caption-model yet (see `caption`).")
@click.option("--caption-model", default=None,
              help=f"Image-to-text model for --caption: hub id or local folder. Default: {DEFAULT_CAPTION_MODEL}.")
@click.option("--caption-prompt", default=None,
              help="Prompt for --caption (conditional captioning, e.g. 'a photo of').")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index(folders: Sequence[Path], index_path: Path | None, model: str | None, pretrained: str | None,
          batch_size: int, workers: int | None, precision: str, device: str, max_megapixels: float,
          index_type: str | None, strict: bool, caption_after: bool, caption_model: str | None,
          caption_prompt: str | None, as_json: bool) -> None:
    """Index (or update the index of) the images in FOLDERS.

    Creates the index on first use with --model/--pretrained; later runs use the
    model recorded in the index and only encode new or changed content: touched,
    moved and duplicated files reuse their stored embedding, deleted files leave
    the index. Ctrl-C stops after the batch in flight is committed; run the same
    command again to resume. With --caption, the images are then captioned as by
    `searchindex caption`.

    Links to folders are followed (like find -L), each folder once: a link back
    to a folder already scanned is skipped, and images indexed below a skipped
    link or an unreadable folder are kept, not taken for deleted. A new index
    needs a folder of its own (new, or empty).
    """
    from .errors import IndexExistsError
    from .index import Index

    if (caption_model or caption_prompt) and not caption_after:
        raise click.UsageError("--caption-model and --caption-prompt need --caption")
    path = _resolve_index_path(index_path)
    captions = None
    with _errors():
        for folder in folders:
            if not folder.is_dir():
                raise click.ClickException(f"not a folder: {folder}")
        if Index.exists(path):
            idx = Index.open(path, device=device, precision=precision)
            idx.check_model(model, pretrained)
        else:
            try:
                idx = Index.create(path, model=model, pretrained=pretrained, device=device, precision=precision,
                                   index_type=index_type or "auto")
            except IndexExistsError:  # another process created it meanwhile: add to it (under its lock)
                idx = Index.open(path, device=device, precision=precision)
                idx.check_model(model, pretrained)
        with idx, _stop_on_sigint() as stop:
            with _progress_bar("indexing") as bar:
                summary = idx.add_folder(folders, progress=bar, batch_size=batch_size, workers=workers,
                                         max_megapixels=max_megapixels, stop=stop, index_type=index_type)
            if caption_after and not summary.interrupted:
                with _progress_bar("captioning") as bar:
                    captions = idx.caption(caption_model, prompt=caption_prompt, device=device, progress=bar,
                                           stop=stop)
            total = idx.count()
    if as_json:
        data = _summary_json(summary, path, total)
        if captions is not None:
            data["captions"] = _caption_json(captions)
        click.echo(json.dumps(data))
    else:
        _print_summary(summary, path, total)
        if captions is not None:
            _print_caption_summary(captions)
    if summary.interrupted or (captions is not None and captions.interrupted):
        click.echo("Interrupted: everything processed so far is committed. Run the same command again to "
                   "resume.", err=True)
        sys.exit(130)
    if strict and summary.failed:
        sys.exit(3)


@cli.command()
@_index_option
@click.option("--model", required=True,
              help="The new open_clip architecture, hf-hub:ORG/REPO, local-dir:FOLDER, or tiny-shapes.")
@click.option("--pretrained", default=None,
              help="Pretrained tag, local checkpoint file, or 'none' (random weights). Default: the model's own.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images per model call and per catalog commit.")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Decoding processes (default: one per CPU, at most 8); 0 decodes in threads.")
@click.option("--precision", type=_PRECISION, default="auto", show_default=True,
              help="Image-encoding precision: auto is fp16 on CUDA, int8 on x86 CPUs, else fp32.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def reindex(index_path: Path | None, model: str, pretrained: str | None, batch_size: int, workers: int | None,
            precision: str, device: str, as_json: bool) -> None:
    """Re-embed every image of an index with another model.

    The new index is built beside the old one, which stays searchable, and
    replaces it atomically when complete. Ctrl-C (or a crash) keeps what was
    done; run the same command again to resume.
    """
    from .index import Index

    path = _resolve_index_path(index_path)
    with _errors(), _progress_bar("reindexing") as bar, _stop_on_sigint() as stop:
        summary = Index.reindex(path, model, pretrained, device=device, precision=precision, progress=bar,
                                batch_size=batch_size, workers=workers, stop=stop)
    if summary.interrupted:
        click.echo("Interrupted: the old index is untouched and the work done so far is kept. Run the same "
                   "command again to resume.", err=True)
        sys.exit(130)
    with _errors(), Index.open(path) as idx:
        total = idx.count()
        described = idx.spec.describe()
    if as_json:
        click.echo(json.dumps(_summary_json(summary, path, total)))
    else:
        _print_summary(summary, path, total)
        click.echo(f"{path} now uses {described}.")


def _summary_json(summary: IndexSummary, path: Path, total: int) -> dict[str, Any]:
    data = asdict(summary)
    data["failures"] = [{"path": f.path, "reason": f.reason} for f in summary.failures]
    data["index"] = str(path)
    data["images_in_index"] = total
    return data


def _print_summary(summary: IndexSummary, path: Path, total: int) -> None:
    rate = f", {summary.indexed / summary.seconds:.1f} images/s" if summary.indexed and summary.seconds else ""
    changes = ", ".join(f"{n} {label}" for n, label in (
        (summary.new, "new"), (summary.modified, "modified"), (summary.touched, "touched"),
        (summary.moved, "moved"), (summary.duplicates, "duplicates"), (summary.deleted, "deleted")) if n)
    click.echo(
        f"{summary.indexed} indexed, {summary.unchanged} unchanged, {summary.failed} failed "
        f"({changes or 'no changes'}) in {summary.seconds:.1f} s{rate}. {path} holds {total} images."
    )
    for f in summary.failures[:20]:
        click.echo(f"  failed: {_display(f.path)}: {f.reason}", err=True)
    if len(summary.failures) > 20:
        click.echo(f"  ... and {len(summary.failures) - 20} more (searchindex errors lists them all)", err=True)


@cli.command()
@_index_option
@click.option("--model", default=None,
              help=f"Image-to-text model: a Hugging Face hub id or a local folder (BLIP, BLIP-2, GIT). "
                   f"Default: {DEFAULT_CAPTION_MODEL}.")
@click.option("--prompt", default=None,
              help="Conditional captioning: captions continue this text (e.g. 'a photo of'), which is stripped.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per model call and per catalog commit.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True,
              help="Where the model runs (fp16 on CUDA).")
@click.option("--max-new-tokens", default=30, show_default=True, type=click.IntRange(min=1),
              help="Longest caption, in tokens.")
@click.option("--num-beams", default=3, show_default=True, type=click.IntRange(min=1),
              help="Beam search width (1 = greedy, fastest).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def caption(index_path: Path | None, model: str | None, prompt: str | None, batch_size: int, device: str,
            max_new_tokens: int, num_beams: int, as_json: bool) -> None:
    """Caption every indexed image that has no caption from --model yet.

    Captions are stored in the index with the model that wrote them; another
    model's captions are kept beside them. Needs pip install 'searchindex[caption]'.
    Each batch is committed as it is done: Ctrl-C (or a crash) keeps them, and
    the same command resumes; images indexed later are captioned by the next run.
    """
    with _open_index(index_path, device=device) as idx, _progress_bar("captioning") as bar, \
            _stop_on_sigint() as stop:
        summary = idx.caption(model, prompt=prompt, batch_size=batch_size, device=device,
                              max_new_tokens=max_new_tokens, num_beams=num_beams, progress=bar, stop=stop)
    if as_json:
        click.echo(json.dumps({**_caption_json(summary), "index": str(_resolve_index_path(index_path))}))
    else:
        _print_caption_summary(summary)
    if summary.interrupted:
        click.echo("Interrupted: the captions written so far are committed. Run the same command again to "
                   "resume.", err=True)
        sys.exit(130)


def _caption_json(summary: CaptionSummary) -> dict[str, Any]:
    data = asdict(summary)
    data["images_per_s"] = summary.images_per_s
    return data


def _print_caption_summary(summary: CaptionSummary) -> None:
    rate = f", {summary.images_per_s:.2f} images/s" if summary.captioned else ""
    click.echo(f"{summary.captioned} captioned, {summary.failed} skipped (unreadable), {summary.already} already "
               f"had a caption from {summary.model} in {summary.seconds:.1f} s{rate}.")
    for f in summary.failures[:20]:
        click.echo(f"  skipped: {_display(f.path)}: {f.reason}", err=True)
    if len(summary.failures) > 20:
        click.echo(f"  ... and {len(summary.failures) - 20} more", err=True)


@contextmanager
def _stop_on_sigint() -> Iterator[threading.Event]:
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


def _display(path: str) -> str:
    """A path for human eyes: undecodable bytes shown as \\xNN instead of crashing the output."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _print_results(results: Sequence[SearchResult], as_json: bool, paths_only: bool, null: bool = False,
                   empty: str = "No results (the index is empty).") -> None:
    if as_json:
        for r in results:
            click.echo(json.dumps(asdict(r)))
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
            click.echo(f"{r.rank:>4}  {r.score:>6.3f}  {_date(r.taken_at):<16}  {_display(r.path)}{tags}{words}")


def _words(r: SearchResult, width: int = 80) -> str:
    """Caption and keywords on one line, shortened to ``width`` characters."""
    text = "; ".join(part for part in (r.caption or "", ", ".join(r.keywords)) if part)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _date(taken_at: str | None) -> str:
    """``2024-07-14 18:03`` from the catalog's ISO text; ``-`` when unknown."""
    return taken_at[:16].replace("T", " ") if taken_at else "-"


def _threshold(value: str | None) -> str | float | None:
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a number", param_hint="--threshold") from None


_TERM_HELP = ("[WEIGHT:]TEXT or [WEIGHT:]IMAGE-FILE, e.g. 2:sunset or photo.jpg (prefix text: or image: "
              "to force the kind). Repeatable.")


def _shot(value: str) -> str | int:
    """A --like/--unlike value: an existing file, else an image id (digits), else a path to report."""
    if not os.path.exists(value) and value.isdigit():
        return int(value)
    return value


@cli.command()
@click.argument("query", required=False)
@click.option("--image", "images", type=click.Path(path_type=Path), multiple=True,
              help="Search by example: images similar to this file. Repeatable; combines with QUERY.")
@click.option("--plus", multiple=True, metavar="TERM", help="Add a term to the query: " + _TERM_HELP)
@click.option("--minus", multiple=True, metavar="TERM", help="Subtract a term from the query: " + _TERM_HELP)
@click.option("--plus-weight", "plus_weighted", type=(float, str), multiple=True, metavar="W TERM",
              help="Add TERM with weight W (same as --plus W:TERM). Repeatable.")
@click.option("--minus-weight", "minus_weighted", type=(float, str), multiple=True, metavar="W TERM",
              help="Subtract TERM with weight W (same as --minus W:TERM). Repeatable.")
@_index_option
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1),
              help="Number of results (with --threshold/--min-score: the most, default no limit).")
@click.option("--threshold", default=None, metavar="auto|X",
              help="'auto': only the results that stand out for this query (see README). A number: "
                   "same as --min-score.")
@click.option("--min-score", type=click.FloatRange(-1, 1), default=None,
              help="Only results with at least this cosine similarity.")
@click.option("--path", "path_globs", multiple=True, metavar="GLOB",
              help="Only images whose absolute path matches (a folder, or a pattern with * ? [...]; * also "
                   "matches /). Repeatable: any of them.")
@click.option("--exclude", "exclude_globs", multiple=True, metavar="GLOB",
              help="Leave out images whose path matches (as --path). Repeatable.")
@click.option("--min-width", type=click.IntRange(min=1), default=None, help="Only images at least this wide (px).")
@click.option("--min-height", type=click.IntRange(min=1), default=None,
              help="Only images at least this tall (px).")
@click.option("--after", metavar="DATE", default=None,
              help="Only images taken at or after DATE (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM, "
                   "the photo's local time).")
@click.option("--before", metavar="DATE", default=None,
              help="Only images taken before DATE (exclusive: --after 2023-06 --before 2023-07 is June).")
@click.option("--camera", "cameras", multiple=True, metavar="TEXT",
              help="Only images whose camera make and model contain TEXT (case-insensitive). Repeatable: any.")
@click.option("--near", metavar="LAT,LON", default=None,
              help="Only images taken near this GPS position (decimal degrees), within --radius.")
@click.option("--radius", "radius_km", type=click.FloatRange(0, min_open=True), default=None, metavar="KM",
              help="Distance for --near in km. [default: 10]")
@click.option("--sort", type=click.Choice(["score", "date"]), default="score", show_default=True,
              help="Order of the results: by score, or by date taken (newest first; same results).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per result (rank, score, path, size and date fields; see README).")
@click.option("--paths", "paths_only", is_flag=True, help="Only paths, one per line (for xargs).")
@click.option("-0", "--null", is_flag=True, help="Only paths, each ended by a NUL byte (for xargs -0).")
@click.option("--device", type=_DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--tag", "tag", default=None, help="Only images carrying this zero-shot label (see `searchindex tag`).")
@click.option("--like", "like", multiple=True, metavar="PATH|ID",
              help="An example of what you mean (an image file, or an image_id from --json results); repeatable.")
@click.option("--unlike", "unlike", multiple=True, metavar="PATH|ID",
              help="An example of what you do not mean; repeatable.")
@click.option("--pool", default=DEFAULT_POOL, show_default=True, type=click.IntRange(min=1),
              help="CLIP candidates reranked with --like/--unlike.")
@click.option("--mode", type=click.Choice(["auto", "vector", "text", "hybrid"]), default="auto", show_default=True,
              help="vector: CLIP only; text: words only (keywords, descriptions, captions, file names); hybrid: "
                   "both rankings fused; auto: hybrid when some image's words match all the query's words.")
@click.option("--rerank", type=click.Choice(["itm"]), default=None,
              help="itm: re-score the top results with BLIP's image-text matching head (needs the caption extra).")
@click.option("--rerank-top", default=DEFAULT_RERANK_TOP, show_default=True, type=click.IntRange(min=1),
              help="How many of the top results --rerank re-scores.")
@click.option("--rerank-model", default=None, metavar="MODEL",
              help=f"ITM model for --rerank itm: a hub id or local folder. [default: {DEFAULT_ITM_MODEL}]")
@click.pass_context
def search(ctx: click.Context, query: str | None, images: tuple[Path, ...], plus: tuple[str, ...],
           minus: tuple[str, ...], plus_weighted: tuple[tuple[float, str], ...],
           minus_weighted: tuple[tuple[float, str], ...], index_path: Path | None, k: int,
           threshold: str | None, min_score: float | None, path_globs: tuple[str, ...],
           exclude_globs: tuple[str, ...], min_width: int | None, min_height: int | None, after: str | None,
           before: str | None, cameras: tuple[str, ...], near: str | None, radius_km: float | None, sort: str,
           as_json: bool, paths_only: bool, null: bool, device: str, tag: str | None, like: Sequence[str],
           unlike: Sequence[str], pool: int, mode: str, rerank: str | None, rerank_top: int,
           rerank_model: str | None) -> None:
    """Find the images that best match QUERY (text), --image (an example), or a mix.

    Terms add up: "beach" --plus sunset --minus people --plus 2:photo.jpg ranks by
    beach + sunset - people + 2 x (that photo). Filters (--path, --exclude,
    --min-width/--min-height, --after/--before, --camera, --near/--radius)
    narrow the images ranked; the ranking among them stays exact. --like and
    --unlike rerank the results towards a few marked examples (the examples
    themselves are left out); --tag keeps only images with that label.
    Keywords and descriptions people wrote (XMP, IPTC, sidecar .txt/.xmp files)
    and generated captions are searched as words too (--mode).
    """
    from .query import Filters, Query, parse_near

    if as_json + paths_only + null > 1:
        raise click.UsageError("choose one of --json, --paths and --null")
    if query is None and not images and not plus and not plus_weighted:
        raise click.UsageError("give a text QUERY, --image PATH, or --plus TERM")
    cut = _threshold(threshold)
    if isinstance(cut, float):
        if not -1 <= cut <= 1:
            raise click.BadParameter("a score threshold is between -1 and 1", param_hint="--threshold")
        min_score = cut if min_score is None else max(min_score, cut)
        cut = None
    limit: int | None = k
    if (cut or min_score is not None) and ctx.get_parameter_source("k") is click.core.ParameterSource.DEFAULT:
        limit = None
    with _errors():
        q = Query.parse(query, plus=plus, minus=minus, plus_weighted=plus_weighted,
                        minus_weighted=minus_weighted, images=[str(p) for p in images])
        if radius_km is not None and near is None:
            raise click.UsageError("--radius needs --near LAT,LON")
        filters = Filters(paths=path_globs, exclude=exclude_globs, min_width=min_width, min_height=min_height,
                          after=after, before=before, cameras=cameras,
                          near=parse_near(near) if near is not None else None, radius_km=radius_km,
                          cwd=os.getcwd())
        with _open_index(index_path, device=device) as idx:
            results = idx.search(q, k=limit, filters=filters, min_score=min_score, threshold=cut, sort=sort,
                                 tag=tag, like=[_shot(v) for v in like], unlike=[_shot(v) for v in unlike],
                                 pool=pool, mode=mode, rerank=rerank, rerank_top=rerank_top,
                                 rerank_model=rerank_model)
    empty = "No results (the index is empty)."
    if filters.active or tag is not None:
        empty = "No results: no indexed image matches the filters, or none scores high enough."
    if cut == "auto":
        empty = "Nothing stands out for this query (use -k N or --min-score X to see the best matches anyway)."
    elif min_score is not None:
        empty = f"No result scores {min_score} or more."
    if mode == "text":
        empty = "No image's keywords, captions or file name contain the query's words."
    _print_results(results, as_json, paths_only, null, empty)


@cli.command()
@_index_option
@click.option("--labels", "labels", default=None, metavar="A,B,...", help="Comma-separated labels to define and apply.")
@click.option("--labels-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A file with labels, one per line (or comma-separated).")
@click.option("--templates", default="default", show_default=True, metavar="default|single|FILE",
              help="Prompt templates: the CLIP-paper ensemble, the single 'a photo of a {}.', or a file with one "
                   "template per line, each containing {}.")
@click.option("--remove", "remove", multiple=True, metavar="LABEL", help="Forget a label and its tags; repeatable.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per label (label, tagged, threshold, ...).")
def tag(index_path: Path | None, labels: str | None, labels_file: Path | None, templates: str,
        remove: Sequence[str], device: str, as_json: bool) -> None:
    """Tag every image with zero-shot labels (no training).

    Each label becomes a text classifier (a prompt-template ensemble) and a
    threshold calibrated on the collection; labels are stored, and images added
    by later `index` runs are tagged automatically. Without --labels, re-tags
    the stored labels (recalibrating their thresholds).
    """
    from .tagging import parse_labels

    with _open_index(index_path, device=device) as idx:
        if remove:
            if labels or labels_file:
                raise click.UsageError("--remove cannot be combined with --labels/--labels-file")
            n = idx.untag(remove)
            click.echo(f"Removed {n} label(s).", err=True)
            return
        names: list[str] | None = None
        if labels is not None or labels_file is not None:
            text = labels or ""
            if labels_file is not None:
                try:
                    text += "\n" + labels_file.read_text(encoding="utf-8")
                except OSError as exc:
                    raise click.ClickException(f"cannot read {labels_file}: {exc.strerror or exc}") from None
            names = parse_labels(text)
        reports = idx.tag(names, templates=templates)
        total = idx.count()
    for r in reports:
        if as_json:
            click.echo(json.dumps(asdict(r)))
        else:
            how = "calibrated on the collection" if r.calibrated else "score above the generic caption"
            click.echo(f"{r.label}: {r.tagged} of {total} images (threshold {r.threshold:+.3f}, {how})")


@cli.command()
@_index_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per label (label, images).")
def tags(index_path: Path | None, as_json: bool) -> None:
    """List the zero-shot labels of an index with how many images carry each."""
    with _open_index(index_path) as idx:
        counts = idx.tags()
    for label, n in counts:
        click.echo(json.dumps({"label": label, "images": n}) if as_json else f"{n:>7}  {label}")
    if not counts and not as_json:
        click.echo("No labels yet (add some with `searchindex tag --labels a,b`).", err=True)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@cli.command()
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def info(index_path: Path | None, as_json: bool) -> None:
    """Show an index's model, image count, captions per model, vector size, FAISS index type and sizes."""
    with _open_index(index_path) as idx:
        data = idx.info()
    if as_json:
        click.echo(json.dumps(asdict(data)))
        return
    sha = f" (sha256 {data.checkpoint_sha256[:12]})" if data.checkpoint_sha256 else ""
    click.echo(f"index:      {data.path}")
    click.echo(f"model:      {data.model} / {data.pretrained}{sha}")
    click.echo(f"images:     {data.images} ({data.failures} failed)")
    click.echo(f"vectors:    {data.dim}-d, FAISS {data.faiss_factory} (index type: {data.index_type})")
    if data.nprobe is not None:
        tuned = f", recall@10 {data.tuned_recall:.3f} when tuned" if data.tuned_recall is not None else ""
        click.echo(f"search:     nprobe {data.nprobe}{tuned} (built at {data.built_at} images)")
    for model, n in sorted(data.captions.items()):
        click.echo(f"captions:   {n} by {model}")
    click.echo(f"catalog:    {_human_bytes(data.catalog_bytes)}")
    click.echo(f"vector file: {_human_bytes(data.vector_bytes)}")
    click.echo(f"FAISS memory: {_human_bytes(data.faiss_memory_bytes)} ({data.bytes_per_image:.0f} B/image)")


@cli.command()
@_index_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per failure (path, reason, size, mtime_ns).")
def errors(index_path: Path | None, as_json: bool) -> None:
    """List the files that could not be indexed, with the reason for each."""
    with _open_index(index_path) as idx:
        failures = idx.failures()
    for f in failures:
        click.echo(json.dumps(asdict(f)) if as_json else f"{_display(f.path)}: {f.reason}")
    if not failures and not as_json:
        click.echo("No failures recorded.", err=True)


@cli.command()
@_index_option
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=None,
              help=f"Cosine similarity from which two images count as near-identical. "
                   f"[default: {DEFAULT_DUPLICATE_THRESHOLD}]")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per group: {group, images: [{path, image_id, width, height, size, "
                   "mtime_ns, similarity}]}, best copy first.")
def duplicates(index_path: Path | None, threshold: float | None, as_json: bool) -> None:
    """List groups of near-identical images (resized, recompressed, cropped or edited copies).

    Each group shows its best copy first (largest resolution, then oldest), then
    the other copies with their similarity to it.
    """
    with _open_index(index_path) as idx:
        groups = idx.duplicates(DEFAULT_DUPLICATE_THRESHOLD if threshold is None else threshold)
    for n, group in enumerate(groups, 1):
        if as_json:
            click.echo(json.dumps({"group": n, "images": [asdict(im) for im in group.images]}))
            continue
        click.echo(f"group {n}: {len(group.images)} images")
        for i, im in enumerate(group.images):
            label = "  best" if i == 0 else f"{im.similarity:>6.3f}"
            click.echo(f"  {label}  {f'{im.width}x{im.height}':>11}  {_display(im.path)}")
    if not groups and not as_json:
        click.echo("No near-duplicates found.", err=True)
    elif not as_json:
        copies = sum(len(g.images) - 1 for g in groups)
        click.echo(f"{len(groups)} groups, {copies} copies besides the best ones.", err=True)


@cli.command()
@click.option("--index", "index_path", type=click.Path(path_type=Path), default=Path("indexes/demo"),
              show_default=True, help="Where the demo images and index go.")
@click.option("--count", default=300, show_default=True, type=click.IntRange(min=10),
              help="How many synthetic images to generate.")
def demo(index_path: Path, count: int) -> None:
    """Offline demo: generate shape photos, index them with tiny-shapes, run three searches."""
    from .demo import run_demo

    with _errors(), _progress_bar("indexing") as bar:
        report = run_demo(index_path, count=count, progress=bar)
    s = report.summary
    click.echo(f"Demo index {report.index_path}: {s.indexed} indexed, {s.unchanged} unchanged "
               f"({s.seconds:.1f} s); images in {report.images_dir}")
    for q in report.queries:
        click.echo(f'\nsearchindex search "{q.text}" --index {report.index_path} -k {len(q.results)}')
        click.echo(f"  {q.correct}/{len(q.results)} results show what was asked for")
        for r in q.results:
            click.echo(f"  {r.rank:>2}  {r.score:.3f}  {os.path.relpath(r.path)}")


def main() -> None:
    cli(prog_name="searchindex")


if __name__ == "__main__":
    main()
