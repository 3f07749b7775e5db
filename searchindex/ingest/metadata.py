"""Photo metadata from EXIF: when, with what, and where a picture was taken.

Read from the file's header only (no pixel decoding), so it is cheap enough to
backfill an existing index without touching the model.  Dates are kept as the
photographer's local wall-clock time (``YYYY-MM-DDTHH:MM:SS``, which sorts and
compares as text) plus the UTC offset when the camera recorded one; a file with
no usable EXIF date falls back to its modification time, marked as such.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from datetime import datetime
from typing import Any

from PIL import Image

from ..fileio import read_bounded
from ..models.images import MAX_METADATA_BYTES, png_text_bytes, strip_png_text
from ..store.catalog.records import PhotoMetadata

__all__ = ["read_metadata"]

log = logging.getLogger(__name__)

# EXIF tag numbers (EXIF 2.32).
_ORIENTATION = 0x0112
_MAKE = 0x010F
_MODEL = 0x0110
_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_OFFSET_TIME_ORIGINAL = 0x9011
_OFFSET_TIME = 0x9010
_LENS_MAKE = 0xA433
_LENS_MODEL = 0xA434
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4

_EXIF_DATE = re.compile(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})\s*$")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _exif_date(value: Any) -> str | None:
    text = _text(value)
    m = _EXIF_DATE.match(text or "")
    if not m:
        return None
    try:  # cameras write "0000:00:00 00:00:00" when the clock was never set
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        return datetime(y, mo, d, h, mi, s).isoformat()
    except ValueError:
        return None


def _offset(value: Any) -> str | None:
    m = _OFFSET.match(_text(value) or "")
    if not m:
        return None
    sign, hours, minutes = m.groups()
    if int(hours) > 14 or int(minutes) > 59:
        return None
    return f"{sign}{hours}:{minutes}"


def _degrees(dms: Any, ref: Any) -> float | None:
    """Degrees, minutes, seconds (EXIF rationals) and N/S/E/W to signed degrees."""
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    if not math.isfinite(value):
        return None
    if (_text(ref) or "").upper() in ("S", "W"):
        value = -value
    return value


def _from_mtime(mtime_ns: int) -> tuple[str, str | None]:
    try:
        local = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    except (OverflowError, ValueError, OSError):
        # Beyond what datetime holds (years 1-9999; tmpfs allows 11476 or -1199): the nearest end.
        return ("9999-12-31T23:59:59" if mtime_ns > 0 else "0001-01-01T00:00:00"), None
    offset = local.strftime("%z")
    return local.replace(tzinfo=None, microsecond=0).isoformat(), f"{offset[:3]}:{offset[3:]}" if offset else None


def _exif_of(source: bytes | str | Image.Image) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(source, Image.Image):
            return source.getexif()
        if not isinstance(source, bytes):
            source, _ = read_bounded(source)  # a regular file only, of bounded size
        if png_text_bytes(source) > MAX_METADATA_BYTES:
            source = strip_png_text(source)  # EXIF is not in text chunks; their size is unbounded
        with Image.open(io.BytesIO(source)) as img:
            return img.getexif()


def read_metadata(source: bytes | str | Image.Image, mtime_ns: int) -> PhotoMetadata:
    """Date taken, camera, lens, GPS position and orientation of an image.

    ``source`` is the file's bytes or path (only the header is parsed) or an opened
    image.  Never raises: missing, malformed or unreadable fields are ``None``, and
    a missing date falls back to ``mtime_ns`` with ``date_source="mtime"``.
    """
    exif: Any = None
    try:
        exif = _exif_of(source)
    except Exception as exc:  # unreadable metadata is no reason to lose the photo
        log.debug("no EXIF: %s", exc)
    if not exif:
        taken, offset = _from_mtime(mtime_ns)
        return PhotoMetadata(taken_at=taken, taken_offset=offset, date_source="mtime")

    def ifd(tag: int) -> Any:
        try:
            return exif.get_ifd(tag)
        except Exception:  # a malformed sub-directory
            return {}

    sub, gps = ifd(_EXIF_IFD), ifd(_GPS_IFD)
    exif_taken = (_exif_date(sub.get(_DATETIME_ORIGINAL)) or _exif_date(sub.get(_DATETIME_DIGITIZED))
                  or _exif_date(exif.get(_DATETIME)))
    if exif_taken:
        taken = exif_taken
        offset, source_name = _offset(sub.get(_OFFSET_TIME_ORIGINAL) or sub.get(_OFFSET_TIME)), "exif"
    else:
        (taken, offset), source_name = _from_mtime(mtime_ns), "mtime"
    lat = _degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF)) if gps else None
    lon = _degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF)) if gps else None
    if lat is not None and lon is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        lat = lon = None
    lens = _text(sub.get(_LENS_MODEL))
    lens_make = _text(sub.get(_LENS_MAKE))
    if lens and lens_make and not lens.lower().startswith(lens_make.lower()):
        lens = f"{lens_make} {lens}"
    orientation = exif.get(_ORIENTATION)
    return PhotoMetadata(
        taken_at=taken, taken_offset=offset, date_source=source_name,
        camera_make=_text(exif.get(_MAKE)), camera_model=_text(exif.get(_MODEL)), lens=lens or lens_make,
        gps_lat=lat if lon is not None else None, gps_lon=lon if lat is not None else None,
        orientation=orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
    )
