//! GGUF files (llama.cpp's format):
//! - the container, read by our own parser: [`GgufFile`] (`file`), its header (`header`,
//!   over the bounds-checked reads of `cursor`), metadata values (`value`) and ggml tensor
//!   types (`ggml_type`);
//! - the names LFM2's tensors have in it (`names`);
//! - an LFM2 file as a [`TensorSource`](crate::model::TensorSource) ([`GgufSource`], in
//!   `source`) and the tokenizer its metadata describes (`tokenizer`);
//! - the way back: a checkpoint as llama.cpp's converter writes it (`export`: metadata,
//!   tensor names and stacking, tokenizer) into a GGUF v3 container (`write`).
//!
//! The [`Config`](crate::model::Config) from the metadata is read next to the `config.json`
//! one, in `model::config`.

mod cursor;
mod export;
mod file;
mod ggml_type;
mod header;
mod names;
mod source;
pub mod tokenizer;
mod value;
mod write;

pub use export::{gguf_metadata, gguf_tensors, HfTensor};
pub use file::GgufFile;
pub use ggml_type::{supported_types, GgmlType};
pub use header::{GgufTensorInfo, DEFAULT_ALIGNMENT};
pub(crate) use names::block_tensor;
pub use names::{gguf_name, lfm2_architecture, ARCHITECTURES};
pub use source::GgufSource;
pub use value::GgufValue;
pub use write::{write_gguf, GgufOutTensor};
