"""Eager PyTorch vs PyTorch/XLA logits of one tiny TripleGRUDecoder (T = 20 bins, hidden 16).

The eager reference runs in a child interpreter that never imports torch_xla (so its GRU is torch's own,
not the scan-based GRU torch_xla patches in); this process loads the same weights onto the XLA device.
Tolerances (max |difference| of logits whose scale is ~0.5): fp32 1e-5 (measured 1.2e-7: only the order of
float additions differs); bf16 autocast and bf16 weights ("bf16_cast") 0.03 (8-bit mantissa, 2^-8 relative
per op; measured 3.2e-3 and 3.5e-3).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

torch_xla = pytest.importorskip("torch_xla")

from model_training_nnn.rnn_model import TripleGRUDecoder  # noqa: E402
from model_training_nnn.xla_trainer import compile_count  # noqa: E402

from .conftest import REPO  # noqa: E402

EAGER_SCRIPT = """
import sys, torch
from model_training_nnn.rnn_model import TripleGRUDecoder
torch.manual_seed(0)
model = TripleGRUDecoder(neural_dim=8, n_units=16, n_days=3, n_classes=41, patch_size=2, patch_stride=1).eval()
x = torch.randn(2, 20, 8)
days = torch.tensor([2, 0])
with torch.no_grad():
    inference = model(x, days)
    full = model(x, days, mode="full", grl_lambda=0.5)
torch.save({"state": model.state_dict(), "x": x, "days": days, "inference": inference, "full": full}, sys.argv[1])
"""


@pytest.fixture(autouse=True)
def fresh_scan_traces():
    """torch_xla 2.9's scan (its GRU) caches traces by input shapes and dtypes, not by the autocast state:
    an fp32 trace reused under autocast fails XLA's verifier ("mixed precision is disallowed"). A training
    run uses one precision throughout; tests that switch precision start from an empty cache."""
    from torch_xla.experimental import scan

    scan._SCAN_COMPUTATION_CACHE.clear()
    yield


@pytest.fixture(scope="module")
def eager(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eager") / "ref.pt"
    subprocess.run([sys.executable, "-c", EAGER_SCRIPT, str(out)], check=True, cwd=REPO, timeout=300)
    ref = torch.load(out)
    assert "torch_xla" not in sys.modules or sys.modules["torch_xla"] is torch_xla
    return ref


def _xla_model(ref: dict, dtype: torch.dtype = torch.float32) -> TripleGRUDecoder:
    model = TripleGRUDecoder(neural_dim=8, n_units=16, n_days=3, n_classes=41, patch_size=2, patch_stride=1)
    model.load_state_dict(ref["state"])
    return model.eval().to(dtype).to(torch_xla.device())


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-5), ("bf16_autocast", 0.03), ("bf16_cast", 0.03)])
def test_xla_logits_match_eager(eager, precision, tol):
    dev = torch_xla.device()
    dtype = torch.bfloat16 if precision == "bf16_cast" else torch.float32
    model = _xla_model(eager, dtype)
    x, days = eager["x"].to(dtype).to(dev), eager["days"].to(dev)
    with torch.no_grad(), torch.autocast("xla", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
        inference = model(x, days)
        clean, noisy, noise = model(x, days, mode="full", grl_lambda=0.5)
    torch_xla.sync()
    assert inference.shape == (2, 19, 41)  # P = (20 - 2) // 1 + 1
    assert noise.shape == (2, 19, 16)
    if precision == "bf16_cast":
        assert inference.dtype == noisy.dtype == noise.dtype == torch.bfloat16
    ref_clean, ref_noisy, ref_noise = eager["full"]
    for got, ref in ((inference, eager["inference"]), (clean, ref_clean), (noisy, ref_noisy), (noise, ref_noise)):
        diff = (got.cpu().float() - ref).abs().max().item()
        assert diff <= tol, f"{precision}: max |XLA - eager| = {diff:.3g} > {tol}"
        assert ref.abs().max().item() > 0.05  # a real signal, not two vectors of zeros
    # inference mode runs the same clean path as full mode (same graph inputs, same values)
    assert torch.allclose(inference.cpu(), clean.cpu())


def test_same_shapes_compile_once(eager):
    """A second forward with the same shapes reuses the compiled graph."""
    dev = torch_xla.device()
    model = _xla_model(eager)
    x, days = eager["x"].to(dev), eager["days"].to(dev)
    counts = []
    with torch.no_grad():
        for step in range(4):
            out = model(x * (step + 2.0), days)  # new values (device data, not constants), same shapes
            torch_xla.sync()
            counts.append(compile_count())
    assert out.shape == (2, 19, 41)
    assert counts[1:] == [counts[0]] * 3, counts


@pytest.mark.parametrize("precision", ["bf16_autocast", "bf16_cast"])
def test_bf16_full_mode_backward_on_xla(eager, precision):
    """The seed's XLA error (f32[32,7168] vs bf16[32,7168]) cannot occur: a full-mode forward + backward
    through the GRL in bf16 compiles and runs, with finite gradients in the parameters' dtype."""
    dev = torch_xla.device()
    dtype = torch.bfloat16 if precision == "bf16_cast" else torch.float32
    model = _xla_model(eager, dtype).train()
    x, days = eager["x"].to(dtype).to(dev), eager["days"].to(dev)
    with torch.autocast("xla", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
        clean, noisy, noise = model(x, days, mode="full", grl_lambda=torch.tensor(0.7, device=dev))
        loss = clean.float().logsumexp(2).mean() + noisy.float().logsumexp(2).mean() + noise.float().pow(2).mean()
    assert clean.dtype == noisy.dtype == torch.bfloat16
    loss.backward()
    torch_xla.sync()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for n, g in grads.items() if "day_" not in n)
    assert {g.dtype for g in grads.values() if g is not None} == {dtype}
    assert all(bool(torch.isfinite(g.cpu().float()).all()) for g in grads.values() if g is not None)
    assert grads["noise_model.gru.weight_hh_l0"].cpu().float().abs().sum() > 0  # reached through GRL + residual
