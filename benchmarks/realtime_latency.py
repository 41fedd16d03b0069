"""Real-time decoding latency and the accuracy cost of causal processing.

``python -m benchmarks.realtime_latency --data_dir runs/demo/data/hdf5_data_final --lm_path
runs/demo/lm/3gram_lm_sil --model_path runs/demo/model``

Starts redis-server and the LM server (the demo's flags) and replays val trials through
``model_training.realtime.RealtimeDecoder`` (causal smoothing, end-of-speech rule, LM partial every frame):
- per 80 ms frame: model ms, LM partial ms, the newest bin's age when its partial is shown (p50/p95/p99/max),
  the fraction of frames later than 80 ms, word flicker; per sentence: end of speech (or last bin) -> final;
- for each of ``--configs`` (random weights: latency does not depend on them) and the trained ``--model_path``;
- ``beside``: the first config again while a training-step loop of the small config runs in another process
  (a stand-in for recalibration); ``--beside recalibration``: the trained model on its last session's val trials
  while ``model_training/recalibrate_online.py`` runs beside it on the same machine (prompted labels, an update
  of ``--recal_steps`` steps, no early stop, after every sentence from the 2nd on, checkpoints swapped in between
  sentences), with the update wall times;
- ``with_llm``: the trained model's sentences again with the LM server's causal LM (``--llm``) rescoring;
- ``accuracy``: PER (greedy) of all val trials and WER (LM server, n-gram) of the replayed ones, offline
  centred smoothing vs causal, the same trained model.
Prints JSON; ``benchmarks/report.py`` collects it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.measure import print_result
from model_training.bin_sources import replay_hdf5
from model_training.checkpoint import build_model, load_trained_model
from model_training.config import load_config
from model_training.realtime import RealtimeDecoder, StreamingLM
from model_training.realtime_stats import summarise
from model_training.streaming import StreamingModel
from nejm_b2txt_utils.cli_errors import ConfigError, check_flags, check_output_folder, exit_2_on_bad_input
from nejm_b2txt_utils.endpoint import EndpointRule

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("realtime_latency")
CONFIGS = {"baseline": REPO / "model_training" / "rnn_args.yaml",
           "small": REPO / "model_training" / "rnn_args_small.yaml"}


def random_model(name: str, sessions: list[str]):
    """The config's model with random weights (seed 0) and its data transforms."""
    cfg = load_config(CONFIGS[name], [f"dataset.sessions=[{','.join(sessions)}]",
                                      f"dataset.dataset_probability_val=[{','.join('1' * len(sessions))}]"])
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg.dataset.data_transforms, f"{cfg.model.n_layers}x{cfg.model.n_units}"


def start_lm(lm_path: Path, logs: Path, sup, llm: str | None, full_search: bool):
    """redis-server + LM server with the demo's flags (``run_demo.start_services``; its ``--quick`` search unless
    ``full_search``: random or briefly trained weights give flat posteriors, whose full search takes minutes);
    returns the port and both children."""
    from end_to_end.run_demo import start_services

    logs.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(quick=not full_search, no_llm=llm is None)
    port, lm_child, redis_child = start_services(ns, {"logs": logs, "lm3": lm_path}, sup)
    if llm and llm != "smollm2":
        raise ConfigError("--llm: only smollm2 (the demo's embedded causal LM) or none")
    return port, lm_child, redis_child


def replay(model, transforms, sessions, args, port: int, trials: int) -> list:
    """Decode ``trials`` val trials in real time (``--speed``); returns the finished sentences."""
    from nejm_b2txt_utils.redis_protocol import RemoteLMClient, connect

    client = RemoteLMClient(connect("127.0.0.1", port), timeout_s=120.0)
    decoder = RealtimeDecoder(StreamingModel(model, "cpu", transforms, "causal"), StreamingLM(client),
                              EndpointRule(args.trailing_ms, args.silence_prob), n_days=len(sessions))
    events = replay_hdf5(args.data_dir, sessions, "val", args.speed, trials)
    return list(decoder.run(events))


def accuracy(model, transforms, sessions, args, port: int) -> dict:
    """PER (greedy, all val trials) and WER (LM server, the first ``--wer_trials``): centred vs causal."""
    from model_training.inference import infer_trial
    from nejm_b2txt_utils.metrics import aggregate_error_rate, ctc_greedy_decode, word_error_rate
    from nejm_b2txt_utils.phonemes import model_to_lm_order
    from nejm_b2txt_utils.redis_protocol import RemoteLMClient, connect
    from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path

    client = RemoteLMClient(connect("127.0.0.1", port), timeout_s=120.0)
    out: dict = {}
    for mode in ("centred", "causal"):
        refs, hyps, labels, texts = [], [], [], []
        for day, s in enumerate(sessions):
            path = data_file_path(args.data_dir, s, "val")
            if not path.is_file():
                continue
            with T15File(path, patching=None) as f:
                for key in f.keys:
                    t = f.read_trial(key)
                    logits = infer_trial(model, t.input_features, day, "cpu", transforms, smoothing=mode)
                    refs.append(list(t.seq_class_ids))
                    hyps.append([int(i) for i in ctc_greedy_decode(logits)])
                    if len(texts) < args.wer_trials:
                        texts.append(client.decode_trial(model_to_lm_order(logits))["candidate_sentences"][0])
                        labels.append(t.sentence_label)
        per, wer = aggregate_error_rate(refs, hyps, n_resamples=0), word_error_rate(labels, texts, n_resamples=0)
        out[mode] = {"per": round(per.rate, 4), "per_trials": len(refs), "wer": round(wer.rate, 4),
                     "wer_trials": len(texts)}
    out["per_relative_cost"] = round(out["causal"]["per"] / out["centred"]["per"] - 1, 4) if out["centred"]["per"] else None
    return out


def beside_worker(seconds: float) -> int:
    """The CPU-heavy neighbour: forward + backward + AdamW steps of the small config on random batches."""
    model, _, _ = random_model("small", ["t15.2023.08.13"])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, day = torch.randn(8, 400, 512), torch.zeros(8, dtype=torch.long)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        opt.zero_grad()
        model(x, day).logsumexp(-1).mean().backward()
        opt.step()
    return 0


def beside_recalibration(model_path: Path, sessions: list[str], args, port: int) -> dict:
    """The trained model's replay of its last session's val trials (LM server, publishing each finished sentence)
    while ``recalibrate_online`` updates and publishes checkpoints beside it; the row plus the update times."""
    import shutil
    import signal

    from model_training.finished_sentences import publish_sentence
    from nejm_b2txt_utils.redis_protocol import FINISHED_SENTENCE_STREAM, RemoteLMClient, connect
    from nejm_b2txt_utils.t15_hdf5 import data_file_path

    session = [s for s in sessions if data_file_path(args.data_dir, s, "val").is_file()][-1]
    out = args.work / "recalibration"
    shutil.rmtree(out, ignore_errors=True)
    r = connect("127.0.0.1", port)
    r.delete(FINISHED_SENTENCE_STREAM)
    recal = subprocess.Popen([sys.executable, "-m", "model_training.recalibrate_online", "--model_path", str(model_path),
                              "--session", session, "--labels", "prompted", "--min_sentences", "2", "--out", str(out),
                              "--redis_ip", "127.0.0.1", "--redis_port", str(port), "--max_steps",
                              str(args.recal_steps), "--stop_loss", "0"],  # no early stop: every update the full load
                             cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        model, margs = load_trained_model(model_path, "cpu")
        decoder = RealtimeDecoder(StreamingModel(model, "cpu", margs.dataset.data_transforms, "causal"),
                                  StreamingLM(RemoteLMClient(connect("127.0.0.1", port), timeout_s=120.0)),
                                  EndpointRule(args.trailing_ms, args.silence_prob), control=r, session=session,
                                  sessions=sessions, model_path=str(model_path.resolve()), load_in_background=True,
                                  model_loader=lambda path: load_trained_model(path, "cpu"))
        decoder.on_sentence_end.append(lambda s: publish_sentence(r, s, session))
        sentences = list(decoder.run(replay_hdf5(args.data_dir, [session], "val", args.speed, args.trials)))
    finally:
        recal.send_signal(signal.SIGTERM)  # as its Ctrl-C: one line, the published checkpoints stay
        try:
            recal.wait(timeout=60)
        except subprocess.TimeoutExpired:  # never leave it behind, never lose the rows measured
            log.warning("recalibrate_online did not stop within 60 s of SIGTERM; killed")
            recal.kill()
            recal.wait()
    state_file = out / "recalibration.json"
    updates = json.loads(state_file.read_text())["updates"] if state_file.is_file() else []
    seconds = sorted(u["seconds"] for u in updates)
    return row("trained", str(model_path), sentences, llm=None, beside="recalibrate_online", session=session,
               models_used=len({s.model_path for s in sentences}),
               updates={"n": len(updates), "steps": args.recal_steps,
                        "seconds_p50": seconds[len(seconds) // 2] if seconds else None,
                        "seconds_max": seconds[-1] if seconds else None})


def row(name: str, weights: str, sentences: list, **extra) -> dict:
    return {"config": name, "weights": weights, **extra, **summarise(sentences)}


@exit_2_on_bad_input(FileNotFoundError)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=REPO / "runs/demo/data/hdf5_data_final", help="HDF5 root")
    p.add_argument("--lm_path", type=Path, default=REPO / "runs/demo/lm/3gram_lm_sil", help="the demo's 3-gram")
    p.add_argument("--model_path", type=Path, default=None,
                   help="a trained model (runs/demo/model): its timings, the causal-LM finals and the PER/WER rows")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                   help="random-weight models timed (default: %(default)s)")
    p.add_argument("--trials", type=int, default=8, help="val trials replayed per measurement")
    p.add_argument("--speed", type=float, default=1.0, help="replay pace (1 = real time; 0 = as fast as possible)")
    p.add_argument("--trailing_ms", type=float, default=800.0)
    p.add_argument("--silence_prob", type=float, default=0.9)
    p.add_argument("--llm", default="smollm2", help="causal LM of the with_llm rows ('none' to skip)")
    p.add_argument("--wer_trials", type=int, default=40, help="val trials of the WER comparison")
    p.add_argument("--full_search", action="store_true",
                   help="the demo's full LM search (default: its --quick search: beam 10, lattice beam 4, 10-best)")
    p.add_argument("--no_beside", action="store_true", help="skip the measurements beside another process")
    p.add_argument("--beside", choices=("training", "recalibration", "both"), default="training",
                   help="the neighbour of the beside rows: a training-step loop (random weights), recalibrate_online "
                        "(needs --model_path), or both (default: %(default)s)")
    p.add_argument("--recal_steps", type=int, default=20, help="optimizer steps per recalibration update")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the decoder (default: %(default)s)")
    p.add_argument("--work", type=Path, default=REPO / "runs/benchmarks/work/realtime_latency", help="logs")
    p.add_argument("--beside_worker", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.beside_worker is not None:
        return beside_worker(args.beside_worker)
    check_flags(args, {"trials": 1, "speed": 0, "trailing_ms": 1, "wer_trials": 0, "threads": 1, "recal_steps": 1})
    check_output_folder("--work", args.work)
    if not args.no_beside and args.beside != "training" and args.model_path is None:
        raise ConfigError("--beside recalibration: needs --model_path (a trained model to recalibrate)")
    for path, what in ((args.data_dir, "HDF5 root"), (args.lm_path / "TLG.fst", "LM (TLG.fst)")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: {what} not found (run ./run_demo.sh first, or pass --data_dir/--lm_path)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    from end_to_end.processes import Supervisor

    trained = None
    if args.model_path is not None:
        trained = load_trained_model(args.model_path, "cpu")
    sessions = list(trained[1].dataset.sessions) if trained else sorted(
        d.name for d in args.data_dir.iterdir() if (d / "data_val.hdf5").is_file())
    result: dict = {"benchmark": "realtime_latency", "speed": args.speed, "lm_search": "full" if args.full_search
                    else "quick", "trials": args.trials,
                    "torch_threads": args.threads, "endpoint": {"trailing_ms": args.trailing_ms,
                                                                "silence_prob": args.silence_prob},
                    "lm": str(args.lm_path), "smoothing": "causal", "rows": []}
    with Supervisor() as sup:
        port, lm_child, redis_child = start_lm(args.lm_path, args.work / "no_llm", sup, None, args.full_search)
        for name in args.configs:
            model, transforms, gru = random_model(name, sessions)
            log.info("timing %s (%s, random weights)", name, gru)
            result["rows"].append(row(name, "random", replay(model, transforms, sessions, args, port, args.trials),
                                      gru=gru, llm=None))
        if trained:
            result["rows"].append(row("trained", str(args.model_path), replay(*trained[:1],
                                      trained[1].dataset.data_transforms, sessions, args, port, args.trials), llm=None))
            result["accuracy"] = accuracy(trained[0], trained[1].dataset.data_transforms, sessions, args, port)
        if not args.no_beside and args.beside != "recalibration" and args.configs:
            name = args.configs[0]
            neighbour = subprocess.Popen([sys.executable, "-m", "benchmarks.realtime_latency", "--beside_worker",
                                          "3600"], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
            try:
                time.sleep(5)  # past its start-up
                model, transforms, gru = random_model(name, sessions)
                result["rows"].append(row(name, "random", replay(model, transforms, sessions, args, port, args.trials),
                                          gru=gru, llm=None, beside="small-config training loop"))
            finally:
                neighbour.kill()
                neighbour.wait()
        if not args.no_beside and args.beside != "training":
            log.info("timing the trained model beside recalibrate_online")
            result["rows"].append(beside_recalibration(args.model_path, sessions, args, port))
        lm_child.stop()
        redis_child.stop()
        if args.llm != "none":
            port, lm_child, redis_child = start_lm(args.lm_path, args.work / "llm", sup, args.llm, args.full_search)
            model, transforms = (trained[0], trained[1].dataset.data_transforms) if trained else random_model(
                "small", sessions)[:2]
            result["rows"].append(row("trained" if trained else "small", str(args.model_path or "random"),
                                      replay(model, transforms, sessions, args, port, args.trials), llm=args.llm))
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
