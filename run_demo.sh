#!/usr/bin/env bash
# The main job end to end on embedded defaults: sets up both environments (first run only), generates
# synthetic `small` data, builds an n-gram LM and the wordfreq 1-gram, trains the baseline (small CPU config),
# starts the bundled redis-server and the LM server (SmolLM2 rescoring), evaluates the val split and prints
# one PER/WER table; writes the submission CSV and Figure 2 under runs/demo/. Stops everything it started.
#   ./run_demo.sh            (~20 min on 2 cores the first time; a re-run reuses finished steps)
#   ./run_demo.sh --quick    (tiny data, short training: < 5 min)
#   ./run_demo.sh --recipe nnn   (the adversarial TripleGRUDecoder instead of the baseline GRU; runs/demo_nnn)
#   ./run_demo.sh --help     (all options)
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
./setup_lm.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec envs/b2txt25/bin/python -m end_to_end.run_demo "$@"
