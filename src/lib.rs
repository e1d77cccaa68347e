//! wmoe: LFM2 and LFM2-MoE inference on wgpu compute shaders.
//!
//! The items at the crate root are the library's API, and all the `wmoe` command line uses;
//! the modules stay public for the tests and `kernels-bench`, which reach into kernels and GPU
//! plumbing.

pub mod bundled;
pub mod chat;
pub mod conversation;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod output;
pub mod quant;
pub mod runtime;
#[cfg(feature = "serve")]
pub mod serve;

pub use error::{Error, Result};

pub use gpu::{DeviceOptions, DeviceProfile, GpuContext, Switches};
pub use runtime::{
    Batch, ContextOverflow, FinishReason, Flow, HostTime, LogitsMode, Model, ModelFiles, Session,
    SessionOptions,
};

/// What one generation is asked for ([`Session::generate_stream_with`]): length, sampling,
/// a sparse logit bias (OpenAI `logit_bias`), the DRY n-gram penalty and the loop guard.
pub use runtime::{DryParams, DryPenalty, GenerateOptions, LoopGuard, LoopWatch};

/// How [`Session::generate_with`] draws each token (greedy by default; a checkpoint's
/// `generation_config.json` gives [`Model::generation`]).
pub use kernels::sample::SamplingParams;

/// Element type of a session's KV cache (`SessionOptions::kv`): f16 or f32;
/// [`Model::auto_kv_type`] picks one by cache size.
pub use kernels::KvType;

/// Weight formats to quantize matrices to, while loading ([`Model::load_with`]) or into a new
/// checkpoint ([`quantize_checkpoint`], [`synth`]).
pub use model::QuantPlan;

/// The GPU adapters a [`DeviceOptions`] can choose from, with their features and limits
/// (`wmoe devices`).
pub use gpu::{list_adapters, AdapterReport};

/// Writes a quantized copy of a checkpoint directory (`wmoe quantize`).
pub use model::quantize::{quantize_checkpoint, QuantizeReport};

/// Random-weight checkpoints with the real shapes of an LFM2 model (`wmoe synth`):
/// [`synth_config`] gives a preset's `config.json`, [`synth`] writes the checkpoint.
pub use model::synth::{synth, synth_config};

/// Prompt-processing and generation throughput in llama-bench's form (`wmoe bench`).
pub use runtime::bench::{bench, BenchReport, BenchRow, BenchSpec};

/// Writes a float32 array as a NumPy `.npy` file (`wmoe logits`).
pub use npy::write_f32 as write_npy;

/// Chat text, no GPU: a checkpoint's chat template rendered exactly as transformers renders
/// it for an OpenAI chat request (`wmoe template`), and generated text parsed into an OpenAI
/// assistant message, whole or streaming (`wmoe parse`).
pub use chat::{
    parse_output, AssistantMessage, ChatRequest, ChatTemplate, OutputParser, ParseEvent, ToolCall,
};

/// Streamed text: token ids to text that never splits a character ([`Detokenizer`]), and
/// stop strings matched across deltas ([`StopMatcher`]).
pub use chat::{Detokenizer, StopMatcher, StopStep};

/// A chat over a session (`wmoe chat`, `wmoe generate --chat`): the conversation rendered
/// with the model's template, its tokens reused, the answer streamed through stop strings
/// and the output parser; [`generate_text`] is the same for plain text; [`run_terminal`] is
/// the interactive loop.
pub use conversation::{
    generate_text, generate_text_async, read_input, run_terminal, Completion, Conversation, Input,
    TerminalOptions, TurnReport,
};

/// The model compiled into the library, which [`Model::load_bundled`] loads from memory and
/// commands use when no `--model` is given.
pub use bundled::{BundledModel, BUNDLED_MODEL};
