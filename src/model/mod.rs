//! Model description and checkpoint reading: config parsing, safetensors and GGUF readers,
//! tensor naming and the upload of LFM2 / LFM2-MoE weights into GPU pages.

pub mod checkpoint;
pub mod config;
pub mod fingerprint;
pub mod gguf;
pub mod quantize;
pub mod source;
pub mod synth;
pub mod weights;
pub mod writer;

pub use checkpoint::Checkpoint;
pub use config::{Config, MoeConfig};
pub use gguf::tokenizer as gguf_tokenizer;
pub use source::{RangeRead, ReadFuture, TensorData, TensorSource, TensorView};
pub use weights::{
    AttnWeights, ConvWeights, FfnWeights, LayerWeights, Mixer, ModelWeights, MoeWeights, Progress,
    QuantPlan, Role,
};
