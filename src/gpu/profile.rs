//! The device profile: every per-device choice (kernel families, layouts, fused kernels,
//! KV cache default), made once from the adapter's type and features and the environment
//! switches. Kernels and the runtime read the profile; nothing else reads the environment.

use super::WeightFormat;

/// The environment switches, parsed here and nowhere else (README lists them). Each turns a
/// fast path off or caps a limit, so a suspect optimisation can be ruled out without a rebuild.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// `WMOE_NO_LANE_ROWS=1`: the GPU kernels' tilings on a CPU device too (K-split matvec
    /// with the folded norm, tiled prefill matmul and prefill attention, row-major pages, q6_K
    /// as is).
    pub no_lane_rows: bool,
    /// `WMOE_NO_TILES=1`: q4_0 / q4_K pages row-major on CPU devices.
    pub no_tiles: bool,
    /// `WMOE_NO_SUBGROUPS=1`: workgroup-memory reductions where subgroups would be used.
    pub no_subgroups: bool,
    /// `WMOE_NO_FUSION=1`: decode without the folded norm, the fused router and the
    /// combining expert down projection.
    pub no_fusion: bool,
    /// `WMOE_NO_TILED_ATTENTION=1`: attention one workgroup per query head and token, keys
    /// across its threads, in prefill and decode alike.
    pub no_tiled_attention: bool,
    /// `WMOE_PROFILE=1`: GPU timestamps around every dispatch (where the device has them).
    pub profile: bool,
    /// `WMOE_MAX_BINDING=BYTES`: caps the storage-binding size below the device's limit
    /// (tests use it to force weight paging on small models).
    pub max_binding: Option<u64>,
    /// `WMOE_GPU_MEMORY=BYTES`: the GPU memory wmoe may plan to use. The adapter reports no
    /// memory size, so without it only a failed allocation says the device is full; with
    /// it, weights and KV caches planned beyond it are refused before anything is allocated
    /// (tests use it to stand for a small device).
    pub gpu_memory: Option<u64>,
}

impl Switches {
    /// The switches set in the environment.
    pub fn from_env() -> Self {
        let on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
        Switches {
            no_lane_rows: on("WMOE_NO_LANE_ROWS"),
            no_tiles: on("WMOE_NO_TILES"),
            no_subgroups: on("WMOE_NO_SUBGROUPS"),
            no_fusion: on("WMOE_NO_FUSION"),
            no_tiled_attention: on("WMOE_NO_TILED_ATTENTION"),
            profile: on("WMOE_PROFILE"),
            max_binding: std::env::var("WMOE_MAX_BINDING")
                .ok()
                .and_then(|s| s.parse().ok()),
            gpu_memory: std::env::var("WMOE_GPU_MEMORY")
                .ok()
                .and_then(|s| s.parse().ok()),
        }
    }
}

/// How a matrix-vector product is spread over a workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatvecFamily {
    /// Whole rows per SIMD lane, no reduction (CPU devices: every storage load there is a
    /// scalar load per lane, so each loaded activation must serve many rows).
    LaneRows,
    /// The K dimension split over 64 threads, several rows per workgroup, reduced (GPUs).
    KSplit,
}

/// The product prefill chunks use for their projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrefillProduct {
    /// The batched matvec over token tiles (CPU devices: decoding each weight once per tile
    /// beats shared-memory tiles there).
    BatchedMatvec,
    /// The tiled matmul through workgroup memory (GPUs).
    TiledMatmul,
}

/// Tile shape of the tiled attention kernel (src/kernels/attention_tiled.rs): query rows per
/// workgroup (one thread each) and keys per K/V tile in workgroup memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionTiles {
    pub rows: u32,
    pub keys: u32,
}

/// The kernel of attention calls (src/kernels/attention.rs picks it by the call's tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionKernel {
    /// One workgroup per query head and token, keys across its threads.
    PerHead,
    /// Query rows × K/V tiles through workgroup memory.
    Tiled(AttentionTiles),
    /// Single tokens on CPU devices with subgroups of at least 8 lanes: a subgroup per kv
    /// head and key split, its lanes over head slices (src/kernels/attention_decode.rs).
    KeyLanes,
    /// Prefill chunks on CPU devices: a block of query rows in every lane's registers, each
    /// lane on its own keys (src/kernels/attention_lanes.rs).
    LanesOverKeys,
}

/// Lanes of the key-lanes decode kernel's workgroup (`kernels::attention_decode::LANES`),
/// which one subgroup must cover.
pub const KEY_LANES: u32 = 8;

/// Every per-device choice, fixed when the device is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    /// The adapter is a CPU rasterizer (Mesa lavapipe, WARP, SwiftShader).
    pub cpu_device: bool,
    pub matvec: MatvecFamily,
    pub prefill: PrefillProduct,
    /// q4_0 / q4_K pages stored in 128-row tiles (src/gpu/weights.rs).
    pub row_tiles: bool,
    /// q6_K re-encoded as `Q6KWide` at load.
    pub wide_q6k: bool,
    /// Reductions use subgroup operations.
    pub subgroups: bool,
    /// Decode steps use the fused kernels (folded norm, fused router, combining down).
    pub fusion: bool,
    /// Every dispatch is timed with GPU timestamps.
    pub timestamps: bool,
    /// The attention kernel of prefill chunks.
    pub prefill_attention: AttentionKernel,
    /// The attention kernel of decode steps (split-KV over the keys).
    pub decode_attention: AttentionKernel,
    /// The KV cache stays f32 (`--kv-type auto`) while the whole f32 cache fits in this
    /// many bytes; f16 beyond.
    pub kv_f32_budget: u64,
}

impl DeviceProfile {
    /// The profile of a device of `device_type` with `features`, under `switches`.
    pub fn new(
        device_type: wgpu::DeviceType,
        (features, subgroup_min_size): (wgpu::Features, u32),
        switches: &Switches,
    ) -> Self {
        let cpu_device = device_type == wgpu::DeviceType::Cpu;
        let subgroups = features.contains(wgpu::Features::SUBGROUP) && !switches.no_subgroups;
        let cpu_kernels = cpu_device && !switches.no_lane_rows;
        DeviceProfile {
            cpu_device,
            matvec: if cpu_kernels {
                MatvecFamily::LaneRows
            } else {
                MatvecFamily::KSplit
            },
            prefill: if cpu_kernels {
                PrefillProduct::BatchedMatvec
            } else {
                PrefillProduct::TiledMatmul
            },
            row_tiles: cpu_kernels && !switches.no_tiles,
            wide_q6k: cpu_kernels,
            subgroups,
            fusion: !switches.no_fusion,
            timestamps: switches.profile
                && features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            prefill_attention: match (cpu_kernels, switches.no_tiled_attention) {
                (_, true) => AttentionKernel::PerHead,
                (true, false) => AttentionKernel::LanesOverKeys,
                (false, false) => AttentionKernel::Tiled(AttentionTiles { rows: 64, keys: 32 }),
            },
            decode_attention: match (cpu_device, switches.no_tiled_attention) {
                (true, false) if subgroups && subgroup_min_size >= KEY_LANES => {
                    AttentionKernel::KeyLanes
                }
                (true, false) => AttentionKernel::Tiled(AttentionTiles { rows: 8, keys: 32 }),
                _ => AttentionKernel::PerHead,
            },
            kv_f32_budget: 256 << 20,
        }
    }

    /// The attention kernel of a step of `tokens` tokens per sequence.
    pub fn attention_kernel(&self, tokens: u32) -> AttentionKernel {
        if tokens > 1 {
            self.prefill_attention
        } else {
            self.decode_attention
        }
    }

    /// Whether this device's matvec computes whole rows per lane.
    pub fn lane_rows(&self) -> bool {
        self.matvec == MatvecFamily::LaneRows
    }

    /// The GPU layout for weights stored as `format`: q6_K becomes `Q6KWide` where the
    /// profile takes it.
    pub fn gpu_format(&self, format: WeightFormat) -> WeightFormat {
        match format {
            WeightFormat::Q6K if self.wide_q6k => WeightFormat::Q6KWide,
            f => f,
        }
    }

    /// Whether pages of `format` are stored in row tiles: measured to pay for the 4-bit
    /// formats whose lanes read at most one chunk of a row per step; q8_0 and `Q6KWide`
    /// (16 words per step) ran as fast or slower tiled (docs/PERF.md).
    pub fn tiles(&self, format: WeightFormat) -> bool {
        self.row_tiles && matches!(format, WeightFormat::Q4_0 | WeightFormat::Q4K)
    }
}

impl std::fmt::Display for DeviceProfile {
    /// One line: the kernel families and the fast paths on or off.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        let matvec = match self.matvec {
            MatvecFamily::LaneRows => "rows per lane",
            MatvecFamily::KSplit => "K-split",
        };
        let prefill = match self.prefill {
            PrefillProduct::BatchedMatvec => "batched matvec",
            PrefillProduct::TiledMatmul => "tiled matmul",
        };
        let tiles = |k: AttentionKernel| match k {
            AttentionKernel::PerHead => "per head".to_string(),
            AttentionKernel::Tiled(t) => format!("{}x{} tiles", t.rows, t.keys),
            AttentionKernel::KeyLanes => "key lanes".to_string(),
            AttentionKernel::LanesOverKeys => "lanes over keys".to_string(),
        };
        write!(
            f,
            "matvec {matvec}, prefill {prefill}, attention prefill {} decode {}, row tiles {}, wide q6_K {}, subgroups {}, fusion {}, timestamps {}",
            tiles(self.prefill_attention),
            tiles(self.decode_attention),
            on(self.row_tiles),
            on(self.wide_q6k),
            on(self.subgroups),
            on(self.fusion),
            on(self.timestamps)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_devices_take_lane_rows_unless_switched_off() {
        let f = wgpu::Features::SUBGROUP;
        let cpu = DeviceProfile::new(wgpu::DeviceType::Cpu, (f, 8), &Switches::default());
        assert_eq!(cpu.matvec, MatvecFamily::LaneRows);
        assert!(cpu.row_tiles && cpu.wide_q6k && cpu.subgroups && cpu.fusion);
        let off = Switches {
            no_lane_rows: true,
            no_subgroups: true,
            no_fusion: true,
            ..Default::default()
        };
        let cpu_gpu_kernels = DeviceProfile::new(wgpu::DeviceType::Cpu, (f, 8), &off);
        assert_eq!(cpu_gpu_kernels.matvec, MatvecFamily::KSplit);
        assert_eq!(cpu_gpu_kernels.prefill, PrefillProduct::TiledMatmul);
        assert!(!cpu_gpu_kernels.row_tiles && !cpu_gpu_kernels.subgroups);
        assert!(!cpu_gpu_kernels.fusion && cpu_gpu_kernels.cpu_device);
        let gpu_tiles = AttentionKernel::Tiled(AttentionTiles { rows: 64, keys: 32 });
        assert_eq!(cpu_gpu_kernels.attention_kernel(2), gpu_tiles);
        let gpu = DeviceProfile::new(wgpu::DeviceType::DiscreteGpu, (f, 32), &Switches::default());
        assert_eq!(gpu.matvec, MatvecFamily::KSplit);
        assert_eq!(gpu.gpu_format(WeightFormat::Q6K), WeightFormat::Q6K);
        assert!(!gpu.tiles(WeightFormat::Q4_0));
        assert_eq!(cpu.gpu_format(WeightFormat::Q6K), WeightFormat::Q6KWide);
        assert!(cpu.tiles(WeightFormat::Q4K) && !cpu.tiles(WeightFormat::Q8_0));
        assert_eq!(cpu.attention_kernel(1), AttentionKernel::KeyLanes);
        assert_eq!(gpu.attention_kernel(1), AttentionKernel::PerHead);
        assert_eq!(cpu.attention_kernel(2), AttentionKernel::LanesOverKeys);
        assert!(matches!(gpu.attention_kernel(2), AttentionKernel::Tiled(_)));
        let per_head = Switches {
            no_tiled_attention: true,
            ..Default::default()
        };
        let cpu_per_head = DeviceProfile::new(wgpu::DeviceType::Cpu, (f, 8), &per_head);
        assert_eq!(cpu_per_head.attention_kernel(1), AttentionKernel::PerHead);
        assert_eq!(cpu_per_head.attention_kernel(2), AttentionKernel::PerHead);
        // Subgroups narrower than the kernel's lanes, or none: the tiled decode kernel.
        let tiled = AttentionKernel::Tiled(AttentionTiles { rows: 8, keys: 32 });
        let narrow = DeviceProfile::new(wgpu::DeviceType::Cpu, (f, 4), &Switches::default());
        assert_eq!(narrow.attention_kernel(1), tiled);
        let none = wgpu::Features::empty();
        let bare = DeviceProfile::new(wgpu::DeviceType::Cpu, (none, 8), &Switches::default());
        assert_eq!(bare.attention_kernel(1), tiled);
    }
}
