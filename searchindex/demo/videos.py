"""Seeded synthetic videos: scenes of the demo's shapes that appear and disappear at known seconds.

Used by the tests and ``scripts/bench_video.py`` to measure whether a query for a
scene's content finds the video at the right second.  Each clip is written with
PyAV (the ``video`` extra) in a codec its bundled FFmpeg encodes; between scenes
the picture is an empty, drifting texture.  Scenes pan slowly (camera motion) and
every frame carries fresh noise, so no two frames are byte-identical.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .synthetic import Scene, random_scene, render

__all__ = ["ClipScene", "SyntheticClip", "random_clip", "write_clip"]


@dataclass(frozen=True)
class ClipScene:
    """A shape scene shown from ``start`` to ``end`` seconds."""

    start: float
    end: float
    scene: Scene


@dataclass(frozen=True)
class SyntheticClip:
    """A clip's ground truth: its length and the scenes in it."""

    duration: float
    scenes: tuple[ClipScene, ...]


def random_clip(rng: random.Random, duration: float, scenes: int, min_len: float = 4.0,
                max_len: float = 10.0, used: set[tuple[str, str]] | None = None) -> SyntheticClip:
    """``scenes`` scenes of ``min_len``..``max_len`` seconds, spread over ``duration`` seconds with gaps
    between them, each a different colour and shape pair (so a query names exactly one).

    ``used``: (colour, shape) pairs to avoid, updated with this clip's (distinct scenes across clips).
    """
    slot = duration / scenes
    used = set() if used is None else used
    out = []
    for i in range(scenes):
        while True:
            scene = random_scene(rng)
            if (scene.color, scene.shape) not in used:
                break
        # Large shapes: the moment is what the picture is of, not a detail in a corner.
        scene = Scene(scene.shape, scene.color, "large", scene.background, 0.5, 0.5, 0.3, scene.angle,
                      scene.seed)
        used.add((scene.color, scene.shape))
        length = min(rng.uniform(min_len, max_len), slot * 0.8)
        start = i * slot + rng.uniform(0, slot - length)
        out.append(ClipScene(round(start, 2), round(start + length, 2), scene))
    return SyntheticClip(duration, tuple(out))


def _empty(side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = np.array(Image.fromarray(rng.normal(110, 30, (6, 6)).clip(0, 255).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.stack([coarse * 0.9, coarse, coarse * 1.1], axis=-1).clip(0, 255)


def write_clip(path: str | Path, clip: SyntheticClip, *, width: int = 160, height: int = 120, fps: float = 10.0,
               codec: str = "h264", gop: int | None = None, motion: float = 0.08, noise: float = 6.0,
               rotation: int = 0, seed: int = 0, options: dict[str, str] | None = None) -> Path:
    """Write ``clip`` as a video file at ``path``.

    Args:
        codec: an FFmpeg encoder name PyAV knows (``h264``, ``mpeg4``, ``libvpx-vp9``, ``hevc``, ...).
        gop: frames between keyframes (default: the encoder's own choice).
        motion: how far the camera pans over a scene, as a fraction of the frame.
        noise: standard deviation of the per-frame noise, in 8-bit levels.
        rotation: a display rotation (degrees counter-clockwise) recorded in the stream.
        options: encoder options (``{"preset": "ultrafast"}`` for x264 at large sizes).
    """
    import av

    path = Path(path)
    rng = np.random.default_rng(seed)
    side = max(width, height)
    canvas_side = int(side * (1 + motion)) + 2
    pictures = {id(s): np.asarray(render(s.scene, size=min(canvas_side, 512)).resize(
        (canvas_side, canvas_side), Image.Resampling.BILINEAR), dtype=np.float32) for s in clip.scenes}
    empty = _empty(canvas_side, seed)
    # A few noise fields in turn: fresh-looking noise without drawing millions of samples per 4K frame.
    fields = [rng.normal(0, noise, (height, width, 3)).astype(np.float32) for _ in range(5)] if noise else []
    rate = round(fps) if float(fps).is_integer() else fps
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec in ("libvpx-vp9", "libvpx"):  # libvpx's default "good" deadline is 30x slower than realtime
            stream.options = {"deadline": "realtime", "cpu-used": "8", **(options or {})}
        elif options:
            stream.options = dict(options)
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        n = int(round(clip.duration * fps))
        for i in range(n):
            t = i / fps
            shown = next((s for s in clip.scenes if s.start <= t < s.end), None)
            base = pictures[id(shown)] if shown else empty
            progress = (t - shown.start) / max(1e-6, shown.end - shown.start) if shown else (t / clip.duration)
            off = int(progress * motion * side)
            top = (canvas_side - height) // 2
            frame = base[top:top + height, off:off + width]
            if fields:
                frame = frame + fields[i % len(fields)]
            frame = frame.clip(0, 255).astype(np.uint8)
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
