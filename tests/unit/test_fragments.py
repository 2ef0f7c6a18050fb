"""IKE fragmentation (RFC 7383): SKF encoding, verification, reassembly and its limits."""

import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.ikev2.constants import ExchangeType, PayloadType, ProtocolId
from client.ikev2.errors import CryptoError, LocalProtocolError, RemoteProtocolError
from client.ikev2.fragments import FragmentLimits, Reassembler
from client.ikev2.message import (
    Fragment,
    Message,
    decode_fragment,
    fragment_capacity,
    parse_header,
)
from client.ikev2.payloads import CertPayload, DeletePayload
from tests.unit.test_message import CIPHERS, SPI_I, SPI_R, auth_request, contexts


def big_request(cert_bytes: int = 3000) -> Message:
    msg = auth_request()
    msg.payloads.insert(1, CertPayload(4, bytes(range(256)) * (cert_bytes // 256)))
    return msg


def reassemble(datagrams: list[bytes], theirs, r: Reassembler | None = None) -> Message:
    r = r or Reassembler()
    whole = None
    for d in datagrams:
        assert whole is None, "complete before the last fragment"
        whole = r.add(decode_fragment(d, theirs))
    assert whole is not None
    return Message.from_fragments(whole.header, whole.first_payload, whole.chain)


@pytest.mark.parametrize("name", CIPHERS)
@pytest.mark.parametrize("max_size", [200, 576, 1244])
def test_fragments_fit_and_reassemble(name, max_size):
    ours, theirs = contexts(name)
    msg = big_request()
    datagrams = msg.encode_fragments(ours, max_size)
    total = len(datagrams)
    assert total > 1
    for number, d in enumerate(datagrams, 1):
        h = parse_header(d)
        assert len(d) <= max_size and h.next_payload == PayloadType.SKF
        assert (h.message_id, h.exchange, h.is_initiator) == (1, ExchangeType.IKE_AUTH, True)
        next_payload, _, length, num, tot = struct.unpack_from("!BBHHH", d, 28)
        assert (num, tot, length) == (number, total, len(d) - 28)
        # Only the first fragment names the first inner payload (RFC 7383 2.5).
        assert next_payload == (PayloadType.IDi if number == 1 else 0)
    # Every fragment but the last is filled: no more fragments than needed.
    assert all(len(d) > max_size - 16 for d in datagrams[:-1])
    assert reassemble(datagrams, theirs) == msg


def test_small_message_stays_one_sk_datagram():
    ours, theirs = contexts("aes256gcm16")
    msg = auth_request()
    (datagram,) = msg.encode_fragments(ours, 1244)
    assert parse_header(datagram).next_payload == PayloadType.SK
    assert Message.decode(datagram, theirs) == msg


def test_aes_gcm_fragment_layout_against_independent_computation():
    """The AAD is the IKE header plus the whole 8-byte SKF header (number and total)."""
    ours, _ = contexts("aes256gcm16")
    ours.rng = lambda n: b"\x09" * n
    msg = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, False, True, 5,
                  [DeletePayload(ProtocolId.IKE, [])] * 8, encrypted=True)
    room = fragment_capacity(ours, 80)
    assert room == 80 - 28 - 8 - 8 - 16 - 1  # AEAD: no padding beyond the pad length byte
    datagrams = msg.encode_fragments(ours, 80)
    chain = bytes.fromhex("2a000008 01000000") * 7 + bytes.fromhex("00000008 01000000")
    assert len(datagrams) == -(-len(chain) // room)
    piece = chain[room:2 * room]
    plaintext = piece + b"\x00"
    skf_len = 8 + 8 + len(plaintext) + 16
    header = (SPI_I + SPI_R + bytes([PayloadType.SKF, 0x20, 37, 0x08])
              + struct.pack("!II", 5, 28 + skf_len)
              + struct.pack("!BBHHH", 0, 0, skf_len, 2, len(datagrams)))
    key, salt = ours.encr_out[:-4], ours.encr_out[-4:]
    iv = b"\x09" * 8
    assert datagrams[1] == header + iv + AESGCM(key).encrypt(salt + iv, plaintext, header)



@pytest.mark.parametrize("name", ["aes128-sha256", "aes256gcm16"])
def test_fragment_number_and_total_are_authenticated(name):
    ours, theirs = contexts(name)
    d = big_request().encode_fragments(ours, 576)[1]
    for pos in (32, 33, 34, 35, 23):  # fragment number, total, message ID
        bad = bytearray(d)
        bad[pos] ^= 0x01
        with pytest.raises((CryptoError, RemoteProtocolError)):
            decode_fragment(bytes(bad), theirs)
    bad = bytearray(d)
    bad[35] ^= 0x04  # total 3 -> 7: structurally fine, so only the ICV can catch it
    with pytest.raises(CryptoError):
        decode_fragment(bytes(bad), theirs)


def _patched(d: bytes, number: int | None = None, total: int | None = None,
             length: int | None = None) -> bytes:
    b = bytearray(d)
    if number is not None:
        b[32:34] = struct.pack("!H", number)
    if total is not None:
        b[34:36] = struct.pack("!H", total)
    if length is not None:
        b[30:32] = struct.pack("!H", length)
    return bytes(b)


@pytest.mark.parametrize("patch,reason", [
    ({"number": 0}, "fragment 0 of"),
    ({"number": 9, "total": 3}, "fragment 9 of 3"),
    ({"number": 1, "total": 0}, "fragment 1 of 0"),
    ({"length": 7}, "only payload"),
    ({"length": 2000}, "only payload"),
])
def test_malformed_fragment_headers(patch, reason):
    ours, theirs = contexts("aes256gcm16")
    d = big_request().encode_fragments(ours, 576)[0]
    with pytest.raises(RemoteProtocolError, match=reason):
        decode_fragment(_patched(d, **patch), theirs)


def test_not_a_fragment_and_truncated_fragment():
    ours, theirs = contexts("aes256gcm16")
    with pytest.raises(RemoteProtocolError, match="not SKF"):
        decode_fragment(auth_request().encode(ours), theirs)
    d = big_request().encode_fragments(ours, 576)[0]
    short = d[:32]
    short = short[:24] + struct.pack("!I", len(short)) + short[28:]
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_fragment(short, theirs)


def test_skf_after_another_payload_is_rejected():
    """RFC 7383: the SKF payload comes alone; the chain parser refuses it elsewhere."""
    ours, theirs = contexts("aes256gcm16")
    d = big_request().encode_fragments(ours, 576)[0]
    vendor = bytes([PayloadType.SKF, 0, 0, 5]) + b"v"
    bad = d[:16] + bytes([PayloadType.VENDOR]) + d[17:24]
    bad += struct.pack("!I", len(d) + len(vendor)) + vendor + d[28:]
    with pytest.raises(RemoteProtocolError, match="SKF"):
        Message.decode(bad, theirs)


def test_tiny_fragment_size_is_a_local_error():
    ours, _ = contexts("aes128-sha256")
    with pytest.raises(LocalProtocolError, match="no room"):
        big_request().encode_fragments(ours, 80)


def test_unprotected_messages_are_not_fragmented():
    ours, _ = contexts("aes256gcm16")
    msg = big_request()
    msg.encrypted = False
    with pytest.raises(LocalProtocolError):
        msg.encode_fragments(ours, 576)


# --- reassembly -------------------------------------------------------------------------

def fragments_of(msg: Message, name: str = "aes256gcm16", max_size: int = 400):
    ours, theirs = contexts(name)
    return [decode_fragment(d, theirs) for d in msg.encode_fragments(ours, max_size)]


def test_out_of_order_and_duplicate_fragments():
    msg = big_request()
    frags = fragments_of(msg)
    assert len(frags) >= 4
    r = Reassembler()
    order = list(reversed(frags[1:])) + [frags[0]]
    for i, f in enumerate(order[:-1]):
        assert r.add(f) is None
        assert r.add(f) is None  # a duplicate changes nothing
        assert r.pending == i + 1
    whole = r.add(order[-1])
    assert whole is not None and whole.fragments == len(frags)
    assert Message.from_fragments(whole.header, whole.first_payload, whole.chain) == msg
    assert r.pending == 0


def test_a_new_message_id_discards_stale_fragments():
    old = fragments_of(big_request())
    newer = big_request()
    newer.message_id = 2
    new = fragments_of(newer)
    r = Reassembler()
    for f in old[:-1]:
        r.add(f)
    for f in new[:-1]:
        assert r.add(f) is None
    assert r.pending == len(new) - 1
    # The old message's last fragment starts it over; it cannot complete anymore.
    assert r.add(old[-1]) is None and r.pending == 1
    for f in new:
        whole = r.add(f)
    assert whole is not None and whole.header.message_id == 2


def test_more_fragments_restart_fewer_fragments_are_dropped():
    """RFC 7383 2.6: a sender that shrinks its fragments sends more of them."""
    msg = big_request()
    large = fragments_of(msg, max_size=1000)
    small = fragments_of(msg, max_size=300)
    assert len(small) > len(large) > 1
    r = Reassembler()
    r.add(large[0])
    assert r.add(small[1]) is None and r.pending == 1  # started over
    with pytest.raises(RemoteProtocolError, match=f"the message has {len(small)}"):
        r.add(large[1])
    for f in [small[0], *small[2:]]:
        whole = r.add(f)
    assert Message.from_fragments(whole.header, whole.first_payload, whole.chain) == msg


def test_fragment_count_limit():
    frags = fragments_of(big_request(), max_size=200)
    r = Reassembler(FragmentLimits(max_fragments=len(frags) - 1))
    with pytest.raises(RemoteProtocolError, match="more than"):
        r.add(frags[0])
    assert r.pending == 0


def test_size_limit_drops_the_whole_message():
    frags = fragments_of(big_request(), max_size=400)
    limit = sum(len(f.data) for f in frags) - 1
    r = Reassembler(FragmentLimits(max_bytes=limit))
    for f in frags[:-1]:
        r.add(f)
    with pytest.raises(RemoteProtocolError, match=f"more than {limit} bytes"):
        r.add(frags[-1])
    assert r.pending == 0


def test_forged_total_cannot_reach_the_buffer():
    """Fragments are verified before reassembly: a forgery with a larger total fails its
    integrity check and so cannot make the reassembler start over."""
    ours, theirs = contexts("aes128-sha256")
    datagrams = big_request().encode_fragments(ours, 400)
    r = Reassembler()
    r.add(decode_fragment(datagrams[0], theirs))
    forged = _patched(datagrams[1], total=len(datagrams) + 5)
    with pytest.raises(CryptoError):
        r.add(decode_fragment(forged, theirs))
    for d in datagrams[1:]:
        whole = r.add(decode_fragment(d, theirs))
    assert whole is not None


def test_authentic_garbage_chain_is_a_protocol_error():
    ours, theirs = contexts("aes256gcm16")
    msg = big_request()
    frags = [decode_fragment(d, theirs) for d in msg.encode_fragments(ours, 400)]
    r = Reassembler()
    frags[0] = Fragment(frags[0].header, 1, frags[0].total, PayloadType.NONE, frags[0].data)
    for f in frags:
        whole = r.add(f)
    with pytest.raises(RemoteProtocolError, match="after the last payload"):
        Message.from_fragments(whole.header, whole.first_payload, whole.chain)


def test_fuzzed_fragments_only_raise_protocol_or_crypto_errors():
    ours, theirs = contexts("aes128-sha256")
    valid = big_request().encode_fragments(ours, 400)
    rng = random.Random(7383)
    seen = set()
    r = Reassembler()
    for _ in range(3000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.2 and len(data) > 29:
                # Truncate but keep the header length consistent, so the SKF checks run.
                del data[rng.randrange(28, len(data)):]
                data[24:28] = struct.pack("!I", len(data))
            else:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            r.add(decode_fragment(bytes(data), theirs))
            seen.add("ok")
        except RemoteProtocolError:
            seen.add("protocol")
        except CryptoError:
            seen.add("crypto")
    assert {"protocol", "crypto"} <= seen
