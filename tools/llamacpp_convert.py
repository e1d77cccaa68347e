#!/usr/bin/env python3
"""Runs llama.cpp's own HF -> GGUF converter (convert_hf_to_gguf.py) on a wmoe test checkpoint.

The converter recognises a BPE pre-tokenizer by hashing how the tokenizer splits a probe
string; the random test tokenizers in assets/ are not LFM2's real one, so the hash is unknown.
This wrapper makes an unknown hash mean "lfm2" (what the real checkpoints map to) and otherwise
runs the converter unchanged: tensor names, shapes, types and metadata are llama.cpp's.

    python3 tools/llamacpp_convert.py LLAMA_CPP_DIR MODEL_DIR --outtype f32 --outfile out.gguf
"""
import runpy
import sys
from pathlib import Path

llama_cpp = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(llama_cpp))
sys.path.insert(1, str(llama_cpp / "gguf-py"))
from conversion import base  # noqa: E402

original = base.TextModel.get_vocab_base_pre


def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        return "lfm2"


base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [str(llama_cpp / "convert_hf_to_gguf.py")] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
