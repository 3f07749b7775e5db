"""Composed queries: term syntax, weighted sums, and what they find with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index, Query, QueryError, Term
from searchindex.cli import cli
from searchindex.search.query import combine, parse_term

from .conftest import Shapes


def _label(shapes: Shapes, path: str) -> tuple[str, str]:
    row = shapes.labels[path]
    return row["color"], row["shape"]


# -- syntax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text", "weight"),
    [
        ("sunset", "sunset", 1.0),
        ("2:sunset", "sunset", 2.0),
        ("0.5: a red circle", "a red circle", 0.5),
        ("1e-1:x", "x", 0.1),
        ("text:1:1 scale model", "1:1 scale model", 1.0),
        ("3:text:photo.jpg", "photo.jpg", 3.0),
        ("a photo: red", "a photo: red", 1.0),
    ],
)
def test_text_terms_parse(spec: str, text: str, weight: float) -> None:
    term = parse_term(spec)
    assert (term.text, term.image, term.weight) == (text, None, weight)
    assert parse_term(spec, sign=-1).weight == -weight


def test_image_terms_are_recognised(shapes: Shapes, tmp_path: Path) -> None:
    probe = sorted(shapes.labels)[0]
    assert parse_term(probe).image == probe
    assert parse_term(f"2:{probe}") == Term(image=probe, weight=2.0)
    assert parse_term(f"image:{probe}", sign=-1) == Term(image=probe, weight=-1.0)
    with pytest.raises(QueryError, match="image term file not found: .*nope.jpg"):
        parse_term(str(tmp_path / "nope.jpg"))
    with pytest.raises(QueryError, match="image term file not found"):
        parse_term("image:no-such-file")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("2..5:sunset", "bad weight '2..5'"), ("0:sunset", "weights are positive"), ("2:", "empty query term"),
     ("   ", "empty query term"), ("1e999:x", "bad weight")],
)
def test_bad_terms_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_term(spec)


def test_query_needs_a_positive_term() -> None:
    with pytest.raises(QueryError, match="at least one positive term"):
        Query.parse(minus=["red"])
    with pytest.raises(QueryError, match="empty"):
        Query.parse()
    q = Query.parse("beach", plus=["2:sunset"], minus=["people"], plus_weighted=[(0.5, "sand")])
    assert [(t.text, t.weight) for t in q.terms] == [("beach", 1.0), ("sunset", 2.0), ("sand", 0.5),
                                                     ("people", -1.0)]


def test_combine_is_a_normalised_weighted_sum() -> None:
    a, b = np.eye(4, dtype=np.float32)[:2]
    v = combine(np.stack([a, b]), [2.0, -1.0])
    assert np.allclose(v, np.array([2, -1, 0, 0]) / np.sqrt(5))
    with pytest.raises(QueryError, match="cancel"):
        combine(np.stack([a, a]), [1.0, -1.0])


# -- retrieval with the tiny model --------------------------------------------------


def test_minus_red_removes_red_circles(shapes: Shapes, shapes_index: Path) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        plain = [_label(shapes, r.path) for r in index.search("a photo of a circle", k=40)]
        minus = [_label(shapes, r.path) for r in index.search(
            Query.parse("a photo of a circle", minus=["red"]), k=10)]
    assert ("red", "circle") in plain  # without --minus, red circles rank among the circles
    assert ("red", "circle") not in minus
    assert sum(shape == "circle" for _, shape in minus) >= 9, minus


def test_colour_text_plus_shape_image(shapes: Shapes, shapes_index: Path) -> None:
    # An example image of a blue square, and the word "red": red squares.
    probe = next(p for p, row in sorted(shapes.labels.items()) if (row["color"], row["shape"]) == ("blue", "square"))
    with Index.open(shapes_index, device="cpu") as index:
        terms = [Term.of_text("red", 2.0), Term.of_image(probe)]
        composed = [_label(shapes, r.path) for r in index.search(terms, k=10)]
        text_only = [_label(shapes, r.path) for r in index.search("red", k=10)]
        image_only = [_label(shapes, r.path) for r in index.search_image(probe, k=10)]
    assert composed.count(("red", "square")) >= 8, composed
    # Neither term alone finds that: the text gives red things of any shape, the image blue squares.
    assert text_only.count(("red", "square")) < 8
    assert ("red", "square") not in image_only


def test_weights_move_the_balance(shapes: Shapes, shapes_index: Path) -> None:
    probe = next(p for p, row in sorted(shapes.labels.items()) if (row["color"], row["shape"]) == ("blue", "square"))
    with Index.open(shapes_index, device="cpu") as index:
        heavy_image = [_label(shapes, r.path) for r in index.search(
            [Term.of_text("red", 0.2), Term.of_image(probe, 3.0)], k=10)]
    assert heavy_image.count(("blue", "square")) >= 8, heavy_image


def test_search_image_unchanged_and_errors(shapes: Shapes, shapes_index: Path, tmp_path: Path) -> None:
    probe = sorted(shapes.labels)[5]
    with Index.open(shapes_index, device="cpu") as index:
        assert index.search_image(probe, k=1)[0].path == probe
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"not an image")
        with pytest.raises(QueryError, match="cannot use query image"):
            index.search(Query.parse("red", plus=[str(broken)]))
        with pytest.raises(QueryError, match="empty"):
            index.search("  ")


# -- CLI --------------------------------------------------------------------------------


def test_cli_composed_query(shapes: Shapes, shapes_index: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["search", "a photo of a circle", "--minus", "red", "--index", str(shapes_index),
                              "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert len(rows) == 10 and all(_label(shapes, r["path"]) != ("red", "circle") for r in rows)

    probe = next(p for p, row in sorted(shapes.labels.items()) if (row["color"], row["shape"]) == ("blue", "square"))
    for args in (["--plus", "2:red", "--image", probe], ["--plus-weight", "2", "red", "--plus", probe],
                 ["2:red", "--plus", f"image:{probe}"]):
        res = runner.invoke(cli, ["search", *args, "--index", str(shapes_index), "--device", "cpu", "--paths"])
        assert res.exit_code == 0, (args, res.output)
        got = [_label(shapes, p) for p in res.output.splitlines()]
        assert got.count(("red", "square")) >= 8, (args, got)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--plus", "missing-photo.jpg", "red"], "image term file not found: missing-photo.jpg"),
     (["red", "--minus", "2..5:blue"], "bad weight '2..5'"),
     (["--minus", "red"], "give a text QUERY"),
     (["red", "--minus", "red"], "cancel"),
     (["red", "--plus-weight", "-1", "blue"], "weights are positive"),
     (["red", "--image", "missing.png"], "image term file not found")],
)
def test_cli_bad_terms(shapes_index: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["search", *args, "--index", str(shapes_index), "--device", "cpu"])
    assert res.exit_code in (1, 2), res.output
    assert message in res.output


def test_filters_and_cutoffs_with_few_shot_examples(shapes: Shapes, shapes_index: Path) -> None:
    from searchindex import Filters

    probes = [p for p, row in sorted(shapes.labels.items()) if (row["color"], row["shape"]) == ("red", "circle")][:2]
    pattern = "*/shape_99_00[0-4]??.png"  # half of the images
    with Index.open(shapes_index, device="cpu") as index:
        got = index.search("a photo of a circle", k=10, like=probes, filters=Filters(paths=(pattern,)))
        with pytest.raises(QueryError, match="cannot be combined with --like"):
            index.search("a photo of a circle", like=probes, threshold="auto")
    assert len(got) == 10 and all(Path(r.path).name < "shape_99_00500" for r in got)
    assert not {r.path for r in got} & set(probes)  # the examples are left out
