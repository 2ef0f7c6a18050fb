"""Running strongSwan's charon inside a lab namespace (gateway or reference client).

Each instance gets a private mount namespace with its own /run (pid file, VICI socket),
/etc/swanctl and /etc/strongswan.conf bind-mounted from its directory, so several
charons can run on one machine at once (LAB.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.lab.netns import CommandError, Namespace

CHARON = Path("/usr/lib/ipsec/charon")
SWANCTL_SUBDIRS = (
    "conf.d", "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "private", "rsa",
    "ecdsa", "bliss", "pkcs8", "pkcs12", "pubkey",
)


def strongswan_conf(log_path: Path, extra_plugins: str = "", extra_charon: str = "") -> str:
    """strongswan.conf text; one setting per line (a value runs to the end of its line)."""
    return f"""charon {{
    load_modular = yes
    # Short retransmissions keep failure tests quick; 3 tries ~ 2+3.6+6.5 s.
    retransmit_timeout = 2.0
    retransmit_base = 1.8
    retransmit_tries = 3
    install_routes = yes
{extra_charon}
    filelog {{
        lab {{
            path = {log_path}
            time_format = %T
            ike_name = yes
            append = no
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
            net = 1
            enc = 1
            knl = 1
        }}
    }}
    syslog {{
        identifier = charon-lab
        daemon {{
            default = -1
        }}
    }}
    plugins {{
        include strongswan.d/charon/*.conf
        kernel-libipsec {{
            load = yes
        }}
        tpm {{
            load = no
        }}
{extra_plugins}
    }}
}}
"""


class CharonInstance:
    """A charon process in namespace `ns`, configured from directory `base`."""

    def __init__(self, ns: Namespace, base: Path, name: str) -> None:
        self.ns = ns
        self.dir = Path(base)
        self.name = name
        self.swanctl_dir = self.dir / "swanctl"
        self.conf_path = self.dir / "strongswan.conf"
        self.log_path = self.dir / "charon.log"
        self.stdout_path = self.dir / "charon.stdout"
        self.proc: subprocess.Popen | None = None

    # -- configuration -------------------------------------------------------------
    def prepare_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in SWANCTL_SUBDIRS:
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.swanctl_dir / "private").chmod(0o700)

    def install_file(self, subdir: str, name: str, data: bytes, mode: int = 0o644) -> Path:
        path = self.swanctl_dir / subdir / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def write_config(self) -> None:  # overridden
        raise NotImplementedError

    # -- process -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running():
            return
        self.write_config()
        script = (
            "set -e\n"
            "mount -t tmpfs none /run\n"
            f"mount --bind '{self.swanctl_dir}' /etc/swanctl\n"
            f"mount --bind '{self.conf_path}' /etc/strongswan.conf\n"
            f"exec {CHARON}\n"
        )
        out = open(self.stdout_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            # ip netns exec, unshare and sh all exec: the Popen pid becomes charon's pid.
            self.proc = self.ns.popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise CommandError(
                    f"{self.name}: charon exited ({self.proc.returncode}):\n{self.startup_output()}"
                )
            if self.swanctl(["--stats"], check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise CommandError(f"{self.name}: VICI did not answer within {timeout} s")
            time.sleep(0.05)

    def startup_output(self) -> str:
        text = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        return text + self.log_text()[-4000:]

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM charon, wait, then SIGKILL; charon removes its TUN device on exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.load_all()

    # -- VICI via swanctl ----------------------------------------------------------
    def swanctl(
        self, args: Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        if self.pid is None:
            raise CommandError(f"{self.name}: charon is not running")
        argv = ["nsenter", "-t", str(self.pid), "-m", "-n", "swanctl", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandError(
                f"{self.name}: swanctl {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def load_all(self) -> str:
        return self.swanctl(["--load-all", "--noprompt"]).stdout

    def list_sas(self) -> str:
        return self.swanctl(["--list-sas"]).stdout

    def sas(self) -> list[dict]:
        """The IKE_SAs as dicts ({"name": conn, ...vici keys..., "child-sas": {...}})."""
        out = self.swanctl(["--list-sas", "--pretty"]).stdout
        result = []
        for message in parse_pretty(out):
            for conn, body in message.items():
                if isinstance(body, dict):
                    result.append({"name": conn, **body})
        return result

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


def parse_pretty(text: str) -> list[dict]:
    """Parse `swanctl --pretty` output (one `NAME event {` block per message)."""
    messages: list[dict] = []
    stack: list[dict] = []
    current_list: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if current_list is not None:
            if line == "]":
                current_list = None
            else:
                current_list.append(line)
            continue
        if line.endswith("{"):
            section: dict = {}
            label = line[:-1].strip()
            if stack:
                stack[-1][label] = section
            else:
                messages.append(section)
            stack.append(section)
        elif line == "}":
            if stack:
                stack.pop()
        elif " = " in line and stack:
            key, value = line.split(" = ", 1)
            if value == "[":
                current_list = []
                stack[-1][key.strip()] = current_list
            else:
                stack[-1][key.strip()] = value
    return messages
