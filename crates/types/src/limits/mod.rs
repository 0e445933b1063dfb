//! Every bound in commonweight: queue lengths, message sizes, peer counts, retries, memory.
//!
//! Names end in their unit (`message_bytes_max`, `peers_max`, `timeout_ms`). One submodule per
//! area keeps the list readable; nothing outside this module hard-codes a bound.

pub mod data;
pub mod ledger;
pub mod model;
pub mod net;
pub mod node;
pub mod round;
pub mod sim;
pub mod store;
pub mod sync;
pub mod verify;
