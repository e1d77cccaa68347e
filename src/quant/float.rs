//! f32, f16 and bf16 rows: little-endian values, one after another.

use half::{bf16, f16};

use super::Codec;

pub(super) const F32: Codec = Codec {
    name: "f32",
    block_elems: 1,
    block_bytes: 4,
    quantize: quantize_f32,
    dequantize: dequantize_f32,
};

fn quantize_f32(vals: &[f32], dst: &mut [u8]) {
    dst[..vals.len() * 4].copy_from_slice(bytemuck::cast_slice(vals));
}

fn dequantize_f32(src: &[u8], out: &mut Vec<f32>) {
    out.extend(
        src.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}

pub(super) const F16: Codec = Codec {
    name: "f16",
    block_elems: 1,
    block_bytes: 2,
    quantize: quantize_f16,
    dequantize: dequantize_f16,
};

fn quantize_f16(vals: &[f32], dst: &mut [u8]) {
    for (v, o) in vals.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

fn dequantize_f16(src: &[u8], out: &mut Vec<f32>) {
    out.extend(
        src.chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
    );
}

pub(super) const BF16: Codec = Codec {
    name: "bf16",
    block_elems: 1,
    block_bytes: 2,
    quantize: quantize_bf16,
    dequantize: dequantize_bf16,
};

fn quantize_bf16(vals: &[f32], dst: &mut [u8]) {
    for (v, o) in vals.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
    }
}

fn dequantize_bf16(src: &[u8], out: &mut Vec<f32>) {
    out.extend(
        src.chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
    );
}
