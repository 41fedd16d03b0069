"""The original single-client protocol (spec §2), served unchanged by exactly one process per Redis.

Streams ``remote_lm_input`` / ``_reset`` / ``_finalize`` / ``_update_params`` in,
``remote_lm_output_partial`` / ``_final`` and the ``done`` acks out, ``remote_lm_args`` re-published when
empty (after the client's FLUSHALL), last-seen ids starting at Redis time in ms, the context key at
finalize. The replies come from :func:`language_model.serving.handler.handle_message`.

Fixed: the original handled whatever was pending in the priority reset > finalize > update > logits, so a
client that sent reset, logits and finalize in one pipeline got the finalize of an empty utterance and its
logits leaked into the next one. Pending entries are now handled in stream-ID order
(:func:`arrival_order`); a client that waits for each answer sees no change.

One process per Redis serves these streams, so N servers never answer twice: with ``--num_workers N``
worker 0 does; separately started servers (``--legacy auto``) agree through a lock key
(``remote_lm_legacy_owner``, 15 s TTL, refreshed every second) that a process takes only after seeing it
free twice, 2 s apart (so a lone server starts answering ~2 s after it connects). After the original
client's FLUSHALL the holder re-takes the key within a second.

Several clients at once (added): these streams carry one utterance at a time and every client reads every
answer, so two evaluators on them got each other's answers or empty sentences, silently. A client may tag
its entries with ``client_id`` (this project's client does; the original ignores the field); answers carry
the tag of the entry they answer. While a tagged client's utterance is in progress (reset answered, no
finalize yet, last message under ``OWNER_IDLE_S`` ago), another tagged client's message is not applied and
gets an ``error`` naming the multi-client protocol instead.
"""

from __future__ import annotations

import logging
import math
import time

from language_model.serving.handler import FINALIZE, LOGITS, RESET, UPDATE, handle_message, open_session
from language_model.serving.service import LMService
from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.lm_params import LMParams

log = logging.getLogger(__name__)
OWNER_IDLE_S = 10.0  # an utterance whose client was silent this long no longer blocks another client
CONFLICT_ERROR = ("another client's utterance is in progress on the LM server's single-client streams, which "
                  "serve one client at a time: run concurrent evaluators with the multi-client protocol "
                  "(evaluate_model.py --lm_protocol multi, or nejm_b2txt_utils.redis_multi_client.MultiClientLMClient)")
_REFRESH_LOCK = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""


def arrival_order(pending: dict[str, bytes], last_kind: str) -> list[str]:
    """The order in which to handle the first pending entry of each stream: stream-ID order.

    A stream ID is ``<ms>-<seq>``, where ``seq`` counts that stream's entries within the millisecond, so IDs of
    different streams can be equal. Equal IDs are ordered as a client sends them: reset, update, logits,
    finalize; after logits (an utterance with frames), a finalize comes before a reset of the same ID (the
    next utterance's), and while no reset is pending, every pending logits entry of the same millisecond comes
    before the finalize (the chunks of one utterance). A client that waits for each answer never has two
    entries pending. Left ambiguous: several utterances of several chunks each pipelined within one
    millisecond (a later chunk can be taken for the next utterance's).

    Args:
        pending: kind (:data:`RESET`, :data:`UPDATE`, :data:`LOGITS`, :data:`FINALIZE`) -> its first pending
            entry's stream ID (bytes ``b"<ms>-<seq>"``).
        last_kind: the last reset, logits or finalize handled (:data:`FINALIZE` before the first).

    Returns:
        The kinds of ``pending``, first to handle first.
    """
    ids = {kind: tuple(int(x or 0) for x in entry_id.partition(b"-")[::2]) for kind, entry_id in pending.items()}
    # more chunks of this utterance: logits pending, and no reset up to their millisecond
    chunks_first = last_kind == LOGITS and LOGITS in ids and ids[LOGITS][0] < ids.get(RESET, (math.inf,))[0]
    if last_kind == RESET:  # a fresh utterance: its own update/logits/finalize before another reset
        rank = [UPDATE, LOGITS, FINALIZE, RESET]
    elif last_kind == LOGITS:  # frames received: a finalize ends this utterance before the next reset
        rank = [UPDATE, LOGITS, FINALIZE, RESET] if chunks_first else [UPDATE, FINALIZE, RESET, LOGITS]
    else:
        rank = [RESET, UPDATE, LOGITS, FINALIZE]
    return sorted(pending, key=lambda k: (ids[k][0], 0 if chunks_first else ids[k][1], rank.index(k)))


class LegacyRole:
    """Whether this process serves the original single-client streams (``--legacy on|off|auto``)."""

    TTL_MS, REFRESH_S, CHECK_S = 15000, 1.0, 2.0

    def __init__(self, mode: str, ident: str):
        """Args:
            mode: ``--legacy``: ``on``, ``off`` or ``auto`` (agree through the lock key).
            ident: this process's name in the lock key.
        """
        self.mode, self.ident = mode, ident
        self.owner = mode == "on"
        self._last = 0.0
        self._seen_free = False  # the key must be seen free twice, CHECK_S apart, before taking it
        self._free_since_ms = 0

    def check(self, r) -> tuple[bool, int | None]:
        """Refresh or take the lock (in ``auto`` mode, at most every 1 s / 2 s).

        Args:
            r: the Redis client.

        Returns:
            ``(serving now, Redis time in ms from which to read the streams if serving just started, else None)``.
        """
        if self.mode != "auto":
            return self.owner, None
        now = time.monotonic()
        if now - self._last < (self.REFRESH_S if self.owner else self.CHECK_S):
            return self.owner, None
        self._last = now
        if self.owner:
            if not r.eval(_REFRESH_LOCK, 1, rp.LEGACY_OWNER_KEY, self.ident, self.TTL_MS):
                log.warning("another server took over the single-client streams")
                self.owner = False
            return self.owner, None
        if r.exists(rp.LEGACY_OWNER_KEY):
            self._seen_free = False
            return False, None
        if not self._seen_free:
            self._seen_free, self._free_since_ms = True, rp.redis_time_ms(r)
            return False, None
        if r.set(rp.LEGACY_OWNER_KEY, self.ident, nx=True, px=self.TTL_MS):
            log.info("serving the single-client streams")
            self.owner = True
            return True, self._free_since_ms  # nobody served them since the key was first seen free
        return False, None


class LegacyProtocol:
    """The original service's state machine over its fixed streams (spec §2.4); replies from :func:`handle_message`."""

    def __init__(self, service: LMService, params: LMParams, input_stream: str, partial_stream: str,
                 final_stream: str):
        """Args:
            service: the process's loaded resources.
            params: the start-up parameters.
            input_stream, partial_stream, final_stream: the stream names (``--input_stream`` etc.).
        """
        self.svc = service
        self.input, self.partial, self.final = input_stream, partial_stream, final_stream
        self.session = open_session(service, params)
        self.seen: dict[str, int | bytes] = {}
        self._request_ms = 0
        self._answering: str | None = None  # the stream the message being handled will be answered on
        self._tag: dict[str, bytes] = {}  # the client_id of the message being handled, echoed in its answers
        self._owner: bytes | None = None  # the tagged client whose utterance is in progress
        self._owner_seen = 0.0
        self._last_kind = FINALIZE  # the last reset/logits/finalize handled: where the utterance stands

    @property
    def params(self) -> LMParams:
        """The parameters in force (start-up flags plus accepted updates).

        Returns:
            The session's :class:`LMParams`.
        """
        return self.session.params

    def on_connect(self, r, since_ms: int | None = None) -> None:
        """Last-seen ids = Redis time in ms, as the original after every (re)connect.

        Args:
            r: the Redis client.
            since_ms: use this time instead of Redis's now (serving just started).
        """
        now = rp.redis_time_ms(r) if since_ms is None else since_ms
        for s in (self.input, rp.RESET_STREAM, rp.FINALIZE_STREAM, rp.UPDATE_PARAMS_STREAM):
            self.seen[s] = now

    def publish_args(self, r) -> None:
        """Publish ``remote_lm_args`` when the stream is empty (after the client's FLUSHALL).

        Args:
            r: the Redis client.
        """
        if r.xlen(rp.ARGS_STREAM) == 0:
            r.xadd(rp.ARGS_STREAM, self.params.redis_args(self.svc.lm_path))

    def watch(self) -> dict:
        """Streams (and last-seen ids) for the worker's blocking read.

        Returns:
            ``{stream: last id}``.
        """
        return dict(self.seen)

    def step(self, r, got: dict[str, list]) -> bool:
        """Handle the entry that came first (:func:`arrival_order`); the others stay unread for the next
        iteration.

        Args:
            r: the Redis client.
            got: stream -> entries of the worker's blocking read.

        Returns:
            True if an entry was handled.
        """
        streams = {RESET: rp.RESET_STREAM, FINALIZE: rp.FINALIZE_STREAM, UPDATE: rp.UPDATE_PARAMS_STREAM,
                   LOGITS: self.input}
        pending = {kind: got[s][0][0] for kind, s in streams.items() if got.get(s)}
        for stream, kind in [(streams[k], k) for k in arrival_order(pending, self._last_kind)]:
            if got.get(stream):
                entry_id, fields = got[stream][0]
                self.seen[stream] = entry_id
                self._request_ms = int(entry_id.split(b"-")[0])
                self._answering = {RESET: rp.DONE_RESETTING_STREAM, FINALIZE: self.final,
                                   UPDATE: rp.DONE_UPDATING_PARAMS_STREAM, LOGITS: self.partial}[kind]
                fields = dict(fields)
                client = fields.pop(b"client_id", None)
                self._tag = {} if client is None else {"client_id": client}
                if self._conflicts(kind, client):
                    log.warning("rejected a %s of client %s: client %s has an utterance in progress", kind,
                                client.decode(errors="replace"), self._owner.decode(errors="replace"))
                    self.abandon(r, CONFLICT_ERROR, reset=False)
                else:
                    self._handle(r, kind, fields)
                    self._last_kind = self._last_kind if kind == UPDATE else kind
                self._answering = None
                return True
        return False

    def _conflicts(self, kind: str, client: bytes | None) -> bool:
        """Whether ``client``'s message would interleave with another tagged client's utterance; tracks
        whose utterance is in progress."""
        now = time.monotonic()
        if self._owner is not None and now - self._owner_seen > OWNER_IDLE_S:
            self._owner = None
        if self._owner is not None and client is not None and client != self._owner:
            return True
        if kind == RESET:
            self._owner = client
        elif kind == FINALIZE:
            self._owner = None
        if self._owner is not None:
            self._owner_seen = now
        return False

    def abandon(self, r, reason: str, reset: bool = True) -> None:
        """Answer the message being handled (if any) with ``error`` = ``reason`` instead of applying it.

        Args:
            r: the Redis client.
            reason: the error text.
            reset: also drop the utterance in progress (after an interrupted message).
        """
        stream, self._answering = self._answering, None
        if stream is None:
            return
        empty = {self.final: {"lm_response_final": "", "scoring": "", "context_str": ""},
                 self.partial: {"lm_response_partial": ""}}.get(stream, {"done": 1})
        self._reply(r, stream, {**empty, "error": reason})
        if reset:
            self.session.decoder.reset()
            self._owner = None

    def _handle(self, r, kind: str, fields: dict) -> None:
        context = ""
        if kind == FINALIZE:
            raw = r.get(rp.CONTEXT_KEY)
            context = raw.decode(errors="replace").strip() if raw is not None else ""
        reply = handle_message(self.svc, self.session, kind, fields, source=self.input, context=context)
        if kind == RESET:
            self._reply(r, rp.DONE_RESETTING_STREAM, reply)
        elif kind == UPDATE:
            if "error" not in reply:
                r.xadd(rp.ARGS_STREAM, self.params.redis_args(self.svc.lm_path))
            self._reply(r, rp.DONE_UPDATING_PARAMS_STREAM, reply)
        elif kind == LOGITS:
            self._reply(r, self.partial, reply)
        else:
            self._reply(r, self.final, reply)
            r.xadd(rp.DONE_FINALIZING_STREAM, {"done": 1, **self._tag})

    def _reply(self, r, stream: str, fields: dict) -> None:
        """XADD an answer in a later millisecond than its request. Fixed: a client's first last-seen id is
        the bare ms of its Redis TIME call (spec §2.1), so an answer stamped ``<that ms>-0`` (a fast server
        on localhost) was silently skipped and the client waited forever."""
        while rp.redis_time_ms(r) <= self._request_ms:
            time.sleep(0.0002)
        r.xadd(stream, {**fields, **self._tag})
