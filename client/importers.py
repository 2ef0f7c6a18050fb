"""`vpnclient import`: a `.vpnprofile`, `.sswan` or `.mobileconfig` into the store.

Two phases, so that nothing is half-imported:
1. `read_import_file` parses and validates everything (a PKCS#12 with its passphrase,
   when the file carries one) and raises ProfileError naming the key; nothing changed.
2. `commit` puts the secrets into the keyring, then the profiles into the store; if a
   step fails, what was done is undone (previous files and keyring entries put back).
A secret found in the file goes to the keyring only. Without a working keyring it is
dropped, with a notice: the user gives it at connect (prompt or --password-stdin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import mobileconfig
from .connect_secrets import secret_kinds
from .credentials import Credentials, KeyringUnavailable, Kind
from .mobileconfig import ReportLine
from .profile import (
    IGNORED_KEYS,
    MAX_PROFILE_BYTES,
    SECRET_TYPES,
    Profile,
    ProfileError,
    parse_profile,
    profile_from_dict,
)
from .store import ProfileStore


@dataclass
class ImportItem:
    profile: Profile
    secrets: dict[Kind, str] = field(default_factory=dict, repr=False)
    report: list[ReportLine] = field(default_factory=list)


@dataclass
class ImportResult:
    profile: Profile
    replaced: bool
    stored_secrets: list[Kind]
    dropped_secrets: list[Kind]
    report: list[ReportLine]


def read_import_file(path: str | Path) -> list[ImportItem]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise ProfileError(str(p), f"cannot read file ({e.strerror or e})") from None
    if p.suffix.lower() == ".mobileconfig" or mobileconfig.is_plist(data):
        return [_from_mobileconfig(c) for c in mobileconfig.convert(data, str(p))]
    return [_from_json(parse_profile(data, source=str(p)))]


def _from_json(profile: Profile) -> ImportItem:
    item = ImportItem(profile)
    if profile.shared_secret is not None:
        item.secrets[Kind.PASSWORD] = profile.shared_secret
        what = "pre-shared key" if profile.type == "ikev2-psk" else "EAP password"
        item.report.append(ReportLine("local.shared_secret", True, f"the keyring ({what})",
                                      Kind.PASSWORD))
    elif "local.shared_secret" in profile.ignored:
        item.report.append(ReportLine("local.shared_secret", False,
                                      f"type {profile.type} has no password; not kept"))
    for key in IGNORED_KEYS:
        if key in profile.ignored:
            item.report.append(ReportLine(key, False, "kept, not applied on desktop Linux"))
    for key in profile.unknown:
        item.report.append(ReportLine(key, False, "unknown key, kept in the stored profile"))
    return item


def _from_mobileconfig(conv: mobileconfig.Converted) -> ImportItem:
    try:
        profile = profile_from_dict(conv.data)
    except ProfileError as exc:
        raise ProfileError(conv.error_key(exc.key), exc.reason) from None
    passphrase = conv.secrets.get(Kind.P12)
    if profile.p12 is not None and passphrase is not None:
        from .ikev2.auth.keys import load_pkcs12

        try:
            load_pkcs12(profile.p12, passphrase)
        except ValueError as exc:
            raise ProfileError(conv.origin.get("local.p12.passphrase", "local.p12"),
                               str(exc)) from None
    secrets = dict(conv.secrets)
    if Kind.PASSWORD in secrets and profile.type not in SECRET_TYPES:
        del secrets[Kind.PASSWORD]
    return ImportItem(profile, secrets, list(conv.report))


def commit(items: list[ImportItem], store: ProfileStore, creds: Credentials,
           notice=lambda line: None) -> list[ImportResult]:
    """Phase 2: keyring first, then the store; all or nothing. `notice` gets one line
    when secrets had to be dropped because no keyring works."""
    undo_keyring: list[tuple[str, Kind, str | None]] = []
    undo_files: list[tuple[str, bytes | None]] = []
    results = []
    keyring_error: str | None = None
    try:
        for item in items:
            uuid = item.profile.uuid
            previous_file = store.read_bytes(uuid)
            stored: list[Kind] = []
            dropped: list[Kind] = []
            for kind, secret in item.secrets.items():
                if keyring_error is None:
                    try:
                        old = creds.get(uuid, kind)
                        creds.set(uuid, kind, secret)
                        undo_keyring.append((uuid, kind, old))
                        stored.append(kind)
                        continue
                    except KeyringUnavailable as exc:
                        keyring_error = str(exc)
                dropped.append(kind)
            # A secret the new type cannot use would linger unseen: forget it.
            if keyring_error is None and previous_file is not None:
                for kind in Kind:
                    if kind not in secret_kinds(item.profile) and kind not in stored:
                        try:
                            old = creds.get(uuid, kind)
                            if old is not None:
                                creds.delete(uuid, kind)
                                undo_keyring.append((uuid, kind, old))
                        except KeyringUnavailable:
                            pass
            store.save(item.profile)
            undo_files.append((uuid, previous_file))
            results.append(ImportResult(item.profile, previous_file is not None, stored,
                                        dropped, item.report))
    except BaseException:
        for uuid, previous in reversed(undo_files):
            store.restore(uuid, previous)
        for uuid, kind, old in reversed(undo_keyring):
            try:
                if old is None:
                    creds.delete(uuid, kind)
                else:
                    creds.set(uuid, kind, old)
            except KeyringUnavailable:
                pass
        raise
    if keyring_error is not None and any(r.dropped_secrets for r in results):
        notice(f"{keyring_error}: the secret in the file was not stored; give it at "
               "connect (prompt or --password-stdin)")
    return results
