#!/usr/bin/env python3
"""Write the GGUF fixtures under assets/gguf/ from the HF fixtures in assets/models/.

Run from the repository root (after tools/make_fixtures.py):

    python3 tools/make_gguf_fixtures.py            # every fixture
    python3 tools/make_gguf_fixtures.py dense-bf16 # only the named one(s)

The files follow llama.cpp's HF -> GGUF converter (MODEL-SPEC section 5): architecture
`lfm2` / `lfm2moe`, its metadata keys (per-layer `attention.head_count_kv` with 0 for conv
layers, `shortconv.l_cache`, `expert_*`, `leading_dense_block_count`, `expert_gating_func` = 2),
its tensor names and ggml shapes (PyTorch shape reversed, experts stacked along a new
outermost axis, the conv kernel squeezed to [H, L]), F32 for norms, router, conv kernel and
expert bias, and the GGUF tokenizer metadata (`gpt2` BPE, tokens, merges, token types, bos/eos,
pre-tokenizer `lfm2`) built from tiny-moe's tokenizer.json. Matrices are quantized with the
quantizers of the `gguf` package (it has Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and BF16 ones, none for
the K-quants); rows that are not whole 32-element blocks fall back to F16 / BF16, as
llama-quantize does.

For every model fixture it writes `<name>.gguf` and `<name>.reference.safetensors`:

  - `prompt_tokens` I32 [T]   the first tokens of the HF fixture's prompt (at most 24)
  - `prefill_logits` F32 [T, V]

For an unquantized GGUF (F32 / F16 / BF16 matrices holding the checkpoint's own values) the
logits are the HF fixture's own reference logits. For a quantized GGUF they come from
transformers (CPU, float32) run on a checkpoint made by dequantizing the GGUF's tensors back
(`gguf.quants.dequantize`), read from the written file with `gguf.GGUFReader`. Either way the
script also checks that the dequantized round trip of an unquantized file reproduces the HF
fixture's logits, and that no MoE routing decision of the prompt is a near-tie in the model
the logits come from.

`formats.gguf` is not a model: it holds random blocks of every type wmoe reads (also the
K-quants, with random bytes and sane scales) each followed by `<name>.dequant`, the F32 values
gguf-py's dequantizers give, plus metadata of every GGUF value type; the Rust tests check the
reader and wmoe's block decoders against it.

Deterministic: fixed seeds, single-threaded torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from safetensors.torch import save_file as torch_save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "assets" / "models"
OUT = REPO / "assets" / "gguf"
PROMPT_LEN = 24
ROUTER_MARGIN_MIN = 1e-3  # k-th minus (k+1)-th selection score, in the model the logits come from
LFM2_PRE = "lfm2"

# Which fixtures to write: (name, source HF fixture, quantization plan).
FIXTURES = [
    dict(name="dense-bf16", source="dense-bf16", plan="bf16"),
    dict(name="tiny-moe-mixed", source="tiny-moe", plan="mixed", alignment=64),
]

# llama.cpp's converter keeps these in F32 (MODEL-SPEC section 5.3).
def keeps_f32(gguf_name: str, ndim: int) -> bool:
    return (
        ndim == 1
        or gguf_name.endswith("_norm.weight")
        or ".ffn_gate_inp." in gguf_name
        or ".shortconv.conv." in gguf_name
        or gguf_name.endswith("exp_probs_b.bias")
    )


# ------------------------------------------------------------------------------------------
# HF <-> GGUF names
# ------------------------------------------------------------------------------------------

LAYER_MAP = {
    "operator_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "conv.in_proj.weight": "shortconv.in_proj.weight",
    "conv.conv.weight": "shortconv.conv.weight",
    "conv.out_proj.weight": "shortconv.out_proj.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.out_proj.weight": "attn_output.weight",
    "self_attn.q_layernorm.weight": "attn_q_norm.weight",
    "self_attn.k_layernorm.weight": "attn_k_norm.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",
    "feed_forward.w3.weight": "ffn_up.weight",
    "feed_forward.w2.weight": "ffn_down.weight",
    "feed_forward.gate.weight": "ffn_gate_inp.weight",
    "feed_forward.expert_bias": "exp_probs_b.bias",
}
TOP_MAP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.embedding_norm.weight": "token_embd_norm.weight",
    "lm_head.weight": "output.weight",
}
EXPERT_MAP = {"w1": "ffn_gate_exps.weight", "w3": "ffn_up_exps.weight", "w2": "ffn_down_exps.weight"}


def hf_to_gguf_tensors(sd: dict[str, np.ndarray], n_experts: int) -> dict[str, np.ndarray]:
    """HF state dict (per-expert hub layout, float32 numpy) -> GGUF name -> array in PyTorch
    order (the writer reverses it into ggml `ne` order)."""
    out: dict[str, np.ndarray] = {}
    experts: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for name, t in sd.items():
        if name in TOP_MAP:
            out[TOP_MAP[name]] = t
            continue
        parts = name.split(".")
        assert parts[:2] == ["model", "layers"], name
        bid, rest = int(parts[2]), ".".join(parts[3:])
        if rest.startswith("feed_forward.experts."):
            _, _, e, w, _ = rest.split(".")
            experts.setdefault((bid, w), {})[int(e)] = t
            continue
        g = LAYER_MAP[rest]
        if rest == "conv.conv.weight":
            t = t.reshape(t.shape[0], t.shape[-1])  # [H, 1, L] -> [H, L]; ggml [L, H]
        out[f"blk.{bid}.{g}"] = t
    for (bid, w), per in experts.items():
        assert sorted(per) == list(range(n_experts)), (bid, w, sorted(per))
        out[f"blk.{bid}.{EXPERT_MAP[w]}"] = np.stack([per[e] for e in range(n_experts)])
    return out


def gguf_to_hf_tensors(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Inverse of hf_to_gguf_tensors: GGUF name -> f32 array (PyTorch order) back to HF names."""
    inv_top = {v: k for k, v in TOP_MAP.items()}
    inv_layer = {v: k for k, v in LAYER_MAP.items()}
    inv_exp = {v: k for k, v in EXPERT_MAP.items()}
    out = {}
    for name, t in tensors.items():
        if name in inv_top:
            out[inv_top[name]] = torch.from_numpy(np.ascontiguousarray(t))
            continue
        _, bid, rest = name.split(".", 2)
        if rest in inv_exp:
            for e in range(t.shape[0]):
                out[f"model.layers.{bid}.feed_forward.experts.{e}.{inv_exp[rest]}.weight"] = torch.from_numpy(
                    np.ascontiguousarray(t[e])
                )
            continue
        hf = inv_layer[rest]
        if hf == "conv.conv.weight":
            t = t.reshape(t.shape[0], 1, t.shape[1])
        out[f"model.layers.{bid}.{hf}"] = torch.from_numpy(np.ascontiguousarray(t))
    return out


# ------------------------------------------------------------------------------------------
# Quantization plans
# ------------------------------------------------------------------------------------------

MIX_CYCLE = [QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0]
MIX_KINDS = [
    "token_embd.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "shortconv.in_proj.weight",
    "shortconv.out_proj.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
    "ffn_gate_exps.weight",
    "ffn_up_exps.weight",
    "ffn_down_exps.weight",
]


def plan_type(plan: str, gguf_name: str, shape: tuple[int, ...]) -> QT:
    if keeps_f32(gguf_name, len(shape)):
        return QT.F32
    cols = shape[-1]
    if plan in ("f32", "f16", "bf16"):
        return {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16}[plan]
    if plan == "q8_0":
        want = QT.Q8_0
    elif plan == "mixed":
        # a llama-quantize-like mix: the tied embedding (the output tensor) at Q8_0, the other
        # matrices cycling through the 32-block types by layer and kind
        if gguf_name == "token_embd.weight":
            want = QT.Q8_0
        else:
            bid = int(gguf_name.split(".")[1])
            kind = MIX_KINDS.index(gguf_name.split(".", 2)[2])
            want = MIX_CYCLE[(3 * bid + kind) % len(MIX_CYCLE)]
    else:
        raise ValueError(plan)
    if cols % 32 != 0:
        # llama-quantize's fallback for rows that are not whole blocks: a float type
        want = QT.BF16 if "_exps." in gguf_name else QT.F16
    return want


# ------------------------------------------------------------------------------------------
# Reading the HF fixture
# ------------------------------------------------------------------------------------------


def read_hf(src: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, str]]:
    cfg = json.loads((src / "config.json").read_text())
    sd: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    files = sorted(src.glob("model*.safetensors"))
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                dtypes[k] = str(t.dtype).removeprefix("torch.")
                sd[k] = t.float().numpy()
    return cfg, sd, dtypes


def read_reference(src: Path) -> tuple[np.ndarray, np.ndarray]:
    with safe_open(str(src / "reference.safetensors"), framework="np") as st:
        return st.get_tensor("prompt_tokens"), st.get_tensor("prefill_logits")


# ------------------------------------------------------------------------------------------
# Tokenizer metadata
# ------------------------------------------------------------------------------------------


def add_tokenizer(w: gguf.GGUFWriter, src: Path, cfg: dict) -> bool:
    tj = src / "tokenizer.json"
    if not tj.exists():
        return False
    tok = json.loads(tj.read_text())
    model = tok["model"]
    assert model["type"] == "BPE", model["type"]
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["id"]: a for a in tok["added_tokens"]}
    for i, a in added.items():
        vocab.setdefault(a["content"], i)
    n = max(vocab.values()) + 1
    tokens = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens), "vocabulary has holes"
    types = []
    for i in range(n):
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(LFM2_PRE)
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab[tcfg["bos_token"]])
    w.add_eos_token_id(vocab[tcfg["eos_token"]])
    w.add_pad_token_id(vocab[tcfg["pad_token"]])
    w.add_add_bos_token(bool(tcfg.get("add_bos_token", True)))
    w.add_add_eos_token(bool(tcfg.get("add_eos_token", False)))
    tmpl = src / "chat_template.jinja"
    if tmpl.exists():
        w.add_chat_template(tmpl.read_text())
    assert vocab[tcfg["eos_token"]] == cfg["eos_token_id"]
    return True


# ------------------------------------------------------------------------------------------
# Writing one model fixture
# ------------------------------------------------------------------------------------------


def write_gguf(path: Path, fx: dict, cfg: dict, sd: dict[str, np.ndarray]) -> dict[str, str]:
    mt = cfg["model_type"]
    is_moe = mt == "lfm2_moe"
    arch = "lfm2moe" if is_moe else "lfm2"
    src = MODELS / fx["source"]
    w = gguf.GGUFWriter(str(path), arch)
    if fx.get("alignment"):
        w.add_custom_alignment(fx["alignment"])
    w.add_name(f"wmoe fixture {fx['name']}")
    n_layers = cfg["num_hidden_layers"]
    layer_types = cfg["layer_types"]
    w.add_block_count(n_layers)
    w.add_context_length(cfg.get("max_position_embeddings", 128000))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(
        [cfg["num_key_value_heads"] if t == "full_attention" else 0 for t in layer_types]
    )
    w.add_rope_freq_base(float(cfg["rope_parameters"]["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["norm_eps"]))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_shortconv_l_cache(cfg["conv_L_cache"])
    if is_moe:
        w.add_expert_count(cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        w.add_leading_dense_block_count(cfg["num_dense_layers"])
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        # newer llama.cpp converters write these when the config has them
        w.add_expert_weights_scale(float(cfg["routed_scaling_factor"]))
        w.add_expert_weights_norm(bool(cfg["norm_topk_prob"]))
    if not add_tokenizer(w, src, cfg):
        # no tokenizer.json: gguf-py's SpecialVocab still takes the ids from config.json
        w.add_bos_token_id(cfg["bos_token_id"])
        w.add_eos_token_id(cfg["eos_token_id"])
        w.add_pad_token_id(cfg["pad_token_id"])

    tensors = hf_to_gguf_tensors(sd, cfg.get("num_experts", 0))
    types: dict[str, str] = {}
    # llama.cpp's order: token_embd first, then blocks in order, output norm last
    def order(n: str):
        if n.startswith("blk."):
            return (1, int(n.split(".")[1]), n)
        return (0 if n == "token_embd.weight" else 2, 0, n)

    quantized = False
    for name in sorted(tensors, key=order):
        t = tensors[name].astype(np.float32)
        qt = plan_type(fx["plan"], name, t.shape)
        if qt == QT.F32:
            w.add_tensor(name, t)
        elif qt == QT.F16:
            w.add_tensor(name, t.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(t, qt), raw_dtype=qt)
            quantized |= qt != QT.BF16
        types[name] = qt.name
    ftype = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "mixed": gguf.LlamaFileType.GUESSED,
    }[fx["plan"]]
    w.add_file_type(int(ftype))
    if quantized:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def dequantized_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the written GGUF, dequantized to f32 and renamed back to HF."""
    r = gguf.GGUFReader(str(path))
    arrays = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(np.array(t.data), t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        arrays[t.name] = a.reshape(shape)
    return gguf_to_hf_tensors(arrays)


def load_hf(cfg_dir: Path, sd: dict[str, torch.Tensor]):
    """An f32 transformers model of the fixture's config holding `sd` (via a temporary
    per-expert hub checkpoint, so transformers' own load-time conversions apply)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(cfg_dir / "config.json", Path(tmp) / "config.json")
        torch_save_file({k: v.contiguous() for k, v in sd.items()}, str(Path(tmp) / "model.safetensors"))
        m = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    state = m.state_dict()
    # every tensor must have arrived (the experts through transformers' stacking)
    n_in = sum(v.numel() for v in sd.values())
    n_model = sum(v.numel() for k, v in state.items() if "inv_freq" not in k)
    if m.config.tie_word_embeddings and "lm_head.weight" in state:
        n_model -= state["lm_head.weight"].numel()
    assert n_in == n_model, (n_in, n_model)
    return m


@torch.no_grad()
def router_margin(model, prompt: torch.Tensor) -> float:
    """Smallest k-th minus (k+1)-th selection score over the MoE layers and prompt tokens."""
    cfg = model.config
    if getattr(cfg, "num_experts", None) is None:
        return float("inf")
    k = cfg.num_experts_per_tok
    caps = []
    hooks = []
    for i, layer in enumerate(model.model.layers):
        if i < cfg.num_dense_layers:
            continue
        blk = layer.feed_forward

        def fn(_m, _inp, out, blk=blk):
            s = out[0].float().sigmoid()
            if blk.use_expert_bias:
                s = s + blk.expert_bias.float()
            caps.append(s)

        hooks.append(blk.gate.register_forward_hook(fn))
    model(input_ids=prompt[None], use_cache=False)
    for h in hooks:
        h.remove()
    m = float("inf")
    for s in caps:
        srt = s.sort(dim=-1, descending=True).values
        m = min(m, float((srt[:, k - 1] - srt[:, k]).min()))
    return m


@torch.no_grad()
def logits_of(model, prompt: torch.Tensor) -> torch.Tensor:
    return model(input_ids=prompt[None], use_cache=False).logits[0].float()


def make_fixture(fx: dict) -> dict:
    src = MODELS / fx["source"]
    cfg, sd, dtypes = read_hf(src)
    path = OUT / f"{fx['name']}.gguf"
    types = write_gguf(path, fx, cfg, sd)
    ref_prompt, ref_logits = read_reference(src)
    # Unquantized = every tensor is F32 or the checkpoint's own float type, so the file holds
    # exactly the checkpoint's values.
    src_dtype = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[
        next(d for k, d in dtypes.items() if k.endswith("embed_tokens.weight"))
    ]
    unquantized = all(t in ("F32", src_dtype) for t in types.values())

    deq = dequantized_checkpoint(path)
    model = load_hf(src, deq)
    n = min(PROMPT_LEN, len(ref_prompt))
    prompt = torch.from_numpy(ref_prompt[:n].astype(np.int64))
    margin = router_margin(model, prompt)
    if unquantized:
        # the GGUF holds the checkpoint's own values: the HF fixture's logits are the reference,
        # and the dequantized round trip must reproduce them
        logits = ref_logits[:n]
        got = logits_of(model, prompt).numpy()
        rel = float(np.abs(got - logits).max() / np.abs(logits).max())
        assert rel < 1e-5, f"{fx['name']}: round trip differs from the HF fixture by {rel:.2e}"
        method = "hf_fixture_reference_logits"
    else:
        # quantized: transformers on the dequantized tensors; pick a prompt without router
        # near-ties in this (quantized) model
        gen = torch.Generator().manual_seed(7)
        tries = 0
        while margin < ROUTER_MARGIN_MIN:
            tries += 1
            assert tries < 200, f"{fx['name']}: no prompt without router near-ties"
            prompt = torch.randint(0, cfg["vocab_size"], (n,), generator=gen)
            prompt[prompt == cfg["eos_token_id"]] = cfg["bos_token_id"] + 1
            margin = router_margin(model, prompt)
        logits = logits_of(model, prompt).numpy()
        hf = logits_of(load_hf(src, {k: torch.from_numpy(v) for k, v in sd.items()}), prompt).numpy()
        rel = float(np.abs(hf - logits).max() / np.abs(hf).max())
        method = "transformers_f32_on_dequantized_gguf"
    top2 = np.sort(logits, axis=-1)[:, -2:]
    info = {
        "method": method,
        "source": f"assets/models/{fx['source']}",
        "tensor_types": types,
        "min_router_margin": "none (dense)" if margin == float("inf") else f"{margin:.6f}",
        "quantization_rel_change_vs_hf": f"{rel:.3e}",
        "transformers_version": transformers.__version__,
        "gguf_py_version": _gguf_version(),
    }
    np_save_file(
        {
            "prompt_tokens": prompt.numpy().astype(np.int32),
            "prefill_logits": np.ascontiguousarray(logits.astype(np.float32)),
        },
        str(OUT / f"{fx['name']}.reference.safetensors"),
        metadata={"reference_info": json.dumps(info, sort_keys=True)},
    )
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    return dict(
        name=fx["name"],
        bytes=path.stat().st_size,
        ref_bytes=(OUT / f"{fx['name']}.reference.safetensors").stat().st_size,
        T=n,
        method=method,
        margin=margin,
        rel=rel,
        min_gap=float((top2[:, 1] - top2[:, 0]).min()),
        types=counts,
    )


def _gguf_version() -> str:
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:  # noqa: BLE001
        return "unknown"


# ------------------------------------------------------------------------------------------
# formats.gguf: block layouts and metadata value types
# ------------------------------------------------------------------------------------------


def random_blocks(qt: QT, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid canonical bytes of qt for a [rows, cols] tensor: quantized random values for the
    types gguf-py can quantize, random bytes with sane f16 scales for the K-quants."""
    if qt in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.BF16):
        return gguf.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qt)
    block, size = gguf.GGML_QUANT_SIZES[qt]
    nb = rows * cols // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)

    def f16s(lo, hi):
        return rng.uniform(lo, hi, size=nb).astype(np.float16).view(np.uint8).reshape(nb, 2)

    if qt in (QT.Q4_K, QT.Q5_K):
        raw[:, 0:2] = f16s(0.001, 0.02)  # d
        raw[:, 2:4] = f16s(0.001, 0.02)  # dmin
    elif qt == QT.Q6_K:
        raw[:, 208:210] = f16s(0.001, 0.02)  # d (last)
    else:
        raise ValueError(qt)
    return raw.reshape(rows, cols // block * size)


def make_formats() -> dict:
    path = OUT / "formats.gguf"
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(str(path), "wmoe-formats")
    # one key of every value type (and arrays of several)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.25)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 1.0e-300)
    w.add_array("test.array_i32", [3, 0, -2])
    w.add_array("test.array_str", ["a", "", "ccc"])
    w.add_array("test.array_f32", [0.5, -1.5])
    w.add_key_value("test.array_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)
    w.add_key_value(
        "test.array_nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.ARRAY
    )
    rows, cols = 2, 256
    for qt in (QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q4_K, QT.Q5_K, QT.Q6_K):
        if qt == QT.F16:
            data = rng.standard_normal((rows, cols)).astype(np.float16)
            w.add_tensor(qt.name.lower(), data)
            deq = data.astype(np.float32)
        else:
            data = random_blocks(qt, rows, cols, rng)
            w.add_tensor(qt.name.lower(), data, raw_dtype=qt)
            deq = gguf.quants.dequantize(data, qt).astype(np.float32).reshape(rows, cols)
        assert np.isfinite(deq).all(), qt.name
        w.add_tensor(qt.name.lower() + ".dequant", deq)
    # a 3-D tensor and an F32 one with an odd innermost size
    w.add_tensor("f32_3d", rng.standard_normal((2, 3, 5)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dict(name="formats", bytes=path.stat().st_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="subset of fixture names (default: all, and formats)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    known = [f["name"] for f in FIXTURES] + ["formats"]
    for n in args.names:
        if n not in known:
            sys.exit(f"unknown fixture {n}; choose from {known}")
    todo = args.names or known
    print(f"gguf {_gguf_version()}, transformers {transformers.__version__}, torch {torch.__version__}")
    for fx in FIXTURES:
        if fx["name"] in todo:
            r = make_fixture(fx)
            print(
                f"{r['name']:16} {r['bytes'] / 1024:7.1f} KiB + reference {r['ref_bytes'] / 1024:5.1f} KiB, "
                f"T {r['T']}, {r['method']}, router margin {r['margin']:.4f}, "
                f"quantization changes logits by {r['rel']:.2e} of max|logit|, min top-2 gap {r['min_gap']:.3f}, "
                f"types {r['types']}"
            )
    if "formats" in todo:
        r = make_formats()
        print(f"{r['name']:16} {r['bytes'] / 1024:7.1f} KiB")
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"total assets/gguf: {total / 1024:.0f} KiB")
    for p in OUT.iterdir():
        p.chmod(0o644)


if __name__ == "__main__":
    main()
