"""Captioning and ITM scoring on tiny BLIP models built locally (random weights, real transformers code)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from searchindex import CaptionProgress, Index, MissingExtraError, UnknownModelError, WeightsUnavailableError
from searchindex.cli import cli
from searchindex.errors import install_hint
from searchindex.models.captioners import load_captioner, load_itm
from tests.support.blip import write_tiny_blip, write_tiny_git

from .conftest import Shapes

pytest.importorskip("transformers")

CAPTION_OPTIONS = {"batch_size": 8, "device": "cpu", "max_new_tokens": 8, "num_beams": 2}


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(captioner folder, ITM folder), written once per session."""
    return write_tiny_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="session")
def other_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second captioner with other weights (seed 1)."""
    return write_tiny_blip(tmp_path_factory.mktemp("blip1"), seed=1)[0]


@pytest.fixture()
def shapes_folder_extra(shapes: Shapes, tmp_path: Path) -> Path:
    """Five scenes that ``small_folder`` does not hold."""
    out = tmp_path / "extra"
    out.mkdir()
    for src in sorted(shapes.folder.glob("*.png"))[40:45]:
        shutil.copy2(src, out / src.name)
    return out


@pytest.fixture()
def indexed(small_folder: Path, tmp_path: Path) -> Path:
    """A fresh index of the 40 scenes of ``small_folder``."""
    path = tmp_path / "idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        index.add_folder(small_folder, workers=0)
    return path


def _images(folder: Path, n: int) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:n]]


def _all_captions(path: Path) -> dict[int, list[tuple[str, str]]]:
    with Index.open(path) as index:
        ids = [int(i) for i in index.catalog.read.ids_by_path(index.catalog.read.all_paths()).values()]
        return index.catalog.read.captions(ids)


def test_captioner_writes_one_caption_per_image(tiny_blip: tuple[Path, Path], small_folder: Path) -> None:
    cap = load_captioner(str(tiny_blip[0]), device="cpu", max_new_tokens=8, num_beams=2)
    images = _images(small_folder, 3)
    first = cap.caption(images)
    assert len(first) == 3 and all(isinstance(t, str) and t for t in first)
    assert cap.caption(images) == first  # beam search, no sampling: stable
    assert cap.caption([]) == []
    assert cap.model_id == str(tiny_blip[0]) and cap.prompt is None and cap.image_size == 32


def test_prompt_is_stripped_from_conditional_captions(tiny_blip: tuple[Path, Path], small_folder: Path) -> None:
    import torch
    from transformers import AutoProcessor, BlipForConditionalGeneration

    cap = load_captioner(str(tiny_blip[0]), device="cpu", prompt="A photo of", max_new_tokens=6, num_beams=1)
    images = _images(small_folder, 2)
    captions = cap.caption(images)
    # The same generation straight through transformers echoes the (lower-cased) prompt first.
    processor = AutoProcessor.from_pretrained(tiny_blip[0])
    model = BlipForConditionalGeneration.from_pretrained(tiny_blip[0]).eval()
    with torch.inference_mode():
        out = model.generate(**processor(images=images, text=["A photo of"] * 2, return_tensors="pt"),
                             max_new_tokens=6, num_beams=1, do_sample=False)
    raw = [" ".join(t.split()) for t in processor.batch_decode(out, skip_special_tokens=True)]
    assert all(r.startswith("a photo of") for r in raw)
    assert [r[len("a photo of"):].strip() for r in raw] == captions
    assert cap.prompt == "A photo of"


def test_another_family_works_through_the_same_class(tmp_path: Path, small_folder: Path) -> None:
    folder = write_tiny_git(tmp_path / "git")
    images = _images(small_folder, 2)
    plain = load_captioner(str(folder), device="cpu", max_new_tokens=5, num_beams=2).caption(images)
    assert len(plain) == 2 and all(plain)
    # GIT continues an open prompt (no closing [SEP]); the prompt is stripped as for BLIP.
    cap = load_captioner(str(folder), device="cpu", prompt="a photo of", max_new_tokens=5, num_beams=1)
    captions = cap.caption(images)
    assert len(captions) == 2 and not any(c.startswith("a photo of") for c in captions)


def test_itm_scores_are_probabilities_independent_of_batching(tiny_blip: tuple[Path, Path],
                                                                small_folder: Path) -> None:
    images = _images(small_folder, 5)
    scores = load_itm(str(tiny_blip[1]), device="cpu", batch_size=16).score(images, "a red circle")
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.ptp(scores) > 0  # the images are told apart
    small_batches = load_itm(str(tiny_blip[1]), device="cpu", batch_size=2).score(images, "a red circle")
    np.testing.assert_allclose(small_batches, scores, atol=1e-5)
    other = load_itm(str(tiny_blip[1]), device="cpu").score(images, "a green star")
    assert not np.allclose(other, scores)
    assert load_itm(str(tiny_blip[1]), device="cpu").score([], "x").shape == (0,)
    # The same probabilities as transformers' own BlipForImageTextRetrieval forward with the ITM head.
    import torch
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    processor = AutoProcessor.from_pretrained(tiny_blip[1])
    model = BlipForImageTextRetrieval.from_pretrained(tiny_blip[1]).eval()
    with torch.inference_mode():
        logits = model(**processor(images=images, text=["a red circle"] * 5, return_tensors="pt"), use_itm_head=True)[0]
    np.testing.assert_allclose(torch.softmax(logits, dim=-1)[:, 1].numpy(), scores, atol=1e-6)


def test_wrong_or_missing_models_are_clear_errors(tiny_blip: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="BlipForImageTextRetrieval checkpoint, not a captioner"):
        load_captioner(str(tiny_blip[1]), device="cpu")
    with pytest.raises(UnknownModelError, match="needs a BLIP retrieval model"):
        load_itm(str(tiny_blip[0]), device="cpu")
    with pytest.raises(WeightsUnavailableError, match="no model folder at .*--model"):
        load_captioner(str(tmp_path / "nowhere"))
    # Offline (tests set HF_HUB_OFFLINE): a hub id that is not cached names the option for a folder.
    with pytest.raises(WeightsUnavailableError, match="--model FOLDER"):
        load_captioner("searchindex-tests/no-such-captioner")
    with pytest.raises(WeightsUnavailableError, match="--itm-model FOLDER"):
        load_itm("searchindex-tests/no-such-itm")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tiny_blip: tuple[Path, Path]) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an install without the extra looks like
    with pytest.raises(MissingExtraError, match=re.escape(install_hint("caption"))):
        load_captioner(str(tiny_blip[0]))
    with pytest.raises(MissingExtraError):
        load_itm(str(tiny_blip[1]))


def test_caption_stores_every_image_then_only_new_ones(tiny_blip: tuple[Path, Path], indexed: Path,
                                                        small_folder: Path, shapes_folder_extra: Path) -> None:
    model = str(tiny_blip[0])
    with Index.open(indexed) as index:
        seen: list[CaptionProgress] = []
        summary = index.caption(model, progress=seen.append, **CAPTION_OPTIONS)
        assert (summary.captioned, summary.failed, summary.already, summary.interrupted) == (40, 0, 0, False)
        assert summary.model == model and summary.prompt is None and summary.images_per_s > 0
        assert [p.done for p in seen] == [8, 16, 24, 32, 40] and seen[-1].total == 40
    stored = _all_captions(indexed)
    assert len(stored) == 40
    assert all(len(v) == 1 and v[0][0] == model and v[0][1] for v in stored.values())

    with Index.open(indexed) as index:
        again = index.caption(model, **CAPTION_OPTIONS)
        assert (again.captioned, again.already) == (0, 40)
        # New images are captioned by the next run, and only they.
        for src in shapes_folder_extra.glob("*.png"):
            shutil.copy2(src, small_folder / src.name)
        index.add_folder(small_folder, workers=0)
        more = index.caption(model, **CAPTION_OPTIONS)
        assert (more.captioned, more.already) == (5, 40)
        assert index.caption_counts() == {model: 45}
    after = _all_captions(indexed)
    assert len(after) == 45 and all(after[i] == stored[i] for i in stored)  # earlier captions untouched


def test_caption_resumes_after_an_interruption(tiny_blip: tuple[Path, Path], indexed: Path) -> None:
    model = str(tiny_blip[0])

    class Crash(Exception):
        pass

    def crash_after_first_batch(p: CaptionProgress) -> None:
        raise Crash  # raised after the first batch was committed

    with Index.open(indexed) as index:
        with pytest.raises(Crash):
            index.caption(model, progress=crash_after_first_batch, **CAPTION_OPTIONS)
        assert index.caption_counts() == {model: 8}
        first = _all_captions(indexed)
        resumed = index.caption(model, **CAPTION_OPTIONS)
        assert (resumed.captioned, resumed.already) == (32, 8)
    after = _all_captions(indexed)
    assert len(after) == 40 and all(len(v) == 1 for v in after.values())
    assert all(after[i] == first[i] for i in first)  # the committed batch was kept, not redone


def test_caption_stop_event_ends_after_the_batch(tiny_blip: tuple[Path, Path], indexed: Path) -> None:
    import threading

    stop = threading.Event()

    def stop_after_first(p: CaptionProgress) -> None:
        stop.set()

    with Index.open(indexed) as index:
        summary = index.caption(str(tiny_blip[0]), progress=stop_after_first, stop=stop, **CAPTION_OPTIONS)
        assert (summary.captioned, summary.interrupted) == (8, True)


def test_two_models_keep_their_own_captions(tiny_blip: tuple[Path, Path], other_blip: Path, indexed: Path) -> None:
    a, b = str(tiny_blip[0]), str(other_blip)
    with Index.open(indexed) as index:
        index.caption(a, **CAPTION_OPTIONS)
        summary = index.caption(b, prompt="a photo of", **CAPTION_OPTIONS)
        assert (summary.captioned, summary.already, summary.prompt) == (40, 0, "a photo of")
        assert index.caption_counts() == {a: 40, b: 40}
        assert index.info().captions == {a: 40, b: 40}
    stored = _all_captions(indexed)
    assert all(sorted(m for m, _ in v) == sorted([a, b]) for v in stored.values())


def test_unreadable_files_are_skipped_and_retried(tiny_blip: tuple[Path, Path], indexed: Path,
                                                   small_folder: Path) -> None:
    files = sorted(small_folder.glob("*.png"))
    data = files[3].read_bytes()
    files[3].write_bytes(data[:40])  # truncated since it was indexed
    files[5].unlink()
    with Index.open(indexed) as index:
        summary = index.caption(str(tiny_blip[0]), **CAPTION_OPTIONS)
        assert (summary.captioned, summary.failed) == (38, 2)
        reasons = {Path(f.path).name: f.reason for f in summary.failures}
        assert reasons[files[3].name].startswith(("corrupt image", "not a recognised image"))
        assert reasons[files[5].name].startswith("cannot read")
        files[3].write_bytes(data)
        retry = index.caption(str(tiny_blip[0]), **CAPTION_OPTIONS)
        assert (retry.captioned, retry.failed, retry.already) == (1, 1, 38)


def test_missing_model_path_is_an_error_that_writes_nothing(indexed: Path, tmp_path: Path) -> None:
    with Index.open(indexed) as index:
        with pytest.raises(WeightsUnavailableError, match="--model"):
            index.caption(str(tmp_path / "no-blip"), device="cpu")
        assert index.caption_counts() == {}


def test_cli_caption_info_and_index_caption(tiny_blip: tuple[Path, Path], other_blip: Path, indexed: Path,
                                            small_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = str(tiny_blip[0])
    res = runner.invoke(cli, ["caption", "--index", str(indexed), "--model", model, "--device", "cpu",
                              "--batch-size", "16", "--max-new-tokens", "5", "--num-beams", "1"])
    assert res.exit_code == 0, res.output
    assert f"40 captioned, 0 skipped (unreadable), 0 already had a caption from {model}" in res.output
    res = runner.invoke(cli, ["caption", "--index", str(indexed), "--model", model, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["captioned"], data["already"], data["model"], data["index"]) == (0, 40, model, str(indexed))

    res = runner.invoke(cli, ["info", "--index", str(indexed)])
    assert res.exit_code == 0 and f"captions:   40 by {model}" in res.output
    res = runner.invoke(cli, ["info", "--index", str(indexed), "--json"])
    assert json.loads(res.stdout)["captions"] == {model: 40}

    res = runner.invoke(cli, ["caption", "--index", str(indexed), "--model", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no model folder at" in res.output and "--model" in res.output

    fresh = str(tmp_path / "fresh")
    res = runner.invoke(cli, ["index", str(small_folder), "--index", fresh, "--model", "tiny-shapes",
                              "--device", "cpu", "--workers", "0", "--caption", "--caption-model", str(other_blip),
                              "--caption-prompt", "a picture of", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["indexed"] == 40
    assert (data["captions"]["captioned"], data["captions"]["prompt"]) == (40, "a picture of")
    res = runner.invoke(cli, ["index", str(small_folder), "--index", fresh, "--caption-model", model])
    assert res.exit_code == 2 and "need --caption" in res.output
