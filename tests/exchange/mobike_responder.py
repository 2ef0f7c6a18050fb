"""The test Responder with the responder's side of MOBIKE (RFC 4555), as strongSwan does it.

A subclass, so the base Responder stays as it is. An INFORMATIONAL request with
UPDATE_SA_ADDRESSES moves the SA to wherever the client's datagrams appear to come from
(`client_at`, which a test changes to play a new path or a NAT), is answered with NAT-D
payloads for that address and the client's COOKIE2; NAT-D in any other INFORMATIONAL
(a liveness check) is answered the same way. The client's address lists are kept.
`refuse` answers updates with an error notify instead; `cookie2` can echo something else.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from ipaddress import ip_address

from client.ikev2.constants import NATT_PORT, NotifyType
from client.ikev2.message import Message
from client.ikev2.payloads import NotifyPayload, Payload
from client.ikev2.tasks.ike_natd import natd_hash
from tests.exchange.responder import GatewayConfig, Responder

ADDRESS_NOTIFIES = (NotifyType.ADDITIONAL_IP4_ADDRESS, NotifyType.ADDITIONAL_IP6_ADDRESS,
                    NotifyType.NO_ADDITIONAL_ADDRESSES)


def address_list(msg: Message) -> list[str] | None:
    """The client's other addresses in `msg` (None: it carried no address list)."""
    notes = [n for n in msg.notifies() if n.notify_type in ADDRESS_NOTIFIES]
    if not notes:
        return None
    return [str(ip_address(n.data)) for n in notes
            if n.notify_type != NotifyType.NO_ADDITIONAL_ADDRESSES]


class MobikeResponder(Responder):
    def __init__(self, cfg: GatewayConfig, *, refuse: int | None = None,
                 cookie2: Callable[[bytes], bytes | None] = lambda c: c,
                 rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        super().__init__(cfg, rng)
        self.refuse = refuse
        self.cookie2 = cookie2  # what to echo for the client's COOKIE2 (None: nothing)
        self.client_at = cfg.client_seen_as  # the client's address as our IP layer sees it
        self.moved_to: list[tuple[str, int]] = []  # every address an update moved us to
        self.peer_addresses: list[str] | None = None  # the client's last address list
        self.natd_checks = 0  # NAT-D payloads answered outside an update
        self.gateway_hash_ok: list[bool] = []  # the client hashed our address right

    def _ike_auth(self, msg: Message) -> list[Payload]:
        listed = address_list(msg)
        if listed is not None:
            self.peer_addresses = listed
        return super()._ike_auth(msg)

    def _informational(self, msg: Message) -> list[Payload]:
        reply = super()._informational(msg)
        listed = address_list(msg)
        if listed is not None:
            self.peer_addresses = listed
        update = msg.notify(NotifyType.UPDATE_SA_ADDRESSES) is not None
        if update and self.refuse is not None:
            return [NotifyPayload(self.refuse)]
        dest = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
        if dest is not None:
            me = (self.cfg.address[0], NATT_PORT)
            self.gateway_hash_ok.append(dest.data == natd_hash(self.spi_i, self.spi_r, *me))
            reply += [
                NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP,
                              natd_hash(self.spi_i, self.spi_r, *me)),
                NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP,
                              natd_hash(self.spi_i, self.spi_r, *self.client_at)),
            ]
            if not update:
                self.natd_checks += 1
        if update:
            self.moved_to.append(self.client_at)
        cookie = msg.notify(NotifyType.COOKIE2)
        if cookie is not None:
            echoed = self.cookie2(cookie.data)
            if echoed is not None:
                reply.append(NotifyPayload(NotifyType.COOKIE2, echoed))
        return reply
