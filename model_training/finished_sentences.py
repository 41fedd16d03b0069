"""The real-time decoder's finished sentences on Redis, for a recalibration running beside it.

Stream :data:`FINISHED_SENTENCE_STREAM` (``realtime_finished_sentences``), one entry per finished sentence:

==============  ============================================================================================
``features``    the raw bins the decoder accepted, float32 C-order bytes
``shape``       ``T,C``
``day``         the day-layer index it was decoded on
``session``     that day's session name (empty when the decoder does not know it)
``sentence``    the sentence id (``session/block/trial`` for a replay)
``text``        the final text (the LM's sentence; greedy phonemes with ``--lm none``)
``text_kind``   ``words`` or ``phonemes`` (``--lm none``: not a sentence to label from)
``label``       the prompted / reference sentence when the source knows it (copy task, replay), else empty
``confidence``  ``calibration.greedy_confidence`` of the sentence's logits (0..1)
``model_path``  the checkpoint folder that decoded it (empty: the start model)
==============  ============================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_training.realtime import Sentence
from nejm_b2txt_utils.causal_features import MAX_ABS_FEATURE
from nejm_b2txt_utils.redis_protocol import FINISHED_SENTENCE_STREAM
from nejm_b2txt_utils.t15_hdf5 import n_output_frames

#: Entries kept on the stream (XADD MAXLEN ~): a session's sentences; at 512 channels a 5 s sentence is 0.5 MB,
#: so Redis holds at most a few hundred MB of them.
MAX_ENTRIES = 500


@dataclass
class FinishedSentence:
    """One entry of the stream, decoded: ``features [T, C]`` float32 and the fields of the table above."""

    entry_id: str
    sentence: str
    session: str
    day: int
    features: np.ndarray
    text: str
    label: str
    confidence: float
    model_path: str
    text_kind: str = "words"


def sentence_fields(s: Sentence, session: str | None, text_kind: str = "words") -> dict[str, bytes | str]:
    """The stream entry of a finished :class:`~model_training.realtime.Sentence`.

    Args:
        s: the decoder's sentence (``features [T, C]`` and ``logits [P, 41]`` set).
        session: the session name of ``s.day`` (None: unknown).
        text_kind: ``words`` (an LM's sentence) or ``phonemes`` (the greedy stand-in without an LM).

    Returns:
        The fields of the module's table.
    """
    from model_training.calibration import greedy_confidence

    feats = np.ascontiguousarray(s.features, dtype=np.float32)  # (T, C)
    conf = greedy_confidence(s.logits) if s.logits is not None and len(s.logits) else 0.0
    return {"features": feats.tobytes(), "shape": f"{feats.shape[0]},{feats.shape[1]}", "day": str(s.day),
            "session": session or "", "sentence": s.sentence, "text": s.text, "label": s.label or "",
            "confidence": f"{conf:.6f}", "model_path": s.model_path or "", "text_kind": text_kind}


def publish_sentence(client, s: Sentence, session: str | None, text_kind: str = "words",
                     stream: str = FINISHED_SENTENCE_STREAM) -> bytes:
    """XADD one finished sentence (the stream trimmed to about :data:`MAX_ENTRIES`).

    Args:
        client: a redis-py client. s: the finished sentence. session: the name of its day.
        text_kind: ``words`` or ``phonemes`` (see :func:`sentence_fields`). stream: the stream.

    Returns:
        The entry id.
    """
    return client.xadd(stream, sentence_fields(s, session, text_kind), maxlen=MAX_ENTRIES, approximate=True)


def _text(fields: dict, key: str) -> str:
    value = fields.get(key.encode(), fields.get(key, b""))
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parse_entry(entry_id: bytes | str, fields: dict) -> FinishedSentence:
    """Decode one stream entry (as redis-py returns it: bytes keys and values).

    Args:
        entry_id: the entry id. fields: its fields.

    Returns:
        The :class:`FinishedSentence`.

    Raises:
        ValueError: a missing or malformed field, named with the entry id and what was expected: a byte count
            that is not ``4 * T * C``, no bins, NaN/Inf or implausible (beyond
            :data:`~nejm_b2txt_utils.causal_features.MAX_ABS_FEATURE`) features, a confidence that is not a
            number in [0, 1].
    """
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    where = f"{FINISHED_SENTENCE_STREAM} entry {eid}"
    try:
        t, c = (int(v) for v in _text(fields, "shape").split(","))
        payload = fields.get(b"features", fields.get("features", b""))
        if t < 0 or c <= 0 or len(payload) != 4 * t * c:
            raise ValueError(f"features: {len(payload)} bytes, expected float32 [{t}, {c}] = {4 * t * c}")
        features = np.frombuffer(payload, dtype=np.float32).reshape(t, c).copy()  # (T, C), writable
        day, confidence = int(_text(fields, "day")), float(_text(fields, "confidence") or 0.0)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} (fields shape 'T,C', day int, confidence float)") from None
    if not np.isfinite(features).all():
        raise ValueError(f"{where}: features: NaN/Inf values, expected finite bins")
    if np.abs(features).max(initial=0.0) > MAX_ABS_FEATURE:
        raise ValueError(f"{where}: features: magnitude {float(np.abs(features).max()):.3g}, expected at most "
                         f"{MAX_ABS_FEATURE:g}")
    if features.shape[0] == 0:
        raise ValueError(f"{where}: shape {t},{c}: no bins, expected at least one")
    if not 0.0 <= confidence <= 1.0:  # NaN fails too: it would pass a `confidence < gate` test
        raise ValueError(f"{where}: confidence {confidence}, expected a number in [0, 1]")
    return FinishedSentence(eid, _text(fields, "sentence"), _text(fields, "session"), day, features,
                            _text(fields, "text"), _text(fields, "label"), confidence, _text(fields, "model_path"),
                            _text(fields, "text_kind") or "words")


def check_fits_model(fs: FinishedSentence, n_channels: int, patch_size: int, patch_stride: int) -> None:
    """Check that a parsed entry can train the model: its width and at least one output frame.

    Args:
        fs: the parsed entry (``features [T, C]``).
        n_channels: the model's ``n_input_features`` (after any ``feature_subset``: the decoder's bin width).
        patch_size, patch_stride: the model's patching (bins).

    Raises:
        ValueError: ``C != n_channels`` or ``T`` bins give no output frame
            (:func:`~nejm_b2txt_utils.t15_hdf5.n_output_frames`), named with the entry id.
    """
    where = f"{FINISHED_SENTENCE_STREAM} entry {fs.entry_id}"
    t, c = fs.features.shape
    if c != n_channels:
        raise ValueError(f"{where}: shape {t},{c}: expected {n_channels} channels (the model's input width)")
    if n_output_frames(t, patch_size, patch_stride) < 1:
        raise ValueError(f"{where}: {t} bins give no output frame, expected at least {patch_size} (one patch)")
