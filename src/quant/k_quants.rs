//! GGUF's k-quants, super-blocks of 256 elements: q4_K and q5_K (f16 d and dmin, eight
//! 32-element sub-blocks with 6-bit scales and mins, 4- or 5-bit quants) and q6_K (sixteen
//! 16-element groups with int8 scales, 6-bit quants split into low nibbles and high pairs,
//! f16 d last).

use half::f16;

use super::{decode_blocks, encode_blocks, get_f16, put_f16, signed_absmax, Codec};

/// `[d: f16][dmin: f16][12 scale bytes][128 bytes of nibbles]`.
pub(super) const Q4_K: Codec = Codec {
    name: "q4_k",
    block_elems: 256,
    block_bytes: 144,
    quantize: quantize_q4_k,
    dequantize: dequantize_q4_k,
};

fn quantize_q4_k(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 256], blk: &mut [u8; 144]| {
        quantize_k(x, blk, 4)
    });
}

fn dequantize_q4_k(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 144], out| dequantize_k(blk, 4, out));
}

/// `[d: f16][dmin: f16][12 scale bytes][32 bytes of fifth bits][128 bytes of nibbles]`.
pub(super) const Q5_K: Codec = Codec {
    name: "q5_k",
    block_elems: 256,
    block_bytes: 176,
    quantize: quantize_q5_k,
    dequantize: dequantize_q5_k,
};

fn quantize_q5_k(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, |x: &[f32; 256], blk: &mut [u8; 176]| {
        quantize_k(x, blk, 5)
    });
}

fn dequantize_q5_k(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 176], out| dequantize_k(blk, 5, out));
}

/// The 6-bit (scale, min) of sub-block `is` from a k-quant's 12 packed scale bytes.
fn k_scale_min(s: &[u8], is: usize) -> (u8, u8) {
    if is < 4 {
        (s[is] & 63, s[is + 4] & 63)
    } else {
        (
            (s[is + 4] & 15) | ((s[is - 4] >> 6) << 4),
            (s[is + 4] >> 4) | ((s[is] >> 6) << 4),
        )
    }
}

/// One q4_K (`bits` 4) or q5_K (`bits` 5) block.
fn quantize_k(x: &[f32], blk: &mut [u8], bits: u32) {
    // Per 32-element sub-block: scale = (max − min) / (2^bits − 1) and offset −min (min ≤ 0);
    // both quantized to 6 bits against the super-block's d and dmin.
    let levels = ((1u32 << bits) - 1) as f32;
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for (i, sub) in x.chunks_exact(32).enumerate() {
        let lo = sub.iter().fold(0f32, |m, &v| m.min(v));
        let hi = sub.iter().fold(f32::MIN, |m, &v| m.max(v));
        scales[i] = (hi - lo) / levels;
        mins[i] = -lo;
    }
    let d = scales.iter().fold(0f32, |m, &v| m.max(v)) / 63.0;
    let dmin = mins.iter().fold(0f32, |m, &v| m.max(v)) / 63.0;
    let (d16, dmin16) = (f16::from_f32(d).to_f32(), f16::from_f32(dmin).to_f32());
    put_f16(&mut blk[0..2], d);
    put_f16(&mut blk[2..4], dmin);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for i in 0..8 {
        sc[i] = if d16 > 0.0 {
            (scales[i] / d16).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
        mn[i] = if dmin16 > 0.0 {
            (mins[i] / dmin16).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
    }
    let s = &mut blk[4..16];
    for j in 0..4 {
        s[j] = sc[j] | (sc[j + 4] >> 4) << 6;
        s[j + 4] = mn[j] | (mn[j + 4] >> 4) << 6;
        s[j + 8] = (sc[j + 4] & 15) | (mn[j + 4] & 15) << 4;
    }
    let mut q = [0u8; 256];
    for (j, v) in x.iter().enumerate() {
        let i = j / 32;
        let step = d16 * sc[i] as f32;
        let off = dmin16 * mn[i] as f32;
        q[j] = if step > 0.0 {
            ((v + off) / step).round().clamp(0.0, levels) as u8
        } else {
            0
        };
    }
    let qs0 = if bits == 5 { 48 } else { 16 };
    if bits == 5 {
        blk[16..48].fill(0);
    }
    for c in 0..4 {
        for l in 0..32 {
            let (a, b) = (q[c * 64 + l], q[c * 64 + 32 + l]);
            blk[qs0 + c * 32 + l] = (a & 15) | (b & 15) << 4;
            if bits == 5 {
                blk[16 + l] |= (a >> 4) << (2 * c) | (b >> 4) << (2 * c + 1);
            }
        }
    }
}

/// One q4_K (`bits` 4) or q5_K (`bits` 5) block.
fn dequantize_k(blk: &[u8], bits: u32, out: &mut Vec<f32>) {
    let (d, dmin) = (get_f16(blk, 0), get_f16(blk, 2));
    let scales = &blk[4..16];
    let (qh, qs) = if bits == 5 {
        (&blk[16..48], &blk[48..176])
    } else {
        (&blk[..0], &blk[16..144])
    };
    for j in 0..256 {
        let (c, l) = (j / 64, j % 64);
        let (sc, m) = k_scale_min(scales, 2 * c + usize::from(l >= 32));
        let byte = qs[c * 32 + l % 32];
        let mut q = if l < 32 { byte & 15 } else { byte >> 4 } as u32;
        if bits == 5 {
            let u = if l < 32 {
                1u8 << (2 * c)
            } else {
                2u8 << (2 * c)
            };
            q += if qh[l % 32] & u != 0 { 16 } else { 0 };
        }
        out.push(d * sc as f32 * q as f32 - dmin * m as f32);
    }
}

/// `[128 bytes of low nibbles][64 bytes of high pairs][16 × i8 scales][d: f16]`.
pub(super) const Q6_K: Codec = Codec {
    name: "q6_k",
    block_elems: 256,
    block_bytes: 210,
    quantize: quantize_q6_k,
    dequantize: dequantize_q6_k,
};

fn quantize_q6_k(vals: &[f32], dst: &mut [u8]) {
    encode_blocks(vals, dst, quantize_q6_k_block);
}

fn quantize_q6_k_block(x: &[f32; 256], blk: &mut [u8; 210]) {
    // Per 16-element group: scale = signed absmax / −32 so values map to −32..31; the group
    // scales are int8 against the super-block's d.
    let mut gs = [0f32; 16];
    for (g, sub) in x.chunks_exact(16).enumerate() {
        gs[g] = signed_absmax(sub) / -32.0;
    }
    let amax = gs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let d16 = f16::from_f32(d).to_f32();
    let mut sc = [0i8; 16];
    for g in 0..16 {
        sc[g] = if d16 > 0.0 {
            (gs[g] / d16).round().clamp(-128.0, 127.0) as i8
        } else {
            0
        };
    }
    let mut q = [0u8; 256];
    for (j, v) in x.iter().enumerate() {
        let step = d16 * sc[j / 16] as f32;
        q[j] = if step != 0.0 {
            ((v / step).round().clamp(-32.0, 31.0) + 32.0) as u8
        } else {
            32
        };
    }
    let (ql, rest) = blk.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (scales, dd) = rest.split_at_mut(16);
    for n in 0..2 {
        for l in 0..32 {
            let b = n * 128 + l;
            let (q1, q2, q3, q4) = (q[b], q[b + 32], q[b + 64], q[b + 96]);
            ql[n * 64 + l] = (q1 & 15) | (q3 & 15) << 4;
            ql[n * 64 + l + 32] = (q2 & 15) | (q4 & 15) << 4;
            qh[n * 32 + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6;
        }
    }
    for g in 0..16 {
        scales[g] = sc[g] as u8;
    }
    put_f16(dd, d);
}

fn dequantize_q6_k(src: &[u8], out: &mut Vec<f32>) {
    decode_blocks(src, out, |blk: &[u8; 210], out| {
        let d = get_f16(blk, 208);
        let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
        for j in 0..256 {
            let (n, r) = (j / 128, j % 128);
            let (quarter, l) = (r / 32, r % 32);
            let byte = ql[n * 64 + l + 32 * (quarter & 1)];
            let lo = if quarter < 2 { byte & 15 } else { byte >> 4 };
            let hi = (qh[n * 32 + l] >> (2 * quarter)) & 3;
            let q = (lo | hi << 4) as i32 - 32;
            out.push(d * sc[n * 8 + l / 16 + 2 * quarter] as i8 as f32 * q as f32);
        }
    });
}
