"""HTTPS as the real hosts: the emulator's own certificate authority and the server certificate it issues.

On first use a CA (an ECDSA P-256 key and a self-signed certificate valid for ten years) is made and kept with the
record through :meth:`emulator.store.records.Store.shared_value`: in the data dir as ``tls-ca.pem`` (mode 0600, its
key and its certificate), or with PostgreSQL in the shared database, so every replica and every worker serves
certificates from the same CA and a client trusts them all with one PEM. Each process then issues its own server
certificate from it at startup, for ``smarty.mail.ru``, ``mcs.mail.ru``, ``localhost``, ``127.0.0.1`` and the names
of ``SMARTY_TLS_HOSTS``; its key lives in memory (on Linux it never touches a file system: see :func:`server_context`).

The CA's key is never logged, served or written anywhere else: :meth:`Authority.certificate_pem` is the only form
that leaves this module (``smarty-emulator ca``, ``GET /emulator/ca.pem``, ``SMARTY_TLS_CA_EXPORT``).

Everything is done with the ``cryptography`` package (no ``openssl`` command). The module imports nothing of HTTP,
so the runtime may hold it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from emulator.settings import CA_RECORD_FILE, Settings, tls_host_names

log = logging.getLogger("emulator.tls")

TLS_STATE = "smarty.tls"  # the key of the app's lifespan state that holds the process's Tls (for the listeners)
CA_RECORD = CA_RECORD_FILE  # the name of the CA (key and certificate, PEM) in the record
REAL_HOSTS = ("smarty.mail.ru", "mcs.mail.ru")  # the hosts of the real service: the persons API and OAuth
CERTIFICATE_NAMES = (*REAL_HOSTS, "localhost", "127.0.0.1")
CA_LIFETIME = datetime.timedelta(days=3650)
# Issued at every start; 397 days is the most a browser accepts from a public CA, and more than a run needs.
SERVER_LIFETIME = datetime.timedelta(days=397)
BACKDATE = datetime.timedelta(days=1)  # a client whose clock is a little behind still accepts a fresh certificate


class TlsError(Exception):
    """The certificate cannot be served (``SMARTY_TLS_CERT`` or ``SMARTY_TLS_KEY`` unreadable or not a pair), or the
    CA certificate cannot be written where ``SMARTY_TLS_CA_EXPORT`` says; the message names the setting. Readiness
    reports it and the process stays up, as for other startup failures."""


class SharedRecord(Protocol):
    """What this module needs of a store."""

    def shared_value(self, name: str, make: Callable[[], bytes]) -> bytes: ...


def extra_names(settings: Settings) -> tuple[str, ...]:
    """The names of ``SMARTY_TLS_HOSTS``, lower-case, in order, without duplicates (see
    :func:`emulator.settings.tls_host_names`)."""
    return tls_host_names(settings.tls_hosts)


def certificate_names(settings: Settings) -> tuple[str, ...]:
    """The names (DNS names and IP addresses) of the emulator's server certificate."""
    return tuple(dict.fromkeys((*CERTIFICATE_NAMES, *extra_names(settings))))


def proxy_hosts(settings: Settings) -> frozenset[str]:
    """The hosts the proxy serves itself on ``CONNECT``: the real service's and those of ``SMARTY_TLS_HOSTS``."""
    return frozenset((*REAL_HOSTS, *extra_names(settings)))


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures; a CA also signs certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca() -> bytes:
    """A new CA: its private key and its self-signed certificate, PEM, in that order."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smarty-emulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, "smarty-emulator local CA"),
        ]
    )
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key) + certificate.public_bytes(serialization.Encoding.PEM)


def _subject_names(names: Iterable[str]) -> list[x509.GeneralName]:
    found: list[x509.GeneralName] = []
    for name in names:
        try:
            found.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            found.append(x509.DNSName(name))
    return found


def _record_place(store: SharedRecord) -> str:
    """Where the store keeps the CA, for messages: the data dir's file, or the database's row."""
    data_dir = getattr(store, "data_dir", None)
    if isinstance(data_dir, Path):
        return str(data_dir / CA_RECORD)
    return f"the database (the {CA_RECORD} row of its secrets table)"


@dataclass(frozen=True)
class Authority:
    """The emulator's CA, as kept in the record."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def from_pem(cls, data: bytes) -> Authority:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA of the record is not an EC key")
        return cls(key, x509.load_pem_x509_certificate(data))

    @classmethod
    def of(cls, store: SharedRecord) -> Authority:
        """The CA of the record, made by the first process to ask; a :class:`TlsError` naming the record if what
        the record holds is not a CA's key and certificate."""
        data = store.shared_value(CA_RECORD, make_ca)
        try:
            return cls.from_pem(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise TlsError(f"the emulator's CA in {_record_place(store)} cannot be used: {exc}") from exc

    def certificate_pem(self) -> bytes:
        """The CA's certificate, PEM: what clients trust. Never the key."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, names: Iterable[str]) -> tuple[bytes, bytes]:
        """A new server certificate for ``names``: its chain (the certificate, then the CA's) and its key, PEM."""
        names = tuple(names)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + SERVER_LIFETIME, self.certificate.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(_subject_names(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(signs_certificates=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain = certificate.public_bytes(serialization.Encoding.PEM) + self.certificate_pem()
        return chain, _key_pem(key)


def server_context(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later, HTTP/1.1 by ALPN) holding this certificate chain and key.

    ``ssl`` loads certificates from files only. On Linux the chain and the key go into one anonymous in-memory file
    (``memfd_create``), read through ``/proc/self/fd``: nothing is written to a file system, so a read-only root
    does not matter. Elsewhere (or without ``/proc``) they go into one file of a private temporary directory
    (mode 0700), removed as soon as it is loaded. This is the server certificate's key, never the CA's. A failure is
    a :class:`TlsError`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    pem = chain_pem + key_pem  # the certificate, the CA's, then the key: ``load_cert_chain`` finds the key there
    try:
        if not _load_from_memory(context, pem):
            with tempfile.TemporaryDirectory(prefix="smarty-tls-") as folder:
                path = Path(folder) / "chain.pem"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as file:
                    file.write(pem)
                context.load_cert_chain(path)
    except OSError as exc:  # ssl.SSLError too
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise TlsError(f"the server certificate issued from the emulator's CA cannot be loaded: {reason}") from exc
    return context


def _load_from_memory(context: ssl.SSLContext, pem: bytes) -> bool:
    """Load ``pem`` (chain and key) into ``context`` from an in-memory file; False where there is none."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        fd = memfd_create("smarty-tls", getattr(os, "MFD_CLOEXEC", 0))
    except OSError:  # not allowed here (seccomp): the temporary directory instead
        return False
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view) :]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return True


def write_ca_copy(path: Path, pem: bytes) -> None:
    """Write the CA certificate to ``path`` (mode 0644) as a whole: a reader sees the old file or the new one.

    The temporary file has a unique name, so replicas sharing the folder (all of them pid 1 in their containers)
    never write to the same one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        temp.chmod(0o644)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


class Tls:
    """The TLS side of one process: the context the HTTPS port and the proxy serve with, once :meth:`load` ran.

    ``enabled`` when ``SMARTY_TLS_PORT`` or ``SMARTY_PROXY_PORT`` is set; the runtime then loads it at startup,
    right after the store opens (the CA is in the record). With ``SMARTY_TLS_CA_EXPORT`` alone (``exports``) the
    runtime loads it too, to write the CA certificate; no server certificate is issued then."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = bool(settings.tls_port or settings.proxy_port)
        self.exports = bool(settings.tls_ca_export)
        self.context: ssl.SSLContext | None = None
        self.failure: str | None = None  # why :meth:`load` failed for good (a TlsError): connections stop waiting
        self.proxy_hosts = proxy_hosts(settings)

    def ca_pem(self, store: SharedRecord) -> bytes:
        """The CA certificate of the record (made if the record has none yet)."""
        return Authority.of(store).certificate_pem()

    def load(self, store: SharedRecord) -> None:
        """Build the server context: from ``SMARTY_TLS_CERT``/``SMARTY_TLS_KEY``, or a certificate issued now from
        the record's CA; write the CA certificate to ``SMARTY_TLS_CA_EXPORT`` if set. A :class:`TlsError` is final:
        it is kept in :attr:`failure`, and the listeners stop waiting for a certificate."""
        try:
            self._load(store)
        except TlsError as exc:
            self.failure = str(exc)
            raise

    def _load(self, store: SharedRecord) -> None:
        authority = Authority.of(store)
        if self.settings.tls_ca_export:
            try:
                write_ca_copy(Path(self.settings.tls_ca_export), authority.certificate_pem())
            except OSError as exc:
                raise TlsError(f"SMARTY_TLS_CA_EXPORT={self.settings.tls_ca_export}: {exc.strerror or exc}") from exc
        if not self.enabled:
            return
        if self.settings.tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["http/1.1"])
            cert, key = self.settings.tls_cert, self.settings.tls_key
            try:
                context.load_cert_chain(cert, key)
            except OSError as exc:  # ssl.SSLError too; ssl's own message names neither file
                reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
                raise TlsError(f"SMARTY_TLS_CERT={cert} with SMARTY_TLS_KEY={key} cannot be served: {reason}") from exc
            log.info("TLS: serving the certificate of %s", cert)
        else:
            names = certificate_names(self.settings)
            context = server_context(*authority.issue(names))
            log.info("TLS: serving a certificate of the emulator's CA for %s", ", ".join(names))
        self.context = context
