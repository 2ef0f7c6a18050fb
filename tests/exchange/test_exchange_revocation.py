"""The IKE SA waits for the driver's revocation verdict before it uses IKE_AUTH's CP/SA/TS
or sends EAP credentials (events.RevocationCheck, IkeSA.revocation_checked)."""

from __future__ import annotations

from client.engine import EXIT_UNTRUSTED, exit_code_for
from client.ikev2.auth.revocation import CertificateRevoked
from client.ikev2.constants import EapType
from client.ikev2.events import ChildSaEstablished, IkeSaClosed, RevocationCheck
from client.ikev2.ike_sa import State
from tests.exchange.conftest import eap_pair, events, pump


def _paused(pki):
    client, gw = eap_pair(pki, check_revocation=True)
    client.initiate(0.0)
    pump(client, gw, 0.0)
    evs = events(client)
    assert [type(e) for e in evs] == [RevocationCheck]
    check = evs[0]
    assert [link.cert for link in check.links] == [pki.gateway[0]]
    assert check.links[0].issuer == pki.ca
    return client, gw


def test_no_eap_credentials_leave_before_the_verdict(pki) -> None:
    client, gw = _paused(pki)
    # The gateway's EAP request arrived with its CERT+AUTH; our answer waits.
    assert gw.eap_responses == []
    assert client.datagrams_to_send() == [] and client.get_timer() is None
    client.handle_timer(1000.0)  # no retransmission while waiting
    assert client.datagrams_to_send() == []
    client.revocation_checked(None, 1.0)
    pump(client, gw, 1.0)
    assert EapType.IDENTITY in gw.eap_responses or EapType.MSCHAPV2 in gw.eap_responses
    evs = events(client)
    assert any(isinstance(e, ChildSaEstablished) for e in evs)
    assert client.state is State.ESTABLISHED


def test_revoked_certificate_ends_the_sa_with_exit_code_4(pki) -> None:
    client, gw = _paused(pki)
    client.revocation_checked(
        CertificateRevoked("the gateway's certificate 'CN=vpn.example.com' was revoked"), 1.0)
    pump(client, gw, 1.0)
    evs = events(client)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert "revoked" in evs[0].reason and exit_code_for(evs[0].error) == EXIT_UNTRUSTED
    assert gw.eap_responses == []  # the password never went out


def test_without_revocation_checks_nothing_waits(pki) -> None:
    client, gw = eap_pair(pki)
    client.initiate(0.0)
    pump(client, gw, 0.0)
    assert not any(isinstance(e, RevocationCheck) for e in events(client))
    assert client.state is State.ESTABLISHED
