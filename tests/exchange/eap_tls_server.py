"""An EAP-TLS server (authenticator) for in-memory tests: OpenSSL over memory BIOs.

Independent of the client's state machine: it frames and fragments as RFC 5216 says
(sharing only the client's wire helpers for frames), asks for and checks the client's
certificate, and ends TLS 1.3 with RFC 9190's protected success indication, or, with
`indication=False`, the way strongSwan before 5.9.10 does (EAP-Success right after the
client's Finished; MSK with the RFC 5216 label).
"""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from client.ikev2.auth.eap.tls import (
    ACK,
    CONTEXT_RFC9190,
    FLAG_START,
    KEY_MATERIAL_LEN,
    LABEL_RFC5216,
    LABEL_RFC9190,
    MSK_LEN,
    Reassembler,
    fragment,
    parse_frame,
)

REQUEST, SUCCESS, FAILURE = "request", "success", "failure"


def make_cert(cn: str, issuer: tuple[x509.Certificate, Any] | None = None, *, ca: bool = False,
              san: x509.GeneralName | None = None, eku: x509.ObjectIdentifier | None = None,
              rsa_key: bool = False, now: datetime.datetime | None = None,
              ) -> tuple[x509.Certificate, Any]:
    """A CA (ca=True) or an end-entity certificate with one SAN and one EKU, and its key."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = (rsa.generate_private_key(65537, 2048) if rsa_key
           else ec.generate_private_key(ec.SECP256R1()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                          False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        assert san is not None and eku is not None
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), False)
        b = b.add_extension(x509.SubjectAlternativeName([san]), False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), False)
    return b.sign(signer, hashes.SHA256()), key


class EapTlsServer:
    def __init__(
        self,
        cert: x509.Certificate,
        key: Any,
        client_ca: x509.Certificate,
        *,
        chain: list[x509.Certificate] = (),
        max_version: int = SSL.TLS1_3_VERSION,
        indication: bool = True,
        max_packet: int = 1000,
    ) -> None:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_max_proto_version(max_version)
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        for extra in chain:
            ctx.add_extra_chain_cert(extra)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                       lambda _c, _x, _e, _d, ok: bool(ok))
        ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(client_ca))
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_accept_state()
        self.indication = indication
        self.max_packet = max_packet
        self.reassembler = Reassembler()
        self.outgoing: list[bytes] = []
        self.state = "handshake"  # -> finished (awaiting the client's ACK) -> success/failed
        self.requests_sent = 1  # the Start
        self.msk: bytes | None = None

    def start(self) -> bytes:
        return bytes((FLAG_START,))

    def handle(self, type_data: bytes) -> tuple[str, bytes]:
        """The client's EAP-TLS Type-Data -> (REQUEST, our Type-Data) | (SUCCESS|FAILURE, b"")."""
        frame = parse_frame(type_data)
        if self.outgoing:
            assert frame.data == b"" and frame.flags == 0, "client did not acknowledge"
            return self._send(self.outgoing.pop(0))
        if self.state in ("finished", "failed"):
            assert frame.data == b"" and frame.flags == 0, "expected the final ACK"
            return (SUCCESS, b"") if self.state == "finished" else (FAILURE, b"")
        message = self.reassembler.add(frame)
        if message is None:
            return self._send(ACK)
        self.conn.bio_write(message)
        try:
            self.conn.do_handshake()
            complete = True
        except SSL.WantReadError:
            complete = False
        except SSL.Error:
            self.state = "failed"  # the alert OpenSSL wrote goes to the client
            return self._flush()
        if not complete:
            return self._flush()
        tls13 = self.conn.get_protocol_version() >= SSL.TLS1_3_VERSION
        if tls13 and not self.indication:
            self._derive_msk()
            self._drain()  # no session tickets either, as strongSwan
            return SUCCESS, b""
        if tls13:
            self.conn.send(b"\x00")
        self._derive_msk()
        self.state = "finished"
        return self._flush()

    def _derive_msk(self) -> None:
        export = self.conn.export_keying_material
        if self.conn.get_protocol_version() < SSL.TLS1_3_VERSION:
            self.msk = export(LABEL_RFC5216, MSK_LEN)
        elif self.indication:
            self.msk = export(LABEL_RFC9190, KEY_MATERIAL_LEN, CONTEXT_RFC9190)[:MSK_LEN]
        else:
            self.msk = export(LABEL_RFC5216, KEY_MATERIAL_LEN, b"")[:MSK_LEN]

    def _drain(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.conn.bio_read(65536)
            except SSL.WantReadError:
                return out
            if not chunk:
                return out
            out += chunk

    def _flush(self) -> tuple[str, bytes]:
        out = self._drain()
        if not out:
            return self._send(ACK)
        frames = fragment(out, self.max_packet)
        self.outgoing = frames[1:]
        return self._send(frames[0])

    def _send(self, type_data: bytes) -> tuple[str, bytes]:
        self.requests_sent += 1
        return REQUEST, type_data
