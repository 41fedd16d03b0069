"""Evaluate a trained model: per-trial logits -> (Redis LM | greedy phonemes) -> CSV, PER/WER table.

``python model_training/evaluate_model.py --model_path ../data/t15_pretrained_rnn_baseline
--data_dir ../data/hdf5_data_final --eval_type test --gpu_number 1`` (the original's invocation).
The LM side is ``language_model/language-model-standalone.py`` on the same Redis; ``--lm none``
needs no server and writes greedy phoneme strings. Finished trials are saved as they complete,
so a rerun after an interruption (e.g. the LM server died) decodes only the remaining ones.
Beside the CSV (and ``--results_pkl``) a ``<file>.manifest.json`` records the command, git commit, package
versions, CPU/GPU and the SHA-256 of the checkpoints and data files (``nejm_b2txt_utils/run_manifest.py``).
Unlike the original this never FLUSHALLs Redis: stream positions start at the server's time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from model_training.checkpoint import CheckpointError, load_trained_model  # noqa: E402
from model_training.ensemble import load_ensemble  # noqa: E402
from model_training.eval_results import (  # noqa: E402
    PartialResults,
    PartialResultsError,
    encode_array,
    per_corpus_table,
    trial_id,
    write_results_pkl,
    write_submission_csv,
)
from model_training.inference import infer_trial, min_trial_bins  # noqa: E402
from nejm_b2txt_utils.atomic_io import DiskFullError  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, print_bad_input  # noqa: E402
from nejm_b2txt_utils.description_csv import CSV_NAME, CorpusLookup, session_date  # noqa: E402
from nejm_b2txt_utils.devices import select_device  # noqa: E402
from nejm_b2txt_utils.metrics import ctc_greedy_decode  # noqa: E402
from nejm_b2txt_utils.phonemes import model_ids_to_phonemes, model_to_lm_order  # noqa: E402
from nejm_b2txt_utils.redis_protocol import LMClient  # noqa: E402
from nejm_b2txt_utils.run_manifest import lm_folder_fingerprint, write_manifests  # noqa: E402
from nejm_b2txt_utils.t15_hdf5 import T15File, T15FormatError, data_file_path, list_sessions  # noqa: E402
from nejm_b2txt_utils.text import DEFAULT_TEXT_NORM, TEXT_NORMS  # noqa: E402

log = logging.getLogger("evaluate_model")
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", nargs="+", default=[str(HERE / "../data/t15_pretrained_rnn_baseline")],
                   help="folder with checkpoint/args.yaml and checkpoint/best_checkpoint; several folders: an "
                        "ensemble, their per-frame probabilities averaged (model_training/ensemble.py) into one "
                        "logit stream for the LM (same frame rate, sessions and smoothing required) "
                        "(default: %(default)s)")
    p.add_argument("--data_dir", default=str(HERE / "../data/hdf5_data_final"), help="HDF5 root (default: %(default)s)")
    p.add_argument("--eval_type", default="test", choices=("val", "test"), help="split to evaluate (default: %(default)s)")
    p.add_argument("--csv_path", default=None,
                   help=f"block description CSV (corpus of each trial) (default: {CSV_NAME} beside --data_dir, "
                        "where download_data.py and the synthetic generator put it)")
    p.add_argument("--gpu_number", type=int, default=1, help="GPU index; -1 = CPU (default: %(default)s)")
    p.add_argument("--lm", choices=("redis", "none"), default="redis",
                   help="redis: the LM server over Redis (original); none: greedy phonemes, no server "
                        "(default: %(default)s)")
    p.add_argument("--redis_ip", default="localhost", help="Redis host (password: $REDIS_PASSWORD if set)")
    p.add_argument("--redis_port", type=int, default=6379, help="Redis port (default: %(default)s)")
    p.add_argument("--redis_timeout", type=float, default=60.0,
                   help="seconds to wait for each LM answer before giving up (default: %(default)s)")
    p.add_argument("--out_dir", default=None, help="where the CSV and partial results go (default: --model_path)")
    p.add_argument("--results_pkl", default=None, help="also write per-trial results (incl. LM-order logits) here")
    p.add_argument("--lm_protocol", choices=("single", "multi"), default="single",
                   help="single: the original single-client streams (one evaluator per LM server, one trial at a "
                        "time); multi: the multi-client protocol, trials sent ahead so an LM server with "
                        "--num_workers N decodes N at once, and several evaluators can share it")
    p.add_argument("--lm_in_flight", type=int, default=8,
                   help="multi: trials sent ahead of their answers (default: %(default)s)")
    p.add_argument("--lm_params", default=None,
                   help="LM parameter file (language_model/tune_weights.py output): its run-time values are sent "
                        "to the LM server before decoding (single-client protocol); start the server with "
                        "--params_file FILE for the start-up ones")
    p.add_argument("--lm_retries", type=int, default=3,
                   help="redo a trial's LM requests this many times after a timeout or lost connection "
                        "(a restarted LM server or redis-server), each waiting --redis_timeout (default: 3)")
    p.add_argument("--text_norm", choices=sorted(TEXT_NORMS), default=DEFAULT_TEXT_NORM,
                   help="WER text normalisation: b2txt (digits spoken, hyphens split, typographic quotes; the LM "
                        "corpus's and the labels') or original (the original evaluator's, to reproduce published "
                        "numbers) (default: %(default)s)")
    p.add_argument("--unknown_session", choices=("skip", "nearest", "error"), default="skip",
                   help="a session under --data_dir with the split that the model does not know (not in its "
                        "args.yaml dataset.sessions; a new day): skip = named in one warning line and not decoded; "
                        "nearest = decoded with the nearest earlier session's day layer (by date); error = stop "
                        "(exit 2). model_training/calibrate_model.py gives the model such a day (default: skip)")
    p.add_argument("--restart", action="store_true", help="discard saved partial results and start over")
    p.add_argument("-v", "--verbose", action="store_true", help="log every trial's greedy phonemes and text")
    return p.parse_args(argv)


def iter_trials(data_dir: Path, sessions: list[str], eval_type: str, n_features: int | None = None,
                days: list[int] | None = None):
    """(day index, T15File, trial key) for every trial of every session that has the split, in list order;
    ``n_features``: the width the model reads (``None``: any, e.g. with a feature subset); ``days[i]`` is the
    model's day index for ``sessions[i]`` (default ``i``)."""
    for session, day in zip(sessions, days if days is not None else range(len(sessions))):
        path = data_file_path(data_dir, session, eval_type)
        if not path.is_file():
            continue
        with T15File(path, n_features=n_features, patching=None) as f:  # decoded whatever the label count: PER shows the rest
            for key in f.keys:
                yield day, f, key


def count_trials(data_dir: Path, sessions: list[str], eval_type: str) -> int:
    n = 0
    for session in sessions:
        path = data_file_path(data_dir, session, eval_type)
        if path.is_file():
            with T15File(path, validate=False) as f:
                n += len(f)
                log.info("Loaded %d %s trials for session %s.", len(f), eval_type, session)
    return n


def sessions_to_decode(data_dir: Path, model_sessions: list[str], eval_type: str,
                       policy: str) -> tuple[list[str], list[int]]:
    """The sessions to decode and the day layer of each, after applying ``--unknown_session`` to the sessions
    under ``data_dir`` that have ``data_<eval_type>.hdf5`` but are not among the model's.

    Args:
        data_dir: the HDF5 root. model_sessions: args.yaml ``dataset.sessions``. eval_type: val or test.
        policy: ``skip`` (one warning line naming them), ``nearest`` (nearest earlier day by date) or ``error``.

    Returns:
        ``(sessions, day indices)``: the model's sessions in args order, then the unknown ones (``nearest``).

    Raises:
        ConfigError: ``error`` and an unknown session exists, or ``nearest`` and a name is not a date.
    """
    from model_training.calibration import nearest_day

    sessions, days = list(model_sessions), list(range(len(model_sessions)))
    found = list_sessions(data_dir) if data_dir.is_dir() else []
    unknown = [s for s in found if s not in model_sessions and data_file_path(data_dir, s, eval_type).is_file()]
    if not unknown:
        return sessions, days
    what = (f"{len(unknown)} session(s) under {data_dir} have data_{eval_type}.hdf5 but are not in the model's "
            f"args.yaml dataset.sessions: {', '.join(unknown)}")
    if policy == "error":
        raise ConfigError(f"{what} (--unknown_session nearest decodes them with the nearest earlier day's layer; "
                          "model_training/calibrate_model.py adds a day)")
    if policy == "skip":
        log.warning("%s: skipped (--unknown_session nearest decodes them with the nearest earlier day's layer)", what)
        return sessions, days
    nearest = [nearest_day(model_sessions, s) for s in unknown]
    log.warning("%s: decoded with the nearest known day's layer (the nearest earlier one, else the first later; %s)",
                what,
                ", ".join(f"{s} <- {model_sessions[d]}" for s, d in zip(unknown, nearest)))
    return sessions + unknown, days + nearest


def connect_lm(args: argparse.Namespace) -> LMClient:
    import redis

    from nejm_b2txt_utils.redis_multi_client import MultiClientLMClient
    from nejm_b2txt_utils.redis_protocol import RemoteLMClient, connect

    try:
        r = connect(args.redis_ip, args.redis_port, socket_connect_timeout=min(args.redis_timeout, 10.0))
        if args.lm_protocol == "multi":
            r.ping()
            return MultiClientLMClient(r, timeout_s=args.redis_timeout)
        return RemoteLMClient(r, timeout_s=args.redis_timeout, retries=args.lm_retries)
    except redis.RedisError as exc:
        raise ConnectionError(f"cannot reach Redis at {args.redis_ip}:{args.redis_port} ({exc}); start "
                              "redis-server and the LM server, or use --lm none") from exc


def decode_one(args, model, model_args, device, day: int, f: T15File, key: str, lookup) -> tuple[dict, object]:
    """Inference + greedy decode of one trial; returns its result record (``pred_sentence`` = the greedy
    phonemes until :func:`with_lm` fills in the LM's answer) and its LM-order logits."""
    trial = f.read_trial(key)
    features, subset = trial.input_features, model_args.dataset.get("feature_subset")
    if subset:  # Fix: the original evaluator ignored feature_subset, so such a model could not be evaluated
        features = features[:, list(subset)]
    logits = infer_trial(model, features, day, device, model_args.dataset.data_transforms)
    if logits.shape[0] == 0:  # was a conv1d traceback; the CSV keeps the trial's row
        log.warning("%s: %s (block %d, trial %d): %d bins, fewer than the %d the model needs for one output frame: "
                    "empty prediction", f.path, key, trial.block_num, trial.trial_num, features.shape[0],
                    min_trial_bins(model, model_args.dataset.data_transforms))
    greedy = model_ids_to_phonemes(ctc_greedy_decode(logits))  # collapse, then drop blanks (Fix: order)
    true = model_ids_to_phonemes(trial.seq_class_ids) if trial.seq_class_ids is not None else None
    lm_logits = model_to_lm_order(logits)
    partial, candidates = None, None
    pred = " ".join(greedy)
    rec = {"id": trial_id(trial.session, trial.block_num, trial.trial_num, key), "session": trial.session,
           "date": session_date(trial.session) or "unknown", "block_num": trial.block_num, "trial_num": trial.trial_num,
           "corpus": lookup(trial.session, trial.block_num) if lookup else "unknown",
           "sentence_label": trial.sentence_label, "pred_sentence": pred, "greedy_phonemes": greedy,
           "true_phonemes": true, "lm_partial": partial, "lm_candidates": candidates,
           "logits": encode_array(lm_logits)}
    log.debug("%s block %d trial %d: %s", trial.session, trial.block_num, trial.trial_num, " ".join(greedy))
    return rec, lm_logits


def with_lm(rec: dict, partial: str, candidates: dict) -> dict:
    """The record with the LM's answer: ``pred_sentence`` = the best candidate."""
    log.debug("%s: %s", rec["id"], candidates["candidate_sentences"][0])
    return {**rec, "pred_sentence": candidates["candidate_sentences"][0], "lm_partial": partial,
            "lm_candidates": candidates}


def send_lm_params(client: LMClient, path: str) -> None:
    """Decode with the run-time values of an LM parameter file (single-client protocol: a
    ``remote_lm_update_params`` message; multi-client: sent with every utterance).

    Raises:
        ConfigError: a bad file.
    """
    from nejm_b2txt_utils.lm_params import UPDATABLE_PARAMS, LMParamError, load_params_file

    try:
        values = load_params_file(path)
    except LMParamError as exc:
        raise ConfigError(str(exc)) from None
    runtime = {k: v for k, v in values.items() if k in UPDATABLE_PARAMS}
    startup = sorted(set(values) - set(runtime))
    client.update_params(**runtime)
    log.info("LM parameters from %s: %s", path, runtime)
    if startup:
        log.info("start-up LM parameters %s in %s take effect only when the LM server starts with --params_file",
                 startup, path)


def check_args(args: argparse.Namespace) -> None:
    """Raise ConfigError for flag values no run can use (before any model or data is loaded)."""
    if not args.redis_timeout > 0:
        raise ConfigError(f"--redis_timeout: expected seconds > 0, got {args.redis_timeout}")
    if args.lm_retries < 0:
        raise ConfigError(f"--lm_retries: expected an integer >= 0, got {args.lm_retries}")
    if args.lm_in_flight < 1:
        raise ConfigError(f"--lm_in_flight: expected an integer >= 1, got {args.lm_in_flight}")
    if not 0 < args.redis_port < 65536:
        raise ConfigError(f"--redis_port: expected 1..65535, got {args.redis_port}")


def run(args: argparse.Namespace, load_model=load_trained_model) -> int:
    """Evaluate; ``load_model(model_path, device) -> (model, args.yaml)`` (the TF port passes its own loader)."""
    check_args(args)
    model_paths = [Path(p) for p in ([args.model_path] if isinstance(args.model_path, str) else args.model_path)]
    model_path = model_paths[0]
    out_dir = Path(args.out_dir) if args.out_dir else model_path
    device = select_device(args.gpu_number)
    model, model_args = load_ensemble(model_paths, device, load_model)
    sessions, days = sessions_to_decode(Path(args.data_dir), list(model_args.dataset.sessions), args.eval_type,
                                        args.unknown_session)
    lookup = None
    if args.csv_path is None:  # was next to the code, so synthetic corpora read 'unknown'
        args.csv_path = str(Path(args.data_dir).parent / CSV_NAME)
    if Path(args.csv_path).is_file():
        lookup = CorpusLookup.from_csv(args.csv_path)
    else:
        log.warning("%s not found: every trial's corpus is 'unknown'", args.csv_path)
    n_total = count_trials(Path(args.data_dir), sessions, args.eval_type)
    if n_total == 0:
        raise FileNotFoundError(f"{args.data_dir}: no data_{args.eval_type}.hdf5 for any of the model's "
                                f"{len(sessions)} sessions")
    log.info("Total number of %s trials: %d", args.eval_type, n_total)
    ckpts = [p / "checkpoint" / "best_checkpoint" for p in model_paths]
    stats = [c.stat() for c in ckpts]
    one = len(ckpts) == 1  # one model: the original header (so partial results of earlier runs still resume)
    header = {"checkpoint": str(ckpts[0].resolve()) if one else [str(c.resolve()) for c in ckpts],
              "checkpoint_size": stats[0].st_size if one else [st.st_size for st in stats],
              "checkpoint_mtime_ns": stats[0].st_mtime_ns if one else [st.st_mtime_ns for st in stats],
              "data_dir": str(Path(args.data_dir).resolve()), "eval_type": args.eval_type, "lm": args.lm}
    store = PartialResults(out_dir / f".eval_partial_{args.eval_type}_{args.lm}.jsonl", header, args.restart)
    if len(store):
        log.info("Resuming: %d of %d trials already decoded (%s)", len(store), n_total, store.path)
    client = connect_lm(args) if args.lm == "redis" else None
    if client is not None and args.lm_params:
        send_lm_params(client, args.lm_params)
    order: list[str] = []
    t0 = time.time()

    def to_decode():  # (record, LM-order logits) of each trial not decoded yet; the LM answers as they come
        subset = model_args.dataset.get("feature_subset")
        width = None if subset else int(model_args.model.n_input_features)
        for day, f, key in iter_trials(Path(args.data_dir), sessions, args.eval_type, width, days):
            meta = f.read_meta(key)
            tid = trial_id(meta["session"], meta["block_num"], meta["trial_num"], key)
            order.append(tid)
            bar.update(1)
            if tid in store:
                continue
            rec, lm_logits = decode_one(args, model, model_args, device, day, f, key, lookup)
            if lm_logits.shape[0] == 0 and client is not None:  # nothing to decode: an empty answer, no LM call
                store.add({**rec, "pred_sentence": ""})
                continue
            yield rec, lm_logits

    with tqdm(total=n_total, desc=f"evaluate {args.eval_type}", dynamic_ncols=True) as bar:
        if client is None:
            for rec, _ in to_decode():
                store.add(rec)
        else:  # multi: several trials at the LM server at once (its N workers); single: one at a time
            for rec, partial, candidates in client.decode_many(to_decode(), args.lm_in_flight, args.lm_retries):
                store.add(with_lm(rec, partial, candidates))
    records = [store.records[t] for t in order]
    log.info("Decoded %d trials in %.1f s", len(records), time.time() - t0)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    kind = "predicted_sentences" if args.lm != "none" else "greedy_phonemes"  # phonemes are no submission
    csv_path = write_submission_csv([r["pred_sentence"] for r in records],
                                     out_dir / f"baseline_rnn_{args.eval_type}_{kind}_{stamp}.csv", words=args.lm != "none")
    log.info("Wrote %s", csv_path)
    written = [csv_path]
    server_args = client.server_args() if client is not None else None  # what the scores were made with
    if args.results_pkl:
        written.append(write_results_pkl(records, args.results_pkl, server_args))
        log.info("Wrote %s", written[-1])
    inputs = {f"checkpoint_{i}": c for i, c in enumerate(ckpts)}
    inputs.update({f"data_{s}": data_file_path(Path(args.data_dir), s, args.eval_type) for s in sessions
                   if data_file_path(Path(args.data_dir), s, args.eval_type).is_file()})
    if args.lm_params:
        inputs["lm_params"] = args.lm_params
    lm_server = None
    if server_args is not None:  # the LM it decoded with: its arguments and, when reachable, its folder's files
        lm_server = {"args": server_args, "lm_folder": lm_folder_fingerprint(server_args.get("lm_path", ""))}
    write_manifests(written, inputs, extra={"eval_type": args.eval_type, "lm": args.lm, "text_norm": args.text_norm,
                                            "lm_server": lm_server})
    _, table = per_corpus_table(records, with_wer=args.eval_type == "val" and args.lm == "redis",
                                text_norm=args.text_norm)
    print(table)
    return 0


def main(argv: list[str] | None = None, load_model=load_trained_model) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from nejm_b2txt_utils.redis_protocol import LMProtocolError, LMTimeoutError

    try:
        return run(args, load_model)
    except LMTimeoutError as exc:
        print(f"error: {exc} (finished trials are saved; rerun the same command to continue)", file=sys.stderr)
        return 3
    except (ConfigError, CheckpointError, PartialResultsError, T15FormatError, FileNotFoundError, ConnectionError,
            LMProtocolError, DiskFullError) as exc:
        return print_bad_input(exc)


if __name__ == "__main__":
    sys.exit(main())
