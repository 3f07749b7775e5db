"""Keywords and descriptions people wrote: embedded XMP/IPTC and sidecar files."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin, TiffImagePlugin

from searchindex.ingest.keywords import (
    parse_xmp,
    read_embedded_texts,
    read_sidecar_texts,
    read_texts,
    sidecar_signature,
)

XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
    "<dc:subject><rdf:Bag><rdf:li>grandma</rdf:li><rdf:li>Oktoberfest 2019</rdf:li>"
    "<rdf:li>Grandma</rdf:li></rdf:Bag></dc:subject>"
    '<dc:description><rdf:Alt><rdf:li xml:lang="de">Oma auf der Wiesn</rdf:li>'
    '<rdf:li xml:lang="x-default">Grandma at the fair</rdf:li></rdf:Alt></dc:description>'
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)
EXPECTED_XMP = [("xmp:subject", "grandma, Oktoberfest 2019"),
                ("xmp:description", "Grandma at the fair\nOma auf der Wiesn")]


def encode(fmt: str, xmp: str = XMP) -> bytes:
    """A small image in ``fmt`` carrying the XMP packet the way each format stores it."""
    im = Image.new("RGB", (16, 16), "red")
    out = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        im.save(out, fmt, pnginfo=info)
    elif fmt == "TIFF":
        ifd = TiffImagePlugin.ImageFileDirectory_v2()
        ifd[700] = xmp.encode()
        ifd.tagtype[700] = 1  # BYTE, as XMP writers store it
        im.save(out, fmt, tiffinfo=ifd)
    else:
        im.save(out, fmt, xmp=xmp.encode())
    return out.getvalue()


def iptc_jpeg(records: list[tuple[int, int, bytes]]) -> bytes:
    """A JPEG with an APP13 Photoshop segment holding IPTC-IIM datasets (record, dataset, value)."""
    iptc = b"".join(b"\x1c" + bytes([r, d]) + struct.pack(">H", len(v)) + v for r, d, v in records)
    if len(iptc) % 2:
        iptc += b"\0"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    payload = b"Photoshop 3.0\0" + resource
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(out, "JPEG")
    data = out.getvalue()
    return data[:2] + segment + data[2:]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_embedded_xmp_in_each_format(fmt: str) -> None:
    assert read_embedded_texts(encode(fmt)) == EXPECTED_XMP


def test_iptc_keywords_and_caption_utf8_and_latin1() -> None:
    data = iptc_jpeg([(2, 25, b"Oma"), (2, 25, "Grüße".encode("latin-1")),
                      (2, 25, "Köln".encode()), (2, 120, b"Familienfest im Garten")])
    assert read_embedded_texts(data) == [("iptc:keywords", "Oma, Grüße, Köln"),
                                         ("iptc:caption", "Familienfest im Garten")]


def test_attribute_form_and_no_keywords() -> None:
    short = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
             '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:description="a quiet lake"/>'
             "</rdf:RDF></x:xmpmeta>")
    assert parse_xmp(short) == ([], ["a quiet lake"])
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, "PNG")
    assert read_embedded_texts(plain.getvalue()) == []


@pytest.mark.parametrize("packet", [
    # Entity expansion ("billion laughs") and external entities are refused, not expanded.
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>',
    '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    "<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed>",
    "not xml at all",
])
def test_malformed_or_dangerous_xmp_is_ignored(packet: str) -> None:
    with pytest.raises(ValueError):
        parse_xmp(packet)
    assert read_embedded_texts(encode("JPEG", packet)) == []


def test_garbage_file_never_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe1garbage")
    assert read_texts(str(bad)) == []
    assert read_embedded_texts(str(tmp_path / "missing.jpg")) == []


def test_sidecars(tmp_path: Path) -> None:
    image = tmp_path / "IMG_0001.jpg"
    image.write_bytes(encode("JPEG"))
    assert read_sidecar_texts(str(image)) == [] and sidecar_signature(str(image)) == ""
    (tmp_path / "IMG_0001.jpg.txt").write_text("Grandma's 80th birthday\n", encoding="utf-8")
    (tmp_path / "IMG_0001.txt").write_bytes("Geburtstag bei Oma, Köln".encode("latin-1"))
    (tmp_path / "IMG_0001.xmp").write_text(XMP, encoding="utf-8")
    (tmp_path / "IMG_0002.txt").write_text("another photo's note")
    texts = read_sidecar_texts(str(image))
    assert texts == [("sidecar:txt", "Grandma's 80th birthday\nGeburtstag bei Oma, Köln"),
                     ("sidecar:xmp", "grandma, Oktoberfest 2019\nGrandma at the fair\nOma auf der Wiesn")]
    # A listing of the folder gives the same answer without a stat per candidate.
    names = [p.name for p in tmp_path.iterdir()]
    assert read_sidecar_texts(str(image), names) == texts
    assert read_texts(str(image)) == EXPECTED_XMP + texts
    signature = sidecar_signature(str(image))
    assert [line.split("\t")[0] for line in signature.splitlines()] == [
        "IMG_0001.jpg.txt", "IMG_0001.txt", "IMG_0001.xmp"]
    (tmp_path / "IMG_0001.txt").write_text("edited note, longer than before")
    assert sidecar_signature(str(image)) != signature


def test_huge_or_empty_sidecar_ignored(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(encode("PNG"))
    (tmp_path / "a.png.txt").write_bytes(b"x" * (300 * 1024))
    (tmp_path / "a.txt").write_text("   \n")
    (tmp_path / "a.xmp").write_text("<broken")
    assert read_sidecar_texts(str(image)) == []


def _many_keywords_xmp(n: int) -> str:
    items = "".join(f"<rdf:li>keyword{i:06d}</rdf:li>" for i in range(n))
    return XMP.replace("<rdf:li>grandma</rdf:li>", items + "<rdf:li>grandma</rdf:li>")


def test_keywords_are_capped_and_deduplicated_at_index_time(tmp_path: Path) -> None:
    """A PNG with 100,000 XMP keywords (2.4 MB, under the packet limit) stores MAX_KEYWORDS of them,
    and a search that returns it shows at most as many (once linear: 100k keywords took >10 min)."""
    from searchindex import Index
    from searchindex.defaults import MAX_KEYWORDS
    from searchindex.ingest.keywords import MAX_TEXT_CHARS

    image = tmp_path / "tagged.png"
    image.write_bytes(encode("PNG", _many_keywords_xmp(100_000)))
    assert image.stat().st_size > 2_000_000
    texts = dict(read_texts(str(image)))
    assert len(texts["xmp:subject"].split(", ")) <= MAX_KEYWORDS
    assert all(len(t) <= MAX_TEXT_CHARS for t in texts.values())
    # De-duplicated before the cap: the same word in other cases counts once.
    dupes = "".join(f"<rdf:li>{w}</rdf:li>" for w in ["Sea", "sea", "SEA", "sea "] * 1000)
    assert parse_xmp(XMP.replace("<rdf:li>grandma</rdf:li>", dupes))[0][:2] == ["Sea", "Oktoberfest 2019"]
    with Index.create(tmp_path / "i.idx", model="tiny-shapes", device="cpu") as index:
        assert index.add_files([image]).indexed == 1
        stored = index.catalog.read.texts([1])[1]
        assert sum(len(t.split(", ")) for s, t in stored if s == "xmp:subject") <= MAX_KEYWORDS
        hits = index.search("keyword000001", k=5, mode="text")
        assert [h.path for h in hits] == [str(image)]
        assert "keyword000001" in hits[0].keywords and len(hits[0].keywords) <= MAX_KEYWORDS


def test_result_keywords_bounded_for_an_index_that_stored_100k() -> None:
    """An index built before the cap may hold 100,000 keywords for one image: presenting it is
    linear and returns at most MAX_KEYWORDS (the old loop compared each with all before it)."""
    from searchindex.defaults import MAX_KEYWORDS
    from searchindex.search.present import keywords

    stored = [("xmp:subject", ", ".join(f"k{i}" for i in range(100_000))),
              ("xmp:description", "\n".join(f"line {i}" for i in range(100_000)))]
    shown = keywords(stored)
    assert len(shown) == MAX_KEYWORDS and shown[:2] == ("k0", "k1")
    assert keywords([("iptc:keywords", "a, A, b"), ("sidecar:txt", "b\nc")]) == ("a", "b", "c")
