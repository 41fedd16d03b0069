"""Evaluation results: the resumable per-trial store, the per-corpus table, the CSV and the results pkl.

The store is an append-only JSONL file in the output folder. Line 1 is a header describing the run
(checkpoint, data, eval type, LM mode); every other line is one finished trial, flushed and fsynced
before the next trial starts. A restarted evaluation skips the trials already in the file, so each
trial is decoded exactly once even when the LM server dies half-way.
"""

from __future__ import annotations

import base64
import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nejm_b2txt_utils.atomic_io import atomic_open, atomic_write_pickle
from nejm_b2txt_utils.metrics import aggregate_error_rate, word_error_rate
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM, submission_text

FORMAT = "b2txt-eval-partial/1"


class PartialResultsError(ValueError):
    """The partial-results file belongs to another run or is corrupt."""


def trial_id(session: str, block_num: int, trial_num: int, key: str) -> str:
    """The resume key: session, block and trial numbers (plus the HDF5 group, should those repeat)."""
    return f"{session}/{int(block_num)}/{int(trial_num)}/{key}"


def encode_array(arr: np.ndarray) -> dict:
    a = np.ascontiguousarray(arr, dtype=np.float32)
    return {"shape": list(a.shape), "float32_b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(obj["float32_b64"]), dtype=np.float32).reshape(obj["shape"])


class PartialResults:
    """Append-only JSONL of finished trials, keyed by :func:`trial_id`."""

    def __init__(self, path: str | os.PathLike, header: dict, restart: bool = False, where_flag: str = "--out_dir"):
        """Open (resume) or start the file.

        Args:
            path: the JSONL file. header: what the run's results depend on (a resumed file must match).
            restart: discard an existing file. where_flag: the caller's flag naming the file (for the advice).

        Raises:
            PartialResultsError: ``path`` (or its folder) is not what it must be (a folder where the file goes, a
                file where its folder goes), or the file is from another run or corrupt: one line.
        """
        self.path = Path(path)
        self.where_flag = where_flag  # the caller's flag that names another file (the error's advice)
        self.header = {"format": FORMAT, **header}
        self.records: dict[str, dict] = {}
        if os.path.lexists(self.path) and not self.path.is_file():
            raise PartialResultsError(f"{self.path}: is a folder (or not a regular file), expected the JSONL file "
                                      f"of results; use another {where_flag}")
        parent = next((p for p in self.path.parents if os.path.lexists(p)), None)
        if parent is not None and not parent.is_dir():
            raise PartialResultsError(f"{self.path}: {parent} is a file, expected a folder; use another {where_flag}")
        if restart and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as fh:
                fh.write(json.dumps({"header": self.header}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def _load(self) -> None:
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PartialResultsError(f"{self.path}: unreadable ({exc}); use another {self.where_flag}") from None
        try:
            header = json.loads(lines[0])["header"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if header != self.header:
            diff = sorted(k for k in set(self.header) | set(header or {})
                          if (header or {}).get(k) != self.header.get(k))
            raise PartialResultsError(
                f"{self.path}: partial results from a different evaluation (differs in {diff}); "
                f"pass --restart to discard them or use another {self.where_flag}")
        for n, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                if n == len(lines):  # a line cut short by a kill: that trial is simply redone
                    break
                raise PartialResultsError(f"{self.path}: line {n} is not valid JSON ({exc})") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise PartialResultsError(f"{self.path}: line {n}: expected a JSON object with a string 'id'; "
                                          f"pass --restart to discard the file or use another {self.where_flag}")
            self.records[rec["id"]] = rec
        # Drop a torn last line so later appends start on a clean line; atomically (a kill here lost saved trials).
        with atomic_open(self.path, "w") as fh:
            fh.write(json.dumps({"header": self.header}) + "\n")
            for rec in self.records.values():
                fh.write(json.dumps(rec) + "\n")

    def __contains__(self, tid: str) -> bool:
        return tid in self.records

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: dict) -> None:
        """Persist one finished trial (flushed and fsynced) before returning."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records[record["id"]] = record


def per_corpus_table(records: list[dict], with_wer: bool, text_norm: str = DEFAULT_TEXT_NORM) -> tuple[list[dict], str]:
    """Aggregate PER (and WER) with bootstrap 95 % CIs per corpus and overall; returns rows and text.

    ``text_norm`` names the WER normalisation (``nejm_b2txt_utils.text.TEXT_NORMS``); the text says which.
    """
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["corpus"] or "unknown", []).append(r)
    rows = []
    for name, recs in [*sorted(groups.items()), ("all", records)]:
        row = {"corpus": name, "n_trials": len(recs)}
        labelled = [r for r in recs if r["true_phonemes"] is not None]
        if labelled:
            per = aggregate_error_rate([r["true_phonemes"] for r in labelled], [r["greedy_phonemes"] for r in labelled])
            row.update(PER=per.rate, PER_ci=(per.ci_low, per.ci_high))
        if with_wer and labelled:
            wer = word_error_rate([r["sentence_label"] for r in labelled], [r["pred_sentence"] for r in labelled],
                                  text_norm=text_norm)
            row.update(WER=wer.rate, WER_ci=(wer.ci_low, wer.ci_high))
        rows.append(row)

    def fmt(row: dict, key: str) -> str:
        if key not in row:
            return "-"
        lo, hi = row[key + "_ci"]
        return f"{100 * row[key]:6.2f} [{100 * lo:5.2f}, {100 * hi:5.2f}]"

    lines = [f"WER after text normalisation '{text_norm}' (evaluate_model.py --text_norm)"] if with_wer else []
    lines.append(f"{'corpus':<14}{'n':>6}  {'PER % [95% CI]':<24}{'WER % [95% CI]':<24}")
    for row in rows:
        lines.append(f"{row['corpus']:<14}{row['n_trials']:>6}  {fmt(row, 'PER'):<24}{fmt(row, 'WER'):<24}")
    return rows, "\n".join(lines)


def write_submission_csv(texts: Iterable[str], path: str | os.PathLike, words: bool = True) -> Path:
    """``id,text`` with ids 0..N-1 in processing order, written atomically; with ``words`` each text is
    :func:`~nejm_b2txt_utils.text.submission_text` (lower-case letters, spaces, apostrophes: the LM's
    ``bas-reliefs`` and ``a.m.`` reached the Kaggle CSV); ``words=False`` keeps them (greedy phonemes)."""
    path = Path(path)
    if words:
        texts = [submission_text(t) for t in texts]
    with atomic_open(path, "w") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "text"])
        for i, text in enumerate(texts):
            w.writerow([i, text])
    return path


RESULT_FIELDS = ("session", "date", "block_num", "trial_num", "corpus", "sentence_label", "pred_sentence",
                 "greedy_phonemes", "true_phonemes", "lm_partial", "lm_candidates")


def write_results_pkl(records: list[dict], path: str | os.PathLike, remote_lm_args: dict | None = None) -> Path:
    """Dict of parallel per-trial lists; ``logits`` are LM-order float32 ``[P, 41]`` arrays; ``remote_lm_args``
    (when decoded by an LM server): the server's arguments, e.g. the ``acoustic_scale`` its scores used."""
    out: dict = {k: [r.get(k) for r in records] for k in RESULT_FIELDS}
    out["logits"] = [decode_array(r["logits"]) for r in records]
    if remote_lm_args is not None:
        out["remote_lm_args"] = dict(remote_lm_args)
    return atomic_write_pickle(path, out)
