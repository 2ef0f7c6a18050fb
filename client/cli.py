"""`vpnclient`: the command line (CLI.md is the contract)."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__

EXIT_FAILURE, EXIT_USAGE, EXIT_AUTH = 1, 2, 3


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
    i = sub.add_parser("import", parents=[common],
                       help="store a .vpnprofile, .sswan or .mobileconfig (secrets: keyring)")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--json", action="store_true", help="the result as JSON")
    ls = sub.add_parser("list", parents=[common], help="the stored profiles")
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show", parents=[common], help="one stored profile, secrets masked")
    sh.add_argument("profile", metavar="PROFILE", help="name or uuid")
    sh.add_argument("--json", action="store_true")
    rm = sub.add_parser("remove", parents=[common],
                        help="delete a stored profile and its keyring entries")
    rm.add_argument("profile", metavar="PROFILE", help="name or uuid")
    pw = sub.add_parser("password", parents=[common],
                        help="store or forget a profile's secret in the keyring")
    pw_sub = pw.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("set", "store the password, PSK or PKCS#12 passphrase"),
                         ("clear", "forget the profile's secrets")):
        a = pw_sub.add_parser(action, parents=[common], help=text)
        a.add_argument("profile", metavar="PROFILE", help="name or uuid")
        a.add_argument("--p12", action="store_true",
                       help="the PKCS#12 passphrase (default: the password or PSK, or the "
                            "passphrase of a profile that has no password)")
        if action == "set":
            a.add_argument("--password-stdin", action="store_true",
                           help="read it from standard input instead of a prompt")
    s = sub.add_parser("status", parents=[common], help="state of the connection")
    s.add_argument("--json", action="store_true")
    sub.add_parser("disconnect", parents=[common], help="end the connection")
    ao = sub.add_parser("always-on", parents=[common],
                        help="(root) a profile the daemon connects whenever it starts")
    ao.add_argument("profile", nargs="?", metavar="PROFILE", help="name or uuid (root's store)")
    ao.add_argument("--credentials", metavar="FILE",
                    help="its secrets, one per line, in a file only root can read")
    ao.add_argument("--all-users", action="store_true",
                    help="every member of the daemon's group may see and end it")
    ao.add_argument("--off", action="store_true", help="no profile at daemon start")
    d = sub.add_parser("daemon", parents=[common],
                       help="the privileged service for the tray app and non-root users")
    d.add_argument("--group", default=None,
                   help="members of this group may use it (default: vpnclient)")
    return p


# Each command imports what it needs and no more: `status`, `list` and a `connect` that
# the daemon carries out start in a few tens of milliseconds, without the engine, the
# event loop or (unless a profile pins a certificate) X.509.
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "connect":
        return _connect(args)
    if args.command == "always-on":
        args.command = "always_on"
    if args.command in ("import", "list", "show", "remove", "password", "always_on"):
        if args.command != "list":
            _setup_logging(args.verbose)  # the keyring's messages
        from . import profile_commands

        return getattr(profile_commands, f"cmd_{args.command}")(args)
    if args.command in ("status", "disconnect", "daemon"):  # the daemon sets up its own log
        from . import daemon_client

        return getattr(daemon_client, f"cli_{args.command}")(args)
    _parser().print_help()
    return EXIT_USAGE


def _setup_logging(verbosity: int) -> None:
    import logging

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )


def _progress(line: str) -> None:
    print(line, flush=True)


def _find_profile(ref: str):
    """(profile, stored): a path to a profile file, else a stored name or uuid."""
    from pathlib import Path

    from .profile import load_profile_file
    from .store import ProfileStore

    path = Path(ref)
    if path.is_file():
        return load_profile_file(path), False
    return ProfileStore().find(ref), True


def _connect(args: argparse.Namespace) -> int:
    from . import daemon_client

    if daemon_client.use_daemon():  # always for users; for root when a daemon answers
        return daemon_client.cli_connect(args)
    return _connect_foreground(args)


def without_tls() -> None:
    """For the long-running processes (a foreground connect, the daemon), before asyncio
    is imported: asyncio loads the ssl module for TLS transports they never open, ~1.2 MB
    of resident memory and ~7 ms of start-up. A None entry is the import system's way to
    decline a module; asyncio works without ssl as on Python builds that lack it, and
    nothing else these processes load needs it."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def _connect_foreground(args: argparse.Namespace) -> int:
    """Root without a daemon: the engine runs in this process until disconnected."""
    without_tls()
    import asyncio

    from .config import ConfigError
    from .connect_secrets import gather_secrets
    from .control import runtime_dir
    from .credentials import Kind
    from .engine import Engine, Secrets
    from .ikev2.task_manager import RetransmitPolicy
    from .profile import ProfileError

    _setup_logging(args.verbose)
    try:
        profile, stored = _find_profile(args.profile)
    except ProfileError as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        retransmit = RetransmitPolicy.parse(os.environ.get("VPNCLIENT_RETRANSMIT", ""))
    except ValueError as exc:
        print(f"vpnclient: VPNCLIENT_RETRANSMIT: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rdir = runtime_dir()
    if rdir is None:  # only root runs the engine here, and root always has /run/vpnclient
        print("vpnclient: no runtime directory: set VPNCLIENT_RUNTIME_DIR", file=sys.stderr)
        return EXIT_FAILURE
    gathered = gather_secrets(profile, stored, args.password_stdin)
    profile = gathered.profile
    secrets = Secrets(password=gathered.values.get(Kind.PASSWORD),
                      p12_passphrase=gathered.values.get(Kind.P12))
    remembered = False

    def progress(line: str) -> None:
        nonlocal remembered
        _progress(line)
        # Remember what was typed only once the gateway has accepted it.
        if gathered.remember is not None and not remembered and engine.established:
            remembered = True
            gathered.remember()

    engine = Engine(
        profile, secrets, rdir, retransmit, progress=progress,
        error=lambda line: print(f"vpnclient: {line}", file=sys.stderr, flush=True),
    )
    try:
        code = asyncio.run(engine.run())
    except ConfigError as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if code == EXIT_AUTH and gathered.from_keyring:
        what = " and ".join(k.label for k in gathered.from_keyring)
        print(f"vpnclient: the gateway rejected the {what} from the keyring; change it "
              f"with `vpnclient password set {profile.uuid}`", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
