"""The Redis stream protocol between the evaluator (client) and the LM server (spec LM §2).

Stream and field names, value encodings and the ``scoring`` framing are exactly the original's,
so an unmodified client or server of the original interoperates with ours. The client here adds
what the original lacked: timeouts with a clear error instead of waiting forever, reconnects with
backoff, and an optional password from ``REDIS_PASSWORD``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nejm_b2txt_utils.hypothesis import Hypothesis
from nejm_b2txt_utils.lm_params import LMParamError, check_update_names
from nejm_b2txt_utils.phonemes import N_CLASSES

log = logging.getLogger(__name__)

INPUT_STREAM = "remote_lm_input"
PARTIAL_OUTPUT_STREAM = "remote_lm_output_partial"
FINAL_OUTPUT_STREAM = "remote_lm_output_final"
RESET_STREAM = "remote_lm_reset"
DONE_RESETTING_STREAM = "remote_lm_done_resetting"
FINALIZE_STREAM = "remote_lm_finalize"
DONE_FINALIZING_STREAM = "remote_lm_done_finalizing"
UPDATE_PARAMS_STREAM = "remote_lm_update_params"
DONE_UPDATING_PARAMS_STREAM = "remote_lm_done_updating_params"
ARGS_STREAM = "remote_lm_args"
CONTEXT_KEY = "contextual_decoding_current_context"

class LMProtocolError(ValueError):
    """A message that does not follow the protocol (wrong byte length, NaN, unknown field...)."""


#: The protocol's name for a scored candidate: the decoding stages' :class:`Hypothesis` (one type).
Candidate = Hypothesis


class LMTimeoutError(TimeoutError):
    """The LM server did not answer within the client's timeout."""


#: Start of the ``error`` of an answer to a message that a stopping server abandoned (SIGTERM).
SERVER_STOPPING = "the LM server is stopping"


class LMServerStoppingError(LMTimeoutError):
    """The server abandoned the request because it is stopping; retried like a timeout (a restarted server
    answers the retry)."""


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


def decode_logits(payload: bytes) -> np.ndarray:
    """Inverse of :func:`encode_logits`.

    Args:
        payload: the ``logits`` field.

    Returns:
        ``[T, 41]`` float32 (a read-only view of ``payload``).

    Raises:
        LMProtocolError: a byte length that is not a multiple of 41 float32s, or NaN/Inf values (the original
            would crash or decode garbage).
    """
    if len(payload) % (4 * N_CLASSES) != 0:
        raise LMProtocolError(
            f"logits: {len(payload)} bytes is not a multiple of {4 * N_CLASSES} (float32 x {N_CLASSES} classes)")
    arr = np.frombuffer(payload, dtype=np.float32).reshape(-1, N_CLASSES)
    if not np.isfinite(arr).all():
        raise LMProtocolError("logits: contain NaN or Inf")
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


def redis_time_ms(r) -> int:
    """Redis server time in ms, the original's initial last-seen stream id.

    Args:
        r: a redis-py client.

    Returns:
        Milliseconds since the epoch (Redis clock).
    """
    sec, usec = r.time()
    return int(math.floor(sec * 1000 + usec / 1000))


def connect(host: str = "localhost", port: int = 6379, db: int = 0, password: str | None = None, **kw):
    """A redis-py client; the password defaults to ``$REDIS_PASSWORD`` when set.

    Args:
        host, port, db: the server.
        password: ``AUTH`` password (default: ``$REDIS_PASSWORD``).
        kw: passed to ``redis.Redis`` (timeouts, retry).

    Returns:
        A ``redis.Redis`` (not yet connected).
    """
    import redis

    if password is None:
        password = os.environ.get("REDIS_PASSWORD") or None
    return redis.Redis(host=host, port=port, db=db, password=password, **kw)


def read_next(r, stream: str, after: int | bytes, timeout_s: float, block_ms: int, what: str) -> tuple[bytes, dict]:
    """Wait for the next entry of ``stream`` after id ``after``: the one wait loop of both clients.

    Lost connections are retried with backoff (0.1 s doubling to 2 s) within the same deadline.

    Args:
        r: a redis-py client.
        stream: the stream to read.
        after: the last id seen (an entry id, or a bare Redis time in ms).
        timeout_s: how long to wait in total (s).
        block_ms: the longest single blocking XREAD (ms).
        what: what is awaited, for the messages (e.g. ``"final result"``).

    Returns:
        ``(entry_id, fields)`` of the entry.

    Raises:
        LMTimeoutError: nothing arrived within ``timeout_s``; the message names the stream and what was awaited.
    """
    import redis

    deadline = time.monotonic() + timeout_s
    backoff = 0.1
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LMTimeoutError(
                f"no answer from the LM server on stream '{stream}' ({what}) within {timeout_s:.0f} s: "
                "is language-model-standalone.py running against this Redis?")
        try:
            resp = r.xread({stream: after}, count=1, block=int(max(1, min(block_ms, remaining * 1000))))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis connection lost while waiting for %s (%s); retrying in %.1f s", what, exc, backoff)
            time.sleep(min(backoff, max(0.0, remaining)))
            backoff = min(backoff * 2, 2.0)
            continue
        if resp:
            return resp[0][1][0]


def _update_fields(params: dict) -> dict:
    """Check the names of an update (client side) and encode booleans as 0/1."""
    try:
        check_update_names(params)
    except LMParamError as exc:
        raise LMProtocolError(str(exc)) from None
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in params.items()}


@dataclass
class RemoteLMClient:
    """The evaluator's side of the protocol: reset, (update params), logits, finalize.

    ``timeout_s`` bounds every wait for an answer; the original looped forever printing
    "Still waiting...". Reads resume from the last id seen, so nothing is lost across retries.
    :meth:`decode` redoes a whole trial up to ``retries`` times when the server or Redis went away.
    Every entry carries ``client_id`` (the original server ignores it): our server echoes it in its answers,
    so answers to another client are skipped, and rejects a second client's messages while this client's
    utterance is in progress with an error (the streams serve one client at a time).
    """

    r: object
    timeout_s: float = 60.0
    block_ms: int = 1000
    retries: int = 0
    input_stream: str = INPUT_STREAM
    partial_stream: str = PARTIAL_OUTPUT_STREAM
    final_stream: str = FINAL_OUTPUT_STREAM
    last_seen: dict[str, int | bytes] = field(default_factory=dict)
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self.sync_time()

    def sync_time(self) -> None:
        """Start every stream's last-seen id at "now" (entries older than this are ignored)."""
        now = redis_time_ms(self.r)
        # A bare ms id means "<ms>-0": an answer written in this same millisecond would get that id and be
        # skipped (spec LM §2.1). Waiting past it makes every answer to our later requests visible.
        time.sleep(0.002)
        for s in (DONE_RESETTING_STREAM, DONE_UPDATING_PARAMS_STREAM, self.partial_stream, self.final_stream,
                  DONE_FINALIZING_STREAM):
            self.last_seen[s] = now

    def _wait(self, stream: str, what: str) -> dict[bytes, bytes]:
        deadline = time.monotonic() + self.timeout_s
        mine = self.client_id.encode()
        while True:
            remaining = max(0.001, deadline - time.monotonic())
            entry_id, fields = read_next(self.r, stream, self.last_seen[stream], remaining, self.block_ms, what)
            self.last_seen[stream] = entry_id
            if fields.get(b"client_id", mine) != mine:  # untagged: an original server's answer
                continue
            if fields.get(b"error", b"").startswith(SERVER_STOPPING.encode()):
                raise LMServerStoppingError(f"{what}: {fields[b'error'].decode()}")
            return fields

    def reset(self) -> None:
        """Start a new utterance on the server.

        Raises:
            LMProtocolError: the server rejected the reset (another client's utterance is in progress).
            LMTimeoutError: no acknowledgement within ``timeout_s``.
        """
        self.r.xadd(RESET_STREAM, {"done": 0, "client_id": self.client_id})
        time.sleep(0.001)
        fields = self._wait(DONE_RESETTING_STREAM, "reset")
        if b"error" in fields:
            raise LMProtocolError(f"LM server rejected the reset: {fields[b'error'].decode()}")

    def update_params(self, **params) -> None:
        """Change run-time parameters (:data:`UPDATABLE_PARAMS`) on the server.

        Raises:
            LMProtocolError: an unknown name (checked here), or the server rejected the update.
            LMTimeoutError: no acknowledgement within ``timeout_s``.
        """
        self.r.xadd(UPDATE_PARAMS_STREAM, {**_update_fields(params), "client_id": self.client_id})
        time.sleep(0.001)
        fields = self._wait(DONE_UPDATING_PARAMS_STREAM, "update_params")
        if b"error" in fields:
            raise LMProtocolError(f"LM server rejected the parameter update: {fields[b'error'].decode()}")

    def send_logits(self, logits: np.ndarray) -> str:
        """Send one chunk of LM-order logits.

        Args:
            logits: ``[T, 41]`` LM-order logits (T frames of 80 ms).

        Returns:
            The partial sentence.

        Raises:
            LMProtocolError: wrong shape, or the server rejected the chunk.
            LMTimeoutError: no partial result within ``timeout_s``.
        """
        self.r.xadd(self.input_stream, {"logits": encode_logits(logits), "client_id": self.client_id})
        fields = self._wait(self.partial_stream, "partial result")
        if b"error" in fields:
            raise LMProtocolError(f"LM server rejected the logits: {fields[b'error'].decode()}")
        return fields.get(b"lm_response_partial", b"").decode()

    def finalize(self) -> dict[str, list]:
        """Finish the utterance.

        Returns:
            The parsed candidates (:func:`parse_scoring`).

        Raises:
            LMProtocolError: the server answered with an error.
            LMTimeoutError: no final result within ``timeout_s``.
        """
        self.r.xadd(FINALIZE_STREAM, {"done": 0, "client_id": self.client_id})
        time.sleep(0.005)
        fields = self._wait(self.final_stream, "final result")
        if b"error" in fields:
            raise LMProtocolError(f"LM server failed to finalize: {fields[b'error'].decode()}")
        return parse_scoring(fields.get(b"scoring", b"").decode())

    def decode(self, logits_lm_order: np.ndarray) -> tuple[str, dict[str, list]]:
        """One trial (reset, logits, finalize), redone from the reset up to ``retries`` times when the
        server or Redis went away mid-trial (a restarted server only sees requests made after it came back).

        Args:
            logits_lm_order: ``[T, 41]`` logits in LM order.

        Returns:
            ``(partial sentence, parsed candidates)``.

        Raises:
            LMTimeoutError: still no answer after the last retry (a lost connection is reported as one).
            LMProtocolError: the server rejected the trial (not retried).
        """
        import redis

        for attempt in range(self.retries + 1):
            try:
                if attempt:
                    self.sync_time()
                self.reset()
                partial = self.send_logits(logits_lm_order)
                return partial, self.finalize()
            except (LMTimeoutError, redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == self.retries:
                    if isinstance(exc, LMTimeoutError):
                        raise
                    raise LMTimeoutError(
                        f"Redis connection lost and not back after {self.retries} retries: {exc}") from exc
                log.warning("LM request failed (%s); retry %d/%d", str(exc).split(":")[0], attempt + 1, self.retries)
                time.sleep(min(2.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    def decode_trial(self, logits_lm_order: np.ndarray) -> dict[str, list]:
        """:meth:`decode` without the partial.

        Args:
            logits_lm_order: ``[T, 41]`` logits in LM order.

        Returns:
            The parsed candidates of the trial.

        Raises:
            LMTimeoutError, LMProtocolError: as :meth:`decode`.
        """
        return self.decode(logits_lm_order)[1]

    def decode_many(self, items: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, str, dict[str, list]]]:
        """:meth:`decode` of each ``(key, logits)`` in turn (one trial at a time: these streams serve one
        utterance at a time); the same interface as :meth:`MultiClientLMClient.decode_many`.

        Yields:
            ``(key, partial sentence, parsed candidates)`` in input order.
        """
        for key, logits in items:
            partial, candidates = self.decode(logits)
            yield key, partial, candidates


# ------------------------------------------------------------------------------------------------
# Multi-client / multi-worker mode (an addition; the original protocol above is unchanged).
#
# A client announces an utterance on MC_REQUEST_STREAM (field ``utt_id``, optional ``context`` and any
# UPDATABLE_PARAMS as per-utterance overrides). Workers read that stream through the consumer group
# MC_GROUP, so exactly one worker claims each utterance, and then serve it alone: its chunks
# (``logits``) and the closing ``finalize`` entry go, in order, to ``mc_input_stream(utt_id)``; the
# answers (``kind`` = partial | final | error, ``chunk`` = 0-based chunk index) come back on
# ``mc_output_stream(utt_id)``. A worker that dies mid-utterance leaves the request pending in the
# group; its successor (same worker name) or any worker after the claim timeout replays the utterance
# from the kept input stream, so answers may repeat and clients key them by ``chunk``.
# ------------------------------------------------------------------------------------------------
MC_REQUEST_STREAM = "remote_lm_mc_requests"
MC_GROUP = "remote_lm_workers"
#: Lock key naming the one server process that serves the original single-client streams.
LEGACY_OWNER_KEY = "remote_lm_legacy_owner"


def mc_input_stream(utt_id: str) -> str:
    """The input stream of a multi-client utterance.

    Args:
        utt_id: the utterance id.

    Returns:
        ``remote_lm_mc_input:<utt_id>``.
    """
    return f"remote_lm_mc_input:{utt_id}"


def mc_output_stream(utt_id: str) -> str:
    """The output stream of a multi-client utterance.

    Args:
        utt_id: the utterance id.

    Returns:
        ``remote_lm_mc_output:<utt_id>``.
    """
    return f"remote_lm_mc_output:{utt_id}"


@dataclass
class _Utterance:
    utt_id: str
    request_id: bytes
    chunks_sent: int = 0
    last_seen: bytes = b"0"
    partials: dict[int, str] = field(default_factory=dict)


class MultiClientLMClient:
    """Client of the multi-client mode: many of these (threads, processes, machines) can share one
    Redis and a pool of LM workers without their utterances mixing. Never calls FLUSHALL."""

    def __init__(self, r, timeout_s: float = 60.0, block_ms: int = 1000, client_id: str | None = None):
        """Args:
            r: a redis-py client (this client never FLUSHALLs).
            timeout_s: the longest wait for one answer (s).
            block_ms: the longest single blocking XREAD (ms).
            client_id: prefix of this client's utterance ids (default: random).
        """
        import uuid

        self.r = r
        self.timeout_s = timeout_s
        self.block_ms = block_ms
        self.client_id = client_id or uuid.uuid4().hex[:12]
        self._count = 0

    def start_utterance(self, params: dict | None = None, context: str | None = None) -> _Utterance:
        """Announce an utterance (with per-utterance parameter overrides and context).

        Args:
            params: run-time parameter overrides for this utterance.
            context: context text for the causal-LM rescoring (default: the context key at finalize).

        Returns:
            The utterance handle.

        Raises:
            LMProtocolError: an unknown parameter name.
        """
        fields = _update_fields(params or {})
        self._count += 1
        utt_id = f"{self.client_id}-{self._count}"
        entry: dict[str, object] = {"utt_id": utt_id, **fields}
        if context is not None:
            entry["context"] = context
        request_id = self.r.xadd(MC_REQUEST_STREAM, entry)
        return _Utterance(utt_id, request_id)

    def send_chunk(self, utt: _Utterance, logits: np.ndarray, wait: bool = True) -> str | None:
        """Send one chunk of an utterance.

        Args:
            utt: the utterance.
            logits: ``[T, 41]`` LM-order logits.
            wait: wait for this chunk's partial result.

        Returns:
            The partial sentence with ``wait``, else ``None`` (keep streaming).

        Raises:
            LMProtocolError: wrong shape, or the worker rejected the chunk.
            LMTimeoutError: no answer within ``timeout_s``.
        """
        self.r.xadd(mc_input_stream(utt.utt_id), {"logits": encode_logits(logits)})
        chunk = utt.chunks_sent
        utt.chunks_sent += 1
        if not wait:
            return None
        while chunk not in utt.partials:
            self._next(utt, f"partial result of chunk {chunk}")
        return utt.partials[chunk]

    def finish(self, utt: _Utterance) -> dict[str, list]:
        """Send the finalize entry and wait for the final result. The utterance's streams are removed.

        Args:
            utt: the utterance.

        Returns:
            Parsed like :func:`parse_scoring`, plus ``lm_response_final`` and ``partials`` (one per chunk).

        Raises:
            LMProtocolError, LMTimeoutError: as :meth:`collect`.
        """
        self.r.xadd(mc_input_stream(utt.utt_id), {"finalize": 1})
        return self.collect(utt)

    def submit(self, logits_lm_order: np.ndarray, chunk_frames: int = 0, params: dict | None = None,
               context: str | None = None) -> _Utterance:
        """Announce an utterance and send all of it (chunks, then finalize) without waiting for answers.

        Args:
            logits_lm_order: ``[T, 41]`` logits in LM order.
            chunk_frames: frames per chunk (0: one chunk).
            params: per-utterance parameter overrides.
            context: context text for the causal-LM rescoring.

        Returns:
            The utterance, for :meth:`collect`.

        Raises:
            LMProtocolError: wrong shape or an unknown parameter name.
        """
        arr = np.asarray(logits_lm_order, dtype=np.float32)
        encode_logits(arr)  # shape check before anything is announced
        step = chunk_frames if chunk_frames > 0 else max(1, arr.shape[0])
        utt = self.start_utterance(params, context)
        pipe = self.r.pipeline(transaction=False)
        for start in range(0, max(1, arr.shape[0]), step):
            pipe.xadd(mc_input_stream(utt.utt_id), {"logits": encode_logits(arr[start : start + step])})
            utt.chunks_sent += 1
        pipe.xadd(mc_input_stream(utt.utt_id), {"finalize": 1})
        pipe.execute()
        return utt

    def collect(self, utt: _Utterance) -> dict[str, list]:
        """Wait for the final result of an utterance whose finalize was sent (see :meth:`finish`).

        Raises:
            LMProtocolError: the worker answered with an error.
            LMTimeoutError: no answer within ``timeout_s`` of the last one.
        """
        try:
            while True:
                fields = self._next(utt, "final result")
                if fields.get(b"kind") == b"final":
                    out = parse_scoring(fields.get(b"scoring", b"").decode())
                    out["lm_response_final"] = fields.get(b"lm_response_final", b"").decode()
                    out["partials"] = [utt.partials.get(k, "") for k in range(utt.chunks_sent)]
                    return out
        finally:
            self.r.delete(mc_output_stream(utt.utt_id))

    def abandon(self, utt: _Utterance) -> None:
        """Withdraw an utterance (e.g. after a timeout): its request and streams are deleted.

        Args:
            utt: the utterance.
        """
        self.r.xdel(MC_REQUEST_STREAM, utt.request_id)
        self.r.delete(mc_input_stream(utt.utt_id), mc_output_stream(utt.utt_id))

    def decode_many(self, items: Iterable[tuple[Any, np.ndarray]], in_flight: int = 8,
                    retries: int = 0) -> Iterator[tuple[Any, str, dict[str, list]]]:
        """Decode ``(key, logits)`` items with up to ``in_flight`` utterances sent ahead of their answers, so
        N LM workers decode N of them at once (the items are consumed lazily: the producer, e.g. the
        evaluator's inference, runs while the workers decode).

        Args:
            items: ``(key, [T, 41] LM-order logits)`` pairs.
            in_flight: utterances outstanding at most (>= 1).
            retries: how many times an utterance is sent again after a timeout or a lost connection.

        Yields:
            ``(key, partial sentence, parsed candidates)`` in input order.

        Raises:
            LMTimeoutError: an utterance still unanswered after ``retries`` retries.
            LMProtocolError: a worker rejected an utterance.
        """
        import collections

        import redis

        pending: collections.deque = collections.deque()  # (key, logits, utterance, attempt)

        def result(key, logits, utt, attempt):
            while True:
                try:
                    out = self.collect(utt)
                    return key, (out["partials"] or [""])[-1], out
                except (LMTimeoutError, redis.ConnectionError, redis.TimeoutError) as exc:
                    if attempt >= retries:
                        raise LMTimeoutError(f"utterance {utt.utt_id}: {exc}") from exc
                    attempt += 1
                    log.warning("LM request failed (%s); retry %d/%d", str(exc).split(":")[0], attempt, retries)
                    try:
                        self.abandon(utt)
                        utt = self.submit(logits)
                    except (redis.ConnectionError, redis.TimeoutError):
                        time.sleep(min(2.0, 0.2 * 2**attempt))

        for key, logits in items:
            pending.append((key, logits, self.submit(logits), 0))
            while len(pending) >= max(1, in_flight):
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())

    def decode_trial(self, logits_lm_order: np.ndarray, chunk_frames: int = 0, params: dict | None = None,
                     context: str | None = None) -> dict[str, list]:
        """One trial: announce, stream the chunks without waiting (order is kept by the stream), finish.

        Args:
            logits_lm_order: ``[T, 41]`` logits in LM order.
            chunk_frames: frames per chunk (0: one chunk).
            params: per-utterance parameter overrides.
            context: context text for the causal-LM rescoring.

        Returns:
            As :meth:`finish`.

        Raises:
            LMProtocolError, LMTimeoutError: as :meth:`finish` (the utterance is withdrawn on a timeout).
        """
        arr = np.asarray(logits_lm_order, dtype=np.float32)
        step = chunk_frames if chunk_frames > 0 else max(1, arr.shape[0])
        utt = self.start_utterance(params, context)
        try:
            for start in range(0, max(1, arr.shape[0]), step):
                self.send_chunk(utt, arr[start : start + step], wait=False)
            return self.finish(utt)
        except LMTimeoutError:
            self.abandon(utt)
            raise

    def _next(self, utt: _Utterance, what: str) -> dict[bytes, bytes]:
        """The next answer on the utterance's output stream; raises on an error answer."""
        entry_id, fields = read_next(self.r, mc_output_stream(utt.utt_id), utt.last_seen, self.timeout_s,
                                     self.block_ms, f"{what} for utterance {utt.utt_id}")
        utt.last_seen = entry_id
        kind = fields.get(b"kind")
        if kind == b"error":
            raise LMProtocolError(f"LM worker rejected utterance {utt.utt_id}"
                                  f"{' chunk ' + fields[b'chunk'].decode() if b'chunk' in fields else ''}: "
                                  f"{fields.get(b'error', b'').decode()}")
        if kind == b"partial":
            utt.partials[int(fields.get(b"chunk", b"0"))] = fields.get(b"lm_response_partial", b"").decode()
        return fields
