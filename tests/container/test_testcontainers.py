"""The Testcontainers module (``emulator.testcontainers``) against podman's Docker-compatible socket: it starts the
real image, waits for readiness over HTTP, seeds a person, recognizes a fixture photo, drives a fault, the journal
and a reset through the admin token it generated, serves HTTPS with the CA it hands out, and removes the container.

The socket is ``podman system service`` on a file of this session's, configured as the other container tests' engine
but with podman's default bridge network (so that ports are published, as a Docker engine does);
``TESTCONTAINERS_RYUK_DISABLED=true`` (podman runs no Ryuk) and ``TESTCONTAINERS_CONNECTION_MODE=docker_host`` are
what docs/operations.md tells users to set.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.container.launch import CONTAINERS_CONF, Podman
from tests.support.emulator_server import FIXTURES, fixture

pytestmark = [pytest.mark.container, pytest.mark.slow]

SOCKET_WAIT_SECONDS = 30.0
TESTCONTAINERS_ENV = {"TESTCONTAINERS_RYUK_DISABLED": "true", "TESTCONTAINERS_CONNECTION_MODE": "docker_host"}


@pytest.fixture(scope="module")
def docker_host(podman: Podman, workdir: Path) -> Iterator[str]:
    """``DOCKER_HOST`` of a podman API service for this module, with the testcontainers variables set."""
    pytest.importorskip("testcontainers", reason="the extra smarty-emulator[testcontainers] is not installed")
    conf = workdir / "containers-bridge.conf"
    conf.write_text(CONTAINERS_CONF.replace('netns = "host"\n', ""))  # published ports need a network of their own
    sock = workdir / "podman-api.sock"
    url = f"unix://{sock}"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env={**podman.env, "CONTAINERS_CONF": str(conf)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {key: os.environ.get(key) for key in ("DOCKER_HOST", *TESTCONTAINERS_ENV)}
    try:
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=2) as api:
            while True:
                try:
                    if api.get("http://podman/_ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert service.poll() is None and time.monotonic() < deadline, "podman system service did not answer"
                time.sleep(0.1)
        os.environ.update(DOCKER_HOST=url, **TESTCONTAINERS_ENV)
        from testcontainers.core.config import ConnectionMode, testcontainers_config

        # The configuration is read when testcontainers is first imported: here, unless another test came first.
        testcontainers_config.ryuk_disabled = True
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        service.terminate()
        service.wait(timeout=30)


def recognize(api_url: str, token: str, photo: bytes) -> httpx.Response:
    meta = '{"space":"0","images":[{"name":"f"}],"update_embedding":false}'
    return httpx.post(
        f"{api_url}/v1/persons/recognize",
        params={"oauth_token": token, "oauth_provider": "mcs"},
        files=[("f", ("f.jpg", photo, "image/jpeg")), ("meta", (None, meta, "text/plain"))],
        timeout=60,
    )


def test_the_module_starts_the_image_recognizes_a_fixture_photo_and_stops_it(
    podman: Podman, image: str, docker_host: str, tmp_path: Path
) -> None:
    from emulator.testcontainers import SmartyEmulatorContainer

    seed = tmp_path / "seed" / "0" / "1"
    seed.mkdir(parents=True)
    shutil.copy(FIXTURES / "people/obama/obama.jpg", seed / "obama.jpg")
    photo = fixture("people/obama/obama2.jpg")

    with SmartyEmulatorContainer(image, settings={"match_threshold": 0.93, "log_format": "json"}) as smarty:
        container_id = smarty.get_container_id()
        assert podman.run("container", "exists", container_id, check=False).returncode == 0
        # The admin API is open to the generated token only.
        assert httpx.get(f"{smarty.get_url()}/emulator/faults", timeout=10).status_code == 403
        assert smarty.faults() == []

        assert "seeded from" in smarty.seed(tmp_path / "seed")
        answer = recognize(smarty.get_api_url(), smarty.token, photo)
        [face] = answer.json()["body"]["objects"][0]["persons"]
        assert face["tag"] == "person1"
        assert [entry["method"] for entry in smarty.requests()] == ["recognize"]

        smarty.add_fault("http_503", method="recognize", times=1)
        assert recognize(smarty.get_api_url(), smarty.token, photo).status_code == 503

        smarty.reset()
        [face] = recognize(smarty.get_api_url(), smarty.token, photo).json()["body"]["objects"][0]["persons"]
        assert face["tag"] == "undefined"

        # HTTPS on the published TLS port, trusting the CA the module hands out (and only it).
        ca = smarty.get_ca_pem()
        assert ca.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" not in ca
        trust = ssl.create_default_context(cadata=ca)
        assert httpx.get(f"{smarty.get_tls_url()}/emulator/ready", verify=trust, timeout=30).json()["ready"] is True
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{smarty.get_tls_url()}/emulator/ready", verify=ssl.create_default_context(), timeout=30)
    assert podman.run("container", "exists", container_id, check=False).returncode == 1  # stopped and removed
