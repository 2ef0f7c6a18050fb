"""The few rtnetlink requests netconf makes, sent straight to the kernel.

One `ip` process per change cost 1.5-5 ms of fork/exec each, most of the tunnel's
bring-up; the same requests over one NETLINK_ROUTE socket take microseconds. Each
message is built as iproute2 builds it for the equivalent command, which is also how a
failure is named (`ip -4 route replace ...: No such device`), so behaviour and messages
stay those of the commands.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from client.netconf.journal import NetconfError

# linux/netlink.h, linux/rtnetlink.h, linux/fib_rules.h, linux/if_addr.h
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in the flags of an NLMSG_ERROR
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_EXT_ACK = 270, 11
RTM_NEWLINK = 16
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE = 32, 33
IFLA_MTU = 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
FRA_PRIORITY, FRA_FWMARK, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE = 6, 10, 14, 15
RTN_UNICAST, RTN_THROW = 1, 9
RTPROT_BOOT = 3  # what `ip route add` marks its routes with
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RT_TABLE_UNSPEC, RT_TABLE_MAIN = 0, 254
FR_ACT_TO_TBL = 1
FIB_RULE_INVERT = 0x2
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type
_FIBRULEHDR = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, 2x res, action
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_ERR = struct.Struct("=i")
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
TIMEOUT = 10.0  # seconds; the kernel answers at once, this only bounds a wedged socket


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    n = _RTATTR.size + len(value)
    return _RTATTR.pack(n, kind) + value + b"\0" * (_align(n) - n)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def attrs(data: bytes, pos: int) -> Iterator[tuple[int, bytes]]:
    """(type, value) of the attributes from `pos` on; stops at a malformed one."""
    while pos + _RTATTR.size <= len(data):
        n, kind = _RTATTR.unpack_from(data, pos)
        if n < _RTATTR.size or pos + n > len(data):
            return
        yield kind, data[pos + _RTATTR.size : pos + n]
        pos += _align(n)


def _table(table: int) -> tuple[int, bytes]:
    # As iproute2: tables below 256 fit the header's byte, others go in an attribute.
    return (table, b"") if table < 256 else (RT_TABLE_UNSPEC, u32(RTA_TABLE, table))


# -- messages (bodies: the header after nlmsghdr, then attributes) ------------------------
def link_up(index: int, mtu: int) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP) + u32(IFLA_MTU, mtu)


def address(a: IPv4Interface | IPv6Interface, index: int) -> bytes:
    raw = a.ip.packed
    return (_IFADDRMSG.pack(FAMILY[a.version], a.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
            + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))


def route(net: IPv4Network | IPv6Network, table: int, index: int | None) -> bytes:
    """A route of `net` into device `index`, or a throw route if `index` is None."""
    tid, extra = _table(table)
    kind, scope = (RTN_THROW, RT_SCOPE_UNIVERSE) if index is None else (RTN_UNICAST, RT_SCOPE_LINK)
    body = _RTMSG.pack(FAMILY[net.version], net.prefixlen, 0, 0, tid, RTPROT_BOOT, scope, kind, 0)
    if net.prefixlen:
        body += attr(RTA_DST, net.network_address.packed)
    return body + extra + (b"" if index is None else u32(RTA_OIF, index))


def rule(family: int, args: list[str]) -> bytes:
    """A policy rule from the `ip rule` arguments netconf uses (and journals): `not`,
    `fwmark N`, `table T|main`, `priority P`, `suppress_prefixlength N`."""
    flags, tid, extra = 0, RT_TABLE_UNSPEC, b""
    it = iter(args)
    for word in it:
        if word == "not":
            flags |= FIB_RULE_INVERT
            continue
        value = next(it)
        if word == "table":
            t = RT_TABLE_MAIN if value == "main" else int(value)
            tid = t if t < 256 else RT_TABLE_UNSPEC
            extra += b"" if t < 256 else u32(FRA_TABLE, t)
        elif word == "fwmark":
            extra += u32(FRA_FWMARK, int(value, 0))
        elif word == "priority":
            extra += u32(FRA_PRIORITY, int(value))
        elif word == "suppress_prefixlength":
            extra += u32(FRA_SUPPRESS_PREFIXLEN, int(value))
        else:
            raise ValueError(f"unsupported rule argument {word!r}")
    return _FIBRULEHDR.pack(FAMILY[family], 0, 0, 0, tid, 0, 0, FR_ACT_TO_TBL, flags) + extra


def _error(payload: bytes, flags: int) -> tuple[int, str]:
    """(errno, kernel's extended message or '') of an NLMSG_ERROR payload."""
    (err,) = _ERR.unpack_from(payload)
    text = ""
    if flags & NLM_F_ACK_TLVS and len(payload) >= _ERR.size + _NLMSGHDR.size:
        (inner_len,) = _U32.unpack_from(payload, _ERR.size)
        pos = _ERR.size + (_NLMSGHDR.size if flags & NLM_F_CAPPED else inner_len)
        for kind, value in attrs(payload, _align(pos)):
            if kind == NLMSGERR_ATTR_MSG:
                text = value.rstrip(b"\0").decode("utf-8", "replace")
    return -err, text


class Rtnl:
    """One NETLINK_ROUTE socket; each request waits for the kernel's answer."""

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      socket.NETLINK_ROUTE)
            self.sock.bind((0, 0))
        except OSError as e:
            raise NetconfError(f"rtnetlink: {e}") from e
        try:  # the kernel's reason for a refusal, when it gives one
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass
        self.sock.settimeout(TIMEOUT)
        self.seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, self.seq, 0) + body)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, int, bytes]]:
        """(type, flags, payload) of the answers to request `seq`, up to its end."""
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                n, kind, flags, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
                if n < _NLMSGHDR.size or pos + n > len(data):
                    break
                if mseq == seq:
                    yield kind, flags, data[pos + _NLMSGHDR.size : pos + n]
                    if kind in (NLMSG_ERROR, NLMSG_DONE):
                        return
                pos += _align(n)

    def request(self, what: str, kind: int, body: bytes, flags: int = 0,
                check: bool = True) -> int:
        """Send one change and wait for its acknowledgement; 0 or the errno. With
        `check`, a refusal raises NetconfError naming `what` (as an ip command)."""
        try:
            seq = self._send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body)
            for rkind, rflags, payload in self._replies(seq):
                if rkind == NLMSG_ERROR and len(payload) >= _ERR.size:
                    err, text = _error(payload, rflags)
                    break
            else:
                err, text = 0, ""
        except OSError as e:
            err, text = e.errno or errno.EIO, str(e)
        if err and check:
            raise NetconfError(f"{what}: {text or os.strerror(err)}")
        return err

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        """The payloads of a dump request (all addresses, all routes of a family)."""
        out = []
        try:
            seq = self._send(kind, NLM_F_REQUEST | NLM_F_DUMP, body)
            for rkind, rflags, payload in self._replies(seq):
                if rkind == NLMSG_ERROR and len(payload) >= _ERR.size:
                    err, text = _error(payload, rflags)
                    if err:
                        raise NetconfError(f"rtnetlink dump: {text or os.strerror(err)}")
                elif rkind != NLMSG_DONE:
                    out.append(payload)
        except OSError as e:
            raise NetconfError(f"rtnetlink dump: {e}") from e
        return out

    # -- what undo needs: flushes, ignoring what is already gone -------------------
    def flush_table(self, family: int, table: int) -> None:
        """Delete every route of `table` (`ip route flush table T`)."""
        for body in self.dump(RTM_GETROUTE, _RTMSG.pack(FAMILY[family], 0, 0, 0, 0, 0, 0, 0, 0)):
            tid = body[4] if len(body) >= _RTMSG.size else None
            for kind, value in attrs(body, _RTMSG.size):
                if kind == RTA_TABLE and len(value) == 4:
                    (tid,) = _U32.unpack(value)
            if tid == table:
                self.request("ip route flush", RTM_DELROUTE, body, check=False)

    def flush_addresses(self, index: int) -> None:
        """Delete every address of device `index` (`ip addr flush dev D`)."""
        for body in self.dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if len(body) >= _IFADDRMSG.size and _IFADDRMSG.unpack_from(body)[4] == index:
                self.request("ip addr flush", RTM_DELADDR, body, check=False)


def ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError as e:
        raise NetconfError(f"device {name}: {e.strerror or e}") from e
