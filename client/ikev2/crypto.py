"""Transform registry: PRF, integrity, SK payload protection and key exchange.

Everything cryptographic comes from `cryptography` (and the stdlib's OpenSSL-backed
hmac); this module only adds what IKEv2 itself defines: truncation, SK payload
framing (RFC 7296 3.14, RFC 5282, RFC 7634) and the KE payload encodings
(RFC 7296 / RFC 5903 / RFC 8031).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .constants import DhId, EncrId, IntegId, PrfId, is_aead
from .errors import CryptoError, NoProposalChosen

# ---------------------------------------------------------------------------
# PRF and integrity
# ---------------------------------------------------------------------------

_PRF_HASH: dict[PrfId, str] = {
    PrfId.HMAC_SHA1: "sha1",
    PrfId.HMAC_SHA2_256: "sha256",
    PrfId.HMAC_SHA2_384: "sha384",
    PrfId.HMAC_SHA2_512: "sha512",
}


@dataclass(frozen=True)
class Prf:
    """An HMAC-based PRF (RFC 7296 3.3.2, RFC 4868)."""

    id: PrfId
    hash_name: str
    output_size: int
    key_size: int  # preferred key length (SK_d, SK_pi, SK_pr): the output size for HMAC

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hash_name)


def prf_for(prf_id: int) -> Prf:
    """The PRF for an IANA PRF transform ID; NoProposalChosen if we do not implement it."""
    try:
        pid = PrfId(prf_id)
        name = _PRF_HASH[pid]
    except (ValueError, KeyError):
        raise NoProposalChosen(f"unsupported PRF transform {prf_id}") from None
    size = hashlib.new(name).digest_size
    return Prf(pid, name, size, size)


# integrity id -> (hash, key size, truncated ICV size); RFC 2404 and RFC 4868
_INTEG: dict[IntegId, tuple[str, int, int]] = {
    IntegId.HMAC_SHA1_96: ("sha1", 20, 12),
    IntegId.HMAC_SHA2_256_128: ("sha256", 32, 16),
    IntegId.HMAC_SHA2_384_192: ("sha384", 48, 24),
    IntegId.HMAC_SHA2_512_256: ("sha512", 64, 32),
}


@dataclass(frozen=True)
class Integrity:
    """A truncated-HMAC integrity transform."""

    id: IntegId
    hash_name: str
    key_size: int
    icv_size: int

    def compute(self, key: bytes, data: bytes) -> bytes:
        if len(key) != self.key_size:
            raise ValueError(f"{self.id.name} needs a {self.key_size}-byte key")
        return hmac.digest(key, data, self.hash_name)[: self.icv_size]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> bool:
        return hmac.compare_digest(self.compute(key, data), icv)


def integ_for(integ_id: int) -> Integrity:
    """The integrity transform for an IANA ID; NoProposalChosen if we do not implement it."""
    try:
        iid = IntegId(integ_id)
        name, key_size, icv_size = _INTEG[iid]
    except (ValueError, KeyError):
        raise NoProposalChosen(f"unsupported integrity transform {integ_id}") from None
    return Integrity(iid, name, key_size, icv_size)


# ---------------------------------------------------------------------------
# Encryption algorithms
# ---------------------------------------------------------------------------

AEAD_SALT_LEN = 4  # RFC 5282 / RFC 7634: 4 salt bytes follow each AEAD key in the KEYMAT
_AES_KEY_BITS = (128, 192, 256)


def encr_keymat_len(encr_id: int, key_bits: int | None) -> int:
    """Bytes of keying material one direction of `encr_id` takes (AEAD: key + 4-byte salt).

    Used for SK_ei/SK_er and for ESP keys alike. NoProposalChosen if unsupported.
    """
    if encr_id in (EncrId.AES_CBC, EncrId.AES_GCM_16):
        if key_bits not in _AES_KEY_BITS:
            raise NoProposalChosen(f"unsupported AES key length {key_bits}")
        salt = AEAD_SALT_LEN if encr_id == EncrId.AES_GCM_16 else 0
        return key_bits // 8 + salt
    if encr_id == EncrId.CHACHA20_POLY1305:
        # RFC 7634 2: the transform has no key length attribute; the key is 256 bits.
        if key_bits not in (None, 256):
            raise NoProposalChosen("CHACHA20_POLY1305 takes no key length other than 256")
        return 32 + AEAD_SALT_LEN
    raise NoProposalChosen(f"unsupported encryption transform {encr_id}")


class SkCipher:
    """Protection of the SK payload body: IV | ciphertext(payloads | padding | pad length) | ICV.

    The caller writes the IKE header and the SK generic payload header first (their lengths
    come from `body_length`), passes those bytes as `aad`, and appends what `seal` returns.
    """

    _AEAD_ICV = 16

    def __init__(self, encr: int, key_bits: int | None, integ: int | None) -> None:
        self._encr_key_len = encr_keymat_len(encr, key_bits)
        self.encr = EncrId(encr)
        self.key_bits = key_bits if encr != EncrId.CHACHA20_POLY1305 else 256
        self._aead_cache: dict[bytes, AESGCM | ChaCha20Poly1305] = {}
        if is_aead(encr):
            if integ not in (None, IntegId.NONE):
                raise NoProposalChosen("an integrity transform cannot be combined with AEAD")
            self._integ: Integrity | None = None
        else:
            if integ in (None, IntegId.NONE):
                raise NoProposalChosen(f"{self.encr.name} needs an integrity transform")
            self._integ = integ_for(integ)

    @property
    def is_aead(self) -> bool:
        return self._integ is None

    @property
    def encr_key_len(self) -> int:
        """Length of SK_ei/SK_er in bytes, including the 4-byte salt for AEAD."""
        return self._encr_key_len

    @property
    def integ_key_len(self) -> int:
        """Length of SK_ai/SK_ar in bytes (0 for AEAD)."""
        return self._integ.key_size if self._integ else 0

    @property
    def iv_size(self) -> int:
        """How many random IV bytes `seal` needs: the block size for CBC, 8 for AEAD."""
        return 8 if self.is_aead else 16

    @property
    def icv_size(self) -> int:
        return self._integ.icv_size if self._integ else self._AEAD_ICV

    @property
    def _block(self) -> int:
        # AEAD modes are stream-like: no padding is needed beyond the pad length byte.
        return 1 if self.is_aead else 16

    def body_length(self, plaintext_len: int) -> int:
        """Exact length of the SK body `seal` produces for `plaintext_len` payload bytes."""
        padded = plaintext_len + 1  # the pad length byte
        padded += -padded % self._block
        return self.iv_size + padded + self.icv_size

    # -- sealing -----------------------------------------------------------

    def _aead(self, encr_key: bytes) -> tuple[AESGCM | ChaCha20Poly1305, bytes]:
        if len(encr_key) != self._encr_key_len:
            raise ValueError(f"{self.encr.name} needs {self._encr_key_len} bytes of key")
        key, salt = encr_key[:-AEAD_SALT_LEN], encr_key[-AEAD_SALT_LEN:]
        obj = self._aead_cache.get(key)
        if obj is None:
            if len(self._aead_cache) >= 4:  # one SA uses two keys; rekeys bring new ones
                self._aead_cache.clear()
            obj = ChaCha20Poly1305(key) if self.encr == EncrId.CHACHA20_POLY1305 else AESGCM(key)
            self._aead_cache[key] = obj
        return obj, salt

    def _check_cbc_keys(self, encr_key: bytes, integ_key: bytes) -> Integrity:
        assert self._integ is not None
        if len(encr_key) != self._encr_key_len:
            raise ValueError(f"{self.encr.name} needs {self._encr_key_len} bytes of key")
        if len(integ_key) != self._integ.key_size:
            raise ValueError(f"{self._integ.id.name} needs {self._integ.key_size} bytes of key")
        return self._integ

    def seal(self, encr_key: bytes, integ_key: bytes, iv: bytes, aad: bytes,
             plaintext: bytes) -> bytes:
        """Encrypt and authenticate; returns IV | ciphertext | ICV."""
        if len(iv) != self.iv_size:
            raise ValueError(f"{self.encr.name} needs a {self.iv_size}-byte IV")
        pad_len = -(len(plaintext) + 1) % self._block
        padded = plaintext + bytes(pad_len) + bytes([pad_len])
        if self.is_aead:
            aead, salt = self._aead(encr_key)
            return iv + aead.encrypt(salt + iv, padded, aad)
        integ = self._check_cbc_keys(encr_key, integ_key)
        enc = Cipher(algorithms.AES(encr_key), modes.CBC(iv)).encryptor()
        ct = enc.update(padded) + enc.finalize()
        return iv + ct + integ.compute(integ_key, aad + iv + ct)

    def open(self, encr_key: bytes, integ_key: bytes, aad: bytes, body: bytes) -> bytes:
        """Verify and decrypt an SK body; returns the inner payloads without padding."""
        iv_size, icv_size = self.iv_size, self.icv_size
        ct_len = len(body) - iv_size - icv_size
        if ct_len < 1 or ct_len % self._block:
            raise CryptoError(f"SK payload body of {len(body)} bytes is not a valid length")
        iv, ct, icv = body[:iv_size], body[iv_size:-icv_size], body[-icv_size:]
        if self.is_aead:
            aead, salt = self._aead(encr_key)
            try:
                padded = aead.decrypt(salt + iv, ct + icv, aad)
            except InvalidTag:
                raise CryptoError("SK payload authentication tag mismatch") from None
        else:
            integ = self._check_cbc_keys(encr_key, integ_key)
            if not integ.verify(integ_key, aad + iv + ct, icv):
                raise CryptoError("SK payload integrity check failed")
            dec = Cipher(algorithms.AES(encr_key), modes.CBC(iv)).decryptor()
            padded = dec.update(ct) + dec.finalize()
        pad_len = padded[-1]
        if pad_len + 1 > len(padded):
            raise CryptoError(f"SK payload pad length {pad_len} exceeds the plaintext")
        # RFC 7296 3.14: the padding bytes may hold any value, so they are not checked.
        return padded[: len(padded) - pad_len - 1]


# RFC 3526 MODP primes (generator 2); tests recompute them from the RFC's pi formula.
_MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
_MODP_3072 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
_MODP_4096 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
    16,
)

# ---------------------------------------------------------------------------
# Key exchange
# ---------------------------------------------------------------------------

_MODP_PRIMES: dict[DhId, int] = {
    DhId.MODP_2048: _MODP_2048,
    DhId.MODP_3072: _MODP_3072,
    DhId.MODP_4096: _MODP_4096,
}

# group -> (curve, field size in bytes); RFC 5903 encodes each coordinate at field size
_ECP_CURVES: dict[DhId, tuple[type[ec.EllipticCurve], int]] = {
    DhId.ECP_256: (ec.SECP256R1, 32),
    DhId.ECP_384: (ec.SECP384R1, 48),
    DhId.ECP_521: (ec.SECP521R1, 66),
}

SUPPORTED_GROUPS: tuple[DhId, ...] = (
    DhId.MODP_2048, DhId.MODP_3072, DhId.MODP_4096,
    DhId.ECP_256, DhId.ECP_384, DhId.ECP_521,
    DhId.CURVE25519, DhId.CURVE448,
)


class KeyExchange:
    """One side of a key exchange: our KE payload data and the shared secret g^ir."""

    group: DhId
    public_bytes: bytes

    def shared_secret(self, peer_public: bytes) -> bytes:
        raise NotImplementedError

    def _check_length(self, peer_public: bytes, expected: int) -> None:
        if len(peer_public) != expected:
            raise CryptoError(
                f"{self.group.name} KE data is {len(peer_public)} bytes, expected {expected}"
            )


@cache
def _dh_parameters(group: DhId) -> dh.DHParameters:
    # Built once per group; OpenSSL recognises the RFC 3526 primes as named groups.
    return dh.DHParameterNumbers(_MODP_PRIMES[group], 2).parameters()


class _ModpExchange(KeyExchange):
    def __init__(self, group: DhId, private_value: bytes | None) -> None:
        self.group = group
        self._p = _MODP_PRIMES[group]
        self._len = (self._p.bit_length() + 7) // 8
        params = _dh_parameters(group)
        if private_value is None:
            self._key = params.generate_private_key()
        else:
            x = int.from_bytes(private_value, "big")
            if not 1 < x < self._p - 1:
                raise ValueError("MODP private value out of range")
            pub = dh.DHPublicNumbers(pow(2, x, self._p), params.parameter_numbers())
            self._key = dh.DHPrivateNumbers(x, pub).private_key()
        y = self._key.public_key().public_numbers().y
        self.public_bytes = y.to_bytes(self._len, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public, self._len)
        y = int.from_bytes(peer_public, "big")
        # RFC 7296 / SP 800-56A: 1 and p-1 generate a subgroup of order at most 2.
        if not 1 < y < self._p - 1:
            raise CryptoError(f"{self.group.name} KE value out of range (must be 1 < y < p-1)")
        try:
            peer = dh.DHPublicNumbers(y, _dh_parameters(self.group).parameter_numbers())
            secret = self._key.exchange(peer.public_key())
        except ValueError as exc:
            raise CryptoError(f"{self.group.name} KE value rejected: {exc}") from None
        return secret.rjust(self._len, b"\x00")  # g^ir is always prime-length (RFC 7296 2.14)


class _EcpExchange(KeyExchange):
    def __init__(self, group: DhId, private_value: bytes | None) -> None:
        self.group = group
        curve_cls, self._size = _ECP_CURVES[group]
        self._curve = curve_cls()
        if private_value is None:
            self._key = ec.generate_private_key(self._curve)
        else:
            self._key = ec.derive_private_key(int.from_bytes(private_value, "big"), self._curve)
        nums = self._key.public_key().public_numbers()
        self.public_bytes = nums.x.to_bytes(self._size, "big") + nums.y.to_bytes(self._size, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public, 2 * self._size)
        try:
            # The uncompressed SEC1 form is RFC 5903's x | y behind a 0x04 marker;
            # loading it checks that the point lies on the curve.
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_public)
            secret = self._key.exchange(ec.ECDH(), peer)
        except ValueError as exc:
            raise CryptoError(f"{self.group.name} KE value is not a valid point: {exc}") from None
        return secret.rjust(self._size, b"\x00")  # RFC 5903 9: x coordinate only


class _MontgomeryExchange(KeyExchange):
    """Curve25519 / Curve448 (RFC 8031): raw u-coordinates, shared secret as is."""

    def __init__(self, group: DhId, private_value: bytes | None) -> None:
        self.group = group
        x = group == DhId.CURVE25519
        self._size = 32 if x else 56
        self._pub_cls = x25519.X25519PublicKey if x else x448.X448PublicKey
        priv_cls = x25519.X25519PrivateKey if x else x448.X448PrivateKey
        if private_value is None:
            self._key = priv_cls.generate()
        else:
            self._key = priv_cls.from_private_bytes(private_value)
        self.public_bytes = self._key.public_key().public_bytes_raw()

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public, self._size)
        try:
            secret = self._key.exchange(self._pub_cls.from_public_bytes(peer_public))
        except ValueError:
            secret = bytes(self._size)  # cryptography refuses the all-zero result
        # RFC 8031 2.3: an all-zero result means a low-order point and must be rejected.
        if not any(secret):
            raise CryptoError(f"{self.group.name} KE value is a low-order point")
        return secret


def new_key_exchange(group: int, private_value: bytes | None = None) -> KeyExchange:
    """A fresh key pair for `group` (NoProposalChosen if unsupported).

    `private_value` (big-endian exponent / scalar, or raw X25519/X448 key) makes the key
    deterministic, for test vectors; normally the key comes from OpenSSL's CSPRNG.
    """
    try:
        gid = DhId(group)
    except ValueError:
        raise NoProposalChosen(f"unsupported key exchange group {group}") from None
    if gid in _MODP_PRIMES:
        return _ModpExchange(gid, private_value)
    if gid in _ECP_CURVES:
        return _EcpExchange(gid, private_value)
    if gid in (DhId.CURVE25519, DhId.CURVE448):
        return _MontgomeryExchange(gid, private_value)
    raise NoProposalChosen(f"unsupported key exchange group {gid.name}")
