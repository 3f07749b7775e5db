"""``serve --watch`` in a real headless Chromium: the page says "N new photos" and shows them where it was.

Skipped with one line when Playwright or a Chromium is missing, like tests/test_web_browser.py.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from searchindex import Index

pytest.importorskip("watchdog")
pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = os.environ.get("SEARCHINDEX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") \
    or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

import uvicorn  # noqa: E402

from searchindex.web import create_app  # noqa: E402

from .conftest import Shapes  # noqa: E402


@pytest.fixture()
def served(shapes: Shapes, tmp_path: Path) -> Iterator[tuple[str, Path, list[Path]]]:
    """A server with --watch over an index of 150 scenes; its URL, the watched folder, spare scenes."""
    files = sorted(shapes.folder.glob("*.png"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in files[:150]:
        shutil.copy2(f, folder / f.name)
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
    app = create_app(tmp_path / "idx", device="cpu", watch=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", folder, files[300:303]
    server.should_exit = True
    thread.join(timeout=30)


def test_page_offers_new_photos_and_keeps_its_place(served: tuple[str, Path, list[Path]], tmp_path: Path) -> None:
    url, folder, spare = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{url}/?q=a+shape&threshold=none")  # 60 tiles: the ranking, not the cutoff
            page.wait_for_selector("#grid .tile >> nth=59")
            page.evaluate("window.scrollTo(0, 900)")
            page.wait_for_function("Math.abs(window.scrollY - 900) < 2")
            assert page.locator("#watch-notice").count() == 0
            time.sleep(1.0)  # the watch's start scan
            for f in spare[:2]:
                shutil.copy(f, folder / f"new-{f.name}")
            notice = page.locator("#watch-notice")
            notice.wait_for(state="visible")
            page.wait_for_function("document.querySelector('#watch-notice').textContent.startsWith('2 new photos')")
            notice.click()
            page.wait_for_load_state("load")
            page.wait_for_selector("#grid .tile >> nth=59")
            page.wait_for_function("Math.abs(window.scrollY - 900) < 2")  # back where it was
            assert "q=a+shape" in page.url
            assert page.locator("#watch-notice").count() == 0  # the new ones are counted in now
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
