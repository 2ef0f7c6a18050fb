"""What the tray app says to a person: state names, failures with what to do, figures.

Pure functions (no Qt), so they are easy to test and to keep consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

STATE_LABELS = {
    "disconnected": "Disconnected",
    "connecting": "Connecting…",
    "connected": "Connected",
    "reconnecting": "Reconnecting…",
    "disconnecting": "Disconnecting…",
    "failed": "Connection failed",
    "blocked": "Not connected: traffic blocked",
}
# The icon of each connection state (icons/<name>.svg).
STATE_ICONS = {
    "disconnected": "disconnected",
    "connecting": "connecting",
    "disconnecting": "connecting",
    "connected": "connected",
    "reconnecting": "reconnecting",
    "failed": "error",
    "blocked": "blocked",  # the kill switch holds: nothing leaves outside the tunnel
}
ICON_STATES = ("disconnected", "connecting", "connected", "reconnecting", "error", "blocked")


@dataclass(frozen=True)
class Message:
    title: str
    text: str


def blocked(status: dict) -> Message:
    """The kill switch holds after a connection ended: why, and the one way out."""
    reason = status.get("blocked_reason") or status.get("last_error") or "the connection ended"
    return Message("Traffic is blocked: the VPN is not connected",
                   f"The kill switch of {status.get('profile') or 'the VPN profile'} keeps "
                   f"everything outside the tunnel blocked ({reason}). Connect again, or "
                   "choose Disconnect to lift it.")


def failure(reason: str | None, error: str | None) -> Message:
    """A failed connect or a lost connection, in words that say what to do.

    `reason` is the control protocol's word (client/control.py REASONS), `error` the
    engine's sentence, shown as the detail.
    """
    detail = (error or "").strip()
    if reason == "auth":
        return Message("The password was rejected",
                       "The VPN server did not accept your username and password (or "
                       "pre-shared key). Check them and connect again.")
    if reason == "untrusted":
        return Message("The server's certificate is not trusted by this profile",
                       "The server could not prove that it is the one this profile names, "
                       "so nothing was sent to it. Do not retry: ask your VPN administrator "
                       f"for an up-to-date profile. ({detail})")
    if reason == "unreachable":
        return Message("The VPN server does not answer",
                       "Check that this computer is online. If it is, the server may be "
                       f"down: try again later. ({detail})")
    if reason == "profile" and "p12" in detail:
        return Message("The certificate passphrase is wrong",
                       "The PKCS#12 passphrase did not unlock this profile's certificate. "
                       "Enter it again.")
    if reason == "profile":
        return Message("This profile cannot be used",
                       f"{detail}. Import a corrected profile from your VPN administrator.")
    if reason == "busy":
        return Message("Already connected", f"{detail}.")
    if reason == "not-authorized":
        return Message("You may not use the VPN service", detail)
    return Message("The connection failed", detail or "The VPN connection ended unexpectedly.")


def daemon_problem(text: str, refused: bool = False) -> Message:
    """The VPN service cannot be used: not running, or this user is not allowed."""
    if refused or "not allowed" in text:
        return Message("You may not use the VPN service", text)
    return Message("The VPN service is not running", text)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_rate(bytes_per_second: float) -> str:
    bits = bytes_per_second * 8
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if bits < 1000 or unit == "Gbit/s":
            return f"{bits:.0f} {unit}" if unit == "bit/s" else f"{bits:.1f} {unit}"
        bits /= 1000
    return f"{bits:.1f} Gbit/s"


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"
