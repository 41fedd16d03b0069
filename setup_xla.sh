#!/usr/bin/env bash
# PyTorch/XLA environment "b2txt_xla": a pip venv in ./envs/b2txt_xla (model_training_nnn/*xla*).
#   ./setup_xla.sh          create or update it: torch 2.9.0 + torch_xla 2.9.0 (CPU PJRT here: PJRT_DEVICE=CPU)
#   ./setup_xla.sh --tpu    also install libtpu (on a TPU VM; then PJRT_DEVICE=TPU)
#   ./setup_xla.sh --conda  use a conda env named b2txt_xla instead, when conda is installed
# requirements/b2txt_xla.txt lists everything; its "#no-deps:" lines (torch, torch_xla and the CUDA
# libraries torch needs at load time) go through `pip install --no-deps`. A re-run takes ~1 s.
set -euo pipefail
cd "$(dirname "$0")"
extra=()
for arg in "$@"; do
  case "$arg" in
    --conda) export B2TXT_USE_CONDA=1 ;;
    --tpu) extra+=("libtpu==0.0.21") ;;  # the libtpu that torch_xla 2.9.0's [tpu] extra pins
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_xla.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
reqs=requirements/b2txt_xla.txt
mapfile -t nodeps < <(sed -n 's/^#no-deps: *//p' "$reqs")
source scripts/make_env.sh
make_env b2txt_xla "$reqs" -- "${nodeps[@]}" "${extra[@]}"
