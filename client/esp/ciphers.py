"""ESP transforms: AES-GCM (RFC 4106), ChaCha20-Poly1305 (RFC 7634), AES-CBC + HMAC-SHA2.

Each transform seals the ESP payload (inner packet + trailer, already padded) into
IV || ciphertext || ICV and opens it again. The AEAD/HMAC/AES objects are built once per SA.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from client.esp.errors import EspError
from client.ikev2.constants import EncrId, IntegId

SALT_LEN = 4  # RFC 4106 section 8.1 / RFC 7634 section 2: the last 4 bytes of the key material


class EspTransform:
    """Interface: `header` is SPI || SeqNo (8 bytes), `seq` the 32-bit sequence number."""

    iv_len: int
    icv_len: int
    align: int  # the padded payload (plaintext + trailer) is a multiple of this

    def seal(self, header: bytes, seq: int, payload: bytes) -> bytes:
        raise NotImplementedError

    def open(self, header: bytes, body: bytes) -> bytes:
        raise NotImplementedError

    # Whole packets in and out: what the SAs call for a non-AEAD transform (the AEAD ones
    # they call inline). The caller has checked the minimum length.
    def seal_packet(self, header: bytes, seq: int, payload: bytes) -> bytes:
        """header || seal(header, seq, payload)."""
        return header + self.seal(header, seq, payload)

    def open_packet(self, packet: bytes) -> bytes:
        """open() on a whole ESP packet (header || body)."""
        return self.open(packet[:8], packet[8:])


class AeadTransform(EspTransform):
    """AES-GCM-16 or ChaCha20-Poly1305: nonce = salt || explicit IV, AAD = SPI || SeqNo.

    The SAs make these calls inline on their per-packet path, with `encrypt`, `decrypt` and
    `salt` (looked up once per SA here); seal() and open() are the reference they follow.
    """

    iv_len = 8
    icv_len = 16
    align = 4

    def __init__(self, aead: AESGCM | ChaCha20Poly1305, salt: bytes) -> None:
        self.encrypt = aead.encrypt
        self.decrypt = aead.decrypt
        self.salt = salt

    def seal(self, header: bytes, seq: int, payload: bytes) -> bytes:
        # The explicit IV is SPI || SeqNo, the header itself: unique per key, as RFC 4106
        # section 3.1 and RFC 7634 section 2 require (a counter with a fixed prefix), with
        # no RNG call and nothing to pack per packet.
        return header + self.encrypt(self.salt + header, payload, header)

    def open(self, header: bytes, body: bytes) -> bytes:
        if len(body) < 8 + 16:
            raise EspError("truncated packet")
        try:
            return self.decrypt(self.salt + body[:8], body[8:], header)
        except InvalidTag:
            raise EspError("ICV mismatch") from None


_HMAC: dict[int, tuple[str, int, int]] = {
    # integ id -> (hash name, key length, truncated ICV length)
    IntegId.HMAC_SHA1_96: ("sha1", 20, 12),
    IntegId.HMAC_SHA2_256_128: ("sha256", 32, 16),
    IntegId.HMAC_SHA2_384_192: ("sha384", 48, 24),
    IntegId.HMAC_SHA2_512_256: ("sha512", 64, 32),
}


class CbcHmacTransform(EspTransform):
    """AES-CBC with a random IV; the ICV covers SPI || SeqNo || IV || ciphertext."""

    iv_len = 16
    align = 16

    def __init__(
        self, key: bytes, integ_id: int, integ_key: bytes, rng: Callable[[int], bytes]
    ) -> None:
        name, key_len, self.icv_len = _HMAC[integ_id]
        if len(integ_key) != key_len:
            raise ValueError(f"integrity key must be {key_len} bytes")
        self._aes = algorithms.AES(key)
        self._mac = hmac.new(integ_key, digestmod=getattr(hashlib, name))
        self._rng = rng

    def _icv(self, header: bytes, iv_ct: bytes | memoryview) -> bytes:
        mac = self._mac.copy()
        mac.update(header)
        mac.update(iv_ct)
        return mac.digest()[: self.icv_len]

    def seal(self, header: bytes, seq: int, payload: bytes) -> bytes:
        iv = self._rng(16)
        enc = Cipher(self._aes, modes.CBC(iv)).encryptor()
        iv_ct = iv + enc.update(payload) + enc.finalize()
        return iv_ct + self._icv(header, iv_ct)

    def open(self, header: bytes, body: bytes) -> bytes:
        ct_len = len(body) - 16 - self.icv_len
        if ct_len < 16 or ct_len % 16:
            raise EspError("ciphertext length not a positive multiple of the block size")
        view = memoryview(body)
        split = len(body) - self.icv_len
        if not hmac.compare_digest(self._icv(header, view[:split]), view[split:]):
            raise EspError("ICV mismatch")
        dec = Cipher(self._aes, modes.CBC(body[:16])).decryptor()
        return dec.update(view[16:split]) + dec.finalize()


_AEAD = (EncrId.AES_GCM_16, EncrId.CHACHA20_POLY1305)


def key_lengths(encr_id: int, key_bits: int, integ_id: int | None) -> tuple[int, int]:
    """(encryption key material, integrity key) lengths in bytes, for the CHILD_SA KEYMAT split.

    Raises ValueError for a transform combination this ESP implementation does not support.
    """
    if encr_id not in _AEAD and encr_id != EncrId.AES_CBC:
        raise ValueError(f"unsupported ESP encryption transform {encr_id}")
    if encr_id == EncrId.CHACHA20_POLY1305:
        key_bits = 256  # RFC 7634: no key length attribute, always 256 bits
    if key_bits not in (128, 192, 256):
        raise ValueError(f"unsupported key length {key_bits} for ESP transform {encr_id}")
    if integ_id == IntegId.NONE:
        integ_id = None
    if encr_id in _AEAD:
        if integ_id is not None:
            raise ValueError("an AEAD transform takes no integrity algorithm")
        return key_bits // 8 + SALT_LEN, 0
    if integ_id not in _HMAC:
        raise ValueError("AES-CBC needs a supported integrity algorithm")
    return key_bits // 8, _HMAC[integ_id][1]


def make_transform(
    encr_id: int,
    key_bits: int,
    encr_key: bytes,
    integ_id: int | None = None,
    integ_key: bytes | None = None,
    rng: Callable[[int], bytes] = secrets.token_bytes,
) -> EspTransform:
    """Build the transform negotiated for a CHILD_SA; raises ValueError if unsupported."""
    encr_len, _ = key_lengths(encr_id, key_bits, integ_id)
    if len(encr_key) != encr_len:
        what = "key || 4-byte salt" if encr_id in _AEAD else "the AES key"
        raise ValueError(f"ESP encryption key material must be {encr_len} bytes ({what})")
    if encr_id in _AEAD:
        key, salt = encr_key[:-SALT_LEN], encr_key[-SALT_LEN:]
        aead = ChaCha20Poly1305(key) if encr_id == EncrId.CHACHA20_POLY1305 else AESGCM(key)
        return AeadTransform(aead, salt)
    if integ_key is None:
        raise ValueError("AES-CBC needs an integrity key")
    assert integ_id is not None  # key_lengths accepted it
    return CbcHmacTransform(encr_key, integ_id, integ_key, rng)
