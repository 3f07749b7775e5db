"""The search command and how results are printed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..frontend.options import SEARCH_OPTIONS, SearchOption
from .common import DEVICE, display, errors_as_click, index_option, open_index

if TYPE_CHECKING:
    from ..frontend.params import SearchParams
    from ..index.facade import Index
    from ..results import SearchResult

#: A click decorator: a parameter (or several) added to a command function.
Decorator = Callable[[Any], Any]


def search_options(options: Sequence[SearchOption] = SEARCH_OPTIONS,
                   between: Mapping[str, Sequence[Decorator]] | None = None) -> Decorator:
    """The click parameters of ``options`` (the search's own description unless given), in its order;
    ``between`` adds the command's own options after the search option it names."""
    decorators: list[Decorator] = []
    for option in options:
        decorators.append(_click_parameter(option))
        decorators.extend((between or {}).get(option.name, ()))

    def apply(f: Any) -> Any:
        for decorator in reversed(decorators):  # as if written top to bottom
            f = decorator(f)
        return f

    return apply


def _click_parameter(option: SearchOption) -> Decorator:
    """One search option as click declares it."""
    if not option.flags:
        return click.argument(option.name, required=False)
    settings: dict[str, Any] = {"default": option.default, "multiple": option.multiple, "help": option.help,
                                "metavar": option.metavar}
    if option.show_default:
        settings["show_default"] = True
    if option.choices:
        settings["type"] = click.Choice(list(option.choices))
    elif option.type is Path:
        settings["type"] = click.Path(path_type=Path)
    elif option.type is not str:
        settings["type"] = option.type
    return click.option(*option.flags, option.name, **settings)


_OUTPUT_OPTIONS = (
    click.option("--json", "as_json", is_flag=True,
                 help="One JSON object per result (rank, score, path, size and date fields; see docs/queries.md)."),
    click.option("--moments", "show_moments", is_flag=True,
                 help="For videos, list the other matching moments too (up to 3, at least 10 s apart)."),
    click.option("--paths", "paths_only", is_flag=True, help="Only paths, one per line (for xargs)."),
    click.option("-0", "--null", is_flag=True, help="Only paths, each ended by a NUL byte (for xargs -0)."),
    click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where the model runs."),
)


@click.command()
@search_options(between={"minus_weighted": (index_option,), "sort": _OUTPUT_OPTIONS})
def search(index_path: Path | None, as_json: bool, show_moments: bool, paths_only: bool, null: bool, device: str,
           **given: Any) -> None:
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
    from ..frontend.params import search_params

    if as_json + paths_only + null > 1:
        raise click.UsageError("choose one of --json, --paths and --null")

    def build(idx: Index | None) -> SearchParams:
        return search_params(idx, **given)

    with errors_as_click():
        params = build(None) if given.get("concept") is None else None  # bad options fail before the index opens
        with open_index(index_path, device=device) as idx:
            params = params or build(idx)
            results = params.run(idx)
    empty = params.empty_message()
    _print_results(results, as_json, paths_only, null, empty, moments=show_moments)


def _print_results(results: Sequence[SearchResult], as_json: bool, paths_only: bool, null: bool = False,
                   empty: str = "No results (the index is empty).", moments: bool = False) -> None:
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
            people = f"  ({', '.join(r.persons)})" if r.persons else ""  # named persons in the photo
            at = "" if r.timestamp is None else f" @ {clock(r.timestamp)}"
            also = f" (also {', '.join(clock(t) for t in r.moments)})" if moments and r.moments else ""
            click.echo(f"{r.rank:>4}  {r.score:>6.3f}  {_date(r.taken_at):<16}  {display(r.path)}{at}{also}{people}"
                       f"{tags}{words}")


def clock(seconds: float) -> str:
    """A moment in a video as ``01:23`` (``1:02:03`` past the hour)."""
    total = int(seconds)
    h, rest = divmod(total, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def _words(r: SearchResult, width: int = 80) -> str:
    """Caption and keywords on one line, shortened to ``width`` characters."""
    text = "; ".join(part for part in (r.caption or "", ", ".join(r.keywords)) if part)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _date(taken_at: str | None) -> str:
    """``2024-07-14 18:03`` from the catalog's ISO text; ``-`` when unknown."""
    return taken_at[:16].replace("T", " ") if taken_at else "-"
