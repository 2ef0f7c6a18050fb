"""Liveness checks (RFC 7296 2.4), the gateway's AUTH_LIFETIME (RFC 4478) and what a
reconnect asks for in IKE_AUTH (INITIAL_CONTACT, the virtual IP it had)."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest

from client.ikev2.constants import CfgAttr, ExchangeType, NotifyType
from client.ikev2.errors import PeerUnreachable
from client.ikev2.events import IkeSaClosed, ReauthRequired
from client.ikev2.ike_sa import State
from client.ikev2.payloads import CpPayload, NotifyPayload
from tests.exchange.conftest import (
    POLICY,
    PSK,
    GatewayConfig,
    client_config,
    drop,
    events,
    kind,
    make_pair,
    pump,
)

DPD = 30.0


def connect(gateway: GatewayConfig | None = None, **cfg):
    client, gw = make_pair(client_config(**cfg), gateway or GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    assert client.state is State.ESTABLISHED
    events(client)
    return client, gw


def test_liveness_check_after_silence() -> None:
    client, gw = connect(dpd=DPD)
    assert client.get_timer() == DPD
    client.handle_timer(DPD)
    traffic = pump(client, gw, DPD)
    assert [kind(d) for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, False, 2)]
    assert gw.requests[-1].payloads == []  # an empty INFORMATIONAL request
    assert client.get_timer() == 2 * DPD and events(client) == []


def test_traffic_from_the_gateway_postpones_the_check() -> None:
    client, gw = connect(dpd=DPD)
    client.traffic_received(25.0)  # ESP arrived
    assert client.get_timer() == 25.0 + DPD
    gw.liveness()  # and IKE later still
    pump(client, gw, 40.0)
    assert client.get_timer() == 40.0 + DPD
    client.handle_timer(40.0 + DPD)
    traffic = pump(client, gw, 40.0 + DPD)
    assert [kind(d)[:2] for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, False)]


def test_a_silent_gateway_is_declared_dead() -> None:
    client, gw = connect(dpd=DPD)
    now, sent = DPD, 0
    while (t := client.get_timer()) is not None:
        now = t
        client.handle_timer(now)
        sent += len(pump(client, gw, now, to_gateway=drop(99)).from_client)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, PeerUnreachable)
    assert sent == POLICY.tries + 1
    assert now == pytest.approx(DPD + POLICY.budget())  # within dpd + the retransmit budget


def test_no_liveness_checks_when_turned_off() -> None:
    client, _ = connect(dpd=0)
    assert client.get_timer() is None


def test_auth_lifetime_asks_for_reauthentication_in_time() -> None:
    client, gw = connect(GatewayConfig(psk=PSK, auth_lifetime=600))
    assert client.auth_lifetime == 600
    when = client.get_timer()
    assert 600 - 60 * 1.5 <= when <= 600 - 60  # a margin to build the new SA
    client.handle_timer(when)
    assert events(client) == [ReauthRequired("the gateway's authentication lifetime is ending")]
    assert client.get_timer() is None and client.state is State.ESTABLISHED


def test_auth_lifetime_in_an_informational_request() -> None:
    client, gw = connect()
    gw.request([NotifyPayload(NotifyType.AUTH_LIFETIME, struct.pack("!I", 100))])
    pump(client, gw, 50.0)
    assert 50 + 100 - 15 <= client.get_timer() <= 50 + 100 - 10


def test_a_reconnect_asks_for_its_old_address_and_says_it_is_alone() -> None:
    client, gw = connect(requested_vips=[ip_address("198.18.0.10")])
    request = gw.auth_request
    # The gateway may drop whatever a dead connection of ours left behind (RFC 7296 2.4).
    assert request.notify(NotifyType.INITIAL_CONTACT) is not None
    cp = request.get(CpPayload)
    assert (CfgAttr.INTERNAL_IP4_ADDRESS, ip_address("198.18.0.10").packed) in cp.attributes


def test_a_reauthentication_keeps_quiet_about_initial_contact() -> None:
    # The old IKE SA is still up and carrying traffic until the new one is ready.
    client, gw = connect(initial_contact=False)
    assert gw.auth_request.notify(NotifyType.INITIAL_CONTACT) is None
    cp = gw.auth_request.get(CpPayload)
    assert (CfgAttr.INTERNAL_IP4_ADDRESS, b"") in cp.attributes
