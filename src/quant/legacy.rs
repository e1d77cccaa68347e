//! GGUF's 32-element blocks: q8_0, q4_0 and q5_0 (an f16 scale d, symmetric quants) and q4_1
//! and q5_1 (an f16 scale d and min m). 4-bit quants pack element j in the low nibble of byte
//! j and element j + 16 in its high nibble; q5's fifth bits are one little-endian word.

use super::{decode_blocks, encode_blocks, get_f16, put_f16, signed_absmax, Codec};

/// `[d: f16][32 × i8]`.
pub(super) const Q8_0: Codec = Codec {
    name: "q8_0",
    block_elems: 32,
    block_bytes: 34,
    quantize: quantize_q8_0,
    dequantize: dequantize_q8_0,
};

fn quantize_q8_0(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 32], blk: &mut [u8; 34]| {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(blk, d);
        for (q, v) in blk[2..34].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    });
}

fn dequantize_q8_0(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 34], out| {
        out.extend(blk[2..34].iter().map(|&q| get_f16(blk, 0) * q as i8 as f32));
    });
}

/// `[d: f16][16 bytes of nibbles]`, weights (q − 8) · d.
pub(super) const Q4_0: Codec = Codec {
    name: "q4_0",
    block_elems: 32,
    block_bytes: 18,
    quantize: quantize_q4_0,
    dequantize: dequantize_q4_0,
};

fn quantize_q4_0(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 32], blk: &mut [u8; 18]| {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(blk, d);
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            blk[2 + j] = q(x[j]) | q(x[j + 16]) << 4;
        }
    });
}

fn dequantize_q4_0(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 18], out| {
        let d = get_f16(blk, 0);
        out.extend(blk[2..18].iter().map(|&q| ((q & 15) as f32 - 8.0) * d));
        out.extend(blk[2..18].iter().map(|&q| ((q >> 4) as f32 - 8.0) * d));
    });
}

/// `[d: f16][m: f16][16 bytes of nibbles]`, weights q · d + m.
pub(super) const Q4_1: Codec = Codec {
    name: "q4_1",
    block_elems: 32,
    block_bytes: 20,
    quantize: quantize_q4_1,
    dequantize: dequantize_q4_1,
};

fn quantize_q4_1(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 32], blk: &mut [u8; 20]| {
        let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
        let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
        let d = (hi - lo) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(&mut blk[0..2], d);
        put_f16(&mut blk[2..4], lo);
        let q = |v: f32| (((v - lo) * id + 0.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            blk[4 + j] = q(x[j]) | q(x[j + 16]) << 4;
        }
    });
}

fn dequantize_q4_1(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 20], out| {
        let (d, m) = (get_f16(blk, 0), get_f16(blk, 2));
        out.extend(blk[4..20].iter().map(|&q| (q & 15) as f32 * d + m));
        out.extend(blk[4..20].iter().map(|&q| (q >> 4) as f32 * d + m));
    });
}

/// `[d: f16][fifth bits: u32][16 bytes of nibbles]`, weights (q − 16) · d.
pub(super) const Q5_0: Codec = Codec {
    name: "q5_0",
    block_elems: 32,
    block_bytes: 22,
    quantize: quantize_q5_0,
    dequantize: dequantize_q5_0,
};

fn quantize_q5_0(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 32], blk: &mut [u8; 22]| {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(blk, d);
        let q = |v: f32| ((v * id + 16.5) as i32).clamp(0, 31) as u32;
        let mut qh = 0u32;
        for j in 0..16 {
            let (a, b) = (q(x[j]), q(x[j + 16]));
            blk[6 + j] = (a & 15) as u8 | ((b & 15) as u8) << 4;
            qh |= (a >> 4) << j | (b >> 4) << (j + 16);
        }
        blk[2..6].copy_from_slice(&qh.to_le_bytes());
    });
}

fn dequantize_q5_0(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 22], out| {
        let d = get_f16(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        for e in 0..32 {
            let byte = blk[6 + e % 16];
            let lo = if e < 16 { byte & 15 } else { byte >> 4 } as u32;
            let q = lo | ((qh >> e) & 1) << 4;
            out.push((q as f32 - 16.0) * d);
        }
    });
}

/// `[d: f16][m: f16][fifth bits: u32][16 bytes of nibbles]`, weights q · d + m.
pub(super) const Q5_1: Codec = Codec {
    name: "q5_1",
    block_elems: 32,
    block_bytes: 24,
    quantize: quantize_q5_1,
    dequantize: dequantize_q5_1,
};

fn quantize_q5_1(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 32], blk: &mut [u8; 24]| {
        let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
        let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
        let d = (hi - lo) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(&mut blk[0..2], d);
        put_f16(&mut blk[2..4], lo);
        let q = |v: f32| (((v - lo) * id + 0.5) as i32).clamp(0, 31) as u32;
        let mut qh = 0u32;
        for j in 0..16 {
            let (a, b) = (q(x[j]), q(x[j + 16]));
            blk[8 + j] = (a & 15) as u8 | ((b & 15) as u8) << 4;
            qh |= (a >> 4) << j | (b >> 4) << (j + 16);
        }
        blk[4..8].copy_from_slice(&qh.to_le_bytes());
    });
}

fn dequantize_q5_1(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 24], out| {
        let (d, m) = (get_f16(blk, 0), get_f16(blk, 2));
        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
        for e in 0..32 {
            let byte = blk[8 + e % 16];
            let lo = if e < 16 { byte & 15 } else { byte >> 4 } as u32;
            out.push((lo | ((qh >> e) & 1) << 4) as f32 * d + m);
        }
    });
}
