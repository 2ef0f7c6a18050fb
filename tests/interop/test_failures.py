"""Failed connects: the right exit code, and the machine left as it was found."""

from __future__ import annotations

import time

import pytest

from tests.lab.checks import runtime_leftovers, wait_no_client_processes

pytestmark = pytest.mark.interop

EXIT_AUTH_FAILED = 3
EXIT_UNTRUSTED = 4
EXIT_UNREACHABLE = 5
# The profile cannot tune retransmission; this environment variable can (lead's client).
FAST_RETRANSMIT = {"VPNCLIENT_RETRANSMIT": "timeout=0.5,tries=3"}
# With it the client gives up after a few seconds.
UNREACHABLE_BUDGET = 15.0


def assert_failed_cleanly(lab, client, expected: int, timeout: float = 30.0) -> float:
    start = time.monotonic()
    code = client.wait_exit(timeout)
    elapsed = time.monotonic() - start
    assert code == expected, f"exit code {code}, expected {expected}\n{client.log_tail()}"
    assert wait_no_client_processes(lab) == [], "vpnclient processes left behind"
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []
    return elapsed


@pytest.mark.parametrize("scenario", ["eap-mschapv2", "eap-md5", "psk"])
def test_wrong_password(clean_lab, new_client, scenario: str) -> None:
    client = new_client()
    client.start_connect(clean_lab.profile(scenario), "not-the-password")
    assert_failed_cleanly(clean_lab, client, EXIT_AUTH_FAILED)


@pytest.mark.parametrize("scenario", ["evil-ca", "wrong-id"])
def test_untrusted_gateway(clean_lab, new_client, scenario: str) -> None:
    client = new_client()
    client.start_connect(clean_lab.profile(scenario), clean_lab.secret(scenario))
    assert_failed_cleanly(clean_lab, client, EXIT_UNTRUSTED)


def test_gateway_not_answering(clean_lab, new_client) -> None:
    client = new_client(FAST_RETRANSMIT)
    client.start_connect(clean_lab.profile("unreachable"), clean_lab.secret("unreachable"))
    elapsed = assert_failed_cleanly(clean_lab, client, EXIT_UNREACHABLE,
                                    timeout=UNREACHABLE_BUDGET)
    assert elapsed < UNREACHABLE_BUDGET


EXIT_USAGE = 2
# (what is wrong, key the message must name, the profile change)
BAD_PROFILES = {
    "unknown-type": ("type", {"type": "ikev2-telepathy"}),
    "mtu-out-of-range": ("mtu", {"mtu": 9000}),
    "no-remote-addr": ("remote.addr", {"remote": {"id": "vpn.example.com"}}),
}


@pytest.mark.parametrize("case", list(BAD_PROFILES))
def test_invalid_profile(clean_lab, new_client, case: str) -> None:
    key, change = BAD_PROFILES[case]
    lab = clean_lab
    path = lab.profile("eap-mschapv2", **change)
    client = new_client()
    proc = client.run("connect", str(path), "--password-stdin",
                      input=lab.secret("eap-mschapv2") + "\n")
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stdout, proc.stderr)
    assert f"{key}:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert wait_no_client_processes(clean_lab) == []
    assert clean_lab.leftovers() == []
    assert runtime_leftovers(client) == []
    assert not lab.gateway.sas_for("eap-mschapv2")  # it never got as far as the gateway


def test_disconnect_when_not_connected(clean_lab, new_client) -> None:
    client = new_client()
    status = client.status()
    assert status is not None and status["state"] == "disconnected", status
    proc = client.run("disconnect")
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "no message on stderr"
    assert "not connected" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert clean_lab.leftovers() == []
