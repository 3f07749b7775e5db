"""Labels a person puts on images by hand: stored beside the zero-shot ones, never replaced by re-tagging,
listed, filtered on, removed with their label, and offered by the web API for a selection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from searchindex import Index, QueryError
from searchindex.cli import cli


@pytest.fixture()
def index_copy(shapes_index: Path, tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    shutil.copytree(shapes_index, path)
    return path


def test_hand_tags_are_listed_filtered_kept_by_retagging_and_removed(index_copy: Path) -> None:
    with Index.open(index_copy, device="cpu") as index:
        ids = [int(i) for i in index.catalog.read.image_ids()[:5]]
        assert index.tag_images([*ids, 10**9], " holiday ") == ids  # a gone id is left out
        assert dict(index.tags())["holiday"] == 5
        results = index.search("a photo of a square", k=50, tag="holiday")
        assert sorted(r.image_id for r in results) == ids
        assert all(r.tags[0] == "holiday" for r in results)
        # A zero-shot label of the same name: re-tagging every image keeps the hand-set ones.
        index.tag(["holiday"], templates="single")
        index.tag(["holiday"], templates="single")
        assert set(ids) <= set(index.catalog.read.ids_tagged("holiday").tolist())
        by_user = dict(index.catalog.engine.connect().exec_driver_sql(
            "SELECT image_id, by_user FROM image_tags WHERE label = 'holiday'").fetchall())
        assert all(by_user[i] == 1 for i in ids)
        for bad in ("", "a,b", "x" * 101):
            with pytest.raises(QueryError):
                index.tag_images(ids, bad)
        assert index.untag(["holiday"]) == 1
        assert "holiday" not in dict(index.tags())
    out = CliRunner().invoke(cli, ["search", "--index", str(index_copy), "a square", "--tag", "holiday"])
    assert out.exit_code != 0 and "unknown tag" in out.output


def test_a_hand_tag_only_label_is_counted_and_untagged(index_copy: Path) -> None:
    with Index.open(index_copy, device="cpu") as index:
        ids = [int(i) for i in index.catalog.read.image_ids()[:2]]
        index.tag_images(ids, "mine")
    out = CliRunner().invoke(cli, ["tags", "--index", str(index_copy)])
    assert out.exit_code == 0 and out.output.split() == ["2", "mine"]
    out = CliRunner().invoke(cli, ["search", "--index", str(index_copy), "a square", "--tag", "mine", "--json"])
    assert out.exit_code == 0 and len(out.output.strip().splitlines()) == 2
    with Index.open(index_copy, device="cpu") as index:
        assert index.untag(["mine"]) == 1 and index.tags() == []


def test_the_api_tags_a_selection(index_copy: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from searchindex.web import create_app

    with TestClient(create_app(index_copy, device="cpu"), base_url="http://127.0.0.1") as client:
        r = client.post("/api/tags/my%20pick/images", json={"ids": [3, 1, 3]})
        assert r.status_code == 200 and r.json() == {"label": "my pick", "tagged": [1, 3]}
        assert {"label": "my pick", "images": 2} in client.get("/api/tags").json()["tags"]
        assert sorted(x["image_id"] for x in client.get("/api/search", params={"q": "a square", "tag": "my pick"})
                      .json()["results"]) == [1, 3]
        assert client.post("/api/tags/a,b/images", json={"ids": [1]}).status_code == 400
        assert client.post("/api/tags/x/images", json={"ids": []}).status_code == 400
        assert client.post("/api/tags/x/images", json={"ids": [1]},
                           headers={"Origin": "https://evil.example"}).status_code == 403


def test_a_reindex_keeps_hand_tags_by_content(small_index: Path, small_folder: Path) -> None:
    with Index.open(small_index, device="cpu") as index:
        ids = [int(i) for i in index.catalog.read.image_ids()[:3]]
        paths = sorted(index.image(i).path for i in ids)
        index.tag_images(ids, "keepers")
    Index.reindex(small_index, "tiny-shapes", "none", device="cpu", batch_size=8)
    with Index.open(small_index, device="cpu") as index:
        assert index.spec.pretrained == "none"
        tagged = index.catalog.read.ids_tagged("keepers")
        assert sorted(index.image(int(i)).path for i in tagged) == paths
