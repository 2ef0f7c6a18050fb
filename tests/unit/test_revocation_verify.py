"""CRL and OCSP verification (client/ikev2/auth/revocation.py) with in-memory PKI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client.ikev2.auth import revocation as rv

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NONCE = b"n" * rv.NONCE_LEN


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn, key, issuer_cn, issuer_key, ca=False, eku=None, serial=None):
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn))
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("CA", ca_key, "CA", ca_key, ca=True)
    gw_key = ec.generate_private_key(ec.SECP256R1())
    gw = _cert("gw.example", gw_key, "CA", ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    return {"ca": ca, "ca_key": ca_key, "gw": gw, "other_key": other_key}


def _crl(pki, revoked=(), key=None, next_update=NOW + timedelta(hours=1)):
    b = (x509.CertificateRevocationListBuilder().issuer_name(_name("CA"))
         .last_update(NOW - timedelta(hours=1)).next_update(next_update))
    for serial in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(NOW - timedelta(hours=2)).build())
    return b.sign(key or pki["ca_key"], hashes.SHA256()).public_bytes(Encoding.DER)


def _ocsp(pki, status=ocsp.OCSPCertStatus.GOOD, nonce=NONCE, key=None, responder=None,
          next_update=NOW + timedelta(hours=1)):
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=pki["gw"], issuer=pki["ca"], algorithm=hashes.SHA1(), cert_status=status,
        this_update=NOW - timedelta(minutes=1), next_update=next_update,
        revocation_time=NOW - timedelta(hours=1) if status == ocsp.OCSPCertStatus.REVOKED
        else None, revocation_reason=None)
    b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, responder or pki["ca"])
    if responder is not None:
        b = b.certificates([responder])
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.sign(key or pki["ca_key"], hashes.SHA256()).public_bytes(Encoding.DER)


def _link(pki):
    return rv.Link(pki["gw"], pki["ca"])


def test_chain_links_stop_at_the_anchor(pki):
    links = rv.chain_links(pki["gw"], [], [pki["ca"]])
    assert [lk.cert for lk in links] == [pki["gw"]] and links[0].issuer == pki["ca"]


def test_crl_good_and_revoked(pki):
    crl = rv.load_crl(_crl(pki), pki["ca"], NOW)
    assert rv.crl_status(crl, pki["gw"]) is rv.Status.GOOD
    crl = rv.load_crl(_crl(pki, revoked=[pki["gw"].serial_number]), pki["ca"], NOW)
    assert rv.crl_status(crl, pki["gw"]) is rv.Status.REVOKED


def test_crl_with_a_bad_signature_is_refused(pki):
    data = _crl(pki, revoked=[pki["gw"].serial_number], key=pki["other_key"])
    with pytest.raises(rv.RevocationUnknown, match="signature"):
        rv.load_crl(data, pki["ca"], NOW)


def test_crl_past_next_update_is_refused(pki):
    with pytest.raises(rv.RevocationUnknown, match="out of date"):
        rv.load_crl(_crl(pki, next_update=NOW - timedelta(minutes=1)), pki["ca"], NOW)


def test_garbage_crl_is_unknown(pki):
    with pytest.raises(rv.RevocationUnknown):
        rv.load_crl(b"\x30\x03\x02\x01\x00", pki["ca"], NOW)


def test_ocsp_good_and_revoked(pki):
    status, until = rv.ocsp_status(_ocsp(pki), _link(pki), NONCE, NOW)
    assert status is rv.Status.GOOD and until == NOW + timedelta(hours=1)
    status, _ = rv.ocsp_status(_ocsp(pki, ocsp.OCSPCertStatus.REVOKED), _link(pki), NONCE, NOW)
    assert status is rv.Status.REVOKED


def test_ocsp_request_carries_the_nonce(pki):
    req = ocsp.load_der_ocsp_request(rv.ocsp_request(_link(pki), NONCE))
    assert req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    assert req.serial_number == pki["gw"].serial_number


def test_ocsp_wrong_nonce_is_refused(pki):
    with pytest.raises(rv.RevocationUnknown, match="nonce"):
        rv.ocsp_status(_ocsp(pki, nonce=b"x" * 16), _link(pki), NONCE, NOW)


def test_ocsp_missing_nonce_is_refused_but_stapled_needs_none(pki):
    with pytest.raises(rv.RevocationUnknown, match="nonce"):
        rv.ocsp_status(_ocsp(pki, nonce=None), _link(pki), NONCE, NOW)
    status, _ = rv.ocsp_status(_ocsp(pki, nonce=None), _link(pki), None, NOW)
    assert status is rv.Status.GOOD


def test_ocsp_bad_signature_is_refused(pki):
    # A "good" whose signature was tampered with (its last octet is the signature's).
    data = bytearray(_ocsp(pki))
    data[-1] ^= 1
    with pytest.raises(rv.RevocationUnknown, match="InvalidSignature"):
        rv.ocsp_status(bytes(data), _link(pki), NONCE, NOW)


def test_ocsp_expired_response_is_refused(pki):
    data = _ocsp(pki, next_update=NOW - timedelta(seconds=1))
    with pytest.raises(rv.RevocationUnknown, match="out of date"):
        rv.ocsp_status(data, _link(pki), NONCE, NOW)


def test_ocsp_delegated_responder_needs_ocsp_signing(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    good = _cert("ocsp", key, "CA", pki["ca_key"], eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    status, _ = rv.ocsp_status(_ocsp(pki, key=key, responder=good), _link(pki), NONCE, NOW)
    assert status is rv.Status.GOOD
    plain = _cert("ocsp", key, "CA", pki["ca_key"], eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(rv.RevocationUnknown, match="OCSPSigning"):
        rv.ocsp_status(_ocsp(pki, key=key, responder=plain), _link(pki), NONCE, NOW)
    # A self-made responder certificate (not from the CA) is refused too.
    rogue = _cert("ocsp", key, "CA", key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    with pytest.raises(rv.RevocationUnknown, match="not from the CA"):
        rv.ocsp_status(_ocsp(pki, key=key, responder=rogue), _link(pki), NONCE, NOW)


def test_ocsp_garbage_is_unknown(pki):
    with pytest.raises(rv.RevocationUnknown):
        rv.ocsp_status(b"\x30\x00", _link(pki), NONCE, NOW)
