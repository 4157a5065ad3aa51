"""Fault injection and latency for persons requests (a testing aid, not part of the real service).

A :class:`FaultRule` matches requests by method, space and image name (a glob over the
names that meta's ``images`` gives), and injects one :data:`KINDS` fault:

* ``object_temporary`` / ``object_permanent``: the matching images' objects get status 2 /
  status 1 with an error text, and those images never reach the service (nothing stored);
* ``envelope_500``: the error envelope ``{"status":500,"body":"Internal Server Error",...}``;
* ``http_502`` / ``http_503`` / ``http_504``: that HTTP status with a gateway-like (nginx
  style) or empty body, as a proxy in front of the real service answers;
* ``drop``: the connection is closed without a response;
* ``latency``: the response is delayed, fixed (``latency_ms``) or uniform between
  ``latency_ms`` and ``latency_max_ms``.

A rule fires for the next ``times`` matching requests, or, with ``probability``, on a draw
from its own ``random.Random(seed)``: the same rules and the same requests give the same
sequence of faults on every run. Without either, it fires on every matching request.

Rules are evaluated in the order they were added: every firing latency rule adds its delay,
every firing per-object rule marks its images, and the first firing request-level fault
(envelope, HTTP, drop) wins and ends the evaluation (later rules are not consumed).
Rules and their counters live in the data dir's shared state (:mod:`emulator.control.state`), so every worker
process of a server applies the same rules: a request that a rule matches takes the rules in a write transaction
(one that none matches only reads them), so ``times`` counts across workers (a ``times=1`` rule fires once in all),
and a rule's draws form one sequence of its ``random.Random(seed)`` in the order requests took them (each process
keeps a generator per rule and moves it forward to the shared draw counter).

:class:`FaultHook` applies the rules to a persons request as one link of the request's hook chain
(:mod:`emulator.persons.hooks`). It decides before the service runs, so that a faulted request stores nothing: a
request-level fault answers without passing the request on, and images with a per-object fault are left out of the
request passed on (validated with the rest of it, then skipped: see ``skip`` in
:class:`emulator.persons.request.PersonsRequest`), their objects put back in meta's order afterwards. Nothing here
knows HTTP: a fault that is not an envelope is a :class:`emulator.persons.hooks.Verbatim` answer (or a dropped
connection), which the persons routes send.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import fnmatch
import functools
import json
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emulator.control.state import SharedState, StoredRule
from emulator.persons.errors import INTERNAL_ERROR, InternalError
from emulator.persons.hooks import Answer, Next, Success, Verbatim
from emulator.persons.request import PersonsRequest
from emulator.persons.types import MAX_SPACE

OBJECT_KINDS = ("object_temporary", "object_permanent")
ABORT_KINDS = ("envelope_500", "http_502", "http_503", "http_504", "drop")
KINDS = (*OBJECT_KINDS, *ABORT_KINDS, "latency")
METHODS = ("set", "recognize", "delete", "truncate")

# Error texts in the style of the real (Go) service; the real texts for these cases are not documented.
TEMPORARY_ERROR = "temporary error: internal service unavailable, try again later"
PERMANENT_ERROR = "could not process image: internal error"


class FaultRuleError(ValueError):
    """A rule that cannot be used; the message says which field and why."""


@dataclass
class FaultRule:
    kind: str
    method: str | None = None
    space: int | None = None
    image: str | None = None  # glob over image names, e.g. "photo-*"
    times: int | None = None
    probability: float | None = None
    seed: int = 0
    latency_ms: float = 0.0
    latency_max_ms: float | None = None
    body: str = "gateway"  # http_*: "gateway" or "empty"
    message: str | None = None  # object_*: the error text
    id: int = 0
    matched: int = 0
    fired: int = 0
    draws: int = 0  # values taken from the rule's random.Random(seed) so far

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build and validate a rule from the admin API's JSON."""
        if not isinstance(data, Mapping):
            raise FaultRuleError("a fault rule is a JSON object")
        unknown = set(data) - set(SPEC_FIELDS)
        if unknown:
            raise FaultRuleError(f"unknown field(s): {', '.join(sorted(unknown))}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise FaultRuleError(f"kind must be one of {', '.join(KINDS)}")
        method = data.get("method")
        if method is not None and method not in METHODS:
            raise FaultRuleError(f"method must be one of {', '.join(METHODS)}")
        space = _optional_int(data, "space", 0, MAX_SPACE)
        image = data.get("image")
        if image is not None and not isinstance(image, str):
            raise FaultRuleError("image must be a glob string")
        times = _optional_int(data, "times", 1, None)
        probability = _optional_number(data, "probability", 0.0, 1.0)
        seed = _optional_int(data, "seed", None, None) or 0
        latency_ms = _optional_number(data, "latency_ms", 0.0, 600_000.0)
        latency_max_ms = _optional_number(data, "latency_max_ms", 0.0, 600_000.0)
        if kind == "latency" and latency_ms is None:
            raise FaultRuleError("a latency rule needs latency_ms (and latency_max_ms for a uniform delay)")
        if latency_max_ms is not None and latency_max_ms < (latency_ms or 0.0):
            raise FaultRuleError("latency_max_ms must be at least latency_ms")
        body = data.get("body", "gateway")
        if body not in ("gateway", "empty"):
            raise FaultRuleError("body must be gateway or empty")
        message = data.get("message")
        if message is not None and (not isinstance(message, str) or not message):
            raise FaultRuleError("message must be a non-empty string")
        return cls(
            kind=kind,
            method=method,
            space=space,
            image=image,
            times=times,
            probability=probability,
            seed=seed,
            latency_ms=latency_ms or 0.0,
            latency_max_ms=latency_max_ms,
            body=body,
            message=message,
        )

    def spec(self) -> dict[str, Any]:
        """The rule as given (what :meth:`from_json` reads back), without id and counters."""
        return {name: getattr(self, name) for name in SPEC_FIELDS}

    def to_json(self) -> dict[str, Any]:
        """The rule as listed by ``GET /emulator/faults``: its id, its spec and its counters."""
        return {
            "id": self.id,
            **self.spec(),
            "matched": self.matched,
            "fired": self.fired,
            "exhausted": self.exhausted,
        }

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matching_names(self, names: Sequence[str]) -> list[str]:
        if self.image is None:
            return list(names)
        return [name for name in names if fnmatch.fnmatchcase(name, self.image)]

    def matches(self, method: str, space: int | None, names: Sequence[str] | None) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.space is not None and self.space != space:
            return False
        if self.image is not None and not self.matching_names(names or ()):
            return False
        return not (self.kind in OBJECT_KINDS and not names)

    def fire(self, draw: Callable[[], float]) -> bool:
        """Called once per matching request: does the rule fire this time? ``draw`` gives the
        rule's next random value."""
        self.matched += 1
        if self.exhausted:
            return False
        if self.probability is not None and draw() >= self.probability:
            return False
        self.fired += 1
        return True

    def delay_s(self, draw: Callable[[], float]) -> float:
        if self.latency_max_ms is None:
            return self.latency_ms / 1000
        low, high = self.latency_ms, self.latency_max_ms
        return (low + (high - low) * draw()) / 1000  # random.Random.uniform(low, high), from the shared sequence


# What a rule is given as (:meth:`FaultRule.from_json`, :meth:`FaultRule.spec`): every field but its id and counters.
SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(FaultRule) if f.name not in ("id", "matched", "fired", "draws"))


def _optional_int(data: Mapping[str, Any], name: str, low: int | None, high: int | None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultRuleError(f"{name} must be a whole number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise FaultRuleError(f"{name} must be between {low} and {high}")
    return value


def _optional_number(data: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultRuleError(f"{name} must be a number")
    if not low <= value <= high:
        raise FaultRuleError(f"{name} must be between {low:g} and {high:g}")
    return float(value)


@dataclass(frozen=True)
class ObjectFault:
    status: int  # 1 permanent, 2 temporary
    error: str


@dataclass
class FaultPlan:
    """What to do to one request: wait, then abort it, or fault some of its objects."""

    delay_s: float = 0.0
    abort: FaultRule | None = None
    objects: dict[str, ObjectFault] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)  # "kind#id" of every rule that fired, for the journal


class _Draws:
    """A rule's ``random.Random(seed)``, kept per process and moved forward to the shared draw counter
    (with one worker it is always there already: no extra work)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.position = 0

    def at(self, position: int) -> float:
        """The generator's value number ``position`` (from 0)."""
        if position < self.position:
            self.rng, self.position = random.Random(self.seed), 0
        while self.position < position:
            self.rng.random()
            self.position += 1
        self.position += 1
        return self.rng.random()


class FaultInjector:
    """The rules of the server (shared by its worker processes), and the decision per request. Thread-safe."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared
        self.active = False  # any rules? Kept fresh by Runtime.sync_shared (once per request) and by add/clear
        self._specs: dict[str, dict[str, Any]] = {}  # spec text -> dict (a rule's spec never changes)
        self._rules: dict[int, tuple[dict[str, Any], FaultRule]] = {}  # id -> (its spec, the parsed rule)
        self._draws: dict[int, _Draws] = {}
        self._lock = threading.Lock()  # for the caches and generators of this process

    def add(self, rule: FaultRule) -> FaultRule:
        stored = self._shared.add_rule(rule.spec())
        rule.id = stored.id
        self.active = True
        return rule

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [copy.copy(self._rule(stored)) for stored in self._shared.rules(self._parse)]

    def clear(self) -> int:
        removed = self._shared.clear_rules()
        self.active = False
        return removed

    def _parse(self, text: str) -> dict[str, Any]:
        spec = self._specs.get(text)
        if spec is None:
            if len(self._specs) > 1000:
                self._specs.clear()
            spec = self._specs[text] = json.loads(text)
        return spec

    def _rule(self, stored: StoredRule) -> FaultRule:
        """A rule object with the stored counters (parsed once per process)."""
        cached = self._rules.get(stored.id)
        if cached is not None and cached[0] is stored.spec:
            rule = cached[1]
        else:
            rule = FaultRule.from_json(stored.spec)
            rule.id = stored.id
            self._rules[stored.id] = (stored.spec, rule)
        rule.matched, rule.fired, rule.draws = stored.matched, stored.fired, stored.draws
        return rule

    def _draw(self, rule: FaultRule) -> float:
        draws = self._draws.get(rule.id)
        if draws is None or draws.seed != rule.seed:
            draws = self._draws[rule.id] = _Draws(rule.seed)
        value = draws.at(rule.draws)
        rule.draws += 1
        return value

    def _any_matches(self, method: str, space: int | None, names: Sequence[str] | None) -> bool:
        """Does any rule match the request? A plain read: whether a rule matches depends on its spec alone."""
        stored_rules = self._shared.rules(self._parse)  # outside the lock: two threads may at worst parse a text twice
        with self._lock:
            self.active = bool(stored_rules)
            return any(self._rule(stored).matches(method, space, names) for stored in stored_rules)

    def plan(self, method: str, space: int | None, names: Sequence[str] | None) -> FaultPlan:
        """Decide the faults of one request. ``names`` are meta's image names (``None`` if
        meta is not usable, which disables per-object faults and image globs).

        A request that no rule matches only reads the rules; one that some rule matches takes them in a write
        transaction (which looks again), since the rules it matches count it."""
        plan = FaultPlan()
        if not self._any_matches(method, space, names):
            return plan

        def decide(stored_rules: list[StoredRule]) -> None:
            self.active = bool(stored_rules)
            for stored in stored_rules:
                rule = self._rule(stored)
                if not rule.matches(method, space, names):
                    continue
                draw = functools.partial(self._draw, rule)
                fired = rule.fire(draw)
                delay = rule.delay_s(draw) if fired and rule.kind == "latency" else 0.0
                stored.matched, stored.fired, stored.draws = rule.matched, rule.fired, rule.draws
                if not fired:
                    continue
                plan.fired.append(f"{rule.kind}#{rule.id}")
                if rule.kind == "latency":
                    plan.delay_s += delay
                elif rule.kind in OBJECT_KINDS:
                    status = 2 if rule.kind == "object_temporary" else 1
                    text = rule.message or (TEMPORARY_ERROR if status == 2 else PERMANENT_ERROR)
                    for name in rule.matching_names(names or ()):
                        plan.objects.setdefault(name, ObjectFault(status, text))
                else:
                    plan.abort = rule
                    break

        with self._lock:
            self._shared.update_rules(decide, self._parse)
        return plan


# --- the hook around a persons request ----------------------------------------------------

# What nginx, the usual proxy in front of such a service, answers.
_GATEWAY_TEXT = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def _gateway_page(status: int) -> bytes:
    title = f"{status} {_GATEWAY_TEXT[status]}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def _http_fault(rule: FaultRule) -> Verbatim:
    """An injected HTTP 502/503/504 (with nginx's page, or empty), or a dropped connection."""
    if rule.kind == "drop":
        return Verbatim(drop=True)
    status = int(rule.kind.removeprefix("http_"))
    if rule.body == "empty":
        return Verbatim(status)
    return Verbatim(status, _gateway_page(status), "text/html")


class FaultHook:
    """The link of the persons request chain that applies the fault rules (installed by the app factory).

    Decides before the service runs, so that a faulted request stores nothing: a request-level fault answers
    without passing the request on, and images with a per-object fault are left out of the request passed on
    (validated with the rest of it), their objects put back in meta's order afterwards."""

    def __init__(self, faults: FaultInjector) -> None:
        self.faults = faults

    async def __call__(self, request: PersonsRequest, call_next: Next) -> Answer:
        if not self.faults.active:  # the usual case: no rules, no extra work
            return await call_next(request)
        names = request.meta.image_names()  # None: per-object faults and image globs do not apply
        if names is not None and request.skip:  # an outer hook answers for these: the service never sees them
            names = [name for name in names if name not in request.skip]
        record = request.record
        # In a worker thread: the rules are read from the shared state, and taken in a write transaction when one
        # matches (over the network with PostgreSQL), which must not hold up the event loop.
        plan: FaultPlan = await asyncio.to_thread(self.faults.plan, request.method, record.space, names)
        record.faults = plan.fired
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if plan.abort is not None:
            if plan.abort.kind == "envelope_500":
                raise InternalError(INTERNAL_ERROR)
            return _http_fault(plan.abort)
        if not plan.objects or names is None:
            return await call_next(request)
        answer = await call_next(request.without(frozenset(plan.objects)))
        if not isinstance(answer, Success):
            return answer
        served = iter(answer.body.get("objects", []))
        merged = []
        for name in names:
            fault = plan.objects.get(name)
            if fault is None:
                merged.append(next(served))
            else:
                merged.append({"status": fault.status, "error": fault.error, "name": name})
        return Success({**answer.body, "objects": merged})
