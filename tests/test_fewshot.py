"""Few-shot reranking: no shots means exactly CLIP; a few shots find what was meant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index, QueryError
from searchindex.cli import cli
from searchindex.search.fewshot import FewShotReranker

from .conftest import Shapes

QUERY = "a photo of a circle"


def _intent(row: dict[str, str]) -> bool:  # "large circles on sand": narrower than the query
    return row["shape"] == "circle" and row["size"] == "large" and row["background"] == "sand"


def _shots(shapes: Shapes, n: int) -> tuple[list[str], list[str]]:
    paths = sorted(shapes.labels)
    likes = [p for p in paths if _intent(shapes.labels[p])][:n]
    unlikes = [p for p in paths if shapes.labels[p]["shape"] == "circle" and not _intent(shapes.labels[p])][:n]
    return likes, unlikes


def test_no_shots_is_exactly_the_clip_ranking(shapes_index: Path) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        plain = index.search(QUERY, k=50)
        again = index.search(QUERY, k=50, like=[], unlike=[])
    assert [(r.image_id, r.score) for r in again] == [(r.image_id, r.score) for r in plain]


def test_closed_gate_returns_the_clip_scores_bit_for_bit(shapes_index: Path, shapes: Shapes) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        q = index.encoder.encode_texts([QUERY])[0]
        vecs = index.vectors.current()
        scores, ids = vecs.search(q[None, :], 1000)
        cand = vecs.vectors(ids[0])
    likes, unlikes = cand[:3], cand[3:6]
    closed = FewShotReranker(default_gate=0.0, gates=(), betas=(1.0,), default_beta=1.0)
    new, fit = closed.fit_scores(q, cand, likes, unlikes, base_scores=scores[0])
    assert fit.gate == 0.0 and new.dtype == scores[0].dtype
    assert np.array_equal(new, scores[0])
    assert np.array_equal(np.argsort(-new, kind="stable"), np.argsort(-scores[0], kind="stable"))
    # With no shots at all the default reranker leaves the scores alone too.
    same, fit = FewShotReranker().fit_scores(q, cand, cand[:0], cand[:0], base_scores=scores[0])
    assert fit.gate == 0.0 and np.array_equal(same, scores[0])


def test_four_shots_find_the_intent(shapes_index: Path, shapes: Shapes) -> None:
    likes, unlikes = _shots(shapes, 4)
    with Index.open(shapes_index, device="cpu") as index:
        before = index.search(QUERY, k=10)
        after = index.search(QUERY, k=10, like=likes, unlike=unlikes)
    p_before = sum(_intent(shapes.labels[r.path]) for r in before) / 10
    p_after = sum(_intent(shapes.labels[r.path]) for r in after) / 10
    assert p_after >= p_before + 0.25, (p_before, p_after)
    assert not {r.path for r in after} & set(likes + unlikes)  # the examples are left out
    assert [r.rank for r in after] == list(range(1, 11))


def test_examples_by_id_or_path_agree(shapes_index: Path, shapes: Shapes) -> None:
    likes, unlikes = _shots(shapes, 2)
    with Index.open(shapes_index, device="cpu") as index:
        ids = index.catalog.read.ids_by_path(likes + unlikes)
        by_path = index.search(QUERY, k=10, like=likes, unlike=unlikes)
        by_id = index.search(QUERY, k=10, like=[ids[p] for p in likes], unlike=[ids[p] for p in unlikes])
        with pytest.raises(QueryError, match="no image with id 999999"):
            index.search(QUERY, like=[999999])
        with pytest.raises(QueryError, match="cannot read like example"):
            index.search(QUERY, like=["/no/such/file.png"])
    assert [(r.image_id, r.score) for r in by_id] == [(r.image_id, r.score) for r in by_path]


def test_summary_stays_bounded() -> None:
    rng = np.random.default_rng(0)
    cand = rng.normal(size=(300, 16))
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    reranker = FewShotReranker(max_latents=4)
    for shots in (2, 8, 32):
        _, fit = reranker.fit_scores(cand[0], cand, cand[1 : 1 + shots], cand[100 : 100 + shots])
        assert fit.latents == min(shots, 4) * 2


def test_cli_like_and_unlike(shapes_index: Path, shapes: Shapes) -> None:
    runner = CliRunner()
    likes, unlikes = _shots(shapes, 2)
    res = runner.invoke(cli, ["search", QUERY, "--index", str(shapes_index), "--json", "-k", "40"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    unlike_id = next(r["image_id"] for r in rows if not _intent(shapes.labels[r["path"]]))
    res = runner.invoke(cli, ["search", QUERY, "--index", str(shapes_index), "--paths", "--like", likes[0],
                              "--like", likes[1], "--unlike", str(unlike_id)])
    assert res.exit_code == 0, res.output
    paths = res.output.splitlines()
    assert len(paths) == 10 and likes[0] not in paths
    res = runner.invoke(cli, ["search", QUERY, "--index", str(shapes_index), "--like", "missing.png"])
    assert res.exit_code == 2 and "cannot read like example missing.png" in res.output
