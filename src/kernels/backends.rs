//! Every shader variant translated the way wgpu translates it on each native backend, with no
//! GPU: naga's SPIR-V writer (Vulkan), MSL writer (Metal) and HLSL writer (DX12), each after
//! validation with the capabilities that backend supports.

use std::time::Instant;

use crate::gpu::{preprocess, Defines};

/// The backend a translation is for.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Vulkan,
    Metal,
    Dx12,
}

impl Backend {
    /// What naga validates against on this backend (wgpu asks the same of its adapter).
    fn capabilities(self) -> naga::valid::Capabilities {
        match self {
            Backend::Vulkan => naga::back::spv::supported_capabilities(),
            Backend::Metal => naga::back::msl::supported_capabilities(),
            Backend::Dx12 => naga::back::hlsl::supported_capabilities(),
        }
    }

    /// Translates a validated module; the error as text.
    fn write(self, module: &naga::Module, info: &naga::valid::ModuleInfo) -> Result<(), String> {
        match self {
            // SPIR-V 1.3: the first with subgroup operations (wgpu asks for it with them).
            Backend::Vulkan => {
                let options = naga::back::spv::Options {
                    lang_version: (1, 3),
                    ..Default::default()
                };
                naga::back::spv::write_vec(module, info, &options, None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            // MSL 2.4 (macOS 12 / iOS 15, Apple7+): SIMD-group reductions are there.
            Backend::Metal => {
                let options = naga::back::msl::Options {
                    lang_version: (2, 4),
                    ..Default::default()
                };
                let pipeline = naga::back::msl::PipelineOptions::default();
                naga::back::msl::write_string(module, info, &options, &pipeline)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            // Shader model 6.0 (DXC): wave intrinsics are there.
            Backend::Dx12 => {
                let options = naga::back::hlsl::Options {
                    shader_model: naga::back::hlsl::ShaderModel::V6_0,
                    ..Default::default()
                };
                let pipeline = naga::back::hlsl::PipelineOptions::default();
                let mut out = String::new();
                naga::back::hlsl::Writer::new(&mut out, &options, &pipeline)
                    .write(module, info, None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// `name {defines}`: how a failure names its variant.
fn label(name: &str, defines: &Defines) -> String {
    format!("{name} {defines:?}")
}

#[test]
fn every_variant_translates_to_spirv_msl_and_hlsl() {
    let start = Instant::now();
    let variants = super::all_variants();
    let mut failures = Vec::new();
    for (name, src, defines) in &variants {
        let code = preprocess(src, defines);
        let module = match naga::front::wgsl::parse_str(&code) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{}: {}",
                    label(name, defines),
                    e.emit_to_string(&code)
                ));
                continue;
            }
        };
        for backend in [Backend::Vulkan, Backend::Metal, Backend::Dx12] {
            let flags = naga::valid::ValidationFlags::all();
            let info = naga::valid::Validator::new(flags, backend.capabilities())
                .validate(&module)
                .map_err(|e| format!("validation: {e:?}"))
                .and_then(|info| backend.write(&module, &info).map(|_| info));
            if let Err(e) = info {
                failures.push(format!("{} on {backend:?}: {e}", label(name, defines)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every kernel the crate ships is among them.
    let names: std::collections::BTreeSet<_> = variants.iter().map(|v| v.0).collect();
    let shaders = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".wgsl").map(str::to_string)
        })
        // Files other kernels include, not kernels of their own.
        .filter(|n| n != "kv_cache" && n != "attention_params");
    for shader in shaders {
        assert!(
            names.contains(shader.as_str()),
            "{shader}.wgsl has no variant"
        );
    }
    eprintln!(
        "{} variants x 3 backends in {:.1} s",
        variants.len(),
        start.elapsed().as_secs_f64()
    );
}
