//! Adapter choice (Vulkan, Metal, DX12), device creation with the adapter's real limits,
//! the pipeline cache and buffer helpers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::profile::{DeviceProfile, Switches};
use super::shader::{preprocess, Defines};
use super::wait::{block_on, out_of_memory_checked, read_mapped};
use crate::error::{Error, Result};

/// How to pick the adapter, and the switches its profile is built under. `None` fields
/// mean "best available".
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// An index into `wmoe devices`' list, or a case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Fast paths turned off and limits capped (`WMOE_*` variables).
    pub switches: Switches,
}

impl DeviceOptions {
    /// Options from `WMOE_BACKEND`, `WMOE_ADAPTER` and the switches, used when the caller
    /// gives none.
    pub fn from_env() -> Self {
        DeviceOptions {
            backend: std::env::var("WMOE_BACKEND").ok().filter(|s| !s.is_empty()),
            adapter: std::env::var("WMOE_ADAPTER").ok().filter(|s| !s.is_empty()),
            switches: Switches::from_env(),
        }
    }

    fn backends(&self) -> Result<wgpu::Backends> {
        Ok(
            match self
                .backend
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("") | Some("auto") => wgpu::Backends::PRIMARY,
                Some("vulkan") => wgpu::Backends::VULKAN,
                Some("metal") => wgpu::Backends::METAL,
                Some("dx12") => wgpu::Backends::DX12,
                Some("gl") => wgpu::Backends::GL,
                Some(other) => {
                    return Err(Error::Input(format!(
                        "unknown backend '{other}': use vulkan, metal, dx12 or gl"
                    )))
                }
            },
        )
    }
}

/// Optional features wmoe uses when the adapter has them.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// What `wmoe devices` prints for one adapter.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub index: usize,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// The choices wmoe would make on it under the same switches.
    pub profile: DeviceProfile,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.info;
        let l = &self.limits;
        writeln!(
            f,
            "[{}] {} ({:?}, {:?}, driver {} {})",
            self.index, i.name, i.backend, i.device_type, i.driver, i.driver_info
        )?;
        let has = |feat: wgpu::Features| {
            if self.features.contains(feat) {
                "yes"
            } else {
                "no"
            }
        };
        writeln!(
            f,
            "    shader-f16: {}  subgroups: {} (size {}..{})  timestamps: {}",
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::SUBGROUP),
            self.info.subgroup_min_size,
            self.info.subgroup_max_size,
            has(wgpu::Features::TIMESTAMP_QUERY)
        )?;
        write!(
            f,
            "    max storage binding {} MiB, max buffer {} MiB, storage buffers/stage {}, workgroup memory {} KiB, invocations/workgroup {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup
        )?;
        write!(f, "\n    profile: {}", self.profile)
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

async fn enumerate(opts: &DeviceOptions) -> Result<Vec<wgpu::Adapter>> {
    let backends = opts.backends()?;
    Ok(instance(backends).enumerate_adapters(backends).await)
}

/// Every adapter the chosen backends expose, in `--adapter` index order.
pub fn list_adapters(opts: &DeviceOptions) -> Result<Vec<AdapterReport>> {
    block_on(list_adapters_async(opts), "list_adapters_async")
}

/// [`list_adapters`], awaiting the adapters (the browser hands them out asynchronously).
pub async fn list_adapters_async(opts: &DeviceOptions) -> Result<Vec<AdapterReport>> {
    Ok(enumerate(opts)
        .await?
        .iter()
        .enumerate()
        .map(|(index, a)| AdapterReport {
            index,
            info: a.get_info(),
            features: a.features(),
            limits: a.limits(),
            profile: DeviceProfile::new(
                a.get_info().device_type,
                (
                    a.features() & OPTIONAL_FEATURES,
                    a.get_info().subgroup_min_size,
                ),
                &opts.switches,
            ),
        })
        .collect())
}

fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// What a compiled pipeline is cached under: the shader and its variant's defines.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    defines: Defines,
}

/// The device, its queue, its real limits and the compiled pipelines.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    binding_cap: Option<u64>,
    memory_budget: Option<u64>,
    /// Set once the device is lost (a driver reset, a removed GPU, [`Self::destroy`]).
    lost: Arc<AtomicBool>,
    profile: DeviceProfile,
    timings: Option<Mutex<std::collections::BTreeMap<String, (u64, f64)>>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

impl GpuContext {
    /// Opens the adapter `opts` selects (best discrete, integrated, virtual, then CPU device).
    pub fn new(opts: &DeviceOptions) -> Result<Self> {
        block_on(Self::new_async(opts), "GpuContext::new_async")
    }

    /// [`Self::new`], awaiting the adapter and the device (the browser opens them
    /// asynchronously).
    pub async fn new_async(opts: &DeviceOptions) -> Result<Self> {
        let adapters = enumerate(opts).await?;
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "no adapter found for backend {}; install a Vulkan driver (on Linux without a GPU: \
                 `apt-get install mesa-vulkan-drivers libvulkan1`) or pick another --backend",
                opts.backend.as_deref().unwrap_or("auto")
            )));
        }
        let adapter = match &opts.adapter {
            Some(sel) => {
                let by_index = sel.parse::<usize>().ok().and_then(|i| adapters.get(i));
                let lower = sel.to_ascii_lowercase();
                by_index
                    .or_else(|| {
                        adapters
                            .iter()
                            .find(|a| a.get_info().name.to_ascii_lowercase().contains(&lower))
                    })
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(
                            "no adapter matches --adapter '{sel}'; `wmoe devices` lists them"
                        ))
                    })?
            }
            None => adapters
                .iter()
                .min_by_key(|a| rank(a.get_info().device_type))
                .expect("non-empty"),
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & OPTIONAL_FEATURES;
        if limits.max_compute_invocations_per_workgroup < 256
            || limits.max_compute_workgroup_storage_size < 16384
        {
            return Err(Error::MissingCapability {
                adapter: info.name.clone(),
                what: "compute workgroups of 256 invocations and 16 KiB of workgroup memory".into(),
                hint: "wmoe needs a GPU with WebGPU-level compute; pick another with --adapter"
                    .into(),
            });
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wmoe"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("could not open '{}': {e}", info.name)))?;
        let profile = DeviceProfile::new(
            info.device_type,
            (features, info.subgroup_min_size),
            &opts.switches,
        );
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| flag.store(true, Ordering::SeqCst));
        // wgpu's default: an error no scope caught is a bug, fatal. On a lost device every
        // call fails that way, and the failure is reported where the work's result is awaited.
        let flag = lost.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            if !flag.load(Ordering::SeqCst) {
                panic!("wgpu error: {e}");
            }
        }));
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            features,
            binding_cap: opts.switches.max_binding,
            memory_budget: opts.switches.gpu_memory,
            lost,
            timings: profile.timestamps.then(|| Mutex::new(Default::default())),
            profile,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// Largest byte size one storage binding may have on this device.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            .min(1 << 30)
            .min(self.binding_cap.unwrap_or(u64::MAX))
    }

    /// Refuses a plan of `needed` bytes of GPU memory for `what` when, beside `in_use` bytes
    /// already planned (say so in `beside`), it exceeds the memory budget
    /// (`WMOE_GPU_MEMORY`); `hint` gets the bytes still free and says what to change.
    pub fn check_fits(
        &self,
        what: &str,
        needed: u64,
        (in_use, beside): (u64, &str),
        hint: impl FnOnce(u64) -> String,
    ) -> Result<()> {
        let Some(budget) = self.memory_budget else {
            return Ok(());
        };
        let free = budget.saturating_sub(in_use);
        if needed <= free {
            return Ok(());
        }
        let offers = match in_use {
            0 => format!("it offers {} (WMOE_GPU_MEMORY)", mib(free)),
            _ => format!(
                "it offers {} (WMOE_GPU_MEMORY) beside the {} of {beside}",
                mib(free),
                mib(in_use)
            ),
        };
        Err(Error::MissingCapability {
            adapter: self.info.name.clone(),
            what: format!("{} of GPU memory for {what}", mib(needed)),
            hint: format!("{offers}; {}", hint(free)),
        })
    }

    /// Whether the device is lost: nothing run on it any more gives a result, and a new
    /// context must be opened.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Destroys the device, as a driver reset or a removed GPU would: what a test of
    /// recovering from a lost device starts from.
    pub fn destroy(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.device.destroy();
    }

    /// Every per-device choice kernels and the runtime make.
    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// Adds one timed dispatch to the profile.
    pub fn record_timing(&self, label: &str, ns: f64) {
        if let Some(p) = &self.timings {
            let mut p = p.lock().expect("profile poisoned");
            let e = p.entry(label.to_string()).or_default();
            e.0 += 1;
            e.1 += ns;
        }
    }

    /// The profile so far, one line per kernel label, slowest first; `None` when not profiling.
    pub fn profile_report(&self) -> Option<String> {
        let p = self.timings.as_ref()?.lock().expect("profile poisoned");
        let total: f64 = p.values().map(|v| v.1).sum();
        let mut rows: Vec<_> = p.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let mut out = format!(
            "{:<44} {:>8} {:>12} {:>10} {:>6}\n",
            "kernel", "calls", "total ms", "avg us", "%"
        );
        for (label, (n, ns)) in rows {
            out += &format!(
                "{label:<44} {n:>8} {:>12.2} {:>10.1} {:>6.1}\n",
                ns / 1e6,
                ns / 1e3 / *n as f64,
                100.0 * ns / total.max(1.0)
            );
        }
        Some(out)
    }

    /// The compute pipeline for `shader` (entry `main`) with `defines`, compiled once.
    pub fn pipeline(
        &self,
        name: &'static str,
        source: &str,
        defines: &Defines,
    ) -> wgpu::ComputePipeline {
        let key = PipelineKey {
            shader: name,
            defines: defines.clone(),
        };
        let mut cache = self.pipelines.lock().expect("pipeline cache poisoned");
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let code = preprocess(source, defines);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(code.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        cache.insert(key, pipeline.clone());
        pipeline
    }

    /// A storage buffer of `size` bytes (at least 4), usable as copy source and destination.
    pub fn storage(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// `storage` that reports running out of device memory as an error instead of a device
    /// error later.
    pub fn try_storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        match out_of_memory_checked(&self.device, || self.storage(label, size)) {
            Ok(buffer) => Ok(buffer),
            Err(e) => Err(Error::Gpu(format!(
                "out of GPU memory allocating {} MiB for the {label} ({e}); use a shorter --ctx, \
                 a smaller --kv-type or weight format, or a GPU with more memory",
                size >> 20
            ))),
        }
    }

    /// A storage buffer holding `data`.
    pub fn storage_with<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(label, bytes.len() as u64);
        if !bytes.is_empty() {
            self.write(&buf, 0, bytes);
        }
        buf
    }

    /// Writes `bytes` at `offset`, padding the tail to 4 bytes.
    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(buf, offset, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buf, offset, &padded);
        }
    }

    /// Copies `len` bytes at `offset` of `buf` back to the host (waits for the GPU).
    pub fn read_bytes(&self, buf: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        block_on(self.read_bytes_async(buf, offset, len), "read_bytes_async")
    }

    /// [`Self::read_bytes`], awaiting the GPU.
    pub async fn read_bytes_async(
        &self,
        buf: &wgpu::Buffer,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let size = len.next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size);
        let done = self.queue.submit([enc.finish()]);
        let mut data = read_mapped(&self.device, &staging, size, Some(done)).await?;
        data.truncate(len as usize);
        Ok(data)
    }

    /// Reads `n` f32 values starting at element `first`.
    pub fn read_f32(&self, buf: &wgpu::Buffer, first: u64, n: usize) -> Result<Vec<f32>> {
        block_on(self.read_f32_async(buf, first, n), "read_f32_async")
    }

    /// [`Self::read_f32`], awaiting the GPU.
    pub async fn read_f32_async(
        &self,
        buf: &wgpu::Buffer,
        first: u64,
        n: usize,
    ) -> Result<Vec<f32>> {
        let bytes = self.read_bytes_async(buf, first * 4, n as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads `n` u32 values starting at element `first`.
    pub fn read_u32(&self, buf: &wgpu::Buffer, first: u64, n: usize) -> Result<Vec<u32>> {
        block_on(self.read_u32_async(buf, first, n), "read_u32_async")
    }

    /// [`Self::read_u32`], awaiting the GPU.
    pub async fn read_u32_async(
        &self,
        buf: &wgpu::Buffer,
        first: u64,
        n: usize,
    ) -> Result<Vec<u32>> {
        let bytes = self.read_bytes_async(buf, first * 4, n as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The first `n` u32 values of the host-mappable `buf` (MAP_READ), once submission
    /// `done` has finished; later submissions keep the GPU busy meanwhile (sampled tokens
    /// read back one step late).
    pub fn read_mapped_u32(
        &self,
        buf: &wgpu::Buffer,
        n: usize,
        done: wgpu::SubmissionIndex,
    ) -> Result<Vec<u32>> {
        block_on(
            self.read_mapped_u32_async(buf, n, done),
            "read_mapped_u32_async",
        )
    }

    /// [`Self::read_mapped_u32`], awaiting the GPU.
    pub async fn read_mapped_u32_async(
        &self,
        buf: &wgpu::Buffer,
        n: usize,
        done: wgpu::SubmissionIndex,
    ) -> Result<Vec<u32>> {
        let bytes = read_mapped(&self.device, buf, 4 * n as u64, Some(done)).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// `bytes` in MiB, for messages.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
