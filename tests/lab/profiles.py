""".vpnprofile files for the lab scenarios (VPNPROFILE.md).

Secrets are never written: the client gets the EAP password, PSK or PKCS#12 passphrase
through `--password-stdin` (see `secret_for`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.lab.gateway import (
    EAP_PASSWORD,
    EAP_USER,
    PSK,
    PSK_CLIENT_ID,
    SCENARIOS,
    UNREACHABLE_ADDR,
)
from tests.lab.pki import GATEWAY_ID, TestPKI

# Scenario names a profile can be made for: the gateway's plus the client-cert flavours
# and the address where nothing answers.
PROFILE_SCENARIOS = (
    "eap-mschapv2", "eap-md5", "cert-rsa", "cert-ecdsa", "psk", "evil-ca", "wrong-id",
    "ipv6", "full", "dpd", "eap-only", "rekey", "rekey-load", "reauth", "reconnect",
    "unreachable",
)


def gateway_addr(scenario: str) -> str:
    if scenario == "unreachable":
        return UNREACHABLE_ADDR
    if scenario.startswith("cert-"):
        return SCENARIOS["cert"].addr
    return SCENARIOS[scenario].addr


def secret_for(scenario: str, pki: TestPKI) -> str:
    """What to pipe into `--password-stdin` for this scenario."""
    if scenario.startswith("cert-"):
        return pki.p12_passphrase
    if scenario == "psk":
        return PSK
    return EAP_PASSWORD


def make_profile(
    pki: TestPKI,
    scenario: str,
    *,
    ike_proposal: str | None = None,
    esp_proposal: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The profile dict; `extra` keys are merged in at top level (e.g. mtu=1400)."""
    if scenario not in PROFILE_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}")
    profile: dict[str, Any] = {
        "format": "vpnprofile/1",
        "uuid": str(uuid.uuid4()),
        "name": f"lab {scenario}",
        "remote": {"addr": gateway_addr(scenario), "id": GATEWAY_ID},
        "local": {},
    }
    if scenario == "psk":
        profile["type"] = "ikev2-psk"
        profile["local"]["id"] = PSK_CLIENT_ID
    elif scenario.startswith("cert-"):
        cred = pki.alice if scenario == "cert-rsa" else pki.bob
        profile["type"] = "ikev2-cert"
        profile["local"]["p12"] = cred.p12_b64
        profile["remote"]["cert"] = pki.ca.cert_b64
    else:
        profile["type"] = "ikev2-eap"
        profile["local"]["eap_id"] = EAP_USER
        profile["remote"]["cert"] = pki.ca.cert_b64
        if scenario == "eap-md5":  # EAP-MD5 is never allowed by default
            profile["local"]["eap-methods"] = ["md5"]
    if ike_proposal:
        profile["ike-proposal"] = ike_proposal
    if esp_proposal:
        profile["esp-proposal"] = esp_proposal
    profile.update(extra)
    return profile


def write_profile(path: Path, profile: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(profile, indent=2) + "\n")
    path.chmod(0o600)
    return path
