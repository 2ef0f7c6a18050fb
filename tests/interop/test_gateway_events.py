"""What the gateway does to a connected client: liveness checks, ending the session."""

from __future__ import annotations

import time

import pytest

from tests.lab.checks import disconnect_cleanly, runtime_leftovers, wait_no_client_processes
from tests.lab.gateway import LAN_HOST

pytestmark = pytest.mark.interop

EXIT_FAILURE = 1
DPD_WATCH = 4.0  # seconds; the "dpd" connection checks liveness every second


def test_gateway_dpd_answered(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("dpd"), lab.secret("dpd"))
    (sa,) = lab.gateway.sas_for("dpd")

    dpd_offset = lab.gateway.log_size()
    time.sleep(DPD_WATCH)
    log = lab.gateway.log_since(dpd_offset)
    sent = log.count("generating INFORMATIONAL request")
    answered = log.count("parsed INFORMATIONAL response")
    assert answered >= 2, f"{sent} DPD requests, {answered} answers\n{log}"
    # Every request answered at once: no retransmission, nothing left waiting.
    assert "retransmit" not in log, log
    assert sent - answered <= 1, log
    # The client's side of the same exchanges.
    assert client.log_text().count("received INFORMATIONAL request") >= answered, \
        client.log_tail()

    (sa_after,) = lab.gateway.sas_for("dpd")
    assert sa_after["uniqueid"] == sa["uniqueid"], lab.gateway.list_sas()
    assert sa_after["state"] == "ESTABLISHED", sa_after
    assert client.status()["state"] == "connected"
    ping = lab.ping(LAN_HOST, count=2)
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"

    problems = disconnect_cleanly(lab, client, "dpd", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def terminate_from_gateway(lab, client) -> int:
    """Connect `client` (no -v, stderr apart), end its IKE SA on the gateway; its exit code.

    Reconnecting is off: with it on, the client would come back (test_reconnect.py).
    """
    # No -v: what the user sees is the client's own message, not the protocol log.
    profile = lab.profile("eap-mschapv2", reconnect={"auto": False})
    client.start_connect(profile, lab.secret("eap-mschapv2"), verbose=0,
                         separate_stderr=True)
    client.wait_connected()
    assert lab.ping(LAN_HOST, count=1).ok, client.log_tail()
    result = lab.gateway.swanctl(["--terminate", "--ike", "eap-mschapv2", "--timeout", "5"],
                                 check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # swanctl waits for the client to answer the Delete.
    assert "terminate completed successfully" in result.stdout, result.stdout
    return client.wait_exit(10)


def test_gateway_terminates_session(clean_lab, new_client) -> None:
    lab = clean_lab
    client = new_client()
    code = terminate_from_gateway(lab, client)
    # The client ended by itself, as a failure (CLI.md: 1), saying why.
    assert code == EXIT_FAILURE, f"exit code {code}\n{client.log_tail()}"
    output = client.log_text() + client.stderr_text()
    assert "gateway closed" in output or "gateway deleted" in output, client.log_tail()
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []
    assert client.status()["state"] == "disconnected"
    assert not lab.gateway.sas_for("eap-mschapv2"), lab.gateway.list_sas()


def test_gateway_terminates_session_reason_on_stderr(clean_lab, new_client) -> None:
    client = new_client()
    assert terminate_from_gateway(clean_lab, client) == EXIT_FAILURE, client.log_tail()
    assert "gateway" in client.stderr_text().lower(), client.log_tail()
