"""The proposal matrix: what the profile asks for is what gets negotiated."""

from __future__ import annotations

import pytest

from tests.lab.checks import disconnect_cleanly

pytestmark = pytest.mark.interop

# (ike-proposal, esp-proposal, gateway's view of the IKE_SA, of the CHILD_SA)
MATRIX = [
    ("aes256gcm16-prfsha384-x25519", "aes256gcm16",
     {"encr-alg": "AES_GCM_16", "encr-keysize": "256", "prf-alg": "PRF_HMAC_SHA2_384",
      "dh-group": "CURVE_25519"},
     {"encr-alg": "AES_GCM_16", "encr-keysize": "256"}),
    ("aes128-sha256-modp2048", "aes128-sha256",
     {"encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA2_256_128",
      "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "MODP_2048"},
     {"encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA2_256_128"}),
    ("chacha20poly1305-prfsha256-ecp256", "chacha20poly1305",
     {"encr-alg": "CHACHA20_POLY1305", "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "ECP_256"},
     {"encr-alg": "CHACHA20_POLY1305"}),
    ("aes128gcm16-prfsha256-curve448", "aes128gcm16",
     {"encr-alg": "AES_GCM_16", "encr-keysize": "128", "prf-alg": "PRF_HMAC_SHA2_256",
      "dh-group": "CURVE_448"},
     {"encr-alg": "AES_GCM_16", "encr-keysize": "128"}),
]

# strongSwan keywords that name the same algorithm
ALIASES = {
    "curve25519": "x25519", "curve448": "x448", "aes128gcm128": "aes128gcm16",
    "aes256gcm128": "aes256gcm16", "sha2_256": "sha256", "sha2_384": "sha384",
    "prfsha2_256": "prfsha256", "prfsha2_384": "prfsha384",
}


def tokens(proposal: str) -> set[str]:
    return {ALIASES.get(t, t) for t in proposal.lower().split("-") if t}


def names(wanted: str, reported: object) -> bool:
    """True if every algorithm of `wanted` appears in the reported name (a PRF may be
    added, e.g. aes128-sha256-modp2048 reported as aes128-sha256-prfsha256-modp2048)."""
    return isinstance(reported, str) and tokens(wanted) <= tokens(reported)


def matches(sa: dict, expected: dict[str, str]) -> bool:
    return all(sa.get(k) == v for k, v in expected.items())


@pytest.mark.parametrize(("ike", "esp", "gw_ike", "gw_esp"), MATRIX,
                         ids=[m[0] for m in MATRIX])
def test_proposal(clean_lab, run_client, ike, esp, gw_ike, gw_esp) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    profile = lab.profile("eap-mschapv2", ike_proposal=ike, esp_proposal=esp)
    client = run_client(profile, lab.secret("eap-mschapv2"))

    status = client.status()
    assert status is not None, client.log_tail()
    assert names(ike, status.get("ike_proposal")), status
    assert names(esp, status.get("esp_proposal")), status

    (sa,) = lab.gateway.sas_for("eap-mschapv2")
    assert matches(sa, gw_ike), sa
    (child,) = sa["child-sas"].values()
    assert matches(child, gw_esp), child

    ping = lab.ping(count=3)
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"

    problems = disconnect_cleanly(lab, client, "eap-mschapv2", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
