"""Signals and crashes: `vpnclient connect` ends cleanly on SIGTERM/SIGINT, and the state
a SIGKILLed client leaves behind is cleaned up by the next one in the same runtime dir."""

from __future__ import annotations

import signal
import time

import pytest

from tests.lab.checks import (
    disconnect_cleanly,
    runtime_leftovers,
    wait_gateway_delete,
    wait_no_client_processes,
)
from tests.lab.gateway import LAN_HOST
from tests.lab.topology import CLIENT_ADDR

pytestmark = pytest.mark.interop

EXIT_OK, EXIT_FAILURE = 0, 1
PROMPT_EXIT = 3.0  # seconds from SIGTERM to exit while still connecting
# Seconds from SIGTERM to exit when the gateway no longer answers: a short, bounded wait
# for the Delete's answer (the client allows ~3.5 s), not the IKE retransmission schedule.
UNANSWERED_DELETE_EXIT = 6.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_disconnects(clean_lab, run_client, sig: signal.Signals) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    assert lab.ping(LAN_HOST, count=1).ok, client.log_tail()

    client.send_signal(sig)
    code = client.wait_exit(15)
    assert code == EXIT_OK, f"exit code {code} after {sig.name}\n{client.log_tail()}"
    gw = wait_gateway_delete(lab, "eap-mschapv2", log_offset)
    assert gw is None, f"{gw}\n{client.log_tail()}"
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


def test_sigterm_while_connecting(clean_lab, new_client) -> None:
    lab = clean_lab
    client = new_client()  # default retransmission: it would keep trying for a long time
    client.start_connect(lab.profile("unreachable"), lab.secret("unreachable"))
    deadline = time.monotonic() + 10
    while (status := client.status()) is None or status.get("state") != "connecting":
        assert time.monotonic() < deadline, f"never 'connecting': {status}\n{client.log_tail()}"
        assert client.proc.poll() is None, client.log_tail()
        time.sleep(0.1)
    time.sleep(1.0)  # well into retransmitting IKE_SA_INIT

    start = time.monotonic()
    client.send_signal(signal.SIGTERM)
    code = client.wait_exit(10)
    elapsed = time.monotonic() - start
    assert elapsed < PROMPT_EXIT, f"took {elapsed:.1f} s to exit\n{client.log_tail()}"
    # Never connected, so not 0 (CLI.md: 0 is connected and later disconnected).
    assert code == EXIT_FAILURE, f"exit code {code}\n{client.log_tail()}"
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


def test_sigkill_then_next_start_cleans_up(clean_lab, new_client) -> None:
    lab = clean_lab
    crashed = new_client()
    crashed.connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    while_connected = lab.leftovers()

    crashed.send_signal(signal.SIGKILL)
    assert crashed.wait_exit(5) == -signal.SIGKILL
    assert wait_no_client_processes(lab) == []
    # The test is real: a crash leaves policy rules and the rewritten resolv.conf behind
    # (the TUN device and its routes die with the process that held it open).
    stale = lab.leftovers()
    assert any(x.startswith("ip rule added:") for x in stale), stale
    assert any(x.startswith("resolv.conf changed") for x in stale), stale
    # The gateway never heard of the crash; forget that SA so that the check below sees
    # only the new client's Delete.
    lab.gateway.terminate_all()
    assert lab.wait_no_sas("eap-mschapv2")

    log_offset = lab.gateway.log_size()
    client = new_client({"VPNCLIENT_RUNTIME_DIR": str(crashed.runtime_dir)})
    client.connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    now = lab.leftovers()
    # Only the new connection's own state: one TUN device, the same rules as one
    # connection has (a stale rule would show up twice), the same resolv.conf.
    assert len(lab.new_links()) == 1, now
    rules = sorted(x for x in now if x.startswith("ip rule"))
    assert rules == sorted(x for x in while_connected if x.startswith("ip rule")), now
    assert [x for x in now if "resolv.conf" in x] == [
        x for x in while_connected if "resolv.conf" in x], now
    assert lab.ping(LAN_HOST, count=1).ok, client.log_tail()

    problems = disconnect_cleanly(lab, client, "eap-mschapv2", log_offset)
    problems += runtime_leftovers(crashed)  # the runtime dir both of them used
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_sigterm_when_gateway_gone(clean_lab, run_client) -> None:
    """Ctrl-C must work when the network is gone: the unanswered Delete does not hold the
    client for long, and it still puts the machine back."""
    lab = clean_lab
    client = run_client(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    drop = ["-s", CLIENT_ADDR, "-j", "DROP"]
    lab.gw_ns.run(["iptables", "-w", "-I", "INPUT", *drop])
    try:
        start = time.monotonic()
        client.send_signal(signal.SIGTERM)
        code = client.wait_exit(15)
        elapsed = time.monotonic() - start
    finally:
        lab.gw_ns.run(["iptables", "-w", "-D", "INPUT", *drop], check=False)
    assert elapsed < UNANSWERED_DELETE_EXIT, f"took {elapsed:.1f} s\n{client.log_tail()}"
    assert code == EXIT_OK, f"exit code {code}\n{client.log_tail()}"
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


def test_second_connect_refused(clean_lab, run_client, new_client) -> None:
    """A second `connect` in the same runtime dir is refused and disturbs nothing."""
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    first = run_client(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    connected = lab.leftovers()

    second = new_client({"VPNCLIENT_RUNTIME_DIR": str(first.runtime_dir)})
    second.start_connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"), verbose=0,
                         separate_stderr=True)
    code = second.wait_exit(15)
    assert code == EXIT_FAILURE, f"exit code {code}\n{second.log_tail()}"
    assert "already" in second.stderr_text(), second.log_tail()
    assert len(lab.gateway.sas_for("eap-mschapv2")) == 1, lab.gateway.list_sas()
    assert lab.leftovers() == connected
    assert first.status()["state"] == "connected"
    assert lab.ping(LAN_HOST, count=1).ok, first.log_tail()

    problems = disconnect_cleanly(lab, first, "eap-mschapv2", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + first.log_tail()
