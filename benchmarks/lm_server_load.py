"""Benchmark: the LM server under load, black-box over its Redis protocol; prints one JSON object.

Every scenario starts its own loopback ``redis-server`` and ``language-model-standalone.py`` (toy LM of
``language_model.graph.toy_lm``, synthetic logits: quick to build, no download) and stops both afterwards.
Every loop is bounded in count and time; nothing listens beyond 127.0.0.1.

  * ``throughput``: sentences/s and per-trial p50/p95 with ``--num_workers`` 1, 2, N and several
    multi-client clients decoding tiny trials at once (a 1-worker p95 near 0.5 s is the idle poll stall);
  * ``flood_tiny`` / ``flood_no_input``: one client queues many tiny complete utterances (or requests
    that never send input), then a real client decodes a few trials: its latency, how many were answered
    within ``--timeout_s``, and how many flood utterances the server finished meanwhile;
  * ``huge``: one utterance of F frames (80 ms each) in one chunk: time to accept and to finalize (or the
    server's error), and a real client's trial sent meanwhile; ``sigterm_during_finalize``: SIGTERM 0.5 s
    into a long finalize and the time until the server exits (killed after ``--timeout_s``);
    ``over_long``: one utterance far longer than any real trial: the answer and the time to it;
  * ``evaluator``: one evaluator's trials decoded one at a time on the original streams, then pipelined
    over the multi-client protocol (``MultiClientLMClient.decode_many``, what ``evaluate_model.py
    --lm_protocol multi`` uses), with 1 and 2 workers: trials/s;
  * ``legacy_two_clients``: two evaluator-style clients on the original streams at once against
    ``--num_workers 2``: answers correct / empty / errors;
  * the server's peak RSS (all its processes together) in every scenario.

    python -m benchmarks.lm_server_load [--workers 1 2 4] [--clients 4] [--trials 10] [--frames 1000 3000 6000]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# (the imports below come after it)
from benchmarks.measure import ProcessTreeRss, latency_ms, print_result  # noqa: E402
from language_model.graph.toy_lm import build_toy_lm, long_synthetic_logits, synthetic_logits  # noqa: E402
from nejm_b2txt_utils import redis_multi_client as rmc  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, check_output_folder, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.lm_params import documented_flags  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer, stop_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("lm_server_load")
STANDALONE = REPO / "language_model" / "language-model-standalone.py"
SENTENCES = ["i need water", "please help me", "open the door", "i want to go home", "you need some water",
             "help me now", "go home now", "open the red door"]
TINY = "go home now"


class Scenario:
    """A fresh redis-server + LM server for one measurement (context manager)."""

    def __init__(self, lm_dir: Path, work: Path, name: str, *extra: str, workers: int = 1):
        self.lm_dir, self.name, self.workers = lm_dir, name, workers
        self.extra = list(extra)
        self.log_path = work / f"{name}.log"
        self.redis = RedisServer()
        self.proc: subprocess.Popen | None = None
        self.sampler: ProcessTreeRss | None = None

    def __enter__(self) -> Scenario:
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # a failed start leaves no redis-server or LM server behind
            raise

    def _start(self) -> Scenario:
        self.redis.start()
        cmd = [sys.executable, str(STANDALONE), "--lm_path", str(self.lm_dir), "--redis_ip", "127.0.0.1",
               "--redis_port", str(self.redis.port), *documented_flags(), "--num_workers", str(self.workers), "--log_level", "WARNING", *self.extra]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.sampler = ProcessTreeRss(self.proc.pid)
        self.sampler.start()
        r = self.client()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready: every worker has joined the multi-client group
            if self.proc.poll() is not None:
                raise RuntimeError(f"LM server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if r.exists(rmc.MC_REQUEST_STREAM) and len(r.xinfo_consumers(rmc.MC_REQUEST_STREAM, rmc.MC_GROUP)) \
                        >= self.workers and r.xlen(rp.ARGS_STREAM) > 0:
                    return self
            except Exception:  # noqa: BLE001 - the group may not exist yet
                pass
            time.sleep(0.1)
        raise TimeoutError(f"LM server not ready within 60 s; see {self.log_path}")

    def client(self, **kw):
        return self.redis.client(**kw)

    def peak_rss_mb(self) -> float:
        return round(self.sampler.peak_mb, 1) if self.sampler else 0.0

    def terminate(self, timeout_s: float) -> dict:
        """SIGTERM the server; seconds until it exited (SIGKILL after ``timeout_s``)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
            return {"exit_s": round(time.monotonic() - t0, 2), "exit_code": rc}
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return {"exit_s": None, "killed_after_s": timeout_s}

    def __exit__(self, *exc) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.proc is not None:
            stop_process(self.proc)
        self.redis.__exit__()


def real_client_trials(sc: Scenario, n: int, timeout_s: float, stop_on_timeout: bool = True) -> dict:
    """A real multi-client client decoding ``n`` trials one after the other."""
    client = rmc.MultiClientLMClient(sc.client(), timeout_s=timeout_s, client_id="real")
    times, correct, errors = [], 0, []
    for i in range(n):
        sentence = SENTENCES[i % len(SENTENCES)]
        t0 = time.perf_counter()
        try:
            out = client.decode_trial(synthetic_logits(sentence, seed=i))
        except (rp.LMTimeoutError, rp.LMProtocolError) as exc:
            errors.append(type(exc).__name__)
            if stop_on_timeout and isinstance(exc, rp.LMTimeoutError):
                break
            continue
        times.append(time.perf_counter() - t0)
        correct += out["candidate_sentences"][0] == sentence
    return {"latency": latency_ms(times), "answered": len(times), "asked": n, "correct": correct, "errors": errors}


def throughput(lm_dir: Path, work: Path, workers: int, clients: int, trials: int, timeout_s: float) -> dict:
    with Scenario(lm_dir, work, f"throughput_w{workers}", "--max_sessions", "1", workers=workers) as sc:
        times: list[float] = []
        counts = {"correct": 0, "errors": 0}
        lock = threading.Lock()

        def run(k: int) -> None:
            c = rmc.MultiClientLMClient(sc.client(), timeout_s=timeout_s, client_id=f"c{k}")
            for j in range(trials):
                sentence = SENTENCES[(k + j) % len(SENTENCES)]
                t = time.perf_counter()
                try:
                    out = c.decode_trial(synthetic_logits(sentence, seed=100 * k + j))
                except (rp.LMTimeoutError, rp.LMProtocolError):
                    with lock:
                        counts["errors"] += 1
                    return
                with lock:
                    times.append(time.perf_counter() - t)
                    counts["correct"] += out["candidate_sentences"][0] == sentence

        t0 = time.perf_counter()
        threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s * trials + 30)
        wall = time.perf_counter() - t0
        return {"workers": workers, "clients": clients, "trials": clients * trials, "wall_s": round(wall, 2),
                "sentences_per_s": round(len(times) / wall, 2), "trial_latency": latency_ms(times), **counts,
                "server_peak_rss_mb": sc.peak_rss_mb()}


def flood(lm_dir: Path, work: Path, kind: str, n_flood: int, real_trials: int, timeout_s: float) -> dict:
    with Scenario(lm_dir, work, f"flood_{kind}", workers=1) as sc:
        r = sc.client()
        tiny = rp.encode_logits(synthetic_logits(TINY, seed=7))
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i in range(n_flood):  # queued as fast as Redis takes them
            utt = f"flood-{i}"
            pipe.xadd(rmc.MC_REQUEST_STREAM, {"utt_id": utt})
            if kind == "tiny":
                pipe.xadd(rmc.mc_input_stream(utt), {"logits": tiny})
                pipe.xadd(rmc.mc_input_stream(utt), {"finalize": 1})
            if i % 200 == 199:
                pipe.execute()
        pipe.execute()
        queued_s = time.perf_counter() - t0
        real = real_client_trials(sc, real_trials, timeout_s)
        done = sum(1 for i in range(n_flood) if r.exists(rmc.mc_output_stream(f"flood-{i}")))
        return {"flood": kind, "flood_requests": n_flood, "queued_s": round(queued_s, 2), "real_client": real,
                "flood_answered_meanwhile": done, "wall_s": round(time.perf_counter() - t0, 2),
                "server_peak_rss_mb": sc.peak_rss_mb()}


def huge_logits(frames: int, seed: int = 0) -> np.ndarray:
    return long_synthetic_logits(frames, SENTENCES, seed)


def huge(lm_dir: Path, work: Path, frame_counts: list[int], timeout_s: float, max_frames: int = 0) -> dict:
    out: dict = {"utterances": [], "max_frames_per_utterance": max_frames or "server default"}
    extra = ["--max_frames_per_utterance", str(max_frames)] if max_frames else []
    with Scenario(lm_dir, work, "huge", *extra, workers=1) as sc:
        for frames in frame_counts:
            x = huge_logits(frames)
            client = rmc.MultiClientLMClient(sc.client(), timeout_s=timeout_s, client_id=f"huge{frames}")
            entry: dict = {"frames": frames, "mb": round(x.nbytes / 2**20, 1)}
            utt = client.start_utterance()
            t0 = time.perf_counter()
            try:
                client.send_chunk(utt, x)
                entry["accept_s"] = round(time.perf_counter() - t0, 2)
                t1 = time.perf_counter()
                result: dict = {}
                fin = threading.Thread(target=lambda: result.update(client.finish(utt)))  # noqa: B023
                fin.start()
                time.sleep(0.2)
                real = real_client_trials(sc, 1, timeout_s)  # a real client meanwhile
                fin.join(timeout_s)
                entry["finalize_s"] = round(time.perf_counter() - t1, 2) if result else None
                entry["words_in_best"] = len(result["candidate_sentences"][0].split()) if result else None
                entry["real_client_latency_ms"] = real["latency"].get("p50_ms")
            except (rp.LMTimeoutError, rp.LMProtocolError) as exc:
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                client.abandon(utt)
            entry["server_peak_rss_mb_so_far"] = sc.peak_rss_mb()
            out["utterances"].append(entry)
            log.info("huge: %s", entry)
            if entry.get("finalize_s") is None and "error" not in entry:
                break  # the server is stuck: larger ones would be too
        out["server_peak_rss_mb"] = sc.peak_rss_mb()
    return out


def sigterm_during_finalize(lm_dir: Path, work: Path, frames: int, timeout_s: float) -> dict:
    """SIGTERM 0.5 s into the finalize of a ``frames``-long utterance: seconds until the server exited."""
    with Scenario(lm_dir, work, "sigterm", workers=1) as sc:
        client = rmc.MultiClientLMClient(sc.client(), timeout_s=timeout_s, client_id="sigterm")
        utt = client.start_utterance()
        try:
            client.send_chunk(utt, huge_logits(frames, seed=1))
        except (rp.LMTimeoutError, rp.LMProtocolError) as exc:
            return {"frames": frames, "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        client.r.xadd(rmc.mc_input_stream(utt.utt_id), {"finalize": 1})
        time.sleep(0.5)
        return {"frames": frames, **sc.terminate(timeout_s)}


def over_long(lm_dir: Path, work: Path, frames: int, timeout_s: float) -> dict:
    """One ``frames``-long chunk (far above any real trial): how the server answers it, and a real client after."""
    with Scenario(lm_dir, work, "over_long", workers=1) as sc:
        client = rmc.MultiClientLMClient(sc.client(), timeout_s=timeout_s, client_id="long")
        x = huge_logits(frames, seed=2)
        entry: dict = {"frames": frames, "mb": round(x.nbytes / 2**20, 1)}
        t0 = time.perf_counter()
        try:
            out = client.decode_trial(x)
            entry["answer"] = f"final with {len(out['candidate_sentences'][0].split())} words"
        except (rp.LMTimeoutError, rp.LMProtocolError) as exc:
            entry["answer"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        entry["answer_s"] = round(time.perf_counter() - t0, 2)
        entry["real_client_after"] = real_client_trials(sc, 1, timeout_s)
        entry["server_peak_rss_mb"] = sc.peak_rss_mb()
        return entry


def evaluator(lm_dir: Path, work: Path, workers: int, trials: int, frames: int, timeout_s: float) -> dict:
    """One evaluator's LM side: ``trials`` utterances of ``frames`` frames, decoded one at a time on the
    original streams, then pipelined over the multi-client protocol (``decode_many``, 2 per worker)."""
    items = [(i, huge_logits(frames, seed=10 + i)) for i in range(trials)]
    out: dict = {"workers": workers, "trials": trials, "frames": frames}
    with Scenario(lm_dir, work, f"evaluator_w{workers}", workers=workers) as sc:
        legacy = rp.RemoteLMClient(sc.client(), timeout_s=timeout_s)
        t0 = time.perf_counter()
        for _, x in items:
            legacy.decode_trial(x)
        out["single_client_streams_trials_per_s"] = round(trials / (time.perf_counter() - t0), 3)
        mc = rmc.MultiClientLMClient(sc.client(), timeout_s=timeout_s, client_id="evaluator")
        if hasattr(mc, "decode_many"):
            t0 = time.perf_counter()
            n = sum(1 for _ in mc.decode_many(iter(items), in_flight=2 * workers))
            out["multi_client_pipelined_trials_per_s"] = round(n / (time.perf_counter() - t0), 3)
        else:
            out["multi_client_pipelined_trials_per_s"] = None  # the client has no pipelined decode
        out["server_peak_rss_mb"] = sc.peak_rss_mb()
    return out


def legacy_two_clients(lm_dir: Path, work: Path, trials: int, timeout_s: float) -> dict:
    with Scenario(lm_dir, work, "legacy_two_clients", workers=2) as sc:
        counts = {"correct": 0, "empty": 0, "wrong": 0, "errors": 0, "timeouts": 0}
        lock = threading.Lock()

        def run(k: int) -> None:
            c = rp.RemoteLMClient(sc.client(), timeout_s=timeout_s)
            for j in range(trials):
                sentence = SENTENCES[(3 * k + j) % len(SENTENCES)]
                try:
                    got = c.decode_trial(synthetic_logits(sentence, seed=j))["candidate_sentences"][0]
                    key = "correct" if got == sentence else ("empty" if got == "" else "wrong")
                except rp.LMTimeoutError:
                    key = "timeouts"
                except rp.LMProtocolError:
                    key = "errors"
                with lock:
                    counts[key] += 1
                if key == "timeouts":
                    return

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s * trials + 30)
        return {"clients": 2, "trials_each": trials, **counts}


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="keep the LM folder and server logs here (default: a temp folder)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="--num_workers values to compare")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients in the throughput runs")
    p.add_argument("--trials", type=int, default=10, help="trials per client in the throughput runs")
    p.add_argument("--flood", type=int, default=1000, help="flood requests per flood scenario")
    p.add_argument("--real_trials", type=int, default=5, help="trials of the real client under a flood")
    p.add_argument("--frames", type=int, nargs="+", default=[1000, 3000, 6000],
                   help="huge-utterance sizes in frames (80 ms each)")
    p.add_argument("--huge_max_frames", type=int, default=0,
                   help="--max_frames_per_utterance of the huge-utterance server, to time finalize beyond the "
                        "default cap (0: the server's default; a server without the flag needs 0)")
    p.add_argument("--sigterm_frames", type=int, default=3000, help="utterance size of the SIGTERM measurement")
    p.add_argument("--over_long_frames", type=int, default=60000,
                   help="one utterance far above any real trial (60000 frames = 80 min, 9.4 MB)")
    p.add_argument("--timeout_s", type=float, default=20.0, help="bound of every wait (answers, SIGTERM)")
    p.add_argument("--eval_trials", type=int, default=16, help="trials of the evaluator comparison")
    p.add_argument("--eval_frames", type=int, default=300, help="frames per trial of the evaluator comparison")
    p.add_argument("--skip", nargs="*", default=[], choices=("throughput", "flood", "huge", "evaluator", "legacy"))
    args = p.parse_args(argv)
    if min(args.workers) < 1 or args.clients < 1 or args.trials < 1 or args.timeout_s <= 0:
        raise ConfigError("--workers, --clients and --trials: expected >= 1, and --timeout_s > 0")
    check_output_folder("--work", args.work)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="lm_server_load_") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        lm_dir = work / "toy_lm"
        if not (lm_dir / "TLG.fst").exists():
            build_toy_lm(lm_dir)
        result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                    "load_average_at_start": round(os.getloadavg()[0], 2)},
                        "lm": "toy (language_model.graph.toy_lm, 20 words)", "timeout_s": args.timeout_s}
        t0 = time.perf_counter()
        if "throughput" not in args.skip:
            result["throughput"] = []
            for w in args.workers:
                entry = throughput(lm_dir, work, w, args.clients, args.trials, args.timeout_s)
                log.info("throughput: %s", entry)
                result["throughput"].append(entry)
            base = result["throughput"][0]["sentences_per_s"] or float("nan")
            for e in result["throughput"]:
                e["speedup_vs_first"] = round(e["sentences_per_s"] / base, 2)
        if "flood" not in args.skip:
            for kind in ("tiny", "no_input"):
                result[f"flood_{kind}"] = flood(lm_dir, work, kind, args.flood, args.real_trials, args.timeout_s)
                log.info("flood %s: %s", kind, result[f"flood_{kind}"])
        if "huge" not in args.skip:
            result["huge"] = huge(lm_dir, work, args.frames, args.timeout_s, args.huge_max_frames)
            result["sigterm_during_finalize"] = sigterm_during_finalize(lm_dir, work, args.sigterm_frames,
                                                                        args.timeout_s)
            log.info("sigterm: %s", result["sigterm_during_finalize"])
            result["over_long"] = over_long(lm_dir, work, args.over_long_frames, args.timeout_s)
            log.info("over long: %s", result["over_long"])
        if "evaluator" not in args.skip:
            result["evaluator"] = []
            for w in sorted({min(args.workers), 2}):
                entry = evaluator(lm_dir, work, w, args.eval_trials, args.eval_frames, args.timeout_s)
                log.info("evaluator: %s", entry)
                result["evaluator"].append(entry)
        if "legacy" not in args.skip:
            result["legacy_two_clients"] = legacy_two_clients(lm_dir, work, 10, args.timeout_s)
            log.info("legacy: %s", result["legacy_two_clients"])
        result["load_average_at_end"] = round(os.getloadavg()[0], 2)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
