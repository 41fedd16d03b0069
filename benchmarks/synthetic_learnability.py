"""Acceptance benchmark for the synthetic T15 data: is it learnable, not trivial, and do day layers help?

Generates the ``small`` preset (or reads ``--data_dir``), trains a small GRU decoder with the baseline
recipe (day layers identity-init + softsign, patch 14/4, AdamW eps 0.1, warmup + cosine, CTC blank 0,
white noise 1.0, constant offset 0.2, random cut 0-2, Gaussian smoothing std 2) for a fixed number
of CPU steps, once with per-day input layers and once with one shared input layer, and prints JSON:
val PER of both, the chance PER (a decoder guessing phonemes from the label unigram distribution,
at the true length), steps and wall time.

The model here is a compact stand-in for ``model_training``'s GRUDecoder so that the benchmark does
not depend on it; it follows spec §4-§6 except for its size.

    python -m benchmarks.synthetic_learnability                # ~10 min on 2 cores
    python -m benchmarks.synthetic_learnability --steps 200    # quick look
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from benchmarks.measure import print_result
from nejm_b2txt_utils.cli_errors import ConfigError, check_flags, exit_2_on_bad_input
from nejm_b2txt_utils.metrics import aggregate_error_rate, ctc_greedy_decode
from nejm_b2txt_utils.synthetic import generate
from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path, list_sessions, n_output_frames

log = logging.getLogger("synthetic_learnability")
PATCH, STRIDE = 14, 4


def load_split(data_dir: Path, sessions: list[str], split: str) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """``(features [T,512], labels, day index)`` for every trial of ``split`` that exists."""
    out = []
    for day, session in enumerate(sessions):
        path = data_file_path(data_dir, session, split)
        if path.exists():
            with T15File(path) as f:
                out += [(t.input_features, t.seq_class_ids.astype(np.int64), day) for t in f]
    return out


def smoothing_kernel(std: float = 2.0, size: int = 100) -> torch.Tensor:
    """The original's kernel: Gaussian-filtered impulse, taps > 0.01 kept and renormalised (9 taps)."""
    impulse = np.zeros(size, dtype=np.float32)
    impulse[size // 2] = 1.0
    k = gaussian_filter1d(impulse, std)
    k = k[k > 0.01]
    return torch.tensor(k / k.sum(), dtype=torch.float32)


class SmallGRUDecoder(nn.Module):
    """Day-specific (or shared) 512x512 input layer + softsign, patching, GRU, linear to 41 classes."""

    def __init__(self, n_days: int, n_units: int = 256, n_layers: int = 2, neural_dim: int = 512,
                 n_classes: int = 41, rnn_dropout: float = 0.4, input_dropout: float = 0.2):
        super().__init__()
        self.day_weights = nn.Parameter(torch.eye(neural_dim).repeat(n_days, 1, 1))
        self.day_biases = nn.Parameter(torch.zeros(n_days, 1, neural_dim))
        self.input_dropout = nn.Dropout(input_dropout)
        self.gru = nn.GRU(neural_dim * PATCH, n_units, n_layers, dropout=rnn_dropout, batch_first=True)
        for name, p in self.gru.named_parameters():
            if "weight_ih" in name:
                nn.init.xavier_uniform_(p)
            elif "weight_hh" in name:
                nn.init.orthogonal_(p)
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(1, 1, n_units)))
        self.out = nn.Linear(n_units, n_classes)
        nn.init.xavier_uniform_(self.out.weight)
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("btd,bdk->btk", x, self.day_weights[day_idx]) + self.day_biases[day_idx]
        x = self.input_dropout(nn.functional.softsign(x))
        x = x.unfold(1, PATCH, STRIDE).permute(0, 1, 3, 2).flatten(2)  # [B, P, 14*512] time-major
        h0 = self.h0.expand(self.n_layers, x.shape[0], -1).contiguous()
        return self.out(self.gru(x, h0)[0])


def make_batch(trials, idx, kernel, train: bool, rng: np.random.Generator):
    feats = [torch.from_numpy(trials[i][0]) for i in idx]
    lens = torch.tensor([f.shape[0] for f in feats])
    x = nn.utils.rnn.pad_sequence(feats, batch_first=True)
    if train:
        x = x + torch.randn_like(x) + 0.2 * torch.randn(x.shape[0], 1, x.shape[2])
        cut = int(rng.integers(0, 3))
        x, lens = x[:, cut:], lens - cut
    c = x.shape[2]
    x = nn.functional.conv1d(x.permute(0, 2, 1), kernel.view(1, 1, -1).repeat(c, 1, 1), padding="same", groups=c)
    x = x.permute(0, 2, 1)
    labels = [torch.from_numpy(trials[i][1]) for i in idx]
    y = nn.utils.rnn.pad_sequence(labels, batch_first=True)
    ylens = torch.tensor([len(t) for t in labels])
    days = torch.tensor([trials[i][2] for i in idx])
    out_lens = torch.tensor([n_output_frames(int(n), PATCH, STRIDE) for n in lens])
    return x, y, ylens, days, out_lens


def lr_lambda(warmup: int, total: int, ratio: float = 0.02):
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if step >= total:
            return ratio
        return max(ratio, ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    return f


def evaluate(model, val, kernel, n_days_model: int, batch: int = 32) -> float:
    model.eval()
    refs, hyps = [], []
    with torch.no_grad():
        for start in range(0, len(val), batch):
            idx = list(range(start, min(start + batch, len(val))))
            x, _, _, days, out_lens = make_batch(val, idx, kernel, False, None)
            logits = model(x, days if n_days_model > 1 else torch.zeros_like(days))
            for j, i in enumerate(idx):
                hyps.append(ctc_greedy_decode(logits[j].numpy(), int(out_lens[j])))
                refs.append(list(val[i][1]))
    model.train()
    return float(aggregate_error_rate(refs, hyps, n_resamples=100).rate)


def chance_per(train, val, seed: int) -> float:
    counts = np.bincount(np.concatenate([t[1] for t in train]), minlength=41).astype(float)
    probs = counts / counts.sum()
    rng = np.random.default_rng(seed)
    hyps = [list(rng.choice(41, size=len(t[1]), p=probs)) for t in val]
    return float(aggregate_error_rate([list(t[1]) for t in val], hyps, n_resamples=100).rate)


def train(train_set, val_set, n_days: int, day_layers: bool, args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = SmallGRUDecoder(n_days if day_layers else 1, args.n_units, args.n_layers)
    groups = {"bias": [], "day": [], "other": []}
    for name, p in model.named_parameters():
        groups["day" if name.startswith("day_") else "bias" if "bias" in name else "other"].append(p)
    opt = torch.optim.AdamW([
        {"params": groups["bias"], "weight_decay": 0.0},
        {"params": groups["day"], "weight_decay": 0.0},
        {"params": groups["other"], "weight_decay": 0.001},
    ], lr=args.lr, betas=(0.9, 0.999), eps=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.steps // 10, args.steps))
    ctc = nn.CTCLoss(blank=0, reduction="none", zero_infinity=False)
    kernel = smoothing_kernel()
    by_day: dict[int, list[int]] = {}
    for i, t in enumerate(train_set):
        by_day.setdefault(t[2], []).append(i)
    days = sorted(by_day)
    per_day = max(1, args.batch_size // args.days_per_batch)
    start = time.time()
    for step in range(args.steps):
        chosen = rng.choice(days, size=min(args.days_per_batch, len(days)), replace=False)
        idx = [int(i) for d in chosen for i in rng.choice(by_day[int(d)], per_day)]
        x, y, ylens, day_idx, out_lens = make_batch(train_set, idx, kernel, True, rng)
        logits = model(x, day_idx if day_layers else torch.zeros_like(day_idx))
        logp = logits.log_softmax(2).permute(1, 0, 2)
        loss = ctc(logp, y, out_lens, ylens).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            log.info("day_layers=%s step %d loss %.2f (%.2f s/step)", day_layers, step, loss.item(),
                     (time.time() - start) / (step + 1))
        if args.eval_every and step and step % args.eval_every == 0:
            log.info("day_layers=%s step %d val PER %.4f", day_layers, step,
                     evaluate(model, val_set, kernel, n_days if day_layers else 1))
    per = evaluate(model, val_set, kernel, n_days if day_layers else 1)
    return {"val_PER": round(per, 4), "train_s": round(time.time() - start, 1),
            "final_train_loss": round(float(loss.item()), 3)}


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="existing synthetic data (folder holding hdf5_data_final/); "
                                           "default: generate the small preset into a temp dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--days_per_batch", type=int, default=4)
    parser.add_argument("--n_units", type=int, default=256)
    parser.add_argument("--n_layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument("--eval_every", type=int, default=0, help="also log val PER every N steps (0: only at the end)")
    parser.add_argument("--variants", default="with,without", help="comma list of with/without day layers")
    args = parser.parse_args(argv)
    check_flags(args, {"steps": 1, "batch_size": 1, "days_per_batch": 1, "n_units": 1, "n_layers": 1,
                       "threads": 1, "log_every": 1, "eval_every": 0})
    if set(args.variants.split(",")) - {"with", "without"}:
        raise ConfigError(f"--variants: expected a comma list of with/without, got {args.variants!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log.info("args: %s", vars(args))
    torch.set_num_threads(args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_dir) if args.data_dir else Path(tmp)
        gen_s = 0.0
        if not args.data_dir:
            gen_s = generate("small", root, seed=args.seed, progress=False)["wall_s"]
        data_dir = root / "hdf5_data_final"
        sessions = list_sessions(data_dir)
        train_set = load_split(data_dir, sessions, "train")
        val_set = load_split(data_dir, sessions, "val")
    result = {"data": args.data_dir or "small (generated)", "generate_s": gen_s, "sessions": len(sessions),
              "train_trials": len(train_set), "val_trials": len(val_set),
              "chance_PER": round(chance_per(train_set, val_set, args.seed), 4),
              "steps": args.steps, "batch_size": args.batch_size, "model": f"GRU {args.n_layers}x{args.n_units}"}
    for variant in args.variants.split(","):
        r = train(train_set, val_set, len(sessions), variant == "with", args)
        key = "with_day_layers" if variant == "with" else "without_day_layers"
        result[f"val_PER_{key}"] = r["val_PER"]
        result[f"train_s_{key}"] = r["train_s"]
        result[f"final_train_loss_{key}"] = r["final_train_loss"]
    result["wall_s"] = round(time.time() - t0, 1)
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
