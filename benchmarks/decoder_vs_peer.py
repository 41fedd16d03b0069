"""Benchmark: our CTC + n-gram decoder vs flashlight-text's ``LexiconDecoder`` (KenLM inside) on the same logits,
lexicon and ARPA; prints one JSON object.

Inputs: a ``results.pkl`` with LM-order logits and sentence labels (``evaluate_model.py --results_pkl``, e.g. the
demo's ``runs/demo/eval_greedy/results.pkl``) and an LM folder (``lm.arpa``, ``lexicon.txt``). The trials are
split in two halves: each decoder's weights are tuned on the first half (a grid: lowest WER, ties broken by the
lower median ms per utterance, the same rule for both) and the tuned decoder is scored on the second: WER overall
and per corpus, ms per utterance p50/p95, peak RSS and start-up (load until the first utterance can be decoded),
each decoder in its own fresh process, ``--repeats`` times in turn (the fastest run per utterance counts, so
both see the same machine load).

Ours runs the way the server runs an utterance: ``LMService.new_decoder`` -> ``accept_logits`` (the whole trial
as one chunk, as the evaluator sends it, with its partial) -> ``LMService.finalize`` with the table's defaults for
everything the grid does not set: a 100-best, ``exact_ngram=1`` (each candidate's ARPA score), augmentation.
The grid's ``min_active`` only changes the streaming partials' search (the final comes from the lattice pass),
so it ties on WER and the tie rule keeps the faster value.

The peer lives only in ``envs/bench_peer`` (``requirements/bench_peer.txt``), never in the product environments;
``--setup`` creates it. Peer conventions: the 41 LM-order classes are its tokens (blank 0, SIL 1), every spelling
ends in SIL (the optional silence of our L), and ``ln(blank_penalty)`` is taken off the blank column as ours does.
The peer breaks score ties by memory order, so its output can vary between identical runs; ours is deterministic.

    envs/b2txt25_lm/bin/python -m benchmarks.decoder_vs_peer --setup
    envs/b2txt25_lm/bin/python -m benchmarks.decoder_vs_peer --results_pkl runs/demo/eval_greedy/results.pkl \\
        --lm_path runs/demo/lm/3gram_lm_sil
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import percentile, print_result
from nejm_b2txt_utils.cli_errors import ConfigError, check_output_file, print_bad_input
from nejm_b2txt_utils.memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
PEER_ENV = REPO / "envs" / "bench_peer"
PEER_REQS = REPO / "requirements" / "bench_peer.txt"

OURS_GRID = {"acoustic_scale": [0.5, 1.0, 2.0, 3.0], "blank_penalty": [1.0, 9.0, 90.0, 300.0], "min_active": [200, 1]}
OURS_FIXED = {"gpu_number": -1}  # everything else: the table's defaults (nbest 100, exact_ngram 1, beam 17, ...)
PEER_GRID = {"lm_weight": [0.25, 0.5, 1.0, 2.0, 3.0, 4.0], "word_score": [-10.0, -5.0, -3.0, 0.0, 2.0],
             "blank_penalty": [1.0, 9.0]}
PEER_FIXED = {"beam_size": 100, "beam_threshold": 25.0}


def setup_peer_env() -> Path:
    """Create ``envs/bench_peer`` with the peer (once)."""
    py = PEER_ENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(PEER_REQS)], check=True)
    return py


# --------------------------------------------------------------------------- workers (one process each)
def ours_worker(job: dict) -> dict:
    """Decode ``job['logits']`` with each parameter set in ``job['param_sets']`` (our server's finalize path).

    Args:
        job: ``lm_path``, ``param_sets`` (LMParams values), ``logits`` (``[T, 41]`` LM-order arrays).

    Returns:
        ``startup_s``, ``hyps`` and ``ms`` per parameter set (one per trial), ``peak_rss_mb``.
    """
    from language_model.serving.service import LMService
    from nejm_b2txt_utils.lm_params import LMParams

    t0 = time.perf_counter()
    svc = LMService(job["lm_path"], params=LMParams(gpu_number=-1))
    svc.ensure_components(LMParams(**job["param_sets"][0]))
    startup = time.perf_counter() - t0
    out = {"startup_s": startup, "hyps": [], "ms": []}
    for values in job["param_sets"]:
        params = LMParams(**values)
        svc.ensure_components(params)
        hyps, ms = [], []
        for x in job["logits"]:
            t = time.perf_counter()
            dec = svc.new_decoder(params)
            dec.accept_logits(x)
            hyps.append(svc.finalize(dec, params).sentence)
            ms.append(1000 * (time.perf_counter() - t))
        out["hyps"].append(hyps)
        out["ms"].append(ms)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def peer_worker(job: dict) -> dict:
    """The same with flashlight-text's LexiconDecoder over KenLM (runs in envs/bench_peer).

    Args:
        job: ``lm_path``, ``param_sets`` (``lm_weight``, ``word_score``, ``blank_penalty``, ``beam_size``,
            ``beam_threshold``), ``logits``.

    Returns:
        As :func:`ours_worker`.
    """
    from flashlight.lib.text.decoder import (
        CriterionType,
        LexiconDecoder,
        LexiconDecoderOptions,
        SmearingMode,
        Trie,
    )
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    from nejm_b2txt_utils.phonemes import LM_ORDER

    t0 = time.perf_counter()
    tokens = Dictionary()
    for t in ["<blk>", *LM_ORDER[1:]]:
        tokens.add_entry(t)
    lexicon: dict[str, list[list[str]]] = {}
    with open(Path(job["lm_path"]) / "lexicon.txt", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                lexicon.setdefault(parts[0], []).append([*parts[1:], "SIL"])
    words = Dictionary()
    for w in [*lexicon, "<unk>"]:
        words.add_entry(w)
    with tempfile.TemporaryDirectory(prefix="peer-arpa-") as tmp:  # KenLM wants tabs between the ARPA fields
        arpa = Path(tmp) / "lm.arpa"
        arpa.write_text(tab_separated_arpa(Path(job["lm_path"]) / "lm.arpa"), encoding="utf-8")
        lm = KenLM(str(arpa), words)
    sil, blank = tokens.get_index("SIL"), 0
    unk = words.get_index("<unk>")
    trie = Trie(tokens.index_size(), sil)
    start = lm.start(False)
    for w, spellings in lexicon.items():
        wi = words.get_index(w)
        _, score = lm.score(start, wi)
        for sp in spellings:
            trie.insert([tokens.get_index(t) for t in sp], wi, score)
    trie.smear(SmearingMode.MAX)
    startup = time.perf_counter() - t0
    out = {"startup_s": startup, "hyps": [], "ms": []}
    for values in job["param_sets"]:
        opts = LexiconDecoderOptions(beam_size=int(values["beam_size"]), beam_size_token=tokens.index_size(),
                                     beam_threshold=values["beam_threshold"], lm_weight=values["lm_weight"],
                                     word_score=values["word_score"], unk_score=-math.inf, sil_score=0.0,
                                     log_add=False, criterion_type=CriterionType.CTC)
        decoder = LexiconDecoder(opts, trie, lm, sil, blank, unk, [], False)
        hyps, ms = [], []
        for x in job["logits"]:
            t = time.perf_counter()
            e = np.asarray(x, dtype=np.float32)
            e = e - np.logaddexp.reduce(e, axis=1, keepdims=True)  # log-softmax
            e[:, 0] -= math.log(values["blank_penalty"])
            e = np.ascontiguousarray(e)
            best = decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])[0]
            hyps.append(" ".join(words.get_entry(i) for i in best.words if i >= 0))
            ms.append(1000 * (time.perf_counter() - t))
        out["hyps"].append(hyps)
        out["ms"].append(ms)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def tab_separated_arpa(path: Path) -> str:
    """The ARPA text with tabs between probability, words and backoff (KenLM rejects spaces there)."""
    out, order = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("\\") and stripped.endswith("-grams:"):
            order = int(stripped[1:].split("-")[0])
        elif stripped.startswith("\\"):
            order = 0
        elif order and stripped:
            parts = stripped.split()
            line = "\t".join([parts[0], " ".join(parts[1:1 + order]), *parts[1 + order:]])
        out.append(line)
    return "\n".join(out) + "\n"


def run_worker(kind: str, job: dict, python: str) -> dict:
    """Run a worker in a fresh process (its own start-up and peak RSS)."""
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        src, dst = Path(tmp) / "job.pkl", Path(tmp) / "out.json"
        with open(src, "wb") as f:
            pickle.dump(job, f)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([python, "-m", "benchmarks.decoder_vs_peer", "--worker", kind, str(src), str(dst)], capture_output=True,
                              text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
        return json.loads(dst.read_text())


# --------------------------------------------------------------------------- the comparison
def wer_by_corpus(refs: list[str], hyps: list[str], corpora: list[str]) -> dict:
    from nejm_b2txt_utils.metrics import word_error_rate

    out = {"all": round(float(word_error_rate(refs, hyps).rate), 4)}
    for c in sorted(set(corpora)):
        k = [i for i, x in enumerate(corpora) if x == c]
        out[c] = round(float(word_error_rate([refs[i] for i in k], [hyps[i] for i in k]).rate), 4)
    return out


def compare(results_pkl: Path, lm_path: str, peer_python: str, repeats: int = 3) -> dict:
    """Tune each decoder on the first half, then score both on the second, ``repeats`` times in turn.

    Args:
        results_pkl: logits and labels.
        lm_path: the LM folder.
        peer_python: the peer environment's interpreter.
        repeats: scored runs per decoder, alternating ours/peer so both see the same machine load; per
            utterance the fastest of the runs counts (the least disturbed), start-up the fastest, RSS the largest.

    Returns:
        The comparison (printed as JSON).
    """
    with open(results_pkl, "rb") as f:
        data = pickle.load(f)
    n = len(data["logits"])
    half = n // 2
    tune_idx, test_idx = list(range(half)), list(range(half, n))
    refs = data["sentence_label"]
    corpora = data.get("corpus") or ["unknown"] * n
    result: dict = {"results_pkl": str(results_pkl), "lm_path": lm_path, "trials_tuned": f"0:{half}",
                    "trials_scored": f"{half}:{n}", "load_average_at_start": os.getloadavg()[0],
                    "scored_repeats": repeats}
    chosen: dict = {}
    for kind, grid, fixed, python in (("ours", OURS_GRID, OURS_FIXED, sys.executable),
                                      ("peer", PEER_GRID, PEER_FIXED, peer_python)):
        sets = [{**fixed, **dict(zip(grid, v))} for v in itertools.product(*grid.values())]
        tuned = run_worker(kind, {"lm_path": lm_path, "param_sets": sets,
                                  "logits": [data["logits"][i] for i in tune_idx]}, python)
        wers = [wer_by_corpus([refs[i] for i in tune_idx], h, [corpora[i] for i in tune_idx])["all"]
                for h in tuned["hyps"]]
        speed = [float(np.median(m)) for m in tuned["ms"]]
        best = min(range(len(sets)), key=lambda k: (wers[k], speed[k], k))
        if kind == "ours":  # the table's defaults it ran with (search, n-best and scoring)
            from language_model.decoding.wfst import SEARCH_FIELDS
            from nejm_b2txt_utils.lm_params import BY_NAME

            fixed = {**fixed, **{k: BY_NAME[k].default for k in (*SEARCH_FIELDS, "exact_ngram", "rescore",
                                                                  "top_candidates_to_augment") if k not in grid}}
        chosen[kind] = (sets[best], python)
        result[kind] = {"weights": {k: sets[best][k] for k in grid}, "fixed": fixed, "grid": grid,
                        "tune_wer": wers[best]}
    runs: dict = {"ours": [], "peer": []}
    for _ in range(repeats):
        for kind, (values, python) in chosen.items():
            runs[kind].append(run_worker(kind, {"lm_path": lm_path, "param_sets": [values],
                                                "logits": [data["logits"][i] for i in test_idx]}, python))
    for kind, scored in runs.items():
        ms = np.min(np.asarray([r["ms"][0] for r in scored]), axis=0)
        result[kind].update({
            "wer": wer_by_corpus([refs[i] for i in test_idx], scored[0]["hyps"][0], [corpora[i] for i in test_idx]),
            "same_output_every_repeat": all(r["hyps"][0] == scored[0]["hyps"][0] for r in scored),
            "ms_per_utt_p50": percentile(ms, 50),
            "ms_per_utt_p95": percentile(ms, 95),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in scored), 1),
            "startup_s": round(min(r["startup_s"] for r in scored), 2)})
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_pkl", type=Path, default=REPO / "runs" / "demo" / "eval_greedy" / "results.pkl")
    p.add_argument("--lm_path", default=str(REPO / "runs" / "demo" / "lm" / "3gram_lm_sil"))
    p.add_argument("--out", type=Path, help="also write the JSON here (atomically)")
    p.add_argument("--repeats", type=int, default=3, help="scored runs per decoder, alternating (default 3)")
    p.add_argument("--setup", action="store_true", help=f"create {PEER_ENV} with {PEER_REQS.name} and exit")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "JOB", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, src, dst = args.worker
        with open(src, "rb") as f:
            job = pickle.load(f)
        out = (ours_worker if kind == "ours" else peer_worker)(job)
        Path(dst).write_text(json.dumps(out))
        return 0
    if args.setup:
        print(setup_peer_env())
        return 0
    peer_python = PEER_ENV / "bin" / "python"
    if args.repeats < 1:
        p.error(f"--repeats: expected a number >= 1, got {args.repeats}")
    try:
        check_output_file("--out", args.out)
    except ConfigError as exc:
        return print_bad_input(exc)
    if not args.results_pkl.is_file():
        print(f"error: --results_pkl: {args.results_pkl} not found", file=sys.stderr)
        return 2
    try:
        with open(args.results_pkl, "rb") as f:
            data = pickle.load(f)
        if not isinstance(data, dict):
            raise TypeError(f"a {type(data).__name__}, not a dict")
        if not len(data["logits"]) == len(data["sentence_label"]) >= 2:
            raise ValueError("fewer than 2 trials, or logits and sentence_label of different lengths")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError) as exc:
        print(f"error: --results_pkl {args.results_pkl}: not an evaluate_model.py results.pkl with 'logits' and "
              f"'sentence_label' ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    for path, what in (*((Path(args.lm_path) / f, f"--lm_path (its {f})")
                         for f in ("lm.arpa", "lexicon.txt", "TLG.fst", "words.txt")),
                       (peer_python, "the peer environment (run --setup first)")):
        if not Path(path).exists():
            print(f"error: {what}: {path} not found", file=sys.stderr)
            return 2
    result = compare(args.results_pkl, args.lm_path, str(peer_python), args.repeats)
    if args.out:
        from nejm_b2txt_utils.atomic_io import atomic_write_json

        atomic_write_json(args.out, result)
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
