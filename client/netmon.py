"""Network changes as they happen: links, addresses and routes, from rtnetlink (Linux).

One AF_NETLINK socket subscribed to the link, IPv4/IPv6 address and IPv4/IPv6 route
groups, read from the asyncio loop. Only the message headers are parsed, enough to drop
what concerns our own TUN device or our own routing table; a burst of messages (a link
going down withdraws its addresses and routes in one go) is folded into one callback a
few milliseconds later. What the change means is for the caller to find out (pathsel:
where the kernel would now send our packets).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

# linux/rtnetlink.h
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE
          | RTMGRP_IPV6_ROUTE)
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLMSG_ERROR, NLMSG_OVERRUN = 2, 4
RTA_OIF, RTA_TABLE = 4, 15

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type
_RTATTR = struct.Struct("=HH")
DEBOUNCE = 0.01  # seconds: one look at the routing table per burst of messages
READ_BATCH = 64  # datagrams per readiness event, so a storm cannot starve the loop
RECV_SIZE = 65536


def _align(n: int) -> int:
    return (n + 3) & ~3


def _route_attrs(body: bytes) -> tuple[int | None, int | None]:
    """(RTA_TABLE, RTA_OIF) of an rtmsg body, when present and well-formed."""
    table = oif = None
    pos = _align(_RTMSG.size)
    while pos + _RTATTR.size <= len(body):
        length, rta_type = _RTATTR.unpack_from(body, pos)
        if length < _RTATTR.size or pos + length > len(body):
            break
        if length == _RTATTR.size + 4 and rta_type in (RTA_TABLE, RTA_OIF):
            (value,) = struct.unpack_from("=I", body, pos + _RTATTR.size)
            if rta_type == RTA_TABLE:
                table = value
            else:
                oif = value
        pos += _align(length)
    return table, oif


def relevant(datagram: bytes, ignored_ifindexes: set[int], ignored_tables: set[int]) -> bool:
    """Whether a datagram of rtnetlink messages reports a change that matters to us.

    Malformed input never raises: a truncated message ends the walk, and an overrun
    (events were lost) counts as a change, so the caller looks again."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(datagram):
        length, mtype, _, _, _ = _NLMSGHDR.unpack_from(datagram, pos)
        if length < _NLMSGHDR.size or pos + length > len(datagram):
            return False
        body = datagram[pos + _NLMSGHDR.size:pos + length]
        pos += _align(length)
        if mtype == NLMSG_OVERRUN:
            return True
        ifindex: int | None = None
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= _IFINFOMSG.size:
            ifindex = _IFINFOMSG.unpack_from(body)[2]
        elif mtype in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= _IFADDRMSG.size:
            ifindex = _IFADDRMSG.unpack_from(body)[4]
        elif mtype in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= _RTMSG.size:
            table, oif = _route_attrs(body)
            table = table if table is not None else _RTMSG.unpack_from(body)[4]
            if table in ignored_tables:
                continue
            ifindex = oif
        else:
            continue
        if ifindex is None or ifindex not in ignored_ifindexes:
            return True
    return False


class NetMonitor:
    """Calls `on_change()` (on the loop) shortly after links, addresses or routes change.

    `ignored_ifindexes()` names the devices whose events do not count (our TUN device),
    `ignored_tables` the routing tables (the tunnel's own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None],
                 ignored_ifindexes: Callable[[], set[int]] = set,
                 ignored_tables: set[int] | None = None, debounce: float = DEBOUNCE) -> None:
        self.loop = loop
        self.on_change = on_change
        self.ignored_ifindexes = ignored_ifindexes
        self.ignored_tables = set(ignored_tables or ())
        self.debounce = debounce
        self.sock: socket.socket | None = None
        self._pending: asyncio.TimerHandle | None = None
        self.events = 0  # relevant datagrams seen, for logs and tests

    def start(self) -> None:
        """Subscribe; a kernel without rtnetlink (or a sandbox) leaves us without events."""
        if self.sock is not None:
            return
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                 socket.NETLINK_ROUTE)
        except OSError as exc:
            log.warning("no network change notifications (rtnetlink: %s)", exc)
            return
        try:
            sock.bind((0, GROUPS))
        except OSError as exc:
            sock.close()
            log.warning("no network change notifications (rtnetlink: %s)", exc)
            return
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._readable)

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        changed = False
        ignored = self.ignored_ifindexes()
        for _ in range(READ_BATCH):
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # we fell behind: events were lost
                    changed = True
                    continue
                log.warning("rtnetlink: %s", exc)
                break
            if relevant(data, ignored, self.ignored_tables):
                changed = True
        if changed:
            self.events += 1
            self.kick()

    def kick(self) -> None:
        """A change (or the suspicion of one): call on_change after the debounce delay."""
        if self._pending is None:
            self._pending = self.loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._pending = None
        try:
            self.on_change()
        except Exception:
            log.exception("handling a network change failed")
