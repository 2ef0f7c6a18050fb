"""The real Secret Service keyring of the tests (LAB.md: gnome-keyring in a D-Bus session).

`.ci/test` runs the suite inside `dbus-run-session` with an unlocked, throw-away
gnome-keyring and sets VPNCLIENT_REQUIRE_KEYRING=1. There (and in CI, `CI=true`) a test
that needs the keyring fails when none answers; a developer running plain `pytest`
outside such a session gets a skip that says how to run them.
"""

from __future__ import annotations

import os
import uuid as uuidlib

import pytest

SERVICE = "vpnclient"


def secret_service_problem() -> str | None:
    """None if a Secret Service keyring works in this process, else why not."""
    try:
        import keyring
        from keyring.backends import SecretService
    except ImportError as exc:
        return f"keyring/secretstorage not installed ({exc})"
    kr = keyring.get_keyring()
    if not isinstance(kr, SecretService.Keyring):
        return f"the keyring backend is {type(kr).__module__}.{type(kr).__name__}, " \
               "not the Secret Service"
    probe = f"probe-{uuidlib.uuid4()}"
    try:
        kr.set_password("vpnclient-test-probe", probe, "x")
        ok = kr.get_password("vpnclient-test-probe", probe) == "x"
        kr.delete_password("vpnclient-test-probe", probe)
    except Exception as exc:
        return f"the Secret Service does not answer ({type(exc).__name__}: {exc})"
    return None if ok else "the Secret Service lost a secret"


def keyring_required() -> bool:
    return bool(os.environ.get("VPNCLIENT_REQUIRE_KEYRING") or os.environ.get("CI"))


def require_secret_service() -> None:
    problem = secret_service_problem()
    if problem is None:
        return
    message = f"no Secret Service keyring: {problem}; run the tests with .ci/test"
    if keyring_required():
        pytest.fail(message)
    pytest.skip(message)


def stored_secret(uuid: str, kind: str = "") -> str | None:
    """What the keyring holds for a profile (kind "" the password/PSK, ":p12")."""
    import keyring

    return keyring.get_password(SERVICE, f"{uuid}{kind}")


def forget(uuid: str) -> None:
    import keyring
    from keyring.errors import PasswordDeleteError

    for kind in ("", ":p12"):
        try:
            keyring.delete_password(SERVICE, f"{uuid}{kind}")
        except PasswordDeleteError:
            pass
