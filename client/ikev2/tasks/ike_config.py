"""Configuration payload (RFC 7296 3.15): ask for a virtual IP and DNS servers."""

from __future__ import annotations

import logging

from ..constants import CfgAttr, CfgType, ExchangeType
from ..errors import PeerNotTrusted
from ..message import Message
from ..payloads import CpPayload
from .base import Status, Task

log = logging.getLogger(__name__)


class IkeConfig(Task):
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa) -> None:
        super().__init__(sa)
        self.sent = False

    def build(self, msg: Message) -> None:
        if self.sent:
            return
        cfg = self.sa.config
        cp = CpPayload.request_addresses(ipv4=cfg.request_ipv4, ipv6=cfg.request_ipv6, dns=True)
        # Reconnecting or reauthenticating: ask for the addresses we had, so that the
        # applications' connections survive (strongSwan hands them out again).
        for vip in cfg.requested_vips:
            wanted = CfgAttr.INTERNAL_IP4_ADDRESS if vip.version == 4 else \
                CfgAttr.INTERNAL_IP6_ADDRESS
            value = vip.packed if vip.version == 4 else vip.packed + bytes([128])
            cp.attributes = [(t, value if t == wanted and not v else v)
                             for t, v in cp.attributes]
        msg.payloads.append(cp)
        self.sent = True

    def process(self, msg: Message) -> Status:
        cp = msg.get(CpPayload)
        if cp is None:
            return Status.NEED_MORE if not self.sa.auth_done else Status.DONE
        if not self.sa.peer_authenticated:
            raise PeerNotTrusted("configuration received before the gateway authenticated")
        if cp.cfg_type != CfgType.CFG_REPLY:
            return Status.NEED_MORE
        sa = self.sa
        sa.virtual_ips = cp.addresses()
        sa.dns_servers = cp.dns_servers()
        sa.dns_domains = cp.dns_domains()
        log.info(
            "gateway assigned %s, DNS %s",
            ", ".join(str(a) for a in sa.virtual_ips) or "no address",
            ", ".join(str(d) for d in sa.dns_servers) or "none",
        )
        return Status.DONE
