"""strongSwan's own charon as the *client* (the reference the figures compare against).

Runs in the client namespace with its own private mount namespace, kernel-libipsec for
the data plane and one connection (IKE name "lab", CHILD name "lan") for one of the
profile scenarios (EAP-MSCHAPv2 by default). DNS from the gateway goes to a file in its
directory, never to resolv.conf.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.lab.charon import CharonInstance, strongswan_conf
from tests.lab.gateway import EAP_PASSWORD, EAP_USER, LAN_TS, PSK, PSK_CLIENT_ID
from tests.lab.netns import Namespace
from tests.lab.pki import GATEWAY_ID, TestPKI
from tests.lab.profiles import gateway_addr

CONN = "lab"
CHILD = "lan"


def _lines(settings: tuple[str, ...], indent: int) -> str:
    return "".join(f"\n{' ' * indent}{line}" for line in settings)


class StrongSwanClient(CharonInstance):
    def __init__(
        self,
        ns: Namespace,
        base: Path,
        pki: TestPKI,
        scenario: str = "eap-mschapv2",
        ike_proposals: str = "default",
        esp_proposals: str = "default",
        password: str | None = None,
        conn_extra: tuple[str, ...] = (),
        child_extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(ns, base, "strongswan-client")
        self.pki = pki
        self.scenario = scenario
        self.gateway_addr = gateway_addr(scenario)
        self.ike_proposals = ike_proposals
        self.esp_proposals = esp_proposals
        self.password = password
        # swanctl.conf settings of the connection / its child, one per line (e.g. for
        # reconnecting: "keyingtries = 0", "close_action = start", "dpd_action = restart").
        self.conn_extra = conn_extra
        self.child_extra = child_extra

    def _local_and_secrets(self) -> tuple[str, str]:
        s = self.scenario
        if s.startswith("cert-"):
            cred = self.pki.alice if s == "cert-rsa" else self.pki.bob
            self.install_file("x509", "client.crt.pem", cred.cert_pem)
            self.install_file("private", "client.key.pem", cred.key_pem, 0o600)
            san = "alice@example.com" if s == "cert-rsa" else "bob@example.com"
            return (f"""            auth = pubkey
            certs = client.crt.pem
            id = {san}""", "")
        if s == "psk":
            return (f"""            auth = psk
            id = {PSK_CLIENT_ID}""", f"""    ike-gw {{
        id = {GATEWAY_ID}
        secret = "{self.password or PSK}"
    }}
""")
        method = "eap-md5" if s == "eap-md5" else "eap-mschapv2"
        return (f"""            auth = {method}
            id = {EAP_USER}
            eap_id = {EAP_USER}""", f"""    eap-{EAP_USER} {{
        id = {EAP_USER}
        secret = "{self.password or EAP_PASSWORD}"
    }}
""")

    def write_config(self) -> None:
        self.prepare_dirs()
        plugins = f"""        resolve {{
            file = {self.dir / 'resolv.conf'}
        }}"""
        self.conf_path.write_text(strongswan_conf(self.log_path, extra_plugins=plugins))
        self.install_file("x509ca", "ca.crt.pem", self.pki.ca.cert_pem)
        local, secrets = self._local_and_secrets()
        remote_auth = "psk" if self.scenario == "psk" else "pubkey"
        (self.swanctl_dir / "swanctl.conf").write_text(f"""connections {{
    {CONN} {{
        version = 2
        remote_addrs = {self.gateway_addr}
        vips = 0.0.0.0
        proposals = {self.ike_proposals}{_lines(self.conn_extra, 8)}
        local {{
{local}
        }}
        remote {{
            auth = {remote_auth}
            id = {GATEWAY_ID}
        }}
        children {{
            {CHILD} {{
                remote_ts = {LAN_TS}
                esp_proposals = {self.esp_proposals}{_lines(self.child_extra, 16)}
            }}
        }}
    }}
}}

secrets {{
{secrets}}}
""")

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)
        self.load_all()

    def initiate_argv(self, timeout: int = 10) -> list[str]:
        """argv (run on the host) that initiates the CHILD_SA and waits for the result."""
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "swanctl", "--initiate",
                "--child", CHILD, "--timeout", str(timeout)]

    def initiate(self, timeout: int = 10) -> subprocess.CompletedProcess[str]:
        return self.swanctl(["--initiate", "--child", CHILD, "--timeout", str(timeout)],
                            check=False, timeout=timeout + 5)

    def terminate(self, timeout: int = 5) -> subprocess.CompletedProcess[str]:
        return self.swanctl(["--terminate", "--ike", CONN, "--timeout", str(timeout)],
                            check=False, timeout=timeout + 5)
