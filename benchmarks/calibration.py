"""Rapid calibration on days the model never saw: PER of later days' sentences without and with recalibration.

Trains the small config (``model_training/rnn_args_small.yaml``, the trainer itself) on the early sessions of
the synthetic ``small`` preset, then for each later session (never in training) decodes (greedy PER):

* ``drift``: on the last early day, its own day layer vs the nearest earlier day's (is the generator's day
  drift something an unadapted model cannot undo?);
* (a) ``none``: the nearest earlier day's layer, no recalibration;
* (b) ``new_day``: a new day layer from the day's first N training sentences (``--ns``), then the day's val
  sentences (held out: never trained on);
* ``full``: the same from all the day's training sentences (the "full data" reference);
* (c) ``online_supervised``: the day's training sentences in order, each decoded before an update on all
  sentences so far (the real-time trainer: from the K-th sentence on, day layer + GRU, earlier sessions
  replayed, clipping, early stop), and the val PER afterwards;
* (d) ``online_pseudo``: the same with CORP's pseudo-labels, the model's own greedy decode behind a
  confidence gate (no LM server here: greedy phonemes, not LM sentences), day layer only.

Prints one JSON (also ``--out``): per-day and mean PERs, the gap closed by N = 10, update wall times and
threads, per-sentence PERs for ``analyses/calibration_figure.py``.

    python -m benchmarks.calibration                      # ~10 min on 2 idle cores (generates data, trains)
    python -m benchmarks.calibration --data_dir /tmp/synth_small --model_path /tmp/early_model
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.measure import print_result
from model_training.calibration import (
    CalibrationSettings,
    Calibrator,
    PseudoLabelStats,
    Sentence,
    pseudo_label_from_logits,
    read_sentences,
)
from model_training.checkpoint import load_trained_model
from model_training.config import load_config
from model_training.inference import infer_trial
from nejm_b2txt_utils.cli_errors import ConfigError, check_flags, check_output_file, exit_2_on_bad_input
from nejm_b2txt_utils.metrics import ctc_greedy_decode, edit_distance
from nejm_b2txt_utils.synthetic import generate
from nejm_b2txt_utils.t15_hdf5 import list_sessions

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("calibration_benchmark")


def train_early_model(data_dir: Path, sessions: list[str], out: Path, batches: int) -> Path:
    """The small config trained on ``sessions`` only (the trainer as ``train_model.py`` runs it).

    Raises:
        KeyboardInterrupt: Ctrl-C stopped the training early (a partly trained model is not measured).
    """
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer

    kv = {"output_dir": str(out), "device": "cpu", "compile": "false", "dataset.dataset_dir": str(data_dir),
          "dataset.sessions": "[" + ",".join(sessions) + "]", "dataset.dataset_probability_val": "auto",
          "dataset.num_dataloader_workers": 0, "num_training_batches": batches,
          "batches_per_val_step": max(batches // 2, 1), "batches_per_train_log": 50}
    cfg = load_config(REPO / "model_training" / "rnn_args_small.yaml", [f"{k}={v}" for k, v in kv.items()])
    trainer = BrainToTextDecoder_Trainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
    if trainer.interrupted_at is not None:  # Ctrl-C: the loop returned early (was measured as a trained model)
        raise KeyboardInterrupt(f"early model stopped at batch {trainer.interrupted_at} of {batches}")
    return out


def sentence_errors(cal: Calibrator, s: Sentence) -> tuple[int, int, np.ndarray]:
    """(edit distance, label length, logits [P, 41]) of one sentence decoded greedily on the calibrated day."""
    logits = cal.logits(s.features)
    hyp = ctc_greedy_decode(logits) if len(logits) else np.zeros(0, dtype=np.int64)
    return edit_distance(s.labels.tolist(), hyp.tolist()), len(s.labels), logits


def per(cal: Calibrator, sentences: list[Sentence]) -> float:
    """Aggregate greedy PER over ``sentences``."""
    ed = n = 0
    for s in sentences:
        e, m, _ = sentence_errors(cal, s)
        ed, n = ed + e, n + m
    return ed / max(n, 1)


def online(cal: Calibrator, stream: list[Sentence], held_out: list[Sentence], k: int,
           pseudo_gate: float | None) -> dict:
    """Decode ``stream`` in order, updating after each sentence once ``k`` are in (labels: true or pseudo)."""
    labelled: list[Sentence] = []
    stats = PseudoLabelStats()
    per_sentence, seconds = [], []
    for i, s in enumerate(stream):
        e, m, logits = sentence_errors(cal, s)
        per_sentence.append(round(e / max(m, 1), 4))
        if pseudo_gate is None:
            labelled.append(s)
        else:
            ids = pseudo_label_from_logits(logits, pseudo_gate, stats)
            if ids is not None:
                labelled.append(Sentence(s.features, ids, s.day))
        if i + 1 >= k and labelled:
            seconds.append(cal.update(labelled).seconds)
    out = {"per_sentence_PER": per_sentence, "val_PER": round(per(cal, held_out), 4),
           "update_s_median": round(float(np.median(seconds)), 3) if seconds else None,
           "update_s_max": round(float(np.max(seconds)), 3) if seconds else None, "n_updates": len(seconds)}
    if pseudo_gate is not None:
        out["pseudo_labels"] = {"used": stats.used, "skipped_empty": stats.skipped_empty,
                                "skipped_low_confidence": stats.skipped_low_confidence}
    return out


def evaluate_day(base, base_args, data_dir: Path, session: str, replay: list[Sentence], a) -> dict:
    def fresh(settings: CalibrationSettings, with_replay=()) -> Calibrator:
        return Calibrator(copy.deepcopy(base), base_args, session, settings, list(with_replay), data_dir)

    cal_settings = CalibrationSettings("day_layer", max_steps=a.cal_steps, stop_loss=a.stop_loss, seed=a.seed)
    none = fresh(cal_settings)
    train = read_sentences(data_dir, session, "train", none.day)
    held_out = read_sentences(data_dir, session, "val", none.day)
    res = {"session": session, "nearest_day": list(base_args.dataset.sessions)[none.source_day],
           "n_train_sentences": len(train), "n_val_sentences": len(held_out),
           "none_val_PER": round(per(none, held_out), 4), "new_day": {}}
    for n in a.ns:
        cal = fresh(cal_settings)
        r = cal.update(train[:n])
        res["new_day"][str(n)] = {"val_PER": round(per(cal, held_out), 4), "steps": r.steps,
                                  "update_s": round(r.seconds, 2)}
    cal = fresh(CalibrationSettings("day_layer", max_steps=2 * a.cal_steps, stop_loss=a.stop_loss, seed=a.seed))
    r = cal.update(train)
    res["full"] = {"val_PER": round(per(cal, held_out), 4), "steps": r.steps, "update_s": round(r.seconds, 2)}
    stream = train[:a.online_sentences]
    res["none_per_sentence_PER"] = [round(e / max(m, 1), 4) for e, m, _ in (sentence_errors(none, s) for s in stream)]
    sup = CalibrationSettings("day_layer+gru", max_steps=a.online_steps, stop_loss=a.stop_loss, seed=a.seed)
    res["online_supervised"] = online(fresh(sup, replay), stream, held_out, a.online_k, None)
    pse = CalibrationSettings("day_layer", max_steps=a.online_steps, stop_loss=a.stop_loss, seed=a.seed)
    res["online_pseudo"] = online(fresh(pse), stream, held_out, a.online_k, a.pseudo_gate)
    none_per, n10, full = res["none_val_PER"], res["new_day"].get("10", {}).get("val_PER"), res["full"]["val_PER"]
    if n10 is not None and none_per > full:
        res["gap_closed_N10"] = round((none_per - n10) / (none_per - full), 3)
    return res


def drift_check(base, base_args, data_dir: Path, day: int) -> dict:
    """PER on early day ``day``'s val sentences with its own layer and with the previous day's."""
    sessions = list(base_args.dataset.sessions)
    held = read_sentences(data_dir, sessions[day], "val", day)
    transforms = base_args.dataset.data_transforms

    def layer_per(layer: int) -> float:
        ed = n = 0
        for s in held:
            logits = infer_trial(base, s.features, layer, "cpu", transforms)
            hyp = ctc_greedy_decode(logits) if len(logits) else []
            ed, n = ed + edit_distance(s.labels.tolist(), list(hyp)), n + len(s.labels)
        return round(ed / max(n, 1), 4)

    return {"session": sessions[day], "own_layer_PER": layer_per(day), "previous_day_layer_PER": layer_per(day - 1),
            "previous_day": sessions[day - 1]}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", help="synthetic small root (holding hdf5_data_final/); default: generated")
    p.add_argument("--model_path", help="a model trained on the early sessions; default: trained here")
    p.add_argument("--n_early", type=int, default=5, help="early sessions the model is trained on")
    p.add_argument("--n_later", type=int, default=3, help="later sessions evaluated (the last ones)")
    p.add_argument("--train_batches", type=int, default=300, help="training batches of the early model")
    p.add_argument("--ns", default="5,10,20,50", help="N sentences of the new-day calibration")
    p.add_argument("--cal_steps", type=int, default=40, help="max steps of a new-day calibration")
    p.add_argument("--online_sentences", type=int, default=20, help="sentences streamed per day online")
    p.add_argument("--online_k", type=int, default=5, help="online updates start once K sentences exist")
    p.add_argument("--online_steps", type=int, default=5, help="max steps per online update")
    p.add_argument("--stop_loss", type=float, default=CalibrationSettings().stop_loss)
    p.add_argument("--pseudo_gate", type=float, default=0.7, help="min greedy confidence of a pseudo-label")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


@exit_2_on_bad_input(FileNotFoundError)
def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    check_flags(a, {"n_early": 2, "n_later": 1, "train_batches": 1, "cal_steps": 1, "online_sentences": 1,
                    "online_k": 1, "online_steps": 1, "threads": 1})
    try:
        a.ns = [int(x) for x in a.ns.split(",")]
    except ValueError:
        raise ConfigError(f"--ns: expected a comma list of integers, got {a.ns!r}") from None
    if min(a.ns) < 1:
        raise ConfigError(f"--ns: expected sentence counts >= 1, got {min(a.ns)}")
    check_output_file("--out", a.out)  # before the data and the training (was an error after ~25 min)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log.info("args: %s", vars(a))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data_dir) if a.data_dir else Path(tmp) / "synth"
        gen_s = 0.0 if a.data_dir else generate("small", root, seed=a.seed, progress=False)["wall_s"]
        data_dir = root / "hdf5_data_final"
        sessions = list_sessions(data_dir)
        if a.n_early + a.n_later > len(sessions):
            raise ConfigError(f"--n_early + --n_later: {a.n_early + a.n_later} exceeds the {len(sessions)} sessions")
        early, later = sessions[:a.n_early], sessions[-a.n_later:]
        t_train = time.time()
        model_path = Path(a.model_path) if a.model_path else train_early_model(
            data_dir, early, Path(tmp) / "early_model", a.train_batches)
        train_s = time.time() - t_train
        base, base_args = load_trained_model(model_path)
        if list(base_args.dataset.sessions) != early:
            raise ConfigError(f"{model_path}: trained on {list(base_args.dataset.sessions)}, expected {early}")
        replay = [s for d, sess in enumerate(early) for s in read_sentences(data_dir, sess, "train", d, 16)]
        result = {"data": a.data_dir or "small (generated)", "generate_s": gen_s, "early_sessions": early,
                  "later_sessions": later, "train_batches": a.train_batches, "train_s": round(train_s, 1),
                  "threads": a.threads, "model": f"GRU {base_args.model.n_layers}x{base_args.model.n_units}",
                  "pseudo_labels": "greedy phonemes with a confidence gate (no LM server in this benchmark)",
                  "settings": {k: v for k, v in vars(a).items() if k not in ("data_dir", "model_path", "out")},
                  "drift": drift_check(base, base_args, data_dir, a.n_early - 1), "days": []}
        for session in tqdm(later, desc="later days"):
            result["days"].append(evaluate_day(base, base_args, data_dir, session, replay, a))
    days = result["days"]

    def mean(get):
        vals = [get(d) for d in days if get(d) is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    result["mean"] = {"none_val_PER": mean(lambda d: d["none_val_PER"]),
                      "full_val_PER": mean(lambda d: d["full"]["val_PER"]),
                      **{f"new_day_N{n}_val_PER": mean(lambda d, n=n: d["new_day"][str(n)]["val_PER"]) for n in a.ns},
                      "online_supervised_val_PER": mean(lambda d: d["online_supervised"]["val_PER"]),
                      "online_pseudo_val_PER": mean(lambda d: d["online_pseudo"]["val_PER"]),
                      "gap_closed_N10": mean(lambda d: d.get("gap_closed_N10")),
                      "online_update_s_median": mean(lambda d: d["online_supervised"]["update_s_median"])}
    m = result["mean"]
    result["targets"] = {
        "gap_closed_N10_ge_0.8": None if m["gap_closed_N10"] is None else m["gap_closed_N10"] >= 0.8,
        "online_update_under_5s": max(d["online_supervised"]["update_s_max"] or 0 for d in days) < 5.0,
        "pseudo_never_worse_than_none": all(d["online_pseudo"]["val_PER"] <= d["none_val_PER"] for d in days)}
    result["wall_s"] = round(time.time() - t0, 1)
    if a.out:
        from nejm_b2txt_utils.atomic_io import atomic_write_json

        atomic_write_json(a.out, result, indent=None)
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
