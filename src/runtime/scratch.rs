//! Activation buffers one step works in, sized for the longest chunk the session runs.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::{attention, moe_gather, Heads, KvType};
use crate::model::Config;

/// Activation buffers sized for one chunk.
pub(crate) struct Scratch {
    pub chunk: usize,
    pub tokens: wgpu::Buffer,
    pub rope: wgpu::Buffer,
    pub h: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    pub proj: wgpu::Buffer,
    pub act: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub attn_parts: wgpu::Buffer,
    pub expert_out: wgpu::Buffer,
    pub router_logits: wgpu::Buffer,
    pub ids: wgpu::Buffer,
    pub route_weights: wgpu::Buffer,
    pub lists: Option<moe_gather::Buffers>,
    pub logits: wgpu::Buffer,
    pub next_token: wgpu::Buffer,
}

impl Scratch {
    /// Allocates for chunks of up to `chunk` tokens over a KV cache of up to `kv_pages` pages
    /// of `page_positions`, the chunk lowered so every buffer fits one binding.
    pub fn new(
        ctx: &GpuContext,
        cfg: &Config,
        chunk: usize,
        (kv_pages, page_positions): (usize, usize),
    ) -> Result<Self> {
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (k, e, fe) = cfg
            .moe
            .as_ref()
            .map_or((0, 0, 0), |m| (m.top_k, m.n_experts, m.ffn));
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let proj_row = (3 * h).max(qkv).max(2 * cfg.ffn).max(k * 2 * fe);
        let act_row = h.max(cfg.n_heads * hd).max(cfg.ffn).max(k * fe);
        let heads = Heads {
            n_heads: cfg.n_heads as u32,
            n_kv: cfg.n_kv_heads as u32,
            head_dim: hd as u32,
            kv: KvType::F32,
        };
        let kv_pages = (kv_pages, page_positions as u32);
        let parts_row = attention::partials_len(heads, 1, (kv_pages.0, 1));
        let widest = proj_row
            .max(act_row)
            .max(k * h)
            .max(cfg.vocab)
            .max(parts_row);
        let fit = (ctx.max_binding() / (4 * widest as u64)) as usize;
        if fit == 0 {
            return Err(Error::Input(format!(
                "a single row of {widest} floats exceeds this device's binding limit"
            )));
        }
        let chunk = chunk.min(fit).max(1);
        let f = |n: usize| (4 * n) as u64;
        Ok(Scratch {
            chunk,
            tokens: ctx.storage("tokens", f(chunk)),
            rope: ctx.storage("rope", f(chunk * hd)),
            h: ctx.storage("residual", f(chunk * h)),
            xn: ctx.storage("normed", f(chunk * h)),
            proj: ctx.storage("projection", f(chunk * proj_row)),
            act: ctx.storage("activation", f(chunk * act_row)),
            q: ctx.storage("queries", f(chunk * cfg.n_heads * hd)),
            attn_parts: ctx.storage(
                "attention partials",
                f(attention::partials_len(heads, chunk, kv_pages)),
            ),
            expert_out: ctx.storage("expert outputs", f(chunk * k * h)),
            router_logits: ctx.storage("router logits", f(chunk * e)),
            ids: ctx.storage("expert ids", f(chunk * k)),
            route_weights: ctx.storage("routing weights", f(chunk * k)),
            lists: cfg
                .moe
                .as_ref()
                .map(|_| moe_gather::Buffers::new(ctx, e, chunk * k)),
            logits: ctx.storage("logits", f(chunk * cfg.vocab)),
            next_token: ctx.storage("next token", 4),
        })
    }
}
