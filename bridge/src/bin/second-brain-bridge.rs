//! `second-brain-bridge`: the Second Brain bridge without its menu-bar app.
fn main() {}
