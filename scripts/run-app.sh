#!/usr/bin/env bash
# Builds and runs the menu-bar app (release). On Linux, where a tray host may be missing, the
# sessions window opens at launch (SECOND_BRAIN_OPEN_WINDOW=sessions; set it to "" for the
# tray only); without a display the app runs under Xvfb (invisible: a headless smoke run),
# and without a D-Bus session it gets a private one. Ctrl-C quits like the Quit item does:
# the bridge drains its work and saves first.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p second-brain
app=("$CARGO_TARGET_DIR/release/second-brain")

if [[ $(uname) == Linux ]]; then
    export SECOND_BRAIN_OPEN_WINDOW="${SECOND_BRAIN_OPEN_WINDOW-sessions}"
    if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
        echo "run-app: no display; running under Xvfb (nothing will be visible). Ctrl-C quits."
        # Xvfb in a session of its own: Ctrl-C reaches the app only, which must keep its
        # display while it drains; Xvfb stops when the app has exited.
        ready=$(mktemp -u)
        mkfifo "$ready"
        setsid Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp 3>"$ready" 2>/dev/null &
        xvfb=$!
        trap 'kill "$xvfb" 2>/dev/null; wait "$xvfb" 2>/dev/null' EXIT
        read -r display <"$ready"
        rm -f "$ready"
        export DISPLAY=":$display"
    fi
    if [[ -z "${DBUS_SESSION_BUS_ADDRESS:-}" ]]; then
        app=(dbus-run-session -- "${app[@]}")
    fi
fi
"${app[@]}"
