"""Network configuration (routes, rules, DNS, crash journal), for real in a namespace.

The namespace helpers here are also used by test_esp_dataplane.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import subprocess, sys, time
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout
"""


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("ip") or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs iproute2 and /dev/net/tun")


@contextmanager
def netns(prefix: str = "vpctest", resolv_conf: bytes | None = None) -> Iterator[str]:
    """A fresh namespace (with its own /etc/resolv.conf if given), always deleted."""
    require_root()
    name = f"{prefix}-{secrets.token_hex(4)}"
    etc = Path("/etc/netns") / name
    try:
        if resolv_conf is not None:
            etc.mkdir(parents=True)
            (etc / "resolv.conf").write_bytes(resolv_conf)
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def ns_python(ns: str, code: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", PRELUDE + textwrap.dedent(code)]


def run_in(ns: str, code: str, timeout: float = 60) -> str:
    """Run Python code inside `ns` (repo on the path); fail the test with its output if it fails."""
    res = subprocess.run(
        ns_python(ns, code),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if res.returncode != 0:
        pytest.fail(f"namespace script failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


ORIGINAL_RESOLV = (
    b"# the lab's own resolv.conf\nnameserver 192.0.2.53\nsearch example.test\noptions edns0\n"
)

SETUP = """
from client.tun import TunDevice
from client.netconf.routes import RouteManager
from client.netconf.dns import DnsManager
from client.netconf.journal import cleanup_stale
RD = Path(sys.argv[1]) if len(sys.argv) > 1 else None
# An uplink with a LAN and a default route in the main table.
sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
sh("ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
sh("ip", "link", "set", "eth0", "up")
sh("ip", "link", "set", "eth1", "up")
sh("ip", "route", "add", "default", "via", "192.0.2.1")
def dev_for(dst, *extra):
    out = sh("ip", "route", "get", dst, *extra).split()
    return out[out.index("dev") + 1] if "dev" in out else out
"""


def _code(body: str) -> str:
    return SETUP + textwrap.dedent(body)


def test_full_tunnel_apply_restore(tmp_path):
    with netns(resolv_conf=ORIGINAL_RESOLV) as ns:
        run_in(
            ns,
            _code(f"""
            RD = Path({str(tmp_path)!r})
            rules4, rules6 = sh("ip", "-4", "rule"), sh("ip", "-6", "rule")
            tun = TunDevice.open("vpn%d", mtu=1400)
            rm = RouteManager(tun.name, runtime_dir=RD)
            rm.apply([ip_interface("198.18.0.5/32"), ip_interface("2001:db8:5::5/128")],
                     [ip_network("0.0.0.0/0"), ip_network("::/0")],
                     [ip_network("198.51.100.0/24")], mtu=1380)
            dm = DnsManager(RD)  # no systemd-resolved here: resolv.conf is rewritten
            dm.apply([ip_address("198.18.0.53")], ["corp.example"], tun.name)

            r4 = sh("ip", "-4", "rule")
            assert "not from all fwmark 0x5650 lookup 22096" in r4, r4
            assert "22095:\\tfrom all lookup main suppress_prefixlength 0" in r4, r4
            assert "not from all fwmark 0x5650 lookup 22096" in sh("ip", "-6", "rule")
            t4 = sh("ip", "-4", "route", "show", "table", "22096")
            assert f"default dev {{tun.name}}" in t4 and "throw 198.51.100.0/24" in t4, t4
            assert f"default dev {{tun.name}}" in sh("ip", "-6", "route", "show", "table", "22096")
            link = sh("ip", "addr", "show", "dev", tun.name)
            assert "mtu 1380" in link and ",UP" in link, link
            assert "198.18.0.5/32" in link and "2001:db8:5::5/128" in link, link
            # Routing decisions: tunnel by default, the marked socket and the LAN stay outside.
            assert dev_for("203.0.113.7") == tun.name
            assert dev_for("203.0.113.7", "mark", "0x5650") == "eth0"
            assert dev_for("192.0.2.9") == "eth0"
            assert dev_for("198.51.100.1") == "eth0"  # excluded (throw)

            conf = Path("/etc/resolv.conf").read_text()
            assert conf.startswith("# Written by vpnclient"), conf
            assert "nameserver 198.18.0.53" in conf and "192.0.2.53" not in conf, conf
            assert "search corp.example example.test" in conf and "options edns0" in conf
            assert (RD / "netconf.json").exists()

            dm.restore(); rm.restore()
            dm.restore(); rm.restore()  # idempotent
            assert sh("ip", "-4", "rule") == rules4 and sh("ip", "-6", "rule") == rules6
            assert sh("ip", "-4", "route", "show", "table", "22096") == ""
            assert sh("ip", "-6", "route", "show", "table", "22096") == ""
            assert dev_for("203.0.113.7") == "eth0"
            assert Path("/etc/resolv.conf").read_bytes() == {ORIGINAL_RESOLV!r}
            assert not (RD / "netconf.json").exists()
            assert not (RD / "resolv.conf.orig").exists()
            tun.close()
            assert tun.name not in sh("ip", "link")
            """),
        )
    assert not (tmp_path / "netconf.json").exists()


def test_split_tunnel_ipv4_only(tmp_path):
    with netns() as ns:
        run_in(
            ns,
            _code("""
            tun = TunDevice.open("vpn%d")
            rm = RouteManager(tun.name, table=2345, fwmark=0x77, priority=3000)
            rm.apply([ip_interface("198.18.0.5/32")],
                     [ip_network("198.19.0.0/16"), ip_network("2001:db8:9::/48")],
                     [ip_network("198.19.7.0/24")], mtu=1400)
            r4 = sh("ip", "-4", "rule")
            assert "3000:\\tnot from all fwmark 0x77 lookup 2345" in r4, r4
            assert "suppress_prefixlength" not in r4, r4  # split tunnel: tunnel routes win
            assert "2345" not in sh("ip", "-6", "rule")  # no IPv6 address: IPv6 untouched
            assert dev_for("198.19.1.1") == tun.name
            assert dev_for("198.19.7.1") == "eth0"
            assert dev_for("203.0.113.7") == "eth0"
            rm.restore()
            assert "2345" not in sh("ip", "-4", "rule")
            assert dev_for("198.19.1.1") == "eth0"
            """),
        )


def test_failed_apply_rolls_back(tmp_path):
    with netns() as ns:
        run_in(
            ns,
            _code(f"""
            from client.netconf.journal import NetconfError
            RD = Path({str(tmp_path)!r})
            before = sh("ip", "-4", "rule")
            rm = RouteManager("nosuchdev0", runtime_dir=RD)
            try:
                rm.apply([ip_interface("198.18.0.5/32")], [ip_network("0.0.0.0/0")], [], 1400)
            except NetconfError as e:
                assert "nosuchdev0" in str(e), e
            else:
                raise AssertionError("apply on a missing device succeeded")
            assert sh("ip", "-4", "rule") == before
            assert not (RD / "netconf.json").exists()
            """),
        )


def test_crash_then_cleanup_stale(tmp_path):
    with netns(resolv_conf=ORIGINAL_RESOLV) as ns:
        child = subprocess.Popen(
            ns_python(
                ns,
                _code("""
                tun = TunDevice.open("vpn%d")
                RouteManager(tun.name, runtime_dir=RD).apply(
                    [ip_interface("198.18.0.5/32")], [ip_network("0.0.0.0/0")], [], 1400)
                DnsManager(RD).apply([ip_address("198.18.0.53")], [], tun.name)
                print("ready", flush=True)
                time.sleep(120)
                """),
            )
            + [str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
            assert (tmp_path / "netconf.json").exists()
        finally:
            child.kill()
            child.wait()
        run_in(
            ns,
            f"""
            from client.netconf.journal import cleanup_stale
            RD = Path({str(tmp_path)!r})
            assert "0x5650" in sh("ip", "-4", "rule")  # left behind by the dead process
            assert "198.18.0.53" in Path("/etc/resolv.conf").read_text()
            assert cleanup_stale(RD) is True
            assert "0x5650" not in sh("ip", "-4", "rule")
            assert "suppress_prefixlength" not in sh("ip", "-4", "rule")
            assert sh("ip", "-4", "route", "show", "table", "22096") == ""
            assert Path("/etc/resolv.conf").read_bytes() == {ORIGINAL_RESOLV!r}
            assert not (RD / "netconf.json").exists()
            assert cleanup_stale(RD) is False
            """,
        )


# -- DnsManager on plain files (no root needed) ----------------------------------------


def test_resolv_conf_file_restored_byte_for_byte(tmp_path):
    from ipaddress import ip_address

    from client.netconf.dns import DnsManager

    conf = tmp_path / "etc" / "resolv.conf"
    conf.parent.mkdir()
    original = b"nameserver 192.0.2.53\n# odd \xff bytes kept\nsearch a.example\n"
    conf.write_bytes(original)
    conf.chmod(0o640)
    dm = DnsManager(tmp_path / "run", resolv_conf=conf, backend="file")
    dm.apply([ip_address("198.18.0.53"), ip_address("2001:db8::53")], ["corp.example"], "vpn0")
    text = conf.read_text()
    assert "vpnclient" in text.splitlines()[0]
    assert "nameserver 198.18.0.53\nnameserver 2001:db8::53\n" in text
    assert "search corp.example a.example" in text and "192.0.2.53" not in text
    dm.restore()
    assert conf.read_bytes() == original
    assert conf.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "run" / "netconf.json").exists()
    assert [p.name for p in conf.parent.iterdir()] == ["resolv.conf"]  # no temp files left


def test_resolv_conf_symlink_restored(tmp_path):
    from ipaddress import ip_address

    from client.netconf.dns import DnsManager
    from client.netconf.journal import cleanup_stale

    target = tmp_path / "stub-resolv.conf"
    target.write_bytes(b"nameserver 127.0.0.53\n")
    conf = tmp_path / "resolv.conf"
    conf.symlink_to(target)
    rd = tmp_path / "run"
    dm = DnsManager(rd, resolv_conf=conf, backend="file")
    dm.apply([ip_address("198.18.0.53")], [], "vpn0")
    assert not conf.is_symlink() and "198.18.0.53" in conf.read_text()
    assert target.read_bytes() == b"nameserver 127.0.0.53\n"  # the target is not written
    # Simulate a crash: a fresh process finds the journal and restores the symlink.
    journal = rd / "netconf.json"
    data = json.loads(journal.read_text())
    data["pid"] = os.getppid()  # a live owner (another running client) is left alone
    journal.write_text(json.dumps(data))
    assert cleanup_stale(rd) is False
    data["pid"] = 2**22 + 1  # beyond pid_max on usual systems: a dead owner
    journal.write_text(json.dumps(data))
    assert cleanup_stale(rd) is True
    assert conf.is_symlink() and os.readlink(conf) == str(target)


def test_bind_mounted_resolv_conf_is_rewritten_in_place(tmp_path):
    """As `ip netns exec` mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf: the file
    cannot be renamed over, so it is written in place (no temporary file), and restored."""
    require_root()
    (tmp_path / "my file").write_bytes(b"nameserver 192.0.2.53\n")  # a space: escaped
    conf = tmp_path / "my file"
    source = tmp_path / "netns-resolv.conf"
    source.write_bytes(b"nameserver 192.0.2.99\n")
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        from ipaddress import ip_address
        from pathlib import Path
        sys.path.insert(0, {str(Path.cwd())!r})
        from client.netconf import dns
        conf = Path({str(conf)!r})
        assert not dns._is_mount_point(conf)
        subprocess.run(["mount", "--bind", {str(source)!r}, str(conf)], check=True)
        assert dns._is_mount_point(conf)
        calls = []
        real_replace = os.replace
        os.replace = lambda *a: calls.append(a) or real_replace(*a)
        dm = dns.DnsManager(Path({str(tmp_path / "run")!r}), resolv_conf=conf, backend="file")
        dm.apply([ip_address("198.18.0.53")], [], "vpn0")
        assert "nameserver 198.18.0.53" in conf.read_text()
        assert not [c for c in calls if c[1] == conf], calls  # no rename onto the mount
        dm.restore()
        assert conf.read_bytes() == b"nameserver 192.0.2.99\\n"
        print("ok")
    """)
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                          "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr
    # The mount was private to that namespace: the file itself never changed.
    assert conf.read_bytes() == b"nameserver 192.0.2.53\n"


def test_failure_midway_names_the_command_and_rolls_back(tmp_path):
    # A rule already there (another client's, or a leftover) makes `rule add` fail after
    # the address and routes went in: all of those must go again.
    with netns() as ns:
        run_in(
            ns,
            _code(f"""
            from client.netconf.journal import NetconfError
            RD = Path({str(tmp_path)!r})
            sh("ip", "-6", "rule", "add", "not", "fwmark", "0x5650", "table", "22096",
               "priority", "22096")
            tun = TunDevice.open("vpn%d")
            rm = RouteManager(tun.name, runtime_dir=RD)
            try:
                rm.apply([ip_interface("198.18.0.5/32"), ip_interface("2001:db8:5::5/128")],
                         [ip_network("0.0.0.0/0"), ip_network("2001:db8:9::/48")],
                         [ip_network("198.51.100.0/24")], 1400)
            except NetconfError as e:
                assert "ip -6 rule add not fwmark 0x5650 table 22096 priority 22096" in str(e), e
                assert "exists" in str(e), e
            else:
                raise AssertionError("apply succeeded over a conflicting rule")
            # The IPv4 rules had gone in before the IPv6 one failed.
            assert "fwmark" not in sh("ip", "-4", "rule"), sh("ip", "-4", "rule")
            assert "suppress" not in sh("ip", "-4", "rule")
            assert sh("ip", "-4", "route", "show", "table", "22096") == ""
            assert sh("ip", "-6", "route", "show", "table", "22096") == ""
            assert "198.18.0.5" not in sh("ip", "addr", "show", "dev", tun.name)
            assert "2001:db8:5::5" not in sh("ip", "addr", "show", "dev", tun.name)
            assert dev_for("203.0.113.7") == "eth0"
            assert not (RD / "netconf.json").exists()
            tun.close()
            """),
        )


def test_undo_flushes_a_table_larger_than_one_netlink_answer(tmp_path):
    # A dump of a few thousand routes comes in several datagrams.
    with netns() as ns:
        run_in(
            ns,
            _code("""
            from client.netconf.routes import undo
            tun = TunDevice.open("vpn%d")
            sh("ip", "link", "set", tun.name, "up")
            batch = "".join(f"route add 198.18.{i // 256}.{i % 256} dev {tun.name} table 22096\\n"
                            for i in range(3000))
            subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
            sh("ip", "route", "add", "198.19.0.0/16", "dev", tun.name, "table", "22097")
            main = sh("ip", "-4", "route")
            assert len(sh("ip", "-4", "route", "show", "table", "22096").splitlines()) == 3000
            undo({"tun": tun.name, "table": 22096, "families": [4], "rules": []})
            assert sh("ip", "-4", "route", "show", "table", "22096") == ""
            assert "198.19.0.0/16" in sh("ip", "-4", "route", "show", "table", "22097")
            assert sh("ip", "-4", "route") == main
            tun.close()
            """),
        )


# -- rtnetlink encoding and answers (no root needed) -----------------------------------


def test_rtnl_rule_encoding_follows_iproute2():
    import struct

    from client.netconf import rtnl

    body = rtnl.rule(6, ["not", "fwmark", "0x5650", "table", "22096", "priority", "22096"])
    family, _, _, _, table, _, _, action, flags = rtnl._FIBRULEHDR.unpack_from(body)
    assert (family, table, action, flags) == (10, 0, rtnl.FR_ACT_TO_TBL, rtnl.FIB_RULE_INVERT)
    got = {k: struct.unpack("=I", v)[0] for k, v in rtnl.attrs(body, rtnl._FIBRULEHDR.size)}
    assert got == {rtnl.FRA_FWMARK: 0x5650, rtnl.FRA_TABLE: 22096, rtnl.FRA_PRIORITY: 22096}
    main = rtnl.rule(4, ["table", "main", "suppress_prefixlength", "0"])
    assert main[4] == rtnl.RT_TABLE_MAIN  # a small table id goes in the header
    assert dict(rtnl.attrs(main, rtnl._FIBRULEHDR.size)) == {
        rtnl.FRA_SUPPRESS_PREFIXLEN: b"\0\0\0\0"}
    with pytest.raises(ValueError, match="iif"):
        rtnl.rule(4, ["iif", "lo"])


def test_rtnl_error_answer_with_and_without_kernel_message():
    import errno
    import struct

    from client.netconf import rtnl

    request = rtnl._NLMSGHDR.pack(16 + 12, rtnl.RTM_NEWROUTE, 5, 7, 0)  # capped: header only
    text = rtnl.attr(rtnl.NLMSGERR_ATTR_MSG, b"Nexthop device is not up\0")
    payload = struct.pack("=i", -errno.ENETDOWN) + request + text
    flags = rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS
    assert rtnl._error(payload, flags) == (errno.ENETDOWN, "Nexthop device is not up")
    assert rtnl._error(payload, 0) == (errno.ENETDOWN, "")
    truncated = payload[:-5]  # a cut attribute is ignored, not a crash
    assert rtnl._error(truncated, flags) == (errno.ENETDOWN, "")
    assert rtnl._error(struct.pack("=i", 0) + request, 0) == (0, "")


def test_journal_syncs_unless_the_entry_is_alone_and_kernel_only(tmp_path, monkeypatch):
    from client.netconf import journal

    synced: list[int] = []
    monkeypatch.setattr(journal.os, "fsync", lambda fd: synced.append(fd))
    j = journal.Journal(tmp_path)
    j.record("routes", {"tun": "vpn0"}, durable=False)
    assert synced == []  # bring-up: routes first, nothing else to protect
    j.record("dns", {"backend": "file"})
    assert len(synced) == 1
    j.record("routes", {"tun": "vpn0"}, durable=False)  # a move: the DNS entry is there
    assert len(synced) == 2
    assert set(j.load()) == {"pid", "routes", "dns"}
