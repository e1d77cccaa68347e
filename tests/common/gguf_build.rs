//! A GGUF writer for crafted files: any metadata, F32 tensors (zeros) at offsets that may be
//! overridden, and a complete tiny LFM2 model to perturb one field at a time.

#![allow(dead_code)] // each test binary uses its own part

/// A metadata value.
#[derive(Clone, Debug)]
pub enum V {
    Str(String),
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// An array of `(element type id, elements)`.
    Arr(u32, Vec<V>),
}

impl V {
    fn type_id(&self) -> u32 {
        match self {
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) => 8,
            V::Arr(..) => 9,
            V::U64(_) => 10,
            V::F64(_) => 12,
        }
    }

    fn write(&self, b: &mut Vec<u8>) {
        match self {
            V::Str(s) => write_str(b, s),
            V::U32(x) => b.extend(x.to_le_bytes()),
            V::U64(x) => b.extend(x.to_le_bytes()),
            V::I32(x) => b.extend(x.to_le_bytes()),
            V::F32(x) => b.extend(x.to_le_bytes()),
            V::F64(x) => b.extend(x.to_le_bytes()),
            V::Bool(x) => b.push(*x as u8),
            V::Arr(t, xs) => {
                b.extend(t.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                for x in xs {
                    x.write(b);
                }
            }
        }
    }

    pub fn strs(xs: &[&str]) -> V {
        V::Arr(8, xs.iter().map(|s| V::Str(s.to_string())).collect())
    }

    pub fn u32s(xs: &[u32]) -> V {
        V::Arr(4, xs.iter().map(|&x| V::U32(x)).collect())
    }
}

fn write_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// One tensor: name, `ne` (ggml order), ggml type (F32 = 0 has zeros as data, other types
/// none), and an offset overriding the packed one.
#[derive(Clone, Debug)]
pub struct T {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: u32,
    pub offset: Option<u64>,
}

/// A GGUF file to build.
#[derive(Clone, Debug, Default)]
pub struct Gguf {
    pub kvs: Vec<(String, V)>,
    pub tensors: Vec<T>,
}

impl Gguf {
    /// Sets `key` (replacing it where present).
    pub fn set(&mut self, key: &str, v: V) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_string(), v));
        self
    }

    pub fn tensor(&mut self, name: &str, ne: &[u64]) -> &mut Self {
        self.typed(name, ne, 0)
    }

    pub fn typed(&mut self, name: &str, ne: &[u64], ty: u32) -> &mut Self {
        self.tensors.push(T {
            name: name.to_string(),
            ne: ne.to_vec(),
            ty,
            offset: None,
        });
        self
    }

    /// The file's bytes: version 3, alignment 32, tensors packed in order (one with an offset
    /// given lies there instead), data zeros up to the end of the furthest tensor.
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            write_str(&mut b, k);
            b.extend(v.type_id().to_le_bytes());
            v.write(&mut b);
        }
        let (mut next, mut end) = (0u64, 0u64);
        for t in &self.tensors {
            write_str(&mut b, &t.name);
            b.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.ty.to_le_bytes());
            let offset = t.offset.unwrap_or(next);
            b.extend(offset.to_le_bytes());
            let bytes = match t.ty {
                0 => t.ne.iter().product::<u64>() * 4,
                _ => 0,
            };
            if t.offset.is_none() {
                next = (offset + bytes).div_ceil(32) * 32;
            }
            end = end.max(offset + bytes);
        }
        b.resize(b.len().div_ceil(32) * 32 + end as usize, 0);
        b
    }

    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// A complete dense LFM2 (`lfm2`): hidden 16, layers conv then attention, 4 heads (2 KV),
/// FFN 32, vocabulary 12 with a byte-level BPE tokenizer in its metadata.
pub fn tiny_lfm2() -> Gguf {
    let (h, f, v, hd) = (16u64, 32u64, 12u64, 4u64);
    let mut g = Gguf::default();
    g.set("general.architecture", V::Str("lfm2".into()))
        .set("lfm2.block_count", V::U32(2))
        .set("lfm2.context_length", V::U32(128))
        .set("lfm2.embedding_length", V::U32(h as u32))
        .set("lfm2.feed_forward_length", V::U32(f as u32))
        .set("lfm2.attention.head_count", V::U32(4))
        .set("lfm2.attention.head_count_kv", V::u32s(&[0, 2]))
        .set("lfm2.rope.freq_base", V::F32(1e6))
        .set("lfm2.attention.layer_norm_rms_epsilon", V::F32(1e-5))
        .set("lfm2.shortconv.l_cache", V::U32(3))
        .set("lfm2.vocab_size", V::U32(v as u32))
        .set("tokenizer.ggml.model", V::Str("gpt2".into()))
        .set("tokenizer.ggml.pre", V::Str("lfm2".into()))
        .set(
            "tokenizer.ggml.tokens",
            V::strs(&[
                "<pad>", "<bos>", "a", "b", "c", "Ġ", "ab", "abc", "Ġa", "Ġab", "d", "<eos>",
            ]),
        )
        .set(
            "tokenizer.ggml.token_type",
            V::Arr(5, [3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3].map(V::I32).to_vec()),
        )
        .set(
            "tokenizer.ggml.merges",
            V::strs(&["a b", "ab c", "Ġ a", "Ġa b"]),
        )
        .set("tokenizer.ggml.bos_token_id", V::U32(1))
        .set("tokenizer.ggml.eos_token_id", V::U32(11))
        .set("tokenizer.ggml.add_bos_token", V::Bool(true));
    g.tensor("token_embd.weight", &[h, v])
        .tensor("token_embd_norm.weight", &[h]);
    for i in 0..2 {
        let n = |s: &str| format!("blk.{i}.{s}");
        g.tensor(&n("attn_norm.weight"), &[h])
            .tensor(&n("ffn_norm.weight"), &[h])
            .tensor(&n("ffn_gate.weight"), &[h, f])
            .tensor(&n("ffn_up.weight"), &[h, f])
            .tensor(&n("ffn_down.weight"), &[f, h]);
        if i == 0 {
            g.tensor(&n("shortconv.in_proj.weight"), &[h, 3 * h])
                .tensor(&n("shortconv.conv.weight"), &[3, h])
                .tensor(&n("shortconv.out_proj.weight"), &[h, h]);
        } else {
            g.tensor(&n("attn_q.weight"), &[h, 4 * hd])
                .tensor(&n("attn_k.weight"), &[h, 2 * hd])
                .tensor(&n("attn_v.weight"), &[h, 2 * hd])
                .tensor(&n("attn_output.weight"), &[4 * hd, h])
                .tensor(&n("attn_q_norm.weight"), &[hd])
                .tensor(&n("attn_k_norm.weight"), &[hd]);
        }
    }
    g
}
