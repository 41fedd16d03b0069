"""Worker side of the multi-client mode (stream names and the client: ``nejm_b2txt_utils.redis_protocol``).

Design (scale-out without mixing utterances):
  * a client announces each utterance on ``remote_lm_mc_requests``; workers read it through the
    consumer group ``remote_lm_workers``, so exactly one worker claims an utterance;
  * the claiming worker alone reads that utterance's own input stream (chunks, then ``finalize``,
    in order) and answers on its own output stream; chunks of one utterance never reach two workers;
  * the request stays pending in the group until the final answer is written, then it is acked and
    deleted with the input stream. The worker refreshes its claim while it holds the utterance;
  * a restarted worker with the same name first re-reads its own pending requests; any worker takes
    over a request whose holder has been silent for ``claim_timeout_s`` (XAUTOCLAIM). Either replays
    the utterance from its kept input stream, so nothing is lost; answers are keyed by chunk index;
  * a FLUSHALL (the original client's start-up) removes the group; it is recreated on the next read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis

from language_model.serving.handler import (
    FINALIZE,
    LOGITS,
    Session,
    handle_message,
    open_session,
    updated_params,
)
from language_model.serving.service import LMService
from nejm_b2txt_utils.lm_params import LMParams
from nejm_b2txt_utils.redis_protocol import (
    CONTEXT_KEY,
    MC_GROUP,
    MC_REQUEST_STREAM,
    LMProtocolError,
    mc_input_stream,
    mc_output_stream,
)

log = logging.getLogger(__name__)
OUTPUT_TTL_S = 600  # an output stream nobody collects disappears after this


@dataclass
class Claim:
    """An utterance this worker holds: its request, its handler session and its stream position."""

    utt_id: str
    request_id: bytes
    session: Session
    context: str | None
    last_input: bytes = b"0"
    chunk: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    last_heartbeat: float = field(default_factory=time.monotonic)


class MultiClientWorker:
    """Claims utterances from the group and serves them (at most ``max_sessions`` at a time)."""

    def __init__(
        self,
        service: LMService,
        defaults: LMParams,
        worker_name: str,
        max_sessions: int = 1,
        claim_timeout_s: float = 30.0,
        session_timeout_s: float = 120.0,
    ):
        self.svc = service
        self.defaults = defaults
        self.name = worker_name
        self.max_sessions = max_sessions
        self.claim_timeout_s = claim_timeout_s
        self.session_timeout_s = session_timeout_s
        self.sessions: dict[bytes, Claim] = {}
        self.requests_seen: bytes | str = "$"
        self._recover_own = True
        self._last_autoclaim = 0.0
        self._last_claim = 0.0

    # ------------------------------------------------------------------ group bookkeeping
    def _ensure_group(self, r) -> None:
        try:
            r.xgroup_create(MC_REQUEST_STREAM, MC_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def on_connect(self, r) -> None:
        self._ensure_group(r)
        last = r.xinfo_stream(MC_REQUEST_STREAM).get("last-generated-id", b"0-0")
        self.requests_seen = last if isinstance(last, bytes) else str(last).encode()
        self._recover_own = True

    def watch(self) -> dict:
        """Streams whose new entries should wake the worker's blocking read."""
        streams = {MC_REQUEST_STREAM: self.requests_seen}
        for s in self.sessions.values():
            streams[mc_input_stream(s.utt_id)] = s.last_input
        return streams

    def _groupread(self, r, call):
        try:
            return call()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.info("consumer group %s missing (FLUSHALL?); recreating it", MC_GROUP)
            self._ensure_group(r)
            return call()

    # ------------------------------------------------------------------ claiming
    def _claim(self, r) -> None:
        if len(self.sessions) >= self.max_sessions:
            return
        if self._recover_own:  # our own pending requests first (a restart with the same name)
            self._recover_own = False
            resp = self._groupread(r, lambda: r.xreadgroup(MC_GROUP, self.name, {MC_REQUEST_STREAM: "0"}))
            for entry_id, fields in resp[0][1] if resp else []:
                if fields and len(self.sessions) < self.max_sessions:
                    log.info("resuming my unfinished utterance %s", fields.get(b"utt_id", b"?").decode())
                    self._open(r, entry_id, fields)
        now = time.monotonic()
        if len(self.sessions) < self.max_sessions and now - self._last_autoclaim > self.claim_timeout_s / 3:
            self._last_autoclaim = now
            min_idle = int(self.claim_timeout_s * 1000)
            resp = self._groupread(
                r,
                lambda: r.xautoclaim(
                    MC_REQUEST_STREAM, MC_GROUP, self.name, min_idle, start_id="0-0", count=1
                ),
            )
            for entry_id, fields in resp[1] if len(resp) > 1 else []:
                if fields:
                    log.warning(
                        "taking over utterance %s from a silent worker", fields.get(b"utt_id", b"?").decode()
                    )
                    self._open(r, entry_id, fields)
        if len(self.sessions) < self.max_sessions:
            resp = self._groupread(
                r, lambda: r.xreadgroup(MC_GROUP, self.name, {MC_REQUEST_STREAM: ">"}, count=1)
            )
            for entry_id, fields in resp[0][1] if resp else []:
                self._open(r, entry_id, fields)

    def _open(self, r, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        utt = fields.get(b"utt_id", b"").decode(errors="replace")
        try:
            if not utt or any(c.isspace() for c in utt):
                raise LMProtocolError(f"request {entry_id!r}: missing or invalid 'utt_id'")
            params = updated_params(self.svc, self.defaults, fields, allowed_extra=("utt_id", "context"))
        except Exception as exc:  # a bad request must not stop the worker
            log.warning("rejecting utterance %r: %s", utt, exc)
            if utt:
                self._reply(r, utt, {"kind": "error", "error": str(exc)})
            self._done(r, entry_id, utt)
            return
        context = fields[b"context"].decode(errors="replace").strip() if b"context" in fields else None
        self.sessions[entry_id] = Claim(utt, entry_id, open_session(self.svc, params), context)
        log.info("claimed utterance %s", utt)

    # ------------------------------------------------------------------ serving
    def _reply(self, r, utt: str, fields: dict) -> None:
        out = mc_output_stream(utt)
        pipe = r.pipeline(transaction=False)
        pipe.xadd(out, {**fields, "worker": self.name})
        pipe.expire(out, OUTPUT_TTL_S)
        pipe.execute()

    def _done(self, r, entry_id: bytes, utt: str) -> None:
        pipe = r.pipeline(transaction=False)
        pipe.xack(MC_REQUEST_STREAM, MC_GROUP, entry_id)
        pipe.xdel(MC_REQUEST_STREAM, entry_id)
        if utt:
            pipe.delete(mc_input_stream(utt))
        pipe.execute()
        self.sessions.pop(entry_id, None)

    def _serve(self, r, s: Claim, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        s.last_input = entry_id
        s.last_activity = time.monotonic()
        if b"finalize" in fields:
            context = s.context
            if context is None:
                raw = r.get(CONTEXT_KEY)
                context = raw.decode(errors="replace").strip() if raw is not None else ""
            reply = handle_message(self.svc, s.session, FINALIZE, {}, context=context)
            self._reply(r, s.utt_id, {"kind": "error" if "error" in reply else "final", **reply})
            self._done(r, s.request_id, s.utt_id)
            return
        chunk = s.chunk
        s.chunk += 1
        reply = handle_message(self.svc, s.session, LOGITS, fields, source=mc_input_stream(s.utt_id))
        self._reply(r, s.utt_id, {"kind": "error" if "error" in reply else "partial", "chunk": chunk, **reply})

    def step(self, r, got: dict[str, list]) -> bool:
        """Handle what the blocking read of :meth:`watch`'s streams returned; True if anything was done."""
        did = False
        watched = set(self.sessions)
        now = time.monotonic()
        if MC_REQUEST_STREAM in got or self._recover_own or now - self._last_claim > 0.5:
            if MC_REQUEST_STREAM in got:
                self.requests_seen = got[MC_REQUEST_STREAM][-1][0]
            self._last_claim = now
            self._claim(r)
        for key, s in list(self.sessions.items()):
            entries = got.get(mc_input_stream(s.utt_id))
            if key not in watched:  # claimed just now: its input was not part of the blocking read
                resp = r.xread({mc_input_stream(s.utt_id): s.last_input}, count=1)
                entries = resp[0][1] if resp else []
            for entry_id, fields in entries or []:
                self._serve(r, s, entry_id, fields)
                did = True
        self._housekeeping(r)
        return did

    def _housekeeping(self, r) -> None:
        now = time.monotonic()
        for s in list(self.sessions.values()):
            if now - s.last_activity > self.session_timeout_s:
                log.warning("utterance %s idle for %.0f s; dropping it", s.utt_id, now - s.last_activity)
                self._reply(r, s.utt_id, {"kind": "error", "error": "utterance timed out on the worker"})
                self._done(r, s.request_id, s.utt_id)
            elif now - s.last_heartbeat > self.claim_timeout_s / 3:  # keep our claim fresh
                s.last_heartbeat = now
                self._groupread(
                    r,
                    lambda s=s: r.xclaim(
                        MC_REQUEST_STREAM, MC_GROUP, self.name, 0, [s.request_id], justid=True
                    ),
                )

    def shutdown(self, r) -> None:
        """Leave the group if nothing is pending for us (unfinished utterances stay claimable)."""
        try:
            info = r.xpending_range(MC_REQUEST_STREAM, MC_GROUP, "-", "+", 1, consumername=self.name)
            if not info:
                r.xgroup_delconsumer(MC_REQUEST_STREAM, MC_GROUP, self.name)
        except redis.RedisError:
            pass
