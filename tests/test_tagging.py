"""Zero-shot tags with the shipped tiny model: stored, filtered, incremental, deleted with their images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index, QueryError
from searchindex.cli import cli
from searchindex.enrich.tagging import calibrate_threshold, load_templates, parse_labels

from .conftest import Shapes

LABELS = ["circle", "red", "large", "sand"]
ATTR = {"circle": "shape", "red": "color", "large": "size", "sand": "background"}


@pytest.fixture(scope="module")
def tagged_index(shapes_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session index, tagged with LABELS."""
    path = tmp_path_factory.mktemp("tagged") / "idx"
    shutil.copytree(shapes_index, path)
    with Index.open(path, device="cpu") as index:
        reports = index.tag(LABELS)
    assert [r.label for r in reports] == LABELS
    return path


def test_tags_match_the_ground_truth(tagged_index: Path, shapes: Shapes) -> None:
    with Index.open(tagged_index) as index:
        counts = dict(index.tags())
        assert set(counts) == set(LABELS)
        by_path = {r.path: r for r in index.catalog.read.records(range(1, 5000)).values()}
        tags = index.catalog.read.tags(r.id for r in by_path.values())
    for label in LABELS:
        truth = {p for p, row in shapes.labels.items() if row[ATTR[label]] == label}
        got = {p for p, r in by_path.items() if label in {t for t, _ in tags.get(r.id, [])}}
        assert counts[label] == len(got)
        precision = len(got & truth) / len(got)
        recall = len(got & truth) / len(truth)
        assert precision >= 0.95 and recall >= 0.9, (label, precision, recall)


def test_search_filters_by_tag_and_shows_tags(tagged_index: Path, shapes: Shapes) -> None:
    with Index.open(tagged_index, device="cpu") as index:
        results = index.search("a photo of a square", k=10, tag="red")
        assert len(results) == 10
        assert all(shapes.labels[r.path]["color"] == "red" for r in results)
        assert all("red" in r.tags for r in results)
        # Without the filter the same query returns squares of every colour.
        plain = index.search("a photo of a square", k=10)
        assert {shapes.labels[r.path]["color"] for r in plain} != {"red"}
        with pytest.raises(QueryError, match="unknown tag 'dog'.*circle, large, red, sand"):
            index.search("a photo of a square", tag="dog")


def test_new_images_are_tagged_and_deleted_images_lose_their_tags(shapes: Shapes, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    files = sorted(shapes.folder.glob("*.png"))
    for src in files[:60]:
        shutil.copy2(src, folder / src.name)
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)
        index.tag(["circle"])
        before = dict(index.tags())["circle"]
        new_circles = [f for f in files[60:120] if shapes.labels[str(f.absolute())]["shape"] == "circle"]
        assert new_circles
        for src in files[60:120]:
            shutil.copy2(src, folder / src.name)
        index.add_folder(folder)  # tags the new images with the stored classifier and threshold
        after = dict(index.tags())["circle"]
        assert after >= before + len(new_circles) - 1
        tagged = index.search("a photo of a circle", k=200, tag="circle")
        tagged_names = {Path(r.path).name for r in tagged}
        assert sum(f.name in tagged_names for f in new_circles) >= len(new_circles) - 1

        victim = next(r for r in tagged if Path(r.path).name in {f.name for f in new_circles})
        (folder / Path(victim.path).name).unlink()
        index.add_folder(folder)
        assert dict(index.tags())["circle"] == after - 1
        assert victim.image_id not in index.catalog.read.tags([victim.image_id])
        assert victim.image_id not in set(index.catalog.read.ids_tagged("circle").tolist())

        assert index.untag(["circle"]) == 1
        assert index.tags() == []


def test_calibration_rule() -> None:
    rng = np.random.default_rng(0)
    # Two clear groups, the upper one below the generic caption: the split is used.
    margins = np.r_[rng.normal(-0.4, 0.1, 900), rng.normal(-0.03, 0.01, 100)]
    threshold, split = calibrate_threshold(margins)
    assert split and -0.2 < threshold < -0.03
    # One group (every image shows the label, or none does): beat the generic caption.
    assert calibrate_threshold(rng.normal(0.1, 0.02, 500)) == (0.0, False)
    assert calibrate_threshold(np.r_[-0.5, 0.2]) == (0.0, False)  # too few images to calibrate


def test_labels_and_templates_parsing(tmp_path: Path) -> None:
    assert parse_labels("beach, dog,,snow\ndog\n# comment") == ["beach", "dog", "snow"]
    with pytest.raises(QueryError):
        parse_labels(" , ")
    assert load_templates("single") == ("a photo of a {}.",)
    assert len(load_templates("default")) == 10
    f = tmp_path / "t.txt"
    f.write_text("a photo of a {}.\n\nart of a {}\n")
    assert load_templates(f) == ("a photo of a {}.", "art of a {}")
    f.write_text("a photo of a thing\n")
    with pytest.raises(QueryError, match="exactly once"):
        load_templates(f)
    with pytest.raises(QueryError, match="cannot read templates file"):
        load_templates(tmp_path / "missing.txt")


def test_cli_tag_tags_and_search(small_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    idx = str(tmp_path / "idx")
    assert runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--model", "tiny-shapes",
                               "--device", "cpu"]).exit_code == 0
    res = runner.invoke(cli, ["tags", "--index", idx])
    assert res.exit_code == 0 and "No labels yet" in res.output

    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("red\nblue\n")
    res = runner.invoke(cli, ["tag", "--index", idx, "--labels", "circle", "--labels-file", str(labels_file),
                              "--templates", "single", "--json"])
    assert res.exit_code == 0, res.output
    reports = [json.loads(line) for line in res.output.splitlines()]
    assert [r["label"] for r in reports] == ["circle", "red", "blue"]

    res = runner.invoke(cli, ["tags", "--index", idx, "--json"])
    counts = {row["label"]: row["images"] for row in map(json.loads, res.output.splitlines())}
    assert set(counts) == {"circle", "red", "blue"} and counts["circle"] > 0

    res = runner.invoke(cli, ["search", "a photo of a circle", "--index", idx, "-k", "3", "--tag", "circle"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["rank", "score", "date", "path", "[tags]"]
    assert all("circle" in line for line in lines[1:]) and len(lines) == 4

    res = runner.invoke(cli, ["search", "a photo of a circle", "--index", idx, "--tag", "dog"])
    assert res.exit_code == 2 and "unknown tag 'dog'" in res.output

    res = runner.invoke(cli, ["tag", "--index", idx, "--labels", "x", "--templates", str(tmp_path / "nope.txt")])
    assert res.exit_code == 2 and "cannot read templates file" in res.output

    res = runner.invoke(cli, ["tag", "--index", idx])  # re-tags the stored labels
    assert res.exit_code == 0 and res.output.count("images (threshold") == 3

    res = runner.invoke(cli, ["tag", "--index", idx, "--remove", "blue"])
    assert res.exit_code == 0
    res = runner.invoke(cli, ["tags", "--index", idx])
    assert "blue" not in res.output and "circle" in res.output
