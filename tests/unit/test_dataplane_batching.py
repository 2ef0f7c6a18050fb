"""Batched sending: UDP GSO runs, and a burst from the TUN device leaving as ESP packets
with strictly increasing sequence numbers that the peer accepts, in order, intact."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from client.dataplane import BATCH, DataPlane
from client.esp.sa import EspInbound, EspOutbound
from client.ikev2.constants import EncrId
from client.udpgso import GsoSender, runs

KEY = bytes(range(36))


def ipv4(n: int, tag: int) -> bytes:
    """An IPv4 packet of n bytes whose payload carries `tag`."""
    return b"\x45" + bytes(3) + struct.pack(">I", tag) + bytes(n - 8)


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
        a.connect(b.getsockname())
        b.connect(a.getsockname())
        a.setblocking(False)
        b.settimeout(2)
        yield a, b
    finally:
        a.close()
        b.close()


def test_runs_keep_order_and_gso_rules():
    sizes = [100] * 70 + [60, 100, 100, 120, 120, 50, 50]
    packets = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    out = list(runs(packets))
    assert [p for run in out for p in run] == packets  # nothing lost, nothing reordered
    for run in out:
        assert len(run) <= 64
        assert sum(map(len, run)) <= 65467
        assert all(len(p) == len(run[0]) for p in run[:-1])  # only the last may differ
        assert len(run[-1]) <= len(run[0])
    assert [len(r) for r in out] == [64, 7, 2, 3, 1]


def test_runs_respect_the_datagram_size_limit():
    out = list(runs([bytes(1452)] * 60))
    assert [len(r) for r in out] == [45, 15]


def test_gso_batch_arrives_as_separate_datagrams(udp_pair):
    a, b = udp_pair
    packets = [bytes([i]) * 1400 for i in range(40)] + [b"tail" * 10]
    GsoSender(a).send(packets)
    assert [b.recv(65535) for _ in packets] == packets


class BurstTun:
    """A TUN device stand-in that has `packets` queued, then nothing (EAGAIN)."""

    fd = 0

    def __init__(self, packets: list[bytes]) -> None:
        self.queue = list(packets)

    def read(self) -> bytes:
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)


@pytest.mark.parametrize("use_gso", [True, False])
def test_burst_leaves_in_order_with_increasing_sequence_numbers(udp_pair, monkeypatch, use_gso):
    a, b = udp_pair
    inner = [ipv4(1400 if i % 7 else 200, i) for i in range(3 * BATCH + 5)]
    tun = BurstTun(inner)
    monkeypatch.setattr("client.dataplane.os.read", lambda fd, n: tun.read())
    peer = EspInbound(0x51, EncrId.AES_GCM_16, 256, KEY)
    seqs: list[int] = []
    got: list[bytes] = []
    loop = asyncio.new_event_loop()
    try:
        dp = DataPlane(loop, tun, a.send, (lambda: a) if use_gso else None)  # type: ignore[arg-type]
        dp.install(EspOutbound(0x51, EncrId.AES_GCM_16, 256, KEY),
                   EspInbound(0x52, EncrId.AES_GCM_16, 256, KEY))
        while tun.queue:
            before = dp.packets_out
            dp._on_tun_readable()  # what one readiness event of the TUN device runs
            for _ in range(dp.packets_out - before):  # (a batch fits the receive buffer)
                esp = b.recv(65535)
                seqs.append(struct.unpack(">I", esp[4:8])[0])
                got.append(peer.decapsulate(esp))
    finally:
        loop.close()
    assert dp.packets_out == len(inner) and dp.dropped == 0
    assert seqs == list(range(1, len(inner) + 1))
    assert got == inner
