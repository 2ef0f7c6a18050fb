import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from client.ikev2.auth import der
from client.ikev2.constants import IdType
from client.ikev2.identity import (
    classify_identity,
    dn_from_der,
    dn_to_string,
    parse_dn,
    same_dn,
)

_MOON = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "strongSwan"),
    x509.NameAttribute(NameOID.COMMON_NAME, "moon"),
])


@pytest.mark.parametrize("text", [
    "C=CH, O=strongSwan, CN=moon",
    "/C=CH/O=strongSwan/CN=moon",
    "c=CH,o=strongSwan , cn = moon",
    "asn1dn:C=CH, O=strongSwan, CN=moon",
    "2.5.4.6=CH, 2.5.4.10=strongSwan, 2.5.4.3=moon",
])
def test_dn_spellings_give_certificate_order(text):
    assert classify_identity(text) == (IdType.DER_ASN1_DN, _MOON.public_bytes())


def test_dn_takes_precedence_over_email_rule():
    id_type, data = classify_identity("CN=carol@example.org")
    assert id_type == IdType.DER_ASN1_DN
    assert dn_from_der(data).get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "carol@example.org")
    assert classify_identity("carol@example.org") == (IdType.RFC822_ADDR, b"carol@example.org")
    assert classify_identity("email:vpn.example.org") == (IdType.RFC822_ADDR, b"vpn.example.org")
    assert classify_identity("@#01:02") == (IdType.KEY_ID, b"\x01\x02")


@pytest.mark.parametrize("text", ["", "  ", "ipv4:2001:db8::1", "ipv6:192.0.2.1", "@#xyz",
                                  "CN=", "FOO=bar", "C=CHE", "CN=a, broken"])
def test_invalid_identities_raise_value_error(text):
    with pytest.raises(ValueError):
        classify_identity(text)


def test_escaped_separator_stays_in_value():
    name = parse_dn(r"O=Lab\, Inc., CN=gw")
    assert [a.value for a in name] == ["Lab, Inc.", "gw"]
    assert dn_to_string(name) == r"O=Lab\, Inc., CN=gw"


_PRINTABLE = x509.name._ASN1Type.PrintableString


def test_same_dn_ignores_case_space_and_string_type_not_order():
    printable = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ch"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "STRONGSWAN", _PRINTABLE),
        x509.NameAttribute(NameOID.COMMON_NAME, "  moon "),
    ])
    assert same_dn(dn_from_der(printable.public_bytes()), _MOON)
    assert not same_dn(x509.Name(list(reversed(_MOON.rdns))), _MOON)
    assert not same_dn(parse_dn("C=CH, O=strongSwan, CN=sun"), _MOON)


@pytest.mark.parametrize("data", [
    b"",
    _MOON.public_bytes() + b"\x00",            # trailing data after the Name
    _MOON.public_bytes()[:-1],                 # truncated
    bytes.fromhex("3003020100"),               # SEQUENCE of an INTEGER, not of RDNs
    bytes.fromhex("3181") + bytes(1),          # non-minimal length
])
def test_dn_from_der_rejects_malformed(data):
    with pytest.raises(ValueError):
        dn_from_der(data)


def test_der_reader_is_strict_and_round_trips_the_writer():
    long = der.tlv(der.SEQUENCE, bytes(200))
    assert long[:3] == bytes.fromhex("3081c8")
    assert der.read_one(long, der.SEQUENCE) == bytes(200)
    assert der.read_all(der.tlv(der.NULL, b"") + der.tlv(der.INTEGER, b"\x05")) == [
        (der.NULL, b""), (der.INTEGER, b"\x05")]
    for bad in (b"\x30", b"\x30\x81\x05", b"\x30\x80", b"\x30\x82\x00\x81" + bytes(0x81),
                b"\x30\x02\x00", b"\x30\x00\x00"):
        with pytest.raises(der.DerError):
            der.read_one(bad, der.SEQUENCE)
    with pytest.raises(der.DerError):
        der.read_one(der.tlv(der.SET, b""), der.SEQUENCE)
