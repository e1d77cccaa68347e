//! Records a step's dispatches into one compute pass, with every dispatch's parameters in one
//! uniform arena written once, then submits once; a `BindCache` lets later steps of the same
//! shape reuse the arena buffer and bind groups.

use super::GpuContext;

/// A storage buffer (or a window of one) bound to a kernel.
#[derive(Clone, Debug)]
pub struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: Option<u64>,
}

impl Binding {
    /// The whole buffer.
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Binding {
            buffer: buffer.clone(),
            offset: 0,
            size: None,
        }
    }
}

impl From<&wgpu::Buffer> for Binding {
    fn from(b: &wgpu::Buffer) -> Self {
        Binding::whole(b)
    }
}

struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    label: String,
    params_offset: u64,
    params_size: u64,
    bindings: Vec<(u32, Binding)>,
    groups: [u32; 3],
}

struct Copy {
    src: wgpu::Buffer,
    src_offset: u64,
    dst: wgpu::Buffer,
    dst_offset: u64,
    size: u64,
}

/// What makes two dispatches' bind groups interchangeable.
#[derive(PartialEq, Eq)]
struct GroupKey {
    pipeline: wgpu::ComputePipeline,
    params: (u64, u64),
    bindings: Vec<(u32, wgpu::Buffer, u64, Option<u64>)>,
}

/// One submitted step's uniform arena and bind groups.
struct CachedStep {
    key: Vec<GroupKey>,
    arena_len: u64,
    arena: wgpu::Buffer,
    groups: Vec<wgpu::BindGroup>,
}

/// Bind groups of recent steps, reused by a later step of the same shape (same pipelines,
/// bindings and parameter layout) so that only the uniform arena is rewritten: every decode
/// step has one shape, so generation creates its bind groups once. A session owns one, so
/// the buffers it references live no longer than the session.
#[derive(Default)]
pub struct BindCache {
    steps: Vec<CachedStep>,
}

/// Step shapes a cache keeps (decode, and the prefill chunk shapes around it).
const CACHED_STEPS: usize = 4;

/// Collects dispatches; `submit` records them in order into one pass and submits once.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    dispatches: Vec<Dispatch>,
    copies: Vec<Copy>,
    arena: Vec<u8>,
    align: u64,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Recorder {
            ctx,
            dispatches: Vec::new(),
            copies: Vec::new(),
            arena: Vec::new(),
            align: ctx.limits.min_uniform_buffer_offset_alignment.max(16) as u64,
        }
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// Adds one dispatch: binding 0 is `params` (uniform), bindings 1.. are `storage` in order.
    /// A grid with a zero dimension is skipped.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        params: &P,
        storage: &[Binding],
        groups: [u32; 3],
    ) {
        let numbered: Vec<(u32, Binding)> = storage
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32 + 1, b.clone()))
            .collect();
        self.dispatch_numbered(label, pipeline, params, numbered, groups);
    }

    /// `dispatch` with explicit binding numbers (for shaders whose optional bindings sit at
    /// fixed numbers).
    pub fn dispatch_numbered<P: bytemuck::Pod>(
        &mut self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        params: &P,
        storage: Vec<(u32, Binding)>,
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        let bytes = bytemuck::bytes_of(params);
        let params_offset = self.arena.len() as u64;
        self.arena.extend_from_slice(bytes);
        let padded = (bytes.len() as u64).next_multiple_of(self.align);
        self.arena.resize((params_offset + padded) as usize, 0);
        self.dispatches.push(Dispatch {
            pipeline: pipeline.clone(),
            label: label.to_string(),
            params_offset,
            params_size: (bytes.len() as u64).next_multiple_of(16),
            bindings: storage,
            groups,
        });
    }

    /// A buffer copy recorded after the compute pass (e.g. the sampled token into a readback buffer).
    pub fn copy_after(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.copies.push(Copy {
            src: src.clone(),
            src_offset,
            dst: dst.clone(),
            dst_offset,
            size,
        });
    }

    /// Number of dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Labels of the recorded dispatches, in order.
    pub fn labels(&self) -> Vec<&str> {
        self.dispatches.iter().map(|d| d.label.as_str()).collect()
    }

    /// Writes the arena, records one compute pass and submits it.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        self.submit_cached(&mut BindCache::default())
    }

    /// `submit`, taking the arena and bind groups from `cache` when a step of this shape
    /// was submitted before (and leaving this step's there).
    pub fn submit_cached(self, cache: &mut BindCache) -> wgpu::SubmissionIndex {
        let key: Vec<GroupKey> = self
            .dispatches
            .iter()
            .map(|d| GroupKey {
                pipeline: d.pipeline.clone(),
                params: (d.params_offset, d.params_size),
                bindings: d
                    .bindings
                    .iter()
                    .map(|(i, b)| (*i, b.buffer.clone(), b.offset, b.size))
                    .collect(),
            })
            .collect();
        let arena_len = self.arena.len() as u64;
        let step = match cache
            .steps
            .iter()
            .position(|c| c.arena_len == arena_len && c.key == key)
        {
            Some(i) => cache.steps.remove(i),
            None => self.build_groups(key),
        };
        if !self.arena.is_empty() {
            // Queue-ordered: steps already submitted read the arena before this write lands.
            self.ctx.queue.write_buffer(&step.arena, 0, &self.arena);
        }
        let index = self.encode_and_submit(&step.groups);
        cache.steps.push(step);
        if cache.steps.len() > CACHED_STEPS {
            cache.steps.remove(0);
        }
        index
    }

    /// A fresh arena and bind groups for this step.
    fn build_groups(&self, key: Vec<GroupKey>) -> CachedStep {
        let device = &self.ctx.device;
        let arena_len = self.arena.len() as u64;
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: arena_len.max(256),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let groups: Vec<wgpu::BindGroup> = self
            .dispatches
            .iter()
            .map(|d| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &arena,
                        offset: d.params_offset,
                        size: wgpu::BufferSize::new(d.params_size),
                    }),
                }];
                for (i, b) in &d.bindings {
                    entries.push(wgpu::BindGroupEntry {
                        binding: *i,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &b.buffer,
                            offset: b.offset,
                            size: b.size.and_then(wgpu::BufferSize::new),
                        }),
                    });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&d.label),
                    layout: &d.pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            })
            .collect();
        CachedStep {
            key,
            arena_len,
            arena,
            groups,
        }
    }

    /// Records the compute pass with `groups` (one per dispatch) and the copies, and submits.
    fn encode_and_submit(&self, groups: &[wgpu::BindGroup]) -> wgpu::SubmissionIndex {
        let device = &self.ctx.device;
        let mut enc = device.create_command_encoder(&Default::default());
        // WMOE_PROFILE=1: a timestamp before and after each dispatch (where the device can).
        let timed = if self.ctx.profiling() {
            self.dispatches.len().min(MAX_TIMED)
        } else {
            0
        };
        let queries = (timed > 0).then(|| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * timed as u32,
            })
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for (i, (d, g)) in self.dispatches.iter().zip(groups).enumerate() {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, g, &[]);
                if let Some(q) = queries.as_ref().filter(|_| i < timed) {
                    pass.write_timestamp(q, 2 * i as u32);
                }
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                if let Some(q) = queries.as_ref().filter(|_| i < timed) {
                    pass.write_timestamp(q, 2 * i as u32 + 1);
                }
            }
        }
        for c in &self.copies {
            enc.copy_buffer_to_buffer(&c.src, c.src_offset, &c.dst, c.dst_offset, c.size);
        }
        let Some(q) = queries else {
            return self.ctx.queue.submit([enc.finish()]);
        };
        let bytes = 16 * timed as u64;
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(&q, 0..2 * timed as u32, &resolved, 0);
        let index = self.ctx.queue.submit([enc.finish()]);
        if let Ok(raw) = self.ctx.read_bytes(&resolved, 0, bytes) {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&raw);
            let period = self.ctx.queue.get_timestamp_period() as f64;
            for (i, d) in self.dispatches.iter().take(timed).enumerate() {
                let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
                self.ctx.record_profile(&d.label, ns);
            }
        }
        index
    }
}

/// Dispatches timed per submit under WMOE_PROFILE (two queries each, 4096 per query set).
const MAX_TIMED: usize = 2048;

/// A grid of `n` workgroups folded into x and y so no dimension passes 65535; kernels
/// linearise with `wid.x + wid.y * nwg.x` and exit past `n`.
pub fn fold_groups(n: u32, z: u32) -> [u32; 3] {
    let x = n.clamp(1, 65535);
    [x, n.div_ceil(x).max(1), z]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, Rng};
    use crate::kernels::copy;

    /// A step of the same shape reuses the cached bind groups and sees its own parameters; a
    /// step with other buffers gets its own entry.
    #[test]
    fn bind_cache_reuses_groups_with_fresh_parameters() {
        let Some(ctx) = context() else { return };
        let mut rng = Rng::new(9);
        let data: Vec<u32> = (0..256).map(|_| rng.next_u64() as u32).collect();
        let src = ctx.storage_with("src", &data);
        let (a, b) = (poisoned(ctx, 256), poisoned(ctx, 256));
        let mut cache = BindCache::default();
        for (dst, words, steps) in [(&a, 64, 1), (&a, 128, 1), (&b, 256, 2)] {
            let mut rec = Recorder::new(ctx);
            copy::record(&mut rec, &(&src).into(), &dst.into(), words as u64 * 4);
            rec.submit_cached(&mut cache);
            assert_eq!(cache.steps.len(), steps);
            let got = ctx.read_u32(dst, 0, words).unwrap();
            assert_eq!(got, data[..words], "{words} words");
        }
    }
}
