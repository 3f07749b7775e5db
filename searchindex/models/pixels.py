"""Model-input pixels without torch: the part of preprocessing that decode workers do.

open_clip's own preprocessing (torchvision ``Resize`` to the shortest side, bicubic,
``CenterCrop``, ``ToTensor``, ``Normalize``) is split in two: the geometric part runs
here on Pillow images and yields ``uint8`` arrays, cheap to send between processes;
the normalisation runs in the encoder's process on whole batches.  The geometry
follows torchvision's rounding exactly, so on the same decoded image both paths give
the same tensor; ``scripts/bench_index.py`` measures the end-to-end agreement
(including JPEG draft-mode decoding) against open_clip's reference path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .images import MAX_ASPECT

__all__ = ["PixelSpec", "to_pixels"]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PixelSpec:
    """What a model wants: input size, resize rule, and normalisation."""

    height: int
    width: int
    resize_mode: str  # "shortest" (resize + centre crop) or "squash"
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_open_clip(cls, cfg: Mapping[str, Any]) -> PixelSpec | None:
        """From an open_clip ``preprocess_cfg``; ``None`` when it needs open_clip's own code."""
        size = cfg.get("size")
        if size is None:
            return None
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        mode = cfg.get("resize_mode", "shortest")
        interpolation = cfg.get("interpolation", "bicubic")
        if mode not in ("shortest", "squash") or interpolation not in _RESAMPLE or cfg.get("mode", "RGB") != "RGB":
            return None
        if mode == "shortest" and height != width:
            return None
        mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
        return cls(int(height), int(width), mode, interpolation, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))

    @property
    def min_side(self) -> int:
        """The smallest decode size that loses nothing (for JPEG draft mode)."""
        return max(self.height, self.width)

    def normalise(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """``uint8`` HWC arrays to the model's float32 NCHW array (numpy: no torch needed)."""
        x = np.stack(batch).astype(np.float32)
        x /= 255.0
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "resize_mode": self.resize_mode,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, facts: Mapping[str, Any]) -> PixelSpec:
        return cls(int(facts["height"]), int(facts["width"]), str(facts["resize_mode"]), str(facts["interpolation"]),
                   tuple(float(v) for v in facts["mean"]), tuple(float(v) for v in facts["std"]))  # type: ignore[arg-type]


def to_pixels(img: Image.Image, spec: PixelSpec) -> np.ndarray:
    """Resize and crop an RGB image as torchvision would, to ``uint8`` HWC.

    An image longer than :data:`~searchindex.models.images.MAX_ASPECT` times its short side
    is resampled from the source window the centre crop keeps, straight to the model's size
    (the same sample positions), rather than resized whole first: scaling the short side of a
    1x200000 px image up to 224 px would make a 224x44,800,000 px image.  ``decode_image``
    returns such images cut already; this covers images from elsewhere.
    """
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_mode == "squash":
        out = img.resize((spec.width, spec.height), resample)
    else:
        w, h = img.size
        size = spec.height
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        if long > MAX_ASPECT * short:
            sx, sy = w / new_w, h / new_h  # source pixels per resized pixel
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            out = img.resize((size, size), resample, box=box)
        else:
            if (new_w, new_h) != (w, h):
                img = img.resize((new_w, new_h), resample)
            out = img.crop((left, top, left + size, top + size))
    return np.asarray(out.convert("RGB"), dtype=np.uint8)
