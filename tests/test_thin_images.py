"""Thin images (1x200000 px and the like) cost memory in proportion to the model's input, not to
their long side scaled up: the short side is resized to the model's size before the centre crop."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchindex.models.images import MAX_ASPECT, bound_aspect, decode_image
from searchindex.models.pixels import PixelSpec, to_pixels

ROOT = Path(__file__).resolve().parent.parent
SPEC = PixelSpec(224, 224, "shortest", "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def thin(size: tuple[int, int], fmt: str, **save: object) -> bytes:
    """A valid image of ``size`` with a gradient along its long side (a few KB compressed)."""
    w, h = size
    ramp = (np.arange(w * h) % 256).astype(np.uint8)
    arr = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1).reshape((h, w, 3))
    out = io.BytesIO()
    Image.fromarray(arr).save(out, fmt, **save)
    return out.getvalue()


CASES = {
    "png-1x200000": ((1, 200_000), "PNG"),
    "png-200000x1": ((200_000, 1), "PNG"),
    "png-3x150000": ((3, 150_000), "PNG"),
    "jpeg-1x65500": ((1, 65_500), "JPEG"),
    "jpeg-65500x1": ((65_500, 1), "JPEG"),
    "gif-1x65535": ((1, 65_535), "GIF"),
    "tiff-200000x1": ((200_000, 1), "TIFF"),
    "webp-16383x1": ((16_383, 1), "WEBP"),
}


def test_bound_aspect_keeps_the_centre_and_leaves_ordinary_shapes_alone() -> None:
    pano = Image.new("RGB", (12_000, 1_000))
    assert bound_aspect(pano) is pano  # a 12:1 panorama is untouched
    strip = Image.fromarray((np.arange(1001).reshape(1, 1001) % 251).astype(np.uint8))
    cut = bound_aspect(strip)
    assert cut.size in ((MAX_ASPECT, 1), (MAX_ASPECT + 1, 1))
    dropped = 1001 - cut.size[0]
    assert dropped % 2 == 0 and np.asarray(cut)[0, 0] == (dropped // 2) % 251  # same number off each side
    assert bound_aspect(Image.new("RGB", (1, 200_000))).size == (1, MAX_ASPECT)


def test_thin_image_resampled_from_its_centre_window_matches_the_full_resize() -> None:
    """A 1x2000 image (beyond MAX_ASPECT) gives the pixels of the full resize-then-crop, which
    at this size still fits in memory (224x448,000 px), but without making that image."""
    rng = np.random.default_rng(1)
    im = Image.fromarray(np.repeat(rng.integers(0, 255, (2000, 1, 3)), 1, axis=1).astype(np.uint8))
    full = im.resize((224, 448_000), Image.Resampling.BICUBIC).crop((0, 223_888, 224, 224_112))
    diff = np.abs(to_pixels(im, SPEC).astype(int) - np.asarray(full).astype(int))
    assert diff.max() <= 1


@pytest.mark.parametrize("name", CASES)
def test_thin_image_decodes_to_model_input(name: str) -> None:
    size, fmt = CASES[name]
    data = thin(size, fmt)
    decoded = decode_image(data, name, min_side=224)
    assert (decoded.width, decoded.height) == size  # the recorded size is the file's
    assert max(decoded.image.size) <= MAX_ASPECT * min(size) + 1
    pixels = to_pixels(decoded.image, SPEC)
    assert pixels.shape == (224, 224, 3)
    # to_pixels bounds images that did not come from decode_image too (same centre).
    direct = to_pixels(Image.open(io.BytesIO(data)).convert("RGB"), SPEC)
    assert direct.shape == (224, 224, 3)


def test_ordinary_shapes_give_the_same_pixels_as_before() -> None:
    """Up to MAX_ASPECT nothing is cut: a 4:1 image's pixels equal the plain resize-and-crop."""
    im = Image.fromarray((np.random.default_rng(0).integers(0, 255, (100, 400, 3))).astype(np.uint8))
    ref = im.resize((896, 224), Image.Resampling.BICUBIC).crop((336, 0, 560, 224))
    np.testing.assert_array_equal(to_pixels(im, SPEC), np.asarray(ref))


_PEAK = """
import io, resource, sys
sys.path.insert(0, sys.argv[1])
from tests.test_thin_images import CASES, thin
from searchindex import Index
idx = Index.create(sys.argv[2], model="tiny-shapes", device="cpu")
folder = sys.argv[3]
import os
files = []
for name, (size, fmt) in CASES.items():
    path = os.path.join(folder, name + "." + fmt.lower())
    open(path, "wb").write(thin(size, fmt))
    files.append(path)
ordinary = os.path.join(folder, "ordinary.png")
open(ordinary, "wb").write(thin((300, 224), "PNG"))
idx.add_files([ordinary])
idx.search_image(ordinary, k=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = idx.add_files(files)
for f in files:
    idx.search_image(f, k=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(summary.indexed, summary.failed, (after - before) // 1024)
"""


def test_thin_images_index_and_query_in_flat_memory(tmp_path: Path) -> None:
    """Indexing and querying by every thin image above raises the peak RSS of a process that
    already indexed and queried a 300x224 image by less than 64 MB (once: 4.1 GB and 14.6 s
    for the 1x200000 PNG alone)."""
    folder = tmp_path / "thin"
    folder.mkdir()
    out = subprocess.run([sys.executable, "-c", _PEAK, str(ROOT), str(tmp_path / "idx"), str(folder)],
                         capture_output=True, text=True, check=False, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    indexed, failed, grown_mb = map(int, out.stdout.split())
    assert (indexed, failed) == (len(CASES), 0)
    assert grown_mb < 64, f"peak RSS grew by {grown_mb} MB"
