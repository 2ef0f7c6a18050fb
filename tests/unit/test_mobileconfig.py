"""client/mobileconfig.py: Apple IKEv2 payloads -> .vpnprofile data, key by key."""

from __future__ import annotations

import base64
import datetime
import plistlib
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from client.credentials import Kind
from client.importers import read_import_file
from client.mobileconfig import convert
from client.profile import ProfileError

VPN_UUID = "0E6B4F0C-7C1B-4B8E-9A53-2B9C7F1D2E11"
CERT_UUID = "7D7B1D8A-3A53-4C55-8F7E-0B0B5B0C9A01"
# Long and with a character base64 never produces, so a random certificate cannot contain it.
SECRET = "pw-for-the-mobileconfig-test!"


def _cert(cn: str, ca: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def ca_der() -> bytes:
    return _cert("Corp Root CA", True)[1].public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def other_ca_der() -> bytes:
    return _cert("Another CA", True)[1].public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def p12() -> bytes:
    key, cert = _cert("alice@example.com", False)
    return pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, None, serialization.BestAvailableEncryption(b"p12-pass"))


def doc(ikev2: dict[str, Any], *extra_payloads: dict[str, Any], **vpn: Any) -> bytes:
    payload = {"PayloadType": "com.apple.vpn.managed", "PayloadVersion": 1,
               "PayloadIdentifier": "com.example.vpn", "PayloadUUID": VPN_UUID,
               "UserDefinedName": "Corp VPN", "VPNType": "IKEv2", "IKEv2": ikev2, **vpn}
    return plistlib.dumps({"PayloadType": "Configuration", "PayloadVersion": 1,
                           "PayloadUUID": "11111111-2222-3333-4444-555555555555",
                           "PayloadContent": [payload, *extra_payloads]})


def eap(**extra: Any) -> dict[str, Any]:
    return {"RemoteAddress": "vpn.example.com", "RemoteIdentifier": "vpn.example.com",
            "AuthenticationMethod": "None", "ExtendedAuthEnabled": 1,
            "AuthName": "alice", "AuthPassword": SECRET, **extra}


def root(der: bytes, uuid: str = "AAAAAAAA-0000-0000-0000-000000000001") -> dict[str, Any]:
    return {"PayloadType": "com.apple.security.root", "PayloadUUID": uuid,
            "PayloadContent": der}


def p12_payload(blob: bytes, password: str | None = "p12-pass") -> dict[str, Any]:
    out = {"PayloadType": "com.apple.security.pkcs12", "PayloadUUID": CERT_UUID,
           "PayloadContent": blob}
    if password is not None:
        out["Password"] = password
    return out


def one(data: bytes):
    [conv] = convert(data)
    return conv


def report(conv) -> dict[str, tuple[bool, str]]:
    return {line.key: (line.used, line.detail) for line in conv.report}


def test_eap_profile_keys(ca_der: bytes) -> None:
    conv = one(doc(eap(LocalIdentifier="alice@example.com", MTU=1400, NATKeepAliveInterval=30,
                       DeadPeerDetectionRate="High", DisableMOBIKE=1, IncludeAllNetworks=1,
                       OnDemandEnabled=1),
                   root(ca_der), DNS={"ServerAddresses": ["198.18.0.53"],
                                      "SupplementalMatchDomains": ["corp.example"]}))
    d = conv.data
    assert d["uuid"] == VPN_UUID.lower()
    assert d["name"] == "Corp VPN"
    assert d["type"] == "ikev2-eap"
    assert d["remote"] == {"addr": "vpn.example.com", "id": "vpn.example.com",
                           "cert": base64.b64encode(ca_der).decode()}
    assert d["local"] == {"id": "alice@example.com", "eap_id": "alice"}
    assert (d["mtu"], d["nat-keepalive"], d["dpd"], d["mobike"], d["kill-switch"]) == \
        (1400, 30, 60, False, True)
    assert d["dns-servers"] == ["198.18.0.53"] and d["dns-domains"] == ["corp.example"]
    assert conv.secrets == {Kind.PASSWORD: SECRET}
    assert SECRET not in repr(d)  # the password is not in the profile data
    r = report(conv)
    assert r["PayloadContent[0].IKEv2.AuthPassword"][0] is True
    assert "keyring" in r["PayloadContent[0].IKEv2.AuthPassword"][1]
    assert r["PayloadContent[0].IKEv2.OnDemandEnabled"] == (False, "not supported")
    assert r["PayloadContent[0].IKEv2.RemoteAddress"] == (True, "remote.addr")
    assert r["PayloadContent[1]"][0] is True  # the CA payload


def test_every_key_is_reported(ca_der: bytes, p12: bytes) -> None:
    ikev2 = eap(AuthenticationMethod="Certificate", PayloadCertificateUUID=CERT_UUID,
                CertificateType="ECDSA256", UseConfigurationAttributeInternalIPSubnet=0)
    del ikev2["AuthName"], ikev2["AuthPassword"]
    data = doc(ikev2, root(ca_der), p12_payload(p12),
               {"PayloadType": "com.apple.wifi.managed", "PayloadUUID": "X"},
               VPN={"OnDemandEnabled": 0})
    conv = one(data)
    keys = set(report(conv))
    expected = {f"PayloadContent[0].IKEv2.{k}" for k in ikev2} | {
        "PayloadContent[0].PayloadUUID", "PayloadContent[0].UserDefinedName",
        "PayloadContent[0].VPN", "PayloadContent[1]", "PayloadContent[2]",
        "PayloadContent[2].Password", "PayloadContent[3]"}
    assert expected <= keys, expected - keys
    assert conv.data["type"] == "ikev2-eap-tls"  # certificate + ExtendedAuthEnabled
    assert report(conv)["PayloadContent[3]"][0] is False


def test_certificate_profile(ca_der: bytes, other_ca_der: bytes, p12: bytes) -> None:
    ikev2 = {"RemoteAddress": "192.0.2.3", "AuthenticationMethod": "Certificate",
             "PayloadCertificateUUID": CERT_UUID.lower(),
             "ServerCertificateIssuerCommonName": "Corp Root CA"}
    conv = one(doc(ikev2, root(other_ca_der, "AAAAAAAA-0000-0000-0000-000000000002"),
                   root(ca_der), p12_payload(p12)))
    assert conv.data["type"] == "ikev2-cert"
    assert base64.b64decode(conv.data["local"]["p12"]) == p12  # kept as it came: encrypted
    assert conv.data["remote"]["cert"] == base64.b64encode(ca_der).decode()  # only that CA
    assert conv.secrets == {Kind.P12: "p12-pass"}
    assert report(conv)["PayloadContent[1]"][0] is False


@pytest.mark.parametrize(("params", "child", "pfs", "ike_text", "esp_text"), [
    ({"EncryptionAlgorithm": "AES-256-GCM", "IntegrityAlgorithm": "SHA2-384",
      "DiffieHellmanGroup": 20}, {"EncryptionAlgorithm": "AES-256-GCM"}, 0,
     "aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
    ({}, {"DiffieHellmanGroup": 31}, 1, "aes256-sha256-modp2048", "aes256-sha256-x25519"),
    ({"EncryptionAlgorithm": "ChaCha20Poly1305", "DiffieHellmanGroup": 31},
     {"EncryptionAlgorithm": "AES-128", "IntegrityAlgorithm": "SHA2-512"}, 0,
     "chacha20poly1305-prfsha256-x25519", "aes128-sha512"),
])
def test_proposals(params, child, pfs, ike_text, esp_text) -> None:
    conv = one(doc(eap(IKESecurityAssociationParameters={**params, "LifeTimeInMinutes": 60},
                       ChildSecurityAssociationParameters=child, EnablePFS=pfs)))
    assert conv.data["ike-proposal"] == ike_text
    assert conv.data["esp-proposal"] == esp_text
    assert conv.data["lifetimes"] == {"ike": 3600}


@pytest.mark.parametrize(("ikev2", "key", "reason"), [
    ({"RemoteAddress": None}, "PayloadContent[0].IKEv2.RemoteAddress", "missing"),
    ({"AuthenticationMethod": "Kerberos"}, "PayloadContent[0].IKEv2.AuthenticationMethod",
     "unknown method"),
    ({"ExtendedAuthEnabled": 0}, "PayloadContent[0].IKEv2.ExtendedAuthEnabled", "must be 1"),
    ({"MTU": "1400"}, "PayloadContent[0].IKEv2.MTU", "must be an integer"),
    ({"MTU": 9000}, "PayloadContent[0].IKEv2.MTU", "between 1280 and 1500"),
    ({"NATKeepAliveInterval": 5}, "PayloadContent[0].IKEv2.NATKeepAliveInterval", "between"),
    ({"RemoteAddress": "not a host!"}, "PayloadContent[0].IKEv2.RemoteAddress",
     "not a host name"),
    ({"IKESecurityAssociationParameters": {"EncryptionAlgorithm": "3DES"}},
     "PayloadContent[0].IKEv2.IKESecurityAssociationParameters.EncryptionAlgorithm",
     "unsupported algorithm '3DES'"),
    ({"ChildSecurityAssociationParameters": {"DiffieHellmanGroup": 2}},
     "PayloadContent[0].IKEv2.ChildSecurityAssociationParameters.DiffieHellmanGroup",
     "unsupported group 2"),
    ({"DeadPeerDetectionRate": "Often"}, "PayloadContent[0].IKEv2.DeadPeerDetectionRate",
     "must be one of"),
    ({"AuthenticationMethod": "Certificate"}, "PayloadContent[0].IKEv2.PayloadCertificateUUID",
     "missing"),
    ({"AuthenticationMethod": "Certificate", "PayloadCertificateUUID": CERT_UUID},
     "PayloadContent[0].IKEv2.PayloadCertificateUUID", "no payload with PayloadUUID"),
])
def test_errors_name_the_key(ikev2: dict[str, Any], key: str, reason: str) -> None:
    base = eap(**ikev2)
    if ikev2.get("RemoteAddress", "") is None:
        del base["RemoteAddress"]
    with pytest.raises(ProfileError) as exc:
        # read_import_file also validates the converted profile
        _import(doc(base))
    assert exc.value.key == key, str(exc.value)
    assert reason in exc.value.reason


def _import(data: bytes):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "x.mobileconfig")
        path.write_bytes(data)
        return read_import_file(path)


def test_wrong_pkcs12_passphrase_names_the_password_key(p12: bytes) -> None:
    ikev2 = {"RemoteAddress": "192.0.2.3", "AuthenticationMethod": "Certificate",
             "PayloadCertificateUUID": CERT_UUID}
    with pytest.raises(ProfileError) as exc:
        _import(doc(ikev2, p12_payload(p12, password="wrong")))
    assert exc.value.key == "PayloadContent[1].Password"
    assert "wrong passphrase" in exc.value.reason


def test_no_ikev2_payload() -> None:
    l2tp = {"PayloadType": "com.apple.vpn.managed", "VPNType": "L2TP", "PayloadUUID": VPN_UUID}
    data = plistlib.dumps({"PayloadType": "Configuration", "PayloadContent": [l2tp]})
    with pytest.raises(ProfileError) as exc:
        convert(data)
    assert exc.value.key == "PayloadContent"
    assert "no com.apple.vpn.managed payload with VPNType IKEv2" in exc.value.reason


@pytest.mark.parametrize("data", [b"<?xml version='1.0'?><plist><dict><key>x</key>",
                                  b"bplist00garbage", b"\x30\x82\x01\x00signed"])
def test_not_a_plist(data: bytes) -> None:
    with pytest.raises(ProfileError) as exc:
        convert(data, "f.mobileconfig")
    assert exc.value.key == "f.mobileconfig"


def test_binary_plist_and_bare_payload() -> None:
    payload = {"PayloadType": "com.apple.vpn.managed", "PayloadUUID": VPN_UUID,
               "VPNType": "IKEv2", "IKEv2": eap()}
    conv = one(plistlib.dumps(payload, fmt=plistlib.FMT_BINARY))
    assert conv.data["remote"]["addr"] == "vpn.example.com"
    assert conv.data["name"] == "vpn.example.com"  # no UserDefinedName: the gateway
