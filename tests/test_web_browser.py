"""The search page in a real headless Chromium, driven by Playwright, against a real uvicorn server.

Skipped with one line when Playwright or a Chromium is missing (`.ci/run` installs Chromium through
apt). A failing test leaves a screenshot in its temporary folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from .conftest import Shapes  # noqa: E402
from .support.browser import ARGS, chromium_or_skip, serving  # noqa: E402

CHROMIUM = chromium_or_skip()

try:  # axe-core's engine as the axe-playwright-python package ships it (the dev extra installs it)
    import axe_playwright_python

    AXE = Path(axe_playwright_python.__file__).parent / "axe.min.js"
except ImportError:  # the axe test skips
    AXE = Path("/nonexistent/axe.min.js")

@pytest.fixture(scope="module")
def base_url(shapes_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server per module, on a free loopback port, over a private copy of the test index."""
    path = tmp_path_factory.mktemp("browser") / "shapes.idx"
    shutil.copytree(shapes_index, path)
    with serving(path) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any, base_url: str, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    try:
        yield pg
    finally:
        context.close()


@contextmanager
def screenshot_on_failure(page: Any, tmp_path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise


def tile_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#grid .tile", "ts => ts.map(t => t.dataset.imageId)")


def search(page: Any, text: str, url: str = "/") -> None:
    page.goto(url)
    page.wait_for_function("() => document.activeElement && document.activeElement.name === 'q'")
    page.wait_for_selector("#status:has-text('newest first')")  # the empty page shows the library
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('results for')")
    page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")


def loaded_images(page: Any, n: int) -> int:
    return page.evaluate(
        """n => [...document.querySelectorAll('#grid .tile img')].slice(0, n)
                  .filter(i => i.complete && i.naturalWidth > 0).length""", n)


def test_a_query_shows_loaded_tiles_and_lives_in_the_url(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a red circle")
        page.wait_for_function("""() => [...document.querySelectorAll('#grid .tile img')].slice(0, 10)
                                   .every(i => i.complete && i.naturalWidth > 0)""")
        assert loaded_images(page, 10) == 10
        assert "q=a+red+circle" in page.url
        first = tile_ids(page)
        assert len(first) >= 10 and page.get_attribute("#grid .tile img", "alt")
        page.reload()
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")
        assert tile_ids(page)[:10] == first[:10] and page.input_value("#q") == "a red circle"
        # A second search, then Back: the first one again.
        page.fill("#q", "a blue star")
        page.press("#q", "Enter")
        page.wait_for_url("**q=a+blue+star**")
        page.wait_for_function(f"() => document.querySelector('#grid .tile').dataset.imageId !== '{first[0]}'")
        page.go_back()
        page.wait_for_function(f"() => document.querySelector('#grid .tile').dataset.imageId === '{first[0]}'")
        assert tile_ids(page)[:10] == first[:10] and page.input_value("#q") == "a red circle"
        # `/` comes back to the search box from anywhere.
        page.focus("#grid .tile")
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"


def test_lightbox_opens_and_moves_with_the_arrow_keys(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a yellow square")
        ids = tile_ids(page)
        page.click("#grid .tile img")
        page.wait_for_selector("#lightbox[open]")
        assert page.get_attribute("#lightbox", "data-image-id") == ids[0]
        page.wait_for_selector("#lb-facts dt:has-text('Path')")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => document.querySelector('#lightbox').dataset.imageId === '{ids[2]}'")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"() => document.querySelector('#lightbox').dataset.imageId === '{ids[1]}'")
        page.wait_for_function("() => document.querySelector('#lb-img').naturalWidth > 0")
        page.keyboard.press("Escape")
        page.wait_for_selector("#lightbox[open]", state="detached")
        # Closing hands the focus back to the tile last shown (the dialog's `close` event is queued,
        # so wait for it rather than racing it with a focus of our own).
        page.wait_for_function(f"() => document.activeElement.dataset.imageId === '{ids[1]}'")
        # Keyboard only: arrows in the grid, Enter opens the focused tile.
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"() => document.activeElement.dataset.imageId === '{ids[0]}'")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        page.wait_for_selector("#lightbox[open]")
        assert page.get_attribute("#lightbox", "data-image-id") == ids[2]


def _intent(row: dict[str, str]) -> bool:  # narrower than the query: large circles on sand
    return row["shape"] == "circle" and row["size"] == "large" and row["background"] == "sand"


def test_liking_two_tiles_reranks_and_a_concept_survives_a_reload(page: Any, tmp_path: Path, shapes: Shapes) -> None:
    by_name = {Path(p).name: row for p, row in shapes.labels.items()}
    with screenshot_on_failure(page, tmp_path):
        search(page, "a photo of a circle", "/?threshold=none")  # 60 tiles: the ranking, not the cutoff
        before = tile_ids(page)
        names = page.eval_on_selector_all("#grid .tile img", "is => is.map(i => i.alt)")
        hits = [i for i, name in zip(before, names, strict=True) if _intent(by_name[name])]
        assert len(hits) >= 2
        liked: list[str] = []
        for _ in range(2):  # each time, the lowest tile showing what is meant
            names = page.eval_on_selector_all("#grid .tile img", "is => is.map(i => i.alt)")
            image_id = [i for i, n in zip(tile_ids(page), names, strict=True) if _intent(by_name[n])][-1]
            liked.append(image_id)
            page.click(f"#grid .tile[data-image-id='{image_id}'] button.like", force=True)
            page.wait_for_url(f"**like={image_id}**")
            page.wait_for_selector(f"#liked li[data-image-id='{image_id}']")
            page.wait_for_function(f"() => !document.querySelector(\"#grid .tile[data-image-id='{image_id}']\")")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")
        after = tile_ids(page)
        assert after[:10] != [i for i in before if i not in liked][:10]  # re-ranked, not just the likes removed
        names = page.eval_on_selector_all("#grid .tile img", "is => is.map(i => i.alt)")
        precision = sum(_intent(by_name[n]) for n in names[:10]) / 10
        assert precision > sum(i in hits for i in before[:10]) / 10
        assert not set(liked) & set(after)
        assert page.eval_on_selector_all("#liked li", "ls => ls.map(l => l.dataset.imageId)") == liked
        # Save it as a concept, reload, and run it from the list.
        page.fill("#save-concept input[name=name]", "round things")
        page.click("#save-concept button")
        page.wait_for_selector("#concept-list button.concept:has-text('round things')")
        page.reload()
        page.wait_for_selector("#concept-list button.concept:has-text('round things')")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")
        assert tile_ids(page)[:10] == after[:10]  # the URL still holds the query and the likes
        # Removing an example from the strip re-ranks again.
        page.click(f"#liked li[data-image-id='{liked[0]}'] button")
        page.wait_for_function(f"() => !new URL(location.href).searchParams.getAll('like').includes('{liked[0]}')")
        page.wait_for_selector(f"#liked li[data-image-id='{liked[1]}']")
        assert page.eval_on_selector_all("#liked li", "ls => ls.map(l => l.dataset.imageId)") == liked[1:]
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")
        # No longer an example, so a result again: somewhere in the ranking the page's URL asks for
        # (it was the lowest matching tile, so it may rank below the page of tiles shown).
        ranked = page.evaluate("""async () => {
            const p = new URLSearchParams(location.search); p.set('k', '1000'); p.delete('offset');
            p.delete('threshold');  // the page's "none": no cutoff
            const r = await fetch('/api/search?' + p); return (await r.json()).results.map(x => String(x.image_id));
        }""")
        assert liked[0] in ranked and liked[1] not in ranked
        page.goto("/")
        page.click("#concept-list button.concept:has-text('round things')")
        page.wait_for_url("**concept=round+things**")
        page.wait_for_selector("#status:has-text('concept “round things”')")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")
        assert tile_ids(page)[:10] == after[:10]


def test_filters_views_and_phone_width(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.set_viewport_size({"width": 390, "height": 800})
        search(page, "a green triangle")
        width = page.evaluate("document.querySelector('#grid .tile').getBoundingClientRect().width")
        assert 80 < width < 200
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.click("#filters-toggle")
        page.fill("#filters input[name=min_width]", "100000")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**min_width=100000**")
        page.wait_for_selector("#status:has-text('No results')")
        assert tile_ids(page) == [] and page.is_hidden("#more")
        page.click("nav [data-view=errors]")
        page.wait_for_selector("#view h2:has-text('could not be indexed')")
        page.click("nav [data-view=duplicates]")
        page.wait_for_selector("#view h2:has-text('Duplicates')")
        page.go_back()
        page.wait_for_selector("#view h2:has-text('could not be indexed')")


# -- issue 22: browsing, selecting, and the rough edges ------------------------------------------------


def browse(page: Any, url: str = "/") -> None:
    page.goto(url)
    page.wait_for_selector("#status:has-text('newest first')")


def test_the_empty_page_is_the_library_newest_first_with_infinite_scroll(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        browse(page)
        assert page.title() == "Photos — searchindex"
        assert page.locator("h1").count() == 1 and page.locator("main").count() == 1
        assert page.locator("#grid .date-heading").count() >= 1
        first = tile_ids(page)
        assert len(first) == 60
        walked = page.evaluate("""async () => {
            let ids = [], cursor = null;
            do {
                const r = await (await fetch('/api/browse?k=45' + (cursor ? '&cursor=' + cursor : ''))).json();
                ids.push(...r.images.map(i => String(i.image_id))); cursor = r.next_cursor;
            } while (cursor && ids.length < 200);
            return ids; }""")
        assert first == walked[:60]
        page.mouse.wheel(0, 30_000)  # infinite scroll: the next page comes by itself
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 120")
        assert tile_ids(page)[:180] == walked[:len(tile_ids(page)[:180])]
        # A filter without a query is a filtered timeline, shown as a chip that survives a reload.
        page.click("#filters-toggle")
        page.fill("#filters input[name=path]", "*7.png")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**path=**")
        page.wait_for_selector("#chip-list li:has-text('Folder: *7.png')")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#grid .tile img')].every(i => i.alt.endsWith('7.png'))")
        assert 0 < len(tile_ids(page)) <= 100 and page.evaluate("window.scrollY") == 0
        page.reload()
        page.wait_for_selector("#chip-list li:has-text('Folder: *7.png')")
        page.click("#chip-list button[aria-label^='Remove filter Folder']")
        page.wait_for_function("() => !location.search.includes('path=')")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 60")
        # Jump to: the months of the library are offered, and choosing one starts there.
        months = page.eval_on_selector_all("#jump option", "os => os.map(o => o.value).filter(Boolean)")
        assert months
        page.select_option("#jump", months[-1])
        page.wait_for_url(f"**start={months[-1]}**")
        # Apply keeps what was typed in the box.
        page.click("#filters-toggle")
        page.fill("#q", "a red circle")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#status:has-text('results for')")
        assert "q=a+red+circle" in page.url


def test_keyboard_grid_is_one_tab_stop_and_focus_stays_after_like(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a red circle", "/?threshold=none")
        assert page.title().startswith("a red circle")
        page.focus("#q")
        stops = []
        for _ in range(20):
            page.keyboard.press("Tab")
            stops.append(page.evaluate("""() => { const a = document.activeElement;
                return a.closest('#grid') ? 'grid' : (a.id || a.tagName); }"""))
        # The focused tile and its own four buttons, then on past the grid (not 60 x 4 stops).
        assert 1 <= stops.count("grid") <= 5 and stops[stops.index("grid") + stops.count("grid")] != "grid"
        page.focus("#grid .tile[data-index='0']")
        for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
            page.keyboard.press(key)
        at = page.evaluate("document.activeElement.dataset.index")
        assert int(at) > 2
        page.keyboard.press("l")
        page.wait_for_url("**like=**")
        page.wait_for_function(f"() => document.activeElement.dataset.index === '{at}'")
        # The liked search's results may still be on their way: once they arrive, that new result set
        # scrolls to the top by design, so the scroll below waits for them (it raced them before).
        page.wait_for_load_state("networkidle")
        page.wait_for_function(f"() => document.activeElement.dataset.index === '{at}'")
        # A new result set ("m": more like this) starts at the top, focus on its first tile.
        page.focus("#grid .tile[data-index='20']")
        page.wait_for_function("() => { window.scrollTo(0, 3000); return window.scrollY > 200; }")
        page.keyboard.press("m")
        page.wait_for_url("**image=**")
        page.wait_for_function("() => document.activeElement.dataset && document.activeElement.dataset.index === '0'")
        assert page.evaluate("window.scrollY") == 0
        assert page.inner_text("#lightbox #lb-close") == "Close"


def test_select_with_keyboard_and_mouse_then_download_and_copy(page: Any, tmp_path: Path,
                                                               browser: Any, base_url: str) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a blue star", "/?threshold=none")
        ids = tile_ids(page)
        page.focus("#grid .tile[data-index='0']")
        page.keyboard.press("Space")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("Space")
        page.wait_for_selector("#selection-count:has-text('2 photos selected')")
        page.click("#grid .tile[data-index='4'] img", modifiers=["Shift"])  # a range from the last one chosen
        page.wait_for_selector("#selection-count:has-text('5 photos selected')")
        page.keyboard.press("Escape")
        assert page.is_hidden("#selection")
        page.focus("#grid .tile[data-index='0']")
        page.keyboard.press("Control+a")
        page.wait_for_selector(f"#selection-count:has-text('{len(ids)} photos selected')")
        page.keyboard.press("Escape")
        page.focus("#grid .tile[data-index='0']")
        for _ in range(3):
            page.keyboard.press("Space")
            page.keyboard.press("ArrowRight")
        page.wait_for_selector("#selection-count:has-text('3 photos selected')")
        with page.expect_download() as info:
            page.click("#sel-download")
        zipped = tmp_path / "photos.zip"
        info.value.save_as(zipped)
        paths = page.evaluate(f"""async () => Promise.all({ids[:3]}.map(async i =>
            (await (await fetch('/api/images/' + i)).json()).path))""")
        import zipfile
        with zipfile.ZipFile(zipped) as zf:
            assert zf.namelist() == [Path(p).name for p in paths]
            assert all(zf.read(Path(p).name) == Path(p).read_bytes() for p in paths)
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.click("#sel-copy")
        page.wait_for_selector("#status:has-text('Copied 3 paths')")
        assert page.evaluate("navigator.clipboard.readText()").split() == paths
        page.click("#sel-like")
        liked = ",".join(ids[:3])
        page.wait_for_function(f"() => new URL(location.href).searchParams.getAll('like').join() === '{liked}'")
        page.wait_for_selector("#status:has-text('results for')")
        assert page.is_hidden("#selection")


def test_tag_a_selection_with_a_label_then_filter_on_it(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a green square", "/?threshold=none")
        ids = tile_ids(page)[:3]
        page.focus("#grid .tile[data-index='0']")
        for _ in range(3):
            page.keyboard.press("Space")
            page.keyboard.press("ArrowRight")
        page.wait_for_selector("#selection-count:has-text('3 photos selected')")
        page.fill("#selection-label", "my picks")
        page.press("#selection-label", "Enter")
        page.wait_for_selector("#status:has-text('Tagged 3 photos “my picks”')")
        page.wait_for_selector("#filters select[name='tag'] option[value='my picks']", state="attached")
        tags = page.evaluate("async () => (await (await fetch('/api/tags')).json()).tags")
        assert {"label": "my picks", "images": 3} in tags
        page.goto("/?tag=my+picks")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 3")
        assert sorted(tile_ids(page)) == sorted(ids)
        page.evaluate("() => fetch('/api/tags/my%20picks', {method: 'DELETE'})")


def test_failed_requests_keep_the_grid_and_back_works_offline(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a red circle", "/?threshold=none")
        red = tile_ids(page)
        page.fill("#q", "a blue star")
        page.press("#q", "Enter")
        page.wait_for_selector("#status:has-text('“a blue star”')")
        blue = tile_ids(page)
        page.route("**/api/**", lambda route: route.abort())  # the server is gone
        page.go_back()
        page.wait_for_selector("#status:has-text('cannot be reached')")
        assert tile_ids(page) == red  # the answer from before, for this URL
        page.fill("#q", "a green triangle")
        page.press("#q", "Enter")
        page.wait_for_selector("#status button:has-text('Retry')")
        assert tile_ids(page) == red  # kept, not wiped
        page.unroute("**/api/**")
        page.click("#status button:has-text('Retry')")
        page.wait_for_selector("#status:has-text('“a green triangle”')")
        assert tile_ids(page) not in (red, blue)


def test_unknown_view_wording_deletes_and_duplicates(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.goto("/?view=nonsense")
        page.wait_for_selector("#status:has-text('There is no “nonsense” view')")
        assert len(tile_ids(page)) == 60 and "view=" not in page.url
        page.goto("/?q=a+red+circle&min_width=abc")
        page.wait_for_selector("#status:has-text('Min. width')")
        assert "--" not in page.inner_text("#status")
        page.goto("/?q=a+red+circle&k=1")
        # A concept deleted by one click can be put back.
        page.evaluate("""() => fetch('/api/concepts', {method: 'POST', headers: {'Content-Type': 'application/json'},
                         body: JSON.stringify({name: 'keepme', query: 'a red circle', like: [1]})})""")
        page.goto("/")
        page.click("#concept-list button[aria-label='Delete concept keepme']")
        page.wait_for_selector("#status:has-text('Deleted concept “keepme”')")
        assert page.locator("#concept-list button.concept:has-text('keepme')").count() == 0
        page.click("#status button:has-text('Undo')")
        page.wait_for_selector("#concept-list button.concept:has-text('keepme')")
        # A label asks first.
        page.evaluate("""() => fetch('/api/tags', {method: 'POST', headers: {'Content-Type': 'application/json'},
                         body: JSON.stringify({labels: ['red'], templates: 'single'})})""")
        page.goto("/?view=tags")
        page.wait_for_selector("main #view h2:has-text('Tags')")
        page.once("dialog", lambda d: d.dismiss())
        page.click("button[aria-label='Remove label red']")
        page.wait_for_timeout(300)
        assert page.locator("button[aria-label='Remove label red']").count() == 1
        page.once("dialog", lambda d: d.accept())
        page.click("button[aria-label='Remove label red']")
        page.wait_for_selector("#status:has-text('Removed the label')")
        assert page.locator("button[aria-label='Remove label red']").count() == 0
        page.goto("/?view=duplicates")
        page.wait_for_selector("main #view h2:has-text('Duplicates')")
        groups = page.evaluate("async () => (await (await fetch('/api/duplicates')).json()).groups")
        assert page.locator(".group").count() == min(20, len(groups))
        if groups:
            page.context.grant_permissions(["clipboard-read", "clipboard-write"])
            page.click("button.list-rest")
            page.wait_for_selector("#status:has-text('nothing was deleted')")
            rest = [im["path"] for g in groups for im in g["images"][1:]]
            assert sorted(page.evaluate("navigator.clipboard.readText()").split()) == sorted(rest)
            page.click(".group .tile button.open")
            page.wait_for_selector("#lightbox[open]")
            assert page.get_attribute("#lightbox", "data-image-id") == str(groups[0]["images"][0]["image_id"])


def test_phone_width_touch_targets(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.set_viewport_size({"width": 390, "height": 844})
        search(page, "a red circle")
        small = page.evaluate("""() => [...document.querySelectorAll('header button, nav button, .tile button')]
            .filter(b => b.offsetParent !== null).map(b => b.getBoundingClientRect())
            .filter(r => r.width < 44 || r.height < 44).length""")
        assert small == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.click("#grid .tile img")
        page.wait_for_selector("#lightbox[open]")
        small = page.evaluate("""() => [...document.querySelectorAll('.lb-actions button, .lb-actions a')]
            .filter(b => b.offsetParent !== null).map(b => b.getBoundingClientRect())
            .filter(r => r.width < 44 || r.height < 44).length""")
        assert small == 0


def test_search_by_a_picture_finds_its_near_copy(page: Any, tmp_path: Path) -> None:
    from PIL import Image

    with screenshot_on_failure(page, tmp_path):
        browse(page)
        target = page.evaluate("async () => (await (await fetch('/api/browse?k=9')).json()).images[8]")
        copy = tmp_path / "holiday.jpg"
        Image.open(target["path"]).convert("RGB").save(copy, "JPEG", quality=85)  # re-encoded: no byte in common
        page.set_input_files("#picture-input", str(copy))
        page.wait_for_selector("#status:has-text('for your picture (holiday.jpg)')")
        assert tile_ids(page)[0] == str(target["image_id"]) and "picture=holiday.jpg" in page.url
        page.reload()  # the picture is not kept anywhere
        page.wait_for_selector("#status:has-text('not kept')")
        assert "picture=" not in page.url
        page.evaluate("""() => { const dt = new DataTransfer();
            dt.items.add(new File(['not an image'], 'notes.txt', {type: 'text/plain'}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }""")
        page.wait_for_selector("#status:has-text('not a picture')")


def test_adaptive_cutoff_divider_and_nothing_stands_out(page: Any, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        search(page, "a red circle")
        strong = page.evaluate("""async () => (await (await fetch('/api/search?q=a+red+circle&threshold=auto'))
                                   .json()).results.map(r => String(r.image_id))""")
        assert 0 < len(strong) < 60  # the cutoff is on by default
        page.wait_for_selector("#grid .divider:has-text('Weaker matches')")
        assert tile_ids(page)[:len(strong)] == strong
        before = page.evaluate("""() => [...document.querySelector('#grid').children]
                                   .findIndex(e => e.classList.contains('divider'))""")
        assert before == len(strong)  # the divider sits right after what stands out
        assert page.inner_text("#status").startswith(f"{len(strong)} results for “a red circle” (weaker matches below)")
        # Scores keep one meaning: a like re-ranks, the number on a tile stays the CLIP similarity.
        scores = "ts => Object.fromEntries(ts.map(t => [t.dataset.imageId, t.querySelector('.score').textContent]))"
        before_like = page.eval_on_selector_all("#grid .tile", scores)
        page.click("#grid .tile[data-index='0'] button.like", force=True)
        page.wait_for_url("**like=**")
        page.wait_for_selector("#teach li")
        page.wait_for_selector("#status:has-text('“a red circle”')")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 10")
        after_like = page.eval_on_selector_all("#grid .tile", scores)
        common = set(before_like) & set(after_like)
        assert common and all(before_like[i] == after_like[i] for i in common)
        shown = page.eval_on_selector_all("#grid .score", "s => s.map(x => x.textContent)")
        assert all(-1 <= float(x) <= 1 for x in shown)
        # A query where nothing stands out says so, and still shows the closest matches.
        page.goto("/?q=an+invoice")
        page.wait_for_selector("#status:has-text('Nothing stands out for “an invoice”')")
        page.wait_for_selector("#grid .divider:has-text('Closest matches')")
        assert len(tile_ids(page)) > 0


def _axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's critical and serious violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .filter(v => v.impact === 'critical' || v.impact === 'serious')
        .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))""")
    return list(found)


def test_axe_finds_no_critical_or_serious_violations(browser: Any, base_url: str, tmp_path: Path) -> None:
    if not AXE.exists():
        pytest.skip("axe-core is not installed (pip install axe-playwright-python; the dev extra has it)")
    # The page's CSP forbids inline scripts; axe is injected by the test, so it runs with CSP bypassed.
    context = browser.new_context(base_url=base_url, viewport={"width": 1366, "height": 768}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    report: dict[str, list[dict[str, Any]]] = {}
    try:
        with screenshot_on_failure(page, tmp_path):
            browse(page)
            report["browse"] = _axe(page)
            page.evaluate("""() => fetch("/api/concepts", {
                method: "POST", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({name: 'red things', query: 'a red circle'})})""")
            search(page, "a red circle")
            page.wait_for_selector("#concept-list button.concept")
            page.focus("#grid .tile[data-index='0']")
            page.keyboard.press("Space")
            report["search, concepts, selection"] = _axe(page)
            page.keyboard.press("Escape")
            page.click("#grid .tile[data-index='1'] img")
            page.wait_for_selector("#lb-facts dt:has-text('Path')")
            report["detail"] = _axe(page)
            page.keyboard.press("Escape")
            for view in ("tags", "duplicates", "errors"):
                page.goto(f"/?view={view}")
                page.wait_for_selector("#view h2")
                report[view] = _axe(page)
            page.set_viewport_size({"width": 390, "height": 844})
            search(page, "a blue star")
            report["search at phone width"] = _axe(page)
    finally:
        context.close()
    assert report == {name: [] for name in report}, report


def test_screenshots_at_desktop_and_phone_width(browser: Any, base_url: str, tmp_path: Path) -> None:
    """The page as people see it, kept as test artifacts ($SEARCHINDEX_TEST_ARTIFACTS, else the test's folder)."""
    from PIL import Image

    folder = Path(os.environ.get("SEARCHINDEX_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name, width, height in (("desktop", 1366, 768), ("phone", 390, 844)):
        context = browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            search(page, "a red circle")
            page.wait_for_function("""() => [...document.querySelectorAll('#grid .tile img')].slice(0, 6)
                                       .every(i => i.complete && i.naturalWidth > 0)""")
            assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sideways
            shot = folder / f"page-search-{name}.png"
            page.screenshot(path=str(shot))
            with Image.open(shot) as img:
                assert img.size == (width, height)
        finally:
            context.close()


def test_a_photo_deleted_from_disk_shows_as_missing_and_can_leave_the_index(
        browser: Any, small_index: Path, small_folder: Path, tmp_path: Path) -> None:
    with serving(small_index) as url:
        context = browser.new_context(base_url=url, viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            with screenshot_on_failure(page, tmp_path):
                browse(page)
                assert len(tile_ids(page)) == 40
                gone = page.get_attribute("#grid .tile[data-index='2']", "data-image-id")
                name = page.get_attribute("#grid .tile[data-index='2'] img", "alt")
                (small_folder / name).unlink()
                page.click("#grid .tile[data-index='2'] img")
                page.wait_for_selector("#lb-missing:has-text('file is missing')")
                assert page.is_hidden("#lb-img") and page.is_hidden("#lb-file")
                page.click("#lb-missing button:has-text('Remove it from the index')")
                page.wait_for_selector("#status:has-text('Removed from the index')")
                page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 39")
                assert gone not in tile_ids(page)
        finally:
            context.close()


# -- the features' page code: People (static/people.js) and text in photos (static/ocr.js) ---------


def _context(browser: Any, url: str, **options: Any) -> Any:
    context = browser.new_context(base_url=url, viewport={"width": 1200, "height": 900}, **options)
    context.set_default_timeout(30_000)
    return context


@pytest.fixture(scope="module")
def people_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny index with real faces (tests/support/faces.py): three photos of one person, a face-free one."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    import skimage.data
    from PIL import Image

    from searchindex import Index

    from .support.faces import face_sources

    root = tmp_path_factory.mktemp("people-page")
    photos = root / "photos"
    photos.mkdir()
    face, (left, top, right, bottom) = face_sources()["astronaut"]
    face.save(photos / "astronaut.jpg", quality=92)
    face.crop((left - 100, top - 60, right + 100, bottom + 120)).save(photos / "astronaut_crop.jpg", quality=92)
    face.resize((384, 384)).save(photos / "astronaut_small.jpg", quality=92)
    Image.fromarray(skimage.data.coffee()).save(photos / "coffee.jpg", quality=92)
    with Index.create(root / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(photos)
        summary = index.find_faces()
        assert summary.faces >= 3, summary
        person = max(index.persons(), key=lambda p: p.count)
        index.name_person(person.id, "Eileen Collins")
    return root / "idx"


def test_people_view_names_faces_in_the_detail_view_and_axe(browser: Any, people_index: Path,
                                                             tmp_path: Path) -> None:
    with serving(people_index) as url:
        context = _context(browser, url, bypass_csp=True)  # axe is injected by the test
        page = context.new_page()
        try:
            with screenshot_on_failure(page, tmp_path):
                page.goto("/?view=people")
                page.wait_for_selector("main #view h2:has-text('People: ')")
                named = page.locator(".person button[title='Photos of Eileen Collins']")
                assert named.inner_text().startswith("Eileen Collins (")
                page.wait_for_function("() => [...document.querySelectorAll('.person img')]"
                                       ".every(i => i.complete && i.naturalWidth > 0)")
                if AXE.exists():
                    assert _axe(page) == []
                named.click()  # the person's photos: the search page with @"Name" in the box
                page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 3")
                assert page.input_value("#q") == '@"Eileen Collins"'
                found = tile_ids(page)
                assert len(found) == 3
                page.click("#grid .tile[data-index='0'] img")
                page.wait_for_selector("#lightbox[open] .face-box .face-name:has-text('Eileen Collins')")
                faces = page.evaluate(f"async () => (await (await fetch('/api/images/{found[0]}/faces')).json()).faces")
                boxes = page.eval_on_selector_all("#lightbox .face-box", """bs => bs.map(b => {
                    const r = b.getBoundingClientRect(), i = document.querySelector('#lb-img').getBoundingClientRect();
                    return [(r.left - i.left) / i.width, (r.top - i.top) / i.height, r.width / i.width]; })""")
                width = page.evaluate("document.querySelector('#lb-img').naturalWidth")
                assert len(boxes) == len(faces) >= 1
                # Drawn where the face is: the box from the API, scaled to the picture as shown.
                x, y, w, _ = faces[0]["box"]
                assert abs(boxes[0][0] - x / width) < 0.02 and abs(boxes[0][2] - w / width) < 0.02
        finally:
            context.close()


@pytest.fixture(scope="module")
def ocr_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny index read by the real OCR engine (as tests/support/ocrset.py renders text): a sign, a plain photo."""
    pytest.importorskip("rapidocr")
    from PIL import Image, ImageDraw, ImageFont

    from searchindex import Index

    root = tmp_path_factory.mktemp("ocr-page")
    photos = root / "photos"
    photos.mkdir()
    sign = Image.new("RGB", (640, 240), (235, 230, 215))
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 56)
    ImageDraw.Draw(sign).text((40, 80), "Pharmacy 24h", font=font, fill=(25, 25, 25))
    sign.save(photos / "sign.jpg", quality=92)
    Image.new("RGB", (640, 240), (90, 140, 200)).save(photos / "sky.jpg", quality=92)
    with Index.create(root / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(photos)
        index.ocr("en", threads=1)
    return root / "idx"


def test_ocr_words_under_a_tile_and_boxes_in_the_detail_view(browser: Any, ocr_index: Path, tmp_path: Path) -> None:
    with serving(ocr_index) as url:
        context = _context(browser, url)
        page = context.new_page()
        try:
            with screenshot_on_failure(page, tmp_path):
                page.goto("/?q=pharmacy&ocr_text=pharmacy")
                page.wait_for_selector("#status:has-text('result')")
                assert len(tile_ids(page)) == 1
                under = page.locator("#grid .tile .ocr-text")
                assert "Pharmacy" in under.inner_text()
                page.click("#grid .tile[data-index='0'] img")
                page.wait_for_selector("#lb-facts .ocr-lines li:has-text('Pharmacy')")
                page.wait_for_selector("#lightbox .ocr-layer .ocr-box")
                layer = page.eval_on_selector("#lightbox .ocr-layer", "l => l.getBoundingClientRect().toJSON()")
                img = page.eval_on_selector("#lb-img", "i => i.getBoundingClientRect().toJSON()")
                box = page.eval_on_selector("#lightbox .ocr-box", "b => b.getBoundingClientRect().toJSON()")
                # The box lies over the picture, on the sign's left half where the words are.
                assert abs(layer["width"] - img["width"]) < 2 or abs(layer["height"] - img["height"]) < 2
                assert layer["left"] <= box["left"] < box["right"] <= layer["right"] + 1
                assert box["width"] > layer["width"] / 3
        finally:
            context.close()


def test_duplicates_select_a_copy_and_move_the_rest_after_confirming(browser: Any, shapes: Shapes,
                                                                      tmp_path: Path) -> None:
    from PIL import Image

    from searchindex import Index

    photos = tmp_path / "photos"
    photos.mkdir()
    first, second = sorted(shapes.folder.glob("*.png"))[:2]
    shutil.copy2(first, photos / "original.png")
    shutil.copy2(second, photos / "other.png")
    with Image.open(first) as im:
        im.resize((im.width * 9 // 10, im.height * 9 // 10)).save(photos / "smaller copy.png")
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(photos)
    target = tmp_path / "copies"
    with serving(tmp_path / "idx") as url:
        context = _context(browser, url)
        page = context.new_page()
        try:
            with screenshot_on_failure(page, tmp_path):
                page.goto("/?view=duplicates")
                page.wait_for_selector("main #view h2:has-text('Duplicates: 1 group')")
                copy = page.locator(".group .tile").nth(1)
                copy_id = copy.get_attribute("data-image-id")
                copy.locator("button.select").click()
                page.wait_for_selector("#selection-count:has-text('1 photo selected')")
                assert copy.locator("button.select").get_attribute("aria-pressed") == "true"
                page.keyboard.press("Escape")  # clears the selection here too
                page.wait_for_selector("#selection", state="hidden")
                assert copy.locator("button.select").get_attribute("aria-pressed") == "false"
                copy.locator("button.select").click()
                page.wait_for_selector("#selection-count:has-text('1 photo selected')")
                page.context.grant_permissions(["clipboard-read", "clipboard-write"])
                page.click("#sel-copy")
                page.wait_for_selector("#status:has-text('Copied 1 path')")
                assert page.evaluate("navigator.clipboard.readText()").strip() == str(photos / "smaller copy.png")
                # Declining the confirmation moves nothing.
                answers = iter([str(target), False])
                page.on("dialog", lambda d: d.accept(next(answers)) if d.type == "prompt"
                        else (d.accept() if next(answers) else d.dismiss()))
                page.click("button.move-rest")
                page.wait_for_timeout(500)
                assert (photos / "smaller copy.png").exists() and not target.exists()
                answers = iter([str(target), True])
                page.click("button.move-rest")
                page.wait_for_selector(f"#status:has-text('Moved 1 file into {target}')")
                assert not (photos / "smaller copy.png").exists() and (target / "smaller copy.png").exists()
                moved = page.evaluate(f"async () => (await (await fetch('/api/images/{copy_id}')).json()).path")
                assert moved == str(target / "smaller copy.png")  # the same row follows the file
        finally:
            context.close()
