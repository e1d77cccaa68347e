//! wmoe: LFM2 and LFM2-MoE inference on wgpu compute shaders.
//!
//! The items at the crate root are the library's API, and all the `wmoe` command line uses;
//! the modules stay public for the tests and `kernels-bench`, which reach into kernels and GPU
//! plumbing.

pub mod bundled;
pub mod chat;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod output;
pub mod quant;
pub mod runtime;

pub use error::{Error, Result};

pub use gpu::{DeviceOptions, DeviceProfile, GpuContext, Switches};
pub use runtime::{
    ContextOverflow, HostTime, LogitsMode, Model, ModelFiles, Session, SessionOptions,
};

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

/// The model compiled into the library, which [`Model::load_bundled`] loads from memory and
/// commands use when no `--model` is given.
pub use bundled::{BundledModel, BUNDLED_MODEL};
