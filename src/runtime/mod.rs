//! The host scheduler: a loaded model, sessions that own the KV cache and conv state, and
//! the per-chunk recording of the forward pass (one submit per chunk or decode step).

pub mod bench;
mod forward;
mod model;
mod session;

pub use model::Model;
pub use session::{LogitsMode, Session, SessionOptions};
