"""``smarty-emulator compare --cassettes DIR``: the comparison of compare mode, offline, against recorded cassettes.

Each cassette's persons requests are sent in recorded order to a fresh emulator (``serve`` as a subprocess on a free
loopback port, with a temporary data dir; emptied between cassettes, so each starts from nothing as its recording
did), and each answer is compared with the recorded one (:mod:`emulator.upstream.diff`). The token endpoint's
interactions are not compared (they hold no persons data, and their secrets are redacted). A cassette whose images
were not stored (``SMARTY_RECORD_IMAGES=hash``) cannot be replayed: the command says so and exits 2 before it starts
anything.

Exit status: 0 when the differences are within the bounds, 1 when they pass them, 2 when nothing could be compared
(no cassette, a cassette without its images or unreadable, an emulator that did not start).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from emulator.upstream.cassette import Cassette, CassetteError
from emulator.upstream.diff import (
    DEFAULT_MIN_IOU,
    Entry,
    TagMap,
    WireAnswer,
    compare,
    report,
    summary,
    translate_meta,
)

PERSONS_METHODS = ("set", "recognize", "delete", "truncate")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever *_proxy says
REQUEST_TIMEOUT_S = 300.0
TOKEN = "smarty-emulator-offline-compare"


class CassetteProblem(Exception):
    """A cassette that cannot be compared offline; the message says which and why."""


@dataclass(frozen=True)
class Bounds:
    """When the differences fail the run (see ``--help``)."""

    max_diffs: int = 0
    min_iou: float = 0.0
    max_similarity_delta: float | None = None

    def failures(self, totals: Mapping[str, Any]) -> list[str]:
        out = []
        if totals["with_diffs"] > self.max_diffs:
            out.append(f"{totals['with_diffs']} request(s) with differences, more than --max-diffs {self.max_diffs}")
        mean_iou = totals["mean_iou"]
        if self.min_iou > 0 and mean_iou is not None and mean_iou < self.min_iou:
            out.append(f"mean IoU {mean_iou} is below --min-iou {self.min_iou:g}")
        p95 = totals["p95_similarity_delta"]
        if self.max_similarity_delta is not None and p95 is not None and p95 > self.max_similarity_delta:
            out.append(f"p95 similarity delta {p95} is above --max-similarity-delta {self.max_similarity_delta:g}")
        return out


@dataclass
class Planned:
    """One recorded persons request, ready to send again."""

    method: str
    path: str
    meta: bytes | None
    meta_json: Any
    images: list[tuple[str, bytes]]
    recorded: WireAnswer


@dataclass
class CassetteRun:
    name: str
    requests: list[Planned]
    skipped: int = 0  # interactions that are not persons requests (the token endpoint)
    entries: list[Entry] = field(default_factory=list)


def meta_bytes(meta: Any) -> bytes | None:
    """The meta part to send: the recorded text when it was not JSON (``{"raw": ...}``), else compact JSON (``None``:
    the request had no meta)."""
    if meta is None:
        return None
    if isinstance(meta, dict) and set(meta) == {"raw"} and isinstance(meta["raw"], str):
        return meta["raw"].encode()
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()


def load_cassette(path: Path) -> CassetteRun:
    """The persons requests of the cassette at ``path``, with their images read from its ``blobs/``."""
    try:
        cassette = Cassette.load(path)
    except CassetteError as exc:
        raise CassetteProblem(str(exc)) from None
    run = CassetteRun(path.stem, [])
    for interaction in cassette.interactions:
        if interaction.method not in PERSONS_METHODS:
            run.skipped += 1
            continue
        images = []
        for image in interaction.images:
            try:
                images.append((image.name, (cassette.blob_dir / str(image.sha256)).read_bytes()))
            except OSError:
                raise CassetteProblem(
                    f"{path.name}: image {image.name!r} ({image.sha256}) is not in {cassette.blob_dir}: "
                    "the cassette was recorded with SMARTY_RECORD_IMAGES=hash (or its blobs were removed). "
                    "Offline compare needs the images: record with SMARTY_RECORD_IMAGES=full."
                ) from None
        meta = interaction.meta
        run.requests.append(
            Planned(
                method=interaction.method,
                path=interaction.path,
                meta=meta_bytes(meta),
                meta_json=None if isinstance(meta, dict) and set(meta) == {"raw"} else meta,
                images=images,
                recorded=WireAnswer(interaction.response.status, interaction.response.body),
            )
        )
    return run


def multipart(meta: bytes | None, images: Sequence[tuple[str, bytes]]) -> tuple[bytes, str]:
    """The body and content type of a persons request: meta first, then the images in their recorded order."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    if meta is not None:
        chunks += [f'--{boundary}\r\nContent-Disposition: form-data; name="meta"\r\n\r\n'.encode(), meta, b"\r\n"]
    for name, data in images:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
        chunks += [head.encode(), b"Content-Type: application/octet-stream\r\n\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def send(root: str, planned: Planned) -> WireAnswer:
    """The emulator's answer to one recorded request."""
    body, content_type = multipart(planned.meta, planned.images)
    url = f"{root}{planned.path}?oauth_token={TOKEN}&oauth_provider=mcs"
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with _DIRECT.open(request, timeout=REQUEST_TIMEOUT_S) as response:
            return WireAnswer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return WireAnswer(exc.code, exc.read())


def _reset(root: str) -> None:
    request = urllib.request.Request(f"{root}/emulator/reset", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    with _DIRECT.open(request, timeout=REQUEST_TIMEOUT_S):
        pass


def _ignore(entry: Entry, kinds: frozenset[str]) -> Entry:
    if kinds:
        entry.differences = [d for d in entry.differences if d["kind"] not in kinds]
    return entry


def run_cassettes(
    runs: Sequence[CassetteRun], settings: Mapping[str, Any], min_iou: float, ignore: frozenset[str]
) -> None:
    """Send every cassette's requests to one fresh emulator (emptied between cassettes), comparing as they come."""
    from emulator.launcher import EmulatorError, ServerProcess

    with tempfile.TemporaryDirectory(prefix="smarty-compare-") as data_dir:
        fixed = {**settings, "admin": "loopback"}  # the reset between cassettes
        server = ServerProcess(Path(data_dir), settings=fixed, workers=1)
        try:
            server.start(timeout=300)
        except EmulatorError as exc:
            raise CassetteProblem(f"the emulator did not start: {exc}") from None
        try:
            for run in runs:
                _reset(server.url)
                tags: dict[int | None, TagMap] = {}
                for position, planned in enumerate(run.requests, 1):
                    space_tags = tags.setdefault(_space(planned.meta_json), TagMap())
                    # The recorded ids are the upstream's: a person it created has another id here.
                    linked = translate_meta(planned.method, planned.meta_json, space_tags)
                    sent = planned if linked is None else dataclasses.replace(planned, meta=meta_bytes(linked))
                    answer = send(server.url, sent)
                    label = f"{run.name}#{position}"
                    entry = compare(
                        planned.method,
                        planned.meta_json,
                        planned.recorded,
                        answer,
                        space_tags,
                        min_iou=min_iou,
                        label=label,
                    )
                    run.entries.append(_ignore(entry, ignore))
        finally:
            server.stop()


def _space(meta: Any) -> int | None:
    space = meta.get("space") if isinstance(meta, dict) else None
    return int(space) if isinstance(space, str) and space.isdigit() and len(space) < 3 else None


def _describe(difference: Mapping[str, Any]) -> str:
    text = f"{difference['kind']} at {difference['where']}"
    if "field" in difference:
        return f"{text}: {difference['field']}"
    upstream, emulator = json.dumps(difference.get("upstream")), json.dumps(difference.get("emulator"))
    return f"{text}: upstream {upstream}, emulator {emulator}"


def render_text(runs: Sequence[CassetteRun], totals: Mapping[str, Any], failures: Sequence[str], out: TextIO) -> None:
    for run in runs:
        part = summary(run.entries)
        skipped = f", {run.skipped} token request(s) not compared" if run.skipped else ""
        out.write(f"{run.name}: {part['requests']} requests, {part['identical']} identical{skipped}\n")
        for entry in run.entries:
            for difference in entry.differences:
                out.write(f"  {entry.label} {entry.method}: {_describe(difference)}\n")
    figures = ", ".join(f"{key} {value}" for key, value in totals.items())
    out.write(f"summary: {figures}\n")
    out.write("bounds: " + ("; ".join(failures) if failures else "within the bounds") + "\n")


def render_json(runs: Sequence[CassetteRun], totals: Mapping[str, Any], failures: Sequence[str], out: TextIO) -> None:
    doc = {
        "summary": totals,
        "bounds": {"passed": not failures, "failures": list(failures)},
        "cassettes": {run.name: {**report(run.entries), "skipped": run.skipped} for run in runs},
    }
    json.dump(doc, out, indent=2)
    out.write("\n")


def render_junit(runs: Sequence[CassetteRun], totals: Mapping[str, Any], failures: Sequence[str], out: TextIO) -> None:
    """JUnit XML: a test suite per cassette, a test case per request (failed when it has differences), and a suite
    ``bounds`` whose one case fails when the run passes the bounds."""
    suites = ET.Element("testsuites", name="smarty-emulator compare")
    for run in runs:
        failed = [e for e in run.entries if not e.identical]
        suite = ET.SubElement(
            suites, "testsuite", name=run.name, tests=str(len(run.entries)), failures=str(len(failed)), errors="0"
        )
        for entry in run.entries:
            case = ET.SubElement(suite, "testcase", classname=run.name, name=f"{entry.label} {entry.method}")
            if entry.differences:
                lines = [_describe(d) for d in entry.differences]
                failure = ET.SubElement(case, "failure", message=lines[0], type="difference")
                failure.text = "\n".join(lines)
    bounds = ET.SubElement(suites, "testsuite", name="bounds", tests="1", failures=str(int(bool(failures))), errors="0")
    case = ET.SubElement(bounds, "testcase", classname="bounds", name="differences within the bounds")
    if failures:
        ET.SubElement(case, "failure", message=failures[0], type="bounds").text = "\n".join(failures)
    ET.SubElement(case, "system-out").text = json.dumps(totals)
    out.write(ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


RENDERERS = {"text": render_text, "json": render_json, "junit": render_junit}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cassettes", required=True, help="The cassette directory (<name>.json and blobs/).")
    parser.add_argument("--format", choices=tuple(RENDERERS), default="text", help="Output format [default text].")
    parser.add_argument("--output", default="-", help="Write the report to this file [default: standard output].")
    parser.add_argument(
        "--max-diffs", type=int, default=0, help="Requests with differences allowed before the run fails [default 0]."
    )
    parser.add_argument(
        "--min-iou",
        type=float,
        default=0.0,
        help="Fail when the paired faces' mean box IoU is below this [default 0: off].",
    )
    parser.add_argument(
        "--max-similarity-delta",
        type=float,
        default=None,
        help="Fail when the 95th percentile of |similarity delta| of paired faces is above this [default: off].",
    )
    parser.add_argument(
        "--pair-iou",
        type=float,
        default=DEFAULT_MIN_IOU,
        help=f"The smallest box IoU at which two faces are the same face [default {DEFAULT_MIN_IOU}].",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KIND",
        help="A kind of difference not to count (e.g. field_missing); may be given again.",
    )


def main(args: argparse.Namespace, emulator_settings: Mapping[str, Any]) -> int:
    """The command; ``emulator_settings``: the settings given as flags, for the emulator under test."""
    directory = Path(args.cassettes)
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    try:
        if not paths:
            raise CassetteProblem(f"no cassette (<name>.json) in {directory}")
        runs = [load_cassette(path) for path in paths]
        if not any(run.requests for run in runs):
            raise CassetteProblem(f"the cassettes in {directory} hold no persons request")
        run_cassettes(runs, emulator_settings, args.pair_iou, frozenset(args.ignore))
    except CassetteProblem as exc:
        print(f"smarty-emulator compare: {exc}", file=sys.stderr)
        return 2
    totals = summary([entry for run in runs for entry in run.entries])
    bounds = Bounds(args.max_diffs, args.min_iou, args.max_similarity_delta)
    failures = bounds.failures(totals)
    render = RENDERERS[args.format]
    if args.output == "-":
        render(runs, totals, failures, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            render(runs, totals, failures, out)
    if failures:
        print("smarty-emulator compare: " + "; ".join(failures), file=sys.stderr)
    return 1 if failures else 0


def settings_from_flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The emulator settings given on the command line (not the environment: the server under test is clean)."""
    skip = {"host", "port", "data_dir", "workers", "database_url", "tls_port", "proxy_port", "seed", "admin"}
    skip |= {"admin_token", "clients", "oauth_clients"}  # the command's own token must be accepted
    return {name: getattr(args, name) for name in names if name not in skip and getattr(args, name, None) is not None}
