"""The fast indexing path: worker-process decoding, torch-free preprocessing, precisions, Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchindex import Index, ModelError
from searchindex.ingest import produce
from searchindex.models.backends import load_encoder
from searchindex.models.encoders import resolve_precision
from searchindex.models.pixels import to_pixels
from searchindex.models.spec import resolve_model
from searchindex.store.catalog.sqlite import CATALOG_FILE

from .conftest import Shapes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny():  # noqa: ANN201
    return load_encoder(resolve_model("tiny-shapes"), "cpu", "fp32")


def test_worker_pixels_equal_open_clip_preprocessing(tiny) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    spec = tiny.pixel_spec
    assert spec is not None
    for w, h in [(640, 480), (480, 640), (64, 64), (1, 1), (4000, 120), (97, 203), (63, 65)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        reference = tiny.preprocess(img)
        ours = spec.normalise([to_pixels(img, spec)])[0]
        assert ours.shape == reference.shape
        assert isinstance(ours, np.ndarray) and ours.dtype == np.float32  # numpy: the int8 path has no torch
        assert float(np.abs(ours - reference.numpy()).max()) < 1e-6, (w, h)


def _embeddings(idx: Path) -> dict[str, bytes]:
    db = sqlite3.connect(idx / CATALOG_FILE)
    try:
        return dict(db.execute("SELECT path, embedding FROM images"))
    finally:
        db.close()


def test_process_and_thread_decoding_store_the_same_vectors(shapes: Shapes, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted(shapes.folder.glob("*.png"))[:60]:
        shutil.copy2(src, folder / src.name)
    with Index.create(tmp_path / "threads", model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder, workers=0, batch_size=16)
    monkeypatch.setattr(produce, "PROCESS_MIN_FILES", 1)  # use worker processes even for 60 files
    with Index.create(tmp_path / "procs", model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(folder, workers=2, batch_size=16)
    assert summary.indexed == 60
    threads, procs = _embeddings(tmp_path / "threads"), _embeddings(tmp_path / "procs")
    assert threads.keys() == procs.keys() and len(threads) == 60
    for path, blob in threads.items():
        a, b = np.frombuffer(blob, np.float32), np.frombuffer(procs[path], np.float32)
        assert np.allclose(a, b, atol=1e-5), path


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_keep_the_embeddings(precision: str, shapes: Shapes, tiny) -> None:  # noqa: ANN001
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:64]]
    fast = load_encoder(resolve_model("tiny-shapes"), "cpu", precision)
    assert fast.precision == precision
    cos = (fast.encode_images(images) * tiny.encode_images(images)).sum(axis=1)
    assert cos.min() > 0.99, cos.min()


def test_precision_choices() -> None:
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16", "int8")
    with pytest.raises(ModelError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ModelError, match="CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")


def test_ctrl_c_stops_after_a_committed_batch_and_resumes(shapes: Shapes, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted(shapes.folder.glob("*.png"))[:300]:  # enough for worker processes (PROCESS_MIN_FILES)
        shutil.copy2(src, folder / src.name)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(idx),
           "--model", "tiny-shapes", "--device", "cpu", "--batch-size", "4", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (idx / CATALOG_FILE).exists():
            try:
                db = sqlite3.connect(f"file:{idx / CATALOG_FILE}?mode=ro", uri=True)
                rows = db.execute("SELECT count(*) FROM images").fetchone()[0]
                db.close()
            except sqlite3.Error:
                rows = 0
            if rows >= 8:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "indexing finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Run the same command again to resume" in err and "Traceback" not in err
    with Index.open(idx) as index:
        done = index.count()
    assert 8 <= done < 300 and done % 4 == 0  # whole batches only
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr
    with Index.open(idx) as index:
        assert index.count() == 300
    assert f"{300 - done} indexed, {done} unchanged" in res.stdout


_ORT_GARBAGE_THEN_FORK = """
import gc
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from searchindex.ingest.workerpool import worker_pool

def session():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

class Holder:
    pass

gc.disable()  # keep the garbage uncollected until the fork, as a busy process may
for _ in range(5):
    h = Holder()
    h.session = session()
    h.session.run(None, {"x": np.ones((2, 4), np.float32)})
    h.me = h  # a reference cycle: garbage once dropped
    del h

def collect(i):
    import gc
    gc.collect()  # what any allocation in a decode worker may trigger
    return i

pool = worker_pool(2)
print(sorted(f.result(timeout=60) for f in [pool.submit(collect, i) for i in range(4)]))
pool.shutdown()
"""


def test_forked_workers_never_finalise_the_parents_onnx_sessions(tmp_path: Path) -> None:
    # The full suite hung here once int8 ran under ONNX Runtime: a forked decode worker's garbage
    # collector finalised a session inherited from the parent and waited for its thread pool forever.
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    script = tmp_path / "fork_after_ort.py"
    script.write_text(_ORT_GARBAGE_THEN_FORK)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[0, 1, 2, 3]"
