"""The daemon with real sockets, real users and the strongSwan lab gateway.

The daemon runs as root inside the lab's client namespace; clients are this process
forked and switched to a throw-away user (tests/daemon/users.py), so the daemon's
SO_PEERCRED check sees exactly what it would see from a desktop user's process.
"""

from __future__ import annotations

import argparse
import encodings.utf_8_sig  # noqa: F401 - the profile parser needs it in the children
import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# Imported before any fork: the children cannot read the interpreter's directories.
from client import (
    control,
    daemon_client,
    profile_commands,  # noqa: F401 - used by cli_connect in the children
)
from client.control import ControlClient
from tests.lab.checks import wait_gateway_delete
from tests.lab.gateway import SCENARIOS
from tests.lab.profiles import make_profile
from tests.lab.topology import ping, python_env
from tests.lab.traffic import silenced_gateway

from .users import AsUser, as_user

pytestmark = pytest.mark.interop

CONN = "eap-mschapv2"


# -- what the children run (as a user) ------------------------------------------------
def call_once(sock: str, command: str, args: dict[str, Any]) -> dict:
    with ControlClient.open(Path(sock), 30) as client:
        return client.call(command, **args)


def connect_watch_disconnect(sock: str, profile: dict, password: str) -> dict:
    """Subscribe, connect, watch until the statistics show traffic, disconnect."""
    events: list[dict] = []
    with ControlClient.open(Path(sock), 60, on_event=events.append) as client:
        subscribed = client.call("subscribe")
        connected = client.call("connect", profile=profile, secrets={"password": password})
        if connected.get("ok"):
            deadline = time.monotonic() + 45
            for message in client.messages():
                events.append(message)
                stats = [e for e in events if e.get("event") == "stats"]
                if len(stats) >= 2 and stats[-1]["packets_in"] >= 3:
                    break
                if time.monotonic() > deadline:
                    break
        disconnected = client.call("disconnect", wait=True)
    return {"subscribe": subscribed, "connect": connected, "disconnect": disconnected,
            "events": events}


def cli(command: str, argv: dict[str, Any], rdir: str) -> int:
    os.environ["VPNCLIENT_RUNTIME_DIR"] = rdir
    entry = getattr(daemon_client, f"cli_{command}")
    return entry(argparse.Namespace(**argv))


def cli_without_runtime_dir() -> dict:
    """status, disconnect and a raw request with neither runtime directory set."""
    for name in ("VPNCLIENT_RUNTIME_DIR", "XDG_RUNTIME_DIR"):
        os.environ.pop(name, None)
    codes = {"status": daemon_client.cli_status(argparse.Namespace(json=True)),
             "disconnect": daemon_client.cli_disconnect(argparse.Namespace())}
    try:
        control.request("status", timeout=2)
        codes["request"] = "answered"
    except OSError as exc:
        codes["request"] = type(exc).__name__
    return codes


# -- helpers ---------------------------------------------------------------------------
def lab_profile(lab, scenario: str = CONN) -> dict:
    return make_profile(lab.pki, scenario)


def states(events: list[dict]) -> list[str]:
    return [e["state"] for e in events if e.get("event") == "state"]


def assert_clean(lab, daemon, log_offset: int) -> None:
    problem = wait_gateway_delete(lab, CONN, log_offset)
    assert problem is None, problem
    assert lab.leftovers() == [], daemon.log()
    assert sorted(p.name for p in daemon.rdir.iterdir()) == ["control.sock"], daemon.log()


# -- who may talk to the daemon ---------------------------------------------------------
def test_outsider_is_refused(clean_lab, daemon, users) -> None:
    sock = str(daemon.socket)
    for command, args in (("status", {}), ("subscribe", {}), ("disconnect", {}),
                          ("connect", {"profile": lab_profile(clean_lab),
                                       "secrets": {"password": clean_lab.secret(CONN)}})):
        reply, _ = as_user(users.outsider, call_once, sock, command, args)
        assert reply["ok"] is False, (command, reply)
        assert reply["reason"] == "not-authorized", reply
        assert users.group in reply["error"] and users.outsider.name in reply["error"]
        assert "usermod" in reply["error"], reply  # the fix is in the message
    # Nothing happened: no connection was attempted, the daemon still serves members.
    assert clean_lab.gateway.sas_for(CONN) == []
    reply, _ = as_user(users.member, call_once, sock, "status", {})
    assert reply["ok"] is True and reply["status"]["state"] == "disconnected", reply
    # The CLI run as the outsider says so and fails.
    code, output = as_user(users.outsider, cli, "status", {"json": True}, str(daemon.rdir))
    assert code == 1 and "not a member of the group" in output, output


def test_member_connects_through_the_daemon_and_sees_events(clean_lab, daemon, users) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    child = AsUser(users.member, connect_watch_disconnect, str(daemon.socket),
                   lab_profile(lab), lab.secret(CONN)).start()
    status = daemon.wait_state("connected", timeout=30)
    assert lab.gateway.sas_for(CONN), lab.gateway.list_sas()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and daemon.status()["state"] == "connected":
        assert lab.ping(count=2).ok, daemon.log()
    result, _ = child.result(timeout=90)

    assert result["subscribe"]["ok"], result["subscribe"]
    assert result["connect"]["ok"], f"{result['connect']}\n{daemon.log()}"
    connected = result["connect"]["status"]
    assert connected["state"] == "connected" and connected["virtual_ips"], connected
    assert connected["profile"] == status["profile"] == "lab eap-mschapv2"
    assert result["disconnect"]["ok"], result["disconnect"]

    events = result["events"]
    seen = states(events)
    assert seen[:2] == ["connecting", "connected"], seen
    assert seen[-1] == "disconnected", seen
    logs = [e["message"] for e in events if e.get("event") == "log"]
    assert any(m.startswith("connected: ") for m in logs), logs
    assert any("IKE_AUTH request" in m for m in logs), logs  # the protocol log reaches us
    assert not any(lab.secret(CONN) in json.dumps(e) for e in events)
    stats = [e for e in events if e.get("event") == "stats"]
    assert len(stats) >= 2, events
    assert stats[-1]["packets_in"] >= 3 and stats[-1]["bytes_in"] > stats[0]["bytes_in"], stats
    assert stats[-1]["uptime"] > stats[0]["uptime"]

    assert daemon.status()["state"] == "disconnected"
    assert_clean(lab, daemon, log_offset)


def test_a_connection_belongs_to_the_member_who_made_it(clean_lab, daemon, users) -> None:
    """Another member sees that a tunnel is up and whose, nothing more, and cannot end it;
    the owner and root can."""
    lab = clean_lab
    sock = str(daemon.socket)
    owner, other = users.member, users.other
    reply, _ = as_user(owner, call_once, sock, "connect",
                       {"profile": lab_profile(lab), "secrets": {"password": lab.secret(CONN)}})
    assert reply["ok"], f"{reply}\n{daemon.log()}"
    assert reply["status"]["owner"] == owner.name and reply["status"]["virtual_ips"], reply

    seen, _ = as_user(other, call_once, sock, "status", {})
    status = seen["status"]
    assert status["state"] == "connected" and status["profile"] == "lab eap-mschapv2", status
    assert status["owner"] == owner.name and owner.name in status["withheld"], status
    details = ("virtual_ips", "dns", "routes", "gateway", "local_address", "local_id",
               "remote_id", "ike_proposal")
    assert not any(status[k] for k in details), status
    assert lab.secret(CONN) not in json.dumps(seen)
    subscribed, _ = as_user(other, call_once, sock, "subscribe", {})
    assert subscribed["log"] == [] and not subscribed["status"]["virtual_ips"], subscribed
    refused, _ = as_user(other, call_once, sock, "disconnect", {"wait": True})
    assert refused["ok"] is False and refused["reason"] == "not-owner", refused
    assert f"'{owner.name}'" in refused["error"], refused
    code, output = as_user(other, cli, "disconnect", {}, str(daemon.rdir))
    assert code == 1 and owner.name in output, output
    assert daemon.status()["state"] == "connected" and lab.ping(count=2).ok

    mine, _ = as_user(owner, call_once, sock, "subscribe", {})
    assert mine["status"]["virtual_ips"] and any(
        "IKE_AUTH" in e["message"] for e in mine["log"]), mine
    assert daemon.status()["local_id"], daemon.status()  # root sees everything
    reply, _ = as_user(owner, call_once, sock, "disconnect", {"wait": True})
    assert reply["ok"], reply
    assert daemon.status()["state"] == "disconnected"
    assert lab.leftovers() == [], daemon.log()


def test_a_held_kill_switch_is_its_owners_to_lift(clean_lab, start_daemon, users) -> None:
    """The gateway goes away (reconnect off): the daemon holds the member's kill switch
    (state blocked), also across its own SIGKILL and restart; the other member can
    neither lift it nor connect over it; the owner lifts it with disconnect."""
    lab = clean_lab
    daemon = start_daemon({"VPNCLIENT_RETRANSMIT": "timeout=0.5,base=1.5,tries=3"})
    sock = str(daemon.socket)
    owner, other = users.member, users.other
    outside = SCENARIOS["eap-md5"].addr  # reached in clear, outside the tunnel
    profile = {**lab_profile(lab, "reconnect"), "kill-switch": True, "dpd": 3,
               "reconnect": {"auto": False}}
    reply, _ = as_user(owner, call_once, sock, "connect",
                       {"profile": profile, "secrets": {"password": lab.secret("reconnect")}})
    assert reply["ok"], f"{reply}\n{daemon.log()}"
    with silenced_gateway(lab, SCENARIOS["reconnect"].addr):
        status = daemon.wait_state("blocked", timeout=40)
    assert status["owner"] == owner.name and status["lift_with"] == "vpnclient disconnect"
    assert not ping(lab.client_ns, outside, count=1).ok

    daemon.proc.kill()
    daemon.proc.wait(10)
    daemon.start()
    seen, _ = as_user(other, call_once, sock, "status", {})
    assert seen["status"]["state"] == "blocked", seen
    assert seen["status"]["owner"] == owner.name, seen
    for command, args in (("disconnect", {}),
                          ("connect", {"profile": lab_profile(lab),
                                       "secrets": {"password": lab.secret(CONN)}})):
        refused, _ = as_user(other, call_once, sock, command, args)
        assert refused["reason"] == "not-owner", (command, refused)
        assert f"'{owner.name}'" in refused["error"], refused
    assert not ping(lab.client_ns, outside, count=1).ok, daemon.log()

    code, output = as_user(owner, cli, "disconnect", {}, str(daemon.rdir))
    assert code == 0 and "kill switch lifted" in output, output + daemon.log()
    assert daemon.status()["state"] == "disconnected"
    assert ping(lab.client_ns, outside, count=1).ok, daemon.log()
    assert lab.leftovers() == [], daemon.log()


def kill_switch_up(lab) -> bool:
    return "vpnclient" in lab.client_ns.run(["nft", "list", "tables"]).stdout


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_always_on_blocks_from_the_start_and_survives_a_reboot(clean_lab, start_daemon,
                                                              users) -> None:
    """`vpnclient always-on`: the daemon connects the profile when it starts, with the
    kill switch engaged before the gateway answers, retries until it does, comes up
    again after a (simulated) reboot, and ends only when a member disconnects it."""
    lab = clean_lab
    conf = Path(lab.dir, "always-on", secrets.token_hex(3))
    conf.mkdir(parents=True, mode=0o700)
    profile = {**lab_profile(lab, "reconnect"), "kill-switch": True}
    (conf / f"{profile['uuid']}.vpnprofile").write_text(json.dumps(profile))
    creds = conf / "always-on.credentials"
    creds.write_text(lab.secret("reconnect") + "\n")
    env = {"VPNCLIENT_CONFIG_DIR": str(conf),
           "VPNCLIENT_RETRANSMIT": "timeout=0.5,base=1.5,tries=3"}

    def set_always_on(*args: str):
        return lab.client_ns.run([sys.executable, "-m", "client.cli", "always-on", *args],
                                 check=False, env={**python_env(), **env})
    creds.chmod(0o644)
    refused = set_always_on(profile["uuid"], "--credentials", str(creds), "--all-users")
    assert refused.returncode == 2 and "chmod 600" in refused.stderr, refused.stderr
    creds.chmod(0o600)
    result = set_always_on(profile["uuid"], "--credentials", str(creds), "--all-users")
    assert result.returncode == 0, result.stderr
    assert lab.secret("reconnect") not in (conf / "always-on.json").read_text()

    outside = SCENARIOS["eap-md5"].addr
    with silenced_gateway(lab, SCENARIOS["reconnect"].addr):
        daemon = start_daemon(env)
        wait_for(lambda: kill_switch_up(lab), 10, "no kill switch at start\n" + daemon.log())
        assert daemon.status()["state"] in ("connecting", "blocked"), daemon.log()
        assert daemon.status()["owner"] == "all users"
        assert not ping(lab.client_ns, outside, count=1).ok
    daemon.wait_state("connected", timeout=60)
    assert lab.ping(count=2).ok, daemon.log()
    assert not ping(lab.client_ns, outside, count=1).ok

    # A reboot: the daemon dies, the kernel's table goes with the machine and so does
    # the record in /run (the network's own files the boot rewrites; here the crash
    # journal puts them back).
    daemon.proc.kill()
    daemon.proc.wait(10)
    lab.client_ns.run(["nft", "delete", "table", "inet", "vpnclient"])
    (daemon.rdir / "killswitch.json").unlink()
    daemon.start()
    wait_for(lambda: kill_switch_up(lab), 10, "no kill switch after reboot\n" + daemon.log())
    daemon.wait_state("connected", timeout=60)
    assert lab.ping(count=2).ok, daemon.log()

    # Every member may end it (--all-users); then it stays down and the network is free.
    code, output = as_user(users.other, cli, "disconnect", {}, str(daemon.rdir))
    assert code == 0, output + daemon.log()
    assert daemon.status()["state"] == "disconnected"
    assert not kill_switch_up(lab) and ping(lab.client_ns, outside, count=1).ok
    time.sleep(3)
    assert daemon.status()["state"] == "disconnected", daemon.log()
    assert lab.leftovers() == [], daemon.log()


def test_wrong_password_is_code_3(clean_lab, daemon, users) -> None:
    reply, _ = as_user(users.member, call_once, str(daemon.socket), "connect",
                       {"profile": lab_profile(clean_lab), "secrets": {"password": "wrong"}})
    assert reply["ok"] is False and reply["code"] == 3 and reply["reason"] == "auth", reply
    status = daemon.status()
    assert status["state"] == "failed" and status["last_error"], status
    assert clean_lab.leftovers() == []


def test_cli_as_a_user_goes_through_the_daemon(clean_lab, daemon, users, tmp_path) -> None:
    lab = clean_lab
    profile_dir = Path(lab.dir, "user-profiles", daemon.dir.name)
    profile_dir.mkdir(parents=True)
    path = profile_dir / "work.vpnprofile"
    path.write_text(json.dumps(lab_profile(lab)))
    os.chown(profile_dir, users.member.uid, users.member.gid)
    os.chown(path, users.member.uid, users.member.gid)
    env_args = {"profile": str(path), "password_stdin": True, "verbose": 0}

    code, output = as_user(users.member, cli, "connect", env_args, str(daemon.rdir),
                           stdin=lab.secret(CONN) + "\n", timeout=60)
    assert code == 0, output + daemon.log()
    assert "connected: " in output, output
    assert lab.ping(count=2).ok

    code, output = as_user(users.member, cli, "status", {"json": True}, str(daemon.rdir))
    assert code == 0 and json.loads(output)["state"] == "connected", output
    code, output = as_user(users.member, cli, "disconnect", {}, str(daemon.rdir))
    assert code == 0, output
    assert daemon.status()["state"] == "disconnected"

    code, output = as_user(users.member, cli, "connect", env_args, str(daemon.rdir),
                           stdin="wrong\n")
    assert code == 3, output
    assert lab.leftovers() == []


def test_a_profile_the_daemon_rejects_names_the_key(clean_lab, daemon, users) -> None:
    """The CLI leaves the X.509 parse to the daemon: a remote.cert that is base64 but no
    certificate still fails with exit code 2 and the key named, and changes nothing."""
    lab = clean_lab
    profile_dir = Path(lab.dir, "user-profiles", daemon.dir.name + "-bad-cert")
    profile_dir.mkdir(parents=True)
    path = profile_dir / "bad.vpnprofile"
    profile = lab_profile(lab)
    profile["remote"]["cert"] = "MAMCAQE="  # DER of SEQUENCE { INTEGER 1 }
    path.write_text(json.dumps(profile))
    os.chown(profile_dir, users.member.uid, users.member.gid)
    os.chown(path, users.member.uid, users.member.gid)
    code, output = as_user(users.member, cli, "connect",
                           {"profile": str(path), "password_stdin": True, "verbose": 0},
                           str(daemon.rdir), stdin=lab.secret(CONN) + "\n", timeout=60)
    assert code == control.CODE_USAGE, output + daemon.log()
    assert "remote.cert: not an X.509 certificate" in output, output
    assert daemon.status()["state"] == "disconnected"
    assert lab.leftovers() == [], daemon.log()


def test_no_control_socket_under_tmp(users, tmp_path) -> None:
    """Without XDG_RUNTIME_DIR a user's commands go to the daemon's socket only: a
    listener another user planted where the old fallback was hears nothing."""
    user = users.member
    planted: list[socket.socket] = []
    old = Path(f"/tmp/vpnclient-{user.uid}")  # the fallback that was: $TMP/vpnclient-UID
    bases = (old, old / "vpnclient")
    for base in bases:
        base.mkdir(exist_ok=True)
        base.chmod(0o777)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = base / control.SOCKET_NAME
        path.unlink(missing_ok=True)
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen(8)
        listener.setblocking(False)
        planted.append(listener)
    try:
        codes, output = as_user(user, cli_without_runtime_dir)
        assert codes["request"] == "FileNotFoundError", (codes, output)
        assert codes["status"] == 0 and '"disconnected"' in output, output
        for listener in planted:
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody ever connected
    finally:
        for listener in planted:
            listener.close()
        for base in reversed(bases):
            (base / control.SOCKET_NAME).unlink(missing_ok=True)
            base.rmdir()


def test_a_user_is_told_how_to_lift_a_kill_switch_without_the_service(users, lab) -> None:
    """The service is stopped with a kill switch held: a user's status says blocked, and
    disconnect says what lifts it instead of "not connected"."""
    rdir = Path(lab.dir, "no-service", secrets.token_hex(3))
    rdir.mkdir(parents=True)
    rdir.chmod(0o755)
    (rdir / "killswitch.json").write_text(json.dumps({
        "table": "inet vpnclient", "block": [4, 6], "reason": "the gateway went away",
        "since": "2026-12-08T00:00:00+00:00", "profile": "Work", "owner": "alice",
        "owner_uid": 4242}))
    (rdir / "killswitch.json").chmod(0o644)
    code, output = as_user(users.member, cli, "status", {"json": True}, str(rdir))
    status = json.loads(output)
    assert code == 0 and status["state"] == "blocked", output
    assert status["blocked_reason"] == "the gateway went away" and status["owner"] == "alice"
    code, output = as_user(users.member, cli, "disconnect", {}, str(rdir))
    assert code == 1 and "sudo vpnclient disconnect" in output, output


# -- robustness ------------------------------------------------------------------------
def test_a_client_that_drops_mid_request_leaves_the_daemon_healthy(
        clean_lab, daemon, users) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    sock = str(daemon.socket)
    # Half a request, then gone.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        s.sendall(b'{"version": 1, "command": "sta')
    # Garbage, an over-long line, a wrong version.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        s.sendall(b"\xff\xfe not json\n")
        assert json.loads(s.makefile("rb").readline())["reason"] == "bad-request"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        try:
            s.sendall(b"x" * (control.MAX_LINE + 10))
        except OSError:
            pass  # the daemon hung up on us: that is the point
    assert daemon.call("connect", profile={"version": 2}, version=2)["reason"] == "bad-request"
    # A connect request whose client is gone before the answer: the connection is made.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        request = {"version": 1, "id": 1, "command": "connect", "profile": lab_profile(lab),
                   "secrets": {"password": lab.secret(CONN)}}
        s.sendall(json.dumps(request).encode() + b"\n")
    daemon.wait_state("connected", timeout=30)
    assert lab.ping(count=2).ok
    # A member whose subscription it never reads does not block anybody.
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(sock)
    stalled.sendall(b'{"version": 1, "command": "subscribe"}\n')
    reply, _ = as_user(users.member, call_once, sock, "disconnect", {"wait": True})
    assert reply["reason"] == "not-owner" and "'root'" in reply["error"], reply
    reply = daemon.call("disconnect", wait=True)
    stalled.close()
    assert reply["ok"], reply
    assert daemon.status()["state"] == "disconnected"
    assert_clean(lab, daemon, log_offset)
    assert daemon.proc.poll() is None, daemon.log()


def test_sigterm_ends_the_connection_cleanly(clean_lab, daemon) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    reply = daemon.call("connect", profile=lab_profile(lab),
                        secrets={"password": lab.secret(CONN)})
    assert reply["ok"], f"{reply}\n{daemon.log()}"
    assert daemon.stop() == 0, daemon.log()
    problem = wait_gateway_delete(lab, CONN, log_offset)
    assert problem is None, problem
    assert lab.leftovers() == []
    assert list(daemon.rdir.iterdir()) == [], "the daemon left files in its runtime dir"


def test_busy_and_not_connected(clean_lab, daemon) -> None:
    lab = clean_lab
    assert daemon.call("disconnect")["reason"] == "not-connected"
    profile = lab_profile(lab)
    assert daemon.call("connect", profile=profile,
                       secrets={"password": lab.secret(CONN)})["ok"]
    busy = daemon.call("connect", profile=profile, secrets={"password": lab.secret(CONN)})
    assert busy["ok"] is False and busy["reason"] == "busy", busy
    assert "disconnect first" in busy["error"]
    assert daemon.call("disconnect", wait=True)["ok"]
