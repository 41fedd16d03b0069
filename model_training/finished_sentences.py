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
from nejm_b2txt_utils.redis_protocol import FINISHED_SENTENCE_STREAM

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
        ValueError: a missing or malformed field, named with the entry id and what was expected.
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
    return FinishedSentence(eid, _text(fields, "sentence"), _text(fields, "session"), day, features,
                            _text(fields, "text"), _text(fields, "label"), confidence, _text(fields, "model_path"),
                            _text(fields, "text_kind") or "words")
