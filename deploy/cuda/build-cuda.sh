#!/usr/bin/env bash
# Builds `cargo build --release --features cuda` on a machine with no GPU and no
# system CUDA, using NVIDIA's CUDA 13.0 wheels from PyPI, then checks that the
# binary's `--device cuda` fails cleanly (no panic) when there is no GPU.
# See deploy/cuda/README.md. Run from the repository root.
#
# Environment:
#   TRIAGED_CUDA_CACHE  where wheels and the toolkit folder live
#                       (default ~/.cache/triaged-cuda); reruns reuse it.
#   CUDA_COMPUTE_CAP    GPU architecture for the kernels (default 80 = sm_80).
#   CARGO_TARGET_DIR    honoured as usual (default ./target).
#   PYTHON              python with pip (default python3).
#   SKIP_BUILD=1        only set up the toolkit and print the environment.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(pwd)"
[[ -f "$repo/Cargo.toml" && -f "$repo/deploy/cuda/build-cuda.sh" ]] \
  || { echo "build-cuda.sh: run from the repository root" >&2; exit 2; }

cache="${TRIAGED_CUDA_CACHE:-$HOME/.cache/triaged-cuda}"
python="${PYTHON:-python3}"

# The CUDA 13.0 Update 2 release: every component of one toolkit release, pinned.
# (The -cu12 nvcc wheels ship only ptxas; from 13.0 the wheels carry the full nvcc
# and all install into nvidia/cu13/{bin,include,lib,nvvm}.)
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
)
key="$(printf '%s\n' "${wheels[@]}" | sha256sum | cut -c1-12)"
site="$cache/site-$key"
tk="$cache/toolkit-$key"

log() { echo "build-cuda: $*" >&2; }

# 1. Wheels (download once into $cache/wheels, install into $site).
if [[ ! -f "$site/.complete" ]]; then
  log "downloading ${#wheels[@]} wheels into $cache/wheels"
  mkdir -p "$cache/wheels"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
    -d "$cache/wheels" "${wheels[@]}"
  rm -rf "$site"
  files=()
  for w in "${wheels[@]}"; do
    name="${w%%==*}"; ver="${w##*==}"
    f=("$cache/wheels/${name//-/_}-${ver}-"*.whl)
    [[ -f "${f[0]}" ]] || { log "wheel for $w not found in $cache/wheels"; exit 1; }
    files+=("${f[0]}")
  done
  "$python" -m pip install --quiet --no-deps --no-index --target "$site" "${files[@]}"
  touch "$site/.complete"
fi
cu="$site/nvidia/cu13"
[[ -x "$cu/bin/nvcc" && -d "$cu/nvvm/bin" && -f "$cu/include/cuda_runtime.h" ]] \
  || { log "$cu is not a full toolkit (nvcc/nvvm/include missing)"; exit 1; }

# 2. Toolkit folder: bin/include/nvvm link to the wheel's own folders (nvcc finds
#    cicc, ptxas and its headers relative to itself), lib64/ has the plain .so
#    names the linker wants.
mkdir -p "$tk/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$cu/$d" "$tk/$d"; done
for f in "$cu"/lib/*.so.* "$cu"/lib/*.a; do
  b="$(basename "$f")"
  ln -sfn "$f" "$tk/lib64/$b"
  case "$b" in
    *.alt.so*|libnvrtc-builtins*) ;;          # not linked against
    *.so.*) ln -sfn "$b" "$tk/lib64/${b%%.so.*}.so" ;;
  esac
done

# 3. Stub libcuda.so.1: the driver is in no wheel, but cudarc (via candle-core's
#    `dynamic-linking` feature) links -lcuda. Symbols come from the locked cudarc.
stub="$tk/lib64/stubs/libcuda.so.1"
cudarc_dir="$(cargo metadata --format-version 1 --features cuda --locked 2>/dev/null \
  | "$python" -c 'import json,sys,os
m=json.load(sys.stdin)
p=[p for p in m["packages"] if p["name"]=="cudarc"]
print(os.path.dirname(p[0]["manifest_path"]) if p else "")')"
[[ -n "$cudarc_dir" ]] || { log "cudarc not in the cargo metadata for --features cuda"; exit 1; }
syms="$cudarc_dir/src/driver/sys/mod.rs"
stub_src_key="$(cat "$here/libcuda-stub.c" "$syms" | sha256sum | cut -c1-12)"
if [[ ! -f "$stub" || "$(cat "$tk/lib64/stubs/.key" 2>/dev/null)" != "$stub_src_key" ]]; then
  log "building stub libcuda.so.1 from $syms"
  gen="$(mktemp -d)"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$syms" | awk '{print $4}' | sort -u \
    | grep -vxE 'cuGetErrorString|cuGetErrorName' | sed 's/.*/STUB(&)/' > "$gen/stub-symbols.h"
  [[ -s "$gen/stub-symbols.h" ]] || { log "no cu* functions found in $syms"; exit 1; }
  cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -I "$gen" \
    -o "$stub" "$here/libcuda-stub.c"
  rm -rf "$gen"
  echo "$stub_src_key" > "$tk/lib64/stubs/.key"
fi
ln -sfn libcuda.so.1 "$tk/lib64/stubs/libcuda.so"

export CUDA_HOME="$tk" CUDA_PATH="$tk"
export PATH="$tk/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
nvcc --version | grep -q 'release 13\.0' || { log "nvcc is not CUDA 13.0"; nvcc --version >&2; exit 1; }
log "toolkit: CUDA_HOME=$tk (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
[[ "${SKIP_BUILD:-0}" == 1 ]] && { echo "export CUDA_HOME=$tk CUDA_PATH=$tk PATH=$tk/bin:\$PATH CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"; exit 0; }

# 4. Build.
start=$SECONDS
cargo build --release --locked --features cuda
log "cargo build --release --features cuda: $((SECONDS - start)) s"
bin="${CARGO_TARGET_DIR:-$repo/target}/release/triaged"
[[ "$bin" = /* ]] || bin="$repo/$bin"
log "binary: $bin ($(stat -c %s "$bin") bytes)"

# 5. Run it. The binary needs libcuda.so.1 (the driver) and the CUDA libraries
#    at load time; without a GPU the stub stands in for the driver.
runlib="$tk/lib64"
if nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; else have_gpu=0; runlib="$runlib:$tk/lib64/stubs"; fi
run() { LD_LIBRARY_PATH="$runlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" "$@"; }
run train --help | grep -q -- '--device' || { log "'triaged train --help' has no --device"; exit 1; }

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
run data synth --out "$tmp/x.safetensors" --cases 300 >/dev/null
set +e
run train --data "$tmp/x.safetensors" --out "$tmp/model" --device cuda >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
if [[ $have_gpu == 1 ]]; then
  [[ $rc == 0 ]] || { cat "$tmp/err" >&2; log "train --device cuda failed on a GPU host (exit $rc)"; exit 1; }
  log "OK: trained on the GPU"
  exit 0
fi
if grep -q 'panicked at' "$tmp/err"; then cat "$tmp/err" >&2; log "FAIL: --device cuda panicked"; exit 1; fi
[[ $rc != 0 ]] || { log "FAIL: --device cuda succeeded with no GPU?"; exit 1; }
grep -qi 'cuda' "$tmp/err" || { cat "$tmp/err" >&2; log "FAIL: the error does not mention CUDA"; exit 1; }
log "OK: no GPU here, --device cuda fails cleanly (exit $rc):"
cat "$tmp/err" >&2
