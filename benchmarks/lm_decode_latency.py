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
the original's padded batch of every candidate, ``ngram_llm``: the server's defaults, same run), and the
n-best sizes before/after augmentation; plus a Redis round trip through the real server for the 1-gram.

``llm_rescoring_1gram``: the causal-LM rescoring alone on the 1-gram's (augmented) n-bests, ``--llm_variants``
(default: the original's padded batch, the float32 prefix tree of every candidate, and the server's defaults
now: bfloat16/float32 tree by ``llm_dtype auto`` over the ``llm_top_k`` best candidates) interleaved per
sentence, in seconds per sentence (p50/p95), with the candidates and tree nodes fed, the load average, the
WER, and the score/winner differences to the first variant (scores compared on the candidates both scored).
By default each variant is timed on its first run after the n-best decode, as in the server; ``--llm_warm``
times a second, back-to-back run. On the 2-core VM these differ by ~0.1 s whatever the variant: the weights
are slow to reach again after the CPU did other work (reading all SmolLM2 weights: 32 ms back to back, 117 ms
after 0.7 s idle).

    python -m benchmarks.lm_decode_latency [--work DIR] [--corpus FILE] [--n_sentences 30] [--llm none] [--llm_only]
        [--llm_variants batch,tree,default] [--llm_warm] [--torch_threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# (the imports below come after it)
from benchmarks.measure import latency_ms, percentile, print_result  # noqa: E402
from language_model.graph.lexicon import read_lexicon  # noqa: E402
from language_model.graph.toy_lm import synthetic_logits  # noqa: E402
from language_model.serving.service import LMService  # noqa: E402
from nejm_b2txt_utils.cli_errors import check_flags, check_output_folder, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.lm_params import DOCUMENTED_INVOCATION, LMParams, documented_flags  # noqa: E402
from nejm_b2txt_utils.metrics import word_error_rate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("lm_decode_latency")
PARAMS = dict(DOCUMENTED_INVOCATION)  # the README's invocation


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
        modes["ngram_llm_batch"] = LMParams(**PARAMS, gpu_number=-1, do_opt=1, llm_top_k=0)
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
        entry = {"finalize": latency_ms(final_t), "sentence_correct": round(correct / len(sentences), 3),
                 "nbest_after_augmentation": {"mean": round(float(np.mean(n_aug)), 1), "max": int(max(n_aug))}}
        if mode == "ngram":
            entry["chunk"] = latency_ms(chunk_t)
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


#: ``--llm_variants``: name -> (scoring method, prune, dtype, top_k). ``batch``: the original's padded batch
#: (every candidate); ``tree``: the prefix tree, every candidate, float32 (the default before ``llm_prune``,
#: ``llm_dtype`` and ``llm_top_k``); ``default``: the table's defaults (``llm_scoring``, ``llm_prune``,
#: ``llm_dtype``, ``llm_top_k``); the others split the gain between pruning, dtype and the top-k cut.
_D = LMParams()
LLM_VARIANTS = {"batch": ("batch", False, "float32", 0), "tree": ("tree", False, "float32", 0),
                "default": (_D.llm_scoring, bool(_D.llm_prune), _D.llm_dtype, _D.llm_top_k),
                "tree_auto_dtype": ("tree", False, "auto", 0), "pruned_float32": ("tree", True, "float32", 0),
                "pruned_auto_dtype": ("tree", True, "auto", 0), "top_k_float32": ("tree", False, "float32", _D.llm_top_k)}


def bench_llm_scoring(lm_dir: Path, sentences: list[str], args) -> dict:
    """Causal-LM rescoring alone on the 1-gram's augmented n-bests, ``--llm_variants`` side by side in one run
    (interleaved per sentence, rotating the order, so they see the same load): p50/p95 seconds per sentence
    (wall clock; ``cpu_p50_s``: the process's CPU seconds, all threads, which other load inflates less), the
    candidates and prefix-tree nodes fed, the load average, and how far the scores and winners of each
    variant are from the first one's (candidates that a pruned variant dropped are not compared)."""
    from language_model.decoding.llm_rescore import CausalLMScorer, rescore_nbest, resolve_dtype

    lexicon = read_lexicon(lm_dir / "lexicon.txt")
    params = LMParams(**PARAMS, gpu_number=-1)
    svc = LMService(str(lm_dir), args.llm, params=params)
    names = [v for v in args.llm_variants.split(",") if v]
    unknown = [v for v in names if v not in LLM_VARIANTS]
    if unknown or not names:
        raise ValueError(f"--llm_variants {args.llm_variants!r}: expected a comma list of {', '.join(LLM_VARIANTS)}")
    scorers: dict[str, CausalLMScorer] = {}
    for _, _, dtype, _ in (LLM_VARIANTS[v] for v in names):
        if dtype not in scorers:
            scorers[dtype] = CausalLMScorer.load(args.llm, "cpu", dtype=dtype)
    times: dict[str, list[float]] = {v: [] for v in names}
    cpu_times: dict[str, list[float]] = {v: [] for v in names}  # process CPU time: less sensitive to other load
    bests: dict[str, list[str]] = {v: [] for v in names}
    stats: dict[str, list[dict]] = {v: [] for v in names}
    diffs: dict[str, list[float]] = {v: [] for v in names[1:]}
    same: dict[str, list[bool]] = {v: [] for v in names[1:]}
    sizes, loads = [], []
    for i, s in enumerate(sentences):
        dec = svc.new_decoder(params)
        dec.accept_logits(synthetic_logits(s, seed=i, peak=args.peak, lexicon=lexicon))
        nbest = svc.finalize(dec, params).candidates
        sizes.append(len(nbest))
        best, llm = {}, {}
        for v in names[i % len(names):] + names[: i % len(names)]:
            method, prune, dtype, top_k = LLM_VARIANTS[v]
            scorer = scorers[dtype]
            scorer.method = method
            if args.llm_warm:  # one untimed run first: the timed one finds the weights and kernels warm
                rescore_nbest(scorer, nbest, params.acoustic_scale, params.alpha, prune=prune, top_k=top_k)
            t, c = time.perf_counter(), time.process_time()
            best[v], rows = rescore_nbest(scorer, nbest, params.acoustic_scale, params.alpha, prune=prune,
                                          top_k=top_k)
            times[v].append(time.perf_counter() - t)
            cpu_times[v].append(time.process_time() - c)
            bests[v].append(best[v])
            stats[v].append(dict(scorer.last_stats))
            # by sentence: a top-k variant scores a subset; a pruned one reports bounds for what it dropped
            llm[v] = {r.sentence: r.llm for r, ok in zip(rows, scorer.last_exact) if ok}
        loads.append(os.getloadavg()[0])
        for v in names[1:]:
            if not len(nbest):
                continue
            common = llm[v].keys() & llm[names[0]].keys()  # candidates both scored exactly
            diffs[v].append(max((abs(llm[v][k] - llm[names[0]][k]) for k in common), default=0.0))
            same[v].append(best[v] == best[names[0]])
        log.info("sentence %d: %d candidates; %s", i, len(nbest),
                 ", ".join(f"{v} {1000 * times[v][-1]:.0f} ms" for v in names))
    out: dict = {"timed_run": "second (warm)" if args.llm_warm else "first after the decode",
                 "variants": {v: {"method": LLM_VARIANTS[v][0], "prune": LLM_VARIANTS[v][1],
                                  "dtype": str(resolve_dtype(LLM_VARIANTS[v][2], "cpu")).replace("torch.", ""),
                                  "top_k": LLM_VARIANTS[v][3]}
                              for v in names}}
    for v in names:
        entry = latency_ms(times[v])
        entry |= {"p50_s": round(entry["p50_ms"] / 1000, 3), "p95_s": round(entry["p95_ms"] / 1000, 3),
                  "cpu_p50_s": percentile(cpu_times[v], 50, 3),
                  "wer": round(word_error_rate(sentences, bests[v], n_resamples=200).rate, 4),
                  "sentence_correct": round(float(np.mean([b == r for b, r in zip(bests[v], sentences)])), 3)}
        for key in ("candidates", "nodes", "nodes_evaluated", "scored", "forwards"):
            entry[f"mean_{key}"] = round(float(np.mean([st.get(key, 0) for st in stats[v]])), 1)
        if v != names[0]:
            entry["speedup_p50_vs_" + names[0]] = round(out[names[0]]["p50_ms"] / max(entry["p50_ms"], 1e-9), 2)
            entry["max_abs_score_diff_nats_vs_" + names[0]] = round(max(diffs[v], default=0.0), 5)
            entry["same_best_sentence_vs_" + names[0]] = round(float(np.mean(same[v])), 3) if same[v] else None
        out[v] = entry
    if "batch" in out and "tree" in out:  # the report's row: the original -> the prefix tree
        out["speedup_p50"] = round(out["batch"]["p50_ms"] / max(out["tree"]["p50_ms"], 1e-9), 2)
        out["same_best_sentence"] = out["tree"].get("same_best_sentence_vs_batch", 1.0)
    out["nbest_size"] = {"mean": round(float(np.mean(sizes)), 1), "max": int(max(sizes))}
    out["load_average_1min"] = {"mean": round(float(np.mean(loads)), 2), "max": round(float(np.max(loads)), 2)}
    return out


def redis_round_trip(lm_dir: Path, sentences: list[str], args) -> dict:
    from nejm_b2txt_utils import redis_protocol as rp
    from nejm_b2txt_utils.redis_server import RedisServer, stop_process

    lexicon = read_lexicon(lm_dir / "lexicon.txt")
    with RedisServer() as rs:
        cmd = [sys.executable, str(REPO / "language_model" / "language-model-standalone.py"), "--lm_path",
               str(lm_dir), "--redis_ip", "127.0.0.1", "--redis_port", str(rs.port), *documented_flags(),
               "--log_level", "WARNING"]
        srv = subprocess.Popen(cmd, cwd=str(REPO))
        try:
            r = rs.client()
            deadline = time.monotonic() + 120
            while r.xlen(rp.ARGS_STREAM) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            # generous: one 1-gram finalize (126k words, 100-best on noisy synthetic logits) took 11 s on an idle
            # 2-core machine and over a minute on a loaded one
            client = rp.RemoteLMClient(r, timeout_s=300)
            times = []
            for i, s in enumerate(sentences):
                x = synthetic_logits(s, seed=i, peak=args.peak, lexicon=lexicon)
                t = time.perf_counter()
                client.decode_trial(x)
                times.append(time.perf_counter() - t)
        finally:
            stop_process(srv, grace_s=30)
    return {"decode_trial": latency_ms(times)}


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="keep built LM folders here (default: a temporary folder)")
    p.add_argument("--corpus", type=Path, help="3-gram training text (default: 300k words of Zipf text)")
    p.add_argument("--n_sentences", type=int, default=30, help="test sentences drawn from the corpus (default 30)")
    p.add_argument("--chunk_frames", type=int, default=5, help="frames per streaming chunk (80 ms each)")
    p.add_argument("--peak", type=float, default=7.0, help="logit peak of the synthetic posteriors")
    p.add_argument("--llm", default="smollm2", help="causal LM for the rescoring rows ('none' to skip)")
    p.add_argument("--torch_threads", type=int, default=0,
                   help="torch CPU threads for the causal LM (0: torch's default; 1 is far faster on a busy machine)")
    p.add_argument("--skip_3gram", action="store_true")
    p.add_argument("--llm_only", action="store_true",
                   help="only the causal-LM rescoring rows (--llm_variants) on the 1-gram's n-bests")
    p.add_argument("--llm_warm", action="store_true",
                   help="time each causal-LM variant on its second run per sentence (back to back); default: the first, "
                        "right after the n-best decode, as in the server")
    p.add_argument("--llm_variants", default="batch,tree,default",
                   help=f"comma list of the causal-LM rescoring variants to time side by side: {', '.join(LLM_VARIANTS)}")
    args = p.parse_args(argv)
    check_flags(args, {"n_sentences": 1, "chunk_frames": 1, "torch_threads": 0})
    check_output_folder("--work", args.work)  # was a traceback after the minutes of corpus building
    # every flag checked before the minutes of LM building
    if not (math.isfinite(args.peak) and args.peak > 0):
        p.error(f"--peak: expected a finite number > 0, got {args.peak}")
    if args.corpus is not None and not args.corpus.is_file():
        p.error(f"--corpus {args.corpus}: no such file")
    variants = [v for v in args.llm_variants.split(",") if v]
    unknown = [v for v in variants if v not in LLM_VARIANTS]
    if unknown or not variants:
        p.error(f"--llm_variants {args.llm_variants!r}: expected a comma list of {', '.join(LLM_VARIANTS)}")
    if len(set(variants)) < len(variants):
        p.error(f"--llm_variants {args.llm_variants!r}: a variant is named twice")
    if args.llm == "none" and (args.llm_only or args.llm_warm):
        p.error(f"--llm none: {'--llm_only' if args.llm_only else '--llm_warm'} times the causal LM, which --llm none "
                "switches off")
    if args.llm != "none":
        from language_model.decoding.llm_rescore import LLMUnavailableError, resolve_model_path

        try:
            resolve_model_path(args.llm)
        except LLMUnavailableError as exc:
            p.error(str(exc).replace("--opt_model", "--llm"))
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
            print_result(result)
            return 0
        result["1gram"] = bench_lm("1gram", work / "unigram", sentences, args, rescore=False)
        result["1gram"]["redis_round_trip_no_llm"] = redis_round_trip(work / "unigram", sentences[:10], args)
        if not args.skip_3gram:
            log.info("building / reusing the 3-gram")
            result["build_3gram"] = build(["--corpus", str(corpus), "--order", "3", "--prune", "1e-7",
                                           "--keep_unpruned"], work / "trigram")
            result["3gram"] = bench_lm("3gram", work / "trigram", sentences, args, rescore=True)
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
