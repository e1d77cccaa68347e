#!/usr/bin/env python3
"""Hold-out check: wmoe against HF transformers on random checkpoints the tests never see.

    python3 tools/holdout_check.py                    # generate (cached) + build + check all
    python3 tools/holdout_check.py --out /tmp/holdout moe-untied dense-bf16-hd64
    python3 tools/holdout_check.py --regen            # redraw the checkpoints even if cached

For every model below it

  1. builds a random checkpoint and its HF reference with tools/make_fixtures.py's own
     machinery (config construction, weight draw, router near-tie / greedy-gap rejection,
     save_pretrained, reload in f32, prefill / HF-incremental decode / 24-token greedy) into
     OUT/<name>/ (never under assets/),
  2. runs the release binary exactly as a user would:
       wmoe logits   --model DIR --tokens IDS --mode prefill --out OUT/<name>/prefill.npy
       wmoe logits   --model DIR --tokens IDS --mode decode  --out OUT/<name>/decode.npy
       wmoe generate --model DIR --tokens IDS --max-tokens 24 --temperature 0 --ignore-eos --json
       wmoe logits   --model DIR --tokens IDS --mode prefill --kv-type f16 (informational)
  3. applies the acceptance rule per position (max|Δ| <= 5e-3 * max|ref|, same argmax where the
     reference top-2 gap > 0.1) and requires the identical greedy continuation.

Exit status 0 only when every model passes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

REL_TOL = 5e-3
ARGMAX_GAP = 0.1

# Specs use make_fixtures.MODELS' keys. None of these shapes is in assets/models.
HOLDOUT = [
    dict(
        # wide model: H 256, hd 32, GQA 4, 16 experts top-4, big routed scale, prompt > 1 chunk
        name="moe-bf16-h256-e16",
        kind="moe",
        dtype="bfloat16",
        hidden=256,
        heads=8,
        kv_heads=2,
        layers=6,
        attn_idxs=[1, 4],
        num_dense_layers=2,
        intermediate=320,
        moe_intermediate=72,
        experts=16,
        top_k=4,
        vocab=700,
        use_expert_bias=True,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=True,
        prompt_len=400,
        seed=11000,
    ),
    dict(
        # GQA 1 (MHA), no dense layer, top-1, no expert bias, no top-k normalisation, f16
        name="moe-f16-top1-nobias",
        kind="moe",
        dtype="float16",
        hidden=96,
        heads=6,
        kv_heads=6,
        layers=3,
        attn_idxs=[0, 2],
        num_dense_layers=0,
        intermediate=128,
        moe_intermediate=56,
        experts=4,
        top_k=1,
        vocab=450,
        use_expert_bias=False,
        routed_scaling_factor=1.0,
        norm_topk_prob=False,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=True,
        prompt_len=333,
        seed=12000,
    ),
    dict(
        # legacy keys, f32, GQA 5, auto-adjusted FF with a non-1 multiplier:
        # block_ff_dim 200 -> int(2*200/3)=133 -> int(1.5*133)=199 -> 32*ceil(199/32)=224
        name="dense-f32-legacy-gqa5",
        kind="dense",
        dtype="float32",
        hidden=80,
        heads=5,
        kv_heads=1,
        layers=5,
        attn_idxs=[1, 3],
        block_ff_dim=200,
        auto_adjust=True,
        ffn_multiplier=1.5,
        multiple_of=32,
        vocab=290,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="legacy",
        tie=True,
        prompt_len=257,
        seed=13000,
    ),
    dict(
        # head_dim 64, MHA, attention first, vocab 1000
        name="dense-bf16-hd64",
        kind="dense",
        dtype="bfloat16",
        hidden=192,
        heads=3,
        kv_heads=3,
        layers=2,
        attn_idxs=[0],
        block_ff_dim=384,  # auto-adjust: int(2*384/3)=256 -> 64*4 = 256
        auto_adjust=True,
        ffn_multiplier=1.0,
        multiple_of=64,
        vocab=1000,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=True,
        prompt_len=300,
        seed=14000,
        init=dict(final_norm_scale=0.7),
    ),
    dict(
        # f32 sharded, H 48, head_dim 24, GQA 2, 7 layers, 12 experts top-3, 500-token prompt
        name="moe-f32-sharded-e12",
        kind="moe",
        dtype="float32",
        hidden=48,
        heads=2,
        kv_heads=1,
        layers=7,
        attn_idxs=[2, 5],
        num_dense_layers=1,
        intermediate=80,
        moe_intermediate=40,
        experts=12,
        top_k=3,
        vocab=360,
        use_expert_bias=True,
        routed_scaling_factor=1.0,
        norm_topk_prob=True,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=True,
        prompt_len=500,
        max_shard_size="300KB",
        seed=15000,
    ),
    dict(
        # untied lm_head (separate lm_head.weight in the checkpoint)
        name="moe-bf16-untied",
        kind="moe",
        dtype="bfloat16",
        hidden=64,
        heads=4,
        kv_heads=1,
        layers=4,
        attn_idxs=[0, 3],
        num_dense_layers=1,
        intermediate=112,
        moe_intermediate=32,
        experts=8,
        top_k=2,
        vocab=512,
        use_expert_bias=True,
        routed_scaling_factor=1.0,
        norm_topk_prob=True,
        rope_theta=1e6,
        norm_eps=1e-5,
        config_style="modern",
        tie=False,
        prompt_len=128,
        seed=16000,
    ),
]


def log(*a):
    print(*a, flush=True)


def spec_hash(spec):
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Generation (make_fixtures.py machinery)
# --------------------------------------------------------------------------------------------


def check_layout_general(out_dir, spec, cfg):
    """make_fixtures.check_checkpoint_layout, generalised to use_expert_bias false (no
    expert_bias tensor at all) and to the untied head."""
    import make_fixtures as mf
    from safetensors import safe_open

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
    hd = H // spec["heads"]
    for i, t in enumerate(cfg.layer_types):
        p = f"model.layers.{i}."
        if t == "conv":
            assert tensors[p + "conv.conv.weight"][0] == (H, 1, 3)
            assert tensors[p + "conv.in_proj.weight"][0] == (3 * H, H)
        else:
            assert tensors[p + "self_attn.q_proj.weight"][0] == (H, H)
            assert tensors[p + "self_attn.k_proj.weight"][0] == (spec["kv_heads"] * hd, H)
        if spec["kind"] == "moe" and i >= spec["num_dense_layers"]:
            fe = spec["moe_intermediate"]
            for e in range(spec["experts"]):
                q = p + f"feed_forward.experts.{e}."
                assert tensors[q + "w1.weight"][0] == (fe, H)
                assert tensors[q + "w3.weight"][0] == (fe, H)
                assert tensors[q + "w2.weight"][0] == (H, fe)
            if spec["use_expert_bias"]:
                assert tensors[p + "feed_forward.expert_bias"] == ((spec["experts"],), "F32")
            else:
                assert p + "feed_forward.expert_bias" not in tensors
            assert tensors[p + "feed_forward.gate.weight"][0] == (spec["experts"], H)
        else:
            ff = spec["intermediate"] if spec["kind"] == "moe" else mf.effective_ff(spec)
            assert tensors[p + "feed_forward.w1.weight"][0] == (ff, H), (tensors[p + "feed_forward.w1.weight"], ff)
    assert ("lm_head.weight" in tensors) == (not spec["tie"]), sorted(tensors)[:5]
    if not spec["tie"]:
        assert tensors["lm_head.weight"][0] == (spec["vocab"], H)
    return tensors


def generate(specs, out_root, regen, gap_thr):
    import torch
    import make_fixtures as mf

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    mf.OUT_ROOT = out_root
    mf.check_checkpoint_layout = check_layout_general
    rows = {}
    for spec in specs:
        d = out_root / spec["name"]
        h = spec_hash(spec)
        stamp = d / "holdout_spec.json"
        if not regen and (d / "reference.safetensors").exists() and stamp.exists():
            if json.loads(stamp.read_text()).get("hash") == h:
                log(f"== {spec['name']}: cached in {d}")
                continue
        log(f"== {spec['name']}: generating")
        t0 = time.time()
        row = mf.make_model(dict(spec), gap_thr, None)
        row["gen_seconds"] = time.time() - t0
        # what transformers actually wrote (reported as notes)
        from safetensors import safe_open

        keys = set()
        for f in d.glob("model*.safetensors"):
            with safe_open(str(f), "pt") as sf:
                keys |= set(sf.keys())
        cfgj = json.loads((d / "config.json").read_text())
        notes = {
            "n_safetensors_files": len(list(d.glob("model*.safetensors"))),
            "has_index": (d / "model.safetensors.index.json").exists(),
            "lm_head_saved": "lm_head.weight" in keys,
            "expert_bias_tensors": sum(k.endswith("expert_bias") for k in keys),
            "config_tie": cfgj.get("tie_word_embeddings", cfgj.get("tie_embedding")),
        }
        stamp.write_text(
            json.dumps({"hash": h, "spec": spec, "stats": {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool))}, "notes": notes}, indent=2, sort_keys=True)
            + "\n"
        )
        rows[spec["name"]] = row
        log(f"   {spec['name']}: {row['seconds']:.1f}s, max|logit| {row['max_logit']:.2f}, "
            f"min gap {row['min_gap']:.4f} ({row['min_gap_abs']:.3f}), router margin {row['min_margin']:.4f}, "
            f"HF decode-vs-prefill rel {row['decode_rel']:.1e}; notes {notes}")
    return rows


# --------------------------------------------------------------------------------------------
# wmoe runs
# --------------------------------------------------------------------------------------------


def build():
    t0 = time.time()
    subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    log(f"cargo build --release: {time.time() - t0:.1f}s")
    return REPO / "target" / "release" / "wmoe"


def run(cmd):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t0
    if p.returncode != 0:
        log("FAILED: " + " ".join(cmd[:2] + [a if len(a) < 80 else a[:60] + "..." for a in cmd[2:]]))
        log(p.stderr[-2000:])
    return p, dt


def compare(got, ref):
    """Returns (worst ratio, number of failing positions, argmax mismatches, first failure)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = np.abs(ref).max(axis=1)
    diff = np.abs(got.astype(np.float64) - ref).max(axis=1)
    ratio = diff / scale
    bad = np.nonzero(~(diff <= REL_TOL * scale))[0]
    top2 = np.sort(ref, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    am_bad = np.nonzero((gap > ARGMAX_GAP) & (got.argmax(1) != ref.argmax(1)))[0]
    first = None
    if bad.size:
        i = int(bad[0])
        first = f"pos {i}: max|Δ| {diff[i]:.4g} > 5e-3·{scale[i]:.4g}"
    return float(np.nanmax(ratio)) if ratio.size else 0.0, int(bad.size), am_bad.tolist(), first, ratio


def check_model(wmoe, d, extra_kv_f16=True):
    from safetensors.numpy import load_file

    ref = load_file(str(d / "reference.safetensors"))
    toks = ",".join(str(int(t)) for t in ref["prompt_tokens"])
    res = {"name": d.name, "T": int(ref["prompt_tokens"].size), "V": int(ref["prefill_logits"].shape[1])}
    ok = True
    for mode, key in (("prefill", "prefill_logits"), ("decode", "decode_logits")):
        out = d / f"{mode}.npy"
        out.unlink(missing_ok=True)
        cmd = [str(wmoe), "logits", "--model", str(d), "--tokens", toks, "--mode", mode, "--out", str(out)]
        p, dt = run(cmd)
        res[f"{mode}_s"] = dt
        if p.returncode != 0:
            res[mode] = None
            res[f"{mode}_err"] = p.stderr.strip().splitlines()[-1:]
            ok = False
            continue
        got = np.load(out)
        worst, nbad, am, first, ratio = compare(got, ref[key])
        res[mode] = dict(worst=worst, nbad=nbad, argmax=am, first=first, worst_pos=int(np.nanargmax(ratio)))
        ok &= nbad == 0 and not am
    cmd = [str(wmoe), "generate", "--model", str(d), "--tokens", toks, "--max-tokens", "24",
           "--temperature", "0", "--ignore-eos", "--json"]
    p, dt = run(cmd)
    res["generate_s"] = dt
    want = [int(x) for x in ref["greedy_tokens"]]
    if p.returncode == 0:
        line = [l for l in p.stdout.splitlines() if l.strip().startswith("{")][-1]
        got = json.loads(line)["tokens"]
        res["greedy_ok"] = got == want
        if got != want:
            k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            res["greedy_diff"] = f"first difference at step {k}: wmoe {got[k:k+4]} vs HF {want[k:k+4]} (len {len(got)})"
    else:
        res["greedy_ok"] = False
        res["greedy_diff"] = p.stderr.strip()[-300:]
    ok &= res["greedy_ok"]
    if extra_kv_f16:
        out = d / "prefill_kvf16.npy"
        out.unlink(missing_ok=True)
        cmd = [str(wmoe), "logits", "--model", str(d), "--tokens", toks, "--mode", "prefill",
               "--kv-type", "f16", "--out", str(out)]
        p, dt = run(cmd)
        res["kvf16_s"] = dt
        if p.returncode == 0:
            worst, nbad, am, _, _ = compare(np.load(out), ref["prefill_logits"])
            res["kvf16"] = dict(worst=worst, nbad=nbad, argmax=am)
    res["ok"] = bool(ok)
    return res


def kv16_emulation(d):
    """HF f32 forward with K and V rounded to f16 where a f16 KV cache stores them (after
    q/k-norm and RoPE). Returns (HF-f16KV vs HF-f32, wmoe-f16KV vs HF-f16KV) worst ratios:
    separates the error inherent to an f16 cache from any error of wmoe's f16 path."""
    import torch
    import transformers.models.lfm2.modeling_lfm2 as md
    import transformers.models.lfm2_moe.modeling_lfm2_moe as mm
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    saved = {mod: mod.eager_attention_forward for mod in (md, mm)}

    def wrap(orig):
        def f(module, q, k, v, *a, **kw):
            return orig(module, q, k.half().float(), v.half().float(), *a, **kw)

        return f

    try:
        for mod, orig in saved.items():
            mod.eager_attention_forward = wrap(orig)
        ref = load_file(str(d / "reference.safetensors"))
        m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            ids = torch.tensor(ref["prompt_tokens"]).long()[None]
            emu = m(input_ids=ids, use_cache=False).logits[0].float().numpy()
    finally:
        for mod, orig in saved.items():
            mod.eager_attention_forward = orig
    pf = ref["prefill_logits"]
    sc = np.abs(pf).max(axis=1)
    inherent = float((np.abs(emu - pf).max(axis=1) / sc).max())
    w = np.load(d / "prefill_kvf16.npy")
    vs_emu = float((np.abs(w - emu).max(axis=1) / sc).max())
    return inherent, vs_emu


def fmt_mode(m):
    if m is None:
        return f"{'ERROR':>9} {'':>5} {'':>4}"
    am = len(m["argmax"])
    return f"{m['worst']:>9.2e} {m['nbad']:>5} {am:>4}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="subset of hold-out model names (default: all)")
    ap.add_argument("--out", default="/tmp/holdout", help="where checkpoints and outputs go")
    ap.add_argument("--regen", action="store_true", help="redraw checkpoints even when cached")
    ap.add_argument("--gap-threshold", type=float, default=0.02, help="as make_fixtures.py")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/wmoe")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--kv16-emulate", action="store_true",
                    help="also run HF with K/V rounded to f16 to split the --kv-type f16 error")
    args = ap.parse_args()
    out_root = Path(args.out).resolve()
    if (REPO / "assets") in out_root.parents or out_root == REPO / "assets":
        sys.exit("refusing to write under assets/")
    out_root.mkdir(parents=True, exist_ok=True)
    names = [s["name"] for s in HOLDOUT]
    for n in args.models:
        if n not in names:
            sys.exit(f"unknown model {n}; choose from {names}")
    specs = [s for s in HOLDOUT if not args.models or s["name"] in args.models]

    t0 = time.time()
    generate(specs, out_root, args.regen, args.gap_threshold)
    log(f"generation: {time.time() - t0:.1f}s")
    if args.generate_only:
        return
    wmoe = REPO / "target" / "release" / "wmoe" if args.no_build else build()
    p = subprocess.run([str(wmoe), "generate", "--help"], capture_output=True, text=True)
    kv_line = next((l.strip() for l in p.stdout.splitlines() if "--kv-type" in l), "?")
    p2 = subprocess.run([str(wmoe), "logits", "--help"], capture_output=True, text=True)
    kv_line2 = next((l.strip() for l in p2.stdout.splitlines() if "--kv-type" in l), "?")
    log(f"generate: {kv_line}\nlogits:   {kv_line2}")
    dflt = [re.search(r"\[default: ([^\]]+)\]", l) for l in (kv_line, kv_line2)]
    dflt = [m.group(1) if m else "?" for m in dflt]
    if dflt[0] != dflt[1]:
        log(f"NOTE: --kv-type default differs: generate {dflt[0]}, logits {dflt[1]}")
    else:
        log(f"--kv-type default is the same for generate and logits: {dflt[0]}")

    results = []
    for spec in specs:
        r = check_model(wmoe, out_root / spec["name"])
        if args.kv16_emulate and r.get("kvf16"):
            r["kvf16"]["hf_f16kv_vs_hf"], r["kvf16"]["wmoe_vs_hf_f16kv"] = kv16_emulation(out_root / spec["name"])
        results.append(r)
        log(json.dumps({k: v for k, v in r.items()}, default=str))

    log("")
    log(f"{'model':22} {'T':>4} {'V':>5} | {'prefill':>9} {'#bad':>5} {'#am':>4} | {'decode':>9} {'#bad':>5} {'#am':>4} | "
        f"{'greedy':6} | {'kvf16 pf':>9} | {'t_pf':>5} {'t_dec':>6} {'t_gen':>5}  result")
    for r in results:
        kv = r.get("kvf16")
        log(
            f"{r['name']:22} {r['T']:>4} {r['V']:>5} | {fmt_mode(r.get('prefill'))} | {fmt_mode(r.get('decode'))} | "
            f"{'yes' if r['greedy_ok'] else 'NO':6} | {kv['worst'] if kv else float('nan'):>9.2e} | "
            f"{r['prefill_s']:>5.1f} {r['decode_s']:>6.1f} {r['generate_s']:>5.1f}  {'PASS' if r['ok'] else 'FAIL'}"
        )
    if args.kv16_emulate:
        log("")
        log("--kv-type f16 prefill (informational): worst max|Δ|/max|ref| of")
        for r in results:
            kv = r.get("kvf16") or {}
            if "hf_f16kv_vs_hf" in kv:
                log(f"  {r['name']:22} wmoe-f16KV vs HF-f32 {kv['worst']:.2e}; HF with f16-rounded K/V vs HF-f32 "
                    f"{kv['hf_f16kv_vs_hf']:.2e}; wmoe-f16KV vs HF-f16KV {kv['wmoe_vs_hf_f16kv']:.2e}")
    for r in results:
        for mode in ("prefill", "decode"):
            m = r.get(mode)
            if m and (m["nbad"] or m["argmax"]):
                log(f"  {r['name']} {mode}: {m['nbad']} positions over tolerance, first {m['first']}; "
                    f"argmax mismatches at {m['argmax'][:10]}")
            if m is None:
                log(f"  {r['name']} {mode}: {r.get(mode + '_err')}")
        if not r["greedy_ok"]:
            log(f"  {r['name']} greedy: {r.get('greedy_diff')}")
    log(f"total: {time.time() - t0:.1f}s")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
