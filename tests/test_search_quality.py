"""Real retrieval with the shipped tiny model: the engine finds what the words say."""

from __future__ import annotations

from pathlib import Path

from searchindex import Index
from searchindex.demo.synthetic import COLORS, SHAPES

from .conftest import Shapes


def test_text_queries_find_colour_and_shape(shapes: Shapes, shapes_index: Path) -> None:
    precisions = []
    with Index.open(shapes_index, device="cpu") as index:
        for color in COLORS:
            for shape in SHAPES:
                results = index.search(f"a photo of a {color} {shape}", k=10)
                assert len(results) == 10
                relevant = sum(
                    1 for row in shapes.labels.values() if row["color"] == color and row["shape"] == shape
                )
                hits = sum(
                    shapes.labels[r.path]["color"] == color and shapes.labels[r.path]["shape"] == shape
                    for r in results
                )
                precisions.append(hits / min(10, relevant))
    mean = sum(precisions) / len(precisions)
    assert mean >= 0.8, f"mean precision@10 {mean:.3f} over {len(precisions)} queries"


def test_results_are_ranked_and_typed(shapes_index: Path) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        results = index.search("a red circle", k=5)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r.width == 64 and r.height == 64 and r.format == "PNG" for r in results)
    assert all(Path(r.path).is_absolute() for r in results)


def test_image_query_returns_that_image_first(shapes: Shapes, shapes_index: Path) -> None:
    probes = sorted(shapes.labels)[::97][:8]
    with Index.open(shapes_index, device="cpu") as index:
        for probe in probes:
            results = index.search_image(probe, k=3)
            assert results[0].path == probe
            assert results[0].score > 0.99
