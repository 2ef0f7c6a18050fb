"""client/revocation.py: the policy of remote.revocation, the CRL cache and bounded HTTP."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from client import revocation
from client.ikev2.auth import revocation as rv
from client.ikev2.errors import PeerNotTrusted

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CRL_URL, OCSP_URL = "http://192.0.2.80/ca.crl", "http://192.0.2.80:8080/"


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("CA")).issuer_name(_name("CA"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=90))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    gw = (x509.CertificateBuilder().subject_name(_name("gw.example")).issuer_name(_name("CA"))
          .public_key(key.public_key()).serial_number(77)
          .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
          .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
              [x509.UniformResourceIdentifier(CRL_URL)], None, None, None)]), critical=False)
          .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
              AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(OCSP_URL))]),
              critical=False)
          .sign(ca_key, hashes.SHA256()))
    return ca, ca_key, gw


def _crl(pki, revoked, next_update):
    ca, ca_key, gw = pki
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
         .last_update(NOW - timedelta(hours=1)).next_update(next_update))
    if revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(
            gw.serial_number).revocation_date(NOW - timedelta(hours=1)).build())
    return b.sign(ca_key, hashes.SHA256()).public_bytes(Encoding.DER)


class FakeNet:
    """Answers fetches like the lab's HTTP server and OCSP responder would."""

    def __init__(self, pki, ocsp_status=None, crl=None):
        self.pki, self.ocsp_status, self.crl = pki, ocsp_status, crl
        self.fetched: list[str] = []

    async def __call__(self, url, body=None, mark=0):
        self.fetched.append(url)
        if url == OCSP_URL and body is not None:
            if self.ocsp_status is None:
                raise revocation.FetchError("connection refused")
            ca, ca_key, gw = self.pki
            req = ocsp.load_der_ocsp_request(body)
            nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            revoked = self.ocsp_status == ocsp.OCSPCertStatus.REVOKED
            b = (ocsp.OCSPResponseBuilder().add_response(
                cert=gw, issuer=ca, algorithm=hashes.SHA1(), cert_status=self.ocsp_status,
                this_update=NOW, next_update=NOW + timedelta(hours=1),
                revocation_time=NOW if revoked else None, revocation_reason=None)
                .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
                .add_extension(x509.OCSPNonce(nonce), critical=False))
            return b.sign(ca_key, hashes.SHA256()).public_bytes(Encoding.DER)
        if url == CRL_URL and self.crl is not None:
            return self.crl
        raise revocation.FetchError("connection refused")


def _check(pki, net, tmp_path, clock=lambda: NOW, **settings):
    ca, _, gw = pki
    checker = revocation.Checker(settings, tmp_path, clock, fetch=net)
    return asyncio.run(checker.check([rv.Link(gw, ca)]))


def test_revoked_by_ocsp_is_refused_naming_the_subject(pki, tmp_path):
    net = FakeNet(pki, ocsp_status=ocsp.OCSPCertStatus.REVOKED)
    with pytest.raises(rv.CertificateRevoked, match="'CN=gw.example' was revoked"):
        _check(pki, net, tmp_path)


def test_revoked_by_crl_when_ocsp_is_down(pki, tmp_path):
    net = FakeNet(pki, crl=_crl(pki, True, NOW + timedelta(hours=1)))
    with pytest.raises(rv.CertificateRevoked):
        _check(pki, net, tmp_path)
    assert net.fetched == [OCSP_URL, CRL_URL]


def test_ocsp_off_uses_the_crl_only(pki, tmp_path):
    net = FakeNet(pki, ocsp_status=ocsp.OCSPCertStatus.GOOD,
                  crl=_crl(pki, False, NOW + timedelta(hours=1)))
    _check(pki, net, tmp_path, ocsp=False)
    assert net.fetched == [CRL_URL]


def test_unreachable_refuses_when_strict_and_warns_otherwise(pki, tmp_path, caplog):
    with pytest.raises(PeerNotTrusted, match="unknown.*strict"):
        _check(pki, FakeNet(pki), tmp_path, strict=True)
    with caplog.at_level(logging.WARNING, logger="client.revocation"):
        _check(pki, FakeNet(pki), tmp_path)
    assert "revocation status unknown" in caplog.text and "connection refused" in caplog.text


def test_crl_is_cached_until_next_update_then_fetched_again(pki, tmp_path):
    net = FakeNet(pki, crl=_crl(pki, False, NOW + timedelta(minutes=30)))
    _check(pki, net, tmp_path, ocsp=False)
    _check(pki, net, tmp_path, ocsp=False, clock=lambda: NOW + timedelta(minutes=10))
    assert net.fetched == [CRL_URL]  # the second connect used the cache
    assert list((tmp_path / revocation.CACHE_DIR).iterdir())
    # Past nextUpdate the cached CRL is stale: a new one (now revoking) is fetched.
    net.crl = _crl(pki, True, NOW + timedelta(hours=2))
    with pytest.raises(rv.CertificateRevoked):
        _check(pki, net, tmp_path, ocsp=False, clock=lambda: NOW + timedelta(minutes=31))
    assert net.fetched == [CRL_URL, CRL_URL]


def test_http_body_is_bounded_and_status_checked():
    assert revocation._body("u", b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nxyz") == b"xyz"
    with pytest.raises(revocation.FetchError, match="404"):
        revocation._body("u", b"HTTP/1.0 404 Not Found\r\n\r\n")
    with pytest.raises(revocation.FetchError, match="larger"):
        revocation._body("u", b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * (revocation.MAX_RESPONSE + 1))
    with pytest.raises(revocation.FetchError, match="malformed"):
        revocation._body("u", b"garbage")


def test_http_request_over_loopback_with_a_timeout():
    async def main():
        async def serve(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = await revocation.http_request(f"http://127.0.0.1:{port}/x.crl", mark=0)

        async def mute(reader, writer):
            await asyncio.sleep(5)

        silent = await asyncio.start_server(mute, "127.0.0.1", 0)
        sport = silent.sockets[0].getsockname()[1]
        with pytest.raises(revocation.FetchError, match="no answer"):
            await revocation.http_request(f"http://127.0.0.1:{sport}/", mark=0, timeout=0.2)
        server.close()
        silent.close()
        return got

    assert asyncio.run(main()) == b"ok"
