//! `wmoe synth`: random-weight checkpoints with the real shapes of the LFM2 family
//! (MODEL-SPEC §1.2), written streaming and quantized directly, so an 8B-class model is
//! never held in memory. Values are uniform with std 1/√fan_in (embeddings std 1, norms 1),
//! reproducible from the seed, and independent of write order.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::config::Config;
use super::weights::{QuantPlan, Role};
use super::writer::{
    is_gguf, write_directory, write_gguf_checkpoint, write_safetensors, OutTensor,
};
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// Preset names `synth_config` knows.
pub const PRESETS: [&str; 6] = [
    "lfm2-8b-a1b",
    "lfm2.5-8b-a1b",
    "lfm2-2.6b",
    "lfm2-1.2b",
    "lfm2-350m",
    "test-256",
];

fn layer_types(n: usize, attn: &[usize]) -> Vec<&'static str> {
    (0..n)
        .map(|i| {
            if attn.contains(&i) {
                "full_attention"
            } else {
                "conv"
            }
        })
        .collect()
}

/// The `config.json` of a preset, cut to `layers` layers when given (the real layer pattern's
/// first `layers` entries, dense leading layers kept; when those hold no attention layer, the
/// last of them is made one, so `--layers 1` or `2` still has a KV cache).
pub fn synth_config(preset: &str, layers: Option<usize>) -> Result<Value> {
    let moe = |vocab: usize, theta: f64| {
        json!({"model_type": "lfm2_moe", "architectures": ["Lfm2MoeForCausalLM"], "vocab_size": vocab, "hidden_size": 2048,
            "num_hidden_layers": 24, "layer_types": layer_types(24, &[2, 6, 10, 14, 18, 21]), "num_attention_heads": 32,
            "num_key_value_heads": 8, "intermediate_size": 7168, "moe_intermediate_size": 1792, "num_experts": 32,
            "num_experts_per_tok": 4, "num_dense_layers": 2, "use_expert_bias": true, "norm_topk_prob": true,
            "routed_scaling_factor": 1.0, "rope_parameters": {"rope_theta": theta, "rope_type": "default"}})
    };
    let dense = |h: usize, n: usize, attn: &[usize], heads: usize, ffn: usize| {
        json!({"model_type": "lfm2", "architectures": ["Lfm2ForCausalLM"], "vocab_size": 65536, "hidden_size": h,
            "num_hidden_layers": n, "layer_types": layer_types(n, attn), "num_attention_heads": heads, "num_key_value_heads": 8,
            "intermediate_size": ffn, "block_auto_adjust_ff_dim": false, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}})
    };
    let mut cfg = match preset {
        "lfm2-8b-a1b" => moe(65536, 1e6),
        "lfm2.5-8b-a1b" => moe(128000, 5e6),
        "lfm2-2.6b" => dense(2048, 30, &[2, 5, 9, 13, 17, 21, 24, 27], 32, 10752),
        "lfm2-1.2b" => dense(2048, 16, &[2, 5, 8, 10, 12, 14], 32, 8192),
        "lfm2-350m" => dense(1024, 16, &[2, 5, 8, 10, 12, 14], 16, 4608),
        // Small, every dimension a multiple of 256 so every quantized format applies (tests).
        "test-256" => {
            json!({"model_type": "lfm2_moe", "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 4,
            "layer_types": ["conv", "full_attention", "conv", "full_attention"], "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 512, "moe_intermediate_size": 256, "num_experts": 8,
            "num_experts_per_tok": 2, "num_dense_layers": 1, "use_expert_bias": true, "norm_topk_prob": true,
            "routed_scaling_factor": 1.0, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}})
        }
        other => {
            return Err(Error::Input(format!(
                "unknown preset '{other}'; choose one of {}",
                PRESETS.join(", ")
            )))
        }
    };
    let common = json!({"norm_eps": 1e-5, "conv_L_cache": 3, "conv_bias": false, "max_position_embeddings": 128000,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 7, "pad_token_id": 0});
    for (k, v) in common.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    if let Some(n) = layers {
        let total = cfg["num_hidden_layers"].as_u64().unwrap_or(0) as usize;
        if n == 0 || n > total {
            return Err(Error::Input(format!(
                "--layers must be 1..={total} for {preset}"
            )));
        }
        cfg["num_hidden_layers"] = json!(n);
        let mut types: Vec<Value> =
            cfg["layer_types"].as_array().expect("layer_types")[..n].to_vec();
        // A cut before the first attention layer (LFM2's is layer 2) would leave no KV cache,
        // which llama.cpp cannot load: the last kept layer becomes attention instead.
        if !types.iter().any(|t| t == "full_attention") {
            types[n - 1] = json!("full_attention");
        }
        cfg["layer_types"] = Value::Array(types);
    }
    Ok(cfg)
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy)]
enum Fill {
    /// Uniform with std `s`.
    Uniform(f32),
    Ones,
}

/// One tensor to write: name, shape, quantization role and fill.
type Tensor = (String, Vec<usize>, Option<Role>, Fill);

/// Every tensor of `cfg` with its shape, role and fill.
fn tensor_list(cfg: &Config) -> Vec<Tensor> {
    let h = cfg.hidden;
    let mut v: Vec<Tensor> = vec![
        (
            "model.embed_tokens.weight".into(),
            vec![cfg.vocab, h],
            Some(Role::Embedding),
            Fill::Uniform(1.0),
        ),
        (
            "model.embedding_norm.weight".into(),
            vec![h],
            None,
            Fill::Ones,
        ),
    ];
    for i in 0..cfg.n_layers {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        v.push((n("operator_norm.weight"), vec![h], None, Fill::Ones));
        v.push((n("ffn_norm.weight"), vec![h], None, Fill::Ones));
        if cfg.attention[i] {
            attention_tensors(cfg, &n, &mut v);
        } else {
            conv_tensors(cfg, &n, &mut v);
        }
        match cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(i)) {
            None => {
                let ffn = ("feed_forward", cfg.ffn);
                swiglu_tensors(h, ffn, [Role::FfnGateUp, Role::FfnDown], &n, &mut v);
            }
            Some(m) => {
                let router = Fill::Uniform(4.0 / (h as f32).sqrt());
                v.push((
                    n("feed_forward.gate.weight"),
                    vec![m.n_experts, h],
                    None,
                    router,
                ));
                let bias = Fill::Uniform(0.05);
                v.push((n("feed_forward.expert_bias"), vec![m.n_experts], None, bias));
                for e in 0..m.n_experts {
                    let expert = format!("feed_forward.experts.{e}");
                    let roles = [Role::ExpertGateUp, Role::ExpertDown];
                    swiglu_tensors(h, (&expert, m.ffn), roles, &n, &mut v);
                }
            }
        }
    }
    v
}

/// Uniform weights scaled for `fan_in` inputs.
fn scaled(fan_in: usize) -> Fill {
    Fill::Uniform(1.0 / (fan_in as f32).sqrt())
}

/// An attention layer's projections and q/k norms (`n` names a tensor of the layer).
fn attention_tensors(cfg: &Config, n: &dyn Fn(&str) -> String, v: &mut Vec<Tensor>) {
    let (h, hd) = (cfg.hidden, cfg.head_dim);
    let (nq, nkv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
    for (name, rows) in [("q_proj", nq), ("k_proj", nkv), ("v_proj", nkv)] {
        let name = n(&format!("self_attn.{name}.weight"));
        v.push((name, vec![rows, h], Some(Role::AttnQkv), scaled(h)));
    }
    let out = n("self_attn.out_proj.weight");
    v.push((out, vec![h, nq], Some(Role::AttnOut), scaled(nq)));
    for norm in ["q_layernorm", "k_layernorm"] {
        let name = n(&format!("self_attn.{norm}.weight"));
        v.push((name, vec![hd], None, Fill::Ones));
    }
}

/// A short-conv layer's projections and conv kernel.
fn conv_tensors(cfg: &Config, n: &dyn Fn(&str) -> String, v: &mut Vec<Tensor>) {
    let h = cfg.hidden;
    let in_proj = n("conv.in_proj.weight");
    v.push((in_proj, vec![3 * h, h], Some(Role::ConvIn), scaled(h)));
    let kernel = vec![h, 1, cfg.conv_taps];
    v.push((n("conv.conv.weight"), kernel, None, Fill::Uniform(0.5)));
    let out_proj = n("conv.out_proj.weight");
    v.push((out_proj, vec![h, h], Some(Role::ConvOut), scaled(h)));
}

/// A SwiGLU block's w1 / w3 (gate, up: `roles[0]`) and w2 (down: `roles[1]`) under `prefix`
/// with hidden width `ffn`.
fn swiglu_tensors(
    h: usize,
    (prefix, ffn): (&str, usize),
    roles: [Role; 2],
    n: &dyn Fn(&str) -> String,
    v: &mut Vec<Tensor>,
) {
    for w in ["w1", "w3"] {
        let name = n(&format!("{prefix}.{w}.weight"));
        v.push((name, vec![ffn, h], Some(roles[0]), scaled(h)));
    }
    let down = n(&format!("{prefix}.w2.weight"));
    v.push((down, vec![h, ffn], Some(roles[1]), scaled(ffn)));
}

/// Deterministic row values: an xorshift stream seeded by (seed, tensor, row).
fn row_values(seed: u64, tensor: usize, row: usize, fill: Fill, out: &mut [f32]) {
    match fill {
        Fill::Ones => out.fill(1.0),
        Fill::Uniform(std) => {
            let mut s = (seed
                ^ (tensor as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (row as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
                | 1;
            let a = std * 3f32.sqrt();
            for v in out.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *v = ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a;
            }
        }
    }
}

/// Tensor `i`'s rows in its storage format, split over the machine's cores (each row's values
/// depend only on seed, tensor and row, so the bytes do not depend on the split).
fn tensor_bytes(seed: u64, i: usize, out: &OutTensor, fill: Fill) -> Vec<u8> {
    let (rows, cols) = (out.rows(), out.cols());
    let row_bytes = out.format.row_bytes(cols);
    let mut bytes = vec![0u8; rows * row_bytes];
    let rows_of = |first: usize, chunk: &mut [u8]| {
        let mut vals = vec![0f32; cols];
        for (k, dst) in chunk.chunks_mut(row_bytes).enumerate() {
            row_values(seed, i, first + k, fill, &mut vals);
            out.format.quantize_row(&vals, dst);
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = rows.div_ceil(threads.min(rows).max(1));
    if threads == 1 || rows < 2 {
        rows_of(0, &mut bytes);
    } else {
        std::thread::scope(|s| {
            for (c, chunk) in bytes.chunks_mut(per * row_bytes).enumerate() {
                s.spawn(move || rows_of(c * per, chunk));
            }
        });
    }
    bytes
}

/// Writes a random checkpoint for `config` into the new directory `out` (or the new GGUF
/// file `out` when it ends in `.gguf`, llama.cpp's layout). Matrices take the plan's formats
/// (bf16 without a plan or where a format does not fit); the rest is f32.
pub fn synth(
    out: &Path,
    config: &Value,
    plan: Option<QuantPlan>,
    seed: u64,
    progress: bool,
) -> Result<u64> {
    let cfg = Config::from_json(config, &out.join("config.json"))?;
    let list = tensor_list(&cfg);
    let outs: Vec<OutTensor> = list
        .iter()
        .map(|(name, shape, role, _)| {
            let cols = *shape.last().expect("non-empty shape");
            let format = match role {
                Some(r) => plan
                    .and_then(|p| p.target(*r, cols))
                    .unwrap_or(WeightFormat::Bf16),
                None => WeightFormat::F32,
            };
            OutTensor {
                name: name.clone(),
                shape: shape.clone(),
                format,
            }
        })
        .collect();
    let total: u64 = outs.iter().map(|o| o.bytes() as u64).sum();
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("writing {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The writers ask row by row; each tensor is made whole on every core at its first row.
    let mut made: (usize, Vec<u8>) = (usize::MAX, Vec::new());
    let fill = |i: usize, r: usize, dst: &mut [u8]| {
        if made.0 != i {
            made = (i, tensor_bytes(seed, i, &outs[i], list[i].3));
        }
        dst.copy_from_slice(&made.1[r * dst.len()..(r + 1) * dst.len()]);
        bar.inc(dst.len() as u64);
        Ok(())
    };
    if is_gguf(out) {
        let name = format!("wmoe synth seed {seed}");
        write_gguf_checkpoint(out, (&cfg, plan), &name, None, &outs, fill)?;
    } else {
        write_directory(out, |tmp| {
            write_safetensors(&tmp.join("model.safetensors"), &outs, fill)?;
            let text = serde_json::to_string_pretty(config).expect("json");
            std::fs::write(tmp.join("config.json"), text)
                .map_err(|e| Error::file(tmp, format!("cannot write config.json: {e}")))
        })?;
    }
    bar.finish_and_clear();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::synth_config;

    fn types(layers: Option<usize>) -> Vec<String> {
        let cfg = synth_config("lfm2-8b-a1b", layers).unwrap();
        let t = cfg["layer_types"].as_array().unwrap();
        t.iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn a_cut_keeps_the_real_pattern_or_ends_in_attention() {
        let full = types(None);
        assert_eq!(full.len(), 24);
        // Cuts that reach layer 2 (the first attention layer) keep the real pattern.
        for n in [3, 8, 24] {
            assert_eq!(types(Some(n)), full[..n], "--layers {n}");
        }
        assert_eq!(types(Some(2)), ["conv", "full_attention"]);
        assert_eq!(types(Some(1)), ["full_attention"]);
    }
}
