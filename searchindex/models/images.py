"""Robust image decoding: bytes in, an RGB ``PIL.Image`` (or a typed error) out."""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import ImageDecodeError

__all__ = ["IMAGE_EXTENSIONS", "MAX_ASPECT", "DecodedImage", "bound_aspect", "check_megapixels", "decode_image"]

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


def check_megapixels(value: float) -> float:
    """``value`` as a megapixel limit, or :class:`ValueError` (``nan`` would switch the guard off)."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"the megapixel limit must be a positive number, not {value}")
    return value


def _lift_pillow_limit(max_megapixels: float) -> None:
    """Make our limit the one that applies: Pillow refuses at twice its own ``MAX_IMAGE_PIXELS``
    (~179 MP by default) before we see the image's size, so raise it to ours where it is lower.

    Only ever raised, never lowered or disabled: a program that set a larger limit (or none)
    keeps it, and ours is still enforced on the size Pillow reads from the header.
    """
    wanted = int(max_megapixels * 1e6)
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < wanted:
        Image.MAX_IMAGE_PIXELS = wanted


#: The longest side of a decoded image is at most this many times its shortest: beyond it the
#: centre is kept.  The widest panoramas are about 12:1; a model resizes the short side to its
#: input size first (224 px), so a 1x200000 px PNG (858 bytes) would otherwise become a
#: 224x44,800,000 px image (4.1 GB) before its centre is cropped; at 64:1 a 224 px model's
#: resize makes at most 3.2 megapixels.  A model that crops to the centre square sees the same
#: pixels, give or take the resampling filter's reach at the window's ends.
MAX_ASPECT = 64


def bound_aspect(img: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """``img`` with its long side cut to the centre ``max_aspect`` times its short side.

    The window is placed symmetrically (the same number of pixels dropped on each side, give
    or take the one pixel an odd remainder leaves), so the centre a model crops is the same.
    """
    w, h = img.size
    short, long = min(w, h), max(w, h)
    keep = max(1, math.ceil(short * max_aspect))
    if long <= keep:
        return img
    if (long - keep) % 2:
        keep += 1  # an even remainder: the window's centre is the image's centre
    start = (long - keep) // 2
    box = (start, 0, start + keep, h) if w > h else (0, start, w, start + keep)
    return img.crop(box)


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

    An image longer than :data:`MAX_ASPECT` times its short side is returned centre-cropped to
    that aspect ratio (``width`` and ``height`` still give its full size), so what is made of it
    afterwards (model input, thumbnail) costs memory in proportion to its short side.

    Args:
        name: shown in error messages.
        max_megapixels: refuse images with more pixels than this (decompression bombs).
        min_side: when set, JPEGs are decoded at the smallest reduced scale whose
            sides are both at least this many pixels (Pillow's draft mode), which is
            much faster for large photos and loses nothing the model would see.
    """
    max_megapixels = check_megapixels(max_megapixels)
    if not data:
        raise ImageDecodeError(name, "empty file")
    _lift_pillow_limit(max_megapixels)
    if data[:8] == _PNG_SIGNATURE and _png_text_costly(data):
        # Pillow reads (and copies, or inflates) every text chunk before the pixels, and refuses the
        # whole image over a compressed one that inflates too far; they carry nothing we decode.
        data = strip_png_text(data)
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
            img = _to_rgb(bound_aspect(img))  # cropped once oriented, before the mode conversion copies it
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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")

#: Embedded metadata (PNG text chunks) above this total is not read: a photo's notes,
#: keywords and XMP fit in far less, and a 30 MB text chunk would be copied several times.
MAX_METADATA_BYTES = 4 * 1024 * 1024


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk of a PNG, walking the headers only; stops at damage."""
    chunks = []
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            break
        chunks.append((kind, pos, end))
        if kind == b"IEND":
            break
        pos = end
    return chunks


def png_text_bytes(data: bytes) -> int:
    """Total size of the text chunks (tEXt, zTXt, iTXt) of PNG ``data``; 0 for other formats."""
    if data[:8] != _PNG_SIGNATURE:
        return 0
    return sum(end - start for kind, start, end in _png_chunks(data) if kind in _PNG_TEXT_CHUNKS)


def _png_text_costly(data: bytes) -> bool:
    """Large text chunks, or compressed ones (which may inflate without bound)."""
    chunks = _png_chunks(data)
    return (any(kind in (b"zTXt", b"iTXt") for kind, _, _ in chunks)
            or sum(end - start for kind, start, end in chunks if kind in _PNG_TEXT_CHUNKS) > MAX_METADATA_BYTES)


def strip_png_text(data: bytes) -> bytes:
    """PNG ``data`` without its text chunks (the pixels and every other chunk unchanged)."""
    chunks = _png_chunks(data)
    if not chunks:
        return data
    kept = [data[start:end] for kind, start, end in chunks if kind not in _PNG_TEXT_CHUNKS]
    return _PNG_SIGNATURE + b"".join(kept) + data[chunks[-1][2]:]


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
