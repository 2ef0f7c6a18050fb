"""A lab for the edges of the path: IKE fragmentation over a narrow link, and redirects.

    CLIENT eth0 192.0.2.100/24 --mtu 1280-- eth0 192.0.2.1-.4/24  GW1  lo 198.18.0.1 (LAN)
                                              eth1 198.51.100.1/24
                                                    |
                                              eth0 198.51.100.2/24  GW2  default via GW1
                                                                         lo 198.18.2.1

The client-GW1 link has an MTU of 1280 and both ends drop any UDP datagram larger than
1280 bytes before the kernel could fragment it: a path on which an IKE message only gets
through in pieces of at most 1280 bytes. GW1 forwards between the client and GW2, and
routes the LAN's replies to GW2's virtual IP pool to GW2, so the one LAN host is reached
through either gateway (cleartext from the client to the LAN is dropped, as in the main lab).

Every certificate chain here is deep and big: root -> intermediate -> intermediate ->
gateway, all RSA-4096 (the gateway's IKE_AUTH response is about 5 kB), and a client
certificate under the second intermediate whose PKCS#12 carries both intermediates.

GW1 connections (one per address): frag-eap (EAP-MSCHAPv2), frag-cert (client
certificates), frag-off (EAP, fragmentation switched off) and redirect (EAP; the test
redirects its SA to GW2, which serves `redirect` on 198.51.100.2).
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.lab.charon import CharonInstance, strongswan_conf
from tests.lab.gateway import EAP_PASSWORD, EAP_USER, ESP_PROPOSALS, IKE_PROPOSALS, LAN_TS
from tests.lab.netns import Namespace, add_veth
from tests.lab.pki import GATEWAY_ID, Credential, TestPKI
from tests.lab.profiles import write_profile
from tests.lab.topology import NamespaceLab, NsState, PingResult, ping, snapshot

PATH_MTU = 1280
CLIENT_ADDR = "192.0.2.100"
GW1_ADDRS = {"frag-eap": "192.0.2.1", "frag-cert": "192.0.2.2", "frag-off": "192.0.2.3",
             "redirect": "192.0.2.4"}
GW1_LINK = "198.51.100.1"
GW2_ADDR = "198.51.100.2"
LAN_HOST = "198.18.0.1"
GW2_LAN_ADDR = "198.18.2.1"
GW1_POOL, GW2_POOL = "198.19.0.0/24", "198.19.2.0/24"
CA_KEY_BITS = 4096
OVERSIZE = f"{PATH_MTU + 1}:65535"


def _run(argv: list[str]) -> bytes:
    proc = subprocess.run(argv, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


class ChainPKI(TestPKI):
    """root -> int1 -> int2 -> gateways and a client, made with strongSwan's `pki`."""

    root: Credential
    int1: Credential
    int2: Credential
    gw1: Credential
    gw2: Credential
    carol: Credential  # client certificate, PKCS#12 with both intermediates

    @classmethod
    def create_chain(cls, directory: Path) -> ChainPKI:
        pki = cls(directory)
        pki.dir.mkdir(parents=True, exist_ok=True)
        keys = pki._genkeys({"root": CA_KEY_BITS, "int1": CA_KEY_BITS, "int2": CA_KEY_BITS,
                             "gw1": CA_KEY_BITS, "gw2": 2048, "carol": 2048})
        org = "C=CH, O=vpnclient edge lab"
        cert = _run(["pki", "--self", "--ca", "--lifetime", "3650", "--in", str(keys["root"]),
                     "--type", "priv", "--dn", f"{org}, CN=Edge Root CA", "--outform", "pem"])
        pki.root = pki._credential("root", cert, keys["root"], None)
        pki.int1 = pki._sign("int1", pki.root, keys, f"{org}, CN=Edge Intermediate 1", ca=True)
        pki.int2 = pki._sign("int2", pki.int1, keys, f"{org}, CN=Edge Intermediate 2", ca=True)
        pki.gw1 = pki._sign("gw1", pki.int2, keys, f"{org}, CN={GATEWAY_ID}",
                            sans=[GATEWAY_ID, *GW1_ADDRS.values()],
                            flags=["serverAuth", "ikeIntermediate"])
        pki.gw2 = pki._sign("gw2", pki.int2, keys, f"{org}, CN={GATEWAY_ID} 2",
                            sans=[GATEWAY_ID, GW2_ADDR], flags=["serverAuth", "ikeIntermediate"])
        pki.carol = pki._sign("carol", pki.int2, keys, f"{org}, CN=carol@example.com",
                              sans=["carol@example.com"], flags=["clientAuth"])
        chain = pki.dir / "intermediates.pem"
        chain.write_bytes(pki.int2.cert_pem + pki.int1.cert_pem)
        p12 = pki.dir / "carol.p12"
        _run(["openssl", "pkcs12", "-export", "-inkey", str(pki.carol.key_path),
              "-in", str(pki.carol.cert_path), "-certfile", str(chain), "-name", "carol",
              "-passout", f"pass:{pki.p12_passphrase}", "-out", str(p12)])
        p12.chmod(0o600)
        c = pki.carol
        pki.carol = Credential(c.name, c.cert_path, c.key_path, c.cert_der, p12)
        return pki

    def _genkeys(self, sizes: dict[str, int]) -> dict[str, Path]:
        """RSA keys take seconds each: make them all at once."""
        procs = {name: subprocess.Popen(
            ["pki", "--gen", "--type", "rsa", "--size", str(bits), "--outform", "pem"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for name, bits in sizes.items()}
        paths = {}
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"pki --gen for {name} failed")
            path = self.dir / f"{name}.key.pem"
            path.write_bytes(out)
            path.chmod(0o600)
            paths[name] = path
        return paths

    def _sign(self, name: str, issuer: Credential, keys: dict[str, Path], dn: str,
              ca: bool = False, sans: tuple[str, ...] | list[str] = (),
              flags: tuple[str, ...] | list[str] = ()) -> Credential:
        argv = ["pki", "--issue", "--lifetime", "1825", "--cacert", str(issuer.cert_path),
                "--cakey", str(issuer.key_path), "--in", str(keys[name]), "--type", "priv",
                "--dn", dn, "--outform", "pem"]
        if ca:
            argv.append("--ca")
        for san in sans:
            argv += ["--san", san]
        for flag in flags:
            argv += ["--flag", flag]
        return self._credential(name, _run(argv), keys[name], None)


def _conn(name: str, addr: str, cert: str, pool: str, remote: str,
          fragmentation: str = "yes") -> str:
    if remote == "pubkey":
        remote_auth = """            auth = pubkey
            cacerts = root.crt.pem"""
    else:
        remote_auth = f"""            auth = {remote}
            eap_id = %any"""
    return f"""    {name} {{
        version = 2
        local_addrs = {addr}
        proposals = {IKE_PROPOSALS}
        pools = {pool}
        unique = never
        send_cert = always
        fragmentation = {fragmentation}
        local {{
            auth = pubkey
            certs = {cert}
            id = {GATEWAY_ID}
        }}
        remote {{
{remote_auth}
        }}
        children {{
            lan {{
                local_ts = {LAN_TS}
                esp_proposals = {ESP_PROPOSALS}
            }}
        }}
    }}
"""


def _swanctl_conf(conns: str, pool: str, pool_addrs: str) -> str:
    return f"""connections {{
{conns}}}

pools {{
    {pool} {{
        addrs = {pool_addrs}
    }}
}}

secrets {{
    eap-{EAP_USER} {{
        id = {EAP_USER}
        secret = "{EAP_PASSWORD}"
    }}
}}
"""


class EdgeGateway(CharonInstance):
    """charon + kernel-libipsec with the chain PKI and the given swanctl.conf text."""

    def __init__(self, ns: Namespace, base: Path, name: str, pki: ChainPKI, cert: Credential,
                 conf: str) -> None:
        super().__init__(ns, base, name)
        self.pki, self.cert, self.conf = pki, cert, conf

    def write_config(self) -> None:
        self.prepare_dirs()
        self.conf_path.write_text(strongswan_conf(self.log_path))
        pki = self.pki
        self.install_file("x509ca", "root.crt.pem", pki.root.cert_pem)
        # Intermediates in the CA store: charon sends them along with its certificate.
        self.install_file("x509ca", "int1.crt.pem", pki.int1.cert_pem)
        self.install_file("x509ca", "int2.crt.pem", pki.int2.cert_pem)
        self.install_file("x509", f"{self.cert.name}.crt.pem", self.cert.cert_pem)
        self.install_file("private", f"{self.cert.name}.key.pem", self.cert.key_pem, 0o600)
        (self.swanctl_dir / "conf.d" / "edge.conf").write_text(self.conf)
        (self.swanctl_dir / "swanctl.conf").write_text("include conf.d/*.conf\n")

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)
        self.load_all()

    def sas_for(self, conn: str) -> list[dict]:
        return [sa for sa in self.sas() if sa["name"] == conn]

    def terminate_all(self) -> None:
        for sa in self.sas():
            if sa.get("uniqueid"):
                self.swanctl(["--terminate", "--ike-id", sa["uniqueid"], "--force",
                              "--timeout", "2"], check=False)


class EdgeLab(NamespaceLab):
    """`with EdgeLab() as lab:` builds client, GW1 and GW2 and always tears them down."""

    label = "edge lab"

    def __init__(self, keep_dir: bool = False) -> None:
        self.keep_dir = keep_dir
        self.dir = Path()
        self.client_ns = Namespace("vpnedge-c")
        self.gw1_ns = Namespace("vpnedge-g")
        self.gw2_ns = Namespace("vpnedge-h")
        self.pki: ChainPKI
        self.gw1: EdgeGateway | None = None
        self.gw2: EdgeGateway | None = None
        self.baseline: NsState | None = None

    def _setup(self) -> None:
        self._make_dir("vpnedge-")
        self.pki = ChainPKI.create_chain(self.dir / "pki")
        c, g1, g2 = self.client_ns, self.gw1_ns, self.gw2_ns
        for ns in (c, g1, g2):
            ns.create()
        add_veth(c, "eth0", g1, "eth0", mtu=PATH_MTU)
        add_veth(g1, "eth1", g2, "eth0")
        c.add_addr("eth0", f"{CLIENT_ADDR}/24")
        c.add_route("default", via=GW1_ADDRS["frag-eap"])
        for addr in GW1_ADDRS.values():
            g1.add_addr("eth0", f"{addr}/24")
        g1.add_addr("eth1", f"{GW1_LINK}/24")
        g1.add_addr("lo", f"{LAN_HOST}/32")
        g1.add_route(GW2_POOL, via=GW2_ADDR)
        g2.add_addr("eth0", f"{GW2_ADDR}/24")
        # GW2's own foot in the LAN: charon's route to a client needs a source address
        # inside its local traffic selector.
        g2.add_addr("lo", f"{GW2_LAN_ADDR}/32")
        g2.add_route("default", via=GW1_LINK)
        for ns in (g1, g2):
            ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # The narrow path: nothing over 1280 bytes towards the other end, not even as
        # IP fragments (the rule sees the datagram before the kernel would split it).
        for ns, chain in ((c, "OUTPUT"), (g1, "OUTPUT"), (g1, "FORWARD")):
            ns.run(["iptables", "-w", "-A", chain, "-o", "eth0", "-p", "udp", "-m", "length",
                    "--length", OVERSIZE, "-j", "DROP"])
        g1.run(["iptables", "-w", "-A", "INPUT", "-i", "eth0", "-d", "198.18.0.0/15",
                "-j", "DROP"])
        conns1 = "".join((
            _conn("frag-eap", GW1_ADDRS["frag-eap"], "gw1.crt.pem", "pool1", "eap-mschapv2"),
            _conn("frag-cert", GW1_ADDRS["frag-cert"], "gw1.crt.pem", "pool1", "pubkey"),
            _conn("frag-off", GW1_ADDRS["frag-off"], "gw1.crt.pem", "pool1", "eap-mschapv2",
                  fragmentation="no"),
            _conn("redirect", GW1_ADDRS["redirect"], "gw1.crt.pem", "pool1", "eap-mschapv2"),
        ))
        self.gw1 = EdgeGateway(g1, self.dir / "gw1", "gw1", self.pki, self.pki.gw1,
                               _swanctl_conf(conns1, "pool1", GW1_POOL))
        conns2 = _conn("redirect", GW2_ADDR, "gw2.crt.pem", "pool2", "eap-mschapv2")
        self.gw2 = EdgeGateway(g2, self.dir / "gw2", "gw2", self.pki, self.pki.gw2,
                               _swanctl_conf(conns2, "pool2", GW2_POOL))
        self.gw1.start()
        self.gw2.start()
        self.baseline = snapshot(c)

    def teardown(self) -> None:
        self._tear_down((lambda: self.gw1 and self.gw1.stop(),
                         lambda: self.gw2 and self.gw2.stop(),
                         self.client_ns.delete, self.gw1_ns.delete, self.gw2_ns.delete))

    # -- helpers for tests ---------------------------------------------------------------
    def profile(self, conn: str, **extra: Any) -> Path:
        """A .vpnprofile for one of GW1's connections, pinning the chain's root."""
        profile: dict[str, Any] = {
            "format": "vpnprofile/1", "uuid": str(uuid.uuid4()), "name": f"edge {conn}",
            "remote": {"addr": GW1_ADDRS[conn], "id": GATEWAY_ID,
                       "cert": base64.b64encode(self.pki.root.cert_der).decode()},
            "local": {},
            "mtu": PATH_MTU,  # what the narrow path carries (ESP adds to it; pings are small)
        }
        if conn == "frag-cert":
            profile["type"] = "ikev2-cert"
            profile["local"]["p12"] = base64.b64encode(self.pki.carol.p12_bytes).decode()
        else:
            profile["type"] = "ikev2-eap"
            profile["local"]["eap_id"] = EAP_USER
        profile.update(extra)
        return write_profile(self.dir / f"{conn}-{profile['uuid'][:8]}.vpnprofile", profile)

    def secret(self, conn: str) -> str:
        return self.pki.p12_passphrase if conn == "frag-cert" else EAP_PASSWORD

    def oversize_drops(self, ns: Namespace) -> int:
        """Datagrams over 1280 bytes the narrow path has dropped in `ns` so far."""
        out = ns.run(["iptables", "-w", "-nvx", "-L"]).stdout
        return sum(int(line.split()[0]) for line in out.splitlines()
                   if f"length {OVERSIZE}" in line)

    def ping(self, count: int = 3, interval: float = 0.2, wait: float = 2.0) -> PingResult:
        return ping(self.client_ns, LAN_HOST, count, interval, wait)
