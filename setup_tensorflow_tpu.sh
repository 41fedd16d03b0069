#!/usr/bin/env bash
# TensorFlow port environment "b2txt_tf": a pip venv in ./envs/b2txt_tf (model_training_nnn_tpu/).
#   ./setup_tensorflow_tpu.sh          create or update it (CPU build, or the TPU build on a TPU VM)
#   ./setup_tensorflow_tpu.sh --tpu    force the TPU build (tensorflow-tpu + libtpu)
#   ./setup_tensorflow_tpu.sh --cpu    force the CPU build (tensorflow-cpu), even on a TPU VM
#   ./setup_tensorflow_tpu.sh --conda  use a conda env named b2txt_tf instead, when conda is installed
# A TPU VM is recognised by its /dev/accel* or /dev/vfio devices, or a TPU_NAME / COLAB_TPU_ADDR /
# TPU_WORKER_ID variable. A re-run with unchanged requirements takes ~1 s.
set -euo pipefail
cd "$(dirname "$0")"
build=auto
for arg in "$@"; do
  case "$arg" in
    --conda) export B2TXT_USE_CONDA=1 ;;
    --tpu) build=tpu ;;
    --cpu) build=cpu ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_tensorflow_tpu.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$build" = auto ]; then
  build=cpu
  if compgen -G "/dev/accel*" >/dev/null || [ -e /dev/vfio ] || [ -n "${TPU_NAME:-}${COLAB_TPU_ADDR:-}${TPU_WORKER_ID:-}" ]; then
    build=tpu
  fi
fi
source scripts/make_env.sh
tf_reqs=requirements/b2txt_tf.txt
if [ "$build" = tpu ]; then
  # The TPU build of the same stack: the one tensorflow-cpu line becomes tensorflow-tpu + libtpu.
  mkdir -p envs
  tf_reqs=envs/.b2txt_tf_tpu_requirements.txt
  sed -e 's/^tensorflow-cpu==.*/tensorflow-tpu==2.20.0\nlibtpu/' requirements/b2txt_tf.txt > "$tf_reqs"
fi
echo "[b2txt_tf] TensorFlow build: $build"
make_env b2txt_tf "$tf_reqs" requirements/b2txt25.txt requirements/test.txt
