"""The IKE SA as a sans-I/O state machine (initiator side), after aioquic's connection.

    sa = IkeSA(config, local_addr, remote_addr)
    sa.initiate(now)
    ... send sa.datagrams_to_send(), feed replies to sa.receive(data, now),
    ... call sa.handle_timer(now) at sa.get_timer(), drain sa.next_event().

No sockets, no clock, no filesystem: the driver brings datagrams, time and randomness.
"""

from __future__ import annotations

import logging
import secrets
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from ipaddress import ip_network
from typing import Any

from cryptography import x509

from .constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    EapType,
    ExchangeType,
    NotifyType,
    ProtocolId,
)
from .errors import CryptoError, IkeError, RemoteProtocolError
from .events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaKeys,
    Event,
    IkeSaClosed,
    IkeSaEstablished,
    IpAddress,
    IpInterface,
    IpNetwork,
)
from .message import Message, SkContext, parse_header
from .payloads import DeletePayload, NotifyPayload
from .proposals import Proposal
from .task_manager import RetransmitPolicy, TaskManager
from .tasks.child_create import ChildCreate
from .tasks.ike_auth import IkeAuth
from .tasks.ike_config import IkeConfig as IkeConfigTask
from .tasks.ike_delete import IkeDelete
from .tasks.ike_init import IkeInit
from .tasks.ike_mobike import IkeMobike
from .tasks.ike_natd import IkeNatd

log = logging.getLogger(__name__)

# A disconnect must not hang on a gateway that is gone: about 2.4 s at most.
DELETE_POLICY = RetransmitPolicy(timeout=0.5, base=1.5, tries=2)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class IkeConfig:
    """What the engine needs to know to set up one IKE SA (built from a profile)."""

    ike_proposals: list[Proposal]
    esp_proposals: list[Proposal]
    local_id: str
    remote_id: str
    send_idr: bool  # only an identity the profile named explicitly (as strongSwan's clients)
    auth_method: str  # "psk", "pubkey" or "eap"
    psk: bytes | None = field(default=None, repr=False)
    private_key: Any = field(default=None, repr=False)
    certificate: x509.Certificate | None = None
    cert_chain: list[x509.Certificate] = field(default_factory=list)
    rsa_pss: bool = False
    eap_identity: str | None = None
    eap_password: str | None = field(default=None, repr=False)
    eap_methods: tuple[int, ...] = (EapType.MSCHAPV2, EapType.MD5_CHALLENGE)
    eap_only: bool = False  # allow RFC 5998 EAP-only: the gateway proves itself by mutual EAP
    trust_anchors: list[x509.Certificate] | None = None  # None: the system store
    send_certreq: bool = True  # CERTREQ for trust_anchors (never for the whole system store)
    request_ipv4: bool = True
    request_ipv6: bool = True
    remote_ts: list[IpNetwork] = field(
        default_factory=lambda: [ip_network("0.0.0.0/0"), ip_network("::/0")]
    )
    force_encap: bool = True
    mobike: bool = True
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)
    wall_clock: Callable[[], datetime] = _utcnow


class State(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    DELETING = "deleting"
    CLOSED = "closed"


class IkeSA:
    def __init__(
        self,
        config: IkeConfig,
        local_addr: tuple[str, int],
        remote_addr: tuple[str, int],
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.config = config
        self.rng = rng
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.state = State.IDLE
        self.spi_i = self._nonzero(8)
        self.spi_r = b"\0" * 8
        # Filled in by the tasks as the exchanges progress.
        self.ni = self.nr = b""
        self.prf: Any = None
        self.keys: Any = None
        self.sk: SkContext | None = None
        self.init_request = b""
        self.init_response = b""
        self.peer_hash_algorithms: set[int] | None = None
        self.nat_local = self.nat_remote = False
        self.peer_authenticated = False
        self.auth_done = False
        self.peer_mobike = False
        self.ike_proposal_name = ""
        self.esp_proposal_name = ""
        self.child: ChildSaKeys | None = None
        self.local_ts: list[IpNetwork] = []
        self.remote_ts: list[IpNetwork] = []
        self.virtual_ips: list[IpInterface] = []
        self.dns_servers: list[IpAddress] = []
        self.dns_domains: list[str] = []
        self.natt = False  # after IKE_SA_INIT everything goes to port 4500, UDP-encapsulated

        self._tasks = TaskManager(self)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._peer_next_id = 0
        self._last_response: tuple[int, bytes] | None = None

    # -- public API -----------------------------------------------------------------
    def initiate(self, now: float) -> None:
        if self.state is not State.IDLE:
            raise RuntimeError("initiate() called twice")
        self.state = State.CONNECTING
        self._run(lambda: self._start(now))

    def _start(self, now: float) -> None:
        self._tasks.queue_tasks([IkeInit(self), IkeNatd(self)])
        self._tasks.queue_tasks(
            [IkeAuth(self), IkeConfigTask(self), ChildCreate(self), IkeMobike(self)]
        )
        self._tasks.initiate(now)

    def delete(self, now: float) -> None:
        """Disconnect: Delete the IKE SA if it is up, or abandon the attempt."""
        if self.state is State.ESTABLISHED:
            self.state = State.DELETING
            self._tasks.abort()
            self._tasks.queue_tasks([IkeDelete(self)], DELETE_POLICY)
            self._run(lambda: self._tasks.initiate(now))
        elif self.state in (State.IDLE, State.CONNECTING):
            self._close("connection attempt cancelled")

    def receive(self, data: bytes, now: float) -> None:
        """Feed one IKE message (without the non-ESP marker) received from the gateway."""
        if self.state is State.CLOSED:
            return
        try:
            self._receive(data, now)
        except (RemoteProtocolError, CryptoError) as exc:
            # A malformed, forged or unexpected message is logged and dropped (RFC 7296
            # 2.21.1: a failed integrity check must not affect the SA), never fatal by itself.
            log.warning("dropped a message from the gateway: %s", exc)
        except IkeError as exc:
            self._fail(exc)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self._tasks.get_timer() if self.state is not State.CLOSED else None

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self._run(lambda: self._tasks.handle_timer(now))

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- helpers used by tasks ------------------------------------------------------
    def new_message(self, exchange: int, message_id: int, response: bool) -> Message:
        return Message(
            spi_i=self.spi_i, spi_r=self.spi_r, exchange=exchange, is_response=response,
            is_initiator=True, message_id=message_id, payloads=[],
            encrypted=exchange != ExchangeType.IKE_SA_INIT,
        )

    def send_message(self, msg: Message) -> bytes:
        packet = msg.encode(self.sk if msg.encrypted else None)
        if msg.exchange == ExchangeType.IKE_SA_INIT and not msg.is_response:
            self.init_request = packet
        log.info("sending %s (%d bytes)", msg.summary(), len(packet))
        self._out.append(packet)
        return packet

    def send_raw(self, packet: bytes) -> None:
        self._out.append(packet)

    def new_child_spi(self) -> int:
        while True:
            (spi,) = struct.unpack("!I", self.rng(4))
            if spi > 0xFF:  # 1-255 are reserved by IANA
                return spi

    # -- internals ------------------------------------------------------------------
    def _nonzero(self, n: int) -> bytes:
        while True:
            value = self.rng(n)
            if any(value):
                return value

    def _run(self, action: Callable[[], None]) -> None:
        try:
            action()
        except IkeError as exc:
            self._fail(exc)

    def _receive(self, data: bytes, now: float) -> None:
        header = parse_header(data)
        if header.spi_i != self.spi_i:
            raise RemoteProtocolError("message for an unknown IKE SA")
        if header.flags & FLAG_INITIATOR:
            raise RemoteProtocolError("message with the initiator flag set: we are the initiator")
        if header.flags & FLAG_RESPONSE:
            if not self._tasks.expects(header.message_id, header.exchange):
                raise RemoteProtocolError(
                    f"unexpected response {header.message_id} ({header.exchange})"
                )
            if header.exchange != ExchangeType.IKE_SA_INIT and header.spi_r != self.spi_r:
                raise RemoteProtocolError("response with the wrong responder SPI")
            msg = self._decode(data, header.exchange)
            log.info("received %s (%d bytes)", msg.summary(), len(data))
            # From here on the message is well-formed (and authentic, if protected):
            # a problem with its content ends the SA instead of being dropped.
            self._run(lambda: self._on_response(msg, now))
        else:
            self._on_request(data, header, now)

    def _decode(self, data: bytes, exchange: int) -> Message:
        sk = None if exchange == ExchangeType.IKE_SA_INIT else self.sk
        if exchange != ExchangeType.IKE_SA_INIT and sk is None:
            raise RemoteProtocolError("protected message before keys exist")
        msg = Message.decode(data, sk)
        if sk is not None and not msg.encrypted:
            raise RemoteProtocolError("unprotected message after IKE_SA_INIT")
        return msg

    def _on_response(self, msg: Message, now: float) -> None:
        exchange = msg.exchange
        finished = self._tasks.process_response(msg, now)
        if exchange == ExchangeType.IKE_SA_INIT and finished:
            self.natt = True
        if finished and exchange == ExchangeType.IKE_AUTH:
            self._established()
        elif finished and self.state is State.DELETING:
            self._close("disconnected on request")
            return
        self._tasks.initiate(now)

    def _established(self) -> None:
        if self.child is None:
            raise RemoteProtocolError("IKE_AUTH completed without a CHILD_SA")
        if not self.virtual_ips:
            raise RemoteProtocolError("the gateway assigned no virtual IP address")
        self.state = State.ESTABLISHED
        self._events.append(
            IkeSaEstablished(
                ike_proposal=self.ike_proposal_name,
                local_id=self.config.local_id,
                remote_id=self.config.remote_id,
                nat_local=self.nat_local,
                nat_remote=self.nat_remote,
                mobike=self.peer_mobike,
            )
        )
        self._events.append(
            ChildSaEstablished(
                keys=self.child, esp_proposal=self.esp_proposal_name,
                local_ts=self.local_ts, remote_ts=self.remote_ts,
                virtual_ips=self.virtual_ips, dns_servers=self.dns_servers,
                dns_domains=self.dns_domains,
            )
        )

    def _on_request(self, data: bytes, header: Any, now: float) -> None:
        if self.sk is None or header.spi_r != self.spi_r:
            raise RemoteProtocolError("request before the IKE SA has keys")
        if header.message_id == self._peer_next_id - 1 and self._last_response:
            log.info("retransmitting our response %d", header.message_id)
            self._out.append(self._last_response[1])
            return
        if header.message_id != self._peer_next_id:
            raise RemoteProtocolError(f"request with unexpected message ID {header.message_id}")
        reply = Message(
            spi_i=self.spi_i, spi_r=self.spi_r, exchange=header.exchange, is_response=True,
            is_initiator=True, message_id=header.message_id, payloads=[], encrypted=True,
        )
        try:
            msg = self._decode(data, header.exchange)
        except RemoteProtocolError as exc:
            ptype = getattr(exc, "unsupported_critical", None)
            if ptype is None:
                raise
            # RFC 7296 2.5: an authentic request with a critical payload we do not know
            # is answered with UNSUPPORTED_CRITICAL_PAYLOAD naming its type.
            log.warning("gateway request %d: %s", header.message_id, exc)
            self._peer_next_id += 1
            reply.payloads.append(
                NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([ptype]))
            )
            self._last_response = (header.message_id, self.send_message(reply))
            return
        log.info("received %s (%d bytes)", msg.summary(), len(data))
        self._peer_next_id += 1
        closing = False
        if msg.exchange == ExchangeType.INFORMATIONAL:
            closing = self._informational(msg, reply)
        else:
            # CREATE_CHILD_SA initiated by the gateway (rekeying) comes with roaming support.
            reply.payloads.append(NotifyPayload(NotifyType.NO_ADDITIONAL_SAS))
        packet = self.send_message(reply)
        self._last_response = (msg.message_id, packet)
        if closing:
            self._tasks.abort()
            self._close("the gateway closed the connection", by_peer=True)

    def _informational(self, msg: Message, reply: Message) -> bool:
        closing = False
        deleted_out: list[bytes] = []
        for d in msg.get_all(DeletePayload):
            if d.protocol == ProtocolId.IKE:
                closing = True
            elif d.protocol == ProtocolId.ESP and self.child is not None:
                for spi in d.spis:
                    if spi == struct.pack("!I", self.child.spi_out):
                        deleted_out.append(struct.pack("!I", self.child.spi_in))
                        self._events.append(
                            ChildSaDeleted(self.child.spi_in, self.child.spi_out)
                        )
                        self.child = None
        if deleted_out and not closing:
            reply.payloads.append(DeletePayload(ProtocolId.ESP, deleted_out))
        return closing

    def _fail(self, exc: IkeError) -> None:
        self._tasks.abort()
        if self.state is State.DELETING:
            log.info("the gateway did not confirm the Delete: %s", exc)
            self._close("disconnected on request (the gateway did not confirm)")
            return
        log.error("IKE SA failed: %s", exc)
        self._close(str(exc), error=exc)

    def _close(self, reason: str, error: IkeError | None = None, by_peer: bool = False) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._events.append(IkeSaClosed(reason, error, by_peer))
