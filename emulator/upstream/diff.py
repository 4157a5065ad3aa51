"""The domain-aware difference between the upstream's answer to a persons request and the emulator's.

Pure functions over the two answers as the wire carries them (the HTTP status and the envelope): no engine, no
store, no HTTP. Used by the live ``compare`` mode (:mod:`emulator.upstream.shadow`) and by the offline
``smarty-emulator compare`` command (:mod:`emulator.upstream.offline`).

What counts as a *difference* (an entry with one is not ``identical``): a different HTTP or envelope status, a
different error text, an object (image) only one side answered, a different object status or error, a face only one
side found, a paired face whose tags (or aliases, or categorical attributes) disagree, and a field only one side
wrote. Numbers that the two sides compute each in their own way (the box, the similarity, the confidence) are
*measured*, not differences: each pair of faces carries its box IoU, its similarity delta and its confidence delta,
and the bounds of the offline command judge them.

Faces are paired per object (objects are matched by name), greedily by box IoU: the pair with the largest IoU first,
and no pair below ``min_iou``. Tags are compared through a :class:`TagMap`: the upstream's person ids are its own
(a ``create_new`` there gives the next id of the upstream's space, which may already hold persons), so the first
time an upstream tag that no request named meets an emulator tag, the two are linked, and from then on they must
meet again. Ids that a ``set`` named are the client's own and must be equal on both sides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MIN_IOU = 0.3  # two detectors' boxes of one face differ in size and margin; 0.3 still never joins neighbours
UNDEFINED = "undefined"
MEASURED = ("coord", "similarity", "confidence", "awesomeness", "valence", "arousal", "frontality", "visibility", "age")
ENVELOPE_FIELDS = ("status", "body", "htmlencoded", "last_modified")


@dataclass(frozen=True)
class WireAnswer:
    """One side's answer: its HTTP status and body bytes, with the envelope parsed when the body is one."""

    http_status: int
    content: bytes

    @property
    def envelope(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return doc if isinstance(doc, dict) and "status" in doc and "body" in doc else None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class TagMap:
    """The upstream's person tags linked to the emulator's, for one space of one client (see the module's doc)."""

    def __init__(self) -> None:
        self.named: set[str] = set()  # tags a set request named: the same on both sides
        self.up_to_em: dict[str, str] = {}
        self.em_to_up: dict[str, str] = {}

    def name(self, person_ids: Iterable[int]) -> None:
        """A ``set`` named these persons: their tags are the client's, equal on both sides (unless the upstream
        created the person, and it is linked already)."""
        for person_id in person_ids:
            tag = f"person{person_id}"
            if tag not in self.up_to_em:
                self.named.add(tag)

    def shadow_id(self, person_id: int) -> int:
        """The emulator's id of the upstream's person ``person_id``: the linked one, else the same."""
        linked = self.up_to_em.get(f"person{person_id}", "")
        return int(linked[6:]) if linked.startswith("person") and linked[6:].isdigit() else person_id

    def forget(self, person_ids: Iterable[int]) -> None:
        """A ``delete`` removed these persons (ids of the upstream's space)."""
        for person_id in person_ids:
            tag = f"person{person_id}"
            self.named.discard(tag)
            linked = self.up_to_em.pop(tag, None)
            if linked is not None:
                self.em_to_up.pop(linked, None)

    def clear(self) -> None:
        """A ``truncate``: the space starts again on both sides."""
        self.named.clear()
        self.up_to_em.clear()
        self.em_to_up.clear()

    def expected(self, upstream_tag: str) -> str | None:
        """The emulator's tag for ``upstream_tag``, or ``None`` while it is not linked yet."""
        if upstream_tag == UNDEFINED or upstream_tag in self.named:
            return upstream_tag
        return self.up_to_em.get(upstream_tag)

    def agree(self, upstream_tag: str, emulator_tag: str) -> bool:
        """Whether two paired faces' tags agree; an unlinked pair of person tags is linked (and agrees) unless
        either side is linked to another already."""
        expected = self.expected(upstream_tag)
        if expected is not None:
            return expected == emulator_tag
        if emulator_tag == UNDEFINED or emulator_tag in self.named or emulator_tag in self.em_to_up:
            return False
        self.up_to_em[upstream_tag] = emulator_tag
        self.em_to_up[emulator_tag] = upstream_tag
        return True

    def note_request(self, method: str, meta: Any) -> None:
        """Learn from the request (before its answers are compared): what ``set``, ``delete`` and ``truncate``
        do to the ids."""
        images = meta.get("images") if isinstance(meta, dict) else None
        ids = [
            image["person_id"]
            for image in images or []
            if isinstance(image, dict) and isinstance(image.get("person_id"), int) and image["person_id"] > 0
        ]
        if method == "set":
            self.name(ids)
        elif method == "delete":
            self.forget(ids)
        elif method == "truncate":
            self.clear()


def translate_meta(method: str, meta: Any, tags: TagMap) -> dict[str, Any] | None:
    """The meta of a ``set`` or ``delete`` with the upstream's person ids replaced by the emulator's where they are
    linked (the upstream created the person), or ``None`` when nothing changes."""
    if method not in ("set", "delete") or not isinstance(meta, dict) or not isinstance(meta.get("images"), list):
        return None
    images, changed = [], False
    for image in meta["images"]:
        person_id = image.get("person_id") if isinstance(image, dict) else None
        if isinstance(person_id, int) and not isinstance(person_id, bool) and tags.shadow_id(person_id) != person_id:
            image, changed = {**image, "person_id": tags.shadow_id(person_id)}, True
        images.append(image)
    return {**meta, "images": images} if changed else None


@dataclass(frozen=True)
class FacePair:
    """Two faces paired by box IoU: the same face as each side saw it."""

    object: str
    iou: float
    upstream_tag: str
    emulator_tag: str
    tags_agree: bool
    similarity_delta: float | None  # emulator minus upstream
    confidence_delta: float | None
    upstream_coord: list[Any]
    emulator_coord: list[Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "iou": round(self.iou, 4),
            "tags_agree": self.tags_agree,
            "upstream_tag": self.upstream_tag,
            "emulator_tag": self.emulator_tag,
            "similarity_delta": None if self.similarity_delta is None else round(self.similarity_delta, 4),
            "confidence_delta": None if self.confidence_delta is None else round(self.confidence_delta, 5),
            "upstream_coord": self.upstream_coord,
            "emulator_coord": self.emulator_coord,
        }


@dataclass
class Entry:
    """The comparison of one request's two answers."""

    method: str
    space: int | None
    upstream_status: tuple[int, int | None]  # (HTTP status, envelope status or None)
    emulator_status: tuple[int, int | None]
    differences: list[dict[str, Any]] = field(default_factory=list)
    faces: list[FacePair] = field(default_factory=list)
    label: str = ""  # where the request came from: a time, or a cassette's name and position

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def status_mismatch(self) -> bool:
        return self.upstream_status != self.emulator_status

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d["kind"] == kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "space": self.space,
            "identical": self.identical,
            "upstream": {"http_status": self.upstream_status[0], "status": self.upstream_status[1]},
            "emulator": {"http_status": self.emulator_status[0], "status": self.emulator_status[1]},
            "differences": self.differences,
            "faces": [pair.to_json() for pair in self.faces],
        }


def iou(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Intersection over union of two ``[left, top, right, bottom]`` boxes (0 for a malformed one)."""
    try:
        ax0, ay0, ax1, ay1 = (float(v) for v in a)
        bx0, by0, bx1, by1 = (float(v) for v in b)
    except (TypeError, ValueError):
        return 0.0
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def pair_faces(
    upstream: Sequence[Mapping[str, Any]], emulator: Sequence[Mapping[str, Any]], min_iou: float
) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Greedy pairing by IoU: ``(pairs (i, j, iou), unpaired upstream indexes, unpaired emulator indexes)``."""
    candidates = sorted(
        (
            (iou(u.get("coord", ()), e.get("coord", ())), i, j)
            for i, u in enumerate(upstream)
            for j, e in enumerate(emulator)
        ),
        key=lambda c: (-c[0], c[1], c[2]),
    )
    pairs: list[tuple[int, int, float]] = []
    used_up: set[int] = set()
    used_em: set[int] = set()
    for value, i, j in candidates:
        if value < min_iou or value <= 0:
            break
        if i in used_up or j in used_em:
            continue
        pairs.append((i, j, value))
        used_up.add(i)
        used_em.add(j)
    pairs.sort()
    return (
        pairs,
        [i for i in range(len(upstream)) if i not in used_up],
        [j for j in range(len(emulator)) if j not in used_em],
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _delta(upstream: Any, emulator: Any) -> float | None:
    up, em = _number(upstream), _number(emulator)
    return None if up is None or em is None else em - up


def _fields(where: str, upstream: Mapping[str, Any], emulator: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Fields only one side wrote."""
    out = [{"kind": "field_missing", "where": where, "field": k} for k in upstream if k not in emulator]
    return out + [{"kind": "field_extra", "where": where, "field": k} for k in emulator if k not in upstream]


class _Comparison:
    def __init__(self, entry: Entry, tags: TagMap, min_iou: float) -> None:
        self.entry, self.tags, self.min_iou = entry, tags, min_iou

    def note(self, kind: str, where: str, upstream: Any = None, emulator: Any = None) -> None:
        self.entry.differences.append({"kind": kind, "where": where, "upstream": upstream, "emulator": emulator})

    def envelopes(self, up: dict[str, Any], em: dict[str, Any]) -> None:
        self.entry.differences += _fields("envelope", up, em)
        if up.get("status") != em.get("status"):
            self.note("status", "envelope", up.get("status"), em.get("status"))
        up_body, em_body = up.get("body"), em.get("body")
        if isinstance(up_body, dict) and isinstance(em_body, dict):
            self.bodies(up_body, em_body)
        elif up_body != em_body:
            both_text = isinstance(up_body, str) and isinstance(em_body, str)
            self.note("error_text" if both_text else "body", "body", up_body, em_body)
        for name in ("htmlencoded", "last_modified"):
            if name in up and name in em and up[name] != em[name]:
                self.note("value", name, up[name], em[name])

    def bodies(self, up: dict[str, Any], em: dict[str, Any]) -> None:
        self.entry.differences += _fields("body", up, em)
        for name in up.keys() & em.keys() - {"objects"}:
            if up[name] != em[name]:
                self.note("value", f"body.{name}", up[name], em[name])
        up_objects = _objects(up.get("objects"))
        em_objects = _objects(em.get("objects"))
        for name, up_object in up_objects.items():
            if name not in em_objects:
                self.note("object_only_upstream", f"objects[{name}]")
                continue
            self.objects(name, up_object, em_objects[name])
        for name in em_objects.keys() - up_objects.keys():
            self.note("object_only_emulator", f"objects[{name}]")

    def objects(self, name: str, up: Mapping[str, Any], em: Mapping[str, Any]) -> None:
        where = f"objects[{name}]"
        self.entry.differences += [d for d in _fields(where, up, em) if d["field"] not in ("persons", "error")]
        if up.get("status") != em.get("status"):
            self.note("object_status", where, up.get("status"), em.get("status"))
        if up.get("error") != em.get("error"):
            self.note("object_error", where, up.get("error"), em.get("error"))
        up_faces = [p for p in up.get("persons") or [] if isinstance(p, dict)]
        em_faces = [p for p in em.get("persons") or [] if isinstance(p, dict)]
        pairs, only_up, only_em = pair_faces(up_faces, em_faces, self.min_iou)
        for i in only_up:
            self.note("face_only_upstream", where, up_faces[i].get("coord"), None)
        for j in only_em:
            self.note("face_only_emulator", where, None, em_faces[j].get("coord"))
        for i, j, value in pairs:
            self.faces(name, value, up_faces[i], em_faces[j])

    def faces(self, name: str, value: float, up: Mapping[str, Any], em: Mapping[str, Any]) -> None:
        where = f"objects[{name}].persons[{up.get('coord')}]"
        self.entry.differences += [d for d in _fields(where, up, em) if d["field"] != "aliases"]
        up_tag, em_tag = str(up.get("tag")), str(em.get("tag"))
        agree = self.tags.agree(up_tag, em_tag)
        if not agree:
            self.note("tag", where, up_tag, em_tag)
        up_aliases = {self.tags.expected(str(a)) or str(a) for a in up.get("aliases") or []}
        em_aliases = {str(a) for a in em.get("aliases") or []}
        if up_aliases != em_aliases:
            self.note("aliases", where, sorted(up.get("aliases") or []), sorted(em_aliases))
        for key in up.keys() & em.keys() - {"tag", "aliases", *MEASURED}:
            if up[key] != em[key]:  # a categorical attribute (searcher 1): sex, emotion
                self.note("attribute", f"{where}.{key}", up[key], em[key])
        self.entry.faces.append(
            FacePair(
                object=name,
                iou=value,
                upstream_tag=up_tag,
                emulator_tag=em_tag,
                tags_agree=agree,
                similarity_delta=_delta(up.get("similarity"), em.get("similarity")),
                confidence_delta=_delta(up.get("confidence"), em.get("confidence")),
                upstream_coord=list(up.get("coord") or []),
                emulator_coord=list(em.get("coord") or []),
            )
        )


def _objects(value: Any) -> dict[str, Mapping[str, Any]]:
    """The objects by name (an object without a name is filed by its position)."""
    if not isinstance(value, list):
        return {}
    return {str(o.get("name", f"#{i}")): o for i, o in enumerate(value) if isinstance(o, dict)}


def compare(
    method: str,
    meta: Any,
    upstream: WireAnswer,
    emulator: WireAnswer,
    tags: TagMap,
    *,
    min_iou: float = DEFAULT_MIN_IOU,
    label: str = "",
) -> Entry:
    """Compare one request's two answers (``meta``: the request's parsed meta, which ``tags`` learns from)."""
    up_env, em_env = upstream.envelope, emulator.envelope
    entry = Entry(
        method=method,
        space=_space(meta),
        upstream_status=(upstream.http_status, _status(up_env)),
        emulator_status=(emulator.http_status, _status(em_env)),
        label=label,
    )
    comparison = _Comparison(entry, tags, min_iou)
    if upstream.http_status != emulator.http_status:
        comparison.note("http_status", "response", upstream.http_status, emulator.http_status)
    if up_env is not None and em_env is not None:
        if _status(up_env) == 200 and _status(em_env) == 200:
            tags.note_request(method, meta)
        comparison.envelopes(up_env, em_env)
    elif up_env is not None or em_env is not None:  # one side is no envelope at all (an HTTP 502, a proxy's page)
        comparison.note("status", "envelope", _status(up_env), _status(em_env))
    elif upstream.content != emulator.content:
        comparison.note("body", "response", upstream.text[:200], emulator.text[:200])
    return entry


def _status(envelope: Mapping[str, Any] | None) -> int | None:
    status = envelope.get("status") if envelope is not None else None
    return status if isinstance(status, int) else None


def _space(meta: Any) -> int | None:
    space = meta.get("space") if isinstance(meta, dict) else None
    return int(space) if isinstance(space, str) and space.isdigit() and len(space) < 3 else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by the nearest rank, ``None`` when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(entries: Sequence[Entry]) -> dict[str, Any]:
    """The report's summary: counts, the mean IoU of the paired faces and the 95th percentile of the absolute
    similarity deltas (``null`` while no face was paired)."""
    pairs = [pair for entry in entries for pair in entry.faces]
    deltas = [abs(p.similarity_delta) for p in pairs if p.similarity_delta is not None]
    mean_iou = sum(p.iou for p in pairs) / len(pairs) if pairs else None
    p95 = percentile(deltas, 0.95)
    return {
        "requests": len(entries),
        "identical": sum(1 for e in entries if e.identical),
        "with_diffs": sum(1 for e in entries if not e.identical),
        "mean_iou": None if mean_iou is None else round(mean_iou, 4),
        "p95_similarity_delta": None if p95 is None else round(p95, 4),
        "status_mismatches": sum(1 for e in entries if e.status_mismatch),
        "faces_only_upstream": sum(e.count("face_only_upstream") for e in entries),
        "faces_only_emulator": sum(e.count("face_only_emulator") for e in entries),
        "faces_paired": len(pairs),
        "tag_mismatches": sum(e.count("tag") for e in entries),
    }


def report(entries: Sequence[Entry]) -> dict[str, Any]:
    """``GET /emulator/compare``'s JSON, and the offline command's ``--format json``."""
    return {"summary": summary(entries), "entries": [entry.to_json() for entry in entries]}
