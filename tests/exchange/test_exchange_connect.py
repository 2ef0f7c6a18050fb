"""Connecting: PSK, EAP-MSCHAPv2 with a gateway certificate, COOKIE, INVALID_KE_PAYLOAD."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

import pytest

from client.engine import EXIT_AUTH, EXIT_FAILURE, EXIT_UNTRUSTED, exit_code_for
from client.ikev2.constants import DhId, ExchangeType, NotifyType
from client.ikev2.errors import AuthenticationFailed, NoProposalChosen, PeerNotTrusted
from client.ikev2.events import ChildSaEstablished, IkeSaClosed, IkeSaEstablished
from client.ikev2.ike_sa import State
from client.ikev2.message import Message
from client.ikev2.payloads import IdrPayload, KePayload, NotifyPayload
from tests.exchange.conftest import (
    PSK,
    GatewayConfig,
    client_config,
    eap_pair,
    events,
    kind,
    make_pair,
    pump,
)


def connect(client, gw, now: float = 0.0):
    client.initiate(now)
    traffic = pump(client, gw, now)
    return events(client), traffic


def assert_connected(evs, client, gw, ike: str, esp: str) -> ChildSaEstablished:
    assert [type(e) for e in evs] == [IkeSaEstablished, ChildSaEstablished]
    ike_ev, child_ev = evs
    assert ike_ev.ike_proposal == ike
    assert ike_ev.remote_id == "vpn.example.com"
    assert child_ev.esp_proposal == esp
    assert child_ev.virtual_ips == [ip_interface("198.18.0.10/32")]
    assert child_ev.dns_servers == [ip_address("198.18.0.1")]
    assert child_ev.dns_domains == ["corp.example.com"]
    assert child_ev.local_ts == [ip_network("198.18.0.10/32")]
    assert child_ev.remote_ts == [ip_network("198.18.0.0/15")]
    # Both ends derived the same ESP keys, each direction the mirror of the other.
    mine, theirs = child_ev.keys, gw.child
    assert (mine.spi_out, mine.spi_in) == (theirs.spi_in, theirs.spi_out)
    assert mine.encr_key_out == theirs.encr_key_in and mine.encr_key_in == theirs.encr_key_out
    assert mine.integ_key_out == theirs.integ_key_in
    assert mine.integ_key_in == theirs.integ_key_out
    assert mine.encr_key_out != mine.encr_key_in
    assert (mine.encr_id, mine.key_bits, mine.integ_id) == (
        theirs.encr_id, theirs.key_bits, theirs.integ_id)
    assert client.state is State.ESTABLISHED and client.get_timer() is None
    return child_ev


@pytest.mark.parametrize(
    ("ike", "esp", "ike_name", "esp_name", "key_len", "integ_len"),
    [
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16", "aes256gcm16-prfsha384-ecp384",
         "aes256gcm16", 36, 0),
        ("aes128-sha256-modp2048", "aes128-sha256", "aes128-sha256-modp2048",
         "aes128-sha256", 16, 32),
        ("chacha20poly1305-prfsha512-x25519", "chacha20poly1305",
         "chacha20poly1305-prfsha512-x25519", "chacha20poly1305", 36, 0),
    ],
)
def test_psk_connect(ike, esp, ike_name, esp_name, key_len, integ_len) -> None:
    client, gw = make_pair(client_config(ike_proposals=ike, esp_proposals=esp),
                           GatewayConfig(psk=PSK, ike_proposals=ike, esp_proposals=esp))
    evs, traffic = connect(client, gw)
    child = assert_connected(evs, client, gw, ike_name, esp_name)
    assert len(child.keys.encr_key_out) == key_len and len(child.keys.integ_key_out) == integ_len
    assert [kind(d)[:2] for d in traffic.from_client] == [
        (ExchangeType.IKE_SA_INIT, False), (ExchangeType.IKE_AUTH, False)]
    assert gw.established and not evs[0].nat_local and not evs[0].nat_remote


def test_gateway_picks_first_acceptable_of_the_default_proposals() -> None:
    # The client's KE is x25519 (first group of its first proposal); the gateway only
    # takes modp2048, so an INVALID_KE round comes first.
    client, gw = make_pair(client_config(ike_proposals="default", esp_proposals="default"),
                           GatewayConfig(psk=PSK, ike_proposals="aes128-sha256-modp2048",
                                         esp_proposals="aes128-sha512,aes256-sha256"))
    evs, _ = connect(client, gw)
    # The client's second ESP proposal is the first acceptable one; of the gateway's
    # proposals, the first that covers it decides.
    assert_connected(evs, client, gw, "aes128-sha256-modp2048", "aes128-sha512")
    assert gw.invalid_ke_sent == 1


def test_nat_detected() -> None:
    gw_cfg = GatewayConfig(psk=PSK, client_seen_as=("192.0.2.200", 40123))
    client, gw = make_pair(client_config(), gw_cfg)
    evs, _ = connect(client, gw)
    assert evs[0].nat_local and not evs[0].nat_remote


def test_wrong_psk_is_authentication_failed() -> None:
    client, gw = make_pair(client_config(psk=b"not the key"), GatewayConfig(psk=PSK))
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, AuthenticationFailed) and not evs[0].by_peer
    assert exit_code_for(evs[0].error) == EXIT_AUTH
    assert client.state is State.CLOSED and client.get_timer() is None


def test_gateway_with_another_identity_is_not_trusted() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK, identity="evil.example.com"))
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, PeerNotTrusted)
    assert exit_code_for(evs[0].error) == EXIT_UNTRUSTED


@pytest.mark.parametrize("send_idr", [False, True])
def test_psk_remote_id_in_at_fqdn_syntax(send_idr: bool) -> None:
    cfg = client_config(remote_id="@vpn.example.com", send_idr=send_idr)
    client, gw = make_pair(cfg, GatewayConfig(psk=PSK))
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaEstablished, ChildSaEstablished]
    assert (gw.auth_request.get(IdrPayload) is not None) == send_idr


def test_idr_naming_another_gateway_is_refused() -> None:
    cfg = client_config(remote_id="other.example.com", send_idr=True)
    client, gw = make_pair(cfg, GatewayConfig(psk=PSK))
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, AuthenticationFailed)


def test_no_proposal_chosen() -> None:
    client, gw = make_pair(client_config(),
                           GatewayConfig(psk=PSK, ike_proposals="aes128-sha1-modp2048"))
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, NoProposalChosen)
    assert exit_code_for(evs[0].error) == EXIT_FAILURE


def test_no_esp_proposal_chosen() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK, esp_proposals="aes128-sha1"))
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, NoProposalChosen)


# --- EAP-MSCHAPv2 with a certificate-authenticated gateway -------------------------------


@pytest.mark.parametrize("rfc7427", [True, False], ids=["rfc7427", "classic-ecdsa"])
def test_eap_mschapv2_connect(pki, rfc7427: bool) -> None:
    client, gw = eap_pair(pki, rfc7427=rfc7427)
    evs, traffic = connect(client, gw)
    assert_connected(evs, client, gw, "aes256gcm16-prfsha384-ecp384", "aes256gcm16")
    # IKE_SA_INIT, then IKE_AUTH: IDi, EAP Identity, MSCHAPv2 Response, Success ack, AUTH.
    assert [kind(d) for d in traffic.from_client] == [(ExchangeType.IKE_SA_INIT, False, 0)] + [
        (ExchangeType.IKE_AUTH, False, i) for i in range(1, 6)]
    assert gw.msk is not None and gw.eap_user == "alice"


def test_eap_wrong_password(pki) -> None:
    client, gw = eap_pair(pki, password="wrong")
    evs, _ = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, AuthenticationFailed)
    assert "691" in evs[0].reason
    assert exit_code_for(evs[0].error) == EXIT_AUTH
    assert gw.child is None


@pytest.mark.parametrize("which", ["other_ca_gateway", "wrong_name_gateway"])
def test_untrusted_gateway_certificate(pki, which: str) -> None:
    client, gw = eap_pair(pki, gateway_cert=getattr(pki, which))
    evs, traffic = connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    assert isinstance(evs[0].error, PeerNotTrusted)
    assert exit_code_for(evs[0].error) == EXIT_UNTRUSTED
    # The client stopped right there: no EAP answer reached the gateway.
    assert len(traffic.from_client) == 2 and gw.eap_user == ""


# --- COOKIE and INVALID_KE_PAYLOAD ----------------------------------------------------


def test_cookie() -> None:
    client, gw = make_pair(client_config(), GatewayConfig(psk=PSK, demand_cookie=True))
    evs, traffic = connect(client, gw)
    assert_connected(evs, client, gw, "aes256gcm16-prfsha384-ecp384", "aes256gcm16")
    assert gw.cookies_sent == 1
    first, second = (Message.decode(d) for d in traffic.from_client[:2])
    assert (first.exchange, first.message_id) == (second.exchange, second.message_id) == (
        ExchangeType.IKE_SA_INIT, 0)
    cookie = second.payloads[0]
    assert isinstance(cookie, NotifyPayload) and cookie.notify_type == NotifyType.COOKIE
    # The same request behind the COOKIE (only our random NAT-D source hash is new).
    assert second.spi_i == first.spi_i
    natd_src = NotifyType.NAT_DETECTION_SOURCE_IP
    assert [p for p in second.payloads[1:] if getattr(p, "notify_type", 0) != natd_src] == [
        p for p in first.payloads if getattr(p, "notify_type", 0) != natd_src]


def test_invalid_ke_payload() -> None:
    client, gw = make_pair(
        client_config(ike_proposals="aes256gcm16-prfsha384-x25519-ecp384"),
        GatewayConfig(psk=PSK, ike_proposals="aes256gcm16-prfsha384-ecp384"),
    )
    evs, traffic = connect(client, gw)
    assert_connected(evs, client, gw, "aes256gcm16-prfsha384-ecp384", "aes256gcm16")
    assert gw.invalid_ke_sent == 1
    first, second = (Message.decode(d) for d in traffic.from_client[:2])
    assert first.get(KePayload).group == DhId.CURVE25519
    assert second.get(KePayload).group == DhId.ECP_384 and second.message_id == 0


def test_cookie_then_invalid_ke_payload() -> None:
    client, gw = make_pair(
        client_config(ike_proposals="aes256gcm16-prfsha384-x25519-ecp384"),
        GatewayConfig(psk=PSK, demand_cookie=True),
    )
    evs, traffic = connect(client, gw)
    assert_connected(evs, client, gw, "aes256gcm16-prfsha384-ecp384", "aes256gcm16")
    assert (gw.cookies_sent, gw.invalid_ke_sent) == (1, 1)
    third = Message.decode(traffic.from_client[2])
    assert third.payloads[0].notify_type == NotifyType.COOKIE
    assert third.get(KePayload).group == DhId.ECP_384
