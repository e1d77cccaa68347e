//! Helpers for the kernel benches: a device, random weights uploaded page by page without
//! holding the whole tensor on the host, and a synchronous "run and wait" for timing.

use std::time::{Duration, Instant};

use wmoe::gpu::{GpuContext, Recorder, StepVars, WeightFormat, WeightTensor};

/// The bench device (`WMOE_BACKEND` / `WMOE_ADAPTER` pick it).
pub fn device() -> GpuContext {
    GpuContext::new(&wmoe::DeviceOptions::from_env()).expect("a GPU adapter for the benches")
}

/// A `[rows, cols]` matrix of pseudo-random values in `format`, grouped by `group_rows`.
pub fn random_weights(
    ctx: &GpuContext,
    format: WeightFormat,
    rows: usize,
    cols: usize,
    group_rows: usize,
) -> WeightTensor {
    let (canon_bytes, row_bytes) = (format.row_bytes(cols), format.row_words(cols) * 4);
    let mut canon = vec![0u8; canon_bytes];
    let mut state = 0x1234_5678u32;
    let mut vals = vec![0f32; cols];
    WeightTensor::upload(
        ctx,
        "bench weights",
        format,
        rows,
        cols,
        group_rows,
        |_, n, out| {
            for r in 0..n {
                for v in vals.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    *v = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                }
                format.quantize_row(&vals, &mut canon);
                format.repack_row(&canon, cols, &mut out[r * row_bytes..(r + 1) * row_bytes]);
            }
            Ok(())
        },
    )
    .expect("upload")
}

/// Records a step at position `pos0` with `record`, submits once and waits for the GPU;
/// returns the wall time.
pub fn run_once(ctx: &GpuContext, pos0: u32, record: &dyn Fn(&mut Recorder)) -> Duration {
    let mut rec = Recorder::at(ctx, StepVars { pos0 });
    record(&mut rec);
    let start = Instant::now();
    rec.submit();
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("GPU wait");
    start.elapsed()
}
