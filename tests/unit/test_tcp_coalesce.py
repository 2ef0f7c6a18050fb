"""TCP receive coalescing for TUN writes: what merges, what passes, that every flow's bytes
come out as they went in with valid checksums, and that a real kernel takes the result."""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field

import pytest

from client.tcp_coalesce import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN,
    VNET_HDR,
    VNET_HDR_LEN,
    Merged,
    coalesce,
)
from tests.unit.test_netconf import netns, run_in

A4, B4 = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
A6, B6 = bytes.fromhex("20010db8000000000000000000000002"), bytes.fromhex(
    "20010db8000000000000000000000001")
ACK, PSH, FIN, SYN, RST, URG, ECE, CWR = 0x10, 0x08, 0x01, 0x02, 0x04, 0x20, 0x40, 0x80
TIMESTAMPS = bytes([1, 1, 8, 10]) + struct.pack(">II", 12345, 678)


def csum(data: bytes) -> int:
    """RFC 1071, the plain way."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@dataclass
class Flow:
    v6: bool = False
    sport: int = 40000
    dport: int = 5201
    seq: int = 1000
    ack: int = 7777
    window: int = 502
    options: bytes = b""
    ip_id: int = 100
    ttl: int = 64
    tos: int = 0
    df: bool = True
    sent: list[bytes] = field(default_factory=list)

    def segment(self, payload: bytes, flags: int = ACK, advance: bool = True,
                ip_id: int | None = None) -> bytes:
        p = tcp_packet(self, self.seq, payload, flags,
                       self.ip_id if ip_id is None else ip_id)
        if advance:
            self.seq = (self.seq + len(payload)) & 0xFFFFFFFF
            self.ip_id = (self.ip_id + 1) & 0xFFFF
        return p


def tcp_packet(f: Flow, seq: int, payload: bytes, flags: int, ip_id: int) -> bytes:
    thl = 20 + len(f.options)
    th = struct.pack(">HHIIBBHHH", f.sport, f.dport, seq, f.ack, (thl // 4) << 4, flags,
                     f.window, 0, 0) + f.options
    src, dst = (A6, B6) if f.v6 else (A4, B4)
    pseudo = src + dst + struct.pack(">IxxxB", thl + len(payload), 6)
    th = th[:16] + struct.pack(">H", 0xFFFF - csum(pseudo + th + payload)) + th[18:]
    if f.v6:
        ip = struct.pack(">IHBB", 0x60000000 | f.tos << 20, thl + len(payload), 6, f.ttl)
        return ip + src + dst + th + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, f.tos, 20 + thl + len(payload), ip_id,
                     0x4000 if f.df else 0, f.ttl, 6, 0, src, dst)
    ip = ip[:10] + struct.pack(">H", 0xFFFF - csum(ip)) + ip[12:]
    return ip + th + payload


def buffers(items: list[bytes | Merged]) -> list[bytes]:
    return [i if isinstance(i, bytes) else i.data for i in items]


def tcp_valid(packet: bytes) -> bool:
    ihl = 20 if packet[0] >> 4 == 4 else 40
    addresses = packet[12:20] if ihl == 20 else packet[8:40]
    seg = packet[ihl:]
    return csum(addresses + struct.pack(">IxxxB", len(seg), 6) + seg) == 0xFFFF


def segments(buf: bytes) -> list:
    """What the kernel makes of one written buffer, after the checks it would do: the
    packet itself, or ("seg", headers, seq, payload) for each segment it stands for."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack(
        buf[:VNET_HDR_LEN])
    p = buf[VNET_HDR_LEN:]
    if gso_type == GSO_NONE:
        assert buf[:VNET_HDR_LEN] == PLAIN
        return [p]
    assert flags == 0 and (csum_start, csum_offset) == (0, 0)
    v6 = gso_type == GSO_TCPV6
    ihl = 40 if v6 else 20
    assert gso_type == (GSO_TCPV6 if v6 else GSO_TCPV4) and p[0] >> 4 == (6 if v6 else 4)
    if v6:
        assert struct.unpack(">H", p[4:6])[0] + 40 == len(p)
    else:
        assert struct.unpack(">H", p[2:4])[0] == len(p)
        assert csum(p[:20]) == 0xFFFF, "IPv4 header checksum"
    assert tcp_valid(p), "TCP checksum of the super-packet"
    assert len(p) <= 65535
    thl = (p[ihl + 12] >> 4) * 4
    assert hdr_len == ihl + thl
    payload = p[hdr_len:]
    assert len(payload) > gso_size > 0
    seq0 = struct.unpack(">I", p[ihl + 4:ihl + 8])[0]
    return [("seg", p[:hdr_len], (seq0 + off) & 0xFFFFFFFF, payload[off:off + gso_size])
            for off in range(0, len(payload), gso_size)]


def flow_key(p: bytes) -> bytes | None:
    if len(p) >= 40 and p[0] == 0x45 and p[9] == 6:
        return p[12:24]
    if len(p) >= 60 and p[0] >> 4 == 6 and p[6] == 6:
        return p[8:44]
    return None


def stream_view(packets: list[bytes]) -> dict[bytes | None, list[tuple[int, bytes]]]:
    """Per TCP flow, the (seq, payload) of each data segment in order; None: the rest."""
    flows: dict[bytes | None, list] = {}
    for p in packets:
        key = flow_key(p)
        if key is None:
            flows.setdefault(None, []).append(p)
            continue
        ihl = 20 if p[0] == 0x45 else 40
        hlen = ihl + (p[ihl + 12] >> 4) * 4
        flows.setdefault(key, []).append((struct.unpack(">I", p[ihl + 4:ihl + 8])[0],
                                          p[hlen:]))
    return flows


def written_view(items: list[bytes | Merged]) -> dict[bytes | None, list[tuple[int, bytes]]]:
    flows: dict[bytes | None, list] = {}
    for buf in buffers(items):
        segs = segments(buf)
        if isinstance(segs[0], bytes):
            for k, v in stream_view(segs).items():
                flows.setdefault(k, []).extend(v)
            continue
        key = flow_key(segs[0][1])
        flows.setdefault(key, []).extend((seq, data) for _, _, seq, data in segs)
    return flows


# -- hand-built streams -------------------------------------------------------------------
@pytest.mark.parametrize("v6", [False, True])
def test_a_burst_becomes_64k_super_packets_with_valid_headers(v6):
    f = Flow(v6=v6, options=TIMESTAMPS)
    data = os.urandom(1388 * 60 + 500)
    packets = [f.segment(data[i:i + 1388], ACK) for i in range(0, 1388 * 60, 1388)]
    packets.append(f.segment(data[1388 * 60:], ACK | PSH))
    items = coalesce(packets)
    assert all(isinstance(i, Merged) for i in items)
    hlen = (40 if v6 else 20) + 32
    per = (65535 - hlen) // 1388
    assert [len(i.segments) for i in items] == [per, 61 - per]  # type: ignore[union-attr]
    assert [s for i in items for s in i.segments] == packets  # type: ignore[union-attr]
    for item in items:
        flags, gso_type, hdr_len, gso_size, _, _ = VNET_HDR.unpack(item.data[:10])  # type: ignore[union-attr]
        assert (gso_type, hdr_len, gso_size) == (GSO_TCPV6 if v6 else GSO_TCPV4, hlen, 1388)
    assert written_view(items) == stream_view(packets)
    ihl = 40 if v6 else 20
    first, last = (i.data[VNET_HDR_LEN:] for i in items)  # type: ignore[union-attr]
    assert first[ihl + 13] == ACK and last[ihl + 13] == ACK | PSH  # PSH only at the end
    assert b"".join(d for _, d in written_view(items)[flow_key(packets[0])]) == data


def test_odd_segment_size_keeps_a_valid_checksum():
    f = Flow()
    packets = [f.segment(os.urandom(1371)) for _ in range(9)] + [f.segment(b"x" * 3)]
    (item,) = coalesce(packets)
    assert isinstance(item, Merged) and len(item.segments) == 10
    assert written_view([item]) == stream_view(packets)


def test_a_corrupted_segment_keeps_the_super_packet_checksum_wrong():
    """The merged checksum is derived from the segments' own: damage that happened before
    the gateway encrypted a segment is still caught by the kernel."""
    f = Flow()
    packets = [f.segment(os.urandom(1400)) for _ in range(5)]
    bad = bytearray(packets[3])
    bad[200] ^= 0x40
    packets[3] = bytes(bad)
    (item,) = coalesce(packets)
    assert isinstance(item, Merged)
    assert not tcp_valid(item.data[VNET_HDR_LEN:])


def run_lengths(packets: list[bytes]) -> list[int]:
    return [len(i.segments) if isinstance(i, Merged) else 1 for i in coalesce(packets)]


@pytest.mark.parametrize("flags", [FIN | ACK, SYN | ACK, RST | ACK, URG | ACK, ECE | ACK,
                                   CWR | ACK, PSH, 0])
def test_segments_with_other_flags_are_not_merged_and_end_the_run(flags):
    f = Flow()
    packets = [f.segment(b"a" * 1000) for _ in range(3)]
    packets.append(f.segment(b"b" * 1000, flags))
    packets += [f.segment(b"c" * 1000) for _ in range(3)]
    assert run_lengths(packets) == [3, 1, 3]
    assert coalesce(packets)[1] == PLAIN + packets[3]


@pytest.mark.parametrize("change", ["ack", "window", "options", "ttl", "tos", "gap", "bigger",
                                    "pure-ack", "ip-id"])
def test_a_header_difference_starts_a_new_run(change):
    f = Flow(options=TIMESTAMPS)
    packets = [f.segment(b"a" * 1000) for _ in range(3)]
    size = 1000
    if change == "ack":
        f.ack += 1
    elif change == "window":
        f.window += 1
    elif change == "options":
        f.options = TIMESTAMPS[:-1] + b"\x07"
    elif change == "ttl":
        f.ttl -= 1
    elif change == "tos":
        f.tos = 0x10
    elif change == "gap":
        f.seq += 1
    elif change == "bigger":
        size = 1001
    elif change == "ip-id":
        f.ip_id += 5
    if change == "pure-ack":
        packets.append(f.segment(b""))
        packets += [f.segment(b"a" * 1000) for _ in range(2)]
        assert run_lengths(packets) == [3, 1, 2]
    else:
        packets += [f.segment(b"b" * size) for _ in range(2)]
        assert run_lengths(packets) == [3, 2]
    assert written_view(coalesce(packets)) == stream_view(packets)


def test_psh_ends_the_run_and_stays_on_its_last_segment():
    f = Flow()
    packets = [f.segment(b"a" * 1000), f.segment(b"a" * 1000), f.segment(b"a" * 1000, ACK | PSH),
               f.segment(b"b" * 1000), f.segment(b"b" * 1000)]
    items = coalesce(packets)
    assert run_lengths(packets) == [3, 2]
    assert [i.data[VNET_HDR_LEN + 33] for i in items] == [ACK | PSH, ACK]  # type: ignore[union-attr]
    assert written_view(items) == stream_view(packets)


def test_a_shorter_segment_ends_the_run():
    f = Flow()
    packets = [f.segment(b"a" * 1000), f.segment(b"a" * 1000), f.segment(b"a" * 10),
               f.segment(b"a" * 1000), f.segment(b"a" * 1000)]
    assert run_lengths(packets) == [3, 2]


def test_ip_id_rules():
    f = Flow()
    fixed = [f.segment(b"a" * 100, ip_id=9) for _ in range(4)]
    assert run_lengths(fixed) == [4]  # fixed ID with DF: as Linux, merged
    f = Flow(df=False)
    fixed_no_df = [f.segment(b"a" * 100, ip_id=9) for _ in range(4)]
    assert run_lengths(fixed_no_df) == [1, 1, 1, 1]
    f = Flow()
    mixed = [f.segment(b"a" * 100, ip_id=i) for i in (1, 2, 2, 3, 7)]
    assert run_lengths(mixed) == [2, 2, 1]


def test_ipv6_flow_label_and_hop_limit_must_match():
    f = Flow(v6=True)
    packets = [f.segment(b"a" * 500) for _ in range(2)]
    f.ttl = 3
    packets += [f.segment(b"a" * 500) for _ in range(2)]
    assert run_lengths(packets) == [2, 2]


def test_other_traffic_passes_unchanged_and_flows_interleave():
    f, g = Flow(), Flow(v6=True, sport=40001)
    udp = bytes.fromhex("450000210000400040110000c6120002c6120001") + bytes(13)
    icmp6 = bytes.fromhex("6000000000083a40") + A6 + B6 + bytes(8)
    packets = []
    for i in range(10):
        packets += [f.segment(b"f" * 1200), g.segment(b"g" * 1100)]
        if i == 4:
            packets += [udp, icmp6]
    items = coalesce(packets)
    assert run_lengths(packets) == [10, 10, 1, 1]
    assert items[2:] == [PLAIN + udp, PLAIN + icmp6]
    assert written_view(items) == stream_view(packets)


def test_fragments_and_extension_headers_keep_their_place():
    """A packet whose flow cannot be told (an IPv4 fragment, IPv6 with an extension
    header) may be TCP of any flow: no segment that came after it moves before it."""
    f = Flow()
    frag = bytearray(f.segment(b"x" * 200, advance=False))
    frag[6] |= 0x20  # more fragments
    frag = bytes(frag)
    ext6 = bytes.fromhex("6000000000080040") + A6 + B6 + bytes([6, 0]) + bytes(6)
    packets = [f.segment(b"a" * 800) for _ in range(3)] + [frag]
    packets += [f.segment(b"a" * 800) for _ in range(3)] + [ext6]
    packets += [f.segment(b"a" * 800) for _ in range(3)]
    assert run_lengths(packets) == [3, 1, 3, 1, 3]


# -- random streams -------------------------------------------------------------------------
def random_batch(rng: random.Random) -> list[bytes]:
    flows = [Flow(v6=rng.random() < 0.5, sport=40000 + i, seq=rng.getrandbits(32),
                  options=rng.choice([b"", TIMESTAMPS]), ip_id=rng.getrandbits(16))
             for i in range(rng.randint(1, 4))]
    mss = {id(f): rng.choice([1200, 1371, 1388, 1400, 536]) for f in flows}
    packets = []
    for _ in range(rng.randint(1, 150)):
        f = rng.choice(flows)
        r = rng.random()
        if r < 0.03:
            f.ack += rng.randint(1, 3000)
        if r < 0.02:
            packets.append(f.segment(b"", ACK))  # a pure ACK
        elif r < 0.03:
            packets.append(f.segment(os.urandom(rng.randint(1, 50)), ACK | PSH))
        elif r < 0.04:
            packets.append(bytes.fromhex("4500002c000040004001") + os.urandom(34))
        elif r < 0.05:
            packets.append(os.urandom(rng.randint(0, 80)))
        elif r < 0.06:  # a retransmission of something old
            packets.append(f.segment(os.urandom(mss[id(f)]), advance=False))
            f.seq = (f.seq + rng.randint(-5000, 0)) & 0xFFFFFFFF
        else:
            short = rng.random() < 0.05
            payload = os.urandom(rng.randint(1, mss[id(f)]) if short else mss[id(f)])
            packets.append(f.segment(payload, ACK | (PSH if rng.random() < 0.05 else 0)))
    return packets


@pytest.mark.parametrize("seed", range(40))
def test_random_batches_keep_every_flow_intact_and_in_order(seed):
    rng = random.Random(seed)
    packets = random_batch(rng)
    items = coalesce(packets)
    assert written_view(items) == stream_view(packets)
    merged = [s for i in items if isinstance(i, Merged) for s in i.segments]
    plain = [i[VNET_HDR_LEN:] for i in items if isinstance(i, bytes)]
    assert sorted(merged + plain) == sorted(packets)  # each packet exactly once


def test_malformed_input_never_raises():
    rng = random.Random(7)
    good = [Flow().segment(os.urandom(300)), Flow(v6=True).segment(os.urandom(300))]
    for _ in range(3000):
        p = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(p))
            if rng.random() < 0.5:
                p[i] = rng.randrange(256)
            else:
                del p[i:]
                if not p:
                    break
        batch = [rng.choice(good), bytes(p), bytes(p), rng.choice(good)]
        items = coalesce(batch)
        assert sum(len(i.segments) if isinstance(i, Merged) else 1 for i in items) == 4
    assert coalesce([b"", b"\x45", bytes(39), bytes(60)]) == [PLAIN, PLAIN + b"\x45",
                                                             PLAIN + bytes(39),
                                                             PLAIN + bytes(60)]


# -- a real kernel --------------------------------------------------------------------------
KERNEL = """
import os, select, socket, struct
from client.tun import TunDevice
from tests.unit.test_tcp_coalesce import ACK, PSH, SYN, Flow

V6 = {v6}
tun = TunDevice.open("gro%d")
assert tun.vnet_hdr
local, peer = ("2001:db8::1", "2001:db8::2") if V6 else ("198.18.0.1", "198.18.0.2")
if V6:
    sh("ip", "addr", "add", local + "/64", "dev", tun.name, "nodad")
else:
    sh("ip", "addr", "add", local, "peer", peer, "dev", tun.name)
sh("ip", "link", "set", tun.name, "up")
srv = socket.socket(socket.AF_INET6 if V6 else socket.AF_INET)
srv.bind((local, 7000))
srv.listen()

def read_tcp():
    while True:
        assert select.select([tun.fd], [], [], 3)[0], "nothing from the kernel"
        p = tun.read()
        if p and (p[6] if V6 else p[9]) == 6:
            return p

f = Flow(v6=V6, sport=40000, dport=7000, seq=1000, ack=0, window=65000)
tun.write(f.segment(b"", SYN, advance=False))
ihl = 40 if V6 else 20
synack = read_tcp()
assert synack[ihl + 13] == SYN | ACK
f.seq, f.ack = 1001, struct.unpack(">I", synack[ihl + 4:ihl + 8])[0] + 1
tun.write(f.segment(b""))
conn, _ = srv.accept()
conn.settimeout(3)
data = os.urandom(1299 * 40 + 99)  # an odd segment size, to be thorough
chunks = [data[i:i + 1299] for i in range(0, len(data), 1299)]
segs = [f.segment(c, ACK if i < len(chunks) - 1 else ACK | PSH) for i, c in enumerate(chunks)]
writes, merged = tun.writes, tun.merged
assert tun.write_batch(segs) == (0, 0, None)
assert tun.merged - merged == 1 and tun.writes - writes == 1, (tun.writes, tun.merged)
got = b""
while len(got) < len(data):
    x = conn.recv(65536)
    assert x
    got += x
assert got == data
# the point of it all: one ACK (perhaps window updates) instead of one per 2 segments
acks = 0
while select.select([tun.fd], [], [], 0.3)[0]:
    acks += bool(tun.read())
assert 1 <= acks <= 4, acks
print("ok")
"""


@pytest.mark.parametrize("v6", [False, True])
def test_a_real_kernel_takes_a_coalesced_write(v6):
    with netns() as ns:
        assert "ok" in run_in(ns, KERNEL.format(v6=v6), timeout=60)
