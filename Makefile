# Second Brain — one-command set-up on a fresh Debian/Ubuntu machine (root or sudo) or a Mac.
#   make run    install what is missing, build, run the app (the menu-bar app; on Linux its
#               sessions window opens too, under Xvfb when there is no display)
#   make test   install what is missing, run every test (unit, end-to-end, real window)
#   make bench  release benchmarks; table printed and written to target/bench/

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)
.PHONY: deps rust-deps test test-rust lint run run-bridge bench bench-deps check-macos

# Debian packages (WebKitGTK build deps, tray library, Xvfb, WebKitWebDriver, D-Bus) and
# tauri-driver, each only when missing.
deps: rust-deps
ifeq ($(shell uname),Linux)
	scripts/install-app-deps.sh e2e
endif

rust-deps:
	@command -v $(CARGO) >/dev/null || { echo "Rust is missing: install it from rustup.rs"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true

# On macOS the real-window test cannot run (WebKitWebDriver, Xvfb and D-Bus are Linux's),
# and the GUI unit tests are ignored (muda builds menus on the main thread only).
test: deps lint test-rust
ifeq ($(shell uname),Linux)
	scripts/app-e2e.sh
else
	@echo "make test: skipped the real-window test (scripts/app-e2e.sh needs Linux: Xvfb, D-Bus, WebKitWebDriver) and the GUI unit tests (muda builds menus on the main thread only)"
endif

test-rust:
	$(CARGO) test --workspace --all-targets --locked

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# On Linux the sessions window opens at launch (there may be no tray host); see the script.
run: deps
	scripts/run-app.sh

run-bridge: rust-deps
	$(CARGO) run --release --locked -p second-brain-bridge -- run

# The micro-benchmarks run first and leave their rows in $(TARGET_DIR)/bench/micro.json; the
# end-to-end driver then times the release binary from outside, prints the one table and writes
# it to $(TARGET_DIR)/bench/results.json (and results.md); the turns benchmark (a model taking
# 1.5 s a request) writes its own table to $(TARGET_DIR)/bench/turns.json (and turns.md). The app
# is not built here.
bench: rust-deps bench-deps
	@rm -f "$(TARGET_DIR)/bench/micro.json"
	$(CARGO) bench --locked -p second-brain-bridge --bench micro --bench search --bench e2e --bench turns --bench attachments --bench reminders --no-run
	CRITERION_HOME="$(TARGET_DIR)/criterion" $(CARGO) bench --locked -p second-brain-bridge --bench micro
	$(CARGO) bench --locked -p second-brain-bridge --bench search
	$(CARGO) bench --locked -p second-brain-bridge --bench e2e
	$(CARGO) bench --locked -p second-brain-bridge --bench turns
	$(CARGO) bench --locked -p second-brain-bridge --bench attachments
	$(CARGO) bench --locked -p second-brain-bridge --bench reminders

# strace lets the benchmark list every process the bridge starts (it samples /proc without it).
bench-deps:
ifeq ($(shell uname),Linux)
	@command -v strace >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq strace >/dev/null; } || \
		echo "strace could not be installed; processes will be sampled from /proc instead"
endif

# Type-checks the app and the bridge for macOS. Conclusive only on a Mac: checking from
# Linux also needs the macOS SDK for the C parts of some dependencies, so a failure there is
# reported as "not verified", never as a pass.
check-macos:
ifeq ($(shell uname),Darwin)
	$(CARGO) check --locked --all-targets -p second-brain -p second-brain-bridge
else
	@rustup target add aarch64-apple-darwin >/dev/null 2>&1 \
		|| { echo "check-macos: NOT verified: cannot install the aarch64-apple-darwin target; run it on a Mac"; exit 1; }
	@$(CARGO) check --locked --target aarch64-apple-darwin -p second-brain -p second-brain-bridge \
		|| { echo "check-macos: NOT verified: the cross-check failed (above; without the macOS SDK this is expected); run it on a Mac"; exit 1; }
endif
