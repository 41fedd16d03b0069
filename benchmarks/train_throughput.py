"""Training throughput of the baseline, the small config and the adversarial nnn-small config: steps/s and
peak RSS, printed as JSON (with the nnn-small / small ratios when both ran, side by side in one run).

``python -m benchmarks.train_throughput --data_dir /tmp/synth_small/hdf5_data_final``
Runs real training steps (data loading with worker processes, augmentation, forward, CTC, backward,
AdamW) on whatever device the trainer picks (CUDA when present, else CPU). The first ``--warmup``
steps are not timed. Data: any T15 folder, e.g. ``python -m nejm_b2txt_utils.synthetic --preset small``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.measure import print_result
from model_training.config import check_training_data, load_config
from nejm_b2txt_utils.cli_errors import check_flags, exit_2_on_bad_input
from nejm_b2txt_utils.memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {"baseline": REPO / "model_training" / "rnn_args.yaml",
           "small": REPO / "model_training" / "rnn_args_small.yaml",
           "nnn_small": REPO / "model_training_nnn" / "rnn_args_nnn_small.yaml"}


def peak_rss() -> dict[str, float]:
    """This process's peak RSS (VmHWM, not a parent's) and the largest of its reaped children's (the data
    workers; call after they exited: forked, so their figure includes the pages they share with this process
    at fork time). MB."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(peak_rss_mb(), 1), "peak_rss_workers_mb": round(children, 1)}


def describe_model(cfg) -> str:
    """The recurrent part in words: ``5x768`` (baseline GRU) or ``noise 2x512 + clean 3x256 + noisy 2x256`` (nnn)."""
    m = cfg.model
    if str(m.get("architecture", "gru")) != "triple_gru":
        return f"{m.n_layers}x{m.n_units}"
    noise = (m.patch_size or 1) * m.n_input_features
    return (f"noise {m.n_noise_layers}x{noise} + clean {m.n_clean_layers}x{m.n_units} + "
            f"noisy {m.n_noisy_layers}x{m.get('noisy_units') or m.n_units}")


def measure(name: str, data_dir: str, steps: int, warmup: int, extra: list[str]) -> dict:
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer
    from model_training_nnn.rnn_trainer import NNNTrainer

    with tempfile.TemporaryDirectory(prefix="b2txt_bench_") as tmp:
        # Each config keeps its own session list (the baseline's 45 sessions: the real 44.3M-parameter model;
        # sessions absent from data_dir just have no trials).
        overrides = [f"output_dir={tmp}/run", f"dataset.dataset_dir={data_dir}",
                     f"num_training_batches={steps + warmup}", *extra]
        cfg = load_config(CONFIGS[name], overrides)
        check_training_data(cfg)
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines must not mix with the JSON
            nnn = str(cfg.model.get("architecture", "gru")) == "triple_gru"
            trainer = (NNNTrainer if nnn else BrainToTextDecoder_Trainer)(cfg)
        loader = iter(trainer._train_loader(0))
        times, cpu_times = [], []
        for i in range(steps + warmup):
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(loader)
            trainer.train_step(batch, i)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
        n_params = sum(p.numel() for p in trainer.model.parameters())
        result = {"config": name, "device": str(trainer.device), "amp_bf16": trainer.use_amp,
                  "params": n_params, "batch_size": int(cfg.dataset.batch_size),
                  "gru": describe_model(cfg), "timed_steps": len(times),
                  "s_per_step": round(sum(times) / len(times), 4), "steps_per_s": round(len(times) / sum(times), 4),
                  # CPU seconds of this process per step: a load-independent figure on a shared machine
                  "cpu_s_per_step": round(sum(cpu_times) / len(cpu_times), 4), "torch_threads": torch.get_num_threads()}
        if trainer.device.type == "cuda":
            result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        del loader  # shuts the data workers down, so they are reaped before RUSAGE_CHILDREN is read
        trainer.close()
        return result | peak_rss()  # VmHWM is a high-water mark: closing frees nothing from it


def measure_in_child(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--data_dir", args.data_dir, "--configs", name, "--warmup", str(args.warmup)]
    cmd += (["--steps", str(args.steps)] if args.steps else []) + (["--threads", str(args.threads)] if args.threads
                                                                   else [])
    proc = subprocess.run([*cmd, *args.overrides], capture_output=True, text=True)
    sys.stderr.write(proc.stderr)  # the child's log, after it ends
    if proc.returncode != 0:
        last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "")
        raise SystemExit(f"train_throughput: config {name} failed (exit {proc.returncode}): {last.strip()}")
    return json.loads(proc.stdout)["results"][0]


@exit_2_on_bad_input(FileNotFoundError)  # FileNotFoundError: no training data under --data_dir
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="T15 HDF5 root (<data_dir>/<session>/data_train.hdf5)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 baseline, 20 small/nnn_small)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every config")
    args = p.parse_args()
    check_flags(args, {"steps": 1, "warmup": 0, "threads": 1})
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("model_training.rnn_trainer").setLevel(logging.WARNING)
    results = []
    for name in args.configs:
        if len(args.configs) > 1:  # one process per config: peak RSS is a per-process high-water mark
            results.append(measure_in_child(name, args))
            continue
        steps = args.steps or (3 if name == "baseline" else 20)
        results.append(measure(name, args.data_dir, steps, args.warmup, args.overrides))
    out = {"benchmark": "train_throughput", "results": results}
    by_name = {r["config"]: r for r in results}
    if "small" in by_name and "nnn_small" in by_name:  # the adversarial model next to its baseline peer
        nnn, small = by_name["nnn_small"], by_name["small"]
        out["ratios"] = {"nnn_small_over_small_steps_per_s": round(nnn["steps_per_s"] / small["steps_per_s"], 3),
                         "nnn_small_over_small_cpu_s_per_step": round(nnn["cpu_s_per_step"] / small["cpu_s_per_step"], 3),
                         "nnn_small_over_small_peak_rss": round(nnn["peak_rss_mb"] / small["peak_rss_mb"], 3)}
    print_result(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
