#!/usr/bin/env python3
"""GGUF fixtures made by llama.cpp itself: its HF -> GGUF converter and `llama-quantize`.

    python3 tools/llamacpp_fixtures.py LLAMA_CPP_DIR     # needs build*/bin/llama-quantize built there

For tiny-moe it writes assets/gguf/llamacpp-tiny-moe-{Q8_0,Q4_0,Q4_K_M}.gguf (llama-quantize
falls back to other types where a row is not whole blocks, exactly as it does for real models)
and for each a `.reference.safetensors`: transformers (f32, CPU) run on the file's tensors
dequantized back with gguf-py (with the routed scaling factor the file implies: llama.cpp's
converter writes none, so 1.0), on a 24-token prompt without router near-ties. The tests then
check that wmoe's logits on the llama.cpp file equal the forward pass of its dequantized weights.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parent))
import make_gguf_fixtures as mg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "gguf"
SOURCE = ROOT / "assets" / "models" / "tiny-moe"
TYPES = ["Q8_0", "Q4_0", "Q4_K_M"]
PROMPT_LEN = 24


def quantize_bin(llama_cpp: Path) -> Path:
    for b in sorted(llama_cpp.glob("build*/bin/llama-quantize")):
        return b
    raise SystemExit(f"no llama-quantize under {llama_cpp}/build*/bin: build it first")


def main():
    llama_cpp = Path(sys.argv[1]).resolve()
    quantize = quantize_bin(llama_cpp)
    cfg = json.loads((SOURCE / "config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "f32.gguf"
        subprocess.run([sys.executable, str(Path(__file__).parent / "llamacpp_convert.py"), str(llama_cpp), str(SOURCE),
                        "--outtype", "f32", "--outfile", str(f32)], check=True, capture_output=True)
        for t in TYPES:
            path = OUT / f"llamacpp-tiny-moe-{t}.gguf"
            subprocess.run([str(quantize), str(f32), str(path), t], check=True, capture_output=True)
            # llama.cpp's converter writes no routed scaling factor (its graph then uses 1.0):
            # the file's model is the checkpoint with the factor the GGUF implies.
            r = gguf.GGUFReader(str(path))
            field = r.fields.get("lfm2moe.expert_weights_scale")
            scale = float(field.parts[field.data[0]][0]) if field else 1.0
            cfg_dir = Path(tmp) / f"cfg-{t}"
            cfg_dir.mkdir()
            (cfg_dir / "config.json").write_text(json.dumps({**cfg, "routed_scaling_factor": scale}))
            model = mg.load_hf(cfg_dir, mg.dequantized_checkpoint(path))
            gen = torch.Generator().manual_seed(1234)
            for tries in range(200):
                prompt = torch.randint(0, cfg["vocab_size"], (PROMPT_LEN,), generator=gen)
                prompt[prompt == cfg["eos_token_id"]] = cfg["bos_token_id"] + 1
                margin = mg.router_margin(model, prompt)
                if margin >= 2e-3:
                    break
            else:
                raise SystemExit(f"{path.name}: no prompt without router near-ties")
            logits = mg.logits_of(model, prompt).numpy()
            info = {"method": "transformers f32 on gguf-py-dequantized tensors", "router_margin": margin, "llama_quantize": t}
            save_file({"prompt_tokens": prompt.numpy().astype(np.int32), "prefill_logits": logits.astype(np.float32)},
                      str(path.with_suffix(".reference.safetensors")), metadata={"reference_info": json.dumps(info, sort_keys=True)})
            print(f"{path.name}: {path.stat().st_size} bytes, router margin {margin:.4f}, max|logit| {np.abs(logits).max():.2f}")


if __name__ == "__main__":
    main()
