"""The anti-replay window against a model that remembers every sequence number.

An input is a list of (4-byte sequence number, 1-byte "its ICV verified") steps. The
model: a number is new iff it is positive, was never accepted, and is within `size`
of the highest accepted one (or above it). check() must agree with the model; update()
(after a verified ICV) must make the window agree with it again.
"""

from __future__ import annotations

import random
import struct

from client.esp.replay import ReplayWindow
from tests.fuzz.engine import Target

_STEP = struct.Struct("!IB")
SIZES = (64, 128, 1024)


class ReplayTarget(Target):
    name = "replay"
    expected = ()

    def generate(self, rng: random.Random) -> bytes:
        size = rng.choice(SIZES)
        top, steps = 0, []
        for _ in range(rng.randint(1, 200)):
            r = rng.random()
            if r < 0.4:
                seq = top + 1
            elif r < 0.6:
                seq = top - rng.randrange(size + 2)
            elif r < 0.7:
                seq = top + rng.randint(2, 3 * size)
            elif r < 0.8:
                seq = top - size + rng.choice((-1, 0, 1))
            elif r < 0.85:
                seq = rng.choice((0, 1, 0xFFFFFFFF, 0xFFFFFFFE, 0x80000000))
            else:
                seq = rng.randrange(1 << 32) if rng.random() < 0.2 else top + rng.randint(-5, 5)
            seq &= 0xFFFFFFFF
            verified = rng.random() < 0.9
            steps.append(_STEP.pack(seq, verified))
            if verified and seq > top:
                top = seq
        return bytes([SIZES.index(size)]) + b"".join(steps)

    def run(self, data: bytes) -> None:
        if not data:
            return
        size = SIZES[data[0] % len(SIZES)]
        w = ReplayWindow(size)
        seen: set[int] = set()
        top = 0
        for i in range(1, len(data) - _STEP.size + 1, _STEP.size):
            seq, verified = _STEP.unpack_from(data, i)
            new = seq > 0 and seq not in seen and seq > top - size
            got = w.check(seq)
            assert got == new, f"check({seq}) = {got}, model {new} (top {top}, size {size})"
            if verified & 1 and new:
                w.update(seq)
                seen.add(seq)
                top = max(top, seq)
                assert w.top == top


TARGET_CLASS = ReplayTarget
