//! The Second Brain iMessage bridge.
//!
//! One text's trip, one module per stage: [`chatdb`] reads new rows from Messages' database
//! (decoding [`typedstream`] bodies), [`watcher`] says when to look, [`router`] admits allowed
//! senders and queues each conversation in order, [`conversation`] runs the [`agent`] over the
//! [`anthropic`] API with the [`tools`] that write to the [`vault`] and reply through the
//! [`sender`], and [`sessions`] keeps each conversation's state on disk. [`ledger`] remembers
//! which texts were claimed and finished, so none is lost or handled twice.
//!
//! The crate has no GUI dependency: the headless CLI and the menu-bar app both drive it
//! through [`run`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod chatdb;
pub mod ledger;
pub mod persist;
pub mod sender;
pub mod sessions;
