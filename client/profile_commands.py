"""`vpnclient import | list | show | remove | password`.

Imported lazily by client/cli.py, so that `vpnclient --version` stays fast; what only
`import` and `show` need (the importers, X.509) is imported by them.
Exit codes follow CLI.md: 0 done, 2 usage or profile error, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .connect_secrets import prompt_for, read_secret, secret_kinds
from .credentials import Credentials, KeyringUnavailable, Kind
from .profile import Profile, ProfileError
from .store import ProfileStore

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _err(line: str) -> None:
    print(f"vpnclient: {line}", file=sys.stderr, flush=True)


def eap_only_warning(p: Profile) -> str | None:
    """One line when remote.eap-only is on together with EAP-MSCHAPv2, else None."""
    from .ikev2.auth.eap.methods import allowed_methods
    from .ikev2.constants import EapType

    if not p.eap_only or p.type not in ("ikev2-eap", "ikev2-eap-tls"):
        return None
    if EapType.MSCHAPV2 not in allowed_methods(p.type, p.eap_methods):
        return None
    return (f"warning: \"{p.name}\": remote.eap-only with EAP-MSCHAPv2 lets a gateway "
            "without a certificate collect an MSCHAPv2 response to attack the password "
            "offline; use EAP-TLS (type ikev2-eap-tls) for EAP-only")


def _gateway(p: Profile) -> str:
    port = "" if p.remote_port == 500 else f":{p.remote_port}"
    return f"{p.remote_addr}{port}"


# -- import ------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from .importers import commit, read_import_file
    from .mobileconfig import ReportLine

    try:
        items = read_import_file(args.file)
    except ProfileError as exc:
        _err(f"{exc}; nothing imported")
        return EXIT_USAGE
    store = ProfileStore()
    try:
        results = commit(items, store, Credentials(), notice=_err)
    except OSError as exc:
        _err(f"cannot write the profile store {store.dir}: {exc.strerror or exc}; "
             "nothing imported")
        return EXIT_FAILURE
    for r in results:
        warning = eap_only_warning(r.profile)
        if warning:
            _err(warning)
    if args.json:
        print(json.dumps([{
            "uuid": r.profile.uuid, "name": r.profile.name, "type": r.profile.type,
            "gateway": _gateway(r.profile), "replaced": r.replaced,
            "file": str(store.path_for(r.profile.uuid)),
            "keyring": [k.label for k in r.stored_secrets],
            "not_stored": [k.label for k in r.dropped_secrets],
            "used": [{"key": line.key, "as": line.detail} for line in r.report
                     if line.used and line.secret not in r.dropped_secrets],
            "ignored": [{"key": line.key, "why": line.detail} for line in r.report
                        if not line.used or line.secret in r.dropped_secrets],
        } for r in results], indent=2))
        return EXIT_OK
    for r in results:
        verb = "replaced" if r.replaced else "imported"
        print(f"{verb} \"{r.profile.name}\" ({r.profile.uuid}): {r.profile.type}, "
              f"gateway {_gateway(r.profile)}")
        for line in r.report:
            if line.secret in r.dropped_secrets:
                line = ReportLine(line.key, False, "not stored: no keyring works here; "
                                  "give it at connect")
            print(f"  {line}")
    return EXIT_OK


# -- list / show -------------------------------------------------------------------------
def _scan(store: ProfileStore) -> list[Profile]:
    profiles, bad = store.scan()
    for b in bad:
        _err(f"skipping {b.path}: {b.error}")
    return profiles


def cmd_list(args: argparse.Namespace) -> int:
    profiles = _scan(ProfileStore())
    rows = [{"name": p.name, "uuid": p.uuid, "gateway": _gateway(p), "type": p.type}
            for p in profiles]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no profiles (add one with `vpnclient import FILE`)")
        return EXIT_OK
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "gateway")}
    print(f"{'NAME':<{widths['name']}}  {'UUID':<36}  {'GATEWAY':<{widths['gateway']}}  TYPE")
    for r in rows:
        print(f"{r['name']:<{widths['name']}}  {r['uuid']:<36}  "
              f"{r['gateway']:<{widths['gateway']}}  {r['type']}")
    return EXIT_OK


def _find(ref: str) -> Profile:
    return ProfileStore().find(ref)


def _secret_states(p: Profile, creds: Credentials) -> dict[str, str]:
    states: dict[str, str] = {}
    for kind in secret_kinds(p):
        try:
            states[kind.label] = "in the keyring" if creds.get(p.uuid, kind) is not None \
                else "not stored (asked at connect)"
        except KeyringUnavailable as exc:
            states[kind.label] = f"unknown ({exc})"
    return states


def _cert_summary(der: bytes) -> str:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "(unreadable certificate)"


def masked(p: Profile) -> dict[str, Any]:
    """The stored profile for display: the PKCS#12 replaced by a placeholder."""
    data = p.to_dict(include_p12=False)
    if p.p12 is not None:
        data.setdefault("local", {})["p12"] = f"<PKCS#12, {len(p.p12)} bytes, encrypted>"
    return data


def cmd_show(args: argparse.Namespace) -> int:
    try:
        p = _find(args.profile)
    except ProfileError as exc:
        _err(str(exc))
        return EXIT_USAGE
    store = ProfileStore()
    secrets = _secret_states(p, Credentials())
    warning = eap_only_warning(p)
    if warning:
        _err(warning)
    if args.json:
        print(json.dumps({"uuid": p.uuid, "name": p.name, "type": p.type,
                          "gateway": _gateway(p), "file": str(store.path_for(p.uuid)),
                          "secrets": secrets, "profile": masked(p)}, indent=2))
        return EXIT_OK
    print(f"name:     {p.name}")
    print(f"uuid:     {p.uuid}")
    print(f"type:     {p.type}")
    print(f"gateway:  {', '.join(p.remote_addrs)} (identity {p.remote_id})")
    if p.remote_certs:
        for der in p.remote_certs:
            print(f"CA:       {_cert_summary(der)}")
    else:
        print("CA:       the system trust store")
    if p.eap_id:
        print(f"username: {p.eap_id}")
    if p.local_id:
        print(f"local id: {p.local_id}")
    if p.p12 is not None:
        print(f"PKCS#12:  {len(p.p12)} bytes, encrypted")
    for label, state in secrets.items():
        print(f"{label + ':':<9} {state}")
    print(f"file:     {store.path_for(p.uuid)}")
    data = masked(p)
    data.pop("remote", None)
    data.get("local", {}).pop("p12", None)
    for key in ("format", "uuid", "name", "type"):
        data.pop(key, None)
    if data.get("local") == {}:
        data.pop("local")
    if data:
        print("settings: " + json.dumps(data, indent=2).replace("\n", "\n          "))
    return EXIT_OK


# -- remove / password ---------------------------------------------------------------------
def cmd_remove(args: argparse.Namespace) -> int:
    try:
        p = _find(args.profile)
    except ProfileError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        gone = Credentials().delete_all(p.uuid)
    except KeyringUnavailable as exc:
        _err(f"{exc}: no keyring entries removed")
        gone = []
    ProfileStore().remove(p.uuid)
    extra = f" and its {' and '.join(k.label for k in gone)} from the keyring" if gone else ""
    print(f"removed \"{p.name}\" ({p.uuid}){extra}")
    return EXIT_OK


def _password_kind(p: Profile, p12: bool) -> Kind | None:
    kinds = secret_kinds(p)
    if p12:
        return Kind.P12 if Kind.P12 in kinds else None
    return kinds[0] if kinds else None


def cmd_password(args: argparse.Namespace) -> int:
    try:
        p = _find(args.profile)
    except ProfileError as exc:
        _err(str(exc))
        return EXIT_USAGE
    creds = Credentials()
    if args.action == "clear":
        try:
            gone = creds.delete_all(p.uuid) if not args.p12 else \
                [k for k in (Kind.P12,) if creds.delete(p.uuid, k)]
        except KeyringUnavailable as exc:
            _err(str(exc))
            return EXIT_FAILURE
        if gone:
            print(f"forgot the {' and '.join(k.label for k in gone)} of \"{p.name}\"")
        else:
            print(f"no secret of \"{p.name}\" was in the keyring")
        return EXIT_OK

    kind = _password_kind(p, args.p12)
    if kind is None:
        _err(f"type {p.type} has no PKCS#12 passphrase")
        return EXIT_USAGE
    secret = read_secret(args.password_stdin, prompt_for(p, kind))
    if not secret:
        _err(f"no {kind.label} given (a terminal or --password-stdin)")
        return EXIT_USAGE
    if kind is Kind.P12 and p.p12 is not None:
        from .ikev2.auth.keys import load_pkcs12

        try:
            load_pkcs12(p.p12, secret)
        except ValueError as exc:
            _err(f"local.p12: {exc}; nothing stored")
            return EXIT_USAGE
    try:
        creds.set(p.uuid, kind, secret)
    except KeyringUnavailable as exc:
        _err(f"{exc}: nothing stored; give the {kind.label} at connect "
             "(prompt or --password-stdin)")
        return EXIT_FAILURE
    print(f"stored the {kind.label} of \"{p.name}\" in the keyring")
    return EXIT_OK


def cmd_always_on(args: argparse.Namespace) -> int:
    """`vpnclient always-on [PROFILE [--credentials FILE] [--all-users] | --off]`: root's
    setting of a profile the daemon connects whenever it starts (client/always_on.py)."""
    import os
    from pathlib import Path

    from . import always_on

    path = always_on.setting_path()
    if args.off or args.profile:
        if os.geteuid() != 0:
            _err("always-on is root's setting: run it as root")
            return EXIT_FAILURE
    if args.off:
        path.unlink(missing_ok=True)
        print("always-on off (the daemon's current connection, if any, stays up until "
              "`vpnclient disconnect`)")
        return EXIT_OK
    if not args.profile:
        try:
            setting = always_on.load(path)
        except always_on.AlwaysOnError as exc:
            _err(str(exc))
            return EXIT_USAGE
        if setting is None:
            print("always-on: off")
        else:
            print(f"always-on: \"{setting.profile.name}\" ({setting.profile.uuid}), "
                  f"for {'all users' if setting.all_users else 'root only'}")
        return EXIT_OK
    try:
        p = _find(args.profile)
        always_on.save(path, p, Path(args.credentials) if args.credentials else None,
                       args.all_users)
    except (ProfileError, always_on.AlwaysOnError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"always-on: \"{p.name}\" ({p.uuid}) connects whenever the daemon starts "
          f"(now: systemctl restart vpnclient)")
    return EXIT_OK
