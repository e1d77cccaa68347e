//! The host scheduler: a loaded model, sessions that own the KV cache and conv state, and
//! the per-chunk recording of the forward pass (one submit per chunk or decode step).

pub mod bench;
mod checkpoints;
mod context_shift;
mod forward;
mod model;
mod moe;
mod products;
mod sampling;
mod scratch;
mod session;
mod session_file;
mod state;
mod step;

pub use context_shift::ContextOverflow;
pub use model::{Model, ModelFiles};
pub use session::{HostTime, Session, SessionOptions};
pub use step::LogitsMode;
