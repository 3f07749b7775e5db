"""Moving indexed files into a folder the user names (the duplicates view's "move the rest"):
confirmed first, never deleting or overwriting, and the index follows without encoding again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from searchindex import Index

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from searchindex.web import create_app  # noqa: E402


def test_move_needs_confirmation_never_overwrites_and_the_index_follows(
        small_index: Path, small_folder: Path, tmp_path: Path) -> None:
    with Index.open(small_index) as index:
        ids = [int(i) for i in index.catalog.read.image_ids()[:4]]
        paths = [index.image(i).path for i in ids]
        embeddings = index.catalog.read.embeddings(ids, index.dim)
    target = tmp_path / "copies"
    target.mkdir()
    taken = target / Path(paths[1]).name
    taken.write_bytes(b"someone else's file")
    Path(paths[2]).unlink()  # gone since indexing
    with TestClient(create_app(small_index, device="cpu", warm=False), base_url="http://127.0.0.1") as c:
        r = c.post("/api/images/move", json={"ids": ids, "folder": str(target)})
        assert r.status_code == 400 and "confirm" in r.json()["error"]
        assert all(Path(p).exists() for i, p in enumerate(paths) if i != 2)  # nothing moved unconfirmed
        r = c.post("/api/images/move", json={"ids": ids, "folder": "relative/dir", "confirm": True})
        assert r.status_code == 400
        r = c.post("/api/images/move", json={"ids": ids, "folder": str(target), "confirm": True})
        assert r.status_code == 200, r.text
        report = r.json()
    moved = {m[0]: m for m in report["moved"]}
    assert sorted(moved) == [ids[0], ids[3]]
    kept = {k[0]: k[2] for k in report["kept"]}
    assert kept[ids[1]] == f"{taken} exists" and sorted(kept) == [ids[1], ids[2]]
    assert taken.read_bytes() == b"someone else's file"  # never overwritten
    assert Path(paths[1]).exists()
    for i in (0, 3):
        assert not Path(paths[i]).exists() and (target / Path(paths[i]).name).exists()
    with Index.open(small_index) as index:
        # The same rows, at the new paths, with the same vectors: nothing was encoded again.
        for i in (0, 3):
            assert index.image(ids[i]).path == str(target / Path(paths[i]).name)
        after = index.catalog.read.embeddings([ids[0], ids[3]], index.dim)
        assert all((after[i] == embeddings[i]).all() for i in (ids[0], ids[3]))
        assert index.count() == 40  # the moved rows were kept, not dropped and added
    shutil.rmtree(target)
