"""Video decoding with PyAV: the frames worth encoding, each with its time in seconds.

The sampling rule (:class:`Sampling`):

1. every keyframe is decoded, and only keyframes (the decoder skips the frames
   between them, which is tens of times cheaper than a full decode);
2. where two sampled frames (or the start and the first, or the last and the end)
   lie more than ``interval`` seconds apart, frames are added at every ``interval``
   across the gap (a seek to the keyframe before the gap, then a decode forward);
3. after encoding, a frame whose embedding is nearly the same as the previous kept
   frame's (cosine over ``similarity``) is dropped (see :func:`keep_distinct`), so a
   static shot costs one frame however long it lasts.

Times come from each frame's presentation timestamp, never from its index, so
variable-frame-rate files (phones) get the right second.  The rotation a phone
records in the display matrix is applied to the frames, and width and height are
those of the picture as shown.  Decoding one file is bounded in time
(``max_seconds``) and in frames; a file that cannot be read becomes a
:class:`~searchindex.errors.ImageDecodeError` with a short reason, like a corrupt photo.

PyAV (``pip install 'searchindex[video]'``) is imported lazily: without it,
:func:`available` is false and videos are reported as needing the extra.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageDecodeError

__all__ = ["VIDEO_EXTENSIONS", "DecodedVideo", "Sampling", "SampledFrame", "available", "decode_video",
           "frame_at", "keep_distinct", "probe_video"]

log = logging.getLogger(__name__)

#: File name extensions taken for videos (when the video extra is installed).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".3gp", ".mts", ".m2ts", ".mpg", ".mpeg", ".wmv",
})

#: The reason recorded for a video when PyAV is missing (the plan retries such failures every run).
MISSING_EXTRA = "a video: install the optional extra with pip install 'searchindex[video]'"


def available() -> bool:
    """Whether PyAV can be imported (the ``video`` extra is installed)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Sampling:
    """Which frames of a video are encoded (see the module docstring for the rule).

    Args:
        interval: the longest gap, in seconds, between two sampled frames before
            the similarity filter.
        similarity: a frame whose embedding has at least this cosine with the
            previous kept frame's is dropped.
        max_seconds: decoding one file longer than this (wall clock) fails it.
        max_frames: the most frames sampled from one file (a 4-hour film at a 2 s
            interval is 7,200).
        max_megapixels: a larger frame size fails the file (no 16K video is real).
        side: frames are scaled so that their shorter side is at most this many
            pixels before they leave the decoder (the model needs far fewer pixels
            than a 4K frame has, and memory stays bounded).
        skip_unneeded: while decoding forward to a gap's frame, the frames shown before
            it that no other frame refers to (most B-frames) are not decoded at all;
            the frames kept are the same (H.264 and the MPEG codecs; other decoders
            decode every frame).  Off: every frame on the way is decoded.
    """

    interval: float = 2.0
    similarity: float = 0.95
    max_seconds: float = 300.0
    max_frames: int = 4000
    max_megapixels: float = 40.0
    side: int = 256
    skip_unneeded: bool = True

    def __post_init__(self) -> None:
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(f"the sampling interval must be a positive number of seconds, not {self.interval}")
        if not 0 < self.similarity <= 1:
            raise ValueError(f"the similarity to drop a frame at must lie in (0, 1], not {self.similarity}")
        if not self.max_seconds > 0 or self.max_frames < 1 or not self.max_megapixels > 0 or self.side < 16:
            raise ValueError("the decoding limits must be positive (and side at least 16 pixels)")


@dataclass(frozen=True)
class SampledFrame:
    """One frame taken from a video: its time in seconds, whether it is a keyframe, its RGB picture."""

    time: float
    keyframe: bool
    image: Image.Image


@dataclass
class DecodedVideo:
    """What :func:`decode_video` read: the sampled frames and the facts of the video stream."""

    duration: float  # seconds
    width: int  # as shown (after rotation)
    height: int
    codec: str
    rotation: int  # degrees counter-clockwise applied to the stored picture
    frames: list[SampledFrame] = field(default_factory=list)
    keyframes: int = 0  # keyframes decoded
    decoded: int = 0  # frames decoded in all (keyframes and gap fills, counting those skipped over)
    seconds: float = 0.0  # wall clock spent decoding


class _Budget:
    """The time and frame budget of decoding one file."""

    def __init__(self, name: str, sampling: Sampling) -> None:
        self.name = name
        self.sampling = sampling
        self.deadline = time.monotonic() + sampling.max_seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise ImageDecodeError(self.name, f"video decoding took over {self.sampling.max_seconds:g} s (gave up)")


def _open(path: str) -> Any:
    import av

    try:
        if os.path.getsize(path) == 0:
            raise ImageDecodeError(path, "empty file")
    except OSError as exc:
        raise ImageDecodeError(path, f"unreadable: {exc.strerror or exc}") from None
    try:
        # metadata_errors="ignore": a tag in a broken encoding must not lose the pictures
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise ImageDecodeError(path, f"not a readable video: {_ffmpeg_reason(exc)}") from None


def _ffmpeg_reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def _video_stream(container: Any, name: str, sampling: Sampling, fast: bool = False) -> Any:
    if not container.streams.video:
        what = "audio only" if container.streams.audio else "no streams"
        raise ImageDecodeError(name, f"no video stream ({what})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise ImageDecodeError(name, "the video stream has no frame size")
    if width * height > sampling.max_megapixels * 1e6:
        raise ImageDecodeError(name, f"too large: {width}x{height} frames are {width * height / 1e6:.0f} "
                                     f"megapixels (limit {sampling.max_megapixels:g})")
    # Frame threads: keyframe decoding of one file keeps the cores busy (slice threads where frames cannot).
    ctx.thread_type = "AUTO"
    if fast:
        # No deblocking filter: its traces vanish when a frame is scaled to the model's input.  Measured on a
        # 720p H.264 clip (30 fps, B-frames): decoding CPU 0.50 s instead of 0.78 s, a mean difference of 0.3
        # levels at 224 px.  (Skipping non-reference frames too saved little more, 0.46 s, and would move
        # a gap's frame to the next reference frame.)  Set before the decoder opens.
        ctx.options = {**dict(ctx.options or {}), "skip_loop_filter": "all"}
    return stream


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1e6
    return None


def _start(stream: Any) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _rotation(frame: Any) -> int:
    """The display rotation in degrees counter-clockwise, a multiple of 90 (0 when none)."""
    try:
        angle = float(frame.rotation or 0)
    except Exception:  # an odd display matrix: show the picture as stored
        return 0
    return int(round(angle / 90.0)) * 90 % 360


def _picture(frame: Any, side: int, rotation: int) -> Image.Image:
    """The frame as an RGB picture, scaled so its shorter side is at most ``side``, and rotated to show."""
    w, h = frame.width, frame.height
    scale = min(1.0, side / max(1, min(w, h)))
    # Scaled by FFmpeg's swscale straight from YUV: a 4K frame never exists as RGB in memory.
    tw, th = max(2, round(w * scale)), max(2, round(h * scale))
    img: Image.Image = frame.to_image(width=tw, height=th)
    if rotation:
        img = img.rotate(rotation, expand=True)
    return img


def _time(frame: Any, start: float) -> float | None:
    t = frame.time
    return None if t is None else max(0.0, float(t) - start)


def _decode_frames(container: Any, stream: Any, budget: _Budget, counts: list[int],
                   keys_only: bool = False, wanted: Callable[[float], bool] | None = None) -> Iterator[Any]:
    """The stream's frames, with the budget checked; with ``keys_only``, only keyframe packets are
    decoded (demuxed packets flagged as keyframes: some decoders, VP9's, ignore a skip setting).
    A packet whose presentation time (seconds) ``wanted`` refuses is decoded only if other frames
    refer to it (the decoder's ``skip_frame`` set to non-reference frames while such packets go in).

    A decoding error after some frames ends the stream there (a truncated file keeps its start).
    """
    import av

    ctx = stream.codec_context
    tb = float(stream.time_base) if stream.time_base is not None else 0.0
    skipping = False
    try:
        for packet in container.demux(stream):
            if keys_only and packet.size and not packet.is_keyframe:
                continue
            if wanted is not None:
                skip = packet.pts is not None and not wanted(packet.pts * tb)
                if skip != skipping:
                    ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            budget.check()
            for frame in ctx.decode(packet if packet.size else None):
                counts[0] += 1
                yield frame
    except av.error.FFmpegError as exc:
        if counts[0] == 0:
            raise ImageDecodeError(budget.name, f"undecodable video: {_ffmpeg_reason(exc)}") from None
        log.warning("%s: decoding stopped at an error (%s); keeping the frames before it",
                    budget.name, _ffmpeg_reason(exc))
    finally:
        if skipping:  # the next seek decodes every frame again until told otherwise
            ctx.skip_frame = "DEFAULT"


# Decoders whose "non-reference" frames no later frame uses.  HEVC's sub-layer non-reference pictures may
# still be referred to by a higher temporal layer (slow-motion phone videos have them); AV1's dav1d and
# VP9 read the setting once, when they open, or not at all.
_NONREF_SAFE = frozenset({"h264", "mpeg4", "mpeg2video", "mpeg1video"})


def _from_next(pending: list[float], offset: float) -> Callable[[float], bool]:
    """Whether a packet shown at a stream time is wanted: at or after the first of ``pending`` (times
    from the video's start; the list shrinks as they are found) once ``offset`` is taken off it."""
    return lambda pts: not pending or pts - offset >= pending[0]


def gap_targets(times: Sequence[float], end: float, interval: float) -> list[float]:
    """Times to add so that no gap between ``times`` (sorted; and from 0, and up to ``end``) exceeds ``interval``.

    Each gap longer than ``interval`` is cut into equal parts no longer than ``interval``.
    """
    points = [0.0, *times]
    if end > points[-1]:
        points.append(end)
    targets: list[float] = []
    for a, b in zip(points, points[1:], strict=False):
        gap = b - a
        if gap > interval * 1.001:
            parts = math.ceil(gap / interval)
            targets.extend(a + gap * i / parts for i in range(1, parts))
    # The end itself: a tail longer than the interval with no frame near it.
    if end - (times[-1] if times else 0.0) > interval and (not targets or end - targets[-1] > interval / 2):
        targets.append(max(0.0, end - 0.5 * interval))
    return targets


def decode_video(path: str, sampling: Sampling | None = None) -> DecodedVideo:
    """Decode the sampled frames of the video at ``path`` (keyframes, then gap fills), in time order.

    Raises:
        ImageDecodeError: the file is empty, not a video FFmpeg reads, has no video
            stream, frames too large, nothing decodable, or decoding ran out of time.
    """
    sampling = sampling or Sampling()
    t0 = time.monotonic()
    container = _open(path)
    try:
        return _decode(container, path, sampling, t0)
    except ImageDecodeError:
        raise
    except MemoryError:
        raise ImageDecodeError(path, "out of memory while decoding this video") from None
    except Exception as exc:  # FFmpeg surprises (and PyAV's) must not stop a run
        import av

        if isinstance(exc, av.error.FFmpegError):
            raise ImageDecodeError(path, f"undecodable video: {_ffmpeg_reason(exc)}") from None
        raise
    finally:
        container.close()


def _decode(container: Any, path: str, sampling: Sampling, t0: float) -> DecodedVideo:
    stream = _video_stream(container, path, sampling, fast=True)
    budget = _Budget(path, sampling)
    start = _start(stream)
    ctx = stream.codec_context
    counts = [0]
    frames: dict[float, SampledFrame] = {}
    rotation = 0
    last = 0.0
    # 1. keyframes only: packets not flagged as keyframes never reach the decoder.  (The decoder's own skip
    # setting cannot say "keyframes": dav1d reads it once, when it opens, and would then skip them for good.)
    for frame in _decode_frames(container, stream, budget, counts, keys_only=True):
        t = _time(frame, start)
        if t is None:
            continue
        if not frames:
            rotation = _rotation(frame)
        last = max(last, t)
        if t not in frames and len(frames) < sampling.max_frames:
            frames[t] = SampledFrame(t, True, _picture(frame, sampling.side, rotation))
    keyframes = len(frames)
    duration = _duration(container, stream)
    end = max(last, (duration - start) if duration is not None else last)
    if not frames and end <= 0:
        raise ImageDecodeError(path, "no decodable video frames")
    # 2. fill the gaps: one seek per run of targets between two keyframes
    key_times = sorted(frames)
    targets = gap_targets(key_times, end, sampling.interval)
    budget_left = sampling.max_frames - len(frames)
    targets = targets[:max(0, budget_left)]
    i = 0
    while i < len(targets):
        budget.check()
        k = bisect.bisect_right(key_times, targets[i]) - 1
        group_end = key_times[k + 1] if k + 1 < len(key_times) else math.inf
        group = [t for t in targets[i:] if t < group_end]
        i += len(group)
        seek_to = key_times[k] if k >= 0 else 0.0
        try:
            container.seek(int((seek_to + start) / stream.time_base), stream=stream, backward=True)
        except Exception as exc:  # an unseekable stream: keep what the keyframe pass found
            log.warning("%s: cannot seek (%s); keeping %d keyframes", path, _ffmpeg_reason(exc), len(frames))
            break
        pending = list(group)
        # Frames shown before the next target (with 0.1 s to spare) are only the way there: those no other
        # frame refers to need no decoding.  Measured on a 20 s 1080p H.264 clip (x264 veryfast, 30 fps, one
        # keyframe): 411 frames decoded instead of 575, decoding CPU 0.75x, the same frames kept, pixel for
        # pixel.  (lowres, the decoder's reduced-size output, is not offered by the H.264 or HEVC decoders.)
        skips = sampling.skip_unneeded and ctx.name in _NONREF_SAFE
        wanted = _from_next(pending, start - 0.1) if skips else None
        for frame in _decode_frames(container, stream, budget, counts, wanted=wanted):
            t = _time(frame, start)
            if t is None or t < pending[0] - 0.02:
                continue
            if not frames:
                rotation = _rotation(frame)
            if t not in frames:
                frames[t] = SampledFrame(t, bool(frame.key_frame), _picture(frame, sampling.side, rotation))
            while pending and pending[0] <= t + 0.02:
                pending.pop(0)
            if not pending:
                break
    if not frames:
        raise ImageDecodeError(path, "no decodable video frames")
    ordered = [frames[t] for t in sorted(frames)]
    shown = ordered[0].image.size
    ratio = shown[0] / max(1, shown[1])
    w, h = int(ctx.width), int(ctx.height)
    if (ratio < 1) != (w < h) and w != h:  # rotated by 90 or 270: the picture as shown is the other way round
        w, h = h, w
    return DecodedVideo(
        duration=round(end, 3), width=w, height=h, codec=str(ctx.name), rotation=rotation, frames=ordered,
        keyframes=keyframes, decoded=counts[0], seconds=time.monotonic() - t0,
    )


def keep_distinct(vectors: np.ndarray, similarity: float) -> list[int]:
    """Indexes of the rows of ``vectors`` (unit embeddings in time order) to keep: the first, and every
    one whose cosine with the previous kept row is below ``similarity``."""
    keep: list[int] = []
    for i in range(len(vectors)):
        if not keep or float(vectors[i] @ vectors[keep[-1]]) < similarity:
            keep.append(i)
    return keep


def probe_video(path: str) -> tuple[float, int, int]:
    """(duration in seconds, width, height as shown) of a video, read from its headers and first frame."""
    container = _open(path)
    try:
        stream = _video_stream(container, path, Sampling(max_megapixels=1e9))
        start = _start(stream)
        duration = _duration(container, stream) or 0.0
        w, h = int(stream.codec_context.width), int(stream.codec_context.height)
        for frame in container.decode(stream):
            if _rotation(frame) in (90, 270):
                w, h = h, w
            break
        return max(0.0, duration - start), w, h
    finally:
        container.close()


def frame_at(path: str, seconds: float, side: int = 1024, max_seconds: float = 30.0) -> Image.Image:
    """The picture shown at ``seconds`` into the video (the first frame at or after it), for thumbnails.

    Raises:
        ImageDecodeError: the file cannot be decoded (see :func:`decode_video`).
    """
    sampling = Sampling(max_seconds=max_seconds, side=max(16, side))
    container = _open(path)
    try:
        stream = _video_stream(container, path, sampling)
        start = _start(stream)
        budget = _Budget(path, sampling)
        with_time = max(0.0, float(seconds))
        try:
            container.seek(int((with_time + start) / stream.time_base), stream=stream, backward=True)
        except Exception:  # an unseekable stream: decode from the start
            pass
        chosen = None
        for frame in _decode_frames(container, stream, budget, [0]):
            chosen = frame
            t = _time(frame, start)
            if t is not None and t >= with_time - 0.02:
                break
        if chosen is None:
            raise ImageDecodeError(path, "no decodable video frames")
        return _picture(chosen, sampling.side, _rotation(chosen))
    finally:
        container.close()
