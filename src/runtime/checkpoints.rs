//! Conv-state checkpoints: snapshots of every short-conv layer's state at chosen positions of a
//! sequence. The KV cache of a shared prefix stays valid when a sequence is rewritten after
//! it, but a conv state holds the last inputs and cannot be truncated; returning to a prefix
//! restores the latest snapshot at or before it, and only the rest is fed again.

use super::state::{LayerState, SequenceState};
use crate::error::Result;
use crate::gpu::{BufferCopy, GpuContext};

/// Snapshots a session keeps; when full, the oldest chunk-boundary snapshot goes first.
const MAX_CHECKPOINTS: usize = 64;

/// One snapshot: the conv states after `pos` tokens, all layers in one buffer.
struct Checkpoint {
    pos: usize,
    /// Taken at the end of a turn (a prefill or a generation), not at a chunk boundary.
    turn_end: bool,
    buffer: wgpu::Buffer,
}

/// The snapshots of one sequence, by position.
#[derive(Default)]
pub(crate) struct ConvCheckpoints {
    entries: Vec<Checkpoint>,
}

/// Each conv layer's state buffer with its offset in a snapshot.
fn conv_states(seq: &SequenceState) -> Vec<(&wgpu::Buffer, u64)> {
    let mut offset = 0;
    let mut out = Vec::new();
    for layer in &seq.layers {
        if let LayerState::Conv { state } = layer {
            out.push((state, offset));
            offset += state.size();
        }
    }
    out
}

impl ConvCheckpoints {
    /// The copies that snapshot `seq`'s conv states as they are after `pos` tokens (to run
    /// after the step that reaches `pos`); replaces a snapshot already at `pos`.
    pub fn snapshot(
        &mut self,
        ctx: &GpuContext,
        seq: &SequenceState,
        pos: usize,
        turn_end: bool,
    ) -> Result<Vec<BufferCopy>> {
        let states = conv_states(seq);
        let bytes: u64 = states.iter().map(|(b, _)| b.size()).sum();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let at = self.entries.iter().position(|c| c.pos == pos);
        let buffer = match at {
            Some(i) => self.entries.remove(i).buffer,
            None => ctx.try_storage("conv checkpoint", bytes)?,
        };
        let copies = states
            .iter()
            .map(|(state, offset)| BufferCopy {
                src: (*state).clone(),
                src_offset: 0,
                dst: buffer.clone(),
                dst_offset: *offset,
                size: state.size(),
            })
            .collect();
        if self.entries.len() >= MAX_CHECKPOINTS {
            let oldest = self.entries.iter().position(|c| !c.turn_end).unwrap_or(0);
            self.entries.remove(oldest);
        }
        let i = self.entries.partition_point(|c| c.pos < pos);
        self.entries.insert(
            i,
            Checkpoint {
                pos,
                turn_end,
                buffer,
            },
        );
        Ok(copies)
    }

    /// The latest snapshot position at or before `pos`.
    pub fn latest_at_or_before(&self, pos: usize) -> Option<usize> {
        self.entries.iter().rev().map(|c| c.pos).find(|&p| p <= pos)
    }

    /// Copies the snapshot at `pos` back into `seq`'s conv states and forgets later
    /// snapshots (the sequence is rewritten from `pos`).
    pub fn restore(&mut self, ctx: &GpuContext, seq: &SequenceState, pos: usize) {
        self.forget_after(pos);
        let Some(c) = self.entries.last().filter(|c| c.pos == pos) else {
            return;
        };
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for (state, offset) in conv_states(seq) {
            enc.copy_buffer_to_buffer(&c.buffer, offset, state, 0, state.size());
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Forgets the snapshots after `pos`.
    pub fn forget_after(&mut self, pos: usize) {
        self.entries.retain(|c| c.pos <= pos);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Every snapshot: position, whether it ends a turn, and its buffer.
    pub fn iter(&self) -> impl Iterator<Item = (usize, bool, &wgpu::Buffer)> {
        self.entries.iter().map(|c| (c.pos, c.turn_end, &c.buffer))
    }

    /// Adds a snapshot holding `bytes` (a saved session's), in position order.
    pub fn insert(
        &mut self,
        ctx: &GpuContext,
        pos: usize,
        turn_end: bool,
        bytes: &[u8],
    ) -> Result<()> {
        let buffer = ctx.try_storage("conv checkpoint", bytes.len() as u64)?;
        ctx.write(&buffer, 0, bytes);
        let i = self.entries.partition_point(|c| c.pos < pos);
        self.entries.insert(
            i,
            Checkpoint {
                pos,
                turn_end,
                buffer,
            },
        );
        Ok(())
    }

    /// Bytes one snapshot of `seq` takes.
    pub fn snapshot_bytes(seq: &SequenceState) -> u64 {
        conv_states(seq).iter().map(|(b, _)| b.size()).sum()
    }
}
