//! An LFM2 checkpoint as llama.cpp's converter writes it to GGUF (the inverse of
//! `config::gguf`, `names` and `tokenizer`): `lfm2` / `lfm2moe` metadata, llama.cpp's tensor
//! names and ggml dimensions (experts stacked, the conv kernel squeezed), and the tokenizer
//! (byte-level BPE tokens, merges, token types, special ids, pre-tokenizer `lfm2`, chat
//! template) when the checkpoint directory has a tokenizer.json, else a placeholder
//! vocabulary so that llama.cpp loads the file.

use std::path::Path;

use serde_json::Value;

use super::names::gguf_name;
use super::tokenizer::LFM2_PRETOKENIZER_REGEX;
use super::write::GgufOutTensor;
use super::GgufValue;
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;
use crate::model::config::Config;
use crate::model::weights::QuantPlan;

/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID`.
const GATING_SIGMOID: u32 = 2;
/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// A tensor as the checkpoint names and shapes it (PyTorch order).
pub struct HfTensor<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub format: WeightFormat,
}

/// The GGUF tensors of `tensors` (in Hugging Face names): each a renamed tensor with its
/// dimensions reversed, the conv kernel [H, 1, L] as [L, H], the experts of a layer stacked
/// into [cols, rows, E] in expert order. `path` names the output in errors.
pub fn gguf_tensors(path: &Path, tensors: &[HfTensor]) -> Result<Vec<GgufOutTensor>> {
    let mut out: Vec<GgufOutTensor> = Vec::new();
    // (GGUF tensor index, expert) of each stacked part, to check the order.
    let mut experts: Vec<Vec<(usize, usize)>> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let (name, expert) = gguf_name(t.name).ok_or_else(|| {
            Error::tensor(
                path,
                t.name,
                "has no llama.cpp GGUF name: this checkpoint cannot be written as GGUF",
            )
        })?;
        let mut ne: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        if name.ends_with(".shortconv.conv.weight") {
            ne.retain(|&d| d != 1);
        }
        match expert {
            None => {
                out.push(GgufOutTensor {
                    name,
                    ne,
                    format: t.format,
                    parts: vec![i],
                });
                experts.push(Vec::new());
            }
            Some(e) => {
                let at = match out.iter().position(|o| o.name == name) {
                    Some(at) => at,
                    None => {
                        out.push(GgufOutTensor {
                            name: name.clone(),
                            ne: ne.clone(),
                            format: t.format,
                            parts: Vec::new(),
                        });
                        experts.push(Vec::new());
                        out.len() - 1
                    }
                };
                let o = &mut out[at];
                if o.ne != ne || o.format != t.format {
                    return Err(Error::tensor(
                        path,
                        t.name,
                        format!(
                            "differs from the other experts of {name} in shape or format ({}); GGUF stacks experts into one tensor",
                            t.format.name()
                        ),
                    ));
                }
                o.parts.push(i);
                experts[at].push((o.parts.len() - 1, e));
            }
        }
    }
    for (o, list) in out.iter_mut().zip(&experts) {
        if list.is_empty() {
            continue;
        }
        if list.iter().any(|&(slot, e)| slot != e) {
            // Stack in expert order whatever order the checkpoint lists them in.
            let mut order: Vec<(usize, usize)> =
                list.iter().map(|&(slot, e)| (e, o.parts[slot])).collect();
            order.sort_unstable();
            if order.iter().enumerate().any(|(k, &(e, _))| k != e) {
                return Err(Error::file(
                    path,
                    format!(
                        "{}: the experts are not numbered 0..{}",
                        o.name,
                        order.len()
                    ),
                ));
            }
            o.parts = order.into_iter().map(|(_, i)| i).collect();
        }
        o.ne.push(o.parts.len() as u64);
    }
    Ok(out)
}

/// The `lfm2` / `lfm2moe` metadata of `cfg` (llama.cpp's converter's keys and types), then
/// the tokenizer's from the checkpoint directory `dir` when it has a tokenizer.json, else a
/// placeholder vocabulary (llama.cpp loads no file without one).
/// `name` becomes `general.name`; `quantized` adds `general.quantization_version`; `plan`
/// (the matrices' formats; bf16 without one) gives `general.file_type` where llama.cpp has
/// a file type for it.
pub fn gguf_metadata(
    cfg: &Config,
    name: &str,
    dir: Option<&Path>,
    quantized: bool,
    plan: Option<QuantPlan>,
) -> Result<Vec<(String, GgufValue)>> {
    let arch = if cfg.moe.is_some() { "lfm2moe" } else { "lfm2" };
    let mut m: Vec<(String, GgufValue)> = Vec::new();
    let s = |x: &str| GgufValue::String(x.to_string());
    let u = |x: usize| GgufValue::U32(x as u32);
    m.push(("general.architecture".into(), s(arch)));
    m.push(("general.type".into(), s("model")));
    m.push(("general.name".into(), s(name)));
    let mut a = |k: &str, v: GgufValue| m.push((format!("{arch}.{k}"), v));
    a("block_count", u(cfg.n_layers));
    a("context_length", u(cfg.max_positions));
    a("embedding_length", u(cfg.hidden));
    a("feed_forward_length", u(cfg.ffn));
    a("attention.head_count", u(cfg.n_heads));
    let kv = cfg
        .attention
        .iter()
        .map(|&att| GgufValue::I32(if att { cfg.n_kv_heads as i32 } else { 0 }))
        .collect();
    a("attention.head_count_kv", GgufValue::Array(kv));
    a("rope.freq_base", GgufValue::F32(cfg.rope_theta as f32));
    a(
        "attention.layer_norm_rms_epsilon",
        GgufValue::F32(cfg.norm_eps),
    );
    if let Some(moe) = &cfg.moe {
        a("expert_count", u(moe.n_experts));
        a("expert_used_count", u(moe.top_k));
        a("expert_feed_forward_length", u(moe.ffn));
        a("leading_dense_block_count", u(moe.num_dense_layers));
        a("expert_gating_func", GgufValue::U32(GATING_SIGMOID));
        // Keys llama.cpp defines but its converter leaves out for LFM2-MoE (whose released
        // models renormalize and scale by 1); written only where they matter.
        if !moe.norm_topk_prob {
            a("expert_weights_norm", GgufValue::Bool(false));
        }
        if moe.routed_scaling_factor != 1.0 {
            a(
                "expert_weights_scale",
                GgufValue::F32(moe.routed_scaling_factor),
            );
        }
    }
    a("vocab_size", u(cfg.vocab));
    a("shortconv.l_cache", u(cfg.conv_taps));
    match dir.map(|d| d.join("tokenizer.json")).filter(|p| p.exists()) {
        Some(tokenizer) => m.extend(tokenizer_metadata(cfg, &tokenizer)?),
        None => {
            m.extend(placeholder_tokenizer(cfg));
            m.extend(special_ids(cfg, None));
        }
    }
    if quantized {
        m.push(("general.quantization_version".into(), GgufValue::U32(2)));
    }
    if let Some(t) = llama_file_type(plan) {
        m.push(("general.file_type".into(), GgufValue::U32(t)));
    }
    Ok(m)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

/// `tokenizer.ggml.*` and `tokenizer.chat_template` from a byte-level BPE tokenizer.json,
/// with tokenizer_config.json and chat_template.jinja beside it: the vocabulary padded to
/// `cfg.vocab` ids (`[PAD{id}]`, unused), added tokens as control (special) or user-defined
/// types, merges as `"a b"`, the special ids as the converter resolves them.
fn tokenizer_metadata(cfg: &Config, path: &Path) -> Result<Vec<(String, GgufValue)>> {
    let err = |msg: String| Error::file(path, msg);
    let tok = read_json(path)?;
    let model = &tok["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(err(
            "the model is not byte-level BPE: GGUF output writes LFM2's BPE tokenizer only".into(),
        ));
    }
    let regex = tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].as_str();
    if regex != Some(LFM2_PRETOKENIZER_REGEX) {
        return Err(err(
            "the pre-tokenizer is not LFM2's (llama.cpp's 'lfm2'): convert this model with llama.cpp's convert_hf_to_gguf.py".into(),
        ));
    }
    let mut tokens: Vec<Option<String>> = vec![None; cfg.vocab];
    let mut types = vec![TOKEN_NORMAL; cfg.vocab];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| err("model.vocab must be an object".into()))?;
    let mut set = |id: Option<u64>, text: &str, ty: i32| -> Result<()> {
        match id.map(|i| i as usize).filter(|&i| i < cfg.vocab) {
            Some(i) => {
                tokens[i] = Some(text.to_string());
                types[i] = ty;
                Ok(())
            }
            None => Err(err(format!(
                "token {text:?} has an id outside the vocabulary of {}",
                cfg.vocab
            ))),
        }
    };
    for (text, id) in vocab {
        set(id.as_u64(), text, TOKEN_NORMAL)?;
    }
    let added = tok["added_tokens"].as_array().cloned().unwrap_or_default();
    for t in &added {
        let text = t["content"].as_str().unwrap_or_default();
        let special = t["special"].as_bool().unwrap_or(false) || looks_special(text);
        let ty = if special {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        set(t["id"].as_u64(), text, ty)?;
    }
    for (i, (t, ty)) in tokens.iter_mut().zip(types.iter_mut()).enumerate() {
        if t.is_none() {
            *t = Some(format!("[PAD{i}]"));
            *ty = TOKEN_UNUSED;
        }
    }
    let merges = model["merges"]
        .as_array()
        .map(|a| a.iter().map(merge_text).collect::<Option<Vec<_>>>())
        .unwrap_or(Some(Vec::new()))
        .ok_or_else(|| err("model.merges must hold pairs or \"a b\" strings".into()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let config_path = dir.join("tokenizer_config.json");
    let tcfg = if config_path.exists() {
        Some(read_json(&config_path)?)
    } else {
        None
    };
    let strs = |v: Vec<String>| GgufValue::Array(v.into_iter().map(GgufValue::String).collect());
    let mut m = vec![
        (
            "tokenizer.ggml.model".into(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            GgufValue::String("lfm2".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            strs(tokens.into_iter().flatten().collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), strs(merges)),
    ];
    let id_of = |text: &str| -> Option<u32> {
        vocab
            .get(text)
            .and_then(Value::as_u64)
            .map(|x| x as u32)
            .or_else(|| {
                added
                    .iter()
                    .find(|t| t["content"].as_str() == Some(text))
                    .and_then(|t| t["id"].as_u64())
                    .map(|x| x as u32)
            })
    };
    m.extend(special_ids(cfg, tcfg.as_ref().map(|t| (t, &id_of as _))));
    if let Some(t) = &tcfg {
        for key in ["add_bos_token", "add_eos_token"] {
            if let Some(b) = t[key].as_bool() {
                m.push((format!("tokenizer.ggml.{key}"), GgufValue::Bool(b)));
            }
        }
    }
    let jinja = dir.join("chat_template.jinja");
    let template = if jinja.exists() {
        Some(
            std::fs::read_to_string(&jinja)
                .map_err(|e| Error::file(&jinja, format!("cannot read: {e}")))?,
        )
    } else {
        tcfg.as_ref()
            .and_then(|t| t["chat_template"].as_str())
            .map(str::to_string)
    };
    if let Some(t) = template {
        m.push(("tokenizer.chat_template".into(), GgufValue::String(t)));
    }
    Ok(m)
}

/// Whether an added token looks like a control token (llama.cpp's converter's
/// `does_token_look_special`: `<|...|>` and the like).
fn looks_special(text: &str) -> bool {
    (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with('<') && text.ends_with('>') && !text.contains(' ') && text.len() > 2)
}

/// A merge as `"a b"` (tokenizer.json holds pairs or such strings).
fn merge_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(p) if p.len() == 2 => Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?)),
        _ => None,
    }
}

type IdOf<'a> = &'a dyn Fn(&str) -> Option<u32>;

/// BOS / EOS / padding ids: from tokenizer_config.json's token strings where it names them
/// (as the converter resolves them), else BOS and the first EOS from config.json.
fn special_ids(cfg: &Config, tcfg: Option<(&Value, IdOf)>) -> Vec<(String, GgufValue)> {
    let from_tokenizer = |key: &str| {
        let (t, id_of) = tcfg?;
        let text = match &t[key] {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("content")?.as_str()?,
            _ => return None,
        };
        id_of(text)
    };
    let mut m = Vec::new();
    let ids = [
        ("bos", from_tokenizer("bos_token").or(cfg.bos)),
        (
            "eos",
            from_tokenizer("eos_token").or(cfg.eos.first().copied()),
        ),
        ("padding", from_tokenizer("pad_token")),
    ];
    for (name, id) in ids {
        if let Some(id) = id {
            m.push((
                format!("tokenizer.ggml.{name}_token_id"),
                GgufValue::U32(id),
            ));
        }
    }
    m
}

/// A vocabulary of `cfg.vocab` placeholder tokens for checkpoints without a tokenizer
/// (random-weight models), as the peer's synthetic models carry (shared/tools/
/// hf_to_gguf_notok.py): GPT-2's byte-level symbols first, then `ab` (the one merge, `a b`)
/// and `<tN>` placeholders, all normal tokens.
fn placeholder_tokenizer(cfg: &Config) -> Vec<(String, GgufValue)> {
    let printable = (33u32..127).chain(161..173).chain(174..256);
    let n_printable = printable.clone().count() as u32;
    let symbols = printable.chain((0..256 - n_printable).map(|k| 256 + k));
    let mut tokens: Vec<String> = symbols
        .map(|c| char::from_u32(c).expect("a byte symbol").to_string())
        .take(cfg.vocab)
        .collect();
    if tokens.len() < cfg.vocab {
        tokens.push("ab".into());
    }
    while tokens.len() < cfg.vocab {
        tokens.push(format!("<t{}>", tokens.len()));
    }
    let n = tokens.len();
    vec![
        (
            "tokenizer.ggml.model".into(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            GgufValue::String("lfm2".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(vec![GgufValue::I32(TOKEN_NORMAL); n]),
        ),
        (
            "tokenizer.ggml.merges".into(),
            GgufValue::Array(vec![GgufValue::String("a b".into())]),
        ),
    ]
}

/// llama.cpp's `llama_ftype` of the matrices' formats (what llama-quantize writes for the same
/// type); `None` where it has none (a uniform q4_K or q5_K).
fn llama_file_type(plan: Option<QuantPlan>) -> Option<u32> {
    use WeightFormat::*;
    match plan {
        None | Some(QuantPlan::Uniform(Bf16)) => Some(32),
        Some(QuantPlan::Q4KM) => Some(15),
        Some(QuantPlan::Q4KS) => Some(14),
        Some(QuantPlan::Uniform(f)) => match f {
            F32 => Some(0),
            F16 => Some(1),
            Q4_0 => Some(2),
            Q4_1 => Some(3),
            Q8_0 => Some(7),
            Q5_0 => Some(8),
            Q5_1 => Some(9),
            Q6K => Some(18),
            _ => None,
        },
    }
}
