#!/usr/bin/env python3
"""Generate the random-weight LFM2 / LFM2-MoE reference fixtures used by wmoe's tests.

Run from the repository root:

    python3 tools/make_fixtures.py            # (re)create every model under assets/models/
    python3 tools/make_fixtures.py tiny-moe   # only the named model(s)

For every model this script

  1. draws random weights (seeded, peaked logits, non-unit norms, non-zero expert bias),
     rounded to the checkpoint dtype,
  2. picks a random prompt and checks the acceptance criteria (router top-k margins, greedy
     top-1/top-2 gaps); failing draws are re-drawn from the same seeded generator,
  3. saves the checkpoint with `save_pretrained` (per-expert HUB layout, float32 expert_bias),
     rewrites config.json for the legacy/top-level-rope variants,
  4. RELOADS the checkpoint from disk in float32, checks that it holds exactly the drawn
     weights, and computes the reference (prefill logits, one-token decode logits, greedy
     continuation) on CPU in float32 into reference.safetensors.

Everything is seeded and single-threaded, so two runs produce byte-identical files.
See tools/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    Lfm2Config,
    Lfm2ForCausalLM,
    Lfm2MoeConfig,
    Lfm2MoeForCausalLM,
)

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parent.parent
OUT_ROOT = REPO / "assets" / "models"
# LFM2-8B-A1B's chat template, given to the trained tokenizer of tiny-moe.
CHAT_TEMPLATE = REPO / "assets" / "chat-templates" / "LFM2-8B-A1B.jinja"

BOS_ID, EOS_ID, PAD_ID = 1, 7, 0
N_GREEDY = 24
MIN_DISTINCT_GREEDY = 6  # reject degenerate continuations (one token repeated)
ROUTER_MARGIN_MIN = 2e-3  # k-th minus (k+1)-th selection score (sigmoid(logit) + bias)
SEARCH_SLACK = 1.25  # the search (batched / cached path) uses thresholds this much stricter
DECODE_REL_TOL = 1e-4

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|fim_pre|>",
    "<|fim_mid|>",
    "<|fim_suf|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tool_list_start|>",
    "<|tool_list_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|tool_response_start|>",
    "<|tool_response_end|>",
]

# LFM2 v1 pre-tokenizer regex (MODEL-SPEC section 6.1).
LFM2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Training text for the tiny tokenizer. Embedded (rather than read from the system) so that the
# tokenizer is identical on every machine and Python version.
TOKENIZER_CORPUS = """\
Hello! Hello, world. Hello there, how are you today? I am fine, thank you, and you?
The quick brown fox jumps over the lazy dog. The five boxing wizards jump quickly.
A language model reads a sequence of tokens and predicts the next one. Each token is a small
piece of text: a whole word, a part of a word, a number, or a single byte of punctuation.
This tokenizer was trained on a few paragraphs of plain English so that the test model has a
real byte-level vocabulary with merges, special tokens and a chat template.
The runtime loads the weights, builds the compute pipelines for the graphics card, and then runs
the prompt through every layer of the network. Convolution layers keep a small state of the last
two inputs; attention layers keep the keys and values of every earlier position in a cache.
In a mixture of experts, a router scores every expert for every token, picks the best few, and
adds their outputs together with weights that sum to one. Only a small part of the model is used
for each token, which is why such models are fast even when they are large.
Numbers like 1, 2, 3, 10, 42, 100, 256, 1024, 2048 and 65536 appear in configuration files.
Dates such as 2025-10-07 and times such as 12:30 are common too. So are e-mail addresses and
paths like /usr/share/doc, src/main.rs, or C:\\Program Files\\.
What is the weather like today? It is sunny and warm, with a light wind from the west.
Please write a short poem about the sea. The sea is wide, the sea is deep, the waves roll in
and out while the harbour lights are asleep.
Can you help me with my homework? Of course! What would you like to learn about today?
The user asked a question, and the assistant answered it. Then the user asked another one.
Tools can be called by the assistant: it writes the name of the function and its arguments,
the program runs the function, and the result is sent back as a tool response.
def main():
    print("Hello, world!")
    for i in range(10):
        if i % 2 == 0:
            print(i, "is even")
        else:
            print(i, "is odd")
    return 0
fn main() {
    let x: u32 = 42;
    println!("Hello from Rust: {}", x);
}
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
Good morning. Good afternoon. Good evening. Good night. See you tomorrow!
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age
of foolishness, it was the epoch of belief, it was the epoch of incredulity.
All happy families are alike; each unhappy family is unhappy in its own way.
In the beginning the computer was a large machine that filled a whole room; today a phone in
your pocket is many thousand times faster and it runs on a battery for a whole day.
"""

# --------------------------------------------------------------------------------------------
# Model definitions
# --------------------------------------------------------------------------------------------


def layer_types(n_layers, attn_idxs):
    return ["full_attention" if i in attn_idxs else "conv" for i in range(n_layers)]


MODELS = [
    dict(
        name="tiny-moe",
        kind="moe",
        dtype="bfloat16",
        hidden=64,
        heads=4,
        kv_heads=2,
        layers=6,
        attn_idxs=[2, 5],
        num_dense_layers=2,
        intermediate=136,
        moe_intermediate=40,
        experts=8,
        top_k=2,
        vocab=None,  # = tokenizer size
        use_expert_bias=True,
        routed_scaling_factor=1.5,
        norm_topk_prob=True,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=True,
        prompt_len=40,
        seed=1000,
    ),
    dict(
        name="moe-f32-sharded",
        kind="moe",
        dtype="float32",
        hidden=72,
        heads=3,
        kv_heads=1,
        layers=5,
        attn_idxs=[1, 3],
        num_dense_layers=1,
        intermediate=88,
        moe_intermediate=44,
        experts=6,
        top_k=3,
        vocab=300,
        use_expert_bias=True,
        routed_scaling_factor=0.75,
        norm_topk_prob=True,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="toplevel_rope",
        tie=True,
        prompt_len=300,
        max_shard_size="400KB",
        seed=2000,
    ),
    dict(
        name="dense-f16-legacy",
        kind="dense",
        dtype="float16",
        hidden=96,
        heads=6,
        kv_heads=6,
        layers=4,
        attn_idxs=[0, 2],
        block_ff_dim=256,  # raw; effective = 32 * ceil(int(2*256/3) / 32) = 192
        auto_adjust=True,
        ffn_multiplier=1.0,
        multiple_of=32,
        vocab=260,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="legacy",
        tie=True,
        prompt_len=64,
        seed=3000,
    ),
    dict(
        name="dense-bf16",
        kind="dense",
        dtype="bfloat16",
        hidden=128,
        heads=2,
        kv_heads=1,
        layers=3,
        attn_idxs=[1],
        block_ff_dim=128,  # auto_adjust false: used verbatim
        auto_adjust=False,
        ffn_multiplier=1.0,
        multiple_of=256,
        vocab=333,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=True,
        prompt_len=17,
        seed=4000,
    ),
    dict(
        name="moe-bf16-gqa4",
        kind="moe",
        dtype="bfloat16",
        hidden=128,
        heads=8,
        kv_heads=2,
        layers=4,
        attn_idxs=[1, 3],
        num_dense_layers=1,
        intermediate=96,
        moe_intermediate=24,
        experts=32,
        top_k=4,
        vocab=400,
        use_expert_bias=True,
        routed_scaling_factor=1.0,
        norm_topk_prob=True,
        rope_theta=5e6,
        norm_eps=1e-6,
        config_style="modern",
        tie=True,
        prompt_len=200,
        seed=5000,
        init=dict(final_norm_scale=0.6),  # keep max|logit| near 30
    ),
]

# Weight-draw knobs shared by all models (see README): tuned so that final logits are peaked.
INIT_DEFAULT = dict(
    gain=2.0,  # Linear weights ~ N(0, (gain / sqrt(fan_in))^2)
    logit_std=1.2,  # embedding std = logit_std / sqrt(H) before the per-row scale below
    emb_row_lognormal=0.7,  # per-row embedding scale exp(N(0, s^2)) -> heavier-tailed logits
    router_std=1.2,  # router weights ~ N(0, (router_std / sqrt(H))^2)
    norm_std=0.2,  # norm weights = 1 + norm_std * N(0,1)
    final_norm_scale=1.0,  # final norm (embedding_norm) weights are scaled by this
    conv_std=0.5,  # depthwise conv taps
    expert_bias_std=0.1,
)

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def build_config(spec):
    common = dict(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        layer_types=layer_types(spec["layers"], spec["attn_idxs"]),
        rope_parameters={"rope_type": "default", "rope_theta": float(spec["rope_theta"])},
        norm_eps=spec["norm_eps"],
        conv_bias=False,
        conv_L_cache=3,
        max_position_embeddings=128000,
        tie_word_embeddings=spec["tie"],
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        use_cache=True,
    )
    if spec["kind"] == "moe":
        cfg = Lfm2MoeConfig(
            intermediate_size=spec["intermediate"],
            moe_intermediate_size=spec["moe_intermediate"],
            num_dense_layers=spec["num_dense_layers"],
            num_experts=spec["experts"],
            num_experts_per_tok=spec["top_k"],
            use_expert_bias=spec["use_expert_bias"],
            routed_scaling_factor=spec["routed_scaling_factor"],
            norm_topk_prob=spec["norm_topk_prob"],
            **common,
        )
    else:
        cfg = Lfm2Config(
            intermediate_size=spec["block_ff_dim"],
            block_auto_adjust_ff_dim=spec["auto_adjust"],
            block_ffn_dim_multiplier=spec["ffn_multiplier"],
            block_multiple_of=spec["multiple_of"],
            **common,
        )
    cfg.dtype = spec["dtype"]
    return cfg


def effective_ff(spec):
    ff = spec["block_ff_dim"]
    if spec["auto_adjust"]:
        ff = int(2 * ff / 3)
        ff = int(spec["ffn_multiplier"] * ff)
        m = spec["multiple_of"]
        ff = m * ((ff + m - 1) // m)
    return ff


def draw_weights(model, spec, gen):
    """Fill every parameter / persistent buffer with seeded random values rounded to the
    checkpoint dtype (the model itself stays float32)."""
    dt = DTYPES[spec["dtype"]]
    H = spec["hidden"]
    INIT = {**INIT_DEFAULT, **spec.get("init", {})}
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            rn = torch.randn(shape, generator=gen, dtype=torch.float32)
            if name == "model.embedding_norm.weight":  # final norm: also sets the logit scale
                w = INIT["final_norm_scale"] * (1.0 + INIT["norm_std"] * rn)
            elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                w = 1.0 + INIT["norm_std"] * rn
            elif name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                rows = torch.exp(
                    INIT["emb_row_lognormal"] * torch.randn(shape[0], 1, generator=gen)
                )
                w = rn * (INIT["logit_std"] / math.sqrt(H)) * rows
            elif name.endswith("conv.conv.weight"):
                w = rn * INIT["conv_std"]
            elif name.endswith("feed_forward.gate.weight"):
                w = rn * (INIT["router_std"] / math.sqrt(shape[-1]))
            elif p.dim() >= 2:  # Linear [out, in] or stacked experts [E, out, in]
                w = rn * (INIT["gain"] / math.sqrt(shape[-1]))
            else:
                raise RuntimeError(f"unexpected parameter {name} {tuple(shape)}")
            p.copy_(w.to(dt).to(torch.float32))
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                # float32 buffer in every checkpoint dtype; no rounding
                b.copy_(torch.randn(b.shape, generator=gen) * INIT["expert_bias_std"])


class RouterProbe:
    """Captures selection scores (sigmoid(router logits) + expert_bias) of every MoE layer."""

    def __init__(self, model, spec):
        self.k = spec.get("top_k")
        self.caps = []
        self.handles = []
        if spec["kind"] != "moe":
            return
        for i, layer in enumerate(model.model.layers):
            if i < spec["num_dense_layers"]:
                continue
            blk = layer.feed_forward
            self.handles.append(blk.gate.register_forward_hook(self._hook(blk)))

    def _hook(self, blk):
        def fn(_mod, _inp, out):
            logits = out[0].detach().float()
            s = logits.sigmoid()
            if blk.use_expert_bias:
                s = s + blk.expert_bias.float()
            self.caps.append(s)

        return fn

    def clear(self):
        self.caps.clear()

    def margins(self):
        """[n_moe_layers, N] margin between k-th and (k+1)-th selection score."""
        out = []
        for s in self.caps:
            srt = s.sort(dim=-1, descending=True).values
            out.append(srt[:, self.k - 1] - srt[:, self.k])
        return torch.stack(out) if out else None

    def remove(self):
        for h in self.handles:
            h.remove()


def rand_tokens(gen, n, vocab):
    """Uniform token ids in [0, vocab) without EOS (7)."""
    x = torch.randint(0, vocab - 1, (n,), generator=gen)
    return x + (x >= EOS_ID).long()


def gap_ratio(logits):
    """(top1 - top2) / max|logit| along the last dim."""
    top = logits.topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]) / logits.abs().amax(dim=-1)


@torch.no_grad()
def full_logits(model, ids):
    return model(input_ids=ids[None], use_cache=False).logits[0].float()


@torch.no_grad()
def greedy_full(model, prompt, n):
    """Greedy continuation with a full (uncached) forward per step. Returns tokens, step logits."""
    seq = prompt.clone()
    toks, steps = [], []
    for _ in range(n):
        lg = full_logits(model, seq)[-1]
        nxt = int(lg.argmax())
        toks.append(nxt)
        steps.append(lg)
        seq = torch.cat([seq, torch.tensor([nxt])])
    return torch.tensor(toks, dtype=torch.long), torch.stack(steps)


@torch.no_grad()
def decode_incremental(model, prompt):
    """HF cached decode, one token per call starting from the first token alone."""
    past = None
    rows = []
    for t in range(prompt.numel()):
        out = model(input_ids=prompt[t : t + 1][None], past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0, -1].float())
    return torch.stack(rows), past


@torch.no_grad()
def decode_by_prefixes(model, prompt):
    """Fallback: logits of the last position of a full forward over every prefix."""
    return torch.stack([full_logits(model, prompt[: t + 1])[-1] for t in range(prompt.numel())])


# --------------------------------------------------------------------------------------------
# Search for an accepted draw
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def fix_prompt_router_ties(model, probe, prompt, gen, vocab, thr, max_fixes=2000):
    """Re-draw prompt tokens (positions 0..T-2, left to right) whose router margin is a near
    tie. Causal model: changing token p never changes margins at positions < p."""
    fixes = 0
    T = prompt.numel()
    while True:
        probe.clear()
        model(input_ids=prompt[:-1][None], use_cache=False)
        m = probe.margins()
        if m is None:
            return prompt, fixes
        bad = (m.min(dim=0).values < thr).nonzero().flatten()
        if bad.numel() == 0:
            return prompt, fixes
        p = int(bad[0])
        assert p < T - 1
        prompt[p] = rand_tokens(gen, 1, vocab)[0]
        fixes += 1
        if fixes > max_fixes:
            raise RuntimeError("could not remove router near-ties from the prompt")


@torch.no_grad()
def screen_last_token(model, probe, prefix, cands, gap_thr, margin_thr):
    """Batched cached greedy for candidate last prompt tokens. Returns a bool mask of
    candidates that pass (with slack) the router-margin and greedy-gap criteria."""
    B = cands.numel()
    out = model(input_ids=prefix[None].expand(B, -1).contiguous(), use_cache=True)
    past = out.past_key_values
    ok = torch.ones(B, dtype=torch.bool)
    cur = cands[:, None]
    toks = []
    for step in range(N_GREEDY + 1):
        probe.clear()
        out = model(input_ids=cur, past_key_values=past, use_cache=True)
        past = out.past_key_values
        m = probe.margins()
        if m is not None:
            ok &= m.min(dim=0).values >= margin_thr
        if step == N_GREEDY:  # only needed the router of the last generated token
            break
        lg = out.logits[:, -1].float()
        ok &= gap_ratio(lg) >= gap_thr
        cur = lg.argmax(dim=-1, keepdim=True)
        toks.append(cur[:, 0])
    toks = torch.stack(toks, dim=1)
    ok &= torch.tensor([len(set(t.tolist())) >= MIN_DISTINCT_GREEDY for t in toks])
    return ok


@torch.no_grad()
def evaluate(model, probe, prompt, gap_thr):
    """Exact (single-sequence, full-forward) acceptance check. Returns dict of stats."""
    greedy, steps = greedy_full(model, prompt, N_GREEDY)
    gaps = gap_ratio(steps)
    probe.clear()
    model(input_ids=torch.cat([prompt, greedy])[None], use_cache=False)
    m = probe.margins()
    min_margin = float(m.min()) if m is not None else float("nan")
    ok = (
        bool((gaps >= gap_thr).all())
        and (m is None or min_margin >= ROUTER_MARGIN_MIN)
        and len(set(greedy.tolist())) >= MIN_DISTINCT_GREEDY
    )
    return dict(
        ok=ok,
        greedy=greedy,
        min_gap_ratio=float(gaps.min()),
        min_gap_abs=float((steps.topk(2).values[:, 0] - steps.topk(2).values[:, 1]).min()),
        min_margin=min_margin,
    )


def search(model, spec, gap_thr):
    vocab = spec["vocab"]
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    probe = RouterProbe(model, spec)
    T = spec["prompt_len"]
    prompt = rand_tokens(gen, T, vocab)
    prompt, fixes = fix_prompt_router_ties(
        model, probe, prompt, gen, vocab, ROUTER_MARGIN_MIN * SEARCH_SLACK
    )
    B = 32
    tried = 0
    for _batch in range(4):
        cands = rand_tokens(gen, B, vocab)
        ok = screen_last_token(
            model,
            probe,
            prompt[:-1],
            cands,
            gap_thr * SEARCH_SLACK,
            ROUTER_MARGIN_MIN * SEARCH_SLACK,
        )
        for i in range(B):
            tried += 1
            if not ok[i]:
                continue
            cand = prompt.clone()
            cand[-1] = cands[i]
            ev = evaluate(model, probe, cand, gap_thr)
            if ev["ok"]:
                probe.remove()
                return cand, dict(prompt_fixes=fixes, last_token_tries=tried)
    probe.remove()
    return None, dict(prompt_fixes=fixes, last_token_tries=tried)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def convert_stacked_experts_if_needed(out_dir):
    """transformers 5 keeps experts stacked in memory (gate_up_proj [E,2Fe,H], down_proj
    [E,H,Fe]). If save_pretrained wrote them stacked, split them into the HUB per-expert
    layout. Returns True if a conversion was done."""
    from safetensors.torch import load_file, save_file

    files = sorted(out_dir.glob("*.safetensors"))
    changed = False
    for f in files:
        sd = load_file(str(f))
        if not any(k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj") for k in sd):
            continue
        new = {}
        for k, v in sd.items():
            if k.endswith("experts.gate_up_proj"):
                base = k[: -len("gate_up_proj")]
                fe = v.shape[1] // 2
                for e in range(v.shape[0]):
                    new[f"{base}{e}.w1.weight"] = v[e, :fe].contiguous()
                    new[f"{base}{e}.w3.weight"] = v[e, fe:].contiguous()
            elif k.endswith("experts.down_proj"):
                base = k[: -len("down_proj")]
                for e in range(v.shape[0]):
                    new[f"{base}{e}.w2.weight"] = v[e].contiguous()
            else:
                new[k] = v
        save_file(new, str(f), metadata={"format": "pt"})
        changed = True
    if changed:
        idx = out_dir / "model.safetensors.index.json"
        if idx.exists():
            wm = {}
            total = 0
            for f in files:
                with safe_open(str(f), "pt") as sf:
                    for k in sf.keys():
                        wm[k] = f.name
                        t = sf.get_slice(k)
                        n = int(np.prod(t.get_shape()))
                        total += n * {"F32": 4, "BF16": 2, "F16": 2}[t.get_dtype()]
            data = json.loads(idx.read_text())
            data["weight_map"] = dict(sorted(wm.items()))
            data.setdefault("metadata", {})["total_size"] = total
            idx.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return changed


def rewrite_config(out_dir, spec):
    path = out_dir / "config.json"
    cfg = json.loads(path.read_text())
    theta = float(spec["rope_theta"])
    style = spec["config_style"]
    if style == "toplevel_rope":
        cfg.pop("rope_parameters", None)
        cfg["rope_theta"] = theta
    elif style == "legacy":
        n = cfg["num_hidden_layers"]
        cfg["full_attn_idxs"] = [i for i, t in enumerate(cfg.pop("layer_types")) if t == "full_attention"]
        assert len(cfg["full_attn_idxs"]) < n
        cfg["tie_embedding"] = cfg.pop("tie_word_embeddings")
        cfg["block_ff_dim"] = cfg.pop("intermediate_size")
        cfg.pop("rope_parameters", None)
        cfg["rope_theta"] = theta
        # HF has no alias for block_dim, so hidden_size stays (original LFM2 configs carry both).
        cfg["block_dim"] = cfg["hidden_size"]
        cfg["block_auto_adjust_ff_dim"] = spec["auto_adjust"]
        cfg["block_ffn_dim_multiplier"] = spec["ffn_multiplier"]
        cfg["block_multiple_of"] = spec["multiple_of"]
        cfg["torch_dtype"] = cfg.pop("dtype")  # transformers-4 era key
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return cfg


def write_generation_config(out_dir):
    gc = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    (out_dir / "generation_config.json").write_text(json.dumps(gc, indent=2, sort_keys=True) + "\n")


def check_checkpoint_layout(out_dir, spec, cfg):
    """Assert the on-disk tensor names/shapes/dtypes are the HUB layout."""
    dt_name = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[spec["dtype"]]
    tensors = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        if f.name == "reference.safetensors":
            continue
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                sl = sf.get_slice(k)
                tensors[k] = (tuple(sl.get_shape()), sl.get_dtype())
    H = spec["hidden"]
    for k, (shape, dtype) in tensors.items():
        want = "F32" if k.endswith("expert_bias") else dt_name
        assert dtype == want, (k, dtype, want)
        assert "gate_up_proj" not in k and "down_proj" not in k, k
    for i, t in enumerate(cfg.layer_types):
        p = f"model.layers.{i}."
        if t == "conv":
            assert tensors[p + "conv.conv.weight"][0] == (H, 1, 3)
            assert tensors[p + "conv.in_proj.weight"][0] == (3 * H, H)
        else:
            assert tensors[p + "self_attn.q_proj.weight"][0] == (H, H)
        if spec["kind"] == "moe" and i >= spec["num_dense_layers"]:
            fe = spec["moe_intermediate"]
            for e in range(spec["experts"]):
                q = p + f"feed_forward.experts.{e}."
                assert tensors[q + "w1.weight"][0] == (fe, H)
                assert tensors[q + "w3.weight"][0] == (fe, H)
                assert tensors[q + "w2.weight"][0] == (H, fe)
            assert tensors[p + "feed_forward.expert_bias"] == ((spec["experts"],), "F32")
            assert tensors[p + "feed_forward.gate.weight"][0] == (spec["experts"], H)
        else:
            ff = spec["intermediate"] if spec["kind"] == "moe" else effective_ff(spec)
            assert tensors[p + "feed_forward.w1.weight"][0] == (ff, H), (tensors[p + "feed_forward.w1.weight"], ff)
    assert ("lm_head.weight" in tensors) == (not spec["tie"])
    return tensors


def dir_bytes(d):
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(vocab_size=512):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LFM2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = TOKENIZER_CORPUS.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer)
    # BOS is prepended by the tokenizer itself (add_bos_token true, as in LFM2).
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A:0",
        pair="<|startoftext|> $A:0 <|startoftext|> $B:1",
        special_tokens=[("<|startoftext|>", BOS_ID)],
    )
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return tok


def write_tokenizer(out_dir, tok):
    from tokenizers import Tokenizer

    tok.save(str(out_dir / "tokenizer.json"), pretty=True)
    template = CHAT_TEMPLATE.read_text()
    (out_dir / "chat_template.jinja").write_text(template)
    tcfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|pad|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 128000,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": template,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2, sort_keys=True) + "\n")
    # verification: the tokenizers library loads the file back
    tok2 = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    ids = tok2.encode("Hello", add_special_tokens=False).ids
    ids_bos = tok2.encode("Hello", add_special_tokens=True).ids
    assert ids_bos == [BOS_ID] + ids, ids_bos
    assert tok2.decode(ids) == "Hello"
    text = "Hello, world! <|im_start|>user\nHi<|im_end|>\n 12345 don't"
    rt = tok2.decode(tok2.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
    assert rt == text, rt
    ref = {"prompt": "Hello", "token_ids": ids, "token_ids_with_bos": ids_bos}
    (out_dir / "reference_text.json").write_text(json.dumps(ref, indent=2) + "\n")
    # transformers also loads it, with the chat template
    from transformers import AutoTokenizer

    htok = AutoTokenizer.from_pretrained(str(out_dir))
    assert htok.bos_token_id == BOS_ID and htok.eos_token_id == EOS_ID and htok.pad_token_id == PAD_ID
    assert htok("Hello", add_special_tokens=False)["input_ids"] == ids
    rendered = htok.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered.startswith("<|startoftext|><|im_start|>user\nHello<|im_end|>\n"), rendered
    return ids


# --------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------


def make_model(spec, gap_thr_default, tokenizer=None):
    t0 = time.time()
    name = spec["name"]
    out_dir = OUT_ROOT / name
    if spec["vocab"] is None:
        spec["vocab"] = tokenizer.get_vocab_size()
    torch.manual_seed(spec["seed"])  # HF init is overwritten anyway; keep it deterministic
    cfg = build_config(spec)
    cls = Lfm2MoeForCausalLM if spec["kind"] == "moe" else Lfm2ForCausalLM

    gap_thr = spec.get("gap_thr", gap_thr_default)
    prompt = None
    for attempt in range(16):
        seed = spec["seed"] + 17 * attempt
        model = cls(cfg).eval()
        draw_weights(model, {**spec}, torch.Generator().manual_seed(seed))
        spec_s = {**spec, "seed": seed}
        prompt, sinfo = search(model, spec_s, gap_thr)
        log(f"  [{name}] weight seed {seed}: {'accepted' if prompt is not None else 'rejected'} {sinfo}")
        if prompt is not None:
            break
    if prompt is None:
        raise RuntimeError(f"{name}: no accepted draw")

    # ---- save in the checkpoint dtype -------------------------------------------------------
    drawn = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    dt = DTYPES[spec["dtype"]]
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(dt)
        # expert_bias stays float32 (it is a persistent float32 buffer in the HF model)
    model.config.dtype = spec["dtype"]
    save_kw = {}
    if spec.get("max_shard_size"):
        save_kw["max_shard_size"] = spec["max_shard_size"]
    model.save_pretrained(str(out_dir), **save_kw)
    del model
    converted = convert_stacked_experts_if_needed(out_dir)
    modern_cfg_text = (out_dir / "config.json").read_text()
    rewrite_config(out_dir, spec)
    write_generation_config(out_dir)
    if spec.get("max_shard_size"):
        shards = sorted(out_dir.glob("model-*.safetensors"))
        assert (out_dir / "model.safetensors.index.json").exists() and len(shards) >= 2, shards

    # ---- reload fresh in float32 and verify ---------------------------------------------------
    ref_model = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32).eval()
    lcfg = ref_model.config
    assert type(ref_model) is cls, type(ref_model)
    assert lcfg.layer_types == cfg.layer_types, (lcfg.layer_types, cfg.layer_types)
    assert lcfg.tie_word_embeddings == cfg.tie_word_embeddings
    assert lcfg.intermediate_size == cfg.intermediate_size
    assert lcfg.hidden_size == cfg.hidden_size
    assert float(lcfg.rope_parameters["rope_theta"]) == float(spec["rope_theta"]), lcfg.rope_parameters
    if spec["config_style"] == "legacy":
        assert AutoConfig.from_pretrained(str(out_dir)).dtype == DTYPES[spec["dtype"]]
    if spec["config_style"] != "modern":
        # the same checkpoint read through the modern config must be the same model
        mod_cfg = AutoConfig.for_model(**{k: v for k, v in json.loads(modern_cfg_text).items() if k != "model_type"}, model_type=cfg.model_type)
        for key in ("layer_types", "tie_word_embeddings", "intermediate_size", "hidden_size", "rope_parameters", "num_key_value_heads"):
            assert getattr(mod_cfg, key) == getattr(lcfg, key), (key, getattr(mod_cfg, key), getattr(lcfg, key))
    sd = ref_model.state_dict()
    for k, v in drawn.items():
        if k.endswith("rotary_emb.inv_freq") or k.endswith("pos_emb.inv_freq") or "inv_freq" in k:
            continue
        assert k in sd, k
        assert sd[k].dtype == torch.float32, (k, sd[k].dtype)
        assert torch.equal(sd[k], v), f"{name}: reloaded {k} differs from the drawn weights"
    layout = check_checkpoint_layout(out_dir, spec, cfg)

    # ---- reference from the reloaded model ---------------------------------------------------
    probe = RouterProbe(ref_model, spec)
    ev = evaluate(ref_model, probe, prompt, gap_thr)
    probe.remove()
    if not ev["ok"]:
        raise RuntimeError(f"{name}: accepted draw fails on the reloaded checkpoint: {ev}")
    prefill = full_logits(ref_model, prompt)
    decode, past = decode_incremental(ref_model, prompt)
    scale = float(prefill.abs().max())
    rel = float((decode - prefill).abs().max()) / scale
    decode_method = "hf_incremental_cache"
    if rel > DECODE_REL_TOL:
        log(f"  [{name}] HF incremental decode disagrees with prefill (rel {rel:.2e}); using prefixes")
        decode = decode_by_prefixes(ref_model, prompt)
        rel_inc = rel
        rel = float((decode - prefill).abs().max()) / scale
        decode_method = f"full_forward_per_prefix (hf_incremental rel err {rel_inc:.2e})"
        assert rel <= DECODE_REL_TOL
    cache_classes = sorted({type(l).__name__ for l in getattr(past, "layers", [])})
    # the greedy continuation must also be what the prefill logits of prompt+greedy say
    seq = torch.cat([prompt, ev["greedy"]])
    chk = full_logits(ref_model, seq)[prompt.numel() - 1 : -1].argmax(-1)
    assert torch.equal(chk, ev["greedy"]), "greedy continuation not self-consistent"

    meta = {
        "model": name,
        "decode_logits_method": decode_method,
        "greedy": "argmax, full forward per step, EOS ignored",
        "min_greedy_gap_ratio": f"{ev['min_gap_ratio']:.6f}",
        "min_router_margin": "none (dense)" if math.isnan(ev["min_margin"]) else f"{ev['min_margin']:.6f}",
        "gap_threshold_ratio": f"{gap_thr}",
        "router_margin_threshold": f"{ROUTER_MARGIN_MIN}",
        "transformers_version": transformers.__version__,
    }
    np_save_file(
        {
            "prompt_tokens": prompt.numpy().astype(np.int32),
            "prefill_logits": prefill.numpy().astype(np.float32),
            "decode_logits": decode.numpy().astype(np.float32),
            "greedy_tokens": ev["greedy"].numpy().astype(np.int32),
        },
        str(out_dir / "reference.safetensors"),
        # one entry only: safetensors stores metadata in a hash map, so several entries would be
        # written in a random order and the file would not be reproducible
        metadata={"reference_info": json.dumps(meta, sort_keys=True)},
    )
    if tokenizer is not None:
        write_tokenizer(out_dir, tokenizer)
    for f in out_dir.iterdir():
        f.chmod(0o644)  # safetensors writes 0600

    n_params = sum(int(np.prod(s)) for s, _ in layout.values())
    return dict(
        name=name,
        kind=spec["kind"],
        dtype=spec["dtype"],
        H=spec["hidden"],
        L=spec["layers"],
        V=spec["vocab"],
        T=prompt.numel(),
        params=n_params,
        bytes=dir_bytes(out_dir),
        max_logit=scale,
        med_prefill_gap=float((prefill.topk(2).values[:, 0] - prefill.topk(2).values[:, 1]).median()),
        min_gap=ev["min_gap_ratio"],
        min_gap_abs=ev["min_gap_abs"],
        min_margin=ev["min_margin"],
        decode_rel=rel,
        decode_method=decode_method.split(" ")[0],
        stacked_converted=converted,
        cache_classes=cache_classes,
        seconds=time.time() - t0,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="subset of model names (default: all)")
    ap.add_argument(
        "--gap-threshold",
        type=float,
        default=0.02,
        help="min (top1-top2)/max|logit| at every greedy step (default 0.02)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # bitwise-reproducible CPU results
    torch.use_deterministic_algorithms(True)
    names = [m["name"] for m in MODELS]
    todo = args.models or names
    for n in todo:
        if n not in names:
            sys.exit(f"unknown model {n}; choose from {names}")
    log(f"transformers {transformers.__version__}, torch {torch.__version__}")
    rows = []
    t0 = time.time()
    for spec in MODELS:
        if spec["name"] not in todo:
            continue
        spec = dict(spec)
        tok = None
        if spec["name"] == "tiny-moe":
            tok = train_tokenizer(512)
        log(f"== {spec['name']}")
        rows.append(make_model(spec, args.gap_threshold, tok))
    log("")
    hdr = (
        f"{'model':18} {'kind':5} {'dtype':8} {'H':>4} {'L':>2} {'V':>4} {'T':>4} {'params':>8} "
        f"{'KiB':>6} {'max|lg|':>8} {'gap/max':>8} {'gap':>7} {'medgap':>7} {'rtr_mrg':>8} {'dec_rel':>9}  time"
    )
    log(hdr)
    for r in rows:
        mm = "-" if math.isnan(r["min_margin"]) else f"{r['min_margin']:.4f}"
        log(
            f"{r['name']:18} {r['kind']:5} {r['dtype']:8} {r['H']:>4} {r['L']:>2} {r['V']:>4} {r['T']:>4} "
            f"{r['params']:>8} {r['bytes'] / 1024:>6.0f} {r['max_logit']:>8.2f} {r['min_gap']:>8.4f} "
            f"{r['min_gap_abs']:>7.3f} {r['med_prefill_gap']:>7.3f} {mm:>8} {r['decode_rel']:>9.2e}  {r['seconds']:.1f}s"
        )
    log("")
    for r in rows:
        log(
            f"{r['name']}: decode_logits from {r['decode_method']}; stacked experts converted by script: "
            f"{r['stacked_converted']}; HF cache layer classes: {', '.join(r['cache_classes'])}"
        )
    log(f"total assets/models size: {dir_bytes(OUT_ROOT) / 1024:.0f} KiB; elapsed {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
