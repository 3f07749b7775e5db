"""Photo metadata: read from EXIF at index time, mtime fallback, backfilled without re-encoding."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from searchindex import Index
from searchindex.cli import cli
from searchindex.ingest.metadata import read_metadata
from searchindex.store.catalog.sqlite import CATALOG_FILE


def _exif(date: str = "2024:07:14 18:03:22", offset: str | None = "+02:00", gps: bool = True) -> Image.Exif:
    ex = Image.Exif()
    ex[0x010F] = "Canon"
    ex[0x0110] = "Canon EOS R5"
    sub = ex.get_ifd(0x8769)
    sub[0x9003] = date
    if offset:
        sub[0x9011] = offset
    sub[0xA434] = "RF24-105mm F4 L IS USM"
    if gps:
        g = ex.get_ifd(0x8825)
        g[1], g[2], g[3], g[4] = "S", (33.0, 51.0, 36.0), "E", (151.0, 12.0, 36.0)
    return ex


def _jpeg(exif: Image.Exif | None, color: str = "red") -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", (48, 32), color)
    img.save(buf, "JPEG", **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def test_exif_fields_are_read() -> None:
    m = read_metadata(_jpeg(_exif()), mtime_ns=0)
    assert (m.taken_at, m.taken_offset, m.date_source) == ("2024-07-14T18:03:22", "+02:00", "exif")
    assert (m.camera_make, m.camera_model, m.lens) == ("Canon", "Canon EOS R5", "RF24-105mm F4 L IS USM")
    assert abs(m.gps_lat - -33.86) < 1e-9 and abs(m.gps_lon - 151.21) < 1e-9  # Sydney: south and east


def test_missing_or_broken_dates_fall_back_to_mtime() -> None:
    mtime_ns = 1_700_000_000 * 10**9
    local = datetime.fromtimestamp(1_700_000_000).isoformat()
    for data in (_jpeg(None), _jpeg(_exif(date="0000:00:00 00:00:00", gps=False)), b"not an image"):
        m = read_metadata(data, mtime_ns)
        assert (m.taken_at, m.date_source) == (local, "mtime")
    no_offset = read_metadata(_jpeg(_exif(offset=None)), mtime_ns)
    assert no_offset.date_source == "exif" and no_offset.taken_offset is None


def _photos(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {"exif": folder / "camera.jpg", "plain": folder / "plain.jpg"}
    files["exif"].write_bytes(_jpeg(_exif()))
    files["plain"].write_bytes(_jpeg(None, "blue"))
    os.utime(files["plain"], (1_600_000_000, 1_600_000_000))
    return files


def test_index_stores_metadata_and_search_returns_it(tmp_path: Path) -> None:
    files = _photos(tmp_path / "photos")
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(tmp_path / "photos")
        hits = {Path(h.path).name: h for h in index.search("a photo of a red square", k=2)}
    assert hits["camera.jpg"].taken_at == "2024-07-14T18:03:22" and hits["camera.jpg"].camera_model == "Canon EOS R5"
    assert hits["plain.jpg"].date_source == "mtime"
    assert hits["plain.jpg"].taken_at == datetime.fromtimestamp(1_600_000_000).isoformat()
    out = CliRunner().invoke(cli, ["search", "a red square", "--index", str(idx), "--json", "-k", "2"])
    assert out.exit_code == 0, out.output
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.output.splitlines())}
    assert rows["camera.jpg"]["taken_at"] == "2024-07-14T18:03:22" and rows["camera.jpg"]["gps_lat"] < 0
    assert str(files["exif"]) == rows["camera.jpg"]["path"]


def test_metadata_of_older_rows_is_backfilled_without_encoding(tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(tmp_path / "photos")
    # What a catalog upgraded from schema 1 looks like: the columns exist but were never filled.
    db = sqlite3.connect(idx / CATALOG_FILE)
    db.execute("UPDATE images SET taken_at = NULL, date_source = NULL, camera_model = NULL")
    db.commit()
    db.close()
    with Index.open(idx) as index:
        summary = index.add_folder(tmp_path / "photos")
        assert summary.indexed == 0 and summary.unchanged == 2
        assert index.models.loaded is None  # the model was never loaded
        rows = index.catalog.read.records(range(1, 3))
    by_name = {Path(r.path).name: r for r in rows.values()}
    assert by_name["camera.jpg"].taken_at == "2024-07-14T18:03:22" and by_name["camera.jpg"].date_source == "exif"
    assert by_name["camera.jpg"].camera_model == "Canon EOS R5"
    assert by_name["plain.jpg"].date_source == "mtime"


def test_touched_file_updates_its_mtime_date(tmp_path: Path) -> None:
    files = _photos(tmp_path / "photos")
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(tmp_path / "photos")
        os.utime(files["plain"], (1_650_000_000, 1_650_000_000))
        summary = index.add_folder(tmp_path / "photos")
        assert summary.touched == 1 and summary.indexed == 0
        row = next(r for r in index.catalog.read.records(range(1, 3)).values() if r.path == str(files["plain"]))
    assert row.taken_at == datetime.fromtimestamp(1_650_000_000).isoformat()
