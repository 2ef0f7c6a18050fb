"""MD4 (RFC 1320), for the NT password hash of EAP-MSCHAPv2 (RFC 2759 section 8.3).

OpenSSL 3 moved MD4 to its legacy provider, so hashlib usually lacks it; the one library
that has it (pycryptodome) costs ~50 ms of imports inside the handshake. MS-CHAPv2 hashes
a password and a 16-byte hash once per authentication, so a plain implementation is
enough. MD4 is broken as a hash function; it is here only because the protocol fixes it.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<16I")
_ROUND2 = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_ROUND3 = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def _compress(state: list[int], block: bytes) -> None:
    x = _WORDS.unpack(block)
    a, b, c, d = state
    for i in range(16):  # round 1: F(b, c, d) = (b & c) | (~b & d)
        a = _rotl((a + ((b & c) | (~b & d)) + x[i]) & _MASK, (3, 7, 11, 19)[i % 4])
        a, b, c, d = d, a, b, c
    for i, k in enumerate(_ROUND2):  # round 2: G = majority(b, c, d)
        a = _rotl((a + ((b & c) | (b & d) | (c & d)) + x[k] + 0x5A827999) & _MASK,
                  (3, 5, 9, 13)[i % 4])
        a, b, c, d = d, a, b, c
    for i, k in enumerate(_ROUND3):  # round 3: H = b ^ c ^ d
        a = _rotl((a + (b ^ c ^ d) + x[k] + 0x6ED9EBA1) & _MASK, (3, 9, 11, 15)[i % 4])
        a, b, c, d = d, a, b, c
    state[:] = [(s + v) & _MASK for s, v in zip(state, (a, b, c, d), strict=True)]


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of `data`."""
    # Padding (RFC 1320 3.1-3.2): 0x80, zeros to 56 mod 64, the bit length as 64-bit LE.
    padded = data + b"\x80" + bytes(-(len(data) + 9) % 64) + struct.pack("<Q", len(data) * 8)
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for offset in range(0, len(padded), 64):
        _compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)
