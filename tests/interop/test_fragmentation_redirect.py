"""IKE fragmentation (RFC 7383) over a 1280-byte path and redirects (RFC 5685) between two
strongSwan gateways, in the edge lab (tests/lab/edge_lab.py)."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab.checks import runtime_leftovers
from tests.lab.edge_lab import GW1_ADDRS, GW2_ADDR, GW2_POOL, PATH_MTU, EdgeLab
from tests.lab.netns import kill_all
from tests.lab.topology import lab_unavailable
from tests.lab.vpnclient import VpnClient

pytestmark = pytest.mark.interop

EXIT_UNREACHABLE = 5
QUICK_RETRANSMIT = "timeout=0.5,base=1.5,tries=2"  # gives up after about 2.4 s
SPLIT = re.compile(r"splitting IKE message \((\d+) bytes\) into (\d+) fragments")


@pytest.fixture(scope="module")
def edge_lab() -> Iterator[EdgeLab]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    with EdgeLab() as lab:
        yield lab


@pytest.fixture
def edge_client(edge_lab: EdgeLab, request: pytest.FixtureRequest
                ) -> Iterator[Callable[..., VpnClient]]:
    made: list[VpnClient] = []

    def factory(extra_env: dict[str, str] | None = None) -> VpnClient:
        workdir = Path(edge_lab.dir, "clients", f"{request.node.name}-{len(made)}")
        client = VpnClient(edge_lab.client_ns, workdir, extra_env)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.kill()
    kill_all(edge_lab.client_ns.name)
    for gw in (edge_lab.gw1, edge_lab.gw2):
        assert gw is not None
        gw.terminate_all()
    edge_lab.reset_client()


def wait_for(check: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def disconnect(lab: EdgeLab, client: VpnClient, conn: str) -> list[str]:
    problems = []
    proc, code = client.disconnect()
    if proc.returncode != 0 or code != 0:
        problems.append(f"disconnect exited {proc.returncode}, connect exited {code}")
    for gw in (lab.gw1, lab.gw2):
        if not wait_for(lambda gw=gw: not gw.sas_for(conn), 5.0):
            problems.append(f"{gw.name} still lists an SA:\n{gw.list_sas()}")
    return problems + lab.leftovers() + runtime_leftovers(client)


# --- fragmentation -------------------------------------------------------------------------

def test_large_gateway_chain_arrives_in_fragments(edge_lab, edge_client) -> None:
    """EAP: the gateway's IKE_AUTH response with three RSA-4096 certificates is ~5 kB."""
    lab = edge_lab
    offset = lab.gw1.log_size()
    drops = (lab.oversize_drops(lab.client_ns), lab.oversize_drops(lab.gw1_ns))
    client = edge_client()
    status = client.connect(lab.profile("frag-eap"), lab.secret("frag-eap"), timeout=30)
    assert status["gateway"] == f"{GW1_ADDRS['frag-eap']}:500"

    gw_log = lab.gw1.log_since(offset)
    splits = [(int(n), int(k)) for n, k in SPLIT.findall(gw_log)]
    assert splits and all(n > PATH_MTU and k >= 2 for n, k in splits), gw_log
    response = re.search(r"received IKE_AUTH response 1 \[ IDr CERT CERT CERT AUTH EAP/REQ/ID \]"
                         r" \((\d+) bytes in (\d+) fragments\)", client.log_text())
    assert response and int(response[2]) == splits[0][1], client.log_tail()
    # Nothing larger than the path allows was even attempted, by either side.
    assert (lab.oversize_drops(lab.client_ns), lab.oversize_drops(lab.gw1_ns)) == drops

    ping = lab.ping()
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"
    problems = disconnect(lab, client, "frag-eap")
    assert problems == [], "\n".join(problems) + client.log_tail()


def test_client_certificate_chain_leaves_in_fragments(edge_lab, edge_client) -> None:
    """ikev2-cert: our IKE_AUTH request carries three certificates and goes in pieces."""
    lab = edge_lab
    offset = lab.gw1.log_size()
    drops = lab.oversize_drops(lab.client_ns)
    client = edge_client()
    client.connect(lab.profile("frag-cert"), lab.secret("frag-cert"), timeout=30)

    sent = re.search(r"sending IKE_AUTH request 1 \[ IDi CERT CERT CERT .*\]"
                     r" \((\d+) bytes in (\d+) fragments\)", client.log_text())
    assert sent and int(sent[1]) > PATH_MTU, client.log_tail()
    count = int(sent[2])
    gw_log = lab.gw1.log_since(offset)
    reassembled = re.search(r"received fragment #\d+ of (\d+), reassembled fragmented IKE "
                            r"message \((\d+) bytes\)", gw_log)
    assert reassembled and int(reassembled[1]) == count, gw_log
    assert "authentication of 'carol@example.com' with RSA" in gw_log, gw_log
    assert lab.oversize_drops(lab.client_ns) == drops

    ping = lab.ping()
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"
    problems = disconnect(lab, client, "frag-cert")
    assert problems == [], "\n".join(problems) + client.log_tail()


def test_without_fragmentation_the_chain_does_not_get_through(edge_lab, edge_client) -> None:
    """The control: the same chain from a connection with fragmentation off is too big
    for the path, the datagram is dropped and the client gives up (exit code 5)."""
    lab = edge_lab
    offset = lab.gw1.log_size()
    drops = lab.oversize_drops(lab.gw1_ns)
    client = edge_client({"VPNCLIENT_RETRANSMIT": QUICK_RETRANSMIT})
    client.start_connect(lab.profile("frag-off"), lab.secret("frag-off"))
    assert client.wait_exit(30) == EXIT_UNREACHABLE, client.log_tail()
    response = re.search(r"generating IKE_SA_INIT response 0 \[([^\]]*)\]",
                         lab.gw1.log_since(offset))
    assert response and "FRAG_SUP" not in response[1], response
    assert lab.oversize_drops(lab.gw1_ns) > drops  # the unfragmented response was too big
    assert lab.leftovers() == []


# --- redirect -------------------------------------------------------------------------------

def tun_links(lab: EdgeLab) -> list[str]:
    out = lab.client_ns.run(["ip", "-o", "link", "show"]).stdout
    return [line.split(" ")[0] + line.split(" ")[1] for line in out.splitlines()
            if ": vpn" in line]


def test_gateway_redirects_the_established_session(edge_lab, edge_client) -> None:
    lab = edge_lab
    client = edge_client()
    client.connect(lab.profile("redirect"), lab.secret("redirect"), timeout=30)
    assert lab.ping().ok, client.log_tail()
    assert len(lab.gw1.sas_for("redirect")) == 1
    tun_before = tun_links(lab)
    gw2_offset = lab.gw2.log_size()

    result = lab.gw1.swanctl(["--redirect", "--ike", "redirect", "--gateway", GW2_ADDR])
    assert "redirect completed successfully" in result.stdout, result.stdout + result.stderr

    def moved() -> dict | None:
        status = client.status()
        ok = status and status["state"] == "connected" and \
            status["gateway"] == f"{GW2_ADDR}:500"
        return status if ok else None

    status = wait_for(moved, 20.0)
    assert status, f"{client.status()}\n{client.log_tail()}"
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network(GW2_POOL)
               for v in status["virtual_ips"]), status
    # The old gateway's SA was deleted by the client; the new one knows where it came from.
    assert wait_for(lambda: not lab.gw1.sas_for("redirect"), 5.0), lab.gw1.list_sas()
    (sa,) = lab.gw2.sas_for("redirect")
    assert sa["remote-host"] == "192.0.2.100", sa
    assert f"client got redirected from {GW1_ADDRS['redirect']}" in lab.gw2.log_since(gw2_offset)
    # Same TUN device (same index and name), and traffic resumes through GW2.
    assert tun_links(lab) == tun_before and tun_before
    ping = lab.ping()
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"
    (sa,) = lab.gw2.sas_for("redirect")
    child = next(iter(sa["child-sas"].values()))
    assert int(child["packets-in"]) >= ping.received, child

    problems = disconnect(lab, client, "redirect")
    assert problems == [], "\n".join(problems) + client.log_tail()


def test_under_the_kill_switch_a_redirect_elsewhere_is_refused(edge_lab, edge_client) -> None:
    """The kill switch lets the tunnel reach only the profile's gateways: a redirect to
    another is refused (GW2 never hears from us) and traffic stays blocked."""
    lab = edge_lab
    client = edge_client({"VPNCLIENT_RETRANSMIT": QUICK_RETRANSMIT})
    client.connect(lab.profile("redirect", **{"kill-switch": True, "reconnect": {"auto": False}}),
                   lab.secret("redirect"), timeout=30)
    assert lab.ping().ok, client.log_tail()
    gw2_offset = lab.gw2.log_size()
    result = lab.gw1.swanctl(["--redirect", "--ike", "redirect", "--gateway", GW2_ADDR])
    assert "redirect completed successfully" in result.stdout, result.stdout + result.stderr
    client.wait_exit(30)
    assert f"redirect to {GW2_ADDR} refused" in client.log_text(), client.log_tail()
    assert "IKE_SA_INIT" not in lab.gw2.log_since(gw2_offset)
    assert not lab.gw2.sas_for("redirect")
    assert "vpnclient" in lab.client_ns.run(["nft", "list", "tables"]).stdout
    lifted = client.run("disconnect")
    assert lifted.returncode == 0 and "kill switch lifted" in lifted.stdout, lifted.stderr
    assert lab.leftovers() == [], client.log_tail()
