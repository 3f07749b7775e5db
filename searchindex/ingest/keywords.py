"""Words people already wrote about their photos: embedded XMP/IPTC and sidecar files.

CLIP sees pixels; a photo tagged "grandma" or "Oktoberfest 2019" carries words no
pixel shows.  This module reads them so the catalog can search them as text:

- XMP packets embedded in JPEG, PNG, TIFF and WebP files: ``dc:subject`` (the
  keyword bag) and ``dc:description``;
- IPTC-IIM records (JPEG/TIFF): 2:25 keywords and 2:120 caption;
- sidecar files next to the image: ``photo.jpg.txt`` or ``photo.txt`` (plain
  text) and ``photo.xmp`` or ``photo.jpg.xmp`` (an XMP document, as Lightroom
  and darktable write them).

Every reader is header-only (no pixel decoding) and returns plain data, so it runs
in the indexer's worker processes.  Malformed metadata is logged at debug level
and ignored: it never costs the image its place in the index.

XML is parsed with the standard library, which expands internal entities: a
packet with a DTD (``<!DOCTYPE``/``<!ENTITY``) is refused outright, which rules
out entity-expansion bombs and external entities without needing defusedxml.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from typing import Any

from ..defaults import MAX_KEYWORDS
from ..fileio import read_bounded

__all__ = [
    "SIDECAR_SUFFIXES",
    "SOURCES",
    "read_embedded_texts",
    "read_sidecar_texts",
    "read_texts",
    "sidecar_paths",
    "sidecar_signature",
]

log = logging.getLogger(__name__)

#: Every ``source`` this module produces, in the order texts are returned.
SOURCES = ("xmp:subject", "xmp:description", "iptc:keywords", "iptc:caption", "sidecar:txt", "sidecar:xmp")

#: Sidecar names, relative to an image ``photo.jpg``: suffixes added to the full name
#: (``photo.jpg.txt``) or replacing its extension (``photo.txt``).
SIDECAR_SUFFIXES = (".txt", ".xmp")

# Larger sidecars or packets are not notes about a photo; reading them would only cost time.
MAX_SIDECAR_BYTES = 256 * 1024
MAX_XMP_BYTES = 4 * 1024 * 1024

#: Characters kept of one text (a source's joined keywords, or its notes) of one image.
MAX_TEXT_CHARS = 32 * 1024

_NS_DC = "http://purl.org/dc/elements/1.1/"
_NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_NS_XML = "http://www.w3.org/XML/1998/namespace"

Texts = list[tuple[str, str]]


def _decode(data: bytes) -> str:
    """UTF-8 (what XMP and modern IPTC writers use), else Latin-1 (old IPTC), never an error."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\x00", "").strip()


def _clean(values: Iterable[str]) -> list[str]:
    """Non-empty, whitespace-normalised, first occurrence of each (case-insensitive), at most
    :data:`MAX_KEYWORDS` of them (the rest are dropped, with a debug message)."""
    out: list[str] = []
    seen: set[str] = set()
    for v in values:
        v = " ".join(v.split())
        if v and v.casefold() not in seen:
            if len(out) == MAX_KEYWORDS:
                log.debug("keeping the first %d keywords of a longer list", MAX_KEYWORDS)
                break
            seen.add(v.casefold())
            out.append(v)
    return out


def _bounded(texts: Texts) -> Texts:
    """``texts`` with each text cut to :data:`MAX_TEXT_CHARS` (at a separator where there is one)."""
    out: Texts = []
    for source, text in texts:
        if len(text) > MAX_TEXT_CHARS:
            cut = text[:MAX_TEXT_CHARS]
            at = max(cut.rfind(", "), cut.rfind("\n"))
            text = cut[:at] if at > 0 else cut
        out.append((source, text))
    return out


# -- XMP --------------------------------------------------------------------------


def parse_xmp(packet: bytes | str) -> tuple[list[str], list[str]]:
    """(keywords, descriptions) of an XMP packet or sidecar document.

    Raises:
        ValueError: the packet has a DTD (refused, see the module docstring) or is not XML.
    """
    data = packet.encode("utf-8") if isinstance(packet, str) else bytes(packet)
    if len(data) > MAX_XMP_BYTES:
        raise ValueError(f"XMP packet of {len(data)} bytes is too large")
    data = data.replace(b"\x00", b"").strip()
    upper = data.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise ValueError("XMP packet with a DTD refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"malformed XMP: {exc}") from None
    subjects: list[str] = []
    descriptions: list[str] = []
    for element in root.iter():
        # Short form: <rdf:Description dc:description="..."> (some writers use attributes).
        for attr, value in element.attrib.items():
            if attr == f"{{{_NS_DC}}}subject":
                subjects += value.split(",")
            elif attr == f"{{{_NS_DC}}}description":
                descriptions.append(value)
        if element.tag == f"{{{_NS_DC}}}subject":
            subjects += _rdf_values(element)
        elif element.tag == f"{{{_NS_DC}}}description":
            descriptions += _lang_alt(element)
    return _clean(subjects), _clean(descriptions)


def _rdf_values(element: ET.Element) -> list[str]:
    """The ``rdf:li`` items of a Bag/Seq/Alt below ``element``, or its own text."""
    items = [li.text or "" for li in element.iter(f"{{{_NS_RDF}}}li")]
    return items if items else [element.text or ""]


def _lang_alt(element: ET.Element) -> list[str]:
    """A language alternative: the ``x-default`` text first, then the other languages."""
    items = list(element.iter(f"{{{_NS_RDF}}}li"))
    if not items:
        return [element.text or ""]
    items.sort(key=lambda li: li.get(f"{{{_NS_XML}}}lang", "") != "x-default")
    return [li.text or "" for li in items]


def _xmp_packet(im: Any) -> bytes | str | None:
    """The raw XMP packet Pillow found in an opened image, if any."""
    info = getattr(im, "info", {}) or {}
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = info.get(key)
        if value:
            return value
    tags = getattr(im, "tag_v2", None)  # TIFF: tag 700 (XMLPacket)
    if tags is not None:
        value = tags.get(700)
        if value:
            return value
    return None


# -- IPTC -------------------------------------------------------------------------


def _iptc_texts(im: Any) -> Texts:
    from PIL import IptcImagePlugin

    info = IptcImagePlugin.getiptcinfo(im)
    if not info:
        return []

    def values(key: tuple[int, int]) -> list[str]:
        raw = info.get(key)
        if raw is None:
            return []
        items = raw if isinstance(raw, list) else [raw]
        return [_decode(v) if isinstance(v, bytes) else str(v) for v in items]

    out: Texts = []
    keywords = _clean(values((2, 25)))
    if keywords:
        out.append(("iptc:keywords", ", ".join(keywords)))
    caption = _clean(values((2, 120)))
    if caption:
        out.append(("iptc:caption", "\n".join(caption)))
    return out


# -- readers ----------------------------------------------------------------------


def read_embedded_texts(source: bytes | str | os.PathLike[str]) -> Texts:
    """Keywords and descriptions embedded in an image (XMP, IPTC) as ``(source, text)`` pairs.

    ``source`` is the file's bytes or path; only its header is parsed.  Never raises.
    """
    from PIL import Image

    from ..models.images import MAX_METADATA_BYTES, png_text_bytes

    out: Texts = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = source if isinstance(source, bytes) else read_bounded(source)[0]
            if png_text_bytes(data) > MAX_METADATA_BYTES:
                log.debug("ignoring embedded texts: more than %d bytes of PNG text chunks", MAX_METADATA_BYTES)
                return out
            with Image.open(io.BytesIO(data)) as im:
                packet = _xmp_packet(im)
                if packet:
                    try:
                        subjects, descriptions = parse_xmp(packet)
                    except ValueError as exc:
                        log.debug("ignoring XMP: %s", exc)
                    else:
                        if subjects:
                            out.append(("xmp:subject", ", ".join(subjects)))
                        if descriptions:
                            out.append(("xmp:description", "\n".join(descriptions)))
                try:
                    out += _iptc_texts(im)
                except Exception as exc:  # a malformed IPTC block
                    log.debug("ignoring IPTC: %s", exc)
    except Exception as exc:  # unreadable metadata is no reason to lose the photo
        log.debug("no embedded texts: %s", exc)
    return out


def sidecar_paths(image_path: str, names: Collection[str] | None = None) -> tuple[list[str], list[str]]:
    """(text sidecars, XMP sidecars) that exist for ``image_path``.

    Args:
        names: the file names in the image's folder, when the caller listed it
            already (saves a stat per candidate for a whole folder of images);
            pass a set or frozenset: it is looked up, not copied.
    """
    folder, name = os.path.split(image_path)
    stem = os.path.splitext(name)[0]
    if names is not None and not isinstance(names, (set, frozenset)):
        names = set(names)
    found: tuple[list[str], list[str]] = ([], [])
    # photo.jpg.txt before photo.txt; photo.xmp before photo.jpg.xmp (a name without extension has one each).
    for kind, candidates in ((0, (name + ".txt", stem + ".txt")), (1, (stem + ".xmp", name + ".xmp"))):
        for i, candidate in enumerate(candidates):
            if i and candidate == candidates[0]:
                continue
            if (candidate in names) if names is not None else os.path.isfile(os.path.join(folder, candidate)):
                found[kind].append(os.path.join(folder, candidate))
    return found


def sidecar_signature(image_path: str, names: Collection[str] | None = None) -> str:
    """The name, size and mtime of each sidecar of ``image_path``: what must change for a re-read.

    ``""`` when there is none.  Comparing this with the stored signature finds
    edited, added and removed sidecars of unchanged images for the price of a stat.
    """
    txt, xmp = sidecar_paths(image_path, names)
    parts = []
    for path in txt + xmp:
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"{os.path.basename(path)}\t{st.st_size}\t{st.st_mtime_ns}")
    return "\n".join(parts)


def _read_small(path: str) -> bytes | None:
    try:
        # A regular file only: a FIFO named photo.txt would block the run forever.
        return read_bounded(path, MAX_SIDECAR_BYTES)[0]
    except OSError as exc:
        log.debug("ignoring sidecar %s: %s", path, exc.strerror or exc)
        return None


def read_sidecar_texts(image_path: str, names: Collection[str] | None = None) -> Texts:
    """Texts of the sidecar files next to ``image_path`` as ``(source, text)`` pairs.  Never raises.

    Several text sidecars (``photo.jpg.txt`` and ``photo.txt``) are joined into one
    ``sidecar:txt`` text; an XMP sidecar's keywords and description make ``sidecar:xmp``.
    """
    txt, xmp = sidecar_paths(image_path, names)
    out: Texts = []
    notes = [_decode(data) for data in map(_read_small, txt) if data is not None]
    notes = [n for n in notes if n]
    if notes:
        out.append(("sidecar:txt", "\n".join(notes)))
    parts: list[str] = []
    for path in xmp:
        data = _read_small(path)
        if data is None:
            continue
        try:
            subjects, descriptions = parse_xmp(data)
        except ValueError as exc:
            log.debug("ignoring sidecar %s: %s", path, exc)
            continue
        if subjects:
            parts.append(", ".join(subjects))
        parts += descriptions
    parts = _clean(parts)
    if parts:
        out.append(("sidecar:xmp", "\n".join(parts)))
    return out


def read_texts(image_path: str, data: bytes | None = None, names: Collection[str] | None = None) -> Texts:
    """Every text people wrote about the image at ``image_path``: embedded, then sidecars.

    Args:
        data: the file's bytes when already read (the indexer has them), else the path is opened.
        names: the folder's file names, if listed (see :func:`sidecar_paths`).
    """
    return _bounded(read_embedded_texts(data if data is not None else image_path)
                    + read_sidecar_texts(image_path, names))
