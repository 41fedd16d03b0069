"""The performance report: runs every benchmark and writes one JSON plus one markdown table.

    python -m benchmarks.report                      # all benchmarks + the quick demo (~20 min on 2 cores)
    python -m benchmarks.report --demo_dir runs/demo # take the end-to-end numbers from a finished demo run

Measured: training steps/s (baseline, small and nnn-small configs, with nnn/small ratios), streaming
latency per 80 ms frame, LM decode latency (streaming chunk, finalize, rescoring, causal LM), TLG build
time and memory, the end-to-end wall time of the main job with the peak RSS of each of its processes,
eager vs PyTorch/XLA (CPU) training of a tiny TripleGRUDecoder (``envs/b2txt_xla``; skipped with a warning
when ./setup_xla.sh has not been run). Every benchmark runs as its own process in the environment it
belongs to (``envs/b2txt25``, ``envs/b2txt25_lm`` or ``envs/b2txt_xla``); its JSON is kept in
``<out>/parts/<name>.json`` as soon as it finishes, so an interrupted report resumes where it stopped
(``--force`` measures again). Output: ``<out>/report.json`` and ``<out>/report.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from end_to_end.run_demo import env_python
from end_to_end.steps import Step, run_step
from nejm_b2txt_utils.atomic_io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("report")
ALL = ("data", "train_throughput", "stream_latency", "tlg_build", "lm_decode_latency", "lm_server_load", "lm_scale",
       "xla_steps", "tf_vs_torch", "demo", "realtime_latency")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks", help="report folder")
    p.add_argument("--data_dir", type=Path,
                   help="synthetic data folder (holding hdf5_data_final/ and lm_corpus.txt); default: generate "
                        "the small preset into <out>/work/data")
    p.add_argument("--demo", choices=("quick", "full"), default="quick",
                   help="which main-job run to time when --demo_dir is not given (default: quick)")
    p.add_argument("--demo_dir", type=Path, help="a finished run_demo folder: read its timings.json instead")
    p.add_argument("--lm_sentences", type=int, default=10, help="sentences per LM latency measurement")
    p.add_argument("--llm", default="smollm2", help="causal LM of the LM latency rows ('none' to skip)")
    p.add_argument("--skip", nargs="*", default=[], choices=ALL[1:], help="benchmarks to leave out")
    p.add_argument("--force", action="store_true", help="measure again what <out>/parts already holds")
    p.add_argument("--train_overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides for the training benchmark (e.g. dataset.days_per_batch=2 for tiny data)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: small config only, few steps and frames, 3 LM sentences, no causal LM")
    args = p.parse_args(argv)
    # every flag checked before anything runs (the benchmarks take minutes; a typo must not cost them)
    if args.lm_sentences < 1:
        p.error(f"--lm_sentences: expected a number >= 1, got {args.lm_sentences}")
    bad = [o for o in args.train_overrides if "=" not in o or not o.split("=", 1)[0]]
    if bad:
        p.error(f"--train_overrides: expected key=value, got {' '.join(bad)}")
    if args.demo_dir is not None and "demo" not in args.skip:
        timings = args.demo_dir / "timings.json"
        if not timings.is_file():
            p.error(f"--demo_dir {args.demo_dir}: no timings.json there (expected a finished ./run_demo.sh folder, "
                    "e.g. runs/demo)")
        try:
            ok = isinstance(json.loads(timings.read_text()), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            p.error(f"--demo_dir {args.demo_dir}: {timings.name} is not the JSON object ./run_demo.sh writes")
    return args


def json_step(name: str, cmd: list[str], parts: Path) -> Step:
    """A step whose stdout (the benchmark's JSON) lands atomically in ``parts/<name>.json``."""
    target = parts / f"{name}.json"
    tmp = target.with_suffix(".tmp")
    shell = f"{shlex.join(cmd)} > {shlex.quote(str(tmp))} && mv {shlex.quote(str(tmp))} {shlex.quote(str(target))}"
    return Step(name, ["sh", "-c", shell], done=target)


def plan(args: argparse.Namespace) -> list[Step]:
    py, py_lm = env_python("b2txt25"), env_python("b2txt25_lm")
    work, parts = args.out / "work", args.out / "parts"
    data = args.data_dir or work / "data"
    hdf5, corpus = data / "hdf5_data_final", data / "lm_corpus.txt"
    steps = []
    if args.data_dir is None:
        steps.append(Step("data", [py, "-m", "nejm_b2txt_utils.synthetic", "--preset", "small", "--out", str(data),
                                   "--seed", "0"], done=data / ".complete"))
    wanted = [b for b in ALL[1:] if b not in args.skip]
    if "train_throughput" in wanted:
        quick = ["--configs", "small", "nnn_small", "--steps", "3"] if args.quick else []
        steps.append(json_step("train_throughput", [py, "-m", "benchmarks.train_throughput", "--data_dir", str(hdf5),
                                                    *quick, *args.train_overrides], parts))
    if "stream_latency" in wanted:
        quick = ["--configs", "small", "--frames", "30", "--warmup", "5"] if args.quick else []
        steps.append(json_step("stream_latency", [py, "-m", "benchmarks.stream_latency", *quick], parts))
    if "tlg_build" in wanted:
        steps.append(json_step("tlg_build", [py_lm, "-m", "benchmarks.tlg_build", "--corpus", str(corpus),
                                             "--work", str(work / "tlg")], parts))
    if "lm_decode_latency" in wanted:
        steps.append(json_step("lm_decode_latency", [py_lm, "-m", "benchmarks.lm_decode_latency", "--corpus",
                                                     str(corpus), "--work", str(work / "lm_latency"), "--n_sentences",
                                                     str(3 if args.quick else args.lm_sentences), "--llm",
                                                     "none" if args.quick else args.llm], parts))
    if "lm_server_load" in wanted:
        quick = (["--workers", "1", "2", "--trials", "3", "--flood", "100", "--real_trials", "2", "--frames", "500",
                  "1000", "--eval_trials", "4", "--over_long_frames", "20000"] if args.quick else [])
        steps.append(json_step("lm_server_load", [py_lm, "-m", "benchmarks.lm_server_load", "--work",
                                                  str(work / "lm_server_load"), *quick], parts))
    if "lm_scale" in wanted:
        scale = ["--sizes", "5e4", "--n_sentences", "2", "--no_peer"] if args.quick else [
            "--n_sentences", str(args.lm_sentences)]
        steps.append(json_step("lm_scale", [py_lm, "-m", "benchmarks.lm_scale", "--work", str(work / "lm_scale"),
                                            *scale], parts))
    if "xla_steps" in wanted:
        try:
            py_xla = env_python("b2txt_xla")
        except FileNotFoundError:
            log.warning("xla_steps skipped: no envs/b2txt_xla (run ./setup_xla.sh to measure it)")
        else:
            steps.append(json_step("xla_steps", [py_xla, "-m", "benchmarks.xla_steps", "--steps",
                                                 "12" if args.quick else "50", "--work", str(work / "xla_steps")],
                                   parts))
    if "tf_vs_torch" in wanted:
        try:
            py_tf = env_python("b2txt_tf")
        except FileNotFoundError:
            log.warning("tf_vs_torch skipped: no envs/b2txt_tf (run ./setup_tensorflow_tpu.sh to measure it)")
        else:
            steps.append(json_step("tf_vs_torch", [py_tf, "-m", "benchmarks.tf_vs_torch", "--data_dir", str(hdf5),
                                                   "--steps", "3" if args.quick else "10", *args.train_overrides], parts))
    if "demo" in wanted and args.demo_dir is None:
        demo = work / f"demo_{args.demo}"
        cmd = [py, "-m", "end_to_end.run_demo", "--out", str(demo), *(["--quick"] if args.demo == "quick" else [])]
        steps.append(Step("demo", cmd, done=demo / "timings.json"))
    if "realtime_latency" in wanted:  # replays the demo's val trials through its model and 3-gram
        demo = args.demo_dir or (work / f"demo_{args.demo}" if "demo" in wanted else None)
        if demo is None:
            log.warning("realtime_latency skipped: it needs the demo's model and LM (give --demo_dir or run the demo)")
        else:
            quick = (["--configs", "small", "--trials", "2", "--wer_trials", "4", "--llm", "none", "--no_beside"]
                     if args.quick else ["--llm", args.llm, "--beside", "both"])
            steps.append(json_step("realtime_latency", [py, "-m", "benchmarks.realtime_latency", "--data_dir",
                                                        str(demo / "data" / "hdf5_data_final"), "--lm_path",
                                                        str(demo / "lm" / "3gram_lm_sil"), "--model_path",
                                                        str(demo / "model"), "--work", str(work / "realtime_latency"),
                                                        *quick], parts))
    return steps


def scale_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """Rows of ``benchmarks/lm_scale.py``: per corpus size and order, each way of serving the LM."""
    rows = []
    for run in report.get("runs", []):
        name = f"{run['tokens']:.0e} tokens, order {run['order']} ({sum(run['ngrams_unpruned']):,} n-grams)"
        for case in ("single_tlg", "two_pass", "peer"):
            r = run.get(case)
            if isinstance(r, dict):
                rows.append(("LM scale", f"{name}: {case}, ms/utt p50 / p95",
                             f"{r['ms_per_utt_p50']:.0f} / {r['ms_per_utt_p95']:.0f} ms, WER {r['wer']:.1%}, "
                             f"start-up {r['startup_s']:.1f} s", _mb(r["peak_rss_mb"])))
        store = run.get("store", {})
        if store:
            rows.append(("LM scale", f"{name}: n-gram store ({store['bytes_per_ngram']} B/n-gram), 100-best p50",
                         f"{store['ms_per_100best_p50']:.1f} ms, opens in {store['open_s']:.2f} s",
                         _mb(store["rss_mb_after_open"])))
    return rows


def _ms(entry: dict | None) -> str:
    if not entry or entry.get("n") == 0:  # nothing measured (e.g. no answer under load)
        return "-"
    return f"{entry['p50_ms']:.0f} / {entry['p95_ms']:.0f} ms" if "p50_ms" in entry else json.dumps(entry)


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(area, what, value, peak RSS) rows of the markdown table."""
    rows: list[tuple[str, str, str, str]] = []
    rss = report.get("benchmark_process_peak_rss_mb", {})
    for r in report.get("train_throughput", {}).get("results", []):
        rows.append(("training", f"{r['config']} config ({r['gru']} GRU, batch {r['batch_size']}, {r['device']})",
                     f"{r['steps_per_s']:.3f} steps/s ({r['s_per_step']:.2f} s/step, {r['cpu_s_per_step']:.2f} CPU s)",
                     f"{r['peak_rss_mb']:.0f} (+ workers {r['peak_rss_workers_mb']:.0f})"))
    ratios = report.get("train_throughput", {}).get("ratios")
    if ratios:  # the adversarial nnn-small next to its peer, measured in the same run
        rows.append(("training", "nnn_small / small (same run)",
                     f"{ratios['nnn_small_over_small_steps_per_s']:.2f}x steps/s, "
                     f"{ratios['nnn_small_over_small_cpu_s_per_step']:.2f}x CPU s/step",
                     f"{ratios['nnn_small_over_small_peak_rss']:.2f}x"))
    for r in report.get("stream_latency", {}).get("results", []):
        rows.append(("streaming", f"{r['config']} GRU {r['gru']} per 80 ms frame ({r['device']})",
                     f"p50 {r['ms_per_frame_p50']:.1f} / p95 {r['ms_per_frame_p95']:.1f} ms, RTF {r['rtf']:.3f}",
                     _mb(rss.get('stream_latency'))))
    lm = report.get("lm_decode_latency", {})
    for name in ("1gram", "3gram"):
        entry = lm.get(name)
        if not entry:
            continue
        ngram = entry.get("ngram", {})
        rows.append(("LM decode", f"{name}: streaming chunk (5 frames), p50 / p95", _ms(ngram.get("chunk")), "-"))
        rows.append(("LM decode", f"{name}: finalize, n-gram only, p50 / p95", _ms(ngram.get("finalize")), "-"))
        for mode, label in (("ngram_rescore", "+ unpruned n-gram rescoring"),
                            ("ngram_llm_batch", "+ causal LM (padded batch, the original)"),
                            ("ngram_llm", "+ causal LM (prefix tree)")):
            if mode in entry:
                load = entry[mode].get("load_seconds")
                note = f" (first load {load:.0f} s)" if load else ""
                rows.append(("LM decode", f"{name}: finalize {label}, p50 / p95", _ms(entry[mode]["finalize"]) + note,
                             "-"))
        llm = lm.get("llm_rescoring_1gram") if name == "1gram" else None
        if llm and "batch" in llm and "tree" in llm:
            rows.append(("LM decode", f"1gram: causal-LM rescoring alone ({llm['nbest_size']['mean']:.0f} candidates), "
                         "batch -> tree, p50", f"{llm['batch']['p50_ms']:.0f} -> {llm['tree']['p50_ms']:.0f} ms "
                         f"(x{llm['speedup_p50']}, same best {llm['same_best_sentence']:.0%})", "-"))
            if "default" in llm:  # the server's defaults now (llm_prune, llm_dtype)
                d, v = llm["default"], llm.get("variants", {}).get("default", {})
                rows.append(("LM decode", f"1gram: causal-LM rescoring alone, defaults ({v.get('dtype', '?')}, prune "
                             f"{int(bool(v.get('prune')))}), p50 / p95",
                             f"{d['p50_ms']:.0f} / {d['p95_ms']:.0f} ms (x{d.get('speedup_p50_vs_batch', '?')} vs batch, "
                             f"WER {d['wer']:.1%} vs {llm['batch']['wer']:.1%})", "-"))
        if "redis_round_trip_no_llm" in entry:
            rows.append(("LM decode", f"{name}: client decode_trial over Redis, p50 / p95",
                         _ms(entry["redis_round_trip_no_llm"].get("decode_trial")), "-"))
    if lm:
        rows.append(("LM decode", "benchmark process", f"{lm.get('n_sentences', '?')} sentences",
                     _mb(rss.get('lm_decode_latency'))))
    rows += load_rows(report.get("lm_server_load", {}), rss.get("lm_server_load"))
    rows += scale_rows(report.get("lm_scale", {}))
    tlg = report.get("tlg_build", {})
    for case in ("unigram_wordfreq", "trigram", "big_trigram"):
        if case in tlg:
            c = tlg[case]
            rows.append(("TLG build", f"{case} ({c['vocabulary']} words, {c['tlg_states']} states, {c['tlg_mb']} MB)",
                         f"{c['wall_seconds']:.1f} s", f"{c['peak_rss_mb']:.0f}"))
    rows += realtime_rows(report.get("realtime_latency", {}), rss.get("realtime_latency"))
    rows += xla_rows(report.get("xla_steps", {}), rss.get("xla_steps"))
    rows += tf_rows(report.get("tf_vs_torch", {}), rss.get("tf_vs_torch"))
    demo = report.get("demo", {})
    if demo:
        for step, t in demo.get("timings", {}).items():
            if step == "total":
                continue
            wall = "reused" if t.get("reused") else (f"{t['wall_s']:.1f} s" if "wall_s" in t else "-")
            peak = f"{t['peak_rss_mb']:.0f}" if t.get("peak_rss_mb") is not None else "-"
            rows.append(("end to end", f"{demo['mode']}: {step}", wall, peak))
        total = demo.get("timings", {}).get("total", {})
        if "wall_s" in total:
            rows.append(("end to end", f"{demo['mode']}: total wall time", f"{total['wall_s']:.0f} s", "-"))
    return rows


def realtime_rows(rt: dict, bench_rss: float | None) -> list[tuple[str, str, str, str]]:
    """Rows of ``realtime_latency``: per-frame tails and misses, final-sentence tails, causal vs offline PER."""
    rows = []
    for r in rt.get("rows", []):
        what = (f"{r['config']} {r.get('gru', '')} ({r['weights'].split('/')[-1]} weights"
                f"{', beside ' + r['beside'] if r.get('beside') else ''}{', + ' + r['llm'] if r.get('llm') else ''})")
        age, final = r["frame_age_ms"], r["final_ms"]
        if age.get("n"):
            rows.append(("real time", f"{what}: newest bin -> partial, p50 / p99 / max",
                         f"{age['p50_ms']:.0f} / {age['p99_ms']:.0f} / {age['max_ms']:.0f} ms, "
                         f"{100 * r['missed_deadline_fraction']:.1f} % > 80 ms", _mb(bench_rss)))
        if final.get("n"):
            rows.append(("real time", f"{what}: end of speech -> final sentence, p50 / p95",
                         f"{final['p50_ms']:.0f} / {final['p95_ms']:.0f} ms", "-"))
        upd = r.get("updates")
        if upd and upd.get("n"):
            rows.append(("real time", f"{what}: recalibration updates ({upd['steps']} steps each), p50 / max",
                         f"{upd['seconds_p50']:.1f} / {upd['seconds_max']:.1f} s ({upd['n']} updates, "
                         f"{r['models_used']} models used in {r['sentences']} sentences)", "-"))
    acc = rt.get("accuracy")
    if acc:
        rows.append(("real time", "PER offline centred -> causal smoothing (val)",
                     f"{100 * acc['centred']['per']:.1f} -> {100 * acc['causal']['per']:.1f} % "
                     f"({100 * acc['per_relative_cost']:+.1f} % relative)", "-"))
    return rows


def _mb(value: float | None) -> str:
    """A peak-RSS cell: whole MB, or "-" when it was not measured."""
    return "-" if value is None else f"{value:.0f}"


def xla_rows(xla: dict, bench_rss: float | None) -> list[tuple[str, str, str, str]]:
    """Rows of ``benchmarks/xla_steps.py``: eager vs XLA-on-CPU steps/s, graphs compiled, logit difference."""
    if not xla:
        return []
    eager, dev = xla["eager"], xla["xla"]
    peak = _mb(bench_rss)
    return [("PyTorch/XLA", f"tiny nnn, eager CPU: steady steps/s ({eager['steps']} steps in {eager['wall_s']:.0f} s)",
             f"{eager['steady_steps_per_s']:.2f}", peak),
            ("PyTorch/XLA", f"tiny nnn, XLA on CPU: steady steps/s ({dev['steps']} steps in {dev['wall_s']:.0f} s)",
             f"{dev['steady_steps_per_s']:.2f} (x{xla['xla_over_eager_steady_speed']:.3g} eager)", peak),
            ("PyTorch/XLA", f"XLA graphs compiled in {dev['steps']} steps (last new at step "
             f"{dev['last_new_graph_at_step']})", str(dev["compiled_graphs"]), "-"),
            ("PyTorch/XLA", "max |logit| difference eager vs XLA, fp32, T = 20",
             f"{dev['max_abs_logit_diff_vs_eager']:.2g} (logits up to {dev['logit_scale']:.2g})", "-")]


def tf_rows(res: dict, bench_rss: float | None) -> list[tuple[str, str, str, str]]:
    """Rows of ``benchmarks/tf_vs_torch.py``: TF vs PyTorch steps/s on the CPU, logit and CTC agreement."""
    if not res:
        return []
    peak = _mb(bench_rss)
    t, f, a = res["torch_cpu"], res["tf_cpu"], res["agreement_fp32"]
    return [("TensorFlow port", f"{res['config']}, PyTorch CPU steps/s ({res['threads']} threads)",
             f"{t['steps_per_s']:.2f}", peak),
            ("TensorFlow port", f"{res['config']}, TF CPU steps/s (T padded to {f['padded_bins']})",
             f"{f['steps_per_s']:.2f} (x{res['tf_over_torch_steps_per_s']:.3g} PyTorch)", peak),
            ("TensorFlow port", "max |logit| difference PyTorch vs TF, same weights, fp32",
             f"{a['logit_max_abs_diff']:.2g}", "-"),
            ("TensorFlow port", "CTC loss difference PyTorch vs TF (batch mean)",
             f"{a['ctc_loss_abs_diff']:.2g} (of {a['ctc_loss_torch']:.4g})", "-")]


def load_rows(load: dict, bench_rss: float | None) -> list[tuple[str, str, str, str]]:
    """Rows of ``benchmarks/lm_server_load.py``: throughput by workers, a real client under floods,
    huge utterances, SIGTERM, the evaluator's speed-up (toy LM)."""
    rows: list[tuple[str, str, str, str]] = []
    for e in load.get("throughput", []):
        rows.append(("LM server load", f"{e['clients']} clients, {e['workers']} worker(s): sentences/s (trial p50 / p95)",
                     f"{e['sentences_per_s']:.1f} ({_ms(e['trial_latency'])})", f"{e['server_peak_rss_mb']:.0f}"))
    for kind in ("tiny", "no_input"):
        e = load.get(f"flood_{kind}")
        if e:
            real = e["real_client"]
            rows.append(("LM server load", f"real client while another floods ({e['flood_requests']} {kind} requests)",
                         f"{real['answered']}/{real['asked']} answered, {_ms(real['latency'])}",
                         f"{e['server_peak_rss_mb']:.0f}"))
    for e in load.get("huge", {}).get("utterances", []):
        value = (f"finalize {e['finalize_s']:.1f} s" if e.get("finalize_s") is not None
                 else e.get("error", f"no answer within {load.get('timeout_s')} s"))
        rows.append(("LM server load", f"one utterance of {e['frames']} frames", value,
                     f"{e['server_peak_rss_mb_so_far']:.0f}"))
    if "sigterm_during_finalize" in load:
        e = load["sigterm_during_finalize"]
        value = f"exit after {e['exit_s']:.1f} s" if e.get("exit_s") is not None else "killed (no exit)"
        rows.append(("LM server load", f"SIGTERM during a {e['frames']}-frame finalize", value, "-"))
    if "over_long" in load:
        e = load["over_long"]
        rows.append(("LM server load", f"one {e['frames']}-frame chunk ({e['mb']} MB)",
                     f"{e['answer'][:60]} after {e['answer_s']:.1f} s", f"{e['server_peak_rss_mb']:.0f}"))
    for e in load.get("evaluator", []):
        multi = e.get("multi_client_pipelined_trials_per_s")
        rows.append(("LM server load", f"one evaluator, {e['workers']} worker(s): trials/s single-client / pipelined",
                     f"{e['single_client_streams_trials_per_s']:.2f} / {multi if multi is not None else '-'}", "-"))
    if "legacy_two_clients" in load:
        e = load["legacy_two_clients"]
        rows.append(("LM server load", "two evaluators on the original streams: correct / empty / wrong / errors",
                     f"{e['correct']} / {e['empty']} / {e['wrong']} / {e['errors']}", "-"))
    if load and bench_rss is not None:
        rows.append(("LM server load", "benchmark process", f"{load.get('wall_s', '?')} s", f"{bench_rss:.0f}"))
    return rows


def markdown(report: dict) -> str:
    lines = [f"Performance report ({report['machine']['cpus']} CPUs, {report['machine']['device']}, "
             f"{report['created']})", "",
             "| area | what | value | peak RSS (MB) |", "|---|---|---|---|"]
    lines += [f"| {a} | {w} | {v} | {m} |" for a, w, v, m in table_rows(report)]
    return "\n".join(lines) + "\n"


class BadInput(Exception):
    """A file the report reads is not what it expects (one line: the file and what was expected)."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc}); expected the JSON a benchmark or run_demo writes - delete it or "
                       f"re-measure with --force") from None


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return make_report(args)
    except BadInput as exc:
        log.error("%s", exc)
        return 2


def make_report(args: argparse.Namespace) -> int:
    """Run what ``<out>/parts`` lacks, then write report.json and report.md; returns the exit status."""
    args.out = args.out.resolve()
    args.data_dir = args.data_dir.resolve() if args.data_dir else None
    args.demo_dir = args.demo_dir.resolve() if args.demo_dir else None
    parts, logs = args.out / "parts", args.out / "logs"
    parts.mkdir(parents=True, exist_ok=True)
    if args.data_dir is not None and not (args.data_dir / "hdf5_data_final").is_dir():
        log.error("%s: no hdf5_data_final/ folder (expected a T15 data folder, e.g. from python -m "
                  "nejm_b2txt_utils.synthetic; leave --data_dir out to generate one)", args.data_dir)
        return 2
    try:
        steps = plan(args)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 1
    if args.force:
        for step in steps:
            if step.done.parent == parts:
                step.done.unlink(missing_ok=True)
    from tqdm import tqdm

    report: dict = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "benchmark_process_peak_rss_mb": {},
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "device": _device_name(), "load_average_at_start": round(os.getloadavg()[0], 2)}}
    previous = args.out / "report.json"
    if previous.exists():  # keep the benchmark-process RSS of parts measured by an earlier, interrupted run
        report["benchmark_process_peak_rss_mb"] = read_json(previous).get("benchmark_process_peak_rss_mb", {})
    bar = tqdm(steps, desc="benchmarks", unit="benchmark")
    for step in bar:
        bar.set_postfix_str(step.name)
        try:
            info = run_step(step, logs, echo=False)
        except RuntimeError as exc:
            lines = [ln for ln in (logs / f"{step.name}.log").read_text(errors="replace").splitlines() if ln.strip()]
            log.error("%s (last line: %s)", exc, lines[-1] if lines else "none")
            return 1
        if "peak_rss_mb" in info:
            report["benchmark_process_peak_rss_mb"][step.name] = info["peak_rss_mb"]
    for name in ("train_throughput", "stream_latency", "tlg_build", "lm_decode_latency", "lm_server_load", "lm_scale",
                 "xla_steps", "tf_vs_torch", "realtime_latency"):
        part = parts / f"{name}.json"
        if part.exists() and name not in args.skip:
            report[name] = read_json(part)
    demo_dir = args.demo_dir or args.out / "work" / f"demo_{args.demo}"
    timings = demo_dir / "timings.json"
    if "demo" not in args.skip and timings.exists():
        demo_timings = read_json(timings)
        report["demo"] = {"dir": str(demo_dir), "mode": demo_timings.get("total", {}).get("mode", "demo"),
                          "timings": demo_timings}
    _write_atomic(args.out / "report.json", json.dumps(report, indent=2))
    table = markdown(report)
    _write_atomic(args.out / "report.md", table)
    print(table)
    print(f"report: {args.out / 'report.json'}\ntable:  {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
