"""Import a profile, keep its secrets in the real keyring, connect by name (issue 4).

The keyring is the Secret Service of the test session (.ci/test: gnome-keyring in a
D-Bus session); the client in the lab namespace reaches it over the session bus's path
socket. Secrets are never typed: they come from the imported file, through the keyring.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import keyring as kr
from tests.lab.checks import check_status, disconnect_cleanly
from tests.lab.gateway import EAP_PASSWORD, LAN_TS, POOL_DNS, PSK
from tests.lab.mobileconfig import make_mobileconfig
from tests.lab.netns import ns_argv
from tests.lab.pki import GATEWAY_ID
from tests.lab.profiles import gateway_addr, make_profile, write_profile
from tests.lab.samples import fill_sample
from tests.lab.vpnclient import VpnClient, client_command

pytestmark = pytest.mark.interop

CONN = {"eap-mschapv2": "eap-mschapv2", "cert-rsa": "cert", "cert-ecdsa": "cert", "psk": "psk"}


@pytest.fixture
def keyring_uuids() -> Iterator[list[str]]:
    kr.require_secret_service()
    uuids: list[str] = []
    yield uuids
    for uuid in uuids:
        kr.forget(uuid)


def grep_store(client: VpnClient, *secrets: str) -> list[str]:
    hits = []
    for path in client.config_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for s in secrets:
                if s.encode() in data or base64.b64encode(s.encode()) in data:
                    hits.append(f"{path}: {s}")
    return hits


def import_file(client: VpnClient, path: Path) -> dict:
    proc = client.run("import", str(path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    return result


def connect_by_name(lab, client: VpnClient, name: str, scenario: str) -> None:
    """Connect without --password-stdin and without a terminal, use, disconnect."""
    offset = lab.gateway.log_size()
    client.start_connect(name, secret=None, verbose=1)
    status = client.wait_connected(timeout=30)
    assert check_status(status, gateway_addr(scenario)) == [], status
    ping = lab.ping(count=2)
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"
    problems = disconnect_cleanly(lab, client, CONN[scenario], offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_import_connect_by_name_then_forget(clean_lab, new_client, keyring_uuids) -> None:
    lab = clean_lab
    doc = make_profile(lab.pki, "eap-mschapv2", name="Work VPN")
    doc["local"]["shared_secret"] = EAP_PASSWORD
    path = write_profile(lab.dir / "work.vpnprofile", doc)
    keyring_uuids.append(doc["uuid"])
    client = new_client()

    result = import_file(client, path)
    assert (result["name"], result["uuid"], result["keyring"]) == \
        ("Work VPN", doc["uuid"], ["password"])
    path.unlink()  # from now on only the store and the keyring know the profile
    assert grep_store(client, EAP_PASSWORD) == []
    assert kr.stored_secret(doc["uuid"]) == EAP_PASSWORD

    connect_by_name(lab, client, "Work VPN", "eap-mschapv2")
    log = client.log_text()
    for line in ("resolving 192.0.2.1", "contacting gateway 192.0.2.1:500",
                 "authenticated", f"DNS {POOL_DNS}", f"routes {LAN_TS}"):
        assert line in log, log
    assert EAP_PASSWORD not in log

    proc = client.run("password", "clear", "Work VPN")
    assert proc.returncode == 0, proc.stderr
    assert kr.stored_secret(doc["uuid"]) is None
    # Without the keyring entry, no terminal and no --password-stdin: a profile error.
    client.start_connect("Work VPN", secret=None, verbose=0, separate_stderr=True)
    assert client.wait_exit() == 2
    assert "password" in client.stderr_text()
    assert lab.leftovers() == []


def _sswan_eap(lab) -> dict:
    """Every key of strongSwan's .sswan format that an EAP profile can carry."""
    return {
        "uuid": "5f0c7a4e-2b1d-4c3e-9a8b-1c2d3e4f5a6b",
        "name": "sswan every key (EAP)",
        "type": "ikev2-eap",
        "remote": {
            "addr": gateway_addr("eap-mschapv2"),
            "port": 500,
            "id": GATEWAY_ID,
            "cert": lab.pki.ca.cert_b64,
            "certreq": True,
            "revocation": {"crl": False, "ocsp": False, "strict": False},
        },
        "local": {"id": "alice", "eap_id": "alice", "shared_secret": EAP_PASSWORD},
        "ike-proposal": "aes256gcm16-prfsha384-x25519",
        "esp-proposal": "aes256gcm16",
        "dns-servers": POOL_DNS,
        "mtu": 1380,
        "nat-keepalive": 15,
        "ipv6-transport": False,
        "split-tunneling": {"subnets": LAN_TS, "excluded": "198.18.200.0/24",
                            "block-ipv4": False, "block-ipv6": False},
        "apps": ["org.example.mail"],
        "excluded-apps": ["org.example.game"],
        "proxy": {"host": "proxy.example.com", "port": 8080, "exclusions": ["example.com"]},
    }


def _sswan_cert(lab) -> dict:
    """The certificate keys: local.p12 and local.rsa-pss (RSASSA-PSS signatures)."""
    return {
        "uuid": "6a1d8b5f-3c2e-4d4f-8b9c-2d3e4f5a6b7c",
        "name": "sswan every key (certificate)",
        "type": "ikev2-cert",
        "remote": {"addr": gateway_addr("cert-rsa"), "id": GATEWAY_ID,
                   "cert": [lab.pki.ca.cert_b64]},
        "local": {"p12": lab.pki.alice.p12_b64, "rsa-pss": True},
    }


def test_sswan_every_key(clean_lab, new_client, keyring_uuids) -> None:
    lab = clean_lab
    client = new_client()
    eap_doc, cert_doc = _sswan_eap(lab), _sswan_cert(lab)
    keyring_uuids += [eap_doc["uuid"], cert_doc["uuid"]]

    eap = import_file(client, write_profile(lab.dir / "eap.sswan", eap_doc))
    ignored = {i["key"] for i in eap["ignored"]}
    assert {"apps", "excluded-apps", "proxy"} <= ignored, eap
    shown = json.loads(client.run("show", eap_doc["uuid"], "--json").stdout)["profile"]
    expected = json.loads(json.dumps(eap_doc))
    del expected["local"]["shared_secret"]
    # The store writes the space-separated lists of .sswan as JSON lists.
    expected["dns-servers"] = [POOL_DNS]
    split = expected["split-tunneling"]
    split["subnets"], split["excluded"] = [split["subnets"]], [split["excluded"]]
    for key in ("remote", "local", "ike-proposal", "esp-proposal", "dns-servers", "mtu",
                "nat-keepalive", "ipv6-transport", "split-tunneling", "apps", "excluded-apps",
                "proxy"):
        assert shown[key] == expected[key], key

    cert = import_file(client, write_profile(lab.dir / "cert.sswan", cert_doc))
    assert cert["keyring"] == []  # a .sswan carries no passphrase: set it once
    proc = client.run("password", "set", "sswan every key (certificate)", "--password-stdin",
                      input=lab.pki.p12_passphrase + "\n")
    assert proc.returncode == 0, proc.stderr
    assert grep_store(client, EAP_PASSWORD, lab.pki.p12_passphrase) == []

    offset = lab.gateway.log_size()
    client.start_connect(eap_doc["name"], secret=None, verbose=1)
    status = client.wait_connected(timeout=30)
    assert status["dns"] == [POOL_DNS] and status["routes"] == [LAN_TS], status
    assert status["ike_proposal"] == "aes256gcm16-prfsha384-x25519", status
    assert status["esp_proposal"].startswith("aes256gcm16"), status
    mtu = lab.client_ns.run(["ip", "-o", "link", "show"]).stdout
    assert "mtu 1380" in mtu, mtu
    assert lab.ping(count=2).ok, client.log_tail()
    assert disconnect_cleanly(lab, client, "eap-mschapv2", offset) == []

    connect_by_name(lab, client, cert_doc["name"], "cert-rsa")


@pytest.mark.parametrize("scenario", ["eap-mschapv2", "cert-rsa", "psk"])
def test_mobileconfig_import_and_connect(clean_lab, new_client, keyring_uuids,
                                         scenario: str) -> None:
    lab = clean_lab
    extra = {}
    if scenario == "eap-mschapv2":
        extra = {"IKESecurityAssociationParameters": {
                     "EncryptionAlgorithm": "AES-256-GCM", "IntegrityAlgorithm": "SHA2-384",
                     "DiffieHellmanGroup": 31},
                 "ChildSecurityAssociationParameters": {"EncryptionAlgorithm": "AES-256-GCM"},
                 "DeadPeerDetectionRate": "Medium", "NATKeepAliveInterval": 20, "MTU": 1400,
                 "DisableMOBIKE": 0, "OnDemandEnabled": 0}
    path = lab.dir / f"{scenario}.mobileconfig"
    path.write_bytes(make_mobileconfig(lab.pki, scenario, **extra))
    client = new_client()
    result = import_file(client, path)
    keyring_uuids.append(result["uuid"])
    secret = {"eap-mschapv2": EAP_PASSWORD, "psk": PSK}.get(scenario, lab.pki.p12_passphrase)
    assert result["keyring"] == (["PKCS#12 passphrase"] if scenario.startswith("cert")
                                 else ["password"])
    used = {u["key"].rsplit(".", 1)[-1] for u in result["used"]}
    assert {"RemoteAddress", "RemoteIdentifier", "AuthenticationMethod"} <= used, result
    if scenario == "eap-mschapv2":
        assert {i["key"] for i in result["ignored"]} == {"PayloadContent[0].IKEv2.OnDemandEnabled"}
    path.unlink()
    assert grep_store(client, secret) == []
    connect_by_name(lab, client, result["name"], scenario)

    proc = client.run("remove", result["uuid"])
    assert proc.returncode == 0, proc.stderr
    assert kr.stored_secret(result["uuid"]) is None
    assert kr.stored_secret(result["uuid"], ":p12") is None
    assert list(client.config_dir.iterdir()) == []


# -- the first connect on a terminal -----------------------------------------------------
class Terminal:
    """`vpnclient connect` on a pseudo-terminal (its controlling terminal), as a person."""

    def __init__(self, client: VpnClient, *args: str) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            ns_argv(client.ns.name, [*client_command(), *args]), stdin=slave, stdout=slave,
            stderr=slave, env=client.env(), preexec_fn=controlling_tty, close_fds=True)
        os.close(slave)
        self.output = ""

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select(
                    [self.master], [], [], 0)[0]:
                raise AssertionError(f"no {text!r} on the terminal:\n{self.output}")
            if select.select([self.master], [], [], min(left, 0.2))[0]:
                try:
                    self.output += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # EIO: the process closed the terminal
                    time.sleep(0.05)

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        os.close(self.master)


def test_first_connect_asks_and_remembers(clean_lab, new_client, keyring_uuids) -> None:
    lab = clean_lab
    doc = make_profile(lab.pki, "eap-mschapv2", name="Asked")
    del doc["local"]["eap_id"]  # the file names no user: asked at first connect
    keyring_uuids.append(doc["uuid"])
    client = new_client()
    import_file(client, write_profile(lab.dir / "asked.vpnprofile", doc))

    term = Terminal(client, "connect", "Asked")
    try:
        term.expect("Username: ")
        term.send("alice")
        term.expect("Password for alice: ")
        term.send(EAP_PASSWORD)
        term.expect('Remember the username and password for "Asked"? [Y/n] ')
        term.send("y")
        term.expect("connected: ")
        assert EAP_PASSWORD not in term.output  # no echo
        assert client.wait_connected()["state"] == "connected"
        assert kr.stored_secret(doc["uuid"]) == EAP_PASSWORD
        shown = json.loads(client.run("show", "Asked", "--json").stdout)
        assert shown["profile"]["local"]["eap_id"] == "alice"
        assert client.run("disconnect").returncode == 0
        assert term.proc.wait(15) == 0
    finally:
        term.close()
    assert grep_store(client, EAP_PASSWORD) == []
    connect_by_name(lab, client, "Asked", "eap-mschapv2")  # nothing asked the second time


# -- the samples of profiles/ ------------------------------------------------------------
# Short test ids: the client's control socket path contains them (AF_UNIX: 108 bytes).
@pytest.mark.parametrize(("sample", "scenario"), [("lab-eap.vpnprofile", "eap-mschapv2"),
                                                  ("lab-psk.vpnprofile", "psk"),
                                                  ("lab-cert.vpnprofile.in", "cert-rsa")],
                         ids=["eap", "psk", "cert"])
def test_sample(clean_lab, new_client, keyring_uuids, sample: str, scenario: str) -> None:
    """What profiles/README.md tells a person to do: import, `password set`, connect."""
    lab = clean_lab
    client = new_client()
    result = import_file(client, fill_sample(lab.pki, sample, lab.dir))
    keyring_uuids.append(result["uuid"])
    proc = client.run("password", "set", result["name"], "--password-stdin",
                      input=lab.secret(scenario) + "\n")
    assert proc.returncode == 0, proc.stderr
    connect_by_name(lab, client, result["uuid"], scenario)


def test_headless_without_keyring(clean_lab, new_client) -> None:
    """No keyring backend (a server): said once, and --password-stdin still works."""
    lab = clean_lab
    client = new_client({"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    doc = make_profile(lab.pki, "eap-mschapv2", name="Headless")
    doc["local"]["shared_secret"] = EAP_PASSWORD
    proc = client.run("import", str(write_profile(lab.dir / "headless.vpnprofile", doc)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("no keyring backend works here") == 1, proc.stderr
    assert grep_store(client, EAP_PASSWORD) == []

    client.start_connect("Headless", secret=None, verbose=0, separate_stderr=True)
    assert client.wait_exit() == 2  # nothing to authenticate with, and no terminal
    err = client.stderr_text()
    assert err.count("no keyring backend works here") == 1, err
    assert "--password-stdin" in err

    offset = lab.gateway.log_size()
    client.stderr_path.unlink()
    client.start_connect("Headless", secret=EAP_PASSWORD, verbose=0, separate_stderr=True)
    client.wait_connected(timeout=30)
    assert "keyring" not in client.stderr_text()  # not even asked: stdin overrides
    assert disconnect_cleanly(lab, client, "eap-mschapv2", offset) == []
