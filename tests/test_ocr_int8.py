"""The int8 text detector: prepared once per machine from the wheel's detector, checked against fp32
(and refused when it misses text), and reading as well as fp32 on scenes it was not calibrated on."""

from __future__ import annotations

import json
import platform
import unicodedata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rapidocr")

from PIL import Image  # noqa: E402

from searchindex.models import ocrint8  # noqa: E402
from searchindex.models.ocr import OcrEngine  # noqa: E402

X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_text_scenes_are_seeded_and_carry_what_they_show() -> None:
    shown: list[list[str]] = []
    a = ocrint8.text_scenes(5, 4, written=shown)
    b = ocrint8.text_scenes(5, 4)
    c = ocrint8.text_scenes(6, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert [x.shape for x in a] == [(552, 736, 3)] * 4
    assert any(shown[:3]) and shown[3] == []  # one scene in four has no text


def test_lines_kept_counts_regions_the_other_map_finds() -> None:
    want = np.zeros((1, 1, 40, 100), np.float32)
    want[..., 5:10, 5:40] = 0.9  # two lines
    want[..., 20:25, 5:60] = 0.9
    got = want.copy()
    assert ocrint8.lines_kept([want], [got]) == 1.0
    got[..., 20:25, 5:60] = 0.1  # the second line missed
    assert ocrint8.lines_kept([want], [got]) == 0.5
    assert ocrint8.lines_kept([got], [want]) == 1.0  # what got finds, want finds too


@pytest.mark.skipif(not X86, reason="auto means fp32 off x86")
def test_the_default_reader_uses_the_int8_detector_prepared_once() -> None:
    engine = OcrEngine("en", threads=2)
    assert engine.precision == "int8" and engine.name.startswith("rapidocr-3.10.0-int8+")
    assert ocrint8.int8_detector_state() == "ready"
    source = ocrint8.shipped_detector()
    assert source is not None
    made = ocrint8.int8_detector(source)
    assert made is not None
    path, facts = made
    assert facts["accepted"] and facts["lines_kept"] >= ocrint8.DET_INT8_MIN_KEPT
    assert path.stat().st_size == facts["bytes"] < source.stat().st_size // 2
    before = path.stat().st_mtime_ns
    assert OcrEngine("en", threads=2).precision == "int8"
    assert path.stat().st_mtime_ns == before  # loaded, not prepared again
    fp32 = OcrEngine("en", threads=2, precision="fp32")
    assert fp32.precision == "fp32" and "int8" not in fp32.name


def test_a_detector_that_misses_text_is_refused_and_fp32_reads(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With a threshold no quantised detector can reach, the real check refuses it: the verdict is
    recorded, nothing is kept, later engines read with fp32 without trying again."""
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ocrint8, "DET_INT8_MIN_KEPT", 1.01)
    engine = OcrEngine("en", threads=2, precision="int8")
    assert engine.precision == "fp32" and "int8" not in engine.name
    [sidecar] = (tmp_path / "cache" / "ocr").glob("*.json")
    facts = json.loads(sidecar.read_text())
    assert facts["accepted"] is False and 0.5 < facts["lines_kept"] < 1.01
    assert not list((tmp_path / "cache" / "ocr").glob("*.onnx"))
    assert ocrint8.int8_detector_state() == "rejected"

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepared again after a refusal")

    monkeypatch.setattr(ocrint8, "_prepare", must_not_run)
    again = OcrEngine("en", threads=2, precision="int8")
    assert again.precision == "fp32"
    shown: list[list[str]] = []
    scene = ocrint8.text_scenes(2611, 1, written=shown)[0]
    read = " ".join(ln.text for ln in again.read(Image.fromarray(scene[:, :, ::-1]))).lower()
    assert shown[0] and "cafe" in read  # fp32 still reads ("street Cafe" on a sign)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="int4"):
        OcrEngine("en", precision="int4")


def _word_recall(engine: OcrEngine, scenes: list[np.ndarray], shown: list[list[str]]) -> float:
    found = total = 0
    for scene, lines in zip(scenes, shown, strict=True):
        read = engine.read(Image.fromarray(scene[:, :, ::-1]))
        text = unicodedata.normalize("NFC", " ".join(ln.text for ln in read)).lower()
        words = {w.lower() for line in lines for w in line.split() if sum(c.isalnum() for c in w) >= 3}
        found += sum(w in text for w in words)
        total += len(words)
    return found / total


@pytest.mark.skipif(not X86, reason="auto means fp32 off x86")
@pytest.mark.parametrize("count", [pytest.param(10, id="10-scenes"),
                                   pytest.param(40, id="40-scenes", marks=pytest.mark.slow)])
def test_int8_reads_as_well_as_fp32_on_scenes_it_was_not_calibrated_on(count: int) -> None:
    """Scenes of another seed than the calibration's and the check's, at the 1600-pixel working size
    of a 12 MP photo: the words written that each detector's reading holds."""
    shown: list[list[str]] = []
    scenes = ocrint8.text_scenes(777, count, size=(1600, 1200), written=shown)
    int8 = _word_recall(OcrEngine("ko,en", threads=2), scenes, shown)
    fp32 = _word_recall(OcrEngine("ko,en", threads=2, precision="fp32"), scenes, shown)
    print(json.dumps({"scenes": count, "int8": round(int8, 3), "fp32": round(fp32, 3)}))
    assert fp32 >= 0.75
    assert int8 >= fp32 - 0.05, (int8, fp32)



@pytest.mark.skipif(not X86, reason="auto means fp32 off x86")
def test_cli_says_when_it_prepares_the_detector_and_takes_fp32(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from searchindex import Index
    from searchindex.cli import cli

    folder = tmp_path / "photos"
    folder.mkdir()
    shown: list[list[str]] = []
    for n, scene in enumerate(ocrint8.text_scenes(2611, 2, written=shown)):
        Image.fromarray(scene[:, :, ::-1]).save(folder / f"scene-{n}.jpg", quality=92)
    index = tmp_path / "idx"
    with Index.create(index, model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path / "cache"))  # a machine that has none yet
    runner = CliRunner()
    fp32 = runner.invoke(cli, ["ocr", "--index", str(index), "--lang", "en", "--precision", "fp32", "--json"])
    assert fp32.exit_code == 0, fp32.output
    assert json.loads(fp32.stdout)["reader"] == "rapidocr-3.10.0+tesseract:en"
    assert "Preparing" not in fp32.stderr and not (tmp_path / "cache" / "ocr").exists()
    int8 = runner.invoke(cli, ["ocr", "--index", str(index), "--lang", "en", "--redo", "--json"])
    assert int8.exit_code == 0, int8.output
    assert "Preparing the int8 text detector" in int8.stderr
    summary = json.loads(int8.stdout)
    assert summary["reader"] == "rapidocr-3.10.0-int8+tesseract:en" and summary["with_text"] >= 1
    again = runner.invoke(cli, ["ocr", "--index", str(index), "--lang", "en", "--redo", "--json"])
    assert again.exit_code == 0 and "Preparing" not in again.stderr
    bad = runner.invoke(cli, ["ocr", "--index", str(index), "--precision", "int4"])
    assert bad.exit_code == 2 and "int4" in bad.output


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_real_pictures_a_scanned_page_is_read_and_photos_gain_no_text(precision: str) -> None:
    """Pictures nobody generated (scikit-image's and matplotlib's sample data): a scanned book page, the
    name tag on Grace Hopper's uniform, and photos of a person, a cup, a cat, a rocket and a camera man
    in which there is nothing to read."""
    data = pytest.importorskip("skimage").data_dir
    hopper = Path(pytest.importorskip("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    engine = OcrEngine("ko,en", threads=2, precision=precision)
    page = " ".join(ln.text for ln in engine.read_file(Path(data) / "page.png")).lower()
    assert "region-based segmentation" in page and "markers" in page
    assert "hopper" in " ".join(ln.text for ln in engine.read_file(hopper)).lower()
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png"):
        assert engine.read_file(Path(data) / name) == [], name
