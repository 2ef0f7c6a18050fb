"""The sample profiles of profiles/, completed for this lab run.

The lab makes a fresh CA and fresh client certificates every run, so no committed file
can carry them: `fill_sample` adds `remote.cert` (this run's CA) to every sample and, to
the certificate templates (`*.vpnprofile.in`), `local.p12` (this run's PKCS#12 of
alice, passphrase `TestPKI.p12_passphrase`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.lab.pki import TestPKI
from tests.lab.profiles import write_profile

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "profiles"


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.iterdir()
                  if p.name.endswith((".vpnprofile", ".vpnprofile.in")))


def fill_sample(pki: TestPKI, name: str, dest_dir: Path) -> Path:
    data = json.loads((SAMPLES_DIR / name).read_text())
    data.setdefault("remote", {})["cert"] = pki.ca.cert_b64
    if name.endswith(".in"):
        data.setdefault("local", {})["p12"] = pki.alice.p12_b64
    return write_profile(Path(dest_dir) / name.removesuffix(".in"), data)
