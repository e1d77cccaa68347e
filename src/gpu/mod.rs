//! GPU plumbing that knows no model and no kernel: device choice, shader preprocessing,
//! pipeline cache, command recording with a uniform arena, buffers and weight pages.

mod context;
mod formats;
mod params;
mod profile;
mod recorder;
mod shader;
mod wait;
mod weights;

pub use crate::quant::{WeightFormat, ALL_FORMATS};
pub(crate) use context::mib;
pub use context::{list_adapters, list_adapters_async, AdapterReport, DeviceOptions, GpuContext};
pub use formats::{with_weight_loaders, GPU_FORMATS};
pub use params::UniformLayout;
pub use profile::{
    AttentionKernel, AttentionTiles, DeviceProfile, MatvecFamily, PrefillProduct, Switches,
    KEY_LANES,
};
pub use recorder::{fold_groups, Binding, BufferCopy, Plan, Recorder, StepVars, Submitted};
pub use shader::{preprocess, Defines};
pub use wait::block_on;
pub use weights::{
    max_tile_rows, upload_canonical, PagedUpload, Paging, WeightPage, WeightTensor, CHUNK_BYTES,
    MAX_TILE_ROWS,
};

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
