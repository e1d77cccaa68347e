//! What LFM2 is called in GGUF: the architecture names and the GGUF <-> Hugging Face tensor
//! names (MODEL-SPEC §5).

use super::file::GgufFile;
use crate::error::{Error, Result};

/// The architectures wmoe runs: LFM2 (dense) and LFM2-MoE.
pub const ARCHITECTURES: [&str; 2] = ["lfm2", "lfm2moe"];

/// GGUF ↔ Hugging Face names outside the blocks. `token_embd_norm` is LFM2's *final* norm
/// (llama.cpp's converter name); Ollama's converter calls it `output_norm`.
pub(super) const TOP_NAMES: [(&str, &str); 4] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("token_embd_norm.weight", "model.embedding_norm.weight"),
    ("output_norm.weight", "model.embedding_norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// GGUF ↔ Hugging Face names inside block `blk.N.` / `model.layers.N.`.
pub(super) const LAYER_NAMES: [(&str, &str); 16] = [
    ("attn_norm.weight", "operator_norm.weight"),
    ("ffn_norm.weight", "ffn_norm.weight"),
    ("shortconv.in_proj.weight", "conv.in_proj.weight"),
    ("shortconv.conv.weight", "conv.conv.weight"),
    ("shortconv.out_proj.weight", "conv.out_proj.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.out_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_layernorm.weight"),
    ("attn_k_norm.weight", "self_attn.k_layernorm.weight"),
    ("ffn_gate.weight", "feed_forward.w1.weight"),
    ("ffn_up.weight", "feed_forward.w3.weight"),
    ("ffn_down.weight", "feed_forward.w2.weight"),
    ("ffn_gate_inp.weight", "feed_forward.gate.weight"),
    ("exp_probs_b.bias", "feed_forward.expert_bias"),
];

/// Stacked expert tensors [E, rows, cols] ↔ per-expert `feed_forward.experts.{e}.{w}.weight`.
pub(super) const EXPERT_NAMES: [(&str, &str); 3] = [
    ("ffn_gate_exps.weight", "w1"),
    ("ffn_up_exps.weight", "w3"),
    ("ffn_down_exps.weight", "w2"),
];

/// The GGUF tensor holding the Hugging Face tensor `hf`, and the expert index when it is one
/// expert's slice of a stacked tensor. `model.embedding_norm.weight` maps to
/// `token_embd_norm.weight` (llama.cpp's name; Ollama's `output_norm.weight` is also read).
pub fn gguf_name(hf: &str) -> Option<(String, Option<usize>)> {
    if let Some((g, _)) = TOP_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((g.to_string(), None));
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some((g, _)) = LAYER_NAMES.iter().find(|(_, h)| *h == rest) {
        return Some((format!("blk.{layer}.{g}"), None));
    }
    let rest = rest.strip_prefix("feed_forward.experts.")?;
    let (e, w) = rest.split_once('.')?;
    let e: usize = e.parse().ok()?;
    let w = w.strip_suffix(".weight")?;
    let (g, _) = EXPERT_NAMES.iter().find(|(_, x)| *x == w)?;
    Some((format!("blk.{layer}.{g}"), Some(e)))
}

/// `general.architecture`, checked to be one wmoe runs.
pub fn lfm2_architecture(g: &GgufFile) -> Result<&str> {
    let arch = g.architecture().ok_or_else(|| {
        Error::file(
            &g.path,
            "no 'general.architecture' metadata: not a llama.cpp model file",
        )
    })?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(Error::file(
            &g.path,
            format!(
                "architecture '{arch}' is not supported: wmoe runs LFM2 ('lfm2') and LFM2-MoE ('lfm2moe') GGUF files"
            ),
        ));
    }
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_gguf_names() {
        assert_eq!(
            gguf_name("model.embed_tokens.weight"),
            Some(("token_embd.weight".into(), None))
        );
        assert_eq!(
            gguf_name("model.layers.3.conv.conv.weight"),
            Some(("blk.3.shortconv.conv.weight".into(), None))
        );
        assert_eq!(
            gguf_name("model.layers.12.feed_forward.experts.31.w2.weight"),
            Some(("blk.12.ffn_down_exps.weight".into(), Some(31)))
        );
        assert_eq!(
            gguf_name("model.layers.0.feed_forward.expert_bias"),
            Some(("blk.0.exp_probs_b.bias".into(), None))
        );
        assert_eq!(gguf_name("model.layers.x.ffn_norm.weight"), None);
    }
}
