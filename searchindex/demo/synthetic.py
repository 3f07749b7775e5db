"""Seeded synthetic scenes of coloured shapes with known ground truth.

Used to train the shipped ``tiny-shapes`` model, by the offline demo, and by the
tests: every image comes with its labels, so retrieval quality can be measured
exactly.  Only Pillow and NumPy are needed (no torch).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "SHAPES",
    "SIZES",
    "Scene",
    "caption_groups",
    "random_scene",
    "render",
    "write_dataset",
    "write_duplicate_set",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

# Saturated, mutually distinct colours; none of them matches a background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 10),
    "yellow": (240, 220, 20),
    "green": (40, 185, 50),
    "blue": (35, 75, 225),
    "purple": (135, 45, 195),
    "pink": (250, 125, 195),
    "white": (248, 248, 248),
}

SIZES: tuple[str, ...] = ("small", "large")

# Textured, desaturated backgrounds so that colour words refer to the shape.
BACKGROUNDS: tuple[str, ...] = ("sand", "grass", "concrete", "night")


@dataclass(frozen=True)
class Scene:
    """The ground truth of one generated image."""

    shape: str
    color: str
    size: str
    background: str
    x: float  # centre, as a fraction of the image side
    y: float
    radius: float  # as a fraction of the image side
    angle: float  # degrees
    seed: int  # drives the background texture and colour jitter

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.color} {self.shape} on {self.background}"


def random_scene(rng: random.Random) -> Scene:
    """Draw one scene's labels and layout from ``rng``."""
    size = rng.choice(SIZES)
    radius = rng.uniform(0.27, 0.36) if size == "large" else rng.uniform(0.11, 0.16)
    margin = radius + 0.03
    return Scene(
        shape=rng.choice(SHAPES),
        color=rng.choice(list(COLORS)),
        size=size,
        background=rng.choice(BACKGROUNDS),
        x=rng.uniform(margin, 1 - margin),
        y=rng.uniform(margin, 1 - margin),
        radius=radius,
        angle=rng.uniform(-25, 25),
        seed=rng.getrandbits(31),
    )


def _background(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A textured background of ``side``x``side`` pixels as float RGB in 0..255."""
    fine = rng.normal(0.0, 1.0, (side, side, 1))
    coarse = np.array(
        Image.fromarray(rng.normal(128, 40, (8, 8)).clip(0, 255).astype(np.uint8)).resize(
            (side, side), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )[..., None] / 128.0 - 1.0
    if name == "sand":
        img = np.array([196, 176, 128], np.float32) + 14 * fine + 16 * coarse
    elif name == "grass":
        streaks = rng.normal(0, 1, (1, side, 1)).repeat(side, axis=0)
        img = np.array([68, 104, 48], np.float32) + 10 * fine + 18 * streaks + 10 * coarse
    elif name == "concrete":
        img = np.array([132, 132, 128], np.float32) + 9 * fine + 22 * coarse
    elif name == "night":
        img = np.array([18, 20, 46], np.float32) + 4 * fine + 6 * coarse
        dots = rng.random((side, side)) > 0.992
        img = np.where(dots[..., None], 200.0, img)
    else:
        raise ValueError(f"unknown background {name!r}")
    return img.clip(0, 255)


def _polygon(scene: Scene, side: int) -> list[tuple[float, float]]:
    cx, cy, r = scene.x * side, scene.y * side, scene.radius * side
    theta = math.radians(scene.angle)

    def rot(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(theta), math.sin(theta)
        return [(cx + px * c - py * s, cy + px * s + py * c) for px, py in points]

    if scene.shape == "square":
        h = r * 0.82
        return rot([(-h, -h), (h, -h), (h, h), (-h, h)])
    if scene.shape == "triangle":
        return rot([(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    if scene.shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rr * math.cos(a), rr * math.sin(a)))
        return rot(pts)
    if scene.shape == "cross":
        w = r * 0.32
        return rot(
            [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
             (-w, w), (-r, w), (-r, -w), (-w, -w)]
        )
    raise ValueError(f"no polygon for shape {scene.shape!r}")


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size`` pixels."""
    ss = 2  # draw at twice the size, then downsample: anti-aliased edges
    side = size * ss
    rng = np.random.default_rng(scene.seed)
    bg = _background(scene.background, side, rng)
    canvas = Image.fromarray(bg.astype(np.uint8), "RGB")
    jitter = rng.integers(-12, 13, 3)
    fill = tuple(int(v) for v in np.clip(np.array(COLORS[scene.color]) + jitter, 0, 255))
    draw = ImageDraw.Draw(canvas)
    if scene.shape == "circle":
        cx, cy, r = scene.x * side, scene.y * side, scene.radius * side
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(scene, side), fill=fill)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


_TEMPLATES_FULL = (
    "a photo of a {size} {color} {shape} on {background}",
    "a {size} {color} {shape} on a {background} background",
    "{size} {color} {shape}, {background}",
)
_TEMPLATES_CS = (
    "a photo of a {color} {shape}",
    "a {color} {shape}",
    "a picture of a {color} {shape}",
    "an image with a {color} {shape}",
    "{color} {shape}",
    "a {shape} that is {color}",
)
_TEMPLATES_SCS = (
    "a photo of a {size} {color} {shape}",
    "a {size} {color} {shape}",
)
_TEMPLATES_CSB = (
    "a {color} {shape} on {background}",
    "a photo of a {color} {shape} on {background}",
)
_TEMPLATES_SHAPE = ("a photo of a {shape}", "a {shape}", "a {size} {shape}")
_TEMPLATES_COLOR = ("something {color}", "a {color} object", "a photo of something {color}")
_TEMPLATES_BG = ("a photo of {background}", "something on {background}")


def caption_groups(scene: Scene) -> list[tuple[float, list[tuple[str, frozenset[str]]]]]:
    """Training captions for ``scene`` in groups: (sampling weight, [(caption, attributes)]).

    The attribute set names what the caption pins down, so a trainer can treat
    every image sharing those attributes as a positive for the caption (several
    photos of "a red circle" are all correct matches, not negatives).  Colour +
    shape phrasings, the way people search, get the most weight.
    """
    fields = {"shape": scene.shape, "color": scene.color, "size": scene.size, "background": scene.background}
    groups = [
        (0.16, _TEMPLATES_FULL, {"shape", "color", "size", "background"}),
        (0.34, _TEMPLATES_CS, {"shape", "color"}),
        (0.12, _TEMPLATES_SCS, {"shape", "color", "size"}),
        (0.12, _TEMPLATES_CSB, {"shape", "color", "background"}),
        (0.12, _TEMPLATES_SHAPE, {"shape"}),
        (0.09, _TEMPLATES_COLOR, {"color"}),
        (0.05, _TEMPLATES_BG, {"background"}),
    ]
    out = []
    for weight, templates, attrs in groups:
        captions = [
            (t.format(**fields), frozenset(attrs | ({"size"} if "{size}" in t else set()))) for t in templates
        ]
        out.append((weight, captions))
    return out


def iter_scenes(count: int, seed: int) -> Iterator[Scene]:
    """``count`` scenes drawn deterministically from ``seed``."""
    rng = random.Random(seed)
    for _ in range(count):
        yield random_scene(rng)


def write_dataset(
    out_dir: str | Path, count: int, seed: int, size: int = 64, fmt: str = "png"
) -> list[dict[str, str]]:
    """Write ``count`` images and a ``labels.jsonl`` into ``out_dir``; return the labels.

    Args:
        fmt: ``"png"`` or ``"jpeg"``.
    """
    fmt = fmt.lower()
    if fmt not in ("png", "jpeg", "jpg"):
        raise ValueError(f"format must be png or jpeg, not {fmt!r}")
    ext = "png" if fmt == "png" else "jpg"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = []
    width = max(5, len(str(count - 1)))
    for i, scene in enumerate(iter_scenes(count, seed)):
        name = f"shape_{seed}_{i:0{width}d}.{ext}"
        img = render(scene, size)
        if ext == "png":
            img.save(out / name, optimize=False)
        else:
            img.save(out / name, quality=92)
        row = {k: v for k, v in asdict(scene).items() if k in ("shape", "color", "size", "background")}
        labels.append({"file": name, **row, "caption": scene.caption})
    with open(out / "labels.jsonl", "w", encoding="utf-8") as fh:
        for row in labels:
            fh.write(json.dumps(row) + "\n")
    return labels


# -- near-duplicate sets -------------------------------------------------------

VARIANTS: tuple[str, ...] = ("resized", "recompressed", "cropped", "brightened")


def _variant(img: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    """A near-identical copy of ``img``: (image, file format, save options)."""
    from PIL import ImageEnhance

    w, h = img.size
    if kind == "resized":
        f = rng.uniform(0.5, 0.8)
        return img.resize((round(w * f), round(h * f)), Image.Resampling.LANCZOS), "png", {}
    if kind == "recompressed":
        return img, "jpeg", {"quality": rng.randint(70, 90)}
    if kind == "cropped":
        c = [round(side * rng.uniform(0.03, 0.06)) for side in (w, h, w, h)]
        return img.crop((c[0], c[1], w - c[2], h - c[3])), "png", {}
    if kind == "brightened":
        return ImageEnhance.Brightness(img).enhance(rng.uniform(1.05, 1.15)), "png", {}
    raise ValueError(f"unknown variant {kind!r}")


def write_duplicate_set(
    out_dir: str | Path, count: int = 320, seed: int = 0, size: int = 128
) -> list[dict[str, object]]:
    """Distinct scenes plus near-identical copies of some, with ground truth; return the labels.

    Each of the ``count`` originals (at most 320) has its own combination of shape,
    colour, size and background, so the originals are distinct even to a model
    that sees nothing else (the tiny model cannot tell apart two scenes that share
    all four; real photos differ in far more ways).  Each original gets a random
    subset (possibly empty) of :data:`VARIANTS`: resized to 50-80 %, recompressed
    as JPEG at quality 70-90, cropped by 3-6 % per side, brightened by 5-15 %.
    Copies are written with newer modification times than their original.
    ``labels.jsonl`` lists ``file``, ``group`` (the original's number) and ``variant``.
    """
    import itertools
    import os

    combos = list(itertools.product(SHAPES, COLORS, SIZES, BACKGROUNDS))
    if not 2 <= count <= len(combos):
        raise ValueError(f"count must be between 2 and {len(combos)}")
    rng = random.Random(seed)
    rng.shuffle(combos)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels: list[dict[str, object]] = []
    base_time = 1_600_000_000
    for group, (shape, color, size_name, background) in enumerate(combos[:count]):
        layout = random_scene(rng)
        radius = rng.uniform(0.27, 0.36) if size_name == "large" else rng.uniform(0.11, 0.16)
        scene = Scene(shape, color, size_name, background, layout.x, layout.y, radius, layout.angle, layout.seed)
        img = render(scene, size)
        files: list[tuple[str, Image.Image, str, dict[str, object], str]] = [
            (f"dup_{seed}_{group:03d}_original.png", img, "png", {}, "original")]
        kinds = [k for k in VARIANTS if rng.random() < 0.5]
        for kind in kinds:
            copy, fmt, opts = _variant(img, kind, rng)
            files.append((f"dup_{seed}_{group:03d}_{kind}.{'jpg' if fmt == 'jpeg' else 'png'}", copy, fmt, opts, kind))
        for n, (name, image, fmt, opts, kind) in enumerate(files):
            image.save(out / name, format=fmt.upper(), **opts)
            stamp = base_time + group * 100 + n  # the original is the oldest of its group
            os.utime(out / name, (stamp, stamp))
            labels.append({"file": name, "group": group, "variant": kind})
    with open(out / "labels.jsonl", "w", encoding="utf-8") as fh:
        for row in labels:
            fh.write(json.dumps(row) + "\n")
    return labels
