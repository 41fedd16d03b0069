"""The bytes and text of the LM streams' fields: logits payloads and the ``scoring`` framing (spec LM §2).

Exactly the original's encodings (float32 C-order logits ``[T, 41]``; the ``scoring`` string of the final
answer), plus the optional ``dtype``/``shape`` fields our clients send and the plausibility checks that refuse
bytes no float32 logits have. ``nejm_b2txt_utils.redis_protocol`` re-exports every name here.
"""

from __future__ import annotations

import numpy as np

from nejm_b2txt_utils.hypothesis import Hypothesis
from nejm_b2txt_utils.phonemes import N_CLASSES


class LMProtocolError(ValueError):
    """A message that does not follow the protocol (wrong byte length, NaN, unknown field...)."""


def encode_logits(logits: np.ndarray) -> bytes:
    """``[T, 41]`` LM-order logits -> the C-order float32 bytes of the ``logits`` field.

    Args:
        logits: ``[T, 41]`` array (any float dtype; T frames of 80 ms).

    Returns:
        ``T * 41 * 4`` bytes.

    Raises:
        LMProtocolError: not ``[T, 41]``.
    """
    arr = np.asarray(logits, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != N_CLASSES:
        raise LMProtocolError(f"logits: expected shape [T, {N_CLASSES}], got {list(arr.shape)}")
    return np.ascontiguousarray(arr).tobytes()


#: The optional ``dtype`` field of a logits entry (our clients always send it, with ``shape``).
LOGITS_DTYPE = "float32"
#: Plausibility of float32 logits: a CTC model's (raw or log-softmax) stay far inside ``MAX_ABS_LOGIT``, and almost
#: none are nonzero below ``TINY_LOGIT``; the bytes of float16 logits read as float32 are 1e5..1e9 for values >= 8 and
#: below 1e-6 for |values| < 0.2, float64's halves are anything: such chunks are refused, not decoded into nonsense.
MAX_ABS_LOGIT = 1e5
TINY_LOGIT = 1e-6
MAX_TINY_FRACTION = 0.25


def logits_fields(logits: np.ndarray) -> dict[str, bytes | str]:
    """The fields of a logits entry as our clients send them: ``logits`` plus the optional ``dtype`` and ``shape``.

    Args:
        logits: ``[T, 41]`` LM-order logits.

    Returns:
        ``{"logits": bytes, "dtype": "float32", "shape": "T,41"}``.

    Raises:
        LMProtocolError: not ``[T, 41]``.
    """
    data = encode_logits(logits)
    return {"logits": data, "dtype": LOGITS_DTYPE, "shape": f"{len(data) // (4 * N_CLASSES)},{N_CLASSES}"}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def decode_logits(payload: bytes, dtype: bytes | str | None = None, shape: bytes | str | None = None) -> np.ndarray:
    """Inverse of :func:`encode_logits`, with the checks a server needs.

    Args:
        payload: the ``logits`` field.
        dtype: the optional ``dtype`` field (must be ``float32``).
        shape: the optional ``shape`` field, ``"T,41"`` (must match the byte length).

    Returns:
        ``[T, 41]`` float32 (a read-only view of ``payload``).

    Raises:
        LMProtocolError: a byte length that is not a multiple of 41 float32s, NaN/Inf values (the original
            would crash or decode garbage), a ``dtype``/``shape`` field that does not fit, or values no float32
            logits have (:data:`MAX_ABS_LOGIT`, :data:`TINY_LOGIT`: another dtype's bytes).
    """
    if dtype is not None and _text(dtype) != LOGITS_DTYPE:
        raise LMProtocolError(f"logits: dtype {_text(dtype)!r}: expected {LOGITS_DTYPE!r} (send "
                              "np.asarray(x, np.float32).tobytes())")
    if len(payload) % (4 * N_CLASSES) != 0:
        raise LMProtocolError(
            f"logits: {len(payload)} bytes is not a multiple of {4 * N_CLASSES} (float32 x {N_CLASSES} classes)")
    n_frames = len(payload) // (4 * N_CLASSES)
    if shape is not None:
        parts = _text(shape).replace("(", "").replace(")", "").replace(" ", "").split(",")
        if not (len(parts) == 2 and all(p.isdigit() for p in parts)
                and (int(parts[0]), int(parts[1])) == (n_frames, N_CLASSES)):
            raise LMProtocolError(f"logits: shape {_text(shape)!r}: expected '{n_frames},{N_CLASSES}' ([T, "
                                  f"{N_CLASSES}] frames x classes, T from the {len(payload)} bytes)")
    arr = np.frombuffer(payload, dtype=np.float32).reshape(-1, N_CLASSES)  # [T, 41]
    if not np.isfinite(arr).all():
        raise LMProtocolError("logits: contain NaN or Inf")
    mag = np.abs(arr)
    nonzero = mag[mag > 0]
    tiny = float((nonzero < TINY_LOGIT).mean()) if nonzero.size else 0.0
    if arr.size and (mag.max() > MAX_ABS_LOGIT or tiny > MAX_TINY_FRACTION):
        raise LMProtocolError(
            f"logits: implausible float32 values (max |x| {mag.max():.3g}, {100 * tiny:.0f} % of nonzero |x| < "
            f"{TINY_LOGIT:g}); expected float32 logits within +-{MAX_ABS_LOGIT:g}: float16 or float64 bytes?")
    return arr


def format_scoring(candidates: list[Hypothesis]) -> str:
    """The ``scoring`` field: ``;``-join of (sentence, ac, ngram, llm, total) for every candidate.

    Args:
        candidates: scored hypotheses (``total`` set), best first.

    Returns:
        The field's text (``""`` for no candidate).

    Raises:
        LMProtocolError: a sentence contains ``;`` (the framing cannot carry it) or a total is missing.
    """
    parts: list[str] = []
    for c in candidates:
        if ";" in c.sentence:
            raise LMProtocolError(f"sentence {c.sentence!r} contains ';', which the framing cannot carry")
        if c.total is None:
            raise LMProtocolError(f"candidate {c.sentence!r} has no total score")
        parts.extend([c.sentence, str(c.ac), str(c.lm), str(c.llm), str(c.total)])
    return ";".join(parts)


def parse_scoring(scoring: str) -> dict[str, list]:
    """Client-side parsing as the original's ``finalize_remote_lm``: sort by total (descending),
    drop later duplicates; an empty field gives one empty sentence with zero scores.

    Args:
        scoring: the ``scoring`` field.

    Returns:
        ``{"candidate_sentences", "candidate_acoustic_scores", "candidate_ngram_scores",
        "candidate_llm_scores", "candidate_total_scores"}``, parallel lists, best total first.

    Raises:
        LMProtocolError: a score that is not a number.
    """
    fields = scoring.split(";") if scoring else []
    sentences = fields[0::5]
    try:
        ac = [float(x) for x in fields[1::5]]
        ng = [float(x) for x in fields[2::5]]
        llm = [float(x) for x in fields[3::5]]
        total = [float(x) for x in fields[4::5]]
    except ValueError as exc:
        raise LMProtocolError(f"scoring: non-numeric score in {scoring[:200]!r}") from exc
    n = min(len(sentences), len(total))
    if n == 0:
        return {"candidate_sentences": [""], "candidate_acoustic_scores": [0.0],
                "candidate_ngram_scores": [0.0], "candidate_llm_scores": [0.0], "candidate_total_scores": [0.0]}
    order = sorted(range(n), key=lambda i: total[i], reverse=True)
    out: dict[str, list] = {k: [] for k in ("candidate_sentences", "candidate_acoustic_scores",
                                            "candidate_ngram_scores", "candidate_llm_scores",
                                            "candidate_total_scores")}
    seen: set[str] = set()
    for i in order:
        if sentences[i] in seen:
            continue
        seen.add(sentences[i])
        out["candidate_sentences"].append(sentences[i])
        out["candidate_acoustic_scores"].append(ac[i])
        out["candidate_ngram_scores"].append(ng[i])
        out["candidate_llm_scores"].append(llm[i])
        out["candidate_total_scores"].append(total[i])
    return out


def parsed_hypotheses(parsed: dict[str, list]) -> list[Hypothesis]:
    """The candidates of :func:`parse_scoring` (or of a results pickle's ``lm_candidates``) as hypotheses.

    Args:
        parsed: the dict of parallel ``candidate_*`` lists.

    Returns:
        One :class:`Hypothesis` per sentence, in the dict's order (best total first); ``[]`` for ``None``.
    """
    if not parsed:
        return []
    return [Hypothesis(s, ac, ng, llm, total) for s, ac, ng, llm, total in zip(
        parsed["candidate_sentences"], parsed["candidate_acoustic_scores"], parsed["candidate_ngram_scores"],
        parsed["candidate_llm_scores"], parsed["candidate_total_scores"])]
