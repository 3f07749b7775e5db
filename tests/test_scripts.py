"""The dataset and training scripts do what scripts/README.md says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from searchindex.demo.synthetic import BACKGROUNDS, COLORS, SHAPES, SIZES

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True)


def test_make_shapes_writes_images_and_labels(tmp_path: Path) -> None:
    _run("scripts/make_shapes.py", str(tmp_path), "--count", "60", "--seed", "5", "--size", "96",
         "--format", "jpeg")
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 60
    for row in rows:
        assert set(row) == {"file", "shape", "color", "size", "background", "caption"}
        assert row["shape"] in SHAPES and row["color"] in COLORS
        assert row["size"] in SIZES and row["background"] in BACKGROUNDS
        assert (tmp_path / row["file"]).is_file() and row["file"].endswith(".jpg")
    # Seeded: the same seed gives the same labels.
    again = tmp_path / "again"
    _run("scripts/make_shapes.py", str(again), "--count", "60", "--seed", "5", "--size", "96", "--format", "jpeg")
    assert (again / "labels.jsonl").read_text() == (tmp_path / "labels.jsonl").read_text()


def test_training_is_seeded_and_reproducible(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        shutil.copy(ROOT / "searchindex/models/tiny-shapes/open_clip_config.json", out)
        res = _run("scripts/train_tiny_clip.py", "--out", str(out), "--steps", "3", "--pool", "200",
                   "--batch-size", "32", "--warmup", "1")
        assert "final held-out P@10" in res.stdout
        outs.append(load_file(str(out / "open_clip_model.safetensors")))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


@pytest.mark.slow
def test_eval_zeroshot_reports_both_template_sets() -> None:
    res = _run("scripts/eval_zeroshot.py", "--count", "300", "--json")
    out = json.loads(res.stdout)
    rows = {(r["attribute"], r["templates"]): r for r in out["classification"]}
    assert set(rows) == {(a, t) for a in ("shape", "color") for t in ("single", "ensemble")}
    assert all(r["accuracy"] >= 0.95 for r in rows.values())
    assert out["tags"]["macro_f1"] >= 0.9


@pytest.mark.slow
def test_eval_fewshot_meets_its_goal(tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    res = _run("scripts/eval_fewshot.py", "--json", "--png", str(png))
    out = json.loads(res.stdout)
    table, shots = out["precision_at_10"], out["shots"]
    four = shots.index(4)
    assert table["reranker"][four] >= table["reranker"][0] + 0.25
    assert table["reranker"][four] > max(table["rocchio"][four], table["probe"][four])
    assert png.stat().st_size > 1000


@pytest.mark.slow
def test_eval_hybrid_meets_its_goals() -> None:
    res = _run("scripts/eval_hybrid.py", "--count", "400", "--json")
    out = json.loads(res.stdout)
    with_kw, without = out["with_keywords"], out["without_keywords"]
    default = "hybrid " + out["default_fusion"]
    assert with_kw["recall_at_10"][default] >= 0.9 > with_kw["recall_at_10"]["vector"]
    assert with_kw["precision_at_10"][default] >= with_kw["precision_at_10"]["vector"] - 0.05
    assert without["precision_at_10"][default] == without["precision_at_10"]["vector"]


def test_bench_latency_reports_each_stage(tmp_path: Path) -> None:
    res = _run("scripts/bench_latency.py", "--n", "3000", "--dim", "64", "--factory", "IVF16,SQ8", "--nprobe", "2",
               "--model", "tiny-shapes", "--queries", "12", "--backends", "onnx,torch",
               "--index", str(tmp_path / "lat.idx"))
    assert "3,000 rows" in res.stdout
    for backend in ("onnx", "torch"):
        for label in ("new queries (12)", "cached queries (12)"):
            line = next(x for x in res.stdout.splitlines() if x.startswith(f"[{backend}] {label}"))
            assert all(f"{part} " in line for part in ("total", "encode", "search", "join"))


@pytest.mark.slow
def test_bench_cli_times_each_cold_search() -> None:
    res = _run("scripts/bench_cli.py", "--count", "60", "--runs", "1")
    assert "heavy modules imported by --help: []" in res.stdout
    assert "cold search imports: ['faiss', 'numpy', 'onnxruntime']" in res.stdout
    for label in ("first-time query, onnx", "repeated query (cache)", "first-time query, full model"):
        assert f"search, {label}" in res.stdout


def test_docs_tables_are_rendered_from_their_records(tmp_path: Path) -> None:
    """Every measured table in docs/ is what its record renders to; an edited figure is caught."""
    res = subprocess.run([sys.executable, "scripts/docs_tables.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs" / "records", docs / "records")
    page = (ROOT / "docs" / "peers.md").read_text(encoding="utf-8")
    assert "<!-- table: peers-core-install -->" in page
    (docs / "peers.md").write_text(page.replace("**2.42× as fast**", "**3.00× as fast**"), encoding="utf-8")
    stale = subprocess.run([sys.executable, "scripts/docs_tables.py", "--check", "--docs", str(docs)], cwd=ROOT,
                           capture_output=True, text=True)
    assert stale.returncode == 1 and "out of date: peers.md" in stale.stdout
    fixed = subprocess.run([sys.executable, "scripts/docs_tables.py", "--docs", str(docs)], cwd=ROOT,
                           capture_output=True, text=True)
    assert fixed.returncode == 0 and (docs / "peers.md").read_text(encoding="utf-8") == page
    (docs / "records" / "peers-core-install.json").unlink()
    missing = subprocess.run([sys.executable, "scripts/docs_tables.py", "--check", "--docs", str(docs)], cwd=ROOT,
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "names no record" in missing.stderr
