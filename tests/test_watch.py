"""A live index (issue 26): events -> batches -> the indexing path, with the real watchdog, encoder and catalog."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from searchindex import Index
from searchindex.ingest.mounts import mount_type, needs_polling
from searchindex.ingest.watch import WatchOptions
from searchindex.store.catalog.sqlite import CATALOG_FILE
from searchindex.store.lock import WriterLock

from .support.processes import killed_on_exit, sigterm

pytest.importorskip("watchdog")

FAST = WatchOptions(debounce=0.2, settle=0.3, rescan_interval=0, poll_interval=0.5)
POLLED = WatchOptions(debounce=0.2, settle=0.3, rescan_interval=0, poll_interval=0.5, polling=True)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - t0


def paths(index: Index) -> set[str]:
    return set(index.catalog.read.image_states())


@pytest.fixture()
def index(small_folder: Path, tmp_path: Path) -> Iterator[Index]:
    idx = Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu")
    idx.add_folder(small_folder)
    yield idx
    idx.close()


@pytest.fixture()
def spare(shapes, tmp_path: Path) -> list[Path]:  # noqa: ANN001
    """Ten scenes not in ``small_folder`` (which holds the first 40)."""
    return sorted(shapes.folder.glob("*.png"))[100:110]


@pytest.fixture(params=["events", "polling"])
def watching(index: Index, request: pytest.FixtureRequest) -> Iterator[Index]:
    """The index, watched with events (inotify here) or by polling (what network mounts get)."""
    handle = index.watch(options=FAST if request.param == "events" else POLLED)
    assert set(handle.modes().values()) == {request.param}
    wait_for(lambda: handle.batches >= 0 and not handle._watcher._rescan)  # the start scan is done
    index.handle = handle  # type: ignore[attr-defined]
    yield index
    handle.stop()
    assert not handle.running


def test_watch_needs_a_folder(tmp_path: Path) -> None:
    from searchindex.errors import ParameterError

    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as idx:
        with pytest.raises(ParameterError, match="no folder to watch"):
            idx.watch()


def test_new_file_is_searchable_within_seconds(watching: Index, small_folder: Path, spare: list[Path]) -> None:
    before = watching.models.images_encoded
    target = small_folder / "new.png"
    t0 = time.perf_counter()
    shutil.copy(spare[0], target)
    # Searched through another Index, as the page or another process would.
    with Index.open(watching.path, device="cpu") as reader:
        def found() -> bool:
            hits = reader.search_image(spare[0], k=1)
            return bool(hits) and hits[0].path == str(target)

        wait_for(found, timeout=10)
    assert time.perf_counter() - t0 < 5.0
    assert watching.models.images_encoded == before + 1  # the counter counts what was encoded


def test_rename_and_move_cost_no_encoder_call(watching: Index, small_folder: Path) -> None:
    first, second = sorted(small_folder.glob("*.png"))[:2]
    ids = {p: i for p, (i, *_rest) in watching.catalog.read.image_states().items()}
    before = watching.models.images_encoded
    first.rename(small_folder / "renamed.png")
    (small_folder / "sub").mkdir()
    second.rename(small_folder / "sub" / second.name)
    moved = {str(small_folder / "renamed.png"), str(small_folder / "sub" / second.name)}
    wait_for(lambda: moved <= paths(watching) and not {str(first), str(second)} & paths(watching))
    states = watching.catalog.read.image_states()
    assert states[str(small_folder / "renamed.png")][0] == ids[str(first)]  # the row followed the file
    assert str(first) not in states and watching.count() == 40
    assert watching.models.images_encoded == before  # zero encoder calls


def test_folder_moved_in_within_and_out(watching: Index, small_folder: Path, spare: list[Path],
                                        tmp_path: Path) -> None:
    outside = tmp_path / "album"
    outside.mkdir()
    for f in spare[:3]:
        shutil.copy(f, outside / f.name)
    outside.rename(small_folder / "album")  # moved in: scanned
    wait_for(lambda: watching.count() == 43)
    encoded = watching.models.images_encoded
    (small_folder / "album").rename(small_folder / "album-2024")  # within: moves, no model call
    wait_for(lambda: str(small_folder / "album-2024" / spare[0].name) in paths(watching))
    assert watching.count() == 43 and watching.models.images_encoded == encoded
    (small_folder / "album-2024").rename(tmp_path / "away")  # out of the tree: removed
    wait_for(lambda: watching.count() == 40)


def test_files_moved_and_linked_in_are_indexed(watching: Index, small_folder: Path, spare: list[Path],
                                               tmp_path: Path) -> None:
    outside = tmp_path / "downloads"
    outside.mkdir()
    shutil.copy(spare[2], outside / "moved-in.png")
    shutil.copy(spare[3], outside / "linked.png")
    t0 = time.perf_counter()
    (outside / "moved-in.png").rename(small_folder / "moved-in.png")  # a create event, no write, no close
    os.link(outside / "linked.png", small_folder / "linked.png")
    wait_for(lambda: {str(small_folder / "moved-in.png"), str(small_folder / "linked.png")} <= paths(watching))
    assert time.perf_counter() - t0 < 5.0


def test_deleted_file_leaves_the_index(watching: Index, small_folder: Path) -> None:
    victim = sorted(small_folder.glob("*.png"))[5]
    victim.unlink()
    wait_for(lambda: str(victim) not in paths(watching))
    assert watching.count() == 39


def test_temporary_file_and_rename_saves_index_once(watching: Index, small_folder: Path,
                                                    spare: list[Path]) -> None:
    before = watching.models.images_encoded
    data = spare[1].read_bytes()
    # An editor's save: write a temporary file in pieces, then rename it over the photo.
    target = sorted(small_folder.glob("*.png"))[3]
    temp = small_folder / f".{target.name}.tmp"
    with open(temp, "wb") as f:
        f.write(data[:100])
        f.flush()
        time.sleep(0.3)
        f.write(data[100:])
    temp.rename(target)
    # Another way: a temporary name with an image extension.
    temp2 = small_folder / "tmp-8f3a.png"
    temp2.write_bytes(spare[2].read_bytes())
    temp2.rename(small_folder / "saved.png")
    with Index.open(watching.path, device="cpu") as reader:
        wait_for(lambda: reader.search_image(spare[1], k=1)[0].path == str(target))
        wait_for(lambda: reader.search_image(spare[2], k=1)[0].path == str(small_folder / "saved.png"))
    time.sleep(FAST.debounce + FAST.settle + 0.3)  # nothing more comes
    assert watching.models.images_encoded == before + 2  # each save encoded once
    assert str(temp2) not in paths(watching) and watching.count() == 41


def test_file_being_written_waits_for_its_close(watching: Index, small_folder: Path, spare: list[Path]) -> None:
    if "polling" in watching.handle.modes().values():  # type: ignore[attr-defined]
        pytest.skip("polling sees no close: a file counts as written once it holds still (settle)")
    data = spare[6].read_bytes()
    target = small_folder / "camera-import.png"
    before = watching.models.images_encoded
    with open(target, "wb") as f:
        f.write(data[: len(data) // 3])
        f.flush()
        time.sleep(FAST.debounce + FAST.settle + 0.8)  # long enough to look finished by its size
        assert str(target) not in paths(watching) and not watching.failures()
        f.write(data[len(data) // 3 :])
    wait_for(lambda: str(target) in paths(watching))
    assert not watching.failures() and watching.models.images_encoded == before + 1


def test_deleted_and_recreated_folder_loses_nothing(watching: Index, small_folder: Path, tmp_path: Path) -> None:
    keep = tmp_path / "backup"
    shutil.copytree(small_folder, keep)
    handle = watching.handle  # type: ignore[attr-defined]
    shutil.rmtree(small_folder)
    wait_for(lambda: handle.modes()[str(small_folder)] == "offline")
    time.sleep(FAST.debounce + 1.0)
    assert watching.count() == 40  # a vanished root is offline, not deleted
    encoded = watching.models.images_encoded
    shutil.copytree(keep, small_folder)  # back (another copy: new inodes and mtimes, same content)
    (small_folder / sorted(os.listdir(small_folder))[0]).unlink()  # one really removed meanwhile
    wait_for(lambda: handle.modes()[str(small_folder)] != "offline")
    wait_for(lambda: watching.count() == 39 and not handle._watcher._rescan)
    assert watching.models.images_encoded == encoded  # nothing re-encoded


def test_writer_lock_is_taken_per_batch(watching: Index, small_folder: Path, spare: list[Path]) -> None:
    lock = WriterLock(watching.path)
    lock.acquire()  # another writer (searchindex index) runs
    try:
        shutil.copy(spare[3], small_folder / "while-locked.png")
        time.sleep(1.0)
        assert str(small_folder / "while-locked.png") not in paths(watching)
    finally:
        lock.release()
    wait_for(lambda: str(small_folder / "while-locked.png") in paths(watching))


def test_watch_limit_falls_back_to_polling(index: Index, small_folder: Path, spare: list[Path],
                                           monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from watchdog.observers import inotify

    def limit(self: object) -> None:  # what watchdog raises when inotify_add_watch says ENOSPC
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(inotify.InotifyEmitter, "on_thread_start", limit)
    other = small_folder.parent / "other"
    other.mkdir()
    with caplog.at_level(logging.WARNING, logger="searchindex"):
        handle = index.watch([small_folder, other], options=FAST)
        try:
            assert handle.modes() == {str(small_folder): "polling", str(other): "polling"}
            shutil.copy(spare[4], other / "polled.png")
            wait_for(lambda: str(other / "polled.png") in paths(index))
        finally:
            handle.stop()
    said = [r.getMessage() for r in caplog.records if "max_user_watches" in r.getMessage()]
    assert len(said) == 1 and "polled" in said[0]  # said once, with the sysctl


def test_missing_root_at_start_is_watched_for(index: Index, tmp_path: Path, spare: list[Path]) -> None:
    later = tmp_path / "card"
    handle = index.watch([later], options=FAST)
    try:
        assert handle.modes() == {str(later): "offline"}
        later.mkdir()
        shutil.copy(spare[5], later / "a.png")
        wait_for(lambda: str(later / "a.png") in paths(index))
    finally:
        handle.stop()


def test_network_and_fuse_mounts_are_polled(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n"
                      "server:/photos /mnt/nas nfs4 rw 0 0\n"
                      "sshfs#me@host: /mnt/my\\040box fuse.sshfs rw 0 0\n")
    assert mount_type("/mnt/nas/2024/a.jpg", str(mounts)) == "nfs4"
    assert mount_type("/mnt/my box/x", str(mounts)) == "fuse.sshfs"
    assert mount_type("/home/me", str(mounts)) == "ext4"
    assert mount_type("/mnt/nasty", str(mounts)) == "ext4"  # a prefix of a name is no parent
    assert needs_polling("nfs4") and needs_polling("fuse.sshfs") and not needs_polling("ext4")


@pytest.mark.parametrize("max_pending", [100_000, 300], ids=["events", "past-the-bound"])
def test_flood_of_files_all_indexed(index: Index, small_folder: Path, shapes, max_pending: int) -> None:  # noqa: ANN001
    # 1,000 files at once; with a bound far below the flood, the single changes are dropped and
    # the folder scanned instead.  Either way what is remembered stays within the bound.
    import threading

    handle = index.watch(options=WatchOptions(debounce=0.2, settle=0.3, rescan_interval=0, max_pending=max_pending))
    pending = handle._watcher._pending
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], pending.size())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    try:
        wait_for(lambda: not handle._watcher._rescan)
        sampler.start()
        flood = small_folder / "flood"
        shutil.copytree(shapes.folder, flood, ignore=shutil.ignore_patterns("*.jsonl"))
        wait_for(lambda: index.count() == 1040, timeout=120)
    finally:
        done.set()
        handle.stop()
    assert 0 < peak[0] <= max_pending + 1
    assert index.failures() == []


def test_cli_watch_runs_until_sigterm(index: Index, small_folder: Path, spare: list[Path]) -> None:
    import subprocess
    import sys

    index.close()
    proc = subprocess.Popen([sys.executable, "-m", "searchindex.cli", "watch", "--index", str(index.path),
                             "--device", "cpu", "--debounce", "0.2", "-v"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with killed_on_exit(proc):
        with Index.open(index.path, device="cpu") as reader:
            wait_for(lambda: reader.catalog.read.meta().get("folders") is not None)
            time.sleep(2.0)  # started, start scan done
            shutil.copy(spare[7], small_folder / "from-cli.png")
            wait_for(lambda: str(small_folder / "from-cli.png") in paths(reader), timeout=30)
        out, err = sigterm(proc, timeout=30)
    assert proc.returncode == 0, err
    assert f"Watching {small_folder} (events)" in err
    assert "1 new" in err and "SIGTERM: stopping" in err and "holds 41 images" in err


def test_serve_watch_tells_the_page(index: Index, small_folder: Path, spare: list[Path]) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from searchindex.web import create_app

    index.close()
    with TestClient(create_app(index.path, device="cpu", warm=False), base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/watch").json()["watching"] is False
    with TestClient(create_app(index.path, device="cpu", warm=False, watch=True),
                    base_url="http://127.0.0.1:8765") as c:
        first = c.get("/api/watch").json()
        assert first["watching"] is True and first["added"] == 0
        assert first["folders"] == {str(small_folder): "events"}
        assert b"/static/watch.js" in c.get("/").content and c.get("/static/watch.js").status_code == 200
        assert "/api/watch" in c.get("/openapi.json").json()["paths"]
        time.sleep(1.0)  # the start scan
        shutil.copy(spare[8], small_folder / "live.png")
        wait_for(lambda: c.get("/api/watch").json()["added"] == 1)
        hits = c.get("/api/search", params={"q": "a shape", "k": "100"}).json()
        assert str(small_folder / "live.png") in {h["path"] for h in hits["results"]}


def test_restart_catches_up_without_reencoding(index: Index, small_folder: Path, spare: list[Path]) -> None:
    handle = index.watch(options=FAST)
    wait_for(lambda: not handle._watcher._rescan)
    handle.stop()
    before = index.models.images_encoded
    shutil.copy(spare[9], small_folder / "while-stopped.png")  # missed: nobody watched
    (small_folder / sorted(os.listdir(small_folder))[0]).unlink()
    handle = index.watch(options=FAST)
    try:
        wait_for(lambda: str(small_folder / "while-stopped.png") in paths(index) and index.count() == 40)
    finally:
        handle.stop()
    assert index.models.images_encoded == before + 1  # only the new one: unchanged files are not re-encoded


@pytest.mark.parametrize("command", [["watch"], ["serve", "--watch", "--port", "0"]])
def test_nothing_to_watch_is_one_line(tmp_path: Path, command: list[str]) -> None:
    from click.testing import CliRunner

    from searchindex.cli import cli

    Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu").close()
    res = CliRunner().invoke(cli, [*command, "--index", str(tmp_path / "idx"), "--device", "cpu"])
    assert res.exit_code == 2, res.output
    assert "index one first" in res.output and "Traceback" not in res.output


def test_new_images_are_tagged_as_they_arrive(index: Index, small_folder: Path, shapes) -> None:  # noqa: ANN001
    index.tag(["circle"])
    before = dict(index.tags())["circle"]
    circles = [f for f in sorted(shapes.folder.glob("*.png"))[200:260]
               if shapes.labels[str(f.absolute())]["shape"] == "circle"][:4]
    handle = index.watch(options=FAST)
    try:
        wait_for(lambda: not handle._watcher._rescan)
        for f in circles:
            shutil.copy(f, small_folder / f.name)
        wait_for(lambda: index.count() == 40 + len(circles))
        wait_for(lambda: dict(index.tags())["circle"] >= before + len(circles) - 1)
    finally:
        handle.stop()


def test_info_lists_the_indexed_folders(index: Index, small_folder: Path) -> None:
    from click.testing import CliRunner

    from searchindex.cli import cli

    assert index.indexed_folders() == [str(small_folder)] and index.info().folders == (str(small_folder),)
    res = CliRunner().invoke(cli, ["info", "--index", str(index.path)])
    assert f"folder:     {small_folder}\n" in res.output
    gone = small_folder.parent / "gone"
    index.add_folder(small_folder.parent / "photos")  # the same folder once
    gone.mkdir()
    index.add_folder(gone)
    gone.rmdir()
    assert index.indexed_folders() == [str(small_folder), str(gone)]
    index.forget_folder(gone)
    assert index.indexed_folders() == [str(small_folder)]


@pytest.mark.slow  # about 30 s: captioning 40 images first
def test_new_images_are_captioned_by_the_index_s_captioners(index: Index, small_folder: Path, spare: list[Path],
                                                          tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.support.blip import write_tiny_blip

    model = str(write_tiny_blip(tmp_path / "blip")[0])
    index.caption(model, batch_size=8, max_new_tokens=8, num_beams=2)
    assert index.caption_counts() == {model: 40}
    handle = index.watch(options=FAST)
    try:
        wait_for(lambda: not handle._watcher._rescan)
        shutil.copy(spare[0], small_folder / "to-caption.png")
        wait_for(lambda: index.caption_counts() == {model: 41}, timeout=60)
    finally:
        handle.stop()
    without = index.watch(options=FAST, captions=False)
    try:
        shutil.copy(spare[1], small_folder / "not-captioned.png")
        wait_for(lambda: str(small_folder / "not-captioned.png") in paths(index))
        time.sleep(1.0)
    finally:
        without.stop()
    assert index.caption_counts() == {model: 41}


@pytest.mark.slow
def test_bench_watch_reports_every_figure() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "scripts/bench_watch.py", "--files", "300", "--idle", "1", "--latency", "3",
                          "--flood", "20", "--poll-interval", "1", "--compare-watchdog"],
                         cwd=root, capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    assert out["latency"]["n"] == 3 and 0 < out["latency"]["p50_s"] <= out["latency"]["p95_s"] < 5
    assert out["flood"]["files"] == 20 and out["flood"]["all_indexed_s"] > 0
    assert [out["idle"][m]["mode"] for m in ("events", "polling")] == ["events", "polling"]
    assert out["idle"]["watchdog-polling"]["rss_growth_mb"] >= 0


def _user_namespaces() -> bool:
    import subprocess

    try:
        return subprocess.run(["unshare", "-Ur", "sh", "-c", "echo 3 > /proc/sys/user/max_inotify_watches"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _user_namespaces(), reason="needs `unshare -Ur` (user namespaces) to set a watch limit")
@pytest.mark.parametrize("when", ["at-start", "later"])
def test_real_watch_limit_falls_back_to_polling(index: Index, small_folder: Path, spare: list[Path],
                                                when: str) -> None:
    """A real inotify limit, set low in a user namespace of its own: at start (3 watches for 7
    folders), or reached by folders made while watching (just enough watches for those at start)."""
    import subprocess
    import sys

    for i in range(6):
        (small_folder / f"album{i}").mkdir()
    limit = 3 if when == "at-start" else 7
    index.close()
    cli = (f"{sys.executable} -m searchindex.cli watch --index {index.path} --device cpu --debounce 0.2 "
           f"--poll-interval 0.5 -v")
    proc = subprocess.Popen(["unshare", "-Ur", "sh", "-c", f"echo {limit} > /proc/sys/user/max_inotify_watches"
                             f" && exec {cli}"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with killed_on_exit(proc):
        with Index.open(index.path, device="cpu") as reader:
            time.sleep(3.0)  # started, start scan done
            target = small_folder / "album5" / "new.png"
            if when == "later":
                for i in range(3):
                    (small_folder / f"new{i}").mkdir()
                target = small_folder / "new2" / "new.png"
                time.sleep(1.5)
            shutil.copy(spare[0], target)
            wait_for(lambda: str(target) in paths(reader), timeout=20)
        out, err = sigterm(proc, timeout=30)
    assert proc.returncode == 0, err
    assert err.count("fs.inotify.max_user_watches") == 1, err
    assert f"watching {small_folder} (polling" in err


# -- what follows the new images: text read, faces, videos --------------------------------------


@pytest.fixture()
def few(shapes, tmp_path: Path) -> Iterator[Index]:  # noqa: ANN001
    """An index of three scenes, for the enrichments that cost a real engine per image."""
    folder = tmp_path / "few"
    folder.mkdir()
    for f in sorted(shapes.folder.glob("*.png"))[:3]:
        shutil.copy(f, folder / f.name)
    idx = Index.create(tmp_path / "few-idx", model="tiny-shapes", device="cpu")
    idx.add_folder(folder)
    yield idx
    idx.close()


def _sign(path: Path, text: str) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (640, 200), (245, 240, 225))
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 56)
    ImageDraw.Draw(img).text((30, 60), text, font=font, fill=(25, 25, 25))
    tmp = path.with_suffix(".part")
    img.save(tmp, "PNG")
    tmp.rename(path)  # complete when it appears
    return path


def test_the_enrichment_choice_is_recorded_and_taken_back(few: Index) -> None:
    import sqlite3

    from searchindex.index.following import FaceChoice, face_choice, ocr_choice

    pytest.importorskip("rapidocr")
    assert ocr_choice(few.catalog) is None and face_choice(few.catalog) is None  # not used: nothing follows
    few.ocr("en")
    assert ocr_choice(few.catalog) == ("en",)
    few.forget_ocr()
    assert ocr_choice(few.catalog) is None
    few.ocr("en")
    # read before choices were recorded: followed with the reader's default languages
    with sqlite3.connect(few.path / CATALOG_FILE) as db:
        db.execute("DELETE FROM meta WHERE key = 'ocr'")
    assert ocr_choice(few.catalog) == ("en", "ko")
    pytest.importorskip("face_recognition_models")
    few.find_faces("hog", detect_side=800)
    assert face_choice(few.catalog) == FaceChoice("hog", 800)
    with sqlite3.connect(few.path / CATALOG_FILE) as db:
        db.execute("DELETE FROM meta WHERE key = 'faces'")
    assert face_choice(few.catalog) == FaceChoice()


def test_new_images_text_is_read_in_the_index_s_languages(few: Index) -> None:
    pytest.importorskip("rapidocr")
    few.ocr("en")  # English only: the watch must not load the Korean reader
    assert few.ocr_counts()["read"] == 3
    folder = Path(few.indexed_folders()[0])
    handle = few.watch(options=FAST)
    try:
        wait_for(lambda: not handle._watcher._rescan)
        sign = _sign(folder / "sign.png", "Pharmacy 24h")
        wait_for(lambda: few.ocr_counts()["read"] == 4, timeout=30)
    finally:
        handle.stop()
    hits = few.search("pharmacy", mode="text", k=3)
    assert [h.path for h in hits] == [str(sign)]
    import sqlite3

    with sqlite3.connect(few.path / CATALOG_FILE) as db:
        readers = {r for (r,) in db.execute("SELECT reader FROM ocr_states")}
    assert len(readers) == 1 and readers.pop().endswith(":en")


def test_new_faces_are_found_with_the_index_s_detector(few: Index) -> None:
    pytest.importorskip("face_recognition_models")
    from tests.support.faces import face_sources

    few.find_faces("hog", detect_side=640)
    assert few.face_counts()["images_searched"] == 3 and few.face_counts()["faces"] == 0
    folder = Path(few.indexed_folders()[0])
    photo, box = face_sources()["astronaut"]
    handle = few.watch(options=FAST)
    try:
        wait_for(lambda: not handle._watcher._rescan)
        photo.crop((box[0] - 80, box[1] - 80, box[2] + 80, box[3] + 80)).save(folder / "portrait.part", "JPEG")
        (folder / "portrait.part").rename(folder / "portrait.jpg")
        wait_for(lambda: few.face_counts()["images_searched"] == 4, timeout=30)
    finally:
        handle.stop()
    image_id = few.catalog.read.ids_by_path([str(folder / "portrait.jpg")])[str(folder / "portrait.jpg")]
    assert len(few.faces_in(image_id)) == 1
    import sqlite3

    with sqlite3.connect(few.path / CATALOG_FILE) as db:
        assert {r for (r,) in db.execute("SELECT detector FROM face_states")} == {"dlib-hog/640"}


def test_new_videos_are_indexed_like_index_does(watching: Index, small_folder: Path) -> None:
    pytest.importorskip("av")
    import random

    from searchindex.demo.videos import random_clip, write_clip
    from searchindex.store.catalog.videos import VideoReader

    rng = random.Random(3)
    staged = small_folder.parent / "clip.mp4"
    write_clip(staged, random_clip(rng, 6.0, 2), width=128, height=96, fps=5.0)
    staged.rename(small_folder / "clip.mp4")
    wait_for(lambda: str(small_folder / "clip.mp4") in paths(watching), timeout=20)
    videos, frames = VideoReader(watching.catalog.read).counts()
    assert videos == 1 and frames > 0
    clip_id = watching.catalog.read.image_states()[str(small_folder / "clip.mp4")][0]
    (small_folder / "clip.mp4").rename(small_folder / "moved.mp4")  # a move: the row follows, not read again
    wait_for(lambda: str(small_folder / "moved.mp4") in paths(watching), timeout=20)
    assert watching.catalog.read.image_states()[str(small_folder / "moved.mp4")][0] == clip_id
    assert VideoReader(watching.catalog.read).counts() == (1, frames)
    assert watching.ocr_counts()["read"] == 0  # the index does not use OCR: nothing read


def test_no_videos_keeps_them_and_watches_only_images(index: Index, small_folder: Path, spare: list[Path],
                                                      tmp_path: Path) -> None:
    pytest.importorskip("av")
    import random

    from searchindex.demo.videos import random_clip, write_clip

    rng = random.Random(4)
    kept = write_clip(small_folder / "kept.mp4", random_clip(rng, 4.0, 1), width=128, height=96, fps=5.0)
    index.add_folder(small_folder)
    assert str(kept) in paths(index)
    handle = index.watch(options=POLLED, videos=False)  # polled: the folder is synced, videos left alone
    try:
        wait_for(lambda: not handle._watcher._rescan)
        staged = tmp_path / "skipped.mp4"
        write_clip(staged, random_clip(rng, 4.0, 1), width=128, height=96, fps=5.0)
        staged.rename(small_folder / "skipped.mp4")
        shutil.copy(spare[0], small_folder / "image.png")
        wait_for(lambda: str(small_folder / "image.png") in paths(index), timeout=20)
        time.sleep(1.0)
    finally:
        handle.stop()
    assert str(kept) in paths(index) and str(small_folder / "skipped.mp4") not in paths(index)


def test_videos_are_not_read_for_text_so_batches_stay_quiet(tmp_path: Path) -> None:
    pytest.importorskip("av")
    pytest.importorskip("rapidocr")
    import random

    from searchindex.demo.videos import random_clip, write_clip

    folder = tmp_path / "lib"
    folder.mkdir()
    write_clip(folder / "a.mp4", random_clip(random.Random(1), 4.0, 1), width=128, height=96, fps=5.0)
    with Index.create(tmp_path / "i", model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
        # Tried, a video failed at every run (and would at every batch a watch enriches).
        for _ in range(2):
            summary = idx.ocr("en")
            assert (summary.read, summary.failed) == (0, 0)


def test_a_reader_that_cannot_load_is_not_chosen(few: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rapidocr")
    from searchindex.errors import ModelError
    from searchindex.index.following import ocr_choice

    monkeypatch.setenv("TESSDATA_PREFIX", str(few.path))  # no Korean data there
    monkeypatch.setattr("searchindex.models.ocr._TESSDATA_DIRS", ())
    with pytest.raises(ModelError, match="kor"):
        few.ocr("ko")
    assert ocr_choice(few.catalog) is None
