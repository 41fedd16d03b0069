"""Where the real-time decoder's 20 ms bins come from: HDF5 trials replayed, or a Redis stream.

A source is an iterator of :class:`Bin` and :class:`SentenceEnd` events. ``Bin.arrival`` is the
``time.perf_counter()`` at which the bin became available (the latencies are measured from it).

Redis stream :data:`BIN_STREAM` (what a lab's acquisition system writes, one entry per bin): field
``features`` = C float32 values (C-order bytes), optional ``day`` (day-layer index, default 0) and
``sentence`` (an id); an entry with ``sentence_end`` = 1 (and no features) closes the sentence (the
trial end: the decoder's fallback when no end of speech was detected), with an optional ``label`` = the
prompted sentence of a copy task (also accepted on any bin: a sentence finished by the end-of-speech rule
before its trial-end entry keeps a label sent with its first bin; kept for online recalibration).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model_training.realtime import Bin, SentenceEnd, SourceError
from nejm_b2txt_utils.t15_hdf5 import T15File, T15FormatError, data_file_path

log = logging.getLogger(__name__)

BIN_MS = 20.0
#: The stream a lab's acquisition system writes bins to.
BIN_STREAM = "realtime_neural_bins"


def replay_hdf5(data_dir: str | Path, sessions: list[str], split: str = "val", speed: float = 1.0,
                max_trials: int | None = None, feature_subset: list[int] | None = None,
                n_features: int | None = None) -> Iterator[Bin | SentenceEnd | SourceError]:
    """Replay the trials of ``data_<split>.hdf5`` of each session bin by bin.

    A trial is not validated as a whole: a NaN/Inf bin reaches the decoder, which reports and skips that bin
    only (as a live acquisition system's bad bin would be); an unreadable trial or one of the wrong width is one
    :class:`SourceError` and the replay goes on with the next trial.

    Args:
        data_dir: the HDF5 root (``<data_dir>/<session>/data_<split>.hdf5``).
        sessions: the model's sessions (their order gives the day index).
        split: ``val`` or ``test`` (or ``train``).
        speed: 1 = real time (one bin every 20 ms), 2 = twice as fast, 0 = as fast as the decoder takes them.
        max_trials: stop after this many trials (all sessions together).
        feature_subset: the model's ``dataset.feature_subset`` channels, if any.
        n_features: the width the model reads (after ``feature_subset``); None: not checked here.

    Yields:
        :class:`Bin` for every bin, then a :class:`SentenceEnd` per trial (id ``session/block/trial``);
        a :class:`SourceError` for a trial that cannot be replayed.

    Raises:
        FileNotFoundError: no session has the split.
    """
    paths = [(day, data_file_path(data_dir, s, split)) for day, s in enumerate(sessions)]
    paths = [(day, p) for day, p in paths if p.is_file()]
    if not paths:
        raise FileNotFoundError(f"{data_dir}: no data_{split}.hdf5 for any of the model's {len(sessions)} sessions")
    n = 0
    clock = time.perf_counter()
    for day, path in paths:
        with T15File(path, n_features=None, validate=False, patching=None) as f:
            for key in f.keys:
                if max_trials is not None and n >= max_trials:
                    return
                try:
                    trial = f.read_trial(key)
                    feats = np.asarray(trial.input_features)
                    if feats.ndim != 2 or (feature_subset and max(feature_subset) >= feats.shape[1]):
                        raise T15FormatError(f"{path}: {key}: input_features: shape {list(feats.shape)} has not "
                                             "the model's channels")
                    feats = feats if not feature_subset else feats[:, list(feature_subset)]
                    if n_features is not None and feats.shape[1] != n_features:
                        raise T15FormatError(f"{path}: {key}: input_features: expected {n_features} channels, got "
                                             f"{feats.shape[1]}")
                except (T15FormatError, KeyError, OSError) as exc:
                    msg = str(exc).removeprefix(f"{path}: ").removeprefix(f"{key}: ")
                    yield SourceError(f"{path} {key}", f"{msg}; trial skipped")
                    n += 1
                    continue
                sid = f"{trial.session}/{trial.block_num}/{trial.trial_num}"
                clock = time.perf_counter()
                for i, row in enumerate(feats):
                    if speed > 0:
                        due = clock + (i + 1) * BIN_MS / 1000.0 / speed  # bin i is complete at its end
                        delay = due - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        arrival = max(due, time.perf_counter()) if delay > 0 else due
                    else:
                        arrival = time.perf_counter()
                    yield Bin(row, day, sid, arrival, f"{path} {key} bin {i}", trial.sentence_label)
                yield SentenceEnd(sid, trial.sentence_label, time.perf_counter())
                n += 1


def redis_bins(r, stream: str = BIN_STREAM, start: str | bytes = "$", block_ms: int = 200,
               idle_timeout_s: float | None = None) -> Iterator[Bin | SentenceEnd]:
    """Read bins from a Redis stream as the acquisition system writes them.

    A lost connection (Redis restarting) is retried with backoff; entries written while it was down are
    lost with the server's memory, finished sentences are not (the decoder has saved them).

    Args:
        r: a redis-py client.
        stream: the stream name.
        start: ``$`` (only new entries) or an entry id to read after (``0`` = from the beginning).
        block_ms: one XREAD's block (ms).
        idle_timeout_s: stop after this long without an entry (None: never).

    Yields:
        :class:`Bin` / :class:`SentenceEnd` events; a bin whose ``features`` field is missing or not float32
        bytes, or whose ``day`` is not an int (kept as the string), is yielded as is (the decoder reports it and
        goes on). An entry without a ``sentence`` field has ``sentence=None``: it belongs to the open sentence
        (a ``sentence_end`` without one ends the open sentence).
    """
    import redis

    last: str | bytes = start
    if last == "$":  # resolve now, so that a reconnect does not skip entries written in between
        info = r.xinfo_stream(stream) if r.exists(stream) else None
        last = info["last-generated-id"] if info else "0-0"
    idle_since = time.monotonic()
    backoff = 0.1
    while True:
        try:
            resp = r.xread({stream: last}, count=64, block=block_ms)
            backoff = 0.1
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("bin stream %s: redis connection lost (%s); retrying in %.1f s", stream, exc, backoff)
            time.sleep(backoff)
            backoff = min(2 * backoff, 2.0)
            continue
        now = time.perf_counter()
        if not resp:
            if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                return
            continue
        idle_since = time.monotonic()
        for entry_id, fields in resp[0][1]:
            last = entry_id
            sid = fields[b"sentence"].decode(errors="replace") if b"sentence" in fields else None  # None: the open one
            if fields.get(b"sentence_end", b"0") not in (b"0", b""):
                label = fields.get(b"label")
                yield SentenceEnd(sid, label.decode(errors="replace") if label else None, now)
                continue
            payload = fields.get(b"features", b"")
            where = f"{stream} entry {entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"
            values = (np.frombuffer(payload, dtype=np.float32) if len(payload) % 4 == 0
                      else np.full(len(payload) // 4 + 1, np.nan, dtype=np.float32))
            raw_day = fields.get(b"day", b"0").decode(errors="replace")
            try:
                day = int(raw_day)
            except ValueError:
                day = raw_day  # not an int: the decoder reports it and skips the bin
            label = fields.get(b"label")
            yield Bin(values, day, sid, now, where, label.decode(errors="replace") if label else None)


def write_bin(r, values: np.ndarray, sentence: str, day: int = 0, stream: str = BIN_STREAM,
              label: str | None = None) -> None:
    """What an acquisition system does per bin: XADD ``features`` (float32 bytes), ``day``, ``sentence`` (and the
    prompted sentence ``label`` of a copy task, on any bin of the sentence, typically its first)."""
    r.xadd(stream, {"features": np.ascontiguousarray(values, dtype=np.float32).tobytes(), "day": int(day),
                    "sentence": sentence, **({"label": label} if label else {})})


def write_sentence_end(r, sentence: str, stream: str = BIN_STREAM, label: str | None = None) -> None:
    """Mark the end of a sentence (trial) on the bin stream; ``label``: the prompted sentence (copy task), if any."""
    r.xadd(stream, {"sentence_end": 1, "sentence": sentence, **({"label": label} if label else {})})
