"""`.ci/install` installs, by name, every Debian package the lab's prerequisite table
names: a piece the tests need can only be missing on a new machine if both forget it."""

from __future__ import annotations

import re

from tests.lab import prereqs
from tests.lab.topology import REPO_ROOT


def installed_by_ci() -> set[str]:
    text = (REPO_ROOT / ".ci" / "install").read_text()
    block = re.search(r"^apt_packages=\((.*?)^\)", text, re.S | re.M)
    assert block, "apt_packages=( ... ) not found in .ci/install"
    words = []
    for line in block.group(1).splitlines():
        words += line.split("#", 1)[0].split()
    return set(words)


def test_every_prerequisite_package_is_installed_by_ci() -> None:
    listed = installed_by_ci()
    assert "libstrongswan-standard-plugins" in listed  # the two Debian only recommends
    assert "libcharon-extauth-plugins" in listed
    missing = sorted({n.package for n in prereqs.ALL} - listed)
    assert missing == [], f".ci/install does not install {missing}"


def test_apt_runs_without_recommends() -> None:
    # The whole point of the explicit list: recommends are never relied upon.
    text = (REPO_ROOT / ".ci" / "install").read_text()
    installs = [ln for ln in text.splitlines() if "apt-get install" in ln and "#" not in ln]
    assert installs and all("--no-install-recommends" in ln for ln in installs)


def test_missing_piece_names_its_package(tmp_path) -> None:
    absent = prereqs.Need(str(tmp_path / "libstrongswan-eap-mschapv2.so"),
                          "libcharon-extauth-plugins", "charon plugin eap-mschapv2: EAP-MSCHAPv2")
    line = prereqs.unavailable((absent,))
    assert line is not None and "\n" not in line
    assert "libcharon-extauth-plugins" in line and "eap-mschapv2" in line
    assert prereqs.unavailable(()) is None
