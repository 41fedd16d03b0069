"""The training loop's cadence and validation bookkeeping, shared by the PyTorch trainer
(:class:`model_training.rnn_trainer.BrainToTextDecoder_Trainer`) and the TensorFlow port
(:class:`model_training_nnn_tpu.trainer_tf.TFTrainer`). Framework-free: it imports neither torch nor TF.

The original's loop (spec §1.4): a train step per batch; a log line every ``batches_per_train_log``
batches; validation every ``batches_per_val_step`` batches and after the last one, keeping the best
checkpoint (lowest PER, ties to the lower loss) and stopping early after ``early_stopping_val_steps``
validations without improvement; ``last_checkpoint`` after each validation and every ``batches_per_save``
batches (added: resumable runs).

Validation: both trainers run their eval forward per val batch and hand the logits to one
:class:`GreedyPER` (greedy PER overall, per day and per extra head; the mean batch CTC loss).

A trainer mixes :class:`TrainingLoop` in and provides the hooks below; the attributes the loop reads are
``args``, ``logger``, ``is_main``, ``n_batches``, ``start_step``, ``checkpoint_dir``, ``train_losses``,
``val_PERs``, ``val_losses``, ``best_val_PER``, ``best_val_loss``, ``val_steps_since_improvement``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nejm_b2txt_utils.atomic_io import atomic_write_pickle
from nejm_b2txt_utils.metrics import ctc_greedy_decode, edit_distance

#: Validation outputs too large to keep for every validation step in the history.
HEAVY_VAL_KEYS = ("logits", "input_features")


class GreedyPER:
    """Validation bookkeeping over val batches (spec §6.6): greedy decoding (collapse repeats, drop blanks), edit
    distances overall and per day, each extra head's PER, and the per-batch lists the original's
    ``val_metrics.pkl`` holds. Feed :meth:`add` once per batch, then read :meth:`result`.

    Args:
        day_flags: ``dataset.dataset_probability_val`` (days with flag 1 get a ``day_PERs`` entry).
        keep_logits: also keep ``logits`` and ``n_time_steps`` (output frames) per batch.
        keep_data: also keep the batch's ``input_features``.
    """

    def __init__(self, day_flags: list, keep_logits: bool = False, keep_data: bool = False):
        keys = ("decoded_seqs", "true_seq", "phone_seq_lens", "transcription", "losses", "block_nums",
                "trial_nums", "day_indicies") + (("logits", "n_time_steps") if keep_logits else ()) \
            + (("input_features",) if keep_data else ())
        self.metrics: dict = {k: [] for k in keys}
        self.keep_logits, self.keep_data = keep_logits, keep_data
        self.day_pers = {d: {"total_edit_distance": 0, "total_seq_length": 0} for d, f in enumerate(day_flags)
                         if f == 1}
        self.total_ed = self.total_len = 0
        self.extra_ed: dict[str, list[int]] = {}  # extra head -> [total edit distance, total length]

    def add(self, batch: dict, logits: np.ndarray, lens: np.ndarray, loss: float,
            extra_heads: dict[str, np.ndarray] | None = None) -> None:
        """One val batch.

        Args:
            batch: the batch's host arrays (NumPy or CPU tensors): ``seq_class_ids`` [B, L], ``phone_seq_lens``,
                ``day_indicies``, ``block_nums``, ``trial_nums`` [B], ``transcriptions`` [B, 500]
                (``input_features`` [B, T, C] with ``keep_data``).
            logits: ``[B, P, C]`` float logits of the head that selects the best checkpoint.
            lens: ``[B]`` valid output frames.
            loss: the batch's mean CTC loss.
            extra_heads: ``{name: [B, P, C] logits}``, each logged as ``<name> PER``.
        """
        labels, true_lens = np.asarray(batch["seq_class_ids"]), np.asarray(batch["phone_seq_lens"])
        days = np.asarray(batch["day_indicies"])
        m = self.metrics
        m["losses"].append(float(loss))
        decoded_batch = []
        for b in range(len(logits)):
            decoded = ctc_greedy_decode(logits[b], int(lens[b]))
            ed = edit_distance(labels[b, :true_lens[b]].tolist(), decoded.tolist())
            self.total_ed += ed
            self.total_len += int(true_lens[b])
            if int(days[b]) in self.day_pers:
                self.day_pers[int(days[b])]["total_edit_distance"] += ed
                self.day_pers[int(days[b])]["total_seq_length"] += int(true_lens[b])
            decoded_batch.append(decoded)
        m["decoded_seqs"].append(decoded_batch)
        for name, head in (extra_heads or {}).items():
            ed_len = self.extra_ed.setdefault(name, [0, 0])
            for b in range(len(head)):
                ed_len[0] += edit_distance(labels[b, :true_lens[b]].tolist(),
                                           ctc_greedy_decode(head[b], int(lens[b])).tolist())
                ed_len[1] += int(true_lens[b])
        m["true_seq"].append(labels)
        m["phone_seq_lens"].append(true_lens)
        m["transcription"].append(np.asarray(batch["transcriptions"]))
        for k in ("block_nums", "trial_nums", "day_indicies"):
            m[k].append(np.asarray(batch[k]))
        if self.keep_logits:
            m["logits"].append(logits)
            m["n_time_steps"].append(np.asarray(lens))
        if self.keep_data:
            m["input_features"].append(np.asarray(batch["input_features"]))

    def result(self) -> dict:
        """The metrics: the per-batch lists, ``day_PERs``, ``avg_PER`` and ``avg_loss`` (nan without batches),
        and ``<head>_PER`` per extra head."""
        m = self.metrics
        m["day_PERs"] = self.day_pers
        m["avg_PER"] = self.total_ed / self.total_len if self.total_len else float("nan")
        m["avg_loss"] = float(np.mean(m["losses"])) if m["losses"] else float("nan")
        for name, (ed, n) in self.extra_ed.items():
            m[f"{name}_PER"] = ed / n if n else float("nan")
        return m


class _DeferredInterrupt:
    """SIGINT during training: the first Ctrl-C is noted (the loop saves ``last_checkpoint`` after the current
    batch and stops), a second one interrupts at once as before. Only in the main thread."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("Ctrl-C: saving last_checkpoint after this batch (Ctrl-C again to stop at once)", file=sys.stderr)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class TrainingLoop:
    """``train()`` and ``_validate()`` over the framework's hooks.

    Hooks a trainer must provide:
        ``_batches() -> Iterator``: training batches from ``start_step`` on.
        ``_train_one(batch, i) -> (loss, grad_norm)``: one optimisation step (floats).
        ``_run_validation() -> dict``: the validation metrics (``avg_PER``, ``avg_loss``, ``day_PERs``, ...).
        ``_save_val_checkpoint(path, per, loss)``: a model checkpoint (best / per validation step).
        ``_save_last(step)``: the resumable ``last_checkpoint``.
    Optional hooks: ``_log_suffix()``, ``_validate_step(i, pbar)`` (e.g. broadcast to other ranks),
    ``_after_training(last_batch)``.
    """

    # ------------------------------------------------------------------ optional hooks
    def _log_suffix(self) -> str:
        """Extra text for the train log line (default none)."""
        return ""

    def _validate_step(self, i: int, pbar: tqdm) -> bool:
        """Validation at batch ``i``; returns whether to stop early (default: :meth:`_validate` here)."""
        return self._validate(i, pbar)

    def _after_training(self, last_batch: int) -> None:
        """Called once after the loop (default nothing)."""

    # ------------------------------------------------------------------ validation helpers
    def _skip_val_batch(self, i: int, batch: dict) -> bool:
        """Whether val batch ``i`` is of a day whose ``dataset.dataset_probability_val`` flag is 0 (logged with
        ``log_val_skip_logs``)."""
        day = int(batch["day_indicies"][0])
        if self.args.dataset.dataset_probability_val[day] != 0:
            return False
        if self.args.get("log_val_skip_logs", False):
            self.logger.info(f"Skipping val batch {i} (day {day})")
        return True

    # ------------------------------------------------------------------ the loop
    def _validate(self, i: int, pbar: tqdm) -> bool:
        """Validate, keep the best, write checkpoints.

        Args:
            i: the batch index just trained.
            pbar: the progress bar (its postfix shows loss and PER).

        Returns:
            Whether early stopping triggers.
        """
        a = self.args
        t0 = time.time()
        m = self._run_validation()
        per, loss = m["avg_PER"], m["avg_loss"]
        extra = "".join(f" {k[:-4]} PER: {v:.4f}" for k, v in m.items() if k.endswith("_PER") and k != "avg_PER")
        self.logger.info(f"Val batch {i}: PER (avg): {per:.4f} CTC Loss (avg): {loss:.4f}{extra} "
                         f"time: {time.time() - t0:.3f}")
        if a.get("log_individual_day_val_PER", False):
            for d, v in m["day_PERs"].items():
                if v["total_seq_length"]:
                    self.logger.info(f"{a.dataset.sessions[d]} val PER: "
                                     f"{v['total_edit_distance'] / v['total_seq_length']:.4f}")
        self.val_PERs.append(per)
        self.val_losses.append(loss)
        self.val_metrics_history.append({k: v for k, v in m.items() if k not in HEAVY_VAL_KEYS})
        pbar.set_postfix(loss=f"{self.train_losses[-1]:.2f}", PER=f"{per:.4f}")
        if per < self.best_val_PER or (per == self.best_val_PER and loss < self.best_val_loss):
            self.logger.info(f"New best val PER {self.best_val_PER:.4f} --> {per:.4f}")
            self.best_val_PER, self.best_val_loss = per, loss
            if self.is_main and a.get("save_best_checkpoint", True):
                self._save_val_checkpoint(Path(self.checkpoint_dir) / "best_checkpoint", per, loss)
            if self.is_main and a.get("save_val_metrics", True):
                atomic_write_pickle(Path(self.checkpoint_dir) / "val_metrics.pkl", m)
            self.val_steps_since_improvement = 0
        else:
            self.val_steps_since_improvement += 1
        if self.is_main and a.get("save_all_val_steps", False):  # Fix: the original passed 2 of 3 arguments
            self._save_val_checkpoint(Path(self.checkpoint_dir) / f"checkpoint_batch_{i}", per, loss)
        if self.is_main:
            self._save_last(i + 1)
        # The original's fallback when the key is missing is True.
        return bool(a.get("early_stopping", True)) and \
            self.val_steps_since_improvement >= a.get("early_stopping_val_steps", 20)

    def train(self, stop_at_batch: int | None = None) -> dict:
        """Run batches ``start_step .. num_training_batches - 1``.

        Args:
            stop_at_batch: stop after this batch (writing ``last_checkpoint``), as an interrupted run would.

        Returns:
            ``{"train_losses", "val_losses", "val_PERs", "val_metrics"}`` (lists; ``val_metrics`` without
            :data:`HEAVY_VAL_KEYS`). After it, the public ``interrupted_at`` is the batch at which a Ctrl-C stopped
            the run (``last_checkpoint`` saved; not a finished run), else None: callers check it.
        """
        a = self.args
        self.val_metrics_history: list[dict] = []
        train_start = time.time()
        log_every, val_every = int(a.batches_per_train_log), int(a.batches_per_val_step)
        save_every = int(a.get("batches_per_save", 0) or 0)
        pbar = tqdm(total=self.n_batches, initial=self.start_step, disable=not self.is_main, desc="train",
                    dynamic_ncols=True, file=sys.stderr)
        i = self.start_step - 1
        batches: Iterator = self._batches() if self.start_step < self.n_batches else iter(())
        self.interrupted_at = None
        stop_request = _DeferredInterrupt() if self.is_main else None
        try:
            for i, batch in zip(range(self.start_step, self.n_batches), batches):
                if stop_request is not None and stop_request.requested:  # Ctrl-C: save, one line (was a traceback)
                    self._save_last(i)
                    self.interrupted_at = i
                    self.logger.warning(f"interrupted at batch {i}; resume with resume=true")
                    break
                t0 = time.time()
                loss, grad_norm = self._train_one(batch, i)
                self.train_losses.append(loss)
                pbar.update(1)
                if i % log_every == 0:
                    self.logger.info(f"Train batch {i}: loss: {loss:.2f} grad norm: {grad_norm:.2f}{self._log_suffix()} "
                                     f"time: {time.time() - t0:.3f}")
                    pbar.set_postfix(loss=f"{loss:.2f}", PER=f"{self.val_PERs[-1]:.4f}" if self.val_PERs else "-")
                if i % val_every == 0 or i == self.n_batches - 1:
                    if self._validate_step(i, pbar):
                        self.logger.info(f"Overall validation PER has not improved in {a.early_stopping_val_steps} "
                                         f"validation steps. Stopping training early at batch: {i}")
                        break
                elif self.is_main and save_every > 0 and (i + 1) % save_every == 0:
                    self._save_last(i + 1)
                if stop_at_batch is not None and i >= stop_at_batch:
                    if self.is_main:
                        self._save_last(i + 1)
                    break
        finally:
            if stop_request is not None:
                stop_request.restore()
            pbar.close()  # also on an error: its one-line message must be the last line, not a redrawn bar
        self.logger.info(f"Best avg val PER achieved: {self.best_val_PER:.5f}")
        self.logger.info(f"Total training time: {(time.time() - train_start) / 60:.2f} minutes")
        self._after_training(i)
        return {"train_losses": self.train_losses, "val_losses": self.val_losses, "val_PERs": self.val_PERs,
                "val_metrics": self.val_metrics_history}
