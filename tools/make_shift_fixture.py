#!/usr/bin/env python3
"""Reference for wmoe's context shift (`--context-overflow shift --keep N`), from transformers.

Run from the repository root (CPU, a few seconds):

    python3 tools/make_shift_fixture.py

It loads assets/models/tiny-moe in float32 and runs it with a context of CTX positions
through transformers' own cache (DynamicCache: the attention layers' key/value tensors and
the conv states), applying llama.cpp's context shift to that cache whenever the context is
full and one more token must be fed:

  * keep the first KEEP positions, discard the next d = (n_past - KEEP) // 2,
  * move the keys and values of positions [KEEP + d, n_past) to [KEEP, n_past - d), the keys
    re-rotated by -d (the cache holds keys after q/k-norm and RoPE, so turning each
    rotate-half pair by the angle -d * inv_freq, with the model's own inv_freq, gives the key
    as if computed at its new position),
  * leave the conv states as they are,
  * feed the token at position n_past - d.

A prompt longer than the context is fed in pieces that end where the context is full (the
first shift happens inside the prompt), then N_GEN tokens are generated greedily, one per
call. The prompt is drawn with a fixed seed; draws whose greedy choice has a near tie
(top-1 minus top-2 logit below MIN_GAP of max |logit|) are redrawn, so an exact greedy
comparison is meaningful.

Writes assets/models/tiny-moe/context_shift.safetensors:
  prompt I32 [P], tokens I32 [N_GEN] (greedy, step i's argmax), logits F32 [N_GEN, V]
  (step 0: after the prompt; step i: after feeding tokens[i - 1]), and the metadata
  ctx, keep, shifts (positions at which the context was shifted, as JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "assets" / "models" / "tiny-moe"
OUT = MODEL / "context_shift.safetensors"
CTX, KEEP, PROMPT_LEN, N_GEN = 32, 4, 40, 40
BOS_ID, EOS_ID = 1, 7
MIN_GAP = 0.02


def rotate(x, inv_freq, shift):
    """x [B, H, S, D] (RoPE'd keys) turned by the angle -shift * inv_freq per pair."""
    ang = (torch.tensor(float(shift), dtype=torch.float32) * inv_freq).double()
    cos = ang.cos().float()
    sin = (-ang.sin()).float()
    cos, sin = torch.cat([cos, cos]), torch.cat([sin, sin])
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def shift(cache, n_past, keep, inv_freq):
    """llama.cpp's context shift on transformers' cache; returns the new n_past."""
    d = (n_past - keep) // 2
    for layer in cache.layers:
        if not hasattr(layer, "keys"):
            continue  # conv layer: its state stays as it is
        k, v = layer.keys, layer.values
        assert k.shape[-2] == n_past
        layer.keys = torch.cat([k[:, :, :keep], rotate(k[:, :, keep + d :], inv_freq, d)], dim=2)
        layer.values = torch.cat([v[:, :, :keep], v[:, :, keep + d :]], dim=2)
    return n_past - d


def run(model, prompt):
    inv_freq = model.model.pos_emb.inv_freq.float()
    cache, n_past, shifts = None, 0, []

    def feed(ids):
        nonlocal cache, n_past
        pos = torch.arange(n_past, n_past + len(ids))[None]
        out = model(input_ids=torch.tensor(ids)[None], position_ids=pos, cache=cache, use_cache=True)
        cache = out.cache
        n_past += len(ids)
        return out.logits[0, -1].float()

    rest = list(prompt)
    while True:
        if n_past == CTX:
            shifts.append(n_past)
            n_past = shift(cache, n_past, KEEP, inv_freq)
        n = min(len(rest), CTX - n_past)
        logits = feed(rest[:n])
        rest = rest[n:]
        if not rest:
            break
    tokens, steps = [], []
    for i in range(N_GEN):
        if i > 0:
            if n_past == CTX:
                shifts.append(n_past)
                n_past = shift(cache, n_past, KEEP, inv_freq)
            logits = feed([tokens[-1]])
        steps.append(logits)
        tokens.append(int(logits.argmax()))
    return tokens, torch.stack(steps), shifts


def min_gap(logits):
    top = logits.topk(2, dim=-1).values
    return float(((top[:, 0] - top[:, 1]) / logits.abs().amax(dim=-1)).min())


def main():
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for attempt in range(100):
            ids = torch.randint(8, vocab, (PROMPT_LEN - 1,), generator=gen).tolist()
            prompt = [BOS_ID] + ids
            tokens, logits, shifts = run(model, prompt)
            gap = min_gap(logits)
            if gap >= MIN_GAP and len(shifts) >= 3:
                break
        else:
            raise SystemExit("no prompt draw without a greedy near-tie")
    meta = {
        "ctx": str(CTX),
        "keep": str(KEEP),
        "shifts": json.dumps(shifts),
        "min_gap": f"{gap:.4f}",
        "transformers": transformers.__version__,
    }
    save_file(
        {
            "prompt": np.array(prompt, dtype=np.int32),
            "tokens": np.array(tokens, dtype=np.int32),
            "logits": logits.numpy().astype(np.float32),
        },
        str(OUT),
        metadata=meta,
    )
    print(f"{OUT.relative_to(REPO)}: attempt {attempt}, shifts at {shifts}, min greedy gap {gap:.4f}")


if __name__ == "__main__":
    main()
