//! Records a step's dispatches into one compute pass, with every dispatch's parameters in one
//! uniform arena written once, then submits once.

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
    label: &'static str,
    params_offset: u64,
    params_size: u64,
    bindings: Vec<Binding>,
    groups: [u32; 3],
}

struct Copy {
    src: wgpu::Buffer,
    src_offset: u64,
    dst: wgpu::Buffer,
    dst_offset: u64,
    size: u64,
}

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
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        params: &P,
        storage: &[Binding],
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
            label,
            params_offset,
            params_size: (bytes.len() as u64).next_multiple_of(16),
            bindings: storage.to_vec(),
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
    pub fn labels(&self) -> Vec<&'static str> {
        self.dispatches.iter().map(|d| d.label).collect()
    }

    /// Writes the arena, records one compute pass and submits it.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        let device = &self.ctx.device;
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: (self.arena.len() as u64).max(256),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if !self.arena.is_empty() {
            self.ctx.queue.write_buffer(&arena, 0, &self.arena);
        }
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
                for (i, b) in d.bindings.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &b.buffer,
                            offset: b.offset,
                            size: b.size.and_then(wgpu::BufferSize::new),
                        }),
                    });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.label),
                    layout: &d.pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            })
            .collect();
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for (d, g) in self.dispatches.iter().zip(&groups) {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        }
        for c in &self.copies {
            enc.copy_buffer_to_buffer(&c.src, c.src_offset, &c.dst, c.dst_offset, c.size);
        }
        self.ctx.queue.submit([enc.finish()])
    }
}

/// A grid of `n` workgroups folded into x and y so no dimension passes 65535; kernels
/// linearise with `wid.x + wid.y * nwg.x` and exit past `n`.
pub fn fold_groups(n: u32, z: u32) -> [u32; 3] {
    let x = n.clamp(1, 65535);
    [x, n.div_ceil(x).max(1), z]
}
