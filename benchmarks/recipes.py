"""Issue 23's recipes on synthetic data, under one batch budget: test PER with CIs, steps/s, parameters.

Each recipe is ``model_training/rnn_args_small.yaml`` plus a few overrides (:data:`RECIPES`), trained with the
real trainer for ``--batches`` batches per seed. The best checkpoint is chosen on the val split (as the trainer
does); PER is reported on the **test** split only (greedy CTC, the evaluator's 'valid' smoothing), so nothing is
tuned on what is reported. Per recipe: PER per seed with a trial-bootstrap 95 % CI, mean +- SEM over seeds,
training steps/s and parameter count. Prints JSON.

    python -m benchmarks.recipes                          # synthetic small, 300 batches, 2 seeds (long on CPU)
    python -m benchmarks.recipes --preset tiny --batches 60 --seeds 1    # a smoke run (minutes)

Honest reading: the recipes were measured on the real data (time masking, a causal Transformer with masking, one
shared input layer for the Transformer). The synthetic generator has per-day drift that a per-day input layer
undoes, little temporal redundancy to make masking a regulariser worth its cost, and these budgets are far
shorter than the 120k-batch runs where the regularisers pay off; a recipe that helps on real data may not help
here, and this benchmark does not claim it does.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import print_result
from nejm_b2txt_utils.cli_errors import ConfigError, check_flags, exit_2_on_bad_input
from nejm_b2txt_utils.metrics import bootstrap_ci, ctc_greedy_decode, edit_distance

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("recipes")

#: recipe name -> overrides of rnn_args_small.yaml.
RECIPES: dict[str, dict[str, object]] = {
    "baseline": {},
    "time_mask": {"dataset.data_transforms.time_mask_count": 10, "dataset.data_transforms.time_mask_max_width": 20},
    "shared_input_layer": {"model.day_layers": False},
    "transformer_masked_shared": {
        "model.architecture": "transformer", "model.n_units": 128, "model.n_layers": 2, "model.n_heads": 4,
        "model.left_context": 16, "model.rnn_dropout": 0.1, "model.day_layers": False,
        "lr_max": 0.002, "lr_min": 0.00004, "lr_max_day": 0.002, "lr_min_day": 0.00004, "epsilon": 1e-8,
        "dataset.data_transforms.time_mask_count": 10, "dataset.data_transforms.time_mask_max_width": 20},
}


def test_per(model_path: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Greedy phoneme edits and reference lengths ``[N]`` of every test trial, as the evaluator infers them."""
    from model_training.checkpoint import load_trained_model
    from model_training.inference import infer_trial
    from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path

    model, args = load_trained_model(model_path, "cpu")
    edits, lens = [], []
    for day, session in enumerate(args.dataset.sessions):
        path = data_file_path(data_dir, session, "test")
        if not path.is_file():
            continue
        with T15File(path) as f:
            for trial in f:
                logits = infer_trial(model, trial.input_features, day, "cpu", args.dataset.data_transforms)
                ref = [int(c) for c in trial.seq_class_ids]
                edits.append(edit_distance(ref, ctc_greedy_decode(logits).tolist()))
                lens.append(len(ref))
    return np.asarray(edits), np.asarray(lens)


def run_recipe(name: str, seed: int, data_dir: Path, out: Path, batches: int) -> dict:
    """Train one recipe with one seed; returns its test PER (+ CI), steps/s and parameter count."""
    from model_training.config import load_config
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer
    from nejm_b2txt_utils.t15_hdf5 import list_sessions

    kv = {"output_dir": str(out), "device": "cpu", "compile": "false", "num_training_batches": batches,
          "batches_per_val_step": max(batches // 3, 1), "batches_per_train_log": max(batches // 3, 1),
          "lr_warmup_steps": max(batches // 10, 1), "lr_warmup_steps_day": max(batches // 10, 1),
          "seed": seed, "dataset.seed": seed, "dataset.num_dataloader_workers": 0,
          "dataset.days_per_batch": min(4, len(list_sessions(data_dir))),  # the tiny preset has 3 sessions
          "dataset.dataset_dir": str(data_dir), "dataset.sessions": "auto", "dataset.dataset_probability_val": "auto",
          **RECIPES[name]}
    cfg = load_config(REPO / "model_training" / "rnn_args_small.yaml", [f"{k}={v}" for k, v in kv.items()])
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines: stdout carries only the JSON result
        trainer = BrainToTextDecoder_Trainer(cfg)
        n_params = sum(p.numel() for p in trainer.model.parameters())
        t0 = time.perf_counter()
        try:
            trainer.train()
        finally:
            trainer.close()
    wall = time.perf_counter() - t0  # includes the validation passes, as a real run
    edits, lens = test_per(out, data_dir)
    low, high = bootstrap_ci(edits, lens)
    return {"seed": seed, "test_PER": float(edits.sum() / lens.sum()), "ci95": [low, high],
            "n_test_trials": int(len(lens)), "steps_per_s": batches / wall, "parameters": int(n_params)}


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=("tiny", "small"), help="synthetic preset to generate")
    p.add_argument("--data_dir", default=None, help="existing synthetic root (with hdf5_data_final/) instead")
    p.add_argument("--batches", type=int, default=300, help="training batches per run (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per recipe (default: %(default)s)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = p.parse_args(argv)
    check_flags(args, {"batches": 2, "seeds": 1})
    if args.data_dir and not (Path(args.data_dir) / "hdf5_data_final").is_dir():  # was a FileNotFoundError traceback
        raise ConfigError(f"--data_dir {args.data_dir}: no hdf5_data_final/ there; expected a synthetic root")
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        if not args.data_dir:
            from nejm_b2txt_utils.synthetic import generate

            generate(args.preset, root, seed=0, progress=False)
        results = {}
        for name in args.recipes:
            runs = [run_recipe(name, s, root / "hdf5_data_final", Path(tmp) / f"{name}_seed{s}", args.batches)
                    for s in range(1, args.seeds + 1)]
            pers = np.array([r["test_PER"] for r in runs])
            sem = float(pers.std(ddof=1) / math.sqrt(len(pers))) if len(pers) > 1 else float("nan")
            results[name] = {"overrides": RECIPES[name], "runs": runs, "test_PER_mean": float(pers.mean()),
                             "test_PER_sem": sem, "steps_per_s": float(np.mean([r["steps_per_s"] for r in runs])),
                             "parameters": runs[0]["parameters"]}
            log.warning("%s: test PER %.4f +- %.4f", name, pers.mean(), sem)
    print_result({"benchmark": "recipes", "preset": None if args.data_dir else args.preset,
                  "batches": args.batches, "seeds": args.seeds, "split_reported": "test",
                  "checkpoint_chosen_on": "val", "recipes": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
