"""Moments inside videos: decoding and sampling, bad files, indexing (incremental), search with timestamps.

Clips are generated with PyAV: scenes of the demo's shapes at known seconds, with
camera motion and noise, in the codecs the bundled FFmpeg encodes.  Small sizes
and 5 fps keep the default suite short.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("av")

from searchindex import Index  # noqa: E402
from searchindex.cli import cli as main  # noqa: E402
from searchindex.demo.videos import ClipScene, SyntheticClip, random_clip, write_clip  # noqa: E402
from searchindex.errors import ImageDecodeError  # noqa: E402
from searchindex.models.video import Sampling, decode_video, frame_at, gap_targets, keep_distinct  # noqa: E402
from searchindex.store.catalog.filters import Filters  # noqa: E402
from searchindex.store.catalog.videos import VideoReader  # noqa: E402

W, H, FPS = 128, 96, 5.0
CODECS = [("h264", ".mp4"), ("mpeg4", ".avi"), ("libvpx-vp9", ".webm")]
# HEVC in MOV, and AV1 in Matroska: dav1d decodes only keyframes for good if asked to skip the others when it opens.
DECODED = [*CODECS, ("hevc", ".mov"), ("libsvtav1", ".mkv")]


def _gaps(times: list[float], end: float) -> float:
    points = [0.0, *times, end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


# -- decoding -----------------------------------------------------------------


@pytest.mark.parametrize(("codec", "ext"), DECODED)
def test_keyframes_then_gap_fills_leave_no_gap_over_the_interval(tmp_path: Path, codec: str, ext: str) -> None:
    clip = random_clip(random.Random(3), 30.0, 3)
    path = write_clip(tmp_path / f"c{ext}", clip, width=W, height=H, fps=FPS, codec=codec, gop=60)
    video = decode_video(str(path), Sampling(interval=2.0))
    times = [f.time for f in video.frames]
    assert times == sorted(times)
    assert abs(video.duration - 30.0) < 0.5
    assert (video.width, video.height) == (W, H)
    assert video.keyframes >= 1
    assert _gaps(times, video.duration) <= 2.0 + 1 / FPS
    # Keyframes were decoded alone; gap fills decode from the keyframe before them, never the whole clip twice.
    assert video.decoded < 2 * 30 * FPS
    assert 10 <= len(video.frames) <= 30


def test_gap_fills_skip_the_frames_nothing_refers_to_and_keep_the_same_frames(tmp_path: Path) -> None:
    clip = random_clip(random.Random(5), 20.0, 2)
    path = write_clip(tmp_path / "b.mp4", clip, width=W, height=H, fps=FPS, codec="h264", gop=250)  # with B-frames
    every = decode_video(str(path), Sampling(skip_unneeded=False))
    fast = decode_video(str(path))
    assert [f.time for f in fast.frames] == [f.time for f in every.frames]
    for a, b in zip(fast.frames, every.frames, strict=True):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image)), a.time
    assert fast.decoded < 0.85 * every.decoded, (fast.decoded, every.decoded)


def test_frequent_keyframes_need_few_other_frames(tmp_path: Path) -> None:
    clip = random_clip(random.Random(4), 20.0, 2)
    # A keyframe about every second: the keyframes are the samples; at most the tail needs a fill.
    path = write_clip(tmp_path / "k.avi", clip, width=W, height=H, fps=FPS, codec="mpeg4", gop=int(FPS))
    video = decode_video(str(path))
    assert video.keyframes >= 18
    assert sum(not f.keyframe for f in video.frames) <= 1
    assert video.decoded <= video.keyframes + 2 * FPS  # one GOP decoded for the tail, not the clip


def test_gap_targets_split_long_gaps_evenly() -> None:
    assert gap_targets([0.0, 1.0, 2.0], 3.0, 2.0) == []
    assert gap_targets([0.0, 10.0], 10.0, 2.0) == pytest.approx([2.0, 4.0, 6.0, 8.0])
    # no keyframe after the start: the tail is filled up to the end
    targets = gap_targets([0.0], 5.0, 2.0)
    assert _gaps([0.0, *targets], 5.0) <= 2.0


def test_rotation_is_applied(tmp_path: Path) -> None:
    clip = SyntheticClip(4.0, ())
    path = write_clip(tmp_path / "r.mp4", clip, width=W, height=H, fps=FPS, rotation=90)
    video = decode_video(str(path))
    assert video.rotation == 90
    assert (video.width, video.height) == (H, W)
    assert video.frames[0].image.width < video.frames[0].image.height


def test_variable_frame_rate_times_come_from_timestamps(tmp_path: Path) -> None:
    """Frames 30 fps for 3 s, then 2 fps: the grey level of each frame is its second x 20."""
    import av

    path = tmp_path / "vfr.mkv"
    times = [i / 30 for i in range(90)] + [3 + i / 2 for i in range(14)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 1000)
        stream.codec_context.gop_size = 6
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), int(t * 20), np.uint8), format="rgb24")
            frame.pts = int(t * 1000)
            frame.time_base = stream.time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    video = decode_video(str(path), Sampling(interval=1.0))
    assert len(video.frames) >= 8
    for f in video.frames:
        grey = float(np.asarray(f.image).mean())
        assert abs(grey - f.time * 20) <= 6, (f.time, grey)


def test_frame_at_returns_the_picture_of_that_second(tmp_path: Path) -> None:
    clip = random_clip(random.Random(5), 20.0, 2)
    path = write_clip(tmp_path / "f.mp4", clip, width=W, height=H, fps=FPS)
    scene = clip.scenes[1]
    image = frame_at(str(path), (scene.start + scene.end) / 2, side=64)
    assert min(image.size) == 64
    blank = frame_at(str(path), 0.0 if clip.scenes[0].start > 1 else clip.scenes[0].end + 0.3, side=64)
    # the scene's shape is a saturated colour: the empty texture is grey
    def saturation(im: object) -> float:
        a = np.asarray(im, dtype=np.float32)
        return float((a.max(axis=2) - a.min(axis=2)).mean())
    assert saturation(image) > saturation(blank) + 10


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_bad_videos_raise_decode_errors_with_reasons(tmp_path: Path) -> None:
    good = write_clip(tmp_path / "good.mp4", random_clip(random.Random(6), 10.0, 1), width=W, height=H, fps=FPS)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mkv").write_bytes(os.urandom(4096))
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _audio_only(tmp_path / "voice.m4a")
    expected = {"empty.mp4": "empty file", "junk.mkv": "not a readable video", "cut.mp4": "not a readable video",
                "voice.m4a": "no video stream (audio only)"}
    for name, reason in expected.items():
        with pytest.raises(ImageDecodeError) as err:
            decode_video(str(tmp_path / name))
        assert reason in err.value.reason
    # A Matroska file cut in half keeps the frames of its first half.
    whole = write_clip(tmp_path / "whole.mkv", random_clip(random.Random(6), 20.0, 2), width=W, height=H, fps=FPS)
    (tmp_path / "half.mkv").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    half = decode_video(str(tmp_path / "half.mkv"))
    assert 3 <= len(half.frames) and max(f.time for f in half.frames) < 14
    with pytest.raises(ImageDecodeError, match="too large: 128x96"):
        decode_video(str(good), Sampling(max_megapixels=0.01))
    with pytest.raises(ImageDecodeError, match="gave up"):
        decode_video(str(good), Sampling(max_seconds=1e-9))


def test_keep_distinct_drops_near_copies_of_the_previous_kept_frame() -> None:
    a, b = np.eye(4, dtype=np.float32)[:2]
    near_a = (a + 0.05 * b) / np.linalg.norm(a + 0.05 * b)
    assert keep_distinct(np.stack([a, near_a, near_a, b, a]), 0.95) == [0, 3, 4]


# -- indexing and search ------------------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, SyntheticClip]]:
    """Three 40 s clips (h264, mpeg4, vp9) with 4 scenes each, a static 60 s clip, and bad files; indexed."""
    folder = tmp_path_factory.mktemp("videos") / "lib"
    (folder / "sub").mkdir(parents=True)
    rng = random.Random(11)
    used: set[tuple[str, str]] = set()
    clips = {}
    for i, (codec, ext) in enumerate(CODECS):
        clip = random_clip(rng, 40.0, 4, used=used)
        path = folder / f"clip{i}{ext}"
        write_clip(path, clip, width=W, height=H, fps=FPS, codec=codec, seed=i)
        clips[str(path)] = clip
    still = random_clip(rng, 60.0, 1, min_len=60.0, max_len=60.0, used=used)
    still = SyntheticClip(60.0, (ClipScene(0.0, 60.0, still.scenes[0].scene),))
    write_clip(folder / "sub" / "static.mp4", still, width=W, height=H, fps=FPS, motion=0.0, noise=3.0)
    clips[str(folder / "sub" / "static.mp4")] = still
    (folder / "empty.mp4").write_bytes(b"")
    _audio_only(folder / "voice.m4a")  # not a video extension: not scanned
    shutil.copy(folder / "clip0.mp4", folder / "voice.mp4")
    _audio_only(folder / "voice.mp4")
    index_path = folder.parent / "v.idx"
    with Index.create(index_path, model="tiny-shapes", device="cpu") as idx:
        summary = idx.add_folder(folder)
    assert summary.indexed == 4, summary
    assert {Path(f.path).name: f.reason for f in summary.failures} == {
        "empty.mp4": "empty file", "voice.mp4": "no video stream (audio only)"}
    return folder, index_path, clips


def test_static_clip_keeps_a_few_frames(library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    folder, index_path, _ = library
    with Index.open(index_path) as idx:
        reader = VideoReader(idx.catalog.read)
        static = idx.catalog.read.ids_by_path([str(folder / "sub" / "static.mp4")])
        frames = reader.frames(next(iter(static.values())), idx.dim)
        assert frames is not None and 1 <= len(frames.times) <= 4
        assert reader.counts()[0] == 4


def test_query_for_a_scene_finds_its_video_at_its_second(
        library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    """The floor: >= 90 % of scenes found at a time within 2 s of their span (the video ranked first
    among videos for the scene's colour and shape in >= 80 %)."""
    _, index_path, clips = library
    hits = firsts = total = 0
    misses = []
    with Index.open(index_path) as idx:
        for path, clip in clips.items():
            if "static" in path:
                continue
            for s in clip.scenes:
                total += 1
                results = idx.search(f"a {s.scene.color} {s.scene.shape}", k=10)
                ours = [r for r in results if r.path == path]
                firsts += bool(results) and results[0].path == path
                if ours and ours[0].timestamp is not None and s.start - 2 <= ours[0].timestamp <= s.end + 2:
                    hits += 1
                else:
                    misses.append((path, s, ours[0].timestamp if ours else None))
    assert hits >= 0.9 * total, misses
    assert firsts >= 0.8 * total


def test_video_results_carry_timestamp_moments_and_duration(
        library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    folder, index_path, clips = library
    with Index.open(index_path) as idx:
        results = idx.search("a circle", k=10)
    assert len(results) == 4  # one result per video, however many frames match
    assert len({r.path for r in results}) == 4
    for r in results:
        assert r.format == "video" and r.timestamp is not None and r.duration == pytest.approx(
            clips[r.path].duration, abs=0.5)
        assert all(abs(m - r.timestamp) >= 10 for m in r.moments) and len(r.moments) <= 3
        d = r.to_dict()
        assert d["timestamp"] == r.timestamp and d["moments"] == list(r.moments)


def test_filters_apply_to_videos(library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    folder, index_path, _ = library
    with Index.open(index_path) as idx:
        only_sub = idx.search("a circle", k=10, filters=Filters(paths=(str(folder / "sub"),)))
        assert [Path(r.path).name for r in only_sub] == ["static.mp4"]
        assert idx.search("a circle", k=10, filters=Filters(exclude=(str(folder),))) == []
        assert idx.search("a circle", k=10, filters=Filters(min_width=W + 1)) == []
        assert len(idx.search("a circle", k=10, filters=Filters(after="2000"))) == 4


def test_a_still_finds_the_moment_it_came_from(library: tuple[Path, Path, dict[str, SyntheticClip]],
                                               tmp_path: Path) -> None:
    _, index_path, clips = library
    path, clip = next((p, c) for p, c in clips.items() if p.endswith(".avi"))
    scene = clip.scenes[2]
    still = tmp_path / "still.png"
    frame_at(path, (scene.start + scene.end) / 2, side=H).save(still)
    with Index.open(index_path) as idx:
        results = idx.search_image(str(still), k=1)
    assert results[0].path == path
    assert results[0].timestamp is not None and scene.start - 2 <= results[0].timestamp <= scene.end + 2


def test_cli_image_with_a_still_finds_the_moment(library: tuple[Path, Path, dict[str, SyntheticClip]],
                                                tmp_path: Path) -> None:
    """`search --image STILL` (the query's image term, not only `search_image`) finds the still's second."""
    _, index_path, clips = library
    path, clip = next((p, c) for p, c in clips.items() if p.endswith(".webm"))
    scene = clip.scenes[1]
    still = tmp_path / "still.jpg"
    frame_at(path, (scene.start + scene.end) / 2, side=H).save(still)
    out = CliRunner().invoke(main, ["search", "--image", str(still), "--index", str(index_path), "-k", "1", "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output.splitlines()[0])
    assert row["path"] == path and scene.start - 2 <= row["timestamp"] <= scene.end + 2


def _video_id(idx: Index, path: str) -> int:
    return int(idx.catalog.read.ids_by_path([path])[path])


def test_a_liked_moment_is_its_nearest_kept_frame(library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    """``ID@SECONDS`` stands for the video's kept frame nearest that second: each scene's moment carries
    that scene (its text matches it best), where the video's mean picture is one blend of them all."""
    from searchindex.search.request import Moment
    from searchindex.search.shots import shot_vectors

    _, index_path, clips = library
    path, clip = next((p, c) for p, c in clips.items() if p.endswith(".avi"))
    with Index.open(index_path) as idx:
        vid = _video_id(idx, path)
        frames = VideoReader(idx.catalog.read).frames(vid, idx.dim)
        assert frames is not None
        texts = idx.encode_texts([f"a {s.scene.color} {s.scene.shape}" for s in clip.scenes])
        found = 0
        for n, s in enumerate(clip.scenes):
            middle = (s.start + s.end) / 2
            vecs, ids = shot_vectors(idx.catalog, idx.models, [Moment(vid, middle)], "like")
            nearest = int(np.argmin(np.abs(frames.times - middle)))
            assert ids == [vid] and np.array_equal(vecs[0], frames.vectors[nearest])
            found += int(np.argmax(texts @ vecs[0])) == n
        assert found >= len(clip.scenes) - 1
        past_the_end, _ = shot_vectors(idx.catalog, idx.models, [Moment(vid, 1e6)], "like")
        assert np.array_equal(past_the_end[0], frames.vectors[-1])
        mean, _ = shot_vectors(idx.catalog, idx.models, [vid], "like")
        assert not np.allclose(mean[0], frames.vectors[nearest])


def test_like_a_moment_from_the_cli_and_the_library(library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    from searchindex.errors import QueryError
    from searchindex.search.request import Moment

    _, index_path, clips = library
    path, clip = next(iter(clips.items()))
    s = clip.scenes[0]
    with Index.open(index_path) as idx:
        vid = _video_id(idx, path)
        results = idx.search("a circle", k=10, like=[Moment(vid, s.start + 0.5)])
        assert results and path not in {r.path for r in results}  # the example itself is left out, as an image is
        with pytest.raises(QueryError, match="no video with id 999999"):
            idx.search("a circle", like=[Moment(999999, 3.0)])
        with pytest.raises(QueryError, match="a second from the start"):
            Moment(vid, -1.0)
    runner = CliRunner()
    out = runner.invoke(main, ["search", "a circle", "--index", str(index_path), "--like", f"{vid}@{s.start + 0.5}",
                               "--unlike", f"{vid}@{clip.scenes[-1].start + 0.5:g}", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert rows and path not in {r["path"] for r in rows}
    bad = runner.invoke(main, ["search", "a circle", "--index", str(index_path), "--like", "999999@3"])
    assert bad.exit_code != 0 and "no video with id 999999" in bad.output
    assert "ID@SECONDS" in runner.invoke(main, ["search", "--help"]).output


def test_cli_prints_the_moment_and_json_carries_it(library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    _, index_path, clips = library
    path, clip = next(iter(clips.items()))
    s = clip.scenes[0]
    runner = CliRunner()
    out = runner.invoke(main, ["search", f"a {s.scene.color} {s.scene.shape}", "--index", str(index_path), "-k",
                               "1", "--moments"])
    assert out.exit_code == 0, out.output
    assert f"{path} @ " in out.output
    out = runner.invoke(main, ["search", f"a {s.scene.color} {s.scene.shape}", "--index", str(index_path), "-k",
                               "1", "--json"])
    row = json.loads(out.output.splitlines()[0])
    assert row["path"] == path and s.start - 2 <= row["timestamp"] <= s.end + 2 and isinstance(row["moments"], list)
    minutes, seconds = divmod(int(row["timestamp"]), 60)
    assert f"@ {minutes:02d}:{seconds:02d}" in runner.invoke(
        main, ["search", f"a {s.scene.color} {s.scene.shape}", "--index", str(index_path), "-k", "1"]).output


def test_incremental_moved_changed_deleted_and_no_videos(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    rng = random.Random(21)
    a = write_clip(folder / "a.mp4", random_clip(rng, 20.0, 2), width=W, height=H, fps=FPS)
    b = write_clip(folder / "b.mp4", random_clip(rng, 20.0, 2), width=W, height=H, fps=FPS, seed=1)
    with Index.create(tmp_path / "i.idx", model="tiny-shapes", device="cpu") as idx:
        reader = VideoReader(idx.catalog.read)
        assert idx.add_folder(folder).new == 2
        frames_before = reader.counts()[1]
        again = idx.add_folder(folder)
        assert (again.unchanged, again.indexed) == (2, 0)
        (folder / "sub").mkdir()
        moved = folder / "sub" / "a2.mp4"
        a.rename(moved)
        run = idx.add_folder(folder)
        assert (run.moved, run.indexed) == (1, 0)
        assert reader.counts() == (2, frames_before)
        hit = idx.search("a circle", k=5, filters=Filters(paths=(str(folder / "sub"),)))
        assert [r.path for r in hit] == [str(moved)] and hit[0].timestamp is not None
        # changed content at the same path: read again, frames replaced
        write_clip(b, random_clip(rng, 10.0, 1), width=W, height=H, fps=FPS, seed=2)
        run = idx.add_folder(folder)
        assert (run.modified, run.indexed) == (1, 1)
        b_id = idx.catalog.read.ids_by_path([str(b)])[str(b)]
        frames = reader.frames(b_id, idx.dim)
        assert frames is not None and frames.duration == pytest.approx(10.0, abs=0.5)
        # --no-videos: nothing read, nothing indexed before is dropped
        run = idx.add_folder(folder, videos=False)
        assert (run.scanned, run.deleted) == (0, 0) and reader.counts()[0] == 2
        b.unlink()
        run = idx.add_folder(folder)
        assert run.deleted == 1
        assert reader.counts()[0] == 1
        assert reader.frames(b_id, idx.dim) is None
        assert idx.catalog.read._rows("SELECT COUNT(*) FROM video_frames WHERE image_id = ?", (b_id,))[0][0] == 0


# -- the page -----------------------------------------------------------------


def test_byte_ranges() -> None:
    from searchindex.web.videos import byte_range

    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-", 100) == (0, 99)
    assert byte_range("bytes=10-19", 100) == (10, 19)
    assert byte_range("bytes=90-200", 100) == (90, 99)
    assert byte_range("bytes=-30", 100) == (70, 99)
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole file
    for bad in ("bytes=100-", "bytes=20-10", "bytes=-0"):
        with pytest.raises(ValueError):
            byte_range(bad, 100)


def test_web_serves_videos_by_id_with_ranges_and_moment_thumbnails(
        library: tuple[Path, Path, dict[str, SyntheticClip]], tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from searchindex.web import create_app

    folder, index_path, clips = library
    copy = tmp_path / "v.idx"
    shutil.copytree(index_path, copy)  # the thumbnail cache writes into the index folder
    path = next(iter(clips))
    size = Path(path).stat().st_size
    with TestClient(create_app(copy, device="cpu", warm=False), base_url="http://127.0.0.1:8000") as client:
        found = client.get("/api/search", params={"q": "a circle", "k": 10}).json()
        rows = found["results"] if isinstance(found, dict) else found
        row = next(r for r in rows if r["path"] == path)
        assert row["timestamp"] is not None and row["duration"] > 0 and isinstance(row["moments"], list)
        vid = row["image_id"]
        whole = client.get(f"/api/images/{vid}/video")
        assert whole.status_code == 200 and len(whole.content) == size
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
        part = client.get(f"/api/images/{vid}/video", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == Path(path).read_bytes()[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{size}"
        assert client.get(f"/api/images/{vid}/video", headers={"Range": f"bytes={size}-"}).status_code == 416
        thumb = client.get(f"/api/images/{vid}/thumbnail", params={"size": 128, "t": row["timestamp"]})
        assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")
        assert "X-Thumbnail" not in thumb.headers
        other = client.get(f"/api/images/{vid}/thumbnail", params={"size": 128, "t": 0})
        assert other.headers["etag"] != thumb.headers["etag"]  # each moment its own cached frame
        assert client.get("/static/video.js").status_code == 200
        liked = client.get("/api/search", params={"q": "a circle", "like": f"{vid}@{row['timestamp']}"})
        assert liked.status_code == 200, liked.text
        liked_rows = liked.json()["results"] if isinstance(liked.json(), dict) else liked.json()
        assert path not in {r["path"] for r in liked_rows}
        assert client.get("/api/search", params={"q": "a circle", "unlike": f"{vid}@1.5"}).status_code == 200
        assert client.get("/api/search", params={"q": "a circle", "like": "12@x"}).status_code == 400
        assert client.get("/api/search", params={"image": f"{vid}@1.5"}).status_code == 400
        assert client.get("/api/images/999999/video").status_code == 404
        # never by path, and never a file changed since it was indexed
        st = Path(path).stat()
        os.utime(path, ns=(1, 1))
        try:
            assert client.get(f"/api/images/{vid}/video").status_code == 404
        finally:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_check_reports_damaged_video_rows(library: tuple[Path, Path, dict[str, SyntheticClip]],
                                          tmp_path: Path) -> None:
    import sqlite3

    from searchindex.store.check import check_index

    _, index_path, _ = library
    copy = tmp_path / "c.idx"
    shutil.copytree(index_path, copy)
    assert check_index(copy, files=False).ok
    with Index.open(copy) as idx:
        info = idx.info()
    assert info.videos == 4 and info.video_frames >= 8
    db = sqlite3.connect(copy / "catalog.sqlite")
    first = db.execute("SELECT MIN(image_id) FROM video_frames").fetchone()[0]
    db.execute("DELETE FROM video_frames WHERE image_id = ?", (first,))
    db.execute("INSERT INTO video_frames (image_id, time, embedding) VALUES (99999, 1.0, x'00')")
    db.commit()
    db.close()
    report = check_index(copy, files=False)
    messages = " | ".join(f.message for f in report.findings)
    assert not report.ok and "1 videos have no frames" in messages and "belong to no indexed video" in messages
    assert "wrong size" in messages


def test_a_video_is_captioned_by_its_middle_frame(tmp_path: Path) -> None:
    from searchindex.enrich.captions import _read_image

    clip = SyntheticClip(20.0, (ClipScene(8.0, 12.0, random_clip(random.Random(8), 20.0, 1).scenes[0].scene),))
    path = write_clip(tmp_path / "m.mp4", clip, width=W, height=H, fps=FPS)
    middle = np.asarray(_read_image(str(path), 64), dtype=np.float32)
    start = np.asarray(frame_at(str(path), 1.0, side=64), dtype=np.float32)
    # the scene (a saturated shape) shows at 10 s, the empty grey texture at 1 s
    assert (middle.max(axis=2) - middle.min(axis=2)).mean() > (start.max(axis=2) - start.min(axis=2)).mean() + 10


def test_a_killed_run_leaves_no_video_without_frames_and_resumes(tmp_path: Path) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from searchindex.store.check import check_index

    folder = tmp_path / "lib"
    folder.mkdir()
    rng = random.Random(31)
    for i in range(6):
        write_clip(folder / f"v{i}.mp4", random_clip(rng, 12.0, 2), width=96, height=72, fps=FPS, seed=i)
    index = tmp_path / "k.idx"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(index), "--model",
           "tiny-shapes", "--device", "cpu", "--batch-size", "1", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            con = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)
            rows = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            con.close()
        except sqlite3.Error:
            rows = 0
        if rows >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= rows < 6 and proc.returncode == -signal.SIGKILL, (rows, proc.returncode)
    assert check_index(index, files=False).ok  # every video row committed has its frames, and no frame is orphaned
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Index.open(index) as idx:
        videos, frames = VideoReader(idx.catalog.read).counts()
        assert videos == 6 and idx.count() == 6
        rows_left = idx.catalog.read._rows("SELECT COUNT(*) FROM video_frames")[0][0]
        assert rows_left == frames


def test_a_word_match_carries_the_duration_but_no_moment(library: tuple[Path, Path, dict[str, SyntheticClip]]) -> None:
    _, index_path, clips = library
    with Index.open(index_path) as idx:
        results = idx.search("static", k=5, mode="text")  # the file name static.mp4
    assert [Path(r.path).name for r in results] == ["static.mp4"]
    assert results[0].timestamp is None and results[0].moments == () and results[0].duration == pytest.approx(60, abs=1)
