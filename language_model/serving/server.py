"""The LM server's processes: one Redis loop per worker, a supervisor for ``--num_workers N``, ``main``.

One blocking XREAD (100 ms) covers all watched streams of both protocols: the original single-client
streams (:mod:`language_model.serving.legacy`) and the multi-client group
(:mod:`language_model.serving.multi_client`); both answer through one message handler
(:mod:`language_model.serving.handler`).

Fixes and additions (each also noted where it happens):
  * Redis disconnects are retried with exponential backoff (0.5 s .. 5 s), logged once per outage;
  * ``--redis_password`` (default ``$REDIS_PASSWORD``); the server listens on nothing itself;
  * SIGTERM/SIGINT during a long native call (lattice pass, n-best search) end the worker at once
    (:mod:`language_model.decoding.native_calls`); elsewhere they finish the current message and stop; a message still running after
    ``STOP_GRACE_S`` (1 s) is abandoned: the original's streams get an error answer, a multi-client
    utterance stays pending for the next worker (the original ignored SIGTERM for as long as a request ran);
    ``--num_workers N`` forks N workers that share the loaded graph, restarts a crashed one under its
    name, and forwards signals;
  * a bad start-up flag or LM folder is one line and exit status 2.
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

from language_model.decoding.native_calls import stop_signals_end_native_calls
from language_model.serving.args import parse_args
from language_model.serving.legacy import LegacyProtocol, LegacyRole
from language_model.serving.multi_client import MultiClientWorker
from language_model.serving.service import LMService
from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.cli_errors import print_bad_input
from nejm_b2txt_utils.lm_params import LMParams

log = logging.getLogger("language_model.serving.server")
BLOCK_MS = 100
STOP_GRACE_S = 1.0


class ServerStopping(BaseException):  # not an Exception: the handlers catch those and answer
    """Raised in the main thread when a stop signal's grace period ends while a message is being handled."""


class Worker:
    """One server process: connection handling, the legacy protocol and/or the multi-client group."""

    def __init__(self, args, service: LMService, name: str):
        """Args:
            args: the parsed flags.
            service: the process's loaded resources.
            name: the worker's name (consumer name in the multi-client group).
        """
        self.args = args
        self.params = LMParams.from_namespace(args)
        self.name = name
        self.role = LegacyRole(args.legacy, f"{name}:{os.getpid()}")
        self.legacy = LegacyProtocol(service, self.params, args.input_stream, args.partial_output_stream,
                                     args.final_output_stream)
        self.mc = None
        if args.multi_client == "on":
            self.mc = MultiClientWorker(service, self.params, name, args.max_sessions, args.claim_timeout_s,
                                        args.session_timeout_s, args.max_pending_per_client,
                                        args.request_input_timeout_s)
        self.stop = False
        self.busy = False  # handling a message (a stop signal then waits STOP_GRACE_S, then abandons it)

    def _connect(self):
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        # few quick retries inside redis-py; longer outages surface here and get the loop's backoff and log line
        r = rp.connect(self.args.redis_ip, self.args.redis_port, db=self.args.redis_db,
                       password=self.args.redis_password, socket_connect_timeout=5,
                       socket_timeout=5 + BLOCK_MS / 1000, health_check_interval=30,
                       retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
                       client_name=f"{rp.LM_SERVER_CLIENT_NAME}:{self.name}")  # clients tell slow from dead
        r.ping()
        return r

    def run(self) -> None:
        """Serve until :attr:`stop` (set by SIGTERM/SIGINT); Redis outages are retried with backoff."""
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
            except ServerStopping:
                self.busy = False
                log.warning("stop signal: abandoned the message still running after %.0f s", STOP_GRACE_S)
                self._abandon(r)
                break
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
            except redis.RedisError as exc:  # a reply that is not Redis's protocol, an unexpected server error
                if r is None:  # at connect: something else listens there, retrying cannot help
                    raise SystemExit(f"error: {self.args.redis_ip}:{self.args.redis_port} did not answer as a Redis "
                                     f"server ({exc}); check --redis_ip / --redis_port") from None
                log.error("redis error (%s); reconnecting", exc)
                r = None
                self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if r is not None and self.mc:
            self.mc.shutdown(r)
        log.info("worker %s stopped", self.name)

    def _abandon(self, r) -> None:
        """After an abandoned message: answer the original client with an error (multi-client utterances
        stay pending in the group: the worker's successor or another worker replays them)."""
        if r is None:
            return
        try:
            r.connection_pool.disconnect()  # the interrupted call may have left a reply half read
            self.legacy.abandon(r, f"{rp.SERVER_STOPPING} (SIGTERM); the request was abandoned")
        except (redis.RedisError, OSError) as exc:
            log.warning("could not answer the abandoned request: %s", exc)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    def _iteration(self, r) -> None:
        serving, since_ms = self.role.check(r)
        if since_ms is not None:
            self.legacy.on_connect(r, since_ms)
            self.legacy.session.decoder.reset()
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
        self.busy = True
        try:
            if serving:
                self.legacy.step(r, got)
            if self.mc:
                self.mc.step(r, got)
        finally:
            self.busy = False


def _configure_logging(level: str, name: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s", force=True)


def _run_worker(args, service: LMService, name: str) -> None:
    _configure_logging(args.log_level, name)
    worker = Worker(args, service, name)

    def _stop(signum, _frame):
        log.info("signal %d: stopping after the current message (at most %.0f s)", signum, STOP_GRACE_S)
        worker.stop = True
        if worker.busy:
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_S)

    def _grace_over(_signum, _frame):
        if worker.busy:  # runs between two Python bytecodes: a long C call (a lattice pass) ends first
            raise ServerStopping

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGALRM, _grace_over)
    stop_signals_end_native_calls()  # a seconds-long C++ call (lattice pass) no longer delays SIGTERM
    if args.num_workers > 1:  # share the cores; torch is imported (if at all) after this, in the worker
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.num_workers)))
    service.ensure_components(LMParams.from_namespace(args))  # no-op unless a forked worker must load its LLM
    try:
        worker.run()
    finally:  # no grace timer may outlive the loop: at interpreter exit SIGALRM's default action kills
        signal.setitimer(signal.ITIMER_REAL, 0)


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

    from language_model.decoding.llm_rescore import EMBEDDED_MODEL, resolve_model_path
    from language_model.decoding.smollm2 import default_cache_dir, is_converted

    if args.opt_model.lower() == EMBEDDED_MODEL and not is_converted(default_cache_dir()):
        if subprocess.run([sys.executable, "-m", "language_model.decoding.smollm2"]).returncode != 0:
            raise RuntimeError("converting the embedded SmolLM2 failed (see the log above)")
    resolve_model_path(args.opt_model, args.opt_cache_dir)


def main(argv: list[str] | None = None) -> int:
    """``language-model-standalone.py``: parse the flags, load the LM folder, serve until SIGTERM.

    Args:
        argv: the flags (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean stop, 1 when workers keep dying, 2 on a bad flag or LM folder.
    """
    args = parse_args(argv)
    base = args.worker_name or f"{socket.gethostname()}-{os.getpid()}"
    _configure_logging(args.log_level, base)
    log.info("arguments: %s", vars(args) | {"redis_password": "***" if args.redis_password else None})
    try:
        params = LMParams.from_namespace(args)
        service = LMService(args.lm_path, args.opt_model, args.opt_cache_dir, params)
        if args.num_workers == 1:
            service.ensure_components(params)
        else:  # the parent checks and prepares; each worker loads its own causal LM after the fork
            # every grammar the workers need, loaded (and checked: a damaged file is this one-line error, exit 2)
            # before the fork, shared copy-on-write
            service.ensure_components(replace(params, do_opt=0))
            if params.do_opt:
                _prepare_llm_without_torch(args)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        return print_bad_input(exc)  # one line on stderr, not a log record too
    if args.num_workers > 1:
        return _supervise(args, service, base)
    _run_worker(args, service, args.worker_name or f"{base}-w0")
    return 0
