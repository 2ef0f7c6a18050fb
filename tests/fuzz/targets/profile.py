"""Profile files: .vpnprofile / .sswan JSON and .mobileconfig XML and binary plists.

An input is one format byte (0 JSON, 1 plist) and the document. Documents come from
mutated trees of realistic profiles (serialized afresh, sometimes byte-mutated after).
Parsing must succeed or raise ProfileError naming the key; a JSON profile that parses
must also survive its own to_json() being parsed again (what the profile store does).
"""

from __future__ import annotations

import base64
import plistlib
import random
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from client import importers, mobileconfig
from client.profile import ProfileError, parse_profile
from tests.fuzz.engine import Target
from tests.fuzz.ike_session import _cert
from tests.fuzz.mutate import mutate_bytes
from tests.fuzz.tree import MAX_DOC, deep_json, dumps_json, dumps_plist, mutate_tree

_CA, _CA_KEY = _cert("Fuzz Root CA", None, 1, ca=True)
_LEAF, _LEAF_KEY = _cert("alice.example.com", (_CA, _CA_KEY), 3)
CA_DER = _CA.public_bytes(serialization.Encoding.DER)
P12 = pkcs12.serialize_key_and_certificates(b"alice", _LEAF_KEY, _LEAF, [_CA],
                                            serialization.BestAvailableEncryption(b"pw"))

JSON_SEEDS: list[dict[str, Any]] = [
    {"uuid": "48b015a7-c093-40f4-babf-508d496e80f0", "name": "sswan", "type": "ikev2-eap",
     "remote": {"addr": "vpn.example.com"}, "local": {"eap_id": "alice"}},
    {"format": "vpnprofile/1", "uuid": "3c9e2a71-5b4d-4f6e-8a1c-7d2b9e0f4a53",
     "name": "Full", "type": "ikev2-cert-eap",
     "remote": {"addr": "192.0.2.14", "addrs": ["192.0.2.14", "vpn2.example.com"],
                "id": "vpn.example.com", "port": 4500, "certreq": True,
                "cert": base64.b64encode(CA_DER).decode(), "eap-only": False,
                "revocation": {"crl": True, "ocsp": False, "strict": False}},
     "local": {"eap_id": "alice", "id": "alice@example.com", "rsa-pss": False,
               "p12": base64.b64encode(P12).decode(), "shared_secret": "pw"},
     "ike-proposal": "aes256gcm16-prfsha384-ecp384,aes128-sha256-modp2048",
     "esp-proposal": "aes256gcm16,aes128-sha256", "dns-servers": ["198.18.0.1", "2001:db8::1"],
     "dns-domains": ["corp.example.com"], "mtu": 1400, "nat-keepalive": 20,
     "ipv6-transport": False, "mobike": True, "dpd": 30, "kill-switch": False,
     "reconnect": {"auto": True, "max-backoff": 300}, "lifetimes": {"ike": 10800, "child": 3600},
     "split-tunneling": {"subnets": ["198.18.0.0/15", "2001:db8::/32"],
                         "excluded": ["198.18.5.0/24"], "block-ipv4": False, "block-ipv6": True},
     "proxy": {"host": "p"}, "apps": ["a"], "excluded-apps": ["b"]},
    {"format": "vpnprofile/1", "uuid": "6a3b2c1d-0e9f-4a8b-9c7d-1e2f3a4b5c6d", "name": "PSK",
     "type": "ikev2-psk", "remote": {"addr": "2001:db8::4", "id": "@vpn"},
     "local": {"id": "@alice", "shared_secret": "correct horse battery staple"}},
]

_VPN = {"PayloadType": "com.apple.vpn.managed", "PayloadVersion": 1,
        "PayloadIdentifier": "com.example.vpn",
        "PayloadUUID": "0E6B4F0C-7C1B-4B8E-9A53-2B9C7F1D2E11",
        "UserDefinedName": "Corp VPN", "VPNType": "IKEv2"}
_IKEV2 = {"RemoteAddress": "vpn.example.com", "RemoteIdentifier": "vpn.example.com",
          "LocalIdentifier": "alice@example.com", "AuthenticationMethod": "None",
          "ExtendedAuthEnabled": 1, "AuthName": "alice", "AuthPassword": "secret",
          "IKESecurityAssociationParameters": {"EncryptionAlgorithm": "AES-256-GCM",
                                               "IntegrityAlgorithm": "SHA2-384",
                                               "DiffieHellmanGroup": 20,
                                               "LifeTimeInMinutes": 1440},
          "ChildSecurityAssociationParameters": {"EncryptionAlgorithm": "AES-256",
                                                 "IntegrityAlgorithm": "SHA2-256",
                                                 "DiffieHellmanGroup": 19,
                                                 "LifeTimeInMinutes": 60},
          "DeadPeerDetectionRate": "Medium", "DisableMOBIKE": 0, "NATKeepAliveInterval": 20,
          "MTU": 1400, "IncludeAllNetworks": 1,
          "ServerCertificateIssuerCommonName": "Fuzz Root CA"}
_ROOT = {"PayloadType": "com.apple.security.root",
         "PayloadUUID": "AAAAAAAA-0000-0000-0000-000000000001",
         "PayloadContent": CA_DER}
_P12 = {"PayloadType": "com.apple.security.pkcs12",
        "PayloadUUID": "7D7B1D8A-3A53-4C55-8F7E-0B0B5B0C9A01",
        "PayloadContent": P12, "Password": "pw"}


def _doc(ikev2: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    return {"PayloadType": "Configuration", "PayloadVersion": 1,
            "PayloadUUID": "11111111-2222-3333-4444-555555555555",
            "PayloadContent": [{**_VPN, "IKEv2": ikev2}, *extra]}


PLIST_SEEDS: list[dict[str, Any]] = [
    _doc(_IKEV2, _ROOT),
    _doc({**_IKEV2, "AuthenticationMethod": "Certificate", "ExtendedAuthEnabled": 0,
          "PayloadCertificateUUID": _P12["PayloadUUID"]}, _P12, _ROOT),
    _doc({**_IKEV2, "AuthenticationMethod": "SharedSecret", "ExtendedAuthEnabled": 0,
          "SharedSecret": "psk-psk-psk"}),
    {**_VPN, "IKEv2": _IKEV2},  # a bare VPN payload
]


class ProfileTarget(Target):
    name = "profile"
    expected = (ProfileError,)

    def generate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.5:
            tree = mutate_tree(rng, rng.choice(JSON_SEEDS))
            try:
                doc = dumps_json(tree, indent=rng.choice((None, 1)))
            except (ValueError, RecursionError):
                doc = b"{}"
            fmt = 0
        else:
            tree = mutate_tree(rng, rng.choice(PLIST_SEEDS), plist=True)
            binary = rng.random() < 0.4
            try:
                doc = dumps_plist(tree, plistlib.FMT_BINARY if binary else plistlib.FMT_XML)
            except (TypeError, ValueError, OverflowError, RecursionError):
                doc = plistlib.dumps(rng.choice(PLIST_SEEDS))
            fmt = 1
        if rng.random() < 0.15:
            doc = mutate_bytes(rng, doc)
        if len(doc) > MAX_DOC:
            doc = doc[:MAX_DOC]
        if fmt == 0 and rng.random() < 0.02:
            doc = b'{"uuid": ' + deep_json(rng) + b"}"
        return bytes([fmt]) + doc

    def run(self, data: bytes) -> None:
        if not data:
            return
        doc = data[1:]
        if data[0] & 1 == 0:
            profile = parse_profile(doc)
            again = parse_profile(profile.to_json())
            assert again.to_dict() == profile.to_dict(), "a stored profile reads back different"
            importers._from_json(profile)
            return
        for conv in mobileconfig.convert(doc):
            importers._from_mobileconfig(conv)


TARGET_CLASS = ProfileTarget
