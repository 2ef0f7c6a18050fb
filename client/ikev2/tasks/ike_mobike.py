"""MOBIKE (RFC 4555) as the original initiator: announce it, move the IKE SA, follow NATs.

IKE_AUTH carries N(MOBIKE_SUPPORTED) and our other addresses (ADDITIONAL_IP4/6_ADDRESS,
or NO_ADDITIONAL_ADDRESSES). Once the tunnel is up the driver says when our
path changed (IkeSA.update_addresses, after it moved the sockets): an INFORMATIONAL
request with N(UPDATE_SA_ADDRESSES), fresh NAT detection payloads and N(COOKIE2) leaves
from the new address, and its retransmissions follow whatever path is current. The
gateway moves the IKE SA and its ESP SAs to the address it sees; we renegotiate nothing
(a gateway whose data plane cannot move an SA, strongSwan's kernel-libipsec, rekeys the
CHILD_SA right after, which the lifecycle answers as any rekey). The answer tells
whether a NAT is now in the way (its NAT-D payloads) and must echo our COOKIE2 (the
return routability check); UNACCEPTABLE_ADDRESSES or UNEXPECTED_NAT_DETECTED refuse the
move, and the driver tries another address or waits for one.

As in IKE_SA_INIT (tasks/ike_natd.py) our NAT_DETECTION_SOURCE_IP is random when
encapsulation is forced, so that the gateway keeps UDP-encapsulating ESP to us.

A NAT that rewrites our port while nothing else changes is only visible to the gateway:
liveness checks carry NAT-D payloads while we are behind a NAT (as strongSwan's do), and
a changed NAT_DETECTION_DESTINATION_IP sends an address update.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING

from ..constants import IKE_PORT, NATT_PORT, ExchangeType, NotifyType
from ..errors import RemoteProtocolError
from ..events import AddressesUpdated, AddressUpdateFailed
from ..message import Message
from ..payloads import NotifyPayload
from .base import Status, Task
from .ike_natd import natd_hash

if TYPE_CHECKING:
    from ..ike_sa import IkeSA

log = logging.getLogger(__name__)

COOKIE2_SIZE = 16  # RFC 4555: 8 to 64 octets
COOKIE2_RANGE = range(8, 65)
# Some implementations choke on long address lists (strongSwan sends at most 8 too).
MAX_ADDITIONAL = 8
# Answers that refuse the new address pair (RFC 4555). strongSwan never sends
# them; NO_NATS_ALLOWED belongs in requests, but a gateway that answers with it means no.
REFUSALS = (NotifyType.UNACCEPTABLE_ADDRESSES, NotifyType.UNEXPECTED_NAT_DETECTED,
            NotifyType.NO_NATS_ALLOWED)


@dataclass
class MobikeState:
    """What MOBIKE remembers between exchanges of one IKE SA."""

    # (SPI_i, SPI_r, NAT_DETECTION_DESTINATION_IP) of the last answer that had one: the
    # hash of our address as the gateway sees it, comparable while the SPIs stay.
    natd_seen: tuple[bytes, bytes, bytes] | None = None
    updates: int = 0  # address updates completed

    def observe(self, spi_i: bytes, spi_r: bytes, dest: bytes) -> bool:
        """Remember the gateway's view of our address; True if it changed (a NAT rebound)."""
        seen, self.natd_seen = self.natd_seen, (spi_i, spi_r, dest)
        return seen is not None and seen[:2] == (spi_i, spi_r) and seen[2] != dest


def address_notifies(addresses: Sequence[str]) -> list[NotifyPayload]:
    """ADDITIONAL_IP4/6_ADDRESS for each address, or NO_ADDITIONAL_ADDRESSES."""
    out = []
    for text in addresses:
        addr = ip_address(text)
        ntype = (NotifyType.ADDITIONAL_IP4_ADDRESS if addr.version == 4
                 else NotifyType.ADDITIONAL_IP6_ADDRESS)
        out.append(NotifyPayload(ntype, addr.packed))
        if len(out) == MAX_ADDITIONAL:
            break
    return out or [NotifyPayload(NotifyType.NO_ADDITIONAL_ADDRESSES)]


def gateway_addr(sa: IkeSA) -> tuple[str, int]:
    """Where our messages go now: port 500 floated to 4500 after IKE_SA_INIT (2.23)."""
    host, port = sa.remote_addr
    return host, NATT_PORT if sa.natt and port == IKE_PORT else port


def natd_notifies(sa: IkeSA) -> list[NotifyPayload]:
    """NAT_DETECTION_SOURCE_IP / DESTINATION_IP for the current SPIs and addresses."""
    if sa.config.force_encap:
        src = sa.rng(20)
    else:
        src = natd_hash(sa.spi_i, sa.spi_r, *sa.local_addr)
    dst = natd_hash(sa.spi_i, sa.spi_r, *gateway_addr(sa))
    return [NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, src),
            NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, dst)]


def read_natd(sa: IkeSA, msg: Message) -> bool | None:
    """NAT state from the NAT-D payloads of `msg`: updates sa.nat_local / nat_remote and
    returns whether our mapping changed since the last answer (None: no NAT-D in it)."""
    dest = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    sources = [n.data for n in msg.notifies()
               if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
    if dest is None or not sources:
        return None
    sa.nat_local = dest.data != natd_hash(msg.spi_i, msg.spi_r, *sa.local_addr)
    sa.nat_remote = natd_hash(msg.spi_i, msg.spi_r, *gateway_addr(sa)) not in sources
    return sa.mobike_state.observe(msg.spi_i, msg.spi_r, dest.data)


class IkeMobike(Task):
    """IKE_AUTH: announce MOBIKE and our other addresses; learn whether the gateway can."""

    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa) -> None:
        super().__init__(sa)
        self.sent = False

    def build(self, msg: Message) -> None:
        if not self.sent and self.sa.config.mobike:
            msg.payloads.append(NotifyPayload(NotifyType.MOBIKE_SUPPORTED))
            msg.payloads += address_notifies(self.sa.config.additional_addresses)
        self.sent = True

    def process(self, msg: Message) -> Status:
        if msg.notify(NotifyType.MOBIKE_SUPPORTED) is not None and self.sa.peer_authenticated:
            self.sa.peer_mobike = self.sa.config.mobike
        return Status.DONE if self.sa.auth_done else Status.NEED_MORE


class MobikeUpdate(Task):
    """One INFORMATIONAL exchange: an address update (with NAT-D and COOKIE2), or only our
    new address list (`update` False)."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, sa, additional: Sequence[str] | None, update: bool = True) -> None:
        super().__init__(sa)
        self.additional = None if additional is None else list(additional)
        self.update = update
        self.cookie2 = b""
        self.local = sa.local_addr

    def obsolete(self) -> bool:
        from ..ike_sa import State  # circular at import time

        return self.sa.state is not State.ESTABLISHED

    def build(self, msg: Message) -> None:
        sa = self.sa
        self.local = sa.local_addr
        if self.update:
            self.cookie2 = sa.rng(COOKIE2_SIZE)
            msg.payloads.append(NotifyPayload(NotifyType.UPDATE_SA_ADDRESSES))
            msg.payloads += natd_notifies(sa)
            msg.payloads.append(NotifyPayload(NotifyType.COOKIE2, self.cookie2))
            log.info("moving the IKE SA to %s:%d (MOBIKE)", *self.local)
        if self.additional is not None:
            msg.payloads += address_notifies(self.additional)

    def process(self, msg: Message) -> Status:
        sa = self.sa
        refused = next((n for n in msg.notifies() if n.notify_type in REFUSALS), None)
        error = refused or next((n for n in msg.notifies() if n.is_error), None)
        if not self.update:
            if error is not None:
                log.warning("the gateway answered our address list with %s",
                            _name(error.notify_type))
            return Status.DONE
        if error is not None:
            reason = _name(error.notify_type)
            log.warning("the gateway refused our address %s: %s", self.local[0], reason)
            sa._events.append(AddressUpdateFailed(self.local[0], reason))
            return Status.DONE
        echoed = msg.notify(NotifyType.COOKIE2)
        if echoed is None or not hmac.compare_digest(echoed.data, self.cookie2):
            # The return routability check failed: not an answer from the peer we asked.
            raise RemoteProtocolError("N(COOKIE2) missing or different in the answer to "
                                      "UPDATE_SA_ADDRESSES")
        if update_queued(sa):
            # We moved again meanwhile: the next update's answer tells where we are.
            return Status.DONE
        read_natd(sa, msg)
        sa.mobike_state.updates += 1
        log.info("IKE SA moved to %s:%d%s", *sa.local_addr,
                 " behind a NAT" if sa.nat_local else "")
        sa._events.append(AddressesUpdated(sa.local_addr[0], sa.local_addr[1],
                                           sa.nat_local, sa.nat_remote))
        return Status.DONE


def update_queued(sa: IkeSA) -> bool:
    """An address update waits for its turn (not the one in flight)."""
    return any(isinstance(t, MobikeUpdate) and t.update
               for tasks, _ in sa._tasks.queue for t in tasks)


def start_update(sa: IkeSA, additional: Sequence[str] | None, now: float) -> None:
    """Queue an address update before anything else; an exchange in flight is sent again
    at once, on the new path (its retransmissions would otherwise go on waiting)."""
    tasks = sa._tasks
    if not update_queued(sa):
        tasks.queue_tasks([MobikeUpdate(sa, additional)], front=True)
    resend_now(sa, now)
    tasks.initiate(now)


def announce_addresses(sa: IkeSA, additional: Sequence[str], now: float) -> None:
    """Our other addresses changed: tell the gateway in an INFORMATIONAL."""
    sa._tasks.queue_tasks([MobikeUpdate(sa, additional, update=False)])
    sa._tasks.initiate(now)


def resend_now(sa: IkeSA, now: float) -> None:
    """Send the request in flight again now, with a fresh retransmission budget."""
    ex = sa._tasks.active
    if ex is None:
        return
    ex.attempt = 0
    ex.deadline = now + ex.policy.delay(0)
    log.info("sending %s request %d again on the new path", _exchange(ex.exchange),
             ex.message_id)
    sa.send_raw(ex.packets)


# -- liveness checks behind a NAT (RFC 4555: changes in NAT mappings) ------------------
def dpd_build(sa: IkeSA, msg: Message) -> None:
    """NAT-D in a liveness check while we are behind a NAT and the gateway does MOBIKE."""
    if sa.peer_mobike and sa.nat_local:
        msg.payloads += natd_notifies(sa)


def dpd_process(sa: IkeSA, msg: Message) -> None:
    """A changed NAT mapping seen in the answer to a liveness check: update the SA."""
    if not sa.peer_mobike or read_natd(sa, msg) is not True:
        return
    log.info("our NAT mapping changed: updating the IKE SA's addresses")
    sa._tasks.queue_tasks([MobikeUpdate(sa, None)], front=True)


def answer_request(sa: IkeSA, msg: Message, reply: Message) -> None:
    """The gateway's INFORMATIONAL request: echo its COOKIE2, answer its NAT-D."""
    cookie = msg.notify(NotifyType.COOKIE2)
    if cookie is not None and len(cookie.data) in COOKIE2_RANGE:
        reply.payloads.append(NotifyPayload(NotifyType.COOKIE2, cookie.data))
    if msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP) is not None:
        reply.payloads += natd_notifies(sa)


def _name(ntype: int) -> str:
    try:
        return NotifyType(ntype).name
    except ValueError:
        return str(ntype)


def _exchange(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return str(exchange)
