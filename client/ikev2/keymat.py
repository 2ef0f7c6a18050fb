"""IKEv2 key derivation: prf+, SKEYSEED and the IKE/Child SA keys (RFC 7296 2.13-2.18)."""

from __future__ import annotations

from dataclasses import dataclass

from .crypto import Prf


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 2.13): T1 | T2 | ... with Tn = prf(K, Tn-1 | S | n), truncated."""
    if length < 0:
        raise ValueError("negative prf+ length")
    # The counter is one octet, so at most 255 blocks can be produced.
    if length > 255 * prf.output_size:
        raise ValueError(f"prf+ cannot produce {length} bytes with {prf.id.name}")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = prf(key, block + seed + bytes([counter]))
        out += block
        counter += 1
    return bytes(out[:length])


@dataclass(frozen=True, repr=False)
class IkeKeys:
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:  # keys never end up in logs or tracebacks
        return "IkeKeys(<secret>)"


@dataclass(frozen=True, repr=False)
class ChildKeys:
    """Child SA keys; `_i` protects initiator-to-responder traffic, `_r` the reverse."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes

    def __repr__(self) -> str:
        return "ChildKeys(<secret>)"


def skeyseed(prf: Prf, shared_secret: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) for a new IKE SA (RFC 7296 2.14)."""
    return prf(ni + nr, shared_secret)


def rekeyed_skeyseed(old_prf: Prf, old_sk_d: bytes, shared_secret: bytes, ni: bytes,
                     nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF (RFC 7296 2.18)."""
    return old_prf(old_sk_d, shared_secret + ni + nr)


def _split_ike_keys(prf: Prf, seed_key: bytes, encr_key_len: int, integ_key_len: int,
                    ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes) -> IkeKeys:
    sizes = (prf.key_size, integ_key_len, integ_key_len, encr_key_len, encr_key_len,
             prf.key_size, prf.key_size)
    stream = prf_plus(prf, seed_key, ni + nr + spi_i + spi_r, sum(sizes))
    parts = []
    pos = 0
    for size in sizes:
        parts.append(stream[pos : pos + size])
        pos += size
    return IkeKeys(*parts)


def derive_ike_keys(prf: Prf, encr_key_len: int, integ_key_len: int, shared_secret: bytes,
                    ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr).

    `encr_key_len` includes the AEAD salt; `integ_key_len` is 0 for AEAD.
    """
    seed_key = skeyseed(prf, shared_secret, ni, nr)
    return _split_ike_keys(prf, seed_key, encr_key_len, integ_key_len, ni, nr, spi_i, spi_r)


def derive_rekeyed_ike_keys(old_prf: Prf, old_sk_d: bytes, new_prf: Prf, encr_key_len: int,
                            integ_key_len: int, shared_secret: bytes, ni: bytes, nr: bytes,
                            spi_i: bytes, spi_r: bytes) -> IkeKeys:
    """Keys of an IKE SA created by rekeying (RFC 7296 2.18).

    SKEYSEED uses the old SA's PRF; prf+ and the key sizes use the new SA's PRF. The nonces
    and SPIs are those of the CREATE_CHILD_SA exchange and the new SA.
    """
    seed_key = rekeyed_skeyseed(old_prf, old_sk_d, shared_secret, ni, nr)
    return _split_ike_keys(new_prf, seed_key, encr_key_len, integ_key_len, ni, nr, spi_i, spi_r)


def derive_child_keys(prf: Prf, sk_d: bytes, ni: bytes, nr: bytes, encr_key_len: int,
                      integ_key_len: int, shared_secret: bytes | None = None) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 2.17).

    Initiator-to-responder keys come first, encryption before integrity in each
    direction; AEAD `encr_key_len` includes the 4-byte salt, `integ_key_len` is then 0.
    """
    seed = (shared_secret or b"") + ni + nr
    e, a = encr_key_len, integ_key_len
    km = prf_plus(prf, sk_d, seed, 2 * (e + a))
    return ChildKeys(
        encr_i=km[:e],
        integ_i=km[e : e + a],
        encr_r=km[e + a : 2 * e + a],
        integ_r=km[2 * e + a :],
    )
