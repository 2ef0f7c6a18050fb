"""The local end of the path to the gateway, as the kernel's routing table decides it.

A UDP socket connected to the gateway with the tunnel's firewall mark asks the kernel
which source address it would use: the mark makes the lookup skip the tunnel's own table
(netconf/routes.py), exactly as for the tunnel's real packets, so the answer follows
route metrics, policy rules and whatever the network manager did. That socket is then
the tunnel's new socket. netifaces lists our other addresses (RFC 4555).
"""

from __future__ import annotations

import logging
import socket
from ipaddress import ip_address
from pathlib import Path

import netifaces

log = logging.getLogger(__name__)

SO_MARK = 36  # socket.SO_MARK is missing from older Pythons
IFF_UP = 0x1
SYS_NET = Path("/sys/class/net")


def open_path(dest: tuple[str, int], mark: int, source: str | None = None) -> socket.socket:
    """A non-blocking UDP socket connected to `dest` along the path the kernel picks for
    the tunnel's packets (from `source` if given). Raises OSError when there is none."""
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
        sock.connect(dest)
    except OSError:
        sock.close()
        raise
    return sock


def source_towards(dest: tuple[str, int], mark: int) -> str | None:
    """The address our packets to `dest` would leave from now; None: no route."""
    try:
        sock = open_path(dest, mark)
    except OSError:
        return None
    with sock:
        return str(sock.getsockname()[0])


def _is_up(ifname: str) -> bool:
    try:
        return bool(int((SYS_NET / ifname / "flags").read_text(), 16) & IFF_UP)
    except (OSError, ValueError):
        return True  # no sysfs: count it


def local_addresses(exclude: set[str] = frozenset(), family: int | None = None) -> list[str]:
    """Our global addresses on interfaces that are up (not `exclude`, not loopback), in
    interface order: the candidates for a path and for ADDITIONAL_*_ADDRESS."""
    families = (family,) if family is not None else (socket.AF_INET, socket.AF_INET6)
    found: list[str] = []
    for ifname in netifaces.interfaces():
        if ifname in exclude or not _is_up(ifname):
            continue
        try:
            entries = netifaces.ifaddresses(ifname)
        except ValueError:  # the interface went away meanwhile
            continue
        for fam in families:
            for entry in entries.get(fam, []):
                text = str(entry.get("addr", "")).split("%", 1)[0]
                try:
                    addr = ip_address(text)
                except ValueError:
                    continue
                if addr.is_loopback or addr.is_link_local or addr.is_multicast \
                        or addr.is_unspecified:
                    continue
                if text not in found:
                    found.append(text)
    return found
