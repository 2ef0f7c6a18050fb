"""The interop lab: a client namespace, a gateway namespace, the protected LAN.

    CLIENT  eth0 192.0.2.100/24 ----veth---- eth0 192.0.2.1-.7,.9,.10/24  GW
            default via 192.0.2.1                      198.51.100.1/24 (off the client's link)
                                                  lo 198.18.0.1, 198.18.0.53, 2001:db8:1::1
                                                     (the LAN)
                                                  charon + kernel-libipsec (ipsec0)
                                                  TCP sink on 198.18.0.1:5001

The gateway drops anything for the LAN (198.18.0.0/15, 2001:db8:1::/64) that arrives in
clear on eth0, so a reply from the LAN proves the packet went through the tunnel, and it
drops everything sent to 192.0.2.9 (a gateway that never answers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tests.lab import prereqs
from tests.lab.gateway import (
    GATEWAY_ADDRS,
    LAN6_HOST,
    LAN6_TS,
    LAN_HOST,
    POOL_DNS,
    UNREACHABLE_ADDR,
    StrongSwanGateway,
)
from tests.lab.netns import Namespace, add_veth
from tests.lab.pki import TestPKI
from tests.lab.profiles import make_profile, secret_for, write_profile

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_IF = "eth0"
GW_IF = "eth0"
CLIENT_ADDR = "192.0.2.100"
SINK_PORT = 5001
CLIENT_PREFIX = "vpnlab-c"
GW_PREFIX = "vpnlab-g"


def lab_unavailable() -> str | None:
    """None if the lab can run here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the interop lab needs root (network namespaces)"
    return prereqs.unavailable(prereqs.LAB)


def python_env() -> dict[str, str]:
    """Environment for `python3 -m tests.lab...` / `-m client.cli` run in a namespace."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


# -- client namespace state: snapshot, leftovers, reset -----------------------------
_NFT_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
FIREWALL_DUMPS = (
    ("nft", ["nft", "list", "ruleset"]),
    ("iptables-legacy", ["iptables-legacy-save"]),
    ("ip6tables-legacy", ["ip6tables-legacy-save"]),
)
# Built-in chains per table, to empty a legacy table that did not exist in the baseline.
_BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}


def _firewall_rules(tool: str, text: str) -> list[str]:
    """Rules and non-ACCEPT policies only: empty tables/chains left by a client that
    cleaned up after itself change nothing."""
    rules = []
    for line in (raw.strip() for raw in text.splitlines()):
        if tool == "nft":
            if (not line or line == "}" or line.startswith(("table ", "chain "))
                    or (line.startswith("type ") and "policy accept" in line)):
                continue
            rules.append(_NFT_COUNTER.sub("counter", line))
        elif line.startswith("-A") or (line.startswith(":") and " ACCEPT" not in line
                                       and " -" not in line):
            rules.append(line.split(" [")[0])
    return rules


def _legacy_tables(text: str) -> set[str]:
    return {line[1:].strip() for line in text.splitlines() if line.startswith("*")}


@dataclass
class NsState:
    links: set[str] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    resolv_conf: bytes = b""  # byte for byte: a restore must not even change line ends
    resolv_conf_mode: int | None = None
    firewall: set[str] = field(default_factory=set)
    raw: dict[str, str] = field(default_factory=dict)  # to restore from


def _lines(ns: Namespace, argv: list[str]) -> list[str]:
    proc = ns.run(argv, check=False)
    return [line.rstrip() for line in proc.stdout.splitlines() if line.strip()]


def snapshot(ns: Namespace) -> NsState:
    state = NsState()
    for line in _lines(ns, ["ip", "-o", "link", "show"]):
        state.links.add(line.split(":")[1].strip().split("@")[0])
    for fam in ("-4", "-6"):
        state.rules.update(_numbered(f"{fam} {r}" for r in _lines(ns, ["ip", fam, "rule", "show"])))
        state.routes.update(
            f"{fam} {r}"
            for r in _lines(ns, ["ip", fam, "route", "show", "table", "all"])
            if " cache" not in r and not r.startswith("multicast")
        )
    if ns.resolv_conf.exists():
        state.resolv_conf = ns.resolv_conf.read_bytes()
        state.resolv_conf_mode = ns.resolv_conf.stat().st_mode & 0o7777
    for tool, argv in FIREWALL_DUMPS:
        if shutil.which(argv[0]) is None:
            continue
        text = ns.run(argv, check=False).stdout
        state.raw[tool] = text
        state.firewall.update(f"{tool}: {rule}" for rule in _firewall_rules(tool, text))
    return state


def diff_states(before: NsState, after: NsState) -> list[str]:
    found: list[str] = []
    for label, old, new in (
        ("link", before.links, after.links),
        ("ip rule", before.rules, after.rules),
        ("route", before.routes, after.routes),
        ("firewall", before.firewall, after.firewall),
    ):
        found += [f"{label} added: {x}" for x in sorted(new - old)]
        found += [f"{label} removed: {x}" for x in sorted(old - new)]
    if before.resolv_conf != after.resolv_conf:
        found.append(f"resolv.conf changed: {after.resolv_conf!r}")
    if before.resolv_conf_mode != after.resolv_conf_mode:
        found.append(f"resolv.conf mode changed: {before.resolv_conf_mode!r} -> "
                     f"{after.resolv_conf_mode!r}")
    return found


def _numbered(lines) -> list[str]:
    """Lines as a set can hold them: a repeated line (e.g. a policy rule added twice)
    gets a " #2", " #3" suffix so that a duplicate shows up in a diff."""
    seen: Counter[str] = Counter()
    out = []
    for line in lines:
        seen[line] += 1
        out.append(line if seen[line] == 1 else f"{line} #{seen[line]}")
    return out


def leftovers(ns: Namespace, baseline: NsState) -> list[str]:
    """Everything in ns that differs from `baseline` (empty list: nothing left behind)."""
    return diff_states(baseline, snapshot(ns))


def restore(ns: Namespace, baseline: NsState) -> None:
    """Best effort: put ns back into the `baseline` state (after a failed test)."""
    now = snapshot(ns)
    for link in now.links - baseline.links:
        ns.ip("link", "del", link, check=False)
    now = snapshot(ns)
    for rule in now.rules - baseline.rules:
        fam, spec = rule.split(" #")[0].split(" ", 1)
        pref = spec.split(":", 1)[0]
        ns.run(["ip", fam, "rule", "del", "pref", pref], check=False)
    for route in now.routes - baseline.routes:
        fam, spec = route.split(" ", 1)
        ns.run(["ip", fam, "route", "del", *spec.split()], check=False)
    if now.resolv_conf != baseline.resolv_conf:
        ns.resolv_conf.write_bytes(baseline.resolv_conf)
    if baseline.resolv_conf_mode is not None and now.resolv_conf_mode != baseline.resolv_conf_mode:
        ns.resolv_conf.chmod(baseline.resolv_conf_mode)
    if now.firewall != baseline.firewall:
        if "nft" in baseline.raw:
            ns.run(["nft", "flush", "ruleset"], check=False)
            ns.run(["nft", "-f", "-"], input=baseline.raw["nft"], check=False)
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            if tool not in baseline.raw:
                continue
            text = baseline.raw[tool]
            for table in _legacy_tables(now.raw.get(tool, "")) - _legacy_tables(text):
                chains = "".join(f":{c} ACCEPT [0:0]\n" for c in _BUILTIN_CHAINS.get(table, ()))
                text += f"*{table}\n{chains}COMMIT\n"
            ns.run([f"{tool}-restore"], input=text, check=False)


# -- the lab --------------------------------------------------------------------------
@dataclass
class PingResult:
    ok: bool
    received: int
    output: str


def ping(ns: Namespace, dest: str, count: int = 3, interval: float = 0.2, wait: float = 2.0,
         timeout: float | None = None) -> PingResult:
    """`ping` from `ns`; how many of `count` echo requests `dest` answered."""
    family = "-6" if ":" in dest else "-4"
    proc = ns.run(
        ["ping", family, "-n", "-c", str(count), "-i", str(interval), "-W", str(wait), dest],
        check=False, timeout=count * (interval + wait) + 10 if timeout is None else timeout,
    )
    received = len(re.findall(rf"bytes from {re.escape(dest)}", proc.stdout))
    return PingResult(received > 0, received, proc.stdout + proc.stderr)


class NamespaceLab:
    """What every lab shares: `with` builds it (`_setup`) and always tears it down, even
    when building fails half-way; its scratch directory; the client namespace's state."""

    label = "lab"  # names the lab in teardown errors
    client_ns: Namespace
    baseline: NsState | None
    dir: Path
    keep_dir: bool

    def setup(self) -> Self:
        try:
            self._setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __enter__(self) -> Self:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def _make_dir(self, prefix: str, base_dir: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))
        self.dir.chmod(0o755)  # charon drops privileges and must read its files

    def _tear_down(self, steps: Iterable[Callable[[], object]]) -> None:
        """Run every step even when one fails, remove the directory, then report."""
        errors: list[str] = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep tearing down the rest
                errors.append(repr(exc))
        if self.dir != Path() and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise RuntimeError(f"{self.label} teardown: " + "; ".join(errors))

    def leftovers(self) -> list[str]:
        assert self.baseline is not None
        return leftovers(self.client_ns, self.baseline)

    def reset_client(self) -> None:
        assert self.baseline is not None
        restore(self.client_ns, self.baseline)


class Lab(NamespaceLab):
    """`with Lab() as lab:` builds everything and always tears it down."""

    def __init__(self, base_dir: Path | None = None, keep_dir: bool = False) -> None:
        self.keep_dir = keep_dir or bool(os.environ.get("VPNLAB_KEEP"))
        self._base_dir = base_dir
        self.dir: Path = Path()
        self.pki: TestPKI
        self.client_ns = Namespace(CLIENT_PREFIX)
        self.gw_ns = Namespace(GW_PREFIX)
        self.gateway: StrongSwanGateway | None = None
        self.sink: subprocess.Popen | None = None
        self.baseline: NsState | None = None

    # -- lifecycle -------------------------------------------------------------------
    def _setup(self) -> None:
        self._make_dir("vpnlab-", self._base_dir)
        self.pki = TestPKI.create(self.dir / "pki")
        self.client_ns.create()
        self.gw_ns.create()
        add_veth(self.client_ns, CLIENT_IF, self.gw_ns, GW_IF)
        self.client_ns.add_addr(CLIENT_IF, f"{CLIENT_ADDR}/24")
        self.client_ns.add_route("default", via=GATEWAY_ADDRS[0])
        for addr in (*GATEWAY_ADDRS, UNREACHABLE_ADDR):
            self.gw_ns.add_addr(GW_IF, f"{addr}/24")
        for addr in (LAN_HOST, POOL_DNS):
            self.gw_ns.add_addr("lo", f"{addr}/32")
        self.gw_ns.add_addr("lo", f"{LAN6_HOST}/128")
        ipt = ["iptables", "-w", "-A", "INPUT"]
        self.gw_ns.run([*ipt, "-i", GW_IF, "-d", "198.18.0.0/15", "-j", "DROP"])
        self.gw_ns.run(["ip6tables", "-w", "-A", "INPUT", "-i", GW_IF, "-d", LAN6_TS,
                        "-j", "DROP"])
        self.gw_ns.run([*ipt, "-d", UNREACHABLE_ADDR, "-j", "DROP"])
        self.sink = self.gw_ns.popen(
            [sys.executable, "-m", "tests.lab.services", "sink", "--host", LAN_HOST,
             "--port", str(SINK_PORT)],
            env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.sink.stdout is not None
        line = self.sink.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"TCP sink did not start: {line}")
        self.gateway = StrongSwanGateway(self.gw_ns, self.dir / "gateway", self.pki)
        self.gateway.start()
        self.baseline = snapshot(self.client_ns)

    def teardown(self) -> None:
        self._tear_down((
            lambda: self.gateway and self.gateway.stop(),
            lambda: self.sink and self._stop_sink(),
            self.client_ns.delete,
            self.gw_ns.delete,
        ))

    def _stop_sink(self) -> None:
        assert self.sink is not None
        self.sink.terminate()
        try:
            self.sink.wait(5)
        except subprocess.TimeoutExpired:
            self.sink.kill()
            self.sink.wait(5)
        if self.sink.stdout:
            self.sink.stdout.close()

    # -- checks ----------------------------------------------------------------------
    def ping(
        self, dest: str = LAN_HOST, count: int = 3, interval: float = 0.2, wait: float = 2.0,
    ) -> PingResult:
        return ping(self.client_ns, dest, count, interval, wait)

    def route_get(self, dest: str, mark: int | None = None) -> dict[str, str]:
        """`ip route get DEST [mark M]` in the client namespace: {"dev", "via", "src", ...}
        (an "error" key instead when the kernel has no route)."""
        argv = ["ip", "route", "get", dest]
        if mark is not None:
            argv += ["mark", hex(mark)]
        proc = self.client_ns.run(argv, check=False)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip()}
        words = proc.stdout.split()
        result = {"line": proc.stdout.strip()}
        for key in ("dev", "via", "src", "table"):
            if key in words[:-1]:
                result[key] = words[words.index(key) + 1]
        return result

    def new_links(self) -> list[str]:
        """Network devices in the client namespace that were not there at setup."""
        assert self.baseline is not None
        return sorted(snapshot(self.client_ns).links - self.baseline.links)

    def transfer(self, nbytes: int = 20_000_000, timeout: float = 120.0) -> dict:
        """Send nbytes to the LAN sink from the client namespace; sha256 both ways."""
        proc = self.client_ns.run(
            [sys.executable, "-m", "tests.lab.services", "send", "--host", LAN_HOST,
             "--port", str(SINK_PORT), "--bytes", str(nbytes), "--timeout", str(timeout)],
            env=python_env(), timeout=timeout + 10, check=False,
        )
        if proc.returncode != 0:
            return {"error": proc.stderr.strip() or proc.stdout.strip()}
        return json.loads(proc.stdout)

    # -- profiles --------------------------------------------------------------------
    def profile(self, scenario: str, path: Path | None = None, **kwargs) -> Path:
        profile = make_profile(self.pki, scenario, **kwargs)
        if path is None:
            path = self.dir / f"{scenario}-{profile['uuid'][:8]}.vpnprofile"
        return write_profile(path, profile)

    def secret(self, scenario: str) -> str:
        return secret_for(scenario, self.pki)

    def wait_no_sas(self, scenario: str, timeout: float = 5.0) -> bool:
        assert self.gateway is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.gateway.sas_for(scenario):
                return True
            time.sleep(0.1)
        return False
