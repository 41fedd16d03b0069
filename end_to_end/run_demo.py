"""The main job end to end on embedded defaults (README command #1, via ``./run_demo.sh``).

synthetic ``small`` data -> n-gram LM (on text disjoint from val) + wordfreq 1-gram -> baseline GRU
(small CPU config; ``--recipe nnn``: the adversarial TripleGRUDecoder of model_training_nnn) -> bundled
redis-server on a free loopback port + LM server with SmolLM2 rescoring
-> val evaluation -> one table of PER/WER (greedy; n-gram; n-gram + LLM; per corpus) with the documented
LM weights, then the weights tuned on the even val trials (``language_model/tune_weights.py``) and a
held-out table on the odd val trials (documented vs tuned), the submission CSV and Figure 2 of this run. Every child process is stopped on exit, failure, Ctrl-C or SIGTERM. A re-run
reuses every finished step (data, LMs, the trained model, decoded trials).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from end_to_end.processes import ChildProcess, Supervisor
from end_to_end.report import heldout_table, results_table, write_report
from end_to_end.steps import Step, run_step
from nejm_b2txt_utils.atomic_io import atomic_write_json, atomic_write_text
from nejm_b2txt_utils.cli_errors import check_flags, exit_2_on_bad_input
from nejm_b2txt_utils.lm_params import DOCUMENTED_INVOCATION, documented_flags

log = logging.getLogger("run_demo")
REPO = Path(__file__).resolve().parents[1]

# The documented LM server invocation (README of the original; nejm_b2txt_utils.lm_params), causal LM on the CPU.
LM_FLAGS = documented_flags(gpu_number=-1)
_DOC = {name: f"{value:g}" for name, value in DOCUMENTED_INVOCATION.items()}
#: tune_weights.py grids (the demo's n-gram decoding, around the documented weights; --quick keeps its small search).
TUNE_GRID = ["--acoustic_scale", _DOC["acoustic_scale"], "1.0", "2.0", "3.0", "--blank_penalty", "1", "9",
             _DOC["blank_penalty"]]
TUNE_GRID_QUICK = ["--acoustic_scale", _DOC["acoustic_scale"], "1.0", "--blank_penalty", "9", _DOC["blank_penalty"],
                   "--beam", "10", "--lattice_beam", "4"]
#: --quick: the quick model's flat posteriors make the full search slow; exercise it small.
LM_FLAGS_QUICK = ["--nbest", "10", "--beam", "10", "--lattice_beam", "4", "--max_active", "1000"]
#: The dev split the LM weights are tuned on, and the held-out val trials the tuned weights are reported on.
DEV_TRIALS, HELD_OUT_TRIALS = "even", "odd"
#: In ``eval_tuned/``: a copy of the params file that run was decoded with.
TUNED_USED = "lm_params_used.json"


def lm_flags(args: argparse.Namespace) -> list[str]:
    """The LM server's weight and search flags for this run (``--quick`` overrides some of them)."""
    merged = dict(zip(LM_FLAGS[::2], LM_FLAGS[1::2]))  # every entry is a --flag value pair
    if args.quick:
        merged.update(zip(LM_FLAGS_QUICK[::2], LM_FLAGS_QUICK[1::2]))
    return [x for pair in merged.items() for x in pair]


def server_nbest(args: argparse.Namespace) -> str:
    """The LM server's ``--nbest`` (the tuned params file carries the same, so the tuned run differs only in
    the tuned weights)."""
    flags = lm_flags(args)
    return flags[flags.index("--nbest") + 1]


#: --recipe -> (training script, config) relative to the repository root.
RECIPES = {"baseline": ("model_training/train_model.py", "model_training/rnn_args_small.yaml"),
           "nnn": ("model_training_nnn/train_model.py", "model_training_nnn/rnn_args_nnn_small.yaml")}


class _AlreadyDone(Exception):
    """The LM evaluation of this run exists: no services need starting."""


def env_python(name: str) -> str:
    """The interpreter of environment ``name`` (envs/<name>, or $B2TXT_ENV_DIR/<name>)."""
    base = Path(os.environ.get("B2TXT_ENV_DIR", REPO / "envs"))
    py = base / name / "bin" / "python"
    if not py.is_file():
        raise FileNotFoundError(f"{py}: environment {name} missing; run ./setup.sh and ./setup_lm.sh first")
    return str(py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="run folder (default: runs/demo, runs/demo_nnn for --recipe nnn; "
                                                "with --quick runs/demo_quick, runs/demo_nnn_quick)")
    p.add_argument("--recipe", choices=tuple(RECIPES), default="baseline",
                   help="baseline: the GRU decoder; nnn: the adversarial TripleGRUDecoder (model_training_nnn, "
                        "its small config), evaluated through the same evaluator and LM server")
    p.add_argument("--quick", action="store_true",
                   help="the same pipeline, smaller: tiny data, a short training run (< 5 minutes)")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    p.add_argument("--no_llm", action="store_true", help="skip the causal-LM (SmolLM2) rescoring")
    p.add_argument("--fresh", action="store_true", help="delete the run folder first")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> dict:
    name = "demo" + ("" if args.recipe == "baseline" else f"_{args.recipe}") + ("_quick" if args.quick else "")
    out = Path(args.out or REPO / "runs" / name).resolve()  # --quick never shares a folder with the full run
    preset = "tiny" if args.quick else "small"
    # --quick exercises every stage, not accuracy: a 1x128 GRU for 150 small batches (~1 minute on 2 cores);
    # the small config's decay follows num_training_batches.
    train_overrides = ["model.n_units=128", "model.n_layers=1", "num_training_batches=150",
                       "lr_warmup_steps=15", "lr_warmup_steps_day=15", "batches_per_val_step=50",
                       "dataset.batch_size=8", "dataset.days_per_batch=2"] if args.quick else []
    return {"out": out, "preset": preset, "data": out / "data", "lm3": out / "lm" / "3gram_lm_sil",
            "lm1": out / "lm" / "wordfreq_1gram_lm_sil", "model": out / "model", "eval": out / "eval",
            "eval_greedy": out / "eval_greedy", "eval_tuned": out / "eval_tuned", "lm_params": out / "lm_params.json",
            "logs": out / "logs", "train_overrides": train_overrides}


def build_steps(args: argparse.Namespace, p: dict) -> list[Step]:
    py, py_lm = env_python("b2txt25"), env_python("b2txt25_lm")
    data, model = p["data"], p["model"]
    hdf5 = data / "hdf5_data_final"
    csv_path = data / "t15_copyTaskData_description.csv"
    steps = [
        Step("data", [py, "-m", "nejm_b2txt_utils.synthetic", "--preset", p["preset"], "--out", str(data),
                      "--seed", str(args.seed)], done=data / ".complete"),
        Step("lm_ngram", [py_lm, str(REPO / "language_model" / "build_lm.py"), "--corpus",
                          str(data / "lm_corpus.txt"), "--order", "3", "--mix_wordfreq", "--out", str(p["lm3"])],
             done=p["lm3"] / "TLG.fst"),
        Step("lm_1gram", [py_lm, str(REPO / "language_model" / "build_lm.py"), "--unigram_wordfreq",
                          "--out", str(p["lm1"])], done=p["lm1"] / "TLG.fst"),
        Step("train", [py, str(REPO / RECIPES[args.recipe][0]), "--config", str(REPO / RECIPES[args.recipe][1]),
                       f"output_dir={model}",
                       f"dataset.dataset_dir={hdf5}", "dataset.sessions=auto",
                       "dataset.dataset_probability_val=auto", "device=cpu",
                       f"resume={'true' if (model / 'checkpoint' / 'last_checkpoint').exists() else 'false'}",
                       *p["train_overrides"]],
             done=model / ".complete"),
        Step("eval_greedy", [py, str(REPO / "model_training" / "evaluate_model.py"), "--model_path", str(model),
                             "--data_dir", str(hdf5), "--eval_type", "val", "--csv_path", str(csv_path),
                             "--gpu_number", "-1", "--lm", "none", "--out_dir", str(p["eval_greedy"]),
                             "--results_pkl", str(p["eval_greedy"] / "results.pkl")],
             done=p["eval_greedy"] / "results.pkl"),
        # weights tuned on the even val trials (n-gram only, offline; the dev split); the table's first block
        # keeps the documented weights over all val trials, its held-out block compares documented and tuned
        # weights on the odd val trials only, which the tuning never saw.
        Step("tune_lm", [py_lm, str(REPO / "language_model" / "tune_weights.py"), "--results_pkl",
                         str(p["eval_greedy"] / "results.pkl"), "--lm_path", str(p["lm3"]), "--trials", DEV_TRIALS,
                         "--report_trials", HELD_OUT_TRIALS, "--beam_acoustic_scale", "0", "--alpha", _DOC["alpha"],
                         "--nbest", server_nbest(args), "--out", str(p["lm_params"]),
                         *(TUNE_GRID_QUICK if args.quick else TUNE_GRID)],
             done=p["lm_params"]),
    ]
    return steps


def tuned_weights_line(path: Path) -> str:
    """One line: the weights ``tune_lm`` chose, on which trials, and where the params file is."""
    info = json.loads(path.read_text())
    keys = ("acoustic_scale", "blank_penalty", "beam", "lattice_beam", "lattice_pass_margin", "nbest", "alpha")
    chosen = " ".join(f"{k}={info['params'][k]}" for k in keys if k in info["params"])
    return (f"LM weights tuned on the {info['n_dev_trials']} {DEV_TRIALS} val trials (dev split, n-gram only): "
            f"{chosen}  [{path}]\nWER % on the {HELD_OUT_TRIALS} val trials, which the tuning never saw:")


def drop_stale_tuning(p: dict) -> None:
    """Redo what depends on ``lm_params.json`` when it is unreadable (tune again) or differs from the weights
    ``eval_tuned`` was decoded with (evaluate again), instead of reusing stale results."""
    params, used = p["lm_params"], p["eval_tuned"] / TUNED_USED
    if params.exists():
        try:
            json.loads(params.read_text())["params"]["acoustic_scale"]  # noqa: B018 (the one key the table reads)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("%s: unreadable (%s: %s); tuning again", params, type(exc).__name__, exc)
            params.unlink()
    done = p["eval_tuned"] / "results.pkl"
    if done.exists() and (not params.exists() or not used.exists() or used.read_text() != params.read_text()):
        log.warning("%s was decoded with other weights than %s: evaluating again", done, params)
        done.unlink()


def lm_eval_step(p: dict, name: str, out: Path) -> Step:
    """``evaluate_model.py --lm redis`` of the val split into ``out`` (the port is filled in once the server is
    up); ``eval_lm_tuned`` first sends the tuned weights (``--lm_params``)."""
    cmd = [env_python("b2txt25"), str(REPO / "model_training" / "evaluate_model.py"), "--model_path", str(p["model"]),
           "--data_dir", str(p["data"] / "hdf5_data_final"), "--eval_type", "val", "--csv_path",
           str(p["data"] / "t15_copyTaskData_description.csv"), "--gpu_number", "-1", "--lm", "redis",
           "--redis_ip", "127.0.0.1", "--redis_port", "0", "--redis_timeout", "120", "--out_dir", str(out),
           "--results_pkl", str(out / "results.pkl")]
    if name == "eval_lm_tuned":
        cmd += ["--lm_params", str(p["lm_params"])]
    return Step(name, cmd, done=out / "results.pkl")


def tuned_table(p: dict) -> tuple[str, list[dict]]:
    """The held-out block: WER on the trials the tuning never saw, documented vs tuned weights."""
    from analyses.pkl_io import read_pickle
    from language_model.tune_weights import parse_trials

    n = len(read_pickle(p["eval_greedy"] / "results.pkl", "results")["session"])
    return heldout_table(p["eval_greedy"] / "results.pkl", p["eval"] / "results.pkl",
                         p["eval_tuned"] / "results.pkl", parse_trials(HELD_OUT_TRIALS, n))


def mixed_lm_line(lm_path: Path) -> str:
    """Which n-gram the LM server decodes with (the mixture weight from ``build_info.json``)."""
    try:
        info = json.loads((lm_path / "build_info.json").read_text())
    except (OSError, ValueError):
        return f"n-gram LM: {lm_path}"
    weight = info.get("mix_weight", info.get("stats", {}).get("mix_weight"))
    order = info.get("order", info.get("options", {}).get("order", "?"))
    mixed = (f", interpolated with the wordfreq 1-gram (corpus weight {weight:.3g}, chosen on held-out perplexity)"
             if weight else "")
    return f"n-gram LM: {order}-gram of the LM corpus{mixed}  [{lm_path}]"


def start_services(args: argparse.Namespace, p: dict, sup: Supervisor) -> tuple[int, ChildProcess, ChildProcess]:
    from nejm_b2txt_utils.redis_protocol import ARGS_STREAM
    from nejm_b2txt_utils.redis_server import free_port, server_command

    port = free_port()
    redis_child = sup.start(ChildProcess(
        "redis-server", server_command(port, workdir=str(p["logs"])), p["logs"] / "redis.log"))

    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    redis_child.wait_ready(r.ping, timeout_s=20)
    cmd = [env_python("b2txt25_lm"), str(REPO / "language_model" / "language-model-standalone.py"),
           "--lm_path", str(p["lm3"]), "--redis_ip", "127.0.0.1", "--redis_port", str(port), *lm_flags(args)]
    if not args.no_llm:
        cmd += ["--do_opt", "--opt_model", "smollm2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    lm_child = sup.start(ChildProcess("lm-server", cmd, p["logs"] / "lm_server.log", env=env))
    lm_child.wait_ready(lambda: r.xlen(ARGS_STREAM) > 0, timeout_s=600)
    return port, lm_child, redis_child


def merge_timings(path: Path, timings: dict[str, dict]) -> dict[str, dict]:
    """This run's timings, where a step was reused keeping the measurement of the run that did it; a
    re-run that reused everything keeps the earlier total too (the report wants the work, not the skip)."""
    try:
        previous = json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a damaged file must not fail a finished run
        log.warning("%s: unreadable (%s); writing this run's timings instead", path, exc)
        previous = {}
    merged = {name: previous[name] if t.get("reused") and name in previous else t for name, t in timings.items()}
    for name, t in previous.items():  # e.g. eval_lm and the servers, not started when the evaluation was reused
        merged.setdefault(name, t)
    if all(t.get("reused") for name, t in timings.items() if name != "total") and "total" in previous:
        merged["total"] = previous["total"]
    return merged


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_flags(args, {"seed": 0})
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    p = plan(args)
    if args.fresh and p["out"].exists():
        shutil.rmtree(p["out"])
    p["logs"].mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings: dict[str, dict] = {}
    with Supervisor() as sup:
        try:
            drop_stale_tuning(p)
            for step in build_steps(args, p):
                timings[step.name] = run_step(step, p["logs"])
            lm_evals = [lm_eval_step(p, "eval_lm", p["eval"]), lm_eval_step(p, "eval_lm_tuned", p["eval_tuned"])]
            if all(step.done.exists() for step in lm_evals):
                log.info("[eval_lm] already done (%s, %s): reusing them", *(step.done for step in lm_evals))
                raise _AlreadyDone
            port, lm_child, redis_child = start_services(args, p, sup)
            for step in lm_evals:  # the documented weights first: the tuned run changes the server's weights
                step.cmd[step.cmd.index("--redis_port") + 1] = str(port)
                timings[step.name] = run_step(step, p["logs"])
            atomic_write_text(p["eval_tuned"] / TUNED_USED, p["lm_params"].read_text())
            timings["lm-server"] = {"peak_rss_mb": lm_child.peak_rss_mb()}
            timings["redis-server"] = {"peak_rss_mb": redis_child.peak_rss_mb()}
        except _AlreadyDone:
            pass
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            log.error("%s", exc)
            return 1
    table, rows = results_table(p["eval_greedy"] / "results.pkl", p["eval"] / "results.pkl")
    held_table, held_rows = tuned_table(p)
    this_run = round(time.monotonic() - t0, 1)
    timings["total"] = {"wall_s": this_run, "mode": "quick" if args.quick else "full"}
    timings = merge_timings(p["out"] / "timings.json", timings)
    extras = write_report(p, rows, timings, held_rows)
    print(f"\n{mixed_lm_line(p['lm3'])}\nDocumented LM weights ({' '.join(f for f in lm_flags(args) if f not in ('--gpu_number', '-1'))}), all val trials:\n"
          + table)
    print("\n" + tuned_weights_line(p["lm_params"]) + "\n" + held_table)
    print(f"\nsubmission CSV: {extras['csv']}\nFigure 2:       {extras['figure']}\n"
          f"report:         {extras['report']}\nwall time:      {time.monotonic() - t0:.0f} s")
    if timings["total"]["wall_s"] != this_run:
        print(f"                (finished steps reused; the run that did them took {timings['total']['wall_s']:.0f} s)")
    atomic_write_json(p["out"] / "timings.json", timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
