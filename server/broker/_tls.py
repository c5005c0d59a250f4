"""A private CA, a broker certificate and per-device client certificates (for `fleet_init(tls=True)`).

The CA signs both sides: the broker presents a server certificate for 127.0.0.1/localhost (plus
the fleet host), and Mosquitto's TLS listener requires every device to present a client
certificate from the same CA in addition to its password (a stolen password alone is not enough).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

_VALID_DAYS = 825  # the longest validity that Apple/browsers accept for leaf certs; CA gets 10y


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "fleet_init(tls=True) needs the 'cryptography' package to generate certificates; "
            "install it with: pip install cryptography (or run fleet_init with tls=False)"
        ) from exc
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write_private(path: Path, data: bytes) -> None:
    """Create the file with mode 600 from the start (no window where the key is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_key(path: Path, key) -> None:
    _, _, serialization, _, _, _ = _crypto()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, pem)


def _write_cert(path: Path, cert) -> None:
    _, _, serialization, _, _, _ = _crypto()
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject_cn: str, issuer_name, public_key, days: int):
    x509, _, _, _, _, NameOID = _crypto()
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Back-dated a little so a device whose clock is slightly behind still accepts it.
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def make_ca(tls_dir: Path, fleet: str) -> tuple[Path, Path]:
    """Write `ca.crt` and `ca.key` (mode 600) into `tls_dir`; return their paths."""
    x509, hashes, _, ec, _, NameOID = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedhft fleet {fleet} CA")])
    cert = (
        _builder(f"fedhft fleet {fleet} CA", name, key.public_key(), 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt, key_path = tls_dir / "ca.crt", tls_dir / "ca.key"
    _write_cert(crt, cert)
    _write_key(key_path, key)
    return crt, key_path


def _load_ca(ca_crt: Path, ca_key: Path):
    x509, _, serialization, _, _, _ = _crypto()
    cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    return cert, key


def make_leaf(
    ca_crt: Path,
    ca_key: Path,
    out_crt: Path,
    out_key: Path,
    common_name: str,
    *,
    server_hosts: list[str] | None = None,
) -> None:
    """Sign a server (when `server_hosts` is given: SANs) or client certificate with the CA."""
    x509, hashes, _, ec, EKU, _ = _crypto()
    ca_cert, ca_priv = _load_ca(ca_crt, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(common_name, ca_cert.subject, key.public_key(), _VALID_DAYS)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    if server_hosts is not None:
        sans = []
        for host in server_hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = EKU.SERVER_AUTH
    else:
        usage = EKU.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(ca_priv, hashes.SHA256())
    _write_cert(out_crt, cert)
    _write_key(out_key, key)
