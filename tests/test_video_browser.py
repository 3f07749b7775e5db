"""Videos on the search page, in a real headless Chromium against a real uvicorn server: the tile shows the
matched frame with a duration badge, the detail view plays the file from the matched second."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from searchindex import Index  # noqa: E402
from searchindex.demo.videos import random_clip, write_clip  # noqa: E402

from .support.browser import ARGS, chromium_or_skip, serving  # noqa: E402

CHROMIUM = chromium_or_skip()
ARGS = [*ARGS, "--autoplay-policy=no-user-gesture-required"]



def test_video_tile_and_detail_view_play_from_the_moment(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    # VP9 in WebM: open-source Chromium builds play it (H.264 may be left out of them).
    clip = random_clip(random.Random(41), 40.0, 3)
    write_clip(folder / "clip.webm", clip, width=160, height=120, fps=5.0, codec="libvpx-vp9")
    Image.new("RGB", (96, 96), (200, 40, 40)).save(folder / "photo.png")  # something left when the video is the example
    index = tmp_path / "b.idx"
    with Index.create(index, model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
        scene = clip.scenes[1]
        expected = idx.search(f"a {scene.scene.color} {scene.scene.shape}", k=1)[0].timestamp
    assert expected is not None
    with serving(index) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page: Any = browser.new_page(base_url=url, viewport={"width": 1000, "height": 800})
        page.set_default_timeout(20_000)
        try:
            page.goto(f"/?q=a+{scene.scene.color}+{scene.scene.shape}")
            page.wait_for_selector("#grid .tile.video .duration")
            badge = page.text_content("#grid .tile.video .duration")
            assert badge is not None and badge.endswith("00:40") and badge.startswith("@ ")
            src = page.get_attribute("#grid .tile.video img", "src")
            assert src is not None and "&t=" in src
            page.click("#grid .tile.video img")
            page.wait_for_selector("#lb-video")
            assert page.is_hidden("#lb-img")
            page.wait_for_function("() => document.querySelector('#lb-video').readyState >= 1")
            now = page.evaluate("() => document.querySelector('#lb-video').currentTime")
            assert abs(now - expected) < 1.0, (now, expected)
            assert page.locator("#lb-moments button").count() >= 1
            # Like the moment being played: the URL keeps it as like=ID@SECONDS, the strip shows its frame.
            vid = page.get_attribute("#lightbox", "data-image-id")
            assert page.get_attribute("#lb-like-moment", "aria-pressed") == "false"
            page.click("#lb-like-moment")
            page.wait_for_function("() => new URL(location.href).searchParams.getAll('like').length === 1")
            liked = page.evaluate("() => new URL(location.href).searchParams.get('like')")
            assert liked.startswith(f"{vid}@") and abs(float(liked.split("@")[1]) - now) <= 0.1, (liked, now)
            page.wait_for_selector("#liked img")
            assert f"/api/images/{vid}/thumbnail" in page.get_attribute("#liked img", "src") \
                and "&t=" in page.get_attribute("#liked img", "src")
            assert page.get_attribute("#lb-like-moment", "aria-pressed") == "true"
            assert page.get_attribute("#lb-like", "aria-pressed") == "false"  # the moment, not the whole video
            # "Not this moment" at the same second moves it from liked to not liked.
            page.click("#lb-unlike-moment")
            page.wait_for_function("() => new URL(location.href).searchParams.getAll('unlike').length === 1")
            assert page.evaluate("() => new URL(location.href).searchParams.getAll('like')") == []
            assert page.get_attribute("#lb-unlike-moment", "aria-pressed") == "true"
            assert page.locator("#unliked img").count() == 1
            page.keyboard.press("Escape")
            # The URL keeps it: reloaded, the search runs with the moment (the API took it) and shows it.
            page.reload()
            page.wait_for_selector("#unliked img")
            page.wait_for_selector("#grid .tile")
            assert not page.locator("#grid .tile.video").count()  # the example itself is left out
            # A concept keeps image ids: the moment is saved as its video.
            page.fill("#save-concept input[name=name]", "that moment")
            page.press("#save-concept input[name=name]", "Enter")
            page.wait_for_function("() => document.querySelector('#status').textContent.includes('Saved concept')")
            saved = page.evaluate("() => fetch('/api/concepts').then((r) => r.json())")["concepts"]
            assert [(c["name"], c["unlike"]) for c in saved] == [("that moment", [int(vid)])]
        finally:
            browser.close()
