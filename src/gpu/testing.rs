//! Shared helpers for GPU tests: one device per test binary, deterministic random data and
//! the normalized error used by every kernel test.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use super::{DeviceOptions, GpuContext};

/// The test device, or `None` (test skipped) when there is no adapter and CI is not set.
/// Under `CI=true` a missing adapter fails the test, so CI can never pass having tested nothing.
/// A skip is never silent: each skipping test prints `SKIPPED (no GPU adapter): <test>`, and
/// the test binary ends with the count of them (see [`record_skip`]).
pub fn context() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    let ctx = CTX
        .get_or_init(|| match GpuContext::new(&DeviceOptions::from_env()) {
            Ok(c) => Some(c),
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("CI=true but no GPU adapter is usable: {e}");
                }
                let _ = writeln!(std::io::stderr(), "no GPU adapter for the GPU tests: {e}");
                None
            }
        })
        .as_ref();
    if ctx.is_none() {
        record_skip();
    }
    ctx
}

/// The tests (by thread name, which the test harness sets to the test's) that skipped GPU
/// work.
static SKIPPED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Records the running test as skipped: once per test, a line written straight to stderr
/// (past the harness's output capture, so `cargo test` shows it) and, after the first, an
/// exit hook that prints how many tests of this binary skipped, below the harness's summary.
fn record_skip() {
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let Ok(mut skipped) = SKIPPED.lock() else {
        return;
    };
    if !skipped.insert(name.clone()) {
        return;
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED (no GPU adapter): {name}");
    if skipped.len() == 1 {
        extern "C" {
            fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
        }
        // SAFETY: `atexit` is the C library's; `report_skips` neither unwinds nor touches
        // thread-local state.
        unsafe { atexit(report_skips) };
    }
}

/// At exit: the count of tests that skipped GPU work.
extern "C" fn report_skips() {
    let n = SKIPPED.lock().map_or(0, |s| s.len());
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {n} GPU test(s) of this binary ran without a GPU adapter and tested nothing on the GPU (CI=true makes that a failure)"
    );
}

/// A small deterministic generator (xorshift64*) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// ‖gpu − ref‖² / ‖ref‖².
pub fn rel_err(gpu: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(gpu.len(), reference.len(), "length mismatch");
    let mut num = 0f64;
    let mut den = 0f64;
    for (g, r) in gpu.iter().zip(reference) {
        num += ((*g - *r) as f64).powi(2);
        den += (*r as f64).powi(2);
    }
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// A buffer filled with NaN bit patterns, so a kernel that skips an output is caught.
pub fn poisoned(ctx: &GpuContext, n_f32: usize) -> wgpu::Buffer {
    ctx.storage_with("poisoned", &vec![0x7fc0_0000u32; n_f32.max(1)])
}

/// Canonical bytes of a random `[rows, cols]` matrix in `format` (quantized normals).
pub fn random_canonical(
    format: super::WeightFormat,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    let rb = format.row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    for row in out.chunks_exact_mut(rb) {
        format.quantize_row(&rng.normals(cols, 0.5), row);
    }
    out
}

/// A random `[rows, cols]` matrix uploaded in `format` (`group_rows` together, pages of at
/// most `page_bytes`, tiles of at most `max_tile` rows) and its values as the GPU must see
/// them.
pub fn random_matrix(
    ctx: &GpuContext,
    format: super::WeightFormat,
    (rows, cols): (usize, usize),
    (group_rows, page_bytes, max_tile): (usize, Option<u64>, usize),
    rng: &mut Rng,
) -> (super::WeightTensor, Vec<f32>) {
    let canonical = random_canonical(format, rows, cols, rng);
    let rb = format.row_bytes(cols);
    let seen = canonical
        .chunks_exact(rb)
        .flat_map(|r| format.dequant_row(r, cols))
        .collect();
    let paging = super::Paging {
        group_rows,
        page_bytes,
        max_tile,
    };
    let t = super::upload_canonical(ctx, format, (rows, cols), paging, &canonical).expect("upload");
    (t, seen)
}

/// A column count for `format` near `want`: `want` itself for float formats, else the nearest
/// multiple of the block size (at least one block).
pub fn cols_for(format: super::WeightFormat, want: usize) -> usize {
    let b = format.block_elems();
    (want.div_ceil(b) * b).max(b)
}
