"""The baseline trainer (spec §6): CTC on a day-conditioned GRU, AdamW + warmup/cosine, periodic validation.

Faithful to the original in construction order (hence RNG streams), optimizer groups, schedule,
augmentation, CTC details, validation cadence, best-checkpoint rule and output layout. Fixes are
marked "Fix:". Additions: a true resume (``checkpoint/last_checkpoint`` with the batch index, RNG
states and history; ``resume=true``), DDP under torchrun (see ``distributed.py``), CPU fp32 runs,
optional torch.compile (``compile: auto`` = on CUDA only), atomic writes.

Variants (``model_training_nnn``: the adversarial TripleGRUDecoder, its XLA trainer) subclass
``BrainToTextDecoder_Trainer`` and override hooks instead of copying ``__init__`` or the train step:
``select_device``, ``build_model``, ``create_optimizer`` / ``create_lr_scheduler``, ``wrap_networks`` (the
train and eval networks: DDP, torch.compile), ``batch_to_device``, ``compute_loss`` (per-trial objective,
per-trial logged loss, extra log values), ``eval_forward`` (the forward used by validation; may return extra
heads whose greedy PER is logged) and ``step_end`` (called once per optimizer step, e.g. ``torch_xla.sync()``).
The set-up (output dirs, logging, split and batches) is ``run_setup.py``, the loop and the validation
bookkeeping ``training_loop.py``; both framework-free, shared with the TensorFlow trainer.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from model_training import checkpoint as ckpt_io
from model_training.config import normalize_config, resolved_container
from model_training.dataset import BrainToTextDataset
from model_training.distributed import all_reduce_sum, barrier, broadcast_flag, init_distributed, shutdown
from model_training.optim import create_lr_scheduler, create_optimizer
from model_training.rnn_model import output_frames
from model_training.run_setup import (
    build_trial_batches,
    close_logging,
    prepare_output_dirs,
    setup_logging,
    train_batch_order,
)
from model_training.training_loop import GreedyPER, TrainingLoop
from nejm_b2txt_utils.atomic_io import sweep_stale_temp_files
from nejm_b2txt_utils.augmentation import transform_data
from nejm_b2txt_utils.devices import select_device


class NonFiniteTrainingError(RuntimeError):
    """Too many batches in a row had a non-finite gradient: the run stops (the message says what to check)."""


class BrainToTextDecoder_Trainer(TrainingLoop):  # noqa: N801 (the original's class name)
    """Build everything from a config (``rnn_args.yaml``), then ``train()``."""

    def __init__(self, args: DictConfig):
        self.args = args = normalize_config(args)
        self.check_config()  # before anything is written: a config error leaves no output_dir behind
        self.dist = init_distributed()
        self.is_main = self.dist.is_main
        self.device = self.select_device()  # before output_dir: a bad gpu_number/device leaves nothing behind
        self.output_dir = Path(args.output_dir)
        self.checkpoint_dir = Path(args.checkpoint_dir)
        self.resume_path = prepare_output_dirs(args, self.is_main, lambda: barrier(self.dist))
        self.logger = setup_logging(__name__, args, self.is_main)
        if self.is_main and args.get("mode", "train") == "train":  # saves killed (kill -9) before their rename
            for stale in sweep_stale_temp_files(self.checkpoint_dir) + sweep_stale_temp_files(self.output_dir):
                self.logger.info(f"Removed {stale}, left by an interrupted save")
        # Set here, not at import: importing the trainer must not change torch's global state.
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.deterministic = True
        self.use_amp = bool(args.get("use_amp", True)) and self.device.type == "cuda"  # CPU: plain fp32
        self.transform_args = OmegaConf.to_container(args.dataset.data_transforms, resolve=True)
        self.patch_size, self.patch_stride = int(args.model.patch_size), int(args.model.patch_stride)
        self.n_batches = int(args.num_training_batches)
        self.start_step = 0
        self.best_val_PER = math.inf
        self.best_val_loss = math.inf
        self.val_steps_since_improvement = 0
        self.train_losses: list[float] = []
        self.last_log_values: dict[str, torch.Tensor] = {}  # from compute_loss, logged on log steps
        self.val_losses: list[float] = []
        self.val_PERs: list[float] = []
        self.n_nonfinite_batches = self.nonfinite_in_a_row = 0

        if args.seed != -1:
            np.random.seed(args.seed)
            random.seed(args.seed)
            torch.manual_seed(args.seed)
        self.model = self.build_model()
        n_params = sum(p.numel() for p in self.model.parameters())
        n_day = sum(p.numel() for n, p in self.model.named_parameters() if "day" in n)
        self.logger.info("Initialized RNN decoding model")
        self.logger.info(self.model)
        self.logger.info(f"Model has {n_params:,} parameters")
        self.logger.info(f"Model has {n_day:,} day-specific parameters | {100 * n_day / n_params:.2f}% of total")

        self.train_dataset, self.val_dataset = build_trial_batches(args, self.is_main, self.dist.rank,
                                                                   self.dist.world_size, BrainToTextDataset)
        self.val_loader = DataLoader(self.val_dataset, batch_size=None, shuffle=False, num_workers=0,
                                     generator=torch.Generator())
        self.logger.info("Successfully initialized datasets")
        self.optimizer = self.create_optimizer()
        self.learning_rate_scheduler = self.create_lr_scheduler()
        self.ctc_loss = torch.nn.CTCLoss(blank=0, reduction="none", zero_infinity=False)

        if self.resume_path is not None:
            self.load_model_checkpoint(self.resume_path, resume=True)
        elif args.get("init_from_checkpoint", False):
            if not args.get("init_checkpoint_path"):
                raise ckpt_io.CheckpointError("init_from_checkpoint is true but init_checkpoint_path is null")
            self.load_model_checkpoint(args.init_checkpoint_path)
        for name, p in self.model.named_parameters():
            if (not args.model.get("rnn_trainable", True) and "gru" in name) or \
                    (not args.model.input_network.get("input_trainable", True) and "day" in name):
                p.requires_grad = False

        self.model.to(self.device)
        self.train_net, self.eval_net = self.wrap_networks()

    # ------------------------------------------------------------------ hooks (override in variants)
    def select_device(self) -> torch.device:
        """The training device: ``device`` / ``gpu_number`` (``nejm_b2txt_utils.devices``); the local rank's
        GPU under DDP."""
        return select_device(self.args.get("gpu_number", 0), self.args.get("device", "auto"),
                             self.dist.local_rank if self.dist.enabled else None)

    def check_config(self) -> None:
        """Hook: raise ``ConfigError`` for a value this trainer cannot use; runs before any output is written.

        Raises:
            ConfigError: an unknown ``model.architecture`` (variants add their own checks).
        """
        ckpt_io.check_architecture(self.args)

    def build_model(self) -> torch.nn.Module:
        """The model to train, on the CPU (moved to ``self.device`` after checkpoint loading)."""
        return ckpt_io.build_model(self.args)

    def create_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the name-based parameter groups of ``model_training.optim``."""
        return create_optimizer(self.model, self.args)

    def create_lr_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """One LambdaLR factor per optimizer group (day groups follow the ``*_day`` schedule)."""
        return create_lr_scheduler(self.optimizer, self.args)

    def wrap_networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """Hook: ``(train network, eval network)`` around ``self.model`` (on its device): DDP under torchrun, then
        ``torch.compile`` with ``compile: true`` (``auto``: on CUDA). The eval network is never DDP-wrapped."""
        opt = str(self.args.get("compile", "auto")).lower()
        use_compile = opt in ("true", "1") or (opt == "auto" and self.device.type == "cuda")
        if use_compile:
            torch._dynamo.config.cache_size_limit = 64  # T varies between batches: recompiles expected
        train_net = self.model
        if self.dist.enabled:
            # Days absent from a rank's slice get no local gradient; globally absent days keep grad None.
            train_net = torch.nn.parallel.DistributedDataParallel(
                train_net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        if not use_compile:
            return train_net, self.model
        train_net = torch.compile(train_net)
        return train_net, (torch.compile(self.model) if self.dist.enabled else train_net)

    def batch_to_device(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """``(features [B, T, C], labels [B, L], n_time_steps [B], phone_seq_lens [B], day_indicies [B])``
        on ``self.device``."""
        keys = ("input_features", "seq_class_ids", "n_time_steps", "phone_seq_lens", "day_indicies")
        return tuple(batch[k].to(self.device, non_blocking=True) for k in keys)

    def ctc_per_trial(self, logits: torch.Tensor, labels: torch.Tensor, adjusted_lens: torch.Tensor,
                      phone_seq_lens: torch.Tensor) -> torch.Tensor:
        """CTC negative log-likelihood per trial ``[B]`` of logits ``[B, P, C]`` (blank 0, not length-normalised)."""
        return self.ctc_loss(torch.permute(logits.log_softmax(2), [1, 0, 2]), labels, adjusted_lens,  # (P, B, C)
                             phone_seq_lens)

    def compute_loss(self, features: torch.Tensor, labels: torch.Tensor, adjusted_lens: torch.Tensor,
                     phone_seq_lens: torch.Tensor, day_indicies: torch.Tensor,
                     step: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Training forward and loss of one (augmented) batch, inside autocast.

        Args:
            features: ``[B, T, C]`` augmented features; labels ``[B, L]``; adjusted_lens ``[B]`` output frames;
                phone_seq_lens ``[B]``; day_indicies ``[B]``; step: the batch index.

        Returns:
            ``(objective [B], logged [B], extra)``: the per-trial quantity whose batch mean is minimised, the
            per-trial loss recorded in ``train_losses`` (here both the CTC NLL), and 0-d tensors logged on
            log steps (read only then, so a lazy device is not synced every step).
        """
        logits = self.train_net(features, day_indicies)
        per_trial = self.ctc_per_trial(logits, labels, adjusted_lens, phone_seq_lens)
        return per_trial, per_trial, {}

    def eval_forward(self, features: torch.Tensor,
                     day_indicies: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Validation forward: ``(logits [B, P, C], {head name: extra logits [B, P, C]})``. The first is the
        head that selects the best checkpoint; each extra head's greedy PER is logged as ``<name> PER``."""
        return self.eval_net(features, day_indicies), {}

    def step_end(self, step: int) -> None:
        """Called once per optimizer step, after ``scheduler.step()`` (XLA: ``torch_xla.sync()``)."""

    def checkpoint_state(self, state: dict) -> dict:
        """The checkpoint dict as written to disk (XLA: host copies of the device tensors)."""
        return state

    def _train_loader(self, start: int) -> DataLoader:
        workers = int(self.args.dataset.get("num_dataloader_workers", 0))
        # A private generator: creating loaders must not consume the global torch RNG (exact resume).
        return DataLoader(self.train_dataset, batch_size=None, sampler=train_batch_order(self.args, start),
                          num_workers=workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                          persistent_workers=False)

    # ------------------------------------------------------------------ checkpoints
    def save_model_checkpoint(self, save_path: str | Path, PER: float, loss: float, **extra) -> None:  # noqa: N803
        """The original's checkpoint dict (keys ``_orig_mod.``-prefixed), written atomically, plus args.yaml."""
        state = {"model_state_dict": ckpt_io.with_compile_prefix(self.model.state_dict()),
                 "optimizer_state_dict": self.optimizer.state_dict(),
                 "scheduler_state_dict": self.learning_rate_scheduler.state_dict(),
                 "val_PER": PER, "val_loss": loss, **extra}
        ckpt_io.atomic_save(self.checkpoint_state(state), save_path)
        self.logger.info("Saved model to checkpoint: " + str(save_path))
        ckpt_io.atomic_save_yaml(resolved_container(self.args), self.checkpoint_dir / "args.yaml")

    def _save_last(self, step: int) -> None:
        rng = {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        self.save_model_checkpoint(
            self.checkpoint_dir / "last_checkpoint", self.best_val_PER, self.best_val_loss, step=step, rng=rng,
            best_val_PER=self.best_val_PER, best_val_loss=self.best_val_loss, train_losses=self.train_losses,
            val_PERs=self.val_PERs, val_losses=self.val_losses,
            val_steps_since_improvement=self.val_steps_since_improvement)

    def load_model_checkpoint(self, load_path: str | Path, resume: bool = False) -> None:
        """Weights, optimizer and scheduler (the original's init_from_checkpoint); ``resume`` also
        restores the batch position, RNG states and history."""
        ckpt = ckpt_io.load_checkpoint_file(load_path)
        ckpt_io.load_model_weights(self.model, ckpt["model_state_dict"], load_path)
        self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        self.learning_rate_scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        self.best_val_PER = ckpt["val_PER"]
        self.best_val_loss = ckpt.get("val_loss", math.inf)
        for state in self.optimizer.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    state[k] = v.to(self.device)
        if resume:
            self.start_step = int(ckpt["step"])
            self.val_steps_since_improvement = ckpt.get("val_steps_since_improvement", 0)
            self.train_losses = list(ckpt.get("train_losses", []))
            self.val_PERs, self.val_losses = list(ckpt.get("val_PERs", [])), list(ckpt.get("val_losses", []))
            rng = ckpt["rng"]
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.logger.info(f"Loaded model from checkpoint: {load_path}" + (f" (resuming at batch {self.start_step})"
                                                                          if resume else ""))

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def _adjusted_lens(self, n_time_steps: torch.Tensor) -> torch.Tensor:
        return output_frames(n_time_steps, self.patch_size, self.patch_stride)

    def train_step(self, batch: dict, i: int) -> tuple[float, float]:
        """One optimizer step on one batch; returns (batch loss, pre-clip gradient norm)."""
        self.train_net.train()
        self.optimizer.zero_grad()
        features, labels, n_time_steps, phone_seq_lens, day_indicies = self.batch_to_device(batch)
        with self._autocast():
            features, n_time_steps = transform_data(features, n_time_steps, self.transform_args, "train")
            adjusted_lens = self._adjusted_lens(n_time_steps)
            objective, per_trial, self.last_log_values = self.compute_loss(
                features, labels, adjusted_lens, phone_seq_lens, day_indicies, i)
            # Mean over the batch of per-sequence NLLs (not length-normalised: never reduction='mean').
            # Under DDP: this rank's share of the global mean, scaled so that DDP's gradient average
            # equals the single-process gradient of the whole batch.
            n_total = all_reduce_sum(torch.tensor([float(len(per_trial))], device=self.device), self.dist)
            loss = objective.sum() * self.dist.world_size / n_total[0] if self.dist.enabled else objective.mean()
        loss.backward()
        clip = self.args.get("grad_norm_clip_value", 0)
        # foreach left to torch: the fused kernels on CPU/CUDA, the per-tensor path on XLA (which rejects foreach=True).
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=clip if clip > 0 else math.inf)
        if not self.skip_nonfinite_batch(grad_norm, per_trial, batch, i):
            self.optimizer.step()
        self.learning_rate_scheduler.step()
        total = all_reduce_sum(per_trial.detach().sum().reshape(1).float(), self.dist)  # before step_end: same graph
        self.step_end(i)
        return float(total[0] / n_total[0]), float(grad_norm)

    def skip_nonfinite_batch(self, grad_norm: torch.Tensor, per_trial: torch.Tensor, batch: dict, i: int) -> bool:
        """Whether to skip batch ``i``'s optimizer step because its gradient norm is not finite.

        Fix: the original raised, so one trial could end a run. Here the step is skipped (the schedule still
        advances), a warning names the batch's trials with a non-finite loss and counts the skipped batches.

        Args:
            grad_norm: 0-d total gradient norm (after DDP's all-reduce, so every rank decides alike).
            per_trial: ``[B]`` per-trial losses of this rank's trials; batch: the CPU batch dict; i: batch index.

        Returns:
            True when the step must be skipped (the gradients are then zeroed).

        Raises:
            NonFiniteTrainingError: ``nonfinite_batches_in_a_row_max`` (default 20) batches in a row, or every
                batch of this run so far once the run ends, were non-finite.
        """
        if bool(torch.isfinite(grad_norm)):
            self.nonfinite_in_a_row = 0
            return False
        self.optimizer.zero_grad()
        self.n_nonfinite_batches += 1
        self.nonfinite_in_a_row += 1
        bad = (~torch.isfinite(per_trial.detach().float())).cpu().numpy()
        sessions = list(self.args.dataset.sessions)
        named = [f"{sessions[int(d)]} block {int(b)} trial {int(t)}" for d, b, t, x in
                 zip(batch["day_indicies"], batch["block_nums"], batch["trial_nums"], bad) if x]
        self.logger.warning(f"Train batch {i}: non-finite gradient norm, step skipped ({self.n_nonfinite_batches} "
                            f"skipped so far); " + (f"non-finite loss of {', '.join(named)}" if named else
                                                    "every trial's loss is finite (diverging? lower lr_max)"))
        limit = int(self.args.get("nonfinite_batches_in_a_row_max", 20))
        if self.nonfinite_in_a_row >= min(limit, self.n_batches - self.start_step):
            raise NonFiniteTrainingError(
                f"batches {i - self.nonfinite_in_a_row + 1}..{i}: {self.nonfinite_in_a_row} batches in a row had a "
                "non-finite gradient norm: check the data (trials too short for their labels) or lower lr_max")
        return True

    def validation(self, loader: DataLoader, return_logits: bool = False, return_data: bool = False) -> dict:
        """Greedy PER (collapse repeats, then drop blanks) and CTC loss over the val batches (spec §6.6):
        :meth:`eval_forward` per batch, the bookkeeping in ``training_loop.GreedyPER``."""
        self.eval_net.eval()
        per = GreedyPER(list(self.args.dataset.dataset_probability_val), return_logits, return_data)
        for i, batch in enumerate(loader):
            if self._skip_val_batch(i, batch):
                continue
            features, labels, n_time_steps, phone_seq_lens, day_indicies = self.batch_to_device(batch)
            with torch.no_grad(), self._autocast():
                smoothed, n_time_steps = transform_data(features, n_time_steps, self.transform_args, "val")
                adjusted_lens = self._adjusted_lens(n_time_steps)
                logits, extra_heads = self.eval_forward(smoothed, day_indicies)
                per_trial = self.ctc_per_trial(logits, labels, adjusted_lens, phone_seq_lens)
                # Fix: a trial CTC cannot align (infinite loss) no longer makes the val loss infinite; PER counts it.
                finite = torch.isfinite(per_trial)  # static shapes (XLA): no boolean indexing
                loss = torch.where(finite, per_trial, 0.0).sum() / finite.sum()
            # The original appended each batch loss twice; once gives the same mean.
            per.add(batch, logits.float().cpu().numpy(), adjusted_lens.cpu().numpy(), loss.item(),
                    {name: head.float().cpu().numpy() for name, head in extra_heads.items()})
        return per.result()

    # ------------------------------------------------------------------ loop hooks (model_training/training_loop.py)
    def _batches(self):
        return iter(self._train_loader(self.start_step))

    def _train_one(self, batch: dict, i: int) -> tuple[float, float]:
        return self.train_step(batch, i)

    def _log_suffix(self) -> str:
        return "".join(f" {k}: {float(v):.4g}" for k, v in self.last_log_values.items())

    def _run_validation(self) -> dict:
        a = self.args
        return self.validation(self.val_loader, a.get("save_val_logits", False), a.get("save_val_data", False))

    def _save_val_checkpoint(self, path: Path, per: float, loss: float) -> None:
        self.save_model_checkpoint(path, per, loss)

    def _validate_step(self, i: int, pbar: tqdm) -> bool:
        """Rank 0 validates; every rank learns whether to stop."""
        stop = self._validate(i, pbar) if self.is_main else False
        stop = broadcast_flag(stop, self.dist, self.device)
        barrier(self.dist)
        return stop

    def _after_training(self, last_batch: int) -> None:
        a = self.args
        if self.is_main and a.get("save_final_model", False):  # Fix: crashed in the original (missing argument)
            self.save_model_checkpoint(self.checkpoint_dir / f"final_checkpoint_batch_{last_batch}",
                                       self.val_PERs[-1] if self.val_PERs else math.nan,
                                       self.val_losses[-1] if self.val_losses else math.nan)
        if self.n_nonfinite_batches:
            self.logger.warning(f"{self.n_nonfinite_batches} batches skipped for a non-finite gradient norm")
        barrier(self.dist)

    def close(self) -> None:
        """Release log files and the process group."""
        close_logging(self.logger)
        shutdown(self.dist)
