"""The lab's strongSwan gateway: one connection per scenario, one address per connection.

A client picks the scenario by the address it dials (`local_addrs` binds each
connection to one gateway address).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.lab.charon import CharonInstance, strongswan_conf
from tests.lab.netns import Namespace
from tests.lab.pki import GATEWAY_ID, TestPKI

EAP_USER = "alice"
EAP_PASSWORD = "lab-Passw0rd"
PSK_CLIENT_ID = "alice@example.com"
PSK = "lab-pre-shared-key-0123456789"

POOL4 = "198.19.0.0/24"
POOL6 = "2001:db8:ffff::/112"
POOL_DNS = "198.18.0.53"
LAN_TS = "198.18.0.0/16"
LAN_HOST = "198.18.0.1"
LAN6_TS = "2001:db8:1::/64"
LAN6_HOST = "2001:db8:1::1"
UNREACHABLE_ADDR = "192.0.2.9"  # on the gateway, but every packet to it is dropped
# Not on the client's link: only its default route reaches it, which a full tunnel takes
# over, so only the client's fwmark keeps IKE/ESP to it outside the tunnel.
OFFLINK_ADDR = "198.51.100.1"

# Everything the proposal matrix needs, then strongSwan's defaults.
IKE_PROPOSALS = (
    "aes256gcm16-prfsha384-x25519, aes128-sha256-modp2048, "
    "chacha20poly1305-prfsha256-ecp256, aes128gcm16-prfsha256-curve448, default"
)
ESP_PROPOSALS = "aes256gcm16, aes128-sha256, chacha20poly1305, aes128gcm16, default"


@dataclass(frozen=True)
class Scenario:
    name: str
    addr: str
    remote_auth: str  # what the gateway demands of the client
    gateway_cert: str | None  # attribute of TestPKI; None for PSK
    gateway_id: str = GATEWAY_ID
    pools: str = "pool4"
    local_ts: str = LAN_TS
    dpd_delay: str = "30"
    local_auth: str = "pubkey"  # "eap": EAP-only (RFC 5998), the gateway shows no certificate

    @property
    def conn_name(self) -> str:
        return self.name


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("eap-mschapv2", "192.0.2.1", "eap-mschapv2", "gateway"),
        Scenario("eap-md5", "192.0.2.2", "eap-md5", "gateway"),
        Scenario("cert", "192.0.2.3", "pubkey", "gateway"),
        Scenario("psk", "192.0.2.4", "psk", None),
        Scenario("evil-ca", "192.0.2.5", "eap-mschapv2", "evil_gateway"),
        Scenario("wrong-id", "192.0.2.6", "eap-mschapv2", "gateway_other", "%any"),
        # IPv6 inside the tunnel: a virtual IP of each family, a LAN of each family.
        Scenario("ipv6", "192.0.2.7", "eap-mschapv2", "gateway", pools="pool4, pool6",
                 local_ts=f"{LAN_TS}, {LAN6_TS}"),
        # Full tunnel (everything into the tunnel), DPD every second.
        Scenario("full", OFFLINK_ADDR, "eap-mschapv2", "gateway", pools="pool4, pool6",
                 local_ts="0.0.0.0/0, ::/0", dpd_delay="1s"),
        # EAP-only (RFC 5998): the gateway proves itself by mutual EAP-MSCHAPv2 only.
        Scenario("eap-only", "192.0.2.11", "eap-mschapv2", None, local_auth="eap"),
        # Liveness checks from the gateway every second.
        Scenario("dpd", "192.0.2.10", "eap-mschapv2", "gateway", dpd_delay="1s"),
    )
}
GATEWAY_ADDRS = tuple(s.addr for s in SCENARIOS.values())


def _connection(s: Scenario) -> str:
    if s.remote_auth == "psk":
        local = f"""            auth = psk
            id = {s.gateway_id}"""
    elif s.local_auth == "eap":
        local = f"""            auth = eap
            id = {s.gateway_id}"""
    else:
        local = f"""            auth = pubkey
            certs = {s.gateway_cert}.crt.pem
            id = {s.gateway_id}"""
    if s.remote_auth == "pubkey":
        remote = """            auth = pubkey
            cacerts = ca.crt.pem"""
    elif s.remote_auth == "psk":
        remote = """            auth = psk"""
    else:
        remote = f"""            auth = {s.remote_auth}
            eap_id = %any"""
    return f"""    {s.conn_name} {{
        version = 2
        local_addrs = {s.addr}
        proposals = {IKE_PROPOSALS}
        pools = {s.pools}
        unique = never
        send_cert = always
        dpd_delay = {s.dpd_delay}
        local {{
{local}
        }}
        remote {{
{remote}
        }}
        children {{
            lan {{
                local_ts = {s.local_ts}
                esp_proposals = {ESP_PROPOSALS}
                dpd_action = clear
            }}
        }}
    }}
"""


def swanctl_conf() -> str:
    conns = "".join(_connection(s) for s in SCENARIOS.values())
    return f"""connections {{
{conns}}}

pools {{
    pool4 {{
        addrs = {POOL4}
        dns = {POOL_DNS}
    }}
    pool6 {{
        addrs = {POOL6}
    }}
}}

secrets {{
    eap-{EAP_USER} {{
        id = {EAP_USER}
        secret = "{EAP_PASSWORD}"
    }}
    ike-lab {{
        id-gw = {GATEWAY_ID}
        secret = "{PSK}"
    }}
}}
"""


class StrongSwanGateway(CharonInstance):
    """charon + kernel-libipsec in the gateway namespace, serving every scenario."""

    def __init__(self, ns: Namespace, base: Path, pki: TestPKI) -> None:
        super().__init__(ns, base, "gateway")
        self.pki = pki

    def write_config(self) -> None:
        self.prepare_dirs()
        self.conf_path.write_text(strongswan_conf(self.log_path))
        pki = self.pki
        self.install_file("x509ca", "ca.crt.pem", pki.ca.cert_pem)
        for attr in ("gateway", "gateway_other", "evil_gateway"):
            cred = getattr(pki, attr)
            self.install_file("x509", f"{attr}.crt.pem", cred.cert_pem)
            self.install_file("private", f"{attr}.key.pem", cred.key_pem, 0o600)
        (self.swanctl_dir / "conf.d" / "lab.conf").write_text(swanctl_conf())
        (self.swanctl_dir / "swanctl.conf").write_text("include conf.d/*.conf\n")

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)
        self.load_all()

    def terminate_all(self) -> None:
        """Force-close every IKE_SA (cleanup between tests)."""
        for sa in self.sas():
            uid = sa.get("uniqueid")
            if uid:
                self.swanctl(["--terminate", "--ike-id", uid, "--force", "--timeout", "2"],
                             check=False)

    def sas_for(self, scenario: str) -> list[dict]:
        return [sa for sa in self.sas() if sa["name"] == scenario]
