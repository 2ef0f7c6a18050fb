"""`vpnclient daemon`: the privileged service behind the tray app and non-root users.

It runs as root, hosts at most one Engine (which owns the TUN device, routes and DNS)
and serves the control protocol (client/control.py) at $VPNCLIENT_RUNTIME_DIR/control.sock
(default /run/vpnclient/control.sock).

Who may talk to it is decided per connection from the kernel's SO_PEERCRED record:
root and members of the group (`vpnclient` unless --group says otherwise; membership as
the group database says, so a user just added need not log in again) may connect,
disconnect, read the status and subscribe to events. Anybody else gets one refusal
line saying why and how to fix it, and the connection is closed; nothing they send is
read. The socket itself is world-connectable for that reason: the check is ours.

A connection (and a kill switch it left holding) belongs to the user who started it:
only they or root may disconnect it, lift its kill switch or read its log and details
(identities, addresses, DNS). Other members see that a tunnel is up, its profile name
and whose it is, and get a `not-owner` refusal naming the owner for anything else.

Secrets arrive with the connect request and live in the Engine's memory only, until the
connection ends; they are never logged and never written anywhere.

An always-on profile (client/always_on.py) is brought up at start and again after
each failure (with backoff), until a user with the right ends it with `disconnect`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import logging
import os
import pwd
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import always_on, control
from .config import ConfigError
from .control import CODE_FAILURE, CODE_OK, CODE_USAGE, REASON_FOR_EXIT, error
from .engine import Engine, Secrets, owner_of
from .ikev2.task_manager import RetransmitPolicy
from .netconf import firewall, journal
from .profile import Profile, ProfileError, profile_from_dict
from .status import idle_status

log = logging.getLogger("client.daemon")  # also when run as __main__

DEFAULT_GROUP = "vpnclient"
MAX_PEERS = 64
MAX_SECRET = 4096
MAX_PEER_BACKLOG = 4 * 1024 * 1024  # a subscriber this far behind is dropped, not waited for
LOG_HISTORY = 500  # log lines a new subscriber gets
# What every member may know of another user's connection: that it is up, and whose.
PUBLIC_KEYS = ("state", "profile", "owner", "owner_uid", "kill_switch")
STATS_INTERVAL = 1.0
SHUTDOWN_GRACE = 20.0  # seconds for a Delete exchange and teardown on SIGTERM
# Always-on retries: soon (the network may only just be coming up), then not hammering
# a gateway that is down.
ALWAYS_ON_RETRY = (2.0, 60.0)
SECRET_KEYS = {"password", "p12_passphrase"}


# -- who may use the daemon ----------------------------------------------------------
def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def authorize(uid: int, gid: int, group: str) -> str | None:
    """None if the peer may use the daemon, else the refusal for the user, with its fix."""
    if uid == 0:
        return None
    gid_allowed = group_id(group)
    try:
        user = pwd.getpwuid(uid)
        name = user.pw_name
        groups = set(os.getgrouplist(name, user.pw_gid))
    except KeyError:
        name, groups = str(uid), set()
    if gid_allowed is not None and (gid == gid_allowed or gid_allowed in groups):
        return None
    if gid_allowed is None:
        return (f"only root may use the VPN service: the group '{group}' does not exist "
                f"(fix: sudo groupadd --system {group} && sudo usermod -aG {group} {name})")
    return (f"user '{name}' may not use the VPN service: not a member of the group "
            f"'{group}' (fix: sudo usermod -aG {group} {name})")


# -- peers -----------------------------------------------------------------------------
class Peer:
    """One client connection."""

    def __init__(self, writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
        self.writer = writer
        self.pid = pid
        self.uid = uid
        self.subscribed = False
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            return
        if transport.get_write_buffer_size() > MAX_PEER_BACKLOG:
            log.warning("dropping a client (pid %d) that stopped reading", self.pid)
            self.close()
            return
        self.writer.write(control.encode(message))

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    def __repr__(self) -> str:
        return f"Peer(pid={self.pid}, uid={self.uid})"


def may_see(peer: Peer, owner_uid: int | None) -> bool:
    """Root, the owner, and anyone while nobody owns what is shown (idle)."""
    return owner_uid is None or peer.uid in (0, owner_uid)


def withheld(status: dict[str, Any]) -> dict[str, Any]:
    """What a member who does not own the connection sees of it."""
    return {**idle_status(), **{k: status.get(k) for k in PUBLIC_KEYS},
            "withheld": f"the connection of user '{status.get('owner')}': only they or "
                        f"root see its details"}


@dataclass
class Session:
    """The one connection the daemon hosts, from connect request to teardown."""

    profile: Profile
    engine: Engine
    started: float
    requested_by: int | None  # uid; None: every member's (an always-on for all users)
    connected: asyncio.Future[dict[str, Any]]  # the connect request's response
    task: asyncio.Task[int] | None = None
    state: str = ""  # the last state pushed to subscribers
    counters: tuple[Any, ...] = ()
    code: int | None = None
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_HISTORY))
    always_on: bool = False


class _SubscriberLog(logging.Handler):
    """Forwards the engine's log records to subscribers as `log` events."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(logging.INFO)
        self.daemon = daemon

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.daemon.log_line(record.levelname.lower(), record.getMessage(), record.name)
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)


# -- the daemon ------------------------------------------------------------------------
class Daemon:
    def __init__(self, rdir: Path, group: str = DEFAULT_GROUP,
                 retransmit: RetransmitPolicy | None = None,
                 always_on_path: Path | None = None) -> None:
        self.rdir = rdir
        self.always_on_path = always_on_path
        self.always_on: always_on.AlwaysOn | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = ALWAYS_ON_RETRY[0]
        self.group = group
        self.retransmit = retransmit
        self.peers: set[Peer] = set()
        self.session: Session | None = None
        self.last_status: dict[str, Any] = idle_status()
        self.history: deque[dict[str, Any]] = deque(maxlen=LOG_HISTORY)
        self.server: asyncio.AbstractServer | None = None
        self.stopping: asyncio.Event | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handler = _SubscriberLog(self)

    @property
    def socket_path(self) -> Path:
        return control.socket_path(self.rdir)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self.stopping = asyncio.Event()
        # Users must reach the socket: the directory is traversable, the socket
        # connectable by anyone, and authorize() decides.
        self.rdir.mkdir(parents=True, exist_ok=True)
        self.rdir.chmod(0o755)
        control.remove_stale(self.socket_path)
        self.server = await asyncio.start_unix_server(
            self._on_client, path=str(self.socket_path), limit=control.MAX_LINE)
        self.socket_path.chmod(0o666)
        # A kill switch held before this start (the daemon stopped or crashed, or a
        # connection gave up) keeps blocking: the state says so until a user lifts it.
        journal.cleanup_stale(self.rdir)
        record = firewall.held(self.rdir)
        if record is not None:
            self.last_status = {**idle_status(), **firewall.blocked_status(record)}
            log.warning("traffic is blocked by the kill switch of profile '%s' (%s)",
                        record.get("profile"), self.last_status["blocked_reason"])
        logging.getLogger("client").addHandler(self._handler)
        self._ticker = asyncio.create_task(self._tick())
        log.info("listening on %s (group %s)", self.socket_path, self.group)
        self._load_always_on()
        self._start_always_on()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT or stop(); then end the connection cleanly."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        try:
            assert self.stopping is not None
            await self.stopping.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.shutdown()
        return CODE_OK

    def stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()

    async def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        self._stop_always_on()
        session = self.session
        if session is not None and session.task is not None:
            session.engine.request_disconnect(lift=False)  # the service stops, not the VPN
            try:
                await asyncio.wait_for(asyncio.shield(session.task), SHUTDOWN_GRACE)
            except TimeoutError:
                log.error("the connection did not end in %.0f s; cancelling", SHUTDOWN_GRACE)
                session.task.cancel()
                with contextlib.suppress(BaseException):
                    await session.task
        if self._ticker is not None:
            self._ticker.cancel()
        for peer in list(self.peers):
            peer.close()
        logging.getLogger("client").removeHandler(self._handler)
        self.socket_path.unlink(missing_ok=True)

    # -- connections -----------------------------------------------------------------
    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            pid, uid, gid = control.peer_credentials(writer.get_extra_info("socket"))
        except OSError:
            writer.close()
            return
        peer = Peer(writer, pid, uid)
        refusal = authorize(uid, gid, self.group)
        if refusal is None and len(self.peers) >= MAX_PEERS:
            refusal = "too many clients are connected to the VPN service"
        if refusal is not None:
            log.info("refused pid %d uid %d: %s", pid, uid, refusal)
            peer.send({"server": "daemon", **error("not-authorized", refusal)})
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            peer.close()
            return
        self.peers.add(peer)
        try:
            while line := await reader.readline():
                if not line.endswith(b"\n"):
                    break  # the client went away halfway through a request
                self._spawn(self._handle_line(peer, line))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("client pid %d: %s", pid, exc)  # a flood or a reset: only theirs
        except asyncio.CancelledError:
            pass  # shutting down with this client still connected
        finally:
            self.peers.discard(peer)
            peer.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_line(self, peer: Peer, line: bytes) -> None:
        request: dict[str, Any] = {}
        try:
            request = control.decode(line)
            response = await self.handle(peer, request)
        except control.ProtocolError as exc:
            response = error("bad-request", f"bad request: {exc}")
        except Exception as exc:  # never let one request take the daemon down
            log.exception("request %r failed", request.get("command"))
            response = error("failed", f"internal error: {type(exc).__name__}")
        response["server"] = "daemon"
        if "id" in request:
            response["id"] = request["id"]
        peer.send(response)

    async def handle(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return {"ok": True, "status": self.status(peer)}
        if command == "subscribe":
            peer.subscribed = True
            history = list(self.session.log if self.session else self.history)
            if not may_see(peer, self.owner_uid):
                history = []
            return {"ok": True, "status": self.status(peer), "log": history}
        if command == "connect":
            return await self._connect(peer, request)
        if command == "disconnect":
            return await self._disconnect(peer, bool(request.get("wait", True)))
        return error("bad-request", f"unknown command {command!r}")

    # -- commands --------------------------------------------------------------------
    @property
    def owner_uid(self) -> int | None:
        """Whose the connection (or the last one's outcome, or a held kill switch) is."""
        if self.session is not None:
            return self.session.requested_by
        return self.last_status.get("owner_uid")

    def status(self, peer: Peer | None = None) -> dict[str, Any]:
        status = dict(self.last_status) if self.session is None else snapshot(self.session)
        if peer is None or may_see(peer, self.owner_uid):
            return status
        return withheld(status)

    def _not_owner(self, what: str) -> dict[str, Any]:
        status = self.status()
        return error("not-owner", f"{what} belongs to user '{status.get('owner')}' (profile "
                                  f"'{status.get('profile')}'): only they or root can do that")

    async def _connect(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        if self.session is not None:
            status = snapshot(self.session)
            return error("busy", f"already {status['state']} with profile "
                                 f"'{status['profile']}' of user '{status.get('owner')}': "
                                 f"disconnect first")
        raw = request.get("profile")
        if not isinstance(raw, dict):
            return error("bad-request", "connect needs a profile (a JSON object)")
        if (refusal := self._blocked_for(peer)) is not None:
            return refusal
        try:
            profile = profile_from_dict(raw)
        except ProfileError as exc:
            return error("profile", str(exc))
        try:
            secrets = parse_secrets(request.get("secrets"))
        except ValueError as exc:
            return error("bad-request", str(exc))
        self._stop_always_on()  # the user chose another connection
        log.info("uid %d connects with profile '%s' (%s)", peer.uid, profile.name, profile.uuid)
        session = self._begin(profile, secrets, peer.uid, owner_of(peer.uid))
        if not request.get("wait", True):
            return {"ok": True, "status": snapshot(session)}
        # The engine goes on whether or not this client stays to hear the outcome.
        return await asyncio.shield(session.connected)

    def _begin(self, profile: Profile, secrets: Secrets, uid: int | None,
               owner: dict[str, Any], always: bool = False) -> Session:
        loop = asyncio.get_running_loop()
        session = Session(profile, None, time.monotonic(), uid,  # type: ignore[arg-type]
                          loop.create_future(), always_on=always)
        session.engine = Engine(
            profile, secrets, self.rdir, self.retransmit,
            progress=lambda line: self._progress(session, line),
            error=lambda line: self._progress(session, line, "warning"),
            serve_control=False, handle_signals=False, owner=owner,
        )
        self.session = session
        self.history.clear()
        session.task = asyncio.create_task(self._run(session))
        self._check_state(session)
        return session

    # -- always-on -------------------------------------------------------------------
    def _load_always_on(self) -> None:
        if self.always_on_path is None:
            return
        try:
            self.always_on = always_on.load(self.always_on_path)
        except always_on.AlwaysOnError as exc:
            log.error("always-on: %s", exc)
            if self.last_status.get("state") != "blocked":
                self.last_status = {**idle_status(), "state": "failed",
                                    "last_error": f"always-on: {exc}"}

    def _start_always_on(self) -> None:
        self._retry = None
        setting = self.always_on
        if setting is None or self.session is not None or (
                self.stopping is not None and self.stopping.is_set()):
            return
        log.info("always-on: connecting with profile '%s' (%s)", setting.profile.name,
                 setting.profile.uuid)
        secrets = Secrets(password=setting.secrets.get(always_on.Kind.PASSWORD),
                          p12_passphrase=setting.secrets.get(always_on.Kind.P12))
        owner = setting.owner()
        self._begin(setting.profile, secrets, owner["owner_uid"], owner, always=True)

    def _retry_always_on(self) -> None:
        delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2,
                                                          ALWAYS_ON_RETRY[1])
        log.info("always-on: connecting again in %.0f s", delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._start_always_on)

    def _stop_always_on(self) -> None:
        """A user ended or replaced the always-on connection: no retries until the next
        start of the daemon."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.always_on = None

    async def _run(self, session: Session) -> int:
        engine = session.engine
        try:
            code = await engine.run()
        except ConfigError as exc:
            code = CODE_USAGE
            engine.status.update(state="failed", last_error=str(exc))
            self._progress(session, f"failed: {exc}", "warning")
        except Exception as exc:
            log.exception("the connection failed")
            code = CODE_FAILURE
            engine.status.update(state="failed", last_error=f"{type(exc).__name__}: {exc}")
        session.code = code
        final = snapshot(session)
        if final["state"] not in ("failed", "disconnected", "blocked"):
            final["state"] = "failed" if code != CODE_OK else "disconnected"
        # The secrets go with the engine; nothing else holds them.
        engine.secrets = Secrets()
        self.session = None
        self.last_status = final
        self.history = session.log
        outcome: dict[str, Any]
        reason: str | None = None  # None: ended as asked, not a failure
        if code == CODE_OK or (engine.disconnect_requested and final["state"] == "disconnected"):
            outcome = error("cancelled", "the connection attempt was cancelled")
        else:
            reason = REASON_FOR_EXIT.get(code, "failed")
            outcome = error(reason, final.get("last_error") or "the connection failed", code)
        if not session.connected.done():
            session.connected.set_result({**outcome, "status": final})
        self._broadcast({"event": "state", "state": final["state"], "status": final,
                         "code": code, "reason": reason, "error": final.get("last_error")})
        log.info("connection with profile '%s' ended (exit code %d)", session.profile.name, code)
        if (session.always_on and self.always_on is not None and not engine.disconnect_requested
                and code != CODE_USAGE):
            self._retry_always_on()
        return code

    async def _disconnect(self, peer: Peer, wait: bool) -> dict[str, Any]:
        session = self.session
        if session is None:
            return self._lift_kill_switch(peer)
        if not may_see(peer, session.requested_by):
            log.info("uid %d may not disconnect the connection of uid %s",
                     peer.uid, session.requested_by)
            return self._not_owner("the connection")
        if session.always_on:
            self._stop_always_on()
        log.info("uid %d disconnects", peer.uid)
        session.engine.request_disconnect()
        self._check_state(session)
        if wait and session.task is not None:
            await asyncio.shield(session.task)
        return {"ok": True, "status": self.status(peer)}

    def _blocked_for(self, peer: Peer) -> dict[str, Any] | None:
        """Traffic is blocked by another user's kill switch: only they or root lift it,
        and a connect of someone else's would."""
        if self.last_status.get("state") != "blocked" or may_see(peer, self.owner_uid):
            return None
        return self._not_owner("the kill switch blocking traffic")

    def _lift_kill_switch(self, peer: Peer) -> dict[str, Any]:
        """`disconnect` with no connection: lift a held kill switch, if any."""
        if (refusal := self._blocked_for(peer)) is not None:
            log.info("uid %d may not lift the kill switch", peer.uid)
            return refusal
        journal.cleanup_stale(self.rdir)
        ks = firewall.KillSwitch.adopt(self.rdir)
        if not ks.engaged:
            self.last_status = {k: v for k, v in self.last_status.items()
                                if k not in firewall.BLOCKED_KEYS}
            if self.last_status.get("state") == "blocked":
                self.last_status["state"] = "disconnected"
            return error("not-connected", "not connected")
        log.info("uid %d lifts the kill switch", peer.uid)
        self._stop_always_on()
        ks.lift()
        self.last_status = idle_status()
        self._broadcast({"event": "state", "state": "disconnected", "status": self.status()})
        return {"ok": True, "status": self.status(peer), "lifted": True}

    # -- events ----------------------------------------------------------------------
    def _broadcast(self, event: dict[str, Any]) -> None:
        """To every subscriber; of another user's connection, only its state changes."""
        owner = self.owner_uid
        public: dict[str, Any] | None = None
        for peer in list(self.peers):
            if not peer.subscribed:
                continue
            if may_see(peer, owner):
                peer.send(event)
            elif event.get("event") == "state":
                if public is None:
                    public = {"event": "state", "state": event["state"],
                              "status": withheld(event["status"])}
                peer.send(public)

    def log_line(self, level: str, message: str, source: str = "client") -> None:
        entry = {"event": "log", "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "level": level, "source": source, "message": message}
        (self.session.log if self.session else self.history).append(entry)
        self._broadcast(entry)

    def _progress(self, session: Session, line: str, level: str = "info") -> None:
        self.log_line(level, line, "progress")
        self._check_state(session)

    def _check_state(self, session: Session) -> None:
        """Push a state event when the engine's state moved, rekey/roam events when its
        counters did, and answer the connect request once connected."""
        if self.session is not session:
            return
        status = snapshot(session)
        if status["state"] != session.state:
            session.state = status["state"]
            self._broadcast({"event": "state", "state": session.state, "status": status})
            if session.state == "connected" and not session.connected.done():
                session.connected.set_result({"ok": True, "status": status})
            if session.state == "connected" and session.always_on:
                self._retry_delay = ALWAYS_ON_RETRY[0]
        counters = (status.get("rekeys", 0), status.get("roams", 0), status.get("local_address"))
        if session.counters and counters != session.counters:
            rekeys, roams, local = session.counters
            if counters[0] != rekeys:
                self._broadcast({"event": "rekey", "rekeys": counters[0], "status": status})
            if counters[1] != roams or (counters[2] != local and local is not None):
                self._broadcast({"event": "roam", "roams": counters[1],
                                 "local_address": counters[2], "status": status})
        session.counters = counters

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            session = self.session
            if session is None:
                continue
            try:
                self._check_state(session)
                status = snapshot(session)
                self._broadcast({
                    "event": "stats", "state": status["state"],
                    "uptime": round(time.monotonic() - session.started, 1),
                    **{k: status.get(k, 0) for k in (
                        "bytes_in", "bytes_out", "packets_in", "packets_out",
                        "rekeys", "roams")},
                })
            except Exception:
                log.exception("statistics tick failed")


def snapshot(session: Session) -> dict[str, Any]:
    """The engine's status (CLI.md's fields) plus the identities in use, for the tray
    app's status window: `local_id` and `remote_id`."""
    status = session.engine.snapshot()
    sa = session.engine.sa
    config = getattr(sa, "config", None)
    profile = session.profile
    status["local_id"] = getattr(config, "local_id", None) or profile.local_id or profile.eap_id
    status["remote_id"] = getattr(config, "remote_id", None) or profile.remote_id
    status.update(session.engine.owner)
    return status


def parse_secrets(raw: Any) -> Secrets:
    if raw is None:
        return Secrets()
    if not isinstance(raw, dict):
        raise ValueError("secrets must be a JSON object")
    unknown = set(raw) - SECRET_KEYS
    if unknown:
        raise ValueError(f"unknown secrets field(s): {', '.join(sorted(unknown))}")
    values: dict[str, str | None] = {}
    for key in SECRET_KEYS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_SECRET):
            raise ValueError(f"secrets.{key} must be a string of at most {MAX_SECRET} chars")
        values[key] = value
    return Secrets(password=values["password"], p12_passphrase=values["p12_passphrase"])


# -- entry point -----------------------------------------------------------------------
def setup_logging(verbosity: int) -> None:
    """stderr (the journal under systemd) by verbosity; the engine's INFO lines always
    reach subscribers, so the `client` logger passes them on. Lines carry the time in
    milliseconds, as the CLI's do, unless the journal stamps them."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING if verbosity == 0 else
                     logging.INFO if verbosity == 1 else logging.DEBUG)
    if _stderr_is_journal():
        handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)


def _stderr_is_journal() -> bool:
    # systemd.exec(5): JOURNAL_STREAM is "device:inode" of the stream it connected.
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def run_daemon(group: str = DEFAULT_GROUP, verbosity: int = 0) -> int:
    """`vpnclient daemon`: exit code 0 after SIGTERM, 1 when it cannot start."""
    setup_logging(verbosity)
    if os.geteuid() != 0:
        print("vpnclient: the daemon must run as root (it manages the TUN device, routes "
              "and DNS); start it with `systemctl start vpnclient`", file=sys.stderr)
        return CODE_FAILURE
    try:
        retransmit = RetransmitPolicy.parse(os.environ.get("VPNCLIENT_RETRANSMIT", ""))
    except ValueError as exc:
        print(f"vpnclient: VPNCLIENT_RETRANSMIT: {exc}", file=sys.stderr)
        return CODE_USAGE
    daemon = Daemon(control.runtime_dir() or control.daemon_socket_path().parent, group,
                    retransmit, always_on.setting_path())
    try:
        return asyncio.run(daemon.run())
    except (RuntimeError, OSError) as exc:
        print(f"vpnclient: {exc}", file=sys.stderr)
        return CODE_FAILURE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpnclient daemon")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--group", default=os.environ.get("VPNCLIENT_GROUP", DEFAULT_GROUP),
                        help="members of this group may use the daemon (default vpnclient)")
    args = parser.parse_args(argv)
    return run_daemon(args.group, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
