"""Text in photos (issue 23): the engines offline, the catalog's lines and word index, CJK bigrams,
the ``ocr`` pass (incremental, resumable), search by a word written in a photo, the CLI, and
recall floors on a generated set of signs, screenshots, receipts and pages in English and Korean."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from searchindex import Index
from searchindex.cjk import fts_terms, index_form
from searchindex.cli import cli
from searchindex.errors import ModelError
from searchindex.results import TextLine
from tests.support.ocrset import OcrSample, write_ocrset

pytest.importorskip("rapidocr")
pytest.importorskip("tesserocr")

# -- words in Korean: bigrams -------------------------------------------------------------


def test_index_form_splits_cjk_runs_into_overlapping_bigrams() -> None:
    assert index_form("서울역에서 만나요") == "서울 울역 역에 에서 만나 나요"
    assert index_form("Coffee 커피를 2잔") == "Coffee 커피 피를 2 잔"
    assert index_form("東京タワー") == "東京 京タ タワ ワー"


def test_query_words_become_bigram_phrases() -> None:
    assert fts_terms("서울역") == ['"서울 울역"']
    assert fts_terms("커피") == ['"커피"']
    assert fts_terms("역") == ['"역"*']
    assert fts_terms("KTX역") == ['"ktx"', '"역"*']
    assert fts_terms('say "hi"') == ['"say"', '"hi"']  # no user text reaches FTS5 as syntax


@pytest.mark.parametrize(("query", "found"), [
    ("서울", True), ("서울역", True), ("역에서", True), ("커피", True), ("전문점", True),
    ("울역에", True), ("서울시", False), ("부산", False), ("coffee", True), ("cof", False),
])
def test_bigrams_find_a_word_inside_a_longer_run(query: str, found: bool) -> None:
    """A two-syllable word matches inside a run of Hangul with particles attached, in real FTS5."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize = 'unicode61 remove_diacritics 2')")
    db.execute("INSERT INTO t (rowid, text) VALUES (1, ?)", (index_form("서울역에서 Coffee 커피전문점을"),))
    # The default tokenizer alone: the run is one token, so a word inside it is not found.
    db.execute("CREATE VIRTUAL TABLE plain USING fts5(text)")
    db.execute("INSERT INTO plain (rowid, text) VALUES (1, '서울역에서 커피전문점을')")
    assert db.execute("SELECT count(*) FROM plain WHERE plain MATCH '\"서울역\"'").fetchone()[0] == 0
    hits = db.execute("SELECT rowid FROM t WHERE t MATCH ?", [" AND ".join(fts_terms(query))]).fetchall()
    assert bool(hits) is found


# -- the engines ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every socket connection fails (and is recorded); proxies point at a dead port."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    yield attempts


def _sign(text: str, font: str, size: tuple[int, int] = (640, 200)) -> object:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (235, 230, 215))
    ImageDraw.Draw(img).text((30, 60), text, font=ImageFont.truetype(font, 56), fill=(25, 25, 25))
    return img


def test_engines_read_offline_from_the_wheels_own_models(no_network: list[object]) -> None:
    import rapidocr

    from searchindex.models.ocr import RAPIDOCR_VERSION, OcrEngine, engine_versions

    models = Path(rapidocr.__file__).parent / "models"
    assert sorted(p.suffix for p in models.glob("*.onnx")) == [".onnx"] * 3  # det, cls, rec ship in the wheel
    assert engine_versions()["rapidocr"] == RAPIDOCR_VERSION
    engine = OcrEngine("en,ko", threads=2)
    try:
        english = engine.read(_sign("Pharmacy 24h", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"))
        korean = engine.read(_sign("약국에서 만나요", "/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf"))
        upside_down = engine.read(_sign("Bakery open", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
                                  .rotate(180))  # type: ignore[attr-defined]
    finally:
        engine.close()
    assert no_network == []
    assert "pharmacy" in " ".join(ln.text for ln in english).lower()
    assert "약국에서" in " ".join(ln.text for ln in korean).replace(" ", "")
    assert any(ln.engine == "tesseract" for ln in korean)
    assert "bakery" in " ".join(ln.text for ln in upside_down).lower()
    assert {ln.angle for ln in upside_down} == {180}
    line = english[0]
    assert len(line.box) == 8 and all(0.0 <= v <= 1.0 for v in line.box) and 0.5 <= line.confidence <= 1.0


def test_missing_korean_data_is_one_line_naming_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from searchindex.models import ocr

    (tmp_path / "eng.traineddata").write_bytes(b"")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    with pytest.raises(ModelError, match="apt-get install tesseract-ocr-kor") as err:
        ocr.OcrEngine("ko")
    assert "\n" not in str(err.value)
    ocr.OcrEngine("en")  # English needs no Tesseract data
    with pytest.raises(ValueError, match="unknown OCR language fr"):
        ocr.parse_languages("en,fr")


# -- the generated set, indexed and read once ----------------------------------------------


class Read:
    def __init__(self, folder: Path, index: Path, samples: list[OcrSample]) -> None:
        self.folder, self.index, self.samples = folder, index, samples


def _build(tmp: Path, per_lang: int, text_free: int, seed: int) -> Read:
    folder = tmp / "photos"
    samples = write_ocrset(folder, per_lang, text_free, seed=seed)
    index = tmp / "idx"
    with Index.create(index, model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
        idx.ocr("ko,en", threads=2)
    return Read(folder, index, samples)


@pytest.fixture(scope="module")
def read_set(tmp_path_factory: pytest.TempPathFactory) -> Read:
    """8 English and 8 Korean images (every kind, seven of the eight distortions) and 4 text-free
    photos: small enough for the default run; the bigger set below is ``slow``."""
    return _build(tmp_path_factory.mktemp("ocrset"), 8, 4, seed=23)


def _recall(read: Read, mode: str) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Fraction of query words whose image is in the top 10, by language; and the misses."""
    found: dict[str, list[bool]] = defaultdict(list)
    missed: dict[str, list[str]] = defaultdict(list)
    with Index.open(read.index) as idx:
        for s in read.samples:
            for word in s.words:
                hits = [os.path.basename(r.path) for r in idx.search(word, mode=mode, k=10)]
                found[s.lang].append(s.file in hits)
                found[f"{s.lang}:{s.distortion}"].append(s.file in hits)
                if s.file not in hits:
                    missed[s.lang].append(f"{word} in {s.file}")
    return {k: sum(v) / len(v) for k, v in found.items()}, missed


def test_recall_floors_in_keyword_and_hybrid_search(read_set: Read) -> None:
    for mode in ("text", "hybrid"):
        recall, missed = _recall(read_set, mode)
        assert recall["en"] >= 0.90, (mode, recall, missed["en"])
        assert recall["ko"] >= 0.85, (mode, recall, missed["ko"])


def test_text_free_photos_gain_few_rows(read_set: Read) -> None:
    with Index.open(read_set.index) as idx:
        by_name = {os.path.basename(p): i for p, i in idx.catalog.read.ids_by_path(
            [str(read_set.folder / s.file) for s in read_set.samples]).items()}
        blank = [by_name[s.file] for s in read_set.samples if s.lang == "none"]
        with_rows = [i for i in blank if idx.text_lines(i)]
        counts = idx.ocr_counts()
    assert len(with_rows) <= max(1, len(blank) // 5)
    assert counts["read"] == len(read_set.samples)
    assert counts["with_text"] >= len(read_set.samples) - len(blank) - 2


def test_results_carry_the_matched_lines_and_details_the_boxes(read_set: Read) -> None:
    with Index.open(read_set.index) as idx:
        # The first Korean word found at rank 1 (the recall test counts the others).
        sample, word, top = next((s, w, hits[0]) for s in read_set.samples if s.lang == "ko" for w in s.words
                                 if (hits := idx.search(w, mode="text", k=1))
                                 and os.path.basename(hits[0].path) == s.file)
        assert top.ocr_text and all(word in line.replace(" ", "") for line in top.ocr_text)
        details = idx.image(top.image_id)
        assert details.text_lines and isinstance(details.text_lines[0], TextLine)
        assert details.to_dict()["text_lines"][0]["box"] == list(details.text_lines[0].box)
        # --ocr-text: only images whose read text holds the words
        from searchindex.store.catalog.filters import Filters

        kept = idx.search("a sign", filters=Filters(ocr_text=word), mode="vector", k=50)
        assert [os.path.basename(r.path) for r in kept] == [sample.file]
        assert idx.search("a sign", filters=Filters(ocr_text="없는말"), mode="vector", k=50) == []


def test_cli_ocr_info_and_search(read_set: Read, tmp_path: Path) -> None:
    runner = CliRunner()
    index = str(read_set.index)
    done = runner.invoke(cli, ["ocr", "--index", index, "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    assert summary["read"] == 0 and summary["already"] == len(read_set.samples)  # incremental: nothing left
    info = runner.invoke(cli, ["info", "--index", index])
    assert "text:" in info.output and f"of {len(read_set.samples)} images read have text" in info.output
    sample = next(s for s in read_set.samples if s.lang == "en" and s.distortion == "clean")
    found = runner.invoke(cli, ["search", sample.words[0], "--index", index, "--mode", "text", "--json", "-k", "1"])
    assert found.exit_code == 0, found.output
    row = json.loads(found.output.splitlines()[0])
    assert os.path.basename(row["path"]) == sample.file and row["ocr_text"]
    filtered = runner.invoke(cli, ["search", "x", "--index", index, "--ocr-text", sample.words[0], "--paths"])
    assert filtered.output.split() == [str(read_set.folder / sample.file)]
    bad = runner.invoke(cli, ["ocr", "--index", index, "--lang", "fr"])
    assert bad.exit_code == 2 and "unknown OCR language fr" in bad.output


def test_ocr_pass_resumes_after_a_stop_and_forgets_removed_images(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    samples = write_ocrset(folder, 2, 1, seed=5)
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
        stop = threading.Event()
        first = idx.ocr("en", batch_size=1, progress=lambda p: stop.set(), stop=stop)
        assert first.interrupted and first.read == 1
        rest = idx.ocr("en", batch_size=1)
        assert rest.read == len(samples) - 1 and rest.already == 1 and not rest.interrupted
        word = samples[0].words[0]
        assert [os.path.basename(r.path) for r in idx.search(word, mode="text")] == [samples[0].file]
        (folder / samples[0].file).unlink()
        idx.add_folder(folder)
        assert idx.search(word, mode="text") == []
        assert idx.ocr_counts()["read"] == len(samples) - 1
        db = sqlite3.connect(tmp_path / "idx" / "catalog.sqlite")
        assert db.execute("SELECT count(*) FROM ocr_fts").fetchone()[0] == idx.ocr_counts()["with_text"]
        db.close()


@pytest.mark.slow
def test_recall_on_the_bigger_set_by_distortion(tmp_path: Path) -> None:
    """32 English, 32 Korean, 16 text-free: the floors, and recall per distortion for the docs."""
    read = _build(tmp_path, 32, 16, seed=2026)
    recall, missed = _recall(read, "text")
    print(json.dumps(recall, indent=1, sort_keys=True), json.dumps(missed, ensure_ascii=False))
    assert recall["en"] >= 0.90 and recall["ko"] >= 0.85


def test_stored_lines_survive_repair_and_leave_with_forget(tmp_path: Path) -> None:
    """The catalog side alone (no engine): lines stored, searched as bigrams, rebuilt by repair."""
    from searchindex.demo.synthetic import write_dataset

    write_dataset(tmp_path / "photos", count=3, seed=4, size=64)
    path = tmp_path / "idx"
    line = TextLine("서울역에서 Coffee", 0.9, (0.1, 0.1, 0.5, 0.1, 0.5, 0.2, 0.1, 0.2), 0, "tesseract")
    with Index.create(path, model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(tmp_path / "photos")
        first, second, third = sorted(idx.catalog.read.image_ids().tolist())
        idx.catalog.ocr.store({first: [line], second: []}, "test")
        assert idx.catalog.ocr.ids_unread() == [third]
        assert [r.image_id for r in idx.search("서울역", mode="text")] == [first]
    db = sqlite3.connect(path / "catalog.sqlite")
    db.execute("UPDATE meta SET value = 'x1' WHERE key = 'schema_version'")  # damage: repair rebuilds
    db.commit()
    db.close()
    Index.repair(path)
    with Index.open(path) as idx:
        assert [r.image_id for r in idx.search("서울", mode="text")] == [first]
        assert idx.text_lines(first) == [line] and idx.ocr_counts() == {"read": 2, "with_text": 1, "lines": 1}
        assert idx.forget_ocr() == 2
        assert idx.search("서울", mode="text") == [] and idx.catalog.ocr.ids_unread() == [first, second, third]
