"""Latency and stability statistics of real-time sentences (:class:`model_training.realtime.Sentence`).

Reviewers want tails, not means: every latency is summarised as n / p50 / p95 / p99 / max (ms), per-frame
deadlines as the fraction of frames whose partial text came later than 80 ms after their newest bin, and
the partial text's stability as word flicker: of the words shown, the fraction later changed or removed
(the final text counts as the last partial).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

FRAME_MS = 80.0


def percentiles(values: Iterable[float]) -> dict:
    """``{"n", "p50_ms", "p95_ms", "p99_ms", "max_ms"}`` of ``values`` (ms); ``{"n": 0}`` when empty."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"n": int(arr.size), "p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3), "max_ms": round(float(arr.max()), 3)}


def word_flicker(partials: Sequence[str], final: str | None = None) -> tuple[int, int]:
    """Count shown words that a later text changed: ``(changed, shown)``.

    A word is shown at position i of a partial; it flickers when the next text has another word there or
    is shorter. ``shown`` counts each (partial, position) once, so ``changed / shown`` is a rate.

    Args:
        partials: the texts shown, in order.
        final: the final text (compared with the last partial), if any.

    Returns:
        ``(changed words, shown words)``.
    """
    texts = [p.split() for p in partials] + ([final.split()] if final is not None else [])
    changed = shown = 0
    for prev, nxt in zip(texts, texts[1:]):
        shown += len(prev)
        changed += sum(1 for i, w in enumerate(prev) if i >= len(nxt) or nxt[i] != w)
    return changed, shown


def summarise(sentences: Sequence, frame_ms: float = FRAME_MS) -> dict:
    """The latency table of a run.

    Args:
        sentences: finished :class:`Sentence` objects (or their ``record()`` dicts).
        frame_ms: the per-frame deadline (ms).

    Returns:
        ``{"sentences", "frames", "frame_model_ms", "frame_lm_ms", "frame_age_ms", "missed_deadline_fraction",
        "final_ms", "final_ms_end_of_speech", "end_of_speech_fraction", "word_flicker"}``.
    """
    recs = [s.record() if hasattr(s, "record") else s for s in sentences]
    model = [v for r in recs for v in r["frame_model_ms"]]
    lm = [v for r in recs for v in r["frame_lm_ms"]]
    age = [v for r in recs for v in r["frame_age_ms"]]
    changed = shown = 0
    for r in recs:
        c, s = word_flicker(r["partials"], r["text"])
        changed, shown = changed + c, shown + s
    eos = [r["final_ms"] for r in recs if r["reason"] == "end_of_speech"]
    return {"sentences": len(recs), "frames": len(age), "frame_model_ms": percentiles(model),
            "frame_lm_ms": percentiles(lm), "frame_age_ms": percentiles(age),
            "missed_deadline_fraction": round(float(np.mean(np.asarray(age) > frame_ms)), 5) if age else None,
            "final_ms": percentiles(r["final_ms"] for r in recs), "final_ms_end_of_speech": percentiles(eos),
            "end_of_speech_fraction": round(len(eos) / len(recs), 3) if recs else None,
            "word_flicker": {"changed": changed, "shown": shown,
                             "rate": round(changed / shown, 4) if shown else None}}


def _cell(p: dict) -> str:
    if not p.get("n"):
        return "-"
    return f"{p['p50_ms']:.1f} / {p['p95_ms']:.1f} / {p['p99_ms']:.1f} / {p['max_ms']:.1f}"


def latency_table(summary: dict) -> str:
    """A plain-text table of :func:`summarise` (p50 / p95 / p99 / max, ms)."""
    flick = summary["word_flicker"]
    rows = [("per frame: model", _cell(summary["frame_model_ms"])),
            ("per frame: LM partial", _cell(summary["frame_lm_ms"])),
            ("per frame: newest bin age at partial", _cell(summary["frame_age_ms"])),
            ("per frame: missed 80 ms deadline", f"{100 * (summary['missed_deadline_fraction'] or 0):.2f} %"),
            ("per sentence: end -> final text", _cell(summary["final_ms"])),
            ("end of speech detected (vs trial end)", f"{100 * (summary['end_of_speech_fraction'] or 0):.0f} %"),
            ("word flicker (shown words later changed)",
             f"{flick['changed']}/{flick['shown']}" + (f" = {100 * flick['rate']:.1f} %" if flick["rate"] else ""))]
    width = max(len(r[0]) for r in rows)
    head = f"{'':{width}}  p50 / p95 / p99 / max ms  ({summary['sentences']} sentences, {summary['frames']} frames)"
    return "\n".join([head] + [f"{a:{width}}  {b}" for a, b in rows])
