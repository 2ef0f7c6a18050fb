"""Gateway certificate checks: chain to a trust anchor, identity, CERTREQ hashes.

Sans-I/O: trust anchors come in as parsed certificates (keys.load_system_trust_store
reads the system bundle), the time as an argument.
"""

import hashlib
import ipaddress
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from client.ikev2.constants import IdType
from client.ikev2.errors import PeerNotTrusted

# RFC 4945 section 5.1.3.12: the IPsec-specific EKUs that an IKE certificate may carry.
_OID_IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")
_OID_IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
_GATEWAY_EKUS = {
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    _OID_IKE_INTERMEDIATE,
    _OID_IPSEC_IKE,
}

_MAX_CHAIN_DEPTH = 8


def _ca_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints
) -> None:
    if not bc.ca:
        raise ValueError("issuer is not a CA (basicConstraints CA:FALSE)")


def _ca_key_usage(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("issuer's keyUsage lacks keyCertSign")


def _ee_key_usage(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        raise ValueError("keyUsage does not allow signatures")


def _ee_eku(_policy: Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    # No EKU at all is fine (strongSwan's pki default); one that excludes every
    # server/IKE purpose marks a client or code-signing certificate, not a gateway.
    if eku is not None and not _GATEWAY_EKUS.intersection(eku):
        raise ValueError("extendedKeyUsage allows neither serverAuth nor IKE")


def _ca_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ca_basic_constraints)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    )


def _ee_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.permit_all()
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ee_key_usage)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ee_eku)
    )


def _untrusted(reason: str) -> PeerNotTrusted:
    return PeerNotTrusted(
        f"certificate chain of the gateway does not lead to a trusted CA: {reason}"
    )


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def validate_chain(
    leaf_der: bytes,
    intermediates_der: list[bytes],
    trust_anchors: list[x509.Certificate] | None,
    when: datetime,
) -> x509.Certificate:
    """Validate the gateway's certificate (and the intermediates it sent) at `when`.

    `trust_anchors` are the profile's CA certificates; None means the system store,
    which the caller loads (keys.load_system_trust_store) and passes instead. A leaf
    that is itself one of the anchors (a pinned self-signed gateway certificate) is
    accepted if it is within its validity period. Returns the parsed leaf.
    """
    if trust_anchors is None:
        raise ValueError("trust anchors required: pass keys.load_system_trust_store()")
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        intermediates = [x509.load_der_x509_certificate(d) for d in intermediates_der]
    except ValueError as exc:
        raise _untrusted(f"malformed certificate ({exc})") from None
    if not trust_anchors:
        raise _untrusted("no trust anchor configured")
    now = _utc(when)

    if any(anchor.public_bytes(serialization.Encoding.DER) == leaf_der for anchor in trust_anchors):
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise _untrusted("the pinned gateway certificate is not valid at this time")
        return leaf

    verifier = (
        PolicyBuilder()
        .store(Store(trust_anchors))
        .time(now)
        .max_chain_depth(_MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_ca_policy(), ee_policy=_ee_policy())
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise _untrusted(str(exc)) from None
    return leaf


# --- identity -----------------------------------------------------------------------


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # a SAN the library cannot parse carries no identity we trust
        return None


def identity_matches(cert: x509.Certificate, id_type: int, id_data: bytes) -> bool:
    """Does the certificate carry this IKE identity (as a SAN, or a DN as its subject)?"""
    if id_type == IdType.DER_ASN1_DN:
        try:
            return _dn_key(id_data) == _dn_key(cert.subject.public_bytes())
        except _DerError:
            return False
    san = _san(cert)
    if san is None:
        return False
    if id_type == IdType.FQDN:
        try:
            name = id_data.decode("ascii").rstrip(".").lower()
        except UnicodeDecodeError:
            return False
        # Exact names only: a wildcard SAN does not vouch for an IKE identity.
        return any(d.rstrip(".").lower() == name for d in san.get_values_for_type(x509.DNSName))
    if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        size = 4 if id_type == IdType.IPV4_ADDR else 16
        if len(id_data) != size:
            return False
        addr = ipaddress.ip_address(id_data)
        return any(a == addr for a in san.get_values_for_type(x509.IPAddress))
    if id_type == IdType.RFC822_ADDR:
        try:
            mail = id_data.decode("ascii").lower()
        except UnicodeDecodeError:
            return False
        return any(m.lower() == mail for m in san.get_values_for_type(x509.RFC822Name))
    return False


# --- distinguished names ------------------------------------------------------------
# cryptography cannot load a bare DER Name, so a minimal walk turns one into a
# comparable key: RDNs in order, each a set of (OID, normalised value) (RFC 5280 7.1).


class _DerError(Exception):
    pass


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    if pos + 2 > len(data):
        raise _DerError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first >= 0x80:
        count = first & 0x7F
        if count == 0 or count > 3 or pos + count > len(data):
            raise _DerError("unsupported or truncated DER length")
        first = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + first > len(data):
        raise _DerError("DER element runs past its container")
    return tag, data[pos : pos + first], pos + first


def _children(data: bytes, tag: int) -> list[bytes]:
    items, pos = [], 0
    while pos < len(data):
        got, content, pos = _read_tlv(data, pos)
        if got != tag:
            raise _DerError(f"unexpected DER tag {got:#x}")
        items.append(content)
    return items


_STRING_CODECS = {
    0x0C: "utf-8",
    0x13: "ascii",
    0x16: "ascii",
    0x14: "latin-1",
    0x1E: "utf-16-be",
    0x1C: "utf-32-be",
}


def _ava_key(ava: bytes) -> tuple[bytes, object]:
    tag, oid, pos = _read_tlv(ava, 0)
    if tag != 0x06:
        raise _DerError("attribute type is not an OID")
    vtag, value, end = _read_tlv(ava, pos)
    if end != len(ava):
        raise _DerError("trailing data in attribute")
    codec = _STRING_CODECS.get(vtag)
    if codec is None:
        return oid, (vtag, value)
    try:
        text = value.decode(codec)
    except UnicodeDecodeError:
        raise _DerError("undecodable attribute value") from None
    return oid, " ".join(text.split()).casefold()


def _dn_key(der: bytes) -> tuple[frozenset[tuple[bytes, object]], ...]:
    outer = _children(der, 0x30)
    if len(outer) != 1:
        raise _DerError("a DN is a single SEQUENCE")
    name = outer[0]
    return tuple(
        frozenset(_ava_key(ava) for ava in _children(rdn, 0x30)) for rdn in _children(name, 0x31)
    )


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
}


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


def _parse_dn_string(text: str) -> list[x509.NameAttribute]:
    """A strongSwan-style DN ("C=CH, O=Org, CN=gw" or "/C=CH/O=Org/CN=gw"), in order."""
    sep = "/" if text.startswith("/") else ","
    attributes = []
    for part in _split_unescaped(text.lstrip("/") if sep == "/" else text, sep):
        key, eq, value = part.strip().partition("=")
        if not eq or not value.strip():
            raise ValueError(f"DN component {part.strip()!r} is not KEY=value")
        try:
            oid = _DN_KEYWORDS.get(key.strip().upper()) or ObjectIdentifier(key.strip())
        except ValueError:
            raise ValueError(f"unknown DN attribute {key.strip()!r}") from None
        attributes.append(x509.NameAttribute(oid, value.strip()))
    return attributes


def classify_identity(expected: str) -> tuple[int, bytes]:
    """Classify a profile's remote.id like strongSwan: IP, @FQDN, email, DN, else FQDN.

    Returns the IKE ID type and the ID data (a DN as DER, in the order written).
    Raises ValueError for a DN that does not parse.
    """
    text = expected.strip()
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        kind = IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR
        return kind, addr.packed
    if text.startswith("@"):
        return IdType.FQDN, text.lstrip("@").encode()
    if "@" in text:
        return IdType.RFC822_ADDR, text.encode()
    if "=" in text:
        return IdType.DER_ASN1_DN, x509.Name(_parse_dn_string(text)).public_bytes()
    return IdType.FQDN, text.encode()


def check_identity(cert: x509.Certificate, expected: str) -> None:
    """Raise PeerNotTrusted unless the certificate carries the profile's remote.id."""
    try:
        id_type, id_data = classify_identity(expected)
    except ValueError:
        raise PeerNotTrusted(f"remote identity {expected!r} is not a valid DN") from None
    candidates = [id_data]
    if id_type == IdType.DER_ASN1_DN:
        # Also accept the DN written in RFC 4514 order (last RDN first).
        reverse = x509.Name(list(reversed(_parse_dn_string(expected.strip()))))
        candidates.append(reverse.public_bytes())
    matched = any(identity_matches(cert, id_type, data) for data in candidates)
    if not matched:
        raise PeerNotTrusted(f"the gateway's certificate does not carry the identity {expected!r}")


def certreq_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the DER SubjectPublicKeyInfo: the CA's entry in a CERTREQ payload."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha1(spki).digest()
