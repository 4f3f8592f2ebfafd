"""Certificates and keys of the local cluster, written into ``<state>/pki/``.

Every key is ECDSA P-256 (PKCS#8 PEM, mode 0600) and every certificate is issued by one local CA.
The file names are module constants:

- ``CA_CERT``/``CA_KEY`` = ``ca.crt``/``ca.key``: the CA. The apiserver trusts it for client
  certificates (``--client-ca-file``) and for the node's serving certificate
  (``--kubelet-certificate-authority``); clients trust it for the apiserver.
- ``APISERVER_CERT``/``APISERVER_KEY`` = ``apiserver.crt``/``.key``: serving certificate for
  localhost, 127.0.0.1 and the in-cluster ``kubernetes`` Service names.
- ``ADMIN_CERT``/``ADMIN_KEY`` = ``admin.crt``/``.key``: CN=admin, O=system:masters; used by the
  admin kubeconfig and the controller manager.
- ``SA_KEY``/``SA_PUBLIC_KEY`` = ``sa.key``/``sa.pub``: service-account token signing pair.
- ``KUBELET_CERT``/``KUBELET_KEY`` = ``kubelet.crt``/``.key``: the local node's HTTPS (log)
  endpoint, SANs 127.0.0.1 and localhost.
- ``KUBELET_CLIENT_CERT``/``KUBELET_CLIENT_KEY`` = ``apiserver-kubelet-client.crt``/``.key``:
  CN=kube-apiserver-kubelet-client, the apiserver's client certificate when it calls the node.
- ``NODE_CERT``/``NODE_KEY`` = ``node.crt``/``.key``: CN=system:node:agentflow-local,
  O=system:nodes, so the node can run under Node authorization.

``ensure_pki`` reuses files that are present and valid (parseable, issued by the current CA, with
the expected subject and names, and not close to expiry) and regenerates the rest; a new CA
re-issues every certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
APISERVER_CERT = "apiserver.crt"
APISERVER_KEY = "apiserver.key"
ADMIN_CERT = "admin.crt"
ADMIN_KEY = "admin.key"
SA_KEY = "sa.key"
SA_PUBLIC_KEY = "sa.pub"
KUBELET_CERT = "kubelet.crt"
KUBELET_KEY = "kubelet.key"
KUBELET_CLIENT_CERT = "apiserver-kubelet-client.crt"
KUBELET_CLIENT_KEY = "apiserver-kubelet-client.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"

NODE_NAME = "agentflow-local"
CA_COMMON_NAME = "agentflow-local-ca"
# The first address of --service-cluster-ip-range (10.0.0.0/24): the `kubernetes` Service.
KUBERNETES_SERVICE_IP = "10.0.0.1"

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
# A certificate that expires sooner than this is re-issued rather than reused.
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class LeafSpec:
    """What one leaf certificate must say; a file that says something else is re-issued."""

    cert_file: str
    key_file: str
    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


LEAVES: tuple[LeafSpec, ...] = (
    LeafSpec(
        APISERVER_CERT,
        APISERVER_KEY,
        "kube-apiserver",
        server=True,
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP),
    ),
    LeafSpec(ADMIN_CERT, ADMIN_KEY, "admin", organizations=("system:masters",), client=True),
    LeafSpec(
        KUBELET_CERT,
        KUBELET_KEY,
        NODE_NAME,
        server=True,
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
    ),
    LeafSpec(KUBELET_CLIENT_CERT, KUBELET_CLIENT_KEY, "kube-apiserver-kubelet-client", client=True),
    LeafSpec(
        NODE_CERT,
        NODE_KEY,
        f"system:node:{NODE_NAME}",
        organizations=("system:nodes",),
        client=True,
    ),
)


@dataclass
class PkiReport:
    """Which files ``ensure_pki`` wrote (empty when everything was reused)."""

    written: list[str] = field(default_factory=list)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _fresh(cert: x509.Certificate) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _issue_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    name = _name(CA_COMMON_NAME)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(pki / CA_KEY, _key_pem(key))
    _write_public(pki / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _load_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert, key = _load_cert(pki / CA_CERT), _load_key(pki / CA_KEY)
    if cert is None or key is None or not _same_public_key(cert, key) or not _fresh(cert):
        return None
    return cert, key


def _sans(spec: LeafSpec) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    return names


def _leaf_matches(
    spec: LeafSpec,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
) -> bool:
    if not _same_public_key(cert, key) or not _fresh(cert):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    if cert.subject != _name(spec.common_name, spec.organizations):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        present = set(san)
    except x509.ExtensionNotFound:
        present = set()
    return present == set(_sans(spec))


def _issue_leaf(
    pki: Path, spec: LeafSpec, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = _new_key()
    now = _now()
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans = _sans(spec)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(pki / spec.key_file, _key_pem(key))
    _write_public(pki / spec.cert_file, cert.public_bytes(serialization.Encoding.PEM))


def _ensure_sa_keys(pki: Path, report: PkiReport) -> None:
    key = _load_key(pki / SA_KEY)
    public = pki / SA_PUBLIC_KEY
    if key is not None and public.exists():
        try:
            if serialization.load_pem_public_key(public.read_bytes()) == key.public_key():
                return
        except ValueError:
            pass
    key = _new_key()
    _write_private(pki / SA_KEY, _key_pem(key))
    _write_public(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    report.written += [SA_KEY, SA_PUBLIC_KEY]


def ensure_pki(pki: Path) -> PkiReport:
    """Create or reuse every certificate and key in ``pki`` (see the module docstring)."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    report = PkiReport()
    loaded = _load_ca(pki)
    if loaded is None:
        loaded = _issue_ca(pki)
        report.written += [CA_CERT, CA_KEY]
    ca, ca_key = loaded
    for spec in LEAVES:
        cert, key = _load_cert(pki / spec.cert_file), _load_key(pki / spec.key_file)
        if cert is not None and key is not None and _leaf_matches(spec, cert, key, ca):
            continue
        _issue_leaf(pki, spec, ca, ca_key)
        report.written += [spec.cert_file, spec.key_file]
    _ensure_sa_keys(pki, report)
    return report
