"""The crypto policy table (client/ikev2/auth/policy.py) and where it applies: the gateway's
certificate chain, the profile key that relaxes a rule, the EAP method policy."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from client.engine import EXIT_UNTRUSTED, exit_code_for
from client.ikev2.auth import certs, policy
from client.ikev2.auth.eap.methods import allowed_methods
from client.ikev2.auth.eap.peer import EapPeer
from client.ikev2.auth.policy import CryptoPolicy, CryptoPolicyRefused
from client.ikev2.constants import EapCode, EapType
from client.ikev2.errors import PeerNotTrusted
from client.profile import ProfileError, profile_from_dict
from client.profile_commands import eap_only_warning

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_CA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca() -> x509.Certificate:
    return (
        x509.CertificateBuilder().subject_name(_name("Policy CA")).issuer_name(_name("Policy CA"))
        .public_key(_CA_KEY.public_key()).serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(_CA_KEY.public_key()), False)
        .sign(_CA_KEY, hashes.SHA256())
    )


CA = _ca()


def _leaf(key=_RSA2048, *, ca: bool = False, ku: x509.KeyUsage | None = None) -> x509.Certificate:
    b = (
        x509.CertificateBuilder().subject_name(_name("gw.example.com"))
        .issuer_name(_name("Policy CA")).public_key(key.public_key()).serial_number(2)
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example.com")]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_CA_KEY.public_key()), False)
    )
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    return b.sign(_CA_KEY, hashes.SHA256())


def _resigned_sha1(cert: x509.Certificate) -> x509.Certificate:
    """The same certificate signed with sha1WithRSA (the builder refuses SHA-1 today):
    both AlgorithmIdentifiers have the same length, so the DER is patched in place."""
    tbs = cert.tbs_certificate_bytes.replace(_SHA256_RSA, _SHA1_RSA)
    sig = _CA_KEY.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    der = cert.public_bytes(Encoding.DER)
    der = der.replace(cert.tbs_certificate_bytes, tbs).replace(_SHA256_RSA, _SHA1_RSA)
    return x509.load_der_x509_certificate(der.replace(cert.signature, sig))


def _ku(digital_signature: bool, non_repudiation: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature, non_repudiation, False, False, False, False, False,
                         False, False)


def _validate(leaf: x509.Certificate, pol: CryptoPolicy = policy.STRICT) -> x509.Certificate:
    return certs.validate_chain(leaf.public_bytes(Encoding.DER), [], [CA], NOW, pol)


WEAK = {
    "min-rsa-bits": lambda: _leaf(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    "min-ec-curve": lambda: _leaf(ec.generate_private_key(ec.SECP224R1())),
    "leaf-ca": lambda: _leaf(ca=True),
    "leaf-key-usage": lambda: _leaf(ku=_ku(False, True)),  # nonRepudiation alone
    "sha1-signatures": lambda: _resigned_sha1(_leaf()),
}


def test_table_names_every_rule_once() -> None:
    assert set(policy.RULES) == set(WEAK) and all(r.demand for r in policy.RULES.values())
    assert policy.MIN_RSA_BITS == 2048 and policy.MIN_RSA_BITS_NEW_KEYS == 3072
    with pytest.raises(ValueError, match="unknown crypto policy rule"):
        CryptoPolicy(["min-rsa-bit"])


def test_a_sound_gateway_certificate_passes() -> None:
    _validate(_leaf(ku=_ku(True, False)))
    _validate(_leaf(ec.generate_private_key(ec.SECP256R1())))


@pytest.mark.parametrize("rule", sorted(WEAK))
def test_each_weakness_is_refused_naming_rule_and_certificate(rule: str) -> None:
    with pytest.raises(CryptoPolicyRefused) as info:
        _validate(WEAK[rule]())
    assert info.value.rule.name == rule
    assert f"'{rule}'" in str(info.value) and "CN=gw.example.com" in str(info.value)
    assert exit_code_for(info.value) == EXIT_UNTRUSTED


@pytest.mark.parametrize("rule", ["min-rsa-bits", "min-ec-curve", "leaf-ca", "leaf-key-usage"])
def test_a_relaxed_rule_accepts_and_warns(rule: str, caplog) -> None:
    pol = CryptoPolicy([rule])
    with caplog.at_level(logging.WARNING, logger="client.ikev2.auth.policy"):
        pol.warn_relaxed()
        _validate(WEAK[rule](), pol)
    text = caplog.text
    assert f"relaxed for this gateway by remote.crypto-policy.relax: {rule}" in text
    assert f"(rule '{rule}' relaxed)" in text and "CN=gw.example.com" in text
    # Relaxing one rule relaxes no other.
    other = next(r for r in WEAK if r != rule and r != "sha1-signatures")
    with pytest.raises(CryptoPolicyRefused):
        _validate(WEAK[other](), pol)


def test_sha1_chain_stays_refused_by_path_validation_even_when_relaxed() -> None:
    # cryptography's path validation forbids SHA-1 outright; pinning the gateway's own
    # certificate (remote.cert) is the way for such a gateway.
    with pytest.raises(PeerNotTrusted, match="Forbidden signature algorithm"):
        _validate(WEAK["sha1-signatures"](), CryptoPolicy(["sha1-signatures"]))


def test_pinned_certificate_is_judged_by_its_key_only() -> None:
    pinned = _leaf(ca=True)
    der = pinned.public_bytes(Encoding.DER)
    assert certs.validate_chain(der, [], [pinned], NOW) == pinned
    weak = WEAK["min-rsa-bits"]()
    with pytest.raises(CryptoPolicyRefused, match="min-rsa-bits"):
        certs.validate_chain(weak.public_bytes(Encoding.DER), [], [weak], NOW)


def test_weak_intermediate_or_anchor_key_is_refused() -> None:
    weak_ca = _leaf(rsa.generate_private_key(public_exponent=65537, key_size=1024), ca=True)
    with pytest.raises(CryptoPolicyRefused, match="1024-bit RSA"):
        CryptoPolicy().check_verified_chain([_leaf(), weak_ca])


# --- the profile ------------------------------------------------------------------------
def _profile(ptype: str = "ikev2-eap", **extra):
    obj = {"uuid": "5b5b5b5b-1111-4222-8333-444444444444", "name": "n", "type": ptype,
           "remote": {"addr": "vpn.example.com"}, "local": {"eap_id": "alice"}}
    for key, value in extra.items():
        section, name = key.split(".", 1)
        obj[section][name] = value
    return profile_from_dict(obj, parse_certificates=False)


def test_profile_relax_key() -> None:
    p = _profile(**{"remote.crypto-policy": {"relax": ["min-rsa-bits", "sha1-signatures"]}})
    assert p.crypto_relax == ("min-rsa-bits", "sha1-signatures")
    assert p.to_dict()["remote"]["crypto-policy"] == {"relax": list(p.crypto_relax)}
    with pytest.raises(ProfileError, match=r"remote.crypto-policy.relax\[0\]: unknown rule"):
        _profile(**{"remote.crypto-policy": {"relax": ["rsa-1024"]}})
    with pytest.raises(ProfileError, match="remote.crypto-policy.relax"):
        _profile(**{"remote.crypto-policy": {"relax": ["leaf-ca"] * 50}})
    assert _profile().crypto_relax == ()


def test_eap_methods_by_type() -> None:
    assert allowed_methods("ikev2-eap") == (EapType.MSCHAPV2,)
    assert allowed_methods("ikev2-eap-tls") == (EapType.TLS,)
    assert EapType.MD5_CHALLENGE not in allowed_methods("ikev2-cert-eap")
    p = _profile(**{"local.eap-methods": ["md5"]})
    assert allowed_methods(p.type, p.eap_methods) == (EapType.MD5_CHALLENGE,)
    with pytest.raises(ProfileError, match=r"local.eap-methods\[0\]: 'tls' is not possible"):
        _profile(**{"local.eap-methods": ["tls"]})
    with pytest.raises(ProfileError, match=r"local.eap-methods\[1\]: unknown EAP method"):
        _profile(**{"local.eap-methods": ["mschapv2", "pap"]})


def test_eap_only_warning_with_mschapv2() -> None:
    warning = eap_only_warning(_profile(**{"remote.eap-only": True}))
    assert warning and "EAP-MSCHAPv2" in warning and "EAP-TLS" in warning
    assert "\n" not in warning
    assert eap_only_warning(_profile()) is None
    assert eap_only_warning(_profile(**{"remote.eap-only": True,
                                        "local.eap-methods": ["md5"]})) is None


# --- the EAP peer -----------------------------------------------------------------------
def _request(ident: int, eap_type: int, data: bytes) -> bytes:
    body = bytes((eap_type,)) + data
    return bytes((EapCode.REQUEST, ident)) + (4 + len(body)).to_bytes(2, "big") + body


def test_peer_naks_md5_once_then_refuses() -> None:
    peer = EapPeer("alice", "pw", methods=(EapType.MSCHAPV2,))
    reply = peer.handle(_request(1, EapType.MD5_CHALLENGE, b"\x10" + bytes(16)))
    assert reply is not None and reply[4:] == bytes((EapType.NAK, EapType.MSCHAPV2))
    with pytest.raises(PeerNotTrusted, match="insists on EAP-MD5"):
        peer.handle(_request(2, EapType.MD5_CHALLENGE, b"\x10" + bytes(16)))


def test_failure_after_nak_is_untrusted_not_bad_credentials() -> None:
    peer = EapPeer("alice", "pw", methods=(EapType.MSCHAPV2,))
    peer.handle(_request(1, EapType.MD5_CHALLENGE, b"\x10" + bytes(16)))
    with pytest.raises(PeerNotTrusted) as info:
        peer.handle(bytes((EapCode.FAILURE, 1, 0, 4)))
    assert exit_code_for(info.value) == EXIT_UNTRUSTED
