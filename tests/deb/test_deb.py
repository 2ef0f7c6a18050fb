"""The Debian package: it builds, installs with `dpkg -i`, and what it installs checks out.

Installs the package on this machine and purges it afterwards (root only; CI runs it).
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import __version__
from tests.lab import prereqs
from tests.lab.topology import REPO_ROOT

pytestmark = pytest.mark.deb

UNIT = Path("/usr/lib/systemd/system/vpnclient.service")
DESKTOP_FILES = (
    Path("/usr/share/applications/vpnclient-gui.desktop"),
    Path("/usr/share/applications/vpnclient-import.desktop"),
    Path("/etc/xdg/autostart/vpnclient-gui.desktop"),
)


def run(argv: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def dpkg(*args: str, wait: float = 600) -> subprocess.CompletedProcess:
    """dpkg, waiting while another package operation holds dpkg's lock."""
    deadline = time.monotonic() + wait
    while True:
        result = run(["dpkg", *args], timeout=wait)
        if "lock" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(3)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    reason = prereqs.unavailable(prereqs.PACKAGE)
    if reason:
        pytest.skip(reason)
    if run(["dpkg-query", "-W", "-f=${Status}", "vpnclient"]).stdout.startswith("install ok"):
        pytest.skip("a vpnclient package is installed on this machine: not touching it")
    had_group = _group_exists("vpnclient")
    out = tmp_path_factory.mktemp("deb")
    build = run(["bash", str(REPO_ROOT / "packaging" / "build-deb.sh"), str(out)],
                timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    deb = Path(build.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.name == f"vpnclient_{__version__}_amd64.deb", build.stdout
    try:
        install = dpkg("-i", str(deb))
        assert install.returncode == 0, install.stdout + install.stderr
        yield deb
    finally:
        purge = dpkg("--purge", "vpnclient")
        if not had_group and _group_exists("vpnclient"):
            run(["groupdel", "vpnclient"])
        assert purge.returncode == 0, purge.stdout + purge.stderr
        assert not Path("/usr/lib/vpnclient").exists(), "the purge left files behind"


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_the_installed_command_runs(installed: Path) -> None:
    version = run(["/usr/bin/vpnclient", "--version"], env={"PATH": "/usr/bin:/bin"})
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"vpnclient {__version__}"
    # The package's own Python and libraries, not this checkout's.
    where = run(["/usr/bin/python3", "-I", "-c",
                 "import sys; sys.path.insert(0, '/usr/lib/vpnclient'); import client, "
                 "cryptography, keyring; print(client.__file__)"])
    assert where.stdout.startswith("/usr/lib/vpnclient/client/"), where.stderr


def test_the_installed_tray_app_renders_its_icons(installed: Path) -> None:
    probe = (
        "import sys; sys.path.insert(0, '/usr/lib/vpnclient')\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from gui.icons import icon, icon_dir\n"
        "from gui.messages import ICON_STATES\n"
        "assert str(icon_dir()) == '/usr/share/vpnclient/icons', icon_dir()\n"
        "for s in ICON_STATES:\n"
        "    assert not icon(s).pixmap(22, 22).isNull(), s\n"
        "import gui.tray\n"
        "print('ok')\n"
    )
    result = run(["/usr/bin/python3", "-I", "-c", probe],
                 env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen"})
    assert result.stdout.strip() == "ok", result.stdout + result.stderr
    refused = run(["/usr/bin/vpnclient-gui"], env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode == 1 and "not as root" in refused.stderr


def test_the_unit_file_verifies(installed: Path) -> None:
    assert UNIT.is_file()
    result = run(["systemd-analyze", "verify", str(UNIT)])
    assert result.returncode == 0, result.stdout + result.stderr
    text = UNIT.read_text()
    for setting in ("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "ProtectSystem=strict",
                    "NoNewPrivileges=yes", "ExecStart=/usr/bin/vpnclient daemon"):
        assert setting in text
    security = run(["systemd-analyze", "security", "--offline=yes", str(UNIT)])
    if security.returncode == 0:  # systemd >= 252: the exposure score, for the log
        print(security.stdout.splitlines()[-1])
    assert _group_exists("vpnclient"), "postinst did not create the group"


def test_the_desktop_files_validate(installed: Path) -> None:
    for path in DESKTOP_FILES:
        assert path.is_file(), path
        result = run(["desktop-file-validate", str(path)])
        assert result.returncode == 0 and not result.stdout.strip(), \
            f"{path}: {result.stdout}{result.stderr}"
    assert "Exec=vpnclient-gui --import %f" in DESKTOP_FILES[1].read_text()


def test_the_mime_type_opens_the_import(installed: Path) -> None:
    # The dpkg triggers of shared-mime-info and desktop-file-utils have run.
    globs = Path("/usr/share/mime/globs2").read_text()
    assert "application/x-vpnprofile:*.vpnprofile" in globs
    assert "application/vnd.strongswan.profile:*.sswan" in globs
    assert Path("/usr/share/mime/application/x-vpnprofile.xml").is_file()
    cache = Path("/usr/share/applications/mimeinfo.cache")
    if shutil.which("update-desktop-database"):
        assert "application/x-vpnprofile=vpnclient-import.desktop" in cache.read_text()
