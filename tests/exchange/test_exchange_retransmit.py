"""Retransmission (RFC 7296 2.1) on both sides, lost and duplicated datagrams."""

from __future__ import annotations

import pytest

from client.engine import EXIT_UNREACHABLE, exit_code_for
from client.ikev2.constants import ExchangeType
from client.ikev2.errors import PeerUnreachable
from client.ikev2.events import ChildSaEstablished, IkeSaClosed, IkeSaEstablished
from client.ikev2.ike_sa import State
from client.ikev2.task_manager import RetransmitPolicy
from tests.exchange.conftest import (
    POLICY,
    PSK,
    GatewayConfig,
    client_config,
    drop,
    eap_pair,
    events,
    kind,
    make_pair,
    pump,
)


def test_lost_ike_sa_init_requests_are_retransmitted_on_schedule() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    lose_two = drop(2)
    client.initiate(0.0)
    sent = pump(client, gw, 0.0, to_gateway=lose_two).from_client
    assert client.get_timer() == POLICY.timeout  # 1.0
    client.handle_timer(0.5)  # early: nothing happens
    assert client.datagrams_to_send() == [] and client.get_timer() == 1.0

    client.handle_timer(1.0)
    sent += pump(client, gw, 1.0, to_gateway=lose_two).from_client
    assert client.get_timer() == 1.0 + POLICY.timeout * POLICY.base  # 3.0
    assert events(client) == []

    client.handle_timer(3.0)
    sent += pump(client, gw, 3.0, to_gateway=lose_two).from_client
    assert [type(e) for e in events(client)] == [IkeSaEstablished, ChildSaEstablished]
    # Three identical IKE_SA_INIT datagrams, then IKE_AUTH.
    assert sent[0] == sent[1] == sent[2] and kind(sent[3])[0] == ExchangeType.IKE_AUTH
    assert client.get_timer() is None


@pytest.mark.parametrize("policy", [POLICY, RetransmitPolicy(timeout=0.5, base=1.5, tries=5)])
def test_silent_gateway_is_unreachable_at_the_end_of_the_budget(policy) -> None:
    client, gw = make_pair(client_config(retransmit=policy), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    transmissions: list[float] = []
    now = 0.0
    expected_deadline = policy.timeout
    while (timer := client.get_timer()) is not None:
        transmissions += [now] * len(client.datagrams_to_send())
        assert timer == pytest.approx(expected_deadline)
        assert events(client) == []
        now = timer
        client.handle_timer(now)
        expected_deadline = now + policy.delay(len(transmissions))
    assert len(transmissions) == policy.tries + 1
    assert transmissions == pytest.approx(
        [sum(policy.delay(i) for i in range(n)) for n in range(policy.tries + 1)])
    assert now == pytest.approx(policy.budget())
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, PeerUnreachable)
    assert exit_code_for(closed.error) == EXIT_UNREACHABLE
    assert client.state is State.CLOSED and client.datagrams_to_send() == []
    assert gw.requests == []


def test_lost_ike_auth_response_is_answered_from_the_gateway_cache() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    lose = drop(1, ExchangeType.IKE_AUTH)
    pump(client, gw, 0.0, to_client=lose)
    assert events(client) == [] and gw.established
    first_response = gw.last_response_bytes
    client.handle_timer(client.get_timer())
    traffic = pump(client, gw, 1.0)
    assert traffic.from_gateway == [first_response]  # not processed twice
    assert len(gw.requests) == 1
    assert [type(e) for e in events(client)] == [IkeSaEstablished, ChildSaEstablished]


def test_every_datagram_duplicated(pki) -> None:
    client, gw = eap_pair(pki)
    client.initiate(0.0)
    twice = lambda d: [d, d]  # noqa: E731
    pump(client, gw, 0.0, to_gateway=twice, to_client=twice)
    assert [type(e) for e in events(client)] == [IkeSaEstablished, ChildSaEstablished]
    assert client.state is State.ESTABLISHED


def test_repeated_gateway_request_gets_the_cached_response() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    events(client)
    gw.liveness()
    lose = drop(1)
    answer = pump(client, gw, 5.0, to_gateway=lose).from_client
    assert len(answer) == 1 and gw.responses == []
    gw.retransmit()
    again = pump(client, gw, 6.0).from_client
    assert again == answer  # byte for byte: the request was not processed twice
    assert len(gw.responses) == 1 and gw.responses[0].payloads == []
    gw.retransmit()  # a third copy, after the gateway already has its answer
    assert pump(client, gw, 7.0).from_client == answer
    assert events(client) == [] and client.state is State.ESTABLISHED
