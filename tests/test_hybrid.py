"""Keywords people wrote, found by text and hybrid search; CLIP precision kept; sidecar edits picked up."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Filters, Index, QueryError, Term
from searchindex.cli import cli
from searchindex.defaults import FUSIONS
from searchindex.demo.synthetic import COLORS, SHAPES
from searchindex.search.hybrid import TextRanking, fuse, query_words, rank_text
from searchindex.store.catalog.sqlite import CATALOG_FILE

from .conftest import Shapes

# Keyword groups of the collection below: words no pixel shows.
GROUPS = {"grandma": 0, "Oktoberfest 2019": 1, "Aunt Clara": 2}
PER_GROUP = 8


# -- pure parts ------------------------------------------------------------------------


def test_query_words_drop_what_says_nothing() -> None:
    assert query_words("A photo of Grandma") == ["grandma"]
    assert query_words("Oktoberfest 2019, Oktoberfest!") == ["oktoberfest", "2019"]
    assert query_words("a photo of") == ["a", "photo", "of"]  # nothing else left: keep them
    assert query_words("Crème brûlée_day") == ["crème", "brûlée", "day"]


def test_rank_text_sums_bm25_and_puts_full_matches_first() -> None:
    answers = {"red": [(1, 3.0), (2, 1.0)], "star": [(2, 1.5), (3, 9.0)]}
    ranking = rank_text(["red", "star"], lambda w: answers[w])
    assert ranking.ids.tolist() == [2, 3, 1]  # 2 matched both words; then by BM25
    assert ranking.coverage.tolist() == [1.0, 0.5, 0.5]
    assert ranking.scores[0] == pytest.approx(2.5)
    assert ranking.full().ids.tolist() == [2]
    assert ranking.without([2, 3]).ids.tolist() == [1]
    # A word matching more than max_hits images is left out; coverage counts the words kept.
    common = rank_text(["red", "star"], lambda w: answers[w] + ([(7, 0.1)] if w == "star" else []), max_hits=2)
    assert common.ids.tolist() == [1, 2] and common.coverage.tolist() == [1.0, 1.0]


def test_fusions_rank_agreement_first() -> None:
    vec_ids, vec_scores = np.array([10, 11, 12]), np.array([0.9, 0.8, 0.7], dtype=np.float32)
    text = TextRanking(np.array([12, 20]), np.array([5.0, 4.0], dtype=np.float32), np.ones(2, dtype=np.float32))
    cos = {10: 0.9, 11: 0.8, 12: 0.7, 20: 0.1}
    for method in FUSIONS:
        ids, scores = fuse(method, vec_ids, vec_scores, text, lambda i: np.array([cos[int(x)] for x in i]))
        assert sorted(ids.tolist()) == [10, 11, 12, 20]
        assert ids[0] == 12  # in both rankings
        assert np.all(np.diff(scores) <= 0)
    ids, _ = fuse("rrf", vec_ids, vec_scores, TextRanking.empty(), lambda i: np.zeros(len(i)))
    assert ids.tolist() == [10, 11, 12]  # no text: the vector ranking unchanged


# -- an index with keywords --------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged(shapes: Shapes, shapes_index: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The 1,000 shapes copied next to keyword sidecars, added to a copy of the shared index.

    The copies are duplicates of indexed content, so no image is encoded again;
    searches restricted to the copies' folder see a collection whose 24 images
    carry a keyword.  Returns (index, folder, keyword -> paths).
    """
    root = tmp_path_factory.mktemp("tagged")
    folder = root / "photos"
    shutil.copytree(shapes.folder, folder)
    index_path = root / "idx"
    shutil.copytree(shapes_index, index_path)
    files = sorted(folder.glob("*.png"))
    truth: dict[str, set[str]] = {}
    for keyword, g in GROUPS.items():
        members = files[g * 97 % 500:][:PER_GROUP * 3:3]  # spread out, disjoint
        truth[keyword] = {str(p.absolute()) for p in members}
        for p in members:
            if g == 0:
                Path(str(p) + ".txt").write_text(f"{keyword}\n")
            elif g == 1:
                p.with_suffix(".txt").write_text(f"at the {keyword}")
            else:
                p.with_suffix(".xmp").write_text(
                    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
                    f"<rdf:li>{keyword}</rdf:li><rdf:li>family</rdf:li></rdf:Bag></dc:subject></rdf:Description>"
                    "</rdf:RDF></x:xmpmeta>")
    with Index.open(index_path) as index:
        summary = index.add_folder(folder)
    # Sidecars are neither images nor failures.
    assert summary.scanned == 1000 and summary.failed == 0 and summary.indexed == 0
    return index_path, folder, truth


def test_hybrid_finds_keyword_only_images_and_keeps_clip_precision(shapes: Shapes, tagged: tuple) -> None:
    index_path, folder, truth = tagged
    only = Filters(paths=(str(folder),))
    labels = {str((folder / Path(p).name).absolute()): row for p, row in shapes.labels.items()}
    with Index.open(index_path) as index:
        for keyword, members in truth.items():
            recall = {mode: len({r.path for r in index.search(keyword, k=PER_GROUP, filters=only, mode=mode)}
                                & members) / len(members) for mode in ("vector", "text", "hybrid", "auto")}
            assert recall["hybrid"] == recall["auto"] == recall["text"] == 1.0
            assert recall["vector"] <= 0.25
        precision: dict[str, list[float]] = {"vector": [], "hybrid": []}
        for color in COLORS:
            for shape in SHAPES:
                for mode in precision:
                    got = index.search(f"a photo of a {color} {shape}", k=10, filters=only, mode=mode)
                    assert all(r.path in labels for r in got)  # the filter holds in both rankings
                    precision[mode].append(np.mean([labels[r.path]["color"] == color
                                                    and labels[r.path]["shape"] == shape for r in got]))
        assert np.mean(precision["hybrid"]) >= np.mean(precision["vector"]) - 0.05
        assert np.mean(precision["vector"]) > 0.8


def test_results_carry_keywords_and_scores(tagged: tuple) -> None:
    index_path, folder, truth = tagged
    with Index.open(index_path) as index:
        hit = index.search("a photo of Aunt Clara", k=1, mode="hybrid", filters=Filters(paths=(str(folder),)))[0]
        assert hit.path in truth["Aunt Clara"]
        assert hit.keywords == ("Aunt Clara, family",) and hit.caption is None  # a sidecar line
        assert hit.text_score is not None and hit.text_score > 0
        assert hit.vector_score is not None and -1 <= hit.vector_score <= 1
        text_hit = index.search("oktoberfest", k=1, mode="text")[0]
        assert text_hit.vector_score is None and text_hit.score == text_hit.text_score
        vector_hit = index.search("a red circle", k=1, mode="vector")[0]
        assert vector_hit.text_score is None and vector_hit.score == vector_hit.vector_score


def test_text_mode_needs_no_model(tagged: tuple) -> None:
    index_path, _, truth = tagged
    with Index.open(index_path) as index:
        got = index.search("grandma", k=None, mode="text")
        assert {r.path for r in got} == truth["grandma"]
        assert index.models.loaded is None


def test_filters_and_negative_terms_apply_to_the_word_ranking(tagged: tuple) -> None:
    index_path, folder, truth = tagged
    first = sorted(truth["grandma"])[0]
    with Index.open(index_path) as index:
        got = index.search("grandma", k=None, mode="text", filters=Filters(exclude=(first,)))
        assert {r.path for r in got} == truth["grandma"] - {first}
        # "family" is on the Aunt Clara images; minus "Aunt Clara" leaves none of them.
        both = index.search([Term.of_text("family"), Term.of_text("clara", -1)], k=None, mode="text")
        assert both == []
        hybrid = index.search([Term.of_text("family"), Term.of_text("clara", -1)], k=50, mode="hybrid",
                              filters=Filters(paths=(str(folder),)))
        assert not {r.path for r in hybrid[:5]} & truth["Aunt Clara"]


@pytest.mark.parametrize("query", ["a photo of a purple star", "a shape"])
def test_auto_is_vector_when_no_words_match(tagged: tuple, query: str) -> None:
    # "shape" is in every file name (shape_99_00012.png): a word that tells no image apart.
    index_path, _, _ = tagged
    with Index.open(index_path) as index:
        auto = index.search(query, k=10)
        vector = index.search(query, k=10, mode="vector")
        assert [r.image_id for r in auto] == [r.image_id for r in vector]
        assert [r.score for r in auto] == [r.score for r in vector]


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "text", "min_score": 0.2}, "--min-score/--threshold"),
    ({"mode": "text", "threshold": "auto"}, "--min-score/--threshold"),
    ({"mode": "text", "like": [1]}, "--like/--unlike"),
    ({"mode": "fuzzy"}, "mode must be one of"),
    ({"rerank": "bm25"}, "rerank must be"),
    ({"fusion": "max"}, "fusion must be"),
])
def test_refusals(tagged: tuple, options: dict, message: str) -> None:
    with Index.open(tagged[0]) as index, pytest.raises(QueryError, match=message):
        index.search("grandma", **options)


def test_image_only_query_cannot_use_words(tagged: tuple, shapes: Shapes) -> None:
    image = next(iter(shapes.labels))
    with Index.open(tagged[0]) as index:
        for mode in ("text", "hybrid"):
            with pytest.raises(QueryError, match="needs words"):
                index.search(Term.of_image(image), mode=mode)
        with pytest.raises(QueryError, match="needs a text term"):
            index.search(Term.of_image(image), rerank="itm")
        assert index.search(Term.of_image(image), k=1)[0].path == image  # auto: vector


def test_cutoffs_in_hybrid_mode_cut_clip_scores_only(tagged: tuple) -> None:
    index_path, folder, truth = tagged
    with Index.open(index_path) as index:
        got = index.search("grandma", k=None, min_score=0.99, mode="hybrid", filters=Filters(paths=(str(folder),)))
        assert {r.path for r in got} == truth["grandma"]  # no CLIP score reaches 0.99; the word matches stay


# -- sidecars over time ----------------------------------------------------------------


def test_edited_added_and_removed_sidecars_are_picked_up(small_folder: Path, tmp_path: Path) -> None:
    photo = sorted(small_folder.glob("*.png"))[3]
    note = Path(str(photo) + ".txt")
    note.write_text("grandma")
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        first = index.add_folder(small_folder)
        assert first.scanned == 40 and first.failed == 0
        assert [r.path for r in index.search("grandma", mode="text")] == [str(photo)]

        note.write_text("Oktoberfest 2019")  # edited, image untouched
        again = index.add_folder(small_folder)
        assert again.indexed == 0 and again.unchanged == 40
        assert index.search("grandma", mode="text") == []
        assert [r.keywords for r in index.search("oktoberfest", mode="text")] == [("Oktoberfest 2019",)]

        photo.with_suffix(".xmp").write_text("<broken xml")  # added, malformed: ignored, nothing fails
        other = sorted(small_folder.glob("*.png"))[5]
        other.with_suffix(".txt").write_text("Aunt Clara")
        assert index.add_folder(small_folder).failed == 0
        assert [r.path for r in index.search("clara", mode="text")] == [str(other)]

        note.unlink()  # removed
        index.add_folder(small_folder)
        assert index.search("oktoberfest", mode="text") == []
        assert index.search("oktoberfest", k=3)[0].keywords == ()  # auto: nothing matches, vector results


def test_texts_of_an_index_without_them_are_backfilled(small_folder: Path, tmp_path: Path) -> None:
    photo = sorted(small_folder.glob("*.png"))[0]
    photo.with_suffix(".txt").write_text("grandma")
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(small_folder)
        # As an index made before keywords were read: no texts, no record of reading them.
        index.catalog.texts.store({i: [] for i in range(1, 41)})
        with sqlite3.connect(index.path / CATALOG_FILE) as db:  # the on-disk format, not a private handle
            db.execute("DELETE FROM text_states")
        db.close()
        assert index.search("grandma", mode="text") == []
        summary = index.add_folder(small_folder)
        assert summary.indexed == 0
        assert [r.path for r in index.search("grandma", mode="text")] == [str(photo)]


# -- CLI ---------------------------------------------------------------------------------


def test_cli_modes_show_keywords(tagged: tuple) -> None:
    index_path, _, truth = tagged
    runner = CliRunner()
    res = runner.invoke(cli, ["search", "grandma", "--index", str(index_path), "--mode", "text"])
    assert res.exit_code == 0, res.output
    assert "caption; keywords" in res.output and res.output.count("| grandma") == PER_GROUP
    res = runner.invoke(cli, ["search", "Aunt Clara", "--index", str(index_path), "--json", "-k", "3"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert rows[0]["keywords"] == ["Aunt Clara, family"] and rows[0]["caption"] is None
    assert rows[0]["text_score"] > 0 and -1 <= rows[0]["vector_score"] <= 1
    assert {"vector_score", "text_score"} <= set(rows[0])
    res = runner.invoke(cli, ["search", "grandma", "--index", str(index_path), "--mode", "text", "--min-score", "0.1"])
    assert res.exit_code == 2 and "cut CLIP scores" in res.output
    res = runner.invoke(cli, ["search", "zebra", "--index", str(index_path), "--mode", "text"])
    assert res.exit_code == 0 and res.stdout == ""
    assert "No image's keywords, captions or file name contain the query's words." in res.stderr


# -- ITM rerank ----------------------------------------------------------------------------


def test_rerank_itm_rescores_the_top_results(shapes_index: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from searchindex.models.captioners import load_itm
    from searchindex.models.images import decode_image
    from tests.support.blip import write_tiny_blip

    _, itm = write_tiny_blip(tmp_path / "blip")
    with Index.open(shapes_index) as index:
        plain = index.search("a red circle", k=8)
        got = index.search("a red circle", k=8, rerank="itm", rerank_top=5, rerank_model=str(itm))
        assert [r.rank for r in got] == list(range(1, 9))
        assert {r.image_id for r in got[:5]} == {r.image_id for r in plain[:5]}  # the same shortlist, reordered
        assert [r.image_id for r in got[5:]] == [r.image_id for r in plain[5:]]  # the rest untouched
        scores = [r.score for r in got[:5]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        # The scores are the ITM head's match probabilities for these images and this text.
        images = [decode_image(Path(r.path).read_bytes(), r.path).image for r in got[:5]]
        expected = load_itm(str(itm), device="cpu").score(images, "a red circle")
        assert scores == pytest.approx(expected.tolist(), abs=1e-5)
        # k below the shortlist: the best 2 of the 5 re-scored, not a re-scoring of 2.
        two = index.search("a red circle", k=2, rerank="itm", rerank_top=5, rerank_model=str(itm))
        assert [r.image_id for r in two] == [r.image_id for r in got[:2]]


def test_cli_rerank_itm(shapes_index: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.support.blip import write_tiny_blip

    _, itm = write_tiny_blip(tmp_path / "blip")
    res = CliRunner().invoke(cli, ["search", "a red circle", "--index", str(shapes_index), "-k", "3", "--json",
                                   "--rerank", "itm", "--rerank-top", "3", "--rerank-model", str(itm)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]  # stderr may hold transformers' progress bars
    assert len(rows) == 3 and all(0 <= r["score"] <= 1 for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_captions_are_searched_and_shown(small_folder: Path, tmp_path: Path) -> None:
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(small_folder)
        target = index.search("a red circle", k=1, mode="vector")[0]
        index.catalog.captions.store([(target.image_id, "tiny-blip", "", "a zebra crossing the road")])
        hits = index.search("zebra", k=5)  # auto: the caption's words match, so hybrid
        assert hits[0].image_id == target.image_id and hits[0].caption == "a zebra crossing the road"
        assert hits[0].text_score is not None
        assert [r.image_id for r in index.search("zebra road", mode="text")] == [target.image_id]
