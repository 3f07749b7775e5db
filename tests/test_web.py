"""`searchindex serve`: the JSON API through the ASGI test client and a real uvicorn, and its security checks."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from searchindex import Index
from searchindex.cli import cli

from .conftest import Shapes

fastapi = pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from searchindex.web import create_app  # noqa: E402

QUERY = "a photo of a circle"
BASE = "http://127.0.0.1:8765"


def _intent(row: dict[str, str]) -> bool:  # narrower than the query: large circles on sand
    return row["shape"] == "circle" and row["size"] == "large" and row["background"] == "sand"


@pytest.fixture(scope="module")
def web_index(shapes_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session index (concepts and thumbnails are written into it)."""
    path = tmp_path_factory.mktemp("web") / "shapes.idx"
    shutil.copytree(shapes_index, path)
    return path


@pytest.fixture(scope="module")
def client(web_index: Path) -> Iterator[TestClient]:
    with TestClient(create_app(web_index, device="cpu", warm=False), base_url=BASE) as c:
        yield c


def _cli_rows(index: Path, *args: str) -> list[dict]:
    res = CliRunner().invoke(cli, ["search", *args, "--index", str(index), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.output.splitlines()]


# -- /api/search is `search --json` -------------------------------------------------------------

SAME_QUERIES = [
    ({"q": "a red circle", "k": "5"}, ["a red circle", "-k", "5"]),
    ({"q": QUERY}, [QUERY]),  # the default k
    ({"q": "a blue star", "k": "7", "offset": "7"}, ["a blue star", "-k", "7", "--offset", "7"]),
    ({"q": "a blue star", "min_width": "32", "sort": "date", "k": "12"},
     ["a blue star", "--min-width", "32", "--sort", "date", "-k", "12"]),
    ({"q": "a yellow square", "threshold": "auto"}, ["a yellow square", "--threshold", "auto"]),
    ({"q": "a green triangle", "min_score": "0.3", "k": "20"}, ["a green triangle", "--min-score", "0.3", "-k", "20"]),
    ({"q": "a red circle", "plus": "2:a blue star", "minus": "a square", "k": "6"},
     ["a red circle", "--plus", "2:a blue star", "--minus", "a square", "-k", "6"]),
    ({"q": "00012 00345", "mode": "text", "k": "5"}, ["00012 00345", "--mode", "text", "-k", "5"]),
    ({"q": "a red circle", "mode": "hybrid", "k": "5"}, ["a red circle", "--mode", "hybrid", "-k", "5"]),
]


@pytest.mark.parametrize(("params", "args"), SAME_QUERIES)
def test_api_search_is_cli_json(client: TestClient, web_index: Path, params: dict, args: list[str]) -> None:
    r = client.get("/api/search", params=params)
    assert r.status_code == 200, r.text
    api = r.json()["results"]
    rows = _cli_rows(web_index, *args)
    assert api == rows and len(rows) > 0
    assert [list(x) for x in api] == [list(x) for x in rows]  # same fields, same order


def test_api_search_filters_are_cli_filters(client: TestClient, web_index: Path, shapes: Shapes) -> None:
    some = sorted(shapes.labels)[:300]
    folder = str(shapes.folder)
    params = {"q": "a red circle", "k": "10", "path": f"{folder}/*_00[0-2]*.png", "exclude": f"{folder}/*5.png"}
    api = client.get("/api/search", params=params).json()["results"]
    rows = _cli_rows(web_index, "a red circle", "-k", "10", "--path", params["path"], "--exclude", params["exclude"])
    assert api == rows and len(rows) == 10
    assert all(r["path"] in some and not r["path"].endswith("5.png") for r in rows)


def test_paging_keeps_ranks(client: TestClient) -> None:
    whole = client.get("/api/search", params={"q": QUERY, "k": "30"}).json()
    first = client.get("/api/search", params={"q": QUERY, "k": "15"}).json()
    second = client.get("/api/search", params={"q": QUERY, "k": "15", "offset": "15"}).json()
    assert first["results"] + second["results"] == whole["results"]
    assert [r["rank"] for r in second["results"]] == list(range(16, 31))
    assert first["next_offset"] == 15 and second["next_offset"] == 30
    last = client.get("/api/search", params={"q": QUERY, "k": "15", "offset": "995"}).json()
    assert len(last["results"]) == 5 and last["next_offset"] is None


@pytest.mark.parametrize(("params", "args", "message"), [
    ({"q": "x", "k": "0"}, ["x", "-k", "0"], "-k must be at least 1, not 0"),
    ({"q": "x", "offset": "-1"}, ["x", "--offset", "-1"], "--offset must be at least 0, not -1"),
    ({"q": "x", "threshold": "high"}, ["x", "--threshold", "high"],
     "'high' is neither 'auto' nor a number"),
    ({"q": "x", "threshold": "2"}, ["x", "--threshold", "2"], "a score threshold is between -1 and 1"),
    ({"q": "x", "min_score": "1.5"}, ["x", "--min-score", "1.5"], "between -1 and 1, not 1.5"),
    ({"q": "x", "radius": "3"}, ["x", "--radius", "3"], "--radius needs --near LAT,LON"),
    ({"q": "x", "near": "91,0"}, ["x", "--near", "91,0"], "latitude is within -90..90"),
    ({"q": "x", "after": "2024-13"}, ["x", "--after", "2024-13"], "bad date '2024-13'"),
    ({"q": "x", "mode": "fuzzy"}, ["x", "--mode", "fuzzy"], None),  # click's Choice speaks first in the CLI
    ({}, [], "give a text QUERY, --image PATH, or --plus TERM"),
])
def test_bad_parameters_get_the_cli_message(client: TestClient, web_index: Path, params: dict, args: list[str],
                                            message: str | None) -> None:
    r = client.get("/api/search", params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    if message is None:
        assert "fuzzy" in error
        return
    assert message in error
    res = CliRunner().invoke(cli, ["search", *args, "--index", str(web_index)])
    assert res.exit_code in (1, 2) and message in res.output, res.output


def test_like_and_unlike_by_id_improve_precision_as_in_the_cli(client: TestClient, web_index: Path,
                                                                shapes: Shapes) -> None:
    with Index.open(web_index) as index:
        ids = index.catalog.read.ids_by_path(sorted(shapes.labels))
    by_label = sorted(shapes.labels)
    likes = [ids[p] for p in by_label if _intent(shapes.labels[p])][:4]
    unlikes = [ids[p] for p in by_label if shapes.labels[p]["shape"] == "circle" and not _intent(shapes.labels[p])][:4]
    base = client.get("/api/search", params={"q": QUERY, "k": "10"}).json()["results"]
    params = {"q": QUERY, "k": "10", "like": [str(i) for i in likes], "unlike": [str(i) for i in unlikes]}
    after = client.get("/api/search", params=params).json()["results"]
    rows = _cli_rows(web_index, QUERY, "-k", "10", *[a for i in likes for a in ("--like", str(i))],
                     *[a for i in unlikes for a in ("--unlike", str(i))])
    assert after == rows
    p_before = sum(_intent(shapes.labels[r["path"]]) for r in base) / 10
    p_after = sum(_intent(shapes.labels[r["path"]]) for r in after) / 10
    assert p_after >= p_before + 0.25, (p_before, p_after)
    assert not {r["image_id"] for r in after} & set(likes + unlikes)


def test_more_like_this_is_an_image_query(client: TestClient, web_index: Path) -> None:
    top = client.get("/api/search", params={"q": "a red circle", "k": "1"}).json()["results"][0]
    api = client.get("/api/search", params={"image": str(top["image_id"]), "k": "8"}).json()["results"]
    assert api == _cli_rows(web_index, "--image", top["path"], "-k", "8")
    assert api[0]["image_id"] == top["image_id"] and api[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_concepts_round_trip_through_api_and_cli(client: TestClient, web_index: Path, shapes: Shapes) -> None:
    with Index.open(web_index) as index:
        ids = index.catalog.read.ids_by_path(sorted(shapes.labels))
    likes = [ids[p] for p in sorted(shapes.labels) if _intent(shapes.labels[p])][:3]
    r = client.post("/api/concepts", json={"name": "sandy circles", "query": QUERY, "like": likes})
    assert r.status_code == 201, r.text
    listed = client.get("/api/concepts").json()["concepts"]
    assert [(c["name"], c["query"], c["like"]) for c in listed] == [("sandy circles", QUERY, likes)]
    api = client.get("/api/search", params={"concept": "sandy circles", "k": "10"}).json()["results"]
    assert api == _cli_rows(web_index, "--concept", "sandy circles", "-k", "10")
    direct = client.get("/api/search", params={"q": QUERY, "k": "10", "like": [str(i) for i in likes]})
    assert api == direct.json()["results"]
    assert client.get("/api/search", params={"concept": "nope"}).status_code == 404
    res = CliRunner().invoke(cli, ["search", "--concept", "nope", "--index", str(web_index)])
    assert res.exit_code == 2 and "no concept named 'nope'" in res.output
    assert client.post("/api/concepts", json={"name": " ", "query": "x"}).status_code == 400
    assert client.post("/api/concepts", json={"name": "bad", "like": [99999999]}).status_code == 400
    assert client.delete("/api/concepts/sandy%20circles").status_code == 204
    assert client.delete("/api/concepts/sandy%20circles").status_code == 404
    assert client.get("/api/concepts").json()["concepts"] == []


def test_image_info_tags_duplicates_errors(client: TestClient, web_index: Path) -> None:
    top = client.get("/api/search", params={"q": "a red circle", "k": "1"}).json()["results"][0]
    details = client.get(f"/api/images/{top['image_id']}").json()
    for key in ("path", "width", "height", "size", "sha256", "taken_at", "camera_make", "caption", "keywords",
                "tags", "orientation"):
        assert key in details
    assert details["path"] == top["path"] and details["sha256"] == top["sha256"]
    with Index.open(web_index) as index:
        info = index.info()
        assert client.get("/api/tags").json() == {"tags": [{"label": x, "images": n} for x, n in index.tags()]}
        groups = index.duplicates()
    assert client.get("/api/info").json()["images"] == info.images == 1000
    dup = client.get("/api/duplicates").json()["groups"]
    assert [[im["image_id"] for im in g["images"]] for g in dup] == [[im.image_id for im in g.images] for g in groups]
    assert client.get("/api/errors").json() == {"errors": []}
    assert client.get("/api/duplicates", params={"threshold": "2"}).status_code == 400


def test_tagging_from_the_api_then_filtering_by_tag(client: TestClient, web_index: Path) -> None:
    same = {"Origin": BASE}
    evil = {"Origin": "http://evil.example"}
    assert client.post("/api/tags", json={"labels": ["red"]}, headers=evil).status_code == 403
    assert client.post("/api/tags", json={"labels": ["red"], "templates": "/etc/passwd"}).status_code == 400
    r = client.post("/api/tags", json={"labels": ["red", "circle"], "templates": "single"}, headers=same)
    assert r.status_code == 200, r.text
    reports = {x["label"]: x["tagged"] for x in r.json()["labels"]}
    assert set(reports) == {"red", "circle"} and all(n > 0 for n in reports.values())
    assert client.get("/api/tags").json()["tags"] == [{"label": "circle", "images": reports["circle"]},
                                                      {"label": "red", "images": reports["red"]}]
    api = client.get("/api/search", params={"q": "a shape", "tag": "red", "k": "10"}).json()["results"]
    assert api == _cli_rows(web_index, "a shape", "--tag", "red", "-k", "10")
    assert all("red" in r["tags"] for r in api)
    r = client.get("/api/search", params={"q": "a shape", "tag": "blue"})
    assert r.status_code == 400 and "unknown tag 'blue'" in r.json()["error"]
    assert client.delete("/api/tags/red", headers=same).status_code == 204
    assert client.delete("/api/tags/circle", headers=same).status_code == 204
    assert client.delete("/api/tags/circle", headers=same).status_code == 404
    assert client.get("/api/tags").json() == {"tags": []}


def test_thumbnails_decode_and_are_cached(client: TestClient, web_index: Path) -> None:
    top = client.get("/api/search", params={"q": "a red circle", "k": "1"}).json()["results"][0]
    url = f"/api/images/{top['image_id']}/thumbnail"
    r = client.get(url, params={"size": "40"})
    assert r.status_code == 200 and r.headers["content-type"] in ("image/webp", "image/jpeg")
    img = Image.open(io.BytesIO(r.content))
    img.load()
    assert max(img.size) <= 128 and img.size == (64, 64)  # never enlarged past the 64-px original
    etag = r.headers["etag"]
    assert "max-age" in r.headers["cache-control"]
    assert client.get(url, params={"size": "40"}, headers={"If-None-Match": etag}).status_code == 304
    cached = list((web_index / "thumbnails").glob(f"*/{top['sha256']}-128.*"))
    assert len(cached) == 1
    cached[0].unlink()  # deleted: made again
    assert client.get(url, params={"size": "40"}).content == r.content
    assert client.get(url, params={"size": "0"}).status_code == 400


def test_exif_orientation_applied_and_broken_files_get_a_placeholder(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    img = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: 40 wide, 80 tall
    img.save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (50, 50), (30, 30, 200)).save(folder / "gone.png")
    Image.new("RGB", (50, 50), (30, 200, 30)).save(folder / "broken.png")
    with Index.create(tmp_path / "i.idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)
        ids = {Path(p).name: i for p, i in index.catalog.read.ids_by_path(
            [str(folder / n) for n in ("rotated.jpg", "gone.png", "broken.png")]).items()}
    (folder / "gone.png").unlink()
    st = os.stat(folder / "broken.png")
    with open(folder / "broken.png", "r+b") as f:  # same size and mtime, damaged content
        f.seek(20)
        f.write(b"\0" * 40)
    os.utime(folder / "broken.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    with TestClient(create_app(tmp_path / "i.idx", device="cpu", warm=False), base_url=BASE) as c:
        r = c.get(f"/api/images/{ids['rotated.jpg']}/thumbnail")
        thumb = Image.open(io.BytesIO(r.content))
        assert thumb.size == (40, 80)
        for name in ("gone.png", "broken.png"):
            r = c.get(f"/api/images/{ids[name]}/thumbnail")
            assert r.status_code == 200 and r.headers["x-thumbnail"] == "placeholder", name
            assert r.headers["content-type"].startswith("image/svg+xml")
        assert c.get(f"/api/images/{ids['gone.png']}/file").status_code == 404


# -- security, with real requests ---------------------------------------------------------------

def test_host_header_must_be_loopback(client: TestClient) -> None:
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert client.get("/api/info", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "", "192.168.1.10:8765"):
        r = client.get("/api/info", headers={"Host": host})
        assert r.status_code == 400 and "DNS-rebinding" in r.json()["error"], host
    assert client.get("/", headers={"Host": "attacker.test"}).status_code == 400


def test_no_cors_headers_unless_asked(client: TestClient, web_index: Path) -> None:
    r = client.get("/api/info", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    pre = client.options("/api/search", headers={"Origin": "http://evil.example",
                                                  "Access-Control-Request-Method": "GET"})
    assert not any(h.startswith("access-control-") for h in pre.headers)
    app = create_app(web_index, device="cpu", warm=False, cors_origins=["http://127.0.0.1:3000"])
    with TestClient(app, base_url=BASE) as c:
        r = c.get("/api/info", headers={"Origin": "http://127.0.0.1:3000"})
        assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
        r = c.get("/api/info", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_state_changing_requests_need_the_same_origin(client: TestClient) -> None:
    body = {"name": "c", "query": "a red circle"}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "https://127.0.0.1:8765"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://127.0.0.1:9999"},
                    # Another local port or subdomain is "same-site", not this page: refused too, also
                    # when an Origin naming this server comes with it.
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": BASE, "Sec-Fetch-Site": "same-site"},
                    {"Origin": BASE, "Sec-Fetch-Site": "cross-site"}):
        r = client.post("/api/concepts", json=body, headers=headers)
        assert r.status_code == 403, headers
        assert client.delete("/api/concepts/c", headers=headers).status_code == 403, headers
    form = client.post("/api/concepts", content=b"name=c", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                                   "Origin": BASE})
    assert form.status_code == 403
    assert client.delete("/api/concepts/c", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/concepts").json()["concepts"] == []
    ok = client.post("/api/concepts", json=body, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 201
    assert client.delete("/api/concepts/c", headers={"Origin": BASE}).status_code == 204


def test_token_is_needed_for_every_request(web_index: Path) -> None:
    app = create_app(web_index, device="cpu", warm=False, host="0.0.0.0", token="s3cret")
    with TestClient(app, base_url="http://192.168.1.20:8765") as c:
        for url in ("/", "/api/info", "/api/images/1/file", "/static/app.js", "/docs", "/openapi.json"):
            assert c.get(url).status_code == 401, url
        assert c.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/info", params={"token": "s3cre"}).status_code == 401
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        page = c.get("/", params={"token": "s3cret"})  # the printed URL: sets the cookie for the page's requests
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        assert c.get("/api/info").status_code == 200  # the cookie
        c.cookies.clear()
        assert c.get("/api/info").status_code == 401


def test_files_only_by_catalog_id(client: TestClient) -> None:
    assert client.get("/api/images/999999/file").status_code == 404
    assert client.get("/api/images/999999/thumbnail").status_code == 404
    assert client.get("/api/images/99999999999999999999999/file").status_code == 404
    assert client.get("/api/images/-1/file").status_code == 404
    assert client.get("/api/images/abc").status_code == 404
    for path in ("/static/..%2fapp.py", "/static/%2e%2e/%2e%2e/catalog.sqlite", "/api/images/1%2f..%2f2/file",
                 "/static/app.js%00.png", "/api/file?path=/etc/passwd", "/thumbnails/ab/x.webp"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"root:" not in r.content


@pytest.fixture(scope="module")
def tamper(shapes: Shapes, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    """A small index over a private folder, for files replaced, removed and un-indexed."""
    root = tmp_path_factory.mktemp("tamper")
    folder = root / "photos"
    folder.mkdir()
    for src in sorted(shapes.folder.glob("*.png"))[:12]:
        shutil.copy2(src, folder / src.name)
    secret = root / "secret.png"
    shutil.copy2(sorted(shapes.folder.glob("*.png"))[50], secret)
    with Index.create(root / "t.idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)
        ids = {Path(p).name: i for p, (i, *_) in index.catalog.read.image_states().items()}
    return root, folder, ids


# -- a real uvicorn server, started by the CLI -------------------------------------------------

class Server:
    def __init__(self, index: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from searchindex.cli import main; main()", "serve", "--index", str(index),
             "--port", "0", "--device", "cpu", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if "Serving " in line:
                self.url = line.split(" at ", 1)[1].split()[0]
                break
        else:
            self.stop()
            raise AssertionError("server did not start: " + "".join(self.lines))
        if not hasattr(self, "url"):
            raise AssertionError("server did not start: " + "".join(self.lines) + (self.proc.stderr.read() or ""))
        hostport = self.url.split("//", 1)[1].split("/", 1)[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    def raw(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request with the path sent as written (no client-side normalisation of .. or %2e)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in {"Host": f"127.0.0.1:{self.port}", **(headers or {})}.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, path: str) -> dict:
        status, _, body = self.raw(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(web_index: Path) -> Iterator[Server]:
    s = Server(web_index)
    yield s
    s.stop()


def test_real_server_search_equals_cli_and_serves_the_page(server: Server, web_index: Path) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    body = server.json("/api/search?q=a+red+circle&k=9")
    assert body["results"] == _cli_rows(web_index, "a red circle", "-k", "9")
    status, headers, page = server.raw("/")
    assert status == 200 and b'name="q"' in page and "script-src 'self'" in headers["content-security-policy"]
    for asset in (b"/static/app.js", b"/static/app.css"):
        assert asset in page
        assert server.raw(asset.decode())[0] == 200
    assert b"cdn" not in page.lower() and b"https://" not in page
    assert server.json("/openapi.json")["paths"]["/api/search"]


def test_real_server_refuses_rebinding_and_traversal(server: Server) -> None:
    assert server.raw("/api/info", headers={"Host": "evil.example"})[0] == 400
    assert server.raw("/api/info", headers={"Host": f"localhost:{server.port}"})[0] == 200
    for path in ("/api/images/../../../../etc/passwd", "/static/../app.py", "/static/%2e%2e/%2e%2e/etc/passwd",
                 "/api/images/1/../../../etc/passwd", "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
                 "/static/..%5c..%5capp.py", "//etc/passwd", "/api/images/1/file/../../../etc/passwd"):
        status, _, body = server.raw(path)
        assert status == 404, (path, status)
        assert b"root:" not in body
    headers = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    status, _, _ = server.raw("/api/concepts", "POST", headers, b'{"name": "x", "query": "y"}')
    assert status == 403


def test_real_server_handles_a_grid_of_concurrent_requests(server: Server) -> None:
    ids = [r["image_id"] for r in server.json("/api/search?q=a+blue+star&k=60")["results"]]
    urls = [f"/api/images/{i}/thumbnail?size=256" for i in ids] + [f"/api/search?q=a+shape+{n}&k=5" for n in range(20)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(server.raw, urls))
    assert [a[0] for a in answers] == [200] * len(urls)
    for _, headers, body in answers[:60]:
        assert headers["content-type"] in ("image/webp", "image/jpeg")
        Image.open(io.BytesIO(body)).load()


def test_real_server_never_serves_replaced_removed_or_unindexed_files(
        tamper: tuple[Path, Path, dict[str, int]]) -> None:
    root, folder, ids = tamper
    names = sorted(ids)
    s = Server(root / "t.idx")
    try:
        good = ids[names[0]]
        status, headers, body = s.raw(f"/api/images/{good}/file")
        assert status == 200 and body == (folder / names[0]).read_bytes() and headers["content-type"] == "image/png"
        # A file swapped for a symlink to a file outside the collection.
        link = folder / names[1]
        link.unlink()
        link.symlink_to(root / "secret.png")
        secret = (root / "secret.png").read_bytes()
        status, _, body = s.raw(f"/api/images/{ids[names[1]]}/file")
        assert status == 404 and body != secret
        status, headers, body = s.raw(f"/api/images/{ids[names[1]]}/thumbnail")
        assert headers.get("x-thumbnail") == "placeholder"
        # A parent folder swapped for a symlink.
        moved = root / "elsewhere"
        folder.rename(moved)
        (root / "other").mkdir()
        shutil.copy2(root / "secret.png", root / "other" / names[2])
        folder.symlink_to(root / "other")
        assert s.raw(f"/api/images/{ids[names[2]]}/file")[0] == 404
        folder.unlink()
        moved.rename(folder)
        # A removed file, then its id once the index forgets it.
        (folder / names[3]).unlink()
        assert s.raw(f"/api/images/{ids[names[3]]}/file")[0] == 404
        with Index.open(root / "t.idx", device="cpu") as index:
            link.unlink()
            index.add_folder(folder)
        for url in (f"/api/images/{ids[names[3]]}", f"/api/images/{ids[names[3]]}/file",
                    f"/api/images/{ids[names[3]]}/thumbnail"):
            assert s.raw(url)[0] == 404, url
        assert s.raw(f"/api/images/{good}/file")[0] == 200
    finally:
        assert s.stop() == 0  # Ctrl-C stops it cleanly


def test_serve_beyond_loopback_warns_and_generates_a_token(web_index: Path) -> None:
    s = Server(web_index, "--host", "0.0.0.0")
    try:
        assert any("Warning" in line for line in s.lines)
        token = s.url.split("token=", 1)[1]
        assert len(token) >= 20
        assert s.raw("/api/info")[0] == 401
        assert s.raw("/api/info", headers={"Host": "my-laptop.local"})[0] == 401
        assert s.raw("/api/info", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        s.stop()


def test_search_while_another_process_indexes(tamper: tuple[Path, Path, dict[str, int]], shapes: Shapes) -> None:
    root, folder, _ = tamper
    s = Server(root / "t.idx")
    try:
        before = s.json("/api/info")["images"]
        for src in sorted(shapes.folder.glob("*.png"))[100:140]:
            shutil.copy2(src, folder / src.name)
        writer = subprocess.Popen([sys.executable, "-c", "from searchindex.cli import main; main()", "index",
                                   str(folder), "--index", str(root / "t.idx"), "--device", "cpu",
                                   "--batch-size", "4", "--workers", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        statuses = []
        stop = threading.Event()

        def search() -> None:
            while not stop.is_set():
                statuses.append(s.raw("/api/search?q=a+red+circle&k=20")[0])

        t = threading.Thread(target=search)
        t.start()
        assert writer.wait(timeout=300) == 0, writer.stderr.read() if writer.stderr else ""
        stop.set()
        t.join()
        assert statuses and set(statuses) == {200}
        assert s.json("/api/info")["images"] == before + 40
        new_id = max(r["image_id"] for r in s.json("/api/search?q=a+red+circle&k=1000")["results"])
        assert s.raw(f"/api/images/{new_id}/thumbnail")[0] == 200
    finally:
        s.stop()
