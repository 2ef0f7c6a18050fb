"""ESP security associations in tunnel mode (RFC 4303), sans-I/O.

Packet layout: SPI(4) | SeqNo(4) | IV | ciphertext of (inner | padding | padlen | next hdr) | ICV.
Only 32-bit sequence numbers (no ESN), as negotiated by this client.

encapsulate() and decapsulate() run once per packet, so they are written for speed: one
struct call for the header, one precomputed trailer per (IP version, length mod alignment),
and the common in-order case of the replay window checked inline. One SA is used by one
thread at a time (the data plane's sender for an outbound SA, its receiver for an inbound).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from client.esp.ciphers import EspTransform, make_transform
from client.esp.errors import EspError
from client.esp.replay import ReplayWindow

__all__ = ["EspError", "EspInbound", "EspOutbound"]

NH_IPV4 = 4
NH_IPV6 = 41
NH_NONE = 59  # dummy packet (RFC 4303 section 2.6)
_SEQ_MAX = 0xFFFFFFFF
# Padding bytes are 1, 2, 3, ... (RFC 4303 section 2.4); at most 255 of them.
_PAD = bytes(range(1, 256))
_NEXT_HEADER = {4: NH_IPV4, 6: NH_IPV6}
_VERSION = {nh: version for version, nh in _NEXT_HEADER.items()}
_PADDING = [_PAD[:n] for n in range(256)]
_SPI_SEQ = struct.Struct(">II")


class _EspSa:
    """What both directions keep: the SPI, the negotiated transform, traffic counters."""

    def __init__(self, spi: int, transform: EspTransform) -> None:
        self.spi = spi
        self._spi_bytes = spi.to_bytes(4, "big")
        self._t = transform
        self.packets = 0
        self.bytes = 0  # inner (plaintext IP) bytes


def _trailers(align: int) -> dict[int, tuple[bytes, ...]]:
    """IP version -> padding || pad length || next header, indexed by len(inner) % align."""
    table = {}
    for version, nh in _NEXT_HEADER.items():
        table[version] = tuple(
            _PAD[:pad] + bytes((pad, nh))
            for pad in (-(rest + 2) % align for rest in range(align))
        )
    return table


class EspOutbound(_EspSa):
    def __init__(
        self,
        spi: int,
        encr_id: int,
        key_bits: int,
        encr_key: bytes,
        integ_id: int | None = None,
        integ_key: bytes | None = None,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        super().__init__(spi, make_transform(encr_id, key_bits, encr_key, integ_id, integ_key, rng))
        self._align = self._t.align
        self._trailer = _trailers(self._align)
        self._seal = self._t.seal_packet
        self.next_seq = 1

    def encapsulate(self, inner: bytes) -> bytes:
        """Wrap one IPv4/IPv6 packet; raises EspError when the sequence space is used up."""
        n = len(inner)
        if not n:
            raise EspError("empty inner packet")
        trailers = self._trailer.get(inner[0] >> 4)
        if trailers is None:
            raise EspError("inner packet is neither IPv4 nor IPv6")
        seq = self.next_seq
        if seq > _SEQ_MAX:
            # No wrap without ESN (RFC 4303 section 3.3.3): the SA must be rekeyed first.
            raise EspError("sequence number space exhausted")
        self.next_seq = seq + 1
        self.packets += 1
        self.bytes += n
        return self._seal(_SPI_SEQ.pack(self.spi, seq), seq, inner + trailers[n % self._align])


class EspInbound(_EspSa):
    def __init__(
        self,
        spi: int,
        encr_id: int,
        key_bits: int,
        encr_key: bytes,
        integ_id: int | None = None,
        integ_key: bytes | None = None,
        replay_window: int = 1024,
    ) -> None:
        super().__init__(spi, make_transform(encr_id, key_bits, encr_key, integ_id, integ_key))
        self._min_len = 8 + self._t.iv_len + self._t.align + self._t.icv_len
        self._open = self._t.open_packet
        self.replay = ReplayWindow(replay_window)
        self.dummies = 0

    def decapsulate(self, packet: bytes) -> bytes:
        """The inner IP packet, or b"" for a dummy packet; EspError for anything dropped."""
        if len(packet) < self._min_len:
            raise EspError("truncated packet")
        spi, seq = _SPI_SEQ.unpack_from(packet)
        if spi != self.spi:
            raise EspError("SPI mismatch")
        replay = self.replay
        # In order (seq above the top) needs no bitmap look-up; check() covers the rest.
        if seq <= replay.top and not replay.check(seq):
            raise EspError("replayed or too old sequence number")
        plain = self._open(packet)
        # Authentic from here on: the sequence number is used up whatever the content.
        replay.update(seq)
        n = len(plain)
        pad_len = plain[n - 2]
        end = n - 2 - pad_len
        if end < 0:
            raise EspError("pad length exceeds payload")
        if pad_len and not plain.endswith(_PADDING[pad_len], 0, n - 2):
            raise EspError("padding bytes not monotonic")
        version = _VERSION.get(plain[n - 1])
        if version is None:
            if plain[n - 1] == NH_NONE:
                self.dummies += 1
                return b""
            raise EspError(f"unexpected next header {plain[n - 1]}")
        if not end or plain[0] >> 4 != version:
            raise EspError("inner packet does not match next header")
        inner = plain[:end]
        self.packets += 1
        self.bytes += end
        return inner
