"""The training recipes on synthetic data, under one batch budget: PER with CIs, steps/s, parameters.

Each recipe is ``model_training/rnn_args_small.yaml`` plus a few overrides (:data:`RECIPES`), trained with the
real trainer for ``--batches`` batches per seed. The best checkpoint is chosen on the val split (as the trainer
does) but the table reports each run's LAST checkpoint on the **val** split (greedy CTC, the evaluator's 'valid'
smoothing): the synthetic test split has no labels, as the real one, and nothing is chosen or tuned on val here.
Per recipe: PER per seed with a trial-bootstrap 95 % CI, mean +- SEM over seeds, the seed-averaged PER with
its CI and its paired trial-bootstrap difference to the baseline, the best val PER, steps/s and parameters; plus the arithmetic mixture of the baseline's seeds
(``model_training.ensemble``). Default data: the ``hard`` preset (the small sessions with a weaker neural code,
so that the baseline's PER is near the real data's ~10 %). Runs are kept in ``--work`` and a rerun skips the
finished ones (resumable): a run stopped by Ctrl-C (SIGINT) is neither reported nor cached — the benchmark
exits 130 with one line and a rerun resumes that run from its ``last_checkpoint`` (the trainer's ``resume``). Prints JSON with a markdown table (``table_md``).

    python -m benchmarks.recipes                          # hard preset, 300 batches, 3 seeds (long on CPU)
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
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.measure import print_result
from nejm_b2txt_utils.cli_errors import (
    EXIT_INTERRUPTED,
    ConfigError,
    check_flags,
    check_output_file,
    check_output_folder,
    exit_2_on_bad_input,
)
from nejm_b2txt_utils.metrics import bootstrap_ci, ctc_greedy_decode, edit_distance

REPO = Path(__file__).resolve().parents[1]



class RecipeRunInterrupted(KeyboardInterrupt):
    """A training run stopped early by Ctrl-C (the trainer's ``interrupted_at``): not a result; its folder is
    kept so that a rerun resumes it."""

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


#: The split the table reports and the checkpoint it reports: the synthetic test split has no labels (as the
#: real data's), so the val split is reported with the model at the END of the fixed budget — no checkpoint is
#: chosen on it and nothing else is tuned on it (the recipes' settings come from others' real-data runs).
REPORTED_SPLIT, REPORTED_CHECKPOINT = "val", "last_checkpoint"


def split_edits(model_paths: list[Path], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Greedy phoneme edits and reference lengths ``[N]`` of every trial of :data:`REPORTED_SPLIT`, as the
    evaluator infers them, with each model's :data:`REPORTED_CHECKPOINT`.

    Args:
        model_paths: one model folder, or several (their arithmetic mixture, ``model_training.ensemble``).
        data_dir: the HDF5 root.

    Returns:
        ``(edits [N], ref_lens [N])`` in a fixed trial order (session, then stored order).
    """
    from model_training.checkpoint import load_trained_model
    from model_training.ensemble import load_ensemble
    from model_training.inference import infer_trial
    from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path

    model, args = load_ensemble([str(m) for m in model_paths], "cpu",
                                lambda p, d: load_trained_model(p, d, REPORTED_CHECKPOINT))
    edits, lens = [], []
    for day, session in enumerate(args.dataset.sessions):
        path = data_file_path(data_dir, session, REPORTED_SPLIT)
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
    """Train one recipe with one seed (or read the result of a finished run in ``out``).

    A run folder without a result but with ``checkpoint/last_checkpoint`` (an interrupted run) is resumed;
    any other leftover folder is trained again from scratch.

    Returns:
        seed, PER (:data:`REPORTED_SPLIT`, :data:`REPORTED_CHECKPOINT`) with its trial-bootstrap 95 % CI, per-trial edits and lengths, best val PER (the
        checkpoint's choice), steps/s (validation passes included; the batches of this call only) and parameter count.

    Raises:
        RecipeRunInterrupted: the trainer stopped early on Ctrl-C (was: the partial run was evaluated, reported
            and cached as finished); nothing is written but the trainer's ``last_checkpoint``.
    """
    import json

    from model_training.config import load_config
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer
    from nejm_b2txt_utils.atomic_io import atomic_write_json
    from nejm_b2txt_utils.t15_hdf5 import list_sessions

    done = out / "recipe_result.json"
    if done.is_file():  # resumable: a finished run is not trained again
        return json.loads(done.read_text())
    resume = (out / "checkpoint" / "last_checkpoint").is_file()  # an interrupted run: the trainer resumes it
    if out.exists() and not resume:
        import shutil

        shutil.rmtree(out)  # a run killed before its first checkpoint starts over
    kv = {"output_dir": str(out), "device": "cpu", "compile": "false", "num_training_batches": batches,
          "batches_per_val_step": max(batches // 3, 1), "batches_per_train_log": max(batches // 3, 1),
          "lr_warmup_steps": max(batches // 10, 1), "lr_warmup_steps_day": max(batches // 10, 1),
          "seed": seed, "dataset.seed": seed, "dataset.num_dataloader_workers": 0,
          "dataset.days_per_batch": min(4, len(list_sessions(data_dir))),  # the tiny preset has 3 sessions
          "dataset.dataset_dir": str(data_dir), "dataset.sessions": "auto", "dataset.dataset_probability_val": "auto",
          "resume": "true" if resume else "false", **RECIPES[name]}
    cfg = load_config(REPO / "model_training" / "rnn_args_small.yaml", [f"{k}={v}" for k, v in kv.items()])
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines: stdout carries only the JSON result
        trainer = BrainToTextDecoder_Trainer(cfg)
        n_params = sum(p.numel() for p in trainer.model.parameters())
        first_batch = trainer.start_step  # > 0 when resumed
        t0 = time.perf_counter()
        try:
            trainer.train()
        finally:
            trainer.close()
    wall = time.perf_counter() - t0  # includes the validation passes, as a real run
    if trainer.interrupted_at is not None:  # the trainer caught Ctrl-C, saved last_checkpoint and returned
        raise RecipeRunInterrupted(f"{name} seed {seed} stopped at batch {trainer.interrupted_at} of {batches}; "
                                   f"not reported; a rerun resumes it from {out}")
    edits, lens = split_edits([out], data_dir)
    low, high = bootstrap_ci(edits, lens)
    result = {"seed": seed, "PER": float(edits.sum() / lens.sum()), "ci95": [low, high],
              "val_PER_best": float(trainer.best_val_PER), "n_trials": int(len(lens)),
              "steps_per_s": (batches - first_batch) / wall, "parameters": int(n_params),
              "edits": edits.tolist(), "lens": lens.tolist()}
    atomic_write_json(done, result)
    return result


def paired_difference(edits_a: np.ndarray, edits_b: np.ndarray, lens: np.ndarray, n_resamples: int = 10_000,
                      seed: int = 0) -> dict:
    """PER(a) - PER(b) over the same trials, with a paired trial-bootstrap 95 % CI.

    Args:
        edits_a, edits_b: ``[N]`` edits per trial (each may be a mean over seeds); lens: ``[N]`` reference lengths.

    Returns:
        ``{"diff": d, "ci95": [low, high]}`` as fractions (negative: a has fewer errors).
    """
    rng = np.random.default_rng(seed)
    d = edits_a - edits_b
    idx = rng.integers(0, len(d), (n_resamples, len(d)))
    boot = d[idx].sum(1) / lens[idx].sum(1)
    return {"diff": float(d.sum() / lens.sum()), "ci95": [float(np.percentile(boot, 2.5)),
                                                         float(np.percentile(boot, 97.5))]}


def seed_mean_edits(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(edits [N], ref_lens [N])``: each trial's edits averaged over the seeds' runs (same trial order)."""
    return np.mean([r["edits"] for r in runs], axis=0), np.asarray(runs[0]["lens"])


def summarise_recipe(name: str, runs: list[dict]) -> dict:
    """Mean +- SEM over seeds, and the seed-averaged PER with a trial-bootstrap CI."""
    pers = np.array([r["PER"] for r in runs])
    sem = float(pers.std(ddof=1) / math.sqrt(len(pers))) if len(pers) > 1 else None
    edits, lens = seed_mean_edits(runs)
    low, high = bootstrap_ci(edits, lens)
    return {"overrides": RECIPES.get(name, {}), "runs": [{k: v for k, v in r.items() if k not in ("edits", "lens")}
                                                         for r in runs],
            "PER_mean": float(pers.mean()), "PER_sem": sem, "seed_mean_ci95": [low, high],
            "PER_seed_mean": float(edits.sum() / lens.sum()),
            "val_PER_best_mean": float(np.mean([r["val_PER_best"] for r in runs])),
            "steps_per_s": float(np.mean([r["steps_per_s"] for r in runs])), "parameters": runs[0]["parameters"]}


def markdown_table(results: dict) -> str:
    """The README's table: one row per recipe."""
    rows = ["| recipe | val PER (last checkpoint) mean ± SEM (seeds) | seed-mean PER [95 % CI] | vs baseline [95 % CI] | best val PER "
            "| steps/s | parameters |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        sem = "" if r.get("PER_sem") is None else f" ± {100 * r['PER_sem']:.2f}"
        vs = r.get("vs_baseline")
        vs_txt = "–" if vs is None else f"{100 * vs['diff']:+.2f} [{100 * vs['ci95'][0]:+.2f}, {100 * vs['ci95'][1]:+.2f}]"
        lo, hi = r["seed_mean_ci95"]
        val = "–" if r.get("val_PER_best_mean") is None else f"{100 * r['val_PER_best_mean']:.2f} %"
        sps = "–" if r.get("steps_per_s") is None else f"{r['steps_per_s']:.2f}"
        rows.append(f"| {name} | {100 * r['PER_mean']:.2f} %{sem} ({len(r['runs'])}) | "
                    f"{100 * r['PER_seed_mean']:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}] | {vs_txt} | {val} | "
                    f"{sps} | {r['parameters']:,} |")
    return "\n".join(rows)


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="hard", choices=("tiny", "small", "hard"),
                   help="synthetic preset to generate (default: %(default)s)")
    p.add_argument("--data_dir", default=None, help="existing synthetic root (with hdf5_data_final/) instead")
    p.add_argument("--batches", type=int, default=300, help="training batches per run (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per recipe (default: %(default)s)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--work", type=Path, default=REPO / "runs" / "recipes",
                   help="runs and generated data are kept here; a rerun skips finished runs (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: up to 2)")
    p.add_argument("--out", type=Path, help="also write the JSON here (atomically)")
    args = p.parse_args(argv)
    check_flags(args, {"batches": 2, "seeds": 1, "threads": 0})
    if args.data_dir and not (Path(args.data_dir) / "hdf5_data_final").is_dir():  # was a FileNotFoundError traceback
        raise ConfigError(f"--data_dir {args.data_dir}: no hdf5_data_final/ there; expected a synthetic root")
    check_output_folder("--work", args.work)  # was a NotADirectoryError traceback
    check_output_file("--out", args.out)  # was an IsADirectoryError traceback after the whole run
    import torch

    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), 2)))
    work = args.work / f"{args.preset if not args.data_dir else 'data_dir'}_{args.batches}b"
    root = Path(args.data_dir) if args.data_dir else args.work / f"data_{args.preset}"
    if not args.data_dir and not (root / "lm_corpus.txt").is_file():  # the generator writes the corpus last
        from nejm_b2txt_utils.synthetic import generate

        generate(args.preset, root, seed=0, progress=False)
    results, all_runs = {}, {}
    n_runs = len(args.recipes) * args.seeds
    bar = tqdm(total=n_runs, desc="recipe runs", unit="run")
    try:
        for name in args.recipes:
            runs = []
            for s in range(1, args.seeds + 1):
                runs.append(run_recipe(name, s, root / "hdf5_data_final", work / f"{name}_seed{s}", args.batches))
                bar.update(1)
            all_runs[name] = runs
            results[name] = summarise_recipe(name, runs)
            # progress, above the bar (was a WARNING log line)
            tqdm.write(f"{name}: PER {results[name]['PER_mean']:.4f} (seeds {[round(r['PER'], 4) for r in runs]})",
                       file=sys.stderr)
    except RecipeRunInterrupted as exc:
        bar.close()
        print(f"interrupted (Ctrl-C): {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    if "baseline" in all_runs and args.seeds > 1:  # the arithmetic mixture of the baseline's seeds
        edits, lens = split_edits([work / f"baseline_seed{s}" for s in range(1, args.seeds + 1)],
                                 root / "hdf5_data_final")
        low, high = bootstrap_ci(edits, lens)
        per = float(edits.sum() / lens.sum())
        all_runs["ensemble_of_baseline_seeds"] = [{"edits": edits.tolist(), "lens": lens.tolist()}]
        results["ensemble_of_baseline_seeds"] = {
            "members": [f"baseline_seed{s}" for s in range(1, args.seeds + 1)], "runs": [{"PER": per}],
            "PER_mean": per, "PER_sem": None, "seed_mean_ci95": [low, high], "PER_seed_mean": per,
            "val_PER_best_mean": None,
            "steps_per_s": None, "parameters": args.seeds * results["baseline"]["parameters"]}
    if "baseline" in all_runs:  # paired over trials: each recipe's seed-mean edits against the baseline's
        base, lens = seed_mean_edits(all_runs["baseline"])
        for name, r in results.items():
            if name != "baseline":
                r["vs_baseline"] = paired_difference(seed_mean_edits(all_runs[name])[0], base, lens)
    result = {"benchmark": "recipes", "preset": None if args.data_dir else args.preset,
              "batches": args.batches, "seeds": args.seeds, "split_reported": REPORTED_SPLIT,
              "checkpoint_reported": f"{REPORTED_CHECKPOINT} (end of the budget; none chosen on the reported split)", "threads": torch.get_num_threads(),
              "load_average_at_end": list(os.getloadavg()), "recipes": results,
              "table_md": markdown_table(results)}
    if args.out:
        from nejm_b2txt_utils.atomic_io import atomic_write_json

        atomic_write_json(args.out, result)
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
