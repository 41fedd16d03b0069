"""Evaluate a TF-trained model: ``python model_training_nnn_tpu/evaluate_model_tf.py --model_path RUN ...``.

Same flags and outputs as ``model_training/evaluate_model.py`` (``--lm redis|none``, the Redis LM client
of ``nejm_b2txt_utils.redis_protocol``, the submission CSV, the PER/WER table, resumable partial results),
because it *is* that script's code path: only the model loader differs. ``<model_path>/checkpoint/
best_checkpoint`` may be a TF checkpoint (``checkpoint_tf``) or a PyTorch one (converted on load);
``args.yaml`` says the model (``model.architecture``). Per-trial inference is ``model_training.inference.infer_trial``
(the baseline's 'valid' smoothing) calling the Keras model through :class:`KerasForTorchEval`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model_training import evaluate_model  # noqa: E402
from model_training.args_yaml import CheckpointError, load_model_args  # noqa: E402


class KerasForTorchEval:
    """A Keras decoder behind the PyTorch model's inference call (what ``infer_trial`` expects).

    ``model(x [B, T, D] torch, day_idx [B] torch, states=None, return_state=True)`` -> ``(logits torch, state)``;
    ``patch_size`` and ``n_classes`` as on the PyTorch models.
    """

    def __init__(self, keras_model, kind: str):
        import tensorflow as tf

        self.model, self.kind = keras_model, kind
        self.patch_size, self.n_classes = keras_model.patch_size, keras_model.n_classes
        kwargs = {"mode": "inference"} if kind == "triple" else {}
        # One trace for every trial length (eager Keras GRUs are slow; a new T must not retrace).
        self._forward = tf.function(
            lambda x, d: tf.cast(keras_model(x, d, training=False, **kwargs), tf.float32),
            input_signature=[tf.TensorSpec([None, None, keras_model.neural_dim], tf.float32),
                             tf.TensorSpec([None], tf.int32)])

    def eval(self) -> KerasForTorchEval:
        return self

    def __call__(self, x: torch.Tensor, day_idx: torch.Tensor, states=None, return_state: bool = False):
        import tensorflow as tf

        xt = tf.constant(x.detach().float().cpu().numpy())  # (B, T, D)
        dt = tf.constant(day_idx.detach().cpu().numpy().astype(np.int32))
        out = torch.from_numpy(np.asarray(self._forward(xt, dt).numpy()))  # (B, P, C)
        return (out, None) if return_state else out


def load_tf_model(model_path: str | os.PathLike, device=None, checkpoint_name: str = "best_checkpoint"):
    """Rebuild the Keras model from ``<model_path>/checkpoint/args.yaml`` and load ``checkpoint_name``.

    Args:
        model_path: a run folder (``checkpoint/args.yaml`` + the checkpoint).
        device: ignored (TF places ops itself); kept for ``evaluate_model.run``'s loader signature.
        checkpoint_name: file under ``checkpoint/``.

    Returns:
        ``(KerasForTorchEval, args)``.

    Raises:
        CheckpointError: unreadable args.yaml/checkpoint, or weights that do not fit the model.
    """
    from model_training_nnn_tpu import checkpoint_tf
    from model_training_nnn_tpu.convert import torch_to_tf
    from model_training_nnn_tpu.models import build_model_tf, model_kind

    ckpt_dir = Path(model_path) / "checkpoint"
    args = load_model_args(ckpt_dir / "args.yaml")
    kind = model_kind(args)
    model = build_model_tf(args).build_for()
    sd = checkpoint_tf.read_model_state(ckpt_dir / checkpoint_name)
    try:
        torch_to_tf(model, sd)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{ckpt_dir / checkpoint_name}: {exc}") from exc
    return KerasForTorchEval(model, kind), args


def main(argv: list[str] | None = None) -> int:
    """``evaluate_model.main`` with the Keras loader."""
    return evaluate_model.main(argv, load_model=load_tf_model)


if __name__ == "__main__":
    sys.exit(main())
