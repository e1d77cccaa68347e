//! The host scheduler: a loaded model, sessions that own the KV cache and conv state, and
//! the per-chunk recording of the forward pass (one submit per chunk or decode step).

mod batch;
pub mod bench;
mod checkpoints;
mod context_shift;
mod dry;
mod forward;
mod generation;
mod loop_guard;
mod model;
mod moe;
mod products;
mod sampling;
mod scratch;
mod session;
mod session_file;
mod state;
mod step;

pub use batch::Batch;
pub use context_shift::ContextOverflow;
pub use dry::{DryParams, DryPenalty};
pub use generation::GenerateOptions;
pub use loop_guard::{LoopGuard, LoopWatch};
pub use model::{Model, ModelFiles};
pub use session::{FinishReason, Flow, HostTime, Session, SessionOptions};
pub use step::LogitsMode;
