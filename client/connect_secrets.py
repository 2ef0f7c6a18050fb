"""The secrets `connect` authenticates with: standard input, the keyring, the profile
file, a prompt (gather_secrets), and the prompts `password set` shares.

On the path of every `vpnclient connect`, so it imports only what that needs.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

from .credentials import Credentials, KeyringUnavailable, Kind
from .profile import SECRET_TYPES, Profile
from .store import ProfileStore


def _err(line: str) -> None:
    print(f"vpnclient: {line}", file=sys.stderr, flush=True)


def secret_kinds(profile: Profile) -> list[Kind]:
    """The secrets a profile of this type needs at connect, in `--password-stdin` order."""
    kinds = []
    if profile.type in SECRET_TYPES:
        kinds.append(Kind.PASSWORD)
    if profile.needs_p12:
        kinds.append(Kind.P12)
    return kinds


def prompt_for(p: Profile, kind: Kind) -> str:
    if kind is Kind.P12:
        return "PKCS#12 passphrase: "
    if p.type == "ikev2-psk":
        return "Pre-shared key: "
    return f"Password for {p.eap_id or 'the VPN'}: "


def read_secret(from_stdin: bool, prompt: str) -> str | None:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return None


def _ask_yes(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("", "y", "yes")


@dataclasses.dataclass
class ConnectSecrets:
    profile: Profile  # with a username typed at the prompt
    values: dict[Kind, str] = dataclasses.field(default_factory=dict, repr=False)
    from_keyring: set[Kind] = dataclasses.field(default_factory=set)
    remember: Callable[[], None] | None = None  # call once the gateway accepted them


def gather_secrets(profile: Profile, stored: bool, password_stdin: bool) -> ConnectSecrets:
    """What `connect` authenticates with, in this order: standard input (one line per
    secret: the password or PSK, then the PKCS#12 passphrase), the keyring, the
    profile file's own `local.shared_secret`, a prompt on a terminal.

    On a terminal a missing username and secrets are asked for, with an offer to
    remember them (the username in the stored profile, secrets in the keyring) once
    the gateway has accepted them.
    """
    out = ConnectSecrets(profile)
    kinds = secret_kinds(profile)
    if password_stdin:
        for kind in kinds:
            value = read_secret(True, "")
            if value is not None:
                out.values[kind] = value
        return out

    tty = sys.stdin.isatty()
    store = ProfileStore()
    new_username = None
    if profile.type in ("ikev2-eap", "ikev2-cert-eap") and not profile.eap_id and tty:
        try:
            new_username = input("Username: ").strip() or None
        except EOFError:
            new_username = None
        if new_username:
            out.profile = dataclasses.replace(profile, eap_id=new_username)

    creds = Credentials()
    keyring_error: str | None = None
    typed: dict[Kind, str] = {}
    for kind in kinds:
        value = None
        if keyring_error is None:
            try:
                value = creds.get(profile.uuid, kind)
            except KeyringUnavailable as exc:
                keyring_error = str(exc)
                _err(f"{exc}; secrets are neither read from nor saved to a keyring "
                     "(use --password-stdin or the prompt)")
        if value is not None:
            out.from_keyring.add(kind)
        elif kind is Kind.PASSWORD and profile.shared_secret is not None:
            value = profile.shared_secret
        elif tty:
            value = read_secret(False, prompt_for(out.profile, kind))
            if value:
                typed[kind] = value
        if value is not None:
            out.values[kind] = value

    if stored and tty and (typed and keyring_error is None or new_username):
        what = [k.label for k in typed] if keyring_error is None else []
        if new_username:
            what.insert(0, "username")
        if _ask_yes(f"Remember the {' and '.join(what)} for \"{profile.name}\"? [Y/n] "):
            def remember() -> None:
                if new_username:
                    store.save(out.profile)
                for kind, value in typed.items():
                    try:
                        creds.set(profile.uuid, kind, value)
                    except KeyringUnavailable as exc:
                        _err(f"{exc}: the {kind.label} was not remembered")
                        return
            out.remember = remember
    return out
