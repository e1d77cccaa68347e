#!/usr/bin/env python3
"""Long-prompt reference: transformers' logits for a prompt of more than 4K tokens.

Run from the repository root (CPU, under a minute):

    python3 tools/make_long_fixture.py

It loads assets/models/dense-bf16 in float32 and computes, on CPU in f32,

  * the logits of one full forward over a PROMPT_LEN-token prompt (no cache), of which only
    a subset of positions is kept to keep the file small: every STRIDE-th position, the
    positions around 4096 and the last few,
  * a greedy continuation of N_GEN tokens through transformers' cache (one token per call),
    with the logits of each step (step 0: the last prompt position; step i: after feeding
    token i - 1).

The prompt is drawn with a fixed seed; draws whose greedy steps have a near tie (top-1
minus top-2 logit below MIN_GAP of max |logit|) are redrawn, so an exact greedy comparison
is meaningful.

Writes assets/models/dense-bf16/long_reference.safetensors:
  prompt I32 [PROMPT_LEN], positions I32 [K], prefill_logits F32 [K, V] (the logits at those
  positions), tokens I32 [N_GEN], decode_logits F32 [N_GEN, V].
"""

from __future__ import annotations

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
MODEL = REPO / "assets" / "models" / "dense-bf16"
OUT = MODEL / "long_reference.safetensors"
PROMPT_LEN, STRIDE, N_GEN = 4200, 257, 8
BOS_ID = 1
MIN_GAP = 0.02


def positions():
    keep = set(range(0, PROMPT_LEN, STRIDE)) | {4095, 4096, 4097}
    keep |= set(range(PROMPT_LEN - 4, PROMPT_LEN))
    return sorted(keep)


def greedy(model, prompt):
    out = model(input_ids=torch.tensor(prompt)[None], use_cache=True)
    cache, logits = out.cache, out.logits[0, -1].float()
    tokens, steps = [], []
    for i in range(N_GEN):
        if i > 0:
            out = model(input_ids=torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True)
            cache, logits = out.cache, out.logits[0, -1].float()
        steps.append(logits)
        tokens.append(int(logits.argmax()))
    return tokens, torch.stack(steps)


def min_gap(logits):
    top = logits.topk(2, dim=-1).values
    return float(((top[:, 0] - top[:, 1]) / logits.abs().amax(dim=-1)).min())


def main():
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(4096)
    with torch.no_grad():
        for attempt in range(20):
            prompt = [BOS_ID] + torch.randint(8, vocab, (PROMPT_LEN - 1,), generator=gen).tolist()
            tokens, steps = greedy(model, prompt)
            gap = min_gap(steps)
            if gap >= MIN_GAP:
                break
        else:
            raise SystemExit("no prompt draw without a greedy near-tie")
        full = model(input_ids=torch.tensor(prompt)[None], use_cache=False).logits[0].float()
    pos = positions()
    cached_vs_full = float((steps[0] - full[-1]).abs().max() / full[-1].abs().max())
    save_file(
        {
            "prompt": np.array(prompt, dtype=np.int32),
            "positions": np.array(pos, dtype=np.int32),
            "prefill_logits": full[pos].numpy().astype(np.float32),
            "tokens": np.array(tokens, dtype=np.int32),
            "decode_logits": steps.numpy().astype(np.float32),
        },
        str(OUT),
        metadata={
            "min_gap": f"{gap:.4f}",
            "cached_vs_full": f"{cached_vs_full:.2e}",
            "transformers": transformers.__version__,
        },
    )
    print(
        f"{OUT.relative_to(REPO)}: attempt {attempt}, {len(pos)} positions kept, "
        f"min greedy gap {gap:.4f}, cached vs full last logits {cached_vs_full:.2e}"
    )


if __name__ == "__main__":
    main()
