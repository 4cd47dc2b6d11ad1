"""TLS material for the console: a private CA (made once) and a server certificate signed by it.

Files in <state_dir>/tls/: ca.pem, ca.key, server.pem, server.key (keys mode 0600). Clients such as
cairnctl trust ca.pem. The server certificate names the hostname, localhost, 127.0.0.1 and any
extra names given. Existing files are never replaced (first start only).
"""

from __future__ import annotations

import datetime
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cairn.cluster import pki
from cairn.system.files import write_private


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def console_tls(state_dir: Path, node_name: str, bind: str) -> TlsFiles:
    """The console's files (made on first start): named for the host, the node and the bound
    address (unless it binds every address)."""
    host = bind.rpartition(":")[0].strip("[]")
    return ensure_tls(state_dir, socket.gethostname(), [node_name] + ([host] if host not in ("0.0.0.0", "::") else []))


def ensure_tls(state_dir: Path, hostname: str, extra_names: list[str] = ()) -> TlsFiles:
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server.key")
    if files.ca.exists() and files.cert.exists() and files.key.exists():
        return files
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = pki.self_signed_ca(f"Cairn CA {hostname}", now)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    ca_name = x509.load_pem_x509_certificate(ca.cert_pem).subject
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(pki.alternative_names([hostname, "localhost", "127.0.0.1", *extra_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(tls_dir / "ca.key", ca.key_pem)
    write_private(files.key, pki.key_pem(key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca.cert_pem)
    return files
