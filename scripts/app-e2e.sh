#!/usr/bin/env bash
# Real-window end-to-end test of the menu-bar app: builds it, then drives its windows through
# tauri-driver + WebKitWebDriver under a private D-Bus session (with a Secret Service for the
# API key) and a virtual X server. Linux only: WebKitWebDriver does not exist on macOS.
# Screenshots land in "${CARGO_TARGET_DIR:-target}/e2e-screenshots/".
#
# Works from a clean machine: scripts/install-app-deps.sh installs the Debian packages and
# tauri-driver when missing (apt-get needs root; otherwise it says what to install).
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

scripts/install-app-deps.sh e2e
if [[ -z "${TAURI_DRIVER:-}" ]]; then
    TAURI_DRIVER="$(command -v tauri-driver || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver")"
    export TAURI_DRIVER
fi

# Build first, outside the X server, so build output is not mixed with the test's.
cargo build -p second-brain --bins --test app-e2e

rm -rf "$CARGO_TARGET_DIR/e2e-screenshots"
# The keychain of the test's D-Bus session: GNOME Keyring's Secret Service, unlocked with a
# throwaway password, keeping its files in a temporary folder (never this user's keyrings).
# It exits with the session's bus.
keyrings=$(mktemp -d)
trap 'rm -rf "$keyrings"' EXIT
export KEYRINGS="$keyrings"
# One app at a time (they share the D-Bus session where the single-instance lock lives).
dbus-run-session -- bash -c '
    printf e2e | XDG_DATA_HOME="$KEYRINGS" gnome-keyring-daemon --unlock --components=secrets \
        --daemonize >/dev/null
    exec xvfb-run -a -s "-screen 0 1280x900x24" \
        cargo test -p second-brain --test app-e2e -- --test-threads=1 "$@"
' app-e2e "$@"

echo "app-e2e: screenshots in $CARGO_TARGET_DIR/e2e-screenshots/"
ls -1 "$CARGO_TARGET_DIR/e2e-screenshots/" 2>/dev/null || true
