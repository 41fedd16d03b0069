"""Turn an evaluation run's per-trial results into a ``t15_copyTask.pkl``, so Figure 2 shows your decoder.

Input: the pickle ``model_training/evaluate_model.py --results_pkl PATH`` writes, a dict of parallel
per-trial lists: ``session``, ``block_num``, ``trial_num``, ``corpus``, ``sentence_label`` (None on the
test split), ``pred_sentence`` (the LM's best sentence), ``greedy_phonemes``, ``true_phonemes`` and
``logits`` (LM order, [P, 41]). Required: session, corpus, sentence_label, pred_sentence, logits; the
phoneme fields are derived when absent. Unlabelled (test) trials are skipped: run ``--eval_type val``.

``python -m analyses.copy_task_from_eval --results RESULTS_PKL --csv DESCRIPTION_CSV --out t15_copyTask.pkl``
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from analyses.copy_task import validate_copy_task
from analyses.pkl_io import PklFormatError, check_parallel, read_pickle, require_keys, write_pickle
from nejm_b2txt_utils.description_csv import read_description_csv, session_to_date
from nejm_b2txt_utils.lexicon import Lexicon, sentence_to_phonemes
from nejm_b2txt_utils.metrics import logits_to_phonemes
from nejm_b2txt_utils.phonemes import LM_ORDER, N_CLASSES, SIL
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM, TEXT_NORMS, normalize_for_wer

log = logging.getLogger(__name__)

REQUIRED_RESULT_KEYS = ("session", "corpus", "sentence_label", "pred_sentence", "logits")
OPTIONAL_RESULT_KEYS = ("block_num", "trial_num", "greedy_phonemes", "true_phonemes")
#: T15's implant date: 2023-08-11 is post-implant day 25 (spec §1.7).
T15_IMPLANT_DATE = "2023-07-17"
_SYMBOLS = set(LM_ORDER) - {"BLANK"}


def vocab_size_of_corpus(corpus: str) -> int:
    """The 50-Word corpus was decoded with the 50-word vocabulary, all others with 125,000 words."""
    return 50 if corpus == "50-Word" else 125000


def days_from_csv(csv_path: str | Path) -> dict[str, int]:
    """Date (``YYYY-MM-DD``) -> post-implant day, from the block description CSV."""
    return {row.date: row.post_implant_day for row in read_description_csv(csv_path)}


def day_lookup(csv_path: str | Path | None = None, implant_date: str | None = None) -> Callable[[str], int]:
    """``session -> post-implant day``: the CSV's ``Post-implant day`` of the session's date, else the days
    since ``implant_date``; a session neither covers raises a ``KeyError`` naming it."""
    by_date = days_from_csv(csv_path) if csv_path else {}
    implant = dt.date.fromisoformat(implant_date) if implant_date else None

    def lookup(session: str) -> int:
        date = session_to_date(session)
        if date in by_date:
            return by_date[date]
        if implant is not None:
            return (dt.date.fromisoformat(date) - implant).days
        where = f"in {csv_path}" if csv_path else "(no description CSV given)"
        raise KeyError(f"session {session}: date {date} not found {where}; pass --implant_date to compute it")

    return lookup


def _phoneme_list(seq: Any, where: str) -> list[str]:
    """Phoneme symbols with SIL spelled ``SIL`` (the evaluator's printout used ``' | '``)."""
    out = [SIL if str(p).strip() in ("|", SIL) else str(p).strip() for p in seq]
    bad = [p for p in out if p not in _SYMBOLS]
    if bad:
        raise PklFormatError(f"{where}: unknown phoneme(s) {bad[:5]}: expected ARPAbet symbols or SIL")
    return out


def results_to_copytask(results: Mapping[str, Any],
                        post_implant_day_of_session: Callable[[str], int] | Mapping[str, int],
                        vocab_size_of_corpus: Callable[[str], int] = vocab_size_of_corpus,
                        lexicon: Lexicon | None = None, source: str = "results",
                        text_norm: str = DEFAULT_TEXT_NORM) -> dict:
    """Per-trial evaluation results -> a ``t15_copyTask.pkl``-format dict (validated).

    * ``cue_sentence`` / ``decoded_sentence``: the label and the LM output after the WER normalisation
      ``text_norm`` (:func:`normalize_for_wer`), so the notebook's plain whitespace split gives the
      evaluator's WER.
    * ``cue_sentence_phonemes``: the trial's label phonemes (``true_phonemes``, what the model was
      trained and scored against) when present, else the lexicon's phonemes of the label.
    * ``decoded_phonemes_raw``: ``greedy_phonemes`` when present, else the greedy CTC decode of ``logits``.
    * ``decoded_sentence_phonemes``: the lexicon's phonemes of the decoded sentence.
    """
    require_keys(results, REQUIRED_RESULT_KEYS, source)
    present = tuple(k for k in (*REQUIRED_RESULT_KEYS, *OPTIONAL_RESULT_KEYS) if k in results)
    n = check_parallel(results, present, source)
    day_of = (post_implant_day_of_session.__getitem__ if isinstance(post_implant_day_of_session, Mapping)
              else post_implant_day_of_session)
    keys = ("cue_sentence", "cue_sentence_phonemes", "decoded_phonemes_raw", "decoded_sentence",
            "decoded_sentence_phonemes", "decoded_logits", "post_implant_day", "vocab_size",
            "session", "block_num", "trial_num", "corpus")
    out: dict[str, list] = {k: [] for k in keys}
    skipped = 0
    for i in range(n):
        label = results["sentence_label"][i]
        if label is None:
            skipped += 1
            continue
        where = f"{source}: trial {i} ({results['session'][i]})"
        logits = np.asarray(results["logits"][i], dtype=np.float32)
        if logits.ndim == 3 and logits.shape[0] == 1:
            logits = logits[0]
        if logits.ndim != 2 or logits.shape[1] != N_CLASSES:
            raise PklFormatError(f"{where}: logits have shape {logits.shape}, expected [P, {N_CLASSES}] (LM order)")
        cue = normalize_for_wer(str(label), text_norm)
        decoded = normalize_for_wer(str(results["pred_sentence"][i] or ""), text_norm)
        true_ph = results["true_phonemes"][i] if "true_phonemes" in results else None
        greedy = results["greedy_phonemes"][i] if "greedy_phonemes" in results else None
        session = str(results["session"][i])
        corpus = str(results["corpus"][i])
        try:
            day = int(day_of(session))
        except KeyError as exc:
            raise KeyError(f"{where}: no post-implant day for session {session} ({exc.args[0]})") from None
        out["cue_sentence"].append(cue)
        out["cue_sentence_phonemes"].append(_phoneme_list(true_ph, f"{where}: true_phonemes") if true_ph is not None
                                            else sentence_to_phonemes(cue, lexicon)[0])
        out["decoded_phonemes_raw"].append(_phoneme_list(greedy, f"{where}: greedy_phonemes") if greedy is not None
                                           else logits_to_phonemes(logits))
        out["decoded_sentence"].append(decoded)
        out["decoded_sentence_phonemes"].append(sentence_to_phonemes(decoded, lexicon)[0])
        out["decoded_logits"].append(logits)
        out["post_implant_day"].append(day)
        out["vocab_size"].append(int(vocab_size_of_corpus(corpus)))
        out["session"].append(session)
        out["block_num"].append(results["block_num"][i] if "block_num" in results else None)
        out["trial_num"].append(results["trial_num"][i] if "trial_num" in results else None)
        out["corpus"].append(corpus)
    if skipped:
        log.warning("%s: skipped %d of %d trials without a sentence label (test split)", source, skipped, n)
    if not out["cue_sentence"]:
        raise PklFormatError(f"{source}: no trial has a sentence_label: evaluate the val split "
                             "(evaluate_model.py --eval_type val) to get scorable trials")
    data: dict[str, Any] = dict(out)
    data["post_implant_day"] = np.asarray(out["post_implant_day"], dtype=np.int64)
    data["vocab_size"] = np.asarray(out["vocab_size"], dtype=np.int64)
    return validate_copy_task(data, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert evaluate_model.py --results_pkl output into t15_copyTask.pkl format (Figure 2).")
    parser.add_argument("--results", type=Path, required=True, help="per-trial results pickle of an evaluation run")
    parser.add_argument("--csv", type=Path, default=None,
                        help="block description CSV (Date -> Post-implant day), e.g. "
                             "data/t15_copyTaskData_description.csv")
    parser.add_argument("--implant_date", default=None,
                        help=f"YYYY-MM-DD; post-implant day = session date - this (T15: {T15_IMPLANT_DATE}); "
                             "used for sessions the CSV lacks")
    parser.add_argument("--out", type=Path, default=Path("data/t15_copyTask.pkl"), help="output pickle")
    parser.add_argument("--text_norm", choices=sorted(TEXT_NORMS), default=DEFAULT_TEXT_NORM,
                        help="WER text normalisation of both sentences (as evaluate_model.py; default: %(default)s)")
    parser.add_argument("--synthetic", action="store_true",
                        help="mark the output as synthetic (figures then say so in their titles)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.csv is None and args.implant_date is None:
        parser.error("give --csv and/or --implant_date to get post-implant days")
    try:
        results = read_pickle(args.results, "evaluation results (evaluate_model.py --results_pkl)")
        data = results_to_copytask(results, day_lookup(args.csv, args.implant_date), source=str(args.results),
                                   text_norm=args.text_norm)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 1
    if args.synthetic:
        data["synthetic"] = True
    write_pickle(data, args.out)
    days = sorted(set(data["post_implant_day"].tolist()))
    log.info("wrote %s: %d trials over %d post-implant days (%s)", args.out, len(data["cue_sentence"]),
             len(days), ", ".join(map(str, days)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
