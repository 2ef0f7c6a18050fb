"""Which EAP methods a profile allows: its type fixes a default, `local.eap-methods` narrows
or (for EAP-MD5) widens it. Anything else the gateway proposes is answered with a Nak.

EAP-MD5 is never a default: it derives no key and hands over a hash of the password that
anyone who sees it can attack offline. It needs `local.eap-methods` naming "md5".
"""

from __future__ import annotations

from client.ikev2.constants import EapType

METHOD_NAMES: dict[str, int] = {
    "mschapv2": EapType.MSCHAPV2,
    "tls": EapType.TLS,
    "md5": EapType.MD5_CHALLENGE,
}
DISPLAY = {EapType.MSCHAPV2: "EAP-MSCHAPv2", EapType.TLS: "EAP-TLS",
           EapType.MD5_CHALLENGE: "EAP-MD5"}

# Per profile type: (the default, in order of preference; every method it may name).
_BY_TYPE: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "ikev2-eap": (("mschapv2",), frozenset({"mschapv2", "md5"})),
    "ikev2-eap-tls": (("tls",), frozenset({"tls"})),
    "ikev2-cert-eap": (("mschapv2", "tls"), frozenset({"mschapv2", "tls", "md5"})),
}
KEY = "local.eap-methods"


def display(eap_type: int) -> str:
    return DISPLAY.get(eap_type, f"EAP type {eap_type}")


def check_names(profile_type: str, names: list[tuple[str, str]]) -> tuple[str, ...]:
    """Validate `local.eap-methods` items ((key path, value)); returns the names in order.

    Raises ValueError(key path, reason) for the first bad item.
    """
    if profile_type not in _BY_TYPE:
        raise ValueError(KEY, f"type '{profile_type}' uses no EAP")
    allowed = _BY_TYPE[profile_type][1]
    out: list[str] = []
    for path, name in names:
        if name not in METHOD_NAMES:
            raise ValueError(path, f"unknown EAP method '{name}' (known: mschapv2, tls, md5)")
        if name not in allowed:
            raise ValueError(path, f"'{name}' is not possible with type '{profile_type}'")
        if name not in out:
            out.append(name)
    if names and not out:
        raise ValueError(KEY, "must name at least one method")
    return tuple(out)


def allowed_methods(profile_type: str, names: tuple[str, ...] = ()) -> tuple[int, ...]:
    """EAP types the profile allows, in order of preference (the order of our Nak)."""
    chosen = names or _BY_TYPE[profile_type][0]
    return tuple(METHOD_NAMES[n] for n in chosen)
