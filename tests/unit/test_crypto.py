"""Transforms against published vectors: RFC 4231, SP 800-38A, GCM spec, RFC 8439,
RFC 5903, RFC 7748 and RFC 3526."""

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from client.ikev2 import crypto
from client.ikev2.constants import DhId, EncrId, IntegId, PrfId
from client.ikev2.crypto import (
    SUPPORTED_GROUPS,
    SkCipher,
    encr_keymat_len,
    integ_for,
    new_key_exchange,
    prf_for,
)
from client.ikev2.errors import CryptoError, NoProposalChosen


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ---------------------------------------------------------------------------
# PRF and integrity: RFC 4231 test cases 1, 2 and 5
# ---------------------------------------------------------------------------

RFC4231 = [
    (b"\x0b" * 20, b"Hi There", {
        PrfId.HMAC_SHA2_256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        PrfId.HMAC_SHA2_384: "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
                             "faea9ea9076ede7f4af152e8b2fa9cb6",
        PrfId.HMAC_SHA2_512: "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
                             "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    }),
    (b"Jefe", b"what do ya want for nothing?", {
        PrfId.HMAC_SHA2_256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        PrfId.HMAC_SHA2_384: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
                             "8e2240ca5e69e2c78b3239ecfab21649",
        PrfId.HMAC_SHA2_512: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                             "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    }),
]


@pytest.mark.parametrize("key,data,outputs", RFC4231)
def test_prf_rfc4231(key: bytes, data: bytes, outputs: dict) -> None:
    for prf_id, expected in outputs.items():
        prf = prf_for(prf_id)
        assert prf(key, data) == h(expected)
        assert prf.output_size == prf.key_size == len(h(expected))


def test_prf_sizes_and_unknown() -> None:
    assert prf_for(PrfId.HMAC_SHA1).output_size == 20
    assert prf_for(PrfId.HMAC_SHA2_384).id == PrfId.HMAC_SHA2_384
    with pytest.raises(NoProposalChosen):
        prf_for(4)  # AES128_XCBC: not implemented


# RFC 4868 2.7.2.1 (AUTH256 test cases 1 and 2): 32-byte keys, ICV = first 128 bits.
@pytest.mark.parametrize("key,data,mac", [
    (b"\x0b" * 32, b"Hi There",
     "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"),
    (b"Jefe" * 8, b"what do ya want for nothing?",
     "167f928588c5cc2eef8e3093caa0e87c9ff566a14794aa61648d81621a2a40c6"),
])
def test_integrity_rfc4868_auth256(key: bytes, data: bytes, mac: str) -> None:
    integ = integ_for(IntegId.HMAC_SHA2_256_128)
    icv = integ.compute(key, data)
    assert icv == h(mac)[:16]
    assert integ.verify(key, data, icv)
    assert not integ.verify(key, data, icv[:-1] + bytes([icv[-1] ^ 1]))
    assert not integ.verify(key, data + b"!", icv)
    assert not integ.verify(key, data, h(mac))  # the untruncated MAC is not the ICV


@pytest.mark.parametrize("integ_id,key_size,icv_size", [
    (IntegId.HMAC_SHA1_96, 20, 12),
    (IntegId.HMAC_SHA2_256_128, 32, 16),
    (IntegId.HMAC_SHA2_384_192, 48, 24),
    (IntegId.HMAC_SHA2_512_256, 64, 32),
])
def test_integrity_sizes(integ_id: IntegId, key_size: int, icv_size: int) -> None:
    integ = integ_for(integ_id)
    assert (integ.key_size, integ.icv_size) == (key_size, icv_size)
    assert len(integ.compute(b"k" * key_size, b"data")) == icv_size
    with pytest.raises(ValueError):
        integ.compute(b"k" * (key_size - 1), b"data")


def test_integrity_unknown() -> None:
    with pytest.raises(NoProposalChosen):
        integ_for(IntegId.NONE)


# ---------------------------------------------------------------------------
# SK payload: AES-GCM (McGrew & Viega test cases 4 and 16), RFC 8439 2.8.2, SP 800-38A
# ---------------------------------------------------------------------------

GCM_P = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
          "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
GCM_A = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_IV = h("cafebabefacedbaddecaf888")  # = 4-byte salt | 8-byte IKE IV
GCM_CASES = [
    (128, h("feffe9928665731c6d6a8f9467308308"),
     h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
       "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"),
     h("5bc94fbc3221a5db94fae95ae7121a47")),
    (256, h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
     h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
       "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"),
     h("76fc6ece0f4e1768cddf8853bb2d551b")),
]


@pytest.mark.parametrize("bits,key,ct,tag", GCM_CASES)
def test_gcm_open_published_vector(bits: int, key: bytes, ct: bytes, tag: bytes) -> None:
    sk = SkCipher(EncrId.AES_GCM_16, bits, None)
    assert sk.is_aead and sk.integ_key_len == 0 and sk.iv_size == 8
    assert sk.encr_key_len == bits // 8 + 4
    encr_key = key + GCM_IV[:4]
    body = GCM_IV[4:] + ct + tag
    # The vector's last plaintext byte (0x39 = 57) reads as the pad length.
    assert sk.open(encr_key, b"", GCM_A, body) == GCM_P[: 60 - 57 - 1]
    # Any flipped bit in IV, ciphertext, tag or AAD is refused.
    for pos in (0, 8, len(body) - 1):
        bad = bytearray(body)
        bad[pos] ^= 0x01
        with pytest.raises(CryptoError):
            sk.open(encr_key, b"", GCM_A, bytes(bad))
    with pytest.raises(CryptoError):
        sk.open(encr_key, b"", GCM_A[:-1] + b"\x00", body)


@pytest.mark.parametrize("bits,key,ct,tag", GCM_CASES)
def test_gcm_seal_round_trip(bits: int, key: bytes, ct: bytes, tag: bytes) -> None:
    sk = SkCipher(EncrId.AES_GCM_16, bits, None)
    encr_key = key + GCM_IV[:4]
    # seal of the vector's first 59 bytes adds pad length 0: the vector's plaintext is then
    # the same up to the last byte, so the ciphertext matches up to there too.
    sealed = sk.seal(encr_key, b"", GCM_IV[4:], GCM_A, GCM_P[:59])
    assert sealed[:8] == GCM_IV[4:]
    assert sealed[8 : 8 + 59] == ct[:59]
    assert len(sealed) == sk.body_length(59) == 8 + 60 + 16
    assert sk.open(encr_key, b"", GCM_A, sealed) == GCM_P[:59]


CHACHA_KEY = bytes(range(0x80, 0xA0))
CHACHA_NONCE = h("070000004041424344454647")
CHACHA_AAD = h("50515253c0c1c2c3c4c5c6c7")
CHACHA_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
             b"for the future, sunscreen would be it.")
CHACHA_CT = h("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
              "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
              "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
              "3ff4def08e4b7a9de576d26586cec64b6116")
CHACHA_TAG = h("1ae10b594f09e26a7e902ecbd0600691")


def test_chacha20poly1305_rfc8439_vector() -> None:
    sk = SkCipher(EncrId.CHACHA20_POLY1305, None, None)
    assert sk.encr_key_len == 36 and sk.iv_size == 8
    encr_key = CHACHA_KEY + CHACHA_NONCE[:4]  # RFC 7634: nonce = salt | IV
    iv = CHACHA_NONCE[4:]
    body = iv + CHACHA_CT + CHACHA_TAG
    # The last plaintext byte '.' (46) is read as the pad length.
    assert sk.open(encr_key, b"", CHACHA_AAD, body) == CHACHA_PT[: 114 - 47]
    sealed = sk.seal(encr_key, b"", iv, CHACHA_AAD, CHACHA_PT[:113])
    assert sealed[8 : 8 + 113] == CHACHA_CT[:113]
    bad = bytearray(body)
    bad[20] ^= 0x80
    with pytest.raises(CryptoError):
        sk.open(encr_key, b"", CHACHA_AAD, bytes(bad))


def test_chacha20poly1305_rejects_key_length_attribute() -> None:
    with pytest.raises(NoProposalChosen):
        SkCipher(EncrId.CHACHA20_POLY1305, 128, None)


# SP 800-38A F.2.1 CBC-AES128.Encrypt
CBC_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
CBC_IV = h("000102030405060708090a0b0c0d0e0f")
CBC_PT = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
           "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
CBC_CT = h("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
           "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7")


def test_cbc_open_published_vector() -> None:
    sk = SkCipher(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    assert not sk.is_aead and sk.iv_size == 16
    assert (sk.encr_key_len, sk.integ_key_len) == (16, 32)
    integ_key = b"\x42" * 32
    aad = b"H" * 32
    icv = integ_for(IntegId.HMAC_SHA2_256_128).compute(integ_key, aad + CBC_IV + CBC_CT)
    # Last plaintext byte 0x10 = 16 bytes of padding.
    assert sk.open(CBC_KEY, integ_key, aad, CBC_IV + CBC_CT + icv) == CBC_PT[: 64 - 17]
    with pytest.raises(CryptoError):
        sk.open(CBC_KEY, integ_key, aad, CBC_IV + CBC_CT + icv[:-1] + b"\x00")
    with pytest.raises(CryptoError):
        sk.open(CBC_KEY, integ_key, b"X" + aad[1:], CBC_IV + CBC_CT + icv)


def test_cbc_seal_matches_published_ciphertext() -> None:
    sk = SkCipher(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    # 47 bytes + the pad length byte fill three blocks with no padding; the vector's third
    # block ends differently, so only the first two blocks are comparable.
    sealed = sk.seal(CBC_KEY, b"k" * 32, CBC_IV, b"", CBC_PT[:47])
    assert sealed[:16] == CBC_IV
    assert sealed[16:48] == CBC_CT[:32]
    assert sealed[48:64] != CBC_CT[32:48]
    assert len(sealed) == sk.body_length(47) == 16 + 48 + 16
    assert sk.body_length(48) == 16 + 64 + 16


def test_cbc_bad_padding_is_refused() -> None:
    sk = SkCipher(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256)
    key, integ_key, iv = b"e" * 32, b"a" * 64, b"i" * 16
    block = b"\x00" * 15 + b"\x20"  # pad length 32 in a 16-byte plaintext
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(block) + enc.finalize()
    icv = integ_for(IntegId.HMAC_SHA2_512_256).compute(integ_key, b"aad" + iv + ct)
    with pytest.raises(CryptoError, match="pad length"):
        sk.open(key, integ_key, b"aad", iv + ct + icv)


CIPHERS = [
    (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA1_96),
    (EncrId.AES_GCM_16, 128, None),
    (EncrId.AES_GCM_16, 256, IntegId.NONE),
    (EncrId.CHACHA20_POLY1305, None, None),
]


@pytest.mark.parametrize("encr,bits,integ", CIPHERS)
def test_round_trip_and_body_length(encr: int, bits: int | None, integ: int | None) -> None:
    sk = SkCipher(encr, bits, integ)
    ek, ak = b"E" * sk.encr_key_len, b"A" * sk.integ_key_len
    iv = b"\x07" * sk.iv_size
    for n in range(0, 40):
        pt = bytes(range(n))
        sealed = sk.seal(ek, ak, iv, b"header", pt)
        assert len(sealed) == sk.body_length(n)
        assert sk.open(ek, ak, b"header", sealed) == pt


@pytest.mark.parametrize("encr,bits,integ", CIPHERS)
def test_open_checks_lengths(encr: int, bits: int | None, integ: int | None) -> None:
    sk = SkCipher(encr, bits, integ)
    ek, ak = b"E" * sk.encr_key_len, b"A" * sk.integ_key_len
    sealed = sk.seal(ek, ak, b"\x07" * sk.iv_size, b"", b"payload")
    for cut in (0, 1, sk.iv_size, sk.iv_size + sk.icv_size, len(sealed) - 1):
        with pytest.raises(CryptoError):
            sk.open(ek, ak, b"", sealed[:cut])


def test_sk_cipher_rejects_bad_combinations() -> None:
    with pytest.raises(NoProposalChosen):
        SkCipher(EncrId.AES_GCM_16, 128, IntegId.HMAC_SHA2_256_128)
    with pytest.raises(NoProposalChosen):
        SkCipher(EncrId.AES_CBC, 128, None)
    with pytest.raises(NoProposalChosen):
        SkCipher(EncrId.AES_CBC, 100, IntegId.HMAC_SHA2_256_128)
    with pytest.raises(NoProposalChosen):
        SkCipher(EncrId.AES_CTR, 128, IntegId.HMAC_SHA2_256_128)
    sk = SkCipher(EncrId.AES_GCM_16, 128, None)
    with pytest.raises(ValueError):
        sk.seal(b"E" * 20, b"", b"\x00" * 7, b"", b"x")  # wrong IV size
    with pytest.raises(ValueError):
        sk.seal(b"E" * 16, b"", b"\x00" * 8, b"", b"x")  # key without salt


def test_encr_keymat_len() -> None:
    assert encr_keymat_len(EncrId.AES_CBC, 256) == 32
    assert encr_keymat_len(EncrId.AES_GCM_16, 128) == 20
    assert encr_keymat_len(EncrId.CHACHA20_POLY1305, None) == 36


# ---------------------------------------------------------------------------
# Key exchange
# ---------------------------------------------------------------------------

# RFC 5903 section 8.1 (256-bit random ECP group)
P256_I = h("c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433")
P256_GI = h("dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180"
            "5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3")
P256_R = h("c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53")
P256_GR = h("d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63"
            "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab")
P256_GIRX = h("d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de")


def test_ecp256_rfc5903_vector() -> None:
    i = new_key_exchange(DhId.ECP_256, P256_I)
    r = new_key_exchange(DhId.ECP_256, P256_R)
    assert i.public_bytes == P256_GI
    assert r.public_bytes == P256_GR
    assert i.shared_secret(P256_GR) == P256_GIRX
    assert r.shared_secret(P256_GI) == P256_GIRX


def test_ecp_rejects_bad_points() -> None:
    i = new_key_exchange(DhId.ECP_256, P256_I)
    with pytest.raises(CryptoError):
        i.shared_secret(P256_GR[:-1])  # short
    with pytest.raises(CryptoError):
        i.shared_secret(P256_GR[:-1] + bytes([P256_GR[-1] ^ 1]))  # off the curve
    with pytest.raises(CryptoError):
        i.shared_secret(bytes(64))


# RFC 7748 section 6.1
X_ALICE = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
X_ALICE_PUB = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
X_BOB_PUB = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X_SHARED = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748_vector() -> None:
    alice = new_key_exchange(DhId.CURVE25519, X_ALICE)
    assert alice.public_bytes == X_ALICE_PUB
    assert alice.shared_secret(X_BOB_PUB) == X_SHARED


@pytest.mark.parametrize("point", [bytes(32), b"\x01" + bytes(31)])
def test_x25519_rejects_low_order_points(point: bytes) -> None:
    alice = new_key_exchange(DhId.CURVE25519, X_ALICE)
    with pytest.raises(CryptoError, match="low-order"):
        alice.shared_secret(point)
    with pytest.raises(CryptoError):
        alice.shared_secret(X_BOB_PUB[:31])


def _rfc3526_prime(bits: int, k: int) -> int:
    """p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) pi) + k), pi by Machin's formula."""
    prec = bits + 64

    def arctan_inv(x: int) -> int:
        one = 1 << prec
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            total += sign * (term // (2 * n + 1))
            sign, n = -sign, n + 1
        return total

    pi = 4 * (4 * arctan_inv(5) - arctan_inv(239))  # pi * 2^prec
    return 2**bits - 2 ** (bits - 64) - 1 + 2**64 * ((pi >> (prec - (bits - 130))) + k)


@pytest.mark.parametrize("group,bits,k", [
    (DhId.MODP_2048, 2048, 124476),
    (DhId.MODP_3072, 3072, 1690314),
    (DhId.MODP_4096, 4096, 240904),
])
def test_modp_primes_and_padding(group: DhId, bits: int, k: int) -> None:
    p = _rfc3526_prime(bits, k)
    assert crypto._MODP_PRIMES[group] == p
    size = bits // 8
    # Private value 2 gives the public value 2^2 = 4: it must be sent left-padded.
    ke = new_key_exchange(group, b"\x02")
    assert ke.public_bytes == (4).to_bytes(size, "big")
    # g^ir with the peer's value 3: 3^2 = 9, also left-padded to the prime length.
    assert ke.shared_secret((3).to_bytes(size, "big")) == (9).to_bytes(size, "big")
    # The module's prime is the RFC's: p-1 is refused, p-2 accepted (it squares to 4).
    assert ke.shared_secret((p - 2).to_bytes(size, "big")) == (4).to_bytes(size, "big")
    for bad in (0, 1, p - 1, p):
        with pytest.raises(CryptoError):
            ke.shared_secret(bad.to_bytes(size, "big"))
    with pytest.raises(CryptoError):
        ke.shared_secret(b"\x05" * (size - 1))


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
def test_key_exchange_agrees(group: DhId) -> None:
    a, b = new_key_exchange(group), new_key_exchange(group)
    assert a.group == group
    sizes = {DhId.MODP_2048: 256, DhId.MODP_3072: 384, DhId.MODP_4096: 512, DhId.ECP_256: 64,
             DhId.ECP_384: 96, DhId.ECP_521: 132, DhId.CURVE25519: 32, DhId.CURVE448: 56}
    assert len(a.public_bytes) == sizes[group]
    secret = a.shared_secret(b.public_bytes)
    assert secret == b.shared_secret(a.public_bytes)
    assert a.public_bytes != b.public_bytes


def test_unsupported_group() -> None:
    with pytest.raises(NoProposalChosen):
        new_key_exchange(DhId.NONE)
    with pytest.raises(NoProposalChosen):
        new_key_exchange(2)  # MODP_1024
