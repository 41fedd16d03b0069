"""The TensorFlow trainer (spec nnn-and-tpu §6.6): a custom loop under a ``tf.distribute`` strategy.

Same config keys as ``model_training/rnn_args.yaml`` (configs are overlays on it), same output layout
(``training_log``, ``train_val_trials.json``, ``checkpoint/args.yaml``, ``checkpoint/best_checkpoint``,
``checkpoint/last_checkpoint``, ``checkpoint/val_metrics.pkl``), same batches (the baseline's
``TrialBatches`` draws, through ``dataset_tf``), same CTC recipe (per-trial NLL, mean over the batch),
AdamW groups and warmup + cosine schedule (``optim_tf``), gradient clipping at ``grad_norm_clip_value``
with PyTorch's rule, validation every ``batches_per_val_step`` with the greedy PER, best checkpoint by val
PER (ties: lower loss), ``resume=true`` from ``last_checkpoint``.

TF-only keys (all optional): ``tpu_address`` (null = detect), ``require_tpu`` (false), ``tf_precision``
(``auto``: bf16 when ``use_amp`` and on TPU/GPU, else fp32; or ``bf16`` / ``fp32``), ``jit_compile`` (XLA on
CPU/GPU with the default strategy; TPUs always compile), ``static_max_time_steps`` (null = the longest trial,
rounded up to 8), ``ctc_labels`` (``auto``: dense on TPU or with ``jit_compile``, sparse elsewhere).
The model is ``model.architecture`` (``gru``, default, or ``triple_gru``; ``models.build_model_tf``), e.g.
``--config model_training_nnn/rnn_args_nnn_small.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from model_training.args_yaml import CheckpointError, atomic_save_yaml
from model_training.config import normalize_config, resolved_container
from model_training.run_setup import (
    build_trial_batches,
    close_logging,
    prepare_output_dirs,
    setup_logging,
    train_batch_order,
)
from model_training.training_loop import GreedyPER, TrainingLoop
from model_training_nnn.adversarial import adversarial_settings, grl_lambda_at
from model_training_nnn_tpu import checkpoint_tf
from model_training_nnn_tpu.convert import tf_to_torch, torch_to_tf
from model_training_nnn_tpu.dataset_tf import (
    BatchShape,
    make_train_dataset,
    max_time_steps,
    pad_batch,
    transform_data_tf,
)
from model_training_nnn_tpu.losses import adjusted_lens, ctc_per_trial
from model_training_nnn_tpu.models import build_model_tf, model_kind
from model_training_nnn_tpu.optim_tf import LR_SCALE_KEYS, create_optimizers, set_learning_rates
from model_training_nnn_tpu.strategy import configure_mixed_precision, create_tpu_strategy, is_tpu


class TFTrainer(TrainingLoop):
    """Build everything from a config, then ``train()``; ``strategy`` overrides the detection (tests)."""

    def __init__(self, args: DictConfig, strategy: tf.distribute.Strategy | None = None):
        self.args = args = normalize_config(args)
        self.kind = model_kind(args)  # config errors first: nothing is written
        self.adv = adversarial_settings(args)
        self.output_dir, self.checkpoint_dir = Path(args.output_dir), Path(args.checkpoint_dir)
        self.strategy = strategy or create_tpu_strategy(args.get("tpu_address"), bool(args.get("require_tpu", False)))
        self.replicas = self.strategy.num_replicas_in_sync
        worker = self.strategy.cluster_resolver.task_id if getattr(self.strategy, "cluster_resolver", None) and \
            isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy) else 0
        self.is_main = not worker  # the worker's rank only decides who writes files
        self.resume_path = prepare_output_dirs(args, self.is_main)
        self.logger = setup_logging(__name__, args, self.is_main)
        self.on_tpu = is_tpu(self.strategy)
        accel = self.on_tpu or bool(tf.config.list_logical_devices("GPU"))
        prec = str(args.get("tf_precision", "auto"))
        prec = ("bf16" if accel and args.get("use_amp", True) else "fp32") if prec == "auto" else prec
        self.policy = configure_mixed_precision(prec)
        jit = args.get("jit_compile", False)
        self.jit = bool(jit) and not self.on_tpu and self.replicas == 1
        labels = str(args.get("ctc_labels", "auto"))  # XLA (TPU, jit_compile) has no sparse CTC kernel
        self.dense_labels = (self.on_tpu or self.jit) if labels == "auto" else labels == "dense"
        self.transform_args = OmegaConf.to_container(args.dataset.data_transforms, resolve=True)
        self.patch_size, self.patch_stride = int(args.model.patch_size), int(args.model.patch_stride)
        self.n_batches = int(args.num_training_batches)
        self.start_step, self.best_val_PER, self.best_val_loss = 0, math.inf, math.inf
        self.val_steps_since_improvement = 0
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.val_PERs: list[float] = []
        self.logger.info(f"TF {tf.__version__}: {type(self.strategy).__name__}, {self.replicas} replicas, "
                         f"policy {self.policy}, CTC labels {'dense' if self.dense_labels else 'sparse'}")

        if args.seed != -1:
            import keras

            keras.utils.set_random_seed(int(args.seed))
        self.train_dataset, self.val_dataset = build_trial_batches(args, self.is_main)
        self.logger.info("Successfully initialized datasets")
        ds = args.dataset
        t_max = args.get("static_max_time_steps") or max_time_steps(
            [self.train_dataset.trial_indicies, self.val_dataset.trial_indicies])
        self.shape = BatchShape(batch=math.ceil(int(ds.batch_size) / self.replicas), time=int(t_max),
                                labels=int(ds.get("max_seq_elements", 500)), features=int(args.model.n_input_features))
        self.logger.info(f"Fixed batch shape per replica: {self.shape}")
        with self.strategy.scope():
            self.model = build_model_tf(args)
            self.model.build_for(self.shape.batch)  # a short input: eager GRUs are slow
            self.variables = [v for v in self.model.trainable_variables if self._trainable(v.path)]
            subs = {name: getattr(self.model, name).trainable_variables for name in LR_SCALE_KEYS
                    if hasattr(self.model, name)}
            self.optimizers = create_optimizers(self.variables, args, subs)
            self.grl_lambda = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="grl_lambda")
        n_params = sum(int(np.prod(v.shape)) for v in self.model.weights)
        self.logger.info(f"Model ({self.kind}) has {n_params:,} parameters")
        if self.resume_path is not None:
            self.load_checkpoint(self.resume_path, resume=True)
        elif args.get("init_from_checkpoint", False):
            if not args.get("init_checkpoint_path"):
                raise CheckpointError("init_from_checkpoint is true but init_checkpoint_path is null")
            self.load_checkpoint(args.init_checkpoint_path)
        self._step_fn = self._make_train_step()
        self._eval_fn = self._make_eval_step()

    def _trainable(self, path: str) -> bool:
        m = self.args.model
        if not m.get("rnn_trainable", True) and "gru" in path:
            return False
        return m.input_network.get("input_trainable", True) or "day" not in path

    # ------------------------------------------------------------------ steps
    def _adjusted(self, n_time_steps: tf.Tensor) -> tf.Tensor:
        return adjusted_lens(n_time_steps, self.patch_size, self.patch_stride)

    def _objective(self, batch: dict, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """Per-trial objective and logged CTC ``[B]`` of one replica's batch (augmented in here)."""
        x, n = transform_data_tf(batch["input_features"], batch["n_time_steps"], batch["cut"], self.transform_args,
                                 "train", seed)
        lens = self._adjusted(n)
        labels, label_lens = batch["seq_class_ids"], batch["phone_seq_lens"]
        adv = self.adv
        if self.kind == "triple" and adv["enabled"]:
            clean, noisy, noise = self.model(x, batch["day_indices"], grl_lambda=self.grl_lambda, mode="full",
                                             training=True)
            l_clean = ctc_per_trial(clean, labels, label_lens, lens, self.dense_labels)
            l_noisy = ctc_per_trial(noisy, labels, label_lens, lens, self.dense_labels)
            noise32 = tf.cast(noise, tf.float32)
            l2 = tf.reduce_mean(tf.square(noise32), axis=[1, 2])  # (B,)
            objective = l_clean + float(adv["noisy_loss_weight"]) * l_noisy + float(adv["noise_l2_weight"]) * l2
            return objective, l_clean, {"noisy_loss": l_noisy}
        kw = {"mode": "inference"} if self.kind == "triple" else {}  # adversarial.enabled false: clean path only
        logits = self.model(x, batch["day_indices"], training=True, **kw)
        per_trial = ctc_per_trial(logits, labels, label_lens, lens, self.dense_labels)
        return per_trial, per_trial, {}

    def _make_train_step(self):
        clip = float(self.args.get("grad_norm_clip_value", 0) or 0)
        base_seed = int(self.args.dataset.seed)

        def replica_step(batch, step):
            ctx = tf.distribute.get_replica_context()
            seed = tf.stack([tf.cast(base_seed, tf.int64),
                             tf.cast(step, tf.int64) * self.replicas + tf.cast(ctx.replica_id_in_sync_group, tf.int64)])
            valid = batch["valid"]
            n_valid = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(valid))
            with tf.GradientTape() as tape:
                objective, logged, _ = self._objective(batch, seed)
                loss = tf.reduce_sum(objective * valid) / n_valid  # this replica's share of the global mean
            grads = tape.gradient(loss, self.variables)
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            norm = tf.linalg.global_norm(grads)
            if clip > 0:  # PyTorch's clip_grad_norm_: scale by min(1, clip / (norm + 1e-6))
                coef = tf.minimum(1.0, clip / (norm + 1e-6))
                grads = [g * coef for g in grads]
            for opt, idx in self.optimizers.values():
                opt.apply([grads[i] for i in idx], [self.variables[i] for i in idx])
            logged_mean = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(logged * valid)) / n_valid
            return logged_mean, norm

        @tf.function(jit_compile=self.jit)
        def step_fn(batch, step):
            loss, norm = self.strategy.run(replica_step, args=(batch, step))
            return (self.strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                    self.strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None))
        return step_fn

    def _make_eval_step(self):
        def replica_eval(batch):
            x, n = transform_data_tf(batch["input_features"], batch["n_time_steps"], batch["cut"],
                                     self.transform_args, "val", tf.zeros(2, tf.int64))
            lens = self._adjusted(n)
            if self.kind == "triple":
                logits = self.model(x, batch["day_indices"], mode="inference", training=False)
            else:
                logits = self.model(x, batch["day_indices"], training=False)
            logits = tf.cast(logits, tf.float32)
            loss = ctc_per_trial(logits, batch["seq_class_ids"], batch["phone_seq_lens"], lens, self.dense_labels)
            return logits, loss, lens

        @tf.function
        def eval_fn(batch):
            out = self.strategy.run(replica_eval, args=(batch,))
            return tuple(self.strategy.gather(t, axis=0) for t in out)
        return eval_fn

    def _distribute_batch(self, padded: list[dict]):
        """Per-replica NumPy batches -> a distributed value (replica r gets ``padded[r]``)."""
        if self.replicas == 1:
            return {k: tf.constant(v) for k, v in padded[0].items()}
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: {k: tf.constant(v) for k, v in padded[ctx.replica_id_in_sync_group].items()})

    # ------------------------------------------------------------------ validation
    def validation(self, return_logits: bool = False) -> dict:
        """Greedy PER (collapse repeats, drop blanks) and mean batch CTC loss over the val batches (the baseline's):
        the eval step per batch, split over the replicas, the bookkeeping in ``training_loop.GreedyPER``."""
        per = GreedyPER(list(self.args.dataset.dataset_probability_val), return_logits)
        for i in range(len(self.val_dataset)):
            batch = self.val_dataset.read_batch(i)
            if self._skip_val_batch(i, batch):
                continue
            n = len(batch["day_indicies"])
            slices = [{k: v[r * n // self.replicas:(r + 1) * n // self.replicas] for k, v in batch.items()}
                      for r in range(self.replicas)]
            logits, losses, lens = self._eval_fn(self._distribute_batch([pad_batch(s, self.shape) for s in slices]))
            rows = np.concatenate([np.arange(len(s["day_indicies"])) + r * self.shape.batch
                                   for r, s in enumerate(slices)])  # the real trials among the padded rows
            per.add(batch, logits.numpy()[rows], lens.numpy()[rows], float(losses.numpy()[rows].mean()))
        return per.result()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: Path, per: float, loss: float, with_optimizer: bool = True, **extra) -> None:
        """Weights (PyTorch layout), optimizer variables, metrics -> ``path`` atomically; plus ``args.yaml``."""
        state = {"model_kind": self.kind, "model_state_dict": tf_to_torch(self.model), "val_PER": per,
                 "val_loss": loss, **extra}
        if with_optimizer:
            state["optimizer_state"] = {g: [np.asarray(v.numpy()) for v in opt.variables]
                                        for g, (opt, _) in self.optimizers.items()}
        checkpoint_tf.save(path, state)
        atomic_save_yaml(resolved_container(self.args), self.checkpoint_dir / "args.yaml")
        self.logger.info(f"Saved model to checkpoint: {path}")

    def _save_last(self, step: int) -> None:
        self.save_checkpoint(self.checkpoint_dir / "last_checkpoint", self.best_val_PER, self.best_val_loss, step=step,
                             best_val_PER=self.best_val_PER, best_val_loss=self.best_val_loss,
                             train_losses=self.train_losses, val_PERs=self.val_PERs, val_losses=self.val_losses,
                             val_steps_since_improvement=self.val_steps_since_improvement)

    def load_checkpoint(self, path: str | Path, resume: bool = False) -> None:
        """Weights (TF or PyTorch checkpoint), optimizer state when present; ``resume`` also the step and history."""
        ckpt = checkpoint_tf.load(path)
        try:
            torch_to_tf(self.model, ckpt["model_state_dict"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        for group, values in (ckpt.get("optimizer_state") or {}).items():
            if group in self.optimizers:
                for var, value in zip(self.optimizers[group][0].variables, values):
                    var.assign(value)
        self.best_val_PER = ckpt.get("val_PER", math.inf)
        self.best_val_loss = ckpt.get("val_loss", math.inf)
        if resume:
            self.start_step = int(ckpt["step"])
            self.val_steps_since_improvement = ckpt.get("val_steps_since_improvement", 0)
            self.train_losses = list(ckpt.get("train_losses", []))
            self.val_PERs, self.val_losses = list(ckpt.get("val_PERs", [])), list(ckpt.get("val_losses", []))
        self.logger.info(f"Loaded model from checkpoint: {path}" + (f" (resuming at batch {self.start_step})"
                                                                    if resume else ""))

    # ------------------------------------------------------------------ loop hooks (model_training/training_loop.py)
    def _run_validation(self) -> dict:
        return self.validation(self.args.get("save_val_logits", False))

    def _save_val_checkpoint(self, path: Path, per: float, loss: float) -> None:
        self.save_checkpoint(path, per, loss, with_optimizer=False)

    def _batches(self):
        return iter(self._train_dataset())

    def _train_one(self, batch, i: int) -> tuple[float, float]:
        set_learning_rates(self.optimizers, self.args, i)
        self.grl_lambda.assign(self._grl_value(i))
        loss, norm = self._step_fn(batch, tf.constant(i, tf.int64))
        loss, norm = float(loss), float(norm)
        if not math.isfinite(norm):
            raise FloatingPointError(f"batch {i}: non-finite gradient norm (an input too short for its labels "
                                     "makes the CTC loss infinite)")
        return loss, norm

    def _train_dataset(self):
        order = train_batch_order(self.args, self.start_step)
        max_cut = int(self.transform_args.get("random_cut", 0) or 0)

        def per_worker(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ranks = [ctx.input_pipeline_id * local + j for j in range(local)]
            return make_train_dataset(self.train_dataset, order, self.shape, ranks, self.replicas, max_cut,
                                      int(self.args.dataset.seed))
        return self.strategy.distribute_datasets_from_function(per_worker)

    def _grl_value(self, step: int) -> float:
        """The GRL strength at ``step``: ``model_training_nnn.adversarial.grl_lambda_at`` (the PyTorch trainer's)."""
        return grl_lambda_at(step, self.n_batches, self.adv)

    def close(self) -> None:
        """Release the log files."""
        close_logging(self.logger)
