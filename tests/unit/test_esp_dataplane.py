"""DataPlane end to end: two data planes with mirrored SAs, a TUN each in its own namespace,
joined by a real UDP socket pair; ping crosses the ESP tunnel both ways."""

import asyncio

import pytest

from client.dataplane import DataPlane
from client.esp.sa import EspInbound, EspOutbound
from client.esp.selectors import InboundPolicy
from client.ikev2.constants import EncrId, IntegId
from tests.unit.test_netconf import netns, run_in

E2E = """
import asyncio, hashlib, socket
from client.dataplane import DataPlane
from client.esp.sa import EspInbound, EspOutbound
from client.esp.selectors import InboundPolicy
from client.ikev2.constants import EncrId, IntegId
from client.tun import TunDevice
ANY = InboundPolicy.any()
NS2 = sys.argv[1]
ENCR, BITS, INTEG = {suite}

def sa_pair(spi, seed):
    ek = bytes((seed + i) % 256 for i in range({ek_len}))
    ik = bytes((seed * 3 + i) % 256 for i in range({ik_len})) if INTEG else None
    return (EspOutbound(spi, ENCR, BITS, ek, INTEG, ik), EspInbound(spi, ENCR, BITS, ek, INTEG, ik))

async def ping(*args):
    p = await asyncio.create_subprocess_exec("ping", *args, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.STDOUT)
    out, _ = await p.communicate()
    return p.returncode, out.decode()

async def main():
    loop = asyncio.get_running_loop()
    a, b = TunDevice.open("vpa%d"), TunDevice.open("vpb%d")
    sh("ip", "link", "set", b.name, "netns", NS2)  # the fd stays with us
    sh("ip", "addr", "add", "198.18.0.1", "peer", "198.18.0.2", "dev", a.name)
    sh("ip", "addr", "add", "2001:db8::1/64", "dev", a.name, "nodad")
    sh("ip", "link", "set", a.name, "up")
    sh("ip", "-n", NS2, "addr", "add", "198.18.0.2", "peer", "198.18.0.1", "dev", b.name)
    sh("ip", "-n", NS2, "addr", "add", "2001:db8::2/64", "dev", b.name,
       "nodad")
    sh("ip", "-n", NS2, "link", "set", b.name, "up")

    ua, ub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM)
    for s in (ua, ub):
        s.bind(("127.0.0.1", 0)); s.setblocking(False)
    ua.connect(ub.getsockname()); ub.connect(ua.getsockname())
    dpa, dpb = DataPlane(loop, a, ua.send), DataPlane(loop, b, ub.send)
    def reader(sock, dp):
        def readable():
            while True:
                try:
                    dp.on_esp(sock.recv(65535))
                except BlockingIOError:
                    break
            dp.flush()  # as the engine does after each drain
        return readable
    loop.add_reader(ua.fileno(), reader(ua, dpa))
    loop.add_reader(ub.fileno(), reader(ub, dpb))
    dpa.start(); dpb.start()

    rc, out = await ping("-c", "1", "-W", "1", "198.18.0.2")
    assert rc != 0 and dpa.dropped >= 1 and dpa.packets_out == 0, out  # no SA yet

    a_out, b_in = sa_pair(0x1001, 7)
    b_out, a_in = sa_pair(0x2002, 99)
    dpa.install(a_out, a_in, ANY); dpb.install(b_out, b_in, ANY)
    rc, out = await ping("-c", "3", "-i", "0.2", "-W", "2", "198.18.0.2")
    assert rc == 0 and " 0% packet loss" in out, out
    rc, out = await ping("-6", "-c", "2", "-i", "0.2", "-W", "2", "-s", "1300", "2001:db8::2")
    assert rc == 0 and " 0% packet loss" in out, out
    assert dpa.packets_out >= 5 and dpa.packets_in >= 5, vars(dpa)
    assert dpb.packets_in == dpa.packets_out and dpb.packets_out == dpa.packets_in
    assert dpa.bytes_out == a_out.bytes == b_in.bytes
    assert dpa.last_inbound is not None

    # TCP from B's side to A's: the segments arriving at A are written coalesced, and
    # every byte arrives intact.
    assert a.vnet_hdr and b.vnet_hdr
    srv = socket.socket(); srv.bind(("198.18.0.1", 5001)); srv.listen(); srv.setblocking(False)
    sender = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", NS2, sys.executable, "-c",
        "import os, socket, hashlib, sys\\n"
        "data = os.urandom(3_000_000)\\n"
        "s = socket.create_connection(('198.18.0.1', 5001), timeout=20)\\n"
        "s.sendall(data); s.close()\\n"
        "print(hashlib.sha256(data).hexdigest())\\n",
        stdout=asyncio.subprocess.PIPE)
    conn, _ = await loop.sock_accept(srv)
    digest, merged = hashlib.sha256(), a.merged
    while chunk := await loop.sock_recv(conn, 65536):
        digest.update(chunk)
    out, _ = await sender.communicate()
    assert sender.returncode == 0 and out.decode().strip() == digest.hexdigest()
    assert a.merged > merged, (a.writes, a.merged)
    conn.close(); srv.close()

    # Rekey: new SAs in both directions; the old inbound SA keeps working until removed.
    old_a_out = a_out
    a_out2, b_in2 = sa_pair(0x3003, 55)
    dpb.install(b_out, b_in2, ANY)
    late = old_a_out.encapsulate(bytes.fromhex("4500001c0000000040010000c6120001c6120002")
                                 + bytes(8))
    dpa.install(a_out2, a_in, ANY)
    rc, out = await ping("-c", "2", "-i", "0.2", "-W", "2", "198.18.0.2")
    assert rc == 0, out
    assert b_in2.packets >= 2
    before = dpb.packets_in
    dpb.on_esp(late)  # in flight during the rekey: still accepted by the old SA
    dpb.flush()
    assert dpb.packets_in == before + 1
    dpb.remove_inbound(0x1001)
    dropped = dpb.dropped
    dpb.on_esp(old_a_out.encapsulate(bytes.fromhex("4500001c0000000040010000c6120001c6120002")
                                     + bytes(8)))
    dpb.flush()
    assert dpb.dropped == dropped + 1 and dpb.packets_in == before + 1
    dpa.stop(); dpb.stop()
    a.close(); b.close()
    print("ok")

asyncio.run(main())
"""

SUITES = {
    "aes-gcm-256": ((EncrId.AES_GCM_16, 256, None), 36, 0),
    "aes-cbc-sha256": ((EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128), 16, 32),
}


@pytest.mark.parametrize("suite", SUITES)
def test_ping_through_two_dataplanes(suite):
    (encr, bits, integ), ek_len, ik_len = SUITES[suite]
    code = E2E.format(
        suite=f"({int(encr)}, {bits}, {int(integ) if integ else None})",
        ek_len=ek_len,
        ik_len=ik_len,
    )
    with netns() as ns1, netns() as ns2:
        run_in(ns1, code.replace("sys.argv[1]", repr(ns2)), timeout=60)


class FakeTun:
    fd = -1

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write_batch(self, packets: list[bytes]) -> tuple[int, int, None]:
        self.written.extend(packets)
        return 0, 0, None


def test_on_esp_drops_garbage_without_raising():
    loop = asyncio.new_event_loop()
    try:
        tun = FakeTun()
        dp = DataPlane(loop, tun, lambda p: None)  # type: ignore[arg-type]
        key = bytes(36)
        out = EspOutbound(5, EncrId.CHACHA20_POLY1305, 256, key)
        dp.install(out, EspInbound(5, EncrId.CHACHA20_POLY1305, 256, key), InboundPolicy.any())
        pkt = out.encapsulate(b"\x45" + bytes(27))
        for junk in (b"", b"\x00\x00\x00\x05", b"\x00\x00\x00\x06" + bytes(40), pkt[:-1], pkt[:30]):
            dp.on_esp(junk)
        dp.flush()
        assert dp.dropped == 5 and tun.written == []
        dp.on_esp(pkt)
        dp.on_esp(pkt)  # replay
        dp.flush()
        assert tun.written == [b"\x45" + bytes(27)]
        assert dp.packets_in == 1 and dp.bytes_in == 28 and dp.dropped == 6
    finally:
        loop.close()
