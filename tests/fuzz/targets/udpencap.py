"""UDP encapsulation (RFC 3948): non-ESP marker, NAT-keepalive and ESP on one port.

classify() must sort every datagram the way RFC 3948 2.2/2.3 says, never raise.
"""

from __future__ import annotations

import random

from client.esp.udpencap import KEEPALIVE, NON_ESP_MARKER, classify, ike_datagram
from tests.fuzz.engine import Target
from tests.fuzz.mutate import mutate_bytes

_SEEDS = (KEEPALIVE, NON_ESP_MARKER, NON_ESP_MARKER + b"\x01", ike_datagram(bytes(28)),
          bytes.fromhex("c0ffee0100000001") + bytes(40), b"", b"\x00", b"\x00\x00\x00",
          b"\xff\xff", bytes(8))


def model(d: bytes) -> tuple[str, bytes]:
    if d == b"\xff":
        return "keepalive", b""
    if d[:4] == b"\0\0\0\0":
        return ("ike", d[4:]) if len(d) > 4 else ("invalid", b"")
    return ("esp", d) if len(d) >= 8 else ("invalid", b"")


class UdpEncapTarget(Target):
    name = "udpencap"
    expected = ()

    def generate(self, rng: random.Random) -> bytes:
        d = rng.choice(_SEEDS)
        return mutate_bytes(rng, d) if rng.random() < 0.8 else rng.randbytes(rng.randrange(12))

    def run(self, data: bytes) -> None:
        got = classify(data)
        assert got == model(data), f"classify({data[:16].hex()}) = {got[0]}"
        if got[0] == "ike":
            assert ike_datagram(got[1]) == data


TARGET_CLASS = UdpEncapTarget
