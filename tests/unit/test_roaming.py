"""The roaming decisions (client/roaming.py) around a stand-in engine and IKE SA, with real
sockets on the loopback range: the kernel's path is played by the source address the
probe socket binds to. The real thing, against strongSwan: tests/interop/test_roaming.py."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from client import roaming
from client.ikev2.errors import PeerUnreachable
from client.ikev2.events import AddressesUpdated, AddressUpdateFailed
from client.ikev2.ike_sa import State
from client.netconf.routes import DEFAULT_FWMARK
from client.pathsel import open_path

GATEWAY = ("127.0.0.1", 500)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN")


class StubSA:
    def __init__(self, mobike: bool = True) -> None:
        self.state = State.ESTABLISHED
        self.peer_mobike = mobike
        self.nat_local = False
        self.config = SimpleNamespace(additional_addresses=[])
        self.updates: list[tuple[str, int]] = []
        self.abandoned: tuple[str, object] | None = None

    def update_addresses(self, local, now, additional=None) -> None:
        self.updates.append(local)

    def announce_addresses(self, additional, now) -> None:
        pass

    def abandon(self, reason, error=None) -> None:
        self.abandoned = (reason, error)
        self.state = State.CLOSED


class StubEngine:
    def __init__(self, loop: asyncio.AbstractEventLoop, mobike: bool = True) -> None:
        self.loop = loop
        self.disconnect_requested = False
        self.reconnecting = False
        self.gateway = GATEWAY
        self.sa = StubSA(mobike)
        self.tunnel = SimpleNamespace(tun=None)
        self._wake = asyncio.Event()
        self.status = {"state": "connected", "roams": 0, "local_address": "127.0.0.1",
                       "nat_detected": False}
        self.use_natt_port = False
        self.reauth_sa = None
        self.profile = SimpleNamespace(mobike=mobike)
        self.keepalive = None
        self.lines: list[str] = []
        self.reauths = 0
        self.socks = {"natt": open_path(("127.0.0.1", 4500), DEFAULT_FWMARK, "127.0.0.1"),
                      "ike": open_path(GATEWAY, DEFAULT_FWMARK, "127.0.0.1")}

    def progress(self, text: str) -> None:
        self.lines.append(text)

    def _pump(self, sa=None) -> None:
        pass

    def _on_natt_readable(self) -> None:
        pass

    def _on_ike_readable(self) -> None:
        pass

    def _drain(self, sock, natt) -> None:
        pass

    def _drop_sa(self, sa) -> None:
        pass

    def _start_reauth(self) -> None:
        self.reauths += 1

    def _schedule_keepalive(self) -> None:
        self.keepalive = SimpleNamespace(cancel=lambda: None)

    def close(self) -> None:
        for sock in {id(s): s for s in self.socks.values()}.values():
            sock.close()


class Network:
    """What the kernel would answer: the source address of the best path, or none."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.source: str | None = "127.0.0.1"
        self.addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]

        def fake_open(dest, mark, source=None):
            chosen = source or self.source
            if chosen is None:
                raise OSError(101, "Network is unreachable")
            return open_path(dest, mark, chosen)

        monkeypatch.setattr(roaming, "open_path", fake_open)
        monkeypatch.setattr(roaming, "local_addresses",
                            lambda exclude=(), family=None: list(self.addresses))


def run(body) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await body(loop)

    asyncio.run(main())


def test_the_same_path_changes_nothing(monkeypatch) -> None:
    net = Network(monkeypatch)

    async def body(loop) -> None:
        engine = StubEngine(loop)
        roamer = roaming.Roamer(engine, grace=5)
        natt = engine.socks["natt"]
        roamer.check()
        assert engine.socks["natt"] is natt and engine.sa.updates == []
        net.source = "127.0.0.2"
        roamer.check()
        assert engine.socks["natt"] is not natt
        assert engine.sa.updates == [engine.socks["natt"].getsockname()[:2]]
        assert engine.sa.updates[0][0] == "127.0.0.2"
        assert natt.fileno() != -1  # the old one is still read ...
        local, port = engine.sa.updates[0]
        roamer.on_event(AddressesUpdated(local, port, False, False))
        assert engine.status["roams"] == 1 and engine.status["local_address"] == "127.0.0.2"
        await asyncio.sleep(roaming.LINGER + 0.2)
        assert natt.fileno() == -1  # ... until the move is done and a little longer
        roamer.stop()
        engine.close()

    run(body)


def test_a_refused_address_makes_way_for_the_next_one(monkeypatch) -> None:
    net = Network(monkeypatch)
    net.source = "127.0.0.2"

    async def body(loop) -> None:
        engine = StubEngine(loop)
        roamer = roaming.Roamer(engine, grace=5)
        roamer.check()
        assert engine.sa.updates[-1][0] == "127.0.0.2"
        roamer.on_event(AddressUpdateFailed("127.0.0.2", "UNACCEPTABLE_ADDRESSES"))
        assert engine.sa.updates[-1][0] != "127.0.0.2"
        assert "127.0.0.2" in roamer.refused
        # Every address refused: that is no path at all.
        for addr in ("127.0.0.1", "127.0.0.3"):
            roamer.on_event(AddressUpdateFailed(addr, "UNACCEPTABLE_ADDRESSES"))
        assert roamer.paused_since is not None
        # A new network (the address list changed): the gateway may take them again.
        net.addresses = ["127.0.0.1", "127.0.0.4"]
        net.source = "127.0.0.4"
        roamer.check()
        assert roamer.paused_since is None and engine.sa.updates[-1][0] == "127.0.0.4"
        roamer.stop()
        engine.close()

    run(body)


def test_no_path_keeps_the_sa_until_the_grace_period_ends(monkeypatch) -> None:
    net = Network(monkeypatch)

    async def body(loop) -> None:
        engine = StubEngine(loop)
        roamer = roaming.Roamer(engine, grace=0.3)
        net.source = None
        roamer.check()
        assert engine.status["state"] == "reconnecting" and engine.sa.abandoned is None
        await asyncio.sleep(0.5)
        reason, error = engine.sa.abandoned
        assert isinstance(error, PeerUnreachable) and "no network path" in reason
        roamer.stop()
        engine.close()

    run(body)


def test_a_path_that_returns_in_time_resumes_the_same_sa(monkeypatch) -> None:
    net = Network(monkeypatch)

    async def body(loop) -> None:
        engine = StubEngine(loop)
        roamer = roaming.Roamer(engine, grace=0.3)
        net.source = None
        roamer.check()
        net.source = "127.0.0.1"  # the same address again: still an update (new mapping)
        roamer.check()
        assert engine.status["state"] == "connected"
        assert [u[0] for u in engine.sa.updates] == ["127.0.0.1"]
        await asyncio.sleep(0.5)
        assert engine.sa.abandoned is None
        roamer.stop()
        engine.close()

    run(body)


def test_without_mobike_a_new_ike_sa_is_built(monkeypatch) -> None:
    net = Network(monkeypatch)

    async def body(loop) -> None:
        engine = StubEngine(loop, mobike=False)
        roamer = roaming.Roamer(engine, grace=5)
        net.source = "127.0.0.3"
        roamer.check()
        assert engine.reauths == 1 and engine.sa.updates == []
        assert engine.socks["ike"].getsockname()[0] == "127.0.0.3"  # IKE_SA_INIT goes there
        roamer.on_reestablished(engine.sa)
        assert engine.status["roams"] == 1 and engine.status["local_address"] == "127.0.0.3"
        roamer.on_reestablished(engine.sa)  # a reauthentication for other reasons
        assert engine.status["roams"] == 1
        roamer.stop()
        engine.close()

    run(body)


def test_a_new_path_ends_a_reconnect_backoff_once(monkeypatch) -> None:
    net = Network(monkeypatch)

    async def body(loop) -> None:
        engine = StubEngine(loop)
        engine.reconnecting = True
        roamer = roaming.Roamer(engine, grace=5)
        net.source = None
        roamer.check()
        assert not engine._wake.is_set()
        net.source = "127.0.0.2"
        roamer.check()
        assert engine._wake.is_set()
        engine._wake.clear()
        roamer.check()  # nothing new
        assert not engine._wake.is_set()
        roamer.stop()
        engine.close()

    run(body)


def test_nat_state_switches_keepalives(monkeypatch) -> None:
    Network(monkeypatch)

    async def body(loop) -> None:
        engine = StubEngine(loop)
        roamer = roaming.Roamer(engine, grace=5)
        roamer.on_event(AddressesUpdated("127.0.0.1", 4500, True, False))
        assert engine.keepalive is not None and engine.status["nat_detected"] is True
        roamer.on_event(AddressesUpdated("127.0.0.1", 4500, False, False))
        assert engine.keepalive is None and engine.status["nat_detected"] is False
        roamer.stop()
        engine.close()

    run(body)


def test_grace_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(roaming.GRACE_ENV, "7.5")
    assert roaming.grace_from_env() == 7.5
    monkeypatch.setenv(roaming.GRACE_ENV, "soon")
    assert roaming.grace_from_env() == roaming.DEFAULT_GRACE
    monkeypatch.delenv(roaming.GRACE_ENV)
    assert roaming.grace_from_env() == roaming.DEFAULT_GRACE

