"""Text in photos: ocr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..results import CaptionProgress, OcrProgress, OcrSummary
from .common import echo_failures, index_option, open_index, progress_bar, resolve_index_path

__all__ = ["check_languages", "ocr", "print_ocr_summary", "run_ocr"]


def check_languages(langs: str) -> str:
    """``--lang`` checked before the index opens (an unknown code is a usage error)."""
    from ..models.ocr import parse_languages

    try:
        return ",".join(parse_languages(langs))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lang") from None


def run_ocr(idx: object, langs: str, stop: object, batch_size: int = 8, threads: int | None = None,
            precision: str = "auto") -> OcrSummary:
    """Read the unread images of ``idx`` with a progress bar (shared by ``ocr`` and ``index --ocr``)."""
    from ..index.facade import Index
    from ..models.ocrint8 import default_det_precision, int8_detector_state

    assert isinstance(idx, Index)
    int8 = (default_det_precision() if precision == "auto" else precision) == "int8"
    if int8 and idx.ocr_counts()["read"] < idx.count() and int8_detector_state() == "missing":
        click.echo("Preparing the int8 text detector for this machine (once, about 20 s)...", err=True)
    with progress_bar("reading text") as bar:
        def show(p: OcrProgress) -> None:
            bar(CaptionProgress(p.done, p.total, p.with_text, p.failed))

        update: Callable[[OcrProgress], None] = show
        return idx.ocr(langs, batch_size=batch_size, progress=update, stop=stop,  # type: ignore[arg-type]
                       threads=threads, precision=precision)


def print_ocr_summary(summary: OcrSummary) -> None:
    """The run's counts, in one line, then the files skipped."""
    rate = f", {summary.images_per_s:.2f} images/s" if summary.read else ""
    click.echo(f"{summary.read} read ({summary.with_text} with text, {summary.lines} lines), {summary.failed} "
               f"skipped (unreadable), {summary.already} read before, in {summary.seconds:.1f} s{rate}.")
    echo_failures(summary.failures)


@click.command()
@index_option
@click.option("--lang", "langs", default="ko,en", show_default=True, metavar="ko,en",
              help="Languages to read: en (Latin script, by RapidOCR), ko (Korean, by Tesseract), or both.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per catalog commit.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Threads for the OCR engines. Default: the CPU cores, at most 4.")
@click.option("--precision", type=click.Choice(["auto", "int8", "fp32"]), default="auto", show_default=True,
              help="The text detector's: auto is int8 on x86 CPUs (prepared and checked once per machine), "
                   "else fp32.")
@click.option("--redo", is_flag=True, help="Forget the text read before and read every image again.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ocr(index_path: Path | None, langs: str, batch_size: int, threads: int | None, precision: str, redo: bool,
        as_json: bool) -> None:
    """Read the text in every indexed image not read yet (signs, screenshots, receipts, pages).

    The text is found and read offline (RapidOCR's PP-OCR models; Korean lines read again by
    Tesseract), stored line by line with its position, and searched like keywords: `search`
    finds a photo by a word written in it, and --ocr-text keeps only photos whose text holds
    words. Needs pip install 'searchindex[ocr]' and, for Korean, Debian's tesseract-ocr-kor.
    Each batch is committed as it is done: Ctrl-C (or a crash) keeps them and the same
    command resumes; images indexed later are read by the next run (or by `index --ocr`).
    """
    from .common import stop_on_sigint

    langs = check_languages(langs)
    with open_index(index_path) as idx, stop_on_sigint() as stop:
        if redo:
            idx.forget_ocr()
        summary = run_ocr(idx, langs, stop, batch_size=batch_size, threads=threads, precision=precision)
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), "index": str(resolve_index_path(index_path))}))
    else:
        print_ocr_summary(summary)
    if summary.interrupted:
        click.echo("Interrupted: the text read so far is committed. Run the same command again to resume.",
                   err=True)
        sys.exit(130)
