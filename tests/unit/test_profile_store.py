"""The profile store and `vpnclient import | list | show | remove | password`.

The CLI runs as a subprocess, as a user would run it, against a store in a temporary
directory and the real Secret Service keyring of the test session (tests/lab/keyring.py).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from client.profile import ProfileError, parse_profile
from client.store import ProfileStore
from tests.lab import keyring as kr
from tests.lab.mobileconfig import configuration, pkcs12_payload, vpn_payload
from tests.lab.samples import SAMPLES_DIR, sample_names

REPO = Path(__file__).resolve().parents[2]
SECRET = "Corr3ct-horse-battery"
P12_PASS = "p12-Passphrase"


def profile_doc(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uuid": str(uuidlib.uuid4()), "name": f"Test {uuidlib.uuid4().hex[:6]}",
        "type": "ikev2-eap", "remote": {"addr": "vpn.example.com"},
        "local": {"eap_id": "alice"},
    }
    doc.update(top)
    return doc


@pytest.fixture(scope="module")
def p12() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice@example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, None, serialization.BestAvailableEncryption(P12_PASS.encode()))


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "store"
        self.tmp = tmp
        self.uuids: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["VPNCLIENT_CONFIG_DIR"] = str(self.store)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env.update(extra)
        return env

    def __call__(self, *args: str, input: str | None = None, **env: str
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "client.cli", *args], input=input,
                              capture_output=True, text=True, env=self.env(**env), timeout=60,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def write(self, name: str, data: dict[str, Any] | bytes | str) -> Path:
        path = self.tmp / name
        if isinstance(data, dict):
            self.uuids.append(data.get("uuid", ""))
            data = json.dumps(data)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def snapshot(self) -> dict[str, tuple[int, str]]:
        """Every file of the store: mode and content hash."""
        if not self.store.exists():
            return {}
        return {str(p.relative_to(self.store)): (p.stat().st_mode,
                                                 hashlib.sha256(p.read_bytes()).hexdigest())
                for p in self.store.rglob("*")}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    c = Cli(tmp_path)
    yield c
    if kr.secret_service_problem() is None:
        for uuid in c.uuids:
            if uuid:
                kr.forget(uuid)


@pytest.fixture
def keyring_session() -> None:
    kr.require_secret_service()


def grep_store(store: Path, needle: str) -> list[str]:
    """Files under the store holding the secret, in clear or base64."""
    forms = [needle.encode(), base64.b64encode(needle.encode())]
    return [str(p) for p in store.rglob("*") if p.is_file()
            and any(f in p.read_bytes() for f in forms)]


# -- the store itself ---------------------------------------------------------------------
def test_store_files_and_modes(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "new" / "store")
    prof = parse_profile(json.dumps(profile_doc(local={"eap_id": "a", "shared_secret": "x"})))
    store.save(prof)
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    path = store.path_for(prof.uuid)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in store.dir.iterdir()) == [f"{prof.uuid}.vpnprofile"]
    assert b'"x"' not in path.read_bytes()
    assert store.find(prof.uuid.upper()).name == prof.name
    assert store.find(prof.name).uuid == prof.uuid
    with pytest.raises(ProfileError, match="no stored profile named 'nope'"):
        store.find("nope")


def test_store_ambiguous_name_and_unreadable_file(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    a = parse_profile(json.dumps(profile_doc(name="Work")))
    b = parse_profile(json.dumps(profile_doc(name="Work")))
    store.save(a)
    store.save(b)
    (tmp_path / f"{uuidlib.uuid4()}.vpnprofile").write_text("{broken")
    profiles, bad = store.scan()
    assert {p.uuid for p in profiles} == {a.uuid, b.uuid}
    assert len(bad) == 1 and "not valid JSON" in bad[0].error
    with pytest.raises(ProfileError) as exc:
        store.find("Work")
    assert a.uuid in str(exc.value) and b.uuid in str(exc.value)


# -- import, with the real keyring -----------------------------------------------------------
def test_import_puts_the_secret_in_the_keyring_only(cli: Cli, keyring_session: None) -> None:
    doc = profile_doc(local={"eap_id": "alice", "shared_secret": SECRET},
                      proxy={"host": "proxy.example.com", "port": 8080}, apps=["x"])
    proc = cli("import", str(cli.write("work.sswan", doc)))
    assert proc.returncode == 0, proc.stderr
    assert doc["name"] in proc.stdout and doc["uuid"] in proc.stdout
    assert "proxy: kept, not applied" in proc.stdout and "apps: kept" in proc.stdout
    assert kr.stored_secret(doc["uuid"]) == SECRET
    assert grep_store(cli.store, SECRET) == []
    files = list(cli.store.iterdir())
    assert [f.name for f in files] == [f"{doc['uuid']}.vpnprofile"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.store.stat().st_mode) == 0o700

    for args in (("show", doc["name"]), ("show", doc["uuid"], "--json"), ("list",),
                 ("list", "--json")):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout + out.stderr
    shown = json.loads(cli("show", doc["name"], "--json").stdout)
    assert shown["secrets"] == {"password": "in the keyring"}
    assert shown["profile"]["proxy"] == {"host": "proxy.example.com", "port": 8080}
    listed = json.loads(cli("list", "--json").stdout)
    assert listed == [{"name": doc["name"], "uuid": doc["uuid"], "gateway": "vpn.example.com",
                       "type": "ikev2-eap"}]

    proc = cli("password", "clear", doc["name"])
    assert proc.returncode == 0 and "forgot the password" in proc.stdout
    assert kr.stored_secret(doc["uuid"]) is None

    proc = cli("password", "set", doc["uuid"], "--password-stdin", input="n3w-secret\n")
    assert proc.returncode == 0, proc.stderr
    assert kr.stored_secret(doc["uuid"]) == "n3w-secret"
    assert grep_store(cli.store, "n3w-secret") == []

    proc = cli("remove", doc["name"])
    assert proc.returncode == 0 and "password from the keyring" in proc.stdout
    assert kr.stored_secret(doc["uuid"]) is None
    assert list(cli.store.iterdir()) == []


def test_import_replaces_by_uuid(cli: Cli, keyring_session: None) -> None:
    doc = profile_doc(local={"eap_id": "alice", "shared_secret": SECRET})
    assert cli("import", str(cli.write("a.vpnprofile", doc))).returncode == 0
    doc2 = dict(doc, name="Renamed", local={"eap_id": "bob"})  # no secret this time
    proc = cli("import", str(cli.write("b.vpnprofile", doc2)))
    assert proc.returncode == 0 and proc.stdout.startswith('replaced "Renamed"')
    assert [p.name for p in cli.store.iterdir()] == [f"{doc['uuid']}.vpnprofile"]
    assert json.loads(cli("show", doc["uuid"], "--json").stdout)["name"] == "Renamed"
    assert kr.stored_secret(doc["uuid"]) == SECRET  # a re-import without one keeps it


def test_mobileconfig_import_pkcs12(cli: Cli, keyring_session: None, p12: bytes) -> None:
    cert_uuid = str(uuidlib.uuid4()).upper()
    vpn = vpn_payload("Corp cert", {"RemoteAddress": "192.0.2.3",
                                    "AuthenticationMethod": "Certificate",
                                    "PayloadCertificateUUID": cert_uuid, "Unknown": 1})
    path = cli.write("corp.mobileconfig",
                     configuration([vpn, pkcs12_payload(p12, P12_PASS, cert_uuid)]))
    uuid = vpn["PayloadUUID"].lower()
    cli.uuids.append(uuid)
    proc = cli("import", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "ignored PayloadContent[0].IKEv2.Unknown: not supported" in proc.stdout
    assert "used    PayloadContent[1].Password -> the keyring (PKCS#12 passphrase)" \
        in proc.stdout
    assert kr.stored_secret(uuid, ":p12") == P12_PASS
    assert grep_store(cli.store, P12_PASS) == []
    stored = json.loads(cli.store.joinpath(f"{uuid}.vpnprofile").read_text())
    assert base64.b64decode(stored["local"]["p12"]) == p12  # the encrypted container as is
    shown = cli("show", uuid)
    assert "PKCS#12 passphrase: in the keyring" in shown.stdout
    assert stored["local"]["p12"][:40] not in shown.stdout

    # password set checks a passphrase against the stored PKCS#12
    proc = cli("password", "set", uuid, "--password-stdin", input="wrong\n")
    assert proc.returncode == 2 and "local.p12" in proc.stderr
    assert kr.stored_secret(uuid, ":p12") == P12_PASS
    assert cli("password", "clear", uuid).returncode == 0
    assert kr.stored_secret(uuid, ":p12") is None


# -- bad files: exit 2, the key named, store and keyring unchanged ----------------------------
def _bad_files(p12: bytes) -> dict[str, tuple[str, Callable[[dict[str, Any]], Any]]]:
    """case -> (expected message part, the file made from the existing profile's doc)."""
    def with_(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def make(doc: dict[str, Any]) -> dict[str, Any]:
            new = json.loads(json.dumps(doc))
            new["local"]["shared_secret"] = "attacker-password"
            for key, value in changes.items():
                *parents, last = key.split(".")
                cur = new
                for part in parents:
                    cur = cur.setdefault(part, {})
                cur[last] = value
            return new
        return make

    def mobile(p12_password: str | None, vpn_type: str = "IKEv2"):
        def make(doc: dict[str, Any]) -> bytes:
            cert_uuid = str(uuidlib.uuid4())
            vpn = vpn_payload("x", {"RemoteAddress": "192.0.2.3",
                                    "AuthenticationMethod": "Certificate",
                                    "PayloadCertificateUUID": cert_uuid},
                              vpn_uuid=doc["uuid"])
            vpn["VPNType"] = vpn_type
            return configuration([vpn, pkcs12_payload(p12, p12_password, cert_uuid)])
        return make

    return {
        "not-json": ("not valid JSON (line 1", lambda doc: json.dumps(doc)[:-5]),
        "wrong-type": ("mtu: must be an integer", with_(mtu="1400")),
        "wrong-type-remote": ("remote: must be a JSON object", with_(remote="vpn")),
        "unknown-type": ("type: unknown type 'ikev2-foo'", with_(type="ikev2-foo")),
        "bad-proposal": ("ike-proposal: ", with_(**{"ike-proposal": "aes999-sha256-modp2048"})),
        "bad-base64": ("local.p12: not valid base64",
                       with_(type="ikev2-cert", **{"local.p12": "bm90!!base64"})),
        "bad-cert": ("remote.cert: not valid base64 or PEM", with_(**{"remote.cert": "@@"})),
        "p12-wrong-passphrase": ("PayloadContent[1].Password: PKCS#12: wrong passphrase",
                                 mobile("wrong")),
        "mobileconfig-no-ikev2": ("PayloadContent: no com.apple.vpn.managed payload with "
                                  "VPNType IKEv2", mobile(P12_PASS, "L2TP")),
    }


@pytest.mark.parametrize("case", list(_bad_files(b"")))
def test_bad_file_changes_nothing(cli: Cli, keyring_session: None, p12: bytes,
                                  case: str) -> None:
    doc = profile_doc(local={"eap_id": "alice", "shared_secret": SECRET})
    assert cli("import", str(cli.write("good.vpnprofile", doc))).returncode == 0
    before = cli.snapshot()
    message, make = _bad_files(p12)[case]
    bad = make(doc)
    suffix = ".mobileconfig" if isinstance(bad, bytes) else ".vpnprofile"
    path = cli.write(f"bad{suffix}", bad if not isinstance(bad, dict) else json.dumps(bad))
    proc = cli("import", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "nothing imported" in proc.stderr
    assert proc.stdout == ""
    assert cli.snapshot() == before
    assert kr.stored_secret(doc["uuid"]) == SECRET
    assert kr.stored_secret(doc["uuid"], ":p12") is None


# -- without a keyring ---------------------------------------------------------------------
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


def test_no_keyring_drops_the_secret_and_says_so(cli: Cli) -> None:
    doc = profile_doc(local={"eap_id": "alice", "shared_secret": SECRET})
    proc = cli("import", str(cli.write("w.vpnprofile", doc)), **NO_KEYRING)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("no keyring backend works here") == 1
    assert "give it at connect" in proc.stderr
    assert "local.shared_secret: not stored" in proc.stdout
    assert grep_store(cli.store, SECRET) == []
    assert not any(SECRET.encode() in p.read_bytes()
                   for p in cli.tmp.rglob("*") if p.is_file() and p.name != "w.vpnprofile")

    proc = cli("password", "set", doc["uuid"], "--password-stdin", input="x\n", **NO_KEYRING)
    assert proc.returncode == 1 and "nothing stored" in proc.stderr
    shown = cli("show", doc["uuid"], "--json", **NO_KEYRING)
    assert json.loads(shown.stdout)["secrets"]["password"].startswith("unknown")
    assert cli("remove", doc["uuid"], **NO_KEYRING).returncode == 0
    assert list(cli.store.iterdir()) == []


def test_plaintext_keyring_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    from client.credentials import Credentials, KeyringUnavailable, Kind

    plaintext = type("PlaintextKeyring", (), {"__module__": "keyrings.alt.file"})
    monkeypatch.setattr(keyring, "get_keyring", lambda: plaintext())
    with pytest.raises(KeyringUnavailable, match="refusing it"):
        Credentials().set("u", Kind.PASSWORD, "secret")


def test_unknown_profile_is_a_usage_error(cli: Cli) -> None:
    for args in (("show", "nope"), ("remove", "nope"), ("password", "clear", "nope")):
        proc = cli(*args, **NO_KEYRING)
        assert proc.returncode == 2 and "no stored profile named 'nope'" in proc.stderr
    proc = cli("list", **NO_KEYRING)
    assert proc.returncode == 0 and "no profiles" in proc.stdout


# -- the samples of profiles/ ------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in sample_names() if n.endswith(".in")])
def test_certificate_templates_parse_once_filled(name: str, p12: bytes) -> None:
    """profiles/*.vpnprofile.in lack only what the lab makes each run (README there)."""
    data = json.loads((SAMPLES_DIR / name).read_text())
    assert "p12" not in data.get("local", {}) and "cert" not in data["remote"]
    with pytest.raises(ProfileError, match="local.p12: missing"):
        parse_profile(json.dumps(data))
    data["local"]["p12"] = base64.b64encode(p12).decode()
    prof = parse_profile(json.dumps(data))
    assert prof.needs_p12 and prof.remote_addrs[0].startswith("192.0.2.")


def test_one_sample_per_type() -> None:
    types = {json.loads((SAMPLES_DIR / n).read_text())["type"] for n in sample_names()}
    assert types == {"ikev2-eap", "ikev2-psk", "ikev2-cert", "ikev2-cert-eap", "ikev2-eap-tls"}


def test_a_profile_near_the_size_limit_reads_back(tmp_path: Path) -> None:
    """Accepted as compact JSON just under MAX_PROFILE_BYTES, stored indented it would
    exceed it and never read back: the store keeps it compact then."""
    from client.limits import MAX_PROFILE_BYTES
    from client.profile import parse_profile

    doc = json.loads((REPO / "profiles" / "lab-eap.vpnprofile").read_text())
    doc["split-tunneling"] = {"subnets": [f"198.18.{i // 256}.{i % 256}/32"
                                          for i in range(1000)]}
    base = len(json.dumps(doc, separators=(",", ":")))
    doc["apps"] = [f"{i:04}" + "a" * 996 for i in range((MAX_PROFILE_BYTES - base - 64) // 1003)]
    compact = json.dumps(doc, separators=(",", ":"))
    assert MAX_PROFILE_BYTES - 4096 < len(compact) <= MAX_PROFILE_BYTES
    assert len(json.dumps(doc, indent=2)) > MAX_PROFILE_BYTES
    store = ProfileStore(tmp_path / "store")
    profile = parse_profile(compact)
    store.save(profile)
    assert store.get(profile.uuid) is not None
