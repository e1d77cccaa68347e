#!/usr/bin/env python3
"""Train the bundled demo model, assets/models/demo: a small LFM2-MoE that writes English.

Run from the repository root (CPU only, no network; see docs/DEMO-MODEL.md):

    nice -n 19 python3 tools/train_demo.py                 # the full run (writes assets/models/demo)
    nice -n 19 python3 tools/train_demo.py --stop-after 100 --log /tmp/prefix.tsv   # rerun a prefix

The script

  1. harvests its training text from the Python standard library of the interpreter running it
     (module, class and function docstrings, and the `pydoc_data.topics` help pages; PSF
     licence), a fixed share of it also wrapped in the LFM2 chat format as questions and answers,
  2. trains a 4096-token byte-level BPE tokenizer with the LFM2 special tokens (ids 0-13),
  3. trains a small LFM2-MoE (transformers' Lfm2MoeForCausalLM) for a fixed number of steps,
     with an auxiliary-loss-free expert balance (the router's expert_bias, moved towards equal
     load after each step),
  4. saves the checkpoint in bfloat16 with the tokenizer, chat template and a
     generation_config.json that samples by default, in a temporary directory,
  5. writes the bundled copy with `wmoe quantize --type q8_0` (llama.cpp's Q8_0 blocks, 3.4 MB
     instead of 6.4 MB of bfloat16; the built binary is given by --wmoe), and
  6. dequantizes that copy's weights back to float32, runs transformers on them and writes
     reference.safetensors (prefill and greedy logits of a held-out prompt; decode equals
     prefill to 1e-6 and is checked against the same logits) for
     tests/fidelity.rs, as tools/make_fixtures.py does for the random fixtures: the reference
     is the model as shipped, so wmoe is held to the same tolerance as on every fixture.

Everything is seeded and the thread count is fixed, so a rerun gives the same loss curve.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import io
import json
import math
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (tokenizer writer, reference helpers, constants)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from transformers import AutoModelForCausalLM, Lfm2MoeConfig, Lfm2MoeForCausalLM  # noqa: E402

REPO = mf.REPO
ENDOFTEXT_ID = 2  # <|endoftext|>: ends every plain document (a second EOS of the model)

# The model: hidden 192, 6 layers (attention at 2 and 5), 2 dense leading layers, 8 experts top-2.
MODEL = dict(
    hidden=192,
    heads=6,
    kv_heads=2,
    layers=6,
    attn_idxs=[2, 5],
    num_dense_layers=2,
    intermediate=384,
    moe_intermediate=64,
    experts=8,
    top_k=2,
    routed_scaling_factor=1.0,
    rope_theta=1e6,
    norm_eps=1e-5,
)
VOCAB = 4096

# Training (fixed step count, so the run is the same whatever the machine's load).
SEED = 1234
THREADS = 1
SEQ = 128
BATCH = 16
STEPS = 900
LR = 4e-3
LR_MIN = 4e-4
WARMUP = 40
WEIGHT_DECAY = 0.1
CLIP = 1.0
BIAS_RATE = 1e-3  # expert_bias step towards equal expert load (aux-loss-free balance)
EVAL_EVERY = 50
EVAL_WINDOWS = 32
HOLDOUT_ONE_IN = 40  # documents whose hash is 0 mod this are held out
CHAT_ONE_IN = 4  # share of described objects that also become a chat question and answer

# Sampling defaults shipped in generation_config.json (transformers' names).
GENERATION = dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=50, repetition_penalty=1.1)

# The reference prompt: the first REF_PROMPT_TOKENS tokens (BOS included) of the first held-out
# document that passes tools/make_fixtures.py's margin criteria.
REF_PROMPT_TOKENS = 40

# Permissively licensed packages whose docstrings join the standard library's (assets/models/demo/NOTICE).
PACKAGES = ["numpy", "sympy", "networkx", "mpmath"]

# Modules never imported: they open windows, print on import, start programs, or are tests.
SKIP_MODULES = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
    "ensurepip", "venv", "pydoc_data", "__main__", "__phello__", "_pydev_bundle", "msilib",
    "winreg", "winsound", "_winapi", "msvcrt", "nt", "_msi", "_overlapped", "_wmi",
}


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def package_modules(tops):
    """Names of the modules `tops` and their submodules, sorted (no tests, no private ones)."""
    names = set()
    for top in sorted(tops):
        if top in SKIP_MODULES or top.startswith("_"):
            continue
        names.add(top)
        mod = quiet_import(top)
        if mod is None or not hasattr(mod, "__path__"):
            continue
        for info in pkgutil.walk_packages(mod.__path__, top + ".", onerror=lambda _n: None):
            parts = info.name.split(".")
            if any(p.startswith("_") or "test" in p or p in SKIP_MODULES for p in parts):
                continue
            names.add(info.name)
    return sorted(names)


def quiet_import(name):
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:  # noqa: BLE001  (any import failure just skips the module)
        return None


def described(mod):
    """(qualified name, docstring) of a module and its public classes, functions and methods."""
    out = [(mod.__name__, inspect.getdoc(mod))]
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            out.append((f"{mod.__name__}.{name}", inspect.getdoc(obj)))
        if inspect.isclass(obj):
            for mname, m in sorted(vars(obj).items()):
                if mname.startswith("_") or not (inspect.isroutine(m) or isinstance(m, property)):
                    continue
                out.append((f"{mod.__name__}.{name}.{mname}", inspect.getdoc(m)))
    return out


def harvest():
    """The training documents: (kind, text) with kind 'doc' or 'chat', deduplicated, in a fixed
    order. Every pydoc topic page, then docstrings of at least 80 characters of the standard
    library and of PACKAGES."""
    from pydoc_data.topics import topics

    docs, seen = [], set()

    def add(kind, text):
        if text not in seen:
            seen.add(text)
            docs.append((kind, text))

    for key in sorted(topics):
        add("doc", topics[key].strip())
    n_described = 0
    for name in package_modules(sys.stdlib_module_names) + package_modules(PACKAGES):
        mod = quiet_import(name)
        if mod is None:
            continue
        for qual, doc in described(mod):
            if not doc or len(doc) < 80:
                continue
            doc = doc.strip()
            add("doc", doc)
            n_described += 1
            first = doc.split("\n\n")[0].strip()
            if len(first) >= 40 and stable_hash(qual) % CHAT_ONE_IN == 0:
                add("chat", chat(f"What does {qual} do?", first))
    return docs


def chat(question, answer):
    """One user turn and one assistant turn in LFM2's chat format (the template's output)."""
    return (
        f"<|startoftext|><|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


def stable_hash(text):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# --------------------------------------------------------------------------------------------
# Tokenizer and token stream
# --------------------------------------------------------------------------------------------


def train_tokenizer(texts):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(mf.LFM2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=mf.SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A:0",
        pair="<|startoftext|> $A:0 <|startoftext|> $B:1",
        special_tokens=[("<|startoftext|>", mf.BOS_ID)],
    )
    for i, s in enumerate(mf.SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def token_stream(tok, docs):
    """All documents as one id stream: BOS + text + <|endoftext|> for plain text, the chat
    rendering (which starts with BOS and ends each turn with <|im_end|>) for chat."""
    out = []
    for kind, text in docs:
        ids = tok.encode(text, add_special_tokens=False).ids
        if kind == "doc":
            ids = [mf.BOS_ID] + ids + [ENDOFTEXT_ID]
        out.extend(ids)
    return torch.tensor(out, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------------


def build_config():
    m = MODEL
    cfg = Lfm2MoeConfig(
        vocab_size=VOCAB,
        hidden_size=m["hidden"],
        num_hidden_layers=m["layers"],
        num_attention_heads=m["heads"],
        num_key_value_heads=m["kv_heads"],
        layer_types=mf.layer_types(m["layers"], m["attn_idxs"]),
        rope_parameters={"rope_type": "default", "rope_theta": float(m["rope_theta"])},
        norm_eps=m["norm_eps"],
        conv_bias=False,
        conv_L_cache=3,
        max_position_embeddings=128000,
        tie_word_embeddings=True,
        bos_token_id=mf.BOS_ID,
        eos_token_id=[mf.EOS_ID, ENDOFTEXT_ID],
        pad_token_id=mf.PAD_ID,
        use_cache=True,
        intermediate_size=m["intermediate"],
        moe_intermediate_size=m["moe_intermediate"],
        num_dense_layers=m["num_dense_layers"],
        num_experts=m["experts"],
        num_experts_per_tok=m["top_k"],
        use_expert_bias=True,
        routed_scaling_factor=m["routed_scaling_factor"],
        norm_topk_prob=True,
    )
    cfg.dtype = "bfloat16"
    return cfg


class LoadCounter:
    """Counts, per MoE layer, how many tokens each expert was selected for (forward hooks)."""

    def __init__(self, model):
        self.blocks, self.loads, self.handles = [], [], []
        self.interval = []  # loads since the last clear_interval, for the log
        for layer in model.model.layers[MODEL["num_dense_layers"]:]:
            blk = layer.feed_forward
            self.blocks.append(blk)
            self.loads.append(torch.zeros(MODEL["experts"]))
            self.interval.append(torch.zeros(MODEL["experts"]))
            self.handles.append(blk.gate.register_forward_hook(self._hook(len(self.blocks) - 1)))

    def _hook(self, i):
        def fn(_mod, _inp, out):
            sel = out[2].detach().reshape(-1)
            if _mod.training:
                counts = torch.bincount(sel, minlength=MODEL["experts"]).float()
                self.loads[i] += counts
                self.interval[i] += counts

        return fn

    @torch.no_grad()
    def rebalance(self):
        """Moves every expert_bias towards equal load, then clears the counts."""
        for blk, load in zip(self.blocks, self.loads):
            blk.expert_bias += BIAS_RATE * torch.sign(load.mean() - load)
            load.zero_()

    def imbalance(self):
        """The busiest expert's load over the mean, worst layer, since the last call."""
        worst = max(float(l.max() / l.mean()) for l in self.interval)
        for l in self.interval:
            l.zero_()
        return worst

    def remove(self):
        for h in self.handles:
            h.remove()


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * t))


def batch_loss(model, windows):
    """Mean next-token cross-entropy; targets that are BOS (a new document) are not scored."""
    x, y = windows[:, :-1], windows[:, 1:].clone()
    y[y == mf.BOS_ID] = -100
    logits = model(input_ids=x, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def windows_at(stream, starts):
    return torch.stack([stream[s : s + SEQ + 1] for s in starts.tolist()])


def train(model, train_ids, held_ids, steps, stop, log_path):
    """AdamW over `steps` steps (warmup, cosine decay), ending after `stop` of them."""
    gen = torch.Generator().manual_seed(SEED + 1)
    held_starts = torch.linspace(0, len(held_ids) - SEQ - 2, EVAL_WINDOWS).long()
    held = windows_at(held_ids, held_starts)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.95),
    )
    counter = LoadCounter(model)
    recent, t0 = [], time.time()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as f:
        f.write("step\ttrain_loss\theldout_loss\tmax_expert_load\tlr\tseconds\n")
        for step in range(steps + 1):
            if step % EVAL_EVERY == 0 or step == stop:
                model.eval()
                with torch.no_grad():
                    hl = float(batch_loss(model, held))
                model.train()
                tl = sum(recent) / len(recent) if recent else float("nan")
                row = (step, tl, hl, counter.imbalance() if recent else float("nan"), lr_at(step, steps), time.time() - t0)
                f.write("%d\t%.4f\t%.4f\t%.2f\t%.2e\t%.0f\n" % row)
                f.flush()
                log("step %5d  train %.4f  held-out %.4f  max load/mean %.2f  lr %.2e  %5.0fs" % row)
                recent = []
            if step == stop:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps)
            starts = torch.randint(0, len(train_ids) - SEQ - 1, (BATCH,), generator=gen)
            loss = batch_loss(model, windows_at(train_ids, starts))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            counter.rebalance()
            recent.append(loss.item())
    counter.remove()


def init_routers(model, gen):
    """transformers initialises the router to zero (every expert ties); start it small and random."""
    with torch.no_grad():
        for layer in model.model.layers[MODEL["num_dense_layers"]:]:
            w = layer.feed_forward.gate.weight
            w.copy_(torch.randn(w.shape, generator=gen) * 0.02)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def save(model, tok, out_dir):
    """The trained checkpoint in bfloat16, with tokenizer and generation config, in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
    model.save_pretrained(str(out_dir))
    mf.convert_stacked_experts_if_needed(out_dir)
    gc = {"bos_token_id": mf.BOS_ID, "eos_token_id": [mf.EOS_ID, ENDOFTEXT_ID], "pad_token_id": mf.PAD_ID, **GENERATION}
    (out_dir / "generation_config.json").write_text(json.dumps(gc, indent=2, sort_keys=True) + "\n")
    mf.write_tokenizer(out_dir, tok)


def quantize(wmoe, bf16_dir, out_dir):
    """The bundled copy: `wmoe quantize --type q8_0` of the bfloat16 checkpoint into `out_dir`."""
    if not wmoe.is_file():
        raise SystemExit(f"{wmoe}: no wmoe binary; build it first (cargo build --release) or pass --wmoe")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    subprocess.run([str(wmoe), "quantize", "--model", str(bf16_dir), "--type", "q8_0", "--out", str(out_dir)], check=True)


def dequantized(out_dir, into):
    """A float32 copy of the checkpoint `out_dir` in the directory `into`: its wmoe-quantized
    matrices (`wmoe.quant` metadata: llama.cpp Q8_0 blocks of an f16 scale and 32 int8 values
    per row-major run of 32 weights) decoded, every other tensor widened."""
    path = out_dir / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        quant = json.loads((f.metadata() or {}).get("wmoe.quant", "{}"))
        tensors = {}
        for name in f.keys():
            t = f.get_tensor(name)
            q = quant.get(name)
            if q is None:
                tensors[name] = t.to(torch.float32).contiguous()
                continue
            if q["format"] != "q8_0":
                raise SystemExit(f"{path}: {name} is {q['format']}; only q8_0 is expected here")
            blocks = t.numpy().reshape(-1, 34)
            scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
            values = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
            tensors[name] = torch.from_numpy((scale * values).reshape(q["shape"]))
    from safetensors.torch import save_file as torch_save_file

    into.mkdir(parents=True, exist_ok=True)
    torch_save_file(tensors, str(into / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(out_dir / "config.json", into / "config.json")


def licence_text(dist, start=None, stop=None):
    """The licence file of an installed distribution (`dist` None: the interpreter's own
    LICENSE.txt), from the line holding `start` up to the line holding `stop`."""
    import importlib.metadata as md
    import sysconfig

    if dist is None:
        path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    else:
        d = md.distribution(dist)
        # the package's own licence: LICENSE[.txt] in its .dist-info or .dist-info/licenses
        top = [f for f in d.files if f.name in ("LICENSE", "LICENSE.txt") and ".dist-info" in str(f) and len(f.parts) <= 3]
        path = Path(str(d.locate_file(top[0])))
    lines = path.read_text().splitlines()
    i = next((k for k, l in enumerate(lines) if start and start in l), 0)
    j = next((k for k, l in enumerate(lines) if stop and k > i and stop in l), len(lines))
    return "\n".join(lines[i:j]).strip() + "\n"


def write_notice(out_dir):
    """NOTICE: where the training text came from, with its copyright notices and licences."""
    import importlib.metadata as md

    parts = [
        "The weights and tokenizer in this directory were trained by tools/train_demo.py on text from\n"
        "the docstrings and help pages of the following software (the versions installed when it ran).\n"
        "Their copyright notices and licences follow.\n",
        f"== Python {sys.version.split()[0]} standard library (docstrings, pydoc_data.topics)\n\n"
        + licence_text(None, "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2", "BEOPEN.COM LICENSE AGREEMENT"),
    ]
    cut = {"numpy": "----", "sympy": "------"}
    for dist in PACKAGES:
        parts.append(f"== {dist} {md.version(dist)} (docstrings)\n\n" + licence_text(dist, None, cut.get(dist)))
    (out_dir / "NOTICE").write_text("\n\n".join(parts))


def reference(out_dir, tok, held_docs):
    """reference.safetensors for tests/fidelity.rs: the first held-out prompt whose greedy
    continuation and routing have clear margins (tools/make_fixtures.py's criteria)."""
    with tempfile.TemporaryDirectory() as tmp:
        dequantized(out_dir, Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    spec = {"kind": "moe", "top_k": MODEL["top_k"], "num_dense_layers": MODEL["num_dense_layers"]}
    probe = mf.RouterProbe(model, spec)
    cands = [([mf.BOS_ID] + tok.encode(t, add_special_tokens=False).ids)[:REF_PROMPT_TOKENS] for k, t in held_docs if k == "doc"]
    for i, ids in enumerate(cands):
        prompt = torch.tensor(ids, dtype=torch.long)
        ev = mf.evaluate(model, probe, prompt, 0.02)
        if ev["ok"]:
            break
        log(f"  reference prompt {i}: rejected (gap {ev['min_gap_ratio']:.4f}, margin {ev['min_margin']:.5f})")
    else:
        raise RuntimeError("no reference prompt passes")
    probe.remove()
    prefill = mf.full_logits(model, prompt)
    decode, _ = mf.decode_incremental(model, prompt)
    rel = float((decode - prefill).abs().max()) / float(prefill.abs().max())
    assert rel <= mf.DECODE_REL_TOL, rel
    # Only the prefill logits are stored (the bundle stays small): transformers' incremental
    # decode through its cache gives the same logits to DECODE_REL_TOL (asserted above), so
    # tests/fidelity.rs holds wmoe's one-token decode to these.
    meta = {
        "model": "demo",
        "weights": "model.safetensors dequantized (q8_0 blocks) to float32",
        "decode_logits_method": f"prefill_logits (hf_incremental_cache agrees to {rel:.1e})",
        "greedy": "argmax, full forward per step, EOS ignored",
        "min_greedy_gap_ratio": f"{ev['min_gap_ratio']:.6f}",
        "min_router_margin": f"{ev['min_margin']:.6f}",
        "gap_threshold_ratio": "0.02",
        "router_margin_threshold": f"{mf.ROUTER_MARGIN_MIN}",
        "transformers_version": transformers.__version__,
    }
    np_save_file(
        {
            "prompt_tokens": prompt.numpy().astype(np.int32),
            "prefill_logits": prefill.numpy().astype(np.float32),
            "greedy_tokens": ev["greedy"].numpy().astype(np.int32),
        },
        str(out_dir / "reference.safetensors"),
        metadata={"reference_info": json.dumps(meta, sort_keys=True)},
    )
    log(f"reference: prompt {tok.decode(ids)!r} -> greedy {tok.decode(ev['greedy'].tolist())!r}")
    log(f"  min gap {ev['min_gap_ratio']:.4f}, min router margin {ev['min_margin']:.5f}, decode rel {rel:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    ap.add_argument(
        "--stop-after", type=int, default=None, help="stop after this many steps and save nothing (checks a prefix)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "models" / "demo")
    ap.add_argument("--log", type=Path, default=REPO / "docs" / "demo-train-log.tsv", help="loss log (TSV)")
    ap.add_argument(
        "--outputs-only", action="store_true", help="only rewrite the NOTICE and reference.safetensors of OUT"
    )
    ap.add_argument(
        "--wmoe", type=Path, default=REPO / "target" / "release" / "wmoe", help="the wmoe binary that quantizes"
    )
    args = ap.parse_args()
    log_path = args.log
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    t0 = time.time()
    log(f"python {sys.version.split()[0]}, transformers {transformers.__version__}, torch {torch.__version__}")

    docs = harvest()
    held_docs = [d for d in docs if stable_hash(d[1]) % HOLDOUT_ONE_IN == 0]
    train_docs = [d for d in docs if stable_hash(d[1]) % HOLDOUT_ONE_IN != 0]
    corpus = "".join(t for _k, t in docs).encode()
    log(
        f"text: {len(docs)} documents ({sum(k == 'chat' for k, _ in docs)} chat), {len(corpus) / 1e6:.1f} MB, "
        f"sha256 {hashlib.sha256(corpus).hexdigest()[:16]}; {time.time() - t0:.0f}s"
    )
    if args.outputs_only:
        from tokenizers import Tokenizer

        write_notice(args.out)
        reference(args.out, Tokenizer.from_file(str(args.out / "tokenizer.json")), held_docs)
        (args.out / "reference.safetensors").chmod(0o644)
        return
    tok = train_tokenizer(t for _k, t in train_docs)
    train_ids, held_ids = token_stream(tok, train_docs), token_stream(tok, held_docs)
    log(f"tokens: {len(train_ids)} train, {len(held_ids)} held out; {time.time() - t0:.0f}s")

    model = Lfm2MoeForCausalLM(build_config())
    init_routers(model, torch.Generator().manual_seed(SEED + 2))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters; {args.steps} steps of {BATCH}x{SEQ} tokens")
    model.train()
    stop = args.steps if args.stop_after is None else min(args.stop_after, args.steps)
    train(model, train_ids, held_ids, args.steps, stop, log_path)
    if stop < args.steps:
        log(f"stopped after {stop} steps; wrote {log_path}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        save(model, tok, Path(tmp))
        quantize(args.wmoe, Path(tmp), args.out)
    write_notice(args.out)
    reference(args.out, tok, held_docs)
    for f in args.out.iterdir():
        f.chmod(0o644)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    log(f"wrote {args.out} ({size / 1e6:.1f} MB) and {log_path}; {time.time() - t0:.0f}s in all")


if __name__ == "__main__":
    main()
