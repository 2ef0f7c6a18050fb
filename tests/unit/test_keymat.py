"""Key derivation against NIST CAVP IKEv2 KDF (SP 800-135) vectors and an independent prf+."""

import hashlib
import hmac

import pytest

from client.ikev2.constants import PrfId
from client.ikev2.crypto import prf_for
from client.ikev2.keymat import (
    ChildKeys,
    IkeKeys,
    derive_child_keys,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    prf_plus,
    rekeyed_skeyseed,
    skeyseed,
)

SHA1 = prf_for(PrfId.HMAC_SHA1)
SHA256 = prf_for(PrfId.HMAC_SHA2_256)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def concat(keys: IkeKeys) -> bytes:
    return (keys.sk_d + keys.sk_ai + keys.sk_ar + keys.sk_ei + keys.sk_er + keys.sk_pi
            + keys.sk_pr)


def child_concat(keys: ChildKeys) -> bytes:
    return keys.encr_i + keys.integ_i + keys.encr_r + keys.integ_r


# NIST CAVP "IKEv2 KDF" HMAC-SHA1 test case, as carried in libreswan's ike_alg_test_prf.c.
CAVP_A = {
    "ni": h("32b50d5f4a3763f3"),
    "nr": h("9206a04b26564cb1"),
    "gir": h("4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52"),
    "gir_new": h("863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330"),
    "spii": h("34c9e7c188868785"),
    "spir": h("3ff77d760d2b2199"),
    "skeyseed": h("a9a7b222b59f8f48645f28a1db5b5f5d7479cba7"),
    "skeyseed_rekey": h("63e81194946ebd05df7df5ebf5d8750056bf1f1d"),
    "dkm": h(
        "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002"
        "a2a63080e514a062768b76606f9fa5e992204fc5a670bde3f10d6b027113936a"
        "5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd1119"
        "8af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a81157435"
        "a7a56cc4"
    ),
}

# A second CAVP HMAC-SHA1 case (from Cisco's FIPS KDF self-test), which also carries the
# Child SA KEYMAT with and without a new key exchange. Hex strings, joined below.
_CAVP_B_HEX = {
    "NiNr": (
        "3651fef5c9c35e93c09a8b90a3f04d59"
    ),
    "GIR": (
        "d084a30166a50fb7325c3960874a839449ef9741c2f4f947d0201dd8c1269273"
        "d79509f37e3ca3eb4fa2fe2a28254e289cd3f34dad4eb4df1a07685a4b8a94fa"
        "61e2491f7598b3ce65547ff133b3f63d1ac4175eaa695033f3cedb026a6873a3"
        "6455172a8540b8a5d23a0143bed0390ee49b168269d75fffee9fb62be965993c"
    ),
    "GIR_new": (
        "52f00ab174c25d5b7139ae5ff4e8e9eddee5992d2e36adf8a559ffd90dab1442"
        "e4fbe429d320c0f33552a17d1557fa41ea70e8fb916c4fa27ed52b5f8ebd8461"
        "afa78f1159159a64055ac5f6319e29c28eae58cbc6847770f32c3fed1d047504"
        "84f854790f95e9ec01bc5bc461f24966462e359511329305038e94deb6dd42c2"
    ),
    "NiNrSPIiSPIr": (
        "3651fef5c9c35e93c09a8b90a3f04d598e5c3ae507221684b1f201bb155c3acd"
    ),
    "SKEYSEED": (
        "cd2e8050137832245f1dbacc6e4f0a92f94d45d6"
    ),
    "DKM": (
        "6f1b12cad3cbe097b35430356d869d54cddb0198ec859174d53ceb92dddedbe2"
        "436db69f60977c58fa63bbb667f8d36920b109baae8f6c61a9ac49feda018432"
        "25d080ec5539d5881a25521ffb2a0a91874a9c0a27fcc2d717eb8963a9e3a89c"
        "7ab264757284c28cf8c3ca40576f4220b052b1fb8e9ad60ba3c80557323331a8"
        "cbb89f20"
    ),
    "DKM_SA": (
        "4727dc0ef94eb326ce131cf282fb652faa638ad0ddae3786a11bcc0309876009"
        "f8c485de011ad962c5b1ca8a41ff8145445749079c5686e26ffebbc342f06981"
        "f3da745e11ca0976424d1f8caec623d59dc7186deb20a27b411d1dcb70a36544"
        "0bf7de905088b0692e8addc094e18d1939bdb67e89798ca6b239e2ccb81c2409"
        "dac0106c"
    ),
    "DKM_SA_DH": (
        "b109c21ad4c0797768c1cec9e63554681e48f224bca7f23c20c4ea7041983451"
        "e9aa1d5408656c8a975ff1b9d9a12c75ffeb64bdecb30174664cccb4e14f1c37"
        "7b7f6d1525af77c7092aac3e47f917ebae8297fb5539d2008ce830823a09cc19"
        "7361d4a289c72745f6ce9fefe812be5bf55b3200fbb82e41a4a40877d3fe106d"
        "b909707b"
    ),
    "SKEYSEED_REKEY": (
        "3b03bce748c96d5e8306918d2ff89b68f0648da3"
    ),
}
CAVP_B = {k: h(v) for k, v in _CAVP_B_HEX.items()}


def test_skeyseed_and_dkm_match_cavp_vector_a() -> None:
    v = CAVP_A
    assert skeyseed(SHA1, v["gir"], v["ni"], v["nr"]) == v["skeyseed"]
    # 132 bytes = SK_d, SK_pi, SK_pr (20 each) + 2 x 20-byte SK_a + 2 x 16-byte SK_e
    keys = derive_ike_keys(SHA1, 16, 20, v["gir"], v["ni"], v["nr"], v["spii"], v["spir"])
    assert concat(keys) == v["dkm"]
    assert keys.sk_d == v["dkm"][:20]
    assert keys.sk_ai == v["dkm"][20:40]
    assert keys.sk_ei == v["dkm"][60:76]
    assert keys.sk_er == v["dkm"][76:92]
    assert keys.sk_pr == v["dkm"][-20:]


def test_rekey_skeyseed_matches_cavp_vector_a() -> None:
    v = CAVP_A
    sk_d = v["dkm"][:20]
    assert rekeyed_skeyseed(SHA1, sk_d, v["gir_new"], v["ni"], v["nr"]) == v["skeyseed_rekey"]
    keys = derive_rekeyed_ike_keys(SHA1, sk_d, SHA1, 16, 20, v["gir_new"], v["ni"], v["nr"],
                                   v["spii"], v["spir"])
    expected = prf_plus(SHA1, v["skeyseed_rekey"], v["ni"] + v["nr"] + v["spii"] + v["spir"],
                        132)
    assert concat(keys) == expected


def test_cavp_vector_b_ike_and_child_keymat() -> None:
    v = CAVP_B
    ni, nr = v["NiNr"][:8], v["NiNr"][8:]
    spi_i, spi_r = v["NiNrSPIiSPIr"][16:24], v["NiNrSPIiSPIr"][24:]
    assert skeyseed(SHA1, v["GIR"], ni, nr) == v["SKEYSEED"]
    ike = derive_ike_keys(SHA1, 16, 20, v["GIR"], ni, nr, spi_i, spi_r)
    assert concat(ike) == v["DKM"]
    assert ike.sk_d == v["DKM"][:20]
    # Child KEYMAT is 132 bytes here: any split with 2 * (encr + integ) = 132 reads it.
    child = derive_child_keys(SHA1, ike.sk_d, ni, nr, 36, 30)
    assert child_concat(child) == v["DKM_SA"]
    assert child.encr_i == v["DKM_SA"][:36]
    assert child.integ_i == v["DKM_SA"][36:66]
    assert child.encr_r == v["DKM_SA"][66:102]
    assert child.integ_r == v["DKM_SA"][102:]
    pfs = derive_child_keys(SHA1, ike.sk_d, ni, nr, 36, 30, shared_secret=v["GIR_new"])
    assert child_concat(pfs) == v["DKM_SA_DH"]
    assert rekeyed_skeyseed(SHA1, ike.sk_d, v["GIR_new"], ni, nr) == v["SKEYSEED_REKEY"]


def _reference_prf_plus(key: bytes, seed: bytes, length: int, digest: str) -> bytes:
    # Written straight from RFC 7296 2.13 with the hmac module.
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = hmac.new(key, t + seed + bytes([n]), digest).digest()
        out += t
        n += 1
    return out[:length]


@pytest.mark.parametrize("length", [0, 1, 31, 32, 33, 64, 100, 255 * 32])
def test_prf_plus_matches_reference(length: int) -> None:
    key, seed = b"K" * 32, b"seed material"
    assert prf_plus(SHA256, key, seed, length) == _reference_prf_plus(key, seed, length,
                                                                      "sha256")


def test_prf_plus_first_block_by_hand() -> None:
    key, seed = bytes(range(20)), b"\x01\x02"
    expected = hmac.new(key, seed + b"\x01", hashlib.sha256).digest()  # T1 = prf(K, S | 0x01)
    assert prf_plus(SHA256, key, seed, 32) == expected


def test_prf_plus_refuses_more_than_255_blocks() -> None:
    with pytest.raises(ValueError):
        prf_plus(SHA256, b"k", b"s", 255 * 32 + 1)


def test_ike_key_sizes_follow_prf_and_transforms() -> None:
    prf = prf_for(PrfId.HMAC_SHA2_384)
    keys = derive_ike_keys(prf, 36, 0, b"\x05" * 48, b"N" * 32, b"M" * 32, b"I" * 8, b"R" * 8)
    assert [len(k) for k in (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er,
                             keys.sk_pi, keys.sk_pr)] == [48, 0, 0, 36, 36, 48, 48]
    skeyseed_ = hmac.new(b"N" * 32 + b"M" * 32, b"\x05" * 48, "sha384").digest()
    stream = _reference_prf_plus(skeyseed_, b"N" * 32 + b"M" * 32 + b"I" * 8 + b"R" * 8,
                                 48 * 3 + 72, "sha384")
    assert concat(keys) == stream


def test_rekey_uses_old_prf_for_skeyseed_and_new_prf_for_prf_plus() -> None:
    old, new = SHA1, prf_for(PrfId.HMAC_SHA2_512)
    ni, nr, gir, sk_d = b"a" * 16, b"b" * 16, b"g" * 32, b"d" * 20
    keys = derive_rekeyed_ike_keys(old, sk_d, new, 32, 64, gir, ni, nr, b"i" * 8, b"r" * 8)
    seed_key = hmac.new(sk_d, gir + ni + nr, "sha1").digest()
    stream = _reference_prf_plus(seed_key, ni + nr + b"i" * 8 + b"r" * 8, 64 * 3 + 2 * 96,
                                 "sha512")
    assert concat(keys) == stream
    assert len(keys.sk_d) == 64


def test_child_keys_aead_lengths() -> None:
    keys = derive_child_keys(SHA256, b"D" * 32, b"n" * 32, b"m" * 32, 36, 0)
    assert (len(keys.encr_i), len(keys.integ_i), len(keys.encr_r), len(keys.integ_r)) == (
        36, 0, 36, 0)
    assert keys.encr_i + keys.encr_r == _reference_prf_plus(b"D" * 32, b"n" * 32 + b"m" * 32,
                                                            72, "sha256")


def test_key_objects_do_not_print_secrets() -> None:
    keys = derive_child_keys(SHA256, b"D" * 32, b"n" * 32, b"m" * 32, 16, 32)
    assert keys.encr_i.hex() not in repr(keys)
    ike = derive_ike_keys(SHA256, 16, 32, b"g", b"n", b"m", b"i" * 8, b"r" * 8)
    assert ike.sk_d.hex() not in repr(ike)
