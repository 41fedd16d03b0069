"""The demo's closing table (greedy PER; WER with the n-gram alone and with n-gram + LLM; per corpus),
the submission CSV and Figure 2 of this run."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from nejm_b2txt_utils.metrics import aggregate_error_rate, word_error_rate
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM


def ngram_only_sentence(candidates: dict | None, acoustic_scale: float) -> str:
    """The n-gram-only choice among the server's candidates: max of acoustic_scale·ac + ngram
    (the original's total without the causal LM)."""
    if not candidates or not candidates.get("candidate_sentences"):
        return ""
    scores = [acoustic_scale * a + n for a, n in zip(candidates["candidate_acoustic_scores"],
                                                       candidates["candidate_ngram_scores"])]
    best = max(range(len(scores)), key=scores.__getitem__)
    return candidates["candidate_sentences"][best]


def _load(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _pct(er) -> str:
    return f"{100 * er.rate:5.1f} [{100 * er.ci_low:4.1f}-{100 * er.ci_high:4.1f}]"


def results_table(greedy_pkl: Path, lm_pkl: Path, acoustic_scale: float,
                  text_norm: str = DEFAULT_TEXT_NORM) -> tuple[str, list[dict]]:
    """Per-corpus and overall rows, plus the formatted table."""
    greedy, lm = _load(greedy_pkl), _load(lm_pkl)
    key = ("session", "block_num", "trial_num")
    lm_index = {tuple(lm[k][i] for k in key): i for i in range(len(lm["session"]))}
    corpora = sorted(set(greedy["corpus"]))
    rows, lines = [], []
    header = f"{'corpus':<14}{'trials':>7}  {'PER greedy %':<20}{'WER n-gram %':<20}{'WER n-gram+LLM %':<20}"
    lines += [header, "-" * len(header)]
    for corpus in [*corpora, "all"]:
        idx = [i for i, c in enumerate(greedy["corpus"]) if corpus in ("all", c) and greedy["true_phonemes"][i]]
        if not idx:
            continue
        per = aggregate_error_rate([greedy["true_phonemes"][i] for i in idx],
                                   [greedy["greedy_phonemes"][i] for i in idx])
        refs, ngram, full = [], [], []
        for i in idx:
            j = lm_index.get(tuple(greedy[k][i] for k in key))
            if j is None:
                continue
            refs.append(lm["sentence_label"][j])
            ngram.append(ngram_only_sentence(lm["lm_candidates"][j], acoustic_scale))
            full.append(lm["pred_sentence"][j])
        wer_ngram, wer_full = word_error_rate(refs, ngram, text_norm), word_error_rate(refs, full, text_norm)
        rows.append({"corpus": corpus, "trials": len(idx), "PER_greedy": per.rate, "WER_ngram": wer_ngram.rate,
                     "WER_ngram_llm": wer_full.rate, "PER_ci": [per.ci_low, per.ci_high],
                     "WER_ngram_ci": [wer_ngram.ci_low, wer_ngram.ci_high],
                     "WER_ngram_llm_ci": [wer_full.ci_low, wer_full.ci_high]})
        if corpus == "all":
            lines.append("-" * len(header))
        lines.append(f"{corpus:<14}{len(idx):>7}  {_pct(per):<20}{_pct(wer_ngram):<20}{_pct(wer_full):<20}")
    lines.append(f"(aggregate rates with bootstrap 95% CIs; WER after text normalisation '{text_norm}'; synthetic "
                 "data, validation split)")
    return "\n".join(lines), rows


def write_report(plan: dict, rows: list[dict], timings: dict) -> dict:
    """Figure 2 of this run, the newest submission CSV, and ``report.json``."""
    from analyses.copy_task_from_eval import day_lookup, results_to_copytask
    from analyses.make_figures import figure_2

    out = plan["out"]
    results = _load(plan["eval"] / "results.pkl")
    copy = results_to_copytask(results, day_lookup(plan["data"] / "t15_copyTaskData_description.csv"))
    copy["synthetic"] = True
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    with open(fig_dir / "t15_copyTask.pkl", "wb") as fh:
        pickle.dump(copy, fh)
    files = figure_2(copy, fig_dir, n_resamples=2000)
    csvs = sorted(plan["eval"].glob("baseline_rnn_val_predicted_sentences_*.csv"), key=os.path.getmtime)
    report = out / "report.json"
    tmp = report.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows, "timings": timings}, indent=2))
    os.replace(tmp, report)
    error_fig = next((f for f in files if f.name == "figure2_error_rates.png"), files[0] if files else None)
    return {"csv": csvs[-1] if csvs else None, "figure": error_fig, "report": report}
