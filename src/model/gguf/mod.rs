//! GGUF files: the container ([`GgufFile`], read by our own parser), the names LFM2 has in
//! them, a [`TensorSource`](crate::model::TensorSource) over them ([`GgufSource`]) and a
//! tokenizer from their metadata. The [`Config`](crate::model::Config) from their metadata
//! is read next to the `config.json` one, in `model::config`.

mod cursor;
mod file;
mod ggml_type;
mod header;
mod names;
mod source;
pub mod tokenizer;
mod value;

pub use file::GgufFile;
pub use ggml_type::{supported_types, GgmlType};
pub use header::{GgufTensorInfo, DEFAULT_ALIGNMENT};
pub(crate) use names::block_tensor;
pub use names::{gguf_name, lfm2_architecture, ARCHITECTURES};
pub use source::GgufSource;
pub use value::GgufValue;
