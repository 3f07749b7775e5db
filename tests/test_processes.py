"""The library in any host program, and the workers' lifetime: real subprocesses, real signals (issue 13,
items 17-19).  Slow: each test starts Python processes that load the tiny model."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Shapes

ROOT = Path(__file__).resolve().parent.parent
N = 300  # above PROCESS_MIN_FILES (256): decoding runs in worker processes

pytestmark = pytest.mark.slow


@pytest.fixture()
def many(shapes: Shapes, tmp_path: Path) -> Path:
    out = tmp_path / "photos"
    out.mkdir()
    for src in sorted(shapes.folder.glob("*.png"))[:N]:
        shutil.copy2(src, out / src.name)
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


SCRIPT = """\
from searchindex import Index
summary = Index.create({index!r}, model="tiny-shapes", device="cpu").add_folder({folder!r}, workers=2)
print("indexed", summary.indexed, "failed", summary.failed)
"""


def test_an_unguarded_script_uses_worker_processes(many: Path, tmp_path: Path) -> None:
    script = tmp_path / "plain.py"  # no `if __name__ == "__main__":`
    script.write_text(SCRIPT.format(index=str(tmp_path / "a.idx"), folder=str(many)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"indexed {N} failed 0"


def test_python_c_and_exec_in_a_notebook_like_namespace(many: Path, tmp_path: Path) -> None:
    code = SCRIPT.format(index=str(tmp_path / "b.idx"), folder=str(many))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == f"indexed {N} failed 0", done.stderr
    # A notebook runs cells with exec() in a namespace that is not a module file.
    nb = f"exec(compile({SCRIPT.format(index=str(tmp_path / 'c.idx'), folder=str(many))!r}, '<cell>', 'exec'), {{}})"
    done = subprocess.run([sys.executable, "-c", nb], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == f"indexed {N} failed 0", done.stderr


SERVER = """\
import threading, time
from concurrent.futures import ThreadPoolExecutor
from searchindex import Index

busy = threading.Event()
def spin():  # another request being served meanwhile
    while not busy.is_set():
        sum(range(1000))
threading.Thread(target=spin, daemon=True).start()
with ThreadPoolExecutor(2) as handlers:  # a request handler thread runs the indexing, as a web server would
    summary = handlers.submit(lambda: Index.create({index!r}, model="tiny-shapes", device="cpu")
                              .add_folder({folder!r}, workers=2)).result()
busy.set()
print("indexed", summary.indexed, "failed", summary.failed)
"""


def test_indexing_from_a_handler_thread_of_a_busy_process(many: Path, tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(index=str(tmp_path / "s.idx"), folder=str(many)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == f"indexed {N} failed 0", done.stderr


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left for init


def _rows(index: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT count(*) FROM images").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _indexer(folder: Path, index: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(index), "--model",
           "tiny-shapes", "--device", "cpu", "--batch-size", "8", "--workers", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)


def _wait_for(predicate, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_no_worker_outlives_a_killed_indexer(many: Path, tmp_path: Path) -> None:
    proc = _indexer(many, tmp_path / "k.idx")
    try:
        _wait_for(lambda: len(_children(proc.pid)) >= 2 or proc.poll() is not None)
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        end = time.monotonic() + 20
        while any(_alive(p) for p in workers) and time.monotonic() < end:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_finishes_the_batch_says_how_to_resume_and_the_rerun_completes(many: Path, tmp_path: Path) -> None:
    index = tmp_path / "t.idx"
    proc = _indexer(many, index)
    try:
        _wait_for(lambda: _rows(index) > 0 or proc.poll() is not None)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "SIGTERM: stopping after the batch in flight is committed" in err
    assert "Run the same command again to resume" in err
    kept = _rows(index)
    assert 0 < kept < N and kept % 8 == 0  # whole batches only
    time.sleep(1)
    assert not [p for p in workers if _alive(p)]
    again = _indexer(many, index)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert out.startswith(f"{N - kept} indexed, {kept} unchanged, 0 failed")
