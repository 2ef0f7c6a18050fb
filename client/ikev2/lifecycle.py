"""An established IKE SA over time: rekeying both ways, liveness, the gateway's Deletes.

The IkeSA hands over once IKE_AUTH is done. From then on this decides when to rekey the
CHILD_SA and the IKE SA (lifetimes with jitter, soft before hard, RFC 7296 2.8), when to
check liveness (2.4) and when to reauthenticate (RFC 4478); it answers the gateway's
CREATE_CHILD_SA and Delete requests, settles rekey collisions by the lowest nonce
(2.8.1, 2.8.2, 2.25) and keeps the IKE SAs a rekey replaced until their Delete is over.

CHILD_SA life, from the driver's side: a replacement's inbound SA is installed at once
(ChildSaRekeyed); the old one stays until its Delete exchange completes
(ChildSaDeleted), so no packet in flight is lost. Our traffic moves to the replacement
at once when we rekeyed, and when the old SA is deleted when the gateway did.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from .child_sa import ChildSa, ChildState, reauth_time, rekey_schedule, retry_time
from .constants import NotifyType, ProtocolId
from .errors import IkeError, RemoteProtocolError
from .events import ChildSaDeleted, ChildSaRekeyed, IkeSaRekeyed, ReauthRequired
from .message import Header, Message
from .payloads import DeletePayload, NotifyPayload, SaPayload
from .retiring import RetiringIkeSa
from .tasks.child_delete import ChildDelete
from .tasks.child_rekey import ChildRekey, answer_child_rekey
from .tasks.ike_dpd import IkeDpd
from .tasks.ike_rekey import IkeKeyset, IkeRekey, answer_ike_rekey

if TYPE_CHECKING:
    from .ike_sa import IkeSA

log = logging.getLogger(__name__)

Action = Callable[[], None]  # what to do once the reply to a request has been sent


class Lifecycle:
    def __init__(self, sa: IkeSA) -> None:
        self.sa = sa
        self.started = False
        self.children: list[ChildSa] = []
        self.retiring: list[RetiringIkeSa] = []
        # The gateway's rekey of the IKE SA that crossed ours: settled when ours ends.
        self.pending_ike: IkeKeyset | None = None
        self.ike_rekey_at: float | None = None
        self.ike_expire_at: float | None = None
        self.reauth_at: float | None = None
        self.reauth_requested = False
        self.last_inbound = 0.0

    # -- start and clock ----------------------------------------------------------------
    def start(self, now: float) -> None:
        sa = self.sa
        assert sa.child is not None
        self.started = True
        self.last_inbound = now
        child = ChildSa(sa.child, sa.esp_proposal_name, list(sa.local_ts), list(sa.remote_ts))
        self._schedule_child(child, now)
        self.children.append(child)
        self._schedule_ike(now)
        if sa.auth_lifetime is not None:
            self.set_auth_lifetime(sa.auth_lifetime, now)

    def _schedule_child(self, child: ChildSa, now: float) -> None:
        lifetime = self.sa.config.child_lifetime
        if lifetime:
            child.rekey_at, child.expire_at = rekey_schedule(now, lifetime, self.sa.rng)

    def _schedule_ike(self, now: float) -> None:
        lifetime = self.sa.config.ike_lifetime
        if lifetime:
            self.ike_rekey_at, self.ike_expire_at = rekey_schedule(now, lifetime, self.sa.rng)

    def set_auth_lifetime(self, seconds: int, now: float) -> None:
        self.reauth_at = reauth_time(now, seconds, self.sa.rng)
        log.info("reauthenticating in %.0f s (the gateway's AUTH_LIFETIME is %d s)",
                 self.reauth_at - now, seconds)

    def on_inbound(self, now: float) -> None:
        """Something authentic came from the gateway: it is alive."""
        self.last_inbound = max(self.last_inbound, now)

    def get_timer(self, idle: bool) -> float | None:
        times = [r.get_timer() for r in self.retiring]
        if self.started:
            times += [self.ike_rekey_at, self.ike_expire_at, self.reauth_at]
            for c in self.children:  # only an installed SA waits to be rekeyed
                times += [c.rekey_at if c.state is ChildState.INSTALLED else None, c.expire_at]
            if idle and self.sa.config.dpd > 0:
                times.append(self.last_inbound + self.sa.config.dpd)
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for r in self.retiring:
            r.handle_timer(now)
        self._prune()
        if not self.started:
            return
        sa, tasks = self.sa, self.sa._tasks
        for c in list(self.children):
            if c.expire_at is not None and now >= c.expire_at:
                if c.state in (ChildState.REKEYED, ChildState.DELETING):
                    log.info("CHILD_SA %s expired; nobody deleted it", c)
                    self.remove_child(c)
                    continue
                raise IkeError(f"CHILD_SA {c} expired before it could be rekeyed")
            if c.rekey_at is not None and now >= c.rekey_at and c.state is ChildState.INSTALLED:
                c.rekey_at = None
                tasks.queue_tasks([ChildRekey(sa, c)])
        if self.ike_expire_at is not None and now >= self.ike_expire_at:
            raise IkeError("the IKE SA expired before it could be rekeyed")
        if self.ike_rekey_at is not None and now >= self.ike_rekey_at:
            self.ike_rekey_at = None
            tasks.queue_tasks([IkeRekey(sa)])
        if self.reauth_at is not None and now >= self.reauth_at:
            self.reauth_at = None
            self.request_reauth("the gateway's authentication lifetime is ending")
        dpd = sa.config.dpd
        if dpd > 0 and tasks.idle and now >= self.last_inbound + dpd:
            self.last_inbound = now  # one check at a time; its answer counts as traffic
            tasks.queue_tasks([IkeDpd(sa)])

    def request_reauth(self, reason: str) -> None:
        if not self.reauth_requested:
            self.reauth_requested = True
            log.info("reauthentication needed: %s", reason)
            self.sa._events.append(ReauthRequired(reason))

    # -- the gateway's requests ---------------------------------------------------------
    def route(self, header: Header, data: bytes) -> bool:
        """Hand a message for a replaced IKE SA to it; False if it is for another SA."""
        for r in self.retiring:
            if r.matches(header):
                try:
                    r.receive(header, data)
                finally:
                    self._prune()
                return True
        return False

    def answer_create_child_sa(self, msg: Message, reply: Message) -> Action | None:
        if not self.started:
            reply.payloads.append(NotifyPayload(NotifyType.TEMPORARY_FAILURE))
            return None
        rekey = msg.notify(NotifyType.REKEY_SA)
        if rekey is not None:
            answer_child_rekey(self, msg, rekey, reply)
            return None
        sa_payload = msg.get(SaPayload)
        if sa_payload and sa_payload.proposals and \
                sa_payload.proposals[0].protocol == ProtocolId.IKE:
            keyset = answer_ike_rekey(self, msg, reply)
            if keyset is None:
                return None
            if self.sa._tasks.in_flight(IkeRekey) is not None:
                log.info("the gateway rekeys the IKE_SA while we do: settled when ours ends")
                self.pending_ike = keyset
                return None
            return lambda: self.switch_to(keyset, delete_old=False)
        # A CHILD_SA the gateway wants in addition: a tunnel needs only one.
        reply.payloads.append(NotifyPayload(NotifyType.NO_ADDITIONAL_SAS))
        return None

    def answer_informational(self, msg: Message, reply: Message) -> Action | None:
        lifetime = msg.notify(NotifyType.AUTH_LIFETIME)
        if lifetime is not None and self.started:
            self.set_auth_lifetime(struct.unpack("!I", lifetime.data)[0], self.sa.now)
        closing = False
        ours: list[bytes] = []
        for d in msg.get_all(DeletePayload):
            if d.protocol == ProtocolId.IKE:
                closing = True
            elif d.protocol == ProtocolId.ESP:
                for spi in d.spis:
                    ours += self._peer_deletes_child(struct.unpack("!I", spi)[0])
        if closing:
            pending, self.pending_ike = self.pending_ike, None
            if pending is not None:
                # RFC 7296 2.8.2: the gateway did not notice our crossing rekey and
                # deletes the SA it replaced. Forget ours; its new SA is the one.
                log.info("the gateway replaced the IKE_SA before our rekey arrived")

                def adopt() -> None:
                    self.sa._tasks.active = None
                    self.switch_to(pending, delete_old=False, keep_old=False)

                return adopt
            return self.sa._closed_by_peer
        if ours:
            reply.payloads.append(DeletePayload(ProtocolId.ESP, ours))
        return None

    def _peer_deletes_child(self, spi_out: int) -> list[bytes]:
        child = next((c for c in self.children if c.spi_out == spi_out), None)
        if child is None:
            return []  # already gone: nothing to name in the answer (RFC 7296 1.4.1)
        # Both ends deleting the same SA at once: neither answer names it (1.4.1).
        answer = [] if child.state is ChildState.DELETING else [struct.pack("!I", child.spi_in)]
        log.info("the gateway deleted CHILD_SA %s", child)
        self.remove_child(child)
        return answer

    # -- CHILD_SA rekeys ------------------------------------------------------------------
    def child_rekeyed_by_us(self, task: ChildRekey, new: ChildSa, lower: bytes) -> None:
        old, other = task.child, task.collision
        now = self.sa.now
        self._schedule_child(new, now)
        if other is not None and other in self.children and lower < task.collision_nonce:
            # RFC 7296 2.8.1: ours has the lowest nonce, so it is the redundant one and
            # ours to delete; the gateway deletes the old SA, and its replacement stays.
            log.info("CHILD_SA rekey collision lost: deleting our redundant %s", new)
            new.outbound = new.announced = False
            self.children.append(new)
            old.state, old.replaced_by = ChildState.REKEYED, other
            self.sa._tasks.queue_tasks([ChildDelete(self.sa, new)], front=True)
            return
        if other is not None and other in self.children:
            log.info("CHILD_SA rekey collision won: the gateway deletes its %s", other)
            other.state, other.replaced_by = ChildState.REKEYED, new
        log.info("CHILD_SA %s rekeyed: %s", old, new)
        self.children.append(new)
        self._activate(new)
        self.sa._events.append(ChildSaRekeyed(old.spi_in, new.keys, new.esp_proposal, True))
        if old in self.children:
            old.state, old.replaced_by, old.outbound = ChildState.REKEYED, new, False
            self.sa._tasks.queue_tasks([ChildDelete(self.sa, old)], front=True)

    def child_rekey_failed(self, task: ChildRekey, notify: int) -> None:
        old, other = task.child, task.collision
        if old not in self.children:
            return  # the gateway deleted it meanwhile
        if other is not None and other in self.children:
            # The gateway's rekey of the same SA went through; it deletes the old one.
            old.state, old.replaced_by = ChildState.REKEYED, other
            return
        old.state = ChildState.INSTALLED
        if notify == NotifyType.CHILD_SA_NOT_FOUND:
            raise RemoteProtocolError(f"the gateway no longer knows CHILD_SA {old}")
        if notify == NotifyType.NO_ADDITIONAL_SAS:
            self.request_reauth("the gateway does not rekey CHILD_SAs")
            return
        old.rekey_at = retry_time(self.sa.now, old.expire_at, self.sa.rng)
        log.info("trying to rekey CHILD_SA %s again in %.0f s", old, old.rekey_at - self.sa.now)

    def child_rekeyed_by_peer(self, old: ChildSa, new: ChildSa, lower: bytes) -> None:
        self._schedule_child(new, self.sa.now)
        self.children.append(new)
        old.replaced_by = new
        ours = self.sa._tasks.in_flight(ChildRekey)
        if ours is not None and ours.child is old:
            log.info("the gateway rekeys CHILD_SA %s while we do: settled when ours ends", old)
            ours.collision, ours.collision_nonce = new, lower
        else:
            old.state = ChildState.REKEYED
            log.info("the gateway rekeyed CHILD_SA %s: %s", old, new)
        self.sa._events.append(ChildSaRekeyed(old.spi_in, new.keys, new.esp_proposal, False))

    def remove_child(self, child: ChildSa) -> None:
        if child not in self.children:
            return
        self.children.remove(child)
        successor = child.replaced_by
        while successor is not None and successor not in self.children:
            successor = successor.replaced_by
        if successor is not None and not successor.outbound:
            self._activate(successor)
        if child.announced:
            self.sa._events.append(ChildSaDeleted(
                child.spi_in, child.spi_out, successor.spi_in if successor else None,
                sum(c.announced for c in self.children)))

    def _activate(self, child: ChildSa) -> None:
        """Our packets leave on `child` from now on."""
        for c in self.children:
            c.outbound = c is child
        self.sa.child = child.keys

    # -- IKE SA rekeys --------------------------------------------------------------------
    def ike_rekey_under_way(self) -> bool:
        return self.pending_ike is not None or self.sa._tasks.in_flight(IkeRekey) is not None

    def ike_rekeyed_by_us(self, keyset: IkeKeyset) -> None:
        other, self.pending_ike = self.pending_ike, None
        if other is None:
            self.switch_to(keyset, delete_old=True)
        elif keyset.lower_nonce < other.lower_nonce:
            # RFC 7296 2.8.2: ours is redundant and ours to delete; the gateway deletes
            # the old SA, and the CHILD_SAs go with its new one.
            log.info("IKE_SA rekey collision lost: deleting our redundant IKE_SA")
            self.switch_to(other, delete_old=False)
            self._retire(keyset, delete=True)
        else:
            log.info("IKE_SA rekey collision won: the gateway deletes its redundant IKE_SA")
            self.switch_to(keyset, delete_old=True)
            self._retire(other, delete=False)

    def ike_rekey_failed(self, notify: int) -> None:
        other, self.pending_ike = self.pending_ike, None
        if other is not None:
            self.switch_to(other, delete_old=False)
            return
        now = self.sa.now
        self.ike_rekey_at = retry_time(now, self.ike_expire_at, self.sa.rng)
        log.info("trying to rekey the IKE_SA again in %.0f s", self.ike_rekey_at - now)

    def switch_to(self, keyset: IkeKeyset, delete_old: bool, keep_old: bool = True) -> None:
        """Make `keyset` the IKE SA; the old one stays until its Delete (ours or theirs)."""
        sa, now = self.sa, self.sa.now
        if keep_old:
            old = RetiringIkeSa(
                spi_i=sa.spi_i, spi_r=sa.spi_r, initiator=sa.initiator, sk=sa.sk,
                next_id=sa._tasks.next_id, peer_next_id=sa._peer_next_id,
                last_response=sa._last_response, send=sa.send_raw,
                policy=sa.config.retransmit, now=now)
            self.retiring.append(old)
            if delete_old:
                old.start_delete(now)
        sa.spi_i, sa.spi_r, sa.initiator = keyset.spi_i, keyset.spi_r, keyset.initiator
        sa.prf, sa.keys, sa.sk = keyset.prf, keyset.keys, keyset.sk
        sa.ike_proposal, sa.ike_proposal_name = keyset.proposal, keyset.proposal_name
        sa._tasks.next_id = 0
        sa._peer_next_id = 0
        sa._last_response = None
        self._schedule_ike(now)
        log.info("IKE_SA rekeyed: now %s_i %s_r with %s", sa.spi_i.hex(), sa.spi_r.hex(),
                 sa.ike_proposal_name)
        sa._events.append(IkeSaRekeyed(sa.ike_proposal_name, keyset.initiator))

    def _retire(self, keyset: IkeKeyset, delete: bool) -> None:
        sa = self.sa
        r = RetiringIkeSa(spi_i=keyset.spi_i, spi_r=keyset.spi_r, initiator=keyset.initiator,
                          sk=keyset.sk, next_id=0, peer_next_id=0, last_response=None,
                          send=sa.send_raw, policy=sa.config.retransmit, now=sa.now)
        self.retiring.append(r)
        if delete:
            r.start_delete(sa.now)

    def local_spis(self) -> set[bytes]:
        spis = {r.local_spi for r in self.retiring}
        if self.pending_ike is not None:
            spis.add(self.pending_ike.local_spi)
        return spis

    def _prune(self) -> None:
        self.retiring = [r for r in self.retiring if not r.done]
