"""A driver of a Ray indexing run killed with SIGKILL mid-run leaves a consistent index that the
same command resumes without redoing committed batches (real processes, local Ray, 2 CPUs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from searchindex import Index
from searchindex.demo.synthetic import write_dataset

from .test_crash import catalog_rows
from .test_ray import vectors_by_path

pytest.importorskip("ray.data")

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES = 240
BATCH = 16

DRIVER = """
import sys
from searchindex import Index
from searchindex.ingest.ray_engine import RayEngine
with Index.create(sys.argv[2], model="tiny-shapes", device="cpu") as index:
    index.add_folder(sys.argv[1], batch_size={batch},
                     engine=RayEngine(num_cpus=2, object_store_memory=400 * 2**20))
"""


@pytest.mark.slow
def test_sigkilled_driver_resumes_without_redoing_committed_batches(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_dataset(photos, count=N_IMAGES, seed=33, size=64)
    index = tmp_path / "r.idx"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Its own session, so that whatever Ray processes outlive the driver can be cleaned up after.
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(batch=BATCH), str(photos), str(index)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while catalog_rows(index) < 3 * BATCH:
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:] if driver.stderr else ""
            assert time.monotonic() < deadline, "no batch committed in time"
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)  # the driver only: its Ray workers lose their driver
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # then what is left of the Ray instance it started
        except ProcessLookupError:
            pass
    committed = catalog_rows(index)
    assert 3 * BATCH <= committed < N_IMAGES
    # The same work, run again through the CLI: only what was not committed is encoded.
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(photos), "--index", str(index), "--engine", "ray",
           "--ray-cpus", "2", "--batch-size", str(BATCH), "--json"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["indexed"] == N_IMAGES - committed
    assert summary["unchanged"] == committed
    assert summary["failed"] == 0
    # And the result equals a clean local run.
    with Index.create(tmp_path / "local.idx", model="tiny-shapes", device="cpu") as local:
        local.add_folder(photos)
        want = vectors_by_path(local)
    with Index.open(index) as resumed:
        assert resumed.count() == N_IMAGES
        got = vectors_by_path(resumed)
        np.testing.assert_array_equal(resumed.vectors.current().ids(), np.sort(np.array(
            [i for i, *_ in resumed.catalog.read.image_states().values()])))
    assert got.keys() == want.keys()
    assert min(float(got[p] @ want[p]) for p in want) >= 0.999
