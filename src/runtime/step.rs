//! What a step is: its shape (tokens, which logits), and the view of the model, scratch
//! and sequence state the recording of its blocks reads and writes.

use super::sampling::Sampler;
use super::scratch::Scratch;
use super::state::SequenceState;
use crate::model::{Config, ModelWeights};

/// Which logits a forward chunk produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogitsMode {
    /// Every position of the chunk.
    All,
    /// Only the last position (generation).
    Last,
}

/// What a planned step computes: `tokens` tokens of one sequence (already in
/// `scratch.tokens`, their RoPE rows in `scratch.rope`), and which logits, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StepShape {
    pub tokens: u32,
    pub logits: Option<LogitsMode>,
}

/// What one step reads and writes: the model, the activation scratch, the state of the
/// sequence it advances and its sampler.
pub(crate) struct StepView<'a> {
    pub cfg: &'a Config,
    pub weights: &'a ModelWeights,
    pub scratch: &'a Scratch,
    pub seq: &'a SequenceState,
    pub sampler: &'a Sampler,
}
