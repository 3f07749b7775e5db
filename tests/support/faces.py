"""Photos of real faces for the people tests, made from face photos that ship in packages.

Two identities, both public domain: scikit-image's ``data.astronaut()`` (NASA's portrait of
astronaut Eileen Collins) and matplotlib's ``sample_data/grace_hopper.jpg`` (US Navy portrait of
Grace Hopper).  Each is turned into many photos (crops, scales, rotations of +-15 degrees,
brightness, blur, strong JPEG compression, mirror images) and both are pasted into scenes made of
face-free package photos (scikit-image's coffee, rocket, chelsea the cat), so that some photos hold
two faces.  Face-free photos come from the same package images.

The set is small (two people, one source photo each): it shows that detection survives these edits
and that grouping keeps two clearly different people apart and never puts one person twice in a
photo; it cannot show accuracy on look-alikes, children, siblings, ageing or crowds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

__all__ = ["FacePhoto", "face_sources", "write_face_photos"]


@dataclass(frozen=True)
class FacePhoto:
    name: str
    identities: tuple[str, ...]  # the people in the photo, left to right


def face_sources() -> dict[str, tuple[Image.Image, tuple[int, int, int, int]]]:
    """identity -> (source photo, face box left, top, right, bottom) — boxes read off the photos."""
    import matplotlib.cbook
    import skimage.data

    astronaut = Image.fromarray(skimage.data.astronaut())
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return {"astronaut": (astronaut, (170, 60, 275, 180)), "hopper": (hopper, (175, 130, 375, 340))}


def _backgrounds() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(skimage.data.coffee()), Image.fromarray(skimage.data.rocket()),
            Image.fromarray(skimage.data.chelsea())]


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, box: tuple[int, int, int, int], margin: float) -> Image.Image:
    left, top, right, bottom = box
    mw, mh = (right - left) * margin, (bottom - top) * margin
    return im.crop((max(0, int(left - mw)), max(0, int(top - mh)), min(im.width, int(right + mw)),
                    min(im.height, int(bottom + mh))))


def _variants(im: Image.Image, box: tuple[int, int, int, int]) -> dict[str, Image.Image]:
    """One identity's edited photos."""
    w, h = im.size
    return {
        "original": im,
        "crop": _crop(im, box, 0.8),
        "crop_large": _crop(im, box, 0.5).resize((600, 700)),
        "small": im.resize((int(w * 0.7), int(h * 0.7))),
        "large": im.resize((int(w * 2.5), int(h * 2.5))),
        "rot_p15": im.rotate(15, resample=Image.Resampling.BILINEAR, center=((box[0] + box[2]) / 2,
                                                                             (box[1] + box[3]) / 2)),
        "rot_m15": im.rotate(-15, resample=Image.Resampling.BILINEAR, center=((box[0] + box[2]) / 2,
                                                                              (box[1] + box[3]) / 2)),
        "dark": ImageEnhance.Brightness(im).enhance(0.55),
        "bright": ImageEnhance.Brightness(im).enhance(1.35),
        "blur": im.filter(ImageFilter.GaussianBlur(1.5)),
        "jpeg": _jpeg(im, 25),
        "flip": im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "contrast": ImageEnhance.Contrast(im).enhance(0.6),
    }


def write_face_photos(folder: Path) -> list[FacePhoto]:
    """Write the photos into ``folder``; returns what each shows."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = face_sources()
    photos: list[FacePhoto] = []
    for who, (im, box) in sources.items():
        for kind, out in _variants(im, box).items():
            name = f"{who}_{kind}.jpg"
            out.save(folder / name, quality=92)
            photos.append(FacePhoto(name, (who,)))
    rng = np.random.default_rng(5)
    crops = {who: _crop(im, box, 0.6) for who, (im, box) in sources.items()}
    for n, bg in enumerate(_backgrounds()):
        scene = bg.resize((1200, 800))
        order = ["astronaut", "hopper"] if n % 2 == 0 else ["hopper", "astronaut"]
        for slot, who in enumerate(order):
            face = crops[who]
            scale = float(rng.uniform(0.9, 1.3))
            face = face.resize((int(face.width * scale), int(face.height * scale)))
            x = 80 + slot * 600 + int(rng.integers(0, 100))
            y = int(rng.integers(50, 800 - face.height - 20))
            scene.paste(face, (x, y))
        name = f"scene_{n}.jpg"
        scene.save(folder / name, quality=90)
        photos.append(FacePhoto(name, tuple(order)))
        bg.save(folder / f"nobody_{n}.jpg", quality=90)
        photos.append(FacePhoto(f"nobody_{n}.jpg", ()))
    return photos
