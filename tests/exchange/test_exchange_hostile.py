"""Hostile responses (issue 13): a REDIRECT name built to make a regex backtrack, values
we have no name for, a certificate the X.509 parser refuses, an unprotected answer to a
replaced SA's Delete, and whatever else escapes a check: none of them may raise out of
IkeSA.receive, hang it, or be taken for the gateway's word."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from client.ikev2.constants import ExchangeType, NotifyType
from client.ikev2.errors import (
    LocalProtocolError,
    NoProposalChosen,
    PeerNotTrusted,
    RemoteProtocolError,
)
from client.ikev2.events import IkeSaClosed, IkeSaRekeyed
from client.ikev2.ike_sa import IkeSA, State
from client.ikev2.message import Message, parse_header
from client.ikev2.payloads import CertPayload, NoncePayload, NotifyPayload, SaPayload
from client.ikev2.proposals import Proposal, Transform
from tests.exchange.conftest import (
    CLIENT_ADDR,
    GATEWAY_ADDR,
    PSK,
    GatewayConfig,
    client_config,
    eap_pair,
    events,
    kind,
    make_pair,
    pump,
)
from tests.exchange.responder import Responder

REPO = Path(__file__).resolve().parents[2]
# The old regex needed hours for this name; a linear check needs microseconds.
BACKTRACKER = "a" * 40 + "-"
HANG_LIMIT = 20.0  # seconds: a hang detector, far above the worst machine's start-up


def _redirect_response(right_nonce: bool) -> None:
    """An unauthenticated IKE_SA_INIT response whose REDIRECT names BACKTRACKER."""
    client, _ = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    (request,) = client.datagrams_to_send()
    ours = Message.decode(request)
    nonce = ours.get(NoncePayload).data if right_nonce else bytes(32)
    name = BACKTRACKER.encode()
    data = bytes((3, len(name))) + name + nonce
    spoof = Message(ours.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, True, False, 0,
                    [NotifyPayload(NotifyType.REDIRECT, data)])
    client.receive(spoof.encode(), 0.0)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, RemoteProtocolError)
    assert ("not a host name" if right_nonce else "nonce") in closed.reason


@pytest.mark.parametrize("right_nonce", [False, True], ids=["off-path", "on-path"])
def test_a_backtracking_redirect_name_is_refused_at_once(right_nonce: bool) -> None:
    # In a child process: a regex stuck in C cannot be interrupted by a thread's timeout.
    code = ("from tests.exchange.test_exchange_hostile import _redirect_response; "
            f"_redirect_response({right_nonce})")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, timeout=HANG_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the REDIRECT parse hung for {HANG_LIMIT} s")
    assert proc.returncode == 0, proc.stderr


def _init_forgery(gw: Responder, edit) -> list:
    """Replace the IKE_SA_INIT response by the gateway's own, edited."""
    def replace(d: bytes) -> list[bytes]:
        if kind(d)[:2] == (ExchangeType.IKE_SA_INIT, True):
            return [gw.forge(edit)]
        return [d]
    return replace


def _unknown_protocol(m: Message) -> None:
    p = m.get(SaPayload).proposals[0]
    m.get(SaPayload).proposals[0] = Proposal(p.number, 7, p.spi, p.transforms)


def _unknown_transform_type(m: Message) -> None:
    m.get(SaPayload).proposals[0].transforms.append(Transform(9, 1))


@pytest.mark.parametrize("edit", [_unknown_protocol, _unknown_transform_type],
                         ids=["protocol-7", "transform-type-9"])
def test_an_unknown_value_in_the_chosen_proposal_is_refused(edit) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0, to_client=_init_forgery(gw, edit))  # raised AttributeError
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, NoProposalChosen)
    assert "7" in closed.reason or "9" in closed.reason
    assert client.state is State.CLOSED


def test_a_certificate_with_an_invalid_x509_version_is_not_trusted(pki) -> None:
    client, gw = eap_pair(pki)

    def bad_version(m: Message) -> None:
        cert = m.get(CertPayload)
        i = cert.data.find(bytes.fromhex("a003020102"))  # [0] version v3
        assert i > 0
        cert.data = cert.data[:i] + bytes.fromhex("a003020107") + cert.data[i + 5:]

    def replace(d: bytes) -> list[bytes]:
        if kind(d)[:2] == (ExchangeType.IKE_AUTH, True) and gw.last_response.get(CertPayload):
            return [gw.forge(bad_version)]
        return [d]

    client.initiate(0.0)
    pump(client, gw, 0.0, to_client=replace)  # raised InvalidVersion out of receive
    closed = events(client)[-1]
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, PeerNotTrusted)
    assert "InvalidVersion" in closed.reason


def test_an_unforeseen_exception_on_peer_input_drops_the_message(monkeypatch, caplog) -> None:
    """The boundary: a bug reached by the gateway's bytes is logged with its type and
    place, the datagram is dropped, and the SA goes on with the next one."""
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    real = Message.decode
    calls = [0]

    def first_fails(data, sk=None):
        calls[0] += 1
        if calls[0] == 1:
            raise IndexError("a check we lack")
        return real(data, sk)

    for d in client.datagrams_to_send():
        gw.receive(d)
    (response,) = gw.datagrams_to_send()
    monkeypatch.setattr(Message, "decode", staticmethod(first_fails))
    with caplog.at_level(logging.ERROR, logger="client.ikev2.ike_sa"):
        client.receive(response, 0.0)  # raised IndexError
        assert client.state is State.CONNECTING and events(client) == []
        client.receive(response, 0.0)  # the same again: now it gets through
    assert "unexpected IndexError at test_exchange_hostile.py" in caplog.text
    assert "a check we lack" in caplog.text
    monkeypatch.undo()
    pump(client, gw, 0.0)
    assert client.state is State.ESTABLISHED


def test_an_unforeseen_exception_processing_a_response_ends_the_sa(monkeypatch) -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK))
    client.initiate(0.0)
    from client.ikev2.tasks import ike_init

    def broken(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(ike_init, "derive_ike_keys", broken)
    pump(client, gw, 0.0)  # raised KeyError
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, RemoteProtocolError)
    assert "unexpected KeyError" in closed.reason
    assert client.state is State.CLOSED


def test_an_unprotected_answer_to_the_replaced_sas_delete_is_dropped(caplog) -> None:
    client = IkeSA(client_config(ike_lifetime=400.0), CLIENT_ADDR, GATEWAY_ADDR)
    gw = Responder(GatewayConfig(psk=PSK))
    client.initiate(0.0)
    pump(client, gw, 0.0)
    events(client)
    when = client.get_timer()
    client.handle_timer(when)
    deletes: list[bytes] = []

    def hold_delete_answer(d: bytes) -> list[bytes]:
        if kind(d)[:2] == (ExchangeType.INFORMATIONAL, True):
            deletes.append(d)
            return []
        return [d]

    pump(client, gw, when, to_client=hold_delete_answer)
    assert [type(e) for e in events(client)] == [IkeSaRekeyed]
    (retiring,) = client.life.retiring
    (answer,) = deletes
    h = parse_header(answer)
    forged = Message(h.spi_i, h.spi_r, h.exchange, True, False, h.message_id, [],
                     encrypted=False).encode()
    with caplog.at_level(logging.WARNING, logger="client.ikev2.ike_sa"):
        client.receive(forged, when)
    assert "unprotected response on the replaced IKE_SA" in caplog.text
    assert client.life.retiring == [retiring] and not retiring.done  # still waiting
    client.receive(answer, when)  # the real, protected answer ends it
    assert retiring.done and client.life.retiring == []


@pytest.mark.parametrize("field,value", [("local_id", "CN="), ("remote_id", "ipv4:1"),
                                         ("local_id", "@#zz")])
def test_an_invalid_configured_identity_closes_the_sa_cleanly(field: str, value: str) -> None:
    client, _ = make_pair(client_config(**{field: value}), GatewayConfig(psk=PSK))
    client.initiate(0.0)  # raised ValueError (a traceback in the CLI)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and isinstance(closed.error, LocalProtocolError)
    assert value in closed.reason and client.datagrams_to_send() == []
