"""The catalog's text side (schema 5): captions, texts people wrote, and the full-text index."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np

from searchindex import Index
from searchindex.store.catalog.sqlite import CATALOG_FILE

FIXTURE = Path(__file__).parent / "fixtures" / "schema-v1.idx"


def _index(small_folder: Path, tmp_path: Path) -> Index:
    index = Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu")
    index.add_folder(small_folder)
    return index


def _ids_by_name(index: Index) -> dict[str, int]:
    return {Path(p).name: state[0] for p, state in index.catalog.read.image_states().items()}


def test_file_names_are_searchable_as_words(small_folder: Path, tmp_path: Path) -> None:
    target = sorted(small_folder.glob("*.png"))[3]
    target.rename(small_folder / "IMG_0042-Grandma Müller.png")
    with _index(small_folder, tmp_path) as index:
        wanted = _ids_by_name(index)["IMG_0042-Grandma Müller.png"]
        for query in ("grandma", "GRANDMA muller", "0042", "img 0042 grandma"):
            hits = index.catalog.read.text_search(query, limit=5)
            assert hits and hits[0][0] == wanted, query
        assert index.catalog.read.text_search("nobody", limit=5) == []


def test_user_text_never_reaches_fts5_as_syntax(small_folder: Path, tmp_path: Path) -> None:
    """FTS5 operators in a query are plain words: each query finds the image whose text holds its
    words, first, and not a decoy that the operator would have matched (as syntax, NEAR(x y)
    matches the shorter "x y" better, col:umn* is a column filter, a AND OR NOT an error)."""
    cases = {  # query -> (text of the image it must find first, text of a decoy)
        '"unbalanced': ("an unbalanced quote", "balanced"),
        "a AND OR NOT": ("a and or not", "a"),
        "NEAR(x y)": ("near x y", "x y"),
        "col:umn*": ("col umn", "umnbrella column"),
        "-minus ^caret": ("minus caret", "caret"),
        "OR": ("or", "either"),
    }
    with _index(small_folder, tmp_path) as index:
        ids = sorted(_ids_by_name(index).values())
        texts: dict[int, list[tuple[str, str]]] = {}
        targets = {}
        for n, (query, (wanted, decoy)) in enumerate(cases.items()):
            texts[ids[2 * n]] = [("sidecar:txt", wanted)]
            texts[ids[2 * n + 1]] = [("sidecar:txt", decoy)]
            targets[query] = ids[2 * n]
        index.catalog.texts.store(texts)
        for query, target in targets.items():
            hits = index.catalog.read.text_search(query, limit=5)
            assert hits and hits[0][0] == target, (query, hits)
        for query in ("", "   ", "*", "^", '""'):
            assert index.catalog.read.text_search(query, limit=5) == []


def test_captions_and_texts_are_stored_searched_and_follow_the_image(small_folder: Path, tmp_path: Path) -> None:
    with _index(small_folder, tmp_path) as index:
        cat = index.catalog
        ids = sorted(_ids_by_name(index).values())
        a, b, c = ids[:3]
        assert cat.read.ids_without_caption("blip") == ids
        cat.captions.store([(a, "blip", "", "a dog on a beach"), (b, "blip", "a photo of", "a red car")])
        cat.captions.store([(a, "git", "", "a puppy near the sea")])  # another model keeps both
        cat.texts.store({c: [("sidecar:txt", "Oktoberfest 2019"), ("iptc:keywords", "Anna, Berlin")]})
        assert cat.read.ids_without_caption("blip") == ids[2:]
        assert cat.read.caption_counts() == [("blip", 2), ("git", 1)]
        assert cat.read.captions([a])[a] == [("blip", "a dog on a beach"), ("git", "a puppy near the sea")]
        assert cat.read.texts([c])[c] == [("iptc:keywords", "Anna, Berlin"), ("sidecar:txt", "Oktoberfest 2019")]

        assert [i for i, _ in cat.read.text_search("puppy", 5)] == [a]
        assert [i for i, _ in cat.read.text_search("oktoberfest", 5)] == [c]
        # Every word first, then any word: "dog car" matches a and b only through OR.
        assert [i for i, _ in cat.read.text_search("red car", 5)][0] == b
        assert {i for i, _ in cat.read.text_search("dog car", 5)} == {a, b}
        # Filters restrict the text ranking too.
        assert [i for i, _ in cat.read.text_search("dog car", 5, ids=np.array([b]))] == [b]
        assert cat.read.text_search("puppy", 5, ids=np.array([b, c])) == []

        cat.texts.store({c: []})  # cleared
        assert cat.read.text_search("oktoberfest", 5) == []

        # A moved file keeps its captions and is found under its new name.
        path_a = next(p for p, s in cat.read.image_states().items() if s[0] == a)
        cat.commit_batch(moved=[(a, str(Path(path_a).with_name("holiday-beach.png")), 1, 1)])
        assert [i for i, _ in cat.read.text_search("holiday", 5)] == [a]
        assert [i for i, _ in cat.read.text_search("puppy", 5)] == [a]
        # A deleted image takes its captions and text row with it.
        cat.commit_batch(deleted=[str(Path(path_a).with_name("holiday-beach.png"))])
        assert cat.read.text_search("puppy", 5) == [] and cat.read.text_search("holiday", 5) == []
        assert a not in cat.read.captions([a])
        assert cat.read.caption_counts() == [("blip", 1)]


def test_new_content_at_the_same_path_drops_the_old_caption(small_folder: Path, tmp_path: Path) -> None:
    from searchindex.demo.synthetic import iter_scenes, render

    with _index(small_folder, tmp_path) as index:
        victim = sorted(small_folder.glob("*.png"))[0]
        image_id = _ids_by_name(index)[victim.name]
        index.catalog.captions.store([(image_id, "blip", "", "an old picture")])
        render(next(iter_scenes(1, seed=4242))).save(victim)
        assert index.add_folder(small_folder).modified == 1
        assert index.catalog.read.captions([image_id]) == {}
        assert image_id in index.catalog.read.ids_without_caption("blip")


def test_migration_makes_existing_file_names_searchable(tmp_path: Path) -> None:
    path = tmp_path / "old.idx"
    shutil.copytree(FIXTURE, path)
    with Index.open(path) as index:
        names = {i: Path(p).name for p, (i, *_rest) in index.catalog.read.image_states().items()}
        some_id, some_name = sorted(names.items())[0]
        word = Path(some_name).stem
        assert some_id in [i for i, _ in index.catalog.read.text_search(word, 20)]
    db = sqlite3.connect(path / CATALOG_FILE)
    try:
        assert db.execute("SELECT count(*) FROM text_fts").fetchone()[0] == len(names)
    finally:
        db.close()


def test_reindex_carries_captions_over_by_content(small_folder: Path, tmp_path: Path) -> None:
    with _index(small_folder, tmp_path) as index:
        ids = _ids_by_name(index)
        first = sorted(ids)[0]
        index.catalog.captions.store([(ids[first], "blip", "a photo of", "a blue square")])
    Index.reindex(tmp_path / "idx", model="tiny-shapes", pretrained="none", device="cpu")
    with Index.open(tmp_path / "idx", device="cpu") as index:
        new_id = _ids_by_name(index)[first]
        assert index.catalog.read.captions([new_id])[new_id] == [("blip", "a blue square")]
        assert [i for i, _ in index.catalog.read.text_search("blue square", 3)][0] == new_id


def test_korean_names_and_keywords_match_inside_runs(small_folder: Path, tmp_path: Path) -> None:
    """Written without spaces or with particles attached, a Korean word is found by itself, in a
    file name, a sidecar note and through search() alike (schema 13: character bigrams); unicode61
    alone made one token of each run and found none of them."""
    target = sorted(small_folder.glob("*.png"))[2]
    target.rename(small_folder / "부산역에서_가족사진.png")
    (small_folder / sorted(p.name for p in small_folder.glob("*.png"))[5]).with_suffix(".txt").write_text(
        "할머니의 생신 잔치, 서울역에서", encoding="utf-8")
    with _index(small_folder, tmp_path) as index:
        by_name = _ids_by_name(index)
        named = by_name["부산역에서_가족사진.png"]
        noted_name = next(name for name in by_name if name != "부산역에서_가족사진.png"
                          and (small_folder / name).with_suffix(".txt").is_file())
        noted = by_name[noted_name]
        for query, wanted in (("부산역", named), ("가족", named), ("서울역", noted), ("할머니", noted),
                              ("생신 할머니", noted), ("서울역 잔치", noted)):
            hits = index.catalog.read.text_search(query, limit=5)
            assert hits and hits[0][0] == wanted, (query, hits)
        assert index.catalog.read.text_search("대구역", limit=5) == []
        found = index.search("서울역", mode="text", k=3)
        assert found and Path(found[0].path).name == noted_name
        latin = index.catalog.read.text_search("png", limit=100)
        assert len(latin) == len(by_name)  # Latin words are still whole terms


def test_schema_13_rewrites_an_older_text_index_in_bigrams(small_folder: Path, tmp_path: Path) -> None:
    """An index whose text_fts holds a Korean run whole (as schema 12 wrote it) is rewritten when opened."""
    target = sorted(small_folder.glob("*.png"))[1]
    target.rename(small_folder / "제주도여행.png")
    with _index(small_folder, tmp_path) as index:
        wanted = _ids_by_name(index)["제주도여행.png"]
    db = sqlite3.connect(tmp_path / "idx" / CATALOG_FILE)
    with db:  # back to what schema 12 stored: the run as one token
        db.execute("UPDATE text_fts SET name = '제주도여행.png' WHERE rowid = ?", (wanted,))
        db.execute("UPDATE meta SET value = '12' WHERE key = 'schema_version'")
        db.execute("DELETE FROM schema_history WHERE version = 13")
    assert db.execute("SELECT rowid FROM text_fts WHERE text_fts MATCH '\"제주\"'").fetchall() == []
    db.close()
    with Index.open(tmp_path / "idx") as index:
        assert index.info().schema_version == 13
        hits = index.catalog.read.text_search("제주도", limit=3)
        assert hits and hits[0][0] == wanted
