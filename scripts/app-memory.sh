#!/usr/bin/env bash
# Measures the menu-bar app's memory under Xvfb: the sum of RSS (and PSS) over the app and
# all its child processes (WebKit's web and network processes), first with no window open
# (how the app spends its day: windows are destroyed when closed), then with a window open.
# The bridge runs inside, set up as a user would have it: a chat.db with Messages' schema
# (watched, empty), a vault, an allowed sender and a key (the API is never called).
#   scripts/app-memory.sh            release build (what users run)
#   scripts/app-memory.sh --debug    debug build
set -euo pipefail

if [[ "${1:-}" == --inside ]]; then
    bin=$2
    schema=$3
    settle=${SETTLE_SECONDS:-8}
    tree() { # the pid and every descendant
        local pid=$1
        echo "$pid"
        for child in $(ps -o pid= --ppid "$pid"); do tree "$child"; done
    }
    measure() { # label, window
        local home pid rss=0 pss=0 count=0 names=()
        home=$(mktemp -d)
        mkdir -p "$home/vault" "$home/Messages"
        sqlite3 "$home/Messages/chat.db" "PRAGMA journal_mode=WAL;" ".read $schema" >/dev/null
        HOME=$home SECOND_BRAIN_OPEN_WINDOW=$2 WEBKIT_DISABLE_DMABUF_RENDERER=1 \
            WEBKIT_SKIA_ENABLE_CPU_RENDERING=1 GTK_USE_PORTAL=0 LOG_LEVEL=warn \
            SECOND_BRAIN_DATA_DIR="$home/data" CHAT_DB_PATH="$home/Messages/chat.db" \
            VAULT_PATH="$home/vault" ALLOWED_SENDERS=+15551234567 \
            ANTHROPIC_API_KEY=sk-ant-unused ANTHROPIC_BASE_URL=http://127.0.0.1:9 \
            "$bin" >/dev/null 2>&1 &
        pid=$!
        sleep "$settle" # let WebKit start its processes and the page render
        for p in $(tree "$pid"); do
            [[ -r /proc/$p/status ]] || continue
            rss=$((rss + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
            pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
            names+=("$(cat "/proc/$p/comm")")
            count=$((count + 1))
        done
        printf '%-16s RSS %6.1f MiB   PSS %6.1f MiB   %d processes: %s\n' "$1" \
            "$(echo "$rss / 1024" | bc -l)" "$(echo "$pss / 1024" | bc -l)" "$count" "${names[*]}"
        grep -q '"state": "running"' "$home/data/status.json" \
            || echo "  (the bridge was not running: $(cat "$home/data/status.json" 2>/dev/null))"
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -rf "$home"
    }
    measure "no window" ""
    measure "sessions open" sessions
    measure "settings open" settings
    exit 0
fi

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
scripts/install-app-deps.sh e2e
for tool in bc sqlite3; do
    command -v "$tool" >/dev/null || { [[ $(id -u) == 0 ]] && apt-get install -y -qq "$tool"; }
done
if [[ "${1:-}" == --debug ]]; then
    cargo build -p second-brain
    bin=$CARGO_TARGET_DIR/debug/second-brain
else
    cargo build -p second-brain --release
    bin=$CARGO_TARGET_DIR/release/second-brain
fi
dbus-run-session -- xvfb-run -a -s "-screen 0 1280x900x24" "$0" --inside "$bin" "$PWD/tests/data/chatdb-schema.sql" 2> >(grep -v -e dbus-daemon -e portal -e Gtk-WARNING -e pw.conf -e '^$' >&2)
