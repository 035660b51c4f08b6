#!/usr/bin/env bash
# Real-window end-to-end test of the menu-bar app: builds it, then drives its windows through
# tauri-driver + WebKitWebDriver under a private D-Bus session and a virtual X server.
# Screenshots land in "${CARGO_TARGET_DIR:-target}/e2e-screenshots/".
#
# Works from a clean machine: installs the Debian packages and tauri-driver when missing
# (apt-get needs root; otherwise it says what to install).
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

packages=(libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev xvfb xauth
    webkit2gtk-driver dbus dbus-x11 fonts-inter)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then
        echo "app-e2e: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "app-e2e: please install: ${missing[*]}" >&2
        exit 1
    fi
fi

if [[ -z "${TAURI_DRIVER:-}" ]]; then
    if ! command -v tauri-driver >/dev/null && [[ ! -x "$HOME/.cargo/bin/tauri-driver" ]]; then
        echo "app-e2e: installing tauri-driver"
        cargo install tauri-driver --locked --version '^2'
    fi
    TAURI_DRIVER="$(command -v tauri-driver || echo "$HOME/.cargo/bin/tauri-driver")"
    export TAURI_DRIVER
fi

# Build first, outside the X server, so build output is not mixed with the test's.
cargo build -p second-brain --bins --test app-e2e

rm -rf "$CARGO_TARGET_DIR/e2e-screenshots"
# One app at a time (they share the D-Bus session where the single-instance lock lives).
dbus-run-session -- xvfb-run -a -s "-screen 0 1280x900x24" \
    cargo test -p second-brain --test app-e2e -- --test-threads=1 "$@"

echo "app-e2e: screenshots in $CARGO_TARGET_DIR/e2e-screenshots/"
ls -1 "$CARGO_TARGET_DIR/e2e-screenshots/"
