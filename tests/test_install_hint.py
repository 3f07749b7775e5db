"""A missing extra's hint speaks as the installation does: pip, pipx, or a checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from searchindex.errors import MissingExtraError, install_hint

ROOT = Path(__file__).resolve().parent.parent


def test_pip_install(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.12" / "site-packages"
    (site / "searchindex").mkdir(parents=True)
    hint = install_hint("web", prefix=tmp_path, package_dir=site, direct_url='{"url": "https://pypi.org/x"}')
    assert hint == "pip install 'searchindex[web]'"
    assert install_hint("web", prefix=tmp_path, package_dir=site, direct_url="") == hint


def test_pipx_venv_gets_pipx_inject_with_the_extras_packages(tmp_path: Path) -> None:
    prefix = tmp_path / ".local" / "share" / "pipx" / "venvs" / "searchindex"
    site = prefix / "lib" / "python3.12" / "site-packages"
    hint = install_hint("parquet", prefix=prefix, package_dir=site, direct_url="")
    assert hint.startswith("pipx inject searchindex ")
    # The packages the installed distribution declares for the extra (searchindex itself is
    # installed here, editable, with its metadata: the test reads the same metadata).
    from importlib.metadata import requires

    declared = [r.split(";")[0].strip() for r in requires("searchindex") or [] if 'extra == "parquet"' in r]
    assert declared and hint == "pipx inject searchindex " + " ".join(f"'{r}'" for r in declared)
    # pipx's home may be elsewhere (PIPX_HOME), the app may be named otherwise (pipx install --suffix).
    assert install_hint("ray", prefix="/opt/pipx/venvs/searchindex@2", package_dir=site,
                        direct_url="").startswith("pipx inject searchindex@2 'ray[data]")


def test_checkout_or_editable_install(tmp_path: Path) -> None:
    checkout = tmp_path / "src"
    (checkout / "searchindex").mkdir(parents=True)
    (checkout / "setup.cfg").write_text("[metadata]\nname = searchindex\n")
    assert install_hint("caption", prefix=tmp_path / "venv", package_dir=checkout,
                        direct_url="") == f"pip install -e '.[caption]' (in {checkout})"
    # Editable, the modules reached through an import hook: the recorded source folder.
    url = json.dumps({"url": "file:///home/me/code/searchindex", "dir_info": {"editable": True}})
    assert install_hint("caption", prefix=tmp_path / "venv", package_dir=tmp_path / "site",
                        direct_url=url) == "pip install -e '.[caption]' (in /home/me/code/searchindex)"
    # This test run imports searchindex from its source tree.
    assert install_hint("caption") == f"pip install -e '.[caption]' (in {ROOT})"


def test_detected_from_the_running_interpreter_in_a_pipx_venv(tmp_path: Path) -> None:
    """A real interpreter whose sys.prefix is a pipx application's environment."""
    venv = tmp_path / "pipx" / "venvs" / "searchindex"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    code = "from searchindex.errors import install_hint; print(install_hint('parquet'))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pipx inject searchindex "), out.stdout


@pytest.mark.parametrize("message", [
    "the web server needs fastapi: install it with pip install 'searchindex[web]'",
    "captioning needs transformers: pip install 'searchindex[caption]'",
])
def test_every_raise_site_gets_the_hint(message: str) -> None:
    """Raise sites that still spell the pip command get it replaced by the installation's."""
    extra = message.rsplit("[", 1)[1].split("]")[0]
    text = str(MissingExtraError(message))
    assert install_hint(extra) in text and text.count("install") <= 2
    assert str(MissingExtraError("Parquet export needs pyarrow", extra="parquet")) == (
        f"Parquet export needs pyarrow: {install_hint('parquet')}")


def test_the_web_command_says_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The web server is in the core install; an environment that lost it is told what to put back."""
    from click.testing import CliRunner

    from searchindex.cli import cli

    monkeypatch.setitem(sys.modules, "fastapi", None)
    res = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path)])
    assert res.exit_code == 1 and "pip install fastapi uvicorn" in res.output
