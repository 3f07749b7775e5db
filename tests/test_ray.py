"""Indexing on a local Ray instance (2 CPUs): same vectors, failures and results as the local path;
an encoder actor killed mid-run is survived; another model on the workers is refused before any work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index, IndexSummary, ModelMismatchError
from searchindex.cli import cli
from searchindex.demo.synthetic import write_dataset
from searchindex.errors import EngineError
from searchindex.ingest.scan import FileEntry
from searchindex.models.spec import resolve_model
from searchindex.results import FailureRecord

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from searchindex.ingest.ray_engine import RayEngine  # noqa: E402

N_IMAGES = 200
QUERIES = ("a red circle", "a blue square", "a green triangle", "a yellow star", "a purple heart")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=400 * 2**20,
             log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-photos")
    write_dataset(folder, count=N_IMAGES, seed=21, size=64)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a truncated PNG
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def vectors_by_path(index: Index) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for ids, vecs in index.catalog.read.embeddings_since(0, index.dim):
        facts = index.catalog.read.records(ids.tolist())
        out.update({facts[int(i)].path: v for i, v in zip(ids, vecs, strict=True)})
    return out


@dataclass(frozen=True)
class Local:
    summary: IndexSummary
    vectors: dict[str, np.ndarray]
    hits: list[list[str]]
    failures: list[tuple[str, str]]


@pytest.fixture(scope="module")
def local_run(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Local:
    """The local path's results on ``photos``, the reference of every Ray run here."""
    with Index.create(tmp_path_factory.mktemp("local") / "local.idx", model="tiny-shapes", device="cpu") as local:
        summary = local.add_folder(photos, batch_size=32)
        return Local(summary, vectors_by_path(local), [[r.path for r in local.search(q, k=10)] for q in QUERIES],
                     [(f.path, f.reason) for f in local.failures()])


def test_ray_path_equals_local_path(photos: Path, tmp_path: Path, local_ray: None, local_run: Local) -> None:
    expected, want, want_hits, want_failures = (local_run.summary, local_run.vectors, local_run.hits,
                                                local_run.failures)
    progress: list = []
    with Index.create(tmp_path / "ray.idx", model="tiny-shapes", device="cpu") as remote:
        # Batches of 40: not a multiple of the encoder's calls of 16 images.
        got_summary = remote.add_folder(photos, batch_size=40, progress=progress.append,
                                        engine=RayEngine(encoder_workers=1))
        got = vectors_by_path(remote)
        got_hits = [[r.path for r in remote.search(q, k=10)] for q in QUERIES]
        got_failures = [(f.path, f.reason) for f in remote.failures()]
    assert (got_summary.indexed, got_summary.failed, got_summary.new) == (expected.indexed, expected.failed,
                                                                          expected.new) == (N_IMAGES, 2, N_IMAGES)
    assert got.keys() == want.keys()
    cosines = np.array([float(got[p] @ want[p]) for p in want])
    assert cosines.min() >= 0.999, cosines.min()
    assert got_hits == want_hits
    # Decode failures on the workers are recorded with the local path's reasons.
    assert got_failures == want_failures and len(got_failures) == 2
    assert any("empty file" in r for _, r in got_failures)
    # Progress as locally: after every commit, ending with every file done.
    assert progress[-1].done == progress[-1].total == N_IMAGES + 2 and len(progress) >= N_IMAGES // 32
    # A re-run through Ray has nothing to do (committed files are unchanged).
    with Index.open(tmp_path / "ray.idx") as remote:
        again = remote.add_folder(photos, engine=RayEngine())
    assert (again.indexed, again.unchanged) == (0, N_IMAGES + 2)


def test_batches_come_back_whole_and_in_order(photos: Path, local_ray: None, local_run: Local) -> None:
    """Uneven batches, an empty one among them, through Ray Data (which does not keep their order):
    every batch is handed over once, in order, with its files in order."""
    files = sorted(p for p in photos.iterdir() if p.suffix == ".png")[:70]
    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    batches = [entries[:20], [], entries[20:53], entries[53:54], entries[54:]]
    engine = RayEngine()
    engine.bind(resolve_model("tiny-shapes"), 64, "cpu", "fp32")
    back = list(engine.produce(batches, frozenset()))
    assert [[getattr(r, "entry", r).path for r in b] for b in back] == [[e.path for e in b] for b in batches]
    failed = [r.path for b in back for r in b if isinstance(r, FailureRecord)]
    assert failed == [str(photos / "broken.png")]  # the truncated PNG
    for produced in (r for b in back for r in b if not isinstance(r, FailureRecord)):
        want = local_run.vectors[produced.entry.path]
        assert produced.vector is not None and float(produced.vector @ want) >= 0.999


def test_workers_of_a_local_instance_are_told_where_the_package_is_only_when_they_would_not_find_it(
        tmp_path: Path) -> None:
    """This checkout is installed (editable), so a fresh interpreter finds it: no runtime environment,
    which would delay every worker's start.  A copy put on ``sys.path`` at run time is not found by a
    fresh interpreter, unless it sits in the working directory, which Ray adds to the workers' path."""
    probe = "from searchindex.ingest.ray_engine import _workers_find_this_package as f; print(f())"
    here = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert here.stdout.strip() == "True"
    package = Path(__file__).resolve().parent.parent / "searchindex"
    shutil.copytree(package, tmp_path / "copy" / "searchindex", ignore=shutil.ignore_patterns("__pycache__"))
    at_run_time = f"import sys; sys.path.insert(0, {str(tmp_path / 'copy')!r}); {probe}"
    elsewhere = subprocess.run([sys.executable, "-c", at_run_time], capture_output=True, text=True, check=True,
                               cwd=tmp_path)
    assert elsewhere.stdout.strip() == "False"
    in_cwd = subprocess.run([sys.executable, "-c", at_run_time], capture_output=True, text=True, check=True,
                            cwd=tmp_path / "copy")
    assert in_cwd.stdout.strip() == "True"


def _descendants_named(word: str) -> list[int]:
    """Processes below this one whose command line holds ``word`` (Ray names a worker after its actor)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, found = {os.getpid()}, True
    while found:
        found = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                found = True
    out = []
    for pid in mine - {os.getpid()}:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if word.encode() in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the actor's process through /proc")
def test_a_killed_encoder_actor_is_restarted_and_the_run_completes(photos: Path, tmp_path: Path,
                                                                   local_ray: None, local_run: Local) -> None:
    want = local_run.vectors
    killed: list[int] = []
    restarted: set[int] = set()

    def kill_the_encoder(p: object) -> None:
        if len(progress) == 2:  # two batches committed, the rest in flight or to come
            killed.extend(_descendants_named("_EncodeActor"))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        elif killed:
            restarted.update(set(_descendants_named("_EncodeActor")) - set(killed))

    progress: list = []
    with Index.create(tmp_path / "ray.idx", model="tiny-shapes", device="cpu") as remote:
        summary = remote.add_folder(photos, batch_size=8, engine=RayEngine(),
                                    progress=lambda p: (progress.append(p), kill_the_encoder(p)))
        got = vectors_by_path(remote)
        count = remote.count()
    assert len(killed) == 1, killed  # the one encoder actor, killed after the second commit
    assert restarted, "no encoder actor came back while the run went on"
    assert (summary.indexed, summary.failed, count) == (N_IMAGES, 2, N_IMAGES)
    assert progress[-1].done == N_IMAGES + 2 and not summary.interrupted
    assert got.keys() == want.keys()
    assert min(float(got[p] @ want[p]) for p in want) >= 0.999


@pytest.mark.parametrize(("workers", "cpus"), [(1, 2.0), (2, 1.0)])
def test_encoder_workers_that_leave_no_cpu_to_decode_are_refused(photos: Path, tmp_path: Path, local_ray: None,
                                                                  workers: int, cpus: float) -> None:
    """On the 2-CPU instance the decode tasks would never be scheduled: a clear error, not a run that waits."""
    with Index.create(tmp_path / "ray.idx", model="tiny-shapes", device="cpu") as index:
        with pytest.raises(EngineError, match="leave 0 of the cluster's 2 CPUs"):
            index.add_folder(photos, engine=RayEngine(encoder_workers=workers, cpus_per_worker=cpus))
        assert index.count() == 0 and not index.failures()


def test_other_weights_on_the_workers_are_refused_before_any_work(photos: Path, tmp_path: Path,
                                                                   local_ray: None) -> None:
    from safetensors.numpy import load_file, save_file

    from searchindex.models.spec import builtin_models

    model_dir = tmp_path / "model"
    shutil.copytree(builtin_models()["tiny-shapes"], model_dir)
    with Index.create(tmp_path / "m.idx", model=f"local-dir:{model_dir}", device="cpu") as index:
        weights = next(model_dir.glob("*.safetensors"))
        tensors = load_file(weights)
        name = sorted(tensors)[0]
        tensors[name] = tensors[name] + 0.5  # the checkpoint changed where the workers load it
        save_file(tensors, weights)
        with pytest.raises(ModelMismatchError, match="Ray workers load"):
            index.add_folder(photos, engine=RayEngine())
        assert (index.count(), len(index.failures())) == (0, 0)


def test_cli_engine_options(photos: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["index", str(photos), "--index", str(tmp_path / "x.idx"), "--encoder-workers", "2"])
    assert r.exit_code == 2 and "--encoder-workers need --engine ray" in r.output
    with Index.create(tmp_path / "y.idx", model="tiny-shapes", device="cpu"):
        pass
    r = runner.invoke(cli, ["index", str(photos), "--index", str(tmp_path / "y.idx"), "--engine", "ray",
                            "--model", "tiny-shapes", "--pretrained", "none"])
    assert r.exit_code == 1 and "this index was built with tiny-shapes / builtin" in r.output
    with Index.open(tmp_path / "y.idx") as index:
        assert index.count() == 0


def test_a_cluster_that_cannot_be_reached_is_an_engine_error(photos: Path, tmp_path: Path) -> None:
    """Not "cannot write the index" (Ray's ConnectionError is an OSError): what failed, and where."""
    from ray.client_builder import get_ray_client_dependency_error

    if get_ray_client_dependency_error() is None:
        pytest.skip("ray[client] is installed: a closed port would only fail after Ray's connection timeout")
    # A fresh process: in this one, Ray may already be initialised by another test, and is then used.
    r = subprocess.run([sys.executable, "-m", "searchindex.cli", "index", str(photos), "--index",
                        str(tmp_path / "z.idx"), "--engine", "ray", "--ray-address", "ray://127.0.0.1:1",
                        "--model", "tiny-shapes"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 1, r.stderr
    assert "cannot connect to Ray at ray://127.0.0.1:1" in r.stderr and "cannot write" not in r.stderr
    with Index.open(tmp_path / "z.idx") as index:  # created before the engine started; nothing else
        assert index.count() == 0 and not index.failures()
