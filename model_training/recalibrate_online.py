"""Recalibrate beside the real-time decoder: one update after each finished sentence, swapped in between sentences.

``python model_training/recalibrate_online.py --model_path M --session t15.2025.05.01 --labels prompted
--out runs/recal`` reads the sentences ``decode_realtime.py --publish_sentences`` writes to
``realtime_finished_sentences``, labels each one, and from the ``--min_sentences``-th usable sentence on runs one
``calibration.Calibrator`` update per new sentence on all of the session's usable sentences so far (the new
day's layer, or with ``--update day_layer+gru`` also the GRU with earlier sessions replayed; clipping, early
stop). A model that does not know ``--session`` gets its day first (a copy of the nearest earlier day).

Labels: ``prompted`` = the sentence the participant was shown (copy task; the stream's ``label``, phonemes from
the lexicon with G2P for unknown words); ``decoded`` = the LM's final text (CORP-style), used only when the
decoder's confidence is at least ``--min_confidence`` and every word is in the CMU dictionary (a decoder run
with ``--lm none`` publishes greedy phonemes: skipped). Skipped sentences (empty, out of vocabulary, low
confidence, no label, phonemes, another session, malformed or unfit for the model: another channel count, no
output frame, too short for CTC, NaN/Inf/absurd features or confidence) are counted, malformed ones with one
``error:`` line; an entry whose update still raises is dropped the same way (``bad_entries`` in the state, so a
rerun does not rebuild it) and the loop goes on.

Each checkpoint is written beside the others as ``<out>/recal_NNNN/`` (built in a hidden temporary folder and
renamed into place, never over the one in use), then announced on ``decoderControl:stream`` / ``newModelPath``.
Only the ``--keep`` newest checkpoints stay on disk. ``<out>/recalibration.json`` (atomic) holds the last stream entry consumed, the checkpoint in use, the skip
counts and one row per update: killed at any point, a rerun continues from there, and the decoder keeps the
previously published checkpoint. ``--rolling_zscore N`` normalises each sentence with the statistics of the
N sentences before it, as the decoder's ``--zscore_sentences N`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from model_training.calibration import (  # noqa: E402
    CONTROL_STREAM,
    NEW_MODEL_KEY,
    UPDATE_MODES,
    CalibrationSettings,
    Calibrator,
    PseudoLabelStats,
    Sentence,
    pseudo_label_from_sentence,
    publish_model_path,
    read_sentences,
)
from model_training.checkpoint import CheckpointError, load_trained_model  # noqa: E402
from model_training.finished_sentences import FinishedSentence, check_fits_model, parse_entry  # noqa: E402
from nejm_b2txt_utils.atomic_io import atomic_write_json, publish_dir  # noqa: E402
from nejm_b2txt_utils.causal_features import RollingZScore  # noqa: E402
from nejm_b2txt_utils.cli_errors import (  # noqa: E402
    ConfigError,
    check_flags,
    check_output_folder,
    exit_2_on_bad_input,
)
from nejm_b2txt_utils.lexicon import default_lexicon, sentence_to_model_ids  # noqa: E402
from nejm_b2txt_utils.redis_protocol import FINISHED_SENTENCE_STREAM  # noqa: E402
from nejm_b2txt_utils.t15_hdf5 import T15FormatError, data_file_path  # noqa: E402
from nejm_b2txt_utils.text import normalize_text  # noqa: E402

log = logging.getLogger("recalibrate_online")
STATE_FILE = "recalibration.json"
CHECKPOINT_RE = re.compile(r"^recal_(\d{4,})$")
#: Why a finished sentence was not used (the summary's keys beside PseudoLabelStats' own).
EXTRA_SKIPS = ("skipped_no_label", "skipped_phoneme_text", "skipped_other_session", "skipped_bad_entry",
               "skipped_too_short")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = CalibrationSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="the model the decoder starts with (checkpoint/args.yaml, "
                                                       "best_checkpoint)")
    p.add_argument("--session", required=True, help="the session being decoded, e.g. t15.2025.05.01")
    p.add_argument("--labels", choices=("prompted", "decoded"), default="prompted",
                   help="prompted: the sentence shown (copy task); decoded: the LM's final text behind the "
                        "confidence gate (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder of the checkpoints recal_NNNN/ and recalibration.json")
    p.add_argument("--min_sentences", type=int, default=5,
                   help="first update once this many usable sentences exist (default: %(default)s)")
    p.add_argument("--min_confidence", type=float, default=0.5,
                   help="--labels decoded: skip sentences whose greedy confidence is below this (default: "
                        "%(default)s)")
    p.add_argument("--update", choices=UPDATE_MODES, default=d.update,
                   help="day_layer: the session's input layer; day_layer+gru: also the GRU, earlier sessions "
                        "replayed from --replay_data_dir (default: %(default)s)")
    p.add_argument("--max_steps", type=int, default=20, help="optimizer steps per update at most (default: 20)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="sentences per step (default: %(default)s)")
    p.add_argument("--replay_fraction", type=float, default=d.replay_fraction,
                   help="replayed share of each batch, day_layer+gru only (default: %(default)s)")
    p.add_argument("--replay_data_dir", default=None, help="HDF5 root of the earlier sessions' training trials")
    p.add_argument("--replay_per_session", type=int, default=32, help="trials per earlier session (default: 32)")
    p.add_argument("--grad_clip", type=float, default=d.grad_clip, help="gradient norm clip, 0 = off (default: 10)")
    p.add_argument("--stop_loss", type=float, default=d.stop_loss,
                   help="end an update once the session's CTC loss per phoneme is below this (default: %(default)s)")
    p.add_argument("--rolling_zscore", type=int, default=0,
                   help="normalise each sentence by the N before it (match the decoder's --zscore_sentences; "
                        "0: off) (default: %(default)s)")
    p.add_argument("--stream", default=FINISHED_SENTENCE_STREAM, help="the finished-sentence stream")
    p.add_argument("--redis_ip", default="localhost", help="Redis host (password: $REDIS_PASSWORD if set)")
    p.add_argument("--redis_port", type=int, default=6379)
    p.add_argument("--redis_retry_s", type=float, default=60.0,
                   help="keep retrying an unreachable Redis this long before stopping (default: %(default)s)")
    p.add_argument("--idle_timeout", type=float, default=None,
                   help="stop after this many seconds without a new sentence (default: run until Ctrl-C)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads: 1 leaves the other cores to the decoder (default: %(default)s)")
    p.add_argument("--nice", type=int, default=10,
                   help="raise this process's niceness by this much so the decoder wins the CPU (default: 10)")
    p.add_argument("--keep", type=int, default=3,
                   help="keep the newest N checkpoints in --out, remove older ones (0: keep all) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    args = p.parse_args(argv)
    check_flags(args, {"min_sentences": 1, "min_confidence": 0, "max_steps": 1, "batch_size": 1,
                       "replay_per_session": 0, "rolling_zscore": 0, "idle_timeout": 0.001, "redis_retry_s": 0,
                       "keep": 0, "threads": 1, "nice": 0})
    if not args.min_confidence <= 1:
        raise ConfigError(f"--min_confidence: expected a value in [0, 1], got {args.min_confidence}")
    check_output_folder("--out", args.out)  # a file there or above it: one line (was FileExistsError)
    return args


# ---------------------------------------------------------------------------------------------- state
def load_state(out: Path) -> dict:
    """``<out>/recalibration.json`` (a fresh state when absent); hidden temporary folders of a killed run removed.

    Raises:
        ConfigError: the file is unreadable or its checkpoint folder is gone.
    """
    for tmp in out.glob(".recal_*"):
        shutil.rmtree(tmp, ignore_errors=True)
    path = out / STATE_FILE
    fresh = {"last_id": "0-0", "checkpoint": None, "sentences_read": 0, "updates": [], "bad_entries": [],
             **{k: 0 for k in (*PseudoLabelStats.__dataclass_fields__, *EXTRA_SKIPS)}}
    if not os.path.lexists(path):
        return fresh
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # a folder (IsADirectoryError), unreadable, not JSON
        raise ConfigError(f"{path}: unreadable state ({exc}); move it aside to start over") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a JSON object of the recalibration state, got "
                          f"{type(loaded).__name__}; move it aside to start over")
    state = {**fresh, **loaded}
    for key, value in fresh.items():
        want = (str, type(None)) if key == "checkpoint" else type(value)
        if not isinstance(state[key], want) or (want is int and isinstance(state[key], bool)):
            raise ConfigError(f"{path}: field {key!r} is {state[key]!r}, expected a {type(value).__name__}; "
                              "move it aside to start over")
    if state["checkpoint"] and not (out / state["checkpoint"] / "checkpoint" / "best_checkpoint").is_file():
        raise ConfigError(f"{path}: checkpoint {state['checkpoint']!r} is missing in {out}")
    for folder in out.iterdir():  # renamed into place but never recorded nor announced (killed in between)
        m = CHECKPOINT_RE.match(folder.name)
        if m and folder.name != state["checkpoint"] and int(m.group(1)) > int(
                CHECKPOINT_RE.match(state["checkpoint"] or "recal_0000").group(1)):
            shutil.rmtree(folder, ignore_errors=True)
    return state


def next_checkpoint_name(out: Path) -> str:
    """``recal_NNNN`` one above the highest existing."""
    nums = [int(m.group(1)) for f in out.iterdir() if (m := CHECKPOINT_RE.match(f.name))]
    return f"recal_{max(nums, default=0) + 1:04d}"


# ---------------------------------------------------------------------------------------------- labels
class Labeller:
    """Finished sentence -> model-order label ids, or None with the reason counted in ``counts``."""

    def __init__(self, mode: str, session: str, min_confidence: float, counts: dict):
        self.mode, self.session, self.min_confidence, self.counts = mode, session, min_confidence, counts
        self.lexicon = default_lexicon()

    def __call__(self, fs: FinishedSentence) -> np.ndarray | None:
        """Label ids ``[L]`` (model order) of ``fs``, or None (the reason counted)."""
        if fs.session != self.session:
            self.counts["skipped_other_session"] += 1
            return None
        if self.mode == "prompted":
            if not normalize_text(fs.label).split():
                self.counts["skipped_no_label"] += 1
                return None
            self.counts["used"] += 1
            return np.asarray(sentence_to_model_ids(fs.label, self.lexicon), dtype=np.int64)
        if fs.text_kind != "words":  # the decoder ran without an LM: greedy phonemes, not a sentence
            self.counts["skipped_phoneme_text"] += 1
            return None
        if normalize_text(fs.text).split() and fs.confidence < self.min_confidence:
            self.counts["skipped_low_confidence"] += 1
            return None
        stats = PseudoLabelStats()
        ids = pseudo_label_from_sentence(fs.text, stats, self.lexicon)
        for key, value in vars(stats).items():
            self.counts[key] += value
        return ids


# ---------------------------------------------------------------------------------------------- the loop
class UpdateFailed(Exception):
    """A Calibrator update raised on the sentences so far (a malformed entry that slipped through the checks)."""


class OnlineRecalibrator:
    """Consumes finished sentences, updates, saves ``recal_NNNN/`` and publishes it (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, client):
        self.args, self.client, self.out = args, client, Path(args.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where one of its folders goes, no permission
            raise ConfigError(f"--out {self.out}: cannot create the folder ({exc.strerror or exc})") from None
        self.state = load_state(self.out)
        start = self.out / self.state["checkpoint"] if self.state["checkpoint"] else Path(args.model_path)
        model, model_args = load_trained_model(start, "cpu")
        settings = CalibrationSettings(args.update, args.lr, args.max_steps, args.batch_size, args.replay_fraction,
                                       args.grad_clip, args.stop_loss, seed=args.seed)
        replay = []
        sessions = list(model_args.dataset.sessions)
        if args.update == "day_layer+gru" and not args.replay_data_dir:
            log.warning("--update day_layer+gru without --replay_data_dir: no earlier sessions are replayed")
        if args.update == "day_layer+gru" and args.replay_data_dir:
            subset = model_args.dataset.get("feature_subset")
            for day, s in enumerate(sessions):
                if s != args.session and data_file_path(args.replay_data_dir, s, "train").is_file():
                    replay += read_sentences(args.replay_data_dir, s, "train", day, args.replay_per_session, subset)
        self.cal = Calibrator(model, model_args, args.session, settings, replay, args.replay_data_dir)
        if args.session not in sessions:
            log.info("%s: day %d added, initialised from %s (day %d)", args.session, self.cal.day,
                     sessions[self.cal.source_day], self.cal.source_day)
        self.zscore = RollingZScore(args.rolling_zscore)
        self.pool: list[Sentence] = []
        self.labeller = Labeller(args.labels, args.session, args.min_confidence, self.state)
        log.info("starting from %s (%d updates so far, stream entry %s)", start, len(self.state["updates"]),
                 self.state["last_id"])
        if self.state["last_id"] != "0-0":
            self._rebuild_pool()
        if self.state["checkpoint"] and not self._announced():  # killed between the state write and the XADD
            log.info("announcing %s (written before the previous run stopped)", self.state["checkpoint"])
            self.announce()

    def _entries(self, after: str, block_ms: int):
        """Up to 16 stream entries after ``after``, in order (waiting up to ``block_ms`` for one)."""
        resp = self._redis(lambda: self.client.xread({self.args.stream: after}, count=16, block=block_ms))
        return resp[0][1] if resp else []

    def _sentence(self, entry_id, fields, labeller: Labeller, quiet: bool = False) -> Sentence | None:
        """Parse and label one entry; the bins normalised as the decoder saw them (rolling z-score)."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        if eid in self.state["bad_entries"]:  # an update failed on it before a restart
            return None
        try:
            fs = parse_entry(entry_id, fields)
            check_fits_model(fs, int(self.cal.args.model.n_input_features), self.cal.patch_size,
                             self.cal.patch_stride)
        except ValueError as exc:
            labeller.counts["skipped_bad_entry"] += 1
            if not quiet:
                print(f"error: {exc}; sentence skipped", file=sys.stderr)  # one line, the run goes on
            return None
        ids = labeller(fs)
        if fs.session != self.args.session:
            return None
        feats = self.zscore.normalise(fs.features)  # (T, C) with the statistics of the sentences before it
        self.zscore.add_sentence(fs.features)
        if ids is None:
            return None
        s = Sentence(feats, ids, self.cal.day, fs.label or fs.text)
        if not self.cal.feasible(s):  # fewer output frames than CTC needs for the label
            labeller.counts["used"] -= 1
            labeller.counts["skipped_too_short"] += 1
            return None
        return s

    def _rebuild_pool(self) -> None:
        """After a restart: the usable sentences up to the last consumed entry (no updates, no counts)."""
        scratch = Labeller(self.args.labels, self.args.session, self.args.min_confidence,
                           {k: 0 for k in self.state if isinstance(self.state[k], int)})
        for entry_id, fields in self._redis(lambda: self.client.xrange(self.args.stream, max=self.state["last_id"])):
            s = self._sentence(entry_id, fields, scratch, quiet=True)
            if s is not None:
                self.pool.append(s)
        if len(self.pool) != self.state["used"]:
            log.warning("%d usable sentences rebuilt from the stream, %d were used before the restart (entries "
                        "trimmed from Redis?)", len(self.pool), self.state["used"])

    def run(self) -> dict:
        """Consume until ``--idle_timeout`` (or Ctrl-C); returns the state/summary."""
        idle_since = time.monotonic()
        while True:
            entries = self._entries(self.state["last_id"], 200)
            if not entries:
                if self.args.idle_timeout is not None and time.monotonic() - idle_since > self.args.idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            for entry_id, fields in entries:
                self.consume(entry_id, fields)
        log.info("summary: %d sentences read, %d used, skipped: %s; %d updates", self.state["sentences_read"],
                 self.state["used"], {k: self.state[k] for k in self.state if k.startswith("skipped_")},
                 len(self.state["updates"]))
        return self.state

    def consume(self, entry_id, fields) -> None:
        """One finished sentence: label it, update once K are usable, save, publish; the state written last (a
        kill before that reads the entry again on restart)."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        counts = {k: v for k, v in self.state.items() if isinstance(v, int)}
        try:
            s = self._sentence(entry_id, fields, self.labeller)
        except Exception as exc:  # noqa: BLE001 -- the last line of defence: one entry never stops the loop
            self.state.update(counts)  # the labeller's partial counts undone
            self._drop(eid, f"could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
            s = None
        self.state["sentences_read"] += 1
        self.state["last_id"] = eid
        if s is not None:
            self.pool.append(s)
            if len(self.pool) >= self.args.min_sentences:
                try:
                    self.update_and_publish(eid)
                    return
                except UpdateFailed as exc:  # the last line of defence: this entry is dropped, the loop goes on
                    self.pool.pop()
                    self.state["used"] -= 1
                    self._drop(eid, f"the update failed ({exc})")
        atomic_write_json(self.out / STATE_FILE, self.state)

    def _drop(self, eid: str, why: str) -> None:
        """Count ``eid`` as a bad entry, record it so a restart does not rebuild it into the pool, say it once."""
        self.state["skipped_bad_entry"] += 1
        self.state["bad_entries"].append(eid)
        print(f"error: {self.args.stream} entry {eid}: {why}; sentence skipped", file=sys.stderr)

    def update_and_publish(self, eid: str) -> None:
        """One Calibrator update on the pool; ``recal_NNNN/`` written whole and renamed into place; the state
        naming it written; only then announced (a restart re-announces a checkpoint the state names)."""
        try:
            res = self.cal.update(self.pool)
        except (RuntimeError, ValueError, IndexError) as exc:  # torch's shape / value errors
            raise UpdateFailed(" ".join(str(exc).split())[:200]) from exc
        name = next_checkpoint_name(self.out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.out))
        try:
            self.cal.save(tmp, stream_entry=eid, n_sentences=len(self.pool))
            publish_dir(tmp, self.out / name, replace=False)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.state["checkpoint"] = name
        self.state["updates"].append({"checkpoint": name, "stream_entry": eid, "sentences": len(self.pool),
                                      "steps": res.steps, "loss_per_phoneme": round(res.loss_per_phoneme, 4),
                                      "seconds": round(res.seconds, 3), "stopped_early": res.stopped_early})
        atomic_write_json(self.out / STATE_FILE, self.state)
        self.announce()
        self.prune(int(CHECKPOINT_RE.match(name).group(1)))
        log.info("%s: %d sentences, %d steps in %.2f s, loss per phoneme %.3f -> published", name, len(self.pool),
                 res.steps, res.seconds, res.loss_per_phoneme)

    def prune(self, newest: int) -> None:
        """Remove the checkpoints older than the ``--keep`` newest (a large model's folders fill a disk in a
        session; the decoder loads the newest announced one)."""
        if self.args.keep <= 0:
            return
        for folder in self.out.iterdir():
            m = CHECKPOINT_RE.match(folder.name)
            if m and int(m.group(1)) <= newest - self.args.keep:
                shutil.rmtree(folder, ignore_errors=True)

    def announce(self) -> None:
        """XADD the state's checkpoint to ``decoderControl:stream`` (retried while Redis is away)."""
        path = self.out / self.state["checkpoint"]
        self._redis(lambda: publish_model_path(self.client, path))

    def _announced(self) -> bool:
        """Whether the control stream's newest entry names the state's checkpoint."""
        last = self._redis(lambda: self.client.xrevrange(CONTROL_STREAM, count=1))
        want = str((self.out / self.state["checkpoint"]).resolve())
        return bool(last) and last[0][1].get(NEW_MODEL_KEY.encode(), b"").decode() == want

    def _redis(self, call):
        """``call()``, retried with backoff for ``--redis_retry_s`` while Redis is unreachable (a restart)."""
        import redis

        deadline, backoff = time.monotonic() + self.args.redis_retry_s, 0.1
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("Redis unreachable (%s); retrying in %.1f s", " ".join(str(exc).split()), backoff)
                time.sleep(backoff)
                backoff = min(2 * backoff, 2.0)


@contextlib.contextmanager
def stop_on_signals():
    """Within: SIGINT and SIGTERM stop the recalibrator as Ctrl-C does (one line, exit 130; the published
    checkpoint stays), also when it was started in the background: a shell's background job (``cmd &``) starts
    with SIGINT ignored, so Python installs no Ctrl-C handler there and a supervisor's SIGINT did nothing (a
    benchmark waited for it in vain). Only in the main thread (a thread cannot set handlers); restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@exit_2_on_bad_input(CheckpointError, T15FormatError, FileNotFoundError, ConnectionError)
def main(argv: list[str] | None = None) -> int:
    import redis
    import torch

    from nejm_b2txt_utils.redis_protocol import connect

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("args: %s", vars(args))
    if args.nice:
        os.nice(args.nice)
    torch.set_num_threads(args.threads)
    try:
        client = connect(args.redis_ip, args.redis_port, socket_connect_timeout=5.0)
        client.ping()
        with stop_on_signals():
            OnlineRecalibrator(args, client).run()
    except redis.RedisError as exc:
        raise ConnectionError(f"Redis at {args.redis_ip}:{args.redis_port}: {' '.join(str(exc).split())} (the "
                              f"last published checkpoint stays in use; rerun to continue)") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
