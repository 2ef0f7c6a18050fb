"""An ICMP echo probe that tells a tunnel outage from a paused machine.

`ping`'s reply timestamps alone cannot: on a shared two-core machine the whole box (the
probe included) sometimes stalls for seconds, and a stretch without replies then only
means that no requests were sent. This probe records, per request, the wall-clock time
it was really sent and the kernel's receive timestamp (SO_TIMESTAMPNS) of its reply.
Sequence numbers count requests actually sent: a slot missed because the probe was not
scheduled is skipped, not sent late in a burst, and shows up as a long send interval
(`max_send_interval`), never as a loss.

From that:
- loss: requests sent that were never answered;
- tunnel gap: the time between the sends of two consecutive answered requests that have
  unanswered requests between them (the span during which the tunnel delivered nothing
  although requests went in);
- RTT per answered request.

Run inside a namespace as root: `python3 -m tests.lab.icmp_probe DEST --interval 0.1
--seconds 60` prints one JSON object ({"sent": [[seq, t]], "recv": [[seq, t]]}).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

ECHO_REQUEST, ECHO_REPLY = 8, 0
SO_TIMESTAMPNS = 35  # linux/asm-generic/socket.h; Python has no constant for it
_TIMESPEC = struct.Struct("@qq")
PAYLOAD = b"vpnclient-probe".ljust(48, b".")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
    csum = _checksum(header + PAYLOAD)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, csum, ident, seq & 0xFFFF) + PAYLOAD


def probe(dest: str, interval: float, seconds: float, wait: float) -> dict:
    """Echo requests to `dest` every `interval` s for `seconds`, then `wait` s more for
    late replies. Returns {"sent": [[seq, time]], "recv": [[seq, kernel time]]}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    recv: dict[int, float] = {}
    start = time.monotonic()
    end = start + seconds
    slot = 0
    seq = 0
    while True:
        now = time.monotonic()
        if now >= end + wait:
            break
        due = start + slot * interval
        if now >= due and now < end:
            # Missed slots (the probe was not scheduled) are skipped: no burst.
            slot = int((now - start) / interval) + 1
            seq += 1
            sent[seq] = time.time()
            try:
                sock.sendto(_echo(ident, seq), (dest, 0))
            except OSError:
                pass  # counted as sent and unanswered: a route that is gone is an outage
            continue
        timeout = (due if now < end else end + wait) - now
        ready, _, _ = select.select([sock], [], [], max(0.0, timeout))
        if ready:
            _read_replies(sock, dest, ident, seq, recv)
    sock.close()
    return {"sent": sorted(sent.items()), "recv": sorted(recv.items())}


def _read_replies(sock: socket.socket, dest: str, ident: int, last_seq: int,
                  recv: dict[int, float]) -> None:
    while True:
        try:
            data, ancdata, _, addr = sock.recvmsg(2048, 64)
        except BlockingIOError:
            return
        if addr[0] != dest or len(data) < 28:
            continue
        ihl = (data[0] & 0x0F) * 4
        icmp_type, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
        if icmp_type != ECHO_REPLY or rid != ident:
            continue
        stamp = time.time()
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack(value[:_TIMESPEC.size])
                stamp = sec + nsec / 1e9
        # The 16-bit sequence number wraps after ~1.8 h at 100 ms: unwrap near last_seq.
        full = last_seq - ((last_seq - rseq) & 0xFFFF)
        if full > 0:
            recv.setdefault(full, stamp)


@dataclass
class Gap:
    seconds: float  # from the send of the last answered request before to the next one
    start: float  # wall-clock send time of the last answered request before it
    lost: int  # unanswered requests in between


@dataclass
class ProbeResult:
    sent: dict[int, float]
    recv: dict[int, float]
    gaps: list[Gap] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> ProbeResult:
        data = json.loads(text)
        result = cls({int(s): t for s, t in data["sent"]}, {int(s): t for s, t in data["recv"]})
        result.gaps = result._gaps()
        return result

    def _gaps(self) -> list[Gap]:
        gaps: list[Gap] = []
        seqs = sorted(self.sent)
        prev: int | None = None  # last answered request
        missing = 0
        for seq in seqs:
            if seq not in self.recv:
                missing += 1
                continue
            if missing:
                begin = self.sent[prev] if prev is not None else self.sent[seqs[0]]
                gaps.append(Gap(self.sent[seq] - begin, begin, missing))
            prev, missing = seq, 0
        if missing and seqs:  # unanswered to the end
            begin = self.sent[prev] if prev is not None else self.sent[seqs[0]]
            gaps.append(Gap(self.sent[seqs[-1]] - begin, begin, missing))
        return gaps

    @property
    def lost(self) -> list[int]:
        return [s for s in sorted(self.sent) if s not in self.recv]

    @property
    def loss(self) -> float:
        """Fraction of the requests sent that were never answered."""
        return len(self.lost) / len(self.sent) if self.sent else 1.0

    @property
    def max_gap(self) -> float:
        return max((g.seconds for g in self.gaps), default=0.0)

    @property
    def max_rtt(self) -> float:
        return max((t - self.sent[s] for s, t in self.recv.items() if s in self.sent),
                   default=0.0)

    @property
    def max_send_interval(self) -> float:
        """The longest time between two requests sent: the probe (machine) paused."""
        times = [self.sent[s] for s in sorted(self.sent)]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def summary(self) -> str:
        return (f"{len(self.sent)} sent, {len(self.lost)} unanswered "
                f"({100 * self.loss:.2f} %, seqs {self.lost[:12]}), max tunnel gap "
                f"{self.max_gap:.2f} s, max RTT {1000 * self.max_rtt:.0f} ms, longest "
                f"send interval {self.max_send_interval:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab.icmp_probe")
    parser.add_argument("dest")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--wait", type=float, default=2.0, help="for late replies")
    args = parser.parse_args(argv)
    json.dump(probe(args.dest, args.interval, args.seconds, args.wait), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
