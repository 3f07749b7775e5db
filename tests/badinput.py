"""Builds a folder of every awkward input the indexer must survive.

``build(folder)`` writes the files and returns, per file name (relative to the
folder, as bytes-safe ``str``), what must happen: ``("fail", reason_substring)``
or ``("ok", (width, height))`` with the stored, EXIF-oriented size.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

from PIL import Image

from searchindex.demo.synthetic import iter_scenes, render

Expected = tuple[str, object]


def scene_photo(size: int = 96, seed: int = 1) -> Image.Image:
    return render(next(iter_scenes(1, seed)), size)


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 16)  # far fewer rows than claimed
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


try:
    import pillow_heif

    HAVE_HEIF = True
except ImportError:
    HAVE_HEIF = False


def heic(img: Image.Image) -> bytes:
    """A real HEIC file (with the heif extra), else just its header: enough to be recognised as HEIC."""
    if not HAVE_HEIF:
        return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, format="HEIF")
    return buf.getvalue()


def build(folder: Path) -> dict[str, Expected]:
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, Expected] = {}

    def write(name: str, data: bytes, outcome: Expected) -> None:
        (folder / name).write_bytes(data)
        expect[name] = outcome

    # -- must be recorded and skipped --------------------------------------
    write("zero-byte.jpg", b"", ("fail", "empty file"))
    good_jpeg = _jpeg(scene_photo(seed=2))
    write("truncated.jpg", good_jpeg[: len(good_jpeg) // 2], ("fail", "corrupt image"))
    write("random-bytes.jpg", os.urandom(4096), ("fail", "not a recognised image format"))
    png = bytearray(_png(scene_photo(seed=3)))
    idat = png.find(b"IDAT")
    length = int.from_bytes(png[idat - 4:idat], "big")
    png[idat + 4 + length] ^= 0xFF  # flip a byte of the IDAT checksum
    write("bad-checksum.png", bytes(png), ("fail", "corrupt image"))
    write("text-file.png", b"this is a text file, not an image\n" * 20, ("fail", "not a recognised image format"))
    write("decompression-bomb.png", _bomb_png(30_000, 30_000), ("fail", "too large"))
    os.symlink(folder / "does-not-exist.jpg", folder / "broken-link.jpg")
    expect["broken-link.jpg"] = ("fail", "broken symbolic link")
    os.symlink(folder / "loop-b.jpg", folder / "loop-a.jpg")
    os.symlink(folder / "loop-a.jpg", folder / "loop-b.jpg")
    expect["loop-a.jpg"] = ("fail", "symbolic link loop")
    expect["loop-b.jpg"] = ("fail", "symbolic link loop")
    (folder / "folder.jpg").mkdir()
    expect["folder.jpg"] = ("fail", "a directory named like an image")
    write("photo.heic", heic(scene_photo(seed=19)), ("ok", (96, 96)) if HAVE_HEIF else ("fail", "searchindex[heif]"))

    # -- must be indexed correctly -------------------------------------------
    upright = scene_photo(seed=4).resize((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    write("exif-rotated.jpg", _jpeg(upright, exif=exif.tobytes()), ("ok", (40, 80)))
    write("cmyk.jpg", _jpeg(scene_photo(seed=5).convert("CMYK")), ("ok", (96, 96)))
    grey16 = Image.fromarray(__import__("numpy").arange(96 * 96, dtype="uint16").reshape(96, 96) * 7)
    buf = io.BytesIO()
    grey16.save(buf, "PNG")
    write("sixteen-bit.png", buf.getvalue(), ("ok", (96, 96)))
    write("greyscale.jpg", _jpeg(scene_photo(seed=6).convert("L")), ("ok", (96, 96)))
    pal = scene_photo(seed=7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    write("palette-transparent.png", buf.getvalue(), ("ok", (96, 96)))
    rgba = scene_photo(seed=8).convert("RGBA")
    rgba.putalpha(128)
    write("rgba.png", _png(rgba), ("ok", (96, 96)))
    frames = [scene_photo(seed=9 + i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    write("animated.gif", buf.getvalue(), ("ok", (96, 96)))
    write("panorama.jpg", _jpeg(scene_photo(seed=12).resize((4000, 120))), ("ok", (4000, 120)))
    write("one-pixel.png", _png(Image.new("RGB", (1, 1), (255, 0, 0))), ("ok", (1, 1)))
    buf = io.BytesIO()
    scene_photo(seed=13).save(buf, "WEBP")
    write("photo.webp", buf.getvalue(), ("ok", (96, 96)))
    buf = io.BytesIO()
    scene_photo(seed=14).save(buf, "AVIF")
    write("photo.avif", buf.getvalue(), ("ok", (96, 96)))
    write("café 写真 ünïcode.png", _png(scene_photo(seed=15)), ("ok", (96, 96)))
    write("name with  spaces.png", _png(scene_photo(seed=16)), ("ok", (96, 96)))
    write("name\nwith\nnewlines.png", _png(scene_photo(seed=17)), ("ok", (96, 96)))
    latin1 = os.fsdecode(b"latin1-caf\xe9.png")  # not valid UTF-8 on disk
    with open(os.path.join(os.fsencode(folder), b"latin1-caf\xe9.png"), "wb") as fh:
        fh.write(_png(scene_photo(seed=18)))
    expect[latin1] = ("ok", (96, 96))
    return expect
