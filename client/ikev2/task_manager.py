"""Runs tasks as exchanges: one request in flight, retransmission (RFC 7296 2.1)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .constants import ExchangeType
from .errors import PeerUnreachable, RemoteProtocolError
from .message import Message
from .tasks.base import Status, Task

if TYPE_CHECKING:
    from .ike_sa import IkeSA

log = logging.getLogger(__name__)
T = TypeVar("T", bound=Task)


@dataclass(frozen=True)
class RetransmitPolicy:
    """strongSwan's defaults: 4 s, growing by 1.8 each try, 5 retransmissions (~165 s)."""

    timeout: float = 4.0
    base: float = 1.8
    tries: int = 5

    def delay(self, attempt: int) -> float:
        return self.timeout * self.base**attempt

    def budget(self) -> float:
        return sum(self.delay(i) for i in range(self.tries + 1))

    @classmethod
    def parse(cls, text: str) -> RetransmitPolicy:
        """Parse "timeout=0.5,base=1.5,tries=3" (any subset)."""
        values: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = item.partition("=")
            if key not in ("timeout", "base", "tries"):
                raise ValueError(f"unknown retransmission setting '{key}'")
            values[key] = float(value)
        tries = int(values.pop("tries", cls.tries))
        return cls(tries=tries, **values)


@dataclass
class _Exchange:
    tasks: list[Task]
    exchange: int
    policy: RetransmitPolicy
    message_id: int = 0
    packets: list[bytes] = field(default_factory=list)  # the request, or its fragments
    attempt: int = 0
    deadline: float = 0.0


class TaskManager:
    def __init__(self, sa: IkeSA) -> None:
        self.sa = sa
        self.queue: list[tuple[list[Task], RetransmitPolicy | None]] = []
        self.active: _Exchange | None = None
        self.next_id = 0
        # A response whose processing waits for the driver: (msg, todo, remaining, retry).
        self._paused: tuple[Message, list[Task], list[Task], bool] | None = None

    # -- initiating -----------------------------------------------------------------
    def queue_tasks(self, tasks: list[Task], policy: RetransmitPolicy | None = None,
                    front: bool = False) -> None:
        """Queue one exchange; `front` puts it before the others (a Delete after a rekey)."""
        self.queue.insert(0 if front else len(self.queue), (tasks, policy))

    def initiate(self, now: float) -> None:
        while self.active is None and self.queue:
            tasks, policy = self.queue.pop(0)
            # A rekey queued for an SA that meanwhile was rekeyed or deleted has nothing to do.
            tasks = [t for t in tasks if not t.obsolete()]
            if not tasks:
                continue
            self.active = _Exchange(tasks, tasks[0].exchange, policy or self.sa.config.retransmit)
            self._send_request(now, new_id=True)

    @property
    def idle(self) -> bool:
        return self.active is None and not self.queue

    def in_flight(self, kind: type[T]) -> T | None:
        """The task of class `kind` whose request is on its way, if there is one."""
        ex = self.active
        if ex is None:
            return None
        return next((t for t in ex.tasks if isinstance(t, kind)), None)

    def _send_request(self, now: float, new_id: bool) -> None:
        ex = self.active
        assert ex is not None
        if new_id:
            ex.message_id = self.next_id
            self.next_id += 1
        msg = self.sa.new_message(ex.exchange, ex.message_id, response=False)
        for task in ex.tasks:
            task.build(msg)
        ex.packets = self.sa.send_message(msg)
        ex.attempt = 0
        ex.deadline = now + ex.policy.delay(0)

    def abort(self) -> None:
        self.active = None
        self._paused = None
        self.queue.clear()

    # -- timers ---------------------------------------------------------------------
    def get_timer(self) -> float | None:
        # Paused on an answered request: nothing to retransmit; the driver's check is
        # bounded by its own budget.
        return self.active.deadline if self.active and not self._paused else None

    def handle_timer(self, now: float) -> None:
        ex = self.active
        if ex is None or now < ex.deadline or self._paused is not None:
            return
        if ex.attempt >= ex.policy.tries:
            self.active = None
            raise PeerUnreachable(
                f"the gateway did not answer {ex.attempt + 1} {_name(ex.exchange)} requests "
                f"over {ex.policy.budget():.1f} s"
            )
        ex.attempt += 1
        ex.deadline = now + ex.policy.delay(ex.attempt)
        log.info("retransmit %d of %s request %d", ex.attempt, _name(ex.exchange), ex.message_id)
        self.sa.send_raw(ex.packets)  # every fragment again (RFC 7383 2.6)

    # -- responses ------------------------------------------------------------------
    def expects(self, message_id: int, exchange: int) -> bool:
        ex = self.active
        return ex is not None and ex.message_id == message_id and ex.exchange == exchange \
            and self._paused is None

    def process_response(self, msg: Message, now: float) -> bool:
        """Feed the response to the active tasks. Returns True when the exchange is over."""
        ex = self.active
        assert ex is not None
        return self._process(msg, list(ex.tasks), [], False, now)

    @property
    def paused(self) -> bool:
        return self._paused is not None

    def resume(self, now: float) -> bool:
        """Go on with the response a task paused on (IkeSA.paused); as process_response."""
        assert self._paused is not None
        state, self._paused = self._paused, None
        return self._process(*state, now)

    def _process(self, msg: Message, todo: list[Task], remaining: list[Task], retry: bool,
                 now: float) -> bool:
        ex = self.active
        assert ex is not None
        while todo:
            task = todo.pop(0)
            status = task.process(msg)
            if status is Status.RETRY:
                retry = True
            elif status is Status.NEED_MORE:
                remaining.append(task)
            if self.sa.paused:
                # The driver must answer first (a revocation check): the later tasks
                # read this message, and nothing is sent, only once it did.
                self._paused = (msg, todo, remaining, retry)
                return False
        if retry:
            # COOKIE / INVALID_KE: IKE_SA_INIT again with message ID 0; any other exchange
            # is over with its error response, so the retry is a new one (RFC 7296 2.2).
            self._send_request(now, new_id=ex.exchange != ExchangeType.IKE_SA_INIT)
            return False
        if remaining:
            ex.tasks = remaining
            self._send_request(now, new_id=True)
            return False
        self.active = None
        return True


def _name(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:  # pragma: no cover - we only send known exchanges
        raise RemoteProtocolError(f"unknown exchange {exchange}") from None
