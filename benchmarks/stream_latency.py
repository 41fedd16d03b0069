"""Streaming inference latency: GRU compute per 80 ms output frame with the hidden state carried over.

``python -m benchmarks.stream_latency [--configs baseline small] [--frames 300]``
A streaming decoder keeps the last 22 bins (14-bin patch + 8 bins of 'valid' smoothing context); every
4 new bins (80 ms) it smooths them, runs the day layer and one GRU step from the carried state, and
emits one frame of 41 logits. Timed per frame on the device the evaluator would pick (CUDA if present).
Weights are random: latency does not depend on them. Prints JSON; ``rtf`` = compute time / 80 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import percentile, print_result
from model_training.checkpoint import build_model
from model_training.config import load_config
from nejm_b2txt_utils.augmentation import gauss_smooth
from nejm_b2txt_utils.cli_errors import check_flags, exit_2_on_bad_input
from nejm_b2txt_utils.devices import select_device

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {"baseline": REPO / "model_training" / "rnn_args.yaml",
           "small": REPO / "model_training" / "rnn_args_small.yaml"}
FRAME_MS = 80.0


def measure(name: str, frames: int, warmup: int, device: torch.device) -> dict:
    cfg = load_config(CONFIGS[name], ["dataset.sessions=[t15.2023.08.13]", "dataset.dataset_probability_val=[1]"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    patch, stride = int(cfg.model.patch_size), int(cfg.model.patch_stride)
    context = patch + 8  # 'valid' smoothing eats 4 bins on each side
    use_bf16 = device.type == "cuda"
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    stream = torch.randn(1, context + stride * (frames + warmup), int(cfg.model.n_input_features))
    day = torch.zeros(1, dtype=torch.long, device=device)
    state = None
    per_frame, model_only = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for f in range(frames + warmup):
            window = stream[:, f * stride:f * stride + context].to(device, dtype)
            t0 = time.perf_counter()
            x = gauss_smooth(window, device, cfg.dataset.data_transforms.smooth_kernel_std,
                             cfg.dataset.data_transforms.smooth_kernel_size, padding="valid")
            t1 = time.perf_counter()
            logits, state = model(x, day, states=state, return_state=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            assert logits.shape[1] == 1
            if f >= warmup:
                per_frame.append((t2 - t0) * 1000)
                model_only.append((t2 - t1) * 1000)
    arr = np.array(per_frame)
    return {"config": name, "device": str(device), "gru": f"{cfg.model.n_layers}x{cfg.model.n_units}",
            "torch_threads": torch.get_num_threads(), "frames": frames,
            "ms_per_frame_mean": round(float(arr.mean()), 3), "ms_per_frame_p50": round(float(np.median(arr)), 3),
            "ms_per_frame_p95": percentile(arr, 95, 3),
            "ms_per_frame_p99": percentile(arr, 99, 3),
            "ms_model_only_mean": round(float(np.mean(model_only)), 3),
            "rtf": round(float(arr.mean()) / FRAME_MS, 4),
            "algorithmic_latency_ms": (patch + 4) * 20}


@exit_2_on_bad_input()
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--frames", type=int, default=300, help="timed frames (80 ms each)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:0 ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    check_flags(args, {"frames": 1, "warmup": 0, "threads": 1})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(device=args.device)
    results = [measure(name, args.frames, args.warmup, device) for name in args.configs]
    print_result({"benchmark": "stream_latency", "frame_ms": FRAME_MS, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
