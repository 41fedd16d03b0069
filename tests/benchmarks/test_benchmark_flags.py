"""The LM benchmarks check every flag before minutes of LM building or decoding (one line, exit 2)."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LM_PY = Path(os.environ.get("B2TXT_ENV_DIR", REPO / "envs")) / "b2txt25_lm" / "bin" / "python"

pytestmark = pytest.mark.skipif(not LM_PY.is_file(), reason="needs the LM environment (./setup_lm.sh)")


@pytest.mark.parametrize(("script", "flags", "expected"), [
    ("lm_decode_latency.py", ["--peak", "nan"], "--peak: expected a finite number > 0, got nan"),
    ("lm_decode_latency.py", ["--corpus", "no/such.txt"], "--corpus no/such.txt: no such file"),
    ("lm_decode_latency.py", ["--llm_variants", "bogus"], "--llm_variants 'bogus': expected a comma list of"),
    ("lm_decode_latency.py", ["--llm_variants", "tree,tree"], "--llm_variants 'tree,tree': a variant is named twice"),
    ("lm_decode_latency.py", ["--llm_only", "--llm", "none"], "--llm none: --llm_only times the causal LM"),
    ("lm_decode_latency.py", ["--llm_warm", "--llm", "none"], "--llm none: --llm_warm times the causal LM"),
    ("lm_decode_latency.py", ["--llm", "/no/such/model"], "--llm /no/such/model: no such folder"),
    ("decoder_vs_peer.py", ["--repeats", "0"], "--repeats: expected a number >= 1, got 0"),
    ("lm_scale.py", ["--sizes", "1e6,big"], "--sizes: expected comma-separated numbers >= 1000 (token counts), got 'big'"),
    ("lm_scale.py", ["--orders", "1"], "--orders: expected comma-separated integers >= 2 (n-gram orders), got '1'"),
    ("decoder_vs_peer.py", ["--results_pkl", "GOOD", "--lm_path", "tests"],
     "error: --lm_path (its lm.arpa): tests/lm.arpa not found"),
    ("decoder_vs_peer.py", ["--results_pkl", "LIST"], "not an evaluate_model.py results.pkl"),
    ("lm_finalize_bound.py", ["--frames", "0"], "--frames: expected a number >= 1, got 0"),
    ("lm_finalize_bound.py", ["--frames", "20", "-3"], "--frames: expected a number >= 1, got -3"),
    ("lm_finalize_bound.py", ["--lm_path", "/no/such/lm"], "--lm_path /no/such/lm: no TLG.fst there"),
])
def test_bad_flags_are_one_line_before_any_work(tmp_path, script, flags, expected):
    """Reported by a tryout: these started building LMs or decoding (or ended in a traceback)."""
    pkl = {"LIST": [1, 2], "GOOD": {"logits": [[0.0]] * 2, "sentence_label": ["a", "b"]}}
    for name, obj in pkl.items():
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(obj))
    flags = [str(tmp_path / f"{f}.pkl") if f in pkl else f for f in flags]
    proc = subprocess.run([str(LM_PY), "-m", f"benchmarks.{script.removesuffix('.py')}", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
