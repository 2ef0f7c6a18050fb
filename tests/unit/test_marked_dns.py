"""The resolver the engine uses under the kill switch (client/marked_dns.py), against a
DNS server on loopback that answers, lies, stays silent or refuses."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from client.ikev2.errors import PeerUnreachable
from client.marked_dns import lookup, nameservers

Reply = Callable[[dns.message.Message], list[bytes]]


def answer(addr: str) -> Reply:
    def reply(q: dns.message.Message) -> list[bytes]:
        r = dns.message.make_response(q)
        rdtype = q.question[0].rdtype
        if rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", addr))
        return [r.to_wire()]
    return reply


@contextmanager
def server(reply: Reply) -> Iterator[tuple[str, int, list[str]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                return
            q = dns.message.from_wire(data)
            seen.append(f"{q.question[0].name} {dns.rdatatype.to_text(q.question[0].rdtype)}")
            for wire in reply(q):
                sock.sendto(wire, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", sock.getsockname()[1], seen
    finally:
        sock.close()


def resolve(port: int, servers=("127.0.0.1",), ipv6=False, timeout=0.3) -> str:
    return asyncio.run(_resolve(port, servers, ipv6, timeout))


async def _resolve(port, servers, ipv6, timeout) -> str:
    return await lookup(asyncio.get_running_loop(), "vpn.example.com",
                        [ip_address(s) for s in servers], ipv6, 0, timeout, port)


def test_an_answer_gives_the_address() -> None:
    with server(answer("192.0.2.22")) as (_, port, seen):
        assert resolve(port) == "192.0.2.22"
    assert seen == ["vpn.example.com. A"]


def test_forged_and_garbage_replies_are_ignored() -> None:
    """Another ID, another question, bytes that are no DNS: only the real answer counts."""
    def reply(q: dns.message.Message) -> list[bytes]:
        forged = dns.message.make_response(q)
        forged.id = (q.id + 1) % 65536
        forged.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A",
                                                 "203.0.113.66"))
        other = dns.message.make_query("evil.example", "A")
        other.id = q.id
        return [forged.to_wire(), b"\xff" * 300, dns.message.make_response(other).to_wire(),
                *answer("192.0.2.22")(q)]

    with server(reply) as (_, port, _seen):
        assert resolve(port) == "192.0.2.22"


def test_no_record_nxdomain_or_silence_is_unreachable() -> None:
    def nxdomain(q: dns.message.Message) -> list[bytes]:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.NXDOMAIN)
        return [r.to_wire()]

    with server(nxdomain) as (_, port, seen):
        with pytest.raises(PeerUnreachable, match="cannot resolve vpn.example.com"):
            resolve(port)
        assert seen == ["vpn.example.com. A", "vpn.example.com. AAAA"]  # one each: answered
    with server(lambda q: []) as (_, port, seen):
        with pytest.raises(PeerUnreachable):
            resolve(port, timeout=0.2)
        assert len(seen) == 4  # two tries of each type, then it gives up


def test_a_silent_server_is_skipped_for_the_next() -> None:
    with server(lambda q: []) as (_, silent, _s), server(answer("192.0.2.9")) as (_, port, _):
        # Both on loopback ports: the first server's port is where nobody answers.
        async def main() -> str:
            loop = asyncio.get_running_loop()
            try:
                return await lookup(loop, "vpn.example.com", [ip_address("127.0.0.1")],
                                    False, 0, 0.2, silent)
            except PeerUnreachable:
                return await lookup(loop, "vpn.example.com", [ip_address("127.0.0.1")],
                                    False, 0, 0.2, port)
        assert asyncio.run(main()) == "192.0.2.9"


def test_nameservers_skip_the_stub_for_its_upstreams(tmp_path: Path) -> None:
    conf, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    conf.write_text("# stub\nnameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver x\n"
                        "nameserver 198.51.100.53\nnameserver 203.0.113.53\n"
                        "nameserver 203.0.113.54\n")
    assert [str(s) for s in nameservers(conf, upstream)] == [
        "192.0.2.53", "fe80::1", "198.51.100.53"]
    conf.write_text("nameserver 198.51.100.1\n" + "#" * 100_000 + "\nnameserver 192.0.2.1\n")
    assert [str(s) for s in nameservers(conf, upstream)] == ["198.51.100.1"]  # bounded read
    assert nameservers(tmp_path / "none", upstream) == []
