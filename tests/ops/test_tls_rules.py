"""The rules of the HTTPS side without a server: which CONNECT targets the proxy serves, how a target is read, and
what the emulator's CA and server certificates say (checked with ``cryptography`` and Python's ``ssl``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from emulator.cli import listening_socket
from emulator.ops.listeners import ConnectAction, _no_delay, connect_action, parse_target
from emulator.ops.tls import Authority, TlsError, certificate_names, make_ca, proxy_hosts, server_context, write_ca_copy
from emulator.settings import Settings

SERVED = proxy_hosts(Settings.from_sources({}, {"tls_hosts": "Emulator.Test., 10.0.0.7"}))


def test_the_proxy_serves_the_real_hosts_and_the_configured_names_on_443_only() -> None:
    assert sorted(SERVED) == ["10.0.0.7", "emulator.test", "mcs.mail.ru", "smarty.mail.ru"]
    for host in SERVED:
        assert connect_action(host, 443, SERVED) is ConnectAction.SERVE
    assert connect_action("smarty.mail.ru", 80, SERVED) is ConnectAction.REFUSE
    assert connect_action("example.com", 443, SERVED) is ConnectAction.REFUSE
    assert connect_action("mail.ru", 443, SERVED) is ConnectAction.REFUSE


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("smarty.mail.ru:443", ("smarty.mail.ru", 443)),
        ("SMARTY.Mail.RU.:443", ("smarty.mail.ru", 443)),
        ("[::1]:443", ("::1", 443)),
        ("smarty.mail.ru", None),
        ("smarty.mail.ru:", None),
        (":443", None),
        ("smarty.mail.ru:99999", None),
        ("smarty.mail.ru:https", None),
        ("smarty.mail.ru:\u00b2", None),  # a digit to str.isdigit, not to int()
        ("smarty.mail.ru:\u0664\u0664\u0663", None),  # Arabic-Indic digits: int() reads them, a port is ASCII
    ],
)
def test_a_connect_target_is_host_and_port(target: str, parsed: tuple[str, int] | None) -> None:
    assert parse_target(target) == parsed


def test_the_ca_and_the_server_certificate() -> None:
    record = make_ca()
    assert record.count(b"PRIVATE KEY-----") == 2 and record.count(b"BEGIN CERTIFICATE") == 1
    authority = Authority.from_pem(record)
    assert b"PRIVATE KEY" not in authority.certificate_pem()
    ca = authority.certificate
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    names = certificate_names(Settings.from_sources({}, {"tls_hosts": "emulator.test,10.0.0.7"}))
    assert names == ("smarty.mail.ru", "mcs.mail.ru", "localhost", "127.0.0.1", "emulator.test", "10.0.0.7")
    chain, key = authority.issue(names)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["smarty.mail.ru", "mcs.mail.ru", "localhost", "emulator.test"]
    ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")]
    assert san.get_values_for_type(x509.IPAddress) == ips
    assert leaf.issuer == ca.subject
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=398)
    leaf.verify_directly_issued_by(ca)
    assert b"PRIVATE KEY" in key and key not in record  # the server's own key, never the CA's
    assert isinstance(server_context(chain, key), ssl.SSLContext)


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    """The ports ``serve`` binds itself (``socket.create_server``) give asyncio sockets without a protocol number,
    on which Python 3.11's asyncio leaves Nagle's algorithm on; the listeners turn it off, or every TLS response
    would wait for the client's delayed ACK (~40 ms)."""
    found: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            _no_delay(transport)
            found.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        listening = socket.create_server(("127.0.0.1", 0))
        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname())
            while not found:
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(accept_one())
    assert found == [1]


def test_writers_of_the_ca_export_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Replicas sharing the export's folder all run as pid 1: threads of one process stand in for them here."""
    target, pem = tmp_path / "shared" / "ca.pem", Authority.from_pem(make_ca()).certificate_pem()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(write_ca_copy, target, pem) for _ in range(200)]:
            done.result()
    assert target.read_bytes() == pem
    assert [path.name for path in target.parent.iterdir()] == ["ca.pem"]


def test_a_failed_ca_export_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        write_ca_copy(tmp_path / "ca.pem", b"pem")
    assert [path.name for path in tmp_path.iterdir()] == ["ca.pem"]


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
def test_the_tls_ports_on_all_ipv6_addresses_accept_ipv4_too() -> None:
    """As uvicorn's plain port does with SMARTY_HOST=::."""
    try:
        sock = listening_socket("::", 0, 8)
    except OSError as exc:  # IPv6 disabled in this container
        pytest.skip(f"cannot bind :: here: {exc}")
    with sock, socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=5):
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


def served_leaf(context: ssl.SSLContext, ca_pem: bytes) -> bytes:
    """A TLS handshake in memory between ``context`` and a client trusting ``ca_pem`` only: the leaf served."""
    client_context = ssl.create_default_context(cadata=ca_pem.decode())
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname="smarty.mail.ru")
    server = context.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            continue
        break
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize("memfd", [True, False], ids=["in-memory", "temporary-directory"])
def test_the_server_context_serves_the_issued_chain_and_key(
    memfd: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = Authority.from_pem(make_ca())
    chain, key = authority.issue(["smarty.mail.ru"])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if memfd:
        if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
            pytest.skip("no memfd_create or /proc here")

        def no_files(*args: object, **kwargs: object) -> None:
            raise OSError(30, "Read-only file system")  # as a read-only root: nothing may be written

        monkeypatch.setattr(tempfile, "TemporaryDirectory", no_files)
        monkeypatch.setattr(tempfile, "mkdtemp", no_files)
    else:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    context = server_context(chain, key)
    leaf = x509.load_pem_x509_certificates(chain)[0].public_bytes(serialization.Encoding.DER)
    assert served_leaf(context, authority.certificate_pem()) == leaf
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_server_context_that_cannot_be_loaded_is_a_tls_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    chain, key = Authority.from_pem(make_ca()).issue(["smarty.mail.ru"])
    with pytest.raises(TlsError, match="the server certificate issued from the emulator's CA cannot be loaded"):
        server_context(chain, key)
