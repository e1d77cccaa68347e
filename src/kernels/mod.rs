//! One module per shader: parameters, bindings, dispatch geometry, CPU reference and the
//! GPU-vs-reference tests. Kernels know nothing of the model or the scheduler.

pub mod attention;
pub mod attention_merge;
pub mod attention_tiled;
pub mod copy;
pub mod embedding;
mod geometry;
pub mod kv_shift;
pub mod matmul;
pub mod matvec;
pub mod moe_combine;
pub mod moe_gather;
pub mod moe_router;
pub mod qk_norm_rope;
pub mod rmsnorm;
pub mod row_copy;
pub mod sample;
pub mod seen_shift;
pub mod shortconv;
pub mod swiglu;

pub use geometry::{Heads, KvPages, KvType, PairLists};

#[cfg(test)]
use crate::gpu::Defines;

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
                let d = matvec::Variant {
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
                .defines()
                .flag("X_VEC4")
                .flag("W_VEC4");
                // Row tiles (CPU devices).
                let d = if acc { d.uint("W_TILE_LOG2", 7) } else { d };
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
            Defines::new().flag(f.define()).uint("WG", 64),
        ));
    }
    for (name, src, wg) in [
        ("attention", attention::SOURCE, 64),
        ("attention_merge", attention_merge::SOURCE, 64),
        ("copy", copy::SOURCE, 256),
        ("kv_shift", kv_shift::SOURCE, 64),
        ("moe_combine", moe_combine::SOURCE, 64),
        ("moe_gather", moe_gather::SOURCE, 64),
        ("moe_router", moe_router::SOURCE, 64),
        ("qk_norm_rope", qk_norm_rope::SOURCE, 64),
        ("rmsnorm", rmsnorm::SOURCE, 64),
        ("row_copy", row_copy::SOURCE, 64),
        ("sample", sample::SOURCE, sample::WG),
        ("seen_shift", seen_shift::SOURCE, 64),
        ("shortconv", shortconv::SOURCE, 64),
        ("swiglu", swiglu::SOURCE, 64),
    ] {
        v.push((name, src.to_string(), Defines::new().uint("WG", wg)));
    }
    let wg = Defines::new().uint("WG", 64);
    for kv in [KvType::F32, KvType::Q8_0] {
        for (name, src) in [
            ("attention", attention::SOURCE),
            ("qk_norm_rope", qk_norm_rope::SOURCE),
        ] {
            v.push((name, src.to_string(), kv.defines().with(&wg)));
        }
    }
    v.push((
        "moe_router",
        moe_router::SOURCE.to_string(),
        wg.clone().flag("FUSED"),
    ));
    for kv in [KvType::F16, KvType::F32, KvType::Q8_0] {
        let d = kv.defines().with(&wg).flag("SPLIT");
        v.push(("attention", attention::SOURCE.to_string(), d));
        for (split, head_dim) in [(false, 64), (true, 96), (true, 256)] {
            let heads = Heads {
                n_heads: 8,
                n_kv: 2,
                head_dim,
                kv,
            };
            // Prefill tiles (one thread per row), and decode tiles (two per row).
            for (rows, tokens) in [(64, 16), (8, 1)] {
                let tiles = crate::gpu::AttentionTiles { rows, keys: 32 };
                let d = attention_tiled::defines(tiles, heads, tokens, split);
                v.push(("attention_tiled", attention_tiled::SOURCE.to_string(), d));
            }
        }
        let d = kv.defines().with(&wg).flag("ROTATE");
        v.push(("kv_shift", kv_shift::SOURCE.to_string(), d));
    }
    v.push((
        "kv_shift",
        kv_shift::SOURCE.to_string(),
        KvType::F32.defines().with(&wg),
    ));
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

    /// Every Rust `Params` struct (and `sample::Settings`) matches its shader's struct, read
    /// through naga: field names, types, order and offsets, and the struct's size.
    #[test]
    fn params_structs_match_their_shaders() {
        use super::*;
        use crate::gpu::UniformLayout;
        type Fields = &'static [(&'static str, &'static str, usize)];
        fn layout<P: UniformLayout>() -> (Fields, usize) {
            (P::FIELDS, std::mem::size_of::<P>())
        }
        let kernels = [
            ("attention", layout::<attention::Params>()),
            ("attention_merge", layout::<attention_merge::Params>()),
            ("attention_tiled", layout::<attention::Params>()),
            ("copy", layout::<copy::Params>()),
            ("kv_shift", layout::<kv_shift::Params>()),
            ("embedding", layout::<embedding::Params>()),
            ("matmul", layout::<matmul::Params>()),
            ("matvec", layout::<matvec::Params>()),
            ("moe_combine", layout::<moe_combine::Params>()),
            ("moe_gather", layout::<moe_gather::Params>()),
            ("moe_router", layout::<moe_router::Params>()),
            ("qk_norm_rope", layout::<qk_norm_rope::Params>()),
            ("rmsnorm", layout::<rmsnorm::Params>()),
            ("row_copy", layout::<row_copy::Params>()),
            ("sample", layout::<sample::Params>()),
            ("seen_shift", layout::<seen_shift::Params>()),
            ("shortconv", layout::<shortconv::Params>()),
            ("swiglu", layout::<swiglu::Params>()),
        ];
        // Other uniform structs a shader shares with the host: (shader, struct, layout).
        let others = [("sample", "Settings", layout::<sample::Settings>())];
        let structs = kernels.into_iter().map(|(n, l)| (n, "Params", l));
        let variants = super::all_variants();
        for (name, st, (fields, size)) in structs.chain(others) {
            let (_, src, defs) = variants.iter().find(|v| v.0 == name).expect(name);
            let module = naga::front::wgsl::parse_str(&preprocess(src, defs)).expect(name);
            let (_, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(st))
                .unwrap_or_else(|| panic!("{name}: no struct {st}"));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{name}: {st} is not a struct");
            };
            let wgsl: Vec<(String, String, usize)> = members
                .iter()
                .map(|m| {
                    let ty = match module.types[m.ty].inner {
                        naga::TypeInner::Scalar(s) if s == naga::Scalar::U32 => "u32",
                        naga::TypeInner::Scalar(s) if s == naga::Scalar::F32 => "f32",
                        ref other => panic!("{name}: field type {other:?}"),
                    };
                    (
                        m.name.clone().unwrap_or_default(),
                        ty.into(),
                        m.offset as usize,
                    )
                })
                .collect();
            let rust: Vec<(String, String, usize)> = fields
                .iter()
                .map(|(n, t, o)| (n.to_string(), t.to_string(), *o))
                .collect();
            assert_eq!(rust, wgsl, "{name}: Rust {st} vs WGSL");
            assert_eq!(size, *span as usize, "{name}: {st} size");
        }
    }
}
