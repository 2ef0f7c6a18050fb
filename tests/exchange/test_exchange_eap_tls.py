"""EAP-TLS and certificate-then-EAP (RFC 4739) through the whole IKE state machine."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL

from client.ikev2.constants import EapType, ExchangeType, NotifyType
from client.ikev2.errors import AuthenticationFailed, LocalProtocolError, PeerNotTrusted
from client.ikev2.events import ChildSaEstablished, IkeSaClosed, IkeSaEstablished
from client.ikev2.ike_sa import IkeSA, State
from client.ikev2.message import Message
from client.ikev2.payloads import AuthPayload, EapPayload, IdiPayload
from tests.exchange.conftest import (
    CLIENT_ADDR,
    EAP_PASSWORD,
    EAP_USER,
    GATEWAY_ADDR,
    NOW,
    GatewayConfig,
    client_config,
    events,
    pump,
)
from tests.exchange.eap_tls_server import make_cert
from tests.exchange.multi_auth_responder import MultiAuthResponder

CLIENT_ID = "alice@example.com"


@pytest.fixture(scope="module")
def tls_pki():
    # Valid now: the test's EAP-TLS server (OpenSSL) checks client certificates against
    # the real clock, not the client's injected one.
    ca = make_cert("Client CA", ca=True)
    other = make_cert("Other CA", ca=True, now=NOW)
    client = make_cert(CLIENT_ID, ca, san=x509.RFC822Name(CLIENT_ID),
                       eku=ExtendedKeyUsageOID.CLIENT_AUTH, rsa_key=True)
    impostor = make_cert("vpn.example.com", other, san=x509.DNSName("vpn.example.com"),
                         eku=ExtendedKeyUsageOID.SERVER_AUTH, now=NOW)
    return {"ca": ca, "client": client, "impostor": impostor}


def setup(pki, tls_pki, *, rounds=(), eap_methods=(EapType.TLS,), password=None,
          **responder_kw) -> tuple[IkeSA, MultiAuthResponder]:
    cert, key = tls_pki["client"]
    cfg = client_config(
        auth_method="pubkey" if rounds else "eap", auth_rounds=rounds, psk=None,
        local_id=CLIENT_ID, eap_identity=EAP_USER if rounds else CLIENT_ID,
        eap_password=password, eap_methods=eap_methods, private_key=key, certificate=cert,
        trust_anchors=[pki.ca],
    )
    gw_cert, gw_key = pki.gateway
    gateway = GatewayConfig(key=gw_key, certs=[gw_cert], eap_users={EAP_USER: EAP_PASSWORD})
    responder = MultiAuthResponder(gateway, client_ca=tls_pki["ca"][0], **responder_kw)
    return IkeSA(cfg, CLIENT_ADDR, GATEWAY_ADDR), responder


def run(client: IkeSA, gw: MultiAuthResponder):
    client.initiate(0.0)
    traffic = pump(client, gw, 0.0, max_rounds=200)
    return events(client), traffic


def closed_with(evs) -> BaseException | None:
    assert evs and isinstance(evs[-1], IkeSaClosed), evs
    return evs[-1].error


def auth_requests(gw: MultiAuthResponder) -> list[Message]:
    return [m for m in gw.requests if m.exchange == ExchangeType.IKE_AUTH]


# --- EAP-TLS ------------------------------------------------------------------------

@pytest.mark.parametrize("version, indication", [
    (SSL.TLS1_2_VERSION, True),
    (SSL.TLS1_3_VERSION, True),
    (SSL.TLS1_3_VERSION, False),  # strongSwan before 5.9.10
])
def test_eap_tls_connects(pki, tls_pki, version, indication) -> None:
    client, gw = setup(pki, tls_pki, eap_tls=True, tls_max_version=version,
                       tls_indication=indication)
    evs, _ = run(client, gw)
    assert [type(e) for e in evs] == [IkeSaEstablished, ChildSaEstablished], evs
    assert client.state is State.ESTABLISHED and gw.established
    # The gateway accepted our AUTH, which only the shared MSK could produce.
    assert gw.msk is not None and gw.rounds == [("eap", CLIENT_ID)]
    assert gw.eap_user == CLIENT_ID


def test_eap_tls_server_certificate_from_another_ca(pki, tls_pki) -> None:
    """The IKE certificate is fine, the TLS server certificate is not: exit 4."""
    client, gw = setup(pki, tls_pki, eap_tls=True, tls_cert=tls_pki["impostor"])
    evs, _ = run(client, gw)
    error = closed_with(evs)
    assert isinstance(error, PeerNotTrusted) and "trusted CA" in str(error), error
    assert gw.msk is None and not gw.established


def test_eap_tls_certificate_rejected_by_the_gateway(pki, tls_pki) -> None:
    other_ca = make_cert("Unrelated CA", ca=True)
    client, gw = setup(pki, tls_pki, eap_tls=True)
    gw.client_ca = other_ca[0]
    evs, _ = run(client, gw)
    error = closed_with(evs)
    assert isinstance(error, AuthenticationFailed), error
    assert "refused our certificate" in str(error)


# --- certificate, then EAP (RFC 4739) -------------------------------------------------

CERT_EAP = dict(rounds=("pubkey", "eap"), eap_methods=(EapType.MSCHAPV2,),
                password=EAP_PASSWORD)


def test_certificate_then_eap(pki, tls_pki) -> None:
    client, gw = setup(pki, tls_pki, **CERT_EAP)
    evs, _ = run(client, gw)
    assert [type(e) for e in evs] == [IkeSaEstablished, ChildSaEstablished], evs
    assert gw.rounds == [("pubkey", CLIENT_ID), ("eap", EAP_USER)]
    first, second = auth_requests(gw)[:2]
    assert first.notify(NotifyType.MULTIPLE_AUTH_SUPPORTED) is not None
    assert first.notify(NotifyType.ANOTHER_AUTH_FOLLOWS) is not None
    assert first.get(AuthPayload) is not None
    # The second round opens with the EAP identity as IDi and nothing else.
    assert [type(p) for p in second.payloads] == [IdiPayload]
    assert all(m.notify(NotifyType.ANOTHER_AUTH_FOLLOWS) is None for m in auth_requests(gw)[1:])


def test_certificate_then_eap_tls(pki, tls_pki) -> None:
    client, gw = setup(pki, tls_pki, rounds=("pubkey", "eap"), eap_methods=(EapType.TLS,),
                       eap_tls=True)
    evs, _ = run(client, gw)
    assert [type(e) for e in evs] == [IkeSaEstablished, ChildSaEstablished], evs
    assert gw.rounds == [("pubkey", CLIENT_ID), ("eap", EAP_USER)]


def test_certificate_then_eap_wrong_password(pki, tls_pki) -> None:
    client, gw = setup(pki, tls_pki, **{**CERT_EAP, "password": "wrong"})
    evs, _ = run(client, gw)
    assert isinstance(closed_with(evs), AuthenticationFailed)
    assert len(gw.rounds) == 2 and not gw.established


def test_certificate_then_eap_needs_the_gateways_support(pki, tls_pki) -> None:
    client, gw = setup(pki, tls_pki, multiple_auth=False, **CERT_EAP)
    evs, _ = run(client, gw)
    error = closed_with(evs)
    assert isinstance(error, LocalProtocolError) and "RFC 4739" in str(error), error
    assert auth_requests(gw) == []  # nothing sent that the gateway could misread


def test_no_eap_for_the_second_round(pki, tls_pki) -> None:
    """A gateway that answers the second IDi without starting EAP is refused."""
    client, gw = setup(pki, tls_pki, **CERT_EAP)
    original = gw._ike_auth

    def no_eap(msg: Message):
        payloads = original(msg)
        return [p for p in payloads if not isinstance(p, EapPayload)] if gw.rounds[1:] else payloads

    gw._ike_auth = no_eap  # type: ignore[method-assign]
    evs, _ = run(client, gw)
    assert "did not start EAP" in str(closed_with(evs))
