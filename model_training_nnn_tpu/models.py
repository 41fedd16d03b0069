"""Building the Keras model a config describes, through the one table ``model_training.architectures``
(``model.architecture``: ``gru`` = the baseline GRUDecoder, ``triple_gru`` = the nnn TripleGRUDecoder; the
Keras builders are registered in ``rnn_model_tf.py``)."""

from __future__ import annotations

from omegaconf import DictConfig

from model_training.architectures import build_model, check_architecture
from nejm_b2txt_utils.cli_errors import ConfigError

#: ``model.architecture`` -> the ``model_kind`` a TF checkpoint records.
KINDS = {"gru": "gru", "triple_gru": "triple"}


def model_kind(args: DictConfig) -> str:
    """``'gru'`` or ``'triple'`` from ``model.architecture`` (absent = ``gru``).

    Raises:
        ConfigError: an unknown architecture, or one the TF port has no checkpoint kind for.
    """
    arch = check_architecture(args)
    if arch not in KINDS:
        raise ConfigError(f"model.architecture: the TensorFlow port builds {sorted(KINDS)}, got {arch!r}")
    return KINDS[arch]


def build_model_tf(args: DictConfig):
    """The Keras port of the configured model (variables created lazily: call ``build_for``).

    Args:
        args: a training config (``model.*``, ``dataset.sessions``, ``dataset.n_classes``; triple_gru: see
            ``model_training_nnn.adversarial.triple_gru_kwargs``).

    Returns:
        A ``GRUDecoder`` or ``TripleGRUDecoder`` (Keras).
    """
    model_kind(args)
    return build_model(args, "tf")
