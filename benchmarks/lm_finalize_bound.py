"""Benchmark: finalize time on uninformative logits (an early checkpoint's, near-uniform), and SIGTERM during it.

The logits are ``N(0, 0.1)`` noise over the 41 classes (max softmax ~0.04; an early 1x32 GRU's were ~0.12), the
LM the wordfreq 1-gram (126k words, built with ``language_model/build_lm.py --unigram_wordfreq`` unless
``--lm_path`` names a folder), the server flags the README's (``--acoustic_scale 0.325 --blank_penalty 90``,
default beams). Reported per frame count: the finalize seconds (lattice pass + n-best) with the defaults (the
bounded finalize: ``lattice_max_arcs`` 3000) and, with ``--unbounded_timeout_s S``, without the cap
(``lattice_max_arcs`` huge: the finalize before the bound; measured in a child process stopped after ``S``
seconds, then ``null`` and ``timed_out``); the lattice arcs at ``lattice_beam``; and through a real server, the
seconds from SIGTERM to exit while it finalizes ``--sigterm_frames`` such frames.

    python -m benchmarks.lm_finalize_bound [--lm_path DIR] [--frames 20 40 52] [--unbounded_timeout_s 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import print_result
from nejm_b2txt_utils.cli_errors import ConfigError, check_flags, check_output_folder, exit_2_on_bad_input
from nejm_b2txt_utils.lm_params import DOCUMENTED_INVOCATION

REPO = Path(__file__).resolve().parents[1]
README_FLAGS = {k: DOCUMENTED_INVOCATION[k] for k in ("acoustic_scale", "blank_penalty")}  # the README's server flags


def near_uniform(frames: int, seed: int = 0) -> np.ndarray:
    """``[frames, 41]`` float32 logits of N(0, 0.1) noise."""
    return np.random.default_rng(seed).normal(0, 0.1, (frames, 41)).astype(np.float32)


def finalize_seconds(lm_path: str, frames: int, max_arcs: int) -> dict:
    """One utterance: its finalize time, hypotheses and the lattice arcs at ``lattice_beam``."""
    from language_model.decoding.lattice import read_lattice
    from language_model.decoding.wfst import CtcWfstDecoder, LMResources
    from nejm_b2txt_utils.lm_params import LMParams

    res = LMResources(lm_path)
    dec = CtcWfstDecoder(res, LMParams(**README_FLAGS, lattice_max_arcs=max_arcs))
    dec.accept_logits(near_uniform(frames))
    raw = dec._lattice_pass(np.concatenate(dec._frames), dec.opts.lattice_beam)
    arcs = len(read_lattice(raw.get_raw_lattice(True)[1]).flat)
    t0 = time.perf_counter()
    hyps = dec.finalize()
    return {"seconds": round(time.perf_counter() - t0, 3), "hypotheses": len(hyps), "lattice_arcs": arcs}


def _child(lm_path: str, frames: int, max_arcs: int, queue) -> None:
    queue.put(finalize_seconds(lm_path, frames, max_arcs))


def timed_child(lm_path: str, frames: int, max_arcs: int, timeout_s: float) -> dict:
    """:func:`finalize_seconds` in a child process, stopped after ``timeout_s`` (loading excluded from the time)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(lm_path, frames, max_arcs, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout_s + 60)  # + loading the LM folder
    except Exception:  # noqa: BLE001 - queue.Empty: it ran past the limit
        return {"seconds": None, "timed_out": True, "limit_s": timeout_s}
    finally:
        proc.kill()
        proc.join()


def sigterm_seconds(lm_path: str, frames: int) -> dict:
    """Seconds from SIGTERM to exit while a real server finalizes ``frames`` near-uniform frames."""
    from nejm_b2txt_utils import redis_protocol as rp
    from nejm_b2txt_utils.redis_server import RedisServer
    from tests.language_model._lm_testing import OriginalClient, ServerProcess, wait_until

    with RedisServer() as rs, tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(lm_path), rs.port, log_path=Path(tmp) / "server.log").start()
        try:
            r = rs.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 300, "server start")
            client = OriginalClient(r, timeout_s=600)
            client.reset()
            for k in range(0, frames, 100):
                client.send_logits(near_uniform(min(100, frames - k), seed=k + 1))
            r.xadd(rp.FINALIZE_STREAM, {"done": 0})
            time.sleep(1.0)
            busy = server.proc.poll() is None
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=600)
            return {"frames": frames, "still_finalizing_at_sigterm": busy, "exit_status": rc,
                    "seconds_to_exit": round(time.monotonic() - t0, 3)}
        finally:
            server.stop()


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm_path", help="LM folder (default: build the wordfreq 1-gram into --work)")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "benchmarks" / "lm_finalize_bound")
    p.add_argument("--frames", type=int, nargs="+", default=[20, 40, 52])
    p.add_argument("--unbounded_timeout_s", type=float, default=0,
                   help="also time the finalize without the cap, stopped after this many seconds (0: skip)")
    p.add_argument("--sigterm_frames", type=int, default=600, help="0: skip the SIGTERM measurement")
    args = p.parse_args(argv)
    for frames in args.frames:  # was a numpy traceback for 0 or negative counts
        check_flags(argparse.Namespace(frames=frames), {"frames": 1})
    check_flags(args, {"unbounded_timeout_s": 0, "sigterm_frames": 0})
    check_output_folder("--work", args.work)
    if args.lm_path is not None and not (Path(args.lm_path) / "TLG.fst").is_file():
        raise ConfigError(f"--lm_path {args.lm_path}: no TLG.fst there; expected an LM folder (build_lm.py)")
    lm_path = args.lm_path
    if lm_path is None:
        from language_model import build_lm

        lm_path = str(args.work / "wordfreq_1gram")
        if build_lm.main(["--unigram_wordfreq", "--out", lm_path]) != 0:
            return 1
    out: dict = {"benchmark": "lm_finalize_bound", "lm_path": lm_path, "flags": README_FLAGS,
                 "machine": platform.processor() or platform.machine(), "finalize": {}}
    for frames in args.frames:
        row = {"bounded": finalize_seconds(lm_path, frames, 3000)}
        if args.unbounded_timeout_s > 0:
            row["unbounded"] = timed_child(lm_path, frames, 10**9, args.unbounded_timeout_s)
        out["finalize"][str(frames)] = row
        print(json.dumps({frames: row}), file=sys.stderr)
    if args.sigterm_frames:
        out["sigterm"] = sigterm_seconds(lm_path, args.sigterm_frames)
    print_result(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
