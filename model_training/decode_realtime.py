"""Decode in real time: 20 ms bins one at a time -> partial text while they come -> final sentence at the end
of speech.

``python model_training/decode_realtime.py --model_path runs/demo/model --data_dir runs/demo/data/hdf5_data_final
--speed 1`` replays the val trials at real pace through the LM server on Redis (start
``language_model/language-model-standalone.py`` first; ``--lm none`` shows greedy phonemes without one).
``--source redis`` reads bins from the Redis stream ``realtime_neural_bins`` instead (see
``model_training/bin_sources.py`` for its fields). Finished sentences are appended to ``--out`` (JSONL) as they
are final, so a rerun after an interruption skips them (replay); the latency table is printed at the end.

Online recalibration: ``--publish_sentences`` XADDs every finished sentence (its bins, text, reference label,
confidence and the model that decoded it) to ``realtime_finished_sentences`` for
``model_training/recalibrate_online.py``, whose checkpoints come back on ``decoderControl:stream`` and are
swapped in between sentences only. ``--session S`` decodes a session the model may not know yet (on the nearest
earlier day until a recalibrated model with S's own day is swapped in).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from model_training.bin_sources import BIN_STREAM, redis_bins, replay_hdf5  # noqa: E402
from model_training.checkpoint import CheckpointError, load_trained_model  # noqa: E402
from model_training.eval_results import PartialResults, PartialResultsError  # noqa: E402
from model_training.realtime import GreedyText, LiveView, RealtimeDecoder, SourceError, StreamingLM  # noqa: E402
from model_training.realtime_stats import latency_table, summarise  # noqa: E402
from model_training.streaming import StreamingModel  # noqa: E402
from nejm_b2txt_utils.causal_features import SMOOTHING_MODES  # noqa: E402
from nejm_b2txt_utils.cli_errors import (  # noqa: E402
    ConfigError,
    check_flags,
    check_output_file,
    print_bad_input,
    print_line,
)
from nejm_b2txt_utils.devices import select_device  # noqa: E402
from nejm_b2txt_utils.endpoint import EndpointRule  # noqa: E402
from nejm_b2txt_utils.t15_hdf5 import T15FormatError  # noqa: E402

log = logging.getLogger("decode_realtime")
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=str(HERE / "../data/t15_pretrained_rnn_baseline"),
                   help="folder with checkpoint/args.yaml and checkpoint/best_checkpoint")
    p.add_argument("--source", choices=("hdf5", "redis"), default="hdf5",
                   help="hdf5: replay --data_dir trials; redis: read bins from --bin_stream (default: %(default)s)")
    p.add_argument("--data_dir", default=str(HERE / "../data/hdf5_data_final"), help="HDF5 root (--source hdf5)")
    p.add_argument("--eval_type", default="val", choices=("val", "test", "train"), help="split to replay")
    p.add_argument("--speed", type=float, default=1.0,
                   help="replay pace: 1 = real time (20 ms per bin), 0 = as fast as possible (default: %(default)s)")
    p.add_argument("--max_trials", type=int, default=None, help="replay at most this many trials")
    p.add_argument("--session", default=None,
                   help="decode as this session: --source hdf5 replays only its trials; a session the model does not "
                        "know runs on the nearest earlier day until a recalibrated model knows it")
    p.add_argument("--publish_sentences", action="store_true",
                   help="XADD each finished sentence (bins, text, label, confidence, model) to "
                        "realtime_finished_sentences for recalibrate_online.py")
    p.add_argument("--bin_stream", default=BIN_STREAM, help="Redis stream of bins (--source redis)")
    p.add_argument("--from_start", action="store_true",
                   help="--source redis: read --bin_stream from its first entry (default: only bins written from now)")
    p.add_argument("--idle_timeout", type=float, default=None,
                   help="--source redis: stop after this many seconds without a bin (default: run until Ctrl-C)")
    p.add_argument("--smoothing", choices=SMOOTHING_MODES, default="causal",
                   help="causal: one-sided Gaussian, no delay; centred: the offline kernel, exact, 80 ms later "
                        "(default: %(default)s)")
    p.add_argument("--zscore_sentences", type=int, default=0,
                   help="rolling z-score over the last N finished sentences (0: off; the T15 files are z-scored "
                        "per block already) (default: %(default)s)")
    p.add_argument("--trailing_ms", type=float, default=800.0,
                   help="end of speech after this much BLANK/SIL following a phoneme (default: %(default)s)")
    p.add_argument("--silence_prob", type=float, default=0.9,
                   help="a frame is silent when P(BLANK) + P(SIL) >= this (default: %(default)s)")
    p.add_argument("--no_endpoint", action="store_true", help="finalise at the trial end only")
    p.add_argument("--lm", choices=("redis", "none"), default="redis",
                   help="redis: the LM server's partial and final text; none: greedy phonemes, no server")
    p.add_argument("--redis_ip", default="localhost", help="Redis host (password: $REDIS_PASSWORD if set)")
    p.add_argument("--redis_port", type=int, default=6379)
    p.add_argument("--redis_timeout", type=float, default=30.0, help="seconds to wait for each LM answer")
    p.add_argument("--lm_retries", type=int, default=3, help="rebuild a sentence at the LM this many times")
    p.add_argument("--gpu_number", type=int, default=-1, help="GPU index; -1 = CPU (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSONL of finished sentences (default: <model_path>/realtime_"
                                               "<eval_type>.jsonl)")
    p.add_argument("--restart", action="store_true", help="discard the sentences --out already holds")
    p.add_argument("--live", choices=("auto", "on", "off"), default="auto",
                   help="the partial-text line on stderr (auto: when stderr is a terminal)")
    p.add_argument("--summary_json", default=None, help="also write the latency summary here (JSON)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    check_flags(args, {"speed": 0, "max_trials": 1, "zscore_sentences": 0, "trailing_ms": 1, "redis_timeout": 0.001,
                       "lm_retries": 0, "threads": 1, "idle_timeout": 0.001})
    if not 0 < args.silence_prob <= 1:
        raise ConfigError(f"--silence_prob: expected 0 < p <= 1, got {args.silence_prob}")
    check_output_file("--summary_json", args.summary_json)  # before decoding, not after (was IsADirectoryError)
    return args


def skip_finished(events, store: PartialResults):
    """Drop the events of the trials ``store`` already holds (a resumed replay)."""
    for ev in events:
        if isinstance(ev, SourceError) or ev.sentence not in store:  # a SourceError is always reported
            yield ev


def sentence_publisher(r, decoder: RealtimeDecoder, view: LiveView, greedy: bool):
    """An ``on_sentence_end`` callback XADDing each finished sentence; a Redis error is one line, decoding goes on."""
    import redis

    from model_training.finished_sentences import publish_sentence

    def publish(s) -> None:
        sessions = decoder.sessions
        session = decoder.session or (sessions[s.day] if 0 <= s.day < len(sessions) else None)
        try:
            publish_sentence(r, s, session, "phonemes" if greedy else "words")
        except redis.RedisError as exc:
            view.message(f"error: --publish_sentences: sentence {s.sentence} not published: {exc}")
    return publish


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.gpu_number)
    model, model_args = load_trained_model(args.model_path, device)
    sessions = list(model_args.dataset.sessions)
    subset = model_args.dataset.get("feature_subset")
    stream = StreamingModel(model, device, model_args.dataset.data_transforms, args.smoothing, args.zscore_sentences,
                            n_channels=len(subset) if subset else int(model_args.model.n_input_features))
    r = None
    if args.lm == "redis" or args.source == "redis" or args.publish_sentences:
        from nejm_b2txt_utils.redis_protocol import connect

        r = connect(args.redis_ip, args.redis_port, socket_connect_timeout=5.0)
    if args.lm == "redis":
        import redis

        from nejm_b2txt_utils.redis_protocol import RemoteLMClient

        try:
            text = StreamingLM(RemoteLMClient(r, timeout_s=args.redis_timeout), retries=args.lm_retries)
        except redis.RedisError as exc:
            raise ConnectionError(f"cannot reach Redis at {args.redis_ip}:{args.redis_port} ({exc}); start "
                                  "redis-server and the LM server, or use --lm none") from exc
    else:
        text = GreedyText()
    view = LiveView(enabled=None if args.live == "auto" else args.live == "on")
    endpoint = None if args.no_endpoint else EndpointRule(args.trailing_ms, args.silence_prob)
    decoder = RealtimeDecoder(stream, text, endpoint, view, control=r, n_days=len(sessions),
                              model_loader=lambda path: load_trained_model(path, device), session=args.session,
                              sessions=sessions, model_path=str(Path(args.model_path).resolve()),
                              load_in_background=True)
    if args.publish_sentences:
        decoder.on_sentence_end.append(sentence_publisher(r, decoder, view, greedy=args.lm == "none"))
    out = Path(args.out) if args.out else Path(args.model_path) / f"realtime_{args.eval_type}.jsonl"
    header = {"model_path": str(Path(args.model_path).resolve()), "source": args.source, "smoothing": args.smoothing,
              "zscore_sentences": args.zscore_sentences, "lm": args.lm, "endpoint": None if endpoint is None else
              [args.trailing_ms, args.silence_prob]}
    store = PartialResults(out, header, args.restart, where_flag="--out")
    if args.source == "hdf5":
        replayed = [args.session] if args.session else sessions
        events = skip_finished(replay_hdf5(args.data_dir, replayed, args.eval_type, args.speed, args.max_trials,
                                           subset, stream.n_channels), store)
    else:
        events = redis_bins(r, args.bin_stream, "0-0" if args.from_start else "$", idle_timeout_s=args.idle_timeout)
    log.info("decoding %s (%s smoothing, end of speech %s, LM %s) -> %s", args.source, args.smoothing,
             "trial end only" if endpoint is None else f"after {args.trailing_ms:.0f} ms silence", args.lm, out)
    sentences = []
    t0 = time.time()
    # closed also on an error, so that the error line is not written onto the bar's line
    with tqdm(desc="sentences", unit="sent", disable=view.enabled, dynamic_ncols=True) as bar:
        for s in decoder.run(events):
            store.add({"id": s.sentence, **s.record()})
            s.features = None  # published already (--publish_sentences); the latency table does not need the bins
            sentences.append(s)
            bar.update(1)
    log.info("%d sentences in %.1f s (%d bad bins skipped); saved in %s", len(sentences), time.time() - t0,
             decoder.bad_bins, out)
    summary = summarise(sentences)
    if args.summary_json:
        from nejm_b2txt_utils.atomic_io import atomic_write_json

        atomic_write_json(args.summary_json, summary)
    print(latency_table(summary))
    log.debug("%s", json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    from nejm_b2txt_utils.redis_protocol import LMProtocolError, LMTimeoutError

    try:
        args = parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run(args)
    except LMTimeoutError as exc:
        print_line(f"error: {exc} (finished sentences are saved; rerun the same command to continue)")
        return 3
    except (ConfigError, CheckpointError, PartialResultsError, T15FormatError, FileNotFoundError, ConnectionError,
            LMProtocolError) as exc:
        return print_bad_input(exc)
    except KeyboardInterrupt:
        print_line("interrupted (finished sentences are saved)")
        return 130
    except Exception as exc:  # redis-py's errors are not the builtin ConnectionError (was a traceback)
        if type(exc).__module__.split(".")[0] != "redis":
            raise
        print_line(f"error: Redis: {' '.join(str(exc).split())} (is redis-server running at --redis_ip/--redis_port?)")
        return 2


if __name__ == "__main__":
    sys.exit(main())
