"""Seeded byte mutations, the building block of the structure-aware mutators."""

from __future__ import annotations

import random

# Values that sit on the edges of length, count and type fields.
INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_16 = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x7FFF, 0x8000,
                  0xFFFE, 0xFFFF)
INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
# A repeated chunk stays far below every input size limit the parsers enforce.
MAX_REPEAT_BYTES = 16 * 1024


def _flip_bit(rng: random.Random, b: bytearray) -> None:
    if b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)


def _random_byte(rng: random.Random, b: bytearray) -> None:
    if b:
        b[rng.randrange(len(b))] = rng.randrange(256)


def _interesting_8(rng: random.Random, b: bytearray) -> None:
    if b:
        b[rng.randrange(len(b))] = rng.choice(INTERESTING_8)


def _interesting_16(rng: random.Random, b: bytearray) -> None:
    if len(b) >= 2:
        i = rng.randrange(len(b) - 1) & ~1 if rng.random() < 0.7 else rng.randrange(len(b) - 1)
        v = rng.choice(INTERESTING_16 + (len(b), len(b) - i, len(b) - i + 1, len(b) - i - 1))
        b[i:i + 2] = (v & 0xFFFF).to_bytes(2, "big")


def _interesting_32(rng: random.Random, b: bytearray) -> None:
    if len(b) >= 4:
        i = rng.randrange(len(b) - 3)
        b[i:i + 4] = rng.choice(INTERESTING_32).to_bytes(4, "big")


def _insert(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b) + 1)
    b[i:i] = rng.randbytes(rng.randint(1, 16))


def _delete(rng: random.Random, b: bytearray) -> None:
    if b:
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, min(32, len(b) - i))]


def _duplicate(rng: random.Random, b: bytearray) -> None:
    if b:
        i = rng.randrange(len(b))
        chunk = b[i:i + rng.randint(1, 64)]
        j = rng.randrange(len(b) + 1)
        b[j:j] = chunk


def _repeat(rng: random.Random, b: bytearray) -> None:
    """A substructure many times over: long lists, many attributes, many selectors."""
    if b:
        i = rng.randrange(len(b))
        chunk = b[i:i + rng.choice((1, 2, 4, 8, 16, 24, 40))]
        times = rng.randint(2, max(2, MAX_REPEAT_BYTES // len(chunk)))
        b[i:i] = bytes(chunk) * times


def _truncate(rng: random.Random, b: bytearray) -> None:
    if b:
        del b[rng.randrange(len(b)):]


def _swap(rng: random.Random, b: bytearray) -> None:
    if len(b) >= 2:
        i, j = rng.randrange(len(b)), rng.randrange(len(b))
        b[i], b[j] = b[j], b[i]


_OPS = (_flip_bit, _random_byte, _interesting_8, _interesting_16, _interesting_16,
        _interesting_32, _insert, _delete, _duplicate, _truncate, _swap)


def mutate_bytes(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """1-4 (or `rounds`) stacked byte-level mutations of `data`."""
    b = bytearray(data)
    for _ in range(rounds or rng.choice((1, 1, 1, 2, 2, 3, 4))):
        if rng.random() < 0.03:
            _repeat(rng, b)
        else:
            rng.choice(_OPS)(rng, b)
    return bytes(b)
