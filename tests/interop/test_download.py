"""Downloads through the tunnel (gateway -> client), IPv4 and IPv6 inside: every byte
arrives intact while the client writes the TCP segments coalesced into its TUN device."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from tests.lab.gateway import LAN6_HOST, LAN_HOST
from tests.lab.topology import Lab

pytestmark = pytest.mark.interop

DOWNLOAD_BYTES = 20_000_000
PORT = 5002

# Runs in the client's namespace: on its virtual IP, take one connection, read an 8-byte
# length and that many bytes, answer their SHA-256 (as tests.lab.services' IPv4-only sink).
SINK = """
import hashlib, socket, struct, sys
vip, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET)
srv.bind((vip, port))
srv.listen()
print("listening", flush=True)
conn, _ = srv.accept()
f = conn.makefile("rb")
(n,) = struct.unpack(">Q", f.read(8))
digest = hashlib.sha256()
while n:
    data = f.read(min(1 << 16, n))
    if not data:
        sys.exit("connection closed early")
    digest.update(data)
    n -= len(data)
conn.sendall(digest.hexdigest().encode() + b"\\n")
"""

# Runs on the gateway's LAN host: connect to the client's virtual IP from the LAN address
# (inside the tunnel's traffic selector), send random bytes to the sink there and print
# both SHA-256 digests.
SENDER = """
import hashlib, json, os, socket, struct, sys
vip, port, src, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
digest = hashlib.sha256()
with socket.create_connection((vip, port), timeout=60, source_address=(src, 0)) as s:
    s.sendall(struct.pack(">Q", n))
    while n:
        chunk = os.urandom(min(1 << 16, n))
        digest.update(chunk)
        s.sendall(chunk)
        n -= len(chunk)
    answer = s.makefile().readline().strip()
print(json.dumps({"sent": digest.hexdigest(), "received": answer}))
"""


def link(lab: Lab, dev: str) -> dict:
    (info,) = json.loads(lab.client_ns.run(["ip", "-s", "-j", "link", "show", dev]).stdout)
    return info


def rx_packets(lab: Lab, dev: str) -> int:
    """Packets the kernel took in on `dev`: one per write to the TUN device."""
    return link(lab, dev)["stats64"]["rx"]["packets"]


@pytest.mark.parametrize("scenario,family", [("psk", 4), ("ipv6", 6)])
def test_download_intact(clean_lab, run_client, scenario: str, family: int) -> None:
    """Through coalesced TUN writes."""
    lab = clean_lab
    client = run_client(lab.profile(scenario), lab.secret(scenario))
    status = client.status()
    assert status is not None, client.log_tail()
    vip = next(str(ip) for ip in (ipaddress.ip_interface(v).ip for v in status["virtual_ips"])
               if ip.version == family)
    (tun,) = lab.new_links()

    sink = lab.client_ns.popen([sys.executable, "-c", SINK, vip, str(PORT)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and "listening" in sink.stdout.readline()
        before = rx_packets(lab, tun)
        proc = lab.gw_ns.run([sys.executable, "-c", SENDER, vip, str(PORT),
                              LAN_HOST if family == 4 else LAN6_HOST, str(DOWNLOAD_BYTES)],
                             timeout=120, check=False)
        assert proc.returncode == 0, f"{proc.stderr}\n{client.log_tail()}"
        result = json.loads(proc.stdout)
        assert result["sent"] == result["received"], f"{result}\n{client.log_tail()}"
        writes = rx_packets(lab, tun) - before
    finally:
        sink.kill()
        sink.wait()

    # Written one by one, the download would take one TUN write per segment (the MSS is at
    # most the tunnel MTU less 40 bytes); far fewer writes prove the coalescing path ran.
    segments = DOWNLOAD_BYTES // (link(lab, tun)["mtu"] - 40)
    print(f"{DOWNLOAD_BYTES} bytes: {writes} TUN writes for ~{segments} segments")
    assert writes < segments // 2, (writes, segments)
