"""HTTPS as the real hosts, through real clients and real TLS: curl, a Go program built with Debian's Go, aiohttp.

One ``serve`` with ``SMARTY_TLS_PORT`` and ``SMARTY_PROXY_PORT`` answers: through the proxy (``CONNECT
smarty.mail.ru:443``) and on the TLS port the same bytes as over plain HTTP; a client that does not trust the
emulator's CA fails its handshake; a ``CONNECT`` to another host is refused (403, and a log line naming it); the
CA survives a restart, its file keeps its key private, and ``serve --workers 2`` serves TLS from every worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.ops.tls import Authority, make_ca
from tests.support import ci
from tests.support import persons_client as api
from tests.support.emulator_process import EmulatorProcess, run_cli
from tests.support.emulator_server import FIXTURES, fixture, free_port

pytestmark = pytest.mark.slow  # real server processes

QUERY = f"oauth_token={api.TOKEN}&oauth_provider=mcs"
CLIENTS = Path(__file__).resolve().parent / "clients"
# What a client's environment says about proxies and trust stores: replaced by each test's own.
CLIENT_VARIABLES = ("PROXY", "SSL_CERT", "CA_BUNDLE", "NO_PROXY")


def client_env(ca: Path | None = None, proxy: str | None = None) -> dict[str, str]:
    """This process's environment without proxies or trust stores; then ``ca`` as the only trusted CA (as
    ``SSL_CERT_FILE``, ``CURL_CA_BUNDLE`` and ``REQUESTS_CA_BUNDLE``) and ``proxy`` as ``HTTPS_PROXY``."""
    env = {k: v for k, v in os.environ.items() if not any(word in k.upper() for word in CLIENT_VARIABLES)}
    if ca is not None:
        env.update(SSL_CERT_FILE=str(ca), CURL_CA_BUNDLE=str(ca), REQUESTS_CA_BUNDLE=str(ca))
    if proxy is not None:
        env.update(HTTPS_PROXY=proxy, https_proxy=proxy)
    return env


def curl(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        ci.unavailable("curl is not installed")
    return subprocess.run(["curl", "-sS", *args], env=env or client_env(), capture_output=True, timeout=60)


def handshake(port: int, ca_pem: bytes, server_name: str = "smarty.mail.ru") -> bytes:
    """A TLS handshake with Python's ssl, trusting ``ca_pem`` only: the server's certificate (DER)."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def raw_proxy_request(port: int, head: str) -> bytes:
    """``head`` sent as it is to the proxy; what it answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


class TlsServer:
    def __init__(self, server: EmulatorProcess, tls_port: int, proxy_port: int, ca: Path, export: Path) -> None:
        self.server, self.tls_port, self.proxy_port, self.ca, self.export = server, tls_port, proxy_port, ca, export
        self.proxy = f"http://127.0.0.1:{proxy_port}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    root = tmp_path_factory.mktemp("tls")
    tls_port, proxy_port, export = free_port(), free_port(), root / "shared" / "ca.pem"
    server = EmulatorProcess(
        root / "data", tls_port=tls_port, proxy_port=proxy_port, tls_ca_export=export, tls_hosts="emulator.test"
    ).start()
    try:
        ca = root / "ca.pem"
        ca.write_bytes(httpx.get(f"{server.base_url}/emulator/ca.pem", timeout=30).content)
        yield TlsServer(server, tls_port, proxy_port, ca, export)
    finally:
        server.stop()


def test_curl_through_the_proxy_and_on_the_tls_port_answers_the_same_bytes_as_plain_http(tls: TlsServer) -> None:
    with httpx.Client(base_url=tls.server.base_url, timeout=60) as http:
        api.set_photos(http, 1, 1, [fixture("people/obama/obama.jpg")])
    form = ["-F", f"file=@{FIXTURES / 'people/obama/obama2.jpg'}"]
    form += ["-F", 'meta={"space":"1","images":[{"name":"file"}],"update_embedding":false}']
    path = f"/api/v1/persons/recognize?{QUERY}"
    plain = curl(f"{tls.server.base_url}{path}", *form)
    proxied = curl("--proxy", tls.proxy, "--cacert", str(tls.ca), f"https://smarty.mail.ru{path}", *form)
    resolve = f"smarty.mail.ru:{tls.tls_port}:127.0.0.1"
    direct = curl("--resolve", resolve, "--cacert", str(tls.ca), f"https://smarty.mail.ru:{tls.tls_port}{path}", *form)
    for done in (plain, proxied, direct):
        assert done.returncode == 0, done.stderr
    assert proxied.stdout == plain.stdout and direct.stdout == plain.stdout
    [face] = json.loads(plain.stdout)["body"]["objects"][0]["persons"]
    assert face["tag"] == "person1"
    # The token endpoint at its real URL, through the proxy too.
    token = curl("--proxy", tls.proxy, "--cacert", str(tls.ca), "https://mcs.mail.ru/auth/oauth/v1/token", "--json",
                 '{"client_id":"c","client_secret":"s","grant_type":"client_credentials"}')  # fmt: skip
    assert token.returncode == 0 and json.loads(token.stdout)["access_token"], token


def test_without_the_ca_tls_fails(tls: TlsServer) -> None:
    """No client silently skips verification: the system's trust store does not know the emulator's CA."""
    resolve = f"smarty.mail.ru:{tls.tls_port}:127.0.0.1"
    for args in (
        ["--proxy", tls.proxy, "https://smarty.mail.ru/emulator/health"],
        ["--resolve", resolve, f"https://smarty.mail.ru:{tls.tls_port}/emulator/health"],
    ):
        done = curl(*args)
        assert done.returncode == 60, done  # curl: the peer's certificate cannot be authenticated
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls.tls_port, _system_roots())
    assert handshake(tls.tls_port, tls.ca.read_bytes())  # the same handshake trusting the CA


def _system_roots() -> bytes:
    """A CA bundle that is not the emulator's (the bundled one of certifi, which httpx brings)."""
    import certifi

    return Path(certifi.where()).read_bytes()


def test_connect_to_another_host_is_refused_and_logged(tls: TlsServer) -> None:
    refused = raw_proxy_request(tls.proxy_port, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 403 Forbidden\r\n"), refused
    assert b"CONNECT example.com:443 refused" in refused
    wrong_port = raw_proxy_request(tls.proxy_port, "CONNECT smarty.mail.ru:80 HTTP/1.1\r\n\r\n")
    assert wrong_port.startswith(b"HTTP/1.1 403 "), wrong_port
    plain_proxy = raw_proxy_request(tls.proxy_port, "GET http://smarty.mail.ru/emulator/health HTTP/1.1\r\n\r\n")
    assert plain_proxy.startswith(b"HTTP/1.1 405 ") and b"Allow: CONNECT" in plain_proxy, plain_proxy
    done = curl("--proxy", tls.proxy, "--cacert", str(tls.ca), "https://example.com/")
    assert done.returncode == 56 and b"403" in done.stderr, done  # curl: the proxy refused the tunnel
    log = tls.server.log()
    assert "refused CONNECT example.com:443" in log and "refused CONNECT smarty.mail.ru:80" in log


def test_the_names_of_smarty_tls_hosts_are_served_too(tls: TlsServer) -> None:
    done = curl("--proxy", tls.proxy, "--cacert", str(tls.ca), "https://emulator.test/emulator/health")
    assert done.returncode == 0 and json.loads(done.stdout)["alive"] is True, done
    assert handshake(tls.tls_port, tls.ca.read_bytes(), server_name="emulator.test")


def test_a_certificate_of_ones_own_is_served_instead(tmp_path: Path) -> None:
    other = Authority.from_pem(make_ca())  # a CA that is not the emulator's
    chain, key = other.issue(["smarty.mail.ru", "localhost"])
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    port = free_port()
    server = EmulatorProcess(
        tmp_path / "data", tls_port=port, tls_cert=tmp_path / "chain.pem", tls_key=tmp_path / "key.pem"
    ).start()
    try:
        assert handshake(port, other.certificate_pem())
        own_ca = httpx.get(f"{server.base_url}/emulator/ca.pem", timeout=30).content  # still the emulator's
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(port, own_ca)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        ("CONNECT smarty.mail.ru:443 HTTP/1.1\r\n\r\n\x16\x03\x01", b"HTTP/1.1 400 "),  # TLS before the 200
        ("CONNECT smarty.mail.ru:443 HTTP/1.1\r\nX-Long: " + "a" * 9000, b"HTTP/1.1 431 "),
        ("CONNECT smarty.mail.ru HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),
        ("\x16\x03\x01 not http\r\n\r\n", b"HTTP/1.1 400 "),
    ],
    ids=["data-before-the-tunnel", "head-too-long", "no-port", "not-http"],
)
def test_malformed_proxy_requests_are_refused(tls: TlsServer, head: str, answer: bytes) -> None:
    assert raw_proxy_request(tls.proxy_port, head).startswith(answer)


def test_a_go_client_with_the_real_base_url_runs_unchanged_through_the_proxy(
    tls: TlsServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    go = shutil.which("go")
    if go is None:
        ci.unavailable("Go is not installed (`make test` installs Debian's golang-go as root)")
    build = tmp_path_factory.mktemp("go")
    binary = build / "goclient"
    env = {**client_env(), "GOCACHE": str(build / "cache"), "GOPATH": str(build / "path"), "GOPROXY": "off"}
    env.update(GOFLAGS="", GO111MODULE="on", GOTOOLCHAIN="local")  # offline; Go's prebuilt standard library
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=CLIENTS / "goclient", env=env, capture_output=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    photos = [str(FIXTURES / "people/biden/biden.jpg"), str(FIXTURES / "people/biden/biden2.jpg")]

    run = subprocess.run([binary, *photos], env=client_env(tls.ca, tls.proxy), capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    set_, recognize, delete, truncate = (json.loads(line) for line in run.stdout.splitlines())
    assert set_["body"] == {"objects": [{"status": 0, "name": "photo"}]}
    [face] = recognize["body"]["objects"][0]["persons"]
    assert face["tag"] == "person7"
    assert delete["body"] == {"objects": [{"status": 0, "name": "gone"}]}
    assert truncate == {"status": 200, "body": {}, "htmlencoded": False, "last_modified": 0}

    untrusting = subprocess.run([binary, *photos], env=client_env(None, tls.proxy), capture_output=True, timeout=120)
    assert untrusting.returncode == 1 and b"x509" in untrusting.stderr, untrusting  # Go refuses the unknown CA


def test_aiohttp_with_trust_env_gets_a_token_and_recognizes_through_the_proxy(tls: TlsServer) -> None:
    with httpx.Client(base_url=tls.server.base_url, timeout=60) as http:
        api.set_photos(http, 5, 2, [fixture("people/obama/obama.jpg")])
    script = CLIENTS / "aiohttp_client.py"
    photo = str(FIXTURES / "people/obama/obama2.jpg")
    run = subprocess.run(
        [sys.executable, str(script), photo], env=client_env(tls.ca, tls.proxy), capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    token_line, envelope_line = run.stdout.splitlines()
    token = json.loads(token_line)
    assert token["access_token"] and token["expires_in"] > 0
    [face] = json.loads(envelope_line)["body"]["objects"][0]["persons"]
    assert face["tag"] == "person2"


def test_the_ca_is_exported_served_and_never_its_key(tls: TlsServer) -> None:
    pem = tls.ca.read_bytes()
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" not in pem
    assert tls.export.read_bytes() == pem  # SMARTY_TLS_CA_EXPORT
    record = tls.server.data_dir / "tls-ca.pem"
    assert record.stat().st_mode & 0o777 == 0o600 and b"PRIVATE KEY" in record.read_bytes()
    assert "PRIVATE KEY" not in tls.server.log()


def test_the_ca_is_exported_without_a_tls_port_too(tmp_path: Path) -> None:
    export = tmp_path / "shared" / "ca.pem"
    server = EmulatorProcess(tmp_path / "data", tls_ca_export=export).start()
    try:
        served = httpx.get(f"{server.base_url}/emulator/ca.pem", timeout=30).content
    finally:
        server.stop()
    assert export.read_bytes() == served and b"PRIVATE KEY" not in served


def test_the_ca_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run_cli("ca", "--data-dir", str(data))  # before any server: the CA is made once, here
    assert made.returncode == 0, made.stderr
    served, leaves = [], []
    for _ in range(2):
        port = free_port()
        server = EmulatorProcess(data, tls_port=port).start()
        try:
            served.append(httpx.get(f"{server.base_url}/emulator/ca.pem", timeout=30).content)
            leaves.append(handshake(port, made.stdout.encode()))
        finally:
            server.stop()
    assert served == [made.stdout.encode()] * 2
    assert leaves[0] != leaves[1]  # each start issues its own server certificate, from the same CA


def served_by(port: int, ca_pem: bytes, connect: str | None = None) -> tuple[str, bytes]:
    """One new connection to the TLS port (or, with ``connect``, through the proxy's tunnel to that host): the
    worker that answered ``GET /emulator/clients`` (its ``X-Emulator-Worker``) and the certificate it served."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if connect is not None:
            raw.sendall(f"CONNECT {connect}:443 HTTP/1.1\r\nHost: {connect}:443\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                chunk = raw.recv(1)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        with context.wrap_socket(raw, server_hostname=connect or "smarty.mail.ru") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /emulator/clients HTTP/1.1\r\nHost: smarty.mail.ru\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    assert der is not None and response.startswith(b"HTTP/1.1 200 "), response[:200]
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    [worker] = [line.split(":", 1)[1].strip() for line in head if line.lower().startswith("x-emulator-worker:")]
    return worker, der


def workers_serving(serve: Callable[[], tuple[str, bytes]], rounds: int = 10) -> dict[str, set[bytes]]:
    """The workers seen over new connections (and the certificates each served), until two are seen. Each round
    opens 8 connections at once: one after another, an idle worker that is already waiting in accept() may take
    every one of them."""
    seen: dict[str, set[bytes]] = {}
    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            for worker, der in pool.map(lambda _: serve(), range(8)):
                seen.setdefault(worker, set()).add(der)
            if len(seen) == 2:
                break
    return seen


def test_two_workers_serve_tls_and_the_proxy(tmp_path: Path) -> None:
    tls_port, proxy_port = free_port(), free_port()
    server = EmulatorProcess(tmp_path / "data", workers=2, tls_port=tls_port, proxy_port=proxy_port).start()
    try:
        ca = httpx.get(f"{server.base_url}/emulator/ca.pem", timeout=30).content
        on_tls_port = workers_serving(lambda: served_by(tls_port, ca))
        through_proxy = workers_serving(lambda: served_by(proxy_port, ca, connect="smarty.mail.ru"))
    finally:
        assert server.stop() == 0
    for seen in (on_tls_port, through_proxy):
        assert len(seen) == 2, seen.keys()  # both workers answered over TLS
        assert all(len(leaves) == 1 for leaves in seen.values())  # each its own server certificate, all its life
    assert on_tls_port == through_proxy  # the same two workers and certificates, whichever port
    leaves = [leaf for [leaf] in on_tls_port.values()]
    assert leaves[0] != leaves[1]  # one server certificate per worker, both verified against the one CA


def test_with_json_logs_every_line_of_serve_with_tls_is_one_json_object(tmp_path: Path) -> None:
    tls_port, proxy_port = free_port(), free_port()
    server = EmulatorProcess(
        tmp_path / "data", tls_port=tls_port, proxy_port=proxy_port, log_format="json", log_level="info"
    ).start()
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert f"HTTPS on 127.0.0.1:{tls_port}" in messages, lines
    assert f"the HTTPS proxy on 127.0.0.1:{proxy_port}" in messages, lines


def test_a_taken_tls_port_stops_serve_with_one_clear_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_cli("serve", "--port", str(free_port()), "--tls-port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"smarty-emulator: HTTPS cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr


def startup_error_report(server: EmulatorProcess) -> dict[str, Any]:
    """Readiness once it reports the startup's error (within 60 s)."""
    deadline = time.monotonic() + 60
    while "error" not in (report := httpx.get(f"{server.base_url}/emulator/ready", timeout=30).json()):
        assert time.monotonic() < deadline, report
        time.sleep(0.1)
    return dict(report)


def test_a_certificate_that_cannot_be_read_is_reported_by_readiness(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    tls_port, proxy_port = free_port(), free_port()
    server = EmulatorProcess(
        tmp_path / "data", tls_port=tls_port, proxy_port=proxy_port, tls_cert=missing, tls_key=missing
    )
    server.start(wait="alive")
    try:
        report = startup_error_report(server)
        assert report["ready"] is False
        assert report["error"] == (
            f"TlsError: SMARTY_TLS_CERT={missing} with SMARTY_TLS_KEY={missing} cannot be served: "
            "No such file or directory"
        )
        # Connections do not wait for a certificate that will never come: a CONNECT gets 503 (no tunnel is
        # announced), a TLS connection is closed, both at once rather than after the warm-up's wait.
        started = time.monotonic()
        answer = raw_proxy_request(proxy_port, "CONNECT smarty.mail.ru:443 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"Connection established" not in answer
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01\x00\x05hello")  # the start of a ClientHello
            with contextlib.suppress(ConnectionResetError):
                assert raw.recv(4096) == b""  # closed by the server
        assert time.monotonic() - started < 5
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_a_ca_record_that_cannot_be_read_closes_tls_connections_at_once(tmp_path: Path) -> None:
    (tmp_path / "data" / "tls-ca.pem").mkdir(parents=True)  # the data dir's CA record cannot be read
    proxy_port = free_port()
    server = EmulatorProcess(tmp_path / "data", proxy_port=proxy_port)
    server.start(wait="alive")
    try:
        report = startup_error_report(server)
        assert "tls-ca.pem" in report["error"]
        started = time.monotonic()
        answer = raw_proxy_request(proxy_port, "CONNECT smarty.mail.ru:443 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert time.monotonic() - started < 5
    finally:
        server.stop()
