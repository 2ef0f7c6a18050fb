"""IKE identities: classify a configured identity string, parse and compare DNs.

One implementation for the ID payload (payloads.IdPayload) and the gateway
certificate checks (auth/certs.py), so both read a profile's ids the same way.
"""

import ipaddress
import re
import warnings

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from .auth.der import BIT_STRING, INTEGER, NULL, OID, SEQUENCE, DerError, read_one, tlv
from .constants import IdType

# --- DN strings ---------------------------------------------------------------------

# Keywords strongSwan users write (matched case-insensitively); dotted OIDs work too.
_DN_KEYWORDS = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SN": NameOID.SURNAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "G": NameOID.GIVEN_NAME,
    "GN": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
}
# Names for attributes that RFC 4514 output would show as dotted OIDs.
_DN_SHOW = {
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.TITLE: "T",
}
# "KEY=" or "1.2.3=" at the start (after an optional '/'): the string is meant as a DN.
_DN_RE = re.compile(r"^\s*/?\s*(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\s*=")


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in text:
        if escaped:
            current, escaped = current + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse_dn(text: str) -> x509.Name:
    """A strongSwan-style DN ("C=CH, O=Org, CN=gw" or "/C=CH/O=Org/CN=gw").

    RDNs stay in the order written, which is certificate (DER) order; raises ValueError.
    """
    text = text.strip()
    sep = "/" if text.startswith("/") else ","
    attributes = []
    for part in _split_unescaped(text.removeprefix("/"), sep):
        key, eq, value = part.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ValueError(f"DN component {part.strip()!r} is not KEY=value")
        try:
            oid = _DN_KEYWORDS.get(key.upper()) or ObjectIdentifier(key)
        except ValueError:
            raise ValueError(f"unknown DN attribute {key!r}") from None
        attributes.append(x509.NameAttribute(oid, value))
    return x509.Name(attributes)


def dn_to_string(name: x509.Name) -> str:
    """The DN in strongSwan's notation: certificate order, ', ' separated."""
    return ", ".join(rdn.rfc4514_string(_DN_SHOW) for rdn in name.rdns)


# --- DER Names ----------------------------------------------------------------------

_RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")


def dn_from_der(der: bytes) -> x509.Name:
    """Parse a bare DER Name (an ID payload's DER_ASN1_DN); raises ValueError.

    cryptography has no public Name-from-DER, so the Name is wrapped into a (never
    verified) CSR: its strict ASN.1 parser does the work instead of a hand-written one.
    """
    try:
        read_one(der, SEQUENCE)
    except DerError as e:
        raise ValueError(f"not a single DER SEQUENCE ({e})") from None
    dummy_alg = tlv(SEQUENCE, tlv(OID, _RSA_ENCRYPTION) + tlv(NULL, b""))
    spki = tlv(SEQUENCE, dummy_alg + tlv(BIT_STRING, b"\x00"))
    info = tlv(SEQUENCE, tlv(INTEGER, b"\x00") + der + spki + b"\xa0\x00")
    csr = tlv(SEQUENCE, info + dummy_alg + tlv(BIT_STRING, b"\x00"))
    try:
        with warnings.catch_warnings():  # e.g. "country name must be 2 characters"
            warnings.simplefilter("ignore")
            name = x509.load_der_x509_csr(csr).subject
            name.rfc4514_string()  # force decoding of every attribute value now
    except Exception as e:  # odd input raises KeyError and TypeError as well as ValueError
        raise ValueError(f"malformed DER Name ({type(e).__name__})") from e
    return name


def _fold(value: str | bytes) -> str | bytes:
    # RFC 5280 7.1 (simplified): case and runs of white space do not matter.
    return " ".join(value.split()).casefold() if isinstance(value, str) else value


def same_dn(a: x509.Name, b: x509.Name) -> bool:
    """DN equality as for name matching: RDN order counts, string type and case do not."""

    def key(name: x509.Name) -> list[frozenset[tuple[ObjectIdentifier, str | bytes]]]:
        return [frozenset((attr.oid, _fold(attr.value)) for attr in rdn) for rdn in name.rdns]

    return key(a) == key(b)


# --- configured identities ----------------------------------------------------------

_ID_PREFIXES = {
    "ipv4:": IdType.IPV4_ADDR,
    "ipv6:": IdType.IPV6_ADDR,
    "fqdn:": IdType.FQDN,
    "email:": IdType.RFC822_ADDR,
    "rfc822:": IdType.RFC822_ADDR,
    "asn1dn:": IdType.DER_ASN1_DN,
    "keyid:": IdType.KEY_ID,
}


def _typed(id_type: IdType, value: str) -> tuple[IdType, bytes]:
    if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        addr = ipaddress.ip_address(value)
        if (addr.version == 4) != (id_type == IdType.IPV4_ADDR):
            raise ValueError(f"{value!r} is not an {id_type.name}")
        return id_type, addr.packed
    if id_type == IdType.DER_ASN1_DN:
        return id_type, parse_dn(value).public_bytes()
    if id_type == IdType.KEY_ID:
        return id_type, bytes.fromhex(value.removeprefix("#").replace(":", ""))
    return id_type, value.encode()


# A DN of a dozen attributes is a few hundred bytes; more cannot be an identity, and
# would not fit an ID payload's 16-bit length.
MAX_IDENTITY_BYTES = 2048


def classify_identity(text: str) -> tuple[IdType, bytes]:
    """Classify a configured identity like strongSwan; return (ID type, ID data).

    The data is never empty nor longer than MAX_IDENTITY_BYTES. Raises ValueError.
    """
    id_type, data = _classify(text)
    if not data:
        raise ValueError(f"identity {text.strip()!r} has no value")
    if len(data) > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity longer than {MAX_IDENTITY_BYTES} bytes")
    return id_type, data


def _classify(text: str) -> tuple[IdType, bytes]:
    """Classify a configured identity like strongSwan; return (ID type, ID data).

    Order: a type prefix ("fqdn:", "email:", ...), "@#hex" key id, IP literal, DN
    (before the '@' rule: "CN=user@example.org" is a DN), "@fqdn", email, else FQDN.
    A DN's data is its DER in the order written. Raises ValueError.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty identity")
    for prefix, id_type in _ID_PREFIXES.items():
        if s.lower().startswith(prefix):
            return _typed(id_type, s[len(prefix) :])
    if s.startswith("@#"):
        return _typed(IdType.KEY_ID, s[2:])
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        pass
    else:
        return (IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR), addr.packed
    if _DN_RE.match(s):
        return IdType.DER_ASN1_DN, parse_dn(s).public_bytes()
    if s.startswith("@"):
        return IdType.FQDN, s[1:].encode()
    if "@" in s:
        return IdType.RFC822_ADDR, s.encode()
    return IdType.FQDN, s.encode()
