"""Report on evaluator results: per-day and per-corpus error rates with CIs, S/D/I, WER stages, seeds.

``python model_training/eval_report.py RUN1/results.pkl [RUN2/results.pkl ...] --out report.json`` reads the
``--results_pkl`` files of ``evaluate_model.py`` (one per seed or model) and writes, per file:

* PER (greedy phonemes) per day, per corpus and overall: rate, trial-bootstrap 95 % CI, and for the overall rate
  also a day-grouped bootstrap CI (days resampled whole: trials of one day are not independent);
* substitution / deletion / insertion counts;
* when the file holds LM answers: final WER (the LM's best), n-gram WER (the candidate with the best acoustic +
  n-gram score as the server reported them, i.e. before the causal-LM rescoring) and oracle WER (the best
  candidate per trial), with the WER text normalisation of ``--text_norm``;

and over all files: mean +- SEM of each overall rate. ``report.json`` is written atomically with a manifest
beside it (``nejm_b2txt_utils/run_manifest.py``: command, commit, versions, hardware, input hashes).
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from nejm_b2txt_utils.atomic_io import atomic_write_json  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.metrics import bootstrap_ci, edit_counts, grouped_bootstrap_ci  # noqa: E402
from nejm_b2txt_utils.run_manifest import write_manifests  # noqa: E402
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM, TEXT_NORMS, normalize_for_wer  # noqa: E402

MIN_DAYS_FOR_GROUPED_CI = 5  # resampling fewer days gives intervals narrower than the trial-level one


def error_summary(refs: Sequence[Sequence], hyps: Sequence[Sequence], groups: Sequence | None = None) -> dict:
    """Aggregate error rate of paired token lists with its CIs and edit-operation counts.

    Args:
        refs, hyps: parallel token sequences; groups: per-item group labels (days) for the grouped CI.

    Returns:
        ``{"rate", "ci95", "n", "n_ref", "sub", "del", "ins"}`` (+ ``"ci95_day_grouped"`` and ``"n_days"`` with
        ``groups``; with fewer than :data:`MIN_DAYS_FOR_GROUPED_CI` days that CI is printed with a warning).
    """
    counts = [edit_counts(r, h) for r, h in zip(refs, hyps)]
    edits = np.array([c["total"] for c in counts])
    lens = np.array([len(r) for r in refs])
    n_ref = int(lens.sum())
    out = {"rate": float(edits.sum() / n_ref) if n_ref else math.nan, "ci95": list(bootstrap_ci(edits, lens)),
           "n": len(refs), "n_ref": n_ref, **{k: int(sum(c[k] for c in counts)) for k in ("sub", "del", "ins")}}
    if groups is not None:
        out["ci95_day_grouped"] = list(grouped_bootstrap_ci(edits, lens, groups))
        out["n_days"] = len(set(groups))
    return out


def _words(sentence: str, text_norm: str) -> list[str]:
    return normalize_for_wer(sentence, text_norm).split()


def report_one(res: dict, text_norm: str) -> dict:
    """The per-file report of one results pkl (parallel per-trial lists, as ``write_results_pkl`` writes)."""
    idx = [i for i, t in enumerate(res["true_phonemes"]) if t is not None]
    if not idx:
        raise ConfigError("results pkl: no trial has true phonemes (a test split?): nothing to score")
    sessions = [res["session"][i] for i in idx]
    refs, hyps = [res["true_phonemes"][i] for i in idx], [res["greedy_phonemes"][i] for i in idx]
    out = {"PER": error_summary(refs, hyps, sessions), "PER_by_day": {}, "PER_by_corpus": {}}
    for key, labels in (("PER_by_day", sessions), ("PER_by_corpus", [res["corpus"][i] for i in idx])):
        for name in sorted(set(labels)):
            sel = [j for j, lab in enumerate(labels) if lab == name]
            out[key][name] = error_summary([refs[j] for j in sel], [hyps[j] for j in sel])
    with_lm = [i for i in idx if res["lm_candidates"][i] and res["sentence_label"][i] is not None]
    if with_lm:
        ref_w = [_words(res["sentence_label"][i], text_norm) for i in with_lm]
        final, ngram, oracle = [], [], []
        for i, ref in zip(with_lm, ref_w):
            cands = res["lm_candidates"][i]
            words = [_words(s, text_norm) for s in cands["candidate_sentences"]]
            first_pass = np.add(cands["candidate_acoustic_scores"], cands["candidate_ngram_scores"])
            final.append(_words(res["pred_sentence"][i], text_norm))
            ngram.append(words[int(np.argmax(first_pass))])
            oracle.append(min(words, key=lambda w, r=ref: edit_counts(r, w)["total"]))
        days = [res["session"][i] for i in with_lm]
        out.update(WER_final=error_summary(ref_w, final, days), WER_ngram=error_summary(ref_w, ngram, days),
                   WER_oracle=error_summary(ref_w, oracle, days))
    return out


def mean_sem(values: Sequence[float]) -> dict:
    """``{"mean", "sem", "n"}``; SEM = sample std / sqrt(n) (None for one value: JSON has no NaN)."""
    v = np.asarray(values, dtype=np.float64)
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "sem": sem, "n": len(v)}


def build_report(paths: Sequence[Path], text_norm: str = DEFAULT_TEXT_NORM) -> dict:
    """Per-file reports and mean +- SEM over files of every overall rate.

    Raises:
        ConfigError: a file that is not an evaluator results pkl.
    """
    per_file = {}
    for p in paths:
        try:
            with open(p, "rb") as fh:
                res = pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise ConfigError(f"{p}: not a readable results pkl ({exc})") from None
        fields = ("session", "corpus", "true_phonemes", "greedy_phonemes", "lm_candidates")
        missing = set(fields) - set(res) if isinstance(res, dict) else set(fields)
        if missing:
            raise ConfigError(f"{p}: missing fields {sorted(missing)} (expected evaluate_model.py --results_pkl)")
        lengths = {f: len(res[f]) if isinstance(res[f], list) else None for f in fields}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise ConfigError(f"{p}: fields of different lengths or not lists ({lengths}); expected one entry per "
                              "trial in each")
        try:
            per_file[str(p)] = report_one(res, text_norm)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError) as exc:  # e.g. greedy_phonemes of None (was a traceback)
            raise ConfigError(f"{p}: a trial's entry is not what evaluate_model.py writes ({exc})") from None
    keys = sorted({k for r in per_file.values() for k in r if not k.endswith(("_by_day", "_by_corpus"))})
    over = {k: mean_sem([r[k]["rate"] for r in per_file.values() if k in r]) for k in keys}
    return {"text_norm": text_norm, "files": per_file, "over_files": over}


def format_report(report: dict) -> str:
    """A plain-text table: overall rates per file, then mean +- SEM over files."""
    lines = []
    for path, r in report["files"].items():
        lines.append(path)
        for key in [k for k in r if not k.endswith(("_by_day", "_by_corpus"))]:
            s = r[key]
            few = s.get("n_days", MIN_DAYS_FOR_GROUPED_CI) < MIN_DAYS_FOR_GROUPED_CI
            lines.append(f"  {key:<11}{100 * s['rate']:6.2f} %  CI [{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}]"
                         f"  day-grouped [{100 * s['ci95_day_grouped'][0]:.2f}, {100 * s['ci95_day_grouped'][1]:.2f}]"
                         + (f" (only {s['n_days']} days: too few to resample)" if few else "")
                         + f"  S/D/I {s['sub']}/{s['del']}/{s['ins']}  n={s['n']}")
    for key, v in report["over_files"].items():
        sem = "-" if v["sem"] is None else f"{100 * v['sem']:.2f}"
        lines.append(f"{key:<11} mean over {v['n']} file(s): {100 * v['mean']:.2f} % +- {sem} (SEM)")
    return "\n".join(lines)


@exit_2_on_bad_input(FileNotFoundError)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="evaluate_model.py --results_pkl files (one per seed or model)")
    p.add_argument("--out", default="eval_report.json", help="report JSON (default: %(default)s)")
    p.add_argument("--text_norm", choices=sorted(TEXT_NORMS), default=DEFAULT_TEXT_NORM, help="WER normalisation")
    args = p.parse_args(argv)
    paths = [Path(r) for r in args.results]
    report = build_report(paths, args.text_norm)
    atomic_write_json(args.out, report)
    write_manifests([args.out], {f"results_{i}": q for i, q in enumerate(paths)})
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
