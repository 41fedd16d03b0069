"""Orchestration: plan -> sentences -> neural features -> HDF5 files, CSV and LM text, streamed.

Memory stays bounded by one block: each block is synthesised, z-scored and handed trial by trial
to background threads that each run :func:`nejm_b2txt_utils.t15_hdf5.write_trials` (atomic: temp
file + rename) on one of the session's split files through a small queue. Every random stream is
seeded by ``(seed, post-implant day, block, purpose)``, so a session's data does not depend on the
preset or on which sessions came before it: ``--max_sessions N`` writes a prefix of the full run.

Val and test come from the Val/Test blocks: even trials of a block go to ``data_val.hdf5``, odd ones
to ``data_test.hdf5`` (no labels), so sessions with a single Val/Test block still have both.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nejm_b2txt_utils.atomic_io import atomic_write_text
from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.description_csv import CSV_NAME, write_description_csv
from nejm_b2txt_utils.lexicon import sentence_to_phonemes
from nejm_b2txt_utils.phonemes import phonemes_to_model_ids
from nejm_b2txt_utils.synthetic.neural import NeuralParams, SessionEncoder, normalise_block, plan_timing
from nejm_b2txt_utils.synthetic.sentences import lm_corpus_sentences, make_sentence
from nejm_b2txt_utils.synthetic.sessions import PRESETS, Block, SessionPlan, preset_plan
from nejm_b2txt_utils.t15_hdf5 import Trial, ctc_min_frames, data_file_path, n_output_frames, write_trials

log = logging.getLogger(__name__)

LM_CORPUS_NAME = "lm_corpus.txt"
DATA_SUBDIR = "hdf5_data_final"
_DONE = object()


class _SplitWriter:
    """Feeds one ``write_trials`` call (in a thread) from a bounded queue, so several files of a
    session can be filled at once while each stays atomic."""

    def __init__(self, path: Path, with_labels: bool, maxsize: int = 4):
        self.path = path
        self.count = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, args=(with_labels,), daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[Trial]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self, with_labels: bool) -> None:
        try:
            self.count = write_trials(self.path, self._items(), with_labels=with_labels)
        except BaseException as exc:  # reported to the producer by put()/close()
            self.error = exc

    def _send(self, item) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        if self.error is not None:
            raise RuntimeError(f"{self.path}: writing failed: {self.error}") from self.error

    def put(self, trial: Trial) -> None:
        self._send(trial)

    def close(self, abort: BaseException | None = None) -> int:
        """Finish the file (rename into place), or with ``abort`` make ``write_trials`` drop it."""
        if abort is not None:
            if self._thread.is_alive():
                self._queue.put(abort)
            self._thread.join()
            return self.count
        self._send(_DONE)
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"{self.path}: writing failed: {self.error}") from self.error
        return self.count


def block_sentences(plan: SessionPlan, block: Block, seed: int, max_words: int | None = None) -> list[str]:
    """The block's sentences (their own random stream, so they can be listed without the features)."""
    text_rng = np.random.default_rng([seed, plan.post_implant_day, block.block_num, 1])
    return [make_sentence(block.corpus, text_rng, max_words) for _ in range(block.n_sentences)]


def block_trials(plan: SessionPlan, block: Block, encoder: SessionEncoder, seed: int,
                 max_words: int | None = None) -> Iterator[tuple[Trial, float]]:
    """The block's trials (features z-scored over the block) with each trial's words per minute."""
    neural_rng = np.random.default_rng([seed, plan.post_implant_day, block.block_num, 2])
    raw, meta = [], []
    for sentence in block_sentences(plan, block, seed, max_words):
        phonemes, _cleaned = sentence_to_phonemes(sentence)
        ids = phonemes_to_model_ids(phonemes)
        timing = plan_timing(ids, neural_rng, encoder.params)
        needed = ctc_min_frames(ids)
        while n_output_frames(timing.n_bins) < needed:  # CTC must be able to align the labels
            timing.n_bins += 4
        raw.append(encoder.raw_features(timing, neural_rng))
        meta.append((sentence, ids, timing.words_per_minute))
    for trial_num, (feats, (sentence, ids, wpm)) in enumerate(zip(normalise_block(raw), meta)):
        yield Trial(input_features=feats, session=plan.session, block_num=block.block_num,
                    trial_num=trial_num, seq_class_ids=np.asarray(ids, dtype=np.int32),
                    transcription=sentence, sentence_label=sentence), wpm


def _write_session(plan: SessionPlan, data_dir: Path, seed: int, params: NeuralParams,
                   max_words: int | None, bar: tqdm, stats: dict) -> list[str]:
    """Write one session's files; returns its val/test sentences."""
    encoder = SessionEncoder(seed, plan.post_implant_day, params)
    has_valtest = any(b.split == "Val/Test" for b in plan.blocks)
    writers = {"train": _SplitWriter(data_file_path(data_dir, plan.session, "train"), True)}
    if has_valtest:
        writers["val"] = _SplitWriter(data_file_path(data_dir, plan.session, "val"), True)
        writers["test"] = _SplitWriter(data_file_path(data_dir, plan.session, "test"), False)
    held_out: list[str] = []
    try:
        for block in plan.blocks:
            for trial, wpm in block_trials(plan, block, encoder, seed, max_words):
                if block.split == "Train":
                    split = "train"
                else:
                    split = "val" if trial.trial_num % 2 == 0 else "test"
                    held_out.append(trial.sentence_label)
                writers[split].put(trial)
                stats["trials"][split] += 1
                stats["bins"] += trial.n_time_steps
                stats["wpm"].append(wpm)
                bar.update(1)
    except BaseException as exc:
        for w in writers.values():
            w.close(abort=exc)
        raise
    for w in writers.values():
        w.close()
    return held_out


def generate(preset: str, out_dir: str | os.PathLike, seed: int = 0, sessions: int | None = None,
             progress: bool = True, params: NeuralParams | None = None) -> dict:
    """Write synthetic T15 data for ``preset`` (tiny/small/hard/full) under ``out_dir``.

    Layout: ``out_dir/hdf5_data_final/<session>/data_{train,val,test}.hdf5``,
    ``out_dir/t15_copyTaskData_description.csv`` (one row per written block) and
    ``out_dir/lm_corpus.txt`` (LM text disjoint from every val/test sentence).
    ``sessions`` keeps only the first N sessions of the preset. Returns a summary dict.
    """
    start = time.time()
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r}: expected one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    plans = preset_plan(preset)
    if sessions is not None:
        if sessions < 1:
            raise ConfigError(f"sessions: expected a positive number, got {sessions}")
        plans = plans[:sessions]
    params = params or NeuralParams(**dict(spec.neural))
    out = Path(out_dir)
    data_dir = out / DATA_SUBDIR
    data_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted({p.name for p in data_dir.iterdir() if p.is_dir()} - {p.session for p in plans})
    if stale:
        log.warning("%s already holds %d session(s) not in this run (e.g. %s); they are left as they are",
                    data_dir, len(stale), stale[0])
    log.info("generating preset=%s seed=%d sessions=%d trials=%d into %s", preset, seed, len(plans),
             sum(b.n_sentences for p in plans for b in p.blocks), out)
    stats = {"trials": {"train": 0, "val": 0, "test": 0}, "bins": 0, "wpm": []}
    held_out: list[str] = []
    total = sum(b.n_sentences for p in plans for b in p.blocks)
    with tqdm(total=total, desc=f"synthetic {preset}", unit="trial", disable=not progress) as bar:
        for plan in plans:
            held_out += _write_session(plan, data_dir, seed, params, spec.max_words, bar, stats)
    csv_path = out / CSV_NAME
    write_description_csv([row for p in plans for row in p.csv_rows()], csv_path)
    lm_path = out / LM_CORPUS_NAME
    atomic_write_text(lm_path, "".join(line + "\n" for line in lm_corpus_sentences(spec.lm_sentences, seed,
                                                                                    exclude=held_out)))
    files = [data_file_path(data_dir, p.session, s) for p in plans for s in ("train", "val", "test")]
    n_bytes = sum(f.stat().st_size for f in files if f.exists()) + csv_path.stat().st_size + lm_path.stat().st_size
    return {
        "preset": preset,
        "seed": seed,
        "out_dir": str(out),
        "data_dir": str(data_dir),
        "csv": str(csv_path),
        "lm_corpus": str(lm_path),
        "sessions": [p.session for p in plans],
        "trials": dict(stats["trials"]),
        "total_bins": int(stats["bins"]),
        "words_per_minute": round(float(np.mean(stats["wpm"])), 1) if stats["wpm"] else 0.0,
        "bytes": int(n_bytes),
        "wall_s": round(time.time() - start, 2),
    }
