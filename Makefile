# Second Brain — one-command set-up on a fresh Debian/Ubuntu machine (root or sudo) or a Mac.
#   make run    install what is missing, build, run the app (the menu-bar app)
#   make test   install what is missing, run every test (unit, end-to-end, real window)
#   make bench  release benchmarks; table printed and written to target/bench/

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)

# Debian packages: Tauri's WebKitGTK build deps, a tray host library, and the real-window
# test stack (Xvfb, WebKitWebDriver, a D-Bus session).
APT_PACKAGES := build-essential pkg-config curl libssl-dev libwebkit2gtk-4.1-dev \
	libayatana-appindicator3-dev librsvg2-dev libxdo-dev xvfb xauth webkit2gtk-driver dbus \
	dbus-x11 sqlite3

.PHONY: deps rust-deps test test-rust lint run run-bridge bench bench-deps check-macos clean-state

deps: rust-deps
ifeq ($(shell uname),Linux)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v tauri-driver >/dev/null || $(CARGO) install tauri-driver --locked --quiet
endif

rust-deps:
	@command -v $(CARGO) >/dev/null || { echo "Rust is missing: install it from rustup.rs"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true

test: deps lint test-rust
	scripts/app-e2e.sh

test-rust:
	$(CARGO) test --workspace --all-targets --locked

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

run: deps
	$(CARGO) run --release --locked -p second-brain

run-bridge: rust-deps
	$(CARGO) run --release --locked -p second-brain-bridge -- run

# The micro-benchmarks run first and leave their rows in $(TARGET_DIR)/bench/micro.json; the
# end-to-end driver then times the release binary from outside, prints the one table and writes
# it to $(TARGET_DIR)/bench/results.json (and results.md). The app is not built here.
bench: rust-deps bench-deps
	@rm -f "$(TARGET_DIR)/bench/micro.json"
	$(CARGO) bench --locked -p second-brain-bridge --bench micro --bench e2e --no-run
	CRITERION_HOME="$(TARGET_DIR)/criterion" $(CARGO) bench --locked -p second-brain-bridge --bench micro
	$(CARGO) bench --locked -p second-brain-bridge --bench e2e

# strace lets the benchmark list every process the bridge starts (it samples /proc without it).
bench-deps:
ifeq ($(shell uname),Linux)
	@command -v strace >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq strace >/dev/null; } || \
		echo "strace could not be installed; processes will be sampled from /proc instead"
endif

check-macos:
	@if rustup target add aarch64-apple-darwin >/dev/null 2>&1; then \
		$(CARGO) check --target aarch64-apple-darwin -p second-brain -p second-brain-bridge \
		|| echo "check-macos: the macOS target installed, but the check needs the macOS SDK (run it on a Mac)"; \
	else \
		echo "check-macos: cannot install the aarch64-apple-darwin target here; run on a Mac"; \
	fi
