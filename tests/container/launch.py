"""Podman for the container tests: an engine configuration that works on these machines, a Debian base image made
with debootstrap (no container registry is needed) and cached by name, the emulator image built from
``docker/Dockerfile``, and containers of it.

Everything goes through the ``podman`` command with ``CONTAINERS_CONF`` pointing at a file the session writes:
  - runc, not crun (crun refuses hosts whose cgroups are in hybrid mode);
  - explicit ulimits (without them the runtime's setrlimit is refused on some hosts);
  - host networking by default, so a container serves on a free port of the host's loopback like a local ``serve``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.emulator_server import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "host"

[engine]
runtime = "runc"
"""

# The base that stands in for python:3.12-slim: Debian's own Python (3.11 in bookworm) with venv and CA certificates.
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# What the official slim images drop too: downloaded packages and the package lists.
BASE_CLEANUP = ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*")
BASE_REPOSITORY = "localhost/smarty-emulator-base"
IMAGE_REPOSITORY = "localhost/smarty-emulator"
BUILD_LABEL = "org.smarty-emulator.test-build"  # on the images the tests build: which checkout and architecture

READY_SECONDS = 60.0  # the Dockerfile's HEALTHCHECK start period
# pip options that say how to reach the package index (the rest of a pip configuration is left out of the build).
PIP_NETWORK_OPTIONS = (
    "index-url",
    "extra-index-url",
    "trusted-host",
    "cert",
    "proxy",
    "timeout",
    "default-timeout",
    "retries",
)
PIP_CA_TARGET = "/etc/ssl/certs/pip-ca.pem"  # where the Dockerfile mounts the pip-ca secret


# What the closing summary of a test run reports (image size over its base, time to ready...): name -> text.
FIGURES: dict[str, str] = {}


class EngineUnavailable(Exception):
    """A container cannot run on this machine; the message says why."""


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One holder at a time on this machine (two test sessions must not debootstrap the same base together)."""
    with open(Path(tempfile.gettempdir()) / f"smarty-emulator-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Podman:
    """The ``podman`` command with this session's engine configuration."""

    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: Any = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, stdin=stdin
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {shlex.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def output(self, *args: str, timeout: float = 120) -> str:
        return self.run(*args, timeout=timeout).stdout.strip()

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def image_size(self, image: str) -> int:
        """Uncompressed size in bytes, as ``podman image inspect --format '{{.Size}}'`` gives it."""
        return int(self.output("image", "inspect", "--format", "{{.Size}}", image))

    def inspect(self, what: str) -> dict[str, Any]:
        [found] = json.loads(self.output("inspect", what))
        return dict(found)


def find_tool(name: str) -> str | None:
    """A command on PATH or in the system directories (root's tools live in /usr/sbin, not always on PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def setup_podman(workdir: Path) -> Podman:
    """Write the engine configuration and check that podman answers with it."""
    for tool in ("podman", "runc"):
        if find_tool(tool) is None:
            raise EngineUnavailable(
                f"{tool} is not installed (`make test` installs podman and runc as root with apt-get)"
            )
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    podman = Podman(conf)
    info = podman.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if info.returncode != 0:
        raise EngineUnavailable(f"podman does not work here: {info.stderr.strip()[-1000:]}")
    return podman


# --- the base image ---------------------------------------------------------------------------------------------


def base_image_name(arch: str) -> str:
    """Named after its recipe, so that a changed recipe makes a new base and an unchanged one is found again."""
    recipe = json.dumps([SUITE, "minbase", BASE_PACKAGES, BASE_CLEANUP]).encode()
    return f"{BASE_REPOSITORY}:{SUITE}-{arch}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def debian_mirror(sources: Sequence[Path] = ()) -> str | None:
    """The mirror this machine's apt uses for the base suite (debootstrap's own default when none is found)."""
    paths = list(sources) or [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in text.split("\n\n"):
                pairs = [line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"]
                fields = {key.strip(): value.split() for key, value in pairs}
                if "deb" in fields.get("Types", []) and SUITE in fields.get("Suites", []) and fields.get("URIs"):
                    return fields["URIs"][0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^\]]*\]", " ", line).split()  # without its [options]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return None


def ensure_base_image(podman: Podman, arch: str, workdir: Path) -> str:
    """The cached base image of ``arch``; made with debootstrap (about 1 min, arm64 under emulation about 3)
    the first time on a machine."""
    name = base_image_name(arch)
    with machine_lock(f"base-{arch}"):
        if podman.exists(name):
            return name
        if os.geteuid() != 0:
            raise EngineUnavailable(f"the base image {name} is not built yet and debootstrap needs root")
        debootstrap = find_tool("debootstrap")
        if debootstrap is None:
            raise EngineUnavailable("debootstrap is not installed (`make test` installs it as root with apt-get)")
        root = workdir / f"rootfs-{arch}"
        command = [
            debootstrap,
            f"--arch={arch}",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(root),
        ]
        mirror = debian_mirror()
        if mirror:
            command.append(mirror)
        try:
            made = subprocess.run(command, capture_output=True, text=True, timeout=1200)
            if made.returncode != 0:
                raise EngineUnavailable(f"debootstrap of the {arch} base failed:\n{made.stdout[-2000:]}{made.stderr}")
            for pattern in BASE_CLEANUP:
                for path in root.glob(pattern):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
                podman.run(
                    "import",
                    "--arch",
                    arch,
                    "--message",
                    f"debootstrap {SUITE} minbase",
                    "-",
                    name,
                    stdin=tar.stdout,
                    timeout=600,
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return name


# --- the emulator image -----------------------------------------------------------------------------------------


def pip_config() -> dict[str, str]:
    """How this machine's pip reaches the package index: its effective configuration (files and ``PIP_*``
    variables), network options only, host-local indexes left out."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    found: dict[str, str] = {}
    from_env: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        section, _, option = key.rpartition(".")
        value = value.strip().strip("'\"")
        if option not in PIP_NETWORK_OPTIONS or not value:
            continue
        if option.endswith("index-url"):
            value = " ".join(url for url in value.split() if not url.startswith("file:"))
            if not value:
                continue
        (from_env if section == ":env:" else found)[option] = value
    return {**found, **from_env}  # PIP_* variables win over files, as in pip


def pip_secrets(workdir: Path) -> list[str]:
    """The Dockerfile's optional build secrets, so that pip in the builder stage reaches the index as it does
    here: ``pip.conf`` (this machine's network options) and ``pip-ca`` (the CA bundle it names). A secret is
    mounted for the one RUN that asks for it and is part of no layer."""
    config = pip_config()
    secrets: list[str] = []
    cert = config.pop("cert", None)
    if cert and Path(cert).is_file():
        secrets += ["--secret", f"id=pip-ca,src={cert}"]
        config["cert"] = PIP_CA_TARGET
    if config:
        conf = workdir / "pip.conf"
        conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(config.items())))
        secrets += ["--secret", f"id=pip.conf,src={conf}"]
    return secrets


def build_image(podman: Podman, base: str, arch: str, workdir: Path) -> str:
    """``docker/Dockerfile`` on ``base``, in the docker format (the OCI format drops HEALTHCHECK); the image's id.

    Layers are cached by the engine, so an unchanged tree builds in seconds. The image is tagged for the next run's
    cache; the tests use its id, which another session's build cannot move. Every image of the build, intermediate
    ones included, carries a label naming this checkout and architecture, so that what earlier builds left (a
    replaced image, a builder stage no longer used as cache) is removed afterwards.
    """
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
    label = f"{BUILD_LABEL}={arch}-{checkout}"
    tag = f"{IMAGE_REPOSITORY}:test-{arch}-{checkout}"
    iidfile = workdir / f"image-{arch}.id"
    build = ["build", "--format", "docker", "--pull=never", "--arch", arch, "--build-arg", f"PYTHON_IMAGE={base}"]
    build += [*pip_secrets(workdir), "--label", label, "--iidfile", str(iidfile), "-f", str(DOCKERFILE), "-t", tag]
    # One build of this checkout and architecture at a time (two test workers may ask for the same image): the
    # clean-up below removed layers that a second build was checking as its cache ("layer not known").
    with machine_lock(f"build-{arch}-{checkout}"):
        output = podman.run(*build, str(ROOT), timeout=1200).stdout
        built = iidfile.read_text().strip().removeprefix("sha256:")
        in_use = set(re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})$", output, re.MULTILINE))
        listed = json.loads(podman.output("images", "--all", "--filter", f"label={label}", "--format", "json") or "[]")
        for stale in listed:
            if stale.get("Dangling") and not any(stale["Id"].startswith(short) for short in in_use):
                podman.run("rmi", stale["Id"], check=False)  # refused while a container uses it
    return built


# --- containers ---------------------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"smarty-test-{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Container:
    """One container of the emulator image, serving on a free port of the host (host networking).

    ``env`` adds ``SMARTY_*`` or other variables; ``volume`` is a named volume mounted at ``/data``; ``options``
    go to ``podman run`` as they are (``--read-only``, ``--arch``...).
    """

    podman: Podman
    image: str
    env: Mapping[str, str] = field(default_factory=dict)
    volume: str | None = None
    options: Sequence[str] = ()
    name: str = field(default_factory=lambda: unique("run"))
    port: int = field(default_factory=free_port)
    started_at: float = 0.0
    ready_seconds: float | None = None  # from ``podman run`` to ready, once :meth:`wait_ready` saw it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Container:
        env = {"SMARTY_PORT": str(self.port), **self.env}
        args = ["run", "-d", "--name", self.name, *self.options]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        if self.volume:
            args += ["-v", f"{self.volume}:/data"]
        self.started_at = time.monotonic()
        self.podman.run(*args, self.image, timeout=120)
        return self

    def wait_ready(self, timeout: float = READY_SECONDS) -> float:
        """Seconds from ``podman run`` to the first 200 of ``/emulator/ready``."""
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/emulator/ready", timeout=5).status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started_at
                    return self.ready_seconds
            except httpx.TransportError:
                pass
            if self.state()["Status"] == "exited":
                raise AssertionError(f"the container exited before it was ready:\n{self.logs()}")
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout:.0f} s:\n{self.logs()}")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.podman.inspect(self.name)["State"]
        return state

    def logs(self) -> str:
        done = self.podman.run("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", *(["--user", user] if user else []), self.name, *command, check=False)

    def stop(self, timeout: int = 10) -> tuple[int, float]:
        """``podman stop`` (SIGTERM, SIGKILL after ``timeout`` s): the exit code and the seconds it took."""
        began = time.monotonic()
        self.podman.run("stop", "-t", str(timeout), self.name, timeout=timeout + 60)
        took = time.monotonic() - began
        return int(self.state()["ExitCode"]), took

    def remove(self) -> None:
        self.podman.run("rm", "-f", "-v", "-t", "0", self.name, check=False)  # -v: its anonymous volumes too

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def named_volume(podman: Podman) -> Iterator[str]:
    name = unique("data")
    podman.run("volume", "create", name)
    try:
        yield name
    finally:
        podman.run("volume", "rm", "-f", name, check=False)


def run_once(podman: Podman, image: str, volume: str, *command: str) -> subprocess.CompletedProcess[str]:
    """A one-off command of the image (``export -``, say) in a new container on the named volume."""
    return podman.run("run", "--rm", "-v", f"{volume}:/data", image, *command, check=False, timeout=300)


@contextlib.contextmanager
def replicas(podman: Podman, image: str, count: int, env: Mapping[str, str]) -> Iterator[list[Container]]:
    """``count`` containers of ``image`` on different ports with the same ``env``, all ready.

    For replicas sharing one database: ``env={"SMARTY_DATABASE_URL": <the test's PostgreSQL>}`` once the store
    has a PostgreSQL backend; then a set through one replica must be recognized through another.
    """
    started = [Container(podman, image, env=env) for _ in range(count)]
    try:
        for container in started:
            container.start()
        for container in started:
            container.wait_ready()
        yield started
    finally:
        for container in started:
            container.remove()


# --- requests -------------------------------------------------------------------------------------------------------

TOKEN = {"oauth_token": "container-token", "oauth_provider": "mcs"}


def post(
    http: httpx.Client, method: str, meta: Mapping[str, Any], photos: Mapping[str, bytes] | None = None
) -> httpx.Response:
    """One persons request, the response as it came (its bytes are compared between servers)."""
    files: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
        (name, (f"{name}.jpg", data, "image/jpeg")) for name, data in (photos or {}).items()
    ]
    files.append(("meta", (None, json.dumps(meta), "text/plain")))
    return http.post(f"/api/v1/persons/{method}", params=TOKEN, files=files)


def envelope_body(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    assert payload["status"] == 200, payload
    body: dict[str, Any] = payload["body"]
    return body


def set_person(http: httpx.Client, space: int, person_id: int, photo: bytes) -> None:
    meta = {"space": str(space), "images": [{"name": "f", "person_id": person_id}]}
    assert envelope_body(post(http, "set", meta, {"f": photo}))["objects"][0]["status"] == 0


def recognized(http: httpx.Client, space: int, photo: bytes) -> list[dict[str, Any]]:
    """The faces of ``photo`` as recognize answers them (tag, coord, similarity...)."""
    body = envelope_body(post(http, "recognize", {"space": str(space), "images": [{"name": "f"}]}, {"f": photo}))
    persons: list[dict[str, Any]] = body["objects"][0].get("persons", [])
    return persons
