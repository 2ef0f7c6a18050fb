"""MOBIKE (RFC 4555) as the original initiator, against the in-memory MobikeResponder:
announcing it with our addresses, moving the SA (UPDATE_SA_ADDRESSES with NAT-D and
COOKIE2) without touching the CHILD_SA, refusals, NATs that come, go and rebind."""

from __future__ import annotations

import pytest

from client.ikev2.constants import ExchangeType, NotifyType
from client.ikev2.errors import PeerUnreachable, RemoteProtocolError
from client.ikev2.events import (
    AddressesUpdated,
    AddressUpdateFailed,
    ChildSaEstablished,
    IkeSaClosed,
    IkeSaEstablished,
)
from client.ikev2.ike_sa import IkeSA, State
from client.ikev2.message import Message
from client.ikev2.payloads import NotifyPayload
from client.ikev2.tasks.ike_natd import natd_hash
from tests.exchange.conftest import (
    CLIENT_ADDR,
    GATEWAY_ADDR,
    POLICY,
    PSK,
    GatewayConfig,
    client_config,
    drop,
    events,
    kind,
    pump,
)
from tests.exchange.mobike_responder import MobikeResponder, address_list

NEW_PATH = ("192.0.2.77", 40001)  # our socket on the other uplink
NAT_PUBLIC = ("203.0.113.200", 61000)  # how a NAT makes us look


def connect(gw: MobikeResponder | None = None, **cfg) -> tuple[IkeSA, MobikeResponder]:
    client = IkeSA(client_config(**cfg), CLIENT_ADDR, GATEWAY_ADDR)
    gw = gw or MobikeResponder(GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    got = events(client)
    assert client.state is State.ESTABLISHED, got
    assert isinstance(got[0], IkeSaEstablished)
    return client, gw


def decoded(gw: MobikeResponder) -> Message:
    return gw.requests[-1]


def notify_types(msg: Message) -> list[int]:
    return [n.notify_type for n in msg.notifies()]


def test_ike_auth_announces_mobike_and_our_other_addresses() -> None:
    client, gw = connect(additional_addresses=["203.0.113.9", "2001:db8:5::9"])
    auth = gw.requests[0]
    assert NotifyType.MOBIKE_SUPPORTED in notify_types(auth)
    assert gw.peer_addresses == ["203.0.113.9", "2001:db8:5::9"]
    assert client.peer_mobike


def test_no_other_addresses_is_said_so() -> None:
    client, gw = connect()
    assert NotifyType.NO_ADDITIONAL_ADDRESSES in notify_types(gw.requests[0])
    assert gw.peer_addresses == []


def test_mobike_off_in_the_profile_announces_nothing_and_never_updates() -> None:
    client, gw = connect(mobike=False)
    assert not client.peer_mobike
    assert NotifyType.MOBIKE_SUPPORTED not in notify_types(gw.requests[0])
    client.update_addresses(NEW_PATH, 5.0)
    assert client.datagrams_to_send() == [] and client.local_addr == NEW_PATH


def test_update_moves_the_sa_and_keeps_the_child_sa() -> None:
    client, gw = connect()
    child_before = client.child
    gw.client_at = NEW_PATH
    client.update_addresses(NEW_PATH, 5.0, additional=["198.51.100.10"])
    traffic = pump(client, gw, 5.0)
    assert [kind(d) for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, False, 2)]
    request = decoded(gw)
    types = notify_types(request)
    assert types[0] == NotifyType.UPDATE_SA_ADDRESSES
    assert {NotifyType.NAT_DETECTION_SOURCE_IP, NotifyType.NAT_DETECTION_DESTINATION_IP,
            NotifyType.COOKIE2} <= set(types)
    assert len(request.notify(NotifyType.COOKIE2).data) == 16
    assert address_list(request) == ["198.51.100.10"]
    assert gw.gateway_hash_ok == [True]  # the hash of the gateway's NAT-T address
    assert gw.moved_to == [NEW_PATH]
    (moved,) = events(client)
    assert moved == AddressesUpdated(NEW_PATH[0], NEW_PATH[1], False, False)
    # No CREATE_CHILD_SA: the same ESP SAs carry on.
    assert client.child is child_before
    assert not any(r.exchange == ExchangeType.CREATE_CHILD_SA for r in gw.requests)
    assert client.state is State.ESTABLISHED and client.mobike_state.updates == 1


def test_a_nat_that_appears_and_disappears_is_followed() -> None:
    client, gw = connect()
    assert not client.nat_local
    gw.client_at = NAT_PUBLIC
    client.update_addresses(NEW_PATH, 5.0)
    pump(client, gw, 5.0)
    (moved,) = events(client)
    assert moved.nat_local and client.nat_local
    gw.client_at = CLIENT_ADDR
    client.update_addresses(CLIENT_ADDR, 6.0)
    pump(client, gw, 6.0)
    (back,) = events(client)
    assert not back.nat_local and not client.nat_local
    assert gw.moved_to == [NAT_PUBLIC, CLIENT_ADDR]


def test_forced_encapsulation_keeps_the_source_hash_random() -> None:
    client, gw = connect()
    client.update_addresses(NEW_PATH, 5.0)
    pump(client, gw, 5.0)
    src = decoded(gw).notify(NotifyType.NAT_DETECTION_SOURCE_IP).data
    assert src != natd_hash(client.spi_i, client.spi_r, *NEW_PATH)


@pytest.mark.parametrize("echo", [lambda c: None, lambda c: bytes(16), lambda c: c[:8]])
def test_a_missing_or_wrong_cookie2_ends_the_sa(echo) -> None:
    client, gw = connect(MobikeResponder(GatewayConfig(psk=PSK), cookie2=echo))
    client.update_addresses(NEW_PATH, 5.0)
    pump(client, gw, 5.0)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, RemoteProtocolError)
    assert "COOKIE2" in closed.reason and client.state is State.CLOSED


@pytest.mark.parametrize("refusal", [NotifyType.UNACCEPTABLE_ADDRESSES,
                                     NotifyType.UNEXPECTED_NAT_DETECTED,
                                     NotifyType.NO_NATS_ALLOWED])
def test_a_refused_address_is_reported_and_the_sa_stays(refusal) -> None:
    client, gw = connect(MobikeResponder(GatewayConfig(psk=PSK), refuse=refusal))
    client.update_addresses(NEW_PATH, 5.0)
    pump(client, gw, 5.0)
    (failed,) = events(client)
    assert failed == AddressUpdateFailed(NEW_PATH[0], NotifyType(refusal).name)
    assert client.state is State.ESTABLISHED and gw.moved_to == []


def test_the_update_is_retransmitted_and_a_lost_one_fails_the_sa() -> None:
    client, gw = connect()
    client.update_addresses(NEW_PATH, 5.0)
    lost = pump(client, gw, 5.0, to_gateway=drop(1))
    assert len(lost.from_client) == 1 and gw.moved_to == []
    deadline = client.get_timer()
    assert deadline == pytest.approx(5.0 + POLICY.timeout)
    client.handle_timer(deadline)
    pump(client, gw, deadline)
    assert gw.moved_to == [CLIENT_ADDR] and isinstance(events(client)[0], AddressesUpdated)
    # Nothing answers any more: the retransmission budget ends the SA.
    client.update_addresses(NEW_PATH, 10.0)
    pump(client, gw, 10.0, to_gateway=lambda d: [])
    now = 10.0
    while (when := client.get_timer()) is not None and client.state is State.ESTABLISHED:
        now = when
        client.handle_timer(now)
        pump(client, gw, now, to_gateway=lambda d: [])
    (closed,) = events(client)
    assert isinstance(closed.error, PeerUnreachable)


def test_an_exchange_in_flight_is_sent_again_at_once_then_the_update_follows() -> None:
    client, gw = connect(dpd=30.0)
    # A liveness check went out on the old path and got lost with it.
    client.handle_timer(31.0)
    lost = pump(client, gw, 31.0, to_gateway=lambda d: [])
    assert [kind(d) for d in lost.from_client] == [(ExchangeType.INFORMATIONAL, False, 2)]
    client.update_addresses(NEW_PATH, 31.5)
    traffic = pump(client, gw, 31.5)
    # The check at once (not at its retransmission time), then the update.
    assert [kind(d) for d in traffic.from_client] == [
        (ExchangeType.INFORMATIONAL, False, 2), (ExchangeType.INFORMATIONAL, False, 3)]
    assert gw.moved_to == [CLIENT_ADDR]
    assert isinstance(events(client)[0], AddressesUpdated)


def test_two_moves_in_a_row_end_on_the_last_path() -> None:
    client, gw = connect()
    client.update_addresses(NEW_PATH, 5.0)
    first = client.datagrams_to_send()  # in flight, unanswered
    client.update_addresses(CLIENT_ADDR, 5.1)
    for d in first:
        gw.receive(d)
    traffic = pump(client, gw, 5.1)
    updates = [n for n, _, _ in map(kind, traffic.from_client) if n == ExchangeType.INFORMATIONAL]
    assert len(updates) >= 2 and len(gw.moved_to) == 2
    moved = [e for e in events(client) if isinstance(e, AddressesUpdated)]
    assert moved[-1].local == CLIENT_ADDR[0] and client.state is State.ESTABLISHED


def test_address_list_changes_are_announced_without_an_update() -> None:
    client, gw = connect(additional_addresses=["203.0.113.9"])
    client.announce_addresses(["203.0.113.9", "203.0.113.10"], 5.0)
    pump(client, gw, 5.0)
    request = decoded(gw)
    assert NotifyType.UPDATE_SA_ADDRESSES not in notify_types(request)
    assert NotifyType.COOKIE2 not in notify_types(request)
    assert gw.peer_addresses == ["203.0.113.9", "203.0.113.10"]
    assert events(client) == [] and gw.moved_to == []


def test_liveness_checks_behind_a_nat_notice_a_rebound_mapping() -> None:
    gw = MobikeResponder(GatewayConfig(psk=PSK, client_seen_as=NAT_PUBLIC))
    client, gw = connect(gw, dpd=30.0)
    assert client.nat_local
    # The NAT forgot us and gave us another port: only the gateway can see it.
    gw.client_at = (NAT_PUBLIC[0], 62000)
    client.handle_timer(31.0)
    traffic = pump(client, gw, 31.0)
    assert gw.natd_checks == 1  # the liveness check carried NAT-D
    assert len(traffic.from_client) == 2  # and was followed by an address update
    assert NotifyType.UPDATE_SA_ADDRESSES in notify_types(decoded(gw))
    assert gw.moved_to == [(NAT_PUBLIC[0], 62000)]
    (moved,) = events(client)
    assert isinstance(moved, AddressesUpdated) and moved.nat_local


def test_liveness_checks_with_an_unchanged_mapping_change_nothing() -> None:
    gw = MobikeResponder(GatewayConfig(psk=PSK, client_seen_as=NAT_PUBLIC))
    client, gw = connect(gw, dpd=30.0)
    client.handle_timer(31.0)
    traffic = pump(client, gw, 31.0)
    assert len(traffic.from_client) == 1 and gw.natd_checks == 1 and gw.moved_to == []
    assert events(client) == []


def test_no_nat_means_plain_liveness_checks() -> None:
    client, gw = connect(dpd=30.0)
    client.handle_timer(31.0)
    pump(client, gw, 31.0)
    assert notify_types(decoded(gw)) == [] and gw.natd_checks == 0


def test_the_gateways_cookie2_is_echoed() -> None:
    client, gw = connect()
    gw.request([NotifyPayload(NotifyType.COOKIE2, b"c" * 12)])
    pump(client, gw, 5.0)
    (answer,) = gw.responses
    assert answer.notify(NotifyType.COOKIE2).data == b"c" * 12
    assert client.state is State.ESTABLISHED


def test_abandon_closes_without_a_word() -> None:
    client, gw = connect()
    client.abandon("no path", PeerUnreachable("no path"))
    assert client.datagrams_to_send() == [] and client.state is State.CLOSED
    (closed,) = events(client)
    assert isinstance(closed.error, PeerUnreachable) and client.get_timer() is None


def test_events_of_the_first_connect_are_unchanged() -> None:
    client = IkeSA(client_config(), CLIENT_ADDR, GATEWAY_ADDR)
    gw = MobikeResponder(GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    got = events(client)
    assert [type(e) for e in got] == [IkeSaEstablished, ChildSaEstablished]
    assert got[0].mobike
