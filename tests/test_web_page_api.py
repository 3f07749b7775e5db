"""The page's own routes: browsing by a stable cursor, downloading a selection as a zip, and the
checks that keep pictures on this server's page (through the ASGI test client)."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from searchindex import Index

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from searchindex.web import create_app  # noqa: E402

BASE = "http://127.0.0.1:8765"
SAME = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
DAY = 86_400


@pytest.fixture(scope="module")
def dated(shapes, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """30 scenes whose file times are one per day, three per month-ish, two sharing a time; indexed."""
    folder = tmp_path_factory.mktemp("dated")
    start = 1_700_000_000  # 2023-11-14
    for n, src in enumerate(sorted(shapes.folder.glob("*.png"))[:30]):
        dst = folder / src.name
        shutil.copy2(src, dst)
        when = start + (n if n != 7 else 6) * 10 * DAY  # images 6 and 7 share a time: the id breaks the tie
        os.utime(dst, (when, when))
    path = tmp_path_factory.mktemp("dated-idx") / "dated.idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)
    return folder, path


@pytest.fixture(scope="module")
def client(dated: tuple[Path, Path]) -> Iterator[TestClient]:
    with TestClient(create_app(dated[1], device="cpu", warm=False), base_url=BASE) as c:
        yield c


def _expected(index_path: Path) -> list[int]:
    """Newest first by the catalog's dates, ties by id, as the page promises."""
    with Index.open(index_path) as index:
        rows = index.catalog.read.records(index.catalog.read.image_ids())
    return [i for _, i in sorted(((r.taken_at or "", r.id) for r in rows.values()), reverse=True)]


def _walk(client: TestClient, **params: str) -> list[int]:
    ids: list[int] = []
    cursor = None
    while True:
        body = client.get("/api/browse", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        ids += [im["image_id"] for im in body["images"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def test_browse_is_newest_first_and_pages_by_cursor(client: TestClient, dated: tuple[Path, Path]) -> None:
    expected = _expected(dated[1])
    assert len(expected) == 30
    first = client.get("/api/browse", params={"k": "7"}).json()
    assert [im["image_id"] for im in first["images"]] == expected[:7]
    assert first["images"][0]["date"] >= first["images"][-1]["date"]
    assert _walk(client, k="7") == expected
    assert _walk(client, k="1") == expected  # a page boundary between the two images of one time
    everything = client.get("/api/browse", params={"k": "500"}).json()
    assert [im["image_id"] for im in everything["images"]] == expected and everything["next_cursor"] is None
    assert client.get("/api/browse", params={"cursor": "not-a-cursor"}).status_code == 400
    assert client.get("/api/browse", params={"k": "0"}).status_code == 400


def test_browse_cursor_is_stable_when_images_are_added(dated: tuple[Path, Path], tmp_path: Path,
                                                       shapes) -> None:  # type: ignore[no-untyped-def]
    folder, original = dated
    path = tmp_path / "copy.idx"
    shutil.copytree(original, path)
    with TestClient(create_app(path, device="cpu", warm=False), base_url=BASE) as c:
        page1 = c.get("/api/browse", params={"k": "10"}).json()
        # A newer photo arrives between two pages: an offset would repeat the last image shown.
        extra = tmp_path / "new"
        extra.mkdir()
        src = sorted(shapes.folder.glob("*.png"))[40]
        shutil.copy2(src, extra / src.name)
        with Index.open(path) as index:
            assert index.add_folder(extra).indexed == 1
        page2 = c.get("/api/browse", params={"k": "10", "cursor": page1["next_cursor"]}).json()
        shown = [im["image_id"] for im in page1["images"] + page2["images"]]
        assert len(set(shown)) == 20 and shown == _expected(original)[:20]
        newest = c.get("/api/browse", params={"k": "1"}).json()["images"][0]
        assert newest["path"].endswith(src.name)


def test_browse_filters_make_a_filtered_timeline_and_jump_to_a_month(client: TestClient,
                                                                    dated: tuple[Path, Path]) -> None:
    expected = _expected(dated[1])
    with Index.open(dated[1]) as index:
        records = index.catalog.read.records(expected)
    march = [i for i in expected if (records[i].taken_at or "").startswith("2024-03")]
    assert march
    got = _walk(client, after="2024-03-01", before="2024-04-01", k="2")
    assert got == march
    jumped = client.get("/api/browse", params={"start": "2024-03", "k": "500"}).json()["images"]
    assert [im["image_id"] for im in jumped] == [i for i in expected if (records[i].taken_at or "") < "2024-04"]
    months = client.get("/api/browse/months").json()["months"]
    assert sum(m["images"] for m in months) == 30 and months == sorted(months, key=lambda m: m["month"], reverse=True)
    assert {"month": "2024-03", "images": len(march)} in months
    folder_only = _walk(client, path=str(dated[0] / "*0.png"))
    assert folder_only == [i for i in expected if records[i].path.endswith("0.png")]
    assert client.get("/api/browse", params={"start": "March"}).status_code == 400
    assert client.get("/api/browse", params={"after": "yesterday"}).status_code == 400


def test_download_is_a_zip_of_the_originals(client: TestClient, dated: tuple[Path, Path]) -> None:
    ids = _expected(dated[1])[:5]
    with Index.open(dated[1]) as index:
        paths = [index.image(i).path for i in ids]
    r = client.post("/api/download", json={"ids": ids}, headers=SAME)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == [os.path.basename(p) for p in paths]
        for p in paths:
            assert zf.read(os.path.basename(p)) == Path(p).read_bytes()
    assert client.post("/api/download", json={"ids": ids}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/download", json={"ids": []}, headers=SAME).status_code == 400
    assert client.post("/api/download", json={"ids": [10**9]}, headers=SAME).status_code == 404


def test_pictures_stay_on_this_page(client: TestClient) -> None:
    image_id = client.get("/api/browse", params={"k": "1"}).json()["images"][0]["image_id"]
    for url in (f"/api/images/{image_id}/thumbnail", f"/api/images/{image_id}/file"):
        ok = client.get(url, headers={"Sec-Fetch-Site": "same-origin"})
        assert ok.status_code == 200 and ok.headers["cross-origin-resource-policy"] == "same-origin", url
        for site in ("cross-site", "same-site"):
            r = client.get(url, headers={"Sec-Fetch-Site": site})
            assert r.status_code == 403 and r.headers["cross-origin-resource-policy"] == "same-origin", url
    assert client.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # a link to the page


def test_no_page_loads_anything_from_elsewhere(client: TestClient) -> None:
    assert client.get("/docs").status_code == 404  # Swagger UI would load its scripts from a CDN
    assert client.get("/openapi.json").json()["paths"]["/api/browse"]


def test_a_deleted_photo_is_shown_as_missing(dated: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(dated[0], folder)
    path = tmp_path / "own.idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)
    with TestClient(create_app(path, device="cpu", warm=False), base_url=BASE) as c:
        image = c.get("/api/browse", params={"k": "1"}).json()["images"][0]
        url = f"/api/images/{image['image_id']}"
        assert c.get(url).json()["file_problem"] is None
        assert "x-thumbnail" not in c.get(f"{url}/thumbnail").headers  # made, and cached
        Path(image["path"]).unlink()
        assert "cannot open" in c.get(url).json()["file_problem"]
        # The cached thumbnail is not shown for a file that is gone.
        assert c.get(f"{url}/thumbnail").headers["x-thumbnail"] == "placeholder"
        # Removing it from the index: only images whose file is gone go, never a file on disk.
        other = c.get("/api/browse", params={"k": "2"}).json()["images"][1]
        forget = c.post("/api/images/forget", json={"ids": [image["image_id"], other["image_id"]]}, headers=SAME)
        assert forget.status_code == 200 and forget.json() == {"removed": [image["image_id"]]}
        assert c.get(url).status_code == 404 and Path(other["path"]).exists()
        assert image["image_id"] not in _walk(c, k="500")
        hits = c.get("/api/search", params={"q": "a shape", "k": "100", "threshold": ""}).json()["results"]
        assert image["image_id"] not in [h["image_id"] for h in hits]
        assert c.post("/api/images/forget", json={"ids": [other["image_id"]]},
                      headers={"Origin": "http://evil.example"}).status_code == 403


def _near_copy(path: str) -> bytes:
    """The picture at ``path`` made smaller and saved as a JPEG: not a byte of it is indexed."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(path).convert("RGB").resize((48, 48)).save(out, "JPEG", quality=70)
    return out.getvalue()


def test_search_by_any_picture(client: TestClient, dated: tuple[Path, Path]) -> None:
    target = client.get("/api/browse", params={"k": "5"}).json()["images"][3]
    picture = _near_copy(target["path"])
    r = client.post("/api/search/image", content=picture, params={"k": "3"},
                    headers={**SAME, "Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["image_id"] == target["image_id"] and r.json()["next_offset"] == 3
    with Index.open(dated[1]) as index:
        assert index.count() == 30  # not added
    page2 = client.post("/api/search/image", content=picture, params={"k": "3", "offset": "3"},
                        headers={**SAME, "Content-Type": "image/jpeg"}).json()["results"]
    assert [x["rank"] for x in page2] == [4, 5, 6]
    bad = client.post("/api/search/image", content=b"hello", headers={**SAME, "Content-Type": "image/png"})
    assert bad.status_code == 400 and "not a recognised image format" in bad.json()["error"]
    empty = client.post("/api/search/image", content=b"", headers={**SAME, "Content-Type": "image/png"})
    assert empty.status_code == 400
    for headers in ({"Origin": "http://evil.example", "Content-Type": "image/jpeg"},
                    {**SAME, "Content-Type": "text/plain"}, {**SAME, "Content-Type": "multipart/form-data"}):
        assert client.post("/api/search/image", content=picture, headers=headers).status_code == 403, headers


def test_a_like_keeps_the_clip_similarity_as_the_vector_score(client: TestClient) -> None:
    plain = client.get("/api/search", params={"q": "a red circle", "k": "30"}).json()["results"]
    liked = client.get("/api/search", params={"q": "a red circle", "k": "30",
                                              "like": str(plain[0]["image_id"])}).json()["results"]
    cosine = {r["image_id"]: r["vector_score"] for r in plain}
    common = [r for r in liked if r["image_id"] in cosine]
    assert common and all(abs(r["vector_score"] - cosine[r["image_id"]]) < 1e-5 for r in common)
    assert any(r["score"] != r["vector_score"] for r in liked)  # the order is the reranked one


def test_an_index_folder_deleted_while_serving_stays_deleted(dated: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "gone.idx"
    shutil.copytree(dated[1], path)
    shutil.rmtree(path / "thumbnails", ignore_errors=True)
    with TestClient(create_app(path, device="cpu", warm=False), base_url=BASE) as c:
        image_id = c.get("/api/browse", params={"k": "1"}).json()["images"][0]["image_id"]
        shutil.rmtree(path)
        r = c.get(f"/api/images/{image_id}/thumbnail")
        assert r.status_code == 200  # made from the photo, just not cached
        assert not path.exists()  # thumbnails/ was not made inside the deleted folder


def test_concepts_survive_the_index_folder_put_back_file_by_file(dated: tuple[Path, Path], tmp_path: Path) -> None:
    """Fix 12: while a deleted folder is copied back (the catalog before its write-ahead log), the
    catalog is never created empty by a read, and ``/api/concepts`` never answers an empty list."""
    path = tmp_path / "back.idx"
    shutil.copytree(dated[1], path)
    backup = tmp_path / "backup.idx"
    with TestClient(create_app(path, device="cpu", warm=False), base_url=BASE) as c:
        assert c.post("/api/concepts", json={"name": "keep", "query": "a red circle"}).status_code == 201
        shutil.copytree(path, backup)  # the concept is in the write-ahead log, as while serving
        assert (backup / "catalog.sqlite-wal").stat().st_size > 0
        shutil.rmtree(path)
        path.mkdir()
        answers = []
        for name in sorted(os.listdir(backup)):  # catalog.sqlite, then its -shm and -wal, then the rest
            listed = sorted(os.listdir(path))
            r = c.get("/api/concepts")
            answers.append(r.status_code)
            assert r.status_code == 503 or [x["name"] for x in r.json()["concepts"]] == ["keep"], (name, r.text)
            assert sorted(os.listdir(path)) == listed  # a read made no file in the folder
            if (backup / name).is_dir():  # thumbnails/
                shutil.copytree(backup / name, path / name)
            else:
                shutil.copy2(backup / name, path / name)
        assert 503 in answers
        assert c.get("/api/search", params={"q": "a red circle"}).status_code == 200  # follows the folder
        r = c.get("/api/concepts")
        assert r.status_code == 200 and [x["name"] for x in r.json()["concepts"]] == ["keep"]
