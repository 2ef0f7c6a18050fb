"""IKE messages: header, hand-built IKE_SA_INIT, SK protection, summaries, fuzzing."""

import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.ikev2.constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    CfgAttr,
    CfgType,
    DhId,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
)
from client.ikev2.crypto import SkCipher
from client.ikev2.errors import CryptoError, RemoteProtocolError
from client.ikev2.message import Message, SkContext, parse_header
from client.ikev2.payloads import (
    AuthPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdiPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
    VendorPayload,
)
from client.ikev2.proposals import Proposal, Transform

SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8")

# IKE_SA_INIT request assembled by hand from RFC 7296 figures 4, 6-9, 10, 15 and 16.
INIT_REQUEST = bytes.fromhex(
    # header: SPIi, SPIr = 0, next SA, version 2.0, IKE_SA_INIT, flags I, MID 0, length 188
    "0102030405060708 0000000000000000 21 20 22 08 00000000 000000bc"
    # SA: next KE, length 48; proposal: last, length 44, #1, IKE, SPI size 0, 4 transforms
    "22000030 0000002c 01010004"
    "0300000c 01000014 800e0100"     # ENCR AES_GCM_16, key length 256
    "03000008 02000007"              # PRF HMAC_SHA2_512
    "03000008 0400001f"              # DH curve25519
    "00000008 04000013"              # DH ecp256 (last transform)
    # KE: next Nonce, length 40, group 31, reserved, 32 bytes
    "28000028 001f0000" + "11" * 32 +
    # Nonce: next N, length 36
    "29000024" + "22" * 32 +
    # N(NAT_DETECTION_SOURCE_IP): next N, length 28, protocol 0, SPI size 0, type 16388
    "2900001c 00004004" + "33" * 20 +
    # N(IKEV2_FRAGMENTATION_SUPPORTED): last, length 8
    "00000008 0000402e"
)


def test_hand_built_ike_sa_init_decodes_field_by_field():
    msg = Message.decode(INIT_REQUEST)
    assert (msg.spi_i, msg.spi_r) == (SPI_I, bytes(8))
    assert msg.exchange is ExchangeType.IKE_SA_INIT
    assert msg.is_initiator and not msg.is_response
    assert msg.message_id == 0 and not msg.encrypted
    assert msg.raw == INIT_REQUEST
    sa, ke, nonce, natd, frag = msg.payloads
    assert sa == SaPayload([Proposal(1, ProtocolId.IKE, b"", [
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, 7),
        Transform(TransformType.DH, DhId.CURVE25519),
        Transform(TransformType.DH, DhId.ECP_256),
    ])])
    assert ke == KePayload(31, b"\x11" * 32)
    assert nonce == NoncePayload(b"\x22" * 32)
    assert natd == NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"\x33" * 20)
    assert frag == NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
    assert msg.get(KePayload) is ke and msg.get(AuthPayload) is None
    assert msg.get_all(NotifyPayload) == msg.notifies() == [natd, frag]
    assert msg.notify(NotifyType.NAT_DETECTION_SOURCE_IP) is natd
    assert msg.notify(NotifyType.COOKIE) is None
    # Encoding the decoded message gives back the same bytes.
    assert msg.encode() == INIT_REQUEST
    h = parse_header(INIT_REQUEST)
    assert (h.next_payload, h.version, h.exchange, h.flags, h.length) == (33, 0x20, 34, 8, 188)
    assert h.is_initiator and not h.is_response


def test_flags_encoding():
    for resp, init, flags in [(False, True, 0x08), (True, False, 0x20), (True, True, 0x28)]:
        data = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, resp, init, 5, []).encode()
        assert data[19] == flags and data[17] == 0x20 and data[16] == 0
        assert len(data) == 28 and struct.unpack("!I", data[24:28])[0] == 28
    assert FLAG_INITIATOR | FLAG_RESPONSE == 0x28


@pytest.mark.parametrize("data,reason", [
    (INIT_REQUEST[:27], "truncated"),
    (INIT_REQUEST[:-1], "length"),
    (INIT_REQUEST + b"\x00", "length"),
    (INIT_REQUEST[:17] + b"\x10" + INIT_REQUEST[18:], "version"),
    (INIT_REQUEST[:24] + b"\x00\x00\x00\xbd" + INIT_REQUEST[28:], "length"),
])
def test_header_errors(data, reason):
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_header(data)
    with pytest.raises(RemoteProtocolError):
        Message.decode(data)


def test_payload_length_errors_in_message():
    # SA length 3 (< 4), then SA length running past the end of the message.
    for sa_len in (b"\x00\x03", b"\x01\x00"):
        bad = INIT_REQUEST[:30] + sa_len + INIT_REQUEST[32:]
        with pytest.raises(RemoteProtocolError):
            Message.decode(bad)


def test_unknown_critical_payload_in_message():
    data = bytearray(Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, False, True, 0,
                             [VendorPayload(b"x")]).encode())
    data[16] = 99       # first payload: unknown type 99
    data[29] |= 0x80    # critical
    with pytest.raises(RemoteProtocolError, match="UNSUPPORTED_CRITICAL_PAYLOAD") as exc:
        Message.decode(bytes(data))
    assert exc.value.unsupported_critical == 99
    data[29] = 0
    assert Message.decode(bytes(data)).summary() == "IKE_SA_INIT request 0 [ UNKN(99) ]"


# --- SK protection ----------------------------------------------------------------------

CIPHERS = {
    "aes256gcm16": (EncrId.AES_GCM_16, 256, None),
    "aes128-sha256": (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    "aes256-sha384": (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, None, None),
}


def contexts(name: str, seed: int = 1) -> tuple[SkContext, SkContext]:
    """Our context and the peer's mirror image, with deterministic keys and IVs."""
    cipher = SkCipher(*CIPHERS[name])
    rnd = random.Random(seed)
    ei, er = rnd.randbytes(cipher.encr_key_len), rnd.randbytes(cipher.encr_key_len)
    ai, ar = rnd.randbytes(cipher.integ_key_len), rnd.randbytes(cipher.integ_key_len)
    ours = SkContext(cipher, ei, ai, er, ar, rng=rnd.randbytes)
    theirs = SkContext(SkCipher(*CIPHERS[name]), er, ar, ei, ai, rng=rnd.randbytes)
    return ours, theirs


def auth_request() -> Message:
    return Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, False, True, 1, [
        IdiPayload.from_string("carol@example.org"),
        CertReqPayload(4, b"\x01" * 20),
        IdrPayload.from_string("vpn.example.org"),
        AuthPayload(2, b"\x55" * 32),
        CpPayload(CfgType.CFG_REQUEST, [(CfgAttr.INTERNAL_IP4_ADDRESS, b""),
                                        (CfgAttr.INTERNAL_IP4_DNS, b"")]),
        SaPayload([Proposal(1, ProtocolId.ESP, b"\xc1\xc2\xc3\xc4", [
            Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
            Transform(TransformType.ESN, 0)])]),
        TsiPayload([TrafficSelector.any_ipv4()]),
        TsrPayload([TrafficSelector.any_ipv4()]),
        NotifyPayload(NotifyType.MOBIKE_SUPPORTED),
    ], encrypted=True)


@pytest.mark.parametrize("name", CIPHERS)
def test_sk_round_trip(name):
    ours, theirs = contexts(name)
    msg = auth_request()
    data = msg.encode(ours)
    h = parse_header(data)
    assert h.next_payload == PayloadType.SK and h.length == len(data)
    assert data[28] == PayloadType.IDi  # SK header names the first inner payload
    assert struct.unpack("!H", data[30:32])[0] == len(data) - 28
    decoded = Message.decode(data, theirs)
    assert decoded == msg and decoded.encrypted
    assert decoded.summary() == ("IKE_AUTH request 1 [ IDi CERTREQ IDr AUTH CPRQ(ADDR DNS) SA "
                                 "TSi TSr N(MOBIKE_SUP) ]")
    # Our own in-keys are the peer's out-keys: we cannot open what we sent.
    with pytest.raises(CryptoError):
        Message.decode(data, ours)


@pytest.mark.parametrize("name", CIPHERS)
def test_sk_empty_message(name):
    ours, theirs = contexts(name)
    msg = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, True, False, 0, [], encrypted=True)
    data = msg.encode(ours)
    assert data[28] == 0
    decoded = Message.decode(data, theirs)
    assert decoded.payloads == [] and decoded.encrypted
    assert decoded.summary() == "INFORMATIONAL response 0 [ ]"


def test_sk_aes_gcm_layout_against_independent_computation():
    ours, _ = contexts("aes256gcm16")
    ours.rng = lambda n: b"\x07" * n
    msg = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, False, True, 3,
                  [DeletePayload(ProtocolId.IKE, [])], encrypted=True)
    data = msg.encode(ours)
    inner = bytes.fromhex("00000008 01000000")  # D payload: IKE, SPI size 0, 0 SPIs
    plaintext = inner + b"\x00"                  # pad length byte, no padding for AEAD
    sk_len = 4 + 8 + len(plaintext) + 16
    header = (SPI_I + SPI_R + bytes([46, 0x20, 37, 0x08]) + struct.pack("!II", 3, 28 + sk_len)
              + bytes([PayloadType.DELETE, 0]) + struct.pack("!H", sk_len))
    key, salt = ours.encr_out[:-4], ours.encr_out[-4:]
    iv = b"\x07" * 8
    assert data == header + iv + AESGCM(key).encrypt(salt + iv, plaintext, header)


@pytest.mark.parametrize("name", CIPHERS)
def test_sk_tamper_detected(name):
    ours, theirs = contexts(name)
    data = auth_request().encode(ours)
    # Flip a bit in the header (message ID), the SK header's critical byte, IV, body, ICV.
    for pos in (23, 29, 32, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(CryptoError):
            Message.decode(bytes(bad), theirs)


def test_encrypted_message_needs_keys():
    ours, _ = contexts("aes256gcm16")
    data = auth_request().encode(ours)
    with pytest.raises(RemoteProtocolError, match="encrypted"):
        Message.decode(data)


def test_unprotected_payload_before_sk_rejected():
    ours, theirs = contexts("aes256gcm16")
    data = auth_request().encode(ours)
    vendor = bytes([PayloadType.SK, 0, 0, 5]) + b"v"
    bad = data[:16] + bytes([PayloadType.VENDOR]) + data[17:24]
    bad += struct.pack("!I", len(data) + len(vendor)) + vendor + data[28:]
    with pytest.raises(RemoteProtocolError, match="next to the SK"):
        Message.decode(bad, theirs)


# --- summaries ----------------------------------------------------------------------------

def test_summaries_in_strongswan_style():
    init = Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, False, True, 0, [
        SaPayload([Proposal(1, ProtocolId.IKE, b"", [Transform(TransformType.DH, 31)])]),
        KePayload(31, bytes(32)), NoncePayload(bytes(32)),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, bytes(20)),
        NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
        NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, bytes.fromhex("00020003")),
    ])
    assert init.summary() == ("IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) "
                              "N(FRAG_SUP) N(HASH_ALG) ]")
    eap = Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, True, False, 2,
                  [EapPayload(bytes([1, 1, 0, 6, 26, 1]))], encrypted=True)
    assert eap.summary() == "IKE_AUTH response 2 [ EAP/REQ/MSCHAPV2 ]"
    success = Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, True, False, 4,
                      [EapPayload(bytes([3, 1, 0, 4]))])
    assert success.summary() == "IKE_AUTH response 4 [ EAP/SUCC ]"
    delete = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, False, True, 3,
                     [DeletePayload(ProtocolId.IKE, [])])
    assert delete.summary() == "INFORMATIONAL request 3 [ D ]"
    odd = Message(SPI_I, SPI_R, 99, True, False, 7, [
        NotifyPayload(12345), NotifyPayload(NotifyType.UPDATE_SA_ADDRESSES),
        NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), CpPayload(CfgType.CFG_REPLY, [])])
    assert odd.summary() == "EXCHANGE(99) response 7 [ N(12345) N(UPD_SA_ADDR) N(NO_PROP) CP ]"


# --- fuzzing ------------------------------------------------------------------------------

def _mutations(valid: bytes, rng: random.Random, rounds: int):
    for _ in range(rounds):
        data = bytearray(valid)
        kind = rng.random()
        if kind < 0.3:
            del data[rng.randrange(len(data)):]
        elif kind < 0.4:
            # Keep the header length consistent, so the payload parsers are reached.
            del data[rng.randrange(28, len(data)):]
            data[24:28] = struct.pack("!I", len(data))
        else:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        yield bytes(data)


def test_fuzz_plain_message_only_raises_protocol_errors():
    rng = random.Random(7296)
    seen = set()
    for data in _mutations(INIT_REQUEST, rng, 5000):
        try:
            Message.decode(data)
            seen.add("ok")
        except RemoteProtocolError:
            seen.add("error")
    assert seen == {"ok", "error"}


def test_fuzz_encrypted_message_only_raises_protocol_or_crypto_errors():
    ours, theirs = contexts("aes128-sha256")
    valid = auth_request().encode(ours)
    rng = random.Random(4306)
    seen = set()
    for data in _mutations(valid, rng, 2000):
        try:
            Message.decode(data, theirs)
            seen.add("ok")
        except RemoteProtocolError:
            seen.add("protocol")
        except CryptoError:
            seen.add("crypto")
    assert {"protocol", "crypto"} <= seen


def test_fuzz_authentic_but_malformed_inner_payloads():
    """A peer with the right keys sending garbage inside SK: still only RemoteProtocolError."""
    ours, theirs = contexts("chacha20poly1305")
    rng = random.Random(5282)
    inner_msg = auth_request()
    inner_msg.encrypted = False
    plain = inner_msg.encode()
    seen = set()
    for mutated in _mutations(plain, rng, 2000):
        if len(mutated) < 28:
            continue
        chain = mutated[28:]
        sk_len = 4 + ours.cipher.body_length(len(chain))
        aad = (mutated[:16] + bytes([PayloadType.SK]) + mutated[17:24]
               + struct.pack("!I", 28 + sk_len) + bytes([mutated[16], 0])
               + struct.pack("!H", sk_len))
        body = ours.cipher.seal(ours.encr_out, ours.integ_out, ours.rng(ours.cipher.iv_size),
                                aad, chain)
        try:
            Message.decode(aad + body, theirs)
            seen.add("ok")
        except RemoteProtocolError:
            seen.add("error")
    assert seen == {"ok", "error"}


def test_idtype_constant_used_by_from_string():
    assert IdiPayload.from_string("198.51.100.9").id_type == IdType.IPV4_ADDR
