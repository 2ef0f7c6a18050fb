"""Network namespaces for the interop lab: creation, links, addresses, commands.

Every namespace gets a unique name (prefix + random suffix) so that parallel runs
cannot clash, and its own /etc/netns/NAME/resolv.conf so that DNS changes made by a
client inside it never reach the machine's /etc/resolv.conf.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
# Recognisable so a test can tell the lab's resolv.conf from anything a client wrote.
LAB_RESOLV_CONF = "# vpnclient interop lab\nnameserver 192.0.2.53\n"


class CommandError(RuntimeError):
    """A lab command failed; the message carries its output."""


def _check(argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        raise CommandError(
            f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or '').strip()}"
            f" {(proc.stdout or '').strip()}".strip()
        )


def host_run(
    argv: Sequence[str], check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command on the host (outside any lab namespace)."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input
    )
    if check:
        _check(argv, proc)
    return proc


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def run(
    ns: str,
    argv: Sequence[str],
    check: bool = True,
    timeout: float = 60.0,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess:
    """Run argv inside namespace ns and wait for it; output is captured."""
    full = ns_argv(ns, argv)
    proc = subprocess.run(
        full, capture_output=True, text=text, timeout=timeout, input=input, env=env
    )
    if check and proc.returncode != 0:
        out = proc.stdout if text else proc.stdout.decode(errors="replace")
        err = proc.stderr if text else proc.stderr.decode(errors="replace")
        raise CommandError(f"[{ns}] {' '.join(argv)} exited {proc.returncode}: {err} {out}")
    return proc


def popen(ns: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start argv inside namespace ns in its own process group (easy to kill)."""
    kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(ns_argv(ns, argv), **kwargs)


def pids(ns: str) -> list[int]:
    proc = host_run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def kill_all(ns: str, grace: float = 2.0) -> None:
    """SIGTERM every process in ns, then SIGKILL whatever is left after `grace` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        victims = pids(ns)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and pids(ns):
            time.sleep(0.05)


class Namespace:
    """One network namespace; `with Namespace("vpnc") as ns:` removes it afterwards."""

    def __init__(self, prefix: str) -> None:
        self.name = unique_name(prefix)
        self._created = False

    def create(self) -> Namespace:
        host_run(["ip", "netns", "add", self.name])
        self._created = True
        etc = NETNS_ETC / self.name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(LAB_RESOLV_CONF)
        self.run(["ip", "link", "set", "lo", "up"])
        # Policy routing through TUN devices must not be second-guessed by rp_filter.
        # No IPv6 DAD: link-local addresses (and their routes) appear at once, so a
        # snapshot taken right after setup is stable.
        for key in (
            "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
            "net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad",
        ):
            self.run(["sysctl", "-qw", f"{key}=0"], check=False)
        return self

    def delete(self) -> None:
        """Kill every process inside, remove the namespace and its /etc/netns entry.

        Safe to call on a half-created namespace and more than once.
        """
        if self.exists():
            kill_all(self.name)
            host_run(["ip", "netns", "delete", self.name], check=False)
        shutil.rmtree(NETNS_ETC / self.name, ignore_errors=True)
        try:
            NETNS_ETC.rmdir()  # only when no other lab (or user) has entries there
        except OSError:
            pass
        self._created = False

    def exists(self) -> bool:
        return Path("/run/netns", self.name).exists()

    @property
    def resolv_conf(self) -> Path:
        return NETNS_ETC / self.name / "resolv.conf"

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return run(self.name, argv, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        return popen(self.name, argv, **kwargs)

    def pids(self) -> list[int]:
        return pids(self.name)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["ip", *args], check=check)

    def add_addr(self, ifname: str, cidr: str) -> None:
        self.ip("addr", "add", cidr, "dev", ifname)

    def add_route(
        self, dest: str, via: str | None = None, dev: str | None = None, metric: int | None = None
    ) -> None:
        argv = ["route", "add", dest]
        if via:
            argv += ["via", via]
        if dev:
            argv += ["dev", dev]
        if metric is not None:
            argv += ["metric", str(metric)]
        self.ip(*argv)

    def link_up(self, ifname: str) -> None:
        self.ip("link", "set", "dev", ifname, "up")

    def link_down(self, ifname: str) -> None:
        self.ip("link", "set", "dev", ifname, "down")

    def __enter__(self) -> Namespace:
        try:
            return self.create()
        except BaseException:
            self.delete()
            raise

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


def add_veth(ns_a: Namespace, if_a: str, ns_b: Namespace, if_b: str, mtu: int = 1500) -> None:
    """A veth pair created directly inside both namespaces (no host-side name clash)."""
    host_run([
        "ip", "link", "add", if_a, "netns", ns_a.name, "mtu", str(mtu), "type", "veth",
        "peer", "name", if_b, "netns", ns_b.name, "mtu", str(mtu),
    ])
    ns_a.link_up(if_a)
    ns_b.link_up(if_b)


def leaked_lab_namespaces(prefixes: Sequence[str]) -> list[str]:
    """Names of existing namespaces that start with one of the lab prefixes."""
    proc = host_run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [n for n in names if any(n.startswith(p + "-") for p in prefixes)]
