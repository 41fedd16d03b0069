"""Rapid calibration: a new day's input layer from a few sentences, and updates after every sentence.

The paper's real-time trainer (Card et al. 2024) and CORP (Fan et al. 2023) in one small loop:

* **a new day** (:func:`add_day`): one more ``day_weights.N`` / ``day_biases.N``, a copy of the nearest
  earlier session's layer (by session date, :func:`nearest_day`), on every day-layer module of the model
  (``GRUDecoder``; the TripleGRUDecoder's noise and clean models);
* **an update** (:meth:`Calibrator.update`): AdamW (the model's betas/eps/weight decay, ``optim.py``'s
  groups) over the new day's layer (``update='day_layer'``) or that layer plus every GRU weight
  (``'day_layer+gru'``), batches of the new day's sentences mixed with replayed earlier sessions'
  trials at a set fraction (only with the GRU: a day-layer update cannot change the other days), the
  trainer's augmentation (``transform_data``), CTC (blank 0), gradient clipping, and an early stop once
  the new day's CTC loss per phoneme is below ``stop_loss``;
* **pseudo-labels** (:func:`pseudo_label_from_logits`, :func:`pseudo_label_from_sentence`): CORP's
  labels from the model's own greedy decode (confidence-gated) or the LM's sentence (skipped when empty
  or when a word is not in the CMU dictionary), counted in :class:`PseudoLabelStats`.

``Calibrator.save`` writes a model folder ``evaluate_model.py`` loads as any other (``checkpoint/args.yaml``
with ``dataset.sessions`` extended, ``checkpoint/best_checkpoint`` with ``_orig_mod.``-prefixed keys),
each file atomically. The TripleGRUDecoder is calibrated through its inference output (its adversarial
objective is not run).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from model_training import checkpoint as ckpt_io
from model_training.config import resolved_container
from model_training.inference import infer_trial
from model_training.optim import create_optimizer, parameter_groups
from model_training.rnn_model import output_frames
from nejm_b2txt_utils.augmentation import transform_data
from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.description_csv import session_to_date
from nejm_b2txt_utils.lexicon import Lexicon, default_lexicon, sentence_to_model_ids
from nejm_b2txt_utils.metrics import ctc_greedy_decode
from nejm_b2txt_utils.redis_protocol import DECODER_CONTROL_STREAM, NEW_MODEL_PATH_FIELD
from nejm_b2txt_utils.t15_hdf5 import T15File, ctc_feasible, data_file_path
from nejm_b2txt_utils.text import normalize_text

log = logging.getLogger(__name__)

UPDATE_MODES = ("day_layer", "day_layer+gru")
#: Where the real-time decoder learns of a new checkpoint (the original's stream and field).
CONTROL_STREAM, NEW_MODEL_KEY = DECODER_CONTROL_STREAM, NEW_MODEL_PATH_FIELD


# ---------------------------------------------------------------------------------------------- sessions
def nearest_day(sessions: Sequence[str], session: str) -> int:
    """The day index whose session is the nearest earlier one by date (the nearest later one if none is earlier).

    Args:
        sessions: the model's ``dataset.sessions`` (``<participant>.YYYY.MM.DD``).
        session: the new session's name.

    Returns:
        An index into ``sessions`` (ties: the later-listed session).

    Raises:
        ConfigError: a name is not ``<participant>.YYYY.MM.DD`` (sessions cannot be ordered by date).
    """
    try:
        target = session_to_date(session)
        dates = [session_to_date(s) for s in sessions]
    except ValueError as exc:
        raise ConfigError(f"cannot pick the nearest day by date: {exc}") from None
    earlier = [i for i, d in enumerate(dates) if d <= target]
    if earlier:
        return max(earlier, key=lambda i: (dates[i], i))
    return min(range(len(dates)), key=lambda i: (dates[i], -i))


def day_layer_modules(model: nn.Module) -> list[nn.Module]:
    """Every sub-module holding per-day ``day_weights``/``day_biases`` (``DayLayerMixin``), model first."""
    return [m for m in model.modules() if isinstance(getattr(m, "day_weights", None), nn.ParameterList)]


def add_day(model: nn.Module, source_day: int) -> int:
    """Append one day layer to every day-layer module, a copy of day ``source_day``'s.

    Args:
        model: a ``GRUDecoder`` or ``TripleGRUDecoder`` (any model with ``DayLayerMixin`` modules).
        source_day: the day whose weights ``[D, D]`` and biases ``[1, D]`` initialise the new day.

    Returns:
        The new day's index (the previous number of days).

    Raises:
        ConfigError: the model has no day layers.
    """
    mods = day_layer_modules(model)
    if not mods:
        raise ConfigError(f"{type(model).__name__}: the model has no day layers to calibrate")
    new = len(mods[0].day_weights)
    for m in mods:
        m.day_weights.append(nn.Parameter(m.day_weights[source_day].detach().clone()))
        m.day_biases.append(nn.Parameter(m.day_biases[source_day].detach().clone()))
        if hasattr(m, "n_days"):
            m.n_days = len(m.day_weights)
    if hasattr(model, "n_days"):
        model.n_days = new + 1
    return new


def args_with_session(model_args: DictConfig, session: str, data_dir: str | os.PathLike | None) -> DictConfig:
    """A copy of ``args.yaml`` with ``session`` appended to ``dataset.sessions`` (and its val flag).

    Args:
        model_args: the model's args.yaml.
        session: the new session.
        data_dir: the HDF5 root (the val flag is 1 when ``<data_dir>/<session>/data_val.hdf5`` exists).

    Returns:
        The extended copy (the input is unchanged).
    """
    out = copy.deepcopy(model_args)
    out.dataset.sessions = [*list(out.dataset.sessions), session]
    flags = out.dataset.get("dataset_probability_val")
    if flags is not None and not isinstance(flags, str):
        has_val = data_dir is not None and data_file_path(data_dir, session, "val").is_file()
        out.dataset.dataset_probability_val = [*list(flags), int(has_val)]
    if data_dir is not None:
        out.dataset.dataset_dir = str(Path(data_dir).resolve())
    return out


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Sentence:
    """One trial for calibration: ``features [T, C]`` float32 (20 ms bins), ``labels`` model-order ids."""

    features: np.ndarray
    labels: np.ndarray | None
    day: int
    text: str = ""


def read_sentences(data_dir: str | os.PathLike, session: str, split: str, day: int, limit: int | None = None,
                   feature_subset: Sequence[int] | None = None, start: int = 0) -> list[Sentence]:
    """Trials ``start .. start + limit - 1`` of ``<data_dir>/<session>/data_<split>.hdf5`` in stored order.

    Args:
        data_dir: the HDF5 root; session, split: which file; day: the day index the model gives it.
        limit: at most this many (None: all); feature_subset: the model's ``dataset.feature_subset``.
        start: the first trial to read.

    Returns:
        The sentences (labels None for a file without them).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = data_file_path(data_dir, session, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no data_{split}.hdf5 for session {session}")
    out = []
    with T15File(path, patching=None) as f:
        keys = list(f.keys)[start:]
        for key in keys[:limit] if limit is not None else keys:
            t = f.read_trial(key)
            feats = t.input_features if not feature_subset else t.input_features[:, list(feature_subset)]
            out.append(Sentence(np.ascontiguousarray(feats, dtype=np.float32), t.seq_class_ids, day,
                                t.sentence_label or ""))
    return out


# ---------------------------------------------------------------------------------------------- pseudo-labels
@dataclass
class PseudoLabelStats:
    """How many pseudo-labels were used and why the others were skipped."""

    used: int = 0
    skipped_empty: int = 0
    skipped_oov: int = 0
    skipped_low_confidence: int = 0

    @property
    def skipped(self) -> int:
        return self.skipped_empty + self.skipped_oov + self.skipped_low_confidence


def greedy_confidence(logits: np.ndarray) -> float:
    """Mean, over the frames whose argmax is not blank, of the winning class's softmax probability.

    Args:
        logits: ``[P, 41]`` model-order logits.

    Returns:
        A confidence in [0, 1] (0 when every frame is blank).
    """
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # (P, C)
    best = probs.argmax(axis=1)
    keep = best != 0
    return float(probs[keep, best[keep]].mean()) if keep.any() else 0.0


def pseudo_label_from_logits(logits: np.ndarray, min_confidence: float, stats: PseudoLabelStats) -> np.ndarray | None:
    """CORP's label from the model's own greedy decode, gated on :func:`greedy_confidence`.

    Args:
        logits: ``[P, 41]`` model-order logits of one sentence.
        min_confidence: skip the sentence below this confidence.
        stats: counters updated in place.

    Returns:
        Model-order ids ``[L]`` or None (skipped: empty decode or low confidence).
    """
    ids = ctc_greedy_decode(logits) if len(logits) else np.zeros(0, dtype=np.int64)
    if len(ids) == 0:
        stats.skipped_empty += 1
        return None
    if greedy_confidence(logits) < min_confidence:
        stats.skipped_low_confidence += 1
        return None
    stats.used += 1
    return ids.astype(np.int64)


def pseudo_label_from_sentence(text: str, stats: PseudoLabelStats, lexicon: Lexicon | None = None) -> np.ndarray | None:
    """CORP's label from the LM's decoded sentence: its CMU phonemes with a SIL after each word.

    Args:
        text: the LM's best sentence.
        stats: counters updated in place.
        lexicon: the lexicon (default: the shared one).

    Returns:
        Model-order ids ``[L]``, or None when the sentence is empty or has a word outside the CMU dictionary
        (a G2P guess would teach the model a pronunciation it never heard).
    """
    lex = lexicon or default_lexicon()
    words = normalize_text(text).split()
    if not words:
        stats.skipped_empty += 1
        return None
    if not all(lex.in_cmu(w) for w in words):
        stats.skipped_oov += 1
        return None
    stats.used += 1
    return np.asarray(sentence_to_model_ids(" ".join(words), lex), dtype=np.int64)


# ---------------------------------------------------------------------------------------------- updates
@dataclass(frozen=True)
class CalibrationSettings:
    """The update's knobs (defaults: the real-time trainer's clipping, CORP's lr / step cap / 60 % new data).

    ``stop_loss`` is the early stop: the new day's CTC loss per phoneme (nats) under which an update ends.
    ``epsilon`` None keeps the model's AdamW epsilon.
    """

    update: str = "day_layer"
    lr: float = 0.01
    max_steps: int = 200
    batch_size: int = 8
    replay_fraction: float = 0.4
    grad_clip: float = 10.0
    stop_loss: float = 0.3
    epsilon: float | None = None
    seed: int = 0

    def check(self) -> None:
        """Raises ConfigError naming the first unusable value."""
        if self.update not in UPDATE_MODES:
            raise ConfigError(f"update: expected one of {list(UPDATE_MODES)}, got {self.update!r}")
        for name, ok, want in (("lr", self.lr > 0, "> 0"), ("max_steps", self.max_steps >= 1, ">= 1"),
                               ("batch_size", self.batch_size >= 1, ">= 1"),
                               ("replay_fraction", 0 <= self.replay_fraction < 1, "in [0, 1)"),
                               ("grad_clip", self.grad_clip >= 0, ">= 0 (0: off)"),
                               ("stop_loss", self.stop_loss >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"{name}: expected {want}, got {getattr(self, name)}")


@dataclass
class UpdateResult:
    """One update: optimizer steps taken, last new-day loss per phoneme, wall seconds, early stop or not."""

    steps: int
    loss_per_phoneme: float
    seconds: float
    stopped_early: bool
    history: list[float] = field(default_factory=list)


class Calibrator:
    """A trained model given one more day (or recalibrating a day it knows), updated from sentences."""

    def __init__(self, model: nn.Module, model_args: DictConfig, session: str, settings: CalibrationSettings,
                 replay: Sequence[Sentence] = (), data_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        """Args:
            model: the trained model (CPU or ``device``); it is modified in place.
            model_args: its args.yaml. session: the day to calibrate (added when the model lacks it).
            settings: the update's knobs. replay: earlier sessions' sentences (used with the GRU update only).
            data_dir: the HDF5 root written into the new args.yaml. device: where updates run.

        Raises:
            ConfigError: a bad setting, or a session name that is not a date when a day must be added.
        """
        settings.check()
        self.settings = settings
        self.device = torch.device(device)
        self.model = model.to(self.device)
        sessions = list(model_args.dataset.sessions)
        if session in sessions:
            self.day, self.source_day, self.args = sessions.index(session), sessions.index(session), model_args
        else:
            self.source_day = nearest_day(sessions, session)
            self.day = add_day(self.model, self.source_day)
            self.args = args_with_session(model_args, session, data_dir)
            self.model.to(self.device)
        self.session = session
        self.replay = list(replay) if settings.update == "day_layer+gru" else []
        self.transform_args = OmegaConf.to_container(self.args.dataset.data_transforms, resolve=True)
        self.patch_size, self.patch_stride = int(self.args.model.patch_size), int(self.args.model.patch_stride)
        day_suffix = f".{self.day}"
        for name, p in self.model.named_parameters():
            own_day = name.endswith(day_suffix) and ("day_weights" in name or "day_biases" in name)
            p.requires_grad = own_day or (settings.update == "day_layer+gru" and "gru" in name)
        opt_args = {**resolved_container(self.args), "lr_max": settings.lr, "lr_max_day": settings.lr}
        if settings.epsilon is not None:
            opt_args["epsilon"] = settings.epsilon
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
                  for g in parameter_groups(self.model, opt_args)]
        self.optimizer = create_optimizer(self.model, opt_args, [g for g in groups if g["params"]])
        self.rng = np.random.default_rng(settings.seed)
        self.torch_gen = torch.Generator().manual_seed(settings.seed)
        self.n_updates = 0

    def trainable_names(self) -> list[str]:
        """Names of the parameters an update changes."""
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Evaluation-time logits ``[P, 41]`` of one sentence ``[T, C]`` on the calibrated day (as the evaluator)."""
        self.model.eval()
        return infer_trial(self.model, features, self.day, self.device, self.transform_args)

    def feasible(self, s: Sentence) -> bool:
        """Whether CTC can align ``s.labels`` to the output frames of ``s.features`` (after the training random
        cut): sentences that cannot are left out of updates."""
        max_cut = max(int(self.transform_args.get("random_cut", 0) or 0) - 1, 0)
        return s.labels is not None and len(s.labels) > 0 and ctc_feasible(
            s.features.shape[0], s.labels, self.patch_size, self.patch_stride, max_cut)[0]

    def _batch(self, new: list[Sentence]) -> list[Sentence]:
        """``batch_size`` sentences: new-day ones drawn with replacement plus the replay share."""
        bs = self.settings.batch_size
        n_replay = int(round(bs * self.settings.replay_fraction)) if self.replay else 0
        picked = [new[i] for i in self.rng.integers(0, len(new), bs - n_replay)]
        return picked + [self.replay[i] for i in self.rng.integers(0, len(self.replay), n_replay)]

    def update(self, sentences: Iterable[Sentence]) -> UpdateResult:
        """Optimise on ``sentences`` (the new day's, labelled; day indices are set to the calibrated day).

        Args:
            sentences: labelled sentences of the new day; those CTC cannot align are left out.

        Returns:
            The :class:`UpdateResult` (0 steps when no sentence is usable).
        """
        t0 = time.perf_counter()
        new = [Sentence(s.features, s.labels, self.day, s.text) for s in sentences]
        new = [s for s in new if self.feasible(s)]
        self.replay = [s for s in self.replay if self.feasible(s)]
        history: list[float] = []
        if not new:
            return UpdateResult(0, math.nan, time.perf_counter() - t0, False)
        self.model.train()
        stopped = False
        for _ in range(self.settings.max_steps):
            history.append(self._step(self._batch(new)))
            if history[-1] < self.settings.stop_loss:
                stopped = True
                break
        self.n_updates += 1
        return UpdateResult(len(history), history[-1], time.perf_counter() - t0, stopped, history)

    def _step(self, batch: list[Sentence]) -> float:
        """One optimizer step; returns the new day's mean CTC loss per phoneme (before the step)."""
        x = pad_sequence([torch.from_numpy(s.features) for s in batch], batch_first=True).to(self.device)  # (B, T, C)
        n_bins = torch.tensor([s.features.shape[0] for s in batch], device=self.device)
        labels = pad_sequence([torch.from_numpy(s.labels) for s in batch], batch_first=True).to(self.device)  # (B, L)
        label_lens = torch.tensor([len(s.labels) for s in batch], device=self.device)
        days = torch.tensor([s.day for s in batch], device=self.device)
        x, n_bins = transform_data(x, n_bins, self.transform_args, "train")
        frames = output_frames(n_bins, self.patch_size, self.patch_stride)  # (B,) int32
        logits = self.model(x, days)  # (B, P, C)
        log_probs = logits.log_softmax(2).permute(1, 0, 2)  # (P, B, C)
        per_trial = nn.functional.ctc_loss(log_probs, labels, frames, label_lens, blank=0, reduction="none",
                                           zero_infinity=True)
        self.optimizer.zero_grad()
        per_trial.mean().backward()
        clip = self.settings.grad_clip
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=clip if clip > 0 else math.inf)
        if torch.isfinite(norm):
            self.optimizer.step()
        is_new = days == self.day
        per_phoneme = per_trial.detach()[is_new] / label_lens[is_new]
        return float(per_phoneme.mean())

    def save(self, model_path: str | os.PathLike, **extra) -> Path:
        """Write ``<model_path>/checkpoint/best_checkpoint`` then ``args.yaml`` (each atomically).

        Args:
            model_path: the output model folder (the evaluator's ``--model_path``).
            extra: further checkpoint keys (the original's loader ignores them).

        Returns:
            The checkpoint's path.
        """
        ckpt_dir = Path(model_path) / "checkpoint"
        state = {"model_state_dict": ckpt_io.with_compile_prefix(self.model.state_dict()),
                 "val_PER": math.nan, "val_loss": math.nan,
                 "calibration": {"session": self.session, "day": self.day, "source_day": self.source_day,
                                 "updates": self.n_updates, **asdict(self.settings)}, **extra}
        path = ckpt_io.atomic_save(state, ckpt_dir / "best_checkpoint")
        ckpt_io.atomic_save_yaml(self.args, ckpt_dir / "args.yaml")
        return path


def publish_model_path(client, model_path: str | os.PathLike) -> bytes:
    """Tell a running decoder to load ``model_path`` between sentences (XADD ``decoderControl:stream``).

    Args:
        client: a redis-py client. model_path: the calibrated model folder.

    Returns:
        The stream entry id.
    """
    return client.xadd(CONTROL_STREAM, {NEW_MODEL_KEY: str(Path(model_path).resolve())})
