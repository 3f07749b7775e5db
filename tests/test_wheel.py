"""The release as a user gets it: sdist and wheel built, checked, and the wheel installed without extras.

One fresh virtual environment (not editable, no extras) gets the built wheel from the project's
own build; everything below then runs there, in separate processes, as it would on a user's
machine: no torch, no open_clip, no timm and no NVIDIA package may be installed, and the demo, an
index and search of photos, the web server and a ViT-B-32-256 checkpoint given as a safetensors
file must all work.  A file missing from the package fails here.

The environment's size and the offline failure's timing are written to ``build/core-install.json``
(figures for the closing note, not thresholds: the size has a limit, the time does not).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The most the core install may take on disk (issue 28: rclip's install was 254 MB).
MAX_CORE_MB = 350
FORBIDDEN = ("torch", "torchvision", "open_clip_torch", "open-clip-torch", "timm", "triton")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs the dev extra (build)")


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 900, **kw: object) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False, **kw)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _du(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Build the sdist and wheel, check them with twine, install the wheel into a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    # From a copy of the tracked files: the build must not depend on what is lying in the work tree.
    src = root / "src"
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)])
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)])
    # As pipx makes it: a venv without a pip of its own, filled by a shared pip (``pip --python``).
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    start = time.perf_counter()
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--disable-pip-version-check",
          str(wheels[0])])
    install_s = time.perf_counter() - start
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["SEARCHINDEX_CACHE"] = str(root / "cache")
    env["HOME"] = str(root / "home")
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return {"root": root, "venv": venv, "py": py, "env": env, "wheel": wheels[0], "install_s": install_s}


def _record(**facts: object) -> None:
    out = ROOT / "build" / "core-install.json"
    out.parent.mkdir(exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else {}
    old.update(facts)
    out.write_text(json.dumps(old, indent=1))


def test_core_install_has_no_torch_and_is_small(core: dict[str, object]) -> None:
    py, env = core["py"], core["env"]
    listed = json.loads(_run([sys.executable, "-m", "pip", "--python", str(py), "list", "--format", "json"],
                             env=env))
    names = {row["name"].lower() for row in listed}
    assert not names & set(FORBIDDEN), names & set(FORBIDDEN)
    assert not [n for n in names if n.startswith("nvidia")], names
    assert {"onnxruntime", "faiss-cpu", "fastapi", "searchindex"} <= names
    size_mb = _du(core["venv"]) / 1e6  # type: ignore[arg-type]
    _record(venv_mb=round(size_mb, 1), install_s=round(core["install_s"], 1), packages=sorted(names))  # type: ignore[arg-type]
    assert size_mb <= MAX_CORE_MB, f"the core install takes {size_mb:.0f} MB"
    # The wheel holds the model files and the page.
    import zipfile

    held = set(zipfile.ZipFile(core["wheel"]).namelist())  # type: ignore[arg-type]
    tiny = "searchindex/models/tiny-shapes"
    for name in (f"{tiny}/open_clip_model.safetensors", f"{tiny}/image.onnx", f"{tiny}/towers.json",
                 "searchindex/models/bpe_simple_vocab_16e6.txt.gz",
                 "searchindex/models/open_clip_catalogue.json", "searchindex/web/static/index.html",
                 "searchindex/py.typed"):
        assert name in held, name


def test_core_install_runs_demo_index_search_and_serve(core: dict[str, object], tmp_path: Path) -> None:
    env = dict(core["env"])  # type: ignore[call-overload]
    env["HF_HUB_OFFLINE"] = "1"
    si = str(Path(core["venv"]) / "bin" / "searchindex")  # type: ignore[arg-type]
    out = _run([si, "demo", "--index", str(tmp_path / "demo")], env=env)
    assert "5/5 results show what was asked for" in out or "results show what was asked for" in out, out
    # No torch was imported on the way (the package is not even installed), and nothing else imports it.
    photos = tmp_path / "photos"
    _run([str(core["py"]), "-c", "import sys; from searchindex.demo.synthetic import write_dataset; "
          f"write_dataset({str(photos)!r}, count=40, seed=5, size=64)"], env=env)
    idx = str(tmp_path / "idx")
    out = _run([si, "index", str(photos), "--index", idx, "--model", "tiny-shapes"], env=env)
    assert "40 indexed" in out, out
    found = _run([si, "search", "a red circle", "--index", idx, "--paths", "-k", "3"], env=env).split()
    assert len(found) == 3 and all(Path(p).is_file() for p in found), found
    for command in (["tag", "--labels", "circle,star"], ["duplicates"]):
        _run([si, *command, "--index", idx], env=env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([si, "serve", "--index", idx, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = None
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=a+red+circle&k=2", timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                time.sleep(0.2)
        assert body is not None and len(body["results"]) == 2, body
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_core_install_matches_torch_prepared_vectors(core: dict[str, object], tmp_path: Path) -> None:
    """A random-weight ViT-B-32-256 safetensors file written here (torch) is indexed in the core install
    (towers built from its tensors, int8); its vectors agree with the tower torch prepares."""
    pytest.importorskip("open_clip")
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = open_clip.create_model("ViT-B-32-256", pretrained=None)
    ckpt = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    photos = tmp_path / "photos"
    from searchindex.demo.synthetic import write_dataset

    write_dataset(photos, count=12, seed=8, size=96)
    env = dict(core["env"])  # type: ignore[call-overload]
    env["HF_HUB_OFFLINE"] = "1"
    si = str(Path(core["venv"]) / "bin" / "searchindex")  # type: ignore[arg-type]
    idx = tmp_path / "idx"
    _run([si, "index", str(photos), "--index", str(idx), "--model", "ViT-B-32-256", "--pretrained", str(ckpt)],
         env=env)
    paths = sorted(str(p) for p in photos.glob("*.png"))
    dump = _run([str(core["py"]), "-c",
                 "import json, sys\nfrom PIL import Image\nfrom searchindex import Index\n"
                 f"ix = Index.open({str(idx)!r}); paths = {paths!r}\n"
                 "assert len(ix.search('x', k=100)) == len(paths)\n"
                 "v = ix.models.encoder.encode_images([Image.open(p).convert('RGB') for p in paths])\n"
                 "print(json.dumps({'precision': ix.models.encoder.precision, 'v': v.tolist()}))"],
                env=env)
    core_out = json.loads(dump.strip().splitlines()[-1])
    assert core_out["precision"] == "int8", core_out["precision"]

    # The torch side: the int8 tower prepared from torch's own export, in a cache of its own.
    from searchindex.models import encoders
    from searchindex.models.encoders import OpenClipEncoder
    from searchindex.models.int8 import prepare_int8_tower
    from searchindex.models.spec import resolve_model

    old = os.environ.get("SEARCHINDEX_CACHE")
    os.environ["SEARCHINDEX_CACHE"] = str(tmp_path / "torch-cache")
    try:
        encoder = OpenClipEncoder(resolve_model("ViT-B-32-256", str(ckpt)), "cpu", "fp32")
        prepared = prepare_int8_tower(encoder, encoders.INT8_MIN_COSINE)
        assert prepared is not None
        encoder.attach_image_runtime(prepared[0])
        from PIL import Image

        want = encoder.encode_images([Image.open(p).convert("RGB") for p in paths])
    finally:
        if old is None:
            os.environ.pop("SEARCHINDEX_CACHE", None)
        else:
            os.environ["SEARCHINDEX_CACHE"] = old
    got = np.asarray(core_out["v"], dtype=np.float32)
    cosines = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    _record(vit_b32_256_int8_core_vs_torch_min_cosine=round(float(cosines.min()), 6))
    assert cosines.min() >= 0.999, cosines


def test_core_install_offline_default_model_fails_fast_in_one_line(core: dict[str, object], tmp_path: Path) -> None:
    env = dict(core["env"])  # type: ignore[call-overload]
    env.pop("HF_HUB_OFFLINE", None)
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a closed port: the hub is unreachable, as on a machine offline
    photos = tmp_path / "photos"
    photos.mkdir()
    idx = tmp_path / "idx"
    si = str(Path(core["venv"]) / "bin" / "searchindex")  # type: ignore[arg-type]
    start = time.perf_counter()
    done = subprocess.run([si, "index", str(photos), "--index", str(idx)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    elapsed = time.perf_counter() - start
    _record(offline_default_model_s=round(elapsed, 2), offline_stderr=done.stderr)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for hint in ("searchindex demo", "--model tiny-shapes", "--pretrained", "HF_HUB_OFFLINE", "127.0.0.1:9"):
        assert hint in lines[0], (hint, lines[0])
    assert not idx.exists() or not any(idx.iterdir()), sorted(idx.iterdir())
