# Second Brain — one-command set-up on a fresh Debian/Ubuntu machine (root or sudo) or a Mac.
#   make run    install what is missing, build, run the app (the menu-bar app)
#   make test   install what is missing, run every test (unit, end-to-end, real window)
#   make bench  release benchmarks; table printed and written to target/bench/

SHELL := /bin/bash
CARGO ?= cargo
.PHONY: deps rust-deps test test-rust lint run run-bridge bench check-macos

# Debian packages (WebKitGTK build deps, tray library, Xvfb, WebKitWebDriver, D-Bus) and
# tauri-driver, each only when missing.
deps: rust-deps
ifeq ($(shell uname),Linux)
	scripts/install-app-deps.sh e2e
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

bench: deps
	$(CARGO) run --release --locked -p second-brain-bridge --example bench

check-macos:
	@if rustup target add aarch64-apple-darwin >/dev/null 2>&1; then \
		$(CARGO) check --target aarch64-apple-darwin -p second-brain -p second-brain-bridge \
		|| echo "check-macos: the macOS target installed, but the check needs the macOS SDK (run it on a Mac)"; \
	else \
		echo "check-macos: cannot install the aarch64-apple-darwin target here; run on a Mac"; \
	fi
