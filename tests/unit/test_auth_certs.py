"""Gateway certificate validation, identity matching and CERTREQ hashes."""

import datetime
import hashlib
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from client.ikev2.auth import certs, keys
from client.ikev2.constants import IdType
from client.ikev2.errors import PeerNotTrusted

NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_cert(
    cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    eku: list[ObjectIdentifier] | None = None,
    days: tuple[int, int] = (-30, 365),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(signer, hashes.SHA256()), key


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki():
    root = make_cert("Root CA", ca=True)
    inter = make_cert("Intermediate CA", root, ca=True)
    gw = make_cert(
        "vpn.example.com",
        inter,
        san=[
            x509.DNSName("vpn.example.com"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
            x509.RFC822Name("gw@example.com"),
        ],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE],
    )
    return root, inter, gw


def test_chain_through_intermediate_validates(pki) -> None:
    root, inter, gw = pki
    leaf = certs.validate_chain(der(gw[0]), [der(inter[0])], [root[0]], NOW)
    assert leaf == gw[0]


def test_missing_intermediate_fails(pki) -> None:
    root, _, gw = pki
    with pytest.raises(PeerNotTrusted, match="does not lead to a trusted CA"):
        certs.validate_chain(der(gw[0]), [], [root[0]], NOW)


def test_other_ca_fails(pki) -> None:
    _, inter, gw = pki
    other = make_cert("Other CA", ca=True)
    with pytest.raises(PeerNotTrusted, match="does not lead to a trusted CA"):
        certs.validate_chain(der(gw[0]), [der(inter[0])], [other[0]], NOW)


def test_expired_and_not_yet_valid_fail(pki) -> None:
    root, inter, gw = pki
    for when in (NOW + datetime.timedelta(days=400), NOW - datetime.timedelta(days=40)):
        with pytest.raises(PeerNotTrusted):
            certs.validate_chain(der(gw[0]), [der(inter[0])], [root[0]], when)


def test_broken_signature_fails(pki) -> None:
    root, inter, gw = pki
    raw = bytearray(der(gw[0]))
    raw[-5] ^= 0x01  # inside the signature value
    with pytest.raises(PeerNotTrusted):
        certs.validate_chain(bytes(raw), [der(inter[0])], [root[0]], NOW)


def test_garbage_leaf_fails_cleanly(pki) -> None:
    with pytest.raises(PeerNotTrusted, match="malformed certificate"):
        certs.validate_chain(b"\x30\x03\x02\x01\x01", [], [pki[0][0]], NOW)


def test_issuer_that_is_not_a_ca_fails(pki) -> None:
    root = pki[0]
    not_ca = make_cert("not a CA", root)  # no basicConstraints
    gw = make_cert("vpn.example.com", not_ca, san=[x509.DNSName("vpn.example.com")])
    with pytest.raises(PeerNotTrusted):
        certs.validate_chain(der(gw[0]), [der(not_ca[0])], [root[0]], NOW)


def test_leaf_without_eku_or_san_validates(pki) -> None:
    root = pki[0]
    gw = make_cert("plain", root)
    assert certs.validate_chain(der(gw[0]), [], [root[0]], NOW) == gw[0]


def test_client_only_eku_is_not_a_gateway(pki) -> None:
    root = pki[0]
    gw = make_cert("client", root, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(PeerNotTrusted):
        certs.validate_chain(der(gw[0]), [], [root[0]], NOW)


def test_pinned_self_signed_gateway(pki) -> None:
    selfsigned, _ = make_cert("vpn.example.com", san=[x509.DNSName("vpn.example.com")])
    assert certs.validate_chain(der(selfsigned), [], [selfsigned], NOW) == selfsigned
    with pytest.raises(PeerNotTrusted):
        certs.validate_chain(der(selfsigned), [], [selfsigned], NOW + datetime.timedelta(days=900))
    with pytest.raises(PeerNotTrusted):
        certs.validate_chain(der(selfsigned), [], [pki[0][0]], NOW)


def test_system_store_must_be_passed_in(pki) -> None:
    with pytest.raises(ValueError):
        certs.validate_chain(der(pki[2][0]), [], None, NOW)


@pytest.mark.skipif(shutil.which("pki") is None, reason="strongSwan pki tool not installed")
def test_certificates_made_by_strongswan_pki(tmp_path: Path) -> None:
    def run(*args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run(["pki", *args], input=stdin, capture_output=True, check=True).stdout

    ca_key = run("--gen", "--type", "ecdsa", "--size", "256")
    (tmp_path / "ca.key").write_bytes(ca_key)
    ca = run("--self", "--ca", "--in", str(tmp_path / "ca.key"), "--dn", "C=CH, O=Lab, CN=Lab CA")
    (tmp_path / "ca.crt").write_bytes(ca)
    gw_pub = run("--pub", stdin=run("--gen", "--type", "rsa", "--size", "2048"))
    issue = [
        "--issue",
        "--cacert",
        str(tmp_path / "ca.crt"),
        "--cakey",
        str(tmp_path / "ca.key"),
        "--dn",
        "C=CH, O=Lab, CN=vpn.example.com",
        "--san",
        "vpn.example.com",
    ]
    plain = run(*issue, stdin=gw_pub)
    flagged = run(*issue, "--flag", "serverAuth", "--flag", "ikeIntermediate", stdin=gw_pub)
    anchors = keys.load_certificates(ca)
    now = datetime.datetime.now(datetime.UTC)
    for leaf_der in (plain, flagged):
        leaf = certs.validate_chain(leaf_der, [], anchors, now)
        certs.check_identity(leaf, "vpn.example.com")
        certs.check_identity(leaf, "C=CH, O=Lab, CN=vpn.example.com")
    other = make_cert("Other CA", ca=True)[0]
    with pytest.raises(PeerNotTrusted):
        certs.validate_chain(plain, [], [other], now)


# --- identities -------------------------------------------------------------------------


def test_identity_matches_sans(pki) -> None:
    gw = pki[2][0]
    assert certs.identity_matches(gw, IdType.FQDN, b"VPN.Example.com")
    assert not certs.identity_matches(gw, IdType.FQDN, b"other.example.com")
    assert certs.identity_matches(gw, IdType.IPV4_ADDR, bytes([192, 0, 2, 1]))
    assert not certs.identity_matches(gw, IdType.IPV4_ADDR, bytes([192, 0, 2, 2]))
    assert not certs.identity_matches(gw, IdType.IPV4_ADDR, bytes([192, 0, 2]))
    v6 = ipaddress.ip_address("2001:db8::1").packed
    assert certs.identity_matches(gw, IdType.IPV6_ADDR, v6)
    assert certs.identity_matches(gw, IdType.RFC822_ADDR, b"gw@example.com")
    assert not certs.identity_matches(gw, IdType.RFC822_ADDR, b"other@example.com")
    assert certs.identity_matches(gw, IdType.DER_ASN1_DN, gw.subject.public_bytes())
    assert not certs.identity_matches(gw, IdType.DER_ASN1_DN, _name("x").public_bytes())
    assert not certs.identity_matches(gw, IdType.DER_ASN1_DN, b"\x30\x05garbage")
    assert not certs.identity_matches(gw, IdType.KEY_ID, b"vpn.example.com")


def test_identity_no_wildcards(pki) -> None:
    wild = make_cert("wild", pki[0], san=[x509.DNSName("*.example.com")])[0]
    assert not certs.identity_matches(wild, IdType.FQDN, b"vpn.example.com")


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag, len(content))) + content


def test_dn_match_ignores_string_type_and_case(pki) -> None:
    gw = pki[2][0]

    def rdn(oid: bytes, tag: int, value: bytes) -> bytes:
        return _tlv(0x31, _tlv(0x30, _tlv(0x06, oid) + _tlv(tag, value)))

    # PrintableString and upper case where the certificate has UTF8String "Example".
    printable = _tlv(
        0x30,
        rdn(b"\x55\x04\x06", 0x13, b"CH")
        + rdn(b"\x55\x04\x0a", 0x13, b"EXAMPLE")
        + rdn(b"\x55\x04\x03", 0x13, b"vpn.example.com"),
    )
    assert certs.identity_matches(gw, IdType.DER_ASN1_DN, printable)
    reordered = _tlv(
        0x30,
        rdn(b"\x55\x04\x03", 0x0C, b"vpn.example.com")
        + rdn(b"\x55\x04\x0a", 0x0C, b"Example")
        + rdn(b"\x55\x04\x06", 0x13, b"CH"),
    )
    assert not certs.identity_matches(gw, IdType.DER_ASN1_DN, reordered)


@pytest.mark.parametrize(
    ("text", "id_type", "data"),
    [
        ("192.0.2.1", IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
        ("2001:db8::1", IdType.IPV6_ADDR, ipaddress.ip_address("2001:db8::1").packed),
        ("@vpn.example.com", IdType.FQDN, b"vpn.example.com"),
        ("gw@example.com", IdType.RFC822_ADDR, b"gw@example.com"),
        ("vpn.example.com", IdType.FQDN, b"vpn.example.com"),
        (
            "C=CH, O=Example, CN=vpn.example.com",
            IdType.DER_ASN1_DN,
            _name("vpn.example.com").public_bytes(),
        ),
    ],
)
def test_classify_identity(text: str, id_type: int, data: bytes) -> None:
    assert certs.classify_identity(text) == (id_type, data)


def test_check_identity(pki) -> None:
    gw = pki[2][0]
    for ok in (
        "vpn.example.com",
        "@vpn.example.com",
        "192.0.2.1",
        "2001:db8::1",
        "gw@example.com",
        "C=CH, O=Example, CN=vpn.example.com",
        "CN=vpn.example.com, O=Example, C=CH",
        "/C=CH/O=Example/CN=vpn.example.com",
    ):
        certs.check_identity(gw, ok)
    with pytest.raises(PeerNotTrusted) as info:
        certs.check_identity(gw, "other.example.com")
    assert str(info.value) == (
        "the gateway's certificate does not carry the identity 'other.example.com'"
    )
    for bad in ("198.51.100.1", "C=CH, O=Example, CN=other", "NOPE=x"):
        with pytest.raises(PeerNotTrusted):
            certs.check_identity(gw, bad)


def test_certreq_hash_is_sha1_of_spki(pki) -> None:
    root = pki[0][0]
    spki = root.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert certs.certreq_hash(root) == hashlib.sha1(spki).digest()
    assert len(certs.certreq_hash(root)) == 20
