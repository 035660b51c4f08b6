#!/usr/bin/env bash
# Installs what the menu-bar app (src-tauri/) needs on Debian 12:
#   build    the GTK/WebKitGTK/appindicator headers without which `cargo build` of the
#            workspace fails (src-tauri links WebKitGTK);
#   e2e      plus Xvfb, D-Bus, WebKitWebDriver, a UI font, a Secret Service (GNOME Keyring,
#            where the app keeps the API key on Linux) and tauri-driver for
#            scripts/app-e2e.sh;
#   icons    rsvg-convert, ImageMagick and png2icns for scripts/render-icons.sh.
# Usage: scripts/install-app-deps.sh [build|e2e|icons]...   (default: build)
# Installs only what is missing; needs root for apt-get (says what to install otherwise).
set -euo pipefail

build=(build-essential pkg-config libssl-dev libgtk-3-dev libwebkit2gtk-4.1-dev
    libayatana-appindicator3-dev librsvg2-dev libxdo-dev libdbus-1-dev libheif-examples)
e2e=(xvfb xauth dbus dbus-x11 webkit2gtk-driver fonts-inter gnome-keyring)
icons=(librsvg2-bin imagemagick icnsutils)

wanted=()
want_driver=false
for set in "${@:-build}"; do
    case $set in
        build) wanted+=("${build[@]}") ;;
        e2e) wanted+=("${build[@]}" "${e2e[@]}"); want_driver=true ;;
        icons) wanted+=("${icons[@]}") ;;
        *) echo "install-app-deps: unknown set '$set' (build, e2e, icons)" >&2; exit 2 ;;
    esac
done

missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "install-app-deps: please install (as root): apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "install-app-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if $want_driver && ! command -v tauri-driver >/dev/null \
    && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver" ]]; then
    echo "install-app-deps: installing tauri-driver"
    cargo install tauri-driver --locked --version '^2'
fi
