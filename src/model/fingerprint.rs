//! A checkpoint's fingerprint: a 64-bit FNV-1a hash of its config and of every tensor's name,
//! format, shape and sampled bytes (start, middle and end), cheap to compute at load and
//! different for models of the same shapes whose weights differ (a fine-tune, another
//! version). Saved sessions record it so a session is never restored into another model.

use super::source::TensorData;
use super::{Config, TensorSource};
use crate::error::Result;

/// Bytes hashed from each of a tensor's start, middle and end.
const SAMPLE: usize = 4096;

/// FNV-1a, 64 bits.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The fingerprint of the checkpoint `src` with config `cfg`.
pub fn fingerprint(cfg: &Config, src: &dyn TensorSource) -> Result<u64> {
    let mut h = Fnv::default();
    h.bytes(cfg.model_type.as_bytes())
        .u64(cfg.hidden as u64)
        .u64(cfg.n_layers as u64)
        .u64(cfg.vocab as u64)
        .u64(cfg.rope_theta.to_bits())
        .u64(cfg.norm_eps.to_bits() as u64);
    for name in src.names() {
        let t = src.get(&name)?;
        h.bytes(name.as_bytes()).bytes(t.format.name().as_bytes());
        for &d in &t.shape {
            h.u64(d as u64);
        }
        let bytes = match t.data {
            TensorData::Bytes(b) => b,
            // a file read in ranges: where the tensor is stands for its bytes (sampling
            // them would cost three requests per tensor)
            TensorData::Range { offset, len } => {
                h.u64(offset).u64(len as u64);
                continue;
            }
        };
        let n = bytes.len();
        let mid = n / 2;
        for range in [
            0..n.min(SAMPLE),
            mid..(mid + SAMPLE).min(n),
            n.saturating_sub(SAMPLE)..n,
        ] {
            h.bytes(&bytes[range]);
        }
    }
    Ok(h.finish())
}
