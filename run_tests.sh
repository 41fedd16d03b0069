#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs both environments if needed (./setup.sh,
# ./setup_lm.sh), lints with ruff, then runs pytest in each environment:
#   envs/b2txt25     tests/ except tests/language_model (data, training, evaluation, analyses, end to end)
#   envs/b2txt25_lm  tests/language_model (WFST decoding, LM building, the Redis LM server)
# Extra arguments go to both pytest runs, e.g. ./run_tests.sh -k hdf5 -x
set -uo pipefail
cd "$(dirname "$0")"
./setup.sh || exit 1
./setup_lm.sh || exit 1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT

echo "== ruff"
envs/b2txt25/bin/ruff check . || exit 1

status=0
echo "== pytest (b2txt25)"
envs/b2txt25/bin/python -m pytest tests --ignore=tests/language_model --junitxml="$reports/main.xml" "$@"
rc=$?; [ $rc -eq 0 ] || status=$rc
echo "== pytest (b2txt25_lm)"
envs/b2txt25_lm/bin/python -m pytest tests/language_model --junitxml="$reports/lm.xml" "$@"
rc=$?; [ $rc -eq 0 ] || status=$rc

# One closing line over both runs.
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
