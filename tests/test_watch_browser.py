"""``serve --watch`` in a real headless Chromium: the page says "N new photos" and shows them where it was.

Skipped with one line when Playwright or a Chromium is missing, like tests/test_web_browser.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from searchindex import Index

pytest.importorskip("watchdog")
pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from .conftest import Shapes  # noqa: E402
from .support.browser import chromium_or_skip, serving  # noqa: E402

CHROMIUM = chromium_or_skip()


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
    with serving(tmp_path / "idx", watch=True) as url:
        yield url, folder, files[300:303]


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
            page.wait_for_function("() => Math.abs(window.scrollY - 900) < 2")
            assert page.locator("#watch-notice").count() == 0
            time.sleep(1.0)  # the watch's start scan
            for f in spare[:2]:
                shutil.copy(f, folder / f"new-{f.name}")
            notice = page.locator("#watch-notice")
            notice.wait_for(state="visible")
            page.wait_for_function(
                "() => document.querySelector('#watch-notice').textContent.startsWith('2 new photos')")
            notice.click()
            page.wait_for_load_state("load")
            page.wait_for_selector("#grid .tile >> nth=59")
            page.wait_for_function("() => Math.abs(window.scrollY - 900) < 2")  # back where it was
            assert "q=a+shape" in page.url
            assert page.locator("#watch-notice").count() == 0  # the new ones are counted in now
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
