"""Benchmark: LM server decode latency (per chunk, per sentence), n-best sizes; prints one JSON object.

Two LM folders are built with ``language_model/build_lm.py`` (reused across runs by its input hash):
the wordfreq 1-gram over the full CMU vocabulary (the offline ``openwebtext_1gram_lm_sil``) and a
Katz 3-gram from ``--corpus`` (default: a generated Zipf text; pass e.g. the synthetic generator's
sentences for a realistic one) with its unpruned twin for ``--rescore``. Test sentences are drawn
from the corpus; their logits are synthetic (``toy_lm.synthetic_logits`` over the LM's lexicon, peak
``--peak`` over N(0, 1) noise), sent in chunks of ``--chunk_frames`` frames (80 ms each).

Per LM it reports p50/p95 (ms) of: one streaming chunk (``accept_logits``), finalize without
rescoring (lattice pass + n-best + augmentation), finalize with the unpruned-G rescoring (3-gram),
finalize with causal-LM rescoring (``--llm``, default the embedded SmolLM2-135M on CPU; ``ngram_llm_batch``:
the original's padded batch, ``ngram_llm``: the prefix-tree pass, same run), and the
n-best sizes before/after augmentation; plus a Redis round trip through the real server for the 1-gram.

``llm_rescoring_1gram``: the causal-LM rescoring alone on the 1-gram's (augmented) n-bests, the original's
padded batch and the prefix tree interleaved per sentence, with the largest score difference between them.

    python benchmarks/lm_decode_latency.py [--work DIR] [--corpus FILE] [--n_sentences 30] [--llm none] [--llm_only]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from language_model.graph.lexicon import read_lexicon  # noqa: E402
from language_model.graph.toy_lm import synthetic_logits  # noqa: E402
from language_model.serving.service import LMService  # noqa: E402
from nejm_b2txt_utils.cli_errors import check_flags, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402

log = logging.getLogger("lm_decode_latency")
PARAMS = dict(acoustic_scale=0.325, blank_penalty=90.0, alpha=0.55, nbest=100)  # the README's invocation


def pct(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "mean_ms": round(float(a.mean()), 1), "n": int(a.size)}


def zipf_corpus(path: Path, n_words: int, seed: int = 0) -> None:
    import wordfreq

    from nejm_b2txt_utils.lexicon import cmu_dictionary

    cmu = cmu_dictionary()
    words = [w for w in wordfreq.top_n_list("en", 30_000) if w in cmu]
    freqs = wordfreq.get_frequency_dict("en")
    weights = [freqs[w] for w in words]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < n_words:
            sent = rng.choices(words, weights, k=rng.randint(4, 14))
            f.write(" ".join(sent) + "\n")
            written += len(sent)


def build(argv: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "language_model" / "build_lm.py"), *argv, "--out", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"build_lm.py {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    info = json.loads((out / "build_info.json").read_text())
    return {"build_seconds": round(time.perf_counter() - t0, 1), "vocabulary": info.get("vocabulary"),
            "ngrams": info.get("ngrams")}


def test_sentences(corpus: Path, lexicon: dict, n: int, seed: int) -> list[str]:
    lines = [ln.strip() for ln in open(corpus, encoding="utf-8") if 3 <= len(ln.split()) <= 14]
    rng = random.Random(seed)
    rng.shuffle(lines)
    return [s for s in lines if all(w in lexicon for w in s.split())][:n]


def bench_lm(name: str, lm_dir: Path, sentences: list[str], args, rescore: bool) -> dict:
    lexicon = read_lexicon(lm_dir / "lexicon.txt")
    base = LMParams(**PARAMS, gpu_number=-1)
    svc = LMService(str(lm_dir), args.llm or "smollm2", params=base)
    modes = {"ngram": base}
    if rescore:
        modes["ngram_rescore"] = LMParams(**PARAMS, gpu_number=-1, rescore=1)
    if args.llm != "none":  # the original's padded batch and the prefix tree, side by side in one run
        modes["ngram_llm_batch"] = LMParams(**PARAMS, gpu_number=-1, do_opt=1)
        modes["ngram_llm"] = LMParams(**PARAMS, gpu_number=-1, do_opt=1)
    out: dict = {"lm_dir": str(lm_dir), "vocabulary": len(lexicon), "tlg_states": svc.resources.tlg.num_states}
    logits = [synthetic_logits(s, seed=i, peak=args.peak, lexicon=lexicon) for i, s in enumerate(sentences)]
    out["frames_per_sentence"] = {"mean": round(float(np.mean([len(x) for x in logits])), 1),
                                  "max": int(max(len(x) for x in logits))}
    bests_by_mode: dict[str, list[str]] = {}
    for mode, params in modes.items():
        t0 = time.perf_counter()
        svc.ensure_components(params)
        load_s = time.perf_counter() - t0
        if svc.scorer is not None:
            svc.scorer.method = "batch" if mode == "ngram_llm_batch" else "tree"
        bests = []
        chunk_t, final_t, n_raw, n_aug, correct = [], [], [], [], 0
        for sent, x in zip(sentences, logits):
            dec = svc.new_decoder(params)
            for i in range(0, len(x), args.chunk_frames):
                t = time.perf_counter()
                dec.accept_logits(x[i : i + args.chunk_frames])
                chunk_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = svc.finalize(dec, params)
            final_t.append(time.perf_counter() - t)
            n_raw.append(result.n_decoded)
            n_aug.append(len(result.candidates))
            best = max(result.candidates, key=lambda c: c.total).sentence if result.candidates else ""
            correct += best == sent
            bests.append(best)
        entry = {"finalize": pct(final_t), "sentence_correct": round(correct / len(sentences), 3),
                 "nbest_after_augmentation": {"mean": round(float(np.mean(n_aug)), 1), "max": int(max(n_aug))}}
        if mode == "ngram":
            entry["chunk"] = pct(chunk_t)
            entry["nbest_distinct"] = {"mean": round(float(np.mean(n_raw)), 1), "min": int(min(n_raw)),
                                       "max": int(max(n_raw))}
        if mode == "ngram_llm" and "ngram_llm_batch" in out:
            entry["same_best_as_batch"] = round(float(np.mean([a == b for a, b in zip(bests, bests_by_mode["ngram_llm_batch"])])), 3)
            entry["speedup_vs_batch_p50"] = round(out["ngram_llm_batch"]["finalize"]["p50_ms"]
                                                  / max(entry["finalize"]["p50_ms"], 1e-9), 2)
        bests_by_mode[mode] = bests
        if load_s > 0.5:
            entry["load_seconds"] = round(load_s, 1)
        out[mode] = entry
        log.info("%s %s: %s", name, mode, entry)
    return out


def bench_llm_scoring(lm_dir: Path, sentences: list[str], args) -> dict:
    """Causal-LM rescoring alone on the 1-gram's augmented n-bests: the original's padded batch vs the prefix
    tree, interleaved per sentence (same load for both), plus how far their scores and winners differ."""
    from language_model.decoding.llm_rescore import rescore_nbest

    lexicon = read_lexicon(lm_dir / "lexicon.txt")
    params = LMParams(**PARAMS, gpu_number=-1, do_opt=1)
    svc = LMService(str(lm_dir), args.llm, params=params)
    svc.ensure_components(params)
    scorer = svc.scorer
    times: dict[str, list[float]] = {"batch": [], "tree": []}
    diffs, same, sizes = [], [], []
    for i, s in enumerate(sentences):
        dec = svc.new_decoder(params)
        dec.accept_logits(synthetic_logits(s, seed=i, peak=args.peak, lexicon=lexicon))
        nbest = svc.finalize(dec, LMParams(**PARAMS, gpu_number=-1)).candidates
        sizes.append(len(nbest))
        best = {}
        for method in ("batch", "tree") if i % 2 == 0 else ("tree", "batch"):
            scorer.method = method
            t = time.perf_counter()
            best[method], rows = rescore_nbest(scorer, nbest, params.acoustic_scale, params.alpha)
            times[method].append(time.perf_counter() - t)
            best[method + "_llm"] = np.array([r.llm for r in rows])
        diffs.append(float(np.max(np.abs(best["batch_llm"] - best["tree_llm"]))) if len(nbest) else 0.0)
        same.append(best["batch"] == best["tree"])
        log.info("sentence %d: %d candidates, batch %.0f ms, tree %.0f ms, same best %s", i, len(nbest),
                 1000 * times["batch"][-1], 1000 * times["tree"][-1], same[-1])
    out = {m: pct(v) for m, v in times.items()}
    out["speedup_p50"] = round(out["batch"]["p50_ms"] / max(out["tree"]["p50_ms"], 1e-9), 2)
    out["max_abs_score_diff_nats"] = round(max(diffs), 5)
    out["same_best_sentence"] = round(float(np.mean(same)), 3)
    out["nbest_size"] = {"mean": round(float(np.mean(sizes)), 1), "max": int(max(sizes))}
    return out


def redis_round_trip(lm_dir: Path, sentences: list[str], args) -> dict:
    from nejm_b2txt_utils import redis_protocol as rp
    from nejm_b2txt_utils.redis_server import RedisServer

    lexicon = read_lexicon(lm_dir / "lexicon.txt")
    with RedisServer() as rs:
        cmd = [sys.executable, str(REPO / "language_model" / "language-model-standalone.py"), "--lm_path",
               str(lm_dir), "--redis_ip", "127.0.0.1", "--redis_port", str(rs.port), "--acoustic_scale", "0.325",
               "--blank_penalty", "90", "--log_level", "WARNING"]
        srv = subprocess.Popen(cmd, cwd=str(REPO))
        try:
            r = rs.client()
            deadline = time.monotonic() + 120
            while r.xlen(rp.ARGS_STREAM) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            client = rp.RemoteLMClient(r, timeout_s=60)
            times = []
            for i, s in enumerate(sentences):
                x = synthetic_logits(s, seed=i, peak=args.peak, lexicon=lexicon)
                t = time.perf_counter()
                client.decode_trial(x)
                times.append(time.perf_counter() - t)
        finally:
            srv.terminate()
            srv.wait(30)
    return {"decode_trial": pct(times)}


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="keep built LM folders here (default: a temporary folder)")
    p.add_argument("--corpus", type=Path, help="3-gram training text (default: 300k words of Zipf text)")
    p.add_argument("--n_sentences", type=int, default=30)
    p.add_argument("--chunk_frames", type=int, default=5, help="frames per streaming chunk (80 ms each)")
    p.add_argument("--peak", type=float, default=7.0, help="logit peak of the synthetic posteriors")
    p.add_argument("--llm", default="smollm2", help="causal LM for the rescoring rows ('none' to skip)")
    p.add_argument("--torch_threads", type=int, default=0,
                   help="torch CPU threads for the causal LM (0: torch's default; 1 is far faster on a busy machine)")
    p.add_argument("--skip_3gram", action="store_true")
    p.add_argument("--llm_only", action="store_true",
                   help="only the causal-LM rescoring rows: padded batch vs prefix tree on the 1-gram's n-bests")
    args = p.parse_args(argv)
    check_flags(args, {"n_sentences": 1, "chunk_frames": 1, "torch_threads": 0})
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("language_model", "build_lm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="lm_latency-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = args.corpus
        if corpus is None:
            corpus = work / "zipf_corpus.txt"
            if not corpus.exists():
                zipf_corpus(corpus, 300_000)
        result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                        "params": PARAMS | {"chunk_frames": args.chunk_frames, "peak": args.peak, "llm": args.llm,
                                            "torch_threads": args.torch_threads},
                        "load_average_at_start": os.getloadavg()[0]}
        log.info("building / reusing the 1-gram")
        result["build_1gram"] = build(["--unigram_wordfreq"], work / "unigram")
        lex1 = read_lexicon(work / "unigram" / "lexicon.txt")
        sentences = test_sentences(corpus, lex1, args.n_sentences, seed=1)
        result["n_sentences"] = len(sentences)
        if args.llm != "none":
            result["llm_rescoring_1gram"] = bench_llm_scoring(work / "unigram", sentences, args)
        if args.llm_only:
            print(json.dumps(result, indent=2))
            return 0
        result["1gram"] = bench_lm("1gram", work / "unigram", sentences, args, rescore=False)
        result["1gram"]["redis_round_trip_no_llm"] = redis_round_trip(work / "unigram", sentences[:10], args)
        if not args.skip_3gram:
            log.info("building / reusing the 3-gram")
            result["build_3gram"] = build(["--corpus", str(corpus), "--order", "3", "--prune", "1e-7",
                                           "--keep_unpruned"], work / "trigram")
            result["3gram"] = bench_lm("3gram", work / "trigram", sentences, args, rescore=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
