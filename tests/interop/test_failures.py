"""Failed connects: the right exit code, and the machine left as it was found."""

from __future__ import annotations

import time

import pytest

from tests.lab.checks import wait_no_client_processes

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
