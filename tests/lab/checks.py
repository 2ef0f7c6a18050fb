"""Assertions shared by the interop tests, the demo and the perf script."""

from __future__ import annotations

import ipaddress
import time

from tests.lab.gateway import POOL4, POOL6
from tests.lab.topology import Lab
from tests.lab.vpnclient import VpnClient

GATEWAY_DELETE = "received DELETE for IKE_SA"


def check_status(status: dict, gateway_addr: str) -> list[str]:
    """Problems with a `status --json` object of a connected client (empty: fine)."""
    problems = []
    if status.get("state") != "connected":
        problems.append(f"state is {status.get('state')!r}")
    vips = status.get("virtual_ips")
    if not isinstance(vips, list) or not vips:
        problems.append(f"virtual_ips is {vips!r}")
    else:
        pools = [ipaddress.ip_network(POOL4), ipaddress.ip_network(POOL6)]
        for vip in vips:
            try:
                addr = ipaddress.ip_address(str(vip).split("/")[0])
                inside = any(addr in pool for pool in pools)
            except ValueError:
                inside = False
            if not inside:
                problems.append(f"virtual IP {vip!r} not in {POOL4} or {POOL6}")
    for key in ("ike_proposal", "esp_proposal"):
        if not isinstance(status.get(key), str) or not status[key]:
            problems.append(f"{key} is {status.get(key)!r}")
    if gateway_addr not in str(status.get("gateway", "")):
        problems.append(f"gateway is {status.get('gateway')!r}, expected {gateway_addr}")
    return problems


def wait_gateway_delete(lab: Lab, conn: str, log_offset: int, timeout: float = 5.0) -> str | None:
    """None once the gateway logged the client's Delete and lists no SA for `conn`."""
    assert lab.gateway is not None
    deadline = time.monotonic() + timeout
    while True:
        saw_delete = GATEWAY_DELETE in lab.gateway.log_since(log_offset)
        sas = lab.gateway.sas_for(conn)
        if saw_delete and not sas:
            return None
        if time.monotonic() > deadline:
            return (f"gateway: Delete logged={saw_delete}, SAs still listed={len(sas)}\n"
                    f"{lab.gateway.list_sas()}")
        time.sleep(0.1)


def wait_no_client_processes(lab: Lab, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := lab.client_ns.pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def disconnect_cleanly(lab: Lab, client: VpnClient, conn: str, log_offset: int) -> list[str]:
    """Disconnect and list everything that went wrong (empty: a clean disconnect)."""
    problems = []
    proc, code = client.disconnect()
    if proc.returncode != 0:
        problems.append(f"vpnclient disconnect exited {proc.returncode}: {proc.stderr.strip()}")
    if code != 0:
        problems.append(f"vpnclient connect exited {code} after disconnect")
    gw = wait_gateway_delete(lab, conn, log_offset)
    if gw:
        problems.append(gw)
    pids = wait_no_client_processes(lab)
    if pids:
        problems.append(f"processes left in the client namespace: {pids}")
    problems += lab.leftovers()
    problems += runtime_leftovers(client)
    return problems


def runtime_leftovers(client: VpnClient) -> list[str]:
    """Files a client that ended cleanly still has in its runtime dir (control socket,
    crash journal, DNS backup): each would mean an unfinished teardown."""
    if not client.runtime_dir.exists():
        return []
    return [f"left in the runtime dir: {p.name}" for p in sorted(client.runtime_dir.iterdir())]
