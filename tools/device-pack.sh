#!/usr/bin/env bash
# Packs what tools/device-bench.sh needs on a bare GPU machine into .devbench/ (ignored by git
# through .git/info/exclude; the device tool's `carry` takes it): stripped, gzipped wmoe,
# kernels-bench and a portable Vulkan llama-bench, the Vulkan loader as a .deb, libgomp, and
# peer.txt (how the peer was built, which Vulkan shader features its glslc had). The pack
# must stay well under the device tool's 64 MiB (working tree included): the sizes are printed.
#
# Usage: tools/device-pack.sh [--llama-build DIR] [--pack DIR]
#   --llama-build DIR  llama.cpp build dir with bin/llama-bench, configured GGML_VULKAN=ON and
#                      GGML_NATIVE=OFF [default /opt/peer/build-vk-portable; tools/README.md
#                      has the cmake line]
#   --pack DIR         output folder [default .devbench]
set -euo pipefail

LLAMA_BUILD=/opt/peer/build-vk-portable
PACK=.devbench
while [ $# -gt 0 ]; do
  case "$1" in
    --llama-build) LLAMA_BUILD=$2; shift 2 ;;
    --pack) PACK=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device-pack: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "device-pack: $*" >&2; exit 1; }
cd "$(git rev-parse --show-toplevel)"

cache="$LLAMA_BUILD/CMakeCache.txt"
[ -x "$LLAMA_BUILD/bin/llama-bench" ] || die "no $LLAMA_BUILD/bin/llama-bench (build it first)"
grep -q '^GGML_VULKAN:BOOL=ON' "$cache" || die "$LLAMA_BUILD is not a Vulkan build"
grep -q '^GGML_NATIVE:BOOL=OFF' "$cache" ||
  die "$LLAMA_BUILD is built with GGML_NATIVE (-march=native): the GPU machine's CPU may differ"

# Ignored by git in every worktree of this repository (info/exclude is shared).
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
for p in "/$PACK/" /devbench-out/; do
  grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"
done
rm -rf "$PACK"; mkdir -p "$PACK/bin" "$PACK/debs" "$PACK/lib"

echo "device-pack: building wmoe and kernels-bench (release)" >&2
nice -n 10 cargo build --release --bin wmoe
kb=$(nice -n 10 cargo bench -p kernels-bench --no-run --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"):
        print(m["executable"])')
[ -x "$kb" ] || die "kernels-bench executable not found"

for pair in "target/release/wmoe:wmoe" "$kb:kernels-bench" "$LLAMA_BUILD/bin/llama-bench:llama-bench"; do
  src=${pair%%:*}; name=${pair##*:}
  strip -o "$PACK/bin/$name" "$src"
  gzip -9 "$PACK/bin/$name"
done

# The Vulkan loader, the device README's way (amd64 package lists kept apart in /tmp/amd64).
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
mkdir -p /tmp/amd64/partial
apt-get "${o[@]}" update >/dev/null
(cd "$PACK/debs" && apt-get "${o[@]}" download libvulkan1 >/dev/null)
cp -L "$(ldconfig -p | awk '/libgomp\.so\.1 .*x86-64/ {print $NF; exit}')" "$PACK/lib/libgomp.so.1"

# How the peer was built: source, flags, and the shader extensions its glslc compiles, by
# the test ggml-vulkan's CMakeLists.txt makes at configure time (same glslc, same shaders).
src=$(grep '^CMAKE_HOME_DIRECTORY' "$cache" | cut -d= -f2)
glslc=$(grep '^Vulkan_GLSLC_EXECUTABLE:' "$cache" | cut -d= -f2)
tests="$src/ggml/src/ggml-vulkan/vulkan-shaders/feature-tests"
on=() off=()
for f in coopmat:GL_KHR_cooperative_matrix coopmat2:GL_NV_cooperative_matrix2 \
         integer_dot:GL_EXT_integer_dot_product bfloat16:GL_EXT_bfloat16; do
  [ -f "$tests/${f%%:*}.comp" ] || die "no feature test $tests/${f%%:*}.comp"
  said=$("$glslc" -o /dev/null -fshader-stage=compute --target-env=vulkan1.3 "$tests/${f%%:*}.comp" 2>&1 || true)
  if grep -q "extension not supported: ${f##*:}" <<<"$said"; then
    off+=("${f##*:}"); else on+=("${f##*:}"); fi
done
# build_peer.sh extracts vendor/llama.cpp of the llama-cpp-python sdist it keeps in ../dl.
ver=$(ls "$src"/../dl/llama_cpp_python-*.tar.gz 2>/dev/null | sed -n 's/.*python-\(.*\)\.tar\.gz/\1/p' | head -1)
glslc_ver=$("$glslc" --version 2>/dev/null | sed -n 1p)
{
  printf 'Built from %s%s (GGML_NATIVE=OFF, static ggml) with %s; ' "$src" \
    "${ver:+ (llama-cpp-python $ver)}" "glslc of ${glslc_ver:-?}"
  printf 'shader extensions compiled: %s; NOT compiled: %s' "${on[*]:-none}" "${off[*]:-none}"
  case " ${off[*]} " in
    *cooperative_matrix\ *|*integer_dot*) printf ' (this glslc lacks them: the peer runs its matrix products without cooperative-matrix / integer-dot shaders, which favours wmoe in prefill)' ;;
  esac
  echo .
} >"$PACK/peer.txt"

{
  echo "wmoe $(git describe --always --dirty), packed $(date -u +%Y-%m-%dT%H:%MZ)"
  (cd "$PACK" && find . -type f ! -name MANIFEST -printf '%s\t%p\n' | sort -k2)
} >"$PACK/MANIFEST"
cat "$PACK/MANIFEST" "$PACK/peer.txt"
total=$(du -sb "$PACK" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "device-pack: $PACK is $((total / 1024)) KiB; with the tracked tree ($((tree / 1024)) KiB) $(((total + tree) / 1048576)) MiB of the 64 MiB a device call may carry" >&2
[ $((total + tree)) -lt $((60 * 1048576)) ] || die "pack plus tree exceed 60 MiB"
