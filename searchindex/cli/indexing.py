"""Commands that write an index: index, reindex, caption."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..defaults import DEFAULT_CAPTION_MODEL, DEFAULT_MAX_FILE_MB, DEFAULT_MAX_MEGAPIXELS
from .common import (
    DEVICE,
    PRECISION,
    display,
    echo_failures,
    errors_as_click,
    finite,
    index_option,
    open_index,
    progress_bar,
    resolve_index_path,
    stop_on_sigint,
)
from .ocr import check_languages, print_ocr_summary, run_ocr

if TYPE_CHECKING:
    from ..results import CaptionSummary, IndexSummary



def encoding_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `index` and `reindex` share: weights, batching, decoding workers, precision, device."""
    for option in reversed((
        click.option("--pretrained", default=None,
                     help="Pretrained tag, local checkpoint file, or 'none' (random weights). "
                          "Default: the model's own."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
                     help="Images per model call and per catalog commit."),
        click.option("--workers", default=None, type=click.IntRange(min=0),
                     help="Decoding processes (default: one per CPU, at most 8); 0 decodes in threads."),
        click.option("--precision", type=PRECISION, default="auto", show_default=True,
                     help="Image-encoding precision: auto is fp16 on CUDA, int8 on x86 CPUs, else fp32."),
        click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where the model runs."),
    )):
        command = option(command)
    return command


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_option
@click.option("--model", default=None,
              help="open_clip architecture (ViT-B-32-256, ViT-L-14), hf-hub:ORG/REPO, local-dir:FOLDER, or "
                   "tiny-shapes. Only when creating an index; default ViT-B-32-256 (datacomp_s34b_b86k).")
@encoding_options
@click.option("--max-megapixels", default=DEFAULT_MAX_MEGAPIXELS, show_default=True, type=click.FloatRange(min=0.01),
              callback=finite, help="Larger images are recorded as failures (decompression-bomb guard).")
@click.option("--max-file-mb", default=DEFAULT_MAX_FILE_MB, show_default=True, type=click.IntRange(min=1),
              help="Larger files are recorded as failures without being read.")
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
@click.option("--faces", "faces_after", is_flag=True,
              help="Then find and group the faces of new images, as `searchindex faces` (needs the faces extra).")
@click.option("--ocr", "ocr_after", is_flag=True,
              help="Then read the text in the images not read yet (see `ocr`; needs searchindex[ocr]).")
@click.option("--ocr-lang", default=None, metavar="ko,en", help="Languages for --ocr. [default: ko,en]")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where files are read, decoded and encoded: this machine's worker pool, or Ray Data "
                   "(needs searchindex[ray]); scanning, change detection and commits stay here.")
@click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
              help="With --engine ray: the cluster to join. Default: start a local Ray instance.")
@click.option("--encoder-workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="With --engine ray: encoder actors (each loads the model once).")
@click.option("--num-gpus-per-worker", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --engine ray: GPUs per encoder actor (the model then runs on CUDA).")
@click.option("--ray-cpus", default=None, type=click.IntRange(min=1),
              help="With --engine ray and no --ray-address: CPUs of the local instance (default: all).")
@click.option("--gone", is_flag=True,
              help="FOLDERS no longer exist (renamed, moved or deleted): drop the images indexed below them "
                   "(a missing folder is otherwise taken for offline, and its images kept).")
@click.option("--videos/--no-videos", "videos", default=None,
              help="Index the videos too, each as moments (see docs/video.md). [default: when PyAV is installed, "
                   "pip install 'searchindex[video]'] --no-videos keeps the videos indexed before.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index(folders: Sequence[Path], index_path: Path | None, model: str | None, pretrained: str | None,
          batch_size: int, workers: int | None, precision: str, device: str, max_megapixels: float,
          max_file_mb: int, index_type: str | None, strict: bool, caption_after: bool, caption_model: str | None,
          caption_prompt: str | None, faces_after: bool, ocr_after: bool, ocr_lang: str | None, engine: str,
          ray_address: str | None, encoder_workers: int,
          num_gpus_per_worker: float, ray_cpus: int | None, gone: bool, videos: bool | None, as_json: bool) -> None:
    """Index (or update the index of) the images in FOLDERS.

    Creates the index on first use with --model/--pretrained; later runs use the
    model recorded in the index and only encode new or changed content: touched,
    moved and duplicated files reuse their stored embedding, deleted files leave
    the index. Ctrl-C stops after the batch in flight is committed; run the same
    command again to resume. With --caption, the images are then captioned as by
    `searchindex caption`; with --ocr, their text is read as by `searchindex ocr`.

    Links to folders are followed (like find -L), each folder once: a link back
    to a folder already scanned is skipped, and images indexed below a skipped
    link or an unreadable folder are kept, not taken for deleted. A new index
    needs a folder of its own (new, or empty).
    """
    from ..index.facade import Index
    from ..ingest.scan import check_folders

    if (caption_model or caption_prompt) and not caption_after:
        raise click.UsageError("--caption-model and --caption-prompt need --caption")
    if ocr_lang and not ocr_after:
        raise click.UsageError("--ocr-lang needs --ocr")
    ocr_langs = check_languages(ocr_lang or "ko,en")
    ray_options = {"--ray-address": ray_address, "--encoder-workers": encoder_workers != 1,
                   "--num-gpus-per-worker": num_gpus_per_worker, "--ray-cpus": ray_cpus}
    if engine != "ray" and any(ray_options.values()):
        raise click.UsageError(f"{', '.join(k for k, v in ray_options.items() if v)} need --engine ray")
    path = resolve_index_path(index_path)
    captions = None
    faces = None
    texts = None
    runner: Any = "local"
    if gone:
        with errors_as_click(), Index.open(path) as idx:
            summary = idx.forget_folder(folders)
            total = idx.count()
        click.echo(json.dumps(_summary_json(summary, path, total)) if as_json else
                   f"{summary.deleted} images below {', '.join(display(str(f)) for f in folders)} forgotten. "
                   f"{path} holds {total} images.")
        return
    with errors_as_click(), contextlib.ExitStack() as cleanup:
        if engine == "ray":  # inside: a missing extra is a one-line error too
            from ..ingest.ray_engine import RayEngine

            runner = RayEngine(address=ray_address, encoder_workers=encoder_workers,
                               num_gpus_per_worker=num_gpus_per_worker, num_cpus=ray_cpus)
            cleanup.callback(runner.close)
        check_folders(folders)  # before an index is created for a mistyped folder
        idx = Index.open_or_create(path, model, pretrained, device=device, precision=precision,
                                   index_type=index_type)
        with idx, stop_on_sigint() as stop:
            with progress_bar("indexing") as bar:
                summary = idx.add_folder(folders, progress=bar, batch_size=batch_size, workers=workers,
                                         max_megapixels=max_megapixels, stop=stop, index_type=index_type,
                                         engine=runner, max_file_bytes=max_file_mb * 1024 * 1024, videos=videos)
            if caption_after and not summary.interrupted:
                with progress_bar("captioning") as bar:
                    captions = idx.caption(caption_model, prompt=caption_prompt, device=device, progress=bar,
                                           stop=stop)
            if faces_after and not summary.interrupted and not (captions is not None and captions.interrupted):
                with progress_bar("faces") as bar:
                    faces = idx.find_faces(progress=bar, stop=stop)  # type: ignore[arg-type]
            if ocr_after and not summary.interrupted and not (captions is not None and captions.interrupted):
                texts = run_ocr(idx, ocr_langs, stop)
            total = idx.count()
            recorded = len(idx.failures())
    if as_json:
        data = _summary_json(summary, path, total)
        if captions is not None:
            data["captions"] = captions.to_dict()
        if faces is not None:
            data["faces"] = faces.to_dict()
        if texts is not None:
            data["ocr"] = texts.to_dict()
        click.echo(json.dumps(data))
    else:
        _print_summary(summary, path, total, recorded)
        if captions is not None:
            _print_caption_summary(captions)
        if faces is not None:
            click.echo(f"{faces.faces} faces found in {faces.images} images; see `searchindex people`.")
        if texts is not None:
            print_ocr_summary(texts)
    if summary.interrupted or any(x is not None and x.interrupted for x in (captions, faces, texts)):
        click.echo("Interrupted: everything processed so far is committed. Run the same command again to "
                   "resume.", err=True)
        sys.exit(130)
    if strict and summary.failed:
        sys.exit(3)


@click.command()
@index_option
@click.option("--model", required=True,
              help="The new open_clip architecture, hf-hub:ORG/REPO, local-dir:FOLDER, or tiny-shapes.")
@encoding_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def reindex(index_path: Path | None, model: str, pretrained: str | None, batch_size: int, workers: int | None,
            precision: str, device: str, as_json: bool) -> None:
    """Re-embed every image of an index with another model.

    The new index is built beside the old one, which stays searchable, and
    replaces it atomically when complete. Ctrl-C (or a crash) keeps what was
    done; run the same command again to resume.
    """
    from ..index.facade import Index

    path = resolve_index_path(index_path)
    with errors_as_click(), progress_bar("reindexing") as bar, stop_on_sigint() as stop:
        summary = Index.reindex(path, model, pretrained, device=device, precision=precision, progress=bar,
                                batch_size=batch_size, workers=workers, stop=stop)
    if summary.interrupted:
        click.echo("Interrupted: the old index is untouched and the work done so far is kept. Run the same "
                   "command again to resume.", err=True)
        sys.exit(130)
    with errors_as_click(), Index.open(path) as idx:
        total = idx.count()
        recorded = len(idx.failures())
        described = idx.spec.describe()
    if as_json:
        click.echo(json.dumps(_summary_json(summary, path, total)))
    else:
        _print_summary(summary, path, total, recorded)
        click.echo(f"{path} now uses {described}.")


def _summary_json(summary: IndexSummary, path: Path, total: int) -> dict[str, Any]:
    return {**summary.to_dict(), "index": str(path), "images_in_index": total}


def _print_summary(summary: IndexSummary, path: Path, total: int, recorded: int) -> None:
    """The run's counts, then the index's: ``recorded`` is every failure on record, this run's
    and earlier runs' (what `info` and `errors` count), so the two numbers are told apart."""
    rate = f", {summary.indexed / summary.seconds:.1f} images/s" if summary.indexed and summary.seconds else ""
    changes = ", ".join(f"{n} {label}" for n, label in (
        (summary.new, "new"), (summary.modified, "modified"), (summary.touched, "touched"),
        (summary.moved, "moved"), (summary.duplicates, "duplicates"), (summary.deleted, "deleted"),
        # A file that could not be read is a change too: "(no changes)" next to "1 failed" hid it.
        (summary.failed, "unreadable")) if n)
    click.echo(
        f"{summary.indexed} indexed, {summary.unchanged} unchanged, {summary.failed} failed this run "
        f"({changes or 'no changes'}) in {summary.seconds:.1f} s{rate}. {path} holds {total} images"
        + (f"; {recorded} files on record as failed, this run's and earlier ones (searchindex errors)."
           if recorded else ".")
    )
    echo_failures(summary.failures, "failed", more=" (searchindex errors lists them all)")


@click.command()
@index_option
@click.option("--model", default=None,
              help=f"Image-to-text model: a Hugging Face hub id or a local folder (BLIP, BLIP-2, GIT). "
                   f"Default: {DEFAULT_CAPTION_MODEL}.")
@click.option("--prompt", default=None,
              help="Conditional captioning: captions continue this text (e.g. 'a photo of'), which is stripped.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per model call and per catalog commit.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
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
    with open_index(index_path, device=device) as idx, progress_bar("captioning") as bar, \
            stop_on_sigint() as stop:
        summary = idx.caption(model, prompt=prompt, batch_size=batch_size, device=device,
                              max_new_tokens=max_new_tokens, num_beams=num_beams, progress=bar, stop=stop)
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), "index": str(resolve_index_path(index_path))}))
    else:
        _print_caption_summary(summary)
    if summary.interrupted:
        click.echo("Interrupted: the captions written so far are committed. Run the same command again to "
                   "resume.", err=True)
        sys.exit(130)


def _print_caption_summary(summary: CaptionSummary) -> None:
    rate = f", {summary.images_per_s:.2f} images/s" if summary.captioned else ""
    click.echo(f"{summary.captioned} captioned, {summary.failed} skipped (unreadable), {summary.already} already "
               f"had a caption from {summary.model} in {summary.seconds:.1f} s{rate}.")
    echo_failures(summary.failures)
