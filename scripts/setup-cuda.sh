#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit the project builds with from NVIDIA's PyPI wheels
# into a cache outside the repository, lays it out as a toolkit root (bin/, include/,
# lib/, lib64 -> lib, nvvm/, targets/x86_64-linux/{include,lib}) and prints that root.
# Idempotent: a root that is already complete is reused in well under a second.
#
#   root=$(bash scripts/setup-cuda.sh)    # then: FA_CUDA_ROOT=$root npm run build:native
#
# The cuBLAS wheel is installed for its headers only: the addon loads libcublas with
# dlopen at run time, so nothing links against it.
set -euo pipefail

cache="${FA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fused-adapters}"
root="${FA_CUDA_ROOT:-$cache/cuda-13.0}"
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-culibos==13.0.85
  nvidia-cublas==13.0.2.14
)
stamp="$root/.fused-adapters-toolkit"
want="$(printf '%s\n' "${wheels[@]}")"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$root/bin/nvcc" ]]; then
  echo "$root"
  exit 0
fi

log() { echo "setup-cuda: $*" >&2; }
command -v python3 >/dev/null || { log "python3 with pip is required"; exit 1; }

# Install into a fresh sibling directory, then rename it into place, so an
# interrupted install never leaves a root that looks complete.
staging="$root.partial-$$"
rm -rf "$staging"
mkdir -p "$staging"
trap 'rm -rf "$staging"' EXIT
log "installing ${wheels[*]} into $root"
start=$SECONDS
python3 -m pip install --quiet --no-deps --no-compile --target "$staging/site" "${wheels[@]}" >&2

cu="$staging/site/nvidia/cu13"
[[ -x "$cu/bin/nvcc" ]] || { log "the wheels did not provide nvidia/cu13/bin/nvcc"; exit 1; }
mv "$cu" "$staging/root"
rm -rf "$staging/site"
cd "$staging/root"
# cuBLAS is for its headers only (the addon dlopens the host's libcublas at run time).
rm -f lib/libcublas*.so* lib/libnvblas.so*
ln -sfn lib lib64
mkdir -p targets/x86_64-linux
ln -sfn ../../include targets/x86_64-linux/include
ln -sfn ../../lib targets/x86_64-linux/lib
# The runtime wheel ships libcudart.so.13 only; CMake's FindCUDAToolkit looks for libcudart.so.
for lib in lib/lib*.so.*; do
  base="${lib%%.so.*}.so"
  [[ -e "$base" ]] || ln -sfn "$(basename "$lib")" "$base"
done
printf '%s\n' "${wheels[@]}" > .fused-adapters-toolkit
cd /
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$staging/root" "$root"
log "done in $((SECONDS - start)) s: $("$root/bin/nvcc" --version | tail -2 | head -1)"
echo "$root"
