"""--threshold auto and --min-score: the results that stand out, and a fixed floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index, QueryError
from searchindex.cli import cli
from searchindex.demo.synthetic import COLORS, SHAPES
from searchindex.search.cutoff import auto_cutoff

from .conftest import Shapes


def test_auto_cutoff_finds_the_break_between_tiers() -> None:
    rng = np.random.default_rng(0)
    matches = 0.60 + 0.02 * rng.random(25)
    partial = 0.30 + 0.15 * rng.random(150)
    rest = rng.normal(0.0, 0.15, 825).clip(-1, 0.29)
    scores = np.sort(np.concatenate([matches, partial, rest]))[::-1]
    assert auto_cutoff(scores, background=rng.permutation(scores)[:300]) == 25


def test_auto_cutoff_without_a_break_uses_the_background() -> None:
    rng = np.random.default_rng(1)
    # A smooth exponential tail: no gap is significant.  Three clear outliers over a
    # narrow background are what stands out.
    tail = np.sort(0.2 + rng.exponential(0.01, 2000))[::-1]
    assert auto_cutoff(tail) == 0
    background = rng.normal(0.2, 0.01, 2000)
    scores = np.sort(np.concatenate([[0.29, 0.3, 0.31], background]))[::-1]
    assert auto_cutoff(scores, background=background) == 3
    assert auto_cutoff(np.zeros(0)) == 0


def test_auto_cutoff_ignores_breaks_below_the_background() -> None:
    # A gap at the very bottom (the worst matches) is no reason to return everything above it.
    rng = np.random.default_rng(2)
    body = rng.normal(0.3, 0.05, 990)
    scores = np.sort(np.concatenate([body, rng.normal(-0.6, 0.01, 10)]))[::-1]
    assert auto_cutoff(scores, background=scores) == 0


def _relevant(shapes: Shapes, color: str, shape: str) -> set[str]:
    return {p for p, row in shapes.labels.items() if row["color"] == color and row["shape"] == shape}


def test_auto_threshold_precision_and_recall(shapes: Shapes, shapes_index: Path) -> None:
    precisions, recalls = [], []
    with Index.open(shapes_index, device="cpu") as index:
        for color in COLORS:
            for shape in SHAPES:
                got = {r.path for r in index.search(f"a photo of a {color} {shape}", k=None, threshold="auto")}
                relevant = _relevant(shapes, color, shape)
                precisions.append(len(got & relevant) / len(got) if got else 0.0)
                recalls.append(len(got & relevant) / len(relevant))
    assert np.mean(precisions) >= 0.9, np.mean(precisions)
    assert np.mean(recalls) >= 0.8, np.mean(recalls)


def test_auto_threshold_adapts_to_the_query(shapes: Shapes, shapes_index: Path) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        circles = index.search("a photo of a circle", k=None, threshold="auto")
        red_circles = index.search("a photo of a red circle", k=None, threshold="auto")
        capped = index.search("a photo of a circle", k=5, threshold="auto")
    # A broader query has a larger set that stands out: all circles, not only red ones.
    assert len(circles) > 3 * len(red_circles) > 0
    assert sum(shapes.labels[r.path]["shape"] == "circle" for r in circles) >= 0.9 * len(circles)
    assert [r.path for r in capped] == [r.path for r in circles[:5]]


def test_min_score_is_an_exact_floor(shapes_index: Path) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        everything = index.search("a photo of a green star", k=None)
        floor = (everything[29].score + everything[30].score) / 2
        got = index.search("a photo of a green star", k=None, min_score=floor)
        assert [r.image_id for r in got] == [r.image_id for r in everything[:30]]
        assert len(index.search("a photo of a green star", k=7, min_score=floor)) == 7
        assert index.search("a photo of a green star", min_score=0.999) == []
        with pytest.raises(QueryError, match="between -1 and 1"):
            index.search("x", min_score=2)
        with pytest.raises(QueryError, match="threshold must be 'auto'"):
            index.search("x", threshold="high")


def test_cli_threshold_and_min_score(shapes: Shapes, shapes_index: Path) -> None:
    runner = CliRunner()
    base = ["search", "a photo of a blue triangle", "--index", str(shapes_index), "--device", "cpu", "--json"]
    res = runner.invoke(cli, [*base, "--threshold", "auto"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    relevant = _relevant(shapes, "blue", "triangle")
    # No -k: every result that stands out (more than the default 10).
    assert len(rows) > 10 and len({r["path"] for r in rows} & relevant) >= 0.9 * len(rows)

    floor = rows[-1]["score"]
    fixed = runner.invoke(cli, [*base, "--min-score", str(floor)])
    same = runner.invoke(cli, [*base, "--threshold", str(floor)])
    assert fixed.exit_code == 0 and fixed.output == same.output
    assert all(json.loads(line)["score"] >= floor for line in fixed.output.splitlines())
    capped = runner.invoke(cli, [*base, "--min-score", str(floor), "-k", "3"])
    assert len(capped.output.splitlines()) == 3

    res = runner.invoke(cli, ["search", "a photo of a blue triangle", "--index", str(shapes_index),
                              "--min-score", "0.999"])
    assert res.exit_code == 0 and "No result scores 0.999 or more" in res.output
    res = runner.invoke(cli, [*base, "--threshold", "most"])
    assert res.exit_code == 2 and "neither 'auto' nor a number" in res.output


def test_auto_threshold_grows_its_pool_past_the_first_candidates(tmp_path: Path) -> None:
    """3,000 images stand out from 30,000 others: the first pool (AUTO_POOL = 1,024) holds only
    the top tier, with no break in it, so the pool must grow (4x, up to AUTO_MAX_POOL) until the
    break is inside it. Real catalog and FAISS; synthetic vectors (no model needed)."""
    from searchindex.models.spec import ModelSpec
    from searchindex.search.searcher import AUTO_POOL
    from searchindex.store.catalog.database import Catalog
    from searchindex.store.catalog.records import NewImage
    from searchindex.store.vectors.kinds import DEFAULT_FACTORY

    dim, tier, rest = 64, 3000, 30_000
    rng = np.random.default_rng(27)
    query = rng.standard_normal(dim).astype(np.float32)
    query /= np.linalg.norm(query)

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    noise = rng.standard_normal((tier, dim)).astype(np.float32)
    noise -= np.outer(noise @ query, query)  # orthogonal to the query: the cosine is set by the mix
    close = unit(query * 0.8 + unit(noise) * rng.uniform(0.55, 0.62, (tier, 1)).astype(np.float32))
    vectors = np.concatenate([close, unit(rng.standard_normal((rest, dim)).astype(np.float32))])
    (tmp_path / "idx").mkdir()
    catalog = Catalog.create(tmp_path / "idx", ModelSpec("synthetic", "none"), dim, DEFAULT_FACTORY)
    try:
        catalog.commit_batch([NewImage(f"/synthetic/img_{i:05d}.jpg", 1000 + i, 1_600_000_000 + i, f"{i:064x}",
                                       64, 64, "JPEG", v, None) for i, v in enumerate(vectors)])
    finally:
        catalog.close()
    with Index.open(tmp_path / "idx") as index:
        hits = index.search_vector(query, k=None, threshold="auto")
    assert len(hits) == tier > AUTO_POOL
    assert {h.path for h in hits} == {f"/synthetic/img_{i:05d}.jpg" for i in range(tier)}
