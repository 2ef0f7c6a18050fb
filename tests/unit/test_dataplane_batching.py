"""Batching both ways: UDP GSO runs, and a burst from the TUN device leaving as ESP packets
with strictly increasing sequence numbers that the peer accepts, in order, intact (under
overload too, when the data plane sheds large packets and spares small ones); and
inbound, the inner packets of one socket drain written to the TUN device together (and
coalesced there) when the drain ends, never later."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Iterator

import pytest

from client import transport
from client.dataplane import BACKLOG_LIMIT, BATCH, BULK_LIMIT, SMALL, DataPlane
from client.esp.sa import EspInbound, EspOutbound
from client.esp.selectors import InboundPolicy
from client.ikev2.constants import EncrId
from client.tun import TunDevice
from client.udpgso import GsoSender, runs
from tests.unit.test_tcp_coalesce import Flow

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

    def read(self, max_size: int = 65535) -> bytes:
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)


def burst_plane(loop, tun, send, natt_socket=None) -> DataPlane:
    dp = DataPlane(loop, tun, send, natt_socket)
    dp.install(EspOutbound(0x51, EncrId.AES_GCM_16, 256, KEY),
               EspInbound(0x52, EncrId.AES_GCM_16, 256, KEY), InboundPolicy.any())
    return dp


@pytest.mark.parametrize("use_gso", [True, False])
def test_burst_leaves_in_order_with_increasing_sequence_numbers(udp_pair, monkeypatch, use_gso):
    a, b = udp_pair
    inner = [ipv4(1400 if i % 7 else 200, i) for i in range(3 * BATCH + 5)]
    tun = BurstTun(inner)
    peer = EspInbound(0x51, EncrId.AES_GCM_16, 256, KEY)
    seqs: list[int] = []
    got: list[bytes] = []
    loop = asyncio.new_event_loop()
    try:
        dp = burst_plane(loop, tun, a.send, (lambda: a) if use_gso else None)  # type: ignore[arg-type]
        while tun.queue or dp.backlog:
            before = dp.packets_out
            dp._on_tun_readable()  # one turn: the device read dry, BATCH packets sent
            assert tun.queue == [] and dp.packets_out - before <= BATCH
            for _ in range(dp.packets_out - before):  # (a batch fits the receive buffer)
                esp = b.recv(65535)
                seqs.append(struct.unpack(">I", esp[4:8])[0])
                got.append(peer.decapsulate(esp))
    finally:
        loop.close()
    assert dp.packets_out == len(inner) and dp.dropped == 0
    assert seqs == list(range(1, len(inner) + 1))
    assert got == inner


def run_turns(dp: DataPlane) -> None:
    while dp.backlog:
        dp._on_tun_readable()


def test_overload_sheds_large_packets_and_spares_small_ones():
    """Past BULK_LIMIT large packets waiting, further large ones are dropped (as the
    kernel's full queue would drop anything); small ones still get in. What is sent keeps
    its order, and its sequence numbers have no holes."""
    sent: list[bytes] = []
    small = [ipv4(84, 10_000 + i) for i in range(20)]
    large = [ipv4(1400, i) for i in range(BULK_LIMIT + 100)]
    inner = large[:300] + small[:10] + large[300:] + small[10:]
    tun = BurstTun(inner)
    peer = EspInbound(0x51, EncrId.AES_GCM_16, 256, KEY)
    loop = asyncio.new_event_loop()
    try:
        dp = burst_plane(loop, tun, sent.append)  # type: ignore[arg-type]
        dp._on_tun_readable()
        assert tun.queue == [] and len(sent) == BATCH  # read dry, one batch sent
        assert dp.dropped_overload == dp.dropped == 100
        run_turns(dp)
        got = [peer.decapsulate(esp) for esp in sent]
        assert [struct.unpack(">I", esp[4:8])[0] for esp in sent] == \
            list(range(1, len(sent) + 1))
        assert got == [p for p in inner if len(p) <= SMALL or p in large[:BULK_LIMIT]]
        # Room again once the backlog is sent.
        tun.queue = large[:5]
        dp._on_tun_readable()
        assert dp.packets_out == BULK_LIMIT + len(small) + 5 and dp.dropped_overload == 100
    finally:
        loop.close()


def test_a_flood_of_small_packets_is_bounded_too():
    sent: list[bytes] = []
    tun = BurstTun([ipv4(84, i) for i in range(BACKLOG_LIMIT + 20)])
    loop = asyncio.new_event_loop()
    try:
        dp = burst_plane(loop, tun, sent.append)  # type: ignore[arg-type]
        dp._on_tun_readable()
        assert dp.backlog == BACKLOG_LIMIT - BATCH and dp.dropped_overload == 20
        run_turns(dp)
        assert len(sent) == BACKLOG_LIMIT
    finally:
        loop.close()


def test_the_backlog_gets_another_turn_once_the_device_is_empty():
    """A device read dry leaves no readiness event behind: the backlog's next turn is
    scheduled on the loop; stopping the data plane cancels it and drops the backlog."""
    sent: list[bytes] = []
    loop = asyncio.new_event_loop()
    try:
        tun = BurstTun([ipv4(1400, i) for i in range(3 * BATCH)])
        dp = burst_plane(loop, tun, sent.append)  # type: ignore[arg-type]
        dp._on_tun_readable()
        assert len(sent) == BATCH and dp.backlog == 2 * BATCH
        loop.run_until_complete(asyncio.sleep(0.01))  # a few turns of the loop
        assert len(sent) == 3 * BATCH and dp.backlog == 0
        tun.queue = [ipv4(1400, i) for i in range(2 * BATCH)]
        dp._on_tun_readable()
        dp.stop()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert len(sent) == 4 * BATCH and dp.backlog == 0 and dp.dropped == BATCH
    finally:
        loop.close()


class BatchTun:
    """A TUN device stand-in that records what each write_batch() was given."""

    fd = -1

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def write_batch(self, packets: list[bytes]) -> tuple[int, int, OSError | None]:
        self.batches.append(list(packets))
        return 0, 0, None


def tcp_stream(n: int) -> list[bytes]:
    f = Flow()
    return [f.segment(bytes([i]) * 1300) for i in range(n)]


def test_a_drain_is_written_in_one_batch_when_it_ends(udp_pair):
    a, b = udp_pair
    out = EspOutbound(0x52, EncrId.AES_GCM_16, 256, KEY)
    inner = tcp_stream(40) + [ipv4(100, 7)]
    for p in inner:
        a.send(out.encapsulate(p))
    b.setblocking(False)
    tun = BatchTun()
    loop = asyncio.new_event_loop()
    try:
        dp = DataPlane(loop, tun, lambda p: None)  # type: ignore[arg-type]
        dp.install(EspOutbound(0x51, EncrId.AES_GCM_16, 256, KEY),
                   EspInbound(0x52, EncrId.AES_GCM_16, 256, KEY), InboundPolicy.any())
        flushed_at: list[int] = []

        def on_esp(data: bytes) -> None:
            dp.on_esp(data)
            assert tun.batches == []  # nothing is written before the drain ends

        def on_drained() -> None:
            flushed_at.append(len(tun.batches))
            dp.flush()

        transport.drain(b, True, lambda m: None, on_esp, on_drained)
        assert flushed_at == [0] and tun.batches == [inner]
        assert dp.packets_in == len(inner) and dp.bytes_in == sum(map(len, inner))
        dp.flush()  # nothing pending: nothing written
        assert len(tun.batches) == 1
    finally:
        loop.close()


def test_the_batch_is_written_even_when_the_drain_fails(udp_pair):
    a, b = udp_pair
    a.send(b"\0\0\0\0ike")  # IKE on the NAT-T port; its handler fails
    b.setblocking(False)
    drained = []

    def on_ike(message: bytes) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        transport.drain(b, True, on_ike, lambda d: None, lambda: drained.append(1))
    assert drained == [1]


def inbound_plane(loop, tun) -> tuple[DataPlane, EspOutbound]:
    """A data plane on `tun` and the gateway's side of its inbound SA (0x52)."""
    dp = DataPlane(loop, tun, lambda p: None)  # type: ignore[arg-type]
    dp.install(EspOutbound(0x51, EncrId.AES_GCM_16, 256, KEY),
               EspInbound(0x52, EncrId.AES_GCM_16, 256, KEY), InboundPolicy.any())
    return dp, EspOutbound(0x52, EncrId.AES_GCM_16, 256, KEY)


def test_lost_tun_writes_are_counted_as_drops():
    class FullTun(BatchTun):
        def write_batch(self, packets):
            return 2, 300, OSError(105, "No buffer space available")

    loop = asyncio.new_event_loop()
    try:
        tun = FullTun()
        dp, out = inbound_plane(loop, tun)
        for n in (100, 200, 300):
            dp.on_esp(out.encapsulate(ipv4(n, n)))
        dp.flush()
        assert (dp.packets_in, dp.bytes_in, dp.dropped) == (1, 300, 2)
    finally:
        loop.close()


def test_stop_writes_what_is_pending():
    loop = asyncio.new_event_loop()
    try:
        tun = BatchTun()
        dp, out = inbound_plane(loop, tun)
        dp.on_esp(out.encapsulate(ipv4(100, 1)))
        dp.stop()
        assert tun.batches == [[ipv4(100, 1)]] and dp.packets_in == 1
    finally:
        loop.close()


class StubDev:
    """Stands in for pytun's device: TunDevice needs a name and a file descriptor."""

    name = "stub0"

    def fileno(self) -> int:
        return 99

    def close(self) -> None:
        pass


def test_a_refused_coalesced_write_falls_back_to_single_packets(monkeypatch, caplog):
    written: list[bytes] = []

    def write(fd: int, data: bytes) -> int:  # as an old kernel: no GSO writes
        if data[1]:  # gso_type
            raise OSError(errno.EINVAL, "Invalid argument")
        written.append(data)
        return len(data)

    monkeypatch.setattr("client.tun.os.write", write)
    tun = TunDevice(StubDev(), vnet_hdr=True)  # type: ignore[arg-type]
    packets = tcp_stream(30)
    with caplog.at_level(logging.INFO, logger="client.tun"):
        assert tun.write_batch(packets) == (0, 0, None)
        assert tun.write_batch(packets) == (0, 0, None)
    assert not tun.gso and tun.writes == 60 and tun.merged == 0
    assert written == [bytes(10) + p for p in packets + packets]
    assert [r.levelname for r in caplog.records] == ["INFO"]  # said once
