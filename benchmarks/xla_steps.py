"""Eager PyTorch vs PyTorch/XLA (on the CPU) training of the tiny TripleGRUDecoder: steps/s and XLA graphs.

    PJRT_DEVICE=CPU envs/b2txt_xla/bin/python -m benchmarks.xla_steps [--steps 50] [--work DIR]

Runs in ``envs/b2txt_xla`` (``./setup_xla.sh``). Each side trains the same config (``xla_toy_data.toy_overrides``:
13k parameters, batch 4, 18-20-bin trials, fp32, validation at the first and last step only) in its own process:
``eager`` with ``model_training_nnn``'s NNNTrainer on the CPU (torch_xla never imported, so torch's own GRU),
``xla`` with ``XlaNNNTrainer`` on ``torch_xla.device()``. Reported per side: wall time, steady-state steps/s
(steps after the last new compile, median step time), and for XLA the number of graphs compiled in the run and
when the last one appeared. Also: the max |logit| difference between eager and XLA for the same weights and
batch (T = 20). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import print_result
from nejm_b2txt_utils.cli_errors import ConfigError, check_output_folder, exit_2_on_bad_input

REPO = Path(__file__).resolve().parents[1]


def _trainer(side: str, data: Path, out: Path, steps: int):
    from model_training.config import load_config
    from model_training_nnn.xla_toy_data import toy_overrides

    kv = {"num_training_batches": steps, "lr_decay_steps": steps, "lr_decay_steps_day": steps,
          "batches_per_val_step": steps + 1, "batches_per_train_log": 10}
    if side == "eager":
        kv["device"] = "cpu"
    cfg = load_config(REPO / "model_training_nnn" / "rnn_args_nnn.yaml", toy_overrides(data, out, **kv))
    if side == "eager":
        from model_training_nnn.rnn_trainer import NNNTrainer

        return NNNTrainer(cfg)
    from model_training_nnn.xla_trainer import XlaNNNTrainer

    return XlaNNNTrainer(cfg)


def measure(side: str, data: Path, work: Path, steps: int) -> dict:
    """Train ``steps`` batches on ``side`` ('eager' or 'xla'); also the logits of a fixed batch, saved for
    the comparison (eager) or compared with the saved ones (xla)."""
    import torch

    trainer = _trainer(side, data, work / f"run_{side}", steps)
    counts: list[int] = []
    times = [time.perf_counter()]
    step_end = trainer.step_end
    if side == "xla":
        from model_training_nnn.xla_trainer import compile_count
    else:
        def compile_count() -> int:
            return 0

    def timed_step_end(i: int) -> None:
        step_end(i)
        times.append(time.perf_counter())
        counts.append(compile_count())

    trainer.step_end = timed_step_end
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    if getattr(trainer, "interrupted_at", None) is not None:  # Ctrl-C: a partial run is not a measurement
        trainer.close()
        raise KeyboardInterrupt(f"{side} run stopped at step {trainer.interrupted_at} of {steps}")
    dts = [b - a for a, b in zip(times[:-1], times[1:])]  # step i's time (+ validation after step 0 in dts[1])
    last_new = max((i for i in range(len(counts)) if i == 0 or counts[i] != counts[i - 1]), default=0)
    steady = dts[max(last_new + 1, 2):-1] or dts[-1:]  # after the last compile, without the first validation
    out = {"side": side, "steps": steps, "wall_s": round(wall, 2), "median_step_s": round(statistics.median(steady), 4),
           "steady_steps_per_s": round(1.0 / statistics.median(steady), 3), "first_step_s": round(dts[0], 2),
           "final_train_loss": round(result["train_losses"][-1], 3), "val_PER_last": round(result["val_PERs"][-1], 4),
           "torch_threads": torch.get_num_threads()}
    if side == "xla":
        out.update(compiled_graphs=result["xla_compiles"], executed_graphs=result["xla_executions"],
                   last_new_graph_at_step=last_new, compiles_by_step=counts)
    x = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(1))
    days = torch.tensor([1, 0])
    ref = work / "logits_eager.pt"
    model = trainer.model.eval()
    if side == "eager":
        with torch.no_grad():
            torch.save({"state": model.state_dict(), "logits": model(x, days)}, ref)
    else:
        import torch_xla

        saved = torch.load(ref)
        model.load_state_dict(saved["state"])
        with torch.no_grad():
            logits = model(x.to(trainer.device), days.to(trainer.device))
        torch_xla.sync()
        out["max_abs_logit_diff_vs_eager"] = float((logits.cpu() - saved["logits"]).abs().max())
        out["logit_scale"] = float(saved["logits"].abs().max())
    trainer.close()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50, help="training batches per side (default: %(default)s)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary folder)")
    p.add_argument("--side", choices=("eager", "xla"), help=argparse.SUPPRESS)  # the child processes
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.steps < 4:
        raise ConfigError(f"--steps: expected at least 4 (compiles, then steady steps), got {args.steps}")
    check_output_folder("--work", args.work)
    if args.side:
        print_result(measure(args.side, args.data, args.work, args.steps), indent=None)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        from model_training_nnn.xla_toy_data import write_toy_dataset

        data = write_toy_dataset(work / "toy", n_train=32, n_val=6)
        env = {**os.environ, "PJRT_DEVICE": os.environ.get("PJRT_DEVICE", "CPU"), "PYTHONUNBUFFERED": "1"}
        report: dict = {"benchmark": "xla_steps", "config": "toy TripleGRUDecoder (8 ch, 16 units, batch 4, T<=20)",
                        "load_average_at_start": round(os.getloadavg()[0], 2)}
        for side in ("eager", "xla"):  # eager first: it writes the reference logits
            proc = subprocess.run([sys.executable, "-m", "benchmarks.xla_steps", "--side", side, "--data", str(data), "--work", str(work),
                                   "--steps", str(args.steps)], capture_output=True, text=True, env=env, cwd=REPO)
            if proc.returncode != 0:
                print(f"error: the {side} run failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 1
            report[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        report["xla_over_eager_steady_speed"] = round(report["xla"]["steady_steps_per_s"] /
                                                      report["eager"]["steady_steps_per_s"], 4)
        report["xla_over_eager_wall"] = round(report["xla"]["wall_s"] / report["eager"]["wall_s"], 2)
        report["load_average_at_end"] = round(os.getloadavg()[0], 2)  # other load skews both sides
        print_result(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
