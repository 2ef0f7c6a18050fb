"""ESP security associations in tunnel mode (RFC 4303), sans-I/O.

Packet layout: SPI(4) | SeqNo(4) | IV | ciphertext of (inner | padding | padlen | next hdr) | ICV.
Only 32-bit sequence numbers (no ESN), as negotiated by this client.

encapsulate() and decapsulate() run once per packet, so they are written for speed (see
tests/perf/esp_micro.py): AES-GCM and ChaCha20-Poly1305 are called inline, the SPI || SeqNo
header doubling as explicit IV (AES-CBC+HMAC goes through its transform); one precomputed
trailer per (IP version, length mod alignment); one set look-up validates a received
trailer; the in-order case of the replay window is handled inline.
One SA is used by one thread at a time (the data plane's sender for an outbound SA, its
receiver for an inbound).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from client.esp.ciphers import AeadTransform, EspTransform, make_transform
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
# The first byte of an inner packet -> every valid trailer (padding || pad length || next
# header) for it: padding, next header and IP version are checked with one set look-up.
_VALID_TRAILERS = tuple(
    frozenset(_PAD[:pad] + bytes((pad, _NEXT_HEADER[first >> 4])) for pad in range(256))
    if first >> 4 in _NEXT_HEADER
    else frozenset()
    for first in range(256)
)
_SPI_SEQ = struct.Struct(">II")


class _EspSa:
    """What both directions keep: the SPI, the negotiated transform, the inner bytes."""

    def __init__(self, spi: int, transform: EspTransform) -> None:
        self.spi = spi
        self._t = transform
        # AES-GCM and ChaCha20-Poly1305 are called inline, with the AEAD's salt; None: the
        # transform seals and opens whole packets.
        self._aead = transform if isinstance(transform, AeadTransform) else None
        self._salt = self._aead.salt if self._aead else b""
        self.bytes = 0  # inner (plaintext IP) bytes


def _trailers(align: int) -> tuple[tuple[bytes, ...] | None, ...]:
    """IP version nibble -> padding || pad length || next header, by len(inner) % align
    (None for a version other than 4 and 6)."""
    table: list[tuple[bytes, ...] | None] = [None] * 16
    for version, nh in _NEXT_HEADER.items():
        table[version] = tuple(
            _PAD[:pad] + bytes((pad, nh))
            for pad in (-(rest + 2) % align for rest in range(align))
        )
    return tuple(table)


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
        self._encrypt = self._aead.encrypt if self._aead else None
        self._align = self._t.align
        self._trailer = _trailers(self._align)
        self.next_seq = 1

    @property
    def packets(self) -> int:
        """Packets sealed: each took the next sequence number, starting from 1."""
        return self.next_seq - 1

    def encapsulate(self, inner: bytes) -> bytes:
        """Wrap one IPv4/IPv6 packet; raises EspError when the sequence space is used up."""
        try:
            trailers = self._trailer[inner[0] >> 4]
        except IndexError:
            raise EspError("empty inner packet") from None
        if trailers is None:
            raise EspError("inner packet is neither IPv4 nor IPv6")
        seq = self.next_seq
        if seq > _SEQ_MAX:
            # No wrap without ESN (RFC 4303 section 3.3.3): the SA must be rekeyed first.
            raise EspError("sequence number space exhausted")
        self.next_seq = seq + 1
        n = len(inner)
        self.bytes += n
        payload = inner + trailers[n % self._align]
        encrypt = self._encrypt
        if encrypt is None:
            return self._t.seal_packet(_SPI_SEQ.pack(self.spi, seq), seq, payload)
        # AeadTransform.seal, inline: the header is the explicit IV too.
        header = _SPI_SEQ.pack(self.spi, seq)
        return header + header + encrypt(self._salt + header, payload, header)


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
        self._decrypt = self._aead.decrypt if self._aead else None
        self._min_len = 8 + self._t.iv_len + self._t.align + self._t.icv_len
        self.replay = ReplayWindow(replay_window)
        self.packets = 0
        self.dummies = 0

    def decapsulate(self, packet: bytes) -> bytes:
        """The inner IP packet, or b"" for a dummy packet; EspError for anything dropped."""
        if len(packet) < self._min_len:
            raise EspError("truncated packet")
        spi, seq = _SPI_SEQ.unpack_from(packet)
        if spi != self.spi:
            raise EspError("SPI mismatch")
        replay = self.replay
        fresh = seq > replay.top  # in order: new without a look-up
        if not fresh and not replay.check(seq):
            raise EspError("replayed or too old sequence number")
        decrypt = self._decrypt
        if decrypt is None:
            plain = self._t.open_packet(packet)
        else:
            # AeadTransform.open, inline: nonce = salt || IV, AAD = SPI || SeqNo. Slices, not
            # memoryviews: with cryptography 50 a view still costs more than the copy.
            try:
                plain = decrypt(self._salt + packet[8:16], packet[16:], packet[:8])
            except InvalidTag:
                raise EspError("ICV mismatch") from None
        # Authentic from here on: the sequence number is used up whatever the content.
        if fresh:  # ReplayWindow.update() for seq > top, inline (a call costs more)
            replay.ring[seq & replay.mask] = seq
            replay.top = seq
        else:
            replay.update(seq)
        # Where the trailer starts, from the end. If the pad length claims more than there
        # is, plain[end:] is all of plain, shorter than the trailer claimed: not valid; if
        # nothing precedes the trailer, plain[0] is a padding byte, which starts no IP packet.
        end = -2 - plain[-2]
        if plain[end:] in _VALID_TRAILERS[plain[0]]:
            inner = plain[:end]
            self.packets += 1
            self.bytes += len(inner)
            return inner
        return self._dummy_or_drop(plain)

    def _dummy_or_drop(self, plain: bytes) -> bytes:
        """A payload the trailer look-up refused: a dummy packet (b""), else EspError why."""
        n = len(plain) - 2
        pad_len, nh = plain[n], plain[n + 1]
        end = n - pad_len
        if end < 0:
            raise EspError("pad length exceeds payload")
        if plain[end:n] != _PAD[:pad_len]:
            raise EspError("padding bytes not monotonic")
        if nh == NH_NONE:
            self.dummies += 1
            return b""
        if nh not in (NH_IPV4, NH_IPV6):
            raise EspError(f"unexpected next header {nh}")
        raise EspError("inner packet does not match next header")
