"""Robust image decoding: bytes in, an RGB ``PIL.Image`` (or a typed error) out."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import ImageDecodeError

__all__ = ["DEFAULT_MAX_MEGAPIXELS", "IMAGE_EXTENSIONS", "DecodedImage", "decode_image"]

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif",
})

# ISO-BMFF brands of HEIF/HEIC files (Pillow reads AVIF itself, HEIC needs pillow-heif).
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_heif_registered = False


def _register_heif() -> bool:
    """Teach Pillow HEIC through the optional pillow-heif; False when it is not installed."""
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return False
        register_heif_opener()
        _heif_registered = True
    return True


# EXIF orientations 5-8 swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image with the facts recorded in the catalog."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly reduced by draft mode
    width: int  # of the full-size, oriented image
    height: int
    format: str


def decode_image(
    data: bytes,
    name: str = "<bytes>",
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    min_side: int | None = None,
) -> DecodedImage:
    """Decode ``data`` into an RGB image, or raise :class:`ImageDecodeError`.

    Args:
        name: shown in error messages.
        max_megapixels: refuse images with more pixels than this (decompression bombs).
        min_side: when set, JPEGs are decoded at the smallest reduced scale whose
            sides are both at least this many pixels (Pillow's draft mode), which is
            much faster for large photos and loses nothing the model would see.
    """
    if not data:
        raise ImageDecodeError(name, "empty file")
    if data[8:12] in _HEIF_BRANDS and data[4:8] == b"ftyp" and not _register_heif():
        raise ImageDecodeError(
            name, "unsupported format HEIC/HEIF: install the optional extra with pip install 'searchindex[heif]'"
        )
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            width, height = img.size
            if width * height > max_megapixels * 1e6:
                raise ImageDecodeError(
                    name,
                    f"too large: {width}x{height} is {width * height / 1e6:.0f} megapixels "
                    f"(limit {max_megapixels:g})",
                )
            if fmt == "PNG":
                # Pillow skips PNG checksums when decoding; a bad one means damaged data.
                Image.open(io.BytesIO(data)).verify()
            orientation = img.getexif().get(0x0112, 1)
            if orientation in _TRANSPOSED_ORIENTATIONS:
                width, height = height, width
            if min_side and fmt == "JPEG":
                img.draft("RGB", (min_side, min_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated data, bad checksums and broken headers this way.
        raise ImageDecodeError(name, f"corrupt image: {exc}") from None
    return DecodedImage(image=img, width=width, height=height, format=fmt)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparency onto white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit greyscale: scale to 8 bits instead of clipping to white.
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")
