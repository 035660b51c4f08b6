//! Test support: the fakes that stand at the bridge's process boundaries.
#![allow(dead_code)]

pub mod anthropic;
pub mod bridge;
pub mod chatdb;
pub mod messages;
pub mod osascript;
pub mod wait;
