"""Gateway certificate checks: chain to a trust anchor, identity, CERTREQ hashes.

Sans-I/O: trust anchors come in as parsed certificates (keys.load_system_trust_store
reads the system bundle), the time as an argument.
"""

import hashlib
import ipaddress
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from client.ikev2.auth.policy import STRICT, CryptoPolicy
from client.ikev2.constants import IdType
from client.ikev2.errors import PeerNotTrusted
from client.ikev2.identity import classify_identity, dn_from_der, same_dn

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
    policy: CryptoPolicy = STRICT,
) -> x509.Certificate:
    """Validate the gateway's certificate (and the intermediates it sent) at `when`.

    `trust_anchors` are the profile's CA certificates; None means the system store,
    which the caller loads (keys.load_system_trust_store) and passes instead. A leaf
    that is itself one of the anchors (a pinned self-signed gateway certificate) is
    accepted if it is within its validity period. The crypto `policy` (auth/policy.py)
    refuses weak keys, SHA-1 and a CA or non-signing leaf. Returns the parsed leaf.
    """
    if trust_anchors is None:
        raise ValueError("trust anchors required: pass keys.load_system_trust_store()")
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        intermediates = [x509.load_der_x509_certificate(d) for d in intermediates_der]
    except Exception as exc:  # the gateway's bytes: ValueError, but also InvalidVersion, ...
        raise _untrusted(f"malformed certificate ({type(exc).__name__}: {exc})") from None
    if not trust_anchors:
        raise _untrusted("no trust anchor configured")
    now = _utc(when)

    if any(anchor.public_bytes(serialization.Encoding.DER) == leaf_der for anchor in trust_anchors):
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise _untrusted("the pinned gateway certificate is not valid at this time")
        policy.check_pinned(leaf)
        return leaf
    policy.check_gateway_cert(leaf)  # before path validation, which refuses SHA-1 vaguely

    verifier = (
        PolicyBuilder()
        .store(Store(trust_anchors))
        .time(now)
        .max_chain_depth(_MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_ca_policy(), ee_policy=_ee_policy())
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        if "Forbidden signature algorithm" in str(exc):
            for cert in intermediates:  # name the rule and the certificate if we can
                policy.check_signed_with(cert)
        raise _untrusted(str(exc)) from None
    policy.check_verified_chain(list(verified.chain))
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
            return same_dn(dn_from_der(id_data), cert.subject)
        except ValueError:
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


def check_identity(cert: x509.Certificate, expected: str) -> None:
    """Raise PeerNotTrusted unless the certificate carries the profile's remote.id."""
    try:
        id_type, id_data = classify_identity(expected)
    except ValueError as exc:
        raise PeerNotTrusted(f"remote identity {expected!r} is not valid: {exc}") from None
    candidates = [id_data]
    if id_type == IdType.DER_ASN1_DN:
        # Also accept the DN written in RFC 4514 order (last RDN first).
        reverse = x509.Name(list(reversed(dn_from_der(id_data).rdns)))
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
