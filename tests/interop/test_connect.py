"""Connect with every authentication method, use the tunnel, disconnect cleanly."""

from __future__ import annotations

import pytest

from tests.lab.checks import check_status, disconnect_cleanly
from tests.lab.profiles import gateway_addr

pytestmark = pytest.mark.interop

TRANSFER_BYTES = 20_000_000

# profile scenario -> gateway connection name
METHODS = {
    "eap-mschapv2": "eap-mschapv2",
    "eap-md5": "eap-md5",
    "cert-rsa": "cert",
    "cert-ecdsa": "cert",
    "psk": "psk",
}


@pytest.mark.parametrize("scenario", list(METHODS))
def test_connect_use_disconnect(clean_lab, run_client, scenario: str) -> None:
    lab = clean_lab
    conn = METHODS[scenario]
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile(scenario), lab.secret(scenario))

    status = client.status()
    assert status is not None, client.log_tail()
    assert check_status(status, gateway_addr(scenario)) == [], status
    assert len(lab.gateway.sas_for(conn)) == 1, lab.gateway.list_sas()

    ping = lab.ping(count=3)
    assert ping.ok, f"no ping reply through the tunnel:\n{ping.output}\n{client.log_tail()}"

    result = lab.transfer(TRANSFER_BYTES)
    assert "error" not in result, f"{result}\n{client.log_tail()}"
    assert result["sent"] == result["received"], result

    problems = disconnect_cleanly(lab, client, conn, log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
