#!/usr/bin/env bash
# Real-window end-to-end test of the menu-bar app: builds it, then drives its windows through
# tauri-driver + WebKitWebDriver under a private D-Bus session and a virtual X server.
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
# One app at a time (they share the D-Bus session where the single-instance lock lives).
dbus-run-session -- xvfb-run -a -s "-screen 0 1280x900x24" \
    cargo test -p second-brain --test app-e2e -- --test-threads=1 "$@"

echo "app-e2e: screenshots in $CARGO_TARGET_DIR/e2e-screenshots/"
ls -1 "$CARGO_TARGET_DIR/e2e-screenshots/" 2>/dev/null || true
