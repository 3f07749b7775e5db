"""Saved concepts, image details and the shared search request (library and CLI; the web API in test_web)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from searchindex import Index, QueryError
from searchindex.cli import cli
from searchindex.errors import NotFoundError, ParameterError
from searchindex.frontend.params import search_params


def test_concepts_are_saved_listed_run_and_removed(small_index: Path, small_folder: Path) -> None:
    with Index.open(small_index, device="cpu") as index:
        ids = sorted(index.catalog.read.ids_by_path([str(p) for p in small_folder.glob("*.png")]).values())
        saved = index.save_concept("reds", "a red circle", like=[ids[0], ids[1], ids[0]], unlike=[ids[2]])
        assert (saved.name, saved.query, saved.like, saved.unlike) == ("reds", "a red circle", tuple(ids[:2]),
                                                                      (ids[2],))
        assert index.concept("reds") == saved
        assert [c.name for c in index.concepts()] == ["reds"]
        direct = index.search("a red circle", k=5, like=ids[:2], unlike=[ids[2]])
        via = search_params(index, concept="reds", k=5).run(index)
        assert [(r.image_id, r.score) for r in via] == [(r.image_id, r.score) for r in direct]
        # Replacing keeps one concept of that name; a text given with the concept replaces its text.
        index.save_concept("reds", "a blue star", like=[ids[3]])
        assert len(index.concepts()) == 1 and index.concept("reds").like == (ids[3],)
        other = search_params(index, "a green square", concept="reds", k=5).run(index)
        assert [r.image_id for r in other] == [r.image_id for r in index.search("a green square", k=5,
                                                                                   like=[ids[3]])]
        for bad, message in (({"name": " ", "query": "x"}, "needs a name"),
                             ({"name": "x"}, "query text or at least one liked example"),
                             ({"name": "x", "query": "y", "like": [999999]}, "no image with id 999999")):
            with pytest.raises(QueryError, match=message):
                index.save_concept(**bad)
        with pytest.raises(NotFoundError, match="no concept named 'nope' .*reds"):
            index.concept("nope")
        assert index.remove_concept("reds") and not index.remove_concept("reds")
        assert index.concepts() == []


def test_examples_of_removed_images_leave_the_concept(small_index: Path, small_folder: Path) -> None:
    with Index.open(small_index, device="cpu") as index:
        by_path = index.catalog.read.ids_by_path([str(p) for p in sorted(small_folder.glob("*.png"))])
        paths = sorted(by_path)
        index.save_concept("c", "a shape", like=[by_path[paths[0]], by_path[paths[1]]])
        Path(paths[0]).unlink()
        index.add_folder(small_folder)
        assert index.concept("c").like == (by_path[paths[1]],)
        assert search_params(index, concept="c").run(index)


def test_concepts_survive_reopening_and_the_cli_runs_them(small_index: Path) -> None:
    with Index.open(small_index) as index:
        index.save_concept("circles", "a circle")
    runner = CliRunner()
    res = runner.invoke(cli, ["search", "--concept", "circles", "--index", str(small_index), "--json", "-k", "3"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    again = runner.invoke(cli, ["search", "a circle", "--index", str(small_index), "--json", "-k", "3"])
    assert rows == [json.loads(line) for line in again.output.splitlines()] and len(rows) == 3
    res = runner.invoke(cli, ["search", "--concept", "squares", "--index", str(small_index)])
    assert res.exit_code == 2 and "no concept named 'squares' (concepts in this index: circles)" in res.output


def test_an_old_catalog_gains_the_concepts_table(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "schema-v1.idx"
    path = tmp_path / "old.idx"
    shutil.copytree(fixture, path)
    with Index.open(path) as index:
        assert index.concepts() == []
    db = sqlite3.connect(path / "catalog.sqlite")
    names = [r[0] for r in db.execute("SELECT name FROM schema_history ORDER BY version")]
    db.close()
    assert "concepts" in names  # later migrations (faces, ...) follow it


def test_image_details(small_index: Path, small_folder: Path) -> None:
    with Index.open(small_index) as index:
        hit = index.search("a red circle", k=1)[0]
        details = index.image(hit.image_id)
        with pytest.raises(NotFoundError, match="no image with id 424242"):
            index.image(424242)
    assert (details.path, details.sha256, details.size, details.width) == (hit.path, hit.sha256, hit.size, hit.width)
    assert details.mtime_ns == Path(hit.path).stat().st_mtime_ns and details.tags == hit.tags
    assert list(details.to_dict())[:3] == ["image_id", "path", "size"]


def test_paging_with_offset_in_the_cli(small_index: Path) -> None:
    runner = CliRunner()

    def rows(*args: str) -> list[dict]:
        res = runner.invoke(cli, ["search", "a red circle", "--index", str(small_index), "--json", *args])
        assert res.exit_code == 0, res.output
        return [json.loads(line) for line in res.output.splitlines()]

    assert rows("-k", "4") + rows("-k", "4", "--offset", "4") == rows("-k", "8")
    assert [r["rank"] for r in rows("-k", "3", "--offset", "6")] == [7, 8, 9]
    assert rows("-k", "5", "--offset", "40") == []
    res = runner.invoke(cli, ["search", "a red circle", "--index", str(small_index), "--offset", "40"])
    assert res.exit_code == 0 and "No more results." in res.output


@pytest.mark.parametrize(("options", "param", "message"), [
    ({"query": "x", "k": "ten"}, "k", "-k must be a whole number, not 'ten'"),
    ({"query": "x", "pool": 0}, "pool", "--pool must be at least 1, not 0"),
    ({"query": "x", "radius": "-2", "near": "1,2"}, "radius", "--radius must be a positive number of km"),
    ({"query": "x", "min_width": "0"}, "min_width", "--min-width must be at least 1, not 0"),
    ({"query": "x", "sort": "name"}, "sort", "--sort must be one of score, date, not 'name'"),
    ({"query": "x", "min_score": "nan"}, "min_score", "--min-score must be a number, not 'nan'"),
    ({"query": "  "}, "q", "give a text QUERY"),
])
def test_request_errors_name_the_parameter(options: dict, param: str, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        search_params(None, **options)
    assert message in str(info.value) and info.value.param == param


def test_request_defaults_follow_the_cli() -> None:
    assert search_params(None, "x").k == 10
    assert search_params(None, "x", threshold="auto").k is None
    cut = search_params(None, "x", threshold="0.3", min_score="0.2")
    assert (cut.k, cut.request.min_score, cut.request.threshold) == (None, 0.3, None)
    assert search_params(None, "x", k="3", threshold="auto").k == 3


def test_an_indexed_query_image_uses_its_stored_embedding(small_index: Path, small_folder: Path,
                                                          tmp_path: Path) -> None:
    first = sorted(small_folder.glob("*.png"))[0]
    with Index.open(small_index, device="cpu") as index:
        hits = index.search_image(first, k=3)
        assert index.models.loaded != "torch"  # no decoding, no image model: "more like this" is a lookup
        assert hits[0].path == str(first) and hits[0].score == pytest.approx(1.0, abs=1e-5)
        copy = tmp_path / "copy.png"  # not indexed: encoded from its pixels, the same picture
        shutil.copy2(first, copy)
        again = index.search_image(copy, k=3)
        assert index.models.loaded == "torch"
    assert [r.image_id for r in again][:1] == [hits[0].image_id]
