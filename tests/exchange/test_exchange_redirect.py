"""Gateway redirects (RFC 5685) in IKE_SA_INIT, IKE_AUTH and on an established SA."""

from __future__ import annotations

import pytest

from client.ikev2.constants import ExchangeType, NotifyType, ProtocolId
from client.ikev2.errors import RemoteProtocolError
from client.ikev2.events import (
    ChildSaEstablished,
    IkeSaClosed,
    IkeSaEstablished,
    IkeSaRedirected,
)
from client.ikev2.ike_sa import IkeSA, State
from client.ikev2.message import Message
from client.ikev2.payloads import DeletePayload, NotifyPayload
from client.ikev2.tasks.base import Status
from client.ikev2.tasks.ike_redirect import IkeRedirect, RedirectRequested, encode_gateway
from tests.exchange.conftest import (
    CLIENT_ADDR,
    EAP_PASSWORD,
    EAP_USER,
    GATEWAY_ADDR,
    PSK,
    GatewayConfig,
    client_config,
    events,
    kind,
    make_pair,
    pump,
)

NEW_GATEWAY = "198.51.100.77"


def sent_exchanges(datagrams: list[bytes]) -> list[tuple[int, bool, int]]:
    return [kind(d) for d in datagrams]


def test_redirect_in_the_ike_sa_init_response() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK, redirect_init=NEW_GATEWAY))
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0)
    assert gw.client_redirect_supported  # N(REDIRECT_SUPPORTED) in our request
    assert events(client) == [IkeSaRedirected(NEW_GATEWAY, established=False),
                              IkeSaClosed(f"redirected to {NEW_GATEWAY}")]
    # Nothing more to the gateway that sent us away: no IKE_AUTH, no Delete.
    assert sent_exchanges(traffic.from_client) == [(ExchangeType.IKE_SA_INIT, False, 0)]
    assert client.state is State.CLOSED and client.get_timer() is None


def test_redirect_without_our_nonce_is_refused() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    (request,) = client.datagrams_to_send()
    spoof = Message(Message.decode(request).spi_i, bytes(8), ExchangeType.IKE_SA_INIT, True,
                    False, 0, [NotifyPayload(NotifyType.REDIRECT,
                                             encode_gateway(NEW_GATEWAY) + bytes(32))])
    client.receive(spoof.encode(), 0.0)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, RemoteProtocolError)
    assert "nonce" in closed.reason


def test_redirects_can_be_switched_off() -> None:
    client, gw = make_pair(client_config(follow_redirects=False),
                           GatewayConfig(psk=PSK, redirect_init=NEW_GATEWAY))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    assert not gw.client_redirect_supported
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and "disabled" in closed.reason


@pytest.mark.parametrize("previous", ["192.0.2.1", "2001:db8::1"])
def test_the_new_gateway_learns_where_we_came_from(previous: str) -> None:
    client, gw = make_pair(client_config(redirected_from=previous), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    assert [type(e) for e in events(client)] == [IkeSaEstablished, ChildSaEstablished]
    # N(REDIRECTED_FROM) stands in for N(REDIRECT_SUPPORTED) (RFC 5685 section 5).
    assert gw.client_redirected_from == encode_gateway(previous)
    assert not gw.client_redirect_supported


def assert_redirected_then_deleted(client, gw, traffic, established: bool) -> None:
    got = events(client)
    assert [type(e) for e in got if not isinstance(e, IkeSaClosed)][-1:] == [IkeSaRedirected]
    redirected = next(e for e in got if isinstance(e, IkeSaRedirected))
    assert redirected == IkeSaRedirected(NEW_GATEWAY, established=established)
    assert isinstance(got[-1], IkeSaClosed) and got[-1].error is None
    # The old gateway's IKE SA was deleted (RFC 5685 5 and 6), and the gateway answered.
    delete = gw.requests[-1]
    assert delete.exchange == ExchangeType.INFORMATIONAL
    assert delete.get(DeletePayload) == DeletePayload(ProtocolId.IKE, [])
    assert gw.closed and client.state is State.CLOSED
    assert kind(traffic.from_client[-1]) == (ExchangeType.INFORMATIONAL, False,
                                             delete.message_id)


def test_redirect_in_the_ike_auth_response_psk() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK, redirect_auth=NEW_GATEWAY))
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0)
    assert_redirected_then_deleted(client, gw, traffic, established=False)
    assert not any(isinstance(e, ChildSaEstablished) for e in events(client))


def test_redirect_in_the_last_ike_auth_response_after_eap(pki) -> None:
    cert, key = pki.gateway
    client = client_config(auth_method="eap", psk=None, local_id=EAP_USER,
                           eap_password=EAP_PASSWORD, trust_anchors=[pki.ca])
    gateway = GatewayConfig(key=key, certs=[cert], eap_users={EAP_USER: EAP_PASSWORD},
                            redirect_auth=NEW_GATEWAY)
    client, gw = make_pair(client, gateway)
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0)
    assert_redirected_then_deleted(client, gw, traffic, established=False)


def test_redirect_of_an_established_session() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    events(client)
    gw.redirect(NEW_GATEWAY)
    traffic = pump(client, gw, 10.0)
    # First our (empty) answer to the REDIRECT, then our Delete of the old IKE SA.
    assert gw.responses[0].payloads == []
    assert kind(traffic.from_client[0]) == (ExchangeType.INFORMATIONAL, True, 0)
    assert_redirected_then_deleted(client, gw, traffic, established=True)


@pytest.mark.parametrize("data", [b"", b"\x09\x01x", b"\x01\x04\xc0\x00"])
def test_malformed_redirect_request_is_answered_and_ignored(data: bytes) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    events(client)
    gw.request([NotifyPayload(NotifyType.REDIRECT, data)])
    pump(client, gw, 10.0)
    assert len(gw.responses) == 1 and events(client) == []
    assert client.state is State.ESTABLISHED and not gw.closed


def test_redirect_request_ignored_when_switched_off() -> None:
    client, gw = make_pair(client_config(follow_redirects=False), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    events(client)
    gw.redirect(NEW_GATEWAY)
    pump(client, gw, 10.0)
    assert len(gw.responses) == 1 and events(client) == []
    assert client.state is State.ESTABLISHED


def test_unauthenticated_redirect_in_ike_auth_is_ignored() -> None:
    """Only a gateway whose AUTH verified may send us elsewhere."""
    sa = IkeSA(client_config(), CLIENT_ADDR, GATEWAY_ADDR)
    task = IkeRedirect(sa)
    msg = Message(sa.spi_i, bytes(8), ExchangeType.IKE_AUTH, True, False, 1,
                  [NotifyPayload(NotifyType.REDIRECT, encode_gateway(NEW_GATEWAY))])
    assert task.process(msg) is Status.NEED_MORE
    sa.peer_authenticated = sa.auth_done = True
    with pytest.raises(RedirectRequested, match=NEW_GATEWAY):
        task.process(msg)
