#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs the four environments if needed (./setup.sh,
# ./setup_lm.sh, ./setup_xla.sh, ./setup_tensorflow_tpu.sh), lints with ruff, then runs pytest in each:
#   envs/b2txt25     tests/ except the three below (data, training incl. the eager nnn model, evaluation,
#                    analyses, end to end)
#   envs/b2txt25_lm  tests/language_model (WFST decoding, LM building, the Redis LM server)
#   envs/b2txt_xla   tests/model_training_nnn_xla (PyTorch/XLA on the CPU, PJRT_DEVICE=CPU)
#   envs/b2txt_tf    tests/model_training_nnn_tpu (the TensorFlow port)
# Extra arguments go to every pytest run, e.g. ./run_tests.sh -k hdf5 -x
set -uo pipefail
cd "$(dirname "$0")"
./setup.sh || exit 1
./setup_lm.sh || exit 1
./setup_xla.sh || exit 1
./setup_tensorflow_tpu.sh || exit 1
# The suite writes ~1.5 GB under the temporary folder (models, LMs, HDF5 files): say so in one line rather
# than let a full disk fail a hundred tests with the same traceback.
tmp_root="${TMPDIR:-/tmp}"
free_mb=$(df -Pm "$tmp_root" | awk 'NR==2 {print $4}')
if [ -n "$free_mb" ] && [ "$free_mb" -lt 3000 ]; then
  echo "run_tests.sh: only ${free_mb} MB free on $tmp_root; the tests need ~3000 MB (set TMPDIR to a roomier folder)" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT

echo "== ruff"
envs/b2txt25/bin/ruff check . || exit 1

status=0
note_rc() {  # keep the first failure; "no tests collected" (5) is fine only when a filter was passed
  local rc=$1; shift
  if [ "$rc" -eq 5 ] && [ $# -gt 0 ]; then rc=0; fi
  [ "$rc" -eq 0 ] || [ "$status" -ne 0 ] || status=$rc
}
echo "== pytest (b2txt25)"
envs/b2txt25/bin/python -m pytest tests --ignore=tests/language_model --ignore=tests/model_training_nnn_xla \
    --ignore=tests/model_training_nnn_tpu --junitxml="$reports/main.xml" "$@"
note_rc $? "$@"
echo "== pytest (b2txt25_lm)"
envs/b2txt25_lm/bin/python -m pytest tests/language_model --junitxml="$reports/lm.xml" "$@"
note_rc $? "$@"
echo "== pytest (b2txt_xla)"
PJRT_DEVICE=CPU envs/b2txt_xla/bin/python -m pytest tests/model_training_nnn_xla --junitxml="$reports/xla.xml" "$@"
note_rc $? "$@"
echo "== pytest (b2txt_tf)"
envs/b2txt_tf/bin/python -m pytest tests/model_training_nnn_tpu --junitxml="$reports/tf.xml" "$@"
note_rc $? "$@"

# One closing line over all runs.
envs/b2txt25/bin/python - "$reports" <<'PY'
import sys, glob, xml.etree.ElementTree as ET
t = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in glob.glob(sys.argv[1] + "/*.xml"):
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for k in t:
            t[k] += int(suite.get(k, 0))
failed = t["failures"] + t["errors"]
print(f"all: {t['tests'] - failed - t['skipped']} passed, {failed} failed, {t['skipped']} skipped")
PY
exit $status
