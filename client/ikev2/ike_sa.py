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
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from ipaddress import ip_network
from typing import Any

from cryptography import x509

from .auth.policy import CryptoPolicy
from .constants import (
    FLAG_RESPONSE,
    EapType,
    ExchangeType,
    NotifyType,
    PayloadType,
)
from .errors import CryptoError, IkeError, LocalProtocolError, RemoteProtocolError
from .events import (
    ChildSaEstablished,
    ChildSaKeys,
    Event,
    IkeSaClosed,
    IkeSaEstablished,
    IkeSaRedirected,
    IpAddress,
    IpInterface,
    IpNetwork,
    RevocationCheck,
)
from .fragments import Reassembled, Reassembler
from .identity import classify_identity
from .lifecycle import Lifecycle
from .message import Header, Message, SkContext, decode_fragment, parse_header
from .payloads import NotifyPayload
from .proposals import Proposal
from .task_manager import RetransmitPolicy, TaskManager
from .tasks import ike_mobike
from .tasks.child_create import ChildCreate
from .tasks.ike_auth import IkeAuth
from .tasks.ike_auth_lifetime import IkeAuthLifetime
from .tasks.ike_config import IkeConfig as IkeConfigTask
from .tasks.ike_delete import IkeDelete
from .tasks.ike_init import IkeInit
from .tasks.ike_mobike import IkeMobike, MobikeState
from .tasks.ike_natd import IkeNatd
from .tasks.ike_redirect import IkeRedirect, RedirectRequested, decode_gateway

log = logging.getLogger(__name__)

# A disconnect must not hang on a gateway that is gone: about 2.4 s at most.
DELETE_POLICY = RetransmitPolicy(timeout=0.5, base=1.5, tries=2)
# Of an unforeseen exception's text in a reason: it may quote the gateway's bytes.
MAX_DETAIL = 120


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
    # RFC 4739: our authentication rounds, e.g. ("pubkey", "eap"); empty: (auth_method,)
    auth_rounds: tuple[str, ...] = ()
    psk: bytes | None = field(default=None, repr=False)
    private_key: Any = field(default=None, repr=False)
    certificate: x509.Certificate | None = None
    cert_chain: list[x509.Certificate] = field(default_factory=list)
    rsa_pss: bool = False
    eap_identity: str | None = None
    eap_password: str | None = field(default=None, repr=False)
    eap_methods: tuple[int, ...] = (EapType.MSCHAPV2,)  # auth/eap/methods.py
    eap_only: bool = False  # allow RFC 5998 EAP-only: the gateway proves itself by mutual EAP
    crypto_policy: CryptoPolicy = field(default_factory=CryptoPolicy)  # auth/policy.py
    trust_anchors: list[x509.Certificate] | None = None  # None: the system store
    send_certreq: bool = True  # CERTREQ for trust_anchors (never for the whole system store)
    request_ipv4: bool = True
    request_ipv6: bool = True
    remote_ts: list[IpNetwork] = field(
        default_factory=lambda: [ip_network("0.0.0.0/0"), ip_network("::/0")]
    )
    force_encap: bool = True
    mobike: bool = True
    additional_addresses: list[str] = field(default_factory=list)  # RFC 4555, for IKE_AUTH
    fragmentation: bool = True  # RFC 7383, announced in IKE_SA_INIT
    # Largest IP datagram of an IKE fragment; strongSwan's default, safe on IPv6's minimum MTU.
    fragment_size: int = 1280
    follow_redirects: bool = True  # RFC 5685
    redirected_from: str | None = None  # the gateway that sent us here (N(REDIRECTED_FROM))
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)
    init_retransmit: RetransmitPolicy | None = None  # IKE_SA_INIT only: a reconnect probes fast
    # Rekeying and liveness (RFC 7296 2.8, 2.4); None / 0 turn them off.
    ike_lifetime: float | None = None
    child_lifetime: float | None = None
    dpd: float = 0.0  # seconds without traffic from the gateway before a liveness check
    initial_contact: bool = True  # no other IKE SA of ours is alive (RFC 7296 2.4)
    requested_vips: list[IpAddress] = field(default_factory=list)  # ask for these again
    wall_clock: Callable[[], datetime] = _utcnow
    # remote.revocation: pause after the gateway's certificate verified until the
    # driver checked its chain (events.RevocationCheck, revocation_checked()).
    check_revocation: bool = False


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
        self.peer_fragmentation = False  # N(IKEV2_FRAGMENTATION_SUPPORTED) in IKE_SA_INIT
        self.peer_multiple_auth = False  # N(MULTIPLE_AUTH_SUPPORTED) in IKE_SA_INIT (RFC 4739)
        self.nat_local = self.nat_remote = False
        self.peer_authenticated = False
        self.auth_done = False
        # Waiting for the driver's revocation verdict: the response being processed
        # stays unused and nothing is sent until revocation_checked().
        self.paused = False
        self._paused_msg: Message | None = None
        self.peer_mobike = False
        self.mobike_state = MobikeState()
        self.ike_proposal_name = ""
        self.esp_proposal_name = ""
        self.child: ChildSaKeys | None = None
        self.local_ts: list[IpNetwork] = []
        self.remote_ts: list[IpNetwork] = []
        self.virtual_ips: list[IpInterface] = []
        self.dns_servers: list[IpAddress] = []
        self.dns_domains: list[str] = []
        self.natt = False  # after IKE_SA_INIT everything goes to port 4500, UDP-encapsulated
        # We are the original initiator of the current IKE SA; a rekey the gateway
        # started makes it the initiator of the new one (RFC 7296 2.18).
        self.initiator = True
        self.ike_proposal: Proposal | None = None
        self.auth_lifetime: int | None = None  # RFC 4478, from the last IKE_AUTH response
        self.now = 0.0  # the time of the call being handled, for the tasks
        self.life = Lifecycle(self)  # rekeying, liveness and the gateway's requests

        self._tasks = TaskManager(self)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._peer_next_id = 0
        self._last_response: tuple[int, list[bytes]] | None = None
        # RFC 7383 reassembly: the gateway's responses and its requests, one message each.
        self._fragments = {True: Reassembler(), False: Reassembler()}

    # -- public API -----------------------------------------------------------------
    def initiate(self, now: float) -> None:
        if self.state is not State.IDLE:
            raise RuntimeError("initiate() called twice")
        self.state = State.CONNECTING
        self.now = now
        self._run(lambda: self._start(now))

    def _start(self, now: float) -> None:
        self._check_identities()
        self._tasks.queue_tasks([IkeInit(self), IkeNatd(self)], self.config.init_retransmit)
        self._tasks.queue_tasks(
            [IkeAuth(self), IkeRedirect(self), IkeConfigTask(self), ChildCreate(self),
             IkeMobike(self), IkeAuthLifetime(self)]
        )
        self._tasks.initiate(now)

    def _check_identities(self) -> None:
        """Our configured identities, classified now: a bad one is our error, reported as
        such before any packet, not an exception in the middle of IKE_AUTH."""
        cfg = self.config
        # The EAP identity is an IDi only in a second round (RFC 4739, tasks/ike_auth).
        second = cfg.eap_identity if len(cfg.auth_rounds) > 1 else None
        for what, text in (("local identity", cfg.local_id), ("remote identity", cfg.remote_id),
                           ("EAP identity", second)):
            if text is None:
                continue
            try:
                classify_identity(text)
            except ValueError as exc:
                raise LocalProtocolError(f"{what} {text!r} is not valid: {exc}") from None

    def delete(self, now: float) -> None:
        """Disconnect: Delete the IKE SA if it is up, or abandon the attempt."""
        self.now = now
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
        self.now = now
        try:
            self._receive(data, now)
        except (RemoteProtocolError, CryptoError) as exc:
            # A malformed, forged or unexpected message is logged and dropped (RFC 7296
            # 2.21.1: a failed integrity check must not affect the SA), never fatal by itself.
            log.warning("dropped a message from the gateway: %s", exc)
        except IkeError as exc:
            self._fail(exc)
        except Exception as exc:
            # The gateway's bytes reached a check we lack (a bug of ours): the message is
            # dropped like any malformed one, and the driver's receive loop goes on.
            log.error("dropped a message from the gateway: %s", _unexpected(exc))
            log.debug("the unexpected error", exc_info=exc)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        times = [self._tasks.get_timer()]
        if self.state is State.ESTABLISHED:
            times.append(self.life.get_timer(idle=self._tasks.idle))
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self.now = now
        self._run(lambda: self._tasks.handle_timer(now))
        if self.state is State.ESTABLISHED:
            self._run(lambda: self.life.handle_timer(now))
            self._run(lambda: self._tasks.initiate(now))

    # -- MOBIKE (RFC 4555, tasks/ike_mobike.py): the driver moved our sockets ----------
    def update_addresses(self, local_addr: tuple[str, int], now: float,
                         additional: list[str] | None = None) -> None:
        """We now send from `local_addr`: ask the gateway to move the SAs there."""
        self.now = now
        self.local_addr = local_addr
        if self.state is State.ESTABLISHED and self.peer_mobike:
            self._run(lambda: ike_mobike.start_update(self, additional, now))

    def announce_addresses(self, additional: list[str], now: float) -> None:
        """Our other addresses changed: send the gateway the new list."""
        self.now = now
        if self.state is State.ESTABLISHED and self.peer_mobike:
            self._run(lambda: ike_mobike.announce_addresses(self, additional, now))

    def abandon(self, reason: str, error: IkeError | None = None) -> None:
        """Give the SA up without a word to the gateway: no path to it is left."""
        self._tasks.abort()
        self._close(reason, error)

    def traffic_received(self, at: float) -> None:
        """ESP from the gateway arrived at `at`: it is alive (no liveness check needed)."""
        self.life.on_inbound(at)

    def owns(self, data: bytes) -> bool:
        """Whether an IKE datagram is for this IKE SA or one a rekey replaced (by our SPI)."""
        spis = self.life.local_spis()
        spis.add(self.spi_i if self.initiator else self.spi_r)
        return data[:8] in spis or data[8:16] in spis

    def request_revocation_check(self, event: RevocationCheck, msg: Message) -> None:
        """Called by IKE_AUTH once the gateway's certificate verified (see events.py)."""
        self.paused = True
        self._paused_msg = msg
        self._events.append(event)

    def revocation_checked(self, error: IkeError | None, now: float) -> None:
        """The driver's verdict: None to go on with IKE_AUTH, else the SA fails with it."""
        if not self.paused or self.state is State.CLOSED:
            return
        self.now = now
        msg, self.paused, self._paused_msg = self._paused_msg, False, None
        if error is not None:
            self._fail(error)
            return
        assert msg is not None
        self._react(lambda: self._on_response(msg, now, resume=True))

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- helpers used by tasks ------------------------------------------------------
    def new_message(self, exchange: int, message_id: int, response: bool) -> Message:
        return Message(
            spi_i=self.spi_i, spi_r=self.spi_r, exchange=exchange, is_response=response,
            is_initiator=self.initiator, message_id=message_id, payloads=[],
            encrypted=exchange != ExchangeType.IKE_SA_INIT,
        )

    def send_message(self, msg: Message) -> list[bytes]:
        """Encode `msg` (as RFC 7383 fragments if it is too large) and queue it."""
        if msg.encrypted and self.sk is not None and self.peer_fragmentation \
                and self.config.fragmentation:
            packets = msg.encode_fragments(self.sk, self._max_message_size())
        else:
            packets = [msg.encode(self.sk if msg.encrypted else None)]
        if msg.exchange == ExchangeType.IKE_SA_INIT and not msg.is_response:
            self.init_request = packets[0]
        size = sum(len(p) for p in packets)
        if len(packets) == 1:
            log.info("sending %s (%d bytes)", msg.summary(), size)
        else:
            log.info("sending %s (%d bytes in %d fragments)", msg.summary(), size, len(packets))
        self._out.extend(packets)
        return packets

    def send_raw(self, packets: bytes | list[bytes]) -> None:
        """Queue datagrams again as they are (retransmission)."""
        self._out.extend([packets] if isinstance(packets, bytes) else packets)

    def _max_message_size(self) -> int:
        """The IKE message that fits in `fragment_size` after IP, UDP and non-ESP marker."""
        ip_header = 40 if ":" in self.remote_addr[0] else 20
        marker = 4 if self.natt or self.remote_addr[1] != 500 else 0
        return self.config.fragment_size - ip_header - 8 - marker

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

    def _react(self, action: Callable[[], None]) -> None:
        """Act on a message of the gateway we accepted: whatever goes wrong with it ends
        the SA with a reason, an exception we did not foresee included."""
        try:
            action()
        except IkeError as exc:
            self._fail(exc)
        except Exception as exc:
            log.debug("the unexpected error", exc_info=exc)
            self._fail(_unexpected(exc))

    def _receive(self, data: bytes, now: float) -> None:
        header = parse_header(data)
        if self.life.route(header, data):
            return  # for an IKE SA a rekey replaced
        if header.spi_i != self.spi_i:
            raise RemoteProtocolError("message for an unknown IKE SA")
        if header.is_initiator == self.initiator:
            raise RemoteProtocolError("message with our own initiator flag")
        if header.next_payload == PayloadType.SKF:
            self._on_fragment(data, header, now)
            return
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
            self._react(lambda: self._on_response(msg, now))
        else:
            self._on_request(data, header, now)

    def _on_fragment(self, data: bytes, header: Header, now: float) -> None:
        """One SKF datagram (RFC 7383 2.6): checked and verified on its own, then kept
        until its message is complete. A fragment that fails is dropped alone."""
        if self.sk is None or header.exchange == ExchangeType.IKE_SA_INIT:
            raise RemoteProtocolError("IKE fragment before the IKE SA has keys")
        if header.spi_r != self.spi_r:
            raise RemoteProtocolError("IKE fragment with the wrong responder SPI")
        response = header.is_response
        if response and not self._tasks.expects(header.message_id, header.exchange):
            raise RemoteProtocolError(f"unexpected response fragment {header.message_id}")
        if not response and header.message_id != self._peer_next_id:
            if header.message_id == self._peer_next_id - 1 and self._last_response:
                # RFC 7383 2.6.1: only fragment 1 of a retransmitted request makes us resend.
                if decode_fragment(data, self.sk).number == 1:
                    log.info("retransmitting our response %d", header.message_id)
                    self.send_raw(self._last_response[1])
                return
            raise RemoteProtocolError(f"request fragment with unexpected message ID "
                                      f"{header.message_id}")
        frag = decode_fragment(data, self.sk)
        whole = self._fragments[response].add(frag)
        if whole is None:
            log.debug("received fragment %d of %d of message %d", frag.number, frag.total,
                      header.message_id)
            return
        if not response:
            self._on_request(data, header, now, whole)
            return
        msg = Message.from_fragments(header, whole.first_payload, whole.chain)
        log.info("received %s (%d bytes in %d fragments)", msg.summary(), whole.size,
                 whole.fragments)
        self._react(lambda: self._on_response(msg, now))

    def _decode(self, data: bytes, exchange: int) -> Message:
        sk = None if exchange == ExchangeType.IKE_SA_INIT else self.sk
        if exchange != ExchangeType.IKE_SA_INIT and sk is None:
            raise RemoteProtocolError("protected message before keys exist")
        msg = Message.decode(data, sk)
        if sk is not None and not msg.encrypted:
            raise RemoteProtocolError("unprotected message after IKE_SA_INIT")
        return msg

    def _on_response(self, msg: Message, now: float,
                     resume: bool = False) -> None:
        exchange = msg.exchange
        if not resume:
            self.life.on_inbound(now)
        try:
            finished = (self._tasks.resume(now) if resume
                        else self._tasks.process_response(msg, now))
        except RedirectRequested as redirect:
            self._redirect(redirect.gateway, now)
            return
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
        self.life.start(self.now)
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

    def _on_request(self, data: bytes, header: Any, now: float,
                    whole: Reassembled | None = None) -> None:
        """A request from the gateway: one datagram, or `whole`, reassembled fragments."""
        if self.sk is None or header.spi_r != self.spi_r:
            raise RemoteProtocolError("request before the IKE SA has keys")
        if header.message_id == self._peer_next_id - 1 and self._last_response:
            log.info("retransmitting our response %d", header.message_id)
            self.send_raw(self._last_response[1])
            return
        if header.message_id != self._peer_next_id:
            raise RemoteProtocolError(f"request with unexpected message ID {header.message_id}")
        reply = Message(
            spi_i=self.spi_i, spi_r=self.spi_r, exchange=header.exchange, is_response=True,
            is_initiator=self.initiator, message_id=header.message_id, payloads=[],
            encrypted=True,
        )
        try:
            if whole is None:
                msg = self._decode(data, header.exchange)
            else:
                msg = Message.from_fragments(header, whole.first_payload, whole.chain)
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
        log.info("received %s (%d bytes)", msg.summary(), whole.size if whole else len(data))
        self._peer_next_id += 1
        self.life.on_inbound(now)
        after = self._answer(msg, reply)
        packet = self.send_message(reply)
        self._last_response = (msg.message_id, packet)
        if after is not None:  # a Delete of the IKE SA, or a rekey to complete
            self._react(after)
            if self.state is State.ESTABLISHED:
                self._react(lambda: self._tasks.initiate(now))
        elif msg.exchange == ExchangeType.INFORMATIONAL:
            self._redirect_request(msg, now)

    def _answer(self, msg: Message, reply: Message) -> Callable[[], None] | None:
        """Fill the reply to a request; what to do once it is sent, if anything."""
        try:
            if msg.exchange == ExchangeType.INFORMATIONAL:
                ike_mobike.answer_request(self, msg, reply)
                return self.life.answer_informational(msg, reply)
            if msg.exchange == ExchangeType.CREATE_CHILD_SA:
                return self.life.answer_create_child_sa(msg, reply)
        except (RemoteProtocolError, CryptoError) as exc:
            # An authentic request we cannot honour (a bad KE value, say) still gets an
            # answer, or the gateway would retransmit it forever.
            log.warning("gateway request %d: %s", msg.message_id, exc)
            reply.payloads = [NotifyPayload(NotifyType.INVALID_SYNTAX)]
            return None
        except Exception as exc:  # the same, for a check we lack (a bug of ours)
            log.error("gateway request %d: %s", msg.message_id, _unexpected(exc))
            log.debug("the unexpected error", exc_info=exc)
            reply.payloads = [NotifyPayload(NotifyType.INVALID_SYNTAX)]
            return None
        reply.payloads.append(NotifyPayload(NotifyType.NO_ADDITIONAL_SAS))
        return None

    def _closed_by_peer(self) -> None:
        self._tasks.abort()
        self._close("the gateway closed the connection", by_peer=True)

    # -- redirects (RFC 5685) -------------------------------------------------------
    def _redirect_request(self, msg: Message, now: float) -> None:
        """A REDIRECT in an INFORMATIONAL request (section 5), after we answered it."""
        notify = msg.notify(NotifyType.REDIRECT)
        if notify is None or self.state is not State.ESTABLISHED:
            return
        if not self.config.follow_redirects:
            log.warning("ignoring a REDIRECT: following redirects is disabled")
            return
        try:
            gateway, _ = decode_gateway(notify.data)
        except RemoteProtocolError as exc:
            log.warning("ignoring a REDIRECT: %s", exc)
            return
        self._redirect(gateway, now)

    def _redirect(self, gateway: str, now: float) -> None:
        """Leave for `gateway`: an SA the gateway authenticated is deleted there first."""
        log.info("the gateway redirects us to %s", gateway)
        self._events.append(IkeSaRedirected(gateway, self.state is State.ESTABLISHED))
        self._tasks.abort()
        if self.peer_authenticated and self.state in (State.CONNECTING, State.ESTABLISHED):
            self.state = State.DELETING
            self._tasks.queue_tasks([IkeDelete(self)], DELETE_POLICY)
            self._run(lambda: self._tasks.initiate(now))
        else:
            self._close(f"redirected to {gateway}")

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


def _unexpected(exc: Exception) -> RemoteProtocolError:
    """The protocol error an exception we did not foresee, raised by the gateway's input,
    stands for: named with its type and where it was raised, so the bug can be found."""
    where = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):  # the innermost frame last
        where = f" at {frame.f_code.co_filename.rsplit('/', 1)[-1]}:{lineno}"
    return RemoteProtocolError(f"unexpected {type(exc).__name__}{where} handling the "
                               f"gateway's message: {str(exc)[:MAX_DETAIL]}")
