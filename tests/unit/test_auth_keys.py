"""Credential loading: certificates in any profile encoding, PKCS#12, private keys."""

import base64
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from client.ikev2.auth import keys


def _cert(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert, key


CA1, KEY1 = _cert("CA one")
CA2, _ = _cert("CA two")
PEM1 = CA1.public_bytes(serialization.Encoding.PEM)
PEM2 = CA2.public_bytes(serialization.Encoding.PEM)
DER1 = CA1.public_bytes(serialization.Encoding.DER)


def test_load_certificates_all_encodings() -> None:
    assert keys.load_certificates(PEM1) == [CA1]
    assert keys.load_certificates(PEM1.decode()) == [CA1]
    assert keys.load_certificates(b"junk before\n" + PEM1 + PEM2) == [CA1, CA2]
    assert keys.load_certificates(PEM1 + b"-----BEGIN CERTIFICATE-----\ncut") == [CA1]
    assert keys.load_certificates(DER1) == [CA1]
    b64 = base64.b64encode(DER1).decode()
    assert keys.load_certificates(b64) == [CA1]
    wrapped = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    assert keys.load_certificates(wrapped) == [CA1]


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        PEM1.replace(b"MII", b"XII", 1),
        base64.b64encode(DER1[:-10]),
        # BEGIN lines without an END: the old lazy regex rescanned the rest from each one
        # (quadratic); the search stops at the first BEGIN that has no END after it.
        b"-----BEGIN CERTIFICATE-----\n" * 40_000,
    ],
)
def test_load_certificates_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(ValueError, match="certificate"):
        keys.load_certificates(bad)


def _p12(passphrase: bytes | None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(b"client", KEY1, CA1, [CA2], enc)


def test_load_pkcs12_with_passphrase() -> None:
    key, cert, extra = keys.load_pkcs12(_p12(b"secret"), "secret")
    assert cert == CA1 and extra == [CA2]
    assert key.private_numbers() == KEY1.private_numbers()


def test_load_pkcs12_unencrypted_with_no_or_empty_passphrase() -> None:
    for passphrase in (None, ""):
        assert keys.load_pkcs12(_p12(None), passphrase)[1] == CA1


@pytest.mark.parametrize(
    ("data", "passphrase"),
    [
        (_p12(b"secret"), "wrong"),
        (_p12(b"secret"), None),
        (b"\x30\x03\x02\x01\x03", "x"),
        (b"", None),
    ],
)
def test_load_pkcs12_errors(data: bytes, passphrase: str | None) -> None:
    with pytest.raises(ValueError, match=r"^PKCS#12: wrong passphrase or corrupt file$"):
        keys.load_pkcs12(data, passphrase)


def test_load_pkcs12_needs_key_and_cert() -> None:
    only_certs = pkcs12.serialize_key_and_certificates(
        b"x", None, None, [CA2], serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="lacks a private key"):
        keys.load_pkcs12(only_certs, None)


def test_load_private_key_pem_der_encrypted() -> None:
    pem = KEY1.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = KEY1.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    enc = KEY1.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    for data, pw in ((pem, None), (der, None), (enc, "pw")):
        assert keys.load_private_key(data, pw).private_numbers() == KEY1.private_numbers()
    for data, pw in ((enc, None), (enc, "bad"), (b"garbage", None)):
        with pytest.raises(ValueError, match="private key"):
            keys.load_private_key(data, pw)


def test_load_system_trust_store_reads_a_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(b"# comment\n" + PEM1 + b"\n" + PEM2)
    assert keys.load_system_trust_store(str(bundle)) == [CA1, CA2]
