"""A Testcontainers module: the emulator's image as a dependency of a test, the way testcontainers-python brings in
LocalStack, Postgres or WireMock (the extra ``smarty-emulator[testcontainers]``, testcontainers 4.x)::

    from emulator.testcontainers import SmartyEmulatorContainer

    with SmartyEmulatorContainer("smarty-emulator:local", settings={"match_threshold": 0.9}) as smarty:
        client = MyPersonsClient(base_url=smarty.get_api_url(), token=smarty.token)
        smarty.add_fault("http_503", method="recognize", times=1)
        ...
        assert smarty.requests(method="recognize")

The container serves plain HTTP on 8080 and HTTPS on 8443 (the emulator's own CA: ``get_ca_pem()``), both
published on free ports of the Docker host. Starting waits for ``/emulator/ready`` over HTTP (the store open, the
models loaded and warm), never for a log line. The admin API answers only loopback clients by default, and a
published port is not loopback from inside the container, so the module always sets ``SMARTY_ADMIN=token`` with a
token of its own (``get_admin_token()``); the helpers (``reset``, ``seed``, ``add_fault``, ``requests``...) are those
of the pytest plugin (:class:`emulator.pytest_plugin.SmartyEmulator`) and send it.

Under podman, through its Docker-compatible socket (``podman system service``): set ``DOCKER_HOST`` to that socket,
``TESTCONTAINERS_RYUK_DISABLED=true`` (podman runs no Ryuk reaper; the container is removed when the ``with`` block
ends) and, when the tests themselves run in a container, ``TESTCONTAINERS_CONNECTION_MODE=docker_host``
(testcontainers otherwise reads a network field that podman 4.3 does not return).

This module imports only testcontainers (and the standard library): the emulator itself runs in the container.
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emulator.admin_client import AdminCalls

try:
    from testcontainers.core.container import DockerContainer
except ImportError as exc:  # the extra is not installed: say which
    raise ImportError(
        "emulator.testcontainers needs testcontainers-python: pip install 'smarty-emulator[testcontainers]'"
    ) from exc

PORT = 8080
TLS_PORT = 8443
TOKEN = "smarty-emulator-test-token"
PROVIDER = "mcs"
START_TIMEOUT_S = 180.0
IMAGE_USER = "10001"  # the image's user, who owns what is copied in for seeding


class SmartyEmulatorError(RuntimeError):
    """The container did not become ready, or an admin call failed."""


class SmartyEmulatorContainer(DockerContainer, AdminCalls):
    """The emulator's image, ready once :meth:`start` returns.

    ``settings`` become ``SMARTY_*`` variables (``{"match_threshold": 0.9}`` is ``SMARTY_MATCH_THRESHOLD=0.9``).
    ``admin``, ``admin_token``, ``port`` and ``tls_port`` are the module's own: the admin API is always opened with
    a generated token, and the ports are those it publishes."""

    def __init__(
        self,
        image: str = "smarty-emulator:local",
        settings: Mapping[str, Any] | None = None,
        *,
        start_timeout: float = START_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, **kwargs)
        self.generated_token = secrets.token_urlsafe(24)
        self.admin_token = self.generated_token
        self.token = TOKEN
        self.provider = PROVIDER
        self.start_timeout = start_timeout
        self._initial_settings: dict[str, Any] = {}
        for name, value in (settings or {}).items():
            self.with_env(f"SMARTY_{name.upper()}", str(value).lower() if isinstance(value, bool) else str(value))
        self.with_env("SMARTY_PORT", str(PORT))
        self.with_env("SMARTY_TLS_PORT", str(TLS_PORT))
        self.with_env("SMARTY_ADMIN", "token")
        self.with_env("SMARTY_ADMIN_TOKEN", self.generated_token)
        self.with_exposed_ports(PORT, TLS_PORT)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> SmartyEmulatorContainer:
        super().start()
        self._wait_until_ready()
        self._initial_settings = self.settings()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.get_url()}/emulator/ready"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (OSError, ValueError):  # not published or listening yet, or 503 while warming up
                pass
            wrapped = self.get_wrapped_container()
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                raise SmartyEmulatorError(f"the container exited before it was ready:\n{self._logs()}")
            time.sleep(0.2)
        raise SmartyEmulatorError(f"not ready within {self.start_timeout:g} s:\n{self._logs()}")

    def _logs(self) -> str:
        out, err = self.get_logs()
        return (out + err).decode("utf-8", "replace")[-4000:]

    # --- where to reach it ----------------------------------------------------------------

    def get_url(self) -> str:
        """The server root over plain HTTP: ``http://HOST:PORT`` (``/emulator/...``, ``/auth/oauth/v1/token``)."""
        return f"http://{self.get_container_host_ip()}:{self.get_exposed_port(PORT)}"

    def get_api_url(self) -> str:
        """What clients use as the API base: ``http://HOST:PORT/api``."""
        return f"{self.get_url()}/api"

    def get_tls_url(self) -> str:
        """The server root over HTTPS (a certificate of the emulator's CA, valid for ``localhost`` and
        ``127.0.0.1``): trust :meth:`get_ca_pem`."""
        return f"https://{self.get_container_host_ip()}:{self.get_exposed_port(TLS_PORT)}"

    def get_token_url(self) -> str:
        return f"{self.get_url()}/auth/oauth/v1/token"

    def get_admin_token(self) -> str:
        """The bearer token of the admin API (``Authorization: Bearer ...``), generated for this container."""
        return self.generated_token

    def get_ca_pem(self) -> str:
        """The emulator's CA certificate (PEM), for a client to trust (never its key)."""
        with urllib.request.urlopen(f"{self.get_url()}/emulator/ca.pem", timeout=30) as response:
            return str(response.read().decode())

    # --- admin API (the pytest plugin's helpers, from emulator.admin_client) ------------------

    admin_error = SmartyEmulatorError

    def admin_root(self) -> str:
        return self.get_url()

    def seed(self, directory: str | Path) -> str:
        """Add persons from ``directory`` on this machine (``<space>/<person_id>/*.jpg``, maybe under
        ``<client>/``): it is copied into the container and ``smarty-emulator seed`` runs there; returns its
        report. Idempotent."""
        source = Path(directory)
        if not source.is_dir():
            raise SmartyEmulatorError(f"seed: {source} is not a directory")
        target = f"/tmp/seed-{secrets.token_hex(4)}"
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(source, arcname=target.lstrip("/"), filter=_owned_by_image_user)
        wrapped = self.get_wrapped_container()
        if not wrapped.put_archive("/", archive.getvalue()):
            raise SmartyEmulatorError(f"seed: could not copy {source} into the container")
        code, output = wrapped.exec_run(["smarty-emulator", "seed", target])
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        wrapped.exec_run(["rm", "-rf", target])
        if code != 0:
            raise SmartyEmulatorError(f"seed {source} failed ({code}): {text.strip()}")
        return text


def _owned_by_image_user(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = int(IMAGE_USER)
    info.uname = info.gname = ""
    return info
