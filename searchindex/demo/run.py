"""The offline demo: synthetic photos, the shipped tiny model, three queries."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..index.facade import Index
from ..ingest.indexer import ProgressCallback
from ..results import IndexSummary, SearchResult
from .synthetic import write_dataset

__all__ = ["DEMO_MODEL", "DEMO_QUERIES", "DemoQuery", "DemoReport", "run_demo"]

DEMO_MODEL = "tiny-shapes"
DEMO_SEED = 4242  # not a training seed: the demo shows held-out images
DEMO_QUERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("a photo of a red circle", {"color": "red", "shape": "circle"}),
    ("a blue star", {"color": "blue", "shape": "star"}),
    ("a large yellow square", {"color": "yellow", "shape": "square", "size": "large"}),
)


@dataclass(frozen=True)
class DemoQuery:
    text: str
    results: list[SearchResult]
    correct: int  # results whose labels match what the query asks for


@dataclass(frozen=True)
class DemoReport:
    index_path: Path
    images_dir: Path
    summary: IndexSummary
    queries: list[DemoQuery]


def run_demo(
    index_path: str | os.PathLike[str],
    *,
    count: int = 300,
    k: int = 5,
    progress: ProgressCallback | None = None,
) -> DemoReport:
    """Generate ``count`` images under ``index_path/images``, index them, run the demo queries.

    Re-running reuses the images and the index (nothing is re-encoded).
    """
    folder = Path(index_path).expanduser()
    images = folder / "images"
    labels_file = images / "labels.jsonl"
    # The index first: it needs a folder of its own, so a folder holding anything else is refused here.
    index = Index.open(folder) if Index.exists(folder) else Index.create(folder, model=DEMO_MODEL)
    if not labels_file.is_file() or sum(1 for _ in open(labels_file)) != count:
        if labels_file.is_file():  # the demo's own pictures, for a different --count: start afresh
            shutil.rmtree(images)
        write_dataset(images, count=count, seed=DEMO_SEED, size=64)
    labels = {}
    with open(labels_file, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            labels[str((images / row["file"]).resolve())] = row
    with index:
        index.check_model(DEMO_MODEL, None)
        summary = index.add_folder(images, progress=progress)
        queries = []
        for text, want in DEMO_QUERIES:
            results = index.search(text, k=k)
            correct = sum(
                all(labels.get(str(Path(r.path).resolve()), {}).get(key) == v for key, v in want.items())
                for r in results
            )
            queries.append(DemoQuery(text, results, correct))
    return DemoReport(folder, images, summary, queries)
