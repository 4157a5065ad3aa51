"""The image without a Docker engine: the Dockerfile and compose file read as text, and the image's own install
script (docker/install.sh, which the Dockerfile runs) giving a working ``smarty-emulator serve`` in a fresh venv from
the wheel that ``python -m build`` makes. (tests/container builds and runs the image, and runs the builder stage's
steps from the source tree.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.healthcheck import ready_url
from emulator.settings import SETTINGS, Settings
from tests.support.fresh_venv import install_and_serve

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
COMPOSE_POSTGRES = ROOT / "docker" / "compose.postgres.yaml"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|cmake|make|cc)\b")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def args(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [rest for word, rest in stage if word == name]


def test_two_stages_on_python_312_slim() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.12-slim" in text
    builder, final = stages()
    assert args(builder, "FROM") == ["${PYTHON_IMAGE} AS builder"]
    assert args(final, "FROM") == ["${PYTHON_IMAGE}"]


def test_the_builder_runs_the_tested_install_script() -> None:
    builder, _ = stages()
    assert "docker/install.sh /usr/local/bin/install-emulator" in args(builder, "COPY")
    deps, package = args(builder, "RUN")
    assert deps.endswith(" PYTHON=python sh /usr/local/bin/install-emulator --deps /opt/venv /src")
    assert package.endswith(" PYTHON=python sh /usr/local/bin/install-emulator --package /opt/venv /src")
    # The dependencies' step sees pyproject.toml only, so its layer is reused while only the code changes.
    copies = [rest for word, rest in builder if word in ("COPY", "RUN")]
    assert copies.index("pyproject.toml ./") < copies.index(deps) < copies.index("emulator ./emulator")
    assert copies.index("README.md ./") > copies.index(deps)
    # pip's settings for a proxy or a private index come as build secrets, mounted for the install steps only
    for run in (deps, package):
        assert re.findall(r"--mount=(\S+)", run) == [
            "type=secret,id=pip.conf,target=/etc/pip.conf",
            "type=secret,id=pip-ca,target=/etc/ssl/certs/pip-ca.pem",
        ]


def test_the_final_stage_runs_as_non_root_with_data_port_and_health_check() -> None:
    _, final = stages()
    [user] = args(final, "USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert any("--uid 10001" in run and user in run for run in args(final, "RUN"))
    assert args(final, "VOLUME") == ["/data"]
    assert args(final, "EXPOSE") == ["8080"]
    env = " ".join(args(final, "ENV"))
    for setting in ("SMARTY_HOST=0.0.0.0", "SMARTY_DATA_DIR=/data", "SMARTY_PORT=8080"):
        assert setting in env
    [healthcheck] = args(final, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "emulator.healthcheck"]')
    assert "curl" not in healthcheck and "wget" not in healthcheck
    # The health check asks readiness on loopback when the server listens on every address.
    assert ready_url({"SMARTY_HOST": "0.0.0.0", "SMARTY_PORT": "8080"}) == "http://127.0.0.1:8080/emulator/ready"
    assert args(final, "ENTRYPOINT") == ['["smarty-emulator"]'] and args(final, "CMD") == ['["serve"]']


def test_no_compiler_in_the_final_stage() -> None:
    _, final = stages()
    assert args(final, "COPY") == ["--from=builder /opt/venv /opt/venv"]  # the venv only, no sources
    for run in args(final, "RUN"):
        assert "apt-get" not in run and "pip" not in run
        assert not COMPILERS.search(run), run
    # Nor in the builder: every dependency is a wheel, or pure data (face_recognition_models).
    builder, _ = stages()
    assert not any("apt-get" in run for run in args(builder, "RUN"))


def test_the_build_context_is_only_what_the_image_installs() -> None:
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:5] == ["*", "!pyproject.toml", "!README.md", "!emulator/", "!docker/install.sh"]


def test_compose_file() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    emulator = compose["services"]["emulator"]
    assert emulator["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert emulator["healthcheck"]["test"] == ["CMD", "python", "-m", "emulator.healthcheck"]
    data, ca = emulator["volumes"]
    name, target = data.split(":")
    assert target == "/data" and name in compose["volumes"]  # a named volume
    assert emulator["ports"] == ["8080:8080", "8443:443"]
    # Settings as environment variables: every one is a real setting, and together they validate.
    environment: dict[str, str] = emulator["environment"]
    known = {setting.env for setting in SETTINGS}
    assert set(environment) <= known, set(environment) - known
    settings = Settings.from_sources({k: str(v) for k, v in environment.items()})
    assert (settings.host, settings.port, str(settings.data_dir)) == ("0.0.0.0", 8080, "/data")
    # A second service starts only once the emulator is healthy.
    others = [service for name, service in compose["services"].items() if name != "emulator"]
    assert any(s.get("depends_on", {}).get("emulator") == {"condition": "service_healthy"} for s in others)


def test_compose_serves_the_real_hosts_over_https_to_a_client_that_trusts_its_ca() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    emulator, smoke = compose["services"]["emulator"], compose["services"]["smoke"]
    assert emulator["networks"]["default"]["aliases"] == ["smarty.mail.ru", "mcs.mail.ru"]
    settings = Settings.from_sources({k: str(v) for k, v in emulator["environment"].items()})
    assert settings.tls_port == 443 and settings.tls_ca_export == "/ca/ca.pem"
    assert emulator["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "443"}  # uid 10001 binds 443
    # The CA certificate reaches the client through a named volume of its own (not the data volume: the key).
    ca_volume = "smarty-ca"
    assert f"{ca_volume}:/ca" in emulator["volumes"] and ca_volume in compose["volumes"]
    assert smoke["volumes"] == [f"{ca_volume}:/ca:ro"] and smoke["environment"]["CURL_CA_BUNDLE"] == "/ca/ca.pem"
    assert "https://smarty.mail.ru/api/v1/persons/" in " ".join(smoke["command"])
    # The image makes /ca the emulator's, so that a new volume there is writable by uid 10001.
    _, final = stages()
    assert any("mkdir -p /data /ca" in run and "chown smarty:smarty /data /ca" in run for run in args(final, "RUN"))


def test_compose_file_of_two_replicas_on_postgres() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_POSTGRES.read_text())
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    [volume] = postgres["volumes"]
    name, target = volume.split(":")
    assert target == "/var/lib/postgresql/data" and name in compose["volumes"]  # a named volume
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL" and "pg_isready" in postgres["healthcheck"]["test"][1]
    replicas = {name: service for name, service in services.items() if name.startswith("emulator")}
    assert len(replicas) == 2
    host_ports = [service["ports"][0].split(":")[0] for service in replicas.values()]
    assert len(set(host_ports)) == 2  # each on its own host port
    urls = set()
    for service in replicas.values():
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "emulator.healthcheck"]
        environment = {k: _interpolate(str(v)) for k, v in service["environment"].items()}
        assert set(environment) <= {setting.env for setting in SETTINGS}
        settings = Settings.from_sources(environment)  # they validate
        urls.add(settings.database_url)
    assert urls == {"postgresql://smarty:smarty@postgres:5432/smarty"}  # one database for both
    password = _interpolate(str(postgres["environment"]["POSTGRES_PASSWORD"]))
    assert password == "smarty" and postgres["environment"]["POSTGRES_DB"] == "smarty"


def _interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}``, with nothing set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


# --- the package: sdist and wheel; the install steps in a fresh venv ----------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build`` of this tree: the sdist, and the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [sdist], [wheel] = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    return {"sdist": sdist, "wheel": wheel}


@pytest.mark.slow
def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist: dict[str, Path]) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: MIT" in wheel.read(metadata).decode()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "smarty-emulator = emulator.cli:main" in wheel.read(entry_points).decode()
    expected = {"emulator/control/static/index.html", "emulator/control/static/app.js", "emulator/face/models.py"}
    attribute_models = "emulator/face/attributes/models/"
    expected |= {attribute_models + name for name in ("gender-v1.onnx", "age-v1.onnx", "NOTICE")}
    expected |= {attribute_models + f"face_expression_model{end}" for end in (".bin", "-weights_manifest.json")}
    assert expected <= set(names)
    assert not [n for n in names if not n.startswith(("emulator/", "smarty_emulator-"))]  # no tests, no bench
    with tarfile.open(dist["sdist"]) as sdist:
        top = {name.split("/")[1] for name in sdist.getnames() if "/" in name.rstrip("/")}
    assert top <= {
        "emulator",
        "README.md",
        "pyproject.toml",
        "PKG-INFO",
        "setup.cfg",
        "MANIFEST.in",
        "smarty_emulator.egg-info",
    }, top


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_serves(dist: dict[str, Path], tmp_path: Path) -> None:
    """docker/install.sh with the wheel of ``python -m build`` into a fresh venv (what users install), then
    `smarty-emulator serve` from it. (The builder stage's two steps from the source tree are tested with the container
    tests: tests/container/test_builder_install.py.)"""
    install_and_serve(dist["wheel"], [[]], tmp_path)
