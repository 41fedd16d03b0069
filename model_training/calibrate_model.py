"""Calibrate a trained model to a new day from its first N sentences (seconds on a CPU).

``python model_training/calibrate_model.py --model_path M --data_dir D --session t15.2025.04.13
--n_sentences 10 --update day_layer`` writes ``<out_path>/checkpoint/{args.yaml,best_checkpoint}``: the
model with one more day (``day_weights.N``/``day_biases.N``, ``dataset.sessions`` extended), the new day
initialised from the nearest earlier session by date, then trained on the session's first N sentences
(``--split``, stored order) with the earlier sessions' training trials replayed (``--update
day_layer+gru`` only), gradient clipping and an early stop (``model_training/calibration.py``).
``evaluate_model.py --model_path <out_path>`` then decodes the session like any other. A session the
model already knows is recalibrated in place of its layer (no day added).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model_training.calibration import (  # noqa: E402
    CONTROL_STREAM,
    UPDATE_MODES,
    CalibrationSettings,
    Calibrator,
    publish_model_path,
    read_sentences,
)
from model_training.checkpoint import CheckpointError, load_trained_model  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, check_flags, check_output_folder, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.t15_hdf5 import T15FormatError, data_file_path  # noqa: E402

log = logging.getLogger("calibrate_model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = CalibrationSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="trained model folder (checkpoint/args.yaml, best_checkpoint)")
    p.add_argument("--data_dir", required=True, help="HDF5 root (<data_dir>/<session>/data_<split>.hdf5)")
    p.add_argument("--session", required=True, help="the session to calibrate, e.g. t15.2025.04.13")
    p.add_argument("--n_sentences", type=int, default=10, help="its first N sentences (default: %(default)s)")
    p.add_argument("--split", default="train", choices=("train", "val"), help="file they come from (default: train)")
    p.add_argument("--update", choices=UPDATE_MODES, default=d.update,
                   help="day_layer: only the new day's input layer; day_layer+gru: also every GRU weight, "
                        "with earlier sessions replayed (default: %(default)s)")
    p.add_argument("--out_path", default=None, help="output model folder (default: <model_path>_<session>)")
    p.add_argument("--max_steps", type=int, default=d.max_steps, help="optimizer steps at most (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="sentences per step (default: %(default)s)")
    p.add_argument("--replay_fraction", type=float, default=d.replay_fraction,
                   help="share of each batch replayed from earlier sessions, day_layer+gru only (default: %(default)s)")
    p.add_argument("--replay_per_session", type=int, default=32,
                   help="training trials read per earlier session for replay (default: %(default)s)")
    p.add_argument("--grad_clip", type=float, default=d.grad_clip, help="gradient norm clip, 0 = off (default: 10)")
    p.add_argument("--stop_loss", type=float, default=d.stop_loss,
                   help="stop once the new day's CTC loss per phoneme is below this (default: %(default)s)")
    p.add_argument("--publish", default=None, metavar="HOST:PORT",
                   help="after writing, XADD the new model folder to decoderControl:stream (newModelPath) on this "
                        "Redis, for a running real-time decoder ($REDIS_PASSWORD if set)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--gpu_number", type=int, default=-1, help="GPU index; -1 = CPU (default: %(default)s)")
    return p.parse_args(argv)


@exit_2_on_bad_input(CheckpointError, T15FormatError, FileNotFoundError, ConnectionError)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_flags(args, {"n_sentences": 1, "max_steps": 1, "batch_size": 1, "replay_per_session": 0, "threads": 0})
    host, _, port = (args.publish or "").rpartition(":")
    if args.publish is not None and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--publish: expected HOST:PORT, got {args.publish!r}")
    for flag, folder in (("--model_path", args.model_path), ("--data_dir", args.data_dir)):
        if not Path(folder).is_dir():
            what = "is a file" if Path(folder).exists() else "not found"
            raise ConfigError(f"{flag} {folder}: {what}; expected a folder")
    out_path = Path(args.out_path or f"{str(args.model_path).rstrip('/')}_{args.session}")
    if out_path.resolve() == Path(args.model_path).resolve():
        raise ConfigError(f"--out_path {out_path}: must differ from --model_path (the model in use stays intact)")
    check_output_folder("--out_path", out_path)  # before any training (was a traceback after it)
    settings = CalibrationSettings(args.update, args.lr, args.max_steps, args.batch_size, args.replay_fraction,
                                   args.grad_clip, args.stop_loss, seed=args.seed)
    try:
        settings.check()
    except ConfigError as exc:  # the settings' names are this script's flags
        raise ConfigError(f"--{exc}") from None
    log.info("args: %s", vars(args))
    if args.threads:
        torch.set_num_threads(args.threads)
    from nejm_b2txt_utils.devices import select_device

    device = select_device(args.gpu_number)
    model, model_args = load_trained_model(args.model_path, "cpu")
    sessions = list(model_args.dataset.sessions)
    subset = model_args.dataset.get("feature_subset")
    replay = []
    if args.update == "day_layer+gru" and args.replay_per_session > 0:
        for day, s in enumerate(sessions):
            if s != args.session and data_file_path(args.data_dir, s, "train").is_file():
                replay += read_sentences(args.data_dir, s, "train", day, args.replay_per_session, subset)
    cal = Calibrator(model, model_args, args.session, settings, replay, args.data_dir, device)
    new = read_sentences(args.data_dir, args.session, args.split, cal.day, args.n_sentences, subset)
    if len(new) < args.n_sentences:
        log.warning("%s has %d %s sentences, fewer than --n_sentences %d", args.session, len(new), args.split,
                    args.n_sentences)
    if not any(s.labels is not None for s in new):
        raise ConfigError(f"{data_file_path(args.data_dir, args.session, args.split)}: no labelled sentences")
    if args.session in sessions:  # a day the model knows: its own layer is recalibrated, no day is added
        start = f"day {cal.day} known to the model: recalibrating its own layer"
    else:
        start = f"new day {cal.day} initialised from {sessions[cal.source_day]} (day {cal.source_day})"
    log.info("%s: %s; training %s on %d sentences, %d replayed trials", args.session, start, args.update, len(new),
             len(cal.replay))
    res = cal.update(new)
    log.info("%d steps in %.2f s, loss per phoneme %.3f%s", res.steps, res.seconds, res.loss_per_phoneme,
             " (early stop)" if res.stopped_early else "")
    path = cal.save(out_path, n_sentences=len(new))
    log.info("Wrote %s", path)
    if args.publish is not None:
        import redis

        from nejm_b2txt_utils.redis_protocol import connect

        try:
            entry = publish_model_path(connect(host, int(port), socket_connect_timeout=10), out_path)
        except redis.RedisError as exc:
            raise ConnectionError(f"--publish {args.publish}: {exc} (the model is written: {out_path})") from exc
        log.info("Published %s on %s (%s)", out_path, CONTROL_STREAM, entry.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
