"""`vpnclient-gui`: the tray application (unprivileged; speaks only the control protocol).

    vpnclient-gui                 the tray icon
    vpnclient-gui --autostart     the same, started at login: connects the profile chosen
                                  in Settings… ("Connect at login")
    vpnclient-gui --import FILE   import a profile (what opening a .vpnprofile runs)
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpnclient-gui", description=__doc__.splitlines()[0])
    parser.add_argument("--autostart", action="store_true",
                        help="started at login: connect the profile chosen in the settings")
    parser.add_argument("--import", dest="import_file", metavar="FILE",
                        help="import a .vpnprofile, .sswan or .mobileconfig file and exit")
    args = parser.parse_args(argv)
    if os.geteuid() == 0 and not os.environ.get("VPNCLIENT_GUI_AS_ROOT"):
        print("vpnclient-gui: run the tray application as your desktop user, not as root; "
              "the vpnclient service does the privileged work", file=sys.stderr)
        return 1
    try:
        from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon
    except ImportError as exc:
        print(f"vpnclient-gui: PySide6 is missing ({exc}); install the package's GUI "
              "dependencies: pip install 'vpnclient[gui]'", file=sys.stderr)
        return 1

    app = QApplication(sys.argv[:1])
    app.setApplicationName("vpnclient")
    app.setDesktopFileName("vpnclient-gui")
    app.setQuitOnLastWindowClosed(False)

    if args.import_file:
        return import_and_report(args.import_file)

    from .tray import TrayApp

    if not QSystemTrayIcon.isSystemTrayAvailable():
        QMessageBox.warning(None, "VPN", "This desktop has no system tray, so the VPN icon "
                            "cannot be shown. Use `vpnclient connect` and `vpnclient status`, "
                            "or enable a tray (status notifier) extension.")
    tray = TrayApp(autostart=args.autostart)
    code = app.exec()
    del tray
    return code


def import_and_report(path: str) -> int:
    from PySide6.QtWidgets import QMessageBox

    from client.credentials import Credentials
    from client.importers import commit, read_import_file
    from client.profile import ProfileError
    from client.store import ProfileStore

    notices: list[str] = []
    try:
        results = commit(read_import_file(path), ProfileStore(), Credentials(), notices.append)
    except (ProfileError, OSError) as exc:
        QMessageBox.critical(None, "The profile could not be imported",
                             f"{exc}.\n\nAsk your VPN administrator for a valid profile.")
        return 2
    names = ", ".join(f"“{r.profile.name}”" for r in results)
    QMessageBox.information(None, "Profile imported",
                            f"{names} can be used now: choose it in the VPN menu of the tray "
                            "icon and click Connect." + ("\n\n" + " ".join(notices)
                                                          if notices else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
