#!/usr/bin/env bash
# The prepared GPU run of issue 14: wmoe beside llama.cpp's Vulkan backend on the same GGUF
# files, the expert matvec against the copy kernel, and the fusion A/B, in one call that
# prints one markdown table for docs/PERF.md. tools/README.md says how to pack the binaries
# (tools/device-pack.sh) and gives the exact device `run` command.
#
# Steps (each under a time limit, all inside one overall deadline; a failed step is
# reported and the rest still run; the exit status is non-zero when any step failed):
#   1. wmoe devices
#   2. per type (q4_0, then q4_k_m): wmoe synth --preset lfm2-8b-a1b --layers N --type TYPE
#      --out FILE.gguf (generated there: the files are GBs), then wmoe bench and
#      llama-bench -ngl 99 on it, pp P and tg T at depths 0 and D, f16 KV;
#      after the first type's benches:
#   3. kernels-bench: copy, expert matvec, expert down combine (% of copy bandwidth)
#   4. fusion A/B: wmoe bench tg T on the first file, fused vs WMOE_NO_FUSION=1; the fused
#      run also decodes 4 sequences together (--parallel 1,4: issue 12's batching ratio)
# Targets in the table (issue 14 and 10): tg ≥ 1.25× and pp ≥ 1.0× llama.cpp, expert matvec
# ≥ 60% of copy bandwidth, tg at depth D ≥ 0.65× tg at depth 0 (f16 KV).
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: tools/device-bench.sh [OPTIONS]

Binaries (default: under the pack, see --pack; a PATH.gz is unpacked first):
  --wmoe PATH            wmoe executable                  [env WMOE_BIN]
  --kernels-bench PATH   kernels-bench bench executable   [env KERNELS_BENCH]
  --llama-bench PATH     llama-bench, Vulkan build        [env LLAMA_BENCH]
  --pack DIR             folder made by tools/device-pack.sh [env DEVBENCH_PACK; .devbench]
Shape of the run:
  --layers N             layers of the LFM2-8B-A1B synth (24, the full model; fewer is a
                         dry run with small defaults below)
  --pp N --tg N          prompt / generated tokens (full 512 / 128; dry run 32 / 8)
  --depth N              second context depth (full 32768; dry run 128)
  --reps N               repetitions (full 3; dry run 1)
  --types "A B"          synth weight types (default "q4_0 q4_k_m"; the fusion A/B uses the first)
  --deadline S           stop starting steps after S seconds (full 480; dry run 1800)
  --llama-args "ARGS"    extra llama-bench arguments (e.g. "--repack 0" for a CPU build here)
  --work DIR             GGUF files and raw outputs [env DEVBENCH_WORK; /tmp/wmoe-devbench]
  --out DIR              table.md, results.json, run.log [env OUT; ./devbench-out]
  -h, --help             this text
EOF
}

die() { echo "device-bench: $*" >&2; exit 2; }

PACK="${DEVBENCH_PACK:-.devbench}"
WMOE="${WMOE_BIN:-}"; KB="${KERNELS_BENCH:-}"; LLAMA="${LLAMA_BENCH:-}"
LAYERS=24; PP=""; TG=""; DEPTH=""; REPS=""; DEADLINE=""
TYPES="q4_0 q4_k_m"; LLAMA_ARGS=""
WORK="${DEVBENCH_WORK:-/tmp/wmoe-devbench}"; OUTDIR="${OUT:-devbench-out}"

while [ $# -gt 0 ]; do
  case "$1" in
    --wmoe) WMOE=$2; shift 2 ;;
    --kernels-bench) KB=$2; shift 2 ;;
    --llama-bench) LLAMA=$2; shift 2 ;;
    --pack) PACK=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --pp) PP=$2; shift 2 ;;
    --tg) TG=$2; shift 2 ;;
    --depth) DEPTH=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --llama-args) LLAMA_ARGS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
for v in LAYERS PP TG DEPTH REPS DEADLINE; do
  val=${!v}
  [ -z "$val" ] || [[ "$val" =~ ^[0-9]+$ ]] || die "--${v,,} must be a whole number, not '$val'"
done
[ "$LAYERS" -ge 1 ] && [ "$LAYERS" -le 24 ] || die "--layers must be 1..24"
[ -n "$TYPES" ] || die "--types is empty"
if [ "$LAYERS" -lt 24 ]; then DRY=1; else DRY=0; fi
if [ $DRY = 1 ]; then d=(32 8 128 1 1800); else d=(512 128 32768 3 480); fi
PP=${PP:-${d[0]}}; TG=${TG:-${d[1]}}; DEPTH=${DEPTH:-${d[2]}}; REPS=${REPS:-${d[3]}}
DEADLINE=${DEADLINE:-${d[4]}}

mkdir -p "$WORK/bin" "$OUTDIR" || die "cannot create $WORK or $OUTDIR"
rm -f "$WORK"/*.out "$WORK"/*.err   # no step's output from an earlier run
LOG="$OUTDIR/run.log"; : >"$LOG"
FAILED=()
log() { echo "[device-bench $(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG" >&2; }

# A binary from its flag or the pack; PATH.gz is unpacked into $WORK/bin.
resolve() {   # resolve VALUE PACKNAME
  local p=${1:-$PACK/bin/$2}
  if [ ! -e "$p" ] && [ -e "$p.gz" ]; then
    gzip -dc "$p.gz" >"$WORK/bin/$2" && chmod +x "$WORK/bin/$2" && p="$WORK/bin/$2"
  fi
  [ -x "$p" ] || die "no executable $2 at '$p' (flag, env or $PACK/bin/$2[.gz]; see --help)"
  echo "$p"
}
WMOE=$(resolve "$WMOE" wmoe) || exit 2
KB=$(resolve "$KB" kernels-bench) || exit 2
LLAMA=$(resolve "$LLAMA" llama-bench) || exit 2
command -v python3 >/dev/null || die "python3 is needed to build the table"

# The Vulkan loader and driver manifest, where the machine lacks them (the device README):
# the pack's .debs are unpacked into / only when no libvulkan.so.1 is installed at all.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1 '; then
  debs=("$PACK"/debs/*.deb)
  [ -e "${debs[0]}" ] || die "no Vulkan loader installed and no $PACK/debs/*.deb to install"
  for f in "${debs[@]}"; do dpkg -x "$f" / || die "cannot unpack $f"; done
  ldconfig
  log "installed the Vulkan loader from ${debs[*]}"
fi
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nv_icd" ] &&
   ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$nv_icd
  log "VK_DRIVER_FILES=$nv_icd"
fi
# llama-bench links libgomp; the pack carries a copy for a machine without one.
LLAMA_ENV=()
if ! ldconfig -p | grep -q 'libgomp\.so\.1 ' && [ -d "$PACK/lib" ]; then
  LLAMA_ENV=(env "LD_LIBRARY_PATH=$(cd "$PACK/lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" CRITERION_HOME="$WORK/criterion"

# llama.cpp's Vulkan backend skips CPU devices unless told which to use: lavapipe (a dry run)
# is device 0 here. On a GPU machine the backend picks the GPUs itself.
if [ $DRY = 1 ] && [ -z "${GGML_VK_VISIBLE_DEVICES:-}" ]; then export GGML_VK_VISIBLE_DEVICES=0; fi

# step NAME LIMIT CMD...: stdout into $WORK/NAME.out, stderr into $WORK/NAME.err, both into the log.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS))
  if [ $left -lt 10 ]; then
    log "$name: skipped (deadline of ${DEADLINE}s reached)"; FAILED+=("$name: skipped"); return 1
  fi
  [ "$limit" -le "$left" ] || limit=$left
  log "$name: $* (limit ${limit}s)"
  echo "\$ $*" >>"$LOG"
  timeout -k 10 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  local rc=$?
  cat "$WORK/$name.err" "$WORK/$name.out" >>"$LOG"
  if [ $rc = 0 ]; then log "$name: ok"; else log "$name: FAILED (exit $rc)"; FAILED+=("$name: exit $rc"); fi
  return $rc
}

log "layers $LAYERS, pp $PP, tg $TG, depths 0,$DEPTH, reps $REPS, types $TYPES$([ $DRY = 1 ] && echo ', DRY RUN')"
step devices 60 "$WMOE" devices

# Type by type, so that a run cut short by the deadline has the first type's rows whole.
read -r -a types <<<"$TYPES"
for t in "${types[@]}"; do
  f="$WORK/synth$LAYERS-$t.gguf"
  stamp="$t $LAYERS $(cksum <"$WMOE")"
  if [ -s "$f" ] && [ "$(cat "$f.ok" 2>/dev/null)" = "$stamp" ]; then
    log "synth-$t: $f reused (same binary, type and layers)"
  else
    rm -f "$f" "$f.ok"
    step "synth-$t" 300 "$WMOE" synth --preset lfm2-8b-a1b --layers "$LAYERS" --type "$t" \
      --out "$f" && echo "$stamp" >"$f.ok"
  fi
  [ -s "$f" ] || { log "bench-$t: no file (synth failed)"; FAILED+=("bench-$t: no file"); continue; }
  step "wmoe-$t" 300 "$WMOE" bench --model "$f" -p "$PP" -n "$TG" -r "$REPS" -d "0,$DEPTH" \
    --kv-type f16 --json
  # shellcheck disable=SC2086  # LLAMA_ARGS is a list of arguments
  step "llama-$t" 300 "${LLAMA_ENV[@]}" "$LLAMA" -m "$f" -ngl 99 -p "$PP" -n "$TG" -r "$REPS" \
    -d "0,$DEPTH" -ctk f16 -ctv f16 -o json $LLAMA_ARGS
  if [ "$t" = "${types[0]}" ]; then
    step kernels 240 env WMOE_BENCH_FILTER="copy|expert matvec|expert down" "$KB" --bench
    for fusion in fused unfused; do
      sw=(); [ $fusion = unfused ] && sw=(WMOE_NO_FUSION=1)
      par=(); [ $fusion = fused ] && par=(--parallel 1,4)
      step "fusion-$fusion" 120 env "${sw[@]}" "$WMOE" bench --model "$f" -p 0 -n "$TG" \
        -r "$REPS" --kv-type f16 --json "${par[@]}"
    done
  fi
done

PEER_INFO=""
[ -f "$PACK/peer.txt" ] && PEER_INFO=$(cat "$PACK/peer.txt")
# The commit the binaries were built at: the pack's MANIFEST says, else the tree's git.
WMOE_REV=$(git -C "$(dirname "$0")" describe --always --dirty 2>/dev/null || echo unknown)
case "$WMOE" in
  "$PACK"/*|"$WORK/bin/wmoe") [ -f "$PACK/MANIFEST" ] && WMOE_REV=$(sed -n '1s/^wmoe //p' "$PACK/MANIFEST") ;;
esac
python3 - "$WORK" "$OUTDIR" "$LAYERS" "$PP" "$TG" "$DEPTH" "$REPS" "$DRY" "$TYPES" \
  "$PEER_INFO" "$WMOE_REV" "$(IFS=';'; echo "${FAILED[*]}")" <<'PY'
"""Builds the markdown table and results.json from the steps' outputs in WORK."""
import json, os, re, sys, datetime
work, outdir, layers, pp, tg, depth, reps, dry, types, peer_info, rev, failed = sys.argv[1:]
pp, tg, depth, dry = int(pp), int(tg), int(depth), dry == "1"
types = types.split()
problems = []

def read(name):
    try:
        return open(os.path.join(work, name + ".out"), errors="replace").read()
    except OSError:
        return None

def rows(name):
    """llama-bench-style JSON rows of a step, keyed by (n_prompt, n_gen, n_depth), and
    n_parallel after them where it is above 1 (wmoe bench --parallel)."""
    text = read(name)
    if not text:
        return {}
    try:
        data = json.loads(text[text.index("["):])
    except ValueError as e:
        problems.append(f"{name}: output is not JSON ({e})")
        return {}
    par = lambda r: (r["n_parallel"],) if r.get("n_parallel", 1) > 1 else ()
    return {(r["n_prompt"], r["n_gen"], r["n_depth"]) + par(r): r for r in data}

def ts(r):
    return f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}" if r else "–"

def verdict(value, target):
    if value is None:
        return "–"
    if dry:
        return "n/a (dry run)"
    return "yes" if value >= target else "**no**"

out, results = [], {"layers": int(layers), "dry_run": dry, "rows": []}
def row(what, a, b, ratio, target, met):
    out.append(f"| {what} | {a} | {b} | {ratio} | {target} | {met} |")
    results["rows"].append(dict(what=what, wmoe=a, peer=b, ratio=ratio, target=target, met=met))

peer_name, gpu = "llama.cpp", "?"
for t in types:
    w, l = rows(f"wmoe-{t}"), rows(f"llama-{t}")
    if w:
        gpu = next(iter(w.values())).get("gpu_info", gpu)
    if l:
        r0 = next(iter(l.values()))
        peer_name = f"llama.cpp {r0.get('backends', '?')}"
        err = open(os.path.join(work, f"llama-{t}.err"), errors="replace").read()
        found = re.findall(r"^ggml_vulkan: \d+ = (.*)$", err, re.M)
        if found:
            results.setdefault("peer_gpu_info", found[0].strip())
        elif "Vulkan" in r0.get("backends", ""):
            problems.append(f"llama-{t}: llama.cpp's Vulkan backend found no device (it ran on the CPU)")
            l = {}
    tests = [(f"pp{pp}", (pp, 0, 0), 1.0), (f"tg{tg}", (0, tg, 0), 1.25),
             (f"pp{pp} @ d{depth}", (pp, 0, depth), None), (f"tg{tg} @ d{depth}", (0, tg, depth), None)]
    for label, key, target in tests:
        a, b = w.get(key), l.get(key)
        ratio = a["avg_ts"] / b["avg_ts"] if a and b else None
        row(f"{t.upper()} {label}", ts(a), ts(b), f"{ratio:.2f}×" if ratio else "–",
            f"≥ {target}×" if target else "", verdict(ratio, target) if target else "")
    def keep(r):
        a, b = r.get((0, tg, depth)), r.get((0, tg, 0))
        return a["avg_ts"] / b["avg_ts"] if a and b else None
    kw, kl = keep(w), keep(l)
    row(f"{t.upper()} tg{tg} @ d{depth} ÷ tg{tg} @ d0 (f16 KV)", f"{kw:.2f}" if kw else "–",
        f"{kl:.2f}" if kl else "–", "", "wmoe ≥ 0.65", verdict(kw, 0.65))

# kernels-bench's closing summary: | bench | median | GiB/s | GFLOP/s | % of copy |
text = read("kernels") or ""
kern = {}
for m in re.finditer(r"^\| ((?:copy|expert)[^|]*?) \| ([^|]+) \| ([\d.]+) \| [^|]* \| ([^|]+) \|$", text, re.M):
    kern[m.group(1)] = (m.group(2).strip(), float(m.group(3)), m.group(4).strip())
copy = next((v for k, v in kern.items() if k.startswith("copy")), None)
if text and (not copy or len(kern) < 2):
    problems.append("kernels: no copy / expert rows in kernels-bench's summary")
for name, (median, gib, pct) in kern.items():
    if name.startswith("copy"):
        continue
    target = name.startswith("expert matvec")
    p = float(pct) if pct.replace(".", "").isdigit() else None
    row(f"kernel {name}", f"{gib:.1f} GiB/s ({median})", f"copy {copy[1]:.1f} GiB/s" if copy else "–",
        f"{pct}% of copy" if p is not None else "–", "≥ 60%" if target else "",
        verdict(p, 60.0) if target else "")

f_on, f_off = rows("fusion-fused").get((0, tg, 0)), rows("fusion-unfused").get((0, tg, 0))
ratio = f_on["avg_ts"] / f_off["avg_ts"] if f_on and f_off else None
row(f"fusion A/B {types[0].upper()} tg{tg}: fused vs WMOE_NO_FUSION=1", ts(f_on), ts(f_off),
    f"{ratio:.2f}×" if ratio else "–", "", "")

x4 = rows("fusion-fused").get((0, tg, 0, 4))
batch = x4["avg_ts"] / f_on["avg_ts"] if x4 and f_on else None
row(f"batching {types[0].upper()} tg{tg}: 4 sequences (aggregate) vs 1", ts(x4), ts(f_on),
    f"{batch:.2f}×" if batch else "–", "≥ 1.8× (issue 12)", verdict(batch, 1.8))

dev = (read("devices") or "").strip().splitlines()
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
head = [
    ("**DRY RUN (not a speed claim)**: " if dry else "") +
    f"tools/device-bench.sh, {stamp}, wmoe {rev}, synth lfm2-8b-a1b --layers {layers}, "
    f"pp {pp}, tg {tg}, depths 0 and {depth}, {reps} repetition(s), f16 KV in both engines.",
    f"GPU (wmoe): {gpu}. wmoe devices: `{dev[0] if dev else '?'}`" + (f" `{dev[-1].strip()}`" if len(dev) > 1 else ""),
    f"Peer: {peer_name}, GPU {results.get('peer_gpu_info') or '?'}, `llama-bench -ngl 99`. {peer_info}".strip(),
    "",
    f"| measurement | wmoe | {peer_name} / baseline | ratio | target | met |",
    "|---|---:|---:|---:|---|---|",
]
table = "\n".join(head + out) + "\n"
for f in filter(None, failed.split(";")):
    table += f"\nfailed step: {f}"
for p in problems:
    table += f"\nproblem: {p}"
results["failed_steps"] = [f for f in failed.split(";") if f]
results["problems"] = problems
open(os.path.join(outdir, "table.md"), "w").write(table)
json.dump(results, open(os.path.join(outdir, "results.json"), "w"), indent=1)
print(table)
sys.exit(1 if problems else 0)
PY
[ $? = 0 ] || FAILED+=("table: problems above")

if [ ${#FAILED[@]} -gt 0 ]; then
  log "FAILED: ${FAILED[*]} (details in $LOG)"
  exit 1
fi
log "all steps ok; table in $OUTDIR/table.md"
