"""`vpnclient connect/status/disconnect/daemon` through the control socket.

The command line (client/cli.py) calls one entry point per command:

    cli_connect(args)     connect through the daemon (args.profile, .password_stdin,
                          .verbose); returns once connected (0) or with CLI.md's exit code
    cli_status(args)      args.json; works with the daemon and the foreground engine
    cli_disconnect(args)  returns once the connection is torn down
    cli_daemon(args)      `vpnclient daemon` (args.group, .verbose)

and `use_daemon()` tells `connect` whether to go through the daemon: always for a
user, and for root when a daemon is running (root without one runs the engine in the
foreground, as before).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import control
from .control import CODE_AUTH, CODE_FAILURE, CODE_OK, CODE_USAGE, ControlClient

SERVICE_FIX = "start it with `sudo systemctl enable --now vpnclient`"


class Unavailable(OSError):
    """No server could be reached; the message says why and what to do."""


def _err(line: str) -> None:
    print(f"vpnclient: {line}", file=sys.stderr, flush=True)


def candidate_sockets() -> list[Path]:
    """Where a server may listen: this user's runtime directory (the foreground engine
    of root), then the daemon's. A user without a runtime directory of their own
    ($VPNCLIENT_RUNTIME_DIR, $XDG_RUNTIME_DIR) asks the daemon only."""
    rdir = control.runtime_dir()
    paths = [control.socket_path(rdir)] if rdir is not None else []
    paths.append(control.daemon_socket_path())
    return list(dict.fromkeys(paths))


def explain(exc: OSError, path: Path) -> str:
    if isinstance(exc, PermissionError):
        return (f"not allowed to reach the VPN service at {path}: ask an administrator to "
                f"add you to the group 'vpnclient' (sudo usermod -aG vpnclient "
                f"{_user()}), then log in again")
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return f"the VPN service is not running ({path}): {SERVICE_FIX}"
    return f"cannot reach the VPN service at {path}: {exc}"


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def open_client(paths: list[Path] | None = None, timeout: float | None = 5.0,
                on_event=None) -> tuple[ControlClient, Path]:
    """The first server that accepts a connection; Unavailable (with the fix) if none."""
    paths = paths or candidate_sockets()
    errors: list[tuple[OSError, Path]] = []
    for path in paths:
        try:
            return ControlClient.open(path, timeout, on_event), path
        except OSError as exc:
            errors.append((exc, path))
    # The most telling failure: a socket that exists but refused us beats a missing one.
    exc, path = next(((e, p) for e, p in errors if not isinstance(e, FileNotFoundError)),
                     errors[-1])
    raise Unavailable(explain(exc, path))


def daemon_status(timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's status response, or None if no daemon answers."""
    try:
        with ControlClient.open(control.daemon_socket_path(), timeout) as client:
            reply = client.call("status")
    except (OSError, ValueError):
        return None
    return reply if reply.get("server") == "daemon" else None


def use_daemon() -> bool:
    return os.geteuid() != 0 or daemon_status() is not None


# -- connect ---------------------------------------------------------------------------
def cli_connect(args: argparse.Namespace) -> int:
    from .connect_secrets import gather_secrets
    from .credentials import Kind
    from .profile import ProfileError, load_profile_file
    from .store import ProfileStore

    # The daemon parses the profile it is sent in full (an X.509 error there names the
    # key, as here); this process skips the X.509 parse and its ~50 ms import.
    try:
        path = Path(args.profile)
        if path.is_file():
            profile, stored = load_profile_file(path, parse_certificates=False), False
        else:
            profile, stored = ProfileStore().find(args.profile, parse_certificates=False), True
    except ProfileError as exc:
        _err(str(exc))
        return CODE_USAGE
    gathered = gather_secrets(profile, stored, args.password_stdin)
    secrets = {"password": gathered.values.get(Kind.PASSWORD),
               "p12_passphrase": gathered.values.get(Kind.P12)}
    verbose = getattr(args, "verbose", 0)

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") != "log":
            return
        if event.get("source") == "progress":
            print(event.get("message", ""), flush=True)
        elif verbose:
            print(f"{event.get('level', '')[:1].upper()} {event.get('source')}: "
                  f"{event.get('message')}", file=sys.stderr, flush=True)

    try:
        client, path = open_client([control.daemon_socket_path()], 10.0, on_event)
    except Unavailable as exc:
        _err(str(exc))
        return CODE_FAILURE
    with client:
        try:
            reply = client.call("subscribe")
            if not reply.get("ok"):
                _err(reply.get("error", "the VPN service refused the request"))
                return int(reply.get("code", CODE_FAILURE))
            client.settimeout(None)  # a connect may take minutes (retransmissions)
            reply = client.call("connect", profile=gathered.profile.to_dict(),
                                secrets=secrets, wait=True)
        except KeyboardInterrupt:
            _cancel()
            return CODE_FAILURE
        except (OSError, ValueError) as exc:
            _err(f"lost the VPN service ({path}): {exc}")
            return CODE_FAILURE
    if reply.get("ok"):
        if gathered.remember is not None:
            gathered.remember()
        return CODE_OK
    code = int(reply.get("code", CODE_FAILURE))
    if reply.get("reason") != "cancelled" or code != CODE_FAILURE:
        _err(reply.get("error", "the connection failed"))
    if code == CODE_AUTH and gathered.from_keyring:
        what = " and ".join(k.label for k in gathered.from_keyring)
        _err(f"the gateway rejected the {what} from the keyring; change it with "
             f"`vpnclient password set {profile.uuid}`")
    return code


def _cancel() -> None:
    try:
        with ControlClient.open(control.daemon_socket_path(), 5.0) as client:
            client.call("disconnect", wait=False)
    except (OSError, ValueError):
        pass


# -- status / disconnect -------------------------------------------------------------------
def cli_status(args: argparse.Namespace) -> int:
    try:
        client, _ = open_client()
        with client:
            reply = client.call("status")
    except (Unavailable, OSError, ValueError):
        reply = {"ok": True, "status": _status_without_server()}
    if not reply.get("ok"):
        _err(reply.get("error", "the VPN service refused the request"))
        return int(reply.get("code", CODE_FAILURE))
    status = reply.get("status") or {"state": "disconnected"}
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
        return CODE_OK
    print(f"state: {status.get('state')}")
    for key in ("profile", "owner", "gateway", "local_address", "virtual_ips", "dns", "routes",
                "ike_proposal", "esp_proposal", "established_at", "bytes_in", "bytes_out",
                "last_error", "blocked_since", "lift_with"):
        value = status.get(key)
        if value not in (None, [], ""):
            print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    if status.get("withheld"):  # another user's connection: the daemon says whose
        print(f"details: withheld: {status['withheld']}")
    return CODE_OK


def cli_disconnect(args: argparse.Namespace) -> int:
    try:
        client, path = open_client(timeout=30.0)
        with client:
            reply = client.call("disconnect", wait=True)
    except Unavailable as exc:
        if "not running" not in str(exc):
            _err(str(exc))
        elif (restored := _restore_after_crash()) is not None:
            print(restored)
            return CODE_OK
        elif _status_without_server()["state"] == "blocked":  # a user, the service down
            _err("traffic is blocked by a kill switch and the VPN service is not running: "
                 "start it (systemctl start vpnclient) and disconnect, or run "
                 "`sudo vpnclient disconnect`")
        else:
            _err("not connected")
        return CODE_FAILURE
    except (OSError, ValueError) as exc:
        _err(f"disconnect failed: {exc}")
        return CODE_FAILURE
    if not reply.get("ok"):
        _err(reply.get("error", "disconnect failed"))
        return int(reply.get("code", CODE_FAILURE))
    if reply.get("lifted"):
        print(KILL_SWITCH_LIFTED)
    if reply.get("server") != "daemon":
        # The foreground engine answers at once and removes its socket last: return
        # when the machine is restored, so that a script can rely on it.
        deadline = time.monotonic() + 15
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return CODE_OK


KILL_SWITCH_LIFTED = "kill switch lifted: traffic outside the tunnel flows again"


def _engine_dir() -> Path:
    """Where an engine run by root keeps its journal and kill switch record."""
    return control.runtime_dir() or control.daemon_socket_path().parent


def _status_without_server() -> dict[str, Any]:
    """No engine or daemon answers: disconnected, or blocked by a kill switch held."""
    from .netconf import firewall

    record = firewall.held(_engine_dir())
    if record is None:
        return {"state": "disconnected"}
    return firewall.blocked_status(record)


def _restore_after_crash() -> str | None:
    """Nothing is running: undo what a crashed run left (routes, DNS) and lift a kill
    switch held. `disconnect` is how a user asks for the network back without connecting
    again. Only root can change it; None if there was nothing to undo."""
    if os.geteuid() != 0:
        return None
    from .netconf import firewall
    from .netconf.journal import cleanup_stale

    rdir = _engine_dir()
    restored = cleanup_stale(rdir)
    killswitch = firewall.KillSwitch.adopt(rdir)
    if killswitch.engaged:
        killswitch.lift()
        return KILL_SWITCH_LIFTED
    if restored:
        return "restored the network configuration a crashed connection left behind"
    return None


def cli_daemon(args: argparse.Namespace) -> int:
    from .cli import without_tls

    without_tls()
    from .daemon import DEFAULT_GROUP, run_daemon

    group = getattr(args, "group", None) or os.environ.get("VPNCLIENT_GROUP", DEFAULT_GROUP)
    return run_daemon(group, getattr(args, "verbose", 0))
