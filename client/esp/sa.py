"""ESP security associations in tunnel mode (RFC 4303), sans-I/O.

Packet layout: SPI(4) | SeqNo(4) | IV | ciphertext of (inner | padding | padlen | next hdr) | ICV.
Only 32-bit sequence numbers (no ESN), as negotiated by this client.
"""

from __future__ import annotations

import secrets
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


class _EspSa:
    """What both directions keep: the SPI, the negotiated transform, traffic counters."""

    def __init__(self, spi: int, transform: EspTransform) -> None:
        self.spi = spi
        self._spi_bytes = spi.to_bytes(4, "big")
        self._t = transform
        self.packets = 0
        self.bytes = 0  # inner (plaintext IP) bytes


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
        self.next_seq = 1

    def encapsulate(self, inner: bytes) -> bytes:
        """Wrap one IPv4/IPv6 packet; raises EspError when the sequence space is used up."""
        if not inner:
            raise EspError("empty inner packet")
        nh = _NEXT_HEADER.get(inner[0] >> 4)
        if nh is None:
            raise EspError("inner packet is neither IPv4 nor IPv6")
        seq = self.next_seq
        if seq > _SEQ_MAX:
            # No wrap without ESN (RFC 4303 section 3.3.3): the SA must be rekeyed first.
            raise EspError("sequence number space exhausted")
        self.next_seq = seq + 1
        pad_len = -(len(inner) + 2) % self._align
        header = self._spi_bytes + seq.to_bytes(4, "big")
        payload = inner + _PAD[:pad_len] + bytes((pad_len, nh))
        self.packets += 1
        self.bytes += len(inner)
        return header + self._t.seal(header, seq, payload)


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
        self.replay = ReplayWindow(replay_window)
        self.dummies = 0

    def decapsulate(self, packet: bytes) -> bytes:
        """The inner IP packet, or b"" for a dummy packet; EspError for anything dropped."""
        if len(packet) < self._min_len:
            raise EspError("truncated packet")
        if packet[:4] != self._spi_bytes:
            raise EspError("SPI mismatch")
        seq = int.from_bytes(packet[4:8], "big")
        if not self.replay.check(seq):
            raise EspError("replayed or too old sequence number")
        plain = self._t.open(packet[:8], packet[8:])
        # Authentic from here on: the sequence number is used up whatever the content.
        self.replay.update(seq)
        n = len(plain)
        pad_len = plain[n - 2]
        nh = plain[n - 1]
        end = n - 2 - pad_len
        if end < 0:
            raise EspError("pad length exceeds payload")
        if plain[end : n - 2] != _PAD[:pad_len]:
            raise EspError("padding bytes not monotonic")
        if nh == NH_NONE:
            self.dummies += 1
            return b""
        inner = plain[:end]
        if nh == NH_IPV4:
            version = 4
        elif nh == NH_IPV6:
            version = 6
        else:
            raise EspError(f"unexpected next header {nh}")
        if not inner or inner[0] >> 4 != version:
            raise EspError("inner packet does not match next header")
        self.packets += 1
        self.bytes += len(inner)
        return inner
