"""IKE fragmentation (RFC 7383) between the client and the in-memory gateway."""

from __future__ import annotations

import random
import struct

import pytest

from client.ikev2.constants import ExchangeType, NotifyType, PayloadType
from client.ikev2.events import ChildSaEstablished, IkeSaEstablished
from client.ikev2.ike_sa import State
from client.ikev2.message import Message, parse_header
from client.ikev2.payloads import NotifyPayload, VendorPayload
from tests.exchange.conftest import (
    EAP_PASSWORD,
    EAP_USER,
    Filter,
    GatewayConfig,
    Pki,
    client_config,
    events,
    kind,
    make_pair,
    pump,
)

CONNECTED = [IkeSaEstablished, ChildSaEstablished]
FRAGMENT_SIZE = 200  # IP datagram; over IPv4 and port 4500 that is 168 bytes of IKE
IKE_MAX = FRAGMENT_SIZE - 20 - 8 - 4


def is_fragment(d: bytes) -> bool:
    return parse_header(d).next_payload == PayloadType.SKF


def fragment_numbers(d: bytes) -> tuple[int, int]:
    return struct.unpack_from("!HH", d, 32)


def pair(pki: Pki, gateway_fragments: bool = True, client_fragments: bool = True,
         fragment_max: int = 300):
    """EAP-MSCHAPv2 with a certificate: the gateway's IKE_AUTH response is the large one."""
    cert, key = pki.gateway
    client = client_config(auth_method="eap", psk=None, local_id=EAP_USER,
                           eap_password=EAP_PASSWORD, trust_anchors=[pki.ca],
                           fragment_size=FRAGMENT_SIZE, fragmentation=client_fragments)
    gateway = GatewayConfig(key=key, certs=[cert, pki.ca], eap_users={EAP_USER: EAP_PASSWORD},
                            fragmentation=gateway_fragments, fragment_max=fragment_max)
    return make_pair(client, gateway)


def test_large_messages_travel_as_fragments_both_ways(pki) -> None:
    client, gw = pair(pki)
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0)
    assert [type(e) for e in events(client)] == CONNECTED
    assert client.peer_fragmentation and gw.client_fragmentation
    init_request = Message.decode(traffic.from_client[0])
    assert init_request.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    # Nothing we sent after IKE_SA_INIT is larger than the path allows ...
    later = traffic.from_client[1:]
    assert later and all(len(d) <= IKE_MAX for d in later)
    # ... so the IKE_AUTH request with IDi, CP, SA and TS went as numbered fragments.
    first_auth = [d for d in later if kind(d) == (ExchangeType.IKE_AUTH, False, 1)]
    assert len(first_auth) > 1 and all(is_fragment(d) for d in first_auth)
    assert [fragment_numbers(d) for d in first_auth] == [
        (n, len(first_auth)) for n in range(1, len(first_auth) + 1)]
    # The gateway's certificate, AUTH and EAP request came in fragments too.
    response = [d for d in traffic.from_gateway if kind(d) == (ExchangeType.IKE_AUTH, True, 1)]
    assert len(response) > 2 and all(is_fragment(d) and len(d) <= 300 for d in response)
    assert gw.fragments_received >= len(first_auth)


def test_no_fragments_without_the_gateways_support(pki) -> None:
    client, gw = pair(pki, gateway_fragments=False)
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0)
    assert [type(e) for e in events(client)] == CONNECTED
    assert not client.peer_fragmentation
    assert not any(is_fragment(d) for d in traffic.from_client + traffic.from_gateway)
    assert max(len(d) for d in traffic.from_client) > IKE_MAX


def test_fragmentation_can_be_switched_off(pki) -> None:
    client, gw = pair(pki, client_fragments=False)
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0)
    assert [type(e) for e in events(client)] == CONNECTED
    init_request = Message.decode(traffic.from_client[0])
    assert init_request.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is None
    assert not any(is_fragment(d) for d in traffic.from_client + traffic.from_gateway)


class Shuffle:
    """Holds the fragments of each message and delivers them reordered, some twice."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.held: list[bytes] = []
        self.shuffled = 0

    def __call__(self, d: bytes) -> list[bytes]:
        if not is_fragment(d):
            return [d]
        self.held.append(d)
        if len(self.held) < fragment_numbers(d)[1]:
            return []
        out, self.held = self.held, []
        out = out + self.rng.sample(out, k=len(out) // 2)  # duplicates
        self.rng.shuffle(out)
        self.shuffled += 1
        return out


def test_out_of_order_and_duplicated_fragments(pki) -> None:
    client, gw = pair(pki)
    shuffle = Shuffle()
    client.initiate(0.0)
    pump(client, gw, 0.0, to_client=shuffle)
    assert shuffle.shuffled >= 1
    assert [type(e) for e in events(client)] == CONNECTED
    assert client.get_timer() is None  # no retransmission was needed


def nth_fragment(n: int, mangle, exchange: int = ExchangeType.IKE_AUTH) -> Filter:
    """Apply `mangle` to fragment number n of the first fragmented `exchange` message."""
    done = [False]

    def f(d: bytes) -> list[bytes]:
        if not done[0] and is_fragment(d) and kind(d)[0] == exchange \
                and fragment_numbers(d)[0] == n:
            done[0] = True
            return mangle(d)
        return [d]

    return f


def flip_icv(d: bytes) -> list[bytes]:
    return [d[:-1] + bytes([d[-1] ^ 1])]


def lose(d: bytes) -> list[bytes]:
    return []


@pytest.mark.parametrize("mangle", [flip_icv, lose], ids=["icv-failure", "lost"])
def test_bad_response_fragment_costs_one_retransmission(pki, caplog, mangle) -> None:
    """A fragment that fails its ICV is dropped alone: the others are kept, and the
    retransmitted request brings the gateway's fragments again (only fragment 1 of the
    request makes it resend, not each fragment)."""
    client, gw = pair(pki)
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0, to_client=nth_fragment(2, mangle))
    assert events(client) == [] and client.state is State.CONNECTING
    assert client._fragments[True].pending > 0  # the good fragments are held
    request = [d for d in traffic.from_client if kind(d) == (ExchangeType.IKE_AUTH, False, 1)]
    timer = client.get_timer()
    client.handle_timer(timer)
    again = pump(client, gw, timer)
    assert again.from_client[:len(request)] == request  # every fragment, byte for byte
    resent = [d for d in again.from_gateway if kind(d) == (ExchangeType.IKE_AUTH, True, 1)]
    assert len(resent) == fragment_numbers(resent[0])[1]  # one copy of the response
    assert [type(e) for e in events(client)] == CONNECTED
    if mangle is flip_icv:
        assert "integrity" in caplog.text or "tag mismatch" in caplog.text


def test_lost_request_fragment_is_retransmitted_with_the_others(pki) -> None:
    client, gw = pair(pki)
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0, to_gateway=nth_fragment(3, lose))
    assert events(client) == [] and gw.idi is None  # the gateway has no whole request
    request = [d for d in traffic.from_client if kind(d) == (ExchangeType.IKE_AUTH, False, 1)]
    client.handle_timer(client.get_timer())
    again = pump(client, gw, 1.0)
    assert again.from_client[:len(request)] == request
    assert [type(e) for e in events(client)] == CONNECTED


def forged_fragment(d: bytes) -> list[bytes]:
    """Noise after a header that routes to the right message: dropped, then the real one."""
    body = random.Random(3).randbytes(len(d) - 36)
    return [d[:36] + body, d]


def wrong_message_id(d: bytes) -> list[bytes]:
    h = bytearray(d)
    h[20:24] = struct.pack("!I", 7)
    return [bytes(h), d]


def bad_total(d: bytes) -> list[bytes]:
    return [d[:34] + struct.pack("!H", 0) + d[36:], d]


@pytest.mark.parametrize("mangle", [forged_fragment, wrong_message_id, bad_total])
def test_forged_and_malformed_fragments_are_dropped(pki, mangle) -> None:
    client, gw = pair(pki)
    client.initiate(0.0)
    pump(client, gw, 0.0, to_client=nth_fragment(1, mangle))
    assert [type(e) for e in events(client)] == CONNECTED
    assert client.get_timer() is None


def test_fragment_before_keys_is_dropped(pki) -> None:
    """IKE_SA_INIT is never fragmented: an SKF datagram then is noise."""
    client, gw = pair(pki)
    client.initiate(0.0)
    (request,) = client.datagrams_to_send()
    fake = bytearray(request[:28]) + struct.pack("!BBHHH", 0, 0, 24, 1, 1) + bytes(16)
    fake[16] = PayloadType.SKF
    fake[19] |= 0x20  # response
    fake[24:28] = struct.pack("!I", len(fake))
    client.receive(bytes(fake), 0.0)
    assert client.state is State.CONNECTING and events(client) == []
    gw.receive(request)
    pump(client, gw, 0.0)
    assert [type(e) for e in events(client)] == CONNECTED


def test_fragmented_gateway_request_is_answered_once_per_retransmission(pki) -> None:
    client, gw = pair(pki)
    client.initiate(0.0)
    pump(client, gw, 0.0)
    events(client)
    big = VendorPayload(bytes(range(256)) * 3)
    gw.request([big, NotifyPayload(40000, b"x" * 100)])
    assert len(gw.last_request_datagrams) > 2
    lose_answer: Filter = lambda d: []  # noqa: E731
    answer = pump(client, gw, 5.0, to_gateway=lose_answer).from_client
    assert len(answer) == 1 and gw.responses == []
    gw.retransmit()  # every fragment again: only fragment 1 makes the client resend
    again = pump(client, gw, 6.0).from_client
    assert again == answer
    assert len(gw.responses) == 1 and client.state is State.ESTABLISHED
