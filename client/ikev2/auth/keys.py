"""Credential loading: certificates, PKCS#12 bundles, private keys.

Pure functions over bytes, except load_system_trust_store, the single file read.
"""

import base64
import binascii
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from client.ikev2.auth.pubkey import PrivateKey

_PEM_BEGIN, _PEM_END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


def _pem_blocks(raw: bytes) -> list[bytes]:
    """Each BEGIN CERTIFICATE ... END CERTIFICATE block, found by search: the lazy regex
    it replaces rescanned the rest of the input from every BEGIN without an END
    (quadratic in hostile text)."""
    blocks = []
    pos = 0
    while (start := raw.find(_PEM_BEGIN, pos)) >= 0:
        end = raw.find(_PEM_END, start + len(_PEM_BEGIN))
        if end < 0:
            break  # no END after this BEGIN: none after any later one either
        pos = end + len(_PEM_END)
        after = start + len(_PEM_BEGIN)
        if raw[after:after + 1].isspace():
            blocks.append(raw[start:pos])
    return blocks

SYSTEM_TRUST_STORE = "/etc/ssl/certs/ca-certificates.crt"


def load_certificates(data: bytes | str) -> list[x509.Certificate]:
    """Certificates from PEM text (one or many), DER, or base64 of DER.

    The profile's remote.cert may hold any of these. Raises ValueError otherwise.
    """
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        blocks = _pem_blocks(raw)
        if not blocks:
            raise ValueError("certificate: PEM text without a CERTIFICATE block")
        try:
            return [x509.load_pem_x509_certificate(block) for block in blocks]
        except ValueError as exc:
            raise ValueError(f"certificate: malformed PEM certificate ({exc})") from None
    try:
        return [x509.load_der_x509_certificate(raw)]
    except ValueError:
        pass
    try:
        der = base64.b64decode(b"".join(raw.split()), validate=True)
        return [x509.load_der_x509_certificate(der)]
    except (binascii.Error, ValueError):
        raise ValueError("certificate: neither PEM, DER nor base64 of DER") from None


_SUPPORTED_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _check_key_type(key: object) -> PrivateKey:
    if not isinstance(key, _SUPPORTED_KEYS):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def load_pkcs12(
    data: bytes, passphrase: str | None
) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    """(private key, certificate, CA/intermediate certificates) from a PKCS#12 bundle."""
    # OpenSSL takes the passphrase as a C string: cryptography panics on a NUL in it
    # (PanicException, a BaseException that gets past every `except Exception`).
    if passphrase and "\x00" in passphrase:
        raise ValueError("PKCS#12: a passphrase cannot contain NUL characters")
    # An "empty" passphrase may mean no password or the empty password: try both.
    attempts = [passphrase.encode()] if passphrase else [None, b""]
    for password in attempts:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, password)
            break
        except (ValueError, TypeError):
            continue
    else:
        raise ValueError("PKCS#12: wrong passphrase or corrupt file")
    if key is None or cert is None:
        raise ValueError("PKCS#12: the bundle lacks a private key or its certificate")
    private_key = _check_key_type(key)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        raise ValueError("PKCS#12: the private key does not belong to the certificate")
    return private_key, cert, list(extra)


def load_private_key(pem_or_der: bytes, passphrase: str | None = None) -> PrivateKey:
    """A PEM or DER private key (PKCS#8, PKCS#1 or SEC1), optionally encrypted."""
    password = passphrase.encode() if passphrase else None
    try:
        if b"-----BEGIN" in pem_or_der:
            key = serialization.load_pem_private_key(pem_or_der, password)
        else:
            key = serialization.load_der_private_key(pem_or_der, password)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"private key: wrong passphrase or malformed key ({exc})") from None
    return _check_key_type(key)


def load_system_trust_store(path: str = SYSTEM_TRUST_STORE) -> list[x509.Certificate]:
    """The system CA bundle. The only file I/O in client.ikev2.auth.

    Certificates the library cannot parse are skipped rather than failing the bundle.
    """
    with open(path, "rb") as f:
        data = f.read()
    anchors = []
    with warnings.catch_warnings():
        # Old roots with e.g. negative serial numbers still load, with a deprecation warning.
        warnings.simplefilter("ignore")
        for block in _pem_blocks(data):
            try:
                anchors.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return anchors
