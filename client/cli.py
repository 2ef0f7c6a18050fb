"""`vpnclient`: the command line (CLI.md is the contract)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__

EXIT_FAILURE, EXIT_USAGE = 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (repeatable); -v shows each IKE message")
    p = argparse.ArgumentParser(prog="vpnclient", parents=[common],
                                description="IKEv2/IPsec VPN client")
    p.add_argument("--version", action="version", version=f"vpnclient {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("connect", parents=[common], help="connect with a profile")
    c.add_argument("profile", metavar="PROFILE_OR_FILE")
    c.add_argument("--password-stdin", action="store_true",
                   help="read the EAP password, PSK or PKCS#12 passphrase from standard input")
    s = sub.add_parser("status", parents=[common], help="state of the connection")
    s.add_argument("--json", action="store_true")
    sub.add_parser("disconnect", parents=[common], help="end the connection")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.command == "connect":
        return _connect(args)
    if args.command == "status":
        return _status(args)
    if args.command == "disconnect":
        return _disconnect(args)
    _parser().print_help()
    return EXIT_USAGE


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )


def _progress(line: str) -> None:
    print(line, flush=True)


def _read_secret(args: argparse.Namespace, prompt: str) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return None


def _find_profile(ref: str):
    from .profile import ProfileError, load_profile_file

    path = Path(ref)
    if path.is_file():
        return load_profile_file(path)
    store = _config_dir()
    if store.is_dir():
        for f in sorted(store.iterdir()):
            if not f.is_file():
                continue
            try:
                prof = load_profile_file(f)
            except (ProfileError, OSError):
                continue
            if ref in (prof.uuid, prof.name):
                return prof
    raise ProfileError("profile", f"no profile file or stored profile named '{ref}'")


def _config_dir() -> Path:
    env = os.environ.get("VPNCLIENT_CONFIG_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/vpnclient")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vpnclient"


def _connect(args: argparse.Namespace) -> int:
    import asyncio

    from .config import ConfigError
    from .control import runtime_dir
    from .engine import Engine, Secrets
    from .ikev2.task_manager import RetransmitPolicy
    from .profile import ProfileError

    try:
        profile = _find_profile(args.profile)
    except ProfileError as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("vpnclient: connect needs root (the daemon comes later)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        retransmit = RetransmitPolicy.parse(os.environ.get("VPNCLIENT_RETRANSMIT", ""))
    except ValueError as exc:
        print(f"vpnclient: VPNCLIENT_RETRANSMIT: {exc}", file=sys.stderr)
        return EXIT_USAGE
    prompt = {
        "ikev2-psk": "Pre-shared key: ",
        "ikev2-cert": "PKCS#12 passphrase: ",
    }.get(profile.type, f"Password for {profile.eap_id or 'the VPN'}: ")
    if profile.shared_secret is not None and not args.password_stdin:
        secret: str | None = profile.shared_secret
    else:
        secret = _read_secret(args, prompt)
    secrets = Secrets(password=secret)
    if profile.type in ("ikev2-cert", "ikev2-eap-tls"):
        secrets = Secrets(p12_passphrase=secret)
    engine = Engine(
        profile, secrets, runtime_dir(), retransmit, progress=_progress,
        error=lambda line: print(f"vpnclient: {line}", file=sys.stderr, flush=True),
    )
    try:
        return asyncio.run(engine.run())
    except ConfigError as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _status(args: argparse.Namespace) -> int:
    from .control import request

    try:
        reply = request("status")
        status = reply["status"]
    except (OSError, ValueError, KeyError):
        status = {"state": "disconnected"}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"state: {status['state']}")
    for key in ("profile", "gateway", "local_address", "virtual_ips", "dns", "routes",
                "ike_proposal", "esp_proposal", "established_at", "bytes_in", "bytes_out",
                "last_error"):
        if key in status and status[key] not in (None, [], ""):
            value = status[key]
            print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    return 0


def _disconnect(args: argparse.Namespace) -> int:
    import time

    from .control import request, socket_path

    try:
        request("disconnect")
    except (OSError, ValueError):
        print("vpnclient: not connected", file=sys.stderr)
        return EXIT_FAILURE
    # Return once the engine has deleted the SAs and restored the machine, so that a
    # script can rely on it; the engine removes its socket last.
    deadline = time.monotonic() + 15
    while socket_path().exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
