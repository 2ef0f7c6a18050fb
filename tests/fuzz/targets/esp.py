"""ESP decapsulation: packets sealed with the SA's own keys, so the parser past the ICV
sees hostile trailers, pad lengths, next headers and sequence numbers.

An input is: transform index (1 byte), then packets, each a 4-byte length and
SPI || SeqNo || payload-to-seal (the plaintext: inner packet, padding, pad length, next
header) with a 1-byte "seal it" flag in front; an unsealed packet is fed as is.
decapsulate must return bytes or raise EspError; what it returns must be the inner
packet the trailer describes.
"""

from __future__ import annotations

import random
import struct

from client.esp.ciphers import make_transform
from client.esp.errors import EspError
from client.esp.sa import NH_IPV4, NH_IPV6, NH_NONE, EspInbound
from client.ikev2.constants import EncrId, IntegId
from tests.fuzz.engine import Target
from tests.fuzz.mutate import mutate_bytes

SPI = 0xC0FFEE01
# (encr, key bits, encryption key material, integ, integ key)
SUITES = (
    (EncrId.AES_GCM_16, 256, bytes(range(36)), None, None),
    (EncrId.CHACHA20_POLY1305, 256, bytes(range(1, 37)), None, None),
    (EncrId.AES_CBC, 128, bytes(range(16)), IntegId.HMAC_SHA2_256_128, bytes(range(32))),
)
_IPV4 = bytes.fromhex("450000200000400040110000c6120001c6120002") + b"\x00\x35\x00\x35" \
    + b"\x00\x0c\x00\x00" + b"ping"
_IPV6 = bytes.fromhex("6000000000080640") + bytes(16) + bytes(15) + b"\x01" + b"\x00" * 8


def _trailer(inner: bytes, align: int, nh: int) -> bytes:
    pad = -(len(inner) + 2) % align
    return inner + bytes(range(1, pad + 1)) + bytes((pad, nh))


class EspTarget(Target):
    name = "esp"
    expected = (EspError,)

    def __init__(self) -> None:
        self.transforms = [make_transform(e, k, ek, i, ik) for e, k, ek, i, ik in SUITES]

    def generate(self, rng: random.Random) -> bytes:
        suite = rng.randrange(len(SUITES))
        align = self.transforms[suite].align
        out, seq = [], 1
        for _ in range(rng.randint(1, 6)):
            inner, nh = rng.choice(((_IPV4, NH_IPV4), (_IPV6, NH_IPV6), (b"", NH_NONE),
                                    (rng.randbytes(rng.randrange(64)), rng.randrange(256))))
            payload = _trailer(inner, align, nh)
            if rng.random() < 0.8:
                payload = mutate_bytes(rng, payload)
            seq = rng.choice((seq + 1, seq, seq - 1, 1, 0, 0xFFFFFFFF, seq + 1024,
                              seq + 5000, max(0, seq - 1024), rng.randrange(1 << 32)))
            seq &= 0xFFFFFFFF
            spi = SPI if rng.random() < 0.95 else rng.randrange(1 << 32)
            sealed = rng.random() < 0.95
            body = struct.pack(">II", spi, seq) + payload
            if not sealed:
                body = mutate_bytes(rng, body)
            out.append(bytes([sealed]) + body)
        return bytes([suite]) + b"".join(struct.pack("!I", len(p)) + p for p in out)

    def run(self, data: bytes) -> None:
        if not data:
            return
        suite = SUITES[data[0] % len(SUITES)]
        t = self.transforms[data[0] % len(SUITES)]
        sa = EspInbound(SPI, *suite)
        i = 1
        while i + 4 <= len(data):
            (n,) = struct.unpack_from("!I", data, i)
            p, i = data[i + 4:i + 4 + n], i + 4 + n
            if len(p) < 9:
                continue
            sealed, header, payload = p[0], p[1:9], p[9:]
            if sealed & 1:
                if len(payload) % t.align and t.align > 4:
                    payload += bytes(-len(payload) % t.align)  # CBC needs whole blocks
                (seq,) = struct.unpack_from(">I", header, 4)
                packet = header + t.seal(header, seq, payload)
            else:
                packet = p[1:]
            try:
                inner = sa.decapsulate(packet)
            except EspError:
                continue
            if inner:
                assert inner[0] >> 4 in (4, 6), "returned a packet that is not IP"
                # decrypt ourselves: the returned packet must be what the trailer frames
                plain = payload if sealed & 1 else None
                if plain is not None:
                    assert plain.startswith(inner), "inner packet is not the payload's start"
                    assert len(plain) == len(inner) + plain[-2] + 2, "trailer length mismatch"
                    assert plain[-1] == (NH_IPV4 if inner[0] >> 4 == 4 else NH_IPV6)


TARGET_CLASS = EspTarget
