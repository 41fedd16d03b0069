#!/usr/bin/env bash
# Shared by setup.sh and setup_lm.sh: create (or reuse) one Python environment for this repo.
#   make_env NAME REQUIREMENTS... [-- EXTRA_NO_DEPS_PACKAGES...]
# venv (default): <repo>/envs/NAME, or $B2TXT_ENV_DIR/NAME. With B2TXT_USE_CONDA=1 and conda on PATH: a
# conda env NAME. Idempotent: a stamp holding the hash of the requirements makes a re-run a no-op.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_pick_python() {
  # The torch 2.13.0 CPU wheel of a fresh machine here is for CPython 3.11; prefer it when present.
  for cand in "${B2TXT_PYTHON:-}" python3.11 python3 python; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && { command -v "$cand"; return; }
  done
  echo "error: no python3 found on PATH (need Python >= 3.10)" >&2
  return 1
}

_pip_quiet() {
  # pip on some machines warns once per package about missing local index folders; hide that noise only.
  local status
  set +e
  "$@" 2>&1 | grep -v -E "^WARNING: Location '.*' is ignored" ; status=${PIPESTATUS[0]}
  set -e
  return "$status"
}

make_env() {
  local name="$1"; shift
  local reqs=() nodeps=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do reqs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  nodeps=("$@")

  local stamp_src py env_python
  stamp_src="$(cd "$REPO_ROOT" && cat "${reqs[@]}" setup.py && printf '%s\n' "${nodeps[@]:-}" && echo "$name")"
  local stamp; stamp="$(printf '%s' "$stamp_src" | sha256sum | cut -d' ' -f1)"

  if [ "${B2TXT_USE_CONDA:-0}" = "1" ] && command -v conda >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    source "$(conda info --base)/etc/profile.d/conda.sh"
    conda env list | grep -q -E "^$name\s" || conda create -y -q -n "$name" python=3.11
    env_python="$(conda run -n "$name" which python)"
  else
    local env_dir="${B2TXT_ENV_DIR:-$REPO_ROOT/envs}/$name"
    env_python="$env_dir/bin/python"
    if [ ! -x "$env_python" ]; then
      py="$(_pick_python)"
      echo "[$name] creating venv at $env_dir with $py"
      "$py" -m venv "$env_dir"
    fi
  fi

  local stamp_file; stamp_file="$(dirname "$env_python")/../.b2txt_stamp"
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    echo "[$name] up to date ($env_python)"
    return 0
  fi
  echo "[$name] installing pinned requirements (first run takes a few minutes)"
  _pip_quiet "$env_python" -m pip install -q --upgrade pip
  (cd "$REPO_ROOT" && _pip_quiet "$env_python" -m pip install -q "${reqs[@]/#/-r}")
  if [ ${#nodeps[@]} -gt 0 ]; then
    _pip_quiet "$env_python" -m pip install -q --no-deps "${nodeps[@]}"
  fi
  # The repo itself goes on sys.path through a .pth file: what `pip install -e .` does, minus a build.
  local site; site="$("$env_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$REPO_ROOT" > "$site/b2txt25_repo.pth"
  echo "$stamp" > "$stamp_file"
  echo "[$name] ready: $env_python"
}
