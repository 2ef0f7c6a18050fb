"""Issue 13, hostile input: the gateway's side of the tunnel sends authentic ESP packets
whose inner source lies outside the CHILD_SA's traffic selectors (or whose destination is
not our virtual IP). The client drops them, counts them in `status --json`
(`dropped_selector`) and says so in its log; a packet inside the selectors still passes.

strongSwan itself never sends such a packet (its own outbound policy is the negotiated
selectors), so the test plays a gateway whose keys leaked or whose SPD is wrong: charon
logs the CHILD_SA's keys at `chd = 4` (here only), and the test seals the packets with the
gateway's outbound key and sends them from the gateway's namespace, from charon's own
address and NAT-T port, to the client's ESP-in-UDP socket.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from tests.lab.checks import disconnect_cleanly
from tests.lab.gateway import LAN_HOST
from tests.lab.topology import python_env

pytestmark = pytest.mark.interop

SCENARIO = "eap-mschapv2"
# charon's file log with the CHILD_SA keys (sections of strongswan.conf are merged).
KEY_LOG = "    filelog {\n        lab {\n            chd = 4\n        }\n    }"
SPOOFED_SOURCES = ("203.0.113.66", "198.51.100.77", "192.0.2.200")  # outside 198.18.0.0/16
FOREIGN_DESTINATION = "203.0.113.99"  # not our virtual IP
SEQ_AHEAD = 50  # beyond the gateway's own sequence numbers, well inside the replay window

# Run in the gateway's namespace: seal IPv4 packets with the gateway's outbound SA and
# send them as ESP-in-UDP from charon's address and port (a raw socket: charon holds 4500).
SENDER = r"""
import json, socket, struct, sys
from client.esp.sa import EspOutbound
a = json.loads(sys.argv[1])
sa = EspOutbound(a["spi"], 20, 256, bytes.fromhex(a["key"]))
sa.next_seq = a["seq"]

def csum(data):
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def echo(src, dst):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1313, 1) + b"selector-test" * 4
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + icmp

raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for src, dst in a["packets"]:
    esp = sa.encapsulate(echo(src, dst))
    udp = struct.pack("!HHHH", a["sport"], a["dport"], 8 + len(esp), 0) + esp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(a["src"]), socket.inet_aton(a["dst"]))
    raw.sendto(ip + udp, (a["dst"], 0))
print(sa.next_seq)
"""


def responder_key(log: str) -> bytes:
    """The first CHILD_SA's 'encryption responder key' from charon's %B hex dump: the key
    of the gateway's outbound SA (the client initiated)."""
    m = re.search(r"encryption responder key => (\d+) bytes.*?\n"
                  r"((?:.*\d+: (?:[0-9A-F]{2} )+.*\n)+)", log)
    assert m, log[-3000:]
    size = int(m.group(1))
    data = bytes.fromhex("".join(
        re.search(r"\d+: ((?:[0-9A-F]{2} )+)", line).group(1) for line in m.group(2).splitlines()
    ).replace(" ", ""))
    assert len(data) == size, (size, data.hex())
    return data


def test_spoofed_inner_packets_are_dropped_and_counted(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    lab.gateway._reload_settings(KEY_LOG)  # the lab's own way of changing strongswan.conf
    try:
        client = run_client(lab.profile(SCENARIO, esp_proposal="aes256gcm16"),
                            lab.secret(SCENARIO))
        key = responder_key(lab.gateway.log_since(log_offset))
    finally:
        lab.gateway._reload_settings("")
    (ike,) = lab.gateway.sas_for(SCENARIO)
    (child,) = ike["child-sas"].values()
    assert child.get("encap") == "yes", child  # ESP in UDP, what the client's socket takes
    status = client.status()
    assert status["dropped_selector"] == 0, status
    (vip,) = status["virtual_ips"]
    assert lab.ping(count=2).ok, client.log_tail()

    spoofed = [(src, vip) for src in SPOOFED_SOURCES] + [(LAN_HOST, FOREIGN_DESTINATION)]
    args = {
        "spi": int(child["spi-out"], 16), "key": key.hex(),
        "seq": int(child.get("packets-out", 0)) + SEQ_AHEAD,
        "src": ike["local-host"], "sport": int(ike["local-port"]),
        "dst": ike["remote-host"], "dport": int(ike["remote-port"]),
        # The good one last: it proves the keys, the addressing and the sequence number.
        "packets": spoofed + [(LAN_HOST, vip)],
    }
    before = client.status()
    sent = lab.gw_ns.run([sys.executable, "-c", SENDER, json.dumps(args)], env=python_env())
    assert int(sent.stdout) == args["seq"] + len(args["packets"]), sent
    deadline = time.monotonic() + 5
    while (after := client.status())["dropped_selector"] < len(spoofed) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"\ndropped_selector {before['dropped_selector']} -> {after['dropped_selector']}, "
          f"packets_in {before['packets_in']} -> {after['packets_in']}")
    assert after["dropped_selector"] == len(spoofed), (after, client.log_tail())
    assert after["packets_in"] >= before["packets_in"] + 1, after  # the good one passed
    log = client.log_text()
    assert "outside the traffic selectors" in log and "203.0.113.66 -> " + vip in log, \
        client.log_tail()
    # The tunnel is unharmed: the gateway's own packets still arrive.
    assert lab.ping(count=3).ok, client.log_tail()
    assert client.status()["dropped_selector"] == len(spoofed)
    assert disconnect_cleanly(lab, client, SCENARIO, log_offset) == []
