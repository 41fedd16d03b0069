"""Tune the LM decoding weights on saved logits of a dev split, offline, in parallel over the cores.

Reads a ``results.pkl`` written by ``evaluate_model.py --results_pkl`` (LM-order logits and the sentence
labels of each trial), decodes the chosen dev trials with every combination of the candidate values
(acoustic scale, blank penalty, beam, ...) through the same finalize pipeline as the server
(:class:`~language_model.serving.service.LMService`: lattice n-best, exact n-gram scores, augmentation),
and writes the combination with the lowest WER as a params file (JSON) that
``language-model-standalone.py --params_file`` and ``evaluate_model.py --lm_params`` read. Tune on a dev
split, never on the trials you report.

    python language_model/tune_weights.py --results_pkl runs/demo/eval_greedy/results.pkl \\
        --lm_path runs/demo/lm/3gram_lm_sil --trials 0:70 --acoustic_scale 0.325 1 2 3 --blank_penalty 1 9 90 \\
        --out runs/demo/lm_params.json

Ties are broken towards the earlier combination (deterministic). ``alpha`` (the causal-LM weight) needs the
causal LM and is not tuned here; the file keeps the table's value unless ``--alpha`` is given. All input
(LM folder, results.pkl content, trial selections, grid values, ``--out``) is checked before any decoding.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nejm_b2txt_utils.atomic_io import atomic_write_json  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.lm_params import BY_NAME, DOCUMENTED_INVOCATION, LMParamError, LMParams  # noqa: E402
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM, TEXT_NORMS  # noqa: E402

log = logging.getLogger("tune_weights")

#: Parameters this command searches over, with their default candidate values.
TUNED = {
    "acoustic_scale": [DOCUMENTED_INVOCATION["acoustic_scale"], 0.6, 1.0, 2.0, 3.0],
    "blank_penalty": [1.0, 9.0, DOCUMENTED_INVOCATION["blank_penalty"]],
    "beam": [BY_NAME["beam"].default],
    "lattice_beam": [BY_NAME["lattice_beam"].default],
    "lattice_pass_margin": [BY_NAME["lattice_pass_margin"].default],
}
#: Logit classes per frame (BLANK, SIL and 39 phonemes, LM order).
N_CLASSES = 41
_WORKER: dict = {}


class WorkerInitError(RuntimeError):
    """A worker could not load the LM folder (reported through its first job instead of respawning forever)."""


def parse_trials(spec: str, n: int, flag: str = "--trials") -> list[int]:
    """``"a:b"`` (Python slice of the trials), ``"even"``/``"odd"`` or ``"all"`` -> trial indices.

    Args:
        spec: the selection.
        n: number of trials in the results.pkl.
        flag: the flag named in errors.

    Returns:
        The selected trial indices, ascending.

    Raises:
        ConfigError: a malformed or empty selection, or a slice bound past the ``n`` trials.
    """
    if spec == "all":
        idx = list(range(n))
    elif spec in ("even", "odd"):
        idx = list(range(0 if spec == "even" else 1, n, 2))
    else:
        try:
            a, b = (int(x) if x else None for x in spec.split(":"))
        except ValueError:
            raise ConfigError(f"{flag} {spec!r}: expected a:b, even, odd or all") from None
        idx = list(range(n))[a:b]
        if idx:
            for bound in (a, b):
                if bound is not None and not -n <= bound <= n:
                    raise ConfigError(f"{flag} {spec!r}: bound {bound} is outside the {n} trials "
                                      f"(expected -{n}..{n})")
    if not idx:
        raise ConfigError(f"{flag} {spec!r} selects no trial of {n}")
    return idx


def _init(lm_path: str, threads: int) -> None:
    """Pool initializer: ignore Ctrl-C (the main process handles it) and get the LM service.

    The service normally comes from the main process through fork; loading it here is the fallback. A failure
    is kept and raised by the first job (:class:`WorkerInitError`): an initializer that raises makes the pool
    respawn workers forever.

    Args:
        lm_path: the LM folder.
        threads: OMP threads per worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "service" in _WORKER:
        return
    try:
        from language_model.serving.service import LMService

        _WORKER["service"] = LMService(lm_path, params=LMParams(gpu_number=-1))
    except Exception as exc:  # noqa: BLE001 (reported by the first job, never a respawn loop)
        _WORKER["error"] = f"--lm_path {lm_path}: {type(exc).__name__}: {exc}"


def _decode(job: tuple[tuple[int, int], dict, object]) -> tuple[tuple[int, int], str]:
    """Decode one trial with one combination in a worker.

    Args:
        job: ``(key, parameter values, LM-order logits [T, 41])``.

    Returns:
        ``(key, decoded sentence)``.

    Raises:
        WorkerInitError: the worker could not load the LM folder.
    """
    key, values, logits = job
    if "service" not in _WORKER:
        raise WorkerInitError(_WORKER.get("error", "the worker has no LM service"))
    svc = _WORKER["service"]
    params = LMParams(**values)
    svc.ensure_components(params)
    dec = svc.new_decoder(params)
    dec.accept_logits(logits)
    return key, svc.finalize(dec, params).sentence


#: The documented invocation's weights (``lm_params.DOCUMENTED_INVOCATION``; the searched parameters it leaves
#: out at the table's defaults; beams in cost units as the original), the reference a tuned file is compared with.
DOCUMENTED = {**{name: BY_NAME[name].default for name in TUNED}, "beam_acoustic_scale": 0.0,
              **{name: DOCUMENTED_INVOCATION[name] for name in ("acoustic_scale", "blank_penalty")}}


def load_results(results_pkl: Path, trials: str, report_trials: str | None) -> tuple[dict, list[int], list[int]]:
    """Read a results.pkl and check everything the selected trials need, before any decoding.

    Args:
        results_pkl: ``evaluate_model.py --results_pkl`` output.
        trials: the dev selection (:func:`parse_trials`).
        report_trials: the held-out selection or None.

    Returns:
        ``(data with 'logits' as float32 [T, 41] arrays for the selected trials, dev indices, report indices)``.

    Raises:
        ConfigError: not a results.pkl, ``sentence_label`` and ``logits`` of different lengths, a bad selection
            or overlap, a selected trial without a label or whose logits are not a finite [T, 41] array.
    """
    import numpy as np

    try:
        with open(results_pkl, "rb") as f:
            data = pickle.load(f)
        n_trials = len(data["logits"])
        n_labels = len(data["sentence_label"])
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ConfigError(f"{results_pkl}: not an evaluate_model.py results.pkl (a dict with 'logits' and "
                          f"'sentence_label'): {type(exc).__name__}: {exc}") from None
    if n_labels != n_trials:
        raise ConfigError(f"{results_pkl}: 'sentence_label' has {n_labels} entries and 'logits' {n_trials}; "
                          "expected one label per trial")
    idx = parse_trials(trials, n_trials)
    ridx = parse_trials(report_trials, n_trials, "--report_trials") if report_trials else []
    if set(ridx) & set(idx):
        raise ConfigError(f"--report_trials {report_trials} overlaps the dev trials {trials}")
    logits = list(data["logits"])
    for i in idx + ridx:
        if data["sentence_label"][i] is None:
            raise ConfigError(f"{results_pkl}: trial {i} has no sentence label (a test split?); expected labelled "
                              "trials")
        try:
            x = np.asarray(logits[i], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{results_pkl}: trial {i}: 'logits' is not numeric ({exc}); expected a finite "
                              f"[T, {N_CLASSES}] array") from None
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != N_CLASSES:
            raise ConfigError(f"{results_pkl}: trial {i}: 'logits' has shape {list(x.shape)}; expected "
                              f"[T, {N_CLASSES}] with T >= 1")
        if not np.isfinite(x).all():
            raise ConfigError(f"{results_pkl}: trial {i}: 'logits' has {int((~np.isfinite(x)).sum())} NaN/inf "
                              f"values; expected a finite [T, {N_CLASSES}] array")
        logits[i] = x
    return {**data, "logits": logits}, idx, ridx


def check_out(out: str, results_pkl: Path, lm_path: str) -> Path:
    """Check ``--out`` before any decoding (the file is written atomically, by a rename, at the end).

    Args:
        out: the ``--out`` value.
        results_pkl: ``--results_pkl``.
        lm_path: ``--lm_path``.

    Returns:
        ``out`` as a path.

    Raises:
        ConfigError: empty, an existing directory or non-regular file (a device such as /dev/null), the
            results.pkl itself, inside the LM folder, or below a path that is a file.
    """
    if not out.strip():
        raise ConfigError("--out is empty; expected a params file path (JSON)")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {out}: is a directory; expected a params file path (JSON)")
    if path.exists() and not path.is_file():
        raise ConfigError(f"--out {out}: exists and is not a regular file (a device?); expected a params file path")
    resolved = path.resolve()
    if resolved == results_pkl.resolve():
        raise ConfigError(f"--out {out}: is the --results_pkl file; expected another path")
    if resolved.is_relative_to(Path(lm_path).resolve()):
        raise ConfigError(f"--out {out}: lies inside --lm_path {lm_path}; expected a path outside the LM folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is not a directory; expected a writable folder")
            break
    return path


def load_service(lm_path: str, base: dict):
    """Load the LM folder once in the main process, as the workers use it (they inherit it through fork).

    Args:
        lm_path: the LM folder.
        base: the fixed parameter values (reads ``exact_ngram``).

    Returns:
        The :class:`~language_model.serving.service.LMService`.

    Raises:
        ConfigError: a missing folder, ``TLG.fst`` or ``words.txt``, or a truncated/corrupt one.
    """
    from language_model.serving.service import LMService

    try:
        svc = LMService(lm_path, params=LMParams(gpu_number=-1))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"--lm_path {lm_path}: {exc}") from None
    if LMParams(**base).exact_ngram and not (Path(lm_path) / "G.fst").is_file():
        log.warning("--lm_path %s has no G.fst: exact_ngram is skipped (n-best scored with the search's costs)",
                    lm_path)
    return svc


def tune(results_pkl: Path, lm_path: str, trials: str, grid: dict[str, list], base: dict, workers: int,
         text_norm: str = DEFAULT_TEXT_NORM, report_trials: str | None = None) -> dict:
    """Decode the dev trials with every combination and return the best.

    Args:
        results_pkl: ``evaluate_model.py --results_pkl`` output.
        lm_path: the LM folder.
        trials: which trials are the dev split (:func:`parse_trials`).
        grid: parameter -> candidate values (duplicates are decoded once).
        base: fixed parameter values (table names).
        workers: processes (capped at the number of jobs and of cores).
        text_norm: WER normalisation (``nejm_b2txt_utils.text.TEXT_NORMS``).
        report_trials: other trials (disjoint from ``trials``) decoded with the best and with the documented
            weights (:data:`DOCUMENTED`) for a held-out comparison.

    Returns:
        ``{"params": best values, "dev_wer": ..., "dev_trials": ..., "dev_trial_indices": ..., "results": [per
        combination]}``, plus ``"report": {"trials", "trial_indices", "n_trials", "wer_documented",
        "wer_tuned"}`` with ``report_trials``.

    Raises:
        ConfigError: bad input (:func:`load_results`, :func:`load_service`, a value outside the table's range,
            an unknown ``text_norm``), all before any decoding.
    """
    from tqdm import tqdm

    from nejm_b2txt_utils.metrics import word_error_rate

    if text_norm not in TEXT_NORMS:
        raise ConfigError(f"--text_norm {text_norm!r}: expected one of {', '.join(TEXT_NORMS)}")
    data, idx, ridx = load_results(results_pkl, trials, report_trials)
    refs = [data["sentence_label"][i] for i in idx]
    grid = {n: list(dict.fromkeys(v)) for n, v in grid.items()}  # a repeated value is decoded once
    names = list(grid)
    combos = [dict(zip(names, vals)) for vals in itertools.product(*(grid[n] for n in names))]
    try:
        for c in combos:
            LMParams(**{**base, **c})  # a bad value fails here, before any work
    except LMParamError as exc:
        raise ConfigError(str(exc)) from None
    jobs = [((ci, ti), {**base, **c}, data["logits"][i]) for ci, c in enumerate(combos) for ti, i in enumerate(idx)]
    cap = min(workers, max(len(jobs), len(ridx)), os.cpu_count() or 1)
    if cap < workers:
        log.info("--workers %d capped at %d (%d jobs, %d cores)", workers, cap, max(len(jobs), len(ridx)),
                 os.cpu_count() or 1)
    workers = cap
    _WORKER.clear()
    _WORKER["service"] = load_service(lm_path, base)  # the workers inherit it through fork
    hyps: dict[tuple[int, int], str] = {}
    t0 = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // workers)
    try:
        with multiprocessing.get_context("fork").Pool(workers, _init, (lm_path, threads)) as pool:
            for key, sent in tqdm(pool.imap_unordered(_decode, jobs, chunksize=1), total=len(jobs),
                                  desc="decoding", unit=" trial", mininterval=2.0):
                hyps[key] = sent
            results = []
            for ci, c in enumerate(combos):
                wer = word_error_rate(refs, [hyps[(ci, ti)] for ti in range(len(idx))], text_norm=text_norm)
                results.append({**c, "wer": round(float(wer.rate), 5)})
            best = min(range(len(combos)), key=lambda k: (results[k]["wer"], k))
            log.info("%d combinations x %d trials in %.0f s; best %s", len(combos), len(idx),
                     time.perf_counter() - t0, results[best])
            out = {"params": {**base, **combos[best]}, "dev_wer": results[best]["wer"], "dev_trials": trials,
                   "n_dev_trials": len(idx), "dev_trial_indices": idx, "results": results}
            if ridx:
                rrefs = [data["sentence_label"][i] for i in ridx]
                report = {"trials": report_trials, "trial_indices": ridx, "n_trials": len(ridx)}
                for name, values in (("documented", {**base, **DOCUMENTED}), ("tuned", out["params"])):
                    rjobs = [((0, k), values, data["logits"][i]) for k, i in enumerate(ridx)]
                    got = dict(tqdm(pool.imap_unordered(_decode, rjobs, chunksize=1), total=len(rjobs),
                                    desc=f"report ({name})", unit=" trial", mininterval=2.0))
                    wer = word_error_rate(rrefs, [got[(0, k)] for k in range(len(ridx))], text_norm=text_norm)
                    report[f"wer_{name}"] = round(float(wer.rate), 5)
                out["report"] = report
    except WorkerInitError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        _WORKER.clear()
    return out


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    """Command line: check all input, tune, write the params file atomically.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on bad input (one ``error:`` line), 130 on Ctrl-C (one ``interrupted`` line; an
        existing ``--out`` is left as it was).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_pkl", type=Path, required=True, help="evaluate_model.py --results_pkl output")
    p.add_argument("--lm_path", required=True, help="the LM folder the server will use")
    p.add_argument("--trials", default="even",
                   help="the dev trials: a:b (slice), even, odd or all (default even; report on the others)")
    p.add_argument("--out", required=True, help="params file to write (JSON; not inside --lm_path)")
    p.add_argument("--report_trials", default=None,
                   help="other trials (e.g. odd) decoded with the documented and the tuned weights for a held-out "
                        "comparison, written under 'report'")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes (default: all cores; capped at the number of jobs and of cores)")
    p.add_argument("--text_norm", default=DEFAULT_TEXT_NORM, choices=list(TEXT_NORMS),
                   help=f"WER text normalisation (default {DEFAULT_TEXT_NORM})")
    for name, values in TUNED.items():
        p.add_argument(f"--{name}", type=float, nargs="+", default=values,
                       help=f"candidate values (default {' '.join(map(str, values))})")
    p.add_argument("--beam_acoustic_scale", type=float, default=DOCUMENTED_INVOCATION["acoustic_scale"],
                   help="beams are given at this acoustic scale (0: cost units, the original); default: the "
                        "documented acoustic scale, %(default)s")
    nbest = LMParams().nbest
    p.add_argument("--nbest", type=int, default=nbest,
                   help=f"n-best size while tuning; written to the params file, so the server uses it too "
                        f"(default {nbest}, the server's)")
    p.add_argument("--alpha", type=float, default=None, help="causal-LM weight to write (not tuned)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.results_pkl.is_file():
        raise ConfigError(f"--results_pkl {args.results_pkl}: no such file")
    if not (Path(args.lm_path) / "TLG.fst").is_file():
        raise ConfigError(f"--lm_path {args.lm_path}: no TLG.fst there")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    out_path = check_out(args.out, args.results_pkl, args.lm_path)
    grid = {name: getattr(args, name) for name in TUNED}
    base = {"beam_acoustic_scale": args.beam_acoustic_scale, "nbest": args.nbest, "gpu_number": -1}
    if args.alpha is not None:
        base["alpha"] = args.alpha
    try:
        out = tune(args.results_pkl, args.lm_path, args.trials, grid, base, args.workers, args.text_norm,
                   args.report_trials)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    out["params"].pop("gpu_number", None)
    atomic_write_json(out_path, {**out, "lm_path": str(args.lm_path), "results_pkl": str(args.results_pkl)})
    print(f"best on {out['n_dev_trials']} dev trials ({args.trials}): WER {100 * out['dev_wer']:.1f} % with "
          + " ".join(f"{k}={v}" for k, v in out["params"].items()) + f" -> {out_path}")
    if "report" in out:
        r = out["report"]
        print(f"held-out {r['n_trials']} trials ({r['trials']}): WER {100 * r['wer_documented']:.1f} % with the "
              f"documented weights, {100 * r['wer_tuned']:.1f} % with the tuned ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
