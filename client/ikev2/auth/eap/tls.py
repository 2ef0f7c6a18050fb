"""EAP-TLS, peer side: RFC 5216 (TLS 1.2) and RFC 9190 (TLS 1.3).

Sans-I/O: the TLS client is OpenSSL (pyOpenSSL) over memory BIOs, so TLS records go in
and out as bytes and nothing touches a socket. pyOpenSSL rather than the stdlib `ssl`
because the MSK needs the TLS keying material exporter, which `ssl` does not offer.
OpenSSL draws its own randomness; the injectable rng of the IKE engine does not reach it.

EAP-TLS Type-Data (after the Type octet): Flags (L M S R R R R R), a 4-octet TLS
Message Length when L is set, then TLS data. A message larger than one EAP packet is
sent in fragments (M set on all but the last, L on the first); each fragment is
acknowledged by an EAP-TLS packet without data.

The gateway's certificate is checked by the same rules as its IKE certificate
(auth/certs.py: a chain to the profile's CA, remote.id as a SAN) before our next TLS
flight leaves, so an untrusted gateway never sees our certificate or Finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from client.ikev2.auth import certs
from client.ikev2.auth.policy import STRICT, CryptoPolicy
from client.ikev2.errors import PeerNotTrusted, RemoteProtocolError

log = logging.getLogger(__name__)

FLAG_LENGTH = 0x80  # L: the TLS Message Length field is present
FLAG_MORE = 0x40  # M: more fragments follow
FLAG_START = 0x20  # S: EAP-TLS start (from the server only)

EAP_HEADER_LEN = 5  # Code, Identifier, Length, Type
# Our EAP-Responses, headers included: with the IKE, UDP and IP headers an IKE_AUTH
# request carrying one stays well below the 1280 octets every IPv6 path takes.
MAX_EAP_PACKET = 1000
# The gateway's TLS flight (certificate chain included) after reassembly; strongSwan's
# own limit is 4 * (16384 + 2048).
MAX_TLS_MESSAGE = 64 * 1024
# EAP-TLS requests in one conversation: a full handshake with a large chain in 1 KiB
# fragments takes a few dozen; more means a gateway that does not stop.
MAX_REQUESTS = 128

ACK = bytes((0,))  # an EAP-TLS packet without flags or data

# RFC 5216 2.3 (TLS 1.2 PRF) and RFC 9190 2.3 (TLS 1.3 exporter, context = Type 13).
LABEL_RFC5216 = b"client EAP encryption"
LABEL_RFC9190 = b"EXPORTER_EAP_TLS_Key_Material"
CONTEXT_RFC9190 = bytes((13,))
MSK_LEN = 64
KEY_MATERIAL_LEN = 128  # MSK and EMSK; the length enters the TLS 1.3 derivation

# TLS alerts that say the gateway refused our certificate (RFC 8446 6.2).
_CERT_ALERTS = {
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 48: "unknown_ca",
    49: "access_denied", 116: "certificate_required",
}
_ALERT_FATAL = 2


@dataclass(frozen=True)
class TlsCredentials:
    """Our certificate and key, and how to judge the gateway's certificate."""

    private_key: Any = field(repr=False)
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    trust_anchors: list[x509.Certificate] | None
    remote_id: str
    wall_clock: Callable[[], datetime]
    policy: CryptoPolicy = STRICT  # the gateway's TLS certificate obeys it too


class Frame(NamedTuple):
    flags: int
    total: int | None  # the TLS Message Length, when L is set
    data: bytes


def parse_frame(type_data: bytes) -> Frame:
    """One EAP-TLS Type-Data field; raises RemoteProtocolError when malformed."""
    if not type_data:
        raise RemoteProtocolError("EAP-TLS: packet without Flags")
    flags = type_data[0]
    if not flags & FLAG_LENGTH:
        return Frame(flags, None, bytes(type_data[1:]))
    if len(type_data) < 5:
        raise RemoteProtocolError("EAP-TLS: L flag set but no TLS Message Length")
    total = int.from_bytes(type_data[1:5], "big")
    data = bytes(type_data[5:])
    if total > MAX_TLS_MESSAGE:
        raise RemoteProtocolError(
            f"EAP-TLS: TLS Message Length {total} exceeds the limit of {MAX_TLS_MESSAGE}"
        )
    if total < len(data):
        raise RemoteProtocolError(
            f"EAP-TLS: TLS Message Length {total} is less than the {len(data)} octets sent"
        )
    return Frame(flags, total, data)


def fragment(message: bytes, max_packet: int = MAX_EAP_PACKET) -> list[bytes]:
    """Type-Data of the EAP-TLS packets that carry `message`, each within `max_packet`."""
    room = max_packet - EAP_HEADER_LEN - 1  # the Flags octet
    if len(message) <= room:
        return [bytes((0,)) + message]
    first_room = room - 4  # the first fragment carries the TLS Message Length
    out = [bytes((FLAG_LENGTH | FLAG_MORE,)) + len(message).to_bytes(4, "big")
           + message[:first_room]]
    pos = first_room
    while pos < len(message):
        chunk = message[pos : pos + room]
        pos += len(chunk)
        out.append(bytes((FLAG_MORE if pos < len(message) else 0,)) + chunk)
    return out


class Reassembler:
    """Collects the gateway's fragments of one TLS message, within MAX_TLS_MESSAGE."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._total: int | None = None

    @property
    def in_progress(self) -> bool:
        return self._total is not None

    def add(self, frame: Frame) -> bytes | None:
        """The complete message, or None while more fragments are due."""
        more = bool(frame.flags & FLAG_MORE)
        if self._total is None:
            if more and frame.total is None:
                raise RemoteProtocolError(
                    "EAP-TLS: first fragment without the L flag (TLS Message Length)"
                )
            if frame.total is None:
                return frame.data
            self._total = frame.total
        elif frame.total is not None and frame.total != self._total:
            raise RemoteProtocolError(
                f"EAP-TLS: TLS Message Length changed from {self._total} to {frame.total}"
            )
        if more and not frame.data:
            raise RemoteProtocolError("EAP-TLS: empty fragment with the M flag")
        self._size += len(frame.data)
        if self._size > self._total:
            raise RemoteProtocolError(
                f"EAP-TLS: fragments carry more than the announced {self._total} octets"
            )
        self._parts.append(frame.data)
        if more:
            return None
        if self._size != self._total:
            raise RemoteProtocolError(
                f"EAP-TLS: last fragment leaves the message at {self._size} of "
                f"{self._total} octets"
            )
        message = b"".join(self._parts)
        self._parts, self._size, self._total = [], 0, None
        return message


class EapTlsPeer:
    """Answers the gateway's EAP-TLS requests (Type-Data in, Type-Data out).

    `done` turns True when the TLS handshake is complete on our side; then `msk` holds
    the 64-octet MSK. `failure` says why the gateway refused us (its TLS alert), for the
    EAP-Failure that follows.
    """

    def __init__(self, creds: TlsCredentials, max_packet: int = MAX_EAP_PACKET) -> None:
        self._creds = creds
        self._max_packet = max_packet
        self._state = "start"  # start -> handshake -> finished
        self._requests = 0
        self._reassembler = Reassembler()
        self._outgoing: list[bytes] = []
        self._conn: SSL.Connection | None = None
        self._peer_checked = False
        self._indication = False  # RFC 9190 protected success indication received
        self._msk: bytes | None = None
        self._alert: tuple[int, int] | None = None
        self.done = False
        self.failure: str | None = None
        self.version = ""

    # -- the EAP-TLS layer -----------------------------------------------------------
    def handle(self, type_data: bytes) -> bytes:
        self._requests += 1
        if self._requests > MAX_REQUESTS:
            raise RemoteProtocolError(f"EAP-TLS: more than {MAX_REQUESTS} requests")
        frame = parse_frame(type_data)
        if frame.flags & FLAG_START:
            if self._state != "start":
                raise RemoteProtocolError("EAP-TLS: Start in the middle of the conversation")
            if frame.flags & (FLAG_LENGTH | FLAG_MORE) or frame.data:
                raise RemoteProtocolError("EAP-TLS: Start packet with TLS data")
            self._state = "handshake"
            self._conn = self._new_connection()
            self._run_handshake()
            return self._reply()
        if self._state == "start":
            raise RemoteProtocolError("EAP-TLS: request before the Start packet")
        if self._state == "finished":
            raise RemoteProtocolError("EAP-TLS: request after the gateway ended TLS")
        if self._outgoing:
            # The gateway is receiving our fragments: all it may send is an acknowledgement.
            if frame.flags & (FLAG_LENGTH | FLAG_MORE) or frame.data:
                raise RemoteProtocolError(
                    "EAP-TLS: data from the gateway while our fragments are outstanding"
                )
            return self._outgoing.pop(0)
        if not frame.data and not frame.flags & (FLAG_LENGTH | FLAG_MORE):
            if self._reassembler.in_progress:
                raise RemoteProtocolError("EAP-TLS: empty packet in the middle of a fragment run")
            raise RemoteProtocolError("EAP-TLS: acknowledgement with no fragment to acknowledge")
        message = self._reassembler.add(frame)
        if message is None:
            return ACK
        if not message:
            raise RemoteProtocolError("EAP-TLS: TLS Message Length 0")
        self._feed(message)
        return self._reply()

    def _reply(self) -> bytes:
        assert self._conn is not None
        out = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        if not out:
            return ACK
        frames = fragment(out, self._max_packet)
        self._outgoing = frames[1:]
        if self._outgoing:
            log.debug("EAP-TLS: %d octets of TLS data in %d fragments", len(out), len(frames))
        return frames[0]

    # -- TLS -------------------------------------------------------------------------
    def _new_connection(self) -> SSL.Connection:
        c = self._creds
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
        # OpenSSL checks the handshake signatures; the chain and identity are ours to
        # check (_check_gateway), by the rules of the IKE certificate.
        ctx.set_verify(SSL.VERIFY_NONE)
        # strongSwan's TLS 1.2 server (5.9.8) lacks RFC 5746 renegotiation_info, which
        # OpenSSL 3 refuses by default. That protection only matters where a connection
        # is renegotiated; ours refuses renegotiation, so a legacy server is harmless.
        ctx.set_options(
            SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_LEGACY_SERVER_CONNECT
        )
        ctx.use_certificate(c.certificate)
        ctx.use_privatekey(c.private_key)
        for extra in c.chain:
            if not _self_issued(extra):  # the gateway has the root; save the octets
                ctx.add_extra_chain_cert(extra)
        ctx.check_privatekey()
        ctx.set_info_callback(self._on_info)
        conn = SSL.Connection(ctx, None)  # None: memory BIOs
        conn.set_connect_state()
        return conn

    def _on_info(self, _conn: SSL.Connection, where: int, ret: int) -> None:
        # The alert bit with the read bit: an alert from the gateway, not one of ours.
        if where & SSL.SSL_CB_READ_ALERT == SSL.SSL_CB_READ_ALERT and self._alert is None:
            self._alert = (ret >> 8, ret & 0xFF)

    def _feed(self, message: bytes) -> None:
        assert self._conn is not None
        self._conn.bio_write(message)
        if not self.done:
            self._run_handshake()
        else:
            self._read_application_data()

    def _run_handshake(self) -> None:
        assert self._conn is not None
        try:
            self._conn.do_handshake()
            complete = True
        except SSL.WantReadError:
            complete = False
        except SSL.Error as exc:
            self._tls_failed(exc)
            return
        if self._conn.get_peer_cert_chain() is not None or complete:
            self._check_gateway()
        if complete:
            self.version = self._conn.get_protocol_version_name()
            log.info("EAP-TLS: %s handshake complete (%s)", self.version,
                     self._conn.get_cipher_name())
            self.done = True

    def _read_application_data(self) -> None:
        """After the handshake: TLS 1.3's protected success indication (RFC 9190 2.5)."""
        assert self._conn is not None
        try:
            data = self._conn.recv(16)
        except SSL.WantReadError:
            return  # e.g. a NewSessionTicket only: acknowledged like any TLS data
        except SSL.ZeroReturnError:
            raise RemoteProtocolError("EAP-TLS: the gateway closed the TLS connection") from None
        except SSL.Error as exc:
            self._tls_failed(exc)
            return
        if self._conn.get_protocol_version() < SSL.TLS1_3_VERSION:
            raise RemoteProtocolError("EAP-TLS: application data over TLS 1.2")
        if data != b"\x00" or self._indication:
            raise RemoteProtocolError(
                f"EAP-TLS: expected the one-octet success indication, got {len(data)} octets"
            )
        log.debug("EAP-TLS: protected success indication received")
        self._indication = True

    def _tls_failed(self, exc: SSL.Error) -> None:
        alert = self._alert
        if alert is not None and alert[0] == _ALERT_FATAL and alert[1] in _CERT_ALERTS:
            # RFC 5216 2.1.3: acknowledge the alert; EAP-Failure follows (exit code 3).
            name = _CERT_ALERTS[alert[1]]
            self.failure = f"the gateway refused our certificate (TLS alert {name})"
            log.warning("EAP-TLS: %s", self.failure)
            self._state = "finished"
            self.done = False
            self._discard_output()
            return
        if alert is not None:
            raise RemoteProtocolError(f"EAP-TLS: the gateway sent TLS alert {alert[1]}")
        raise RemoteProtocolError(f"EAP-TLS: TLS handshake failed: {_reason(exc)}")

    def _discard_output(self) -> None:
        assert self._conn is not None
        try:
            self._conn.bio_read(65536)
        except SSL.Error:
            pass

    def _check_gateway(self) -> None:
        if self._peer_checked:
            return
        assert self._conn is not None
        c = self._creds
        chain = self._conn.get_peer_cert_chain(as_cryptography=True)
        if not chain:
            raise PeerNotTrusted("EAP-TLS: the gateway sent no TLS certificate")
        if c.trust_anchors is None:
            raise PeerNotTrusted("EAP-TLS: no trust anchors to check the gateway against")
        leaf = certs.validate_chain(
            chain[0].public_bytes(Encoding.DER),
            [cert.public_bytes(Encoding.DER) for cert in chain[1:]],
            c.trust_anchors, c.wall_clock(), c.policy,
        )
        certs.check_identity(leaf, c.remote_id)
        self._peer_checked = True
        log.info("EAP-TLS: gateway certificate %s verified", leaf.subject.rfc4514_string())

    # -- keys ------------------------------------------------------------------------
    @property
    def msk(self) -> bytes | None:
        if not self.done or self.failure is not None:
            return None
        if self._msk is None:
            self._msk = self._derive_msk()
        return self._msk

    def _derive_msk(self) -> bytes:
        assert self._conn is not None
        export = self._conn.export_keying_material
        if self._conn.get_protocol_version() < SSL.TLS1_3_VERSION:
            # RFC 5216 2.3: TLS-PRF(master secret, label, client.random || server.random)
            return export(LABEL_RFC5216, MSK_LEN)
        if self._indication:
            return export(LABEL_RFC9190, KEY_MATERIAL_LEN, CONTEXT_RFC9190)[:MSK_LEN]
        # No protected success indication: a server from before RFC 9190 (strongSwan up
        # to 5.9.9), which exports with the RFC 5216 label and an empty context.
        log.info("EAP-TLS: no protected success indication; pre-RFC 9190 key derivation")
        return export(LABEL_RFC5216, KEY_MATERIAL_LEN, b"")[:MSK_LEN]


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one line (pyOpenSSL: a list of (lib, func, reason))."""
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(parts) or str(exc) or type(exc).__name__
