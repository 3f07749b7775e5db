"""What a search reads goes through plain sqlite3 (store/reader.py): same answers, no SQLAlchemy import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from searchindex import Index
from searchindex.store.catalog.filters import Filters

ROOT = Path(__file__).resolve().parent.parent

# Searches of every kind the reader serves, in a fresh interpreter: filters on a path that is not
# UTF-8, dates, size, a tag, an example image, hybrid text ranking.  Prints the paths, then the modules.
_PROBE = """
import json, os, sys
from searchindex import Index, Term
from searchindex.store.catalog.filters import Filters
odd = os.fsdecode(bytes.fromhex(sys.argv[2]))
out = {}
with Index.open(sys.argv[1], device='cpu') as idx:
    first = idx.search('a red circle', k=3)
    out['plain'] = [r.path for r in first]
    out['exact'] = [r.path for r in idx.search('a red circle', k=5, filters=Filters(paths=[odd]))]
    near_odd = Filters(paths=[os.path.dirname(odd) + '/caf?-odd.*'])
    out['glob'] = [r.path for r in idx.search('a red circle', k=5, filters=near_odd)]
    out['exclude'] = [r.path for r in idx.search('a red circle', k=100, filters=Filters(exclude=['*/caf*']))]
    out['dated'] = len(idx.search('a red circle', k=50, filters=Filters(after='1990-01-01', min_width=8)))
    out['tag'] = [r.path for r in idx.search('a shape', k=50, tag='circle')]
    out['image'] = [r.path for r in idx.search(Term(image=first[0].path), k=3)]
    out['like'] = [r.path for r in idx.search('a shape', k=5, like=[first[0].image_id], mode='vector')]
    out['hybrid'] = [r.path for r in idx.search('caf odd', k=3, mode='text')]
print(json.dumps(out, ensure_ascii=True))
print('MODULES', *[m for m in ('sqlalchemy', 'torch', 'PIL') if m in sys.modules])
"""


def test_searches_of_every_kind_import_no_sqlalchemy_and_keep_odd_paths(small_index: Path, small_folder: Path) -> None:
    raw = os.path.join(os.fsencode(small_folder), b"caf\xe9-odd.png")  # a file name that is not UTF-8
    shutil.copyfile(sorted(small_folder.glob("*.png"))[0], raw)
    odd = os.fsdecode(raw)
    with Index.open(small_index, device="cpu") as idx:
        assert idx.add_folder(small_folder).new == 1
        idx.tag(["circle", "square"])
        tagged = {r.path for r in idx.search("a shape", k=50, tag="circle")}
        # The reader and the writer's repositories agree on the odd name both ways.
        image_id = idx.catalog.read.ids_by_path([odd])[odd]
        assert idx.catalog.read.records([image_id])[image_id].path == odd
        assert idx.catalog.read.ids_by_path([odd]) == {odd: image_id}
        # Globs match such names by their bytes, in both directions, and leave the others alone.
        folder = os.path.dirname(odd)
        assert list(idx.catalog.read.filtered_ids(Filters(paths=[folder + "/caf?-odd.png"]))) == [image_id]
        assert list(idx.catalog.read.filtered_ids(Filters(paths=[folder + "/caf[!a-z]-*"]))) == [image_id]
        assert image_id not in idx.catalog.read.filtered_ids(Filters(exclude=[folder + "/caf?-*"]))
        assert len(idx.catalog.read.filtered_ids(Filters(exclude=[folder + "/caf?-*"]))) == 40
        assert len(idx.catalog.read.filtered_ids(Filters(paths=[folder + "/*.png"]))) == 41
    res = subprocess.run([sys.executable, "-c", _PROBE, str(small_index), raw.hex()], capture_output=True,
                         text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = res.stdout.splitlines()
    out = json.loads(lines[-2])
    assert lines[-1].split()[1:] == []  # neither SQLAlchemy nor torch nor Pillow on any of those searches
    assert len(out["plain"]) == 3
    assert out["exact"] == [odd]  # the path matched the stored (percent-encoded) name and was decoded back
    assert out["glob"] == [odd]  # a glob meets the name's bytes: '?' is the one byte that is not UTF-8
    assert len(out["exclude"]) == 40 and odd not in out["exclude"]  # every image but the odd one
    assert out["dated"] > 0
    assert set(out["tag"]) == tagged and tagged
    assert out["image"][0] == out["plain"][0]  # an indexed image as the query: its stored vector, itself first
    assert len(out["like"]) == 5
    assert out["hybrid"][0] == odd  # full text over file names found the odd name


def test_exclude_and_path_filters_partition_the_index(small_index: Path, small_folder: Path) -> None:
    with Index.open(small_index, device="cpu") as idx:
        every = idx.catalog.read.image_ids()
        some = idx.catalog.read.filtered_ids(Filters(paths=[str(small_folder / "*0.png")]))
        rest = idx.catalog.read.filtered_ids(Filters(exclude=[str(small_folder / "*0.png")]))
        assert 0 < len(some) < len(every)
        assert sorted([*some, *rest]) == list(every) and not set(some) & set(rest)


def test_reads_from_many_threads_while_a_writer_commits(small_index: Path, small_folder: Path,
                                                        tmp_path: Path) -> None:
    extra = tmp_path / "more"
    extra.mkdir()
    for i, src in enumerate(sorted(small_folder.glob("*.png"))[:10]):
        shutil.copyfile(src, extra / f"copy-{i}.png")
    errors: list[BaseException] = []
    counts: list[int] = []
    with Index.open(small_index, device="cpu") as idx:
        before = len(idx.catalog.read.image_ids())

        def reader() -> None:
            try:
                for _ in range(20):
                    hits = idx.search("a blue square", k=5)
                    counts.append(len(idx.catalog.read.records([h.image_id for h in hits])))
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        idx.add_folder(extra)
        for t in threads:
            t.join()
        assert not errors and counts and all(c == 5 for c in counts)
        assert len(idx.catalog.read.image_ids()) == before + 10
    # Closing the index closed every thread's connection: the files can be removed and reopened.
    with Index.open(small_index, device="cpu") as idx:
        assert len(idx.search("a blue square", k=5)) == 5


def test_closing_the_reader_while_threads_read_breaks_no_read(small_index: Path) -> None:
    errors: list[BaseException] = []
    done = threading.Event()
    with Index.open(small_index, device="cpu") as idx:
        read = idx.catalog.read
        ids = [int(i) for i in read.image_ids()]

        def reader() -> None:
            try:
                while not done.is_set():
                    assert len(read.records(ids)) == len(ids) and read.generation() > 0
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(50):  # what Catalog.close does when another process swapped the index
            read.close()
        done.set()
        for t in threads:
            t.join()
    assert not errors
