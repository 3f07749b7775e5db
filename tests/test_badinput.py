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

from .badinput import HAVE_HEIF, _photo, build, heic

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
    (folder / "real.heic").write_bytes(heic(_photo(seed=3)))
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
