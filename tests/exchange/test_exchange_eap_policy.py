"""EAP method policy: an authenticated gateway cannot switch an ikev2-eap profile to EAP-MD5."""

from __future__ import annotations

import pytest

from client.config import build_ike_config
from client.engine import EXIT_UNTRUSTED, Secrets, exit_code_for
from client.ikev2.auth.policy import CryptoPolicy, CryptoPolicyRefused
from client.ikev2.constants import EapType
from client.ikev2.errors import PeerNotTrusted
from client.ikev2.events import IkeSaClosed
from client.ikev2.task_manager import RetransmitPolicy
from client.profile import profile_from_dict
from tests.exchange.conftest import eap_pair, events, pump


def _connect(client, gw):
    client.initiate(0.0)
    pump(client, gw, 0.0)
    return events(client)


def _ikev2_eap_methods() -> tuple[int, ...]:
    """What an ikev2-eap profile without local.eap-methods allows (client/config.py)."""
    profile = profile_from_dict({
        "uuid": "5b5b5b5b-1111-4222-8333-444444444444", "name": "n", "type": "ikev2-eap",
        "remote": {"addr": "vpn.example.com"}, "local": {"eap_id": "alice"},
    })
    cfg = build_ike_config(profile, Secrets(password="pw"), "198.51.100.10", RetransmitPolicy())
    return cfg.eap_methods


@pytest.mark.parametrize("after_nak", ["again", "failure"])
def test_md5_downgrade_is_naked_and_refused(pki, after_nak: str) -> None:
    methods = _ikev2_eap_methods()
    assert EapType.MD5_CHALLENGE not in methods
    client, gw = eap_pair(pki, eap_methods=methods)
    gw.cfg.eap_md5_downgrade = after_nak
    evs = _connect(client, gw)
    assert [type(e) for e in evs] == [IkeSaClosed]
    error = evs[0].error
    assert isinstance(error, PeerNotTrusted) and exit_code_for(error) == EXIT_UNTRUSTED
    assert "insists on EAP-MD5" in str(error) and "allowed: EAP-MSCHAPv2" in str(error)
    # Our answers: the identity, then one Nak; never an MD5 response.
    assert gw.eap_responses == [EapType.IDENTITY, EapType.NAK]
    assert EapType.MD5_CHALLENGE not in gw.eap_responses


def test_policy_error_is_exit_code_4() -> None:
    policy = CryptoPolicy()
    with pytest.raises(CryptoPolicyRefused) as info:
        policy.check_auth_hash("sha1", None, " (RFC 7296 auth method 1)")
    assert exit_code_for(info.value) == EXIT_UNTRUSTED
