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
class ChildSaDeleted:
    spi_in: int
    spi_out: int


@dataclass(frozen=True)
class IkeSaClosed:
    """The IKE SA is gone. error is None when it ended as requested by us or the gateway."""

    reason: str
    error: IkeError | None = None
    by_peer: bool = False


Event = IkeSaEstablished | ChildSaEstablished | ChildSaDeleted | IkeSaClosed
