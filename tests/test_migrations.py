"""Old catalogs open and are upgraded through named, ordered migrations."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

import searchindex.store.catalog.migrations as migrations
from searchindex import Index, IndexSchemaError
from searchindex.store.catalog.sqlite import CATALOG_FILE

from .test_write_errors import drop_root, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "schema-v1.idx"


@pytest.fixture()
def old_index(tmp_path: Path) -> Path:
    path = tmp_path / "old.idx"
    shutil.copytree(FIXTURE, path)
    return path


def _schema(path: Path) -> dict[str, list[tuple]]:
    """Columns (name, type, not null, default, pk) and indexes of every table."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out: dict[str, list[tuple]] = {}
        for t in tables:
            out[t] = [r[1:] for r in db.execute(f"PRAGMA table_info({t})")]
            out[t + " indexes"] = sorted(
                (r[1], r[2], tuple(c[2] for c in db.execute(f"PRAGMA index_info({r[1]})")))
                for r in db.execute(f"PRAGMA index_list({t})")
            )
        return out
    finally:
        db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path / CATALOG_FILE)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        db.close()


def test_fixture_is_really_old() -> None:
    assert _version(FIXTURE) == 1
    assert migrations.SCHEMA_VERSION > 1


def test_old_index_is_upgraded_and_keeps_its_contents(old_index: Path, tmp_path: Path) -> None:
    with Index.open(old_index) as index:
        assert index.info().schema_version == migrations.SCHEMA_VERSION
        assert index.count() == 12
        vectors = index.catalog.read.embeddings(range(1, 13), index.dim)
        assert len(vectors) == 12
        for image_id, vec in vectors.items():  # the stored vectors still find their own image
            assert index.search_vector(vec, k=1)[0].image_id == image_id
        hit = index.search_vector(vectors[3], k=1)[0]
        assert hit.taken_at is None and hit.date_source is None  # not read yet: the files are gone
    db = sqlite3.connect(old_index / CATALOG_FILE)
    history = db.execute("SELECT version, name FROM schema_history ORDER BY version").fetchall()
    db.close()
    assert history == [(m.version, m.name) for m in migrations.MIGRATIONS]

    # Migrating the old catalog ends at exactly the schema a new catalog is created with.
    fresh = tmp_path / "fresh.idx"
    Index.create(fresh, model="tiny-shapes", device="cpu").close()
    assert _schema(old_index / CATALOG_FILE) == _schema(fresh / CATALOG_FILE)

    with Index.open(old_index) as index:  # opening again applies nothing
        assert index.info().schema_version == migrations.SCHEMA_VERSION


def test_failed_migration_rolls_back_completely(old_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_done(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE images ADD COLUMN half_done INTEGER")
        raise RuntimeError("power cut")

    broken = (*migrations.MIGRATIONS, migrations.Migration(migrations.SCHEMA_VERSION + 1, "broken", half_done))
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", broken[-1].version)
    with pytest.raises(RuntimeError, match="power cut"):
        Index.open(old_index)
    db = sqlite3.connect(old_index / CATALOG_FILE)
    columns = {r[1] for r in db.execute("PRAGMA table_info(images)")}
    db.close()
    assert "taken_at" in columns  # the migrations before the broken one are kept...
    assert "half_done" not in columns  # ...and the broken one left nothing behind
    assert _version(old_index) == broken[-2].version


def test_newer_index_is_refused(old_index: Path) -> None:
    db = sqlite3.connect(old_index / CATALOG_FILE)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(IndexSchemaError, match="newer than this searchindex"):
        Index.open(old_index)


def test_old_read_only_index_says_it_needs_write_access(old_index: Path) -> None:
    prefix = drop_root()
    old_index.chmod(0o555)
    try:
        res = run_cli(["info", "--index", str(old_index)], prefix=prefix)
    finally:
        old_index.chmod(0o755)
    assert res.returncode == 1, res.stdout + res.stderr
    every = ", ".join(m.name for m in migrations.MIGRATIONS)
    assert f"must be upgraded ({every}), which needs write access" in res.stderr
    assert "Traceback" not in res.stderr
    assert _version(old_index) == 1


def test_schema_version_is_recorded_for_new_indexes(tmp_path: Path) -> None:
    path = tmp_path / "new.idx"
    Index.create(path, model="tiny-shapes", device="cpu").close()
    assert _version(path) == migrations.SCHEMA_VERSION
