"""Revocation of the gateway's chain (RFC 5280 CRLs, RFC 6960 OCSP), sans-I/O.

Everything here works on bytes someone else fetched (client/revocation.py fetches and
caches) and a time passed in: building OCSP requests, checking CRL and OCSP signatures,
freshness and what they say about one certificate. A response that cannot be trusted
raises RevocationUnknown; only a verified statement yields REVOKED.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ..errors import PeerNotTrusted
from .der import BIT_STRING, SEQUENCE, DerError, read_all, read_one

# A chain longer than this is not checked further (certs.py allows 8 as well).
MAX_CHAIN = 8
# URLs per certificate and kind: a certificate listing hundreds would make us fetch them.
MAX_URLS = 4
# Clock skew tolerated on thisUpdate/producedAt (the responder's clock is ahead of ours).
CLOCK_SKEW = timedelta(minutes=5)
# An OCSP response without nextUpdate (RFC 6960 2.4: "newer information is always
# available") is used only this long after thisUpdate, and cached no longer either.
OCSP_NO_NEXT_UPDATE = timedelta(minutes=5)
NONCE_LEN = 16  # RFC 8954: 1 to 32 octets; 16 as OpenSSL's responder expects


class Status(Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class RevocationUnknown(Exception):
    """No trustworthy answer: a response that does not verify, is stale or says unknown."""


class CertificateRevoked(PeerNotTrusted):
    """A certificate of the gateway's chain was revoked (exit code 4 like any distrust)."""


@dataclass(frozen=True)
class Link:
    """One certificate of the gateway's chain and the certificate that issued it."""

    cert: x509.Certificate
    issuer: x509.Certificate

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def chain_links(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                anchors: list[x509.Certificate]) -> list[Link]:
    """The path from the (already validated) leaf up to its trust anchor, as links.

    The anchor itself is trusted as configured and not checked (RFC 5280 6.1)."""
    links: list[Link] = []
    cert = leaf
    pool = intermediates + anchors
    anchor_keys = {a.public_bytes(Encoding.DER) for a in anchors}
    for _ in range(MAX_CHAIN):
        if cert.public_bytes(Encoding.DER) in anchor_keys:
            break
        issuer = next((c for c in pool if c is not cert and _issued_by(cert, c)), None)
        if issuer is None:
            break
        links.append(Link(cert, issuer))
        cert = issuer
    return links


def _urls(values: list[str]) -> list[str]:
    return [u for u in values if u.lower().startswith("http://")][:MAX_URLS]


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The certificate's HTTP CRL distribution points (RFC 5280 4.2.1.13)."""
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    names = [n.value for dp in cdp if dp.full_name for n in dp.full_name
             if isinstance(n, x509.UniformResourceIdentifier)]
    return _urls(names)


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The certificate's OCSP responders from its AIA (RFC 5280 4.2.2.1)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    names = [d.access_location.value for d in aia
             if d.access_method == AuthorityInformationAccessOID.OCSP
             and isinstance(d.access_location, x509.UniformResourceIdentifier)]
    return _urls(names)


# -- CRLs -----------------------------------------------------------------------------
def load_crl(data: bytes, issuer: x509.Certificate,
             now: datetime) -> x509.CertificateRevocationList:
    """A CRL (DER or PEM) of `issuer`, its signature and freshness checked."""
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
        if crl.issuer != issuer.subject:
            raise RevocationUnknown("the CRL is not of the certificate's issuer")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise RevocationUnknown("the CRL's signature does not verify")
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise RevocationUnknown(f"unusable CRL: {exc}") from None
    now = _utc(now)
    if this_update > now + CLOCK_SKEW:
        raise RevocationUnknown("the CRL's thisUpdate is in the future")
    if next_update is None or next_update <= now:
        raise RevocationUnknown("the CRL is out of date (nextUpdate passed)")
    return crl


def crl_status(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> Status:
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    return Status.GOOD if entry is None else Status.REVOKED


# -- OCSP -----------------------------------------------------------------------------
def ocsp_request(link: Link, nonce: bytes) -> bytes:
    """A DER OCSP request for one certificate, with our nonce (RFC 8954)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(link.cert, link.issuer, hashes.SHA1())
    builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _verify_signature(key: object, signature: bytes, data: bytes,
                      hash_alg: hashes.HashAlgorithm | None) -> None:
    if isinstance(key, rsa.RSAPublicKey) and hash_alg is not None:
        key.verify(signature, data, padding.PKCS1v15(), hash_alg)
    elif isinstance(key, ec.EllipticCurvePublicKey) and hash_alg is not None:
        key.verify(signature, data, ec.ECDSA(hash_alg))
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    else:
        raise UnsupportedAlgorithm("unsupported OCSP signature algorithm")


def _responder(resp: ocsp.OCSPResponse, issuer: x509.Certificate,
               now: datetime) -> x509.Certificate:
    """The certificate that signed the response: the CA itself, or a responder the CA
    delegated with id-kp-OCSPSigning (RFC 6960 4.2.2.2)."""
    def is_signer(c: x509.Certificate) -> bool:
        if resp.responder_name is not None:
            return c.subject == resp.responder_name
        return _digest(hashes.SHA1(), _spki_bits(c)) == resp.responder_key_hash

    if is_signer(issuer):
        return issuer
    for cert in resp.certificates:
        if not is_signer(cert):
            continue
        if not _issued_by(cert, issuer):
            raise RevocationUnknown("the OCSP responder's certificate is not from the CA")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = []
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise RevocationUnknown("the OCSP responder is not authorised (no OCSPSigning)")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise RevocationUnknown("the OCSP responder's certificate is not valid now")
        return cert
    raise RevocationUnknown("the OCSP response is signed by an unknown responder")


def ocsp_status(data: bytes, link: Link, nonce: bytes | None,
                now: datetime) -> tuple[Status, datetime]:
    """What a DER OCSP response says of link.cert, and until when that holds.

    `nonce` is what our request carried; None for a response the gateway stapled in
    IKE (RFC 4806), which is fresh only by its times. RevocationUnknown unless the
    response is signed by the CA or its delegate, current and about this certificate.
    """
    now = _utc(now)
    try:
        resp = ocsp.load_der_ocsp_response(data)
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise RevocationUnknown(f"the OCSP responder answered {resp.response_status.name}")
        signer = _responder(resp, link.issuer, now)
        _verify_signature(signer.public_key(), resp.signature, resp.tbs_response_bytes,
                          resp.signature_hash_algorithm)
        if nonce is not None:
            try:
                got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                raise RevocationUnknown("the OCSP response has no nonce") from None
            if got != nonce:
                raise RevocationUnknown("the OCSP response's nonce is not ours")
        single = _single_for(resp, link)
        this_update, next_update = single.this_update_utc, single.next_update_utc
        status = single.certificate_status
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        detail = str(exc) or type(exc).__name__
        raise RevocationUnknown(f"unusable OCSP response: {detail}") from None
    if this_update > now + CLOCK_SKEW:
        raise RevocationUnknown("the OCSP response's thisUpdate is in the future")
    until = next_update or this_update + OCSP_NO_NEXT_UPDATE
    if until <= now:
        raise RevocationUnknown("the OCSP response is out of date (nextUpdate passed)")
    if status == ocsp.OCSPCertStatus.REVOKED:
        return Status.REVOKED, until
    if status == ocsp.OCSPCertStatus.GOOD:
        return Status.GOOD, until
    raise RevocationUnknown("the OCSP responder does not know the certificate")


def _single_for(resp: ocsp.OCSPResponse, link: Link) -> ocsp.OCSPSingleResponse:
    for single in resp.responses:
        if single.serial_number != link.cert.serial_number:
            continue
        algorithm = single.hash_algorithm
        if single.issuer_name_hash == _digest(algorithm, link.issuer.subject.public_bytes()) \
                and single.issuer_key_hash == _digest(algorithm, _spki_bits(link.issuer)):
            return single
    raise RevocationUnknown("the OCSP response is not about the certificate")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(type(algorithm)())
    h.update(data)
    return h.finalize()


def _spki_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value (RFC 6960 KeyHash)."""
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    try:
        (_, _alg), (tag, bits) = read_all(read_one(spki, SEQUENCE))
    except (DerError, ValueError):
        raise RevocationUnknown("unparsable public key") from None
    if tag != BIT_STRING or not bits:
        raise RevocationUnknown("unparsable public key")
    return bits[1:]  # without the unused-bits octet
