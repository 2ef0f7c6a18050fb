"""The gateway goes away and comes back: the client notices (the gateway's Delete, or
dead-peer detection when it falls silent), shows `reconnecting`, and comes back by
itself with the TUN device, routes and DNS left in place, so a running TCP transfer
survives. Without reconnecting it ends with exit code 5; a disconnect meanwhile is clean.
"""

from __future__ import annotations

import time

import pytest

from tests.lab.checks import disconnect_cleanly, runtime_leftovers, wait_no_client_processes
from tests.lab.gateway import LAN_HOST, SCENARIOS
from tests.lab.traffic import BackgroundPing, BackgroundTransfer, silenced_gateway

pytestmark = pytest.mark.interop

EXIT_OK, EXIT_UNREACHABLE = 0, 5
ADDR = SCENARIOS["reconnect"].addr
DPD = 3
# Short retransmissions: the liveness check gives up after 0.5+0.75+1.125+1.7 = 4.1 s.
FAST = {"VPNCLIENT_RETRANSMIT": "timeout=0.5,base=1.5,tries=3"}
BUDGET = 0.5 + 0.75 + 1.125 + 1.6875
SLACK = 5.0  # scheduling on a shared machine; the protocol bound is DPD + BUDGET


def wait_state(client, wanted: str, timeout: float) -> float:
    """Seconds until `status --json` shows `wanted` (fails with the log after timeout)."""
    start = time.monotonic()
    while (status := client.status()) is None or status.get("state") != wanted:
        assert time.monotonic() - start < timeout, \
            f"never {wanted!r} (last {status})\n{client.log_tail()}"
        assert client.proc.poll() is None, client.log_tail()
        time.sleep(0.1)
    return time.monotonic() - start


def test_gateway_restart_during_a_transfer(clean_lab, run_client) -> None:
    lab = clean_lab
    client = run_client(lab.profile("reconnect"), lab.secret("reconnect"))
    first = client.status()
    links = lab.new_links()
    ping = BackgroundPing(lab, count=400, interval=0.1)
    transfer = BackgroundTransfer(lab, 200_000_000)
    time.sleep(2.0)
    restart_at = time.time()
    lab.gateway.restart()  # SIGTERM: charon deletes its IKE SAs on the way out
    back_at = time.time()

    result = transfer.wait()
    stats = ping.wait()
    gap, gap_start = stats.longest_gap()
    print(f"\ngateway down {back_at - restart_at:.2f} s; ping: {stats.summary()}; "
          f"traffic resumed {gap_start + gap - back_at:+.2f} s after the gateway was back; "
          f"transfer {result}")
    # The TCP connection survived: every byte arrived, in order.
    assert "error" not in result and result["sent"] == result["received"], \
        f"{result}\n{client.log_tail()}"
    # Traffic resumed: replies after the restart, and the last ones all came back.
    assert any(t > back_at for _, t in stats.replies), stats.summary()
    assert all(seq in {s for s, _ in stats.replies} for seq in range(390, 401)), \
        stats.summary()
    assert "reconnected" in client.log_text(), client.log_tail()
    status = client.status()
    assert status["state"] == "connected" and status["virtual_ips"] == first["virtual_ips"]
    assert lab.new_links() == links  # the same TUN device all along
    assert len(lab.gateway.sas_for("reconnect")) == 1, lab.gateway.list_sas()

    problems = disconnect_cleanly(lab, client, "reconnect", lab.gateway.log_size())
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_silent_gateway_is_detected_and_comes_back(clean_lab, run_client) -> None:
    lab = clean_lab
    client = run_client(lab.profile("reconnect", dpd=DPD), lab.secret("reconnect"),
                        extra_env=FAST)
    links = lab.new_links()
    with silenced_gateway(lab, ADDR):
        detected = wait_state(client, "reconnecting", DPD + BUDGET + SLACK)
        print(f"\nsilent gateway detected after {detected:.1f} s (dpd {DPD} s + "
              f"{BUDGET:.1f} s of retransmissions)")
        assert "liveness" in client.log_text(), client.log_tail()
        time.sleep(8.0)  # reconnect attempts fail meanwhile
        assert client.status()["state"] == "reconnecting"
        assert lab.new_links() == links  # TUN, routes and DNS stay while reconnecting
    back = wait_state(client, "connected", 60)
    print(f"connected again {back:.1f} s after the gateway answered again")
    assert lab.ping(LAN_HOST, count=3).ok, client.log_tail()
    # INITIAL_CONTACT made the gateway drop the IKE SA we left behind.
    assert len(lab.gateway.sas_for("reconnect")) == 1, lab.gateway.list_sas()

    problems = disconnect_cleanly(lab, client, "reconnect", lab.gateway.log_size())
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_gateway_terminates_session_and_the_client_comes_back(clean_lab, run_client) -> None:
    lab = clean_lab
    client = run_client(lab.profile("reconnect"), lab.secret("reconnect"))
    (before,) = lab.gateway.sas_for("reconnect")
    result = lab.gateway.swanctl(["--terminate", "--ike", "reconnect", "--timeout", "5"],
                                 check=False)
    assert "terminate completed successfully" in result.stdout, result.stdout
    wait_state(client, "connected", 30)
    (after,) = lab.gateway.sas_for("reconnect")
    assert after["uniqueid"] != before["uniqueid"]
    assert lab.ping(LAN_HOST, count=2).ok, client.log_tail()
    assert "gateway closed" in client.log_text(), client.log_tail()

    problems = disconnect_cleanly(lab, client, "reconnect", lab.gateway.log_size())
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_disconnect_while_reconnecting(clean_lab, run_client) -> None:
    lab = clean_lab
    client = run_client(lab.profile("reconnect", dpd=DPD), lab.secret("reconnect"),
                        extra_env=FAST)
    with silenced_gateway(lab, ADDR):
        wait_state(client, "reconnecting", DPD + BUDGET + SLACK)
        proc, code = client.disconnect()
    assert proc.returncode == 0 and code == EXIT_OK, f"exit {code}\n{client.log_tail()}"
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


def test_without_reconnect_a_silent_gateway_ends_with_exit_5(clean_lab, run_client) -> None:
    lab = clean_lab
    profile = lab.profile("reconnect", dpd=DPD, reconnect={"auto": False})
    client = run_client(profile, lab.secret("reconnect"), extra_env=FAST)
    with silenced_gateway(lab, ADDR):
        code = client.wait_exit(DPD + BUDGET + SLACK + 5)
    assert code == EXIT_UNREACHABLE, f"exit {code}\n{client.log_tail()}"
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []
