"""Gateway redirection (RFC 5685): the REDIRECT notify data, the IKE_AUTH task, loop limits.

A gateway may send us elsewhere in three places: in its IKE_SA_INIT response (ike_init
checks the nonce and restarts against the new gateway), in its last IKE_AUTH response
(IkeRedirect below, acted on only after the gateway's AUTH verified) and in an
INFORMATIONAL request on an established SA (ike_sa answers it first). Each ends the IKE
SA with an IkeSaRedirected event; the driver then connects to the new gateway, naming
the old one in N(REDIRECTED_FROM), and counts redirects with a RedirectLimiter.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..buffer import Reader
from ..constants import ExchangeType, NotifyType
from ..errors import IkeError, RemoteProtocolError
from ..message import Message
from .base import Status, Task

log = logging.getLogger(__name__)

# Gateway Identity Types (RFC 5685 section 10).
GW_IPV4, GW_IPV6, GW_FQDN = 1, 2, 3
# strongSwan's loop detection: at most 5 redirects within 5 minutes.
MAX_REDIRECTS = 5
REDIRECT_PERIOD = 300.0
_FQDN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class RedirectRequested(IkeError):
    """Raised by a task that found an acceptable REDIRECT; the IKE SA acts on it."""

    def __init__(self, gateway: str) -> None:
        super().__init__(f"the gateway redirects us to {gateway}")
        self.gateway = gateway


def encode_gateway(gateway: str) -> bytes:
    """GW Ident Type, GW Ident Len and the identity (an address or a host name)."""
    try:
        addr = ip_address(gateway)
    except ValueError:
        if not _FQDN.fullmatch(gateway):
            raise ValueError(f"not an address or host name: {gateway!r}") from None
        return bytes((GW_FQDN, len(gateway))) + gateway.encode("ascii")
    kind = GW_IPV4 if isinstance(addr, IPv4Address) else GW_IPV6
    return bytes((kind, len(addr.packed))) + addr.packed


def decode_gateway(data: bytes) -> tuple[str, bytes]:
    """The new gateway of a REDIRECT (or REDIRECTED_FROM) and the bytes after it (the
    nonce, in an IKE_SA_INIT response). Raises RemoteProtocolError when malformed."""
    r = Reader(data, "REDIRECT notify")
    kind, length = r.u8(), r.u8()
    ident = r.bytes(length)
    rest = r.bytes(r.remaining)
    if kind == GW_IPV4 and length == 4:
        return str(IPv4Address(ident)), rest
    if kind == GW_IPV6 and length == 16:
        return str(IPv6Address(ident)), rest
    if kind == GW_FQDN:
        name = ident.decode("ascii", errors="replace")
        if _FQDN.fullmatch(name):
            return name, rest
        raise RemoteProtocolError("REDIRECT notify: the gateway name is not a host name")
    raise RemoteProtocolError(f"REDIRECT notify: gateway identity type {kind}, length {length}")


class IkeRedirect(Task):
    """A REDIRECT in the last IKE_AUTH response (RFC 5685 section 6), after the AUTH."""

    exchange = ExchangeType.IKE_AUTH

    def process(self, msg: Message) -> Status:
        sa = self.sa
        notify = msg.notify(NotifyType.REDIRECT)
        if notify is not None:
            if not sa.peer_authenticated:
                # Only an authenticated gateway may send us elsewhere.
                log.warning("ignoring a REDIRECT from a gateway that has not authenticated")
            elif not sa.config.follow_redirects:
                log.warning("ignoring a REDIRECT: following redirects is disabled")
            else:
                gateway, _ = decode_gateway(notify.data)
                raise RedirectRequested(gateway)
        return Status.DONE if sa.auth_done else Status.NEED_MORE


class RedirectLimiter:
    """Refuses the redirect that makes more than `limit` within `period` seconds."""

    def __init__(self, limit: int = MAX_REDIRECTS, period: float = REDIRECT_PERIOD) -> None:
        self.limit, self.period = limit, period
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.period:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True
