"""Every awkward input is either indexed correctly or recorded with a reason; none stops a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from searchindex import Index
from searchindex.cli import cli
from searchindex.demo.synthetic import iter_scenes, render

from .badinput import HAVE_HEIF, build, heic, scene_photo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "bad"
    return folder, build(folder)


def test_every_case_has_its_outcome(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    folder, expect = corpus
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(folder, batch_size=4)
        failures = {os.path.relpath(f.path, folder): f.reason for f in index.failures()}
        indexed = {os.path.relpath(r.path, folder): r for r in index.search("a photo", k=100)}
        outcomes = {}
        for name, (kind, detail) in sorted(expect.items()):
            if kind == "fail":
                assert name in failures, f"{name!r} was not recorded"
                assert str(detail) in failures[name], f"{name!r}: {failures[name]}"
                outcomes[name] = failures[name]
            else:
                assert name in indexed, f"{name!r} was not indexed ({failures.get(name)})"
                assert (indexed[name].width, indexed[name].height) == detail, name
                # Searching with the file itself finds it first.
                assert index.search_image(folder / name, k=1)[0].path == str(folder / name)
                outcomes[name] = f"indexed {detail[0]}x{detail[1]}"
        print("\n" + "\n".join(f"{n!r}: {o}" for n, o in outcomes.items()))
        assert summary.failed == len(failures) == sum(k == "fail" for k, _ in expect.values())
        assert summary.indexed == len(indexed) == sum(k == "ok" for k, _ in expect.values())
        # A second run retries nothing.
        again = index.add_folder(folder)
        assert (again.indexed, again.failed, again.unchanged) == (0, 0, len(expect))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = render(next(iter_scenes(1, 4)), 96).resize((80, 40))
    folder = tmp_path / "photos"
    build(folder)
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)
        rotated_query = tmp_path / "as-viewed.png"
        upright.rotate(-90, expand=True).save(rotated_query)  # what a viewer shows for orientation 6
        assert index.search_image(rotated_query, k=1)[0].path == str(folder / "exif-rotated.jpg")


def test_file_deleted_between_scan_and_decode(small_folder: Path, tmp_path: Path) -> None:
    files = sorted(small_folder.glob("*.png"))
    victim = files[-1]

    def delete_late_file(progress: object) -> None:
        if victim.exists():
            victim.unlink()

    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(small_folder, batch_size=4, progress=delete_late_file)
        assert (summary.indexed, summary.failed) == (39, 1)
        assert index.failures()[0].reason == "file not found (deleted since the scan)"


def test_decompression_bomb_limit_is_configurable(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    render(next(iter_scenes(1, 1)), 200).save(folder / "big.png")  # 0.04 megapixels
    res = CliRunner().invoke(cli, ["index", str(folder), "--index", str(tmp_path / "i"), "--model", "tiny-shapes",
                                   "--max-megapixels", "0.01", "--strict"])
    assert res.exit_code == 3 and "too large: 200x200" in res.output


def test_unreadable_file_is_recorded(small_folder: Path, tmp_path: Path) -> None:
    """File permissions do not bind root, so as root the indexer runs without the capabilities
    that bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), like an ordinary user."""
    locked = sorted(small_folder.glob("*.png"))[0]
    os.chmod(locked, 0o000)
    code = (
        "import sys; from searchindex import Index; "
        "i = Index.create(sys.argv[1], model='tiny-shapes', device='cpu'); s = i.add_folder(sys.argv[2]); "
        "print(s.indexed, s.failed, [f.reason for f in i.failures()])"
    )
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
    out = subprocess.run([*prefix, sys.executable, "-c", code, str(tmp_path / "idx"), str(small_folder)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "39 1 ['unreadable: Permission denied']"


@pytest.mark.skipif(not HAVE_HEIF, reason="needs the heif extra to write a real HEIC file")
def test_heic_without_the_extra_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "real.heic").write_bytes(heic(scene_photo(seed=3)))
    code = (
        "import sys; sys.modules['pillow_heif'] = None  # as if the extra were not installed\n"
        "from searchindex import Index\n"
        "with Index.create(sys.argv[1], model='tiny-shapes', device='cpu') as ix:\n"
        "    s = ix.add_folder(sys.argv[2])\n"
        "    print(s.indexed, s.failed, ix.failures()[0].reason)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "idx"), str(folder)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 1 unsupported format HEIC/HEIF")
    assert "pip install 'searchindex[heif]'" in out.stdout


def _as_ordinary_user() -> list[str]:
    """A command prefix that takes from root the capabilities that bypass file permissions
    (CI runs as root; permissions would not bind it, and the test must still run there)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "running as root needs util-linux setpriv to test permissions"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def _deep_folder(base: Path, total: int) -> str:
    """A folder below ``base`` whose path is about ``total`` bytes long (beyond PATH_MAX when
    asked), made one level at a time relative to the one before."""
    base.mkdir(exist_ok=True)
    fd = os.open(base, os.O_RDONLY)
    path = str(base)
    try:
        while len(path) < total:
            name = "d" * min(200, max(1, total - len(path) - 1))
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
            path += os.sep + name
        return path
    finally:
        os.close(fd)


def _write_at(folder: str, name: str, data: bytes) -> None:
    """Write ``data`` to ``folder/name`` even when that path is longer than the system allows."""
    parts = folder.split(os.sep)
    fd = os.open(os.sep, os.O_RDONLY)
    try:
        for part in parts[1:]:
            sub = os.open(part, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)


def test_what_the_scan_cannot_read_is_recorded_and_fails_strict(small_folder: Path, tmp_path: Path) -> None:
    """A folder that cannot be listed (mode 000) holding photos never indexed, one that can be
    listed but not entered (mode 444) holding indexed photos, and photos whose path exceeds
    PATH_MAX were skipped with nothing in `errors` and exit 0 under --strict."""
    import json

    photos = sorted(small_folder.glob("*.png"))
    root = tmp_path / "scanned"
    (root / "noexec").mkdir(parents=True)
    for i, p in enumerate(photos[:4]):
        shutil.copy(p, (root / "noexec" if i < 2 else root) / p.name)
    index = tmp_path / "idx"
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(root), "--index", str(index), "--strict", "--json",
           "--model", "tiny-shapes", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["images_in_index"] == 4
    (root / "locked").mkdir()
    for p in photos[4:6]:
        shutil.copy(p, root / "locked" / p.name)
    path_max = os.pathconf(str(root), "PC_PATH_MAX")
    long_folder = _deep_folder(root / "deep", path_max + 100)  # the folders themselves grow too long
    _write_at(long_folder, "deep.png", photos[6].read_bytes())
    edge_folder = _deep_folder(root / "edge", path_max - 60)  # the folder is fine, the file's path is not
    long_file = os.path.join(edge_folder, "x" * 100 + ".png")
    _write_at(edge_folder, os.path.basename(long_file), photos[7].read_bytes())
    os.chmod(root / "locked", 0o000)
    os.chmod(root / "noexec", 0o444)
    try:
        out = subprocess.run([*_as_ordinary_user(), *cmd], capture_output=True, text=True, env=env, check=False)
        errors = subprocess.run([sys.executable, "-m", "searchindex.cli", "errors", "--index", str(index)],
                                capture_output=True, text=True, env=env, check=False)
    finally:
        os.chmod(root / "locked", 0o755)
        os.chmod(root / "noexec", 0o755)
    assert out.returncode == 3, out.stderr
    summary = json.loads(out.stdout)
    reasons = {f["path"]: f["reason"] for f in summary["failures"]}
    assert reasons[str(root / "locked")] == "unreadable: folder cannot be listed: Permission denied"
    assert reasons[str(root / "noexec")] == "unreadable: folder cannot be entered: Permission denied"
    assert reasons[long_file].startswith("path too long for this system")
    too_long = [p for p, r in reasons.items() if r.startswith("path too long") and p != long_file]
    assert len(too_long) == 1 and long_folder.startswith(too_long[0]), too_long
    assert summary["failed"] == 4 and summary["deleted"] == 0
    assert summary["images_in_index"] == 4  # the photos in noexec/ are kept
    assert "folder cannot be listed" in errors.stdout and "folder cannot be entered" in errors.stdout
