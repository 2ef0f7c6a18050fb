"""Secrets in the OS keyring (VPNPROFILE.md): EAP password, PSK, PKCS#12 passphrase.

Every entry lives under service `vpnclient`; the keyring "username" names the profile
and the kind of secret:

    <uuid>        the EAP password, or the PSK of an `ikev2-psk` profile
    <uuid>:p12    the passphrase of the profile's PKCS#12

The backend is whatever `keyring` picks for the user (Secret Service, KWallet, ...).
When none works (a headless server: keyring's `fail` or `null` backend, or a D-Bus
error), `KeyringUnavailable` says why and the caller falls back to `--password-stdin`
or a prompt. Backends that would write the secret to a file in clear text are refused.
"""

from __future__ import annotations

import enum
from typing import Any

SERVICE = "vpnclient"


class Kind(enum.Enum):
    PASSWORD = ""  # EAP password or PSK
    P12 = ":p12"  # PKCS#12 passphrase

    @property
    def label(self) -> str:
        return "PKCS#12 passphrase" if self is Kind.P12 else "password"


def entry_name(uuid: str, kind: Kind) -> str:
    """The keyring username of one secret of one profile."""
    return f"{uuid}{kind.value}"


class KeyringUnavailable(RuntimeError):
    """No usable keyring backend; the message says why, for the user."""


def _is_insecure(backend: Any) -> bool:
    # keyrings.alt's file backends keep secrets in a file under the home directory
    # (PlaintextKeyring in clear text); the contract is "never a plaintext file".
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    return name.startswith("keyrings.alt.") or "plaintext" in name.lower()


class Credentials:
    """The profile secrets in the user's keyring. Every call may raise KeyringUnavailable."""

    def __init__(self, backend: Any | None = None) -> None:
        self._backend = backend

    def backend(self) -> Any:
        if self._backend is None:
            import keyring  # slow to import (entry points): only when a secret is needed
            from keyring.backends import fail, null

            kr = keyring.get_keyring()
            if isinstance(kr, fail.Keyring | null.Keyring):
                raise KeyringUnavailable("no keyring backend works here")
            if _is_insecure(kr):
                raise KeyringUnavailable(
                    f"the keyring backend {type(kr).__name__} stores secrets in a file; "
                    "refusing it")
            self._backend = kr
        return self._backend

    def describe(self) -> str:
        kr = self.backend()
        return f"{type(kr).__module__.rsplit('.', 1)[-1]} keyring"

    def get(self, uuid: str, kind: Kind) -> str | None:
        return self._call("get_password", SERVICE, entry_name(uuid, kind))

    def set(self, uuid: str, kind: Kind, secret: str) -> None:
        self._call("set_password", SERVICE, entry_name(uuid, kind), secret)

    def delete(self, uuid: str, kind: Kind) -> bool:
        """Forget one secret; False if there was none."""
        from keyring.errors import PasswordDeleteError

        try:
            self._call("delete_password", SERVICE, entry_name(uuid, kind))
        except PasswordDeleteError:
            return False
        return True

    def delete_all(self, uuid: str) -> list[Kind]:
        """Forget every secret of a profile; the kinds that were there."""
        return [kind for kind in Kind if self.delete(uuid, kind)]

    def _call(self, method: str, *args: str) -> Any:
        from keyring.errors import KeyringError, PasswordDeleteError

        backend = self.backend()
        try:
            return getattr(backend, method)(*args)
        except PasswordDeleteError:
            raise
        except KeyringError as exc:
            raise KeyringUnavailable(f"the keyring failed: {exc}") from None
        except Exception as exc:  # D-Bus and backend errors are not all KeyringErrors
            raise KeyringUnavailable(
                f"the keyring failed: {type(exc).__name__}: {exc}") from None
