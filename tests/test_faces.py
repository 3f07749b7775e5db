"""People: faces found in real photos, grouped into persons, named and fixed (searchindex[faces]).

The photos are real faces that ship in packages (see tests/support/faces.py): two people, one
source photo each, edited and pasted into scenes.  The set is small; the floors below say what it
can show: that detection survives common edits, that two clearly different people are kept apart,
that one photo never shows one person twice, and that named persons are never merged.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

from searchindex import Index  # noqa: E402
from searchindex.cli import cli  # noqa: E402
from searchindex.enrich.faces import plan_grouping  # noqa: E402
from searchindex.errors import MissingExtraError, NotFoundError, ParameterError  # noqa: E402
from searchindex.faceresults import Person  # noqa: E402
from searchindex.models.faces import FaceEngine, face_models  # noqa: E402
from searchindex.store.catalog.faces import FaceTable  # noqa: E402

from .support.faces import FacePhoto, face_sources, write_face_photos  # noqa: E402


@pytest.fixture(scope="module")
def people_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[FacePhoto]]:
    root = tmp_path_factory.mktemp("people")
    photos = write_face_photos(root / "photos")
    with Index.create(root / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(root / "photos")
        summary = index.find_faces()
    assert summary.images == len(photos) and summary.failed == 0
    return root / "idx", root / "photos", photos


def _copy(people_index: tuple[Path, Path, list[FacePhoto]], tmp_path: Path) -> Path:
    shutil.copytree(people_index[0], tmp_path / "idx")
    return tmp_path / "idx"


def _identity_of(photo: FacePhoto, box: tuple[int, int, int, int], width: int) -> str:
    """Who a face is: the photo's one person, or in a two-person scene, by side."""
    if len(photo.identities) == 1:
        return photo.identities[0]
    return photo.identities[0] if box[0] + box[2] / 2 < width / 2 else photo.identities[1]


def test_faces_are_found_in_edited_photos_and_not_in_face_free_ones(people_index) -> None:
    folder, photos_dir, photos = people_index
    with Index.open(folder) as index:
        found = {Path(r.path).name: index.faces_in(r.image_id) for r in index.search("x", k=100)}
    expected = sum(len(p.identities) for p in photos)
    hits = sum(min(len(found[p.name]), len(p.identities)) for p in photos)
    extra = sum(max(0, len(found[p.name]) - len(p.identities)) for p in photos)
    # 32 faces: 13 edits of each of 2 people, and 3 scenes with both; 3 photos without a face.
    assert expected == 32
    assert hits / expected >= 0.95, {p.name: len(found[p.name]) for p in photos}
    assert extra <= 1
    assert all(not found[p.name] for p in photos if not p.identities)


def test_grouping_keeps_two_people_apart_and_never_twice_in_a_photo(people_index) -> None:
    folder, photos_dir, photos = people_index
    by_name = {p.name: p for p in photos}
    with Index.open(folder) as index:
        persons = index.persons()
        faces = [f for p in persons for f in p.faces]
        sizes = {f.path: Image.open(f.path).size[0] for f in faces}
    truth = {f.id: _identity_of(by_name[Path(f.path).name], f.box, sizes[f.path]) for f in faces}
    got = {f.id: p.id for p in persons for f in p.faces}
    # Pairwise F1 over the faces that were found (a face left out of every person counts as alone).
    tp = fp = fn = 0
    for a, b in itertools.combinations(sorted(truth), 2):
        same, together = truth[a] == truth[b], got.get(a) is not None and got.get(a) == got.get(b)
        tp += same and together
        fp += together and not same
        fn += same and not together
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    assert f1 >= 0.95, (tp, fp, fn)
    assert len(persons) == 2
    for p in persons:  # zero same-photo merges
        assert len({f.image_id for f in p.faces}) == len(p.faces)


def _rotated_with_exif(src: Image.Image, path: Path) -> None:
    """Pixels turned a quarter, with EXIF orientation 6 saying how to show them upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    src.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif.tobytes())


def test_new_photos_join_named_persons_and_fixes_last(people_index, tmp_path: Path) -> None:
    folder = _copy(people_index, tmp_path)
    sources = face_sources()
    new = tmp_path / "new"
    new.mkdir()
    _rotated_with_exif(sources["hopper"][0], new / "hopper_exif.jpg")
    sources["astronaut"][0].crop((100, 20, 360, 260)).resize((390, 360)).save(new / "astronaut_new.jpg")
    with Index.open(folder) as index:
        first, second = index.persons()
        names = {first.id: "Alice", second.id: "Bob"}
        for pid, name in names.items():
            index.name_person(pid, name)
        index.add_folder(new)
        summary = index.find_faces()
        assert summary.images == 2 and summary.already == 32 and summary.grouping is not None
        assert summary.grouping.new_persons == 0 and summary.grouping.joined == 2
        persons = index.persons()
        assert {p.id: p.name for p in persons} == names  # named persons are never merged
        exif_face = [f for p in persons for f in p.faces if f.path.endswith("hopper_exif.jpg")]
        # The face was found in the photo as shown: upright, so its box is in the shown pixels.
        assert len(exif_face) == 1
        hopper = index.person(exif_face[0].person_id)
        assert any("hopper_original" in f.path for f in hopper.faces)
        assert all("astronaut" not in f.path for f in hopper.faces)
        w, h = Image.open(new / "hopper_exif.jpg").size
        left, top, bw, bh = exif_face[0].box
        assert left + bw <= h and top + bh <= w  # shown size is (h, w) of the stored pixels

        # "Not this person": the face leaves and grouping never puts it back.
        face = exif_face[0]
        index.reject_face(face.id, hopper.id)
        index.group_faces()
        assert face.id not in {f.id for f in index.person(hopper.id).faces}
        assert index.person(hopper.id).name == names[hopper.id]
        # Moving it back by hand works and lasts.
        index.move_face(face.id, hopper.id)
        index.group_faces()
        assert face.id in {f.id for f in index.person(hopper.id).faces}
        # Names are unique: naming a second person Alice points at merge.
        with pytest.raises(ParameterError, match="merge"):
            index.name_person(hopper.id, names[first.id] if hopper.id != first.id else names[second.id])
        # Different names refuse to merge; hiding hides.
        with pytest.raises(ParameterError, match="different names"):
            index.merge_persons(first.id, second.id)
        index.hide_person(second.id)
        assert [p.id for p in index.persons()] == [first.id]
        assert {p.id for p in index.persons(hidden=True)} == {first.id, second.id}
        with pytest.raises(NotFoundError):
            index.name_person(9999, "Nobody")

        # A deleted photo takes its faces with it at the next run.
        (new / "astronaut_new.jpg").unlink()
        index.add_folder(new)
        index.find_faces()
        assert not any(f.path.endswith("astronaut_new.jpg") for p in index.persons(hidden=True) for f in p.faces)


def test_merge_and_move_keep_one_face_per_photo(people_index, tmp_path: Path) -> None:
    folder = _copy(people_index, tmp_path)
    with Index.open(folder) as index:
        a, b = index.persons()
        scene_face = next(f for f in b.faces if "scene_0" in f.path)
        # Split: the face becomes a person of its own, confirmed.
        alone = index.move_face(scene_face.id, None)
        assert alone.count == 1 and alone.confirmed and alone.id not in (a.id, b.id)
        # Merging A with that person: A already has a face in scene_0, so that face stays out.
        merged = index.merge_persons(a.id, alone.id)
        assert merged.count == a.count
        assert len({f.image_id for f in merged.faces}) == merged.count
        with pytest.raises(NotFoundError):
            index.person(alone.id)
        with pytest.raises(ParameterError, match="already has face"):
            index.move_face(scene_face.id, a.id)


def _table(image_ids: list[int], person_ids: list[int], emb: np.ndarray) -> FaceTable:
    n = len(image_ids)
    return FaceTable(np.arange(1, n + 1), np.array(image_ids), np.array(person_ids), np.zeros(n, np.int64),
                     np.ones(n, np.float32), emb.astype(np.float32))


def test_grouping_rules_on_chosen_embeddings() -> None:
    rng = np.random.default_rng(0)
    centre_a, centre_b = rng.normal(size=128), rng.normal(size=128)
    centre_a, centre_b = centre_a / np.linalg.norm(centre_a), centre_b / np.linalg.norm(centre_b)

    def near(c: np.ndarray, k: int) -> np.ndarray:
        return c + rng.normal(scale=0.01, size=(k, 128))

    # Two persons (1, 2) whose faces are close to each other: grouping must not merge them, and
    # a new face close to both joins only one; two new faces of one photo never join the same one.
    emb = np.vstack([near(centre_a, 3), near(centre_a + 0.02, 3), near(centre_a, 2)])
    table = _table([1, 2, 3, 4, 5, 6, 7, 7], [1, 1, 1, 2, 2, 2, -1, -1], emb)
    joins, groups = plan_grouping(table, {})
    assert groups == []
    assert sorted(p for _, p in joins) == [1, 2]  # the two faces of photo 7 went to different persons
    # "Not this person" is respected: face 7 may not join person 1 nor 2.
    joins, _ = plan_grouping(table, {7: {1, 2}})
    assert all(f != 7 for f, _ in joins)
    # New persons need MIN_FACES faces from different photos.
    emb = np.vstack([near(centre_b, 3), near(centre_a, 2)])
    joins, groups = plan_grouping(_table([1, 1, 2, 3, 4], [-1] * 5, emb), {})
    assert groups == [] and joins == []  # b's three faces are only in two photos; a's two are too few
    joins, groups = plan_grouping(_table([1, 2, 3, 4, 5], [-1] * 5, emb), {})
    assert [sorted(g) for g in groups] == [[1, 2, 3]]


def test_people_cli_json_and_naming(people_index, tmp_path: Path) -> None:
    folder = _copy(people_index, tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli, ["people", "--index", str(folder), "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["name"] is None and isinstance(row["id"], int)
        assert all(Path(f["path"]).is_file() and len(f["box"]) == 4 for f in row["faces"])
    pid = rows[1]["id"]
    out = runner.invoke(cli, ["people", "--index", str(folder), "name", str(pid), "Grace Hopper"])
    assert out.exit_code == 0 and "Grace Hopper" in out.output
    out = runner.invoke(cli, ["people", "--index", str(folder), "name", "999", "X"])
    assert out.exit_code != 0 and "no person 999" in out.output
    out = runner.invoke(cli, ["people", "--index", str(folder), "--json"])
    assert json.loads(out.output.splitlines()[0])["name"] == "Grace Hopper"  # named first


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(MissingExtraError, match=r"searchindex\[faces\]|\.\[faces\]") as err:
        face_models()
    assert "\n" not in str(err.value)


def test_models_load_and_run_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the face engine tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    engine = FaceEngine("hog")
    faces = engine.faces(face_sources()["hopper"][0])
    assert len(faces) == 1 and faces[0].embedding.shape == (128,)


def test_person_json_form() -> None:
    assert Person(1, None, 0, 0, False, False).to_dict()["name"] is None


def test_person_filter_info_and_api(people_index, tmp_path: Path) -> None:
    from searchindex.web import create_app

    folder = _copy(people_index, tmp_path)
    with Index.open(folder) as index:
        a, b = index.persons()
        index.name_person(a.id, "Ann")
        ann_images = {f.image_id for f in index.person(a.id).faces}
        hits = index.search("a person", k=100, persons=["ann"])
        assert {h.image_id for h in hits} == ann_images and all("Ann" in h.persons for h in hits)
        index.name_person(b.id, "Bea")
        both = index.search("a person", k=100, persons=["Ann", "Bea"])
        assert {h.image_id for h in both} == ann_images & {f.image_id for f in index.person(b.id).faces}
        assert len(both) == 3  # the three scenes
        assert index.info().faces["named_persons"] == 2
    with TestClient(create_app(folder, device="cpu", warm=False), base_url="http://127.0.0.1:8765") as client:
        _api_checks(client)


def _api_checks(client: TestClient) -> None:
    people = client.get("/api/people").json()["people"]
    assert [p["name"] for p in people] == ["Ann", "Bea"]
    r = client.get("/api/search", params={"q": "a person", "person": ["Ann", "Bea"], "k": 50})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    assert client.get("/api/search", params={"q": "x", "person": "Zed"}).status_code == 400
    face = people[0]["faces"][0]
    crop = client.get(f"/api/faces/{face['id']}/crop", params={"size": 96})
    assert crop.status_code == 200 and Image.open(io.BytesIO(crop.content)).size == (96, 96)
    r = client.post(f"/api/faces/{face['id']}/not", json={"person": people[0]["id"]})
    assert r.status_code == 204
    assert client.post("/api/people/999/name", json={"name": "X"}).status_code == 404
    in_image = client.get(f"/api/images/{face['image_id']}/faces").json()["faces"]
    assert [f["person_id"] for f in in_image if f["id"] == face["id"]] == [None]


def test_reindex_keeps_faces_names_and_fixes(people_index, tmp_path: Path) -> None:
    folder = _copy(people_index, tmp_path)
    with Index.open(folder) as index:
        a, b = index.persons()
        index.name_person(a.id, "Ann")
        rejected = b.faces[-1]
        index.reject_face(rejected.id, b.id)
        before = {(Path(f.path).name, f.box): p.name for p in index.persons() for f in p.faces}
    Index.reindex(folder, "tiny-shapes", "none", device="cpu")
    with Index.open(folder) as index:
        after = {(Path(f.path).name, f.box): p.name for p in index.persons() for f in p.faces}
        assert after == before
        summary = index.find_faces()  # nothing to search again, and the rejected face stays out
        assert summary.images == 0 and summary.already == 32
        assert (Path(rejected.path).name, rejected.box) not in {
            (Path(f.path).name, f.box) for f in index.person(b.id).faces}


def test_person_names_in_the_query_text() -> None:
    from searchindex.errors import QueryError
    from searchindex.search.names import split_person_names

    names = ["Mom", "Rose", "Anna Maria", "Anna"]
    assert split_person_names("Mom at the beach", names) == ("at the beach", ["Mom"])
    assert split_person_names("a rose in the garden", names) == ("a rose in the garden", [])  # the flower
    assert split_person_names("Rose in the garden", names) == ("in the garden", ["Rose"])
    assert split_person_names("Anna Maria and Mom", names) == ("a photo", ["Anna Maria", "Mom"])
    assert split_person_names('@"anna maria" with @rose skiing', names) == ("skiing", ["Anna Maria", "Rose"])
    with pytest.raises(QueryError, match="no person named 'Dad'"):
        split_person_names("@Dad at work", names)


def test_query_box_names_filter_cli_and_api(people_index, tmp_path: Path) -> None:
    folder = _copy(people_index, tmp_path)
    with Index.open(folder) as index:
        a, b = index.persons()
        index.name_person(a.id, "Ann")
        index.name_person(b.id, "Bea")
        scenes = {f.image_id for f in index.person(a.id).faces} & {f.image_id for f in index.person(b.id).faces}
    out = CliRunner().invoke(cli, ["search", "Ann and Bea outdoors", "--index", str(folder), "--json", "-k", "50"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert {r["image_id"] for r in rows} == scenes
    out = CliRunner().invoke(cli, ["search", "@Zed outdoors", "--index", str(folder)])
    assert out.exit_code == 2 and "no person named 'Zed'" in out.output
