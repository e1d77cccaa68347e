//! What LFM2 is called in GGUF: the architecture names and the GGUF <-> Hugging Face tensor
//! names (MODEL-SPEC §5).

use super::file::GgufFile;
use crate::error::{Error, Result};

/// The architectures wmoe runs: LFM2 (dense) and LFM2-MoE.
pub const ARCHITECTURES: [&str; 2] = ["lfm2", "lfm2moe"];

/// GGUF ↔ Hugging Face names outside the blocks. `token_embd_norm` is LFM2's *final* norm
/// (llama.cpp's converter name); Ollama's converter calls it `output_norm`.
const TOP_NAMES: [(&str, &str); 4] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("token_embd_norm.weight", "model.embedding_norm.weight"),
    ("output_norm.weight", "model.embedding_norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// GGUF ↔ Hugging Face names inside block `blk.N.` / `model.layers.N.`.
const LAYER_NAMES: [(&str, &str); 16] = [
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
const EXPERT_NAMES: [(&str, &str); 3] = [
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

/// (N, rest) of the tensor name `blk.N.rest`.
pub(crate) fn block_tensor(name: &str) -> Option<(usize, &str)> {
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, rest))
}

/// What a GGUF tensor holds, in Hugging Face names.
pub(super) enum HfName {
    /// One Hugging Face tensor; `fallback` when another GGUF name for it wins where a file
    /// has both (`output_norm` yields to `token_embd_norm`).
    Tensor { name: String, fallback: bool },
    /// The stacked experts of `layer`'s `w` (`w1`, `w3` or `w2`), one Hugging Face tensor
    /// per expert ([`expert_hf_name`]).
    Experts { layer: usize, w: &'static str },
}

/// What the GGUF tensor `gguf` holds; `None` for a name wmoe does not read.
pub(super) fn hf_name(gguf: &str) -> Option<HfName> {
    if let Some((g, hf)) = TOP_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(HfName::Tensor {
            name: hf.to_string(),
            fallback: *g == "output_norm.weight",
        });
    }
    let (layer, rest) = block_tensor(gguf)?;
    if let Some((_, hf)) = LAYER_NAMES.iter().find(|(g, _)| *g == rest) {
        return Some(HfName::Tensor {
            name: format!("model.layers.{layer}.{hf}"),
            fallback: false,
        });
    }
    let (_, w) = EXPERT_NAMES.iter().find(|(g, _)| *g == rest)?;
    Some(HfName::Experts { layer, w })
}

/// The Hugging Face name of expert `e`'s `w` in `layer`.
pub(super) fn expert_hf_name(layer: usize, e: usize, w: &str) -> String {
    format!("model.layers.{layer}.feed_forward.experts.{e}.{w}.weight")
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

    #[test]
    fn gguf_names_map_back_to_hf_names() {
        for hf in [
            "model.embed_tokens.weight",
            "model.embedding_norm.weight",
            "model.layers.3.conv.conv.weight",
            "model.layers.0.feed_forward.expert_bias",
        ] {
            let (g, _) = gguf_name(hf).unwrap();
            assert!(
                matches!(hf_name(&g), Some(HfName::Tensor { name, fallback: false }) if name == hf),
                "{hf}"
            );
        }
        assert!(matches!(
            hf_name("output_norm.weight"),
            Some(HfName::Tensor { fallback: true, .. })
        ));
        assert!(matches!(
            hf_name("blk.12.ffn_down_exps.weight"),
            Some(HfName::Experts { layer: 12, w: "w2" })
        ));
        assert_eq!(
            expert_hf_name(12, 31, "w2"),
            "model.layers.12.feed_forward.experts.31.w2.weight"
        );
        assert!(hf_name("blk.x.ffn_norm.weight").is_none());
        assert!(hf_name("blk.0.unknown.weight").is_none());
    }
}
