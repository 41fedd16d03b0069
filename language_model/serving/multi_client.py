"""Worker side of the multi-client mode (stream names and the client: ``nejm_b2txt_utils.redis_protocol``).

Design (scale-out without mixing utterances):
  * a client announces each utterance on ``remote_lm_mc_requests``; workers read it through the
    consumer group ``remote_lm_workers``, so exactly one worker claims an utterance;
  * the claiming worker alone reads that utterance's own input stream (chunks, then ``finalize``,
    in order) and answers on its own output stream; chunks of one utterance never reach two workers;
  * the request stays pending in the group until the final answer is written, then it is acked and
    deleted with the input stream. The worker refreshes its claim while it holds the utterance;
  * a restarted worker with the same name first re-reads its own pending requests; any worker takes
    over a request whose holder has been silent for ``claim_timeout_s``. Either replays the utterance
    from its kept input stream, so nothing is lost; answers are keyed by chunk index;
  * a FLUSHALL (the original client's start-up) removes the group; it is recreated on the next read.

Fairness (added; before, requests were claimed first come first served, so one client's flood starved
the others, and a request that never sent input held a worker for ``session_timeout_s``): new requests
are moved into the group under the consumer ``QUEUE_CONSUMER``; a worker with a free slot claims, in one
atomic script (:data:`_FAIR_CLAIM`), the oldest request of the client served longest ago (round-robin
over clients; the client is the ``utt_id`` up to its last ``-``) among the requests whose input has
started. A client's requests beyond ``max_pending_per_client`` and requests without input after
``request_input_timeout_s`` are answered with an error and dropped. A worker claims again as soon as a
slot frees (no idle wait while work is pending).
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
from nejm_b2txt_utils.redis_multi_client import MC_GROUP, MC_REQUEST_STREAM, mc_input_stream, mc_output_stream
from nejm_b2txt_utils.redis_protocol import CONTEXT_KEY, LMProtocolError

log = logging.getLogger(__name__)
OUTPUT_TTL_S = 600  # an output stream nobody collects disappears after this
QUEUE_CONSUMER = "__queue__"  # holds the requests no worker has claimed yet
SERVED_KEY = "remote_lm_mc_served"  # client -> when it was last served (a sequence number)
SCAN = 1000  # requests looked at per claim
# KEYS: request stream, served hash. ARGV: group, queue consumer, me, scan, max pending per client,
# input timeout (ms), claim timeout (ms), input stream prefix. Returns {kind, id, fields, rejected, waiting}.
_FAIR_CLAIM = """
local s, served = KEYS[1], KEYS[2]
local g, q, me = ARGV[1], ARGV[2], ARGV[3]
local scan, per_client = tonumber(ARGV[4]), tonumber(ARGV[5])
local input_ms, stale_ms, prefix = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local rejected, waiting = {}, {}
for _, e in ipairs(redis.call('XPENDING', s, g, 'IDLE', stale_ms, '-', '+', 10)) do
  if e[2] ~= q and e[2] ~= me then
    local c = redis.call('XCLAIM', s, g, me, stale_ms, e[1])
    if c[1] then return {'takeover', c[1][1], c[1][2], rejected, waiting} end
    redis.call('XACK', s, g, e[1])
  end
end
redis.call('XREADGROUP', 'GROUP', g, q, 'COUNT', scan, 'STREAMS', s, '>')
local per, best, best_rank, best_client, left = {}, nil, nil, nil, 0
for _, e in ipairs(redis.call('XPENDING', s, g, '-', '+', scan, q)) do
  local id, idle = e[1], e[3]
  local entry = redis.call('XRANGE', s, id, id)[1]
  if not entry then
    redis.call('XACK', s, g, id)
  else
    local f, utt, client = entry[2], '', nil
    for i = 1, #f, 2 do
      if f[i] == 'utt_id' then utt = f[i + 1] end
    end
    client = string.match(utt, '^(.*)%-[^-]*$') or utt
    per[client] = (per[client] or 0) + 1
    local has_input = utt == '' or redis.call('EXISTS', prefix .. utt) == 1
    if per[client] > per_client then
      redis.call('XACK', s, g, id)
      redis.call('XDEL', s, id)
      table.insert(rejected, {utt, 'too_many'})
    elseif not has_input and idle > input_ms then
      redis.call('XACK', s, g, id)
      redis.call('XDEL', s, id)
      table.insert(rejected, {utt, 'no_input'})
    else
      left = left + 1
      if not has_input then
        if #waiting < 16 then table.insert(waiting, utt) end
      else
        local rank = tonumber(redis.call('HGET', served, client) or '0')
        if best == nil or rank < best_rank then best, best_rank, best_client = entry, rank, client end
      end
    end
  end
end
if best then
  redis.call('XCLAIM', s, g, me, 0, best[1])
  redis.call('HSET', served, best_client, redis.call('HINCRBY', served, ':seq', 1))
  redis.call('EXPIRE', served, 86400)
  left = left - 1
end
if left == 0 then redis.call('XGROUP', 'DELCONSUMER', s, g, q) end
if best then return {'claim', best[1], best[2], rejected, waiting} end
return {'none', '', '', rejected, waiting}
"""


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
        max_pending_per_client: int = 64,
        request_input_timeout_s: float = 5.0,
    ):
        """Args:
            service: the process's loaded resources.
            defaults: the start-up parameters (a request's overrides apply on top).
            worker_name: the consumer name in the group.
            max_sessions: utterances held at a time.
            claim_timeout_s: a silent holder's utterances are taken over after this (s).
            session_timeout_s: an utterance idle this long is dropped (s).
            max_pending_per_client: requests one client may have waiting.
            request_input_timeout_s: a request whose input has not started this long is dropped (s).
        """
        self.svc = service
        self.defaults = defaults
        self.name = worker_name
        self.max_sessions = max_sessions
        self.claim_timeout_s = claim_timeout_s
        self.session_timeout_s = session_timeout_s
        self.max_pending_per_client = max_pending_per_client
        self.request_input_timeout_s = request_input_timeout_s
        self.sessions: dict[bytes, Claim] = {}
        self.requests_seen: bytes | str = "$"
        self.waiting: list[str] = []  # queued requests whose input has not started (watched for it)
        self._recover_own = True
        self._fair_claim = None

    # ------------------------------------------------------------------ group bookkeeping
    def _ensure_group(self, r) -> None:
        try:
            r.xgroup_create(MC_REQUEST_STREAM, MC_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def on_connect(self, r) -> None:
        """Create the consumer group if needed and reload the claim script (after every (re)connect).

        Args:
            r: the Redis client.
        """
        self._ensure_group(r)
        self._fair_claim = r.register_script(_FAIR_CLAIM)
        last = r.xinfo_stream(MC_REQUEST_STREAM).get("last-generated-id", b"0-0")
        self.requests_seen = last if isinstance(last, bytes) else str(last).encode()
        self._recover_own = True

    def watch(self) -> dict:
        """Streams whose new entries should wake the worker's blocking read.

        Returns:
            ``{stream: last id}``.
        """
        streams = {MC_REQUEST_STREAM: self.requests_seen}
        for s in self.sessions.values():
            streams[mc_input_stream(s.utt_id)] = s.last_input
        if len(self.sessions) < self.max_sessions:  # wake when a queued request's input starts
            for utt in self.waiting:
                streams.setdefault(mc_input_stream(utt), "0-0")
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
        while len(self.sessions) < self.max_sessions:
            kind, entry_id, raw, rejected, waiting = self._groupread(r, lambda: self._fair_claim(
                keys=[MC_REQUEST_STREAM, SERVED_KEY],
                args=[MC_GROUP, QUEUE_CONSUMER, self.name, SCAN, self.max_pending_per_client,
                      int(self.request_input_timeout_s * 1000), int(self.claim_timeout_s * 1000),
                      mc_input_stream("")], client=r))
            self._reject(r, rejected)
            self.waiting = [w.decode(errors="replace") for w in waiting]
            if kind == b"none":
                return
            fields = dict(zip(raw[::2], raw[1::2]))
            if kind == b"takeover":
                log.warning("taking over utterance %s from a silent worker", fields.get(b"utt_id", b"?").decode())
            self._open(r, entry_id, fields)

    def _reject(self, r, rejected: list) -> None:
        """Answer the requests the claim script dropped (too many from one client, or no input in time)."""
        if not rejected:
            return
        reasons = {b"too_many": f"more than {self.max_pending_per_client} utterances of this client are waiting "
                                "(--max_pending_per_client); this one is rejected: send fewer at once",
                   b"no_input": f"no input within {self.request_input_timeout_s:g} s of the request "
                                "(--request_input_timeout_s); the request is dropped"}
        pipe = r.pipeline(transaction=False)
        for utt, reason in rejected:
            if not utt:
                continue
            out = mc_output_stream(utt.decode(errors="replace"))
            pipe.xadd(out, {"kind": "error", "error": reasons.get(reason, reason.decode()), "worker": self.name})
            pipe.expire(out, OUTPUT_TTL_S)
            pipe.delete(mc_input_stream(utt.decode(errors="replace")))
        pipe.execute()
        log.warning("rejected %d queued request(s): %s", len(rejected),
                    ", ".join(sorted({reason.decode() for _, reason in rejected})))

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
        """Handle what the blocking read of :meth:`watch`'s streams returned.

        Claims whenever a slot is free, also right after a finalize freed one (fixed: a request that
        arrived while the worker was busy waited for the next 0.5 s poll).

        Args:
            r: the Redis client.
            got: stream -> entries.

        Returns:
            True if anything was done.
        """
        did = False
        if MC_REQUEST_STREAM in got:
            self.requests_seen = got[MC_REQUEST_STREAM][-1][0]
        watched = set(self.sessions)
        for s in list(self.sessions.values()):
            for entry_id, fields in got.get(mc_input_stream(s.utt_id)) or []:
                self._serve(r, s, entry_id, fields)
                did = True
        self._claim(r)
        for key, s in list(self.sessions.items()):
            if key in watched:
                continue
            # claimed just now: its input was not part of the blocking read
            resp = r.xread({mc_input_stream(s.utt_id): s.last_input}, count=1)
            for entry_id, fields in resp[0][1] if resp else []:
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
        """Leave the group if nothing is pending for us (unfinished utterances stay claimable).

        Args:
            r: the Redis client.
        """
        try:
            info = r.xpending_range(MC_REQUEST_STREAM, MC_GROUP, "-", "+", 1, consumername=self.name)
            if not info:
                r.xgroup_delconsumer(MC_REQUEST_STREAM, MC_GROUP, self.name)
        except redis.RedisError:
            pass
