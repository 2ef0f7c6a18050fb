"""What the lab, the desktop tests and the package tests need from the machine, and
which Debian package brings each piece.

One table, so that a missing piece is reported in one line naming the package to
install (instead of a strongSwan stack trace halfway through a test), and so that a test
can check that `.ci/install` installs every package named here.

    python3 -m tests.lab.prereqs        # prints what is missing; exit 1 if anything is
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")


@dataclass(frozen=True)
class Need:
    """A command on PATH, or a file, that a Debian package provides."""

    what: str  # a command name, or an absolute path
    package: str
    why: str

    def present(self) -> bool:
        if self.what.startswith("/"):
            return Path(self.what).exists()
        return shutil.which(self.what) is not None


def _plugin(name: str, package: str, why: str) -> Need:
    path = str(PLUGIN_DIR / f"libstrongswan-{name}.so")
    return Need(path, package, f"charon plugin {name}: {why}")


# The strongSwan gateway and reference client, the lab network and its probes.
LAB: tuple[Need, ...] = (
    Need("/usr/lib/ipsec/charon", "strongswan-charon", "the lab gateway"),
    Need("swanctl", "strongswan-swanctl", "configures the lab gateway"),
    Need("pki", "strongswan-pki", "makes the lab's CAs and certificates"),
    # Debian only *recommends* the next two packages: an install without recommends
    # lacks them, and then ECDSA keys, x25519, AES-GCM and EAP-MSCHAPv2 fail.
    _plugin("openssl", "libstrongswan-standard-plugins", "ECDSA, x25519, AES-GCM, RSA-PSS"),
    _plugin("gcm", "libstrongswan-standard-plugins", "AES-GCM"),
    _plugin("eap-mschapv2", "libcharon-extauth-plugins", "EAP-MSCHAPv2"),
    _plugin("kernel-libipsec", "libcharon-extra-plugins", "userspace ESP (no ESP in this kernel)"),
    _plugin("eap-md5", "libcharon-extra-plugins", "EAP-MD5"),
    _plugin("eap-tls", "libcharon-extra-plugins", "EAP-TLS"),
    _plugin("eap-identity", "libcharon-extra-plugins", "EAP-Identity"),
    _plugin("curve25519", "libstrongswan-extra-plugins", "x25519 without openssl"),
    _plugin("vici", "strongswan-swanctl", "swanctl's control interface"),
    _plugin("x509", "libstrongswan", "certificates"),
    Need("ip", "iproute2", "namespaces, veths, routes"),
    Need("ss", "iproute2", "waiting for listening sockets"),
    Need("unshare", "util-linux", "a private mount namespace per charon"),
    Need("nsenter", "util-linux", "swanctl inside charon's namespaces"),
    Need("ping", "iputils-ping", "traffic through the tunnel"),
    Need("iperf3", "iperf3", "throughput and load through the tunnel"),
    Need("iptables", "iptables", "NAT, loss and blocked paths in the lab"),
    Need("iptables-legacy-save", "iptables", "the lab's leftover checks"),
    Need("nft", "nftables", "the kill switch"),
    Need("openssl", "openssl", "PKCS#12 files for the lab"),
    Need("sysctl", "procps", "forwarding in the lab router"),
)

# The tray application's tests: a real X server, a tray host, screenshots, D-Bus, a keyring.
DESKTOP: tuple[Need, ...] = (
    Need("Xvfb", "xvfb", "a real X server"),
    Need("trayer", "trayer", "a tray host"),
    Need("import", "imagemagick", "screenshots of the tray"),
    Need("xwininfo", "x11-utils", "finding the tray icon's window"),
    Need("dbus-daemon", "dbus-daemon", "a private session bus"),
    Need("dbus-run-session", "dbus-bin", ".ci/test's D-Bus session"),
    Need("gnome-keyring-daemon", "gnome-keyring", "a real Secret Service"),
)

# Building the .deb and checking what it installs.
PACKAGE: tuple[Need, ...] = (
    Need("dpkg-deb", "dpkg", "building the .deb"),
    Need("fakeroot", "fakeroot", "building the .deb as root-owned files"),
    Need("desktop-file-validate", "desktop-file-utils", "checking the .desktop files"),
    Need("update-mime-database", "shared-mime-info", "the profile MIME type"),
    Need("systemd-analyze", "systemd", "checking the service unit"),
    Need("/usr/bin/python3", "python3", "the packaged vpnclient's interpreter"),
)

ALL: tuple[Need, ...] = LAB + DESKTOP + PACKAGE


def missing(needs: tuple[Need, ...] = ALL) -> list[Need]:
    return [n for n in needs if not n.present()]


def describe(absent: list[Need]) -> str:
    """One line: the Debian packages to install, each with what was missing."""
    by_package: dict[str, list[str]] = {}
    for need in absent:
        by_package.setdefault(need.package, []).append(f"{need.what} ({need.why})")
    return "missing Debian package(s): " + "; ".join(
        f"{pkg} [{', '.join(items)}]" for pkg, items in by_package.items()
    ) + " - run .ci/install"


def unavailable(needs: tuple[Need, ...]) -> str | None:
    """None when everything in needs is present, else the one line that says what to install."""
    absent = missing(needs)
    return describe(absent) if absent else None


def main() -> int:
    reason = unavailable(ALL)
    print(reason or "all prerequisites present")
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
