"""DNS servers and search domains for the tunnel's lifetime.

With systemd-resolved: per-link settings via resolvectl (restore = `resolvectl revert`).
Otherwise /etc/resolv.conf is rewritten (original saved in the runtime dir, restored byte
for byte; a symlink is restored as the same symlink).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from client.netconf.journal import Journal, NetconfError, run

__all__ = ["DnsManager", "NetconfError", "undo"]

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
BACKUP_NAME = "resolv.conf.orig"


def resolved_active() -> bool:
    if not shutil.which("resolvectl") or not shutil.which("systemctl"):
        return False
    return (
        run(["systemctl", "is-active", "--quiet", "systemd-resolved"], check=False).returncode == 0
    )


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` atomically (tmp + rename in the same directory).

    A bind-mounted file (as `ip netns exec` sets up for /etc/resolv.conf) cannot be renamed
    over (EBUSY): it is rewritten in place, without first writing and syncing a
    temporary file that could not be used.
    """
    if _is_mount_point(path):
        _write_in_place(path, data)
        return
    # Unique per process: /etc is shared by every network namespace on the machine.
    tmp = path.with_name(f".{path.name}.vpnclient-{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
            raise
        _write_in_place(path, data)


def _write_in_place(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _is_mount_point(path: Path) -> bool:
    """Is `path` itself mounted on (a bind-mounted file)? From /proc/self/mountinfo, whose
    fifth field is the mount point, with space, tab, newline and backslash octal-escaped."""
    target = os.path.abspath(path)
    for c in "\\ \t\n":
        target = target.replace(c, f"\\{ord(c):03o}")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return any(line.split(" ", 5)[4] == target for line in f)
    except (OSError, IndexError):
        return False


def _render(
    original: bytes,
    servers: list[IPv4Address | IPv6Address],
    domains: list[str],
    ifname: str,
    backup: Path,
) -> bytes:
    search: list[str] = list(domains)
    options: list[str] = []
    for line in original.decode("utf-8", "replace").splitlines():
        words = line.split()
        if words and words[0] in ("search", "domain"):
            search += [w for w in words[1:] if w not in search]
        elif words and words[0] == "options":
            options.append(line.strip())
    lines = [
        f"# Written by vpnclient for the VPN on {ifname}. The original file is restored on",
        f"# disconnect (a copy is in {backup}; vpnclient also restores it at its next start).",
    ]
    # Only our servers: falling back to the previous ones would leak queries around the tunnel.
    lines += [f"nameserver {s}" for s in servers]
    if search:
        lines.append("search " + " ".join(search))
    lines += options
    return ("\n".join(lines) + "\n").encode()


class DnsManager:
    def __init__(
        self,
        runtime_dir: Path,
        resolv_conf: Path = RESOLV_CONF,
        backend: str | None = None,  # "resolved", "file" or None to detect
    ) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.resolv_conf = Path(resolv_conf)
        self.backend = backend
        self._journal = Journal(self.runtime_dir)
        self._state: dict[str, Any] | None = None

    def apply(
        self,
        servers: list[IPv4Address | IPv6Address],
        domains: list[str],
        ifname: str,
        route_all: bool = True,
    ) -> None:
        """Use `servers` (and search `domains`); with route_all every query goes to them."""
        if self._state is not None:
            raise NetconfError("DNS already applied; restore() first")
        if not servers:
            return
        backend = self.backend or ("resolved" if resolved_active() else "file")
        if backend == "resolved":
            self._apply_resolved(servers, domains, ifname, route_all)
        else:
            self._apply_file(servers, domains, ifname)

    def _apply_resolved(self, servers, domains, ifname, route_all) -> None:
        state = {"backend": "resolved", "ifname": ifname}
        # Per-link settings end with the link, so a machine crash takes them too: no sync.
        self._journal.record("dns", state, durable=False)
        self._state = state
        try:
            run(["resolvectl", "dns", ifname, *map(str, servers)])
            run(["resolvectl", "domain", ifname, *domains, *(["~."] if route_all else [])])
            if route_all:
                run(["resolvectl", "default-route", ifname, "yes"], check=False)
        except NetconfError:
            self.restore()
            raise

    def _apply_file(self, servers, domains, ifname) -> None:
        path = self.resolv_conf
        backup = self.runtime_dir / BACKUP_NAME
        state: dict[str, Any] = {"backend": "file", "path": str(path), "backup": str(backup)}
        if path.is_symlink():
            state["symlink"] = os.readlink(path)
        if path.exists():
            original = path.read_bytes()
            state["mode"] = path.stat().st_mode & 0o7777
        else:
            original = b""
            state["absent"] = True
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_file(backup, original, 0o600)
        self._journal.record("dns", state)
        self._state = state
        try:
            write_file(path, _render(original, servers, domains, ifname, backup))
        except OSError as e:
            self.restore()
            raise NetconfError(f"cannot write {path}: {e}") from e

    def restore(self) -> None:
        """Put the previous DNS configuration back; safe to call more than once."""
        if self._state is None:
            return
        undo(self._state)
        self._state = None
        self._journal.forget("dns")


def undo(state: dict[str, Any]) -> None:
    """Restore DNS from a journal entry."""
    if state.get("backend") == "resolved":
        run(["resolvectl", "revert", str(state["ifname"])], check=False)
        return
    path = Path(state["path"])
    backup = Path(state["backup"])
    if "symlink" in state:
        tmp = path.with_name(f".{path.name}.vpnclient-{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        os.symlink(state["symlink"], tmp)
        os.replace(tmp, path)
    elif state.get("absent"):
        path.unlink(missing_ok=True)
    else:
        try:
            data = backup.read_bytes()
        except FileNotFoundError:
            log.error("resolv.conf backup %s is gone; cannot restore %s", backup, path)
            return
        write_file(path, data, state.get("mode", 0o644))
    backup.unlink(missing_ok=True)
