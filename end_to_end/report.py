"""The demo's closing table (greedy PER; WER with the n-gram alone and with n-gram + LLM; per corpus),
the submission CSV and Figure 2 of this run."""

from __future__ import annotations

import os
from pathlib import Path

from analyses.pkl_io import read_pickle, write_pickle
from model_training.eval_results import per_corpus_table
from nejm_b2txt_utils.atomic_io import atomic_write_json
from nejm_b2txt_utils.redis_protocol import parsed_hypotheses
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM


def ngram_only_sentence(candidates: dict | None, acoustic_scale: float) -> str:
    """The n-gram-only choice among the server's candidates.

    Args:
        candidates: one trial's parsed ``scoring`` (``lm_candidates`` of the results pickle), or ``None``.
        acoustic_scale: the server's ``--acoustic_scale``.

    Returns:
        The sentence with the best ``Hypothesis.ngram_total`` (the original's total without the causal LM);
        ``""`` without candidates.
    """
    hyps = parsed_hypotheses(candidates)
    return max(hyps, key=lambda h: h.ngram_total(acoustic_scale)).sentence if hyps else ""


def server_acoustic_scale(results: dict, path: Path) -> float:
    """The ``acoustic_scale`` the LM server decoded a results pickle with (its ``remote_lm_args``, which
    ``evaluate_model.py`` keeps).

    Raises:
        ValueError: the pickle has no ``remote_lm_args`` with an ``acoustic_scale`` (evaluated with ``--lm none``,
            or by an evaluator older than this field).
    """
    try:
        return float(results["remote_lm_args"]["acoustic_scale"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: no remote_lm_args.acoustic_scale (expected the LM server's arguments, as "
                         "evaluate_model.py --lm redis writes them)") from exc


def _pct(rate: float, ci) -> str:
    return f"{100 * rate:5.1f} [{100 * ci[0]:4.1f}-{100 * ci[1]:4.1f}]"


def _lm_records(greedy: dict, lm: dict, acoustic_scale: float, keep: set[int] | None = None) -> tuple[list, list]:
    """Per trial of ``greedy`` (index in ``keep``, all if ``None``) with an LM result: the n-gram-only (ranked at
    the server's ``acoustic_scale``) and the final (n-gram + LLM) records for :func:`per_corpus_table`."""
    key = ("session", "block_num", "trial_num")
    lm_index = {tuple(lm[k][i] for k in key): i for i in range(len(lm["session"]))}
    ngram_records, full_records = [], []
    for i in range(len(greedy["session"])):
        j = lm_index.get(tuple(greedy[k][i] for k in key))
        if j is None or not greedy["true_phonemes"][i] or (keep is not None and i not in keep):
            continue
        base = {"corpus": greedy["corpus"][i], "true_phonemes": greedy["true_phonemes"][i],
                "greedy_phonemes": greedy["greedy_phonemes"][i], "sentence_label": lm["sentence_label"][j]}
        ngram_records.append({**base, "pred_sentence": ngram_only_sentence(lm["lm_candidates"][j], acoustic_scale)})
        full_records.append({**base, "pred_sentence": lm["pred_sentence"][j]})
    return ngram_records, full_records


def results_table(greedy_pkl: Path, lm_pkl: Path, text_norm: str = DEFAULT_TEXT_NORM) -> tuple[str, list[dict]]:
    """Per-corpus and overall rows (``model_training.eval_results.per_corpus_table``), plus the formatted table.

    Args:
        greedy_pkl: ``results.pkl`` of the ``--lm none`` evaluation (greedy phonemes).
        lm_pkl: ``results.pkl`` of the ``--lm redis`` evaluation (same trials).
        text_norm: the WER normalisation.

    Returns:
        ``(table text, rows)``; rows have ``corpus``, ``trials``, ``PER_greedy``, ``WER_ngram``,
        ``WER_ngram_llm`` (fractions) and their ``_ci`` bounds, ``all`` last.
    """
    greedy, lm = read_pickle(greedy_pkl, "results"), read_pickle(lm_pkl, "results")
    ngram_records, full_records = _lm_records(greedy, lm, server_acoustic_scale(lm, lm_pkl))
    ngram_rows, _ = per_corpus_table(ngram_records, with_wer=True, text_norm=text_norm)
    full_rows, _ = per_corpus_table(full_records, with_wer=True, text_norm=text_norm)
    rows, lines = [], []
    header = f"{'corpus':<14}{'trials':>7}  {'PER greedy %':<20}{'WER n-gram %':<20}{'WER n-gram+LLM %':<20}"
    lines += [header, "-" * len(header)]
    for ng, full in zip(ngram_rows, full_rows):
        if "PER" not in ng:
            continue
        row = {"corpus": ng["corpus"], "trials": ng["n_trials"], "PER_greedy": ng["PER"], "WER_ngram": ng["WER"],
               "WER_ngram_llm": full["WER"], "PER_ci": list(ng["PER_ci"]),
               "WER_ngram_ci": list(ng["WER_ci"]), "WER_ngram_llm_ci": list(full["WER_ci"])}
        rows.append(row)
        if row["corpus"] == "all":
            lines.append("-" * len(header))
        lines.append(f"{row['corpus']:<14}{row['trials']:>7}  {_pct(ng['PER'], ng['PER_ci']):<20}"
                     f"{_pct(ng['WER'], ng['WER_ci']):<20}{_pct(full['WER'], full['WER_ci']):<20}")
    lines.append(f"(aggregate rates with bootstrap 95% CIs; WER after text normalisation '{text_norm}'; synthetic "
                 "data, validation split)")
    return "\n".join(lines), rows


def heldout_table(greedy_pkl: Path, documented_pkl: Path, tuned_pkl: Path, held_out: list[int],
                  text_norm: str = DEFAULT_TEXT_NORM) -> tuple[str, list[dict]]:
    """WER on the held-out trials (never used for tuning) with the documented and with the tuned LM weights.

    Args:
        greedy_pkl: ``results.pkl`` of the ``--lm none`` evaluation; ``held_out`` indexes its trials (the order
            ``tune_weights.py --trials`` counts in).
        documented_pkl: ``results.pkl`` of the LM evaluation with the documented weights.
        tuned_pkl: ``results.pkl`` of the LM evaluation with the tuned weights (same trials).
        held_out: indices of the trials to score.
        text_norm: the WER normalisation.

    Returns:
        ``(table text, rows)``; rows have ``corpus``, ``trials`` and ``WER_ngram_{documented,tuned}``,
        ``WER_ngram_llm_{documented,tuned}`` (fractions), ``all`` last.
    """
    greedy = read_pickle(greedy_pkl, "results")
    keep = set(held_out)
    tables = {}
    for name, pkl in (("documented", documented_pkl), ("tuned", tuned_pkl)):
        lm = read_pickle(pkl, "results")
        ngram_records, full_records = _lm_records(greedy, lm, server_acoustic_scale(lm, pkl), keep)
        tables[f"WER_ngram_{name}"] = per_corpus_table(ngram_records, with_wer=True, text_norm=text_norm)[0]
        tables[f"WER_ngram_llm_{name}"] = per_corpus_table(full_records, with_wer=True, text_norm=text_norm)[0]
    cols = ("WER_ngram_documented", "WER_ngram_tuned", "WER_ngram_llm_documented", "WER_ngram_llm_tuned")
    header = (f"{'corpus':<14}{'trials':>7}  {'n-gram documented':<20}{'n-gram tuned':<20}"
              f"{'+LLM documented':<20}{'+LLM tuned':<20}")
    rows, lines = [], [header, "-" * len(header)]
    for k, first in enumerate(tables[cols[0]]):
        if "WER" not in first:
            continue
        row = {"corpus": first["corpus"], "trials": first["n_trials"], **{c: tables[c][k]["WER"] for c in cols}}
        rows.append(row)
        if row["corpus"] == "all":
            lines.append("-" * len(header))
        lines.append(f"{row['corpus']:<14}{row['trials']:>7}  "
                     + "".join(_pct(tables[c][k]["WER"], tables[c][k]["WER_ci"]).ljust(20) for c in cols))
    return "\n".join(lines), rows


def write_report(plan: dict, rows: list[dict], timings: dict, held_out_rows: list[dict] | None = None) -> dict:
    """Figure 2 of this run, the newest submission CSV, and ``report.json`` (``rows``: all val trials with the
    documented weights; ``held_out_rows``: :func:`heldout_table`'s)."""
    from analyses.copy_task_from_eval import day_lookup, results_to_copytask
    from analyses.make_figures import figure_2

    out = plan["out"]
    results = read_pickle(plan["eval"] / "results.pkl", "results")
    copy = results_to_copytask(results, day_lookup(plan["data"] / "t15_copyTaskData_description.csv"))
    copy["synthetic"] = True
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    write_pickle(copy, fig_dir / "t15_copyTask.pkl")
    files = figure_2(copy, fig_dir, n_resamples=2000)
    csvs = sorted(plan["eval"].glob("baseline_rnn_val_predicted_sentences_*.csv"), key=os.path.getmtime)
    report = out / "report.json"
    atomic_write_json(report, {"rows": rows, "held_out_rows": held_out_rows or [], "timings": timings})
    error_fig = next((f for f in files if f.name == "figure2_error_rates.png"), files[0] if files else None)
    return {"csv": csvs[-1] if csvs else None, "figure": error_fig, "report": report}
