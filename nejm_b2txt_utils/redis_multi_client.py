"""The multi-client / multi-worker mode of the LM protocol (an addition to the original's streams).

Many clients (threads, processes, machines) share one Redis and a pool of LM workers without their
utterances mixing; the original single-client protocol in :mod:`nejm_b2txt_utils.redis_protocol` is unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nejm_b2txt_utils.redis_protocol import (
    LMProtocolError,
    LMTimeoutError,
    _update_fields,
    encode_logits,
    logits_fields,
    parse_scoring,
    read_next,
    read_server_args,
)

log = logging.getLogger(__name__)

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
        self.params: dict = {}  # run-time parameters sent with every utterance of decode_many (update_params)

    def update_params(self, **params: int | float) -> None:
        """Send these run-time parameters with every following utterance of :meth:`decode_many` (this protocol
        takes them per utterance; the server checks the values).

        Raises:
            LMProtocolError: an unknown name.
        """
        _update_fields(params)
        self.params.update(params)

    def server_args(self) -> dict[str, str | int | float] | None:
        """The server's published ``remote_lm_args`` with this client's per-utterance parameters on top (None
        when neither exists)."""
        published = read_server_args(self.r)
        return {**published, **self.params} if published is not None else (dict(self.params) or None)

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
        self.r.xadd(mc_input_stream(utt.utt_id), logits_fields(logits))
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
            pipe.xadd(mc_input_stream(utt.utt_id), logits_fields(arr[start : start + step]))
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
                    retries: int | None = 0) -> Iterator[tuple[Any, str, dict[str, list]]]:
        """Decode ``(key, logits)`` items with up to ``in_flight`` utterances sent ahead of their answers, so
        N LM workers decode N of them at once (the items are consumed lazily: the producer, e.g. the
        evaluator's inference, runs while the workers decode).

        Args:
            items: ``(key, [T, 41] LM-order logits)`` pairs.
            in_flight: utterances outstanding at most (>= 1).
            retries: how many times an utterance is sent again after a timeout or a lost connection (None: 0).

        Yields:
            ``(key, partial sentence, parsed candidates)`` in input order.

        Raises:
            LMTimeoutError: an utterance still unanswered after ``retries`` retries.
            LMProtocolError: a worker rejected an utterance.
        """
        import collections

        import redis

        retries = retries or 0
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
                        utt = self.submit(logits, params=self.params or None)
                    except (redis.ConnectionError, redis.TimeoutError):
                        time.sleep(min(2.0, 0.2 * 2**attempt))

        for key, logits in items:
            pending.append((key, logits, self.submit(logits, params=self.params or None), 0))
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
