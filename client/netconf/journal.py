"""Crash-safety journal for network changes (RUNTIME_DIR/netconf.json).

Every manager records what it is about to change *before* changing it; a clean restore
forgets its entry and the file disappears when empty. If the process dies, the next
start-up calls cleanup_stale(), which undoes whatever the journal still lists.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILENAME = "netconf.json"


class NetconfError(RuntimeError):
    """A network configuration command failed; the message says which and why."""


def run(cmd: list[str], check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list, no shell, `input` on its stdin); raise NetconfError
    with its stderr on failure."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, input=input)
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise NetconfError(f"{' '.join(cmd)}: {e}") from e
        return subprocess.CompletedProcess(cmd, 127, "", str(e))
    if check and res.returncode != 0:
        raise NetconfError(f"{' '.join(cmd)}: {res.stderr.strip() or f'exit {res.returncode}'}")
    return res


def _write_json(path: Path, data: dict[str, Any], durable: bool = True) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class Journal:
    def __init__(self, runtime_dir: Path) -> None:
        self.path = Path(runtime_dir) / FILENAME

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable journal %s: %s", self.path, e)
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, key: str, value: Any, durable: bool = True) -> None:
        """Add `key`; `durable` syncs it to disk, for changes that outlive a machine
        crash (a rewritten resolv.conf), which costs a millisecond or more. A file that
        already holds other entries is always synced: they may need it."""
        data = self.load()
        durable = durable or bool(set(data) - {"pid", key})
        data["pid"] = os.getpid()
        data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_json(self.path, data, durable)

    def forget(self, key: str) -> None:
        data = self.load()
        if key not in data:
            return
        del data[key]
        if set(data) <= {"pid"}:
            self.path.unlink(missing_ok=True)
        else:
            _write_json(self.path, data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie no longer holds anything
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def cleanup_stale(runtime_dir: Path) -> bool:
    """Undo the changes a crashed previous run left behind; True if there was something.

    A journal owned by a live process other than us is left alone.
    """
    from client.netconf import dns, firewall, routes  # late: they import this module

    journal = Journal(runtime_dir)
    data = journal.load()
    if not data:
        journal.path.unlink(missing_ok=True)
        return False
    pid = data.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        log.info("netconf journal belongs to running process %d; not touching it", pid)
        return False
    log.warning("restoring network configuration left by a previous run (pid %s)", pid)
    # The kill switch is not undone here: it fails closed (firewall.KillSwitch), and
    # the next start adopts it. A "firewall" entry is an older version's, which did.
    held = (Path(runtime_dir) / firewall.RECORD).exists()
    for key, undo in (("routes", routes.undo), ("dns", dns.undo),
                      ("firewall", firewall.undo)):
        if key in data and not (key == "firewall" and held):
            try:
                undo(data[key])
            except Exception:  # keep going: restore as much as possible
                log.exception("could not undo stale %s configuration", key)
    journal.path.unlink(missing_ok=True)
    return True
