//! GPU plumbing that knows no model and no kernel: device choice, shader preprocessing,
//! pipeline cache, command recording with a uniform arena, buffers and weight pages.

mod context;
mod recorder;
mod shader;
mod weights;

pub use context::{list_adapters, AdapterReport, DeviceOptions, GpuContext};
pub use recorder::{fold_groups, Binding, Recorder};
pub use shader::{preprocess, Defines};
pub use weights::{upload_f32_matrix, WeightFormat, WeightPage, WeightTensor};

pub mod testing;
