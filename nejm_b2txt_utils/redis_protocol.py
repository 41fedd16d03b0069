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
from typing import Any, Protocol

import numpy as np

from nejm_b2txt_utils.hypothesis import Hypothesis
from nejm_b2txt_utils.lm_messages import (  # noqa: F401 (re-exported: the protocol's names)
    LOGITS_DTYPE,
    MAX_ABS_LOGIT,
    MAX_TINY_FRACTION,
    TINY_LOGIT,
    LMProtocolError,
    decode_logits,
    encode_logits,
    format_scoring,
    logits_fields,
    parse_scoring,
    parsed_hypotheses,
)
from nejm_b2txt_utils.lm_params import LMParamError, check_update_names

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
# The lab's real-time framework: a recalibration run announces a new model folder to the decoder (between sentences).
DECODER_CONTROL_STREAM = "decoderControl:stream"
NEW_MODEL_PATH_FIELD = "newModelPath"
#: Our own: the real-time decoder's finished sentences (bins, text, label) for online recalibration.
FINISHED_SENTENCE_STREAM = "realtime_finished_sentences"


#: The protocol's name for a scored candidate: the decoding stages' :class:`Hypothesis` (one type).
Candidate = Hypothesis


class LMTimeoutError(TimeoutError):
    """The LM server did not answer within the client's timeout."""


#: Start of the ``error`` of an answer to a message that a stopping server abandoned (SIGTERM).
SERVER_STOPPING = "the LM server is stopping"


class LMServerStoppingError(LMTimeoutError):
    """The server abandoned the request because it is stopping; retried like a timeout (a restarted server
    answers the retry)."""


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
        A ``redis.Redis``. With a password, one ``AUTH`` is sent at once: a server that has no password (redis-py
        then goes on without one, silently) gets one warning naming host and port — the password protects
        nothing there. A server not up yet is not waited for (the check is skipped).
    """
    import redis

    if password is None:
        password = os.environ.get("REDIS_PASSWORD") or None
    r = redis.Redis(host=host, port=port, db=db, password=password, **kw)
    if password:
        warn_if_password_unused(r, host, port)
    return r


def warn_if_password_unused(r, host: str, port: int) -> bool:
    """Warn (once, logging) when ``r``'s password is sent to a Redis server that has none.

    Args:
        r: a redis-py client holding a password; host, port: for the message.

    Returns:
        True when the warning was given; False when the server checks the password, or could not be reached.
    """
    import redis

    try:
        r.execute_command("AUTH", r.get_connection_kwargs()["password"])
    except redis.AuthenticationError as exc:
        if "without any password configured" not in str(exc) and "no password is set" not in str(exc):
            return False  # a wrong password: the first real command says so
        log.warning("Redis at %s:%s has no password: REDIS_PASSWORD / --redis_password is sent but protects nothing "
                    "(start redis-server with requirepass, or unset it)", host, port)
        return True
    except (redis.RedisError, OSError):
        return False  # not up yet (the clients retry) or AUTH refused otherwise
    return False


#: Redis client-name prefix of the LM server's connections (``CLIENT SETNAME``): a client tells a slow server
#: (its connection is still there) from a dead one (gone).
LM_SERVER_CLIENT_NAME = "b2txt_lm_server"


def lm_server_connections(r) -> int | None:
    """How many connections of LM server processes Redis holds (``CLIENT LIST``).

    Args:
        r: a redis-py client.

    Returns:
        The count, or ``None`` when ``CLIENT LIST`` is refused (an ACL) or fails.
    """
    import redis

    try:
        return sum(1 for c in r.client_list() if str(c.get("name", "")).startswith(LM_SERVER_CLIENT_NAME))
    except (redis.RedisError, OSError):
        return None


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


def read_server_args(r) -> dict[str, str | int | float] | None:
    """The LM server's newest ``remote_lm_args`` entry (``lm_path`` and the run-time parameters it decodes with).

    Args:
        r: a redis-py client.

    Returns:
        ``{name: value}`` (numbers parsed), or None when no server has published its arguments.
    """
    entries = r.xrevrange(ARGS_STREAM, count=1)
    if not entries:
        return None

    def value(raw: bytes) -> str | int | float:
        text = raw.decode(errors="replace")
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    return {k.decode(errors="replace"): value(v) for k, v in entries[0][1].items()}


class LMClient(Protocol):
    """What ``model_training/evaluate_model.py`` needs of an LM client; :class:`RemoteLMClient` (the original's
    single-client streams) and ``redis_multi_client.MultiClientLMClient`` (the consumer-group streams) both are one."""

    def update_params(self, **params: int | float) -> None:
        """Decode the following trials with these run-time parameters (names of ``lm_params.UPDATABLE_PARAMS``)."""

    def decode_many(self, items: Iterable[tuple[Any, np.ndarray]], in_flight: int = 1,
                    retries: int | None = None) -> Iterator[tuple[Any, str, dict[str, list]]]:
        """Decode ``(key, [T, 41] LM-order logits)`` items; yields ``(key, partial, parsed candidates)`` in order."""

    def server_args(self) -> dict[str, str | int | float] | None:
        """The arguments the server decodes this client's trials with (its ``remote_lm_args``), if published."""


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
    slow_server_waits: int = 2  # extra timeouts waited while the LM server is connected (slow, not dead)
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
        slow_waits = 0
        while True:
            remaining = max(0.001, deadline - time.monotonic())
            try:
                entry_id, fields = read_next(self.r, stream, self.last_seen[stream], remaining, self.block_ms, what)
            except LMTimeoutError as exc:  # slow but alive (its connection is there): wait on, do not reset it
                alive = lm_server_connections(self.r)
                if alive and slow_waits < self.slow_server_waits:
                    slow_waits += 1
                    log.warning("%s: no answer in %.0f s but the LM server is connected (busy): waiting another "
                                "%.0f s (%d/%d)", what, self.timeout_s, self.timeout_s, slow_waits,
                                self.slow_server_waits)
                    deadline = time.monotonic() + self.timeout_s
                    continue
                state = ("no LM server is connected to Redis (stopped or dead)" if alive == 0 else
                         "the LM server is connected but busy" if alive else "LM server state unknown")
                raise LMTimeoutError(f"{exc} ({state})") from None
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
        self.r.xadd(self.input_stream, {**logits_fields(logits), "client_id": self.client_id})
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

    def server_args(self) -> dict[str, str | int | float] | None:
        """The server's newest ``remote_lm_args`` (re-published after each accepted update), or None."""
        return read_server_args(self.r)

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

    def decode_many(self, items: Iterable[tuple[Any, np.ndarray]], in_flight: int = 1,
                    retries: int | None = None) -> Iterator[tuple[Any, str, dict[str, list]]]:
        """:meth:`decode` of each ``(key, logits)`` in turn (:class:`LMClient`).

        Args:
            items: ``(key, [T, 41] LM-order logits)`` pairs.
            in_flight: unused: these streams serve one utterance at a time.
            retries: replaces the client's ``retries`` when given.

        Yields:
            ``(key, partial sentence, parsed candidates)`` in input order.
        """
        if retries is not None:
            self.retries = retries
        for key, logits in items:
            partial, candidates = self.decode(logits)
            yield key, partial, candidates


#: Lock key naming the one server process that serves the original single-client streams.
LEGACY_OWNER_KEY = "remote_lm_legacy_owner"
