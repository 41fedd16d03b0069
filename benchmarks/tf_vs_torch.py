"""TensorFlow port vs PyTorch baseline, side by side in one run on the CPU: training steps/s of the same
config on the same batches, plus the numerical agreement of the two models (printed as JSON).

``envs/b2txt_tf/bin/python -m benchmarks.tf_vs_torch --data_dir /tmp/synth_small/hdf5_data_final``

* steps/s: ``--steps`` timed optimizer steps (after ``--warmup`` untimed ones, which include TF's tracing)
  of each trainer (``model_training.rnn_trainer`` and ``model_training_nnn_tpu.trainer_tf``, default
  strategy, fp32), same config (``--config``, default the small one), same thread count;
  the PyTorch side pads each batch to its longest trial, the TF side to the fixed bucket (the dataset's
  longest trial), as each trainer does;
* agreement: the PyTorch model's initial weights converted into the Keras model; the max |logit difference|
  on one validation-smoothed batch and the batch-mean CTC loss of each framework.
Runs only in ``envs/b2txt_tf`` (it has both frameworks).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# (the imports below come after it)
from benchmarks.measure import print_result  # noqa: E402
from nejm_b2txt_utils.cli_errors import check_flags, exit_2_on_bad_input  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SMALL = REPO / "model_training" / "rnn_args_small.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="T15 HDF5 root (e.g. synthetic small's hdf5_data_final)")
    p.add_argument("--config", default=str(SMALL), help="training config (default: the small one)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both frameworks (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for both trainers")
    return p.parse_args(argv)


def _config(args, out: Path):
    from model_training.config import load_config

    n = args.steps + args.warmup
    return load_config(args.config, [f"output_dir={out}", f"dataset.dataset_dir={args.data_dir}", "device=cpu",
                                     "compile=false", "dataset.num_dataloader_workers=0", f"num_training_batches={n}",
                                     "dataset.sessions=auto", "dataset.dataset_probability_val=auto",
                                     *args.overrides])


def time_torch(args, tmp: Path) -> tuple[dict, object]:
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer

    trainer = BrainToTextDecoder_Trainer(_config(args, tmp / "torch"))
    init_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    loader = iter(trainer._train_loader(0))
    bins = []
    for i in range(args.warmup):
        trainer.train_step(next(loader), i)
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        batch = next(loader)
        bins.append(int(batch["input_features"].shape[1]))
        trainer.train_step(batch, i)
    dt = time.perf_counter() - t0
    trainer.close()
    return {"steps_per_s": round(args.steps / dt, 3), "s_per_step": round(dt / args.steps, 4),
            "mean_padded_bins": round(sum(bins) / len(bins), 1)}, (trainer, init_state)


def time_tf(args, tmp: Path) -> tuple[dict, object]:
    import tensorflow as tf

    from model_training_nnn_tpu.optim_tf import set_learning_rates
    from model_training_nnn_tpu.trainer_tf import TFTrainer

    trainer = TFTrainer(_config(args, tmp / "tf"), strategy=tf.distribute.get_strategy())
    it = iter(trainer._train_dataset())
    t0 = time.perf_counter()

    def step(i):
        set_learning_rates(trainer.optimizers, trainer.args, i)
        loss, _ = trainer._step_fn(next(it), tf.constant(i, tf.int64))
        float(loss)  # wait for the step

    for i in range(args.warmup):
        step(i)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    dt = time.perf_counter() - t0
    trainer.close()
    return {"steps_per_s": round(args.steps / dt, 3), "s_per_step": round(dt / args.steps, 4),
            "warmup_s_incl_tracing": round(warm, 2), "padded_bins": trainer.shape.time}, trainer


def agreement(torch_side, tf_trainer) -> dict:
    """PyTorch initial weights -> Keras; logits and CTC of one val batch (validation smoothing) in both."""
    import numpy as np
    import tensorflow as tf
    import torch

    from model_training.rnn_model import output_frames
    from model_training_nnn_tpu.convert import torch_to_tf
    from model_training_nnn_tpu.losses import adjusted_lens, ctc_per_trial
    from nejm_b2txt_utils.augmentation import transform_data

    trainer, init_state = torch_side
    model = trainer.model
    model.load_state_dict(init_state)
    model.eval()
    torch_to_tf(tf_trainer.model, init_state)
    batch = trainer.val_dataset[0]
    feats, n = transform_data(batch["input_features"], batch["n_time_steps"], trainer.transform_args, "val")
    lens = output_frames(n, trainer.patch_size, trainer.patch_stride)
    with torch.no_grad():
        ref = model(feats, batch["day_indicies"])
        ctc_ref = torch.nn.CTCLoss(blank=0, reduction="none")(ref.log_softmax(2).permute(1, 0, 2),  # (P, B, C)
                                                              batch["seq_class_ids"], lens, batch["phone_seq_lens"])
    kw = {"mode": "inference"} if tf_trainer.kind == "triple" else {}
    out = tf_trainer.model(tf.constant(feats.numpy()), tf.constant(batch["day_indicies"].numpy()), training=False, **kw)
    ctc = ctc_per_trial(out, tf.constant(batch["seq_class_ids"].numpy()), tf.constant(batch["phone_seq_lens"].numpy()),
                        adjusted_lens(tf.constant(n.numpy()), trainer.patch_size, trainer.patch_stride))
    diff = np.abs(ref.numpy() - out.numpy())
    return {"trials": int(len(batch["day_indicies"])), "logit_max_abs_diff": float(diff.max()),
            "logit_mean_abs_diff": float(diff.mean()), "ctc_loss_torch": float(ctc_ref.mean()),
            "ctc_loss_tf": float(tf.reduce_mean(ctc)), "ctc_loss_abs_diff": abs(float(ctc_ref.mean()) -
                                                                                float(tf.reduce_mean(ctc)))}


@exit_2_on_bad_input(FileNotFoundError)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_flags(args, {"steps": 1, "warmup": 1, "threads": 1})
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data_dir {args.data_dir}: not a folder")
    import tensorflow as tf
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    logging.getLogger("model_training").setLevel(logging.WARNING)
    # The trainers log through tqdm.write to stdout: keep stdout for the JSON alone.
    with tempfile.TemporaryDirectory(prefix="b2txt_tf_vs_torch_") as tmp, contextlib.redirect_stdout(sys.stderr):
        torch_res, torch_side = time_torch(args, Path(tmp))
        tf_res, tf_trainer = time_tf(args, Path(tmp))
        agree = agreement(torch_side, tf_trainer)
    print_result({"config": Path(args.config).name, "data_dir": str(args.data_dir), "steps": args.steps,
                  "warmup": args.warmup, "threads": args.threads, "tensorflow": tf.__version__,
                  "torch": torch.__version__, "torch_cpu": torch_res, "tf_cpu": tf_res,
                  "tf_over_torch_steps_per_s": round(tf_res["steps_per_s"] / torch_res["steps_per_s"], 3),
                  "agreement_fp32": agree})
    return 0


if __name__ == "__main__":
    sys.exit(main())
