"""Filters: resolved in SQL, ranked exactly by FAISS, equal to brute force over the matching images."""

from __future__ import annotations

import json
import math
import os
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Filters, Index, QueryError
from searchindex.cli import cli
from searchindex.store.catalog.filters import glob_to_sqlite
from searchindex.store.vectors.index import GATHER_MAX
from tests.support.vectors import write_vector_index

from .conftest import Shapes

COUNT = 3000


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 synthetic rows: 100 folders (1 % each), widths 640/1024/2048/4032."""
    path = tmp_path_factory.mktemp("vec") / "synthetic.idx"
    write_vector_index(path, COUNT, dim=32, seed=3, folders=100)
    return path


Row = tuple[str, int, int, "str | None", str, "float | None", "float | None"]


@pytest.fixture(scope="module")
def truth(vector_index: Path) -> tuple[dict[int, Row], dict[int, np.ndarray]]:
    """Every row (path, width, height, date, camera, lat, lon) and embedding, read from the catalog."""
    with Index.open(vector_index) as index:
        rows = index.catalog.read.records(range(1, COUNT + 1))
        emb = index.catalog.read.embeddings(list(rows), index.dim)
    return {i: (r.path, r.width, r.height, r.taken_at, f"{r.camera_make or ''} {r.camera_model or ''}",
                r.gps_lat, r.gps_lon) for i, r in rows.items()}, emb


def _brute_force(truth: tuple[dict[int, Row], dict[int, np.ndarray]], filters: Filters | None,
                 query: np.ndarray, k: int | None, min_score: float | None = None) -> list[tuple[int, float]]:
    """The exact ranking of the matching images, row by row."""
    rows, emb = truth
    ids = [i for i, r in rows.items() if filters is None or _matches(r, filters)]
    ranked = sorted(((i, float(emb[i] @ query)) for i in ids), key=lambda t: (-t[1], t[0]))
    if min_score is not None:
        ranked = [t for t in ranked if t[1] >= min_score]
    return ranked if k is None else ranked[:k]


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def _matches(row: Row, f: Filters) -> bool:
    """An independent, row-by-row reading of the filter semantics (fnmatch, datetime, math; no SQL)."""
    import fnmatch

    path, width, height, taken, camera, lat, lon = row

    def one(pattern: str) -> bool:
        exact, glob = glob_to_sqlite(pattern, f.cwd)
        if exact is not None and path == exact:
            return True
        return fnmatch.fnmatchcase(path, glob.replace("[^", "[!"))

    if f.paths and not any(one(p) for p in f.paths):
        return False
    if any(one(p) for p in f.exclude):
        return False
    if width < (f.min_width or 0) or height < (f.min_height or 0):
        return False
    when = datetime.fromisoformat(taken) if taken else None
    if f.after and (when is None or when < datetime.fromisoformat(str(f.after))):
        return False
    if f.before and (when is None or when >= datetime.fromisoformat(str(f.before))):
        return False
    if f.cameras and not any(c.lower() in camera.lower() for c in f.cameras):
        return False
    if f.near is not None:
        if lat is None or lon is None or _km(f.near[0], f.near[1], lat, lon) > float(f.radius_km or 0):
            return False
    return True


CASES = {
    "1 % (one folder)": Filters(paths=("/synthetic/f07",)),
    "1 % by glob": Filters(paths=("/synthetic/f42/*",)),
    "0.5 %": Filters(paths=("/synthetic/f07/*",), exclude=("*/img_????[0-4]??.jpg",)),
    "2 % (two folders)": Filters(paths=("/synthetic/f07", "/synthetic/f[8]1/*")),
    "~25 % (width)": Filters(min_width=4000),
    "~50 % (height)": Filters(min_height=1536),
    "width and folders": Filters(paths=("/synthetic/f1?/*",), min_width=2000),
    "exclude 90 %": Filters(exclude=("/synthetic/f[1-9]?/*",)),
    "one year": Filters(after="2019", before="2020"),
    "one week (~0.2 %)": Filters(after="2021-03-01", before="2021-03-08T00:00"),
    "after only": Filters(after=datetime(2023, 6, 15, 12, 30)),
    "camera": Filters(cameras=("nikon",)),
    "two cameras + width": Filters(cameras=("eos r5", "iphone"), min_width=2000),
    "near Paris 30 km": Filters(near=(48.8566, 2.3522), radius_km=30),
    "near Fiji, across the antimeridian": Filters(near=(-16.9, 179.8), radius_km=120),
    "near + date + camera (~1 %)": Filters(near=(40.7128, -74.0060), radius_km=40, after="2018",
                                             cameras=("canon",)),
    "nothing": Filters(paths=("/elsewhere/*",)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_filtered_top_k_equals_brute_force(vector_index: Path, truth: Any, name: str) -> None:
    filters = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    everything = _brute_force(truth, filters, np.zeros(32, np.float32), None)
    assert (0 < len(everything) < COUNT) == (name != "nothing")  # every case is a real restriction
    with Index.open(vector_index) as index:
        for _ in range(3):
            q = rng.standard_normal(index.dim).astype(np.float32)
            q /= np.linalg.norm(q)
            for k in (1, 10, 100):
                got = [(r.image_id, r.score) for r in index.search_vector(q, k, filters=filters)]
                want = _brute_force(truth, filters, q, k)
                assert [i for i, _ in got] == [i for i, _ in want], (name, k)
                assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
            # A score floor under the same filter (halfway between two scores: no rounding ties).
            floor = (want[4][1] + want[5][1]) / 2 if len(want) > 5 else 0.0
            got = [r.image_id for r in index.search_vector(q, None, filters=filters, min_score=floor)]
            assert got == [i for i, _ in _brute_force(truth, filters, q, None, floor)]


def test_both_strategies_are_exercised(vector_index: Path) -> None:
    with Index.open(vector_index) as index:
        small = index.catalog.read.filtered_ids(CASES["1 % (one folder)"])
        large = index.catalog.read.filtered_ids(CASES["~25 % (width)"])
    assert 0 < len(small) <= GATHER_MAX < len(large)  # direct scoring vs FAISS id-selector scan
    assert len(small) == COUNT // 100


def test_filtered_text_search_on_real_images(shapes: Shapes, shapes_index: Path) -> None:
    # 10 of the 1,000 images (1 %): the top 5 are the exact top 5 of those 10.
    pattern = "*/shape_99_0001?.png"
    with Index.open(shapes_index, device="cpu") as index:
        got = index.search("a photo of a red circle", k=5, filters=Filters(paths=(pattern,)))
        q = index.embed("a photo of a red circle")
        subset = [i for i, r in index.catalog.read.records(range(1, 2000)).items()
                  if r.path.rsplit("/", 1)[1].startswith("shape_99_0001")]
        emb = index.catalog.read.embeddings(subset, index.dim)
        want = sorted(subset, key=lambda i: -float(emb[i] @ q))[:5]
    assert len(subset) == 10
    assert [r.image_id for r in got] == want
    assert all(Path(r.path).name.startswith("shape_99_0001") for r in got)


def test_glob_translation(tmp_path: Path) -> None:
    cwd = "/home/me/photos"
    assert glob_to_sqlite("trips", cwd) == ("/home/me/photos/trips", "/home/me/photos/trips/*")
    assert glob_to_sqlite("/a/b/", cwd) == ("/a/b", "/a/b/*")
    assert glob_to_sqlite("*.png", cwd) == (None, "*.png")
    assert glob_to_sqlite("2023/*.jpg", cwd) == (None, "/home/me/photos/2023/*.jpg")
    assert glob_to_sqlite("/x/[!a-c]?.jpg", cwd) == (None, "/x/[^a-c]?.jpg")
    assert glob_to_sqlite("/x/[]a]*", cwd) == (None, "/x/[]a]*")
    assert glob_to_sqlite("~/p/*", cwd)[1] == os.path.expanduser("~") + "/p/*"
    for bad in ("/x/[abc*", "", "/x/[!"):
        with pytest.raises(QueryError, match="bad glob|empty path pattern"):
            glob_to_sqlite(bad, cwd)
    with pytest.raises(QueryError, match="bad glob"):
        Filters(paths=("[oops",))
    with pytest.raises(QueryError, match="must not be negative"):
        Filters(min_width=-1)


def test_cli_filters(shapes: Shapes, shapes_index: Path) -> None:
    runner = CliRunner()
    folder = str(shapes.folder)
    base = ["search", "a photo of a red circle", "--index", str(shapes_index), "--device", "cpu", "--json"]
    res = runner.invoke(cli, [*base, "--path", f"{folder}/shape_99_000??.png", "-k", "200"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert len(rows) == 100 and all(Path(r["path"]).name < "shape_99_00100" for r in rows)

    res = runner.invoke(cli, [*base, "--path", folder, "--exclude", "*[0-8].png", "-k", "1000"])
    assert res.exit_code == 0, res.output
    assert {Path(json.loads(line)["path"]).stem[-1] for line in res.output.splitlines()} == {"9"}
    assert len(res.output.splitlines()) == 100

    res = runner.invoke(cli, [*base, "--min-width", "65"])
    assert res.exit_code == 0 and res.output == ""  # every image is 64x64
    res = runner.invoke(cli, ["search", "red", "--index", str(shapes_index), "--min-height", "65"])
    assert res.exit_code == 0 and "no indexed image matches the filters" in res.output

    res = runner.invoke(cli, [*base, "--path", f"{folder}/[abc"])
    assert res.exit_code == 2 and "bad glob" in res.output


def _exif_jpeg(path: Path, image: Any, taken: str, make: str, model: str, gps: tuple[float, float] | None) -> None:
    from PIL import Image

    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = make, model
    ex.get_ifd(0x8769)[0x9003] = taken
    if gps is not None:
        g = ex.get_ifd(0x8825)
        lat, lon = gps
        g[1], g[2] = ("N" if lat >= 0 else "S"), (float(int(abs(lat))), float(abs(lat) % 1 * 60), 0.0)
        g[3], g[4] = ("E" if lon >= 0 else "W"), (float(int(abs(lon))), float(abs(lon) % 1 * 60), 0.0)
    image.save(path, "JPEG", quality=92, exif=ex)


@pytest.fixture(scope="module")
def exif_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """24 shape photos with EXIF dates (2016-2023), two cameras, and positions in Paris or Sydney."""
    import random

    from searchindex.demo.synthetic import random_scene, render

    folder = tmp_path_factory.mktemp("exif")
    rng = random.Random(4)
    facts: dict[str, dict[str, Any]] = {}
    for i in range(24):
        taken = f"{2016 + i % 8}:{1 + i % 12:02d}:{1 + i:02d} 12:00:00"
        make, model = ("Canon", "Canon EOS R5") if i % 3 else ("NIKON CORPORATION", "NIKON Z 6")
        gps = [(48.8566, 2.3522), (-33.8688, 151.2093), None][i % 3]
        path = folder / f"p{i:02d}.jpg"
        _exif_jpeg(path, render(random_scene(rng), 64), taken, make, model, gps)
        facts[str(path.absolute())] = {"year": 2016 + i % 8, "model": model, "gps": gps}
    idx = folder / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        assert index.add_folder(folder).indexed == 24
    return idx, facts


def test_cli_metadata_filters_and_sort(exif_index: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    idx, facts = exif_index
    runner = CliRunner()

    def run(*args: str) -> list[dict[str, Any]]:
        res = runner.invoke(cli, ["search", "a red circle", "--index", str(idx), "--device", "cpu", "-k", "100",
                                  "--json", *args])
        assert res.exit_code == 0, res.output
        return [json.loads(line) for line in res.output.splitlines()]

    every = run()
    assert len(every) == 24
    assert {"taken_at", "taken_offset", "date_source", "camera_make", "camera_model", "lens", "gps_lat",
            "gps_lon"} <= set(every[0])
    got = run("--after", "2018", "--before", "2020-01-01")
    assert sorted(facts[r["path"]]["year"] for r in got) == [2018] * 3 + [2019] * 3
    got = run("--camera", "nikon z")
    assert len(got) == 8 and all(facts[r["path"]]["model"] == "NIKON Z 6" for r in got)
    got = run("--near", "48.85,2.35", "--radius", "25")
    assert len(got) == 8 and all(facts[r["path"]]["gps"] == (48.8566, 2.3522) for r in got)
    got = run("--near", "-33.87,151.21", "--camera", "canon", "--after", "2020")
    assert {(facts[r["path"]]["gps"], facts[r["path"]]["model"]) for r in got} == {((-33.8688, 151.2093),
                                                                                   "Canon EOS R5")}
    assert all(facts[r["path"]]["year"] >= 2020 for r in got) and got

    by_score = run("-k", "10")
    by_date = run("-k", "10", "--sort", "date")
    assert {r["path"] for r in by_date} == {r["path"] for r in by_score}  # same results, reordered
    dates = [r["taken_at"] for r in by_date]
    assert dates == sorted(dates, reverse=True) and dates != [r["taken_at"] for r in by_score]
    assert sorted(r["rank"] for r in by_date) == list(range(1, 11))

    res = runner.invoke(cli, ["search", "red", "--index", str(idx), "--sort", "date"])
    lines = res.output.splitlines()
    assert lines[0].split() == ["rank", "score", "date", "path"] and "2023-" in lines[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--after", "2023-13"], "bad date '2023-13'"), (["--before", "last week"], "bad date 'last week'"),
     (["--after", "2020", "--before", "2019"], "is not earlier than"),
     (["--near", "48.8"], "bad position '48.8'"), (["--near", "91,0"], "latitude is within"),
     (["--radius", "5"], "--radius needs --near")],
)
def test_cli_bad_filters(exif_index: tuple[Path, dict[str, dict[str, Any]]], args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["search", "red", "--index", str(exif_index[0]), *args])
    assert res.exit_code in (1, 2) and message in res.output, res.output
