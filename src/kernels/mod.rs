//! One module per shader: parameters, bindings, dispatch geometry, CPU reference and the
//! GPU-vs-reference tests. Kernels know nothing of the model or the scheduler.

pub mod attention;
pub mod attention_decode;
pub mod attention_lanes;
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
use crate::gpu::{AttentionKernel, Defines};

/// Every shader with the defines each of its variants uses, for the naga translation test
/// (`backends.rs`).
#[cfg(test)]
pub(crate) fn all_variants() -> Vec<(&'static str, String, Defines)> {
    let mut v = Vec::new();
    v.extend(profile_matvec_variants());
    for f in crate::gpu::GPU_FORMATS {
        for acc in [false, true] {
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
        // The tiles every profile takes for prefill and decode, split or not, at head sizes
        // that take the full tile and fewer keys per tile.
        let kernels: Vec<_> = distinct_profiles()
            .into_iter()
            .flat_map(|p| [(p.attention_kernel(1), 1), (p.attention_kernel(2), 16)])
            .collect();
        let tiles = kernels.iter().filter_map(|&(k, tokens)| match k {
            AttentionKernel::Tiled(t) => Some((t, tokens)),
            _ => None,
        });
        for (tiles, tokens) in tiles {
            for (split, head_dim) in [(false, 64), (true, 64), (true, 96), (true, 256)] {
                let heads = Heads {
                    n_heads: 8,
                    n_kv: 2,
                    head_dim,
                    kv,
                };
                let d = attention_tiled::defines(tiles, heads, tokens, split);
                let entry = ("attention_tiled", attention_tiled::SOURCE.to_string(), d);
                if !v.contains(&entry) {
                    v.push(entry);
                }
            }
        }
        if kernels
            .iter()
            .any(|&(k, _)| k == AttentionKernel::LanesOverKeys)
        {
            for (split, head_dim) in [(false, 64), (true, 64), (true, 256)] {
                let heads = Heads {
                    n_heads: 8,
                    n_kv: 2,
                    head_dim,
                    kv,
                };
                let d = attention_lanes::defines(heads, split);
                v.push(("attention_lanes", attention_lanes::SOURCE.to_string(), d));
            }
        }
        if kernels.iter().any(|&(k, _)| k == AttentionKernel::KeyLanes) {
            for (split, head_dim, n_kv) in [(false, 64, 2), (true, 64, 2), (true, 256, 4)] {
                let heads = Heads {
                    n_heads: 8,
                    n_kv,
                    head_dim,
                    kv,
                };
                let d = attention_decode::defines(heads, split);
                v.push(("attention_decode", attention_decode::SOURCE.to_string(), d));
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

/// The device profiles whose kernel choices differ: CPU rasterizers (lane rows, row tiles,
/// wide q6_K) and GPUs (K-split, folded norm), each with and without subgroups and with the
/// CPU device forced onto the GPU kernels (`WMOE_NO_LANE_ROWS`).
#[cfg(test)]
fn distinct_profiles() -> Vec<crate::gpu::DeviceProfile> {
    use crate::gpu::{DeviceProfile, Switches};
    let mut profiles = Vec::new();
    for device in [wgpu::DeviceType::Cpu, wgpu::DeviceType::DiscreteGpu] {
        for features in [wgpu::Features::SUBGROUP, wgpu::Features::empty()] {
            for no_lane_rows in [false, true] {
                let switches = Switches {
                    no_lane_rows,
                    ..Switches::default()
                };
                let p = DeviceProfile::new(device, (features, 8), &switches);
                if !profiles.contains(&p) {
                    profiles.push(p);
                }
            }
        }
    }
    profiles
}

/// Every matvec pipeline the runtime's own choices build: `Variant::for_profile` over every
/// profile, weight format as the profile stores it, mode, accumulation and batch (one entry
/// or a tile), with the folded norm where the tiling takes it, row tiles where the profile
/// keeps them, and the vec4 loads `record` adds where rows are aligned.
#[cfg(test)]
fn profile_matvec_variants() -> Vec<(&'static str, String, Defines)> {
    use matvec::{Mode, Variant};
    let mut v = Vec::new();
    for profile in distinct_profiles() {
        for f in crate::gpu::GPU_FORMATS {
            if profile.gpu_format(f.canonical()) != f {
                continue;
            }
            let layout = if profile.tiles(f) {
                Defines::new().uint("W_TILE_LOG2", 7)
            } else {
                Defines::new()
            };
            for mode in [
                Mode::Plain,
                Mode::Experts,
                Mode::ExpertsCombine,
                Mode::Gather,
            ] {
                for accumulate in [false, true] {
                    if mode == Mode::ExpertsCombine && !accumulate {
                        continue;
                    }
                    for batch in [1, 8] {
                        let base = Variant::for_profile(&profile, f, mode, accumulate, batch);
                        for variant in [Some(base), base.with_norm()].into_iter().flatten() {
                            let d = variant.defines().with(&layout);
                            let vec4 = if variant.lane_rows {
                                vec![(false, false), (true, false), (true, true)]
                            } else {
                                vec![(false, false)]
                            };
                            for (x_vec4, w_vec4) in vec4 {
                                let d = d
                                    .clone()
                                    .flag_if(x_vec4, "X_VEC4")
                                    .flag_if(w_vec4, "W_VEC4");
                                let entry = ("matvec", matvec::SOURCE.to_string(), d);
                                if !v.contains(&entry) {
                                    v.push(entry);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod backends;

#[cfg(test)]
mod tests {
    use crate::gpu::preprocess;

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
