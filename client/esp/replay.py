"""Anti-replay window (RFC 4303 section 3.4.3), exact: each number in the window is remembered.

A ring of `size` slots: sequence number s lives in slot s % size, which holds s once s has
been seen. The only other numbers that map to that slot lie a multiple of `size` away, so
while s is in the window its slot holds s or an older number: "seen" is one comparison,
and sliding the window clears nothing. A number above `top` is new without a look-up and
committed with one store; EspInbound.decapsulate does that inline for in-order packets,
so `ring`, `mask` and `top` are the layout it relies on.
"""


class ReplayWindow:
    __slots__ = ("size", "mask", "ring", "top")

    def __init__(self, size: int = 1024) -> None:
        if size < 64 or size & (size - 1):
            raise ValueError("replay window size must be a power of two >= 64")
        self.size = size
        self.mask = size - 1
        self.ring = [0] * size  # 0 is no sequence number: nothing seen yet
        self.top = 0  # highest sequence number verified so far (0 = none yet)

    def check(self, seq: int) -> bool:
        """May `seq` be new? Call before the (costly) ICV check; it changes nothing."""
        if seq <= 0:
            return False
        offset = self.top - seq
        if offset < 0:
            return True
        return offset < self.size and self.ring[seq & self.mask] != seq

    def update(self, seq: int) -> None:
        """Mark `seq` as seen; call only after its ICV verified."""
        if seq > self.top:  # EspInbound.decapsulate inlines this branch
            self.ring[seq & self.mask] = seq
            self.top = seq
        elif seq > 0 and self.top - seq < self.size:
            self.ring[seq & self.mask] = seq
