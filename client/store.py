"""The profile store: `$VPNCLIENT_CONFIG_DIR/<uuid>.vpnprofile`, one file per profile.

The directory is mode 0700 and every file 0600. A stored file is the profile as
`Profile.to_json()` writes it: never a password, PSK or passphrase (those are in the
keyring, client/credentials.py); a PKCS#12 stays the encrypted container it was
imported as (`local.p12`), unlocked at connect with the passphrase from the keyring.
Writes go to a temporary file in the same directory and are renamed into place, so a
reader sees the old profile or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .profile import Profile, ProfileError, load_profile_file

SUFFIX = ".vpnprofile"
DIR_MODE = 0o700
FILE_MODE = 0o600


def default_config_dir() -> Path:
    """CLI.md: $VPNCLIENT_CONFIG_DIR, else /etc/vpnclient for root, else XDG config."""
    env = os.environ.get("VPNCLIENT_CONFIG_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/vpnclient")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vpnclient"


@dataclass(frozen=True)
class Unreadable:
    """A file in the store that does not parse (hand-edited, or from a newer version)."""

    path: Path
    error: str


class ProfileStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_config_dir()

    def path_for(self, uuid: str) -> Path:
        return self.dir / f"{uuid}{SUFFIX}"

    # -- reading ------------------------------------------------------------------------
    def _files(self) -> Iterator[Path]:
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            if path.is_file() and not path.name.startswith("."):
                yield path

    def scan(self, *, parse_certificates: bool = True
             ) -> tuple[list[Profile], list[Unreadable]]:
        """Every stored profile (sorted by name), and the files that failed to parse
        (parse_certificates: see load_profile_file)."""
        profiles: list[Profile] = []
        bad: list[Unreadable] = []
        for path in self._files():
            try:
                profiles.append(load_profile_file(path,
                                                  parse_certificates=parse_certificates))
            except ProfileError as exc:
                bad.append(Unreadable(path, str(exc)))
        profiles.sort(key=lambda p: (p.name.casefold(), p.uuid))
        return profiles, bad

    def get(self, uuid: str) -> Profile | None:
        path = self.path_for(uuid)
        return load_profile_file(path) if path.is_file() else None

    def find(self, ref: str, *, parse_certificates: bool = True) -> Profile:
        """The profile whose uuid or name is `ref`; ProfileError (key "profile") if none
        or if the name is ambiguous."""
        profiles, _ = self.scan(parse_certificates=parse_certificates)
        wanted = ref.strip().lower()
        for p in profiles:
            if p.uuid == wanted:
                return p
        named = [p for p in profiles if p.name == ref] or \
                [p for p in profiles if p.name.casefold() == ref.casefold()]
        if len(named) == 1:
            return named[0]
        if named:
            uuids = ", ".join(p.uuid for p in named)
            raise ProfileError("profile", f"{len(named)} stored profiles are named "
                                          f"'{ref}'; use the uuid ({uuids})")
        raise ProfileError("profile", f"no stored profile named '{ref}' (see `vpnclient list`)")

    # -- writing ------------------------------------------------------------------------
    def ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        if self.dir.stat().st_mode & 0o077:
            self.dir.chmod(DIR_MODE)  # the store holds PKCS#12 containers and identities

    def read_bytes(self, uuid: str) -> bytes | None:
        path = self.path_for(uuid)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(self, uuid: str, data: bytes) -> None:
        """Atomically replace (or create) the file of `uuid` with `data`, mode 0600."""
        self.ensure_dir()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp made it 0600
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path_for(uuid))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._sync_dir()

    def save(self, profile: Profile) -> None:
        self.write_bytes(profile.uuid, profile.to_json().encode())

    def restore(self, uuid: str, previous: bytes | None) -> None:
        """Put back what `read_bytes` returned before a change (None: no file)."""
        if previous is None:
            self.path_for(uuid).unlink(missing_ok=True)
        else:
            self.write_bytes(uuid, previous)

    def remove(self, uuid: str) -> bool:
        try:
            self.path_for(uuid).unlink()
        except FileNotFoundError:
            return False
        self._sync_dir()
        return True

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
