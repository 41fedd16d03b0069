"""Tune the LM decoding weights on saved logits of a dev split, offline, in parallel over the cores.

Reads a ``results.pkl`` written by ``evaluate_model.py --results_pkl`` (LM-order logits and the sentence
labels of each trial), decodes the chosen dev trials with every combination of the candidate values
(acoustic scale, blank penalty, beam, ...) through the same finalize pipeline as the server
(:class:`~language_model.serving.service.LMService`: lattice n-best, exact n-gram scores, augmentation),
and writes the combination with the lowest WER as a params file (JSON) that
``language-model-standalone.py --params_file`` and ``evaluate_model.py --lm_params`` read. Tune on a dev
split, never on the trials you report.

    python language_model/tune_weights.py --results_pkl runs/demo/eval/results.pkl --lm_path runs/demo/lm3 \\
        --trials 0:70 --acoustic_scale 0.325 1 2 3 --blank_penalty 1 9 90 --out runs/demo/lm_params.json

Ties are broken towards the earlier combination (deterministic). ``alpha`` (the causal-LM weight) needs the
causal LM and is not tuned here; the file keeps the table's value unless ``--alpha`` is given.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing
import os
import pickle
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nejm_b2txt_utils.atomic_io import atomic_write_json  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParamError, LMParams  # noqa: E402

log = logging.getLogger("tune_weights")

#: Parameters this command searches over, with their default candidate values.
TUNED = {
    "acoustic_scale": [0.325, 0.6, 1.0, 2.0, 3.0],
    "blank_penalty": [1.0, 9.0, 90.0],
    "beam": [17.0],
    "lattice_beam": [8.0],
    "lattice_pass_margin": [5.0],
}
_WORKER: dict = {}


def parse_trials(spec: str, n: int) -> list[int]:
    """``"a:b"`` (Python slice of the trials), ``"even"``/``"odd"`` or ``"all"`` -> trial indices.

    Raises:
        ConfigError: a malformed or empty selection.
    """
    if spec == "all":
        idx = list(range(n))
    elif spec in ("even", "odd"):
        idx = list(range(0 if spec == "even" else 1, n, 2))
    else:
        try:
            a, b = (int(x) if x else None for x in spec.split(":"))
        except ValueError:
            raise ConfigError(f"--trials {spec!r}: expected a:b, even, odd or all") from None
        idx = list(range(n))[a:b]
    if not idx:
        raise ConfigError(f"--trials {spec!r} selects no trial of {n}")
    return idx


def _init(lm_path: str, threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from language_model.serving.service import LMService

    _WORKER["service"] = LMService(lm_path, params=LMParams(gpu_number=-1))


def _decode(job: tuple[int, dict, object]) -> tuple[int, str]:
    key, values, logits = job
    svc = _WORKER["service"]
    params = LMParams(**values)
    svc.ensure_components(params)
    dec = svc.new_decoder(params)
    dec.accept_logits(logits)
    return key, svc.finalize(dec, params).sentence


#: The documented invocation's weights (the original's README), the reference a tuned file is compared with.
DOCUMENTED = {"acoustic_scale": 0.325, "blank_penalty": 90.0, "beam": 17.0, "lattice_beam": 8.0,
              "lattice_pass_margin": 5.0, "beam_acoustic_scale": 0.0}


def tune(results_pkl: Path, lm_path: str, trials: str, grid: dict[str, list], base: dict, workers: int,
         text_norm: str = "b2txt", report_trials: str | None = None) -> dict:
    """Decode the dev trials with every combination and return the best.

    Args:
        results_pkl: ``evaluate_model.py --results_pkl`` output.
        lm_path: the LM folder.
        trials: which trials are the dev split (:func:`parse_trials`).
        grid: parameter -> candidate values.
        base: fixed parameter values (table names).
        workers: processes.
        text_norm: WER normalisation (``nejm_b2txt_utils.text.TEXT_NORMS``).
        report_trials: other trials (disjoint from ``trials``) decoded with the best and with the documented
            weights (:data:`DOCUMENTED`) for a held-out comparison.

    Returns:
        ``{"params": best values, "dev_wer": ..., "dev_trials": ..., "results": [per combination]}``, plus
        ``"report": {"trials", "n_trials", "wer_documented", "wer_tuned"}`` with ``report_trials``.
    """
    from tqdm import tqdm

    from nejm_b2txt_utils.metrics import word_error_rate

    try:
        with open(results_pkl, "rb") as f:
            data = pickle.load(f)
        n_trials = len(data["logits"])
        data["sentence_label"]  # noqa: B018 (checked here so a wrong pickle is one line, not a KeyError later)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ConfigError(f"{results_pkl}: not an evaluate_model.py results.pkl (a dict with 'logits' and "
                          f"'sentence_label'): {type(exc).__name__}: {exc}") from None
    idx = parse_trials(trials, n_trials)
    refs = [data["sentence_label"][i] for i in idx]
    if any(r is None for r in refs):
        raise ConfigError(f"{results_pkl}: the selected trials have no sentence labels (a test split?)")
    names = list(grid)
    combos = [dict(zip(names, vals)) for vals in itertools.product(*(grid[n] for n in names))]
    for c in combos:
        LMParams(**{**base, **c})  # a bad value fails here, before any work
    jobs = [((ci, ti), {**base, **c}, data["logits"][i]) for ci, c in enumerate(combos) for ti, i in enumerate(idx)]
    ridx = parse_trials(report_trials, len(data["logits"])) if report_trials else []
    if set(ridx) & set(idx):
        raise ConfigError(f"--report_trials {report_trials} overlaps the dev trials {trials}")
    hyps: dict[tuple[int, int], str] = {}
    t0 = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // workers)
    with multiprocessing.get_context("fork").Pool(workers, _init, (lm_path, threads)) as pool:
        for key, sent in tqdm(pool.imap_unordered(_decode, jobs, chunksize=1), total=len(jobs), desc="decoding",
                              unit=" trial", mininterval=2.0):
            hyps[key] = sent
        results = []
        for ci, c in enumerate(combos):
            wer = word_error_rate(refs, [hyps[(ci, ti)] for ti in range(len(idx))], text_norm=text_norm)
            results.append({**c, "wer": round(float(wer.rate), 5)})
        best = min(range(len(combos)), key=lambda k: (results[k]["wer"], k))
        log.info("%d combinations x %d trials in %.0f s; best %s", len(combos), len(idx), time.perf_counter() - t0,
                 results[best])
        out = {"params": {**base, **combos[best]}, "dev_wer": results[best]["wer"], "dev_trials": trials,
               "n_dev_trials": len(idx), "results": results}
        if ridx:
            rrefs = [data["sentence_label"][i] for i in ridx]
            report = {"trials": report_trials, "n_trials": len(ridx)}
            for name, values in (("documented", {**base, **DOCUMENTED}), ("tuned", out["params"])):
                rjobs = [((0, k), values, data["logits"][i]) for k, i in enumerate(ridx)]
                got = dict(tqdm(pool.imap_unordered(_decode, rjobs, chunksize=1), total=len(rjobs),
                                desc=f"report ({name})", unit=" trial", mininterval=2.0))
                wer = word_error_rate(rrefs, [got[(0, k)] for k in range(len(ridx))], text_norm=text_norm)
                report[f"wer_{name}"] = round(float(wer.rate), 5)
            out["report"] = report
    return out


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_pkl", type=Path, required=True, help="evaluate_model.py --results_pkl output")
    p.add_argument("--lm_path", required=True, help="the LM folder the server will use")
    p.add_argument("--trials", default="even",
                   help="the dev trials: a:b (slice), even, odd or all (default even; report on the others)")
    p.add_argument("--out", type=Path, required=True, help="params file to write (JSON)")
    p.add_argument("--report_trials", default=None,
                   help="other trials (e.g. odd) decoded with the documented and the tuned weights for a held-out "
                        "comparison, written under 'report'")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--text_norm", default="b2txt", help="WER text normalisation (b2txt or original)")
    for name, values in TUNED.items():
        p.add_argument(f"--{name}", type=float, nargs="+", default=values,
                       help=f"candidate values (default {' '.join(map(str, values))})")
    p.add_argument("--beam_acoustic_scale", type=float, default=0.325,
                   help="beams are given at this acoustic scale (0: cost units, the original); default 0.325")
    p.add_argument("--nbest", type=int, default=10, help="n-best size while tuning (default 10)")
    p.add_argument("--alpha", type=float, default=None, help="causal-LM weight to write (not tuned)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.results_pkl.is_file():
        raise ConfigError(f"--results_pkl {args.results_pkl}: no such file")
    if not (Path(args.lm_path) / "TLG.fst").is_file():
        raise ConfigError(f"--lm_path {args.lm_path}: no TLG.fst there")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    grid = {name: getattr(args, name) for name in TUNED}
    base = {"beam_acoustic_scale": args.beam_acoustic_scale, "nbest": args.nbest, "gpu_number": -1}
    if args.alpha is not None:
        base["alpha"] = args.alpha
    try:
        out = tune(args.results_pkl, args.lm_path, args.trials, grid, base, args.workers, args.text_norm,
                   args.report_trials)
    except LMParamError as exc:
        raise ConfigError(str(exc)) from None
    out["params"].pop("gpu_number", None)
    atomic_write_json(args.out, {**out, "lm_path": str(args.lm_path), "results_pkl": str(args.results_pkl)})
    print(f"best on {out['n_dev_trials']} dev trials ({args.trials}): WER {100 * out['dev_wer']:.1f} % with "
          + " ".join(f"{k}={v}" for k, v in out["params"].items()) + f" -> {args.out}")
    if "report" in out:
        r = out["report"]
        print(f"held-out {r['n_trials']} trials ({r['trials']}): WER {100 * r['wer_documented']:.1f} % with the "
              f"documented weights, {100 * r['wer_tuned']:.1f} % with the tuned ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
