"""The cluster's certificate authority and the nodes' certificates (pure: bytes in, bytes out).

A cluster has one CA, made on the node that creates the cluster. Every node holds a key of its own
(it never leaves the node) and a certificate from the cluster CA that serves for everything between
nodes and towards users:
  - etcd client and peer traffic (mutual TLS: etcd refuses a peer or client without one),
  - node-to-node calls (the console relay, job routing),
  - the node's console, so a browser that trusts the cluster CA once trusts every node.
The certificate's common name is the node's stable identity (its machine-id); its alternative
names are the node's addresses and host names.

A joining node sends a certificate signing request; the sponsor node signs it only for the names
the request is allowed to carry (checked here, `sign_node`), after the join token was accepted.
This module writes no files: its callers keep the keys (mode 0600) and certificates.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cairn.errors import ValidationError

CA_DAYS = 3650
NODE_DAYS = 825
NODE_ID = re.compile(r"[0-9a-f]{32}")                     # a machine-id
DNS_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_key() -> bytes:
    """A new node key (P-256), PEM."""
    return key_pem(ec.generate_private_key(ec.SECP256R1()))


def make_ca(cluster_name: str, now: datetime.datetime) -> KeyPair:
    return self_signed_ca(f"Cairn cluster CA {cluster_name}", now)


def self_signed_ca(common_name: str, now: datetime.datetime) -> KeyPair:
    """A CA (organisation Cairn) valid for CA_DAYS: the cluster's, or a standalone console's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cairn"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def fingerprint(cert_pem: bytes) -> str:
    """"sha256:<hex>" of the certificate's DER: what a join token carries to pin the cluster CA."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_names(names: list[str]) -> list[str]:
    """The alternative names a node certificate may carry: IP addresses and DNS names."""
    problems = []
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not isinstance(name, str) or not DNS_NAME.fullmatch(name):
                problems.append(repr(name))
    if problems:
        raise ValidationError({"names": f"not an address or host name: {', '.join(problems)}"})
    if not names:
        raise ValidationError({"names": "a node certificate needs at least one address or name"})
    return list(dict.fromkeys(names))


def make_csr(key_pem: bytes, node_id: str, names: list[str]) -> bytes:
    if not NODE_ID.fullmatch(node_id or ""):
        raise ValidationError({"node_id": "the node id must be a machine-id (32 hex digits)"})
    key = serialization.load_pem_private_key(key_pem, password=None)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
           .add_extension(alternative_names(check_names(names)), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def alternative_names(names: list[str]) -> x509.SubjectAlternativeName:
    """Subject alternative names: IP addresses as such, the rest as DNS names (each once)."""
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True)
class SigningRequest:
    node_id: str
    names: list[str]


def read_csr(csr_pem: bytes | str) -> SigningRequest:
    """What a signing request asks for; a malformed or forged one is refused, naming the problem."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise ValidationError({"csr": "not a PEM certificate signing request"}) from None
    if not csr.is_signature_valid:
        raise ValidationError({"csr": "the signing request's signature does not match its key"})
    common = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    node_id = str(common[0].value) if common else ""
    if not NODE_ID.fullmatch(node_id):
        raise ValidationError({"csr": "the signing request's common name must be the node id (a machine-id)"})
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValidationError({"csr": "the signing request names no address"}) from None
    names = [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)
    return SigningRequest(node_id, check_names(names))


def sign_node(ca: KeyPair, csr_pem: bytes | str, now: datetime.datetime,
              allowed_names: list[str] | None = None) -> bytes:
    """The node certificate for a signing request: server and client use (etcd peers and clients,
    node-to-node calls, the console). With allowed_names, every name asked for must be in it."""
    request = read_csr(csr_pem)
    if allowed_names is not None:
        extra = [name for name in request.names if name not in allowed_names]
        if extra:
            raise ValidationError({"csr": f"the signing request asks for names it may not have: {', '.join(extra)}"})
    csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.node_id)]))
            .issuer_name(ca_cert.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
            .add_extension(alternative_names(request.names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def issued_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """True if cert was signed by the CA's key."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    try:
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                    ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        return False
    return cert.issuer == ca_cert.subject
