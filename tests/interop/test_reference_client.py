"""strongSwan itself as the client against the lab gateway.

This proves the lab (gateway configuration, PKI, topology, checks) independently of the
client under test: when these pass and a vpnclient test fails, the client is at fault.
"""

from __future__ import annotations

import pytest

from tests.interop.test_proposal_matrix import MATRIX, matches
from tests.lab.checks import wait_gateway_delete
from tests.lab.strongswan_client import StrongSwanClient

pytestmark = pytest.mark.interop


@pytest.fixture
def sswan(clean_lab):
    made: list[StrongSwanClient] = []

    def make(scenario: str = "eap-mschapv2", **kwargs) -> StrongSwanClient:
        base = clean_lab.dir / "sswan" / f"{scenario}-{len(made)}"
        client = StrongSwanClient(clean_lab.client_ns, base, clean_lab.pki, scenario, **kwargs)
        made.append(client)
        client.start()
        return client

    yield make
    for client in made:
        client.stop()


GATEWAY_CONN = {"eap-mschapv2": "eap-mschapv2", "eap-md5": "eap-md5", "cert-rsa": "cert",
                "cert-ecdsa": "cert", "psk": "psk"}


@pytest.mark.parametrize("scenario", list(GATEWAY_CONN))
def test_reference_connect(clean_lab, sswan, scenario: str) -> None:
    lab = clean_lab
    offset = lab.gateway.log_size()
    client = sswan(scenario)
    result = client.initiate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab.ping(count=2).ok
    assert lab.transfer(2_000_000).get("received")
    (sa,) = lab.gateway.sas_for(GATEWAY_CONN[scenario])
    assert sa["remote-vips"][0].startswith("198.19.0.")
    assert client.terminate().returncode == 0
    assert wait_gateway_delete(lab, GATEWAY_CONN[scenario], offset) is None
    client.stop()
    assert lab.leftovers() == []


@pytest.mark.parametrize(("ike", "esp", "gw_ike", "gw_esp"), MATRIX, ids=[m[0] for m in MATRIX])
def test_reference_proposals(clean_lab, sswan, ike, esp, gw_ike, gw_esp) -> None:
    client = sswan(ike_proposals=ike, esp_proposals=esp)
    result = client.initiate()
    assert result.returncode == 0, result.stdout + result.stderr
    (sa,) = clean_lab.gateway.sas_for("eap-mschapv2")
    assert matches(sa, gw_ike), sa
    (child,) = sa["child-sas"].values()
    assert matches(child, gw_esp), child
    assert clean_lab.ping(count=2).ok


@pytest.mark.parametrize(("scenario", "password", "log_line"), [
    ("eap-mschapv2", "wrong", "EAP_MSCHAPV2 method failed"),
    ("psk", "wrong", "AUTHENTICATION_FAILED"),
    ("evil-ca", None, "no trusted ECDSA public key found"),
    ("wrong-id", None, "no trusted ECDSA public key found for 'vpn.example.com'"),
])
def test_reference_failures(clean_lab, sswan, scenario, password, log_line) -> None:
    client = sswan(scenario, password=password)
    result = client.initiate(timeout=8)
    assert result.returncode != 0
    assert log_line in result.stdout, result.stdout
    assert not clean_lab.ping(count=1, wait=0.5).ok
