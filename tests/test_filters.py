"""Filters: resolved in SQL, ranked exactly by FAISS, equal to brute force over the matching images."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Filters, Index, QueryError
from searchindex.cli import cli
from searchindex.query import glob_to_sqlite
from searchindex.synthetic import write_vector_index
from searchindex.vectors import GATHER_MAX

from .conftest import Shapes

COUNT = 3000


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 synthetic rows: 100 folders (1 % each), widths 640/1024/2048/4032."""
    path = tmp_path_factory.mktemp("vec") / "synthetic.idx"
    write_vector_index(path, COUNT, dim=32, seed=3, folders=100)
    return path


@pytest.fixture(scope="module")
def truth(vector_index: Path) -> tuple[dict[int, tuple[str, int, int]], dict[int, np.ndarray]]:
    """Every row (path, width, height) and embedding, read from the catalog."""
    with Index.open(vector_index) as index:
        rows = index._catalog.images_by_id(range(1, COUNT + 1))
        emb = index._catalog.embeddings_by_id(list(rows), index.dim)
    return {i: (r.path, r.width, r.height) for i, r in rows.items()}, emb


def _brute_force(truth: tuple[dict[int, tuple[str, int, int]], dict[int, np.ndarray]], filters: Filters | None,
                 query: np.ndarray, k: int | None, min_score: float | None = None) -> list[tuple[int, float]]:
    """The exact ranking of the matching images, row by row."""
    rows, emb = truth
    ids = [i for i, r in rows.items() if filters is None or _matches(*r, filters)]
    ranked = sorted(((i, float(emb[i] @ query)) for i in ids), key=lambda t: (-t[1], t[0]))
    if min_score is not None:
        ranked = [t for t in ranked if t[1] >= min_score]
    return ranked if k is None else ranked[:k]


def _matches(path: str, width: int, height: int, f: Filters) -> bool:
    """An independent, row-by-row reading of the filter semantics (fnmatch, not SQL)."""
    import fnmatch

    def one(pattern: str) -> bool:
        exact, glob = glob_to_sqlite(pattern, f.cwd)
        if exact is not None and path == exact:
            return True
        return fnmatch.fnmatchcase(path, glob.replace("[^", "[!"))

    if f.paths and not any(one(p) for p in f.paths):
        return False
    if any(one(p) for p in f.exclude):
        return False
    return width >= (f.min_width or 0) and height >= (f.min_height or 0)


CASES = {
    "1 % (one folder)": Filters(paths=("/synthetic/f07",)),
    "1 % by glob": Filters(paths=("/synthetic/f42/*",)),
    "0.5 %": Filters(paths=("/synthetic/f07/*",), exclude=("*/img_????[0-4]??.jpg",)),
    "2 % (two folders)": Filters(paths=("/synthetic/f07", "/synthetic/f[8]1/*")),
    "~25 % (width)": Filters(min_width=4000),
    "~50 % (height)": Filters(min_height=1536),
    "width and folders": Filters(paths=("/synthetic/f1?/*",), min_width=2000),
    "exclude 90 %": Filters(exclude=("/synthetic/f[1-9]?/*",)),
    "nothing": Filters(paths=("/elsewhere/*",)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_filtered_top_k_equals_brute_force(vector_index: Path, truth: Any, name: str) -> None:
    filters = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
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
        small = index._catalog.filtered_ids(CASES["1 % (one folder)"])
        large = index._catalog.filtered_ids(CASES["~25 % (width)"])
    assert 0 < len(small) <= GATHER_MAX < len(large)  # direct scoring vs FAISS id-selector scan
    assert len(small) == COUNT // 100


def test_filtered_text_search_on_real_images(shapes: Shapes, shapes_index: Path) -> None:
    # 10 of the 1,000 images (1 %): the top 5 are the exact top 5 of those 10.
    pattern = "*/shape_99_0001?.png"
    with Index.open(shapes_index, device="cpu") as index:
        got = index.search("a photo of a red circle", k=5, filters=Filters(paths=(pattern,)))
        q = index.embed("a photo of a red circle")
        subset = [i for i, r in index._catalog.images_by_id(range(1, 2000)).items()
                  if r.path.rsplit("/", 1)[1].startswith("shape_99_0001")]
        emb = index._catalog.embeddings_by_id(subset, index.dim)
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
    assert res.exit_code == 1 and "bad glob" in res.output
