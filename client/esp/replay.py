"""Anti-replay window (RFC 4303 section 3.4.3), exact: one bit per sequence number.

The bitmap is a single Python int: bit i stands for sequence number top - i. Sliding the
window is one shift and one mask, which in Python costs a fraction of the block ring that
RFC 6479 designs for C (same semantics: no false accepts, no false drops in the window).
"""


class ReplayWindow:
    def __init__(self, size: int = 1024) -> None:
        if size < 64 or size & (size - 1):
            raise ValueError("replay window size must be a power of two >= 64")
        self.size = size
        self._mask = (1 << size) - 1
        self._bits = 0
        self.top = 0  # highest sequence number verified so far (0 = none yet)

    def check(self, seq: int) -> bool:
        """May `seq` be new? Call before the (costly) ICV check; it changes nothing."""
        if seq <= 0:
            return False
        offset = self.top - seq
        if offset < 0:
            return True
        if offset >= self.size:
            return False
        return not (self._bits >> offset) & 1

    def update(self, seq: int) -> None:
        """Mark `seq` as seen; call only after its ICV verified."""
        if seq <= 0:
            return
        top = self.top
        if seq > top:
            shift = seq - top
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        elif top - seq < self.size:
            self._bits |= 1 << (top - seq)
