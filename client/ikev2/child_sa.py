"""CHILD_SAs of an IKE SA and the timing of rekeys (RFC 7296 1.3.3, 2.8).

A remote-access tunnel has one CHILD_SA; while it is being rekeyed up to three exist at
once (the old one, ours and, in a collision, the gateway's), so they live in a list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .events import ChildSaKeys, IpNetwork

REKEY_JITTER = 0.1  # rekeys happen up to 10 % early, so both ends rarely start at once (2.8.1)
HARD_MARGIN = 0.1  # an SA that could not be rekeyed dies 10 % after its nominal lifetime
RETRY_MIN, RETRY_MAX = 5.0, 15.0  # a failed rekey is tried again after this (strongSwan: 5-15 s)


class ChildState(Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # our CREATE_CHILD_SA for it is under way
    REKEYED = "rekeyed"  # replaced: kept for packets in flight until its Delete
    DELETING = "deleting"  # our Delete for it is under way


@dataclass(eq=False)
class ChildSa:
    keys: ChildSaKeys
    esp_proposal: str
    local_ts: list[IpNetwork]
    remote_ts: list[IpNetwork]
    state: ChildState = ChildState.INSTALLED
    outbound: bool = True  # our packets leave on it
    announced: bool = True  # the driver was told about it (a lost collision's SA is not)
    rekey_at: float | None = None
    expire_at: float | None = None
    replaced_by: ChildSa | None = None

    @property
    def spi_in(self) -> int:
        return self.keys.spi_in

    @property
    def spi_out(self) -> int:
        return self.keys.spi_out

    def __str__(self) -> str:
        return f"{self.spi_in:08x}_i {self.spi_out:08x}_o"


def fraction(rng: Callable[[int], bytes]) -> float:
    """A uniformly distributed number in [0, 1) from the injectable random source."""
    return int.from_bytes(rng(4), "big") / 2**32


def rekey_schedule(now: float, lifetime: float, rng: Callable[[int], bytes]
                   ) -> tuple[float, float]:
    """(soft, hard): when to rekey (jittered, never late) and when the SA is spent."""
    soft = now + lifetime * (1 - REKEY_JITTER * fraction(rng))
    return soft, now + lifetime * (1 + HARD_MARGIN)


def retry_time(now: float, hard: float | None, rng: Callable[[int], bytes]) -> float:
    """When to try a failed rekey again: after 5-15 s, but before the hard limit (and at
    most once a second as it nears)."""
    at = now + RETRY_MIN + (RETRY_MAX - RETRY_MIN) * fraction(rng)
    return at if hard is None else max(min(at, hard - 1.0), now + 1.0)


def reauth_time(now: float, lifetime: float, rng: Callable[[int], bytes]) -> float:
    """When to reauthenticate for a gateway's AUTH_LIFETIME (RFC 4478): early enough that
    a new IKE SA is up before the old one's authentication runs out."""
    margin = min(max(lifetime * 0.1, 5.0), 120.0) * (1 + 0.5 * fraction(rng))
    return now + max(lifetime - margin, lifetime / 2)
