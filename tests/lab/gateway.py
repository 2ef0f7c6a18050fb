"""The lab's strongSwan gateway: one connection per scenario, one address per connection.

A client picks the scenario by the address it dials (`local_addrs` binds each
connection to one gateway address).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.charon import CharonInstance, strongswan_conf
from tests.lab.netns import Namespace
from tests.lab.pki import GATEWAY_ID, Credential, TestPKI

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
# strongSwan's EAP-TLS server picks its certificate by identity alone (not the
# connection's `certs`), and evil_gateway carries every SAN of `gateway`: the EAP-TLS
# scenarios use an identity that only the tls_gateway certificate has.
TLS_GATEWAY_ID = "vpn-tls.example.com"
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
    # RFC 4739: the client's rounds (remote-1, remote-2, ...) instead of remote_auth alone
    remote_rounds: tuple[str, ...] = ()
    # Lifetimes: swanctl.conf lines of the connection / of its child (rekey_time, ...)
    ike_times: tuple[str, ...] = ()
    child_times: tuple[str, ...] = ()
    esp_proposals: str = ESP_PROPOSALS
    unique: str = "never"

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
        # EAP-TLS (TLS 1.2 unless a test raises charon.tls.version_max, see tls_version_max).
        Scenario("eap-tls", "192.0.2.12", "eap-tls", "tls_gateway", TLS_GATEWAY_ID),
        # EAP-only with EAP-TLS: the TLS server certificate is all that vouches for it.
        Scenario("eap-tls-only", "192.0.2.13", "eap-tls", None, TLS_GATEWAY_ID,
                 local_auth="eap"),
        # RFC 4739: the client's certificate, then EAP-MSCHAPv2 as EAP_USER.
        Scenario("cert-eap", "192.0.2.14", "pubkey", "gateway",
                 remote_rounds=("pubkey", "eap-mschapv2")),
        # The gateway rekeys the CHILD_SA every ~20 s (with PFS) and the IKE SA every ~60 s.
        Scenario("rekey", "192.0.2.20", "eap-mschapv2", "gateway",
                 ike_times=("rekey_time = 60s", "rand_time = 5s", "over_time = 30s"),
                 child_times=("rekey_time = 20s", "rand_time = 2s", "life_time = 40s"),
                 esp_proposals=f"aes256gcm16-x25519, {ESP_PROPOSALS}"),
        # The gateway accepts our authentication for 30 s (AUTH_LIFETIME, RFC 4478).
        Scenario("reauth", "192.0.2.21", "eap-mschapv2", "gateway",
                 ike_times=("reauth_time = 30s", "rand_time = 0s", "over_time = 20s")),
        # Reconnect tests restart or silence the gateway. unique = no: a client's
        # INITIAL_CONTACT replaces the IKE SA it left behind (strongSwan's default).
        Scenario("reconnect", "192.0.2.22", "eap-mschapv2", "gateway", unique="no"),
        # Issue 13's load test: the gateway rekeys the CHILD_SA every ~15 s (with PFS) and
        # the IKE SA every ~40 s.
        Scenario("rekey-load", "192.0.2.23", "eap-mschapv2", "gateway",
                 ike_times=("rekey_time = 40s", "rand_time = 2s", "over_time = 20s"),
                 child_times=("rekey_time = 15s", "rand_time = 1s", "life_time = 30s"),
                 esp_proposals=f"aes256gcm16-x25519, {ESP_PROPOSALS}"),
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
    if s.remote_rounds:
        remotes = "\n".join(
            f"        remote-{i} {{\n{_remote(auth)}\n        }}"
            for i, auth in enumerate(s.remote_rounds, 1)
        )
    else:
        remotes = f"        remote {{\n{_remote(s.remote_auth)}\n        }}"
    return f"""    {s.conn_name} {{
        version = 2
        local_addrs = {s.addr}
        proposals = {IKE_PROPOSALS}
        pools = {s.pools}
        unique = {s.unique}
        send_cert = always
        dpd_delay = {s.dpd_delay}{_lines(s.ike_times, 8)}
        local {{
{local}
        }}
{remotes}
        children {{
            lan {{
                local_ts = {s.local_ts}
                esp_proposals = {s.esp_proposals}
                dpd_action = clear{_lines(s.child_times, 16)}
            }}
        }}
    }}
"""


def _lines(settings: tuple[str, ...], indent: int) -> str:
    """One setting per line: a swanctl.conf value runs to the end of its line."""
    return "".join(f"\n{' ' * indent}{line}" for line in settings)


def _remote(auth: str) -> str:
    if auth == "pubkey":
        return """            auth = pubkey
            cacerts = ca.crt.pem"""
    if auth == "psk":
        return """            auth = psk"""
    return f"""            auth = {auth}
            eap_id = %any"""


def tls_gateway(pki: TestPKI) -> Credential:
    """The EAP-TLS scenarios' gateway certificate (TLS_GATEWAY_ID), made once per PKI."""
    cred = getattr(pki, "tls_gateway", None)
    if cred is None:
        cred = pki._issue(
            "tls-gateway", pki.ca, "rsa", 2048, f"C=CH, O=vpnclient lab, CN={TLS_GATEWAY_ID}",
            [TLS_GATEWAY_ID], ["serverAuth", "ikeIntermediate"],
        )
        pki.tls_gateway = cred  # type: ignore[attr-defined]
    return cred


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
        tls_gateway(pki)
        for attr in ("gateway", "gateway_other", "evil_gateway", "tls_gateway"):
            cred = getattr(pki, attr)
            self.install_file("x509", f"{attr}.crt.pem", cred.cert_pem)
            self.install_file("private", f"{attr}.key.pem", cred.key_pem, 0o600)
        (self.swanctl_dir / "conf.d" / "lab.conf").write_text(swanctl_conf())
        (self.swanctl_dir / "swanctl.conf").write_text("include conf.d/*.conf\n")

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)
        self.load_all()

    @contextmanager
    def tls_version_max(self, version: str) -> Iterator[None]:
        """EAP-TLS up to TLS `version` ("1.3") meanwhile; strongSwan 5.9.8 offers 1.2 only
        by default and sets TLS versions for the whole daemon (charon.tls.version_max)."""
        self._reload_settings(f"    tls {{\n        version_max = {version}\n    }}")
        try:
            yield
        finally:
            self._reload_settings("")

    def _reload_settings(self, extra_charon: str) -> None:
        # Appending: a reload reopens the log file, which `append = no` would empty.
        text = strongswan_conf(self.log_path, extra_charon=extra_charon)
        self.conf_path.write_text(text.replace("append = no", "append = yes"))
        self.swanctl(["--reload-settings"])

    def terminate_all(self) -> None:
        """Force-close every IKE_SA (cleanup between tests)."""
        for sa in self.sas():
            uid = sa.get("uniqueid")
            if uid:
                self.swanctl(["--terminate", "--ike-id", uid, "--force", "--timeout", "2"],
                             check=False)

    def sas_for(self, scenario: str) -> list[dict]:
        return [sa for sa in self.sas() if sa["name"] == scenario]
