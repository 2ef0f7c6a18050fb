"""Bounded big-endian reader: every read is checked, so parsers never see IndexError."""

from __future__ import annotations

from .errors import RemoteProtocolError


class Reader:
    """Reads network-order fields from `data`; `what` names the structure in error messages."""

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def offset(self) -> int:
        return self._pos

    def _take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise RemoteProtocolError(
                f"{self.what}: truncated (need {n} bytes at offset {self._pos}, "
                f"{self.remaining} left)"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def bytes(self, n: int) -> bytes:
        return self._take(n)

    def skip(self, n: int) -> None:
        self._take(n)

    def rest(self) -> bytes:
        return self._take(self.remaining)

    def sub(self, n: int, what: str) -> Reader:
        """A reader over the next `n` bytes, for a length-prefixed substructure."""
        return Reader(self._take(n), what)

    def end(self) -> None:
        """Require that everything was consumed (no trailing garbage)."""
        if self.remaining:
            raise RemoteProtocolError(f"{self.what}: {self.remaining} unexpected trailing bytes")
