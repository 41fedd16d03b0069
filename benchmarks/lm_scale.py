"""Benchmark: n-gram LMs at scale, three ways of serving the same LM; prints one JSON object.

A size sweep (``--sizes``, tokens of generated text) x orders (``--orders``). The corpus (``benchmarks.zipf_text``, streamed)
is ``lm_decode_latency.zipf_corpus``'s distribution drawn with numpy: sentences of 4-14 words drawn i.i.d. from the 30k most frequent English words that
have a CMU pronunciation, with wordfreq's frequencies (Zipf-like; no G2P, so the build measures the n-gram
work). For each (size, order), ``language_model/build_lm.py --vocab corpus`` builds:

* ``single_tlg``: today's design, one TLG of the unpruned LM held in RAM (only up to ``--single_max_ngrams``;
  built with ``--streamed`` too, its store removed);
* ``two_pass``: ``build_lm.py --first_pass_ngrams N`` (the streamed build): a first-pass TLG pruned to N n-grams
  and the unpruned LM as an n-gram store (``ngram_store/``; converted from ``lm_no_prune.arpa`` by
  ``convert_lm.py`` if the build wrote none), memory-mapped; the server's ``exact_ngram`` stage scores each
  100-best with the full LM;
* ``peer``: flashlight-text's LexiconDecoder over KenLM (``decoder_vs_peer.peer_worker``, envs/bench_peer) on the
  same unpruned ARPA and lexicon at the lab's documented defaults (beam 1000, token beam 41, beam threshold 50,
  LM weight 2.5, blank penalty 9; word score 0).

Per case: n-gram counts, build wall and peak RSS, disk, start-up (load until the first utterance can be decoded)
and peak RSS of a fresh decoding process, ms per utterance p50/p95 and WER over ``--n_sentences`` sentences drawn
from the corpus with synthetic logits (``toy_lm.synthetic_logits`` over the lexicon, ``--peak``; the demo's
``results.pkl`` has the original's vocabulary, which a generated corpus does not cover). For the store alone:
bytes per n-gram, open time and RSS after opening, ms to score one 100-best of 12-word sentences.

    envs/b2txt25_lm/bin/python -m benchmarks.lm_scale --sizes 1e6,1e7 --orders 3,4 --work runs/lm_scale
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# (the imports below come after it)
# reused: the peer's set-up and decoding workers, the test sentences, build_lm.py runs with their build_info
from benchmarks import decoder_vs_peer, lm_decode_latency, tlg_build  # noqa: E402
from benchmarks.measure import percentile, print_result  # noqa: E402
from benchmarks.zipf_text import write_zipf_corpus  # noqa: E402
from nejm_b2txt_utils.cli_errors import (  # noqa: E402
    ConfigError,
    check_output_file,
    check_output_folder,
    exit_2_on_bad_input,
)
from nejm_b2txt_utils.lm_params import DOCUMENTED_INVOCATION  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("lm_scale")
CONVERT_LM = REPO / "language_model" / "convert_lm.py"
OURS = {**DOCUMENTED_INVOCATION, "gpu_number": -1}  # the README's server flags
PEER = {"beam_size": 1000, "beam_threshold": 50.0, "lm_weight": 2.5, "word_score": 0.0, "blank_penalty": 9.0}


def _mb(path: Path) -> float:
    if path.is_dir():
        return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)
    return round(path.stat().st_size / 2**20, 2) if path.exists() else 0.0


def _convert(arpa: Path, store: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(CONVERT_LM), "--arpa", str(arpa), "--out", str(store)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_lm.py --arpa {arpa} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": out["peak_rss_mb"],
            "bytes_per_ngram": out["bytes_per_ngram"], "store_mb": round(out["bytes"] / 2**20, 2)}


def store_worker(store: str, words_txt: str) -> dict:
    """Open a store in this fresh process and score 100-bests (run by ``--worker store``).

    Args:
        store: the store folder.
        words_txt: the LM folder's ``words.txt`` (the ids the server scores).

    Returns:
        ``open_s``, ``rss_mb_before``/``rss_mb_after_open`` (VmRSS), ``ms_per_nbest`` p50/p95 (100 sentences of
        12 random words, 30 different n-bests).
    """
    from language_model.decoding.ngram_rescore import StoreTarget
    from nejm_b2txt_utils.symbol_table import symbols_by_id

    def rss() -> float:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS:"))

    words = symbols_by_id(words_txt)
    before = rss()
    t0 = time.perf_counter()
    target = StoreTarget(store, words)
    open_s = time.perf_counter() - t0
    after = rss()
    rng = np.random.default_rng(0)
    real = [i for i, w in enumerate(words) if not w.startswith(("#", "<"))]
    ms = []
    for _ in range(30):
        nbest = [tuple(rng.choice(real, size=12)) for _ in range(100)]
        t = time.perf_counter()
        target.exact_costs(nbest)
        ms.append(1000 * (time.perf_counter() - t))
    return {"open_s": round(open_s, 3), "rss_mb_before_open": round(before, 1), "rss_mb_after_open": round(after, 1),
            "ms_per_100best_p50": percentile(ms, 50, 2), "ms_per_100best_p95": percentile(ms, 95, 2)}


def _run_store_worker(store: Path, words_txt: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="lm_scale-") as tmp:
        dst = Path(tmp) / "out.json"
        proc = subprocess.run([sys.executable, "-m", "benchmarks.lm_scale", "--worker", "store", str(store),
                               str(words_txt), "--worker_out", str(dst)], capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"store worker failed:\n{proc.stderr[-2000:]}")
        return json.loads(dst.read_text())


def _decode(kind: str, lm_path: Path, values: dict, logits: list, refs: list[str], python: str) -> dict:
    from nejm_b2txt_utils.metrics import word_error_rate

    out = decoder_vs_peer.run_worker(kind, {"lm_path": str(lm_path), "param_sets": [values], "logits": logits},
                                     python)
    ms = np.asarray(out["ms"][0])
    return {"startup_s": round(out["startup_s"], 2), "peak_rss_mb": round(out["peak_rss_mb"], 1),
            "ms_per_utt_p50": percentile(ms, 50), "ms_per_utt_p95": percentile(ms, 95),
            "wer": round(float(word_error_rate(refs, out["hyps"][0]).rate), 4)}


def _build(argv: list[str], out: Path, reuse: bool) -> dict:
    """Build an LM folder (``tlg_build.run_build``), or with ``reuse`` take a finished one's ``build_info.json``."""
    if reuse and (out / "build_info.json").is_file() and (out / "TLG.fst").is_file():
        recorded = json.loads((out / "build_info.json").read_text())
        log.info("reusing %s (built in %.0f s)", out, recorded["total_seconds"])
        info = {"reused": True, "build_seconds": recorded["total_seconds"], "peak_rss_mb": recorded["peak_rss_mb"],
                "vocabulary": recorded["vocabulary"], "ngrams": recorded["ngrams"],
                "tlg_mb": round(recorded["tlg_bytes"] / 2**20, 1)}
    else:
        info = tlg_build.run_build(argv, out)
    info["disk_mb"] = {p.name: _mb(p) for p in sorted(out.iterdir()) if p.name.endswith((".fst", ".arpa"))
                       or p.name == "ngram_store"}
    return info


def sweep_case(corpus: Path, order: int, work: Path, args, peer_python: Path | None) -> dict:
    """One (size, order): build the two-pass folder (and the single TLG if it fits), decode with all three."""
    from language_model.graph.lexicon import read_lexicon
    from language_model.graph.toy_lm import synthetic_logits

    case: dict = {"order": order}
    two = work / f"two_pass_o{order}"
    log.info("building the pruned first pass + unpruned ARPA (order %d) in %s", order, two)
    case["two_pass_build"] = _build(["--corpus", str(corpus), "--order", str(order), "--vocab", "corpus",
                                     "--first_pass_ngrams", str(int(args.first_pass_ngrams)), "--keep_unpruned",
                                     *args.build_args], two, args.reuse)
    full_arpa = two / "lm_no_prune.arpa"
    if not (two / "ngram_store").is_dir():
        case["store_conversion"] = _convert(full_arpa, two / "ngram_store")
    header = json.loads((two / "ngram_store" / "header.json").read_text())
    case["ngrams_unpruned"] = header["counts"]
    case["ngrams_first_pass"] = case["two_pass_build"]["ngrams"]
    case["store"] = {"mb": _mb(two / "ngram_store"),
                     "bytes_per_ngram": round(sum(header["files"].values()) / sum(header["counts"]), 2),
                     **_run_store_worker(two / "ngram_store", two / "words.txt")}
    lexicon = read_lexicon(two / "lexicon.txt")
    refs = lm_decode_latency.test_sentences(corpus, lexicon, args.n_sentences, seed=order)
    logits = [synthetic_logits(s, seed=i, peak=args.peak, lexicon=lexicon) for i, s in enumerate(refs)]
    case["sentences"] = len(refs)
    case["two_pass"] = _decode("ours", two, OURS, logits, refs, sys.executable)
    log.info("two-pass: %s", case["two_pass"])
    if sum(case["ngrams_unpruned"]) <= args.single_max_ngrams:
        single = work / f"single_o{order}"
        log.info("building the single unpruned TLG (order %d)", order)
        case["single_tlg_build"] = _build(["--corpus", str(corpus), "--order", str(order), "--vocab", "corpus",
                                           "--streamed", *args.build_args], single, args.reuse)
        shutil.rmtree(single / "ngram_store", ignore_errors=True)  # today's design: the TLG alone
        case["single_tlg"] = _decode("ours", single, OURS, logits, refs, sys.executable)
        log.info("single TLG: %s", case["single_tlg"])
    else:
        case["single_tlg"] = f"skipped: {sum(case['ngrams_unpruned'])} n-grams > --single_max_ngrams"
    if peer_python is not None:
        peer_dir = work / f"peer_o{order}"
        peer_dir.mkdir(exist_ok=True)
        for name, src in (("lm.arpa", full_arpa), ("lexicon.txt", two / "lexicon.txt")):
            (peer_dir / name).unlink(missing_ok=True)
            (peer_dir / name).symlink_to(src.resolve())
        case["peer"] = _decode("peer", peer_dir, PEER, logits, refs, str(peer_python))
        log.info("peer: %s", case["peer"])
    return case


def _numbers(flag: str, text: str, low: float, what: str, integers: bool = False) -> list:
    """A comma list of finite numbers >= ``low`` (``1e6`` allowed unless ``integers``).

    Raises:
        ConfigError: naming ``flag`` and the first value that is not one.
    """
    out = []
    for item in text.split(","):
        try:
            value = int(item) if integers else float(item)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            kind = "integers" if integers else "numbers"
            raise ConfigError(f"{flag}: expected comma-separated {kind} >= {low:g} ({what}), got {item.strip()!r}")
        out.append(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2e5", help="corpus sizes in tokens, comma-separated (default 2e5: minutes)")
    p.add_argument("--orders", default="3", help="n-gram orders, comma-separated (default 3)")
    p.add_argument("--first_pass_ngrams", type=float, default=3e5,
                   help="n-grams of the pruned first-pass LM (build_lm.py --first_pass_ngrams; default 3e5)")
    p.add_argument("--single_max_ngrams", type=float, default=3e6,
                   help="build the single unpruned TLG only up to this many n-grams (default 3e6)")
    p.add_argument("--n_sentences", type=int, default=20, help="test sentences per case (default 20)")
    p.add_argument("--peak", type=float, default=5.0, help="logit peak of the synthetic posteriors (default 5)")
    p.add_argument("--no_peer", action="store_true", help="leave out flashlight-text + KenLM")
    p.add_argument("--build_args", nargs="*", default=[], help="extra build_lm.py flags for every build")
    p.add_argument("--work", type=Path, help="keep corpora and LM folders here (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true",
                   help="take LM folders already built in --work (their build_info.json) instead of rebuilding")
    p.add_argument("--out", type=Path, help="also write the JSON here (atomically)")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "STORE", "WORDS"), help=argparse.SUPPRESS)
    p.add_argument("--worker_out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = [int(v) for v in _numbers("--sizes", args.sizes, 1000, "token counts")]
    args.orders = _numbers("--orders", args.orders, 2, "n-gram orders", integers=True)
    for flag, value, low in (("--first_pass_ngrams", args.first_pass_ngrams, 1),
                             ("--single_max_ngrams", args.single_max_ngrams, 0), ("--n_sentences", args.n_sentences, 1),
                             ("--peak", args.peak, 1e-6)):
        if not math.isfinite(value) or value < low:
            raise ConfigError(f"{flag}: expected a number >= {low:g}, got {value:g}")
    check_output_folder("--work", args.work)
    check_output_file("--out", args.out)
    return args


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:  # --worker store STORE WORDS_TXT --worker_out JSON (a fresh process: its own RSS)
        store, words_txt, dst = args.worker[1], args.worker[2], args.worker_out
        Path(dst).write_text(json.dumps(store_worker(store, words_txt)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    peer_python = None
    if not args.no_peer:
        peer_python = decoder_vs_peer.PEER_ENV / "bin" / "python"
        if not peer_python.exists():
            log.info("setting up the peer in %s", decoder_vs_peer.PEER_ENV)
            peer_python = decoder_vs_peer.setup_peer_env()
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_average_at_start": os.getloadavg()[0]},
                    "corpus": "i.i.d. words of the 30k most frequent CMU words, wordfreq frequencies, 4-14 per "
                              "sentence",
                    "ours_params": OURS, "peer_params": PEER, "first_pass_ngrams": args.first_pass_ngrams,
                    "runs": []}
    with tempfile.TemporaryDirectory(prefix="lm_scale-") as tmp:
        work = args.work or Path(tmp)
        for size in args.sizes:
            folder = work / f"{size:.0e}".replace("+", "")
            folder.mkdir(parents=True, exist_ok=True)
            corpus = folder / "corpus.txt"
            if not corpus.exists():
                log.info("writing a %d-token corpus", size)
                result.setdefault("corpora", {})[str(size)] = write_zipf_corpus(corpus, size)
            for order in args.orders:
                case = {"tokens": size, **sweep_case(corpus, order, folder, args, peer_python)}
                result["runs"].append(case)
                print(json.dumps(case), file=sys.stderr)
    if args.out:
        from nejm_b2txt_utils.atomic_io import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
