"""The tunnel benchmark: vpnclient next to strongSwan's own client, same gateway, one run.

Builds the interop lab (client namespace, strongSwan gateway with kernel-libipsec), then
for each round connects strongSwan's client (charon + kernel-libipsec, EAP-MSCHAPv2) and
vpnclient (same profile) in turn (the order alternates between rounds) and measures:

- TCP throughput through the tunnel with iperf3, upload and download, N s each;
- ping round-trip time through the tunnel (median, 99th percentile), idle and while each
  iperf3 transfer runs;
- connect command -> first ping reply (ping every 10 ms), and the handshake alone (first
  IKE packet sent -> CHILD_SA installed, from the client's own log);
- the same two like for like: strongSwan's figure is always through its daemon (charon
  runs before `swanctl --initiate`, as on a desktop); vpnclient's second figure is through
  `vpnclient daemon`, started before the timed command, which is the CLI as root asking
  it to connect the profile from the store (password on stdin); that session only
  connects;
- client CPU seconds per GB moved by iperf3 (all threads of the client process), resident
  memory once connected and after the transfers;
- and, for vpnclient alone, the cold start of `vpnclient --version` (next to the bare
  interpreter's start, which is the floor).

vpnclient is `python3 -m client.cli` with this interpreter, or VPNCLIENT_CMD (e.g. an
installed `.venv/bin/vpnclient`): an interpreter whose site-packages run start-up hooks
adds their time and memory to every figure of its processes. It runs from compiled
bytecode, as an installed package does (tests/perf/common.py bytecode_env), with its
runtime directory on tmpfs (/dev/shm), as /run is on a desktop; resolv.conf, on disk, is
still written and synced as in production.

Prints each round, then a table of medians with the ratio vpnclient/strongSwan, and
writes it all as JSON. Run as root (not part of the test run):

    python3 -m tests.perf.tunnel [--runs 3] [--connects 6] [--seconds 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from client import control
from tests.lab.gateway import LAN_HOST
from tests.lab.iperf import IperfError, iperf3_server, parse_result
from tests.lab.strongswan_client import StrongSwanClient
from tests.lab.topology import Lab, python_env
from tests.lab.vpnclient import VpnClient, client_command
from tests.perf.common import bytecode_env, cannot_measure, reset
from tests.perf.measure import cpu_seconds, ping_rtt, rss_mb, start_iperf3
from tests.perf.ref_connect import first_reply, start_ping

SCENARIO = "eap-mschapv2"
TMPFS = "/dev/shm"
STRONGSWAN = "strongSwan 5.9.8"
VPNCLIENT = "vpnclient"
VPNCLIENT_DAEMON = "vpnclient daemon"
IPERF_PORT = 5201

# (key, label, unit, better) -- better: "higher" or "lower", for reading the ratio
ROWS = (
    ("upload_mbps", "TCP upload", "Mbit/s", "higher"),
    ("download_mbps", "TCP download", "Mbit/s", "higher"),
    ("ping_idle_median_ms", "ping idle, median", "ms", "lower"),
    ("ping_idle_p99_ms", "ping idle, p99", "ms", "lower"),
    ("ping_upload_median_ms", "ping during upload, median", "ms", "lower"),
    ("ping_upload_p99_ms", "ping during upload, p99", "ms", "lower"),
    ("ping_download_median_ms", "ping during download, median", "ms", "lower"),
    ("ping_download_p99_ms", "ping during download, p99", "ms", "lower"),
    ("connect_to_ping_ms", "connect -> first ping reply", "ms", "lower"),
    ("handshake_ms", "handshake (1st IKE packet -> CHILD_SA)", "ms", "lower"),
    ("cpu_s_per_gb", "client CPU per GB moved", "s/GB", "lower"),
    ("rss_connected_mb", "client RSS, connected", "MB", "lower"),
    ("rss_after_load_mb", "client RSS, after the transfers", "MB", "lower"),
)
# Rows whose vpnclient figure is that of the daemon session; strongSwan's is the same
# figure as above (its connect always goes through charon).
DAEMON_ROWS = (
    ("connect_to_ping_ms", "connect via the daemon -> first ping reply", "ms", "lower"),
    ("handshake_ms", "handshake via the daemon", "ms", "lower"),
)

_STAMP = r"(\d\d:\d\d:\d\d\.\d{3})"
SWAN_FIRST_SEND = re.compile(rf"^{_STAMP} .*sending packet: from", re.M)
SWAN_CHILD_UP = re.compile(rf"^{_STAMP} .*CHILD_SA \S+ established", re.M)
VPN_FIRST_SEND = re.compile(rf"^{_STAMP} .*sending IKE_SA_INIT request", re.M)
VPN_CHILD_UP = re.compile(rf"^{_STAMP} .*tunnel \S+ up", re.M)


def _ms_between(text: str, start: re.Pattern[str], end: re.Pattern[str]) -> float | None:
    a, b = start.search(text), end.search(text)
    if not a or not b:
        return None
    t = [datetime.strptime(m.group(1), "%H:%M:%S.%f") for m in (a, b)]
    return (t[1] - t[0]).total_seconds() * 1000


class BenchStrongSwanClient(StrongSwanClient):
    """The lab's reference client with millisecond timestamps in its log."""

    def write_config(self) -> None:
        super().write_config()
        text = self.conf_path.read_text()
        self.conf_path.write_text(
            text.replace("time_format = %T\n", "time_format = %T\n            time_add_ms = yes\n")
        )


class Session:
    """One connected client; subclasses know how to connect and where the process is."""

    name = ""
    connect_only = False  # measure() is not run

    def __init__(self, lab: Lab, workdir: Path, env: dict[str, str]) -> None:
        self.lab = lab
        self.workdir = workdir
        self.env = env  # for vpnclient's processes
        # vpnclient's runtime directory (journal, DNS backup, control socket) on tmpfs, as
        # /run is on a desktop: on a disk, its fsyncs would cost what they do not there.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="vpnclient-bench-", dir=TMPFS))
        self.figures: dict[str, float | None] = {}

    def remove_runtime_dir(self) -> None:
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def connect(self) -> None:
        """Connect, timing the command to the first ping reply through the tunnel."""
        ping = start_ping(self.lab)
        time.sleep(0.1)  # ping is up and sending before the clock starts
        try:
            t0 = time.time()
            self._connect()
            time.sleep(0.3)
        finally:
            self.figures["connect_to_ping_ms"] = first_reply(ping, t0)
        if self.figures["connect_to_ping_ms"] is None:
            raise RuntimeError(f"{self.name}: no ping reply through the tunnel")
        self.figures["handshake_ms"] = self._handshake_ms()

    def measure(self, seconds: int) -> None:
        f, ns, pid = self.figures, self.lab.client_ns, self.pid()
        f["rss_connected_mb"] = rss_mb(pid)
        idle = ping_rtt(ns, LAN_HOST, count=200, interval=0.01)
        if idle is None:
            raise RuntimeError(f"{self.name}: no ping reply (idle)")
        f["ping_idle_median_ms"], f["ping_idle_p99_ms"] = idle["median"], idle["p99"]
        cpu0 = cpu_seconds(pid)
        moved = 0.0
        for direction, reverse in (("upload", False), ("download", True)):
            load = start_iperf3(ns, LAN_HOST, seconds, reverse=reverse, port=IPERF_PORT)
            time.sleep(min(2.0, seconds / 4))
            rtt = ping_rtt(ns, LAN_HOST, count=max(10, seconds * 10), interval=0.05)
            out, _ = load.communicate(timeout=seconds + 30)
            try:
                end = parse_result(out)["end"]
            except IperfError as exc:
                raise RuntimeError(f"{self.name}: iperf3 {direction}: {exc}") from exc
            f[f"{direction}_mbps"] = end["sum_received"]["bits_per_second"] / 1e6
            moved += end["sum_received"]["bytes"]
            f[f"ping_{direction}_median_ms"] = rtt["median"] if rtt else None
            f[f"ping_{direction}_p99_ms"] = rtt["p99"] if rtt else None
        f["cpu_s_per_gb"] = (cpu_seconds(pid) - cpu0) / (moved / 1e9)
        f["rss_after_load_mb"] = rss_mb(pid)

    # -- per client -------------------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _handshake_ms(self) -> float | None:
        raise NotImplementedError

    def pid(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class StrongSwanSession(Session):
    name = STRONGSWAN

    def __init__(self, lab: Lab, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(lab, workdir, env)
        self.client = BenchStrongSwanClient(lab.client_ns, workdir, lab.pki, scenario=SCENARIO)
        self.client.start()  # the daemon runs before the connect command, as on a desktop

    def _connect(self) -> None:
        proc = subprocess.run(self.client.initiate_argv(), capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"swanctl --initiate failed: {proc.stdout}{proc.stderr}")

    def _handshake_ms(self) -> float | None:
        return _ms_between(self.client.log_text(), SWAN_FIRST_SEND, SWAN_CHILD_UP)

    def pid(self) -> int:
        assert self.client.pid is not None
        return self.client.pid

    def close(self) -> None:
        self.client.terminate()
        self.client.stop()


class VpnClientSession(Session):
    name = VPNCLIENT

    def __init__(self, lab: Lab, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(lab, workdir, env)
        self.client = VpnClient(lab.client_ns, workdir, env, self.runtime_dir)
        self.profile = lab.profile(SCENARIO)

    def _connect(self) -> None:
        # -v: the IKE messages with millisecond timestamps (the handshake figure). Wait for
        # the "connected:" progress line in the log rather than polling `status`, which
        # would start a Python process every few milliseconds next to the one measured.
        self.client.start_connect(self.profile, self.lab.secret(SCENARIO), verbose=1)
        deadline = time.monotonic() + 30
        while "\nconnected: " not in "\n" + self.client.log_text():
            if self.client.proc is not None and self.client.proc.poll() is not None:
                raise RuntimeError(f"vpnclient exited:\n{self.client.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vpnclient not connected:\n{self.client.log_tail()}")
            time.sleep(0.005)

    def _handshake_ms(self) -> float | None:
        return _ms_between(self.client.log_text(), VPN_FIRST_SEND, VPN_CHILD_UP)

    def pid(self) -> int:
        # `ip netns exec` execs into the client: the Popen pid is the client's.
        assert self.client.proc is not None
        return self.client.proc.pid

    def close(self) -> None:
        if self.client.proc is not None and self.client.proc.poll() is None:
            self.client.run("disconnect", timeout=15)
            try:
                self.client.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.client.kill()


class DaemonSession(Session):
    """`vpnclient daemon` started first (not timed, like charon); the timed command is
    `vpnclient connect NAME --password-stdin` as root, which finds the daemon, hands it
    the stored profile and the password, and returns once the tunnel is up."""

    name = VPNCLIENT_DAEMON
    connect_only = True

    def __init__(self, lab: Lab, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(lab, workdir, env)
        self.client = VpnClient(lab.client_ns, workdir, env, self.runtime_dir)
        path = lab.profile(SCENARIO)
        imported = self.client.run("import", str(path))
        if imported.returncode != 0:
            raise RuntimeError(f"vpnclient import failed: {imported.stdout}{imported.stderr}")
        self.profile_name = json.loads(path.read_text())["name"]
        self.log_path = workdir / "daemon.log"
        with open(self.log_path, "ab") as log:
            self.daemon = lab.client_ns.popen(
                [*client_command(), "daemon", "-v"], env=self.client.env(), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready(control.socket_path(self.client.runtime_dir))

    def _wait_ready(self, socket: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"vpnclient daemon exited:\n{self._log()}")
            try:
                with control.ControlClient.open(socket, 2.0) as client:
                    if client.call("status").get("ok"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"vpnclient daemon not answering:\n{self._log()}")

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _connect(self) -> None:
        proc = self.client.run("connect", self.profile_name, "--password-stdin",
                               input=self.lab.secret(SCENARIO) + "\n", timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"vpnclient connect (daemon) exited {proc.returncode}: "
                               f"{proc.stdout}{proc.stderr}\n{self._log()}")

    def _handshake_ms(self) -> float | None:
        return _ms_between(self._log(), VPN_FIRST_SEND, VPN_CHILD_UP)

    def pid(self) -> int:
        return self.daemon.pid

    def close(self) -> None:
        if self.daemon.poll() is None:
            self.client.run("disconnect", timeout=30)
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)


def cold_start_ms(argv: list[str], env: dict[str, str], times: int = 10) -> float:
    """Median wall time of running `argv` to completion (a fresh process each time)."""
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def interpreter_of(cmd: list[str]) -> str:
    """The Python that runs vpnclient's command line `cmd`."""
    script = shutil.which(cmd[0])
    if script and not Path(script).name.startswith("python"):  # an entry point script
        with open(script, "rb") as f:
            return f.readline()[2:].decode().strip()  # its #! line
    return cmd[0]


def startup_figures(env: dict[str, str]) -> dict[str, float | str]:
    cmd = client_command()
    env = {**python_env(), **env}
    return {
        "command": " ".join(cmd),
        "version_cold_start_ms": cold_start_ms([*cmd, "--version"], env),
        "bare_interpreter_start_ms": cold_start_ms([interpreter_of(cmd), "-c", "pass"], env),
    }


def run_session(lab: Lab, make: Callable[[Lab, Path, dict[str, str]], Session],
                workdir: Path, seconds: int, env: dict[str, str],
                connect_only: bool = False) -> dict[str, float | None]:
    session = make(lab, workdir, env)
    try:
        session.connect()
        if not (connect_only or session.connect_only):
            session.measure(seconds)
        return session.figures
    finally:
        try:
            session.close()
        finally:
            session.remove_runtime_dir()
            reset(lab)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    table = []
    rows = [(key, key, VPNCLIENT, *rest) for key, *rest in ROWS]
    rows += [(f"daemon_{key}", key, VPNCLIENT_DAEMON, *rest) for key, *rest in DAEMON_ROWS]
    for row_key, key, ours_name, label, unit, better in rows:
        swan_runs = [r.get(key) for r in runs[STRONGSWAN]]
        our_runs = [r.get(key) for r in runs[ours_name]]
        swan, ours = _median(swan_runs), _median(our_runs)
        ratio = ours / swan if ours is not None and swan else None
        table.append({"key": row_key, "figure": label, "unit": unit, "better": better,
                      "strongswan": swan, "vpnclient": ours, "ratio": ratio,
                      "strongswan_runs": swan_runs, "vpnclient_runs": our_runs})
    return table


def _fmt(v: float | None, width: int = 10) -> str:
    if v is None:
        return f"{'-':>{width}}"
    return f"{v:>{width}.3f}" if abs(v) < 10 else f"{v:>{width}.1f}"


def print_table(table: list[dict], runs: int, seconds: int) -> None:
    print(f"\nmedians of {runs} runs (iperf3 {seconds} s per direction); ratio = vpnclient /"
          " strongSwan")
    print(f"{'figure':<42} {'unit':<7} {'strongSwan':>10} {'vpnclient':>10} {'ratio':>7}")
    for row in table:
        ratio = f"{row['ratio']:>6.2f}x" if row["ratio"] is not None else f"{'-':>7}"
        print(f"{row['figure']:<42} {row['unit']:<7} {_fmt(row['strongswan'])}"
              f" {_fmt(row['vpnclient'])} {ratio}  ({row['better']} is better)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.perf.tunnel")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="iperf3 time per direction")
    parser.add_argument("--connects", type=int, default=6,
                        help="extra connects per client, timed only: the connect and handshake"
                             " figures vary by milliseconds from one to the next")
    parser.add_argument("--json", metavar="FILE", default="tunnel-benchmark.json")
    args = parser.parse_args(argv)
    if cannot_measure():
        return 2
    makers: dict[str, Callable[[Lab, Path, dict[str, str]], Session]] = {
        STRONGSWAN: StrongSwanSession, VPNCLIENT: VpnClientSession,
        VPNCLIENT_DAEMON: DaemonSession,
    }
    runs: dict[str, list[dict]] = {name: [] for name in makers}
    with Lab() as lab:
        env = bytecode_env(lab.dir / "pycache", interpreter_of(client_command()))
        with iperf3_server(lab.gw_ns, LAN_HOST, IPERF_PORT):
            for rnd in range(1, args.runs + 1):
                order = [STRONGSWAN, VPNCLIENT, VPNCLIENT_DAEMON]
                for name in order if rnd % 2 else order[::-1]:
                    workdir = lab.dir / f"{name.replace(' ', '-')}-{rnd}"
                    figures = run_session(lab, makers[name], workdir, args.seconds, env)
                    runs[name].append(figures)
                    print(f"round {rnd} {name:<17} " + ", ".join(
                        f"{k}={v:.3f}" if v is not None else f"{k}=-"
                        for k, v in figures.items()), flush=True)
            # Connect and handshake only, alternating the clients; their samples join the
            # rounds' in the medians of those rows.
            for n in range(1, args.connects + 1):
                order = [STRONGSWAN, VPNCLIENT, VPNCLIENT_DAEMON]
                for name in order if n % 2 else order[::-1]:
                    workdir = lab.dir / f"{name.replace(' ', '-')}-connect-{n}"
                    figures = run_session(lab, makers[name], workdir, args.seconds, env,
                                          connect_only=True)
                    runs[name].append(figures)
                    print(f"connect {n} {name:<17} connect_to_ping_ms="
                          f"{figures['connect_to_ping_ms']:.1f}, handshake_ms="
                          f"{figures['handshake_ms']}", flush=True)
        startup = startup_figures(env)
    table = summarize(runs)
    print_table(table, args.runs, args.seconds)
    print(f"(connect and handshake rows: medians of {args.runs + args.connects} connects)")
    print(f"\n`{startup['command']} --version` cold start: median "
          f"{startup['version_cold_start_ms']:.1f} ms (the bare interpreter: "
          f"{startup['bare_interpreter_start_ms']:.1f} ms)")
    with open(args.json, "w") as f:
        json.dump({"runs": args.runs, "connects": args.connects, "seconds": args.seconds,
                   "scenario": SCENARIO, "table": table, "vpnclient_startup": startup,
                   "raw": runs}, f, indent=2)
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
