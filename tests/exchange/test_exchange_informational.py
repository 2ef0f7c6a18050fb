"""INFORMATIONAL exchanges: Delete from either side, liveness checks (RFC 7296 1.4, 2.4)."""

from __future__ import annotations

import struct

import pytest

from client.engine import EXIT_OK, exit_code_for
from client.ikev2.constants import ExchangeType, ProtocolId
from client.ikev2.events import ChildSaDeleted, IkeSaClosed
from client.ikev2.ike_sa import DELETE_POLICY, State
from client.ikev2.payloads import DeletePayload
from tests.exchange.conftest import (
    PSK,
    GatewayConfig,
    client_config,
    drop,
    events,
    kind,
    make_pair,
    pump,
)


@pytest.fixture
def connected():
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    assert len(events(client)) == 2
    return client, gw


def test_gateway_deletes_the_ike_sa(connected) -> None:
    client, gw = connected
    gw.delete_ike()
    traffic = pump(client, gw, 10.0)
    assert [kind(d) for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, True, 0)]
    assert gw.responses[0].payloads == []  # RFC 7296 1.4.1: an empty response
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed)
    assert closed.by_peer and closed.error is None and exit_code_for(closed.error) == EXIT_OK
    assert client.state is State.CLOSED and client.get_timer() is None
    gw.retransmit()  # a late copy of the Delete is ignored: the SA is gone
    assert pump(client, gw, 11.0).from_client == [] and events(client) == []


def test_liveness_check_is_answered_and_the_sa_stays(connected) -> None:
    client, gw = connected
    for i in range(3):
        gw.liveness()
        traffic = pump(client, gw, 10.0 + i)
        assert [kind(d) for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, True, i)]
        assert gw.responses[i].payloads == []
    assert events(client) == [] and client.state is State.ESTABLISHED
    assert client.get_timer() is None
    # The IKE SA still works for our own requests: our message ID 2 follows IKE_AUTH's 1.
    client.delete(20.0)
    traffic = pump(client, gw, 20.0)
    assert kind(traffic.from_client[0]) == (ExchangeType.INFORMATIONAL, False, 2)
    assert gw.closed


def test_gateway_deletes_the_child_sa(connected) -> None:
    client, gw = connected
    spi_in, spi_out = gw.child.spi_out, gw.child.spi_in  # the client's view
    gw.delete_child()
    pump(client, gw, 10.0)
    (answer,) = gw.responses
    (d,) = answer.get_all(DeletePayload)
    assert d.protocol == ProtocolId.ESP and d.spis == [struct.pack("!I", spi_in)]
    assert events(client) == [ChildSaDeleted(spi_in=spi_in, spi_out=spi_out)]
    assert client.state is State.ESTABLISHED


def test_client_disconnects(connected) -> None:
    client, gw = connected
    client.delete(30.0)
    traffic = pump(client, gw, 30.0)
    request = gw.requests[-1]
    assert request.exchange == ExchangeType.INFORMATIONAL and not request.is_response
    assert [(d.protocol, d.spis) for d in request.get_all(DeletePayload)] == [(ProtocolId.IKE, [])]
    assert len(traffic.from_gateway) == 1 and gw.closed
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and closed.error is None and not closed.by_peer
    assert client.state is State.CLOSED and client.get_timer() is None


def test_disconnect_without_an_answer_still_closes_cleanly(connected) -> None:
    client, gw = connected
    client.delete(30.0)
    sent = len(pump(client, gw, 30.0, to_gateway=drop(99)).from_client)
    now = 30.0
    while (timer := client.get_timer()) is not None:
        now = timer
        client.handle_timer(now)
        sent += len(pump(client, gw, now, to_gateway=drop(99)).from_client)
    assert sent == DELETE_POLICY.tries + 1
    assert now == pytest.approx(30.0 + DELETE_POLICY.budget())
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and closed.error is None


def test_cancel_while_connecting() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    client.datagrams_to_send()
    client.delete(0.5)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and closed.error is None
    assert client.get_timer() is None and client.datagrams_to_send() == []


def test_both_sides_delete_at_once(connected) -> None:
    client, gw = connected
    client.delete(40.0)
    gw.delete_ike()
    pump(client, gw, 40.0)
    (closed,) = events(client)  # exactly one close, whichever Delete won
    assert isinstance(closed, IkeSaClosed) and closed.error is None
    assert client.state is State.CLOSED and client.get_timer() is None
