"""Rekeying against the in-memory gateway: CHILD_SA and IKE SA, started by either side,
simultaneous rekeys (RFC 7296 2.8.1, 2.8.2) and collisions with a Delete (2.25)."""

from __future__ import annotations

import secrets
import struct

import pytest

from client.ikev2.constants import ExchangeType, NotifyType, ProtocolId
from client.ikev2.events import (
    ChildSaDeleted,
    ChildSaKeys,
    ChildSaRekeyed,
    IkeSaClosed,
    IkeSaRekeyed,
)
from client.ikev2.ike_sa import IkeSA, State
from client.ikev2.message import parse_header
from client.ikev2.payloads import DeletePayload, KePayload, NotifyPayload, SaPayload
from tests.exchange.conftest import (
    CLIENT_ADDR,
    GATEWAY_ADDR,
    PSK,
    GatewayConfig,
    client_config,
    drop,
    events,
    kind,
    pump,
)
from tests.exchange.responder import Responder

CHILD_LIFETIME = 100.0
IKE_LIFETIME = 400.0


class Nonces:
    """Random bytes, except that 32-byte draws (the nonces) come from `nonces` first."""

    def __init__(self, *nonces: bytes) -> None:
        self.nonces = list(nonces)

    def __call__(self, n: int) -> bytes:
        if n == 32 and self.nonces:
            return self.nonces.pop(0)
        return secrets.token_bytes(n)


def nonce(last: int) -> bytes:
    return bytes(31) + bytes([last])


def connect(esp: str = "aes256gcm16", rng=secrets.token_bytes, gw_rng=secrets.token_bytes,
            **cfg) -> tuple[IkeSA, Responder]:
    values = dict(child_lifetime=CHILD_LIFETIME, esp_proposals=esp)
    values.update(cfg)
    client = IkeSA(client_config(**values), CLIENT_ADDR, GATEWAY_ADDR, rng=rng)
    gw = Responder(GatewayConfig(psk=PSK, esp_proposals=esp), rng=gw_rng)
    client.initiate(0.0)
    pump(client, gw, 0.0)
    assert client.state is State.ESTABLISHED
    events(client)
    return client, gw


def mirrored(mine: ChildSaKeys, theirs: ChildSaKeys) -> bool:
    """Both ends derived the same SA: each direction's keys and SPIs are the other's."""
    return (mine.spi_in, mine.spi_out) == (theirs.spi_out, theirs.spi_in) and (
        mine.encr_key_in, mine.integ_key_in, mine.encr_key_out, mine.integ_key_out) == (
        theirs.encr_key_out, theirs.integ_key_out, theirs.encr_key_in, theirs.integ_key_in)


def fire(client: IkeSA, gw: Responder, until: float, **filters) -> float:
    """Run the client's timers up to `until`, moving datagrams after each; the last time."""
    now = 0.0
    for _ in range(1000):  # a timer that does not move on would spin here
        t = client.get_timer()
        if t is None or t > until:
            return now
        now = t
        client.handle_timer(now)
        pump(client, gw, now, **filters)
    raise AssertionError("the client's timer keeps firing without time passing")


# -- CHILD_SA, we rekey ---------------------------------------------------------------------
@pytest.mark.parametrize("esp", ["aes256gcm16", "aes128-sha256-ecp256"])
def test_client_rekeys_the_child_sa_when_its_lifetime_ends(esp) -> None:
    client, gw = connect(esp)
    (old,) = gw.children
    when = client.get_timer()
    # Soft lifetime with jitter: a little before the nominal lifetime, never after it.
    assert CHILD_LIFETIME * 0.9 <= when <= CHILD_LIFETIME
    client.handle_timer(when)
    (request,) = client.datagrams_to_send()
    assert kind(request) == (ExchangeType.CREATE_CHILD_SA, False, 2)
    gw.receive(request)
    rekey = gw.requests[-1]
    notify = rekey.notify(NotifyType.REKEY_SA)
    assert notify.protocol == ProtocolId.ESP and notify.spi == struct.pack("!I", old.spi_out)
    assert (rekey.get(KePayload) is not None) == ("ecp256" in esp)  # PFS when configured

    # The answer arrives: the new SA carries our traffic at once, the old one still takes
    # inbound packets while its Delete is under way.
    for d in gw.datagrams_to_send():
        client.receive(d, when)
    (rekeyed,) = events(client)
    assert isinstance(rekeyed, ChildSaRekeyed) and rekeyed.outbound
    assert rekeyed.old_spi_in == old.spi_out
    new = gw.children[-1]
    assert mirrored(rekeyed.keys, new) and new.spi_in != old.spi_in
    assert rekeyed.keys.encr_key_out != old.encr_key_in  # fresh keys, fresh nonces
    (delete,) = client.datagrams_to_send()
    assert kind(delete) == (ExchangeType.INFORMATIONAL, False, 3)
    gw.receive(delete)
    (d,) = gw.requests[-1].get_all(DeletePayload)
    assert (d.protocol, d.spis) == (ProtocolId.ESP, [struct.pack("!I", old.spi_out)])
    assert events(client) == []  # no answer yet: the old inbound SA stays

    pump(client, gw, when)
    assert events(client) == [ChildSaDeleted(old.spi_out, old.spi_in, replaced_by=new.spi_out,
                                             remaining=1)]
    assert gw.children == [new] and gw.deleted_children == [old]
    # The new SA is rekeyed in its turn, one lifetime later.
    assert when + CHILD_LIFETIME * 0.9 <= client.get_timer() <= when + CHILD_LIFETIME


def test_the_old_sa_stays_until_the_delete_is_answered() -> None:
    client, gw = connect()
    (old,) = gw.children
    lost = [0]

    def drop_delete_answers(d: bytes) -> list[bytes]:
        if kind(d) == (ExchangeType.INFORMATIONAL, True, 3) and lost[0] < 2:
            lost[0] += 1
            return []
        return [d]

    now = client.get_timer()
    client.handle_timer(now)
    pump(client, gw, now, to_client=drop_delete_answers)
    assert [type(e) for e in events(client)] == [ChildSaRekeyed]
    # Retransmissions of the Delete until one answer gets through; only then it goes.
    fire(client, gw, now + 10, to_client=drop_delete_answers)
    (deleted,) = events(client)
    assert isinstance(deleted, ChildSaDeleted) and deleted.spi_in == old.spi_out
    assert client.state is State.ESTABLISHED


def test_temporary_failure_is_retried() -> None:
    client, gw = connect()
    gw.cfg.temporary_failures = 1
    first = client.get_timer()
    client.handle_timer(first)
    pump(client, gw, first)
    assert events(client) == [] and client.state is State.ESTABLISHED
    retry = client.get_timer()
    assert first + 5 <= retry <= first + 15  # strongSwan's 5-15 s
    fire(client, gw, retry)
    assert [type(e) for e in events(client)] == [ChildSaRekeyed, ChildSaDeleted]
    assert len(gw.children) == 1 and len(gw.deleted_children) == 1


def test_a_child_sa_that_cannot_be_rekeyed_expires() -> None:
    client, gw = connect()
    gw.cfg.temporary_failures = 1000
    end = fire(client, gw, CHILD_LIFETIME * 2)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and closed.error is not None
    assert "expired" in closed.reason
    assert end == pytest.approx(CHILD_LIFETIME * 1.1)  # the hard lifetime, not before


def test_invalid_ke_starts_a_new_exchange() -> None:
    client, gw = connect(esp="aes256gcm16-ecp384-ecp256")
    gw.cfg.esp_proposals = "aes256gcm16-ecp256"  # the gateway wants the second group
    now = client.get_timer()
    client.handle_timer(now)
    traffic = pump(client, gw, now)
    assert [kind(d) for d in traffic.from_client] == [
        (ExchangeType.CREATE_CHILD_SA, False, 2), (ExchangeType.CREATE_CHILD_SA, False, 3),
        (ExchangeType.INFORMATIONAL, False, 4)]
    rekeyed, _ = events(client)
    assert rekeyed.esp_proposal == "aes256gcm16-ecp256" and mirrored(rekeyed.keys, gw.child)


# -- CHILD_SA, the gateway rekeys -----------------------------------------------------------
@pytest.mark.parametrize("esp", ["aes256gcm16", "aes256gcm16-x25519"])
def test_gateway_rekeys_the_child_sa(esp) -> None:
    client, gw = connect(esp)
    (old,) = gw.children
    gw.rekey_child()
    gw.receive(_only(client, gw, 10.0))  # our answer; the gateway then deletes the old SA
    new = gw.children[-1]
    (rekeyed,) = events(client)
    # We send on the new SA only once the gateway deletes the old one (RFC 7296 2.8).
    assert rekeyed == ChildSaRekeyed(old.spi_out, rekeyed.keys, esp, outbound=False)
    assert mirrored(rekeyed.keys, new)
    pump(client, gw, 10.0)
    (d,) = gw.responses[-1].get_all(DeletePayload)
    assert d.spis == [struct.pack("!I", old.spi_out)]  # we delete our half too
    assert events(client) == [ChildSaDeleted(old.spi_out, old.spi_in, replaced_by=new.spi_out,
                                             remaining=1)]
    assert gw.children == [new]
    # Our own rekey timer now runs for the new SA.
    assert 10 + CHILD_LIFETIME * 0.9 <= client.get_timer() <= 10 + CHILD_LIFETIME


def test_a_replaced_sa_the_gateway_never_deletes_expires() -> None:
    client, gw = connect()
    (old,) = gw.children
    gw.cfg.auto_delete = False
    gw.rekey_child()
    pump(client, gw, 10.0)
    (rekeyed,) = events(client)
    assert not rekeyed.outbound
    # The old SA stays (for packets in flight) until its hard lifetime, then it goes.
    # Meanwhile the replacement is rekeyed in its turn, by us.
    fire(client, gw, CHILD_LIFETIME * 1.1 - 0.01)
    assert old.spi_out not in [e.spi_in for e in events(client)
                               if isinstance(e, ChildSaDeleted)]
    fire(client, gw, CHILD_LIFETIME * 1.1)
    (deleted,) = events(client)
    assert deleted.spi_in == old.spi_out and deleted.replaced_by == client.child.spi_in
    assert client.state is State.ESTABLISHED and len(client.life.children) == 1


def _only(client: IkeSA, gw: Responder, now: float) -> bytes:
    """Deliver the gateway's one datagram to the client; the client's one answer."""
    (request,) = gw.datagrams_to_send()
    client.receive(request, now)
    (answer,) = client.datagrams_to_send()
    return answer


def test_gateway_rekeys_a_child_sa_we_already_replaced() -> None:
    client, gw = connect()
    (old,) = gw.children
    gw.cfg.auto_delete = False
    now = client.get_timer()
    client.handle_timer(now)
    gw.receive(client.datagrams_to_send()[0])  # our rekey, answered ...
    client.receive(gw.datagrams_to_send()[0], now)
    delete = client.datagrams_to_send()  # ... and our Delete of the old SA is under way
    gw.rekey_child(old)  # the gateway has not seen it and rekeys the old SA
    answer = _only(client, gw, now)
    gw.receive(answer)
    assert gw.rekey_errors == [NotifyType.TEMPORARY_FAILURE]  # RFC 7296 2.25.1
    for d in delete:
        gw.receive(d)
    pump(client, gw, now)
    rekeyed, deleted = events(client)
    assert deleted.spi_in == old.spi_out and deleted.replaced_by == rekeyed.keys.spi_in


def test_gateway_deletes_the_child_sa_while_we_rekey_it() -> None:
    client, gw = connect()
    (old,) = gw.children
    now = client.get_timer()
    client.handle_timer(now)
    rekey = client.datagrams_to_send()  # held back
    gw.delete_child()
    pump(client, gw, now)  # the gateway's Delete wins the race
    assert events(client) == [ChildSaDeleted(old.spi_out, old.spi_in)]
    for d in rekey:
        gw.receive(d)
    pump(client, gw, now)
    # RFC 7296 2.25.1: the gateway no longer knows it; that ends our rekey quietly.
    assert gw.requests[-1].exchange == ExchangeType.CREATE_CHILD_SA
    assert gw.last_response.notify(NotifyType.CHILD_SA_NOT_FOUND) is not None
    assert events(client) == [] and client.state is State.ESTABLISHED


@pytest.mark.parametrize("client_wins", [True, False])
def test_simultaneous_child_rekey(client_wins) -> None:
    # The client's nonces: its request's, then its answer's. The SA made with the lowest
    # nonce of the four is redundant; the side that made it deletes it (RFC 7296 2.8.1).
    ours, answer = (nonce(2), nonce(1)) if client_wins else (nonce(1), nonce(2))
    client, gw = connect(rng=Nonces(secrets.token_bytes(32), ours, answer))
    (old,) = gw.children
    gw.cfg.auto_delete = True
    now = client.get_timer()
    client.handle_timer(now)
    client_request = client.datagrams_to_send()
    gw.rekey_child()
    gw_request = gw.datagrams_to_send()
    for d in client_request:
        gw.receive(d)  # the gateway answers ours while its own is under way
    for d in gw_request:
        client.receive(d, now)  # and we answer its
    pump(client, gw, now)
    evs = events(client)
    survivors = [e for e in evs if isinstance(e, ChildSaRekeyed)]
    deleted = [e for e in evs if isinstance(e, ChildSaDeleted)]
    # Both ends agree on one new SA; the old one and the redundant one are gone.
    (alive,) = gw.children
    assert old in gw.deleted_children and len(gw.deleted_children) == 2
    winner = next(e for e in survivors if e.keys.spi_in == alive.spi_out)
    assert mirrored(winner.keys, alive)
    assert deleted[-1].remaining == 1
    assert {e.spi_in for e in deleted} | {winner.keys.spi_in} == {
        e.old_spi_in for e in survivors} | {e.keys.spi_in for e in survivors}
    # The surviving SA was made by the exchange the winner started.
    made_by_client = winner.outbound  # only our own exchange's SA is used at once
    assert made_by_client == client_wins
    assert client.state is State.ESTABLISHED and client.life.children[0].outbound


# -- IKE SA -----------------------------------------------------------------------------------
def test_client_rekeys_the_ike_sa() -> None:
    client, gw = connect(ike_lifetime=IKE_LIFETIME, child_lifetime=None)
    old_spis = (client.spi_i, client.spi_r)
    when = client.get_timer()
    assert IKE_LIFETIME * 0.9 <= when <= IKE_LIFETIME
    client.handle_timer(when)
    traffic = pump(client, gw, when)
    assert [kind(d) for d in traffic.from_client] == [
        (ExchangeType.CREATE_CHILD_SA, False, 2), (ExchangeType.INFORMATIONAL, False, 3)]
    # The Delete went out on the old SA; the gateway switched to the new one.
    h = parse_header(traffic.from_client[1])
    assert (h.spi_i, h.spi_r) == old_spis
    (rekeyed,) = events(client)
    assert rekeyed == IkeSaRekeyed("aes256gcm16-prfsha384-ecp384", initiated=True)
    assert (client.spi_i, client.spi_r) == (gw.spi_i, gw.spi_r) != old_spis
    assert gw.old_sas == [] and gw.ike_rekeys == 1
    # Message IDs start again at 0 on the new SA, which both ends can read.
    gw.liveness()
    traffic = pump(client, gw, when + 1)
    assert [kind(d) for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, True, 0)]
    # The CHILD_SA moved along: it is rekeyed with the new SA's SK_d.
    gw.rekey_child()
    pump(client, gw, when + 2)
    rekeyed, _ = events(client)
    assert mirrored(rekeyed.keys, gw.children[-1])
    client.delete(when + 3)
    traffic = pump(client, gw, when + 3)
    assert kind(traffic.from_client[0]) == (ExchangeType.INFORMATIONAL, False, 0) and gw.closed


def test_gateway_rekeys_the_ike_sa() -> None:
    client, gw = connect(child_lifetime=None)
    gw.rekey_ike()
    traffic = pump(client, gw, 5.0)
    # We answered; the gateway deleted the old SA and we answered that on the old SA.
    assert [kind(d) for d in traffic.from_client] == [
        (ExchangeType.CREATE_CHILD_SA, True, 0), (ExchangeType.INFORMATIONAL, True, 1)]
    assert events(client) == [IkeSaRekeyed("aes256gcm16-prfsha384-ecp384", initiated=False)]
    assert (client.spi_i, client.spi_r) == (gw.spi_i, gw.spi_r) and gw.old_sas == []
    # The gateway started the new SA: it is its initiator, we are the responder.
    assert client.spi_i == gw.spi_i and not client.initiator
    gw.liveness()
    traffic = pump(client, gw, 6.0)
    assert not parse_header(traffic.from_client[0]).is_initiator
    client.delete(7.0)
    traffic = pump(client, gw, 7.0)
    assert kind(traffic.from_client[0]) == (ExchangeType.INFORMATIONAL, False, 0) and gw.closed


@pytest.mark.parametrize("client_wins", [True, False])
def test_simultaneous_ike_rekey(client_wins) -> None:
    ours, answer = (nonce(2), nonce(1)) if client_wins else (nonce(1), nonce(2))
    client, gw = connect(ike_lifetime=IKE_LIFETIME, child_lifetime=None,
                         rng=Nonces(secrets.token_bytes(32), ours, answer))
    when = client.get_timer()
    client.handle_timer(when)
    client_request = client.datagrams_to_send()
    gw.rekey_ike()
    gw_request = gw.datagrams_to_send()
    for d in client_request:
        gw.receive(d)
    for d in gw_request:
        client.receive(d, when)
    pump(client, gw, when)
    (rekeyed,) = events(client)
    assert rekeyed.initiated == client_wins
    # One new SA survives at both ends, with the right initiator, and nothing else.
    assert (client.spi_i, client.spi_r) == (gw.spi_i, gw.spi_r)
    assert client.initiator == client_wins == (not gw.gw_initiator)
    assert gw.old_sas == [] and client.life.retiring == []
    gw.liveness()
    traffic = pump(client, gw, when + 1)
    assert [kind(d) for d in traffic.from_client] == [(ExchangeType.INFORMATIONAL, True, 0)]
    assert client.state is State.ESTABLISHED


def test_gateway_deletes_the_ike_sa_while_we_rekey_it() -> None:
    client, gw = connect(ike_lifetime=IKE_LIFETIME, child_lifetime=None)
    when = client.get_timer()
    client.handle_timer(when)
    client.datagrams_to_send()  # our rekey is lost
    gw.delete_ike()
    pump(client, gw, when)
    (closed,) = events(client)
    assert isinstance(closed, IkeSaClosed) and closed.by_peer and closed.error is None
    assert client.get_timer() is None


def test_gateway_rekeys_the_ike_sa_while_we_rekey_the_child_sa() -> None:
    client, gw = connect()
    now = client.get_timer()
    client.handle_timer(now)
    child_rekey = client.datagrams_to_send()  # in flight
    gw.rekey_ike()
    gw.receive(_only(client, gw, now))
    assert gw.rekey_errors == [NotifyType.TEMPORARY_FAILURE]  # RFC 7296 2.25.2
    for d in child_rekey:
        gw.receive(d)
    pump(client, gw, now)
    assert [type(e) for e in events(client)] == [ChildSaRekeyed, ChildSaDeleted]


def test_a_new_child_sa_from_the_gateway_is_refused() -> None:
    client, gw = connect()
    gw.request([SaPayload(gw.auth_request.get(SaPayload).proposals)],
               ExchangeType.CREATE_CHILD_SA)
    pump(client, gw, 1.0)
    assert gw.responses[-1].notify(NotifyType.NO_ADDITIONAL_SAS) is not None
    assert events(client) == [] and client.state is State.ESTABLISHED


def test_rekey_request_for_an_unknown_child_sa() -> None:
    client, gw = connect()
    stranger = ChildSaKeys(0x1234, 0x5678, 20, 256, None, b"", b"", b"", b"")
    gw.rekey_child(stranger)
    pump(client, gw, 1.0)
    (n,) = gw.responses[-1].notifies()
    assert isinstance(n, NotifyPayload) and n.notify_type == NotifyType.CHILD_SA_NOT_FOUND
    assert n.spi == struct.pack("!I", 0x1234)
    assert events(client) == []


def test_our_answer_to_the_gateways_ike_rekey_is_lost() -> None:
    client, gw = connect(child_lifetime=None)
    gw.rekey_ike()
    pump(client, gw, 5.0, to_gateway=drop(1))  # we switched; the gateway never heard
    assert events(client) == [IkeSaRekeyed("aes256gcm16-prfsha384-ecp384", initiated=False)]
    assert gw.ike_rekeys == 0
    gw.retransmit()  # on the old SA, which we still answer from our cache
    traffic = pump(client, gw, 6.0)
    assert [kind(d) for d in traffic.from_client] == [
        (ExchangeType.CREATE_CHILD_SA, True, 0), (ExchangeType.INFORMATIONAL, True, 1)]
    assert gw.ike_rekeys == 1 and (client.spi_i, client.spi_r) == (gw.spi_i, gw.spi_r)
    assert client.life.retiring == [] and events(client) == []
    gw.liveness()
    assert [kind(d) for d in pump(client, gw, 7.0).from_client] == [
        (ExchangeType.INFORMATIONAL, True, 0)]


def test_a_lost_ike_rekey_answer_is_retransmitted_by_us() -> None:
    client, gw = connect(ike_lifetime=IKE_LIFETIME, child_lifetime=None)
    when = client.get_timer()
    client.handle_timer(when)
    pump(client, gw, when, to_client=drop(1))  # the gateway switched; we did not hear
    assert gw.ike_rekeys == 1 and events(client) == []
    fire(client, gw, when + 5)  # our retransmission; the gateway answers from its cache
    assert events(client) == [IkeSaRekeyed("aes256gcm16-prfsha384-ecp384", initiated=True)]
    assert (client.spi_i, client.spi_r) == (gw.spi_i, gw.spi_r) and gw.old_sas == []
