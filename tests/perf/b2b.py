"""The data plane alone: two vpnclient data planes back to back, no gateway, no IKE.

    ns A: TUN 198.18.0.1 - DataPlane - UDP 192.0.2.1:4500
              ==veth== ns B: UDP 192.0.2.2:4500 - DataPlane - TUN 198.18.0.2

Each side is a `peer` process in its own namespace with fixed test keys (mirrored SAs);
iperf3 runs through the two TUN devices, TCP A->B and B->A, 10 s each, repeated; ping
gives the round-trip time through both data planes. Run as root:

    python3 -m tests.perf.b2b [--runs 3] [--seconds 10] [--suite aes256gcm16] [--json FILE]
                              [--send gso|single] [--write coalesce|single]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys

from tests.lab.iperf import iperf3_server
from tests.lab.netns import Namespace, add_veth
from tests.lab.topology import python_env
from tests.perf.measure import iperf3, ping_rtt

OUTER = ("192.0.2.1", "192.0.2.2")
INNER = ("198.18.0.1", "198.18.0.2")
PORT = 4500
SPIS = (0xA0000001, 0xB0000002)  # SPI of the SA sent by side A / by side B
SUITES = {
    # name: (encryption id, key bits, key material length)
    "aes256gcm16": (20, 256, 36),
    "aes128gcm16": (20, 128, 20),
    "chacha20poly1305": (28, 256, 36),
}
MTU = 1400
WRITES = ("coalesce", "single")


def _key(spi: int, length: int) -> bytes:
    """Fixed test key material per SA (both sides derive the same)."""
    return bytes((spi + 7 * i) % 256 for i in range(length))


# -- one side, run inside its namespace ---------------------------------------------------
def peer(side: int, suite: str, send: str, write: str = "coalesce") -> int:
    from client.dataplane import DataPlane
    from client.esp.sa import EspInbound, EspOutbound
    from client.esp.selectors import InboundPolicy
    from client.tun import TunDevice

    encr, bits, klen = SUITES[suite]
    spi_out, spi_in = SPIS[side], SPIS[1 - side]
    tun = TunDevice.open("b2b%d", mtu=MTU, vnet_hdr=write == "coalesce")
    subprocess.run(["ip", "addr", "add", INNER[side], "peer", INNER[1 - side], "dev", tun.name],
                   check=True)
    subprocess.run(["ip", "link", "set", tun.name, "up"], check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((OUTER[side], PORT))
    sock.connect((OUTER[1 - side], PORT))
    sock.setblocking(False)

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        # As the engine does: send_esp for single packets, the socket for GSO batches.
        dp = DataPlane(loop, tun, sock.send, (lambda: sock) if send == "gso" else None)
        # As a full tunnel: any source (TSr 0.0.0.0/0), our address the only destination.
        dp.install(EspOutbound(spi_out, encr, bits, _key(spi_out, klen)),
                   EspInbound(spi_in, encr, bits, _key(spi_in, klen)),
                   InboundPolicy(["0.0.0.0/0"], [INNER[side]]))
        attach(loop, dp, sock)
        dp.start()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print(json.dumps({"ready": tun.name}), flush=True)
        await stop.wait()
        dp.stop()
        return {"packets_in": dp.packets_in, "packets_out": dp.packets_out,
                "bytes_in": dp.bytes_in, "bytes_out": dp.bytes_out, "dropped": dp.dropped,
                "tun_writes": tun.writes, "tun_merged": tun.merged}

    stats = asyncio.run(run())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats.update(cpu_s=usage.ru_utime + usage.ru_stime, user_s=usage.ru_utime,
                 system_s=usage.ru_stime, maxrss_kb=usage.ru_maxrss)
    print(json.dumps(stats), flush=True)
    tun.close()
    sock.close()
    return 0


def attach(loop: asyncio.AbstractEventLoop, dp, sock: socket.socket) -> None:
    """Inbound wiring as the engine does it: drain the socket, hand ESP to the data plane,
    flush what it collected to the TUN device."""

    def readable() -> None:
        for _ in range(256):
            try:
                data = sock.recv(65535)
            except OSError:  # BlockingIOError: drained
                break
            dp.on_esp(data)
        dp.flush()

    loop.add_reader(sock.fileno(), readable)


def kernel_drops(ns: Namespace) -> dict[str, int]:
    """Where the kernel dropped packets in `ns` (UDP buffers, device queues): loss that
    TCP in the tunnel reacts to, outside the data plane's own counters."""
    counters = {}
    out = ns.run(["nstat", "-az", "UdpRcvbufErrors", "UdpSndbufErrors", "UdpInErrors"],
                 check=False).stdout
    for line in out.splitlines()[1:]:
        name, value, *_ = line.split()
        counters[name] = int(value)
    links = json.loads(ns.run(["ip", "-s", "-j", "link"], check=False).stdout or "[]")
    for link in links:
        stats = link.get("stats64", {})
        for direction in ("rx", "tx"):
            dropped = stats.get(direction, {}).get("dropped", 0)
            if dropped:
                counters[f"{link['ifname']} {direction} dropped"] = dropped
    return counters


# -- the driver ---------------------------------------------------------------------------
class BackToBack:
    def __init__(self, suite: str, send: str, write: str = "coalesce") -> None:
        self.suite = suite
        self.send = send
        self.write = write
        self.ns = (Namespace("vpnb2b-a"), Namespace("vpnb2b-b"))
        self.peers: list[subprocess.Popen] = []

    def __enter__(self) -> BackToBack:
        try:
            for ns in self.ns:
                ns.create()
            add_veth(self.ns[0], "eth0", self.ns[1], "eth0")
            for side, ns in enumerate(self.ns):
                ns.add_addr("eth0", f"{OUTER[side]}/24")
            for side, ns in enumerate(self.ns):
                p = ns.popen([sys.executable, "-m", "tests.perf.b2b", "peer", "--side", str(side),
                              "--suite", self.suite, "--send", self.send, "--write",
                              self.write], env=python_env(),
                             stdout=subprocess.PIPE, text=True)
                self.peers.append(p)
                assert p.stdout is not None
                line = p.stdout.readline()
                if "ready" not in line:
                    raise RuntimeError(f"peer {side} did not start: {line!r}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def stop_peers(self) -> list[dict]:
        stats = []
        for p in self.peers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                out, _ = p.communicate(timeout=10)
                stats.append(json.loads(out.strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                p.kill()
                p.wait()
                stats.append({})
        self.peers.clear()
        return stats

    def __exit__(self, *exc: object) -> None:
        self.stop_peers()
        for ns in self.ns:
            ns.delete()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.perf.b2b")
    sub = parser.add_subparsers(dest="cmd")
    p_peer = sub.add_parser("peer")
    p_peer.add_argument("--side", type=int, choices=(0, 1), required=True)
    p_peer.add_argument("--suite", choices=SUITES, default="aes256gcm16")
    p_peer.add_argument("--send", choices=("gso", "single"), default="gso")
    p_peer.add_argument("--write", choices=WRITES, default="coalesce")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--suite", choices=SUITES, default="aes256gcm16")
    parser.add_argument("--send", choices=("gso", "single"), default="gso",
                        help="send batches with UDP GSO (as the engine does) or each ESP"
                        " packet with its own send()")
    parser.add_argument("--write", choices=WRITES, default="coalesce",
                        help="write received TCP segments to the TUN device coalesced (as the"
                        " engine does, IFF_VNET_HDR) or each with its own write()")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.cmd == "peer":
        return peer(args.side, args.suite, args.send, args.write)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    rows: dict[str, list[float]] = {"A->B Mbit/s": [], "B->A Mbit/s": [], "ping idle ms": []}
    with BackToBack(args.suite, args.send, args.write) as b2b:
        a, b = b2b.ns
        with iperf3_server(b, INNER[1]):
            rtt = ping_rtt(a, INNER[1], count=20)
            if rtt is None:
                raise RuntimeError("no ping reply through the back-to-back data planes")
            for run in range(1, args.runs + 1):
                rows["ping idle ms"].append(ping_rtt(a, INNER[1], count=50)["median"])
                up = iperf3(a, INNER[1], args.seconds)
                down = iperf3(a, INNER[1], args.seconds, reverse=True)
                rows["A->B Mbit/s"].append(up["mbps"])
                rows["B->A Mbit/s"].append(down["mbps"])
                print(f"run {run}: A->B {up['mbps']:.0f} Mbit/s (retransmits {up['retransmits']}),"
                      f" B->A {down['mbps']:.0f} Mbit/s, ping {rows['ping idle ms'][-1]:.3f} ms",
                      flush=True)
        drops = {side: kernel_drops(ns) for side, ns in zip("AB", b2b.ns, strict=True)}
        stats = b2b.stop_peers()
    table = {k: {"runs": v, "median": statistics.median(v)} for k, v in rows.items()}
    result = {"suite": args.suite, "send": args.send, "write": args.write, "mtu": MTU,
              "table": table, "peers": stats, "kernel_drops": drops}
    print(f"\nback to back, {args.suite}, send {args.send}, write {args.write}, MTU {MTU},"
          f" {args.runs} runs of {args.seconds} s")
    for k, v in table.items():
        runs = ", ".join(f"{x:.3f}" for x in v["runs"])
        print(f"  {k:<14} median {v['median']:8.3f}   runs {runs}")
    for side, s in zip("AB", stats, strict=False):
        print(f"  peer {side}: {json.dumps(s)}")
        print(f"  kernel drops in {side}: {json.dumps(drops[side])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
