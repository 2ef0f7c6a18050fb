"""Names resolved while the kill switch blocks DNS: the gateway's, a CRL or OCSP host's.

Under the kill switch only the tunnel's own (fwmarked) packets may leave outside the
tunnel, and only to the addresses it allows. The system resolver's queries are not
marked, and rejecting them is the point (no DNS leak while blocked); so the engine asks
the uplink's DNS servers itself, over a marked UDP socket connected to each in turn,
after allowing them through the kill switch for marked packets only. dnspython builds
and parses the messages: a response is untrusted input, read into a bounded buffer, and
only one that answers our question with our ID from the server we asked is used.

The servers are those /etc/resolv.conf names; when it names only a local stub
(systemd-resolved's 127.0.0.53, whose own upstream queries the kill switch rejects),
the stub's upstream servers from /run/systemd/resolve/resolv.conf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from .ikev2.errors import PeerUnreachable
from .pathsel import SO_MARK

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")
MAX_SERVERS = 3  # glibc's MAXNS: the servers a resolv.conf may name that are ever asked
MAX_CONF_BYTES = 64 * 1024  # a resolv.conf is a few lines; the rest is not read
MAX_RESPONSE = 4096  # we offer no EDNS0, so an answer is at most 512 bytes; bounded anyway
MAX_ANSWERS = 16  # addresses taken from one answer
TIMEOUT = 2.0  # seconds per query
TRIES = 2  # per server and record type


def _servers_in(path: Path) -> list[Address]:
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_CONF_BYTES).decode("utf-8", "replace")
    except OSError:
        return []
    servers: list[Address] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                servers.append(ip_address(parts[1].split("%", 1)[0]))
    return servers


def nameservers(conf: Path = RESOLV_CONF, upstream: Path = RESOLVED_UPSTREAM) -> list[Address]:
    """The DNS servers to ask directly (never a loopback stub), at most MAX_SERVERS."""
    servers = _servers_in(conf)
    if servers and all(s.is_loopback for s in servers):
        servers = _servers_in(upstream)
    return [s for s in servers if not s.is_loopback][:MAX_SERVERS]


async def lookup(loop: asyncio.AbstractEventLoop, host: str, servers: Sequence[Address],
                 ipv6: bool, mark: int, timeout: float = TIMEOUT, port: int = 53) -> str:
    """An address of `host` (of the preferred family if it has one) from the first of
    `servers` that answers; PeerUnreachable if none does."""
    try:
        name = dns.name.from_text(host)
    except dns.exception.DNSException as exc:
        raise PeerUnreachable(f"cannot resolve {host}: {exc}") from None
    rdtypes = (dns.rdatatype.AAAA, dns.rdatatype.A) if ipv6 else \
        (dns.rdatatype.A, dns.rdatatype.AAAA)
    for server in servers:
        for rdtype in rdtypes:
            for _ in range(TRIES):
                try:
                    addrs = await asyncio.wait_for(
                        _query(loop, name, rdtype, (str(server), port), mark), timeout)
                except TimeoutError:
                    continue
                except OSError as exc:  # rejected, unreachable: the next server
                    log.info("DNS server %s: %s", server, exc)
                    break
                if addrs:
                    return addrs[0]
                break  # answered: no record of this type
    raise PeerUnreachable(f"cannot resolve {host}: no answer from "
                          f"{', '.join(map(str, servers)) or 'any DNS server (none known)'}")


async def _query(loop: asyncio.AbstractEventLoop, name: dns.name.Name,
                 rdtype: dns.rdatatype.RdataType, server: tuple[str, int],
                 mark: int) -> list[str]:
    query = dns.message.make_query(name, rdtype)  # a random ID
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.setblocking(False)
        # Connected: the kernel passes on only datagrams from the server we asked.
        await loop.sock_connect(sock, server)
        await loop.sock_sendall(sock, query.to_wire())
        while True:
            wire = await loop.sock_recv(sock, MAX_RESPONSE)
            try:
                response = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue  # not a DNS message: keep waiting for the real answer
            if query.is_response(response):
                break
    if response.rcode() != dns.rcode.NOERROR:
        return []
    return [rd.address for rrset in response.answer if rrset.rdtype == rdtype
            for rd in rrset][:MAX_ANSWERS]
