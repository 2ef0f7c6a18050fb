#!/usr/bin/env bash
# Builds dist/vpnclient_VERSION_amd64.deb from this checkout (README.md, "Packages").
#
# The package is self-contained: the project and its Python dependencies (cryptography,
# pyopenssl, netifaces, python-pytun, keyring, PySide6) go to /usr/lib/vpnclient,
# run by Debian's /usr/bin/python3 (3.11, bookworm), so they never clash with python3-*
# packages. Needs: /usr/bin/python3 with venv, python3-dev and gcc (netifaces and pytun
# compile), dpkg-dev and fakeroot. Usage: packaging/build-deb.sh [OUTDIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/dist}
python=/usr/bin/python3
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/client/__init__.py")
arch=$(dpkg --print-architecture)
pyver=$($python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/pkg
lib=$pkg/usr/lib/vpnclient

# 1. The code and its dependencies, installed for Debian's interpreter.
$python -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q --upgrade pip
# From a copy, so that no build/ or egg-info is left in (or reused from) the checkout.
mkdir "$work/src"
cp -r "$root/pyproject.toml" "$root/README.md" "$root/client" "$root/gui" "$work/src/"
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +
"$work/build-env/bin/pip" install -q --no-compile --target "$lib" "$work/src[gui]"
rm -rf "$lib/bin"  # console scripts with the build environment's shebang: ours follow
# What a tray icon does not need from PySide6: tools, headers, QML, type stubs.
qt=$lib/PySide6
rm -rf "$qt"/{assistant,designer,linguist,lrelease,lupdate,qmlformat,qmllint,qmlls,svgtoqml} \
       "$qt"/{include,typesystems,glue,doc,scripts,examples} "$qt/Qt/qml" "$qt/Qt/translations"
find "$lib" -name '*.pyi' -delete
find "$qt" -maxdepth 1 -name 'Qt*.abi3.so' \
    \! -name 'QtCore.*' \! -name 'QtGui.*' \! -name 'QtWidgets.*' \! -name 'QtNetwork.*' \
    \! -name 'QtDBus.*' \! -name 'QtSvg.*' -delete
find "$qt/Qt/lib" -name 'libQt6*' \( -name '*Quick*' -o -name '*Qml*' -o -name '*Designer*' \
    -o -name '*Help*' -o -name '*Sql*' -o -name '*Test*' -o -name '*UiTools*' \
    -o -name '*Concurrent*' -o -name '*LabsStyle*' \) -delete

# 2. Entry points run by Debian's python3 with the private library first on the path.
mkdir -p "$pkg/usr/bin"
for pair in vpnclient:client.cli vpnclient-gui:gui.app; do
    name=${pair%%:*}
    module=${pair#*:}
    cat >"$pkg/usr/bin/$name" <<WRAPPER
#!$python -I
import sys
sys.path.insert(0, "/usr/lib/vpnclient")
from $module import main
sys.exit(main())
WRAPPER
    chmod 755 "$pkg/usr/bin/$name"
done

# 3. systemd, the group, the desktop, MIME, icons.
install -Dm644 "$root/packaging/vpnclient.service" "$pkg/usr/lib/systemd/system/vpnclient.service"
install -Dm644 "$root/packaging/vpnclient.sysusers" "$pkg/usr/lib/sysusers.d/vpnclient.conf"
install -Dm644 "$root/packaging/vpnclient-gui.desktop" \
    "$pkg/usr/share/applications/vpnclient-gui.desktop"
install -Dm644 "$root/packaging/vpnclient-import.desktop" \
    "$pkg/usr/share/applications/vpnclient-import.desktop"
install -Dm644 "$root/packaging/vpnclient-gui-autostart.desktop" \
    "$pkg/etc/xdg/autostart/vpnclient-gui.desktop"
install -Dm644 "$root/packaging/vpnclient-mime.xml" "$pkg/usr/share/mime/packages/vpnclient.xml"
for svg in "$root"/icons/*.svg; do
    install -Dm644 "$svg" "$pkg/usr/share/vpnclient/icons/$(basename "$svg")"
done
install -Dm644 "$root/icons/vpnclient.svg" \
    "$pkg/usr/share/icons/hicolor/scalable/apps/vpnclient.svg"
install -Dm644 "$root/README.md" "$pkg/usr/share/doc/vpnclient/README.md"

# 4. Control files.
mkdir -p "$pkg/DEBIAN"
for script in postinst prerm postrm; do
    install -m755 "$root/packaging/$script" "$pkg/DEBIAN/$script"
done
echo "/etc/xdg/autostart/vpnclient-gui.desktop" >"$pkg/DEBIAN/conffiles"
size=$(du -sk "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: vpnclient
Version: $version
Architecture: $arch
Maintainer: vpnclient developers <vpnclient@example.com>
Installed-Size: $size
Depends: python3 (>= $pyver), python3 (<< ${pyver%.*}.$(( ${pyver#*.} + 1 ))), iproute2, nftables, libc6,
 libegl1, libgl1, libxkbcommon-x11-0, libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1,
 libxcb-shape0, libxcb-xinerama0, libxcb-randr0, libxcb-render-util0, libxcb-image0,
 libdbus-1-3, libfontconfig1
Recommends: gnome-keyring | kwalletmanager, systemd
Section: net
Priority: optional
Description: IKEv2/IPsec remote-access VPN client with a tray application
 vpnclient connects to IKEv2 gateways such as strongSwan with EAP, certificates or
 a pre-shared key. A privileged service (vpnclient.service) owns the tunnel; members
 of the group vpnclient use it from the tray application (vpnclient-gui) or the
 command line (vpnclient).
CONTROL

mkdir -p "$out"
deb="$out/vpnclient_${version}_${arch}.deb"
fakeroot dpkg-deb -Zzstd -z3 --build "$pkg" "$deb" >/dev/null
echo "$deb"
