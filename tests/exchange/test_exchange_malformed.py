"""Broken, forged and out-of-place responses: dropped quietly, or fatal where they must be."""

from __future__ import annotations

import logging
import random
import struct

import pytest

from client.ikev2.constants import EncrId, ExchangeType, NotifyType, ProtocolId, TransformType
from client.ikev2.errors import NoProposalChosen
from client.ikev2.events import ChildSaEstablished, IkeSaClosed, IkeSaEstablished
from client.ikev2.ike_sa import State
from client.ikev2.message import Message
from client.ikev2.payloads import NotifyPayload, SaPayload, UnknownPayload
from client.ikev2.proposals import Proposal, Transform
from tests.exchange.conftest import (
    PSK,
    Filter,
    GatewayConfig,
    client_config,
    events,
    kind,
    make_pair,
    pump,
)

CONNECTED = [IkeSaEstablished, ChildSaEstablished]


def truncated(d: bytes) -> bytes:
    return d[: len(d) // 2]


def short_header(d: bytes) -> bytes:
    return d[:20]


def flip_icv(d: bytes) -> bytes:
    return d[:-1] + bytes([d[-1] ^ 0x01])


def flip_ciphertext(d: bytes) -> bytes:
    i = 28 + 4 + 8 + 3  # IKE header, SK header, IV, then inside the ciphertext
    return d[:i] + bytes([d[i] ^ 0x80]) + d[i + 1 :]


def garbage(d: bytes) -> bytes:
    return random.Random(1).randbytes(len(d))  # seeded: the same noise on every run


def garbage_body(d: bytes) -> bytes:
    """A header that routes to our SA and exchange, then noise (length field consistent)."""
    return d[:28] + random.Random(2).randbytes(len(d) - 28)


def before_the_real(exchange: int, mangle) -> Filter:
    """Deliver a mangled copy of the first response of `exchange`, then the real one."""
    done = [False]

    def f(d: bytes) -> list[bytes]:
        if not done[0] and kind(d)[:2] == (exchange, True):
            done[0] = True
            return [mangle(d), d]
        return [d]

    return f


def connect(client, gw, to_client: Filter | None = None):
    client.initiate(0.0)
    pump(client, gw, 0.0, to_client=to_client)
    return events(client)


@pytest.mark.parametrize("mangle", [truncated, short_header, garbage, garbage_body])
def test_broken_ike_sa_init_response_is_dropped(mangle) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    evs = connect(client, gw, before_the_real(ExchangeType.IKE_SA_INIT, mangle))
    assert [type(e) for e in evs] == CONNECTED


@pytest.mark.parametrize("mangle", [truncated, short_header, garbage, garbage_body])
def test_broken_ike_auth_response_is_dropped(mangle, caplog) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    with caplog.at_level(logging.WARNING, logger="client.ikev2.ike_sa"):
        evs = connect(client, gw, before_the_real(ExchangeType.IKE_AUTH, mangle))
    assert [type(e) for e in evs] == CONNECTED
    assert "dropped a message from the gateway" in caplog.text


@pytest.mark.parametrize("mangle", [flip_icv, flip_ciphertext])
@pytest.mark.parametrize("ike", ["aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048"])
def test_icv_failure_is_dropped(mangle, ike: str) -> None:
    client, gw = make_pair(client_config(ike_proposals=ike),
                           GatewayConfig(psk=PSK, ike_proposals=ike))
    evs = connect(client, gw, before_the_real(ExchangeType.IKE_AUTH, mangle))
    assert [type(e) for e in evs] == CONNECTED


def test_broken_informational_request_is_dropped() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    connect(client, gw)
    gw.liveness()
    sent = pump(client, gw, 5.0, to_client=lambda d: [truncated(d), garbage_body(d)]).from_client
    assert sent == [] and gw.responses == [] and events(client) == []
    gw.retransmit()
    assert len(pump(client, gw, 6.0).from_client) == 1 and len(gw.responses) == 1


def forged(gw, edit) -> Filter:
    """Replace the first IKE_AUTH response by the gateway's own, edited and re-protected."""
    done = [False]

    def f(d: bytes) -> list[bytes]:
        if not done[0] and kind(d)[:2] == (ExchangeType.IKE_AUTH, True):
            done[0] = True
            return [gw.forge(edit), d]
        return [d]

    return f


def test_unknown_critical_payload_in_a_response_is_rejected(caplog) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    crit = UnknownPayload(ptype=200, body=b"\x01\x02", critical=True)
    with caplog.at_level(logging.WARNING, logger="client.ikev2.ike_sa"):
        evs = connect(client, gw, forged(gw, lambda m: m.payloads.insert(0, crit)))
    assert "UNSUPPORTED_CRITICAL_PAYLOAD" in caplog.text
    assert [type(e) for e in evs] == CONNECTED  # the real response afterwards completes


def test_unknown_non_critical_payload_is_skipped() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    extra = UnknownPayload(ptype=200, body=b"\x01\x02", critical=False)

    def only_forged(d: bytes) -> list[bytes]:
        if kind(d)[:2] == (ExchangeType.IKE_AUTH, True):
            return [gw.forge(lambda m: m.payloads.insert(0, extra))]
        return [d]

    evs = connect(client, gw, only_forged)
    assert [type(e) for e in evs] == CONNECTED


def test_response_with_a_message_id_we_did_not_send(caplog) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))

    def renumber(m: Message) -> None:
        m.message_id = 7

    with caplog.at_level(logging.WARNING, logger="client.ikev2.ike_sa"):
        evs = connect(client, gw, forged(gw, renumber))
    assert "unexpected response 7" in caplog.text
    assert [type(e) for e in evs] == CONNECTED


def _cbc_instead(m: Message) -> None:
    """The gateway 'chooses' AES-CBC-128 + SHA-1, which the client never offered."""
    sa = m.get(SaPayload)
    p = sa.proposals[0]
    others = [t for t in p.transforms if t.type not in (TransformType.ENCR, TransformType.INTEG)]
    sa.proposals[0] = Proposal(p.number, p.protocol, p.spi, [
        Transform(TransformType.ENCR, EncrId.AES_CBC, 128), Transform(TransformType.INTEG, 2),
        *others])


def test_ike_sa_with_a_transform_we_never_offered() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))

    def replace(d: bytes) -> list[bytes]:
        if kind(d)[:2] == (ExchangeType.IKE_SA_INIT, True):
            return [gw.forge(_cbc_instead)]
        return [d]

    evs = connect(client, gw, replace)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, NoProposalChosen)
    assert client.state is State.CLOSED and client.get_timer() is None


@pytest.mark.parametrize("edit", ["transform", "number"])
def test_child_sa_with_a_proposal_we_never_offered(edit: str) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))

    def change(m: Message) -> None:
        if edit == "transform":
            _cbc_instead(m)
        else:
            m.get(SaPayload).proposals[0].number = 9
        assert m.get(SaPayload).proposals[0].protocol == ProtocolId.ESP

    def replace(d: bytes) -> list[bytes]:
        if kind(d)[:2] == (ExchangeType.IKE_AUTH, True):
            return [gw.forge(change)]
        return [d]

    evs = connect(client, gw, replace)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, NoProposalChosen)


def test_gateway_asking_for_a_group_we_never_offered() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))

    def want_modp4096(m: Message) -> None:
        m.payloads = [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", 16))]

    evs = connect(client, gw, lambda d: [gw.forge(want_modp4096)])
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, NoProposalChosen)


def test_endless_cookie_demands_end_the_attempt() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    cookies = iter(range(1000))

    def new_cookie(m: Message) -> None:
        m.payloads = [NotifyPayload(NotifyType.COOKIE, b"%d" % next(cookies))]

    evs = connect(client, gw, lambda d: [gw.forge(new_cookie)])
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert evs[0].error is not None and next(cookies) < 10
    assert client.state is State.CLOSED and client.get_timer() is None


def test_request_with_unknown_critical_payload_gets_unsupported_critical() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    connect(client, gw)
    gw.request([UnknownPayload(ptype=200, body=b"\x00", critical=True)])
    pump(client, gw, 5.0)
    (answer,) = gw.responses
    notify = answer.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert notify is not None and notify.data == bytes([200])
    assert client.state is State.ESTABLISHED and events(client) == []
