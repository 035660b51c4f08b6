//! End-to-end tests: the real bridge against a fixture chat.db, a fake Anthropic server on
//! loopback and a fake `osascript` first on `PATH`.

mod util;
