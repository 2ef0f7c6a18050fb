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
import string
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
MAX_NAME_LENGTH = 253  # RFC 1035 2.3.4: 255 octets on the wire, without the trailing dot
MAX_LABEL_LENGTH = 63  # RFC 1035 2.3.4
_LDH = frozenset(string.ascii_letters + string.digits + "-")  # RFC 1123 2.1 host names


def is_host_name(name: str) -> bool:
    """A host name by RFC 1035/1123 (letters, digits, hyphens; an optional trailing dot).

    Label by label, in one pass: the gateway chooses this string, so no backtracking.
    """
    name = name.removesuffix(".")
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return False
    return all(
        1 <= len(label) <= MAX_LABEL_LENGTH and label[0] != "-" and label[-1] != "-"
        and _LDH.issuperset(label)
        for label in name.split(".")
    )


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
        if not is_host_name(gateway):
            raise ValueError(f"not an address or host name: {gateway!r}") from None
        return bytes((GW_FQDN, len(gateway))) + gateway.encode("ascii")
    kind = GW_IPV4 if isinstance(addr, IPv4Address) else GW_IPV6
    return bytes((kind, len(addr.packed))) + addr.packed


def split_gateway(data: bytes) -> tuple[int, bytes, bytes]:
    """GW Ident Type, the identity (not yet checked) and the bytes after it (the nonce,
    in an IKE_SA_INIT response). Raises RemoteProtocolError when truncated."""
    r = Reader(data, "REDIRECT notify")
    kind, length = r.u8(), r.u8()
    ident = r.bytes(length)
    return kind, ident, r.bytes(r.remaining)


def gateway_name(kind: int, ident: bytes) -> str:
    """The new gateway named by a GW Ident Type and identity; RemoteProtocolError if bad."""
    if kind == GW_IPV4 and len(ident) == 4:
        return str(IPv4Address(ident))
    if kind == GW_IPV6 and len(ident) == 16:
        return str(IPv6Address(ident))
    if kind == GW_FQDN:
        name = ident.decode("ascii", errors="replace")
        if is_host_name(name):
            return name
        raise RemoteProtocolError("REDIRECT notify: the gateway name is not a host name")
    raise RemoteProtocolError(f"REDIRECT notify: gateway identity type {kind}, "
                              f"length {len(ident)}")


def decode_gateway(data: bytes) -> tuple[str, bytes]:
    """The new gateway of a REDIRECT (or REDIRECTED_FROM) and the bytes after it (the
    nonce, in an IKE_SA_INIT response). Raises RemoteProtocolError when malformed."""
    kind, ident, rest = split_gateway(data)
    return gateway_name(kind, ident), rest


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
