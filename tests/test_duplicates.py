"""Near-duplicates: FAISS range search, grouping, best copy first, and the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index, QueryError
from searchindex.cli import cli
from searchindex.demo.synthetic import write_duplicate_set
from searchindex.enrich.duplicates import find_pairs, group_pairs


@pytest.fixture(scope="module")
def dup_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """60 distinct scenes, some with resized/recompressed/cropped/brightened copies, indexed with tiny-shapes."""
    folder = tmp_path_factory.mktemp("dups")
    labels = write_duplicate_set(folder / "images", count=60, seed=5)
    idx = folder / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        assert index.add_folder(folder / "images").failed == 0
    return idx, {str((folder / "images" / str(r["file"])).absolute()): r for r in labels}


def _pairs(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}


def test_groups_match_the_planted_copies(dup_index: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    idx, labels = dup_index
    with Index.open(idx, device="cpu") as index:
        groups = index.duplicates()
    predicted = _pairs([[im.path for im in g.images] for g in groups])
    by_scene: dict[int, list[str]] = {}
    for path, row in labels.items():
        by_scene.setdefault(int(row["group"]), []).append(path)
    actual = _pairs(list(by_scene.values()))
    assert len(actual) > 50
    precision = len(predicted & actual) / len(predicted)
    recall = len(predicted & actual) / len(actual)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    for g in groups:
        # Best copy first: the original (largest and oldest); similarities to it, all >= the threshold.
        assert labels[g.best.path]["variant"] == "original"
        assert g.best.similarity == 1.0 and all(0.98 <= im.similarity <= 1.0 for im in g.images[1:])
        sizes = [im.width * im.height for im in g.images]
        assert sizes[0] == max(sizes)
    assert [len(g.images) for g in groups] == sorted((len(g.images) for g in groups), reverse=True)


def test_threshold_trades_precision_for_recall(dup_index: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    idx, _ = dup_index
    with Index.open(idx, device="cpu") as index:
        strict = sum(len(g.images) for g in index.duplicates(0.999))
        default = sum(len(g.images) for g in index.duplicates())
        loose = sum(len(g.images) for g in index.duplicates(0.9))
        with pytest.raises(QueryError, match="cosine similarity in"):
            index.duplicates(0)
    assert strict < default < loose


def test_ivf_finds_the_pairs_the_exact_search_finds() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6000, 32)).astype(np.float32)
    copies = rng.choice(6000, 300, replace=False)
    sources = (copies + 1 + rng.integers(0, 5998, 300)) % 6000
    x[copies] = x[sources] + 0.05 * rng.standard_normal((300, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = find_pairs(x, 0.95, method="exact")
    ivf = find_pairs(x, 0.95, method="ivf")
    exact_set = {tuple(p) for p in exact.tolist()}
    assert len(exact_set) >= 250
    assert {tuple(p) for p in ivf.tolist()} <= exact_set  # never a pair below the threshold
    assert len(ivf) >= 0.95 * len(exact)
    sims = np.einsum("ij,ij->i", x[exact[:, 0]], x[exact[:, 1]])
    assert (sims >= 0.95).all() and (exact[:, 0] < exact[:, 1]).all()


def test_group_pairs_joins_chains() -> None:
    groups = group_pairs(np.array([[0, 3], [3, 7], [2, 5]]), 9)
    assert [g.tolist() for g in groups] == [[0, 3, 7], [2, 5]]
    assert group_pairs(np.zeros((0, 2), dtype=np.int64), 4) == []


def test_cli_duplicates(dup_index: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    idx, labels = dup_index
    runner = CliRunner()
    res = runner.invoke(cli, ["duplicates", "--index", str(idx), "--json"])
    assert res.exit_code == 0, res.output
    groups = [json.loads(line) for line in res.output.splitlines()]
    assert [g["group"] for g in groups] == list(range(1, len(groups) + 1))
    first = groups[0]["images"][0]
    assert set(first) == {"path", "image_id", "width", "height", "size", "mtime_ns", "taken_at", "similarity"}
    assert labels[first["path"]]["variant"] == "original"

    res = runner.invoke(cli, ["duplicates", "--index", str(idx)])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0] == f"group 1: {len(groups[0]['images'])} images"
    assert lines[1].split()[:2] == ["best", "128x128"]
    assert f"{len(groups)} groups" in lines[-1]

    res = runner.invoke(cli, ["duplicates", "--index", str(idx), "--threshold", "1.5"])
    assert res.exit_code == 2
