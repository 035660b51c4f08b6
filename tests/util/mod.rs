//! Test support: the fakes that stand at the bridge's process boundaries. One crate
//! (`second-brain-testkit`, imported as `util`), used by every test and benchmark.
#![allow(dead_code)]

pub mod anthropic;
pub mod bridge;
pub mod chatdb;
pub mod media;
pub mod messages;
pub mod osascript;
pub mod rng;
pub mod state;
pub mod wait;
pub mod web_fetch;
