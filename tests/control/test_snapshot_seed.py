"""Snapshots round-trip to identical recognitions; seeding is idempotent and reports bad photos."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from emulator.control import seed, snapshot
from emulator.face.engine import DlibEngine
from emulator.persons.types import ClientId, SpaceKey
from emulator.settings import Settings
from emulator.store import Store
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_process import run_cli
from tests.support.emulator_server import FIXTURES, EmulatorServer

pytestmark = BOTH_BACKENDS

ROOT = Path(__file__).resolve().parents[2]
PROBES = [
    "people/obama/obama2.jpg",
    "people/biden/biden2.jpg",
    "people/kit_harington/john2.jpeg",
    "people/rose_leslie/img2.jpg",
    "people/tom_hanks/Tom_Hanks_54745.png",
    "groups/obama_and_biden.jpg",
]


def _recognitions(server: EmulatorServer, space: int) -> list[Any]:
    return [server.recognize(space, probe, update_embedding=False) for probe in PROBES]


def _fill(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama.jpg")
    server.set(space, 1, "people/obama/obama1.jpg")
    server.set(space, 2, "people/biden/biden.jpg")
    server.set(space, 4, "people/kit_harington/john1.jpeg")
    server.recognize(space, "people/rose_leslie/img1.jpg", create_new=True)  # person 5
    server.recognize(space, "people/obama/obama3.jpg")  # learns a face of person 1
    server.recognize(space, "groups/obama_and_biden.jpg")  # aliases are remembered


def _record(settings: Settings | dict[str, Any]) -> list[str]:
    """The CLI flags naming the record of a server (or of these settings): the data dir, and the database if any."""
    values = settings.values if isinstance(settings, Settings) else settings
    flags = ["--data-dir", str(values["data_dir"])]
    return [*flags, "--database-url", values["database_url"]] if values.get("database_url") else flags


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def test_export_truncate_import_gives_identical_recognitions(server: EmulatorServer, space: int) -> None:
    _fill(server, space)
    before = _recognitions(server, space)
    assert [o["persons"][0]["tag"] for o in before[:4]] == ["person1", "person2", "person4", "person5"]

    download = server.http.get("/emulator/snapshot", params={"client": "default", "space": space})
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    doc = json.loads(download.content)
    assert (doc["format"], doc["version"], doc["scope"]) == (snapshot.FORMAT, 1, {"client": "default", "space": space})
    (exported,) = doc["spaces"]
    assert exported["persons"] == [1, 2, 4, 5] and exported["next_person_id"] == 6
    assert {f["kind"] for f in exported["faces"]} == {"set", "created", "learned"}

    server.ok("truncate", {"space": str(space)})
    assert all(t == "undefined" for o in _recognitions(server, space) for t in (p["tag"] for p in o["persons"]))

    upload = server.http.post("/emulator/snapshot", params={"mode": "replace"}, content=download.content)
    assert upload.status_code == 200, upload.text
    assert upload.json()["faces_added"] == len(exported["faces"])
    assert _recognitions(server, space) == before
    # The id sequence came back with the persons: create_new continues after the largest id.
    created = server.recognize(space, "people/alex_lacamoire/img1.jpg", create_new=True)
    assert created["persons"][0]["tag"] == "person6"

    # Merging the same snapshot again changes nothing.
    again = server.http.post("/emulator/snapshot", params={"mode": "merge"}, content=download.content).json()
    assert (again["faces_added"], again["faces_skipped"]) == (0, len(exported["faces"]))


def test_cli_export_and_import_reach_a_running_server(server: EmulatorServer, space: int, tmp_path: Path) -> None:
    """The CLI writes the database directly; the running server notices through the generation."""
    _fill(server, space)
    before = _recognitions(server, space)
    record = _record(server.settings)
    path = tmp_path / "space.json.gz"
    done = _cli("export", str(path), "--client", "default", "--space", str(space), *record)
    assert done.returncode == 0, done.stderr
    assert json.loads(gzip.decompress(path.read_bytes()))["spaces"][0]["space"] == space

    server.ok("truncate", {"space": str(space)})
    done = _cli("import", str(path), *record)
    assert done.returncode == 0, done.stderr
    assert _recognitions(server, space) == before

    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "something else"}')
    done = _cli("import", str(broken), *record)
    assert done.returncode == 1 and "not a snapshot" in done.stderr


def test_snapshot_of_everything_replaces_everything(engine: DlibEngine, backend: Backend, tmp_path: Path) -> None:
    a, b = backend.settings(), backend.settings()
    store = backend.store(tmp_path / "a", a)
    seed.seed_directory(store, engine, _seed_dir(tmp_path / "seed"), max_faces_per_space=100)
    data = snapshot.dumps(snapshot.take(store, snapshot.Scope()), compress=True)
    store.close()

    source = backend.store(tmp_path / "a", a)
    other = backend.store(tmp_path / "b", b)  # another machine: it holds a space the snapshot does not know
    embedding = source.space_contents(SpaceKey(ClientId("default"), 0)).faces[0].embedding
    with other.write(SpaceKey(ClientId("default"), 8)) as writer:
        writer.add_face(3, embedding, "set")
    report = snapshot.restore(other, snapshot.loads(data), "replace")
    assert report.spaces_emptied == 1
    assert _state(other, face_ids=False) == _state(source, face_ids=False)  # face ids are the machine's own
    other.close()
    source.close()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "x"}, "not a snapshot"),
        ({"format": snapshot.FORMAT, "version": 2, "spaces": []}, "version"),
        ({"format": snapshot.FORMAT, "version": 1, "spaces": [{"client": "a", "space": 10, "faces": []}]}, "space"),
        (
            {
                "format": snapshot.FORMAT,
                "version": 1,
                "spaces": [{"client": "a", "space": 1, "faces": [{"person_id": 1, "embedding": "AAAA"}]}],
            },
            "bytes",
        ),
    ],
)
def test_a_broken_snapshot_is_refused_with_a_reason(doc: Any, message: str) -> None:
    with pytest.raises(snapshot.SnapshotError, match=message):
        snapshot.loads(json.dumps(doc).encode())


# --- seeding ---------------------------------------------------------------------------


def _seed_dir(root: Path) -> Path:
    """A fixtures-style seed directory: spaces of the default client, and a client directory."""
    layout = {
        "0/1": ["people/obama/obama.jpg", "people/obama/obama1.jpg"],
        "0/2": ["people/biden/biden.jpg"],
        "0/3": ["no-face/rocket.jpg"],  # no face: reported, skipped
        "0/4": ["groups/two_people.jpg", "people/tom_hanks/Tom_Hanks_54745.png"],  # one of two is stored
        "acme/2/7": ["people/kit_harington/john1.jpeg"],
    }
    for directory, photos in layout.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        for photo in photos:
            shutil.copy(FIXTURES / photo, root / directory / Path(photo).name)
    (root / "0" / "1" / "notes.txt").write_text("not a photo")
    (root / "0" / "x").mkdir()  # not a person id
    return root


def _state(store: Store, face_ids: bool = True) -> list[tuple[Any, ...]]:
    """Everything that matters about the stored faces."""
    rows = []
    for key in store.space_keys():
        for face in store.space_contents(key).faces:
            face_id = face.face_id if face_ids else None
            rows.append((key, face_id, face.person_id, face.kind, face.meta, face.created_at, face.embedding.tobytes()))
    return rows


def test_seeding_twice_gives_the_same_persons_as_once(engine: DlibEngine, backend: Backend, tmp_path: Path) -> None:
    root = _seed_dir(tmp_path / "seed")
    record = {"data_dir": tmp_path / "data", **backend.settings()}
    store = backend.store(tmp_path / "data", record)
    log = io.StringIO()
    first = seed.seed_directory(store, engine, root, max_faces_per_space=100, stream=log)
    assert first.added == 5 and first.already_there == 0
    assert sorted(first.problems) == [
        "0/3/rocket.jpg: no face found",
        "0/4/two_people.jpg: 2 faces found, a seed photo needs exactly one",
        "0/x: not a person id (a positive whole number)",
    ]
    assert "0/3/rocket.jpg" in log.getvalue() and "two_people.jpg" in log.getvalue()
    assert "\r" not in log.getvalue()  # no progress bar when not on a terminal
    once = _state(store)
    assert [(k.client, k.space) for k in store.space_keys()] == [("acme", 2), ("default", 0)]
    assert dict(store.person_photo_counts(SpaceKey(ClientId("default"), 0))) == {1: 2, 2: 1, 4: 1}
    generation = store.generation(SpaceKey(ClientId("default"), 0))

    second = seed.seed_directory(store, engine, root, max_faces_per_space=100, stream=io.StringIO())
    assert second.added == 0 and second.already_there == 5
    assert _state(store) == once
    assert store.generation(SpaceKey(ClientId("default"), 0)) == generation  # nothing was written
    store.close()

    # The command line does the same (a third time: nothing changes).
    done = _cli("seed", str(root), *_record(record))
    assert done.returncode == 0, done.stderr
    assert "0 photo(s) added, 5 already there" in done.stderr and "rocket.jpg" in done.stderr
    assert _state(backend.store(tmp_path / "data", record)) == once


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    terminal = _Terminal()
    progress = seed.Progress(4, terminal)
    progress.step()
    progress.say("seed: skipped a.jpg: no face found")
    progress.step()
    progress.finish()
    text = terminal.getvalue()
    assert "\rseeding [" in text and "2/4 photos" in text and "skipped a.jpg" in text


def test_seed_at_startup_from_a_directory_and_from_a_snapshot(
    engine: DlibEngine, backend: Backend, tmp_path: Path
) -> None:
    root = _seed_dir(tmp_path / "seed")
    first, second = backend.settings(), backend.settings()
    for _ in range(2):  # a restart with the same seed changes nothing
        server = EmulatorServer(tmp_path / "data", engine=engine, seed=str(root), **first).start()
        try:
            clients = server.http.get("/emulator/clients").json()["clients"]
            assert server.tags(0, "people/obama/obama2.jpg", update_embedding=False) == ["person1"]
            download = server.http.get("/emulator/snapshot").content
        finally:
            server.stop()
        assert clients == [
            {"client": "acme", "spaces": [{"space": 2, "persons": 1, "faces": 1}]},
            {"client": "default", "spaces": [{"space": 0, "persons": 3, "faces": 4}]},
        ]

    path = tmp_path / "seed.json"
    path.write_bytes(download)
    for _ in range(2):
        server = EmulatorServer(tmp_path / "other", engine=engine, seed=str(path), **second).start()
        try:
            assert server.http.get("/emulator/clients").json()["clients"] == clients
            assert server.tags(0, "people/biden/biden2.jpg", update_embedding=False) == ["person2"]
        finally:
            server.stop()
