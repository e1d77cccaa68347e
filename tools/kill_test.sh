#!/usr/bin/env bash
# kill -9 of `wmoe synth` and `wmoe quantize` (to a checkpoint folder and to a GGUF file) at
# random points (docs/RELIABILITY.md).
#
# For each command, N runs (default 20) are each killed with SIGKILL after a random delay
# between 0 and 1.2 times a full run's duration (so some runs finish first). After every
# kill the output must be absent, or complete and loadable (`wmoe generate` on it); at most
# the killed run's own temporary `.<out>.tmp-<pid>-<random>` may remain beside it, and the
# next run must remove it. A last run to completion must leave the output and nothing else.
#
#   cargo build --release && tools/kill_test.sh            # N=20, lfm2-8b-a1b, 2 layers
#   N=5 LAYERS=1 tools/kill_test.sh
#
# Needs a GPU or lavapipe for the load checks. Prints one line per kill and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
LAYERS=${LAYERS:-2}
BIN=${WMOE_BIN:-$PWD/target/release/wmoe}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wmoe-kill.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The output's name in $WORK (a checkpoint folder, or a .gguf file).
OUT=out

# The entries of $WORK other than the source model, one per line.
others() { ls -A "$WORK" | grep -v '^src$' || true; }

# Loads the output $1 and generates one token.
loads() { "$BIN" generate --model "$1" --tokens 1 --max-tokens 1 >/dev/null 2>&1; }

# Runs "$@" (writing $WORK/$OUT) to completion; prints its duration in seconds.
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || fail "a full run of $* failed"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

# N killed runs of "$@" writing $WORK/$OUT (a full run takes $2 s); prints the tally.
kill_runs() {
  local name=$1 full=$2; shift 2
  local absent=0 complete=0 removed=0 pending="" pid delay state t
  for i in $(seq 1 "$N"); do
    delay=$(awk -v f="$full" -v r="$RANDOM" 'BEGIN { printf "%.2f", f * 1.2 * r / 32767 }')
    "$@" >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Earlier runs' temporaries: gone once a later run got as far as writing.
    local still=""
    for t in $pending; do
      if [ -e "$WORK/$t" ]; then still="$still $t"; else removed=$((removed + 1)); fi
    done
    pending=$still
    local own=""
    for t in $(others | grep -vxF "$OUT" || true); do
      case " $pending " in *" $t "*) continue ;; esac
      [[ "$t" == ."$OUT".tmp-"$pid"-* ]] || fail "$name run $i left $t, which is not its own temporary"
      own=$t
    done
    [ -z "$own" ] || [ -z "$pending" ] || fail "$name run $i wrote without removing the stale$pending"
    if [ -e "$WORK/$OUT" ]; then
      loads "$WORK/$OUT" || fail "$name run $i: the output exists but does not load"
      complete=$((complete + 1)); state=complete
      rm -rf "$WORK/$OUT"
    else
      absent=$((absent + 1)); state=absent
    fi
    echo "$name run $i: killed after ${delay}s: output $state${own:+, its temporary left}"
    if [ -n "$own" ]; then pending="$pending $own"; fi
  done
  "$@" >/dev/null 2>&1 || fail "$name: the last run failed"
  for t in $pending; do
    [ -e "$WORK/$t" ] || removed=$((removed + 1))
  done
  loads "$WORK/$OUT" || fail "$name: the last run's output does not load"
  [ "$(others)" = "$OUT" ] || fail "$name: after the last run $WORK holds: $(others | tr '\n' ' ')"
  rm -rf "$WORK/$OUT"
  echo "$name: $N kills: output absent $absent, complete and loading $complete; $removed temporaries of killed runs removed by a later run; after the last run only the output remains"
}

synth=("$BIN" synth --preset lfm2-8b-a1b --layers "$LAYERS" --out "$WORK/out")
full=$(timed "${synth[@]}")
echo "synth: a full run takes ${full}s ($(du -sh "$WORK/out" | cut -f1))"
mv "$WORK/out" "$WORK/src"
kill_runs synth "$full" "${synth[@]}"

quantize=("$BIN" quantize --model "$WORK/src" --type q8_0 --out "$WORK/out")
full=$(timed "${quantize[@]}")
echo "quantize: a full run takes ${full}s ($(du -sh "$WORK/out" | cut -f1))"
rm -rf "$WORK/out"
kill_runs quantize "$full" "${quantize[@]}"

OUT=out.gguf
gguf=("$BIN" quantize --model "$WORK/src" --type q8_0 --out "$WORK/$OUT")
full=$(timed "${gguf[@]}")
echo "quantize to GGUF: a full run takes ${full}s ($(du -sh "$WORK/$OUT" | cut -f1))"
rm -f "$WORK/$OUT"
kill_runs quantize-gguf "$full" "${gguf[@]}"
