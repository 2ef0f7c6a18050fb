"""Events: the one output channel of the IKE engine (drained with IkeSA.next_event())."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Any

from .errors import IkeError

IpAddress = IPv4Address | IPv6Address
IpInterface = IPv4Interface | IPv6Interface
IpNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True)
class IkeSaEstablished:
    ike_proposal: str
    local_id: str
    remote_id: str
    nat_local: bool  # we are behind a NAT (real detection, not the forced encapsulation)
    nat_remote: bool
    mobike: bool


@dataclass(frozen=True)
class ChildSaKeys:
    """ESP parameters of one CHILD_SA, from our point of view."""

    spi_in: int
    spi_out: int
    encr_id: int
    key_bits: int | None
    integ_id: int | None
    encr_key_in: bytes = field(repr=False)
    integ_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)


@dataclass(frozen=True)
class ChildSaEstablished:
    keys: ChildSaKeys
    esp_proposal: str
    local_ts: list[IpNetwork]
    remote_ts: list[IpNetwork]
    virtual_ips: list[IpInterface]
    dns_servers: list[IpAddress]
    dns_domains: list[str]


@dataclass(frozen=True)
class ChildSaRekeyed:
    """A new CHILD_SA replaces the one with inbound SPI `old_spi_in` (RFC 7296 1.3.3).

    Accept inbound packets on it at once, and keep the old inbound SA until its
    ChildSaDeleted. Send on it now if `outbound`; otherwise (the gateway rekeyed) only
    once the old SA is deleted, when the gateway is sure to have it installed (2.8).
    """

    old_spi_in: int
    keys: ChildSaKeys
    esp_proposal: str
    outbound: bool


@dataclass(frozen=True)
class ChildSaDeleted:
    spi_in: int
    spi_out: int
    # Inbound SPI of the CHILD_SA that replaced it (send on that one from now on), if any.
    replaced_by: int | None = None
    remaining: int = 0  # CHILD_SAs the IKE SA still has


@dataclass(frozen=True)
class IkeSaRekeyed:
    """The IKE SA has new keys and SPIs (RFC 7296 1.3.2); the CHILD_SAs stay as they are."""

    ike_proposal: str
    initiated: bool  # we started the winning exchange (else the gateway)


@dataclass(frozen=True)
class ReauthRequired:
    """Authenticate anew: build a new IKE SA from scratch, then delete this one (RFC 4478)."""

    reason: str


@dataclass(frozen=True)
class IkeSaRedirected:
    """The gateway sends us to another gateway (RFC 5685): an address or a host name.

    The IKE SA closes next (after deleting itself at the old gateway, if it was
    authenticated); the driver connects to `gateway` with IkeConfig.redirected_from set.
    """

    gateway: str
    established: bool  # the tunnel was up: move it rather than build it anew


@dataclass(frozen=True)
class IkeSaClosed:
    """The IKE SA is gone. error is None when it ended as requested by us or the gateway."""

    reason: str
    error: IkeError | None = None
    by_peer: bool = False


@dataclass(frozen=True)
class AddressesUpdated:
    """MOBIKE (RFC 4555): the gateway moved the IKE SA and its ESP SAs to our address
    `local`:`port` (the one the last update left from); NAT state as it now sees it."""

    local: str
    port: int
    nat_local: bool
    nat_remote: bool


@dataclass(frozen=True)
class AddressUpdateFailed:
    """MOBIKE: the gateway refused to move the SAs to `local` (UNACCEPTABLE_ADDRESSES,
    UNEXPECTED_NAT_DETECTED, ...); they stay where they were."""

    local: str
    reason: str


@dataclass(frozen=True)
class RevocationCheck:
    """The gateway's certificate chain verified (IKE_AUTH): the IKE SA waits, using
    nothing else of the message and sending nothing, until the driver checked the
    chain's revocation and called IkeSA.revocation_checked (RFC 5280, RFC 6960).

    `links` are auth/revocation.py Links, leaf first; `stapled` OCSP responses the
    gateway sent in CERT payloads (RFC 4806)."""

    links: tuple[Any, ...]
    stapled: tuple[bytes, ...]


Event = (
    RevocationCheck
    | IkeSaEstablished | ChildSaEstablished | ChildSaRekeyed | ChildSaDeleted | IkeSaRekeyed
    | ReauthRequired | IkeSaRedirected | IkeSaClosed | AddressesUpdated | AddressUpdateFailed
)
