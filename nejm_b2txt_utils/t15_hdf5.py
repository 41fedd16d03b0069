"""The T15 HDF5 format (spec §1.3-1.4): a lazy per-trial reader, an atomic writer, validation.

Layout: ``<data_dir>/<session>/data_<split>.hdf5``. Each file holds one group per trial,
``trial_0000``, ``trial_0001``, ... (contiguous, zero-padded). A group holds

* ``input_features`` [T, 512] float32, one row per 20 ms bin;
* ``seq_class_ids`` int32 phoneme ids (model order), zero-padded to :data:`LABEL_PAD_LENGTH`;
* ``transcription`` int32 ASCII codes, zero-padded to :data:`LABEL_PAD_LENGTH`;
* attrs ``n_time_steps``, ``seq_len``, ``sentence_label``, ``session``, ``block_num``, ``trial_num``.

Test files carry no labels: ``seq_class_ids``, ``transcription``, ``seq_len`` and
``sentence_label`` are absent and read back as ``None``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from nejm_b2txt_utils.atomic_io import atomic_path

N_FEATURES = 512
LABEL_PAD_LENGTH = 500
SPLITS = ("train", "val", "test")
_TRIAL_KEY = re.compile(r"^trial_(\d{4,})$")
_REQUIRED_ATTRS = ("n_time_steps", "session", "block_num", "trial_num")


class T15FormatError(ValueError):
    """A T15 file violates the schema; the message names file, trial, field and what was expected."""


@dataclass
class Trial:
    """One trial. Label fields are ``None`` for test files."""

    input_features: np.ndarray
    session: str
    block_num: int
    trial_num: int
    seq_class_ids: np.ndarray | None = None
    transcription: str | None = None
    sentence_label: str | None = None
    n_time_steps: int = -1
    key: str = ""

    def __post_init__(self) -> None:
        if self.n_time_steps < 0:
            self.n_time_steps = int(np.asarray(self.input_features).shape[0])

    @property
    def seq_len(self) -> int | None:
        """Number of phoneme labels.

        Returns:
            ``len(seq_class_ids)``, or ``None`` for a test trial.
        """
        return None if self.seq_class_ids is None else int(len(self.seq_class_ids))

    @property
    def has_labels(self) -> bool:
        """Whether the trial carries labels (train/val files).

        Returns:
            True if ``seq_class_ids`` is set.
        """
        return self.seq_class_ids is not None


def trial_key(index: int) -> str:
    """The HDF5 group name of a trial.

    Args:
        index: 0-based trial index in the file.

    Returns:
        ``trial_NNNN``.
    """
    return f"trial_{index:04d}"


def n_output_frames(n_time_steps: int, patch_size: int = 14, patch_stride: int = 4) -> int:
    """Output frames (80 ms) of the patching GRU for ``n_time_steps`` bins.

    Args:
        n_time_steps: input bins (20 ms).
        patch_size: bins per patch (``<= 0``: one frame per bin).
        patch_stride: bins between patch starts.

    Returns:
        ``(n_time_steps - patch_size) // patch_stride + 1`` (0 if too short for one patch).
    """
    if patch_size <= 0:
        return int(n_time_steps)
    return max(0, (int(n_time_steps) - patch_size) // patch_stride + 1)


def ctc_min_frames(labels) -> int:
    """Fewest CTC input frames that can align ``labels``: one per label plus one blank between each pair of
    equal adjacent labels (``N N`` needs ``N _ N``).

    Args:
        labels: 1-D sequence of class ids (no blanks).

    Returns:
        ``len(labels) + number of i with labels[i] == labels[i - 1]``.
    """
    ids = np.asarray(labels).ravel()
    return int(ids.size + np.count_nonzero(ids[1:] == ids[:-1])) if ids.size else 0


def ctc_feasible(n_time_steps: int, labels, patch_size: int = 14, patch_stride: int = 4,
                 max_cut: int = 0) -> tuple[bool, int, int]:
    """Whether a trial of ``n_time_steps`` bins can be trained on with CTC in every augmentation draw.

    Args:
        n_time_steps: bins (20 ms) of the trial.
        labels: its class ids.
        patch_size, patch_stride: the model's patching (bins); ``patch_size <= 0``: one frame per bin.
        max_cut: the largest number of bins the random-cut augmentation can drop (``random_cut - 1``).

    Returns:
        ``(feasible, frames needed, frames left after the largest cut)``.
    """
    needed = ctc_min_frames(labels)
    frames = n_output_frames(max(int(n_time_steps) - max(int(max_cut), 0), 0), patch_size, patch_stride)
    return needed <= frames, needed, frames


def data_file_path(data_dir: str | os.PathLike, session: str, split: str) -> Path:
    """Where a session's split lives.

    Args:
        data_dir: ``data/hdf5_data_final``.
        session: ``t15.YYYY.MM.DD``.
        split: ``train``, ``val`` or ``test``.

    Returns:
        ``<data_dir>/<session>/data_<split>.hdf5`` (it may not exist).

    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return Path(data_dir) / session / f"data_{split}.hdf5"


def list_sessions(data_dir: str | os.PathLike) -> list[str]:
    """Session folders (``t15.YYYY.MM.DD``...) under ``data_dir``, in chronological (= name) order.

    Args:
        data_dir: ``data/hdf5_data_final``.

    Returns:
        Names of the folders that hold at least one ``data_*.hdf5``.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data directory not found (expected <data_dir>/<session>/data_<split>.hdf5)")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("data_*.hdf5")))


def _decode_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return _decode_text(value.item() if value.shape == () else value.tobytes())
    return str(value)


def encode_transcription(text: str, length: int = LABEL_PAD_LENGTH) -> np.ndarray:
    """ASCII codes of ``text``, zero-padded (the original's ``transcription`` dataset).

    Args:
        text: the sentence (non-ASCII characters become ``?``).
        length: the padded length.

    Returns:
        ``[length]`` int32 codes.

    Raises:
        ValueError: the text is longer than ``length``.
    """
    codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int32)
    if len(codes) > length:
        raise ValueError(f"transcription: {len(codes)} characters exceed the padded length {length}")
    out = np.zeros(length, dtype=np.int32)
    out[: len(codes)] = codes
    return out


def decode_transcription(codes: np.ndarray) -> str:
    """ASCII codes up to the first 0 (the original's ``_extract_transcription``).

    Args:
        codes: the ``transcription`` dataset (any shape; flattened).

    Returns:
        The sentence.
    """
    arr = np.asarray(codes).ravel()
    zeros = np.flatnonzero(arr == 0)
    end = int(zeros[0]) if zeros.size else arr.size
    return "".join(chr(int(c)) for c in arr[:end])


class T15File:
    """Lazy reader: opens the file once, reads one trial at a time. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, n_features: int | None = N_FEATURES, validate: bool = True,
                 patching: tuple[int, int] | None = (14, 4)):
        """Open the file and list its trials.

        Args:
            path: a ``data_<split>.hdf5`` file.
            n_features: expected feature channels (512; ``None``: any width).
            validate: check every trial read (shape, finite values, labels vs frames).
            patching: ``(patch_size, patch_stride)`` of the model the trials are for (the labels-vs-frames check
                depends on it; default the baseline's 14/4); ``None`` skips that check.

        Raises:
            FileNotFoundError: no such file.
            T15FormatError: not HDF5, or a top-level key that is not ``trial_NNNN``.
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: HDF5 file not found")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise T15FormatError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        self.n_features = n_features
        self.validate = validate
        self.patching = patching
        bad = [k for k in self._h5.keys() if not _TRIAL_KEY.match(k)]
        if bad:
            raise T15FormatError(f"{self.path}: unexpected top-level key {bad[0]!r}: expected trial_NNNN groups")
        self.keys = sorted(self._h5.keys(), key=lambda k: int(_TRIAL_KEY.match(k).group(1)))

    def __enter__(self) -> T15File:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the HDF5 file (idempotent)."""
        if getattr(self, "_h5", None) is not None:
            self._h5.close()
            self._h5 = None

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Trial]:
        for key in self.keys:
            yield self.read_trial(key)

    def _err(self, key: str, field: str, msg: str) -> T15FormatError:
        return T15FormatError(f"{self.path}: {key}: field '{field}': {msg}")

    def feature_width(self, key: str | int = 0) -> int | None:
        """The channels of a trial's ``input_features`` (from the dataset's shape; nothing is read).

        Args:
            key: ``trial_NNNN`` or its index (default the first trial).

        Returns:
            The width, or ``None`` for a file without trials or a trial without a 2-D ``input_features``.
        """
        if not self.keys:
            return None
        key = trial_key(key) if isinstance(key, int) else key
        ds = self._h5[key].get("input_features") if key in self._h5 else None
        return int(ds.shape[1]) if ds is not None and len(ds.shape) == 2 else None

    def read_meta(self, key: str | int) -> dict:
        """Attributes only (cheap): session, block_num, trial_num, n_time_steps, seq_len.

        Args:
            key: ``trial_NNNN`` or its index.

        Returns:
            The attributes (``seq_len`` is ``None`` for a test trial).

        Raises:
            T15FormatError: a required attribute is missing (message: file, trial, field).
        """
        key = trial_key(key) if isinstance(key, int) else key
        g = self._h5[key]
        for attr in _REQUIRED_ATTRS:
            if attr not in g.attrs:
                raise self._err(key, attr, "missing attribute")
        return {
            "session": _decode_text(g.attrs["session"]),
            "block_num": int(g.attrs["block_num"]),
            "trial_num": int(g.attrs["trial_num"]),
            "n_time_steps": int(g.attrs["n_time_steps"]),
            "seq_len": int(g.attrs["seq_len"]) if "seq_len" in g.attrs else None,
        }

    def read_labels(self, key: str | int) -> np.ndarray | None:
        """The trial's ``seq_class_ids`` without reading its features.

        Args:
            key: ``trial_NNNN`` or its index.

        Returns:
            ``[seq_len]`` int64 model-order ids (1..40), or ``None`` for a test trial.

        Raises:
            T15FormatError: labels without ``seq_len``.
        """
        key = trial_key(key) if isinstance(key, int) else key
        g = self._h5[key]
        if "seq_class_ids" not in g:
            return None
        seq_len = self.read_meta(key)["seq_len"]
        if seq_len is None:
            raise self._err(key, "seq_len", "missing attribute while seq_class_ids is present")
        return g["seq_class_ids"][:seq_len].astype(np.int64)

    def read_trial(self, key: str | int) -> Trial:
        """Read one trial (and check it when ``validate``).

        Args:
            key: ``trial_NNNN`` or its index.

        Returns:
            The :class:`Trial`: ``input_features`` ``[T, 512]`` float32 (20 ms bins), labels ``[seq_len]`` int64
            in model order, transcription and sentence (``None`` for a test trial).

        Raises:
            KeyError: no such trial.
            T15FormatError: a missing or malformed field (message: file, trial, field, what was expected).
        """
        key = trial_key(key) if isinstance(key, int) else key
        if key not in self._h5:
            raise KeyError(f"{self.path}: no group {key!r} ({len(self)} trials)")
        g = self._h5[key]
        meta = self.read_meta(key)
        if "input_features" not in g:
            raise self._err(key, "input_features", "missing dataset")
        feats = g["input_features"][()]
        seq_ids = None
        transcription = None
        label = None
        if "seq_class_ids" in g:
            raw = g["seq_class_ids"][()]
            seq_len = meta["seq_len"]
            if seq_len is None:
                raise self._err(key, "seq_len", "missing attribute while seq_class_ids is present")
            if seq_len > raw.shape[0]:
                raise self._err(key, "seq_len", f"{seq_len} exceeds the stored label length {raw.shape[0]}")
            seq_ids = raw[:seq_len].astype(np.int64)
        if "transcription" in g:
            transcription = decode_transcription(g["transcription"][()])
        if "sentence_label" in g.attrs:
            label = _decode_text(g.attrs["sentence_label"])
        trial = Trial(
            input_features=np.asarray(feats, dtype=np.float32),
            session=meta["session"],
            block_num=meta["block_num"],
            trial_num=meta["trial_num"],
            seq_class_ids=seq_ids,
            transcription=transcription,
            sentence_label=label,
            n_time_steps=meta["n_time_steps"],
            key=key,
        )
        if self.validate:
            self.check_trial(trial)
        return trial

    def check_trial(self, trial: Trial) -> None:
        """Raise :class:`T15FormatError` naming the first problem with ``trial``.

        Args:
            trial: a trial read from this file (labels vs frames checked at this file's ``patching``).

        Raises:
            T15FormatError: wrong feature shape, non-finite values, inconsistent ``n_time_steps`` or labels.
        """
        key, x = trial.key, trial.input_features
        if x.ndim != 2 or (self.n_features is not None and x.shape[1] != self.n_features):
            raise self._err(key, "input_features", f"expected shape [T, {self.n_features or 'C'}], got {list(x.shape)}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise self._err(key, "input_features", f"non-finite value {x[bad[0], bad[1]]} at bin {bad[0]}, "
                            f"channel {bad[1]}: expected finite floats")
        if trial.n_time_steps != x.shape[0]:
            raise self._err(key, "n_time_steps", f"{trial.n_time_steps} but input_features has {x.shape[0]} rows")
        if trial.seq_class_ids is not None:
            ids = trial.seq_class_ids
            if ids.size and (ids.min() < 1 or ids.max() > 40):
                raise self._err(key, "seq_class_ids", f"ids must be 1..40 (model order), got {ids.min()}..{ids.max()}")
            frames = n_output_frames(x.shape[0], *self.patching) if self.patching else len(ids)
            if len(ids) > frames:
                raise self._err(key, "seq_len", f"{len(ids)} labels but the trial has only {frames} output "
                                f"frames ({x.shape[0]} bins): CTC cannot align it")


def write_trials(path: str | os.PathLike, trials, with_labels: bool = True,
                 label_pad_length: int = LABEL_PAD_LENGTH) -> int:
    """Write an iterable of :class:`Trial` to ``path`` atomically (``nejm_b2txt_utils.atomic_io``).

    Args:
        path: the output ``.hdf5`` file.
        trials: the trials (``input_features`` ``[T, 512]``).
        with_labels: ``False`` writes a test-style file (no labels, no sentence).
        label_pad_length: padded length of ``seq_class_ids`` and ``transcription``.

    Returns:
        The number of trials written.

    Raises:
        ValueError: a trial has more labels than ``label_pad_length``.
    """
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for i, trial in enumerate(trials):
                g = f.create_group(trial_key(i))
                feats = np.asarray(trial.input_features, dtype=np.float32)
                g.create_dataset("input_features", data=feats)
                g.attrs["n_time_steps"] = np.int32(feats.shape[0])
                g.attrs["session"] = trial.session
                g.attrs["block_num"] = np.int32(trial.block_num)
                g.attrs["trial_num"] = np.int32(trial.trial_num)
                if with_labels and trial.seq_class_ids is not None:
                    ids = np.asarray(trial.seq_class_ids, dtype=np.int32)
                    if len(ids) > label_pad_length:
                        raise ValueError(f"{path}: {trial_key(i)}: {len(ids)} labels exceed {label_pad_length}")
                    padded = np.zeros(label_pad_length, dtype=np.int32)
                    padded[: len(ids)] = ids
                    g.create_dataset("seq_class_ids", data=padded)
                    g.attrs["seq_len"] = np.int32(len(ids))
                    text = trial.transcription if trial.transcription is not None else (trial.sentence_label or "")
                    g.create_dataset("transcription", data=encode_transcription(text, label_pad_length))
                    g.attrs["sentence_label"] = trial.sentence_label or ""
                count += 1
    return count


def load_h5py_file(file_path: str | os.PathLike, corpus_lookup=None) -> dict[str, list]:
    """Per-field lists for a whole file, as the original evaluator's ``load_h5py_file`` returns.

    Args:
        file_path: a ``data_<split>.hdf5`` file.
        corpus_lookup: ``(session, block_num) -> corpus`` to fill the ``corpus`` list (optional).

    Returns:
        ``{field: [value per trial]}`` (``neural_features``, ``n_time_steps``, ``seq_class_ids``, ...).

    Raises:
        FileNotFoundError, T15FormatError: as :class:`T15File`.
    """
    data: dict[str, list] = {k: [] for k in (
        "neural_features", "n_time_steps", "seq_class_ids", "seq_len", "transcriptions",
        "sentence_label", "session", "block_num", "trial_num", "corpus")}
    with T15File(file_path) as f:
        for t in f:
            data["neural_features"].append(t.input_features)
            data["n_time_steps"].append(t.n_time_steps)
            data["seq_class_ids"].append(t.seq_class_ids)
            data["seq_len"].append(t.seq_len)
            data["transcriptions"].append(t.transcription)
            data["sentence_label"].append(t.sentence_label)
            data["session"].append(t.session)
            data["block_num"].append(t.block_num)
            data["trial_num"].append(t.trial_num)
            data["corpus"].append(corpus_lookup(t.session, t.block_num) if corpus_lookup else None)
    return data
