# Second Brain — one-command set-up on a fresh Debian/Ubuntu machine (root or sudo) or a Mac.
#   make run    install what is missing, build, run the app (the menu-bar app; on Linux its
#               sessions window opens too, under Xvfb when there is no display)
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

# On Linux the sessions window opens at launch (there may be no tray host); see the script.
run: deps
	scripts/run-app.sh

run-bridge: rust-deps
	$(CARGO) run --release --locked -p second-brain-bridge -- run

bench: deps
	$(CARGO) run --release --locked -p second-brain-bridge --example bench

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
