"""Anti-replay window with a ring of 64-bit blocks (RFC 6479).

The ring holds size + 64 bits, so every sequence number in (top - size, top] has its own
bit: the window is exact (no false accepts, no false drops) while sliding only clears
whole blocks.
"""

_BITS = 64
_SHIFT = 6


class ReplayWindow:
    def __init__(self, size: int = 1024) -> None:
        if size < _BITS or size & (size - 1):
            raise ValueError("replay window size must be a power of two >= 64")
        self.size = size
        self._nblocks = size // _BITS + 1
        self._blocks = [0] * self._nblocks
        self.top = 0  # highest sequence number verified so far (0 = none yet)

    def check(self, seq: int) -> bool:
        """May `seq` be new? Call before the (costly) ICV check; it changes nothing."""
        if seq <= 0:
            return False
        if seq > self.top:
            return True
        if self.top - seq >= self.size:
            return False
        block = self._blocks[(seq >> _SHIFT) % self._nblocks]
        return not (block >> (seq & (_BITS - 1))) & 1

    def update(self, seq: int) -> None:
        """Mark `seq` as seen; call only after its ICV verified."""
        if seq <= 0:
            return
        n = self._nblocks
        if seq > self.top:
            cur = self.top >> _SHIFT
            diff = min((seq >> _SHIFT) - cur, n)
            for i in range(1, diff + 1):
                self._blocks[(cur + i) % n] = 0
            self.top = seq
        elif self.top - seq >= self.size:
            return
        idx = (seq >> _SHIFT) % n
        self._blocks[idx] |= 1 << (seq & (_BITS - 1))
