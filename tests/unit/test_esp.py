"""ESP SA tests: published GCM-in-ESP vectors, layout checks, round trips, rejections."""

import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from client.esp.ciphers import key_lengths, make_transform
from client.esp.sa import EspError, EspInbound, EspOutbound
from client.esp.udpencap import KEEPALIVE, NON_ESP_MARKER, classify, ike_datagram
from client.ikev2.constants import EncrId, IntegId

H = bytes.fromhex

# draft-mcgrew-gcm-test-01 (GCM in ESP per RFC 4106), the AES-128 case with SPI 0xa5f8, seq 10.
GCM_KEYMAT = H("feffe9928665731c6d6a8f9467308308cafebabe")
GCM_PACKET = H(
    "0000a5f8"
    "0000000a"
    "facedbaddecaf888"
    "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c"
    "3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1"
    "83b70d3aa8bc6ee4c309e9d85a41ad4a"
)
GCM_PLAINTEXT = H(
    "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100"
    "0001000000000000037369700963796265726369747902646b0000010001"
    "0001"
)


def ipv4_packet(payload: bytes = b"hello", src: bytes = b"\xc6\x12\x00\x01") -> bytes:
    total = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, src, b"\xc6\x12\x00\x02")
    return hdr + payload


def ipv6_packet(payload: bytes = b"hello6") -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), 17, 64)
        + b"\x20\x01\x0d\xb8"
        + bytes(12)
        + b"\x20\x01\x0d\xb8"
        + bytes(11)
        + b"\x01"
        + payload
    )


SUITES = [
    (EncrId.AES_GCM_16, 128, None),
    (EncrId.AES_GCM_16, 256, None),
    (EncrId.CHACHA20_POLY1305, 256, None),
    (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256),
    (EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96),
]


def pair(encr: int, bits: int, integ: int | None, spi: int = 0xC0FFEE01, window: int = 1024):
    ek_len, ik_len = key_lengths(encr, bits, integ)
    ek = bytes(range(1, ek_len + 1))
    ik = bytes(range(100, 100 + ik_len)) if integ else None
    out = EspOutbound(spi, encr, bits, ek, integ, ik)
    inb = EspInbound(spi, encr, bits, ek, integ, ik, replay_window=window)
    return out, inb


def test_gcm_vector_opens_to_published_plaintext():
    t = make_transform(EncrId.AES_GCM_16, 128, GCM_KEYMAT)
    assert t.open(GCM_PACKET[:8], GCM_PACKET[8:]) == GCM_PLAINTEXT


def test_gcm_vector_through_inbound_sa():
    # The draft's payload has next header 1, which a tunnel-mode SA refuses; reaching that
    # check proves the ICV (nonce = salt || IV, AAD = SPI || SeqNo) verified.
    inb = EspInbound(0xA5F8, EncrId.AES_GCM_16, 128, GCM_KEYMAT)
    with pytest.raises(EspError, match="next header 1"):
        inb.decapsulate(GCM_PACKET)
    inb = EspInbound(0xA5F8, EncrId.AES_GCM_16, 128, GCM_KEYMAT)
    bad = bytearray(GCM_PACKET)
    bad[-1] ^= 1
    with pytest.raises(EspError, match="ICV"):
        inb.decapsulate(bytes(bad))


@pytest.mark.parametrize(
    "encr,aead", [(EncrId.AES_GCM_16, AESGCM), (EncrId.CHACHA20_POLY1305, ChaCha20Poly1305)]
)
def test_aead_layout_matches_rfc4106_rfc7634(encr, aead):
    key, salt = bytes(range(32)), H("a0a1a2a3")
    out = EspOutbound(0x01020304, encr, 256, key + salt)
    out.next_seq = 5
    inner = ipv4_packet(b"x" * 7)  # 27 bytes + 2 trailer -> 3 padding bytes to 32
    pkt = out.encapsulate(inner)
    assert pkt[:8] == H("0102030400000005")
    iv = pkt[8:16]
    assert iv == pkt[:8]  # SPI || SeqNo: unique per key, as the explicit IV must be
    plain = aead(key).decrypt(salt + iv, pkt[16:], pkt[:8])
    assert plain == inner + b"\x01\x02\x03" + b"\x03\x04"
    assert len(pkt) == 8 + 8 + 32 + 16


@pytest.mark.parametrize("encr", [EncrId.AES_GCM_16, EncrId.CHACHA20_POLY1305])
def test_aead_iv_never_repeats_within_an_sa(encr):
    out, _ = pair(encr, 256, None)
    ivs = [out.encapsulate(ipv4_packet())[8:16] for _ in range(1000)]
    out.next_seq = 0xFFFFFFFF
    ivs.append(out.encapsulate(ipv4_packet())[8:16])
    assert len(set(ivs)) == len(ivs)


def test_cbc_layout_and_icv():
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    ek, ik = bytes(16), bytes(range(32))
    out = EspOutbound(7, EncrId.AES_CBC, 128, ek, IntegId.HMAC_SHA2_256_128, ik)
    inner = ipv6_packet(b"y" * 10)
    pkt = out.encapsulate(inner)
    icv = hmac.new(ik, pkt[:-16], hashlib.sha256).digest()[:16]
    assert pkt[-16:] == icv
    iv, ct = pkt[8:24], pkt[24:-16]
    assert len(ct) % 16 == 0
    dec = Cipher(algorithms.AES(ek), modes.CBC(iv)).decryptor()
    plain = dec.update(ct) + dec.finalize()
    pad_len = plain[-2]
    assert plain[-1] == 41
    assert plain[: len(inner)] == inner
    assert plain[len(inner) : -2] == bytes(range(1, pad_len + 1))


@pytest.mark.parametrize("encr,bits,integ", SUITES)
def test_round_trip_all_transforms(encr, bits, integ):
    out, inb = pair(encr, bits, integ)
    for n in (1, 2, 3, 15, 16, 17, 100, 1400):
        for pkt in (ipv4_packet(bytes(n)), ipv6_packet(bytes(n))):
            assert inb.decapsulate(out.encapsulate(pkt)) == pkt
    assert out.packets == inb.packets == 16
    assert out.bytes == inb.bytes == 8 * (20 + 40) + 2 * sum((1, 2, 3, 15, 16, 17, 100, 1400))


def test_sequence_numbers_and_no_wrap():
    out, _ = pair(EncrId.AES_GCM_16, 128, None)
    assert out.encapsulate(ipv4_packet())[4:8] == H("00000001")
    assert out.encapsulate(ipv4_packet())[4:8] == H("00000002")
    out.next_seq = 0xFFFFFFFF
    assert out.encapsulate(ipv4_packet())[4:8] == H("ffffffff")
    with pytest.raises(EspError, match="exhausted"):
        out.encapsulate(ipv4_packet())


def test_outbound_rejects_non_ip():
    out, _ = pair(EncrId.AES_GCM_16, 128, None)
    for bad in (b"", b"\x50abc"):
        with pytest.raises(EspError):
            out.encapsulate(bad)


@pytest.mark.parametrize("encr,bits,integ", SUITES)
def test_tamper_every_byte_region_rejected(encr, bits, integ):
    out, inb = pair(encr, bits, integ)
    pkt = out.encapsulate(ipv4_packet(b"payload"))
    for pos in range(4, len(pkt)):  # SPI bytes are checked separately
        bad = bytearray(pkt)
        bad[pos] ^= 0x80
        with pytest.raises(EspError):
            inb.decapsulate(bytes(bad))
    assert inb.decapsulate(pkt) == ipv4_packet(b"payload")


@pytest.mark.parametrize("encr,bits,integ", SUITES)
def test_truncation_rejected(encr, bits, integ):
    out, inb = pair(encr, bits, integ)
    pkt = out.encapsulate(ipv4_packet(b"payload" * 5))
    for n in range(len(pkt)):
        with pytest.raises(EspError):
            inb.decapsulate(pkt[:n])
    with pytest.raises(EspError):
        inb.decapsulate(pkt + b"\x00")


def test_wrong_spi_and_replay_rejected():
    out, inb = pair(EncrId.CHACHA20_POLY1305, 256, None)
    pkt = out.encapsulate(ipv4_packet())
    other = EspInbound(0x1234, EncrId.CHACHA20_POLY1305, 256, bytes(36))
    with pytest.raises(EspError, match="SPI"):
        other.decapsulate(pkt)
    assert inb.decapsulate(pkt)
    with pytest.raises(EspError, match="replay"):
        inb.decapsulate(pkt)
    # A forged packet does not consume a sequence number.
    pkt2 = out.encapsulate(ipv4_packet())
    forged = pkt2[:-1] + bytes([pkt2[-1] ^ 1])
    with pytest.raises(EspError, match="ICV"):
        inb.decapsulate(forged)
    assert inb.decapsulate(pkt2)


def _seal_raw(encr: int, payload: bytes, seq: int = 1) -> tuple[bytes, EspInbound]:
    """An authentic packet around an arbitrary (possibly malformed) payload."""
    key = bytes(range(36))
    t = make_transform(encr, 256, key)
    header = (99).to_bytes(4, "big") + seq.to_bytes(4, "big")
    return header + t.seal(header, seq, payload), EspInbound(99, encr, 256, key)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (ipv4_packet(b"abcd") + b"\x01\x03\x02\x04", "monotonic"),  # pad bytes 1,3
        (ipv4_packet(b"abcd") + b"\x00\x00\x02\x04", "monotonic"),
        (b"\x45\x00\x10\x04", "exceeds"),  # pad length 16 > payload
        (ipv4_packet(b"abcd") + b"\x01\x02\x02\x11", "next header"),  # UDP as next header
        (ipv6_packet(b"ab") + b"\x00\x04", "does not match"),  # IPv6 packet, next header 4
        (b"\x01\x02\x02\x04", "does not match"),  # empty inner packet
    ],
)
def test_bad_trailer_rejected(payload, reason):
    assert len(payload) % 4 == 0
    pkt, inb = _seal_raw(EncrId.AES_GCM_16, payload)
    with pytest.raises(EspError, match=reason):
        inb.decapsulate(pkt)


@pytest.mark.parametrize("pad_len", [0, 1, 4, 7, 100, 255])
@pytest.mark.parametrize("inner", [ipv4_packet(b"abc"), ipv6_packet(b"abcd")])
def test_any_valid_padding_accepted(pad_len, inner):
    # Peers may pad beyond the alignment (RFC 4303 section 2.4, e.g. to hide lengths).
    nh = 4 if inner[0] >> 4 == 4 else 41
    payload = inner + bytes(range(1, pad_len + 1)) + bytes((pad_len, nh))
    pkt, inb = _seal_raw(EncrId.AES_GCM_16, payload)
    assert inb.decapsulate(pkt) == inner
    assert inb.packets == 1 and inb.bytes == len(inner)


@pytest.mark.parametrize(
    "trailer,reason",
    [
        (bytes(range(1, 8)) + b"\x08\x04", "monotonic"),  # pad length 8, only 7 pad bytes
        (bytes(range(1, 8)) + b"\x09\x04", "monotonic"),  # ... or they are inner bytes
        (b"\x01\x02\x04\x02\x04", "monotonic"),  # a wrong byte in long padding
        (b"\x01\x02\x03\x03\x00", "next header 0"),  # valid padding, next header 0
        (b"\x01\x02\x01\x3b", "monotonic"),  # a dummy packet is checked like any other
        (b"\x01\x02\x03\x03\x29", "does not match"),  # IPv4 packet, next header IPv6
    ],
)
def test_bad_padding_and_next_header_dropped(trailer, reason):
    pkt, inb = _seal_raw(EncrId.CHACHA20_POLY1305, ipv4_packet(b"abc") + trailer)
    with pytest.raises(EspError, match=reason):
        inb.decapsulate(pkt)
    assert inb.packets == inb.bytes == inb.dummies == 0
    # The packet was authentic: its sequence number is used up all the same.
    assert inb.replay.top == 1
    with pytest.raises(EspError, match="replay"):
        inb.decapsulate(pkt)


def test_dummy_packet_dropped_silently():
    pkt, inb = _seal_raw(EncrId.CHACHA20_POLY1305, b"\x01\x02\x02\x3b")
    assert inb.decapsulate(pkt) == b""
    assert inb.dummies == 1 and inb.packets == 0
    # A dummy packet may carry bytes that look like anything (RFC 4303 section 2.6).
    pkt, inb = _seal_raw(EncrId.AES_GCM_16, b"\x45junk\x01\x02\x02\x3b")
    assert inb.decapsulate(pkt) == b""
    assert inb.dummies == 1 and inb.packets == 0


@pytest.mark.parametrize("encr,bits,integ", [SUITES[1], SUITES[3]])
def test_replay_window_through_sa_matches_set_model(encr, bits, integ):
    """decapsulate() (its inline in-order path and ReplayWindow for the rest) against the
    definition: accept a number above everything seen, or within 64 of the highest and not
    seen before; drop anything else, and let a forged packet change nothing."""
    out, inb = pair(encr, bits, integ, window=64)
    inner = ipv4_packet(b"r")
    sealed = {}

    def packet(seq: int) -> bytes:
        if seq not in sealed:
            out.next_seq = seq
            sealed[seq] = out.encapsulate(inner)
        return sealed[seq]

    rng = random.Random(4303)
    seen: set[int] = set()
    top = 0
    for _ in range(3000):
        r = rng.random()
        if r < 0.5:
            seq = top + 1
        elif r < 0.6:
            seq = top + rng.randint(2, 200)  # a jump, sometimes past the whole window
        else:
            seq = max(1, top - rng.randint(0, 80))  # late, duplicate or too old
        pkt = packet(seq)
        new = seq > top or (top - seq < 64 and seq not in seen)
        if rng.random() < 0.1:  # forged, even far ahead: dropped, and nothing moves
            for forged in (pkt, packet(top + rng.randint(1, 1000))):
                with pytest.raises(EspError):
                    inb.decapsulate(forged[:-1] + bytes([forged[-1] ^ 1]))
            assert inb.replay.top == top
        if new:
            assert inb.decapsulate(pkt) == inner, seq
            seen.add(seq)
            top = max(top, seq)
        else:
            with pytest.raises(EspError, match="replay"):
                inb.decapsulate(pkt)
        assert inb.replay.top == top
    assert inb.packets == len(seen)


def test_transform_parameter_validation():
    with pytest.raises(ValueError):
        make_transform(EncrId.AES_GCM_16, 128, bytes(16))  # salt missing
    with pytest.raises(ValueError):
        make_transform(EncrId.AES_CBC, 128, bytes(16), None, None)
    with pytest.raises(ValueError):
        make_transform(EncrId.AES_GCM_16, 128, bytes(20), IntegId.HMAC_SHA2_256_128, bytes(32))
    with pytest.raises(ValueError):
        make_transform(EncrId.AES_CTR, 128, bytes(20))


def test_udpencap_classify():
    assert classify(KEEPALIVE) == ("keepalive", b"")
    assert classify(ike_datagram(b"IKEMSG")) == ("ike", b"IKEMSG")
    assert ike_datagram(b"x")[:4] == NON_ESP_MARKER
    esp = H("c0ffee0100000001") + bytes(30)
    assert classify(esp) == ("esp", esp)
    for bad in (b"", b"\x00", NON_ESP_MARKER, b"\x01\x02\x03", b"\xff\xff", b"\x01" * 7):
        assert classify(bad) == ("invalid", b"")
