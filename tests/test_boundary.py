"""The library's public boundary: misuse and text that is not UTF-8 raise the library's errors
(one line at the CLI), never a plain Python error or a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from searchindex import Index, NotFoundError, ParameterError, PathTypeError, QueryError

ROOT = Path(__file__).resolve().parent.parent
pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight scenes, one of them under a file name that is not UTF-8."""
    from searchindex.demo.synthetic import iter_scenes, render

    out = tmp_path_factory.mktemp("boundary")
    for i, scene in enumerate(iter_scenes(8, seed=27)):
        render(scene).save(out / f"scene-{i}.png")
    os.rename(out / "scene-7.png", os.fsencode(out) + b"/caf\xe9-latin1.png")
    return out


@pytest.fixture(scope="module")
def index(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    with Index.create(tmp_path_factory.mktemp("idx") / "i", model="tiny-shapes", device="cpu") as idx:
        summary = idx.add_folder(os.fsencode(folder))  # a bytes path is a path, as os takes it
        assert (summary.indexed, summary.failed) == (8, 0)
        yield idx


def test_misused_arguments_raise_the_library_errors(index: Index, folder: Path) -> None:
    with pytest.raises(PathTypeError):
        index.add_folder(123)  # type: ignore[arg-type]
    with pytest.raises(PathTypeError):
        index.add_files([folder / "scene-0.png", None])  # type: ignore[list-item]
    # A single path is one file (it once became 19 failure rows, one per character).
    summary = index.add_files(str(folder / "no-such.png"))
    assert summary.failed == 1 and [f.path for f in summary.failures] == [str(folder / "no-such.png")]
    for bad in (None, 12, b"red", [None]):
        with pytest.raises(QueryError):
            index.search(bad)  # type: ignore[arg-type]
    for k in (1.5, True, "3"):
        with pytest.raises(ParameterError):
            index.search("red", k=k)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        index.search("red", min_score=float("nan"))
    for bad_image in (None, 3):
        with pytest.raises(QueryError):
            index.search_image(bad_image)  # type: ignore[arg-type]
    for bad_like in ([None], [1.5], [True], 2.5):
        with pytest.raises(QueryError):
            index.search("red", like=bad_like)
    assert len(index.search("red", k=np.int64(2))) == 2
    for image_id in (10**20, -1, 2**63, "1", 1.0):
        with pytest.raises(NotFoundError):
            index.image(image_id)  # type: ignore[arg-type]


def test_search_vector_checks_and_normalises_its_vector(index: Index, folder: Path) -> None:
    vec = index.embed("a red circle")
    base = index.search_vector(vec, k=3)
    scaled = index.search_vector(vec * 7.5, k=3)  # once scored 1.28 for an unnormalised vector
    assert [(r.path, round(r.score, 5)) for r in scaled] == [(r.path, round(r.score, 5)) for r in base]
    assert all(r.score <= 1.0 + 1e-6 for r in scaled)
    for bad in (np.full_like(vec, np.nan), np.zeros_like(vec), np.r_[vec[:-1], np.inf], vec[:-1], "x"):
        with pytest.raises(QueryError):
            index.search_vector(bad, k=3)  # NaN once returned [] silently


def _cli(*args: bytes | str) -> subprocess.CompletedProcess[bytes]:
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in args]
    return subprocess.run([os.fsencode(sys.executable), b"-m", b"searchindex.cli", *argv], capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False, timeout=300)


def test_non_utf8_bytes_in_queries_and_labels_are_one_line_errors(index: Index) -> None:
    where = str(index.path)
    for args in ([b"search", b"red \xff circle"], [b"search", b"red", b"--plus", b"\xfe\xff"],
                 [b"search", b"red", b"--minus", b"x\xff"], [b"search", b"red", b"--tag", b"\xff"],
                 [b"tag", b"--labels", b"cat,\xffdog"]):
        out = _cli(*args, "--index", where)
        assert out.returncode in (1, 2), (args, out.stderr)
        assert b"Traceback" not in out.stderr and b"not UTF-8" in out.stderr, (args, out.stderr)
    with pytest.raises(QueryError, match="not UTF-8"):
        index.search("caf\udce9")


def test_blank_camera_filters_mean_no_filter_alike(index: Index) -> None:
    """`--camera ''` meant no filter while `--camera ' '` was an error."""
    where = str(index.path)
    plain = _cli("search", "red", "--index", where, "--paths")
    assert plain.returncode == 0, plain.stderr
    for blank in ("", " ", "\t"):
        out = _cli("search", "red", "--index", where, "--paths", "--camera", blank)
        assert (out.returncode, out.stdout) == (0, plain.stdout), (blank, out.stderr)


def test_export_and_import_a_file_name_that_is_not_utf8(index: Index, folder: Path, tmp_path: Path) -> None:
    """Export raised UnicodeEncodeError and left out.partial behind."""
    odd = os.fsdecode(os.fsencode(folder) + b"/caf\xe9-latin1.png")
    out = tmp_path / "out"
    summary = index.export_embeddings(out)
    assert summary.rows == 8 and not (tmp_path / "out.partial").exists()
    table = pa.parquet.read_table(out / "part-00000.parquet")
    shown = table.column("image_path").to_pylist()
    assert str(folder / "caf\ufffd-latin1.png") in shown  # readable text for other tools
    with Index.create(tmp_path / "b", model="tiny-shapes", device="cpu") as b:
        back = b.import_embeddings(out)
        assert (back.imported, back.failed) == (8, 0)
        assert odd in {r.path for r in b.search("a shape", k=8)}  # the exact bytes came back
    shutil.rmtree(out)
    cli = _cli("export", str(out), "--index", str(index.path))
    assert cli.returncode == 0 and b"Exported 8 embeddings" in cli.stdout, cli.stderr


def test_an_engine_s_unusable_vectors_are_failures_not_rows(small_folder: Path, tmp_path: Path) -> None:
    """An engine object's vectors are input like an import's: NaN, infinite, zero or wrong-size
    ones are recorded as failures (with the real worker pool underneath, spoiling three)."""
    from dataclasses import replace

    from searchindex.ingest.produce import LocalProducer, Produced

    spoil = {0: np.nan, 1: np.inf, 2: 0.0}

    class Spoiling:
        def __init__(self, index: Index) -> None:
            self.inner = LocalProducer(lambda: index.models.encoder, workers=0)

        def produce(self, batches, known):  # noqa: ANN001, ANN202
            n = 0
            for results in self.inner.produce(batches, known):
                out = []
                for r in results:
                    if isinstance(r, Produced) and r.vector is not None and n in spoil:
                        r = replace(r, vector=np.full_like(r.vector, spoil[n]))
                    elif isinstance(r, Produced) and r.vector is not None and n == 3:
                        r = replace(r, vector=r.vector[:-1])
                    n += isinstance(r, Produced)
                    out.append(r)
                yield out

        def close(self) -> None:
            self.inner.close()

    with Index.create(tmp_path / "i", model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(small_folder, engine=Spoiling(index))
        reasons = sorted(f.reason for f in index.failures())
        assert (summary.indexed, summary.failed, index.count()) == (36, 4, 36)
        assert reasons == [f"encoder error: a {index.dim - 1}-d vector for a {index.dim}-d index",
                           "encoder error: the vector holds NaN or infinite values",
                           "encoder error: the vector holds NaN or infinite values",
                           "encoder error: the vector is all zeros"]
        assert all(r.score <= 1.0 + 1e-6 for r in index.search("a red circle", k=40))
