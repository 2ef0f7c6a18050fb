"""TCP receive coalescing for TUN writes (sans-I/O): what Linux GRO does on a NIC.

A batch of inner packets from the gateway becomes the list of buffers to write to a TUN
device opened with IFF_VNET_HDR: consecutive segments of one TCP flow are merged into one
"super-packet" (up to 64 KB) behind a virtio_net_hdr that tells the kernel how to see it
as the original segments (gso_type TCPV4/TCPV6, gso_size = their size); every other
packet goes through unchanged behind a zero header. The kernel's TCP then runs once per
super-packet and acknowledges it once, instead of every second ~1400-byte segment, and
each ACK spared is a packet our upload path does not have to encrypt and send.

What merges is what tcp_gro_receive() would merge: same addresses, ports, TOS/traffic
class, TTL/hop limit (and IPv6 flow label); IPv4 without options or fragmentation, its ID
incrementing by one (or fixed, with DF); IPv6 without extension headers; TCP flags ACK
only (PSH allowed on the last segment, which ends the run); equal ack number, window and
option bytes; contiguous sequence numbers; every segment the size of the first except a
shorter last one (which ends the run); at most 65535 bytes of IP packet. A packet that
does not fit ends its flow's run, so the order of packets within a flow never changes.
Malformed packets go through untouched (the kernel drops them).

Checksums: the merged packet carries a real TCP checksum, derived from the segments' own
checksum fields and headers (no payload byte is summed here, RFC 1071 arithmetic modulo
0xffff), and the header asks for no checksum offload. So the kernel verifies it over the
whole super-packet at C speed, and a segment corrupted before the gateway encrypted it
still fails the check (the super-packet is dropped and TCP retransmits), as with a
checksum-validating NIC. The IPv4 header checksum is recomputed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VNET_HDR_LEN = 10  # struct virtio_net_hdr (no num_buffers: no IFF_VNET_HDR_SZ change)
GSO_NONE, GSO_TCPV4, GSO_TCPV6 = 0, 1, 4
F_NEEDS_CSUM = 1
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; the TUN device's vnet
# header is in host byte order unless TUNSETVNETLE/BE says otherwise.
VNET_HDR = struct.Struct("=BBHHHH")
PLAIN = bytes(VNET_HDR_LEN)  # "no GSO, checksum complete": an ordinary packet

MAX_IP_LEN = 65535
_ACK, _PSH = 0x10, 0x08
_M = 0xFFFF  # 2**16 == 1 (mod 0xffff): a big-endian int of even length is its word sum


@dataclass(frozen=True, slots=True)
class Merged:
    """A coalesced super-packet (behind its header) and the segments it was made of."""

    data: bytes
    segments: list[bytes]


class _Run:
    """Segments of one flow being merged: the first one and the payloads after it."""

    __slots__ = ("first", "ihl", "hlen", "size", "next_seq", "length", "ip_id", "id_step",
                 "segments", "payloads", "sums", "last_flags")

    def __init__(self, first: bytes, ihl: int, hlen: int, seq: int, ip_id: int) -> None:
        self.first = first
        self.ihl = ihl  # IP header length
        self.hlen = hlen  # IP + TCP header length
        self.size = len(first) - hlen  # gso_size: the payload of every segment but the last
        self.next_seq = (seq + self.size) & 0xFFFFFFFF
        self.length = len(first)
        self.ip_id = ip_id
        self.id_step = -1  # IPv4 ID per segment: 1 (incrementing) or 0 (fixed); -1 unknown
        self.segments = [first]
        self.payloads: list[memoryview] = []  # of the segments after the first
        self.sums: list[int] = []  # their TCP header + length sums (for the checksum)
        self.last_flags = first[ihl + 13]


def coalesce(packets: list[bytes]) -> list[bytes | Merged]:
    """What to write for `packets` (in order): each packet that stays alone behind a zero
    virtio_net_hdr, and each run of merged segments as a Merged."""
    out: list[bytes | _Run] = []
    runs: dict[bytes, _Run] = {}  # open run per flow (addresses and ports)
    for p in packets:
        n = len(p)
        version = p[0] >> 4 if n else 0
        if version == 4 and n >= 20:
            if p[9] != 6:  # not TCP
                out.append(PLAIN + p)
                continue
            if (p[0] != 0x45 or n < 40 or p[6] & 0xBF or p[7]
                    or (p[2] << 8 | p[3]) != n):
                # IP options, a fragment, a reserved bit, trailing bytes, no room for
                # data: not merged, and as its flow cannot be told cheaply, no run may
                # overtake it
                runs.clear()
                out.append(PLAIN + p)
                continue
            if int.from_bytes(p[:20], "big") % _M:  # bad header checksum: the kernel drops it
                out.append(PLAIN + p)
                continue
            ihl = 20
            key = p[12:24]
        elif version == 6 and n >= 40:
            if p[6] != 6:
                if p[6] not in (17, 58, 59):  # extension headers may hide TCP
                    runs.clear()
                out.append(PLAIN + p)
                continue
            if n < 60 or (p[4] << 8 | p[5]) + 40 != n:
                runs.clear()
                out.append(PLAIN + p)
                continue
            ihl = 40
            key = p[8:44]
        else:
            out.append(PLAIN + p)
            continue
        thl = (p[ihl + 12] >> 4) * 4
        hlen = ihl + thl
        run = runs.get(key)
        flags = p[ihl + 13]
        if thl < 20 or hlen >= n or (flags != _ACK and flags != _ACK | _PSH):
            # no payload, SYN/FIN/RST/URG/ECE/CWR, or a broken header: not merged, and it
            # ends the flow's run so that it stays behind the segments before it
            if run is not None:
                del runs[key]
            out.append(PLAIN + p)
            continue
        seq = int.from_bytes(p[ihl + 4:ihl + 8], "big")
        ip_id = (p[4] << 8 | p[5]) if ihl == 20 else 0
        if run is not None:
            if _extends(run, p, n, ihl, hlen, seq, ip_id):
                run.segments.append(p)
                run.payloads.append(memoryview(p)[hlen:])
                run.sums.append(int.from_bytes(p[ihl:hlen], "big") + n - ihl)
                run.length += n - hlen
                run.next_seq = (seq + n - hlen) & 0xFFFFFFFF
                run.ip_id = ip_id
                run.last_flags = flags
                if flags & _PSH or n - hlen < run.size:
                    del runs[key]
                continue
            del runs[key]
        run = _Run(p, ihl, hlen, seq, ip_id)
        out.append(run)
        if not flags & _PSH:
            runs[key] = run
    return [b if type(b) is bytes else _build(b) for b in out]  # type: ignore[arg-type]


def _extends(run: _Run, p: bytes, n: int, ihl: int, hlen: int, seq: int, ip_id: int) -> bool:
    """Whether segment `p` (of the run's flow) may be appended to `run`."""
    first = run.first
    if (hlen != run.hlen or seq != run.next_seq or n - hlen > run.size
            or run.length + n - hlen > MAX_IP_LEN):
        return False
    t = ihl
    # ack number, data offset, window; then the options
    if p[t + 8:t + 13] != first[t + 8:t + 13] or p[t + 14:t + 16] != first[t + 14:t + 16]:
        return False
    if hlen > t + 20 and p[t + 20:hlen] != first[t + 20:hlen]:
        return False
    if ihl == 20:
        # TOS, DF, TTL as the first; the ID increments by one or (with DF) stays fixed
        if p[1] != first[1] or p[6] != first[6] or p[8] != first[8]:
            return False
        step = (ip_id - run.ip_id) & 0xFFFF
        if run.id_step < 0:
            if step > 1 or (step == 0 and not p[6] & 0x40):
                return False
            run.id_step = step
        elif step != run.id_step:
            return False
    elif p[:4] != first[:4] or p[7] != first[7]:  # traffic class, flow label, hop limit
        return False
    return True


def _build(run: _Run) -> bytes | Merged:
    """The merged packet of `run` behind its GSO header (a lone segment goes as it came)."""
    first, ihl, hlen = run.first, run.ihl, run.hlen
    if not run.payloads:
        return PLAIN + first
    total = run.length
    if ihl == 20:
        iph = bytearray(first[:20])
        iph[2:4] = total.to_bytes(2, "big")
        iph[10:12] = b"\0\0"
        iph[10:12] = (_M - int.from_bytes(iph, "big") % _M).to_bytes(2, "big")
        gso_type = GSO_TCPV4
    else:
        iph = bytearray(first[:40])
        iph[4:6] = (total - 40).to_bytes(2, "big")
        gso_type = GSO_TCPV6
    addrs = int.from_bytes(first[ihl - (8 if ihl == 20 else 32):ihl], "big") + 6
    # A segment's payload sums to minus the rest of the data its checksum covers (were the
    # payload damaged, the merged checksum is as wrong as the segment's); a payload that
    # lands at an odd offset of the merged one is byte-swapped: times 256 modulo 0xffff.
    odd = run.size & 1
    x = int.from_bytes(first[ihl:hlen], "big") + len(first) - ihl + addrs
    payload = -x
    for i, s in enumerate(run.sums, 1):
        part = -(s + addrs)
        payload += part * 256 if odd and i & 1 else part
    tcph = bytearray(first[ihl:hlen])
    tcph[13] = run.last_flags
    tcph[16:18] = b"\0\0"
    x = int.from_bytes(tcph, "big") + total - ihl + addrs + payload
    tcph[16:18] = (_M - x % _M).to_bytes(2, "big")
    hdr = VNET_HDR.pack(0, gso_type, hlen, run.size, 0, 0)
    return Merged(b"".join((hdr, iph, tcph, memoryview(first)[hlen:], *run.payloads)),
                  run.segments)
