"""build_ike_config for ikev2-eap-tls and ikev2-cert-eap (RFC 4739)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from client.config import ConfigError, build_ike_config
from client.engine import Secrets
from client.ikev2.constants import EapType
from client.ikev2.task_manager import RetransmitPolicy
from client.profile import parse_profile
from tests.exchange.eap_tls_server import make_cert

P12_PASS = "p12-secret"


@pytest.fixture(scope="module")
def p12_b64() -> str:
    ca = make_cert("CA", ca=True)
    cert, key = make_cert("alice", ca, san=x509.RFC822Name("alice@example.com"),
                          eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    blob = pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, [ca[0]], BestAvailableEncryption(P12_PASS.encode()))
    return base64.b64encode(blob).decode()


def config(ptype: str, p12: str, secrets: Secrets, **local):
    doc = {"uuid": str(uuid.uuid4()), "name": "t", "type": ptype,
           "remote": {"addr": "192.0.2.1", "id": "vpn.example.com"},
           "local": {"p12": p12, **local}}
    return build_ike_config(parse_profile(json.dumps(doc)), secrets, "198.51.100.7",
                            RetransmitPolicy())


def test_eap_tls_identity_defaults_to_the_certificate(p12_b64) -> None:
    cfg = config("ikev2-eap-tls", p12_b64, Secrets(p12_passphrase=P12_PASS))
    assert cfg.auth_method == "eap" and cfg.auth_rounds == ()
    assert cfg.eap_methods == (EapType.TLS,)
    assert cfg.local_id == cfg.eap_identity == "alice@example.com"
    assert cfg.certificate is not None and cfg.private_key is not None
    assert cfg.eap_password is None


def test_eap_tls_with_an_explicit_eap_identity(p12_b64) -> None:
    cfg = config("ikev2-eap-tls", p12_b64, Secrets(p12_passphrase=P12_PASS), eap_id="al")
    assert cfg.eap_identity == "al" and cfg.local_id == "alice@example.com"


def test_eap_tls_wrong_passphrase(p12_b64) -> None:
    with pytest.raises(ConfigError, match="local.p12"):
        config("ikev2-eap-tls", p12_b64, Secrets(p12_passphrase="nope"))


def test_cert_eap_two_rounds(p12_b64) -> None:
    cfg = config("ikev2-cert-eap", p12_b64,
                 Secrets(password="pw", p12_passphrase=P12_PASS), eap_id="alice")
    assert cfg.auth_method == "pubkey" and cfg.auth_rounds == ("pubkey", "eap")
    assert cfg.local_id == "alice@example.com"  # round 1: the certificate's identity
    assert cfg.eap_identity == "alice" and cfg.eap_password == "pw"  # round 2
    assert EapType.MSCHAPV2 in cfg.eap_methods


@pytest.mark.parametrize("secrets, local, key", [
    (Secrets(p12_passphrase=P12_PASS), {"eap_id": "alice"}, "password"),
    (Secrets(password="pw", p12_passphrase=P12_PASS), {}, "local.eap_id"),
    (Secrets(password="pw", p12_passphrase="wrong"), {"eap_id": "alice"}, "local.p12"),
])
def test_cert_eap_needs_both_secrets_and_the_username(p12_b64, secrets, local, key) -> None:
    with pytest.raises(ConfigError, match=f"^{key}:"):
        config("ikev2-cert-eap", p12_b64, secrets, **local)
