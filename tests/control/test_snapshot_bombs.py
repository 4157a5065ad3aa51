"""Snapshots and seeds made to exhaust memory are refused by a documented bound before memory grows.

Each of these is refused while resident memory stays within ``RSS_MARGIN`` (150 MiB) of a harmless run of the same
kind: of the serving process for an upload over HTTP (sampled from ``/proc`` every 10 ms while it is refused), of
the command itself for ``smarty-emulator import`` and ``seed`` (its peak, from ``getrusage``):

* a gzip bomb: 4 MB that inflate to 4 GiB (``SMARTY_MAX_SNAPSHOT_BYTES``, checked while inflating, keeping nothing);
* a JSON snapshot with one enormous string (1 GiB announced over HTTP: refused from ``Content-Length``; 200 MB sent
  without a length: refused once ``SMARTY_MAX_REQUEST_BYTES`` (32 MiB) arrived; piped to ``import -``: once
  64 MiB did; a 200 MB file: refused from its size);
* millions of tiny entries: five million empty faces in 15 MB (``SMARTY_MAX_SNAPSHOT_FACES``, their JSON values
  counted before parsing);
* a seed directory with a 200-megapixel PNG (``SMARTY_MAX_IMAGE_WIDTH``/``HEIGHT``, from the header alone).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from emulator.api.body_limit import too_large_message
from emulator.control import snapshot
from emulator.launcher import clean_env
from emulator.persons.types import ClientId, SpaceKey
from tests.support import bombs
from tests.support.emulator_process import ROOT, EmulatorProcess
from tests.support.emulator_server import FIXTURES
from tests.support.hostile import raw_post

pytestmark = pytest.mark.slow  # real server and command processes

MIB = 1 << 20
RSS_MARGIN = 150 * MIB
BOUND = 64 * MIB  # the default SMARTY_MAX_SNAPSHOT_BYTES
TINY_ENTRIES = 5_000_000


def _valid_snapshot() -> bytes:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(20, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    faces = tuple(snapshot.SnapshotFace(i + 1, "set", 1.0, {"name": f"f{i}"}, v, None) for i, v in enumerate(vectors))
    space = snapshot.SnapshotSpace(SpaceKey(ClientId("c"), 0), faces)
    return snapshot.dumps(snapshot.Snapshot(snapshot.Scope(), (space,)))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    made = {
        "valid": root / "valid.json",
        "gzip bomb": root / "bomb.json.gz",
        "enormous string": root / "string.json",
        "tiny entries": root / "tiny.json",
    }
    made["valid"].write_bytes(_valid_snapshot())
    made["gzip bomb"].write_bytes(bombs.gzip_bomb())
    with open(made["enormous string"], "wb") as out:
        out.writelines(bombs.enormous_string(200 * MIB))
    made["tiny entries"].write_bytes(bombs.tiny_entries(TINY_ENTRIES))
    for name, photo in (("seed ok", "people/obama/obama.jpg"), ("seed huge", None)):
        person = root / name / "0" / "1"
        person.mkdir(parents=True)
        made[name] = root / name
        if photo is None:
            bombs.huge_png(person / "huge.png")
        else:
            (person / "face.jpg").write_bytes((FIXTURES / photo).read_bytes())
    return made


class PeakRss:
    """Samples the server's resident memory every 10 ms while the block runs."""

    def __init__(self, server: EmulatorProcess) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    running = EmulatorProcess(tmp_path_factory.mktemp("srv") / "data").start()
    yield running
    running.stop()


def _upload(server: EmulatorProcess, data: bytes) -> httpx.Response:
    return httpx.post(f"{server.base_url}/emulator/snapshot", params={"mode": "merge"}, content=data, timeout=120)


def _answer(server: EmulatorProcess, data: bytes) -> tuple[int, str]:
    response = _upload(server, data)
    return response.status_code, response.text


def _chunked(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    yield b"0\r\n\r\n"


def test_uploads_made_to_exhaust_memory_are_refused_with_flat_memory(
    server: EmulatorProcess, files: dict[str, Path]
) -> None:
    valid = files["valid"].read_bytes()
    for _ in range(3):  # warm every code path of an upload
        assert _upload(server, valid).status_code == 200
    with PeakRss(server) as idle:
        time.sleep(0.5)
    baseline = idle.peak

    def refused(name: str, send: Callable[[], tuple[int, str]]) -> tuple[int, str]:
        with PeakRss(server) as watch:
            status, text = send()
        growth = watch.peak - baseline
        results[name] = growth
        assert growth <= RSS_MARGIN, f"{name}: RSS grew by {growth / MIB:.0f} MiB"
        return status, text

    results: dict[str, int] = {}
    bomb = files["gzip bomb"].read_bytes()
    status, text = refused("gzip bomb", lambda: _answer(server, bomb))
    assert status == 413 and "it inflates to more; the limit is 67108864 bytes" in text, text

    announced = 1 << 30
    headers = {"Content-Type": "application/json", "Content-Length": str(bombs.enormous_string_size(announced))}

    def with_length() -> tuple[int, str]:
        answer = raw_post(server.port, "/emulator/snapshot", headers, bombs.enormous_string(announced), max_bytes=BOUND)
        assert answer.sent < 16 * MIB  # refused from the header, not after reading
        return answer.status, answer.body.decode()

    status, text = refused("enormous string, Content-Length", with_length)
    assert status == 413 and f"it holds {bombs.enormous_string_size(announced)} bytes" in text, text

    def without_length() -> tuple[int, str]:
        chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        stream = _chunked(bombs.enormous_string(200 * MIB))
        answer = raw_post(server.port, "/emulator/snapshot", chunked, stream, max_bytes=200 * MIB + MIB)
        assert answer.sent < 200 * MIB  # refused once SMARTY_MAX_REQUEST_BYTES arrived
        return answer.status, answer.body.decode()

    status, text = refused("enormous string, chunked", without_length)  # the request bound (32 MiB), not 64 MiB
    assert status == 413 and json.loads(text) == {"detail": too_large_message(32 * MIB)}, text

    tiny = files["tiny entries"].read_bytes()
    status, text = refused("tiny entries", lambda: _answer(server, tiny))
    assert status == 413 and f"holds about {2 * TINY_ENTRIES + 7} values" in text, text

    assert _upload(server, valid).status_code == 200  # still serving
    assert httpx.get(f"{server.base_url}/emulator/ready", timeout=30).status_code == 200
    print(
        f"\nserver RSS {baseline / MIB:.0f} MiB; growth while refused: "
        + ", ".join(f"{name} {growth / MIB:+.1f} MiB" for name, growth in results.items())
    )


# Runs the command as its child and prints the child's peak RSS (KiB) last on standard error. A child's peak counts
# what it inherited at fork, so the command is forked from this small process, not from the test process.
_PEAK_OF_CHILD = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _command(tmp_path: Path, *args: str, stdin: Iterator[bytes] | None = None) -> tuple[int, str, int]:
    """Run ``python -m emulator ARGS``; its exit status, standard error and peak RSS in bytes."""
    env = clean_env({"SMARTY_DATA_DIR": str(tmp_path / "cli-data")}, drop=("SMARTY_", "PROMETHEUS_"))
    errors = tmp_path / "stderr.txt"
    with open(errors, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", _PEAK_OF_CHILD, sys.executable, "-m", "emulator", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        if stdin is not None:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # the command stopped reading: refused
                for chunk in stdin:
                    process.stdin.write(chunk)
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        code = process.wait(timeout=300)
    text, _, peak = errors.read_text().rstrip().rpartition("\n")
    return code, text, int(peak) * 1024


def test_import_and_seed_refuse_them_with_flat_memory(tmp_path: Path, files: dict[str, Path]) -> None:
    code, text, baseline = _command(tmp_path, "import", str(files["valid"]), "--mode", "merge")
    assert code == 0, text
    cases = {
        "gzip bomb": (("import", str(files["gzip bomb"])), None, "it inflates to more"),
        "enormous string, file": (("import", str(files["enormous string"])), None, "bytes; the limit is 67108864"),
        "enormous string, pipe": (("import", "-"), bombs.enormous_string(200 * MIB), "it holds more"),
        "tiny entries": (("import", str(files["tiny entries"])), None, f"holds about {2 * TINY_ENTRIES + 7} values"),
    }
    growths: dict[str, int] = {}
    for name, (args, stdin, message) in cases.items():
        code, text, peak = _command(tmp_path, *args, stdin=stdin)
        assert code == 1 and message in text and "Traceback" not in text, (name, text)
        growths[name] = peak - baseline
        assert peak - baseline <= RSS_MARGIN, f"{name}: peak RSS {peak / MIB:.0f} MiB, baseline {baseline / MIB:.0f}"

    code, text, seed_baseline = _command(tmp_path, "seed", str(files["seed ok"]))
    assert code == 0 and "1 photo(s) added" in text, text
    code, text, peak = _command(tmp_path, "seed", str(files["seed huge"]))
    assert code == 0 and "0 photo(s) added" in text and "1 skipped" in text, text
    assert "image is 20000x10000 pixels, larger than the allowed 3840x2160 (or 2160x3840)" in text, text
    growths["seed, 200-megapixel PNG"] = peak - seed_baseline
    assert peak - seed_baseline <= RSS_MARGIN, f"seed: peak {peak / MIB:.0f} MiB, baseline {seed_baseline / MIB:.0f}"
    print(
        f"\nimport peak RSS {baseline / MIB:.0f} MiB, seed {seed_baseline / MIB:.0f} MiB; growth while refused: "
        + ", ".join(f"{name} {growth / MIB:+.1f} MiB" for name, growth in growths.items())
    )
