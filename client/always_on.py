"""Always-on: a profile the daemon brings up whenever it starts, and keeps up.

Root sets it with `vpnclient always-on PROFILE [--credentials FILE] [--all-users]`,
which writes `always-on.json` next to root's profiles (/etc/vpnclient, or
$VPNCLIENT_ALWAYS_ON): the profile's uuid in root's store, where its secrets are, and
whether every member of the daemon's group may see and end the connection (else only
root may).

The secrets are never in the profile or the setting: they are in a file only root can
read (owned by root, no group or other permission bits, not a symlink), one per line in
`--password-stdin` order (the password or PSK, then the PKCS#12 passphrase), or in the
systemd credential `vpnclient-always-on` (LoadCredential=, read from
$CREDENTIALS_DIRECTORY). A system service has no user session, so no keyring to ask.

With the profile's kill switch on, the engine engages it before its first packet, so a
daemon started before the network (the unit is ordered before network-pre.target)
blocks from before the network is up, across a reboot too.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .connect_secrets import secret_kinds
from .credentials import Kind
from .profile import Profile, ProfileError
from .store import ProfileStore, default_config_dir

SETTING_NAME = "always-on.json"
CREDENTIAL_NAME = "vpnclient-always-on"  # the systemd credential's name
# Both are a few lines a root admin writes; anything larger is not one.
MAX_SETTING_BYTES = 4096
MAX_CREDENTIAL_BYTES = 8192
KEYS = {"profile", "credentials", "all-users"}
ALL_USERS = "all users"  # the owner of a connection every member may see and end


class AlwaysOnError(ValueError):
    """The setting or its credentials are unusable; names the key or file at fault."""


@dataclass(frozen=True)
class AlwaysOn:
    profile: Profile
    all_users: bool
    secrets: dict[Kind, str] = field(default_factory=dict, repr=False)

    def owner(self) -> dict[str, Any]:
        """The status's owner fields: root's connection, or everybody's."""
        return {"owner_uid": None, "owner": ALL_USERS} if self.all_users else \
            {"owner_uid": 0, "owner": "root"}


def setting_path() -> Path:
    env = os.environ.get("VPNCLIENT_ALWAYS_ON")
    return Path(env) if env else default_config_dir() / SETTING_NAME


def _root_only(path: Path, what: str, limit: int) -> bytes:
    """The content of a file only root may read or change; else AlwaysOnError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AlwaysOnError(f"{what} {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            raise AlwaysOnError(f"{what} {path}: must be a file of root's that nobody else "
                                f"may read or write (chown root: {path}; chmod 600 {path})")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise AlwaysOnError(f"{what} {path}: over {limit} bytes")
    return data


def read_credentials(profile: Profile, path: Path | None) -> dict[Kind, str]:
    """The profile's secrets from `path`, else the systemd credential, else none (a
    certificate profile without a PKCS#12 passphrase needs none)."""
    kinds = secret_kinds(profile)
    if path is None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        candidate = Path(creds) / CREDENTIAL_NAME if creds else None
        if candidate is None or not candidate.exists():
            if kinds:
                raise AlwaysOnError(f"credentials: profile '{profile.name}' needs its "
                                    f"{kinds[0].label}: give --credentials FILE")
            return {}
        path = candidate
    try:
        lines = _root_only(path, "credentials", MAX_CREDENTIAL_BYTES).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise AlwaysOnError(f"credentials {path}: not UTF-8 text") from exc
    if len(lines) < len(kinds):
        raise AlwaysOnError(f"credentials {path}: {len(kinds)} line(s) needed "
                            f"({', '.join(k.label for k in kinds)}), {len(lines)} found")
    return dict(zip(kinds, lines, strict=False))


def load(path: Path, store: ProfileStore | None = None) -> AlwaysOn | None:
    """The setting at `path` with its profile and secrets; None if there is none."""
    if not path.exists():
        return None
    try:
        setting = json.loads(_root_only(path, "always-on setting", MAX_SETTING_BYTES))
    except ValueError as exc:
        raise AlwaysOnError(f"always-on setting {path}: not JSON ({exc})") from exc
    if not isinstance(setting, dict):
        raise AlwaysOnError(f"always-on setting {path}: not a JSON object")
    if unknown := set(setting) - KEYS:
        raise AlwaysOnError(f"always-on setting {path}: unknown key {sorted(unknown)[0]!r}")
    ref, creds, all_users = (setting.get("profile"), setting.get("credentials"),
                             setting.get("all-users", False))
    if not isinstance(ref, str) or not ref:
        raise AlwaysOnError(f"always-on setting {path}: profile: a stored profile's uuid")
    if creds is not None and not isinstance(creds, str):
        raise AlwaysOnError(f"always-on setting {path}: credentials: a file name")
    if not isinstance(all_users, bool):
        raise AlwaysOnError(f"always-on setting {path}: all-users: true or false")
    try:
        profile = (store or ProfileStore()).find(ref)
    except ProfileError as exc:
        raise AlwaysOnError(f"always-on setting {path}: {exc}") from exc
    secrets = read_credentials(profile, Path(creds) if creds else None)
    return AlwaysOn(profile, all_users, secrets)


def save(path: Path, profile: Profile, credentials: Path | None, all_users: bool) -> None:
    """Write the setting (root's, 0600) after checking that it loads."""
    read_credentials(profile, credentials)
    setting = {"profile": profile.uuid, "all-users": all_users,
               "credentials": str(credentials.resolve()) if credentials else None}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(setting, f, indent=1)
    os.replace(tmp, path)
