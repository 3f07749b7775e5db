"""Shared fixtures: seeded synthetic images and an index built with the shipped tiny model."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from searchindex import Index
from searchindex.demo.synthetic import write_dataset

# Tests never touch the network: model hubs answer "not in the local cache" at once.
os.environ["HF_HUB_OFFLINE"] = "1"

# Not the training seed (1000) nor the training script's held-out seed (7).
TEST_SEED = 99


@dataclass(frozen=True)
class Shapes:
    folder: Path
    labels: dict[str, dict[str, str]]  # absolute path -> label row


def _make(folder: Path, count: int, seed: int) -> Shapes:
    write_dataset(folder, count=count, seed=seed, size=64)
    labels = {}
    for line in (folder / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        labels[str((folder / row["file"]).absolute())] = row
    return Shapes(folder, labels)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exported ONNX towers go to a session folder, never the user's cache (subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("model-cache")
    old = os.environ.get("SEARCHINDEX_CACHE")
    os.environ["SEARCHINDEX_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SEARCHINDEX_CACHE", None)
    else:
        os.environ["SEARCHINDEX_CACHE"] = old


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Shapes:
    """1,000 held-out scenes: about 25 per colour+shape pair."""
    return _make(tmp_path_factory.mktemp("shapes"), 1000, TEST_SEED)


@pytest.fixture(scope="session")
def shapes_index(shapes: Shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of ``shapes`` built once per session (tests must not modify it)."""
    path = tmp_path_factory.mktemp("idx") / "shapes.idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(shapes.folder)
    assert summary.indexed == 1000 and summary.failed == 0
    return path


@pytest.fixture()
def small_folder(shapes: Shapes, tmp_path: Path) -> Path:
    """A private, writable copy of 40 of the scenes."""
    out = tmp_path / "photos"
    out.mkdir()
    for src in sorted(shapes.folder.glob("*.png"))[:40]:
        shutil.copy2(src, out / src.name)
    return out


@pytest.fixture()
def small_index(small_folder: Path, tmp_path: Path) -> Path:
    """A fresh tiny-shapes index of :func:`small_folder`, closed; its path."""
    path = tmp_path / "small.idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        index.add_folder(small_folder)
    return path
