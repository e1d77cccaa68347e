//! Records a step's dispatches into one compute pass and plans it once: pipelines, bind
//! groups and the uniform arenas are built when the step is first recorded; running the plan
//! at a later position rewrites only the parameters that depend on it, encodes and submits.

use std::ops::RangeInclusive;
use web_time::Instant;

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

/// The words a planned step changes between runs: a step recorded at one position runs at
/// any other its plan holds for, with only the dispatches that read these rewritten.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepVars {
    /// Cache position of the step's first token.
    pub pos0: u32,
}

/// Writes a dispatch's parameters for the step's variables (those of every sequence the step
/// advances; the writer picks its own).
type Positioned = Box<dyn Fn(&[StepVars], &mut [u8])>;

/// A recorded dispatch: its parameters sit in the fixed or the positioned arena.
struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    label: String,
    params: Slot,
    bindings: Vec<(u32, Binding)>,
    groups: [u32; 3],
}

/// Where a dispatch's parameters live.
#[derive(Clone, Copy)]
struct Slot {
    positioned: bool,
    offset: u64,
    size: u64,
}

/// A buffer copy recorded after the compute pass (e.g. the sampled token into a readback buffer).
#[derive(Clone, Debug)]
pub struct BufferCopy {
    pub src: wgpu::Buffer,
    pub src_offset: u64,
    pub dst: wgpu::Buffer,
    pub dst_offset: u64,
    pub size: u64,
}

/// Collects a step's dispatches; `finish` turns them into a `Plan` (pipelines, bind groups
/// and uniform arenas built once), `submit` runs them once. A step may advance several
/// sequences, each with its own variables: dispatches recorded after `sequence(i)` read
/// sequence i's.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    vars: Vec<StepVars>,
    /// The sequence whose variables the dispatches now recorded read.
    seq: usize,
    dispatches: Vec<Dispatch>,
    fixed: Vec<u8>,
    positioned: Vec<u8>,
    writers: Vec<(u64, Positioned)>,
    /// Per sequence, the positions the plan holds for.
    holds: Vec<RangeInclusive<u32>>,
    align: u64,
}

impl<'a> Recorder<'a> {
    /// A recorder for a step at position 0.
    pub fn new(ctx: &'a GpuContext) -> Self {
        Self::at(ctx, StepVars::default())
    }

    /// A recorder for a step of one sequence with `vars`; kernels read them through `vars()`.
    pub fn at(ctx: &'a GpuContext, vars: StepVars) -> Self {
        Self::batch(ctx, &[vars])
    }

    /// A recorder for a step that advances several sequences, sequence i with `vars[i]`
    /// (at least one); sequence 0 is current.
    pub fn batch(ctx: &'a GpuContext, vars: &[StepVars]) -> Self {
        assert!(!vars.is_empty(), "a step advances at least one sequence");
        Recorder {
            ctx,
            vars: vars.to_vec(),
            seq: 0,
            dispatches: Vec::new(),
            fixed: Vec::new(),
            positioned: Vec::new(),
            writers: Vec::new(),
            holds: vec![0..=u32::MAX; vars.len()],
            align: ctx.limits.min_uniform_buffer_offset_alignment.max(16) as u64,
        }
    }

    /// Makes sequence `i` current: the dispatches recorded next read its variables.
    pub fn sequence(&mut self, i: usize) {
        assert!(i < self.vars.len(), "sequence {i} is not in this step");
        self.seq = i;
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// The variables of the current sequence of the step being recorded.
    pub fn vars(&self) -> StepVars {
        self.vars[self.seq]
    }

    /// Restricts the positions the plan holds for: a kernel whose dispatch shape depends on
    /// the position (split-KV attention) says where its recorded shape stays right.
    pub fn hold_for(&mut self, positions: RangeInclusive<u32>) {
        let holds = &mut self.holds[self.seq];
        let lo = *holds.start().max(positions.start());
        let hi = *holds.end().min(positions.end());
        *holds = lo..=hi;
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
        self.dispatch_numbered(label, pipeline, params, numbered(storage), groups);
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
        let slot = push_slot(
            &mut self.fixed,
            bytemuck::bytes_of(params),
            self.align,
            false,
        );
        self.push(label, pipeline, slot, storage, groups);
    }

    /// `dispatch` whose parameters depend on the step's position: `params` computes them
    /// now and again each time a plan of this step runs at another position.
    pub fn dispatch_positioned<P: bytemuck::Pod>(
        &mut self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        params: impl Fn(&StepVars) -> P + 'static,
        storage: &[Binding],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        let seq = self.seq;
        let now = params(&self.vars[seq]);
        let slot = push_slot(
            &mut self.positioned,
            bytemuck::bytes_of(&now),
            self.align,
            true,
        );
        let write: Positioned = Box::new(move |v: &[StepVars], out: &mut [u8]| {
            let p = params(&v[seq]);
            let bytes = bytemuck::bytes_of(&p);
            out[..bytes.len()].copy_from_slice(bytes);
        });
        self.writers.push((slot.offset, write));
        self.push(label, pipeline, slot, numbered(storage), groups);
    }

    fn push(
        &mut self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        params: Slot,
        bindings: Vec<(u32, Binding)>,
        groups: [u32; 3],
    ) {
        self.dispatches.push(Dispatch {
            pipeline: pipeline.clone(),
            label: label.to_string(),
            params,
            bindings,
            groups,
        });
    }

    /// Writes the arenas, records one compute pass and submits it.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        let vars = self.vars.clone();
        self.finish().run_batch(&vars, &[]).index
    }

    /// The recorded step as a plan: bind groups and arenas built once, reusable at every
    /// position it holds for.
    pub fn finish(self) -> Plan<'a> {
        let device = &self.ctx.device;
        let arena = |label: &str, bytes: &[u8]| {
            let buf = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (bytes.len() as u64).max(256),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            if !bytes.is_empty() {
                self.ctx.queue.write_buffer(&buf, 0, bytes);
            }
            buf
        };
        let fixed = arena("uniform arena", &self.fixed);
        let positioned = arena("positioned uniform arena", &self.positioned);
        let dispatches = self
            .dispatches
            .into_iter()
            .map(|d| {
                let arena = if d.params.positioned {
                    &positioned
                } else {
                    &fixed
                };
                PlannedDispatch {
                    group: bind_group(device, &d, arena),
                    pipeline: d.pipeline,
                    label: d.label,
                    groups: d.groups,
                }
            })
            .collect();
        Plan {
            ctx: self.ctx,
            dispatches,
            vars: self.vars,
            positioned_bytes: self.positioned,
            positioned,
            writers: self.writers,
            holds: self.holds,
            _fixed: fixed,
        }
    }
}

/// Binding numbers 1.. for `storage` in order.
fn numbered(storage: &[Binding]) -> Vec<(u32, Binding)> {
    storage
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u32 + 1, b.clone()))
        .collect()
}

/// Appends `bytes` to `arena` at an aligned slot.
fn push_slot(arena: &mut Vec<u8>, bytes: &[u8], align: u64, positioned: bool) -> Slot {
    let offset = arena.len() as u64;
    arena.extend_from_slice(bytes);
    let padded = (bytes.len() as u64).next_multiple_of(align);
    arena.resize((offset + padded) as usize, 0);
    Slot {
        positioned,
        offset,
        size: (bytes.len() as u64).next_multiple_of(16),
    }
}

/// The bind group of one dispatch: its parameter slot in `arena`, then its storage.
fn bind_group(device: &wgpu::Device, d: &Dispatch, arena: &wgpu::Buffer) -> wgpu::BindGroup {
    let buffer = |buffer, offset, size: Option<u64>| {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset,
            size: size.and_then(wgpu::BufferSize::new),
        })
    };
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: buffer(arena, d.params.offset, Some(d.params.size)),
    }];
    for (i, b) in &d.bindings {
        entries.push(wgpu::BindGroupEntry {
            binding: *i,
            resource: buffer(&b.buffer, b.offset, b.size),
        });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(&d.label),
        layout: &d.pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// A submitted step: its index, and when its commands were ready to submit (the host's part
/// of a step ends there; on some drivers, e.g. lavapipe, `submit` itself runs the work).
pub struct Submitted {
    pub index: wgpu::SubmissionIndex,
    pub encoded: Instant,
}

struct PlannedDispatch {
    pipeline: wgpu::ComputePipeline,
    label: String,
    group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// A step planned once: pipelines, bind groups and uniform arenas ready; running it at a
/// position rewrites only the positioned parameters, encodes one pass and submits.
pub struct Plan<'a> {
    ctx: &'a GpuContext,
    dispatches: Vec<PlannedDispatch>,
    /// The variables (per sequence) the positioned arena holds now.
    vars: Vec<StepVars>,
    positioned_bytes: Vec<u8>,
    positioned: wgpu::Buffer,
    writers: Vec<(u64, Positioned)>,
    holds: Vec<RangeInclusive<u32>>,
    _fixed: wgpu::Buffer,
}

impl Plan<'_> {
    /// Whether the plan of a one-sequence step is right for `vars`.
    pub fn holds_for(&self, vars: &StepVars) -> bool {
        self.holds_for_batch(std::slice::from_ref(vars))
    }

    /// Whether the plan is right for a step whose sequences have `vars` (as many as it was
    /// recorded for).
    pub fn holds_for_batch(&self, vars: &[StepVars]) -> bool {
        vars.len() == self.holds.len()
            && vars
                .iter()
                .zip(&self.holds)
                .all(|(v, h)| h.contains(&v.pos0))
    }

    /// Runs the one-sequence step with `vars` (which the plan must hold for), then `copies`.
    pub fn run(&mut self, vars: StepVars, copies: &[BufferCopy]) -> Submitted {
        self.run_batch(&[vars], copies)
    }

    /// Runs the step with its sequences at `vars` (which the plan must hold for), then
    /// `copies`.
    pub fn run_batch(&mut self, vars: &[StepVars], copies: &[BufferCopy]) -> Submitted {
        debug_assert!(self.holds_for_batch(vars), "plan run outside its positions");
        if vars != self.vars && !self.writers.is_empty() {
            for (offset, write) in &self.writers {
                write(vars, &mut self.positioned_bytes[*offset as usize..]);
            }
            // Queue-ordered: steps already submitted read the arena before this write lands.
            self.ctx
                .queue
                .write_buffer(&self.positioned, 0, &self.positioned_bytes);
            self.vars = vars.to_vec();
        }
        self.encode_and_submit(copies)
    }

    /// Records the compute pass and the copies, and submits.
    fn encode_and_submit(&self, copies: &[BufferCopy]) -> Submitted {
        let device = &self.ctx.device;
        let mut enc = device.create_command_encoder(&Default::default());
        // WMOE_PROFILE=1: a timestamp before and after each dispatch (where the device can).
        let timed = if self.ctx.profile().timestamps {
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
            for (i, d) in self.dispatches.iter().enumerate() {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.group, &[]);
                if let Some(q) = queries.as_ref().filter(|_| i < timed) {
                    pass.write_timestamp(q, 2 * i as u32);
                }
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                if let Some(q) = queries.as_ref().filter(|_| i < timed) {
                    pass.write_timestamp(q, 2 * i as u32 + 1);
                }
            }
        }
        for c in copies {
            enc.copy_buffer_to_buffer(&c.src, c.src_offset, &c.dst, c.dst_offset, c.size);
        }
        let Some(q) = queries else {
            let commands = enc.finish();
            let encoded = Instant::now();
            let index = self.ctx.queue.submit([commands]);
            return Submitted { index, encoded };
        };
        let bytes = 16 * timed as u64;
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(&q, 0..2 * timed as u32, &resolved, 0);
        let commands = enc.finish();
        let encoded = Instant::now();
        let index = self.ctx.queue.submit([commands]);
        if let Ok(raw) = self.ctx.read_bytes(&resolved, 0, bytes) {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&raw);
            let period = self.ctx.queue.get_timestamp_period() as f64;
            for (i, d) in self.dispatches.iter().take(timed).enumerate() {
                let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
                self.ctx.record_timing(&d.label, ns);
            }
        }
        Submitted { index, encoded }
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
