"""The LM server's Redis loop: the original single-client protocol plus the multi-client mode.

Original protocol (spec §2), served unchanged by exactly one process per Redis: streams
``remote_lm_input`` / ``_reset`` / ``_finalize`` / ``_update_params`` in, ``remote_lm_output_partial``
/ ``_final`` and the ``done`` acks out, ``remote_lm_args`` re-published when empty (after the
client's FLUSHALL), last-seen ids starting at Redis time in ms, the context key at finalize, and the
priority reset > finalize > update > logits. One blocking XREAD (100 ms) covers all watched streams.

Fixes and additions (each also noted where it happens):
  * errors are answered, never fatal: malformed logits (byte length, NaN/Inf, unknown field) get an
    ``error`` field on the partial stream (with an empty ``lm_response_partial`` so the original's
    client keeps working), a bad update gets ``error`` on its ack and changes nothing, a failed
    finalize answers an empty result with ``error``;
  * Redis disconnects are retried with exponential backoff (0.5 s .. 5 s), logged once per outage;
  * ``--redis_password`` (default ``$REDIS_PASSWORD``); the server listens on nothing itself;
  * SIGTERM/SIGINT finish the current message and stop; ``--num_workers N`` forks N workers that
    share the loaded graph, restarts a crashed one under its name, and forwards signals;
  * one process per Redis serves the original streams, so N servers never answer twice: with
    ``--num_workers N`` worker 0 does; separately started servers (``--legacy auto``) agree through
    a lock key (``remote_lm_legacy_owner``, 15 s TTL, refreshed every second) that a process takes
    only after seeing it free twice, 2 s apart (so a lone server starts answering ~2 s after it
    connects). After the original client's FLUSHALL the holder re-takes the key within a second.
The multi-client (consumer-group) side lives in :mod:`language_model.multi_client`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import replace

import redis

from language_model.lm_args import ServiceParams, parse_args
from language_model.multi_client import MultiClientWorker
from language_model.service import LMService
from nejm_b2txt_utils import redis_protocol as rp

log = logging.getLogger("language_model.server")
BLOCK_MS = 100
_REFRESH_LOCK = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""


class LegacyRole:
    """Whether this process serves the original single-client streams (``--legacy on|off|auto``)."""

    TTL_MS, REFRESH_S, CHECK_S = 15000, 1.0, 2.0

    def __init__(self, mode: str, ident: str):
        self.mode, self.ident = mode, ident
        self.owner = mode == "on"
        self._last = 0.0
        self._seen_free = False  # the key must be seen free twice, CHECK_S apart, before taking it
        self._free_since_ms = 0

    def check(self, r) -> tuple[bool, int | None]:
        """(serving now, Redis time in ms from which to read the streams if serving just started)."""
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
    """The original service's state machine over its fixed streams (spec §2.4)."""

    def __init__(self, service: LMService, params: ServiceParams, input_stream: str, partial_stream: str,
                 final_stream: str):
        self.svc, self.params = service, params
        self.input, self.partial, self.final = input_stream, partial_stream, final_stream
        self.decoder = service.new_decoder(params)
        self.seen: dict[str, int | bytes] = {}
        self.last_partial = ""
        self._request_ms = 0

    def on_connect(self, r, since_ms: int | None = None) -> None:
        """Last-seen ids = Redis time in ms, as the original after every (re)connect."""
        now = rp.redis_time_ms(r) if since_ms is None else since_ms
        for s in (self.input, rp.RESET_STREAM, rp.FINALIZE_STREAM, rp.UPDATE_PARAMS_STREAM):
            self.seen[s] = now

    def publish_args(self, r) -> None:
        if r.xlen(rp.ARGS_STREAM) == 0:
            r.xadd(rp.ARGS_STREAM, self.params.redis_args(self.svc.lm_path))

    def watch(self) -> dict:
        return dict(self.seen)

    def step(self, r, got: dict[str, list]) -> bool:
        """Handle the highest-priority entry only; the others stay unread for the next iteration."""
        for stream, handler in ((rp.RESET_STREAM, self._reset), (rp.FINALIZE_STREAM, self._finalize),
                                (rp.UPDATE_PARAMS_STREAM, self._update), (self.input, self._logits)):
            if got.get(stream):
                entry_id, fields = got[stream][0]
                self.seen[stream] = entry_id
                self._request_ms = int(entry_id.split(b"-")[0])
                handler(r, fields)
                return True
        return False

    def _reply(self, r, stream: str, fields: dict) -> None:
        """XADD an answer in a later millisecond than its request. Fixed: a client's first last-seen id is
        the bare ms of its Redis TIME call (spec §2.1), so an answer stamped ``<that ms>-0`` (a fast server
        on localhost) was silently skipped and the client waited forever."""
        while rp.redis_time_ms(r) <= self._request_ms:
            time.sleep(0.0002)
        r.xadd(stream, fields)

    def _reset(self, r, _fields) -> None:
        self.decoder.reset()
        self.last_partial = ""
        self._reply(r, rp.DONE_RESETTING_STREAM, {"done": 1})
        log.info("reset")

    def _finalize(self, r, _fields) -> None:
        raw = r.get(rp.CONTEXT_KEY)
        context = raw.decode(errors="replace").strip() if raw is not None else ""
        if context:
            log.info("context for LLM rescoring: %r", context)
        try:
            fields = self.svc.finalize(self.decoder, self.params, context).fields()
        except Exception as exc:  # answer instead of dying (the original crashed, e.g. nbest 1)
            log.exception("finalize failed")
            fields = {"lm_response_final": "", "scoring": "", "context_str": context, "error": f"finalize: {exc}"}
        self.last_partial = ""
        self._reply(r, self.final, fields)
        r.xadd(rp.DONE_FINALIZING_STREAM, {"done": 1})

    def _update(self, r, fields) -> None:
        try:
            new = self.params.updated(fields)
            self.svc.ensure_components(new)  # fixed: do_opt/rescore switched on by an update load what they need
        except Exception as exc:
            log.warning("rejected parameter update: %s", exc)
            self._reply(r, rp.DONE_UPDATING_PARAMS_STREAM, {"done": 1, "error": str(exc)})
            return
        if new.decoder_options() != self.params.decoder_options():
            self.decoder.set_options(self.svc.decoder_options(new))  # fixed: the beam flags now really apply
        self.params = new
        r.xadd(rp.ARGS_STREAM, new.redis_args(self.svc.lm_path))
        log.info("updated parameters: %s", new)
        self._reply(r, rp.DONE_UPDATING_PARAMS_STREAM, {"done": 1})

    def _logits(self, r, fields) -> None:
        try:
            extra = sorted(k.decode(errors="replace") for k in fields if k != b"logits")
            if extra or b"logits" not in fields:
                raise rp.LMProtocolError(f"{self.input}: unknown field(s) {extra}; expected only 'logits'")
            partial = self.decoder.accept_logits(rp.decode_logits(fields[b"logits"]))
        except (rp.LMProtocolError, ValueError) as exc:
            log.warning("rejected logits: %s", exc)
            self._reply(r, self.partial, {"lm_response_partial": "", "error": str(exc)})
            return
        if partial != self.last_partial:
            log.info("partial: %s", partial)
            self.last_partial = partial
        self._reply(r, self.partial, {"lm_response_partial": partial})


class Worker:
    """One server process: connection handling, the legacy protocol and/or the multi-client group."""

    def __init__(self, args, service: LMService, name: str):
        self.args = args
        self.params = ServiceParams.from_args(args)
        self.name = name
        self.role = LegacyRole(args.legacy, f"{name}:{os.getpid()}")
        self.legacy = LegacyProtocol(service, self.params, args.input_stream, args.partial_output_stream,
                                     args.final_output_stream)
        self.mc = None
        if args.multi_client == "on":
            self.mc = MultiClientWorker(service, self.params, name, args.max_sessions, args.claim_timeout_s,
                                        args.session_timeout_s)
        self.stop = False

    def _connect(self):
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        # few quick retries inside redis-py; longer outages surface here and get the loop's backoff and log line
        r = rp.connect(self.args.redis_ip, self.args.redis_port, db=self.args.redis_db,
                       password=self.args.redis_password, socket_connect_timeout=5,
                       socket_timeout=5 + BLOCK_MS / 1000, health_check_interval=30,
                       retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2))
        r.ping()
        return r

    def run(self) -> None:
        r, backoff, outage = None, 0.5, False
        while not self.stop:
            try:
                if r is None:
                    r = self._connect()
                    log.info("connected to redis at %s:%d", self.args.redis_ip, self.args.redis_port)
                    self.legacy.on_connect(r)
                    if self.mc:
                        self.mc.on_connect(r)
                    backoff, outage = 0.5, False
                self._iteration(r)
            except redis.AuthenticationError as exc:  # a subclass of ConnectionError: retrying cannot help
                raise SystemExit(f"redis authentication failed: {exc} (set --redis_password or $REDIS_PASSWORD)") from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not outage:
                    log.error("redis at %s:%d unreachable (%s); retrying with backoff",
                              self.args.redis_ip, self.args.redis_port, exc)
                    outage = True
                r = None
                self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if r is not None and self.mc:
            self.mc.shutdown(r)
        log.info("worker %s stopped", self.name)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    def _iteration(self, r) -> None:
        serving, since_ms = self.role.check(r)
        if since_ms is not None:
            self.legacy.on_connect(r, since_ms)
            self.legacy.decoder.reset()
        streams = {}
        if serving:
            self.legacy.publish_args(r)
            streams.update(self.legacy.watch())
        if self.mc:
            streams.update(self.mc.watch())
        resp = r.xread(streams, count=1, block=BLOCK_MS) if streams else None
        if not streams:
            self._sleep(BLOCK_MS / 1000)
        got = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (resp or [])}
        if serving:
            self.legacy.step(r, got)
        if self.mc:
            self.mc.step(r, got)


def _configure_logging(level: str, name: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s", force=True)


def _run_worker(args, service: LMService, name: str) -> None:
    _configure_logging(args.log_level, name)
    worker = Worker(args, service, name)

    def _stop(signum, _frame):
        log.info("signal %d: stopping after the current message", signum)
        worker.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.num_workers > 1:  # share the cores; torch is imported (if at all) after this, in the worker
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.num_workers)))
    service.ensure_components(ServiceParams.from_args(args))  # no-op unless a forked worker must load its LLM
    worker.run()


def _supervise(args, service: LMService, base: str) -> int:
    """Fork ``--num_workers`` workers (sharing the loaded graph), restart crashed ones, forward signals."""
    ctx = multiprocessing.get_context("fork")
    names = [f"{base}-w{i}" for i in range(args.num_workers)]
    procs: dict[str, multiprocessing.Process] = {}
    quick_deaths = 0
    stopping = False

    def start(name: str) -> None:
        worker_args = argparse.Namespace(**vars(args))
        if name != names[0] and args.legacy == "auto":  # worker 0 alone serves the original streams
            worker_args.legacy = "off"
        elif name == names[0] and args.legacy == "auto":
            worker_args.legacy = "on"
        p = ctx.Process(target=_run_worker, args=(worker_args, service, name), name=name, daemon=False)
        p.start()
        p.started_at = time.monotonic()
        procs[name] = p

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for n in names:
        start(n)
    log.info("started %d workers: %s", len(names), ", ".join(names))
    while procs:
        time.sleep(0.5)
        for name, p in list(procs.items()):
            if p.is_alive():
                continue
            procs.pop(name)
            p.join()
            if stopping:
                continue
            quick_deaths = quick_deaths + 1 if time.monotonic() - p.started_at < 10 else 0
            if quick_deaths >= 3:
                log.error("workers keep dying at start-up (exit code %s); giving up", p.exitcode)
                _stop(signal.SIGTERM, None)
                return 1
            log.warning("worker %s exited with code %s; restarting it under the same name", name, p.exitcode)
            start(name)
    return 0


def _prepare_llm_without_torch(args) -> None:
    """Check ``--opt_model`` before forking, converting the embedded model in a child process: torch must
    not run in the parent, or its thread pools can deadlock in the forked workers."""
    import subprocess
    import sys

    from language_model.llm_rescore import EMBEDDED_MODEL, resolve_model_path
    from language_model.smollm2 import default_cache_dir, is_converted

    if args.opt_model.lower() == EMBEDDED_MODEL and not is_converted(default_cache_dir()):
        if subprocess.run([sys.executable, "-m", "language_model.smollm2"]).returncode != 0:
            raise RuntimeError("converting the embedded SmolLM2 failed (see the log above)")
    resolve_model_path(args.opt_model, args.opt_cache_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = args.worker_name or f"{socket.gethostname()}-{os.getpid()}"
    _configure_logging(args.log_level, base)
    log.info("arguments: %s", vars(args) | {"redis_password": "***" if args.redis_password else None})
    try:
        service = LMService(args.lm_path, args.opt_model, args.opt_cache_dir, args.gpu_number, args.llm_batch_size,
                            args.lattice_pass_margin)
        params = ServiceParams.from_args(args)
        if args.num_workers == 1:
            service.ensure_components(params)
        else:  # the parent checks and prepares; each worker loads its own causal LM after the fork
            if params.rescore:
                service.ensure_components(replace(params, do_opt=0))
            if params.do_opt:
                _prepare_llm_without_torch(args)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}")
        return 2
    if args.num_workers > 1:
        return _supervise(args, service, base)
    _run_worker(args, service, args.worker_name or f"{base}-w0")
    return 0
