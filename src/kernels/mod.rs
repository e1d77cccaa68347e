//! One module per shader: parameters, bindings, dispatch geometry, CPU reference and the
//! GPU-vs-reference tests. Kernels know nothing of the model or the scheduler.

pub mod argmax;
pub mod attention;
pub mod attention_merge;
pub mod copy;
pub mod embedding;
pub mod matmul;
pub mod matvec;
pub mod moe_combine;
pub mod moe_gather;
pub mod moe_router;
pub mod qk_norm_rope;
pub mod rmsnorm;
pub mod shortconv;
pub mod swiglu;

use crate::gpu::Defines;

/// Sorted defines from `(name, value)` pairs (empty value: a flag).
pub(crate) fn defines(pairs: &[(&str, String)]) -> Defines {
    let mut d: Defines = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    d.sort();
    d
}

/// Every shader with the defines each of its variants uses, for the naga validation test.
#[cfg(test)]
pub(crate) fn all_variants() -> Vec<(&'static str, String, Defines)> {
    let mut v = Vec::new();
    for f in crate::gpu::GPU_FORMATS {
        for acc in [false, true] {
            // The K-split, alone and with the folded norm (subgroups or not).
            let split = matvec::Variant {
                format: f,
                mode: matvec::Mode::Plain,
                accumulate: acc,
                wg: 64,
                rows: 4,
                tokens: 8,
                lane_rows: false,
                subgroups: acc,
                norm: false,
            };
            for variant in [Some(split), split.with_norm()].into_iter().flatten() {
                v.push(("matvec", matvec::SOURCE.to_string(), variant.defines()));
            }
            v.push((
                "matvec",
                matvec::SOURCE.to_string(),
                matvec::Variant {
                    format: f,
                    mode: if acc {
                        matvec::Mode::Experts
                    } else {
                        matvec::Mode::Gather
                    },
                    accumulate: acc,
                    wg: 8,
                    rows: if acc { 16 } else { 2 },
                    tokens: if acc { 1 } else { 8 },
                    lane_rows: acc,
                    subgroups: false,
                    norm: false,
                }
                .defines(),
            ));
            // The combining expert mode, K-split (subgroups or not) and rows per lane.
            for (wg, rows) in [(64, 4), (8, 16)] {
                v.push((
                    "matvec",
                    matvec::SOURCE.to_string(),
                    matvec::Variant {
                        format: f,
                        mode: matvec::Mode::ExpertsCombine,
                        accumulate: true,
                        wg,
                        rows,
                        tokens: 1,
                        lane_rows: rows >= wg,
                        subgroups: acc,
                        norm: false,
                    }
                    .defines(),
                ));
            }
            for mode in [
                matvec::Mode::Plain,
                matvec::Mode::Experts,
                matvec::Mode::Gather,
            ] {
                let mut d = matvec::Variant {
                    format: f,
                    mode,
                    accumulate: acc,
                    wg: 8,
                    rows: 32,
                    tokens: if mode == matvec::Mode::Experts { 1 } else { 4 },
                    lane_rows: true,
                    subgroups: false,
                    norm: false,
                }
                .defines();
                d.push(("X_VEC4".into(), String::new()));
                d.push(("W_VEC4".into(), String::new()));
                if acc {
                    // Row tiles (CPU devices).
                    d.push(("W_TILE_LOG2".into(), "7u".into()));
                }
                d.sort();
                v.push(("matvec", matvec::SOURCE.to_string(), d));
            }
            v.push((
                "matmul",
                matmul::SOURCE.to_string(),
                matmul::Variant {
                    format: f,
                    gather: false,
                    accumulate: acc,
                }
                .defines(),
            ));
            v.push((
                "matmul",
                matmul::SOURCE.to_string(),
                matmul::Variant {
                    format: f,
                    gather: true,
                    accumulate: acc,
                }
                .defines(),
            ));
        }
        v.push((
            "embedding",
            embedding::SOURCE.to_string(),
            defines(&[(f.define(), String::new())]),
        ));
    }
    for (name, src) in [
        ("argmax", argmax::SOURCE),
        ("attention", attention::SOURCE),
        ("attention_merge", attention_merge::SOURCE),
        ("copy", copy::SOURCE),
        ("moe_combine", moe_combine::SOURCE),
        ("moe_gather", moe_gather::SOURCE),
        ("moe_router", moe_router::SOURCE),
        ("qk_norm_rope", qk_norm_rope::SOURCE),
        ("rmsnorm", rmsnorm::SOURCE),
        ("shortconv", shortconv::SOURCE),
        ("swiglu", swiglu::SOURCE),
    ] {
        v.push((name, src.to_string(), Defines::new()));
    }
    for (name, src) in [
        ("attention", attention::SOURCE),
        ("qk_norm_rope", qk_norm_rope::SOURCE),
    ] {
        v.push((name, src.to_string(), qk_norm_rope::KvType::F32.defines()));
    }
    v.push((
        "moe_router",
        moe_router::SOURCE.to_string(),
        defines(&[("FUSED", String::new())]),
    ));
    for kv in [qk_norm_rope::KvType::F16, qk_norm_rope::KvType::F32] {
        let mut d = kv.defines();
        d.push(("SPLIT".into(), String::new()));
        d.sort();
        v.push(("attention", attention::SOURCE.to_string(), d));
    }
    v
}

#[cfg(test)]
mod tests {
    use crate::gpu::preprocess;

    /// Every shader variant parses and validates with naga (no GPU needed).
    #[test]
    fn all_shaders_validate_with_naga() {
        for (name, src, defs) in super::all_variants() {
            let code = preprocess(&src, &defs);
            let module = naga::front::wgsl::parse_str(&code)
                .unwrap_or_else(|e| panic!("{name} {defs:?}: {}", e.emit_to_string(&code)));
            let caps = naga::valid::Capabilities::all();
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name} {defs:?}: {e:?}"));
        }
    }
}
