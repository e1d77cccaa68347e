#!/usr/bin/env bash
# llama.cpp loads the GGUF files `wmoe quantize` writes, and its greedy continuation equals
# wmoe's on the same file and prompt (docs/PERF.md records a run).
# Usage: tools/gguf_llama_check.sh [LLAMA_COMPLETION]
#   LLAMA_COMPLETION: llama.cpp's llama-completion (default /opt/peer/build-cpu/bin/llama-completion)
#   WMOE: the wmoe binary (default target/release/wmoe); N: tokens to generate (default 32)
# Models: the demo model (assets/models/demo, q8_0 and q4_0) and tiny-moe at q8_0 / q4_0 with
# routed_scaling_factor 1 (llama.cpp's lfm2moe ignores expert_weights_scale; tiny-moe's is 1.5).
# llama.cpp runs with -nr (no weight repacking: its AMX kernels trap where the VM hides AMX).
# Exits non-zero when a file fails to load or a continuation differs.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA="${1:-/opt/peer/build-cpu/bin/llama-completion}"
WMOE="${WMOE:-target/release/wmoe}"
N="${N:-32}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# tiny-moe with routed_scaling_factor 1
cp -r assets/models/tiny-moe "$work/tiny-moe-scale1"
sed -i 's/"routed_scaling_factor": 1.5/"routed_scaling_factor": 1.0/' "$work/tiny-moe-scale1/config.json"
grep -q '"routed_scaling_factor": 1.0' "$work/tiny-moe-scale1/config.json"

fail=0
check() { # model dir, type, prompt
  local dir=$1 type=$2 prompt=$3 name
  name="$(basename "$dir")-$type"
  [ -f "$work/$name.gguf" ] ||
    "$WMOE" quantize --model "$dir" --type "$type" --out "$work/$name.gguf" >/dev/null
  local ours theirs
  # wmoe bans the end-of-generation tokens as llama.cpp's --ignore-eos does (<|endoftext|> 2,
  # <|im_end|> 7); texts compared as lossy UTF-8 (byte tokens of random models) without
  # trailing whitespace or an unfinished character, which the two print differently.
  ours=$("$WMOE" generate --model "$work/$name.gguf" --prompt "$prompt" --max-tokens "$N" \
    --temperature 0 --logit-bias 2=-100 --logit-bias 7=-100 --kv-type f32 2>/dev/null | tidy)
  theirs=$("$LLAMA" -m "$work/$name.gguf" -p "$prompt" -n "$N" --temp 0 -no-cnv --ignore-eos \
    --no-display-prompt -nr -t 1 --seed 1 -ctk f32 -ctv f32 2>/dev/null | tidy)
  if [ "$ours" == "$theirs" ]; then
    echo "| $name | \`$prompt\` | equal | \`$(cut -c1-50 <<<"$ours" | head -1)\` |"
  else
    echo "| $name | \`$prompt\` | DIFFERENT | wmoe \`$ours\` llama.cpp \`$theirs\` |"
    fail=1
  fi
}
# Lossy UTF-8, escaped on one line, without trailing whitespace or replacement characters.
tidy() {
  python3 -c 'import sys; t = sys.stdin.buffer.read().decode("utf-8", "replace"); print(repr(t.rstrip().rstrip("\ufffd").rstrip()))'
}
echo "| file (wmoe quantize) | prompt | $N greedy tokens, wmoe vs llama.cpp | text |"
echo "|---|---|---|---|"
for type in ${TYPES:-f32 q8_0 q4_0}; do
  check assets/models/demo "$type" "The capital of France is"
  check assets/models/demo "$type" "Once upon a time"
  check "$work/tiny-moe-scale1" "$type" "Hello, world! The quick brown fox"
  check "$work/tiny-moe-scale1" "$type" "In a mixture of experts, a router"
done
exit $fail
