"""Apple `.mobileconfig` files for the lab gateway, the way Apple Configurator writes them:
a Configuration payload whose PayloadContent holds the IKEv2 VPN payload, the client's
PKCS#12 (com.apple.security.pkcs12) and the lab CA (com.apple.security.root).
"""

from __future__ import annotations

import plistlib
import uuid
from typing import Any

from tests.lab.gateway import EAP_PASSWORD, EAP_USER, PSK, PSK_CLIENT_ID
from tests.lab.pki import GATEWAY_ID, TestPKI
from tests.lab.profiles import gateway_addr


def _uuid() -> str:
    return str(uuid.uuid4()).upper()  # Apple Configurator writes upper case


def vpn_payload(name: str, ikev2: dict[str, Any], vpn_uuid: str | None = None,
                **extra: Any) -> dict[str, Any]:
    return {
        "PayloadType": "com.apple.vpn.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"com.example.vpn.{name.replace(' ', '-')}",
        "PayloadUUID": vpn_uuid or _uuid(),
        "PayloadDisplayName": "VPN",
        "UserDefinedName": name,
        "VPNType": "IKEv2",
        "IKEv2": ikev2,
        **extra,
    }


def ca_payload(pki: TestPKI) -> dict[str, Any]:
    return {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": "com.example.vpn.ca",
        "PayloadUUID": _uuid(),
        "PayloadDisplayName": "vpnclient Lab CA",
        "PayloadCertificateFileName": "ca.cer",
        "PayloadContent": pki.ca.cert_der,
    }


def pkcs12_payload(p12: bytes, password: str | None, payload_uuid: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "PayloadType": "com.apple.security.pkcs12",
        "PayloadVersion": 1,
        "PayloadIdentifier": "com.example.vpn.identity",
        "PayloadUUID": payload_uuid,
        "PayloadDisplayName": "client identity",
        "PayloadCertificateFileName": "client.p12",
        "PayloadContent": p12,
    }
    if password is not None:
        payload["Password"] = password
    return payload


def configuration(payloads: list[dict[str, Any]], name: str = "Lab VPN") -> bytes:
    return plistlib.dumps({
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": "com.example.vpn",
        "PayloadUUID": _uuid(),
        "PayloadDisplayName": name,
        "PayloadContent": payloads,
    })


def make_mobileconfig(pki: TestPKI, scenario: str, *, p12_password: str | None = None,
                      vpn_uuid: str | None = None, **ikev2_extra: Any) -> bytes:
    """An IKEv2 .mobileconfig for the lab: "eap-mschapv2" (AuthName/AuthPassword),
    "psk" (SharedSecret) or "cert-rsa"/"cert-ecdsa" (embedded PKCS#12 + its Password).
    The lab CA is always embedded; `ikev2_extra` keys are merged into the IKEv2 dict."""
    ikev2: dict[str, Any] = {
        "RemoteAddress": gateway_addr(scenario),
        "RemoteIdentifier": GATEWAY_ID,
        "ServerCertificateIssuerCommonName": "vpnclient Lab CA",
    }
    payloads = [ca_payload(pki)]
    if scenario == "psk":
        ikev2.update(AuthenticationMethod="SharedSecret", SharedSecret=PSK,
                     LocalIdentifier=PSK_CLIENT_ID, ExtendedAuthEnabled=0)
    elif scenario.startswith("cert-"):
        cred = pki.alice if scenario == "cert-rsa" else pki.bob
        cert_uuid = _uuid()
        payloads.append(pkcs12_payload(
            cred.p12_bytes, pki.p12_passphrase if p12_password is None else p12_password,
            cert_uuid))
        ikev2.update(AuthenticationMethod="Certificate", PayloadCertificateUUID=cert_uuid,
                     CertificateType="RSA" if scenario == "cert-rsa" else "ECDSA256",
                     ExtendedAuthEnabled=0)
    else:
        ikev2.update(AuthenticationMethod="None", ExtendedAuthEnabled=1,
                     AuthName=EAP_USER, AuthPassword=EAP_PASSWORD)
    ikev2.update(ikev2_extra)
    payloads.insert(0, vpn_payload(f"lab {scenario} (mobileconfig)", ikev2, vpn_uuid))
    return configuration(payloads)
